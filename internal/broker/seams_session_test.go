package broker

// Unit tests of the session state machine (session.go): deliverLocked,
// drainLocked, complete, received and resendLocked, driven with in-process
// clients whose output is decoded packet by packet.

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/isobar-mq/isobar/internal/mqtt/packet"
)

// pubIDs renders the packet identifiers, payloads and DUP flags of pubs.
func seamPubs(pubs []*packet.Publish) string {
	var b strings.Builder
	for i, p := range pubs {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(strconv.Itoa(int(p.PacketID)))
		b.WriteByte(':')
		b.Write(p.Payload)
		if p.Dup {
			b.WriteString("(dup)")
		}
	}
	return b.String()
}

func seamWantPubs(t *testing.T, got []*packet.Publish, want string) {
	t.Helper()
	if s := seamPubs(got); s != want {
		t.Fatalf("published %q, want %q", s, want)
	}
}

// QoS 1: the in-flight window bounds what is sent, the queue limit what is
// held beyond it (the rest is dropped and counted), each PUBACK frees one
// slot, and once everything is acknowledged nothing is held.
func TestSeamSessionQoS1WindowAndQueue(t *testing.T) {
	s := seamNewServer(t, Options{MaxInflight: 2, MaxQueued: 3}, nil)
	sc := seamAttach(t, s, "sub", packet.V5, true, 0, 2, 0)
	sess := sc.sess()
	for i := range 6 {
		seamDeliver(s, sess, seamMsg("t", strconv.Itoa(i), 1), 1, nil)
	}
	seamWantPubs(t, sc.publishes(), "1:0 2:1")
	if n := s.stats.droppedQueueFull.Load(); n != 1 {
		t.Fatalf("droppedQueueFull %d, want 1 (window 2 + queue 3 of 6)", n)
	}
	sess.mu.Lock()
	nq, sent := len(sess.queue), sess.sent
	sess.mu.Unlock()
	if nq != 3 || sent != 2 {
		t.Fatalf("queue %d sent %d, want 3 and 2", nq, sent)
	}

	// An unknown identifier is ignored; PUBCOMP does not fit a QoS 1 flow.
	sc.ack(packet.PUBACK, 999, 0)
	if sess.complete(1, packet.PUBCOMP, s.newTxn()) {
		t.Fatal("PUBCOMP accepted for a QoS 1 message")
	}
	if known, ok := sess.received(1, 0, s.newTxn()); !known || ok {
		t.Fatalf("PUBREC for a QoS 1 message: known %v ok %v, want true false", known, ok)
	}
	if sc.packets() != nil {
		t.Fatal("output after refused acknowledgements")
	}

	// A PUBACK for a message still queued (never sent) is ignored.
	sc.ack(packet.PUBACK, 3, 0)
	sess.mu.Lock()
	nq = len(sess.queue)
	sess.mu.Unlock()
	if nq != 3 || sc.packets() != nil {
		t.Fatalf("PUBACK for a queued message changed the queue (%d) or sent something", nq)
	}

	sc.ack(packet.PUBACK, 1, 0)
	seamWantPubs(t, sc.publishes(), "3:2")
	sc.ack(packet.PUBACK, 3, 0)
	sc.ack(packet.PUBACK, 2, 0)
	seamWantPubs(t, sc.publishes(), "4:3 5:4")
	sc.ack(packet.PUBACK, 5, 0)
	sc.ack(packet.PUBACK, 4, 0)
	if got := sc.publishes(); len(got) != 0 {
		t.Fatalf("unexpected %s", seamPubs(got))
	}
	seamCheckIdle(t, s, sess)
}

