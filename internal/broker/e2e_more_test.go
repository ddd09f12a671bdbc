package broker_test

// More end-to-end cases: wills on takeover and with properties, the v5
// keep-alive DISCONNECT, unsubscribe, replaced subscriptions, and shared
// subscription corner cases.

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/isobar-mq/isobar/internal/mqtt/packet"
	"github.com/isobar-mq/isobar/internal/testutil"
)

// Takeover does not count as a normal disconnection: the will of the
// connection taken over is published (5.0 section 3.1.4: "If the existing
// Client has a Will Message, that Will Message is published"; 3.1.1: the
// connection is closed without DISCONNECT [MQTT-3.1.2-8]).
func TestWillOnTakeover(t *testing.T) {
	t.Parallel()
	_, addr := startNode(t, "")
	w := v5(t, addr, "wt-watch")
	w.sub(paho.SubscribeOptions{Topic: "wt/#", QoS: 1})

	old5 := connectV5(t, addr, &paho.Connect{ClientID: "wt-5", CleanStart: true, KeepAlive: 30,
		WillMessage: &paho.WillMessage{Topic: "wt/5", QoS: 1, Payload: []byte("v5 will")}}, nil)
	_ = v5(t, addr, "wt-5")
	if d := old5.serverDisconnect(); d.ReasonCode != 0x8E {
		t.Fatalf("DISCONNECT 0x%02X, want 0x8E", d.ReasonCode)
	}
	if m := w.recv(); m.Topic != "wt/5" {
		t.Fatalf("got %s, want the will of the 5.0 connection taken over", m.Topic)
	}

	_ = connectV3(t, addr, "wt-3", true, func(o *mqtt.ClientOptions) { o.SetWill("wt/3", "v3 will", 1, false) })
	_ = connectV3(t, addr, "wt-3", true, nil)
	if m := w.recv(); m.Topic != "wt/3" {
		t.Fatalf("got %s, want the will of the 3.1.1 connection taken over", m.Topic)
	}
}

// A will carries its properties to subscribers, user properties in order
// [MQTT-3.1.3-10], Message Expiry Interval as the message's expiry
// (section 3.1.3.2.4), content type, response topic and correlation data
// (sections 3.1.3.2.5-7), payload format indicator (3.1.3.2.3). The will is
// sent from a raw connection: paho.golang v0.23.0 encodes will properties
// with the CONNECT property set and silently drops all but Will Delay
// Interval and User Property.
func TestV5WillProperties(t *testing.T) {
	t.Parallel()
	_, addr := startNode(t, "")
	w := v5(t, addr, "wp-watch")
	w.sub(paho.SubscribeOptions{Topic: "wp/#", QoS: 2})
	user := []packet.UserProperty{{Key: "z", Value: "1"}, {Key: "a", Value: "2"}, {Key: "z", Value: "3"}}
	var wp packet.Properties
	wp.PayloadFormatIndicator = 1
	wp.MessageExpiryInterval = 120
	wp.ContentType = "application/json"
	wp.ResponseTopic = "wp/reply"
	wp.CorrelationData = []byte{1, 2, 3}
	wp.User = user
	for _, id := range []byte{packet.PropPayloadFormatIndicator, packet.PropMessageExpiryInterval, packet.PropContentType,
		packet.PropResponseTopic, packet.PropCorrelationData, packet.PropUserProperty} {
		wp.Set(id)
	}
	c := dialP(t, addr, packet.V5)
	c.connect(packet.Connect{ClientID: "wp", CleanStart: true, KeepAlive: 30, WillFlag: true, WillQoS: 2,
		WillTopic: "wp/gone", WillPayload: []byte(`{"gone":true}`), WillProps: wp})
	_ = c.c.Close()
	m := w.recv()
	pp := m.Properties
	var got []packet.UserProperty
	if pp != nil {
		for _, u := range pp.User {
			got = append(got, packet.UserProperty{Key: u.Key, Value: u.Value})
		}
	}
	if m.Topic != "wp/gone" || m.QoS != 2 || pp == nil || !slices.Equal(got, user) || pp.ContentType != "application/json" ||
		pp.ResponseTopic != "wp/reply" || string(pp.CorrelationData) != "\x01\x02\x03" ||
		pp.PayloadFormat == nil || *pp.PayloadFormat != 1 || pp.MessageExpiry == nil || *pp.MessageExpiry < 119 || *pp.MessageExpiry > 120 {
		t.Fatalf("will delivered as %s QoS %d %+v", m.Topic, m.QoS, pp)
	}
}

