package broker_test

// MQTT 5.0 end-to-end tests where the wire is the subject (topic aliases,
// flow control, packet sizes, subscription identifiers, CONNACK
// properties): a raw connection on one side, often a real client on the
// other.

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/eclipse/paho.golang/paho"

	"github.com/isobar-mq/isobar/internal/mqtt/packet"
)

// aliasPub builds a PUBLISH with a topic alias.
func aliasPub(topic string, alias uint16, payload string) packet.Publish {
	p := packet.Publish{Topic: topic, Payload: []byte(payload)}
	p.Props.TopicAlias = alias
	p.Props.Set(packet.PropTopicAlias)
	return p
}

// Inbound topic aliases (section 3.3.2.3.4): a client sets an alias with a
// topic name and then uses it with an empty name, or remaps it; the server
// resolves them, and forwards full topic names to a client that announced
// no Topic Alias Maximum [MQTT-3.1.2-27]. An alias above the server's
// Topic Alias Maximum is Topic Alias invalid (0x94; [MQTT-3.3.2-9] is the
// client's obligation), alias 0 is not permitted [MQTT-3.3.2-8] (0x94 or,
// as Mosquitto answers, 0x82), and aliases do not carry over to another
// connection [MQTT-3.3.2-7] (unknown alias: 0x82).
func TestV5TopicAliasInbound(t *testing.T) {
	t.Parallel()
	_, addr := startNode(t, "")
	s := v5(t, addr, "tai-sub")
	s.sub(paho.SubscribeOptions{Topic: "tai/#", QoS: 0})

	c := dialP(t, addr, packet.V5)
	ack := c.connectID("tai-pub")
	if !ack.Props.Has(packet.PropTopicAliasMaximum) || ack.Props.TopicAliasMaximum != 10 {
		t.Fatalf("CONNACK Topic Alias Maximum %+v, want 10", ack.Props)
	}
	c.publish(aliasPub("tai/x", 1, "1"))
	c.publish(aliasPub("", 1, "2"))
	c.publish(aliasPub("tai/y", 1, "3"))
	c.publish(aliasPub("", 1, "4"))
	c.publish(aliasPub("tai/z", 10, "5"))
	c.publish(aliasPub("", 10, "6"))
	want := []string{"tai/x:1", "tai/x:2", "tai/y:3", "tai/y:4", "tai/z:5", "tai/z:6"}
	for _, w := range want {
		m := s.recv()
		if got := m.Topic + ":" + string(m.Payload); got != w {
			t.Fatalf("got %s, want %s", got, w)
		}
		if m.Properties != nil && m.Properties.TopicAlias != nil {
			t.Fatalf("topic alias %d sent to a client without Topic Alias Maximum", *m.Properties.TopicAlias)
		}
	}

	for _, tc := range []struct {
		name  string
		pub   packet.Publish
		codes []byte
	}{
		{"above maximum", aliasPub("tai/x", 11, ""), []byte{packet.TopicAliasInvalid}},
		{"zero", aliasPub("tai/x", 0, ""), []byte{packet.TopicAliasInvalid, packet.ProtocolError}},
		{"not carried over", aliasPub("", 1, ""), []byte{packet.ProtocolError}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialP(t, addr, packet.V5)
			c.connectID("tai-bad")
			c.publish(tc.pub)
			pkt := c.next()
			if d, ok := pkt.(*packet.Disconnect); !ok || !slices.Contains(tc.codes, d.ReasonCode) {
				t.Fatalf("got %s, want DISCONNECT with one of %x", describe(pkt), tc.codes)
			}
			c.expectClosed(waitT)
		})
	}
}

// aliasResolver plays the client's side of outbound topic aliases.
type aliasResolver struct {
	max uint16
	m   map[uint16]string
}

func (r *aliasResolver) resolve(t *testing.T, p *packet.Publish) string {
	t.Helper()
	if !p.Props.Has(packet.PropTopicAlias) {
		if p.Topic == "" {
			t.Fatalf("empty topic without alias: %s", describe(p))
		}
		return p.Topic
	}
	a := p.Props.TopicAlias
	if a == 0 || a > r.max {
		t.Fatalf("topic alias %d outside 1..%d [MQTT-3.1.2-26]", a, r.max)
	}
	if p.Topic != "" {
		r.m[a] = p.Topic
		return p.Topic
	}
	topic, ok := r.m[a]
	if !ok {
		t.Fatalf("alias %d used before being set on this connection", a)
	}
	return topic
}

