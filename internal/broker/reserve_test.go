package broker

import "testing"

// Sessions take the server-wide queued-bytes budget in chunks, give back
// what exceeds two chunks of what they hold, and return everything when
// they end; the budget is never exceeded and the exact figure
// (QueuedBytes) is what the messages hold.
func TestQueuedBytesReservation(t *testing.T) {
	s := New(Options{MaxQueuedBytesTotal: 3 * reserveChunk}, nil, nil)
	defer s.Shutdown(t.Context())
	a, b := newSession(s, "a"), newSession(s, "b")
	msg := &Message{Topic: "t", Payload: make([]byte, 1000)}
	size := msg.memSize()
	hold := func(ss *session) *outMsg {
		m := &outMsg{d: Delivery{Msg: msg, QoS: 1}}
		if !ss.holdLocked(m) {
			return nil
		}
		return m
	}
	ma := hold(a)
	if ma == nil || a.reserved != reserveChunk || s.queuedBytes.Load() != reserveChunk {
		t.Fatalf("first hold: reserved %d, server %d; want one chunk", a.reserved, s.queuedBytes.Load())
	}
	// Many holds within the chunk do not touch the server counter.
	var held []*outMsg
	for a.bytes+size <= reserveChunk {
		held = append(held, hold(a))
	}
	if s.queuedBytes.Load() != reserveChunk {
		t.Fatalf("holds within the chunk changed the server counter: %d", s.queuedBytes.Load())
	}
	// b takes the rest of the budget in chunks, then exactly what is left.
	var bHeld []*outMsg
	for {
		m := hold(b)
		if m == nil {
			break
		}
		bHeld = append(bHeld, m)
	}
	if got := s.queuedBytes.Load(); got > 3*reserveChunk {
		t.Fatalf("budget exceeded: %d > %d", got, 3*reserveChunk)
	}
	if s.stats.droppedQueueBytes.Load() != 1 {
		t.Fatalf("%d drops counted, want 1", s.stats.droppedQueueBytes.Load())
	}
	if got, want := s.QueuedBytes(), a.bytes+b.bytes; got != 0 && got != want {
		t.Fatalf("QueuedBytes %d, want %d", got, want)
	}
	for _, m := range bHeld {
		b.releaseLocked(m)
	}
	if b.bytes != 0 || b.reserved > 2*reserveChunk {
		t.Fatalf("after releasing everything b holds %d and keeps %d reserved", b.bytes, b.reserved)
	}
	b.releaseAllLocked()
	a.releaseLocked(ma)
	for _, m := range held {
		a.releaseLocked(m)
	}
	a.releaseAllLocked()
	if got := s.queuedBytes.Load(); got != 0 {
		t.Fatalf("server counter %d after both sessions ended, want 0", got)
	}
}
