package broker_test

// End-to-end tests with paho.mqtt.golang speaking MQTT 3.1.1 (and a raw
// connection where the wire itself is the subject). Statement ids are those
// of MQTT 3.1.1 (OASIS Standard, 2014).

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/isobar-mq/isobar/internal/broker"
	"github.com/isobar-mq/isobar/internal/mqtt/packet"
)

// QoS 0, 1 and 2 in both directions: a QoS 2 subscription receives each
// message at the QoS it was published with [MQTT-3.8.4-6], and every flow
// completes with the real client (PUBACK; PUBREC/PUBREL/PUBCOMP)
// [MQTT-4.3.2-1] [MQTT-4.3.3-1].
func TestV3QoSBothDirections(t *testing.T) {
	t.Parallel()
	_, addr := startNode(t, "")
	a := connectV3(t, addr, "v3qos-a", true, nil)
	b := connectV3(t, addr, "v3qos-b", true, nil)
	if got := a.sub(2, "v3qos/to-a"); got[0] != 2 {
		t.Fatalf("granted %v", got)
	}
	if got := b.sub(2, "v3qos/to-b"); got[0] != 2 {
		t.Fatalf("granted %v", got)
	}
	for qos := byte(0); qos <= 2; qos++ {
		for _, dir := range []struct {
			from, to *pahoV3
			topic    string
		}{{a, b, "v3qos/to-b"}, {b, a, "v3qos/to-a"}} {
			payload := fmt.Sprintf("q%d %s", qos, dir.topic)
			dir.from.pub(dir.topic, qos, false, payload)
			m := dir.to.recv()
			if m.Topic() != dir.topic || string(m.Payload()) != payload || m.Qos() != qos || m.Retained() || m.Duplicate() {
				t.Fatalf("got %s %q qos %d retain %v dup %v, want %s %q qos %d", m.Topic(), m.Payload(), m.Qos(),
					m.Retained(), m.Duplicate(), dir.topic, payload, qos)
			}
		}
	}
}

// Messages are delivered at the minimum of the published QoS and the
// granted QoS [MQTT-3.8.4-6]; a server may grant less than asked
// [MQTT-3.9.3-1] (here because of mqtt.max_qos: 1).
func TestV3QoSDowngrade(t *testing.T) {
	t.Parallel()
	t.Run("subscription", func(t *testing.T) {
		t.Parallel()
		_, addr := startNode(t, "")
		subs := make([]*pahoV3, 3)
		for q := range subs {
			subs[q] = connectV3(t, addr, fmt.Sprintf("down-%d", q), true, nil)
			if got := subs[q].sub(byte(q), "down/t"); got[0] != byte(q) {
				t.Fatalf("granted %v, want %d", got, q)
			}
		}
		pub := connectV3(t, addr, "down-pub", true, nil)
		for pq := byte(0); pq <= 2; pq++ {
			pub.pub("down/t", pq, false, fmt.Sprint(pq))
			for sq, s := range subs {
				m := s.recv()
				if want := min(pq, byte(sq)); m.Qos() != want || string(m.Payload()) != fmt.Sprint(pq) {
					t.Fatalf("published at %d, subscribed at %d: got %q at QoS %d, want QoS %d", pq, sq, m.Payload(), m.Qos(), want)
				}
			}
		}
	})
	t.Run("max_qos", func(t *testing.T) {
		t.Parallel()
		_, addr := startNode(t, "mqtt:\n  max_qos: 1\n")
		s := connectV3(t, addr, "maxq-sub", true, nil)
		if got := s.sub(2, "maxq/t"); got[0] != 1 {
			t.Fatalf("asked QoS 2 with max_qos 1: granted %v, want 1", got)
		}
		p := connectV3(t, addr, "maxq-pub", true, nil)
		p.pub("maxq/t", 1, false, "x")
		if m := s.recv(); m.Qos() != 1 {
			t.Fatalf("got QoS %d, want 1", m.Qos())
		}
	})
}