// QoS 2: PUBCOMP before PUBREC and PUBACK are refused, PUBREC makes the
// server send PUBREL (again for a repeated PUBREC), PUBCOMP completes; a
// refused PUBREC (>= 0x80) ends the flow without PUBREL and frees the
// window for the next message.
func TestSeamSessionQoS2Flow(t *testing.T) {
	s := seamNewServer(t, Options{}, nil)
	sc := seamAttach(t, s, "sub", packet.V5, true, 0, 1, 0)
	sess := sc.sess()
	seamDeliver(s, sess, seamMsg("t", "a", 2), 2, nil)
	seamDeliver(s, sess, seamMsg("t", "b", 2), 2, nil)
	seamDeliver(s, sess, seamMsg("t", "c", 2), 2, nil)
	pubs := sc.publishes()
	seamWantPubs(t, pubs, "1:a")
	if pubs[0].QoS != 2 {
		t.Fatalf("QoS %d", pubs[0].QoS)
	}
	if sess.complete(1, packet.PUBCOMP, s.newTxn()) {
		t.Fatal("PUBCOMP accepted before PUBREC")
	}
	if sess.complete(1, packet.PUBACK, s.newTxn()) {
		t.Fatal("PUBACK accepted for a QoS 2 message")
	}

	sc.ack(packet.PUBREC, 1, 0)
	got := sc.packets()
	if len(got) != 1 || seamDescribe(got[0]) != "PUBREL{id 1 reason 0x00}" {
		t.Fatalf("after PUBREC: %v", got)
	}
	sess.mu.Lock()
	state := sess.msgs[1].state
	sess.mu.Unlock()
	if state != outReleased {
		t.Fatalf("state %d, want released", state)
	}
	sc.ack(packet.PUBREC, 1, 0) // repeated: PUBREL again, nothing else
	got = sc.packets()
	if len(got) != 1 || seamDescribe(got[0]) != "PUBREL{id 1 reason 0x00}" {
		t.Fatalf("after a repeated PUBREC: %v", got)
	}
	if sess.complete(1, packet.PUBACK, s.newTxn()) {
		t.Fatal("PUBACK accepted for a released QoS 2 message")
	}
	sc.ack(packet.PUBCOMP, 1, 0)
	seamWantPubs(t, sc.publishes(), "2:b")

	// The receiver refuses b: no PUBREL, c goes out.
	sc.ack(packet.PUBREC, 2, packet.QuotaExceeded)
	seamWantPubs(t, sc.publishes(), "3:c")
	sc.ack(packet.PUBREC, 3, 0)
	sc.ack(packet.PUBCOMP, 3, 0)
	if got := sc.packets(); len(got) != 1 {
		t.Fatalf("want only PUBREL 3, got %d packets", len(got))
	}
	seamCheckIdle(t, s, sess)
}

// An offline session queues up to MaxQueued QoS 1/2 messages (QoS 0 is
// dropped unless QueueQoS0), sends them in order with their identifiers
// when resumed, and resends what was in flight at a disconnection with DUP
// and the same identifiers.
func TestSeamSessionOfflineQueueAndResume(t *testing.T) {
	s := seamNewServer(t, Options{MaxInflight: 10, MaxQueued: 3}, nil)
	sc := seamAttach(t, s, "p", packet.V5, true, 60, 10, 0)
	sess := sc.sess()
	sc.detach()
	for i := range 5 {
		seamDeliver(s, sess, seamMsg("t", strconv.Itoa(i), 1), 1, nil)
	}
	seamDeliver(s, sess, seamMsg("t", "q0", 0), 0, nil)
	if n := s.stats.droppedQueueFull.Load(); n != 2 {
		t.Fatalf("droppedQueueFull %d, want 2", n)
	}
	if n := s.stats.droppedOffline.Load(); n != 1 {
		t.Fatalf("droppedOffline %d, want 1 (QoS 0 to an offline session)", n)
	}

	sc = seamAttach(t, s, "p", packet.V5, false, 60, 10, 0)
	if !sc.connack.SessionPresent {
		t.Fatal("session not present")
	}
	if sc.sess() != sess {
		t.Fatal("a new session was made")
	}
	seamWantPubs(t, sc.publishes(), "1:0 2:1 3:2")
	sc.ack(packet.PUBACK, 2, 0)
	sc.detach()

	sc = seamAttach(t, s, "p", packet.V5, false, 60, 10, 0)
	seamWantPubs(t, sc.publishes(), "1:0(dup) 3:2(dup)")
	sc.ack(packet.PUBACK, 1, 0)
	sc.ack(packet.PUBACK, 3, 0)
	seamCheckIdle(t, s, sess)
}

// With QueueQoS0 an offline persistent session also holds QoS 0 messages
// (bounded by MaxQueued), sent without an identifier when it resumes, and
// their bytes are released once sent.
func TestSeamSessionQueueQoS0(t *testing.T) {
	s := seamNewServer(t, Options{QueueQoS0: true, MaxQueued: 2}, nil)
	sc := seamAttach(t, s, "p", packet.V311, false, 0xFFFFFFFF, 10, 0)
	sess := sc.sess()
	sc.detach()
	for i := range 3 {
		seamDeliver(s, sess, seamMsg("t", strconv.Itoa(i), 0), 0, nil)
	}
	if n := s.stats.droppedQueueFull.Load(); n != 1 {
		t.Fatalf("droppedQueueFull %d, want 1", n)
	}
	if s.QueuedBytes() == 0 {
		t.Fatal("queued QoS 0 messages not accounted")
	}
	sc = seamAttach(t, s, "p", packet.V311, false, 0xFFFFFFFF, 10, 0)
	seamWantPubs(t, sc.publishes(), "0:0 0:1")
	seamCheckIdle(t, s, sess)
}

