package broker

// Tests of the hook points (hooks.go), end to end over loopback TCP where a
// client sees the outcome, and the zero-cost promise with no hook (or only
// hooks implementing no point) registered.

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/isobar-mq/isobar/internal/mqtt/packet"
	"github.com/isobar-mq/isobar/internal/topic"
)

type seamConnectHook struct {
	mu   sync.Mutex
	seen []string
	code func(ClientInfo) byte
}

func (h *seamConnectHook) HookName() string { return "seam-connect" }
func (h *seamConnectHook) OnConnect(c ClientInfo, clean bool) byte {
	h.mu.Lock()
	h.seen = append(h.seen, fmt.Sprintf("%s/%s/%s/%v", c.ClientID, c.Username, c.Listener, clean))
	h.mu.Unlock()
	return h.code(c)
}

// A connect hook's refusal reaches the client as its CONNACK code (3.x:
// the nearest return code) and no session is made.
func TestSeamHookConnectRefusal(t *testing.T) {
	s := seamNewServer(t, Options{}, nil)
	addr := seamListen(t, s)
	h := &seamConnectHook{code: func(c ClientInfo) byte {
		if strings.HasPrefix(c.ClientID, "x") {
			b, _ := strconv.ParseUint(c.ClientID[1:], 16, 8)
			return byte(b)
		}
		return 0
	}}
	s.AddHook(h)
	cases := []struct{ code, v3 byte }{
		{packet.Banned, packet.ConnRefusedNotAuthorized},
		{packet.NotAuthorized, packet.ConnRefusedNotAuthorized},
		{packet.BadUserNameOrPassword, packet.ConnRefusedBadCredentials},
		{packet.ClientIdentifierNotValid, packet.ConnRefusedIdentifier},
		{packet.ServerBusy, packet.ConnRefusedServerUnavailable},
		{packet.ConnectionRateExceeded, packet.ConnRefusedServerUnavailable},
	}
	for _, c := range cases {
		id := fmt.Sprintf("x%02x", c.code)
		p := seamDial(t, addr, packet.V5)
		if ack := p.connectAck(packet.Connect{ClientID: id, CleanStart: true}); ack.ReasonCode != c.code || ack.SessionPresent {
			t.Fatalf("v5, hook code 0x%02X: CONNACK %s", c.code, seamDescribe(ack))
		}
		p.expectClosed()
		p = seamDial(t, addr, packet.V311)
		if ack := p.connectAck(packet.Connect{ClientID: id, CleanStart: false, Username: "u", UsernameFlag: true}); ack.ReasonCode != c.v3 {
			t.Fatalf("3.1.1, hook code 0x%02X: CONNACK %s, want 0x%02X", c.code, seamDescribe(ack), c.v3)
		}
		p.expectClosed()
	}
	if n := s.SessionCount(); n != 0 {
		t.Fatalf("%d sessions made for refused connections", n)
	}
	p := seamDial(t, addr, packet.V5)
	p.connect(packet.Connect{ClientID: "ok", CleanStart: true})
	h.mu.Lock()
	seen := slices.Clone(h.seen)
	h.mu.Unlock()
	if len(seen) != 2*len(cases)+1 || seen[1] != "x8a/u/mqtt/false" || seen[len(seen)-1] != "ok//mqtt/true" {
		t.Fatalf("hook saw %v", seen)
	}
}