// Overlapping subscriptions of one client: the message is delivered once,
// at the highest QoS of the matching subscriptions [MQTT-3.3.5-1] (Isobar
// sends a single copy).
func TestV3OverlappingSubscriptions(t *testing.T) {
	t.Parallel()
	_, addr := startNode(t, "")
	s := connectV3(t, addr, "ovl-sub", true, nil)
	s.sub(0, "ovl/#")
	s.sub(2, "ovl/+/c")
	s.sub(1, "ovl/b/c")
	p := connectV3(t, addr, "ovl-pub", true, nil)
	p.pub("ovl/b/c", 2, false, "two")
	p.pub("ovl/b/c", 1, false, "one")
	p.pub("ovl/x", 2, false, "only-hash")
	p.pub("ovl/barrier", 0, false, "")
	got := s.recvUntil("ovl/barrier")
	var desc []string
	for _, m := range got {
		desc = append(desc, fmt.Sprintf("%s:%s@%d", m.Topic(), m.Payload(), m.Qos()))
	}
	want := []string{"ovl/b/c:two@2", "ovl/b/c:one@1", "ovl/x:only-hash@0"}
	if !slices.Equal(desc, want) {
		t.Fatalf("deliveries %v, want %v", desc, want)
	}
}

// A session with clean session 0 survives the connection: QoS 1 and 2
// messages published while the client is away are stored [MQTT-3.1.2-5]
// and delivered when it comes back, with session present 1 [MQTT-3.2.2-2];
// a clean-session connection discards the session [MQTT-3.1.2-6] and gets
// session present 0 [MQTT-3.2.2-1].
func TestV3PersistentSession(t *testing.T) {
	t.Parallel()
	n, addr := startNode(t, "")
	s := connectV3(t, addr, "persist", false, nil)
	if s.sp {
		t.Fatal("session present on a first connection")
	}
	s.sub(2, "persist/#")
	s.Disconnect(50)
	waitClients(t, n, 0)

	p := connectV3(t, addr, "persist-pub", true, nil)
	p.pub("persist/1", 1, false, "m1")
	p.pub("persist/2", 2, false, "m2")
	p.pub("persist/3", 1, false, "m3")

	s = connectV3(t, addr, "persist", false, nil)
	if !s.sp {
		t.Fatal("session present 0 on resuming a clean-session-0 session [MQTT-3.2.2-2]")
	}
	for i, want := range []struct {
		topic string
		qos   byte
	}{{"persist/1", 1}, {"persist/2", 2}, {"persist/3", 1}} {
		m := s.recv()
		if m.Topic() != want.topic || m.Qos() != want.qos || string(m.Payload()) != fmt.Sprintf("m%d", i+1) {
			t.Fatalf("queued message %d: got %s %q QoS %d, want %s QoS %d", i, m.Topic(), m.Payload(), m.Qos(), want.topic, want.qos)
		}
	}
	// The subscription is part of the session: live messages still flow.
	p.pub("persist/live", 1, false, "live")
	if m := s.recv(); m.Topic() != "persist/live" {
		t.Fatalf("got %s", m.Topic())
	}
	s.Disconnect(50)

	// Clean session 1 discards the session and its subscriptions.
	c := connectV3(t, addr, "persist", true, nil)
	if c.sp {
		t.Fatal("session present 1 with clean session 1 [MQTT-3.2.2-1]")
	}
	c.sub(0, "persist-barrier")
	p.pub("persist/after-clean", 1, false, "x")
	p.pub("persist-barrier", 0, false, "")
	if got := c.recvUntil("persist-barrier"); len(got) != 0 {
		t.Fatalf("clean session received %s from the discarded subscription [MQTT-3.1.2-6]", got[0].Topic())
	}
	c.Disconnect(50)
	// A clean-session-0 connection now finds no session either.
	s = connectV3(t, addr, "persist", false, nil)
	if s.sp {
		t.Fatal("session present 1 after the session was discarded")
	}
}