// Outbound topic aliases: to a client that announced Topic Alias Maximum
// 2 the server sends a repeated topic as an alias with an empty name,
// never uses an alias above 2 [MQTT-3.1.2-26], and starts afresh on a new
// connection [MQTT-3.3.2-7].
func TestV5TopicAliasOutbound(t *testing.T) {
	t.Parallel()
	_, addr := startNode(t, "")
	connect := func() (*pconn, *aliasResolver) {
		s := dialP(t, addr, packet.V5)
		var props packet.Properties
		props.TopicAliasMaximum = 2
		props.Set(packet.PropTopicAliasMaximum)
		s.connect(packet.Connect{ClientID: "tao-sub", CleanStart: true, KeepAlive: 30, Props: props})
		s.sub("tao/#", 0)
		return s, &aliasResolver{max: 2, m: map[uint16]string{}}
	}
	s, r := connect()
	p := v5(t, addr, "tao-pub")
	topics := []string{"tao/a", "tao/a", "tao/b", "tao/b", "tao/c", "tao/c", "tao/a", "tao/b"}
	for i, tp := range topics {
		p.pub(&paho.Publish{Topic: tp, Payload: []byte(fmt.Sprint(i))})
	}
	var pubs []*packet.Publish
	for i, tp := range topics {
		m := s.nextPublish()
		pubs = append(pubs, m)
		if got := r.resolve(t, m); got != tp || string(m.Payload) != fmt.Sprint(i) {
			t.Fatalf("delivery %d resolved to %s %q, want %s", i, got, m.Payload, tp)
		}
	}
	if pubs[0].Topic != "tao/a" || !pubs[0].Props.Has(packet.PropTopicAlias) {
		t.Fatalf("first delivery does not set an alias: %s", describe(pubs[0]))
	}
	if pubs[1].Topic != "" || !pubs[1].Props.Has(packet.PropTopicAlias) {
		t.Fatalf("second delivery on the same topic does not use the alias: %s", describe(pubs[1]))
	}

	_ = s.c.Close()
	s, r = connect()
	p.pub(&paho.Publish{Topic: "tao/a", Payload: []byte("again")})
	if m := s.nextPublish(); m.Topic != "tao/a" || r.resolve(t, m) != "tao/a" {
		t.Fatalf("first delivery on a new connection: %s", describe(m))
	}
}

// Receive Maximum of the client: the server never has more than that many
// QoS 1/2 PUBLISH unacknowledged [MQTT-3.3.4-9]; PUBACK, PUBCOMP and an
// error PUBREC free a slot, a successful PUBREC does not.
func TestV5ReceiveMaximumOutbound(t *testing.T) {
	t.Parallel()
	_, addr := startNode(t, "")
	s := dialP(t, addr, packet.V5)
	var props packet.Properties
	props.ReceiveMaximum = 2
	props.Set(packet.PropReceiveMaximum)
	s.connect(packet.Connect{ClientID: "rmo-sub", CleanStart: true, KeepAlive: 30, Props: props})
	s.sub("rmo/#", 2)
	p := dialP(t, addr, packet.V5)
	p.connectID("rmo-pub")
	for i := range 6 {
		// All acknowledged by the server, so all routed to the subscriber.
		p.pub1("rmo/q1", []byte(fmt.Sprint(i)), uint16(i+1))
	}
	next := func(want string) *packet.Publish {
		t.Helper()
		m := s.nextPublish()
		if string(m.Payload) != want {
			t.Fatalf("got %s, want payload %s", describe(m), want)
		}
		return m
	}
	m0, m1 := next("0"), next("1")
	s.expectNothing(quietT)
	s.ack(packet.PUBACK, m0.PacketID)
	m2 := next("2")
	s.expectNothing(quietT)
	s.ack(packet.PUBACK, m1.PacketID)
	s.ack(packet.PUBACK, m2.PacketID)
	m3, m4 := next("3"), next("4")
	s.expectNothing(quietT)
	s.ack(packet.PUBACK, m3.PacketID)
	s.ack(packet.PUBACK, m4.PacketID)
	s.ack(packet.PUBACK, next("5").PacketID)
	s.expectNothing(quietT)

	// QoS 2: a successful PUBREC keeps the slot until PUBCOMP.
	s2 := dialP(t, addr, packet.V5)
	s2.connect(packet.Connect{ClientID: "rmo-sub2", CleanStart: true, KeepAlive: 30, Props: props})
	s2.sub("rmo2/#", 2)
	for i := range 4 {
		p.publish(packet.Publish{Topic: "rmo2/q2", QoS: 2, PacketID: uint16(100 + i), Payload: []byte(fmt.Sprint(i))})
		p.expectAck(packet.PUBREC, uint16(100+i))
		p.ack(packet.PUBREL, uint16(100+i))
		p.expectAck(packet.PUBCOMP, uint16(100+i))
	}
	q0, q1 := s2.nextPublish(), s2.nextPublish()
	s2.expectNothing(quietT)
	s2.ack(packet.PUBREC, q0.PacketID)
	s2.expectAck(packet.PUBREL, q0.PacketID)
	s2.expectNothing(quietT)
	s2.ack(packet.PUBCOMP, q0.PacketID)
	q2 := s2.nextPublish()
	if string(q2.Payload) != "2" {
		t.Fatalf("got %s, want payload 2", describe(q2))
	}
	// PUBREC with an error code ends the flow and frees the slot.
	rec := packet.Ack{Type: packet.PUBREC, PacketID: q1.PacketID, ReasonCode: packet.UnspecifiedError}
	s2.write(rec.Append(nil, packet.V5))
	if q3 := s2.nextPublish(); string(q3.Payload) != "3" {
		t.Fatalf("got %s, want payload 3", describe(q3))
	}
}