// Publish hooks run in order: they may rewrite a message (the next hook
// and the subscribers see the rewrite), drop it (acknowledged with a
// success code, not routed) or refuse it (v5: the code in PUBACK/PUBREC;
// 3.1.1: a plain acknowledgement); wills and $SYS do not pass through.
func TestSeamHookPublish(t *testing.T) {
	s := seamNewServer(t, Options{}, nil)
	addr := seamListen(t, s)
	var mu sync.Mutex
	var order []string
	s.AddHook(&seamPublishHook{fn: func(c ClientInfo, m *Message) (*Message, byte) {
		mu.Lock()
		order = append(order, "1:"+c.ClientID+":"+m.Topic)
		mu.Unlock()
		switch m.Topic {
		case "drop/x":
			return nil, 0
		case "refuse/x":
			return nil, packet.PayloadFormatInvalid
		case "rw/x":
			n := *m
			n.Topic = "rewritten/x"
			n.Payload = []byte("new " + string(m.Payload))
			return &n, 0
		}
		return m, 0
	}})
	s.AddHook(&seamPublishHook{fn: func(c ClientInfo, m *Message) (*Message, byte) {
		mu.Lock()
		order = append(order, "2:"+m.Topic)
		mu.Unlock()
		return m, 0
	}})

	sub := seamV5(t, addr, "sub")
	sub.sub("#", 1)
	p := seamV5(t, addr, "pub")
	p.publish(packet.Publish{Topic: "drop/x", QoS: 1, PacketID: 1, Payload: []byte("d")})
	if a := p.expectAck(packet.PUBACK, 1); a.ReasonCode >= 0x80 {
		t.Fatalf("dropped message: PUBACK 0x%02X, want a success code", a.ReasonCode)
	}
	p.publish(packet.Publish{Topic: "rw/x", QoS: 1, PacketID: 2, Payload: []byte("r")})
	if a := p.expectAck(packet.PUBACK, 2); a.ReasonCode != 0 {
		t.Fatalf("rewritten message: PUBACK 0x%02X", a.ReasonCode)
	}
	p.publish(packet.Publish{Topic: "refuse/x", QoS: 1, PacketID: 3, Payload: []byte("f")})
	if a := p.expectAck(packet.PUBACK, 3); a.ReasonCode != packet.PayloadFormatInvalid {
		t.Fatalf("refused QoS 1: PUBACK 0x%02X, want 0x99", a.ReasonCode)
	}
	if rec := seamPub2(p, "refuse/x", "f2", 4); rec.ReasonCode != packet.PayloadFormatInvalid {
		t.Fatalf("refused QoS 2: PUBREC 0x%02X, want 0x99", rec.ReasonCode)
	}
	if rec := seamPub2(p, "ok/x", "same id", 4); rec.ReasonCode != 0 {
		t.Fatalf("QoS 2 with the identifier of a refused one: PUBREC 0x%02X", rec.ReasonCode)
	}
	p.publish(packet.Publish{Topic: "refuse/x", Payload: []byte("f0")})
	p.ping() // handled before anything p3 sends
	p3 := seamDial(t, addr, packet.V311)
	p3.connect(packet.Connect{ClientID: "pub3", CleanStart: true})
	p3.publish(packet.Publish{Topic: "refuse/x", QoS: 1, PacketID: 9, Payload: []byte("f3")})
	p3.expectAck(packet.PUBACK, 9)

	// A will goes around the hooks.
	w := seamDial(t, addr, packet.V311)
	w.connect(packet.Connect{ClientID: "will", CleanStart: true, WillFlag: true, WillTopic: "will/x", WillPayload: []byte("gone")})
	_ = w.c.Close()

	p.publish(packet.Publish{Topic: "end", Payload: []byte("barrier")})
	var got []string
	for !slices.Contains(got, "end=barrier") || !slices.Contains(got, "will/x=gone") {
		m := sub.nextPublish()
		if m.QoS > 0 {
			sub.ack(packet.PUBACK, m.PacketID)
		}
		got = append(got, m.Topic+"="+string(m.Payload))
		if len(got) > 10 {
			t.Fatalf("runaway: %v", got)
		}
	}
	sub.expectNothing(seamQuiet)
	slices.Sort(got)
	if want := []string{"end=barrier", "ok/x=same id", "rewritten/x=new r", "will/x=gone"}; !slices.Equal(got, want) {
		t.Fatalf("subscriber got %v, want %v", got, want)
	}
	mu.Lock()
	defer mu.Unlock()
	want := []string{"1:pub:drop/x", "1:pub:rw/x", "2:rewritten/x", "1:pub:refuse/x", "1:pub:refuse/x", "1:pub:ok/x", "2:ok/x", "1:pub:refuse/x", "1:pub3:refuse/x", "1:pub:end", "2:end"}
	if !slices.Equal(order, want) {
		t.Fatalf("hooks ran\n%v\nwant\n%v", order, want)
	}
	if n := s.stats.droppedByHook.Load(); n != 5 {
		t.Fatalf("droppedByHook %d, want 5", n)
	}
}

