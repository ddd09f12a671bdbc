package broker_test

// Regression tests for panic containment in the broker core: a panic while
// handling one connection's input closes that connection, is counted, and
// leaves the process, the other clients and every session lock intact.

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/isobar-mq/isobar/internal/broker"
	"github.com/isobar-mq/isobar/internal/mqtt/packet"
	"github.com/isobar-mq/isobar/internal/testutil"
)

// hdPanicHook panics in OnPublish for messages on one topic.
type hdPanicHook struct{ topic string }

func (hdPanicHook) HookName() string { return "test-panic-on-publish" }

func (h hdPanicHook) OnPublish(_ broker.ClientInfo, m *broker.Message) (*broker.Message, byte) {
	if m.Topic == h.topic {
		panic("test: injected panic in a publish hook")
	}
	return m, 0
}

// hdPanicAuth allows everything but panics when asked whether a client
// may publish on one topic (a faulty Auth plugin).
type hdPanicAuth struct{ topic string }

func (hdPanicAuth) Authenticate(broker.AuthRequest) broker.AuthResponse {
	return broker.AuthResponse{Result: broker.AuthOK}
}
func (a hdPanicAuth) CanPublish(_ broker.ClientInfo, t string) bool {
	if t == a.topic {
		panic("test: injected panic in Auth.CanPublish")
	}
	return true
}
func (hdPanicAuth) CanSubscribe(broker.ClientInfo, string) bool { return true }
func (hdPanicAuth) CanReceive(broker.ClientInfo, string) bool   { return true }

// Item 5. A panic while handling a PUBLISH (in a publish hook, or in the
// Auth) closes the publishing connection (v5: DISCONNECT 0x83) and is
// counted in Stats().Panics; other clients keep publishing and receiving,
// and the same client id reconnects to its session.
func TestHardeningPanicContained(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		setup func() (*broker.Server, string)
	}{
		{"publish hook", func() (*broker.Server, string) {
			srv, addr := hdServer(t, broker.Options{}, nil)
			srv.AddHook(hdPanicHook{topic: "boom"})
			return srv, addr
		}},
		{"auth", func() (*broker.Server, string) {
			return hdServer(t, broker.Options{}, hdPanicAuth{topic: "boom"})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, addr := tc.setup()
			sub := dialP(t, addr, packet.V5)
			sub.connectID("pn-sub")
			sub.sub("pn/#", 1)
			other := dialP(t, addr, packet.V5)
			other.connectID("pn-other")

			for i, v := range []byte{packet.V5, packet.V311} {
				id := fmt.Sprint("pn-pub", v)
				p := dialP(t, addr, v)
				p.connect(hdLogin(id, "", false, 3600))
				p.hdPubQ("pn/before", 1, 1, id)
				p.publish(packet.Publish{Topic: "boom", QoS: 1, PacketID: 2, Payload: []byte("x")})
				if v == packet.V5 {
					p.expectDisconnect(packet.ImplementationSpecificError)
				} else {
					p.hdExpectClosedQuietly()
				}
				if got := srv.Stats().Snapshot().Panics; got != uint64(i+1) {
					t.Errorf("Stats().Panics = %d, want %d", got, i+1)
				}
				// Everyone else carries on.
				other.hdPubQ("pn/other", 1, uint16(i+1), id)
				// The same session reconnects and publishes.
				p = dialP(t, addr, v)
				if ack := p.connect(hdLogin(id, "", false, 3600)); !ack.SessionPresent {
					t.Errorf("%s: session not present after the panic", id)
				}
				p.hdPubQ("pn/after", 1, 3, id)
				want := []string{"pn/before:" + id, "pn/other:" + id, "pn/after:" + id}
				for _, w := range want {
					m := sub.nextPublish()
					sub.ack(packet.PUBACK, m.PacketID)
					if got := m.Topic + ":" + string(m.Payload); got != w {
						t.Fatalf("subscriber got %s, want %s", got, w)
					}
				}
			}
		})
	}
}

// hdPanicDelivery panics when a delivery to one session is dropped: that
// hook runs with the session's lock held, in the publisher's goroutine.
type hdPanicDelivery struct{ client string }

func (hdPanicDelivery) HookName() string { return "test-panic-on-delivery" }

func (h hdPanicDelivery) OnDelivery(o broker.DeliveryOutcome) {
	if o.ClientID == h.client && o.Kind == broker.DeliveryDropped {
		panic("test: injected panic with a session lock held")
	}
}