// Packet identifiers start at 1, wrap from 65535 to 1 (never 0) and skip
// identifiers still in use.
func TestSeamSessionPacketIDWrap(t *testing.T) {
	s := seamNewServer(t, Options{MaxInflight: 100}, nil)
	sc := seamAttach(t, s, "sub", packet.V5, true, 0, 100, 0)
	sess := sc.sess()
	sess.mu.Lock()
	sess.nextID = 65533
	sess.mu.Unlock()
	for _, p := range []string{"a", "b", "c"} {
		seamDeliver(s, sess, seamMsg("t", p, 1), 1, nil)
	}
	seamWantPubs(t, sc.publishes(), "65534:a 65535:b 1:c")

	// Wind the counter back: 65534, 65535 and 1 are in use, so 2 is next.
	sess.mu.Lock()
	sess.nextID = 65533
	sess.mu.Unlock()
	seamDeliver(s, sess, seamMsg("t", "d", 1), 1, nil)
	seamWantPubs(t, sc.publishes(), "2:d")
	for _, id := range []uint16{65534, 65535, 1, 2} {
		sc.ack(packet.PUBACK, id, 0)
	}
	seamCheckIdle(t, s, sess)
}

// A message that expires while it waits is dropped (counted, its bytes
// released) instead of being sent; one already expired when routed is not
// queued at all; the next one goes out with its own identifier.
func TestSeamSessionExpiryWhileQueued(t *testing.T) {
	s := seamNewServer(t, Options{}, nil)
	sc := seamAttach(t, s, "sub", packet.V5, true, 60, 1, 0)
	sess := sc.sess()
	seamDeliver(s, sess, seamMsg("t", "a", 1), 1, nil)

	now := time.Now()
	b := seamMsg("t", "b", 1)
	b.Expiry = now.Add(20 * time.Millisecond).UnixNano()
	sess.Deliver(Delivery{Msg: b, QoS: 1}, s.newTxn(), now.UnixNano()) // queued behind a
	old := seamMsg("t", "old", 1)
	old.Expiry = now.Add(-time.Millisecond).UnixNano()
	seamDeliver(s, sess, old, 1, nil) // expired when routed
	if n := s.stats.droppedExpired.Load(); n != 1 {
		t.Fatalf("droppedExpired %d, want 1", n)
	}
	seamDeliver(s, sess, seamMsg("t", "c", 1), 1, nil)
	seamWantPubs(t, sc.publishes(), "1:a")

	time.Sleep(30 * time.Millisecond) // b expires in the queue
	sc.ack(packet.PUBACK, 1, 0)
	seamWantPubs(t, sc.publishes(), "3:c")
	if n := s.stats.droppedExpired.Load(); n != 2 {
		t.Fatalf("droppedExpired %d, want 2", n)
	}

	// Expiry while offline: dropped when the session resumes.
	sc.detach()
	d := seamMsg("t", "d", 1)
	d.Expiry = time.Now().Add(20 * time.Millisecond).UnixNano()
	seamDeliver(s, sess, d, 1, nil)
	time.Sleep(30 * time.Millisecond)
	sc = seamAttach(t, s, "sub", packet.V5, false, 60, 1, 0)
	seamWantPubs(t, sc.publishes(), "3:c(dup)")
	sc.ack(packet.PUBACK, 3, 0)
	if got := sc.publishes(); len(got) != 0 {
		t.Fatalf("expired message sent: %s", seamPubs(got))
	}
	seamCheckIdle(t, s, sess)
}