type seamSubscribeHook struct{}

func (seamSubscribeHook) HookName() string { return "seam-subscribe" }
func (seamSubscribeHook) OnSubscribe(c ClientInfo, filter string, opts *topic.Options) byte {
	switch {
	case filter == "acl/#":
		panic("the hook ran for a filter the ACL refused")
	case strings.HasPrefix(filter, "forbidden/"):
		return packet.NotAuthorized
	case strings.HasPrefix(filter, "down/"):
		opts.QoS = 0
	}
	return 0
}

// A subscribe hook refuses one filter of a SUBACK (v5 code, 3.1.1 0x80)
// and may downgrade the granted QoS; it runs after the ACL check.
func TestSeamHookSubscribe(t *testing.T) {
	auth := &seamAuth{sub: func(c ClientInfo, f string) bool { return f != "acl/#" }}
	s := seamNewServer(t, Options{}, auth)
	addr := seamListen(t, s)
	s.AddHook(seamSubscribeHook{})
	for _, ver := range []byte{packet.V5, packet.V311} {
		p := seamDial(t, addr, ver)
		p.connect(packet.Connect{ClientID: fmt.Sprint("s", ver), CleanStart: true})
		sa := p.subscribe(1, 0,
			packet.Subscription{Filter: "ok/#", QoS: 2},
			packet.Subscription{Filter: "forbidden/#", QoS: 1},
			packet.Subscription{Filter: "down/#", QoS: 2},
			packet.Subscription{Filter: "acl/#", QoS: 1})
		refused, acl := byte(packet.NotAuthorized), byte(packet.NotAuthorized)
		if ver < packet.V5 {
			refused, acl = packet.V3SubackFailure, packet.V3SubackFailure
		}
		if want := []byte{2, refused, 0, acl}; !slices.Equal(sa.ReasonCodes, want) {
			t.Fatalf("v%d SUBACK %v, want %v", ver, sa.ReasonCodes, want)
		}
		pub := seamV5(t, addr, fmt.Sprint("pub", ver))
		pub.publish(packet.Publish{Topic: "down/x", QoS: 1, PacketID: 1, Payload: []byte("d")})
		pub.expectAck(packet.PUBACK, 1)
		if m := p.nextPublish(); m.QoS != 0 || m.Topic != "down/x" {
			t.Fatalf("downgraded subscription delivered %s", seamDescribe(m))
		}
	}
}

type seamSessionHook struct {
	mu     sync.Mutex
	events []string
}

func (h *seamSessionHook) HookName() string { return "seam-session" }
func (h *seamSessionHook) OnSessionEvent(e SessionEvent) {
	h.mu.Lock()
	h.events = append(h.events, e.Kind.String()+":"+e.ClientID+":"+e.Username)
	h.mu.Unlock()
}

// take waits until the hook has n events and returns them, emptied.
func (h *seamSessionHook) take(t *testing.T, n int) []string {
	t.Helper()
	seamEventually(t, func() string {
		h.mu.Lock()
		defer h.mu.Unlock()
		if len(h.events) < n {
			return fmt.Sprintf("events %v, want %d", h.events, n)
		}
		return ""
	})
	time.Sleep(20 * time.Millisecond) // and no more
	h.mu.Lock()
	defer h.mu.Unlock()
	out := h.events
	h.events = nil
	return out
}