// Item 5, under a session lock: a panic while the publisher's goroutine
// holds the subscriber's session lock (delivery to a full queue) unlocks
// it on the way out. The publisher is disconnected; the subscriber's
// session can still be resumed and delivers what it had queued, and other
// publishers can still reach it.
func TestHardeningPanicUnderSessionLock(t *testing.T) {
	t.Parallel()
	srv, addr := hdServer(t, broker.Options{MaxQueued: 1}, nil)
	srv.AddHook(hdPanicDelivery{client: "pl-victim"})
	v := dialP(t, addr, packet.V5)
	v.connect(hdLogin("pl-victim", "", true, 3600))
	v.sub("pl/#", 1)
	v.write((&packet.Disconnect{}).Append(nil, packet.V5))
	v.expectClosed(waitT)

	p := dialP(t, addr, packet.V5)
	p.connectID("pl-pub")
	p.hdPubQ("pl/1", 1, 1, "queued")
	p.publish(packet.Publish{Topic: "pl/2", QoS: 1, PacketID: 2, Payload: []byte("queue full")})
	p.expectDisconnect(packet.ImplementationSpecificError)
	if got := srv.Stats().Snapshot().Panics; got != 1 {
		t.Errorf("Stats().Panics = %d, want 1", got)
	}

	v = dialP(t, addr, packet.V5)
	if ack := v.connect(hdLogin("pl-victim", "", false, 3600)); !ack.SessionPresent {
		t.Fatal("victim's session not present")
	}
	m := v.nextPublish()
	if m.Topic != "pl/1" {
		t.Fatalf("victim got %s, want pl/1", describe(m))
	}
	v.ack(packet.PUBACK, m.PacketID)
	p = dialP(t, addr, packet.V5)
	p.connectID("pl-pub")
	p.hdPubQ("pl/3", 1, 1, "live")
	if m := v.nextPublish(); m.Topic != "pl/3" {
		t.Fatalf("victim got %s, want pl/3", describe(m))
	}
}

// hdPanicSessionEvent panics when told of a session event of one kind.
type hdPanicSessionEvent struct{ kind broker.SessionEventKind }

func (hdPanicSessionEvent) HookName() string { return "test-panic-on-session-event" }

func (h hdPanicSessionEvent) OnSessionEvent(e broker.SessionEvent) {
	if e.Kind == h.kind {
		panic("test: injected panic in a session expiry timer")
	}
}

// hdPanicWillAuth allows everything; it panics the second time it is
// asked about publishing on topic: the will's check at CONNECT passes, its
// check when the delayed will fires (in a timer) panics.
type hdPanicWillAuth struct {
	topic string
	n     atomic.Int32
}

func (*hdPanicWillAuth) Authenticate(broker.AuthRequest) broker.AuthResponse {
	return broker.AuthResponse{Result: broker.AuthOK}
}
func (a *hdPanicWillAuth) CanPublish(_ broker.ClientInfo, t string) bool {
	if t == a.topic && a.n.Add(1) == 2 {
		panic("test: injected panic in a will timer")
	}
	return true
}
func (*hdPanicWillAuth) CanSubscribe(broker.ClientInfo, string) bool { return true }
func (*hdPanicWillAuth) CanReceive(broker.ClientInfo, string) bool   { return true }

// Item 5, timers: a panic in a timer (a session expiry timer calling a
// session hook, a delayed will's timer calling the Auth) is contained and
// counted like one in a connection; the server goes on serving.
func TestHardeningPanicInTimerContained(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		setup func() (*broker.Server, string)
		arm   func(c *pconn)
	}{
		{"session expiry hook", func() (*broker.Server, string) {
			srv, addr := hdServer(t, broker.Options{}, nil)
			srv.AddHook(hdPanicSessionEvent{kind: broker.SessionExpired})
			return srv, addr
		}, func(c *pconn) {
			c.connect(hdLogin("pt-expiring", "", true, 1))
			c.write((&packet.Disconnect{}).Append(nil, packet.V5))
			c.expectClosed(waitT)
		}},
		{"will timer auth", func() (*broker.Server, string) {
			return hdServer(t, broker.Options{}, &hdPanicWillAuth{topic: "pt/will"})
		}, func(c *pconn) {
			cp := hdLogin("pt-will", "", true, 60)
			cp.WillFlag, cp.WillTopic, cp.WillPayload = true, "pt/will", []byte("gone")
			cp.WillProps.WillDelayInterval = 1
			cp.WillProps.Set(packet.PropWillDelayInterval)
			c.connect(cp)
			_ = c.c.Close() // abnormal end: the will is due after its delay
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv, addr := tc.setup()
			tc.arm(dialP(t, addr, packet.V5))
			testutil.CheckFor(t, waitT, 20*time.Millisecond, func() error {
				if n := srv.Stats().Snapshot().Panics; n != 1 {
					return fmt.Errorf("%d panics counted, want 1", n)
				}
				return nil
			})
			c := dialP(t, addr, packet.V5)
			c.connectID("pt-after")
			c.sub("pt/x", 0)
			c.publish(packet.Publish{Topic: "pt/x", Payload: []byte("alive")})
			if m := c.nextPublish(); string(m.Payload) != "alive" {
				t.Fatalf("got %s", describe(m))
			}
		})
	}
}
