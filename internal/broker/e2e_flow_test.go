package broker_test

// End-to-end flow-control and state cases across reconnections.

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/eclipse/paho.golang/paho"

	"github.com/isobar-mq/isobar/internal/mqtt/packet"
)

// A message dropped for exceeding the client's Maximum Packet Size
// [MQTT-3.1.2-25] must not leave a topic alias behind that the client
// never learnt: the next message on that topic carries its name
// [MQTT-3.1.2-26] (section 3.3.2.3.4).
func TestV5TopicAliasWithMaximumPacketSize(t *testing.T) {
	t.Parallel()
	_, addr := startNode(t, "")
	s := dialP(t, addr, packet.V5)
	var props packet.Properties
	props.TopicAliasMaximum = 2
	props.MaximumPacketSize = 64
	props.Set(packet.PropTopicAliasMaximum)
	props.Set(packet.PropMaximumPacketSize)
	s.connect(packet.Connect{ClientID: "tamps", CleanStart: true, KeepAlive: 30, Props: props})
	s.sub("tamps/#", 1)
	r := &aliasResolver{max: 2, m: map[uint16]string{}}
	p := v5(t, addr, "tamps-pub")
	big := bytes.Repeat([]byte("b"), 100)
	seq := []struct {
		topic   string
		payload []byte
	}{{"tamps/x", big}, {"tamps/x", []byte("1")}, {"tamps/x", []byte("2")}, {"tamps/y", []byte("3")},
		{"tamps/y", big}, {"tamps/y", []byte("4")}, {"tamps/z", big}, {"tamps/z", []byte("5")}, {"tamps/z", []byte("6")}}
	for _, m := range seq {
		p.pub(&paho.Publish{Topic: m.topic, QoS: 1, Payload: m.payload})
	}
	for _, want := range seq {
		if len(want.payload) > 64 {
			continue
		}
		m := s.nextPublish()
		if got := r.resolve(t, m); got != want.topic || !bytes.Equal(m.Payload, want.payload) {
			t.Fatalf("resolved %s %q, want %s %q (%s)", got, m.Payload, want.topic, want.payload, describe(m))
		}
		s.ack(packet.PUBACK, m.PacketID)
	}
	s.expectNothing(quietT)
}

// Unacknowledged messages resent on resumption count against the Receive
// Maximum of the new connection [MQTT-3.3.4-9] (section 4.9: the send
// quota starts afresh with each network connection), and queued messages
// follow the resent ones in order [MQTT-4.6.0-1].
func TestV5ReceiveMaximumOnResume(t *testing.T) {
	t.Parallel()
	n, addr := startNode(t, "")
	connect := func(rm uint16, clean bool) (*pconn, *packet.Connack) {
		c := dialP(t, addr, packet.V5)
		var props packet.Properties
		props.ReceiveMaximum = rm
		props.SessionExpiryInterval = 60
		props.Set(packet.PropReceiveMaximum)
		props.Set(packet.PropSessionExpiryInterval)
		return c, c.connect(packet.Connect{ClientID: "rmr", CleanStart: clean, KeepAlive: 30, Props: props})
	}
	s, _ := connect(3, true)
	s.sub("rmr/#", 1)
	p := dialP(t, addr, packet.V5)
	p.connectID("rmr-pub")
	for i := range 5 {
		p.pub1("rmr/t", []byte(fmt.Sprint(i)), uint16(i+1))
	}
	for i := range 3 {
		if m := s.nextPublish(); string(m.Payload) != fmt.Sprint(i) {
			t.Fatalf("got %s, want payload %d", describe(m), i)
		}
	}
	_ = s.c.Close()
	waitClients(t, n, 1)

	s, ack := connect(1, false)
	if !ack.SessionPresent {
		t.Fatal("session not present")
	}
	for i := range 5 {
		m := s.nextPublish()
		if string(m.Payload) != fmt.Sprint(i) || m.Dup != (i < 3) {
			t.Fatalf("delivery %d after resuming: %s, want payload %d DUP %v", i, describe(m), i, i < 3)
		}
		s.expectNothing(quietT) // Receive Maximum 1: nothing more until acknowledged
		s.ack(packet.PUBACK, m.PacketID)
	}
	s.expectNothing(quietT)
}