func seamConnect5(id string, clean bool, expiry uint32) packet.Connect {
	cp := packet.Connect{ClientID: id, CleanStart: clean, Username: "u", UsernameFlag: true}
	if expiry > 0 {
		cp.Props.SessionExpiryInterval = expiry
		cp.Props.Set(packet.PropSessionExpiryInterval)
	}
	return cp
}

// Session events, in order: created, resumed, taken over (then resumed),
// ended (clean start over an existing session, a clean session closing,
// expiry) and expired.
func TestSeamHookSessionEvents(t *testing.T) {
	s := seamNewServer(t, Options{}, nil)
	addr := seamListen(t, s)
	h := &seamSessionHook{}
	s.AddHook(h)
	want := func(got []string, want ...string) {
		t.Helper()
		if !slices.Equal(got, want) {
			t.Fatalf("events %v, want %v", got, want)
		}
	}

	c1 := seamDial(t, addr, packet.V5)
	c1.connect(seamConnect5("ev", false, 60))
	want(h.take(t, 1), "created:ev:u")
	c1.disconnect()
	c1 = seamDial(t, addr, packet.V5)
	if ack := c1.connect(seamConnect5("ev", false, 60)); !ack.SessionPresent {
		t.Fatal("not resumed")
	}
	want(h.take(t, 1), "resumed:ev:u")

	c2 := seamDial(t, addr, packet.V5)
	c2.connect(seamConnect5("ev", false, 60))
	if d, ok := c1.next().(*packet.Disconnect); !ok || d.ReasonCode != packet.SessionTakenOver {
		t.Fatal("first connection not told 0x8E")
	}
	want(h.take(t, 2), "taken_over:ev:u", "resumed:ev:u")
	c2.disconnect()

	c3 := seamDial(t, addr, packet.V5)
	c3.connect(seamConnect5("ev", true, 1))
	want(h.take(t, 2), "ended:ev:u", "created:ev:u")
	c3.disconnect()
	want(h.take(t, 2), "expired:ev:u", "ended:ev:u") // after 1 s offline

	c4 := seamDial(t, addr, packet.V5)
	c4.connect(seamConnect5("clean", true, 0))
	want(h.take(t, 1), "created:clean:u")
	c4.disconnect()
	want(h.take(t, 1), "ended:clean:u")

	// A clean start taking over an online session.
	c5 := seamDial(t, addr, packet.V5)
	c5.connect(seamConnect5("tk", false, 60))
	want(h.take(t, 1), "created:tk:u")
	c6 := seamDial(t, addr, packet.V5)
	c6.connect(seamConnect5("tk", true, 60))
	want(h.take(t, 3), "taken_over:tk:u", "ended:tk:u", "created:tk:u")

	// Taking over a clean session: it ends with its connection, first.
	c7 := seamDial(t, addr, packet.V5)
	c7.connect(seamConnect5("tc", true, 0))
	want(h.take(t, 1), "created:tc:u")
	c8 := seamDial(t, addr, packet.V5)
	c8.connect(seamConnect5("tc", false, 0))
	want(h.take(t, 3), "ended:tc:u", "taken_over:tc:u", "created:tc:u")
}

type seamDeliveryHook struct {
	mu  sync.Mutex
	got []string
}

func (h *seamDeliveryHook) HookName() string { return "seam-delivery" }
func (h *seamDeliveryHook) OnDelivery(o DeliveryOutcome) {
	kind := map[DeliveryOutcomeKind]string{DeliveryAcknowledged: "ack", DeliveryDropped: "drop"}[o.Kind]
	h.mu.Lock()
	h.got = append(h.got, fmt.Sprintf("%s:%s:%s:%d", kind, o.ClientID, o.Msg.Payload, o.QoS))
	h.mu.Unlock()
}