// A message larger than the client's Maximum Packet Size is dropped as if
// delivered [MQTT-3.1.2-25]: counted, its identifier and window slot free,
// its bytes released; also when it was in flight and the new connection
// has a smaller maximum.
func TestSeamSessionTooLargeDropped(t *testing.T) {
	s := seamNewServer(t, Options{}, nil)
	sc := seamAttach(t, s, "sub", packet.V5, true, 60, 1, 200)
	sess := sc.sess()
	seamDeliver(s, sess, seamMsg("t", strings.Repeat("x", 500), 1), 1, nil)
	seamDeliver(s, sess, seamMsg("t", strings.Repeat("y", 300), 0), 0, nil)
	seamDeliver(s, sess, seamMsg("t", "small", 1), 1, nil)
	seamWantPubs(t, sc.publishes(), "2:small")
	if n := s.stats.droppedTooLarge.Load(); n != 2 {
		t.Fatalf("droppedTooLarge %d, want 2", n)
	}

	// In flight (150 bytes) when the connection ends; the next one accepts
	// at most 100 bytes.
	seamDeliver(s, sess, seamMsg("t", strings.Repeat("z", 150), 1), 1, nil) // queued behind "small"
	sc.ack(packet.PUBACK, 2, 0)
	seamWantPubs(t, sc.publishes(), "3:"+strings.Repeat("z", 150))
	sc.detach()
	sc = seamAttach(t, s, "sub", packet.V5, false, 60, 1, 100)
	if got := sc.publishes(); len(got) != 0 {
		t.Fatalf("too large message resent: %s", seamPubs(got))
	}
	seamCheckIdle(t, s, sess)
	seamDeliver(s, sess, seamMsg("t", "after", 1), 1, nil)
	seamWantPubs(t, sc.publishes(), "4:after")
	sc.ack(packet.PUBACK, 4, 0)
	seamCheckIdle(t, s, sess)
}

// Held messages are bounded by bytes, per session and in total; what does
// not fit is dropped and counted.
func TestSeamSessionByteLimits(t *testing.T) {
	size := seamMsg("t", strings.Repeat("x", 100), 1).memSize()
	s := seamNewServer(t, Options{MaxQueuedBytes: 2*size + size/2, MaxQueuedBytesTotal: 3*size + size/2}, nil)
	a := seamAttach(t, s, "a", packet.V5, true, 60, 10, 0)
	b := seamAttach(t, s, "b", packet.V5, true, 60, 10, 0)
	a.detach()
	b.detach()
	for range 3 {
		seamDeliver(s, a.sess(), seamMsg("t", strings.Repeat("x", 100), 1), 1, nil)
	}
	if n := s.stats.droppedQueueBytes.Load(); n != 1 {
		t.Fatalf("droppedQueueBytes %d, want 1 (per-session limit)", n)
	}
	for range 2 {
		seamDeliver(s, b.sess(), seamMsg("t", strings.Repeat("x", 100), 1), 1, nil)
	}
	if n := s.stats.droppedQueueBytes.Load(); n != 2 {
		t.Fatalf("droppedQueueBytes %d, want 2 (total limit)", n)
	}
	if q := s.QueuedBytes(); q != 3*size {
		t.Fatalf("queuedBytes %d, want %d", q, 3*size)
	}

	// A clean start discards a's session and its bytes; b's messages are
	// delivered and acknowledged.
	a2 := seamAttach(t, s, "a", packet.V5, true, 0, 10, 0)
	if q := s.QueuedBytes(); q != size {
		t.Fatalf("queuedBytes %d after a's session ended, want %d", q, size)
	}
	b2 := seamAttach(t, s, "b", packet.V5, false, 60, 10, 0)
	seamWantPubs(t, b2.publishes(), "1:"+strings.Repeat("x", 100))
	b2.ack(packet.PUBACK, 1, 0)
	seamCheckIdle(t, s, b2.sess())
	seamCheckIdle(t, s, a2.sess())
}

// Ending a session with messages queued and in flight releases their
// bytes: a clean session closing, an offline session expiring, and a clean
// start replacing an offline session.
func TestSeamSessionEndReleasesBytes(t *testing.T) {
	s := seamNewServer(t, Options{}, nil)
	load := func(sess *session) {
		for i := range 3 {
			seamDeliver(s, sess, seamMsg("t", strconv.Itoa(i), byte(1+i%2)), byte(1+i%2), nil)
		}
	}

	clean := seamAttach(t, s, "clean", packet.V5, true, 0, 1, 0)
	load(clean.sess())
	clean.detach()
	if q := s.QueuedBytes(); q != 0 {
		t.Fatalf("clean session ended: queuedBytes %d", q)
	}
	if n := s.stats.droppedSessionEnd.Load(); n != 3 {
		t.Fatalf("droppedSessionEnd %d, want 3", n)
	}

	exp := seamAttach(t, s, "exp", packet.V5, true, 60, 1, 0)
	load(exp.sess())
	exp.detach()
	s.expireSession(exp.sess())
	if q := s.QueuedBytes(); q != 0 {
		t.Fatalf("expired session: queuedBytes %d", q)
	}
	if s.SessionCount() != 0 {
		t.Fatalf("%d sessions left", s.SessionCount())
	}

	rep := seamAttach(t, s, "rep", packet.V5, true, 60, 1, 0)
	load(rep.sess())
	rep.detach()
	fresh := seamAttach(t, s, "rep", packet.V5, true, 60, 1, 0)
	if fresh.connack.SessionPresent || fresh.sess() == rep.sess() {
		t.Fatal("clean start resumed the session")
	}
	if got := fresh.packets(); len(got) != 0 {
		t.Fatalf("clean start got old messages: %v", got)
	}
	seamCheckIdle(t, s, fresh.sess())
}

