package broker_test

// End-to-end tests with paho.golang speaking MQTT 5.0. Statement ids are
// those of MQTT 5.0 (OASIS Standard, 2019); where a behaviour has no
// numbered statement the section is named.

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"slices"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/isobar-mq/isobar/internal/mqtt/packet"
)

// User properties are forwarded unaltered [MQTT-3.3.2-17] and in order
// [MQTT-3.3.2-18], duplicates included.
func TestV5UserPropertiesOrder(t *testing.T) {
	t.Parallel()
	_, addr := startNode(t, "")
	s := v5(t, addr, "up-sub")
	s.sub(paho.SubscribeOptions{Topic: "up/#", QoS: 1})
	p := v5(t, addr, "up-pub")
	user := paho.UserProperties{{Key: "b", Value: "1"}, {Key: "a", Value: "2"}, {Key: "b", Value: "3"},
		{Key: "", Value: ""}, {Key: "ключ", Value: "значение"}, {Key: "a", Value: "2"}}
	for qos := byte(0); qos <= 2; qos++ {
		p.pub(&paho.Publish{Topic: "up/t", QoS: qos, Payload: []byte{qos}, Properties: &paho.PublishProperties{User: user}})
		m := s.recv()
		if m.Properties == nil || !slices.Equal(m.Properties.User, user) {
			t.Fatalf("QoS %d: user properties %+v, want %+v", qos, m.Properties, user)
		}
	}
}

// Payload Format Indicator [MQTT-3.3.2-4] and Content Type [MQTT-3.3.2-20]
// reach subscribers unaltered; absent ones stay absent.
func TestV5PayloadFormatAndContentType(t *testing.T) {
	t.Parallel()
	_, addr := startNode(t, "")
	s := v5(t, addr, "pf-sub")
	s.sub(paho.SubscribeOptions{Topic: "pf/#", QoS: 2})
	p := v5(t, addr, "pf-pub")
	p.pub(&paho.Publish{Topic: "pf/json", QoS: 1, Payload: []byte(`{"t":21.5}`),
		Properties: &paho.PublishProperties{PayloadFormat: byteP(1), ContentType: "application/json"}})
	p.pub(&paho.Publish{Topic: "pf/bin", QoS: 2, Payload: []byte{0xff, 0x00},
		Properties: &paho.PublishProperties{PayloadFormat: byteP(0), ContentType: "application/octet-stream"}})
	p.pub(&paho.Publish{Topic: "pf/none", QoS: 0, Payload: []byte("x")})

	m := s.recv()
	if m.Properties.PayloadFormat == nil || *m.Properties.PayloadFormat != 1 || m.Properties.ContentType != "application/json" {
		t.Fatalf("pf/json: %+v", m.Properties)
	}
	m = s.recv()
	if m.Properties.PayloadFormat == nil || *m.Properties.PayloadFormat != 0 || m.Properties.ContentType != "application/octet-stream" ||
		!bytes.Equal(m.Payload, []byte{0xff, 0x00}) {
		t.Fatalf("pf/bin: %+v %x", m.Properties, m.Payload)
	}
	m = s.recv()
	if m.Properties != nil && (m.Properties.PayloadFormat != nil || m.Properties.ContentType != "") {
		t.Fatalf("pf/none gained properties: %+v", m.Properties)
	}
}