// The server closes a silent 5.0 connection after 1.5 times the keep-alive
// [MQTT-3.1.2-22], telling it 0x8D (Keep Alive timeout, section 3.14.2.1).
func TestV5KeepAliveTimeout(t *testing.T) {
	t.Parallel()
	_, addr := startNode(t, "")
	c := dialP(t, addr, packet.V5)
	c.connect(packet.Connect{ClientID: "ka5", CleanStart: true, KeepAlive: 1})
	start := time.Now()
	pkt, err := c.try(4 * time.Second)
	if err != nil {
		t.Fatalf("expected DISCONNECT 0x8D, got %v", err)
	}
	if d, ok := pkt.(*packet.Disconnect); !ok || d.ReasonCode != packet.KeepAliveTimeout {
		t.Fatalf("expected DISCONNECT 0x8D, got %s", describe(pkt))
	}
	if el := time.Since(start); el < 1200*time.Millisecond || el > 2600*time.Millisecond {
		t.Fatalf("disconnected after %v, want about 1.5 s", el)
	}
	c.expectClosed(waitT)
}

// UNSUBSCRIBE: UNSUBACK with 0x00 for an existing subscription and 0x11
// for none (section 3.11.3); the subscription is deleted [MQTT-3.10.4-1]
// and no more messages are delivered through it [MQTT-3.10.4-2], while
// other subscriptions go on.
func TestV5Unsubscribe(t *testing.T) {
	t.Parallel()
	_, addr := startNode(t, "")
	c := v5(t, addr, "unsub")
	c.sub(paho.SubscribeOptions{Topic: "un/a", QoS: 1}, paho.SubscribeOptions{Topic: "un/b", QoS: 1})
	ctx, cancel := contextT()
	defer cancel()
	ua, err := c.Unsubscribe(ctx, &paho.Unsubscribe{Topics: []string{"un/a", "un/none"}})
	if err != nil && ua == nil {
		t.Fatal(err)
	}
	if !slices.Equal(ua.Reasons, []byte{0x00, 0x11}) {
		t.Fatalf("UNSUBACK %x, want 00 11", ua.Reasons)
	}
	p := v5(t, addr, "unsub-pub")
	p.pub(&paho.Publish{Topic: "un/a", QoS: 1, Payload: []byte("a")})
	p.pub(&paho.Publish{Topic: "un/b", QoS: 1, Payload: []byte("b")})
	if got := c.recvUntil("un/b"); len(got) != 0 {
		t.Fatalf("message through a removed subscription: %s", got[0].Topic)
	}
	// 3.1.1 too.
	v3 := connectV3(t, addr, "unsub3", true, nil)
	v3.sub(1, "un/a", "un/b")
	wait(t, v3.Unsubscribe("un/a"), "unsubscribe")
	p.pub(&paho.Publish{Topic: "un/a", QoS: 1, Payload: []byte("a")})
	p.pub(&paho.Publish{Topic: "un/b", QoS: 1, Payload: []byte("b")})
	if got := v3.recvUntil("un/b"); len(got) != 0 {
		t.Fatalf("3.1.1: message through a removed subscription: %s", got[0].Topic())
	}
}