// Resumed on a connection with a smaller Receive Maximum, a session sends
// PUBREL for released messages first (they count against the window), then
// what fits of the in-flight messages (DUP), and the rest, with their
// identifiers, as acknowledgements free the window [MQTT-4.4.0-1,
// MQTT-3.3.4-9].
func TestSeamSessionResendSmallerWindow(t *testing.T) {
	s := seamNewServer(t, Options{}, nil)
	sc := seamAttach(t, s, "sub", packet.V5, true, 60, 3, 0)
	sess := sc.sess()
	seamDeliver(s, sess, seamMsg("t", "a", 2), 2, nil)
	seamDeliver(s, sess, seamMsg("t", "b", 1), 1, nil)
	seamDeliver(s, sess, seamMsg("t", "c", 1), 1, nil)
	seamDeliver(s, sess, seamMsg("t", "d", 1), 1, nil)
	seamWantPubs(t, sc.publishes(), "1:a 2:b 3:c")
	sc.ack(packet.PUBREC, 1, 0)
	if got := sc.packets(); len(got) != 1 {
		t.Fatalf("want PUBREL, got %v", got)
	}
	sc.detach()

	sc = seamAttach(t, s, "sub", packet.V5, false, 60, 2, 0)
	got := sc.packets()
	if len(got) != 2 || seamDescribe(got[0]) != "PUBREL{id 1 reason 0x00}" {
		t.Fatalf("resumed: %d packets, first %v", len(got), got)
	}
	if p, ok := got[1].(*packet.Publish); !ok || p.PacketID != 2 || !p.Dup {
		t.Fatalf("resumed: second packet %s, want PUBLISH 2 DUP", seamDescribe(got[1]))
	}
	sc.ack(packet.PUBACK, 2, 0)
	seamWantPubs(t, sc.publishes(), "3:c(dup)")
	sc.ack(packet.PUBCOMP, 1, 0)
	seamWantPubs(t, sc.publishes(), "4:d")
	sc.ack(packet.PUBACK, 3, 0)
	sc.ack(packet.PUBACK, 4, 0)
	seamCheckIdle(t, s, sess)
}

// With a store, a QoS 1/2 message is not sent before its record is
// committed, and it is sent if the commit fails (held in memory only): the
// session never loses it.
func TestSeamSessionPendingUntilCommitted(t *testing.T) {
	st := &seamStore{}
	s := seamNewServer(t, Options{Store: st}, nil)
	sc := seamAttach(t, s, "sub", packet.V5, true, 60, 10, 0)
	sess := sc.sess()

	tx := s.newTxn()
	sess.Deliver(Delivery{Msg: seamMsg("t", "a", 1), QoS: 1}, tx, time.Now().UnixNano())
	if got := sc.publishes(); len(got) != 0 {
		t.Fatalf("sent before its record was committed: %s", seamPubs(got))
	}
	if err := tx.commit(s); err != nil {
		t.Fatal(err)
	}
	seamWantPubs(t, sc.publishes(), "1:a")
	if ops := st.ops(); len(ops) == 0 || !strings.HasPrefix(ops[len(ops)-1], "PutMessage sub ") {
		t.Fatalf("store ops %v", ops)
	}

	st.setFail(errSeamDisk)
	tx = s.newTxn()
	sess.Deliver(Delivery{Msg: seamMsg("t", "b", 1), QoS: 1}, tx, time.Now().UnixNano())
	if err := tx.commit(s); err == nil {
		t.Fatal("commit did not fail")
	}
	seamWantPubs(t, sc.publishes(), "2:b")
	st.setFail(nil)

	sc.ack(packet.PUBACK, 1, 0)
	sc.ack(packet.PUBACK, 2, 0)
	seamCheckIdle(t, s, sess)
	// Removing acknowledged messages is lazy: no fsync waited for.
	if _, noSync, _ := st.counts(); noSync == 0 {
		t.Fatal("acknowledged message removals were committed with a sync")
	}
}
