package broker_test

// Regression tests for the store-related hardening of the broker core: a
// failed commit, a degraded (not writable) store, and the byte bounds of
// the messages sessions hold. They run a broker.Server directly on a
// Pebble store wrapped in store.Faulty, whose commits and health the test
// controls.

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/isobar-mq/isobar/internal/broker"
	"github.com/isobar-mq/isobar/internal/mqtt/packet"
	"github.com/isobar-mq/isobar/internal/store"
	"github.com/isobar-mq/isobar/internal/testutil"
)

// Item 6. A failed store commit does not leave the messages it held back
// pending forever: a QoS 1 message routed to a persistent subscriber is
// still delivered to it; the MQTT 5 publisher gets PUBACK (or PUBREC) 0x97
// and may resend; the 3.1.1 publisher, which cannot be told, is
// disconnected without PUBACK. Once commits succeed again, everything
// flows.
func TestHardeningFailedCommitReleasesMessages(t *testing.T) {
	t.Parallel()
	st := hdFaultyStore(t)
	srv, addr := hdServer(t, broker.Options{Store: st}, nil)
	sub := dialP(t, addr, packet.V5)
	sub.connect(hdLogin("fc-sub", "", true, 3600))
	sub.sub("fc/#", 1)
	p5 := dialP(t, addr, packet.V5)
	p5.connectID("fc-pub5")
	p3 := dialP(t, addr, packet.V311)
	p3.connectID("fc-pub3")

	delivered := func(want string) {
		t.Helper()
		m := sub.nextPublish()
		if m.Topic+":"+string(m.Payload) != want {
			t.Fatalf("subscriber got %s, want %s", describe(m), want)
		}
		if m.QoS > 0 {
			sub.ack(packet.PUBACK, m.PacketID) // its own commit fails too: harmless
		}
	}

	st.FailAll(errInjected)
	// Delivered first (it was held back for the failed commit only), then
	// refused to the publisher.
	p5.publish(packet.Publish{Topic: "fc/a", QoS: 1, PacketID: 1, Payload: []byte("v5")})
	delivered("fc/a:v5")
	if a := p5.expectAck(packet.PUBACK, 1); a.ReasonCode != packet.QuotaExceeded {
		t.Errorf("v5 QoS 1 PUBLISH with a failing store: PUBACK 0x%02X, want 0x97", a.ReasonCode)
	}
	p5.publish(packet.Publish{Topic: "fc/a", QoS: 2, PacketID: 2, Payload: []byte("v5 qos2")})
	delivered("fc/a:v5 qos2")
	if a := p5.expectAck(packet.PUBREC, 2); a.ReasonCode != packet.QuotaExceeded {
		t.Errorf("v5 QoS 2 PUBLISH with a failing store: PUBREC 0x%02X, want 0x97", a.ReasonCode)
	}
	p3.publish(packet.Publish{Topic: "fc/b", QoS: 1, PacketID: 1, Payload: []byte("v3")})
	p3.hdExpectClosedQuietly() // no PUBACK
	delivered("fc/b:v3")
	if st.Failed() == 0 {
		t.Fatal("no commit failed")
	}

	// The refused QoS 2 flow is over: the same packet identifier is a new
	// message, not a duplicate (it is delivered).
	st.FailAll(nil)
	if a := p5.hdPubQ("fc/a", 2, 2, "again"); a.ReasonCode != packet.Success {
		t.Errorf("v5 QoS 2 PUBLISH after recovery: PUBREC 0x%02X", a.ReasonCode)
	}
	p5.ack(packet.PUBREL, 2)
	p5.expectAck(packet.PUBCOMP, 2)
	delivered("fc/a:again")
	if a := p5.hdPubQ("fc/a", 1, 3, "ok"); a.ReasonCode != packet.Success {
		t.Errorf("v5 QoS 1 PUBLISH after recovery: PUBACK 0x%02X", a.ReasonCode)
	}
	delivered("fc/a:ok")
	p3 = dialP(t, addr, packet.V311)
	p3.connectID("fc-pub3")
	p3.hdPubQ("fc/b", 1, 1, "v3 ok")
	delivered("fc/b:v3 ok")
	testutil.CheckFor(t, waitT, 5*time.Millisecond, func() error {
		if v, _, _ := srv.Session("fc-sub"); v.Queued != 0 || v.Inflight != 0 {
			return fmt.Errorf("subscriber session: %d queued, %d in flight, want none", v.Queued, v.Inflight)
		}
		return nil
	})
}