// Unacknowledged messages are resent on resumption with their original
// packet identifiers [MQTT-4.4.0-1], PUBLISH with DUP 1 [MQTT-3.3.1-1] in
// the original order [MQTT-4.6.0-1], and PUBREL for a QoS 2 message whose
// PUBREC was received [MQTT-4.6.0-2]. Once acknowledged, nothing is resent.
func TestV3ResendWithDUP(t *testing.T) {
	t.Parallel()
	_, addr := startNode(t, "")
	s := dialP(t, addr, packet.V311)
	s.connect(packet.Connect{ClientID: "dup-sub", KeepAlive: 60})
	s.sub("dup/#", 2)

	p := dialP(t, addr, packet.V311)
	p.connectID("dup-pub")
	p.pub1("dup/one", []byte("one"), 1)
	first := s.nextPublish()
	p.publish(packet.Publish{Topic: "dup/two", QoS: 2, PacketID: 2, Payload: []byte("two")})
	p.expectAck(packet.PUBREC, 2)
	p.ack(packet.PUBREL, 2)
	p.expectAck(packet.PUBCOMP, 2)
	second := s.nextPublish()
	p.publish(packet.Publish{Topic: "dup/three", QoS: 2, PacketID: 3, Payload: []byte("three")})
	p.expectAck(packet.PUBREC, 3)
	p.ack(packet.PUBREL, 3)
	p.expectAck(packet.PUBCOMP, 3)
	third := s.nextPublish()
	for i, m := range []*packet.Publish{first, second, third} {
		if m.Dup || m.QoS != byte(min(i+1, 2)) {
			t.Fatalf("first delivery %d: %s", i, describe(m))
		}
	}
	// Receive the second message (PUBREC) but never complete; leave the
	// others unacknowledged; then drop the connection.
	s.ack(packet.PUBREC, second.PacketID)
	rel := s.expectAck(packet.PUBREL, second.PacketID)
	_ = rel
	_ = s.c.Close()

	s = dialP(t, addr, packet.V311)
	ack := s.connect(packet.Connect{ClientID: "dup-sub", KeepAlive: 60})
	if !ack.SessionPresent {
		t.Fatal("session present 0 on resumption")
	}
	var pubs []*packet.Publish
	var rels []uint16
	for len(pubs)+len(rels) < 3 {
		switch v := s.next().(type) {
		case *packet.Publish:
			pubs = append(pubs, v)
		case *packet.Ack:
			if v.Type != packet.PUBREL {
				t.Fatalf("unexpected %s", describe(v))
			}
			rels = append(rels, v.PacketID)
		default:
			t.Fatalf("unexpected %s", describe(v))
		}
	}
	if len(pubs) != 2 || len(rels) != 1 || rels[0] != second.PacketID {
		t.Fatalf("resent %d PUBLISH and PUBREL %v, want 2 PUBLISH and PUBREL %d", len(pubs), rels, second.PacketID)
	}
	for i, orig := range []*packet.Publish{first, third} {
		r := pubs[i]
		if !r.Dup || r.PacketID != orig.PacketID || r.Topic != orig.Topic || string(r.Payload) != string(orig.Payload) || r.QoS != orig.QoS {
			t.Fatalf("resend %d: %s, want DUP copy of %s", i, describe(r), describe(orig))
		}
	}
	s.ack(packet.PUBACK, first.PacketID)
	s.ack(packet.PUBCOMP, second.PacketID)
	s.ack(packet.PUBREC, third.PacketID)
	s.expectAck(packet.PUBREL, third.PacketID)
	s.ack(packet.PUBCOMP, third.PacketID)
	// A PINGREQ round trip proves the acknowledgements were processed.
	s.write(packet.AppendPingreq(nil))
	if pkt := s.next(); pkt != packet.PINGRESP {
		t.Fatalf("expected PINGRESP, got %s", describe(pkt))
	}
	_ = s.c.Close()

	s = dialP(t, addr, packet.V311)
	if ack := s.connect(packet.Connect{ClientID: "dup-sub", KeepAlive: 60}); !ack.SessionPresent {
		t.Fatal("session present 0")
	}
	s.expectNothing(quietT)
}

