package broker

// End-to-end tests of a second kind of subscriber in the one index: a test
// double of a remote cluster node (seamRemote) next to MQTT sessions, with
// MQTT clients publishing over loopback TCP.

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/isobar-mq/isobar/internal/mqtt/packet"
	"github.com/isobar-mq/isobar/internal/store"
	"github.com/isobar-mq/isobar/internal/topic"
)

// seamV5 connects a raw v5 client with a clean start.
func seamV5(t *testing.T, addr, id string) *seamPC {
	t.Helper()
	p := seamDial(t, addr, packet.V5)
	p.connect(packet.Connect{ClientID: id, CleanStart: true})
	return p
}

// seamPub2 runs a whole QoS 2 publish flow and returns the PUBREC.
func seamPub2(p *seamPC, topicName, payload string, id uint16) *packet.Ack {
	p.t.Helper()
	p.publish(packet.Publish{Topic: topicName, QoS: 2, PacketID: id, Payload: []byte(payload)})
	rec := p.expectAck(packet.PUBREC, id)
	if rec.ReasonCode < 0x80 {
		p.ack(packet.PUBREL, id)
		p.expectAck(packet.PUBCOMP, id)
	}
	return rec
}

func sortedIDs(ids []uint32) []uint32 {
	out := slices.Clone(ids)
	slices.Sort(out)
	return out
}

// With overlapping subscriptions, every subscriber, local or remote, gets
// one delivery per message, at the highest granted QoS, with every
// subscription identifier [MQTT-3.3.4-2, -3].
func TestSeamRemoteOverlapOneDelivery(t *testing.T) {
	s := seamNewServer(t, Options{}, nil)
	addr := seamListen(t, s)
	r := newSeamRemote(t, 0, nil)
	seamSubscribe(s, r, "a/#", topic.Options{QoS: 1, ID: 1})
	seamSubscribe(s, r, "a/+", topic.Options{QoS: 2, ID: 2})
	seamSubscribe(s, r, "a/b", topic.Options{QoS: 0})

	l := seamV5(t, addr, "local")
	l.subscribe(1, 10, packet.Subscription{Filter: "a/#", QoS: 1})
	l.subscribe(2, 11, packet.Subscription{Filter: "a/b", QoS: 2})

	p := seamV5(t, addr, "pub")
	if rec := seamPub2(p, "a/b", "x", 1); rec.ReasonCode != 0 {
		t.Fatalf("PUBREC 0x%02X", rec.ReasonCode)
	}
	got := l.nextPublish()
	if got.QoS != 2 || string(got.Payload) != "x" || !slices.Equal(sortedIDs(got.Props.SubscriptionIdentifiers), []uint32{10, 11}) {
		t.Fatalf("local got %s", seamDescribe(got))
	}
	l.ack(packet.PUBREC, got.PacketID)
	l.expectAck(packet.PUBREL, got.PacketID)
	l.ack(packet.PUBCOMP, got.PacketID)

	// Barrier: a second message; nothing else arrives before it.
	p.publish(packet.Publish{Topic: "a/c", Payload: []byte("barrier")})
	if b := l.nextPublish(); string(b.Payload) != "barrier" {
		t.Fatalf("local got %s before the barrier", seamDescribe(b))
	}
	r.waitN(t, 2)
	time.Sleep(seamQuiet)
	ds := r.deliveries()
	if len(ds) != 2 {
		t.Fatalf("remote got %d deliveries for 2 messages", len(ds))
	}
	if d := ds[0]; string(d.Msg.Payload) != "x" || d.QoS != 2 || !slices.Equal(sortedIDs(d.SubIDs), []uint32{1, 2}) || d.Group != "" {
		t.Fatalf("remote delivery %+v", d)
	}
	if d := ds[1]; string(d.Msg.Payload) != "barrier" || d.QoS != 0 || !slices.Equal(sortedIDs(d.SubIDs), []uint32{1, 2}) {
		t.Fatalf("remote barrier delivery %+v", d)
	}
}