// Item 7. While the store reports itself not writable (Writable returns
// an error: free space below the floor, write errors), what needs
// durability is refused and the rest flows: MQTT 5 QoS 1/2 PUBLISH gets
// PUBACK/PUBREC 0x97, a 3.1.1 QoS 1 PUBLISH closes the connection, QoS 0
// is delivered; a CONNECT asking for a persistent session gets CONNACK
// 0x97 (5.0) or return code 3 (3.1.1) while clean sessions connect; a
// SUBSCRIBE from a persistent session gets 0x97 (0x80 for 3.1.1). Within
// about a second of the store becoming writable again, everything works.
func TestHardeningDegradedStore(t *testing.T) {
	t.Parallel()
	st := hdFaultyStore(t)
	srv, addr := hdServer(t, broker.Options{Store: st}, nil)
	durable5 := dialP(t, addr, packet.V5)
	durable5.connect(hdLogin("dg-durable5", "", true, 3600))
	durable5.sub("other/#", 1)
	durable3 := dialP(t, addr, packet.V311)
	durable3.connect(packet.Connect{ClientID: "dg-durable3", KeepAlive: 60})
	sub := dialP(t, addr, packet.V5)
	sub.connectID("dg-sub")
	sub.sub("dg/#", 1)
	p5 := dialP(t, addr, packet.V5)
	p5.connectID("dg-pub5")

	// As a full disk: Writable reports it and commits fail.
	st.Degrade(fmt.Errorf("%w: free space below the floor", store.ErrNoSpace))
	testutil.CheckFor(t, waitT, 10*time.Millisecond, func() error {
		if !srv.StoreDegraded() {
			return errors.New("the server has not noticed the store is not writable")
		}
		return nil
	})

	if a := p5.hdPubQ("dg/q1", 1, 1, "x"); a.ReasonCode != packet.QuotaExceeded {
		t.Errorf("degraded: v5 QoS 1 PUBACK 0x%02X, want 0x97", a.ReasonCode)
	}
	if a := p5.hdPubQ("dg/q2", 2, 2, "x"); a.ReasonCode != packet.QuotaExceeded {
		t.Errorf("degraded: v5 QoS 2 PUBREC 0x%02X, want 0x97", a.ReasonCode)
	}
	p5.publish(packet.Publish{Topic: "dg/q0", Payload: []byte("v5")})
	if m := sub.nextPublish(); m.Topic != "dg/q0" || string(m.Payload) != "v5" {
		t.Fatalf("degraded: subscriber got %s, want the QoS 0 dg/q0", describe(m))
	}
	p3 := dialP(t, addr, packet.V311)
	p3.connectID("dg-pub3")
	p3.publish(packet.Publish{Topic: "dg/q0", Payload: []byte("v3")})
	if m := sub.nextPublish(); m.Topic != "dg/q0" || string(m.Payload) != "v3" {
		t.Fatalf("degraded: subscriber got %s, want the 3.1.1 QoS 0 dg/q0", describe(m))
	}
	p3.publish(packet.Publish{Topic: "dg/q1", QoS: 1, PacketID: 1, Payload: []byte("x")})
	p3.hdExpectClosedQuietly()

	c := dialP(t, addr, packet.V5)
	if ack := c.connectAck(hdLogin("dg-new5", "", true, 3600)); ack.ReasonCode != packet.QuotaExceeded {
		t.Errorf("degraded: v5 persistent CONNECT: CONNACK 0x%02X, want 0x97", ack.ReasonCode)
	}
	c = dialP(t, addr, packet.V311)
	if ack := c.connectAck(packet.Connect{ClientID: "dg-new3", KeepAlive: 60}); ack.ReasonCode != packet.ConnRefusedServerUnavailable {
		t.Errorf("degraded: 3.1.1 persistent CONNECT: return code %d, want 3", ack.ReasonCode)
	}
	for _, v := range []byte{packet.V5, packet.V311} {
		c = dialP(t, addr, v)
		c.connectID(fmt.Sprint("dg-clean", v))
		c.sub("dg/clean", 1) // clean sessions subscribe
	}
	if sa := durable5.subscribe(2, packet.Properties{}, packet.Subscription{Filter: "dg/x", QoS: 1}); sa.ReasonCodes[0] != packet.QuotaExceeded {
		t.Errorf("degraded: SUBSCRIBE from a persistent v5 session: 0x%02X, want 0x97", sa.ReasonCodes[0])
	}
	if sa := durable3.subscribe(2, packet.Properties{}, packet.Subscription{Filter: "dg/x", QoS: 1}); sa.ReasonCodes[0] != packet.V3SubackFailure {
		t.Errorf("degraded: SUBSCRIBE from a persistent 3.1.1 session: 0x%02X, want 0x80", sa.ReasonCodes[0])
	}
	if srv.Stats().Snapshot().DroppedStoreDegraded == 0 {
		t.Error("nothing counted as refused for the degraded store")
	}

	// Recovery.
	st.Heal()
	start := time.Now()
	for id := uint16(10); ; id++ {
		if a := p5.hdPubQ("dg/q1", 1, id, "back"); a.ReasonCode < 0x80 {
			break
		}
		if time.Since(start) > 1500*time.Millisecond {
			t.Fatalf("still refused %v after the store became writable", time.Since(start))
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("QoS 1 accepted again %v after the store became writable", time.Since(start).Round(time.Millisecond))
	if m := sub.nextPublish(); m.Topic != "dg/q1" || string(m.Payload) != "back" {
		t.Fatalf("after recovery: subscriber got %s", describe(m))
	}
	c = dialP(t, addr, packet.V5)
	c.connect(hdLogin("dg-new5", "", true, 3600))
	c.sub("dg/x", 1)
}

// Item 9. The messages a session holds (queued and in flight) are bounded
// in bytes, per session (MaxQueuedBytes) and for all sessions together
// (MaxQueuedBytesTotal): messages that do not fit are dropped and counted
// (DroppedQueueBytes), and the accounting returns to zero when the
// messages are acknowledged or their sessions end.
func TestHardeningQueuedBytesBounded(t *testing.T) {
	t.Parallel()
	const perSession, total = 10_000, 25_000
	srv, addr := hdServer(t, broker.Options{MaxQueuedBytes: perSession, MaxQueuedBytesTotal: total}, nil)
	pub := dialP(t, addr, packet.V5)
	pub.connectID("qb-pub")
	nextID := uint16(0)
	publish := func(topic string, n, size int) {
		t.Helper()
		for i := 0; i < n; i++ {
			nextID++
			pub.hdPubQ(topic, 1, nextID, fmt.Sprintf("%0*d", size, i))
		}
	}
	offline := func(id, filter string) {
		t.Helper()
		c := dialP(t, addr, packet.V5)
		c.connect(hdLogin(id, "", true, 3600))
		c.sub(filter, 1)
		c.write((&packet.Disconnect{}).Append(nil, packet.V5))
		c.expectClosed(waitT)
	}
	queued := func(id string) int {
		t.Helper()
		v, _, ok := srv.Session(id)
		if !ok {
			t.Fatalf("no session %s", id)
		}
		return v.Queued + v.Inflight
	}
	dropped := func() uint64 { return srv.Stats().Snapshot().DroppedQueueBytes }
	resume := func(id string, clean bool) *pconn {
		t.Helper()
		c := dialP(t, addr, packet.V5)
		c.connect(hdLogin(id, "", clean, 3600))
		return c
	}
	// receive reads n messages, acknowledging them or not.
	receive := func(c *pconn, n int, ack bool) {
		t.Helper()
		for i := 0; i < n; i++ {
			m := c.nextPublish()
			if ack {
				c.ack(packet.PUBACK, m.PacketID)
			}
		}
	}
	zero := func() {
		t.Helper()
		testutil.CheckFor(t, waitT, 5*time.Millisecond, func() error {
			if b := srv.QueuedBytes(); b != 0 {
				return fmt.Errorf("%d queued bytes accounted, want 0", b)
			}
			return nil
		})
	}

	// Per session: 20 messages of more than 1,000 bytes each for a
	// session that may hold 10,000 bytes.
	offline("qb-a", "qb/a")
	d0 := dropped()
	publish("qb/a", 20, 1000)
	q, d := queued("qb-a"), int(dropped()-d0)
	t.Logf("per session: %d held, %d dropped, %d bytes", q, d, srv.QueuedBytes())
	if q+d != 20 || q < 5 || q > 10 || srv.QueuedBytes() > perSession {
		t.Fatalf("per session: %d held and %d dropped of 20, %d bytes; want at most 10 held (%d bytes), the rest dropped", q, d, srv.QueuedBytes(), perSession)
	}
	a := resume("qb-a", false)
	receive(a, q, true)
	zero()

	// In total: three sessions each under the per-session bound but
	// together over the total one.
	for _, id := range []string{"qb-b1", "qb-b2", "qb-b3"} {
		offline(id, "qb/b")
	}
	d0 = dropped()
	publish("qb/b", 12, 700)
	q1, q2, q3, d := queued("qb-b1"), queued("qb-b2"), queued("qb-b3"), int(dropped()-d0)
	t.Logf("total: %d+%d+%d held, %d dropped, %d bytes", q1, q2, q3, d, srv.QueuedBytes())
	if q1+q2+q3+d != 36 || d == 0 || q1+q2+q3 > total/700 || srv.QueuedBytes() > total {
		t.Fatalf("total: %d+%d+%d held, %d dropped of 36, %d bytes; want at most %d bytes held, the rest dropped", q1, q2, q3, d, srv.QueuedBytes(), total)
	}
	// Acknowledged, discarded by a clean start, and in flight when the
	// session ends: all released.
	b1 := resume("qb-b1", false)
	receive(b1, q1, true)
	resume("qb-b2", true)
	b3 := resume("qb-b3", false)
	receive(b3, q3, false)
	b3.write((&packet.Disconnect{}).Append(nil, packet.V5))
	b3.expectClosed(waitT)
	resume("qb-b3", true)
	zero()
	// The bounds were not consumed by the released messages.
	offline("qb-c", "qb/c")
	publish("qb/c", 3, 1000)
	if q := queued("qb-c"); q != 3 {
		t.Fatalf("%d of 3 messages held after the accounting returned to zero", q)
	}
}