// A QoS 2 PUBLISH resent by the client (DUP) before PUBREL is not
// delivered twice [MQTT-4.3.3-2]: exactly once delivery.
func TestV3QoS2InboundDuplicate(t *testing.T) {
	t.Parallel()
	_, addr := startNode(t, "")
	s := connectV3(t, addr, "q2dup-sub", true, nil)
	s.sub(2, "q2dup/#")
	p := dialP(t, addr, packet.V311)
	p.connectID("q2dup-pub")
	msg := packet.Publish{Topic: "q2dup/t", QoS: 2, PacketID: 9, Payload: []byte("once")}
	p.publish(msg)
	p.expectAck(packet.PUBREC, 9)
	msg.Dup = true
	p.publish(msg)
	p.expectAck(packet.PUBREC, 9)
	p.ack(packet.PUBREL, 9)
	p.expectAck(packet.PUBCOMP, 9)
	p.publish(packet.Publish{Topic: "q2dup/barrier"})
	got := s.recvUntil("q2dup/barrier")
	if len(got) != 1 || string(got[0].Payload()) != "once" {
		t.Fatalf("got %d deliveries, want exactly one", len(got))
	}
}

// Retained messages: stored and replaced [MQTT-3.3.1-5], sent to a new
// subscription [MQTT-3.3.1-6] with RETAIN 1 [MQTT-3.3.1-8], forwarded to
// established subscriptions with RETAIN 0 [MQTT-3.3.1-9]; a zero-byte
// retained message deletes [MQTT-3.3.1-10] and is not stored
// [MQTT-3.3.1-11]; a non-retained publish leaves the retained message alone
// [MQTT-3.3.1-12].
func TestV3Retained(t *testing.T) {
	t.Parallel()
	_, addr := startNode(t, "")
	p := connectV3(t, addr, "ret-pub", true, nil)
	p.pub("ret/b/c", 0, true, "bc")
	p.pub("ret/a", 1, true, "one")
	p.pub("ret/a", 1, true, "two")
	p.pub("ret/a", 1, false, "not-retained") // acknowledged: everything before it is processed

	s := connectV3(t, addr, "ret-sub", true, nil)
	s.sub(2, "ret/#")
	got := map[string]mqtt.Message{}
	for range 2 {
		m := s.recv()
		got[m.Topic()] = m
	}
	if m := got["ret/a"]; m == nil || string(m.Payload()) != "two" || !m.Retained() || m.Qos() != 1 {
		t.Fatalf("retained ret/a: %+v", m)
	}
	if m := got["ret/b/c"]; m == nil || string(m.Payload()) != "bc" || !m.Retained() || m.Qos() != 0 {
		t.Fatalf("retained ret/b/c: %+v", m)
	}

	// Live delivery of a retained publish: RETAIN 0.
	p.pub("ret/a", 1, true, "three")
	if m := s.recv(); string(m.Payload()) != "three" || m.Retained() {
		t.Fatalf("live delivery %q retain %v, want \"three\" retain false", m.Payload(), m.Retained())
	}

	// Delete both; the empty messages are forwarded like any other.
	p.pub("ret/a", 1, true, "")
	p.pub("ret/b/c", 1, true, "")
	for range 2 {
		if m := s.recv(); len(m.Payload()) != 0 || m.Retained() {
			t.Fatalf("deletion forwarded as %q retain %v", m.Payload(), m.Retained())
		}
	}
	s2 := connectV3(t, addr, "ret-sub2", true, nil)
	s2.sub(2, "ret/#")
	p.pub("ret/barrier", 0, false, "")
	if got := s2.recvUntil("ret/barrier"); len(got) != 0 {
		t.Fatalf("new subscriber got %s %q after deletion", got[0].Topic(), got[0].Payload())
	}
}