// The server's Receive Maximum (20 by default): a client with 20 QoS 2
// messages unreleased that sends another gets DISCONNECT 0x93 (section
// 3.3.4, [MQTT-3.3.4-7] is the client's obligation); PUBREL frees a slot.
func TestV5ReceiveMaximumInbound(t *testing.T) {
	t.Parallel()
	_, addr := startNode(t, "")
	c := dialP(t, addr, packet.V5)
	if ack := c.connectID("rmi"); ack.Props.ReceiveMaximum != 20 || !ack.Props.Has(packet.PropReceiveMaximum) {
		t.Fatalf("CONNACK Receive Maximum %+v, want 20", ack.Props)
	}
	for id := uint16(1); id <= 20; id++ {
		c.publish(packet.Publish{Topic: "rmi/t", QoS: 2, PacketID: id})
		c.expectAck(packet.PUBREC, id)
	}
	c.ack(packet.PUBREL, 1)
	c.expectAck(packet.PUBCOMP, 1)
	c.publish(packet.Publish{Topic: "rmi/t", QoS: 2, PacketID: 21})
	c.expectAck(packet.PUBREC, 21)
	c.publish(packet.Publish{Topic: "rmi/t", QoS: 2, PacketID: 22})
	c.expectDisconnect(packet.ReceiveMaximumExceeded)
}

// The server's Maximum Packet Size (mqtt.max_packet_size) is advertised in
// CONNACK; a packet of exactly that size is accepted, a bigger one gets
// DISCONNECT 0x95 (section 3.2.2.3.6; [MQTT-3.2.2-15] is the client's
// obligation); a 3.1.1 client is just closed.
func TestServerMaximumPacketSize(t *testing.T) {
	t.Parallel()
	_, addr := startNode(t, "mqtt:\n  max_packet_size: 1024\n")
	c := dialP(t, addr, packet.V5)
	ack := c.connectID("smps")
	if !ack.Props.Has(packet.PropMaximumPacketSize) || ack.Props.MaximumPacketSize != 1024 {
		t.Fatalf("CONNACK Maximum Packet Size %+v, want 1024", ack.Props)
	}
	fit := packet.Publish{Topic: "smps/t", QoS: 1, PacketID: 1}
	fit.Payload = make([]byte, 1024-fit.Len(packet.V5)-1) // -1: the remaining length takes two bytes
	if fit.Len(packet.V5) != 1024 {
		t.Fatalf("built %d bytes", fit.Len(packet.V5))
	}
	c.publish(fit)
	c.expectAck(packet.PUBACK, 1)
	big := packet.Publish{Topic: "smps/t", QoS: 1, PacketID: 2, Payload: make([]byte, len(fit.Payload)+1)}
	c.publish(big)
	c.expectDisconnect(packet.PacketTooLarge)

	v3 := dialP(t, addr, packet.V311)
	v3.connectID("smps3")
	v3.publish(packet.Publish{Topic: "smps/t", Payload: make([]byte, 2000)})
	v3.expectClosed(waitT)
}