func (h *seamDeliveryHook) take() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := h.got
	h.got = nil
	return out
}

// Delivery outcomes: acknowledged (PUBACK, PUBCOMP) and dropped (queue
// full, expired in the queue, too large, also when resent, refused by the
// receiver's PUBREC); nothing for QoS 0.
func TestSeamHookDeliveryOutcomes(t *testing.T) {
	s := seamNewServer(t, Options{MaxQueued: 1}, nil)
	h := &seamDeliveryHook{}
	s.AddHook(h)
	sc := seamAttach(t, s, "d", packet.V5, true, 60, 1, 300)
	sess := sc.sess()
	want := func(what string, w ...string) {
		t.Helper()
		if got := h.take(); !slices.Equal(got, w) {
			t.Fatalf("%s: outcomes %v, want %v", what, got, w)
		}
	}
	seamDeliver(s, sess, seamMsg("t", "q0", 0), 0, nil)
	seamDeliver(s, sess, seamMsg("t", "a", 1), 1, nil)
	seamDeliver(s, sess, seamMsg("t", "b", 2), 2, nil)    // queued
	seamDeliver(s, sess, seamMsg("t", "full", 1), 1, nil) // queue full
	want("queue full", "drop:d:full:1")
	sc.ack(packet.PUBACK, 1, 0)
	want("PUBACK", "ack:d:a:1")
	sc.ack(packet.PUBREC, 2, 0)
	sc.ack(packet.PUBCOMP, 2, 0)
	want("PUBCOMP", "ack:d:b:2")

	seamDeliver(s, sess, seamMsg("t", "c", 2), 2, nil)
	e := seamMsg("t", "expiring", 1)
	e.Expiry = time.Now().Add(20 * time.Millisecond).UnixNano()
	seamDeliver(s, sess, e, 1, nil) // queued behind c
	time.Sleep(30 * time.Millisecond)
	sc.ack(packet.PUBREC, 3, packet.UnspecifiedError) // c refused: e due, but expired
	want("refused and expired", "drop:d:c:2", "drop:d:expiring:1")

	seamDeliver(s, sess, seamMsg("t", strings.Repeat("L", 400), 1), 1, nil)
	want("too large", "drop:d:"+strings.Repeat("L", 400)+":1")

	seamDeliver(s, sess, seamMsg("t", strings.Repeat("m", 200), 1), 1, nil)
	_ = sc.packets()
	sc.detach()
	sc = seamAttach(t, s, "d", packet.V5, false, 60, 1, 100) // smaller maximum: the resend is dropped
	want("too large when resent", "drop:d:"+strings.Repeat("m", 200)+":1")
	seamCheckIdle(t, s, sc.sess())
}

// seamInertHook implements no hook point.
type seamInertHook struct{}

func (seamInertHook) HookName() string { return "seam-inert" }

// seamFanout builds the fan-out of TestFanoutDoesNotAllocate: 50 QoS 0
// subscribers to a/#.
func seamFanout(t testing.TB, s *Server) []*client {
	var subs []*client
	for i := range 50 {
		c := newClient(s, newDiscardConn(), "bench")
		c.id = "sub" + strconv.Itoa(i)
		c.version = packet.V5
		c.sendQuota = 65535
		c.tx = s.newTxn()
		ack := packet.Connack{}
		s.attach(c, true, 0, nil, 0, &ack, c.tx)
		sess := c.sess
		sess.mu.Lock()
		sess.subs["a/#"] = subscription{filter: "a/#", opts: topic.Options{}}
		s.index.Subscribe(sess, "a/#", topic.Options{})
		sess.mu.Unlock()
		subs = append(subs, c)
	}
	// No flusher goroutine from now on (their starts would make the
	// allocation counts depend on timing): the output is consumed by
	// seamConsume, as a flush would.
	for _, c := range subs {
		seamIdle(t, c)
		c.omu.Lock()
		c.flushing = true
		c.omu.Unlock()
	}
	t.Cleanup(func() {
		for _, c := range subs {
			c.omu.Lock()
			c.flushing = false
			c.omu.Unlock()
			_ = c.conn.Close()
		}
	})
	return subs
}