// Subscribing again to the same filter replaces the subscription
// [MQTT-3.8.4-3]: one copy per message at the new QoS, and (Retain
// Handling 0) the retained messages are sent again.
func TestV5SubscriptionReplaced(t *testing.T) {
	t.Parallel()
	_, addr := startNode(t, "")
	p := v5(t, addr, "repl-pub")
	p.pub(&paho.Publish{Topic: "repl/t", QoS: 2, Retain: true, Payload: []byte("kept")})
	c := v5(t, addr, "repl")
	c.sub(paho.SubscribeOptions{Topic: "repl/#", QoS: 2})
	if m := c.recv(); !m.Retain || m.QoS != 2 {
		t.Fatalf("first retained delivery: retain %v QoS %d", m.Retain, m.QoS)
	}
	if sa := c.sub(paho.SubscribeOptions{Topic: "repl/#", QoS: 0}); !slices.Equal(sa.Reasons, []byte{0}) {
		t.Fatalf("SUBACK %v", sa.Reasons)
	}
	if m := c.recv(); !m.Retain || m.QoS != 0 {
		t.Fatalf("retained delivery after replacing: retain %v QoS %d, want retained at QoS 0", m.Retain, m.QoS)
	}
	p.pub(&paho.Publish{Topic: "repl/t", QoS: 2, Payload: []byte("live")})
	p.pub(&paho.Publish{Topic: "repl/end", QoS: 2})
	got := c.recvUntil("repl/end")
	if len(got) != 1 || got[0].QoS != 0 || string(got[0].Payload) != "live" {
		t.Fatalf("after replacing: %d deliveries (first QoS %d), want one at QoS 0", len(got), got[0].QoS)
	}
}

// Shared subscriptions: retained messages are not sent when one is made
// (section 3.3.1.3 covers only non-shared subscriptions; section 4.8.2), and
// No Local on a shared subscription is a protocol error [MQTT-3.8.3-4].
func TestV5SharedSubscriptionCorners(t *testing.T) {
	t.Parallel()
	_, addr := startNode(t, "")
	p := v5(t, addr, "shc-pub")
	p.pub(&paho.Publish{Topic: "shc/t", QoS: 1, Retain: true, Payload: []byte("kept")})
	m := v5(t, addr, "shc-member")
	m.sub(paho.SubscribeOptions{Topic: "$share/g/shc/#", QoS: 1})
	p.pub(&paho.Publish{Topic: "shc/end", QoS: 1})
	if got := m.recvUntil("shc/end"); len(got) != 0 {
		t.Fatalf("shared subscription got the retained message %s", got[0].Topic)
	}

	c := dialP(t, addr, packet.V5)
	c.connectID("shc-nolocal")
	sp := packet.Subscribe{PacketID: 1, Subs: []packet.Subscription{{Filter: "$share/g/shc/#", QoS: 1, NoLocal: true}}}
	c.write(sp.Append(nil, packet.V5))
	c.expectDisconnect(packet.ProtocolError)
}

// CONNECT with a will the server cannot honour is refused: will QoS above
// Maximum QoS with 0x9B [MQTT-3.2.2-12], will retain without retain
// support with 0x9A [MQTT-3.2.2-13].
func TestV5WillRefusedByFeatures(t *testing.T) {
	t.Parallel()
	_, addr := startNode(t, "mqtt:\n  max_qos: 1\n  retain_available: false\n")
	for _, tc := range []struct {
		name string
		cp   packet.Connect
		code byte
	}{
		{"qos2", packet.Connect{ClientID: "wr-q", CleanStart: true, WillFlag: true, WillQoS: 2, WillTopic: "wr/t"}, packet.QoSNotSupported},
		{"retain", packet.Connect{ClientID: "wr-r", CleanStart: true, WillFlag: true, WillRetain: true, WillTopic: "wr/t"}, packet.RetainNotSupported},
	} {
		c := dialP(t, addr, packet.V5)
		if ack := c.connectAck(tc.cp); ack.ReasonCode != tc.code {
			t.Errorf("%s: CONNACK 0x%02X, want 0x%02X", tc.name, ack.ReasonCode, tc.code)
		}
		c.expectClosed(waitT)
	}
	// Within the limits it is accepted.
	c := dialP(t, addr, packet.V5)
	c.connect(packet.Connect{ClientID: "wr-ok", CleanStart: true, WillFlag: true, WillQoS: 1, WillTopic: "wr/t"})
}