// A shared group mixing local sessions and a remote node gets one delivery
// per message, spread round robin over all its members.
func TestSeamRemoteSharedGroupMixed(t *testing.T) {
	s := seamNewServer(t, Options{}, nil)
	addr := seamListen(t, s)
	r := newSeamRemote(t, 0, nil)
	l1 := seamV5(t, addr, "l1")
	l1.sub("$share/g/s/#", 1)
	l2 := seamV5(t, addr, "l2")
	l2.sub("$share/g/s/#", 1)
	seamSubscribe(s, r, "$share/g/s/#", topic.Options{QoS: 1})

	p := seamV5(t, addr, "pub")
	const n = 9
	for i := range n {
		p.publish(packet.Publish{Topic: "s/t", QoS: 1, PacketID: uint16(i + 1), Payload: []byte(fmt.Sprint(i))})
		if a := p.expectAck(packet.PUBACK, uint16(i+1)); a.ReasonCode != 0 {
			t.Fatalf("PUBACK 0x%02X", a.ReasonCode)
		}
	}
	var all []string
	for _, l := range []*seamPC{l1, l2} {
		for range n / 3 {
			m := l.nextPublish()
			all = append(all, string(m.Payload))
			l.ack(packet.PUBACK, m.PacketID)
		}
		l.expectNothing(seamQuiet)
	}
	ds := r.deliveries()
	if len(ds) != n/3 {
		t.Fatalf("remote got %d, want %d (round robin over 3 members)", len(ds), n/3)
	}
	for _, d := range ds {
		if d.Group != "g/s/#" || d.QoS != 1 {
			t.Fatalf("remote delivery %+v", d)
		}
		all = append(all, string(d.Msg.Payload))
	}
	sort.Strings(all)
	if fmt.Sprint(all) != "[0 1 2 3 4 5 6 7 8]" {
		t.Fatalf("group deliveries %v: each message exactly once", all)
	}
}

// No Local compares client identifiers: it never applies to a remote node
// (no identifier) nor to a message without a publisher identifier, and
// keeps a client's own messages from it [MQTT-3.8.3-3].
func TestSeamRemoteNoLocal(t *testing.T) {
	s := seamNewServer(t, Options{}, nil)
	addr := seamListen(t, s)
	r := newSeamRemote(t, 0, nil)
	seamSubscribe(s, r, "n/#", topic.Options{QoS: 0, NoLocal: true})
	p := seamV5(t, addr, "p")
	p.subscribe(1, 0, packet.Subscription{Filter: "n/#", NoLocal: true})
	q := seamV5(t, addr, "q")
	q.subscribe(1, 0, packet.Subscription{Filter: "n/#", NoLocal: true})

	p.publish(packet.Publish{Topic: "n/1", Payload: []byte("from p")})
	if m := q.nextPublish(); string(m.Payload) != "from p" {
		t.Fatalf("q got %s", seamDescribe(m))
	}
	r.waitN(t, 1)

	// A server-side publisher without a client identifier: delivered to
	// everyone, p included.
	if err := s.Publish(&Message{Topic: "n/2", Payload: []byte("server")}); err != nil {
		t.Fatal(err)
	}
	if m := p.nextPublish(); string(m.Payload) != "server" {
		t.Fatalf("p got %s: its own message came back", seamDescribe(m))
	}
	if m := q.nextPublish(); string(m.Payload) != "server" {
		t.Fatalf("q got %s", seamDescribe(m))
	}
	ds := r.waitN(t, 2)
	if len(ds) != 2 || string(ds[0].Msg.Payload) != "from p" || string(ds[1].Msg.Payload) != "server" {
		t.Fatalf("remote got %d deliveries", len(ds))
	}
	p.expectNothing(seamQuiet)
}

// The publisher's acknowledgement follows the remote node's acceptance:
// PUBACK (QoS 1) and PUBREC (QoS 2), v5 and 3.1.1, arrive only after the
// double released its hold.
func TestSeamRemotePubackAfterRelease(t *testing.T) {
	const delay = 150 * time.Millisecond
	s := seamNewServer(t, Options{}, nil)
	addr := seamListen(t, s)
	r := newSeamRemote(t, delay, nil)
	seamSubscribe(s, r, "h/#", topic.Options{QoS: 2})

	check := func(what string, start, acked time.Time, n int) {
		t.Helper()
		rel := r.releaseTimes()
		if len(rel) != n {
			t.Fatalf("%s: %d releases, want %d", what, len(rel), n)
		}
		if !acked.After(rel[n-1]) {
			t.Fatalf("%s: acknowledged at %v, before the remote's release at %v", what, acked, rel[n-1])
		}
		if acked.Sub(start) < delay {
			t.Fatalf("%s: acknowledged after %v, the remote takes %v", what, acked.Sub(start), delay)
		}
	}
	for i, ver := range []byte{packet.V5, packet.V311} {
		p := seamDial(t, addr, ver)
		p.connect(packet.Connect{ClientID: fmt.Sprint("p", ver), CleanStart: true})
		start := time.Now()
		p.publish(packet.Publish{Topic: "h/1", QoS: 1, PacketID: 1, Payload: []byte("one")})
		p.expectAck(packet.PUBACK, 1)
		check(fmt.Sprintf("v%d PUBACK", ver), start, time.Now(), 2*i+1)

		start = time.Now()
		p.publish(packet.Publish{Topic: "h/2", QoS: 2, PacketID: 2, Payload: []byte("two")})
		p.expectAck(packet.PUBREC, 2)
		check(fmt.Sprintf("v%d PUBREC", ver), start, time.Now(), 2*i+2)
		p.ack(packet.PUBREL, 2)
		p.expectAck(packet.PUBCOMP, 2)
	}
	if n := len(r.deliveries()); n != 4 {
		t.Fatalf("remote got %d deliveries, want 4", n)
	}
}