// The will is published when the network connection closes without
// DISCONNECT [MQTT-3.1.2-8] (retained if its retain flag is set
// [MQTT-3.1.2-17]) and discarded on DISCONNECT [MQTT-3.1.2-10].
func TestV3Will(t *testing.T) {
	t.Parallel()
	n, addr := startNode(t, "")
	w := connectV3(t, addr, "will-watch", true, nil)
	w.sub(2, "will/#")

	a := connectV3(t, addr, "will-a", true, func(o *mqtt.ClientOptions) { o.SetWill("will/a", "a-gone", 1, false) })
	_ = a.netConn().Close()
	m := w.recv()
	if m.Topic() != "will/a" || string(m.Payload()) != "a-gone" || m.Qos() != 1 || m.Retained() {
		t.Fatalf("will: %s %q QoS %d retain %v", m.Topic(), m.Payload(), m.Qos(), m.Retained())
	}

	b := connectV3(t, addr, "will-b", true, func(o *mqtt.ClientOptions) { o.SetWill("will/b", "b-gone", 1, false) })
	b.Disconnect(50)
	waitClients(t, n, 1)
	time.Sleep(quietT) // let a wrongly published will be routed before the barrier
	p := connectV3(t, addr, "will-pub", true, nil)
	p.pub("will/barrier", 1, false, "")
	if got := w.recvUntil("will/barrier"); len(got) != 0 {
		t.Fatalf("will published after DISCONNECT: %s %q", got[0].Topic(), got[0].Payload())
	}

	c := connectV3(t, addr, "will-c", true, func(o *mqtt.ClientOptions) { o.SetWill("will/c", "c-gone", 0, true) })
	_ = c.netConn().Close()
	if m := w.recv(); m.Topic() != "will/c" || m.Retained() {
		t.Fatalf("live will delivery: %s retain %v", m.Topic(), m.Retained())
	}
	late := connectV3(t, addr, "will-late", true, nil)
	late.sub(1, "will/c")
	if m := late.recv(); string(m.Payload()) != "c-gone" || !m.Retained() {
		t.Fatalf("retained will: %q retain %v", m.Payload(), m.Retained())
	}
}

// A second connection with the same client identifier closes the first
// [MQTT-3.1.4-2]; the new one works.
func TestV3Takeover(t *testing.T) {
	t.Parallel()
	_, addr := startNode(t, "")
	first := connectV3(t, addr, "same-id", true, nil)
	second := connectV3(t, addr, "same-id", true, nil)
	select {
	case <-first.Lost:
	case <-time.After(waitT):
		t.Fatal("the first connection was not closed")
	}
	second.sub(1, "takeover/t")
	second.pub("takeover/t", 1, false, "hi")
	if m := second.recv(); string(m.Payload()) != "hi" {
		t.Fatalf("got %q", m.Payload())
	}
}

// The server closes a connection that stays silent for one and a half
// times the keep-alive [MQTT-3.1.2-24]; PINGREQ keeps it open and is
// answered with PINGRESP [MQTT-3.12.4-1].
func TestV3KeepAlive(t *testing.T) {
	t.Parallel()
	_, addr := startNode(t, "")
	t.Run("silent", func(t *testing.T) {
		t.Parallel()
		c := dialP(t, addr, packet.V311)
		c.connect(packet.Connect{ClientID: "ka-silent", CleanStart: true, KeepAlive: 1})
		start := time.Now()
		c.expectClosed(4 * time.Second)
		if el := time.Since(start); el < 1200*time.Millisecond || el > 2600*time.Millisecond {
			t.Fatalf("closed after %v, want about 1.5 s", el)
		}
	})
	t.Run("pinging", func(t *testing.T) {
		t.Parallel()
		c := dialP(t, addr, packet.V311)
		c.connect(packet.Connect{ClientID: "ka-ping", CleanStart: true, KeepAlive: 1})
		for range 5 {
			time.Sleep(500 * time.Millisecond) // the keep-alive timing is the subject
			c.write(packet.AppendPingreq(nil))
			if pkt := c.next(); pkt != packet.PINGRESP {
				t.Fatalf("expected PINGRESP, got %s", describe(pkt))
			}
		}
	})
}