// A shared-subscription QoS 2 message whose delivery to a member has begun
// is not given to another member when the connection breaks: it is
// completed with that member when it reconnects [MQTT-4.8.2-4], and if
// its session ends instead it goes to nobody [MQTT-4.8.2-5].
func TestV5SharedQoS2StaysWithMember(t *testing.T) {
	t.Parallel()
	n, addr := startNode(t, "")
	for _, expiry := range []uint32{60, 0} {
		base := n.Server.ClientCount()
		group := fmt.Sprint("$share/q2-", expiry, "/sq2/", expiry)
		connectA := func(clean bool) (*pconn, *packet.Connack) {
			a := dialP(t, addr, packet.V5)
			var props packet.Properties
			props.SessionExpiryInterval = expiry
			props.Set(packet.PropSessionExpiryInterval)
			return a, a.connect(packet.Connect{ClientID: fmt.Sprint("sq2-a-", expiry), CleanStart: clean, KeepAlive: 30, Props: props})
		}
		a, _ := connectA(true)
		a.sub(group, 2)
		b := v5(t, addr, fmt.Sprint("sq2-b-", expiry))
		b.sub(paho.SubscribeOptions{Topic: group, QoS: 2})
		p := v5(t, addr, fmt.Sprint("sq2-pub-", expiry))
		// Two messages: round robin gives one to each member.
		for i := range 2 {
			p.pub(&paho.Publish{Topic: fmt.Sprint("sq2/", expiry), QoS: 2, Payload: []byte(fmt.Sprint(i))})
		}
		held := a.nextPublish()
		gotB := b.recv()
		if string(held.Payload) == string(gotB.Payload) {
			t.Fatalf("both members got %q", held.Payload)
		}
		_ = a.c.Close()
		waitClients(t, n, base+2)
		b.noMsg(quietT)
		if expiry == 0 {
			continue
		}
		a, ack := connectA(false)
		if !ack.SessionPresent {
			t.Fatal("session not present")
		}
		m := a.nextPublish()
		if !m.Dup || m.PacketID != held.PacketID || string(m.Payload) != string(held.Payload) {
			t.Fatalf("resent %s, want a DUP copy of %s", describe(m), describe(held))
		}
		a.ack(packet.PUBREC, m.PacketID)
		a.expectAck(packet.PUBREL, m.PacketID)
		a.ack(packet.PUBCOMP, m.PacketID)
		_ = a.c.Close()
		waitClients(t, n, base+2)
	}
}

// The same broker over MQTT-over-WebSocket (section 6 of both
// specifications): paho.mqtt.golang on a ws listener and a TCP client
// exchange messages both ways.
func TestWebSocketRoundTrip(t *testing.T) {
	t.Parallel()
	n, _ := startNode(t, "  - {name: ws, protocol: ws, address: \"127.0.0.1:0\"}\n")
	wsAddr := testutil.Addr(t, n, "ws")
	tcpAddr := testutil.Addr(t, n, "mqtt")
	ws, err := dialV3(t, wsAddr, "ws-client", true, func(o *mqtt.ClientOptions) {
		o.Servers = nil
		o.AddBroker("ws://" + wsAddr + "/mqtt")
		o.CustomOpenConnectionFn = nil
	})
	if err != nil {
		t.Fatalf("WebSocket connect: %v", err)
	}
	ws.sub(1, "ws/to-ws")
	tcp := connectV3(t, tcpAddr, "tcp-client", true, nil)
	tcp.sub(1, "ws/to-tcp")
	tcp.pub("ws/to-ws", 1, false, "over tcp")
	if m := ws.recv(); string(m.Payload()) != "over tcp" {
		t.Fatalf("WebSocket client got %q", m.Payload())
	}
	ws.pub("ws/to-tcp", 1, false, "over ws")
	if m := tcp.recv(); string(m.Payload()) != "over ws" {
		t.Fatalf("TCP client got %q", m.Payload())
	}
}