// A hold released with an error (or timing out) refuses the message: a v5
// publisher gets PUBACK/PUBREC 0x97 and may send it again (the QoS 2
// identifier is free); a 3.1.1 publisher, which has no such code, is
// disconnected without an acknowledgement.
func TestSeamRemoteHoldErrorRefusesPublish(t *testing.T) {
	s := seamNewServer(t, Options{HoldTimeout: 300 * time.Millisecond}, nil)
	addr := seamListen(t, s)
	r := newSeamRemote(t, 10*time.Millisecond, errors.New("peer unreachable"))
	seamSubscribe(s, r, "h/#", topic.Options{QoS: 2})

	p := seamV5(t, addr, "p5")
	p.publish(packet.Publish{Topic: "h/1", QoS: 1, PacketID: 1, Payload: []byte("a")})
	if a := p.expectAck(packet.PUBACK, 1); a.ReasonCode != packet.QuotaExceeded {
		t.Fatalf("PUBACK 0x%02X, want 0x97", a.ReasonCode)
	}
	if rec := seamPub2(p, "h/2", "b", 2); rec.ReasonCode != packet.QuotaExceeded {
		t.Fatalf("PUBREC 0x%02X, want 0x97", rec.ReasonCode)
	}
	// The refused QoS 2 flow ended: the same identifier is a new message.
	r.setErr(nil)
	if rec := seamPub2(p, "h/2", "b again", 2); rec.ReasonCode != 0 {
		t.Fatalf("PUBREC 0x%02X after the remote recovered", rec.ReasonCode)
	}
	if n := len(r.deliveries()); n != 3 {
		t.Fatalf("remote got %d deliveries, want 3 (the resent QoS 2 message is new)", n)
	}
	if n := s.stats.holdFailures.Load(); n != 2 {
		t.Fatalf("holdFailures %d, want 2", n)
	}

	r.setErr(errors.New("peer unreachable"))
	p3 := seamDial(t, addr, packet.V311)
	p3.connect(packet.Connect{ClientID: "p3", CleanStart: true})
	p3.publish(packet.Publish{Topic: "h/3", QoS: 1, PacketID: 1, Payload: []byte("c")})
	p3.expectClosed()

	// A remote that does not answer within HoldTimeout.
	slow := newSeamRemote(t, 2*time.Second, nil)
	seamSubscribe(s, slow, "slow/#", topic.Options{QoS: 1})
	start := time.Now()
	p.publish(packet.Publish{Topic: "slow/1", QoS: 1, PacketID: 3, Payload: []byte("d")})
	if a := p.expectAck(packet.PUBACK, 3); a.ReasonCode != packet.QuotaExceeded {
		t.Fatalf("PUBACK 0x%02X after the hold timed out, want 0x97", a.ReasonCode)
	}
	if took := time.Since(start); took >= 2*time.Second {
		t.Fatalf("PUBACK after %v: the hold timeout (300ms) was not applied", took)
	}
}

// A QoS 2 publish refused because a hold failed must not leave its
// inbound packet identifier in the store: the store commit itself
// succeeded, so a stale record would survive a restart and make the
// client's next QoS 2 message with that identifier look like a duplicate
// (acknowledged, never routed).
func TestSeamRemoteHoldErrorLeavesNoInboundRecord(t *testing.T) {
	st := seamPebble(t, t.TempDir())
	s := seamNewServer(t, Options{Store: st}, nil)
	addr := seamListen(t, s)
	r := newSeamRemote(t, 10*time.Millisecond, errors.New("peer unreachable"))
	seamSubscribe(s, r, "h/#", topic.Options{QoS: 2})

	p := seamDial(t, addr, packet.V5)
	cp := packet.Connect{ClientID: "p", CleanStart: true}
	cp.Props.SessionExpiryInterval = 3600
	cp.Props.Set(packet.PropSessionExpiryInterval)
	p.connect(cp)
	if rec := seamPub2(p, "h/1", "a", 7); rec.ReasonCode != packet.QuotaExceeded {
		t.Fatalf("PUBREC 0x%02X, want 0x97", rec.ReasonCode)
	}
	// A barrier: the PINGRESP comes after anything committed for the
	// PUBREC's failure.
	p.write(packet.AppendPingreq(nil))
	if pkt := p.next(); pkt != packet.PINGRESP {
		t.Fatalf("expected PINGRESP, got %s", seamDescribe(pkt))
	}
	sess, ok := s.ExportSession("p")
	if !ok || len(sess.Inbound) != 0 {
		t.Fatalf("in memory: session %v, inbound %v", ok, sess.Inbound)
	}
	var inbound []uint16
	err := st.LoadSessions(func(ls *store.LoadedSession) error {
		if ls.Session.ClientID == "p" {
			inbound = ls.Inbound
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(inbound) != 0 {
		t.Fatalf("store keeps inbound QoS 2 ids %v of a refused message", inbound)
	}
}