// Subscription identifiers: one message for overlapping subscriptions
// carries the identifiers of all of them [MQTT-3.3.4-3] [MQTT-3.3.4-4];
// a retained message sent on subscribe carries its subscription's.
func TestV5SubscriptionIdentifiers(t *testing.T) {
	t.Parallel()
	_, addr := startNode(t, "")
	p := v5(t, addr, "sid-pub")
	p.pub(&paho.Publish{Topic: "sid/kept", QoS: 1, Retain: true, Payload: []byte("r")})
	s := dialP(t, addr, packet.V5)
	s.connectID("sid-sub")
	withID := func(id uint32) packet.Properties {
		var props packet.Properties
		props.SubscriptionIdentifiers = []uint32{id}
		props.Set(packet.PropSubscriptionIdentifier)
		return props
	}
	s.subscribe(1, withID(1), packet.Subscription{Filter: "sid/#", QoS: 1})
	if m := s.nextPublish(); m.Topic != "sid/kept" || !m.Retain || !slices.Equal(m.Props.SubscriptionIdentifiers, []uint32{1}) {
		t.Fatalf("retained delivery: %s", describe(m))
	} else {
		s.ack(packet.PUBACK, m.PacketID)
	}
	s.subscribe(2, withID(268435455), packet.Subscription{Filter: "sid/+/x", QoS: 0, RetainHandling: 2})
	s.subscribe(3, packet.Properties{}, packet.Subscription{Filter: "sid/a/x", QoS: 0, RetainHandling: 2})

	for _, c := range []struct {
		topic string
		ids   []uint32
	}{{"sid/a/x", []uint32{1, 268435455}}, {"sid/b/x", []uint32{1, 268435455}}, {"sid/b", []uint32{1}}} {
		p.pub(&paho.Publish{Topic: c.topic, QoS: 1, Payload: []byte(c.topic)})
		m := s.nextPublish()
		ids := slices.Clone(m.Props.SubscriptionIdentifiers)
		slices.Sort(ids)
		if m.Topic != c.topic || !slices.Equal(ids, c.ids) {
			t.Fatalf("%s: got %s, want one copy with identifiers %v", c.topic, describe(m), c.ids)
		}
		if m.QoS > 0 {
			s.ack(packet.PUBACK, m.PacketID)
		}
	}
	s.expectNothing(quietT)
}

// propIDs lists the property identifiers present.
func propIDs(p packet.Properties) []byte {
	var ids []byte
	for id := byte(1); id < 64; id++ {
		if p.Has(id) {
			ids = append(ids, id)
		}
	}
	return ids
}