// Request/response: Response Topic [MQTT-3.3.2-15] and Correlation Data
// [MQTT-3.3.2-16] are forwarded unaltered, so a responder can answer on
// the response topic with the requester's correlation data.
func TestV5RequestResponse(t *testing.T) {
	t.Parallel()
	_, addr := startNode(t, "")
	responder := v5(t, addr, "rr-responder")
	responder.sub(paho.SubscribeOptions{Topic: "rr/service/+", QoS: 1})
	requester := v5(t, addr, "rr-requester")
	requester.sub(paho.SubscribeOptions{Topic: "rr/reply/rr-requester", QoS: 1})

	done := make(chan error, 1)
	go func() {
		for i := 0; i < 3; i++ {
			var req *paho.Publish
			select {
			case req = <-responder.Msgs:
			case <-time.After(waitT):
				done <- fmt.Errorf("request %d not received", i)
				return
			}
			if req.Properties == nil || req.Properties.ResponseTopic == "" {
				done <- fmt.Errorf("request without response topic: %+v", req.Properties)
				return
			}
			ctx, cancel := context.WithTimeout(context.Background(), waitT)
			_, err := responder.Publish(ctx, &paho.Publish{Topic: req.Properties.ResponseTopic, QoS: 1,
				Payload:    append([]byte("re: "), req.Payload...),
				Properties: &paho.PublishProperties{CorrelationData: req.Properties.CorrelationData}})
			cancel()
			if err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	for i := 0; i < 3; i++ {
		corr := []byte{byte(i), 0x00, 0xfe, 'c'}
		requester.pub(&paho.Publish{Topic: fmt.Sprintf("rr/service/%d", i), QoS: 1, Payload: []byte(fmt.Sprint("q", i)),
			Properties: &paho.PublishProperties{ResponseTopic: "rr/reply/rr-requester", CorrelationData: corr}})
		m := requester.recv()
		if m.Topic != "rr/reply/rr-requester" || string(m.Payload) != fmt.Sprint("re: q", i) ||
			m.Properties == nil || !bytes.Equal(m.Properties.CorrelationData, corr) {
			t.Fatalf("response %d: %s %q %+v", i, m.Topic, m.Payload, m.Properties)
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// Message expiry: a forwarded message carries the received interval minus
// the time it waited [MQTT-3.3.2-6]; a queued message whose interval has
// passed is never delivered [MQTT-3.3.2-5]; an expired retained message is
// not sent to new subscribers (section 3.3.2.3.3).
func TestV5MessageExpiry(t *testing.T) {
	t.Parallel()
	n, addr := startNode(t, "")
	live := v5(t, addr, "exp-live")
	live.sub(paho.SubscribeOptions{Topic: "exp/#", QoS: 1})
	p := v5(t, addr, "exp-pub")
	p.pub(&paho.Publish{Topic: "exp/live", QoS: 1, Payload: []byte("l"), Properties: &paho.PublishProperties{MessageExpiry: u32(60)}})
	if m := live.recv(); m.Properties == nil || m.Properties.MessageExpiry == nil || *m.Properties.MessageExpiry < 59 || *m.Properties.MessageExpiry > 60 {
		t.Fatalf("live message expiry: %+v", m.Properties)
	}
	p.pub(&paho.Publish{Topic: "exp/none", QoS: 1, Payload: []byte("n")})
	if m := live.recv(); m.Properties != nil && m.Properties.MessageExpiry != nil {
		t.Fatalf("message without expiry forwarded with %d", *m.Properties.MessageExpiry)
	}

	// An offline persistent session collects three messages, one of which
	// expires while it waits; two retained messages, one expiring.
	off := connectV5(t, addr, &paho.Connect{ClientID: "exp-off", CleanStart: true, KeepAlive: 30,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: u32(60)}}, nil)
	off.sub(paho.SubscribeOptions{Topic: "expq/#", QoS: 1})
	if err := off.Disconnect(&paho.Disconnect{}); err != nil {
		t.Fatal(err)
	}
	<-off.Done()
	waitClients(t, n, 2) // the session is offline before anything is queued
	p.pub(&paho.Publish{Topic: "expq/short", QoS: 1, Payload: []byte("s"), Properties: &paho.PublishProperties{MessageExpiry: u32(1)}})
	p.pub(&paho.Publish{Topic: "expq/long", QoS: 1, Payload: []byte("l"), Properties: &paho.PublishProperties{MessageExpiry: u32(60)}})
	p.pub(&paho.Publish{Topic: "expq/none", QoS: 1, Payload: []byte("n")})
	p.pub(&paho.Publish{Topic: "expr/short", QoS: 1, Retain: true, Payload: []byte("rs"), Properties: &paho.PublishProperties{MessageExpiry: u32(1)}})
	p.pub(&paho.Publish{Topic: "expr/long", QoS: 1, Retain: true, Payload: []byte("rl"), Properties: &paho.PublishProperties{MessageExpiry: u32(60)}})
	time.Sleep(2 * time.Second) // expiry is the subject

	back := connectV5(t, addr, &paho.Connect{ClientID: "exp-off", CleanStart: false, KeepAlive: 30,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: u32(60)}}, nil)
	if !back.Ack.SessionPresent {
		t.Fatal("session not present")
	}
	p.pub(&paho.Publish{Topic: "expq/barrier", QoS: 1})
	got := back.recvUntil("expq/barrier")
	var topics []string
	for _, m := range got {
		topics = append(topics, m.Topic)
		if m.Topic == "expq/long" {
			if m.Properties == nil || m.Properties.MessageExpiry == nil || *m.Properties.MessageExpiry > 58 || *m.Properties.MessageExpiry < 50 {
				t.Errorf("expq/long forwarded with expiry %+v after waiting 2 s, want at most 58", m.Properties)
			}
		}
	}
	if !slices.Equal(topics, []string{"expq/long", "expq/none"}) {
		t.Fatalf("queued messages delivered: %v, want [expq/long expq/none] (expq/short expired)", topics)
	}

	r := v5(t, addr, "exp-retained")
	r.sub(paho.SubscribeOptions{Topic: "expr/#", QoS: 1})
	p.pub(&paho.Publish{Topic: "expr/barrier", QoS: 1})
	got = r.recvUntil("expr/barrier")
	if len(got) != 1 || got[0].Topic != "expr/long" || !got[0].Retain {
		var ts []string
		for _, m := range got {
			ts = append(ts, m.Topic)
		}
		t.Fatalf("retained messages delivered: %v, want only expr/long", ts)
	}
	if e := got[0].Properties.MessageExpiry; e == nil || *e > 58 {
		t.Fatalf("retained expr/long expiry %v, want at most 58", e)
	}
}

// A client's Maximum Packet Size: a message that does not fit is not sent
// [MQTT-3.1.2-24] but dropped as if delivered [MQTT-3.1.2-25], and later
// messages that fit still arrive.
func TestV5ClientMaximumPacketSize(t *testing.T) {
	t.Parallel()
	_, addr := startNode(t, "")
	s := connectV5(t, addr, &paho.Connect{ClientID: "mps-sub", CleanStart: true, KeepAlive: 30,
		Properties: &paho.ConnectProperties{MaximumPacketSize: u32(100)}}, nil)
	s.sub(paho.SubscribeOptions{Topic: "mps/#", QoS: 1})
	p := v5(t, addr, "mps-pub")
	p.pub(&paho.Publish{Topic: "mps/big", QoS: 1, Payload: bytes.Repeat([]byte("x"), 200)})
	p.pub(&paho.Publish{Topic: "mps/big0", QoS: 0, Payload: bytes.Repeat([]byte("y"), 90)})
	p.pub(&paho.Publish{Topic: "mps/small", QoS: 1, Payload: []byte("fits")})
	m := s.recv()
	if m.Topic != "mps/small" || string(m.Payload) != "fits" {
		t.Fatalf("got %s (%d bytes), want mps/small", m.Topic, len(m.Payload))
	}
	// The dropped QoS 1 message did not take an in-flight slot for good:
	// many more fit messages flow.
	for i := range 30 {
		p.pub(&paho.Publish{Topic: "mps/more", QoS: 1, Payload: []byte(fmt.Sprint(i))})
		if m := s.recv(); string(m.Payload) != fmt.Sprint(i) {
			t.Fatalf("got %q, want %d", m.Payload, i)
		}
	}
}

// No Local: a client's own publications are not sent back to it on a
// subscription with No Local [MQTT-3.8.3-3]; other clients' are.
func TestV5NoLocal(t *testing.T) {
	t.Parallel()
	_, addr := startNode(t, "")
	a := v5(t, addr, "nl-a")
	a.sub(paho.SubscribeOptions{Topic: "nl/t", QoS: 1, NoLocal: true}, paho.SubscribeOptions{Topic: "nl/own", QoS: 1})
	b := v5(t, addr, "nl-b")
	a.pub(&paho.Publish{Topic: "nl/t", QoS: 1, Payload: []byte("from a")})
	b.pub(&paho.Publish{Topic: "nl/t", QoS: 1, Payload: []byte("from b")})
	a.pub(&paho.Publish{Topic: "nl/own", QoS: 1, Payload: []byte("own")})
	got := a.recvUntil("nl/own")
	if len(got) != 1 || string(got[0].Payload) != "from b" {
		t.Fatalf("No Local subscription got %d messages (first %q), want only \"from b\"", len(got), got[0].Payload)
	}
}

// Retain As Published: with 1 the RETAIN flag is forwarded as published
// [MQTT-3.3.1-13], with 0 it is cleared [MQTT-3.3.1-12].
func TestV5RetainAsPublished(t *testing.T) {
	t.Parallel()
	_, addr := startNode(t, "")
	// Retain Handling 2: only live deliveries are the subject here. (With 0,
	// a retained publish racing with the new subscription's retained
	// lookup can arrive a second time, as a retained message.)
	rap := v5(t, addr, "rap-1")
	rap.sub(paho.SubscribeOptions{Topic: "rap/t", QoS: 1, RetainAsPublished: true, RetainHandling: 2})
	plain := v5(t, addr, "rap-0")
	plain.sub(paho.SubscribeOptions{Topic: "rap/t", QoS: 1, RetainHandling: 2})
	p := v5(t, addr, "rap-pub")
	p.pub(&paho.Publish{Topic: "rap/t", QoS: 1, Retain: true, Payload: []byte("r")})
	p.pub(&paho.Publish{Topic: "rap/t", QoS: 1, Payload: []byte("n")})
	for _, c := range []struct {
		cl   *pahoV5
		want []bool
	}{{rap, []bool{true, false}}, {plain, []bool{false, false}}} {
		for _, want := range c.want {
			if m := c.cl.recv(); m.Retain != want {
				t.Fatalf("%s: %q retain %v, want %v", c.cl.ClientID(), m.Payload, m.Retain, want)
			}
		}
	}
}

// Retain Handling 0 sends retained messages on every subscribe
// [MQTT-3.3.1-9], 1 only when the subscription is new [MQTT-3.3.1-10], 2
// never [MQTT-3.3.1-11].
func TestV5RetainHandling(t *testing.T) {
	t.Parallel()
	_, addr := startNode(t, "")
	p := v5(t, addr, "rh-pub")
	p.pub(&paho.Publish{Topic: "rh/t", QoS: 1, Retain: true, Payload: []byte("kept")})
	for rh, want := range []int{2, 1, 0} { // deliveries over two identical subscribes
		c := v5(t, addr, fmt.Sprint("rh-", rh))
		c.sub(paho.SubscribeOptions{Topic: "rh-barrier", QoS: 1})
		for range 2 {
			c.sub(paho.SubscribeOptions{Topic: "rh/#", QoS: 1, RetainHandling: byte(rh)})
		}
		p.pub(&paho.Publish{Topic: "rh-barrier", QoS: 1})
		got := c.recvUntil("rh-barrier")
		if len(got) != want {
			t.Fatalf("Retain Handling %d: %d retained deliveries over two subscribes, want %d", rh, len(got), want)
		}
		for _, m := range got {
			if !m.Retain || string(m.Payload) != "kept" {
				t.Fatalf("Retain Handling %d: got %q retain %v", rh, m.Payload, m.Retain)
			}
		}
	}
}

// Shared subscriptions (section 4.8.2): each message goes to exactly one
// member of each group; two groups each get every message; a non-shared
// subscription on the same filter gets every message too.
func TestV5SharedSubscriptions(t *testing.T) {
	t.Parallel()
	_, addr := startNode(t, "")
	groups := map[string][]*pahoV5{}
	for g, size := range map[string]int{"g": 3, "h": 2} {
		for i := range size {
			c := v5(t, addr, fmt.Sprintf("sh-%s-%d", g, i))
			c.sub(paho.SubscribeOptions{Topic: "$share/" + g + "/sh/#", QoS: 1})
			groups[g] = append(groups[g], c)
		}
	}
	plain := v5(t, addr, "sh-plain")
	plain.sub(paho.SubscribeOptions{Topic: "sh/#", QoS: 1})
	p := v5(t, addr, "sh-pub")
	const n = 30
	for i := range n {
		p.pub(&paho.Publish{Topic: fmt.Sprintf("sh/%d", i), QoS: byte(i % 2), Payload: []byte(fmt.Sprint(i))})
	}
	p.pub(&paho.Publish{Topic: "sh-end", QoS: 1})
	if got := plain.recvUntil("sh/29"); len(got) != n-1 {
		t.Fatalf("non-shared subscriber got %d messages, want %d", len(got)+1, n)
	}
	for g, members := range groups {
		seen := map[string]int{}
		per := make([]int, len(members))
		deadline := time.After(waitT)
	collect:
		for total := 0; total < n; {
			for i, m := range members {
				select {
				case msg := <-m.Msgs:
					seen[string(msg.Payload)]++
					per[i]++
					total++
				default:
				}
			}
			select {
			case <-deadline:
				break collect
			case <-time.After(time.Millisecond):
			}
		}
		time.Sleep(quietT) // anything beyond n would be a duplicate
		for i, m := range members {
			for len(m.Msgs) > 0 {
				msg := <-m.Msgs
				seen[string(msg.Payload)]++
				per[i]++
			}
		}
		for i := range n {
			if c := seen[fmt.Sprint(i)]; c != 1 {
				t.Errorf("group %s: message %d delivered %d times, want exactly once", g, i, c)
			}
		}
		for i, c := range per {
			if c == 0 {
				t.Errorf("group %s: member %d got no message (distribution %v)", g, i, per)
			}
		}
	}
}

// A shared-subscription member that leaves with unacknowledged QoS 1
// messages: they go to another member of the group (section 4.8.2: the
// server SHOULD send them to another client once the session ends).
func TestV5SharedRedispatch(t *testing.T) {
	t.Parallel()
	_, addr := startNode(t, "")
	a := dialP(t, addr, packet.V5)
	a.connectID("rd-a")
	a.sub("$share/rd/rd/#", 1)
	b := v5(t, addr, "rd-b")
	b.sub(paho.SubscribeOptions{Topic: "$share/rd/rd/#", QoS: 1})
	p := v5(t, addr, "rd-pub")
	const n = 10
	for i := range n {
		p.pub(&paho.Publish{Topic: "rd/t", QoS: 1, Payload: []byte(fmt.Sprint(i))})
	}
	first := a.nextPublish() // a holds at least this one, unacknowledged
	_ = a.c.Close()

	seen := map[string]int{}
	for len(seen) < n {
		select {
		case m := <-b.Msgs:
			seen[string(m.Payload)]++
		case <-time.After(waitT):
			t.Fatalf("the remaining member got %d distinct messages, want %d (a held %q)", len(seen), n, first.Payload)
		}
	}
	b.noMsg(quietT)
	for k, c := range seen {
		if c != 1 {
			t.Errorf("message %s delivered %d times to the remaining member", k, c)
		}
	}
}

// Session expiry: with 1 s the session is gone 2 s after the connection
// closed (session present 0, no subscription); with 60 s it is resumed
// [MQTT-3.1.2-23] with session present 1 [MQTT-3.2.2-3]. A DISCONNECT may
// shorten the interval to 0, ending the session (section 3.14.2.2.2).
func TestV5SessionExpiry(t *testing.T) {
	t.Parallel()
	_, addr := startNode(t, "")
	p := v5(t, addr, "se-pub")
	connect := func(id string, clean bool, expiry uint32) *pahoV5 {
		return connectV5(t, addr, &paho.Connect{ClientID: id, CleanStart: clean, KeepAlive: 30,
			Properties: &paho.ConnectProperties{SessionExpiryInterval: u32(expiry)}}, nil)
	}
	for _, c := range []struct {
		id     string
		expiry uint32
		d      *paho.Disconnect
	}{
		{"se-1", 1, &paho.Disconnect{}},
		{"se-60", 60, &paho.Disconnect{}},
		{"se-60-to-0", 60, &paho.Disconnect{Properties: &paho.DisconnectProperties{SessionExpiryInterval: u32(0)}}},
	} {
		cl := connect(c.id, true, c.expiry)
		cl.sub(paho.SubscribeOptions{Topic: "se/" + c.id, QoS: 1})
		if err := cl.Disconnect(c.d); err != nil {
			t.Fatal(err)
		}
		<-cl.Done()
	}
	time.Sleep(2 * time.Second) // the expiry is the subject
	for _, c := range []struct {
		id      string
		present bool
	}{{"se-1", false}, {"se-60", true}, {"se-60-to-0", false}} {
		cl := connect(c.id, false, 60)
		if cl.Ack.SessionPresent != c.present {
			t.Errorf("%s: session present %v, want %v", c.id, cl.Ack.SessionPresent, c.present)
		}
		cl.sub(paho.SubscribeOptions{Topic: "se-barrier", QoS: 1})
		p.pub(&paho.Publish{Topic: "se/" + c.id, QoS: 1, Payload: []byte("x")})
		p.pub(&paho.Publish{Topic: "se-barrier", QoS: 1})
		got := cl.recvUntil("se-barrier")
		if c.present && len(got) != 1 || !c.present && len(got) != 0 {
			t.Errorf("%s: %d messages through the old subscription", c.id, len(got))
		}
	}
}

// Will Delay Interval [MQTT-3.1.3-9]: the will is published once the delay
// has passed, not if the client reconnects within it, and when the session
// ends first, then.
func TestV5WillDelay(t *testing.T) {
	t.Parallel()
	_, addr := startNode(t, "")
	w := v5(t, addr, "wd-watch")
	w.sub(paho.SubscribeOptions{Topic: "wd/#", QoS: 1})
	connect := func(id string, clean bool, delay, expiry uint32) *pahoV5 {
		return connectV5(t, addr, &paho.Connect{ClientID: id, CleanStart: clean, KeepAlive: 30,
			Properties:     &paho.ConnectProperties{SessionExpiryInterval: u32(expiry)},
			WillMessage:    &paho.WillMessage{Topic: "wd/" + id, QoS: 1, Payload: []byte(id)},
			WillProperties: &paho.WillProperties{WillDelayInterval: u32(delay)}}, nil)
	}
	delayed := connect("delayed", true, 1, 30)
	back := connect("back", true, 1, 30)
	ends := connect("session-ends", true, 30, 1)
	start := time.Now()
	_ = delayed.Conn.Close()
	_ = back.Conn.Close()
	_ = ends.Conn.Close()
	back2 := connect("back", false, 1, 30)
	if !back2.Ack.SessionPresent {
		t.Fatal("reconnecting within the delay: session not present")
	}

	got := map[string]time.Duration{}
	for len(got) < 2 {
		m := w.recv()
		got[m.Topic] = time.Since(start)
	}
	for _, topic := range []string{"wd/delayed", "wd/session-ends"} {
		el, ok := got[topic]
		if !ok {
			t.Fatalf("wills received: %v, want wd/delayed and wd/session-ends", got)
		}
		if el < 800*time.Millisecond || el > 3*time.Second {
			t.Errorf("%s published %v after the connection closed, want about 1 s", topic, el)
		}
	}
	if _, ok := got["wd/back"]; ok {
		t.Fatal("will published although the client reconnected within the delay")
	}
	// Give the reconnected client's will its full delay and more.
	time.Sleep(time.Until(start.Add(1500 * time.Millisecond)))
	w.pub(&paho.Publish{Topic: "wd/barrier", QoS: 1})
	if extra := w.recvUntil("wd/barrier"); len(extra) != 0 {
		t.Fatalf("unexpected will %s", extra[0].Topic)
	}
}

// DISCONNECT with reason 0x04 (Disconnect with Will Message, section
// 3.14.2.1) publishes the will; reason 0x00 deletes it [MQTT-3.1.2-10].
func TestV5DisconnectWithWill(t *testing.T) {
	t.Parallel()
	n, addr := startNode(t, "")
	w := v5(t, addr, "dw-watch")
	w.sub(paho.SubscribeOptions{Topic: "dw/#", QoS: 1})
	for _, code := range []byte{0x04, 0x00} {
		c := connectV5(t, addr, &paho.Connect{ClientID: fmt.Sprint("dw-", code), CleanStart: true, KeepAlive: 30,
			WillMessage: &paho.WillMessage{Topic: fmt.Sprintf("dw/%d", code), QoS: 1, Payload: []byte("w")}}, nil)
		if err := c.Disconnect(&paho.Disconnect{ReasonCode: code}); err != nil {
			t.Fatal(err)
		}
	}
	if m := w.recv(); m.Topic != "dw/4" {
		t.Fatalf("got %s, want the will of the 0x04 DISCONNECT", m.Topic)
	}
	waitClients(t, n, 1)
	time.Sleep(quietT) // let a wrongly published will be routed before the barrier
	w.pub(&paho.Publish{Topic: "dw/barrier", QoS: 1})
	if got := w.recvUntil("dw/barrier"); len(got) != 0 {
		t.Fatalf("will published after DISCONNECT 0x00: %s", got[0].Topic)
	}
}

// Takeover: the existing connection gets DISCONNECT 0x8E and is closed
// [MQTT-3.1.4-3].
func TestV5Takeover(t *testing.T) {
	t.Parallel()
	_, addr := startNode(t, "")
	old := v5(t, addr, "v5-same")
	_ = v5(t, addr, "v5-same")
	if d := old.serverDisconnect(); d.ReasonCode != 0x8E {
		t.Fatalf("old connection got DISCONNECT 0x%02X, want 0x8E", d.ReasonCode)
	}
}

// A zero-length client identifier gets an Assigned Client Identifier, not
// used by any other session [MQTT-3.2.2-16]; in 3.1.1 it is accepted with
// clean session 1 [MQTT-3.1.3-6] and refused with 0x02 otherwise
// [MQTT-3.1.3-8].
func TestAssignedClientIdentifier(t *testing.T) {
	t.Parallel()
	_, addr := startNode(t, "")
	ids := map[string]bool{}
	for range 3 {
		c := v5(t, addr, "")
		id := ""
		if c.Ack.Properties != nil {
			id = c.Ack.Properties.AssignedClientID
		}
		if id == "" || ids[id] {
			t.Fatalf("assigned client identifier %q (already seen: %v)", id, ids)
		}
		ids[id] = true
	}
	r := dialP(t, addr, packet.V311)
	r.connect(packet.Connect{CleanStart: true, KeepAlive: 30})
	r = dialP(t, addr, packet.V311)
	if ack := r.connectAck(packet.Connect{KeepAlive: 30}); ack.ReasonCode != packet.ConnRefusedIdentifier {
		t.Fatalf("3.1.1 empty client id with clean session 0: CONNACK 0x%02X, want 0x02", ack.ReasonCode)
	}
	r.expectClosed(waitT)
}

// An authentication method the server does not support: CONNACK 0x8C and
// the connection is closed [MQTT-4.12.0-1].
func TestV5UnsupportedAuthenticationMethod(t *testing.T) {
	t.Parallel()
	_, addr := startNode(t, "")
	c, err := dialV5(t, addr, &paho.Connect{ClientID: "auth-m", CleanStart: true, KeepAlive: 30,
		Properties: &paho.ConnectProperties{AuthMethod: "SCRAM-SHA-256", AuthData: []byte("client-first")}}, nil)
	if err == nil {
		t.Fatal("connect with an unsupported authentication method succeeded")
	}
	if c.Ack == nil || c.Ack.ReasonCode != 0x8C {
		t.Fatalf("CONNACK %+v, want reason 0x8C", c.Ack)
	}
}

// Server Keep Alive: a cap below the client's keep-alive (or a keep-alive
// of 0) is returned in CONNACK [MQTT-3.2.2-21]; otherwise the client's
// value stands and no Server Keep Alive is sent [MQTT-3.2.2-22].
func TestV5ServerKeepAlive(t *testing.T) {
	t.Parallel()
	_, addr := startNode(t, "mqtt:\n  max_keepalive: 60\n")
	for _, c := range []struct {
		ka   uint16
		want *uint16
	}{{120, u16(60)}, {0, u16(60)}, {60, nil}, {30, nil}} {
		cl := connectV5(t, addr, &paho.Connect{ClientID: fmt.Sprint("ska-", c.ka), CleanStart: true, KeepAlive: c.ka}, nil)
		var got *uint16
		if cl.Ack.Properties != nil {
			got = cl.Ack.Properties.ServerKeepAlive
		}
		if (got == nil) != (c.want == nil) || got != nil && *got != *c.want {
			t.Errorf("keep-alive %d: Server Keep Alive %v, want %v", c.ka, deref(got), deref(c.want))
		}
	}
}

func deref[T any](p *T) any {
	if p == nil {
		return "absent"
	}
	return *p
}

const aclConfig = `auth:
  allow_anonymous: true
  acl:
    - {pattern: true, access: readwrite, topic: "acl/rw/#"}
    - {pattern: true, access: read, topic: "acl/ro/#"}
    - {pattern: true, access: readwrite, topic: "test/#"}
    - {pattern: true, access: deny, topic: "test/nosubscribe"}
`

// ACLs: a refused subscription gets SUBACK 0x87 (section 3.9.3; 0x80 in
// 3.1.1, see TestV3ACL); a publish without write right gets PUBACK 0x87
// (section 3.4.2.1) or PUBREC 0x87 (section 3.5.2.1) and reaches nobody.
func TestV5ACL(t *testing.T) {
	t.Parallel()
	_, addr := startNode(t, aclConfig)
	s := v5(t, addr, "acl5-sub")
	ctx, cancel := context.WithTimeout(context.Background(), waitT)
	defer cancel()
	sa, _ := s.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{
		{Topic: "test/nosubscribe", QoS: 1}, {Topic: "acl/ro/#", QoS: 1}, {Topic: "acl/rw/#", QoS: 2}}})
	if sa == nil || !slices.Equal(sa.Reasons, []byte{0x87, 1, 2}) {
		t.Fatalf("SUBACK %+v, want [0x87 1 2]", sa)
	}
	p := v5(t, addr, "acl5-pub")
	r, err := p.Publish(ctx, &paho.Publish{Topic: "acl/ro/x", QoS: 1, Payload: []byte("denied")})
	if r == nil || r.ReasonCode != 0x87 {
		t.Fatalf("QoS 1 publish without write right: %+v, %v; want PUBACK 0x87", r, err)
	}
	r, err = p.Publish(ctx, &paho.Publish{Topic: "acl/ro/y", QoS: 2, Payload: []byte("denied")})
	if r == nil || r.ReasonCode != 0x87 {
		t.Fatalf("QoS 2 publish without write right: %+v, %v; want PUBREC 0x87", r, err)
	}
	p.pub(&paho.Publish{Topic: "acl/ro/z", QoS: 0, Payload: []byte("denied")})
	p.pub(&paho.Publish{Topic: "acl/rw/barrier", QoS: 1})
	if got := s.recvUntil("acl/rw/barrier"); len(got) != 0 {
		t.Fatalf("denied publish delivered: %s %q", got[0].Topic, got[0].Payload)
	}
}

// Request Problem Information 0: no Reason String or User Property on any
// packet but PUBLISH, CONNACK and DISCONNECT [MQTT-3.1.2-29] (here a
// refusing PUBACK and SUBACK, where a reason string would be likely).
func TestV5RequestProblemInformation(t *testing.T) {
	t.Parallel()
	_, addr := startNode(t, aclConfig)
	c := dialP(t, addr, packet.V5)
	var props packet.Properties
	props.RequestProblemInformation = 0
	props.Set(packet.PropRequestProblemInformation)
	c.connect(packet.Connect{ClientID: "rpi", CleanStart: true, KeepAlive: 30, Props: props})
	sa := c.subscribe(3, packet.Properties{}, packet.Subscription{Filter: "test/nosubscribe", QoS: 1})
	if !slices.Equal(sa.ReasonCodes, []byte{0x87}) || sa.Props.Has(packet.PropReasonString) || sa.Props.Has(packet.PropUserProperty) {
		t.Fatalf("SUBACK %+v", sa)
	}
	a := c.pub1("acl/ro/x", []byte("x"), 4)
	if a.ReasonCode != 0x87 || a.Props.Has(packet.PropReasonString) || a.Props.Has(packet.PropUserProperty) {
		t.Fatalf("PUBACK %s props %+v", describe(a), a.Props)
	}
	c.publish(packet.Publish{Topic: "acl/ro/y", QoS: 2, PacketID: 5})
	if a := c.expectAck(packet.PUBREC, 5); a.ReasonCode != 0x87 || a.Props.Present != 0 {
		t.Fatalf("PUBREC %s props %+v", describe(a), a.Props)
	}
}

// The same ACL with a 3.1.1 client: SUBACK failure 0x80 for the refused
// filter (section 3.9.3); a publish without the right is acknowledged as
// usual (3.1.1 has no way to refuse it) and reaches nobody.
func TestV3ACL(t *testing.T) {
	t.Parallel()
	_, addr := startNode(t, aclConfig)
	s := connectV3(t, addr, "acl3-sub", true, nil)
	if got := s.sub(1, "test/nosubscribe"); got[0] != 0x80 {
		t.Fatalf("SUBACK %v, want 0x80", got)
	}
	s.sub(1, "acl/ro/#")
	s.sub(1, "acl/rw/#")
	p := connectV3(t, addr, "acl3-pub", true, nil)
	p.pub("acl/ro/x", 1, false, "denied")
	p.pub("acl/ro/y", 2, false, "denied")
	p.pub("acl/rw/barrier", 1, false, "")
	if got := s.recvUntil("acl/rw/barrier"); len(got) != 0 {
		t.Fatalf("denied publish delivered: %s", got[0].Topic())
	}
}

// Graceful shutdown: a connected 5.0 client is told 0x8B (Server shutting
// down, section 4.13) before the connection closes; a 3.1.1 client's
// connection is closed; new connections are refused.
func TestShutdownTellsV5Clients(t *testing.T) {
	t.Parallel()
	n, addr := startNode(t, "")
	c5 := v5(t, addr, "sd-v5")
	c3 := connectV3(t, addr, "sd-v3", true, nil)
	ctx, cancel := context.WithTimeout(context.Background(), waitT)
	defer cancel()
	if err := n.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if d := c5.serverDisconnect(); d.ReasonCode != 0x8B {
		t.Fatalf("DISCONNECT 0x%02X, want 0x8B", d.ReasonCode)
	}
	select {
	case <-c3.Lost:
	case <-time.After(waitT):
		t.Fatal("3.1.1 connection not closed")
	}
	if conn, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		// Accepting and closing at once is acceptable; serving is not.
		_ = conn.SetReadDeadline(time.Now().Add(time.Second))
		cp := packet.Connect{ProtocolVersion: packet.V5, ClientID: "late", CleanStart: true}
		_, _ = conn.Write(cp.Append(nil))
		if pkt, err := packet.ReadPacket(conn, packet.V5, 0); err == nil {
			t.Fatalf("connection after shutdown answered %s", describe(pkt))
		}
		_ = conn.Close()
	}
}