// seamIdle waits (bounded) until c's flusher is idle.
func seamIdle(t testing.TB, c *client) {
	t.Helper()
	deadline := time.Now().Add(seamWait)
	for {
		c.omu.Lock()
		idle := !c.flushing
		c.omu.Unlock()
		if idle {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("flusher still busy")
		}
		time.Sleep(time.Millisecond)
	}
}

// seamConsume empties the subscribers' output buffers, as a flush would.
func seamConsume(subs []*client) {
	for _, c := range subs {
		c.omu.Lock()
		c.obuf = c.obuf[:0]
		c.pending = 0
		c.omu.Unlock()
	}
}

// seamFanoutAllocs measures allocations per routed message to 50
// subscribers, through the routing core (publish) and through an internal
// Publisher (which also runs the publish hooks).
func seamFanoutAllocs(t *testing.T, withHook bool) (route, publisher float64) {
	s := seamNewServer(t, Options{}, nil)
	if withHook {
		s.AddHook(seamInertHook{})
	}
	subs := seamFanout(t, s)
	m := &Message{Topic: "a/b", Payload: make([]byte, 32), Received: time.Now().UnixNano()}
	var sc routeScratch
	tx := s.newTxn()
	p := s.NewPublisher(PublisherOptions{Trusted: true})
	for range 200 { // warm up: buffers reach their steady size
		s.publish(m, &sc, tx)
		_ = p.Publish(m, nil)
		seamConsume(subs)
	}
	_ = p.Flush()
	route = testing.AllocsPerRun(100, func() {
		s.publish(m, &sc, tx)
		seamConsume(subs)
	})
	publisher = testing.AllocsPerRun(100, func() {
		_ = p.Publish(m, nil)
		_ = p.Flush()
		seamConsume(subs)
	})
	return route, publisher
}

// Hooks cost nothing when none is registered, nor when the registered ones
// implement no point on the path: the same allocations per message.
func TestSeamHookZeroCost(t *testing.T) {
	r0, p0 := seamFanoutAllocs(t, false)
	r1, p1 := seamFanoutAllocs(t, true)
	t.Logf("allocations per message to 50 subscribers: route %.1f / %.1f, publisher %.1f / %.1f (no hook / inert hook)", r0, r1, p0, p1)
	if r1 > r0 || p1 > p0 {
		t.Fatalf("an inert hook costs allocations: route %.1f -> %.1f, publisher %.1f -> %.1f", r0, r1, p0, p1)
	}
	if r0 > 0 {
		t.Fatalf("routing to subscribers that keep up allocates %.1f per message", r0)
	}
}

// BenchmarkSeamHooks compares an internal Publisher's fan-out to 50 QoS 0
// subscribers with no hook, with a hook implementing no point, and with a
// pass-through publish hook.
func BenchmarkSeamHooks(b *testing.B) {
	for _, mode := range []string{"none", "inert", "publish"} {
		b.Run(mode, func(b *testing.B) {
			s := New(Options{}, nil, nil)
			defer func() { _ = s.Shutdown(b.Context()) }()
			switch mode {
			case "inert":
				s.AddHook(seamInertHook{})
			case "publish":
				s.AddHook(&seamPublishHook{fn: func(_ ClientInfo, m *Message) (*Message, byte) { return m, 0 }})
			}
			subs := seamFanout(b, s)
			m := &Message{Topic: "a/b", Payload: make([]byte, 64)}
			p := s.NewPublisher(PublisherOptions{Trusted: true, MaxBatch: 1 << 30})
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				_ = p.Publish(m, nil)
				seamConsume(subs)
			}
			b.StopTimer()
			_ = p.Close()
		})
	}
}