// A QoS 2 message received from a client is delivered exactly once even
// when the client reconnects between PUBREC and PUBREL and resends the
// PUBLISH (DUP) and then PUBREL [MQTT-4.3.3-10] (5.0: the receiver does
// not deliver it again until PUBREL), and PUBREL is answered after the
// reconnection [MQTT-4.4.0-1].
func TestInboundQoS2AcrossReconnect(t *testing.T) {
	t.Parallel()
	n, addr := startNode(t, "")
	sub := v5(t, addr, "iq2-sub")
	sub.sub(paho.SubscribeOptions{Topic: "iq2/#", QoS: 2})
	for _, ver := range []byte{packet.V311, packet.V5} {
		id := fmt.Sprint("iq2-pub-", ver)
		c := dialP(t, addr, ver)
		cp := packet.Connect{ClientID: id, KeepAlive: 30}
		if ver == packet.V5 {
			cp.Props.SessionExpiryInterval = 60
			cp.Props.Set(packet.PropSessionExpiryInterval)
		}
		c.connect(cp)
		msg := packet.Publish{Topic: "iq2/t", QoS: 2, PacketID: 77, Payload: []byte(id)}
		c.publish(msg)
		c.expectAck(packet.PUBREC, 77)
		_ = c.c.Close()
		waitClients(t, n, 1)

		c = dialP(t, addr, ver)
		if ack := c.connect(cp); !ack.SessionPresent {
			t.Fatalf("%s: session not present", id)
		}
		msg.Dup = true
		c.publish(msg)
		c.expectAck(packet.PUBREC, 77)
		c.ack(packet.PUBREL, 77)
		c.expectAck(packet.PUBCOMP, 77)
		c.publish(packet.Publish{Topic: "iq2/end", QoS: 1, PacketID: 78})
		c.expectAck(packet.PUBACK, 78)
		got := sub.recvUntil("iq2/end")
		if len(got) != 1 || string(got[0].Payload) != id {
			t.Fatalf("%s: %d deliveries, want exactly one", id, len(got))
		}
		_ = c.c.Close()
		waitClients(t, n, 1)
	}
}

// 3.1.1 has no Receive Maximum; mqtt.max_inflight bounds the messages in
// flight to a client (section 4.4 allows a server to limit them) and the
// rest follow in order as acknowledgements arrive.
func TestV3MaxInflight(t *testing.T) {
	t.Parallel()
	_, addr := startNode(t, "mqtt:\n  max_inflight: 3\n")
	s := dialP(t, addr, packet.V311)
	s.connectID("mif")
	s.sub("mif/#", 1)
	p := dialP(t, addr, packet.V311)
	p.connectID("mif-pub")
	for i := range 6 {
		p.pub1("mif/t", []byte(fmt.Sprint(i)), uint16(i+1))
	}
	var inflight []*packet.Publish
	for i := range 3 {
		m := s.nextPublish()
		if string(m.Payload) != fmt.Sprint(i) {
			t.Fatalf("got %s, want payload %d", describe(m), i)
		}
		inflight = append(inflight, m)
	}
	s.expectNothing(quietT)
	for i := 3; i < 6; i++ {
		s.ack(packet.PUBACK, inflight[0].PacketID)
		inflight = inflight[1:]
		m := s.nextPublish()
		if string(m.Payload) != fmt.Sprint(i) {
			t.Fatalf("got %s, want payload %d", describe(m), i)
		}
		inflight = append(inflight, m)
	}
	s.expectNothing(quietT)
}

// mqtt.max_connections: beyond it CONNACK 0x97 (5.0) or 0x03 (3.1.1), and
// the connection is closed [MQTT-3.2.2-7] (3.1.1: [MQTT-3.2.2-5]).
func TestMaxConnections(t *testing.T) {
	t.Parallel()
	n, addr := startNode(t, "mqtt:\n  max_connections: 2\n")
	a := dialP(t, addr, packet.V5)
	a.connectID("mc-a")
	b := dialP(t, addr, packet.V311)
	b.connectID("mc-b")
	c5 := dialP(t, addr, packet.V5)
	if ack := c5.connectAck(packet.Connect{ClientID: "mc-c5", CleanStart: true}); ack.ReasonCode != packet.QuotaExceeded {
		t.Fatalf("5.0 beyond the limit: CONNACK 0x%02X, want 0x97", ack.ReasonCode)
	}
	c5.expectClosed(waitT)
	c3 := dialP(t, addr, packet.V311)
	if ack := c3.connectAck(packet.Connect{ClientID: "mc-c3", CleanStart: true}); ack.ReasonCode != packet.ConnRefusedServerUnavailable {
		t.Fatalf("3.1.1 beyond the limit: CONNACK 0x%02X, want 0x03", ack.ReasonCode)
	}
	c3.expectClosed(waitT)
	_ = a.c.Close()
	waitClients(t, n, 1)
	d := dialP(t, addr, packet.V5)
	d.connectID("mc-d")
}