// CONNACK advertises exactly what differs from the protocol defaults
// (section 3.2.2.3), and the server behaves as advertised: QoS above
// Maximum QoS is DISCONNECT 0x9B [MQTT-3.2.2-11], retain with Retain
// Available 0 is 0x9A [MQTT-3.2.2-14], subscription identifiers when not
// supported 0xA1, and refused wildcard/shared subscriptions get SUBACK
// 0xA2/0x9E.
func TestV5ConnackProperties(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		config string
		want   []byte
		check  func(t *testing.T, ack *packet.Connack, addr string)
	}{
		{"default", "", []byte{packet.PropReceiveMaximum, packet.PropTopicAliasMaximum, packet.PropMaximumPacketSize}, func(t *testing.T, ack *packet.Connack, _ string) {
			if ack.Props.ReceiveMaximum != 20 || ack.Props.TopicAliasMaximum != 10 || ack.Props.MaximumPacketSize != 1<<20 {
				t.Fatalf("Receive Maximum %d, Topic Alias Maximum %d, Maximum Packet Size %d; want 20, 10, 1 MiB",
					ack.Props.ReceiveMaximum, ack.Props.TopicAliasMaximum, ack.Props.MaximumPacketSize)
			}
		}},
		{"qos1-noretain", "mqtt:\n  max_qos: 1\n  retain_available: false\n",
			[]byte{packet.PropReceiveMaximum, packet.PropTopicAliasMaximum, packet.PropMaximumQoS, packet.PropRetainAvailable, packet.PropMaximumPacketSize},
			func(t *testing.T, ack *packet.Connack, addr string) {
				if ack.Props.MaximumQoS != 1 || ack.Props.RetainAvailable != 0 {
					t.Fatalf("Maximum QoS %d, Retain Available %d; want 1, 0", ack.Props.MaximumQoS, ack.Props.RetainAvailable)
				}
				c := dialP(t, addr, packet.V5)
				c.connectID("cp-q2")
				if sa := c.subscribe(1, packet.Properties{}, packet.Subscription{Filter: "cp/t", QoS: 2}); !slices.Equal(sa.ReasonCodes, []byte{1}) {
					t.Fatalf("QoS 2 subscription granted %v, want 1", sa.ReasonCodes)
				}
				c.publish(packet.Publish{Topic: "cp/t", QoS: 2, PacketID: 1})
				c.expectDisconnect(packet.QoSNotSupported)
				c = dialP(t, addr, packet.V5)
				c.connectID("cp-retain")
				c.publish(packet.Publish{Topic: "cp/t", QoS: 1, PacketID: 1, Retain: true})
				c.expectDisconnect(packet.RetainNotSupported)
			}},
		{"features-off", "mqtt:\n  max_packet_size: 2048\n  receive_maximum: 65535\n  topic_alias_maximum: 0\n" +
			"  wildcard_subscriptions: false\n  subscription_identifiers: false\n  shared_subscriptions: false\n",
			[]byte{packet.PropMaximumPacketSize, packet.PropWildcardSubscriptionAvailable,
				packet.PropSubscriptionIdentifierAvailable, packet.PropSharedSubscriptionAvailable},
			func(t *testing.T, ack *packet.Connack, addr string) {
				if ack.Props.MaximumPacketSize != 2048 || ack.Props.WildcardSubscriptionAvailable != 0 ||
					ack.Props.SubscriptionIdentifierAvailable != 0 || ack.Props.SharedSubscriptionAvailable != 0 {
					t.Fatalf("properties %+v", ack.Props)
				}
				c := dialP(t, addr, packet.V5)
				c.connectID("cp-subs")
				sa := c.subscribe(1, packet.Properties{}, packet.Subscription{Filter: "cp/+"}, packet.Subscription{Filter: "$share/g/cp/t"},
					packet.Subscription{Filter: "cp/t"})
				if !slices.Equal(sa.ReasonCodes, []byte{packet.WildcardSubscriptionsNotSupported, packet.SharedSubscriptionsNotSupported, 0}) {
					t.Fatalf("SUBACK %x, want A2 9E 00", sa.ReasonCodes)
				}
				var props packet.Properties
				props.SubscriptionIdentifiers = []uint32{5}
				props.Set(packet.PropSubscriptionIdentifier)
				c.write((&packet.Subscribe{PacketID: 2, Props: props, Subs: []packet.Subscription{{Filter: "cp/x"}}}).Append(nil, packet.V5))
				c.expectDisconnect(packet.SubscriptionIdentifiersNotSupported)
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, addr := startNode(t, tc.config)
			c := dialP(t, addr, packet.V5)
			ack := c.connectID("cp-" + tc.name)
			got, want := propIDs(ack.Props), slices.Clone(tc.want)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Fatalf("CONNACK properties %s, want %s", hexIDs(got), hexIDs(want))
			}
			tc.check(t, ack, addr)
		})
	}
}

func hexIDs(ids []byte) string {
	var s []string
	for _, id := range ids {
		s = append(s, fmt.Sprintf("0x%02X", id))
	}
	return "[" + strings.Join(s, " ") + "]"
}

// DISCONNECT setting a non-zero Session Expiry Interval after CONNECT had
// 0 is a protocol error, answered with DISCONNECT 0x82 (section
// 3.14.2.2.2).
func TestV5DisconnectSessionExpiryAfterZero(t *testing.T) {
	t.Parallel()
	_, addr := startNode(t, "")
	c := dialP(t, addr, packet.V5)
	c.connectID("dse")
	d := packet.Disconnect{}
	d.Props.SessionExpiryInterval = 30
	d.Props.Set(packet.PropSessionExpiryInterval)
	c.write(d.Append(nil, packet.V5))
	c.expectDisconnect(packet.ProtocolError)
}