// Topic names starting with $ are not matched by filters starting with a
// wildcard [MQTT-4.7.2-1], but are by filters naming the $ level. (The
// broker's own $SYS messages, if any, must not reach the wildcard
// subscriber either.)
func TestV3DollarTopics(t *testing.T) {
	t.Parallel()
	n, addr := startNode(t, "")
	// A retained $ message exists before the wildcard subscriptions are
	// made: it must not be sent on subscribe either.
	if err := n.Server.Publish(&broker.Message{Topic: "$SYS/e2e-test/kept", Payload: []byte("kept"), Retain: true}); err != nil {
		t.Fatal(err)
	}
	wild := connectV3(t, addr, "dollar-wild", true, nil)
	wild.sub(0, "#", "+/e2e-test/info", "+/+/+", "+/e2e-test/#")
	sys := connectV3(t, addr, "dollar-sys", true, nil)
	sys.sub(0, "$SYS/#", "$SYS/+/info")
	if err := n.Server.Publish(&broker.Message{Topic: "$SYS/e2e-test/info", Payload: []byte("sys")}); err != nil {
		t.Fatal(err)
	}
	p := connectV3(t, addr, "dollar-pub", true, nil)
	p.pub("plain/barrier/x", 0, false, "")
	got := wild.recvUntil("plain/barrier/x")
	if len(got) != 0 {
		t.Fatalf("wildcard filters matched %s [MQTT-4.7.2-1]", got[0].Topic())
	}
	for {
		m := sys.recv()
		if m.Topic() == "$SYS/e2e-test/info" {
			if string(m.Payload()) != "sys" {
				t.Fatalf("$SYS/# got %q", m.Payload())
			}
			break
		}
	}
}

// Wildcard semantics [MQTT-4.7.1-2] (multi-level, including the parent
// level), [MQTT-4.7.1-3] (single level, including empty levels) and exact
// matching of levels, each filter on its own client.
func TestV3Wildcards(t *testing.T) {
	t.Parallel()
	_, addr := startNode(t, "")
	topics := []string{"sport", "sport/", "sport/tennis", "sport/tennis/player1", "sport/tennis/player1/ranking",
		"sport/tennis/player1/score/wimbledon", "/finance", "a//b", "Sport/tennis"}
	cases := []struct {
		filter string
		want   []string
	}{
		{"sport/tennis/player1/#", []string{"sport/tennis/player1", "sport/tennis/player1/ranking", "sport/tennis/player1/score/wimbledon"}},
		{"sport/#", []string{"sport", "sport/", "sport/tennis", "sport/tennis/player1", "sport/tennis/player1/ranking", "sport/tennis/player1/score/wimbledon"}},
		{"#", topics},
		{"sport/tennis/+", []string{"sport/tennis/player1"}},
		{"sport/+", []string{"sport/", "sport/tennis"}},
		{"+", []string{"sport"}},
		{"+/+", []string{"sport/", "sport/tennis", "/finance", "Sport/tennis"}},
		{"/+", []string{"/finance"}},
		{"+/tennis/#", []string{"sport/tennis", "sport/tennis/player1", "sport/tennis/player1/ranking", "sport/tennis/player1/score/wimbledon", "Sport/tennis"}},
		{"a/+/b", []string{"a//b"}},
		{"sport/tennis", []string{"sport/tennis"}},
		{"+/+/+/ranking", []string{"sport/tennis/player1/ranking"}},
	}
	clients := make([]*pahoV3, len(cases))
	var wg sync.WaitGroup
	for i, c := range cases {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl, err := dialV3(t, addr, fmt.Sprintf("wild-%d", i), true, nil)
			if err != nil {
				t.Errorf("connect: %v", err)
				return
			}
			tok := cl.SubscribeMultiple(map[string]byte{c.filter: 1, "wild-barrier": 1}, nil)
			if !tok.WaitTimeout(waitT) || tok.Error() != nil {
				t.Errorf("subscribe %s: %v", c.filter, tok.Error())
			}
			clients[i] = cl
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	p := connectV3(t, addr, "wild-pub", true, nil)
	for _, tp := range topics {
		p.pub(tp, 1, false, tp)
	}
	p.pub("wild-barrier", 1, false, "")
	for i, c := range cases {
		var got []string
		for _, m := range clients[i].recvUntil("wild-barrier") {
			got = append(got, m.Topic())
		}
		want := slices.Clone(c.want)
		sort.Strings(got)
		sort.Strings(want)
		if !slices.Equal(got, want) {
			t.Errorf("filter %q matched %s, want %s", c.filter, strings.Join(got, ", "), strings.Join(want, ", "))
		}
	}
}