// Slow consumer: a subscriber that never reads, with a small
// mqtt.max_pending_bytes and write_timeout, is eventually disconnected
// while the publisher and a reading subscriber keep working.
func TestV5SlowConsumer(t *testing.T) {
	t.Parallel()
	n, addr := startNode(t, "mqtt:\n  max_pending_bytes: 65536\n  write_timeout: 1s\n")
	// A small receive buffer set before connecting keeps the window small.
	d := net.Dialer{Timeout: waitT, Control: func(_, _ string, rc syscallRawConn) error { return setRcvBuf(rc, 4096) }}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	slow := &pconn{t: t, c: conn, ver: packet.V5}
	slow.connectID("slow")
	slow.sub("slow/#", 0)

	fast := v5(t, addr, "fast")
	fast.sub(paho.SubscribeOptions{Topic: "slow/#", QoS: 1})
	pub := dialP(t, addr, packet.V5)
	pub.connectID("flooder")

	// The reading subscriber consumes concurrently.
	var got atomic.Int64
	ended := make(chan struct{})
	go func() {
		for m := range fast.Msgs {
			if m.Topic == "slow/end" {
				close(ended)
				return
			}
			got.Add(1)
		}
	}()

	// Flood QoS 0 until the slow subscriber is gone: its socket buffers
	// must fill before its writes stall.
	payload := bytes.Repeat([]byte("f"), 4096)
	var batch []byte
	for range 64 {
		pk := packet.Publish{Topic: "slow/t", Payload: payload}
		batch = pk.Append(batch, packet.V5)
	}
	deadline := time.Now().Add(20 * time.Second)
	sent := 0
	for n.Server.ClientCount() != 2 {
		if time.Now().After(deadline) {
			st := n.Server.Stats().Snapshot()
			t.Fatalf("slow subscriber still connected after %d messages: slow consumers %d, QoS 0 dropped %d, sent %d",
				sent, st.SlowConsumers, st.DroppedSlowConsumer, st.MessagesSent)
		}
		pub.write(batch)
		sent += 64
	}
	if st := n.Server.Stats().Snapshot(); st.SlowConsumers == 0 {
		t.Errorf("slow consumer disconnected but not counted: %+v", st)
	}
	if a := pub.pub1("slow/end", []byte("end"), 7); a.ReasonCode != 0 {
		t.Fatalf("publisher's PUBACK 0x%02X", a.ReasonCode)
	}
	select {
	case <-ended:
	case <-time.After(waitT):
		t.Fatal("the reading subscriber did not get the final message")
	}
	t.Logf("flooded %d messages; the reading subscriber got %d", sent, got.Load())
	if got.Load() == 0 {
		t.Fatal("the reading subscriber got none of the flood")
	}
	// The slow connection ends once its buffered bytes are read.
	_ = conn.SetReadDeadline(time.Now().Add(waitT))
	buf := make([]byte, 1<<20)
	for {
		_, err := conn.Read(buf)
		if err != nil {
			if !isClosedErr(err) {
				t.Fatalf("slow connection: %v, want closed", err)
			}
			break
		}
	}
}

type syscallRawConn = syscall.RawConn

// setRcvBuf sets SO_RCVBUF on a socket before it connects.
func setRcvBuf(rc syscall.RawConn, n int) error {
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, n)
	}); err != nil {
		return err
	}
	return serr
}
