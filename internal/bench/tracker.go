package bench

// WindowSize is how many sequence numbers behind the highest one seen a
// Tracker remembers individually, per publisher. A message that arrives
// later than that cannot be told apart from a duplicate; it is counted as
// out of order (and in Late) and as received. MQTT keeps the order of the
// messages of one publisher on one topic towards one subscriber (MQTT 5.0
// section 4.6), so anything behind the highest sequence number already
// points at a broker fault; the window only decides how precisely such a
// fault is classified.
const WindowSize = 1 << 13

const windowWords = WindowSize / 64

// pubTrack is what a Tracker knows about one publisher.
type pubTrack struct {
	next uint64   // highest sequence number seen + 1 (0: none yet)
	bits []uint64 // ring: bit s%WindowSize set = s seen, for s in [next-WindowSize, next)
}

// Tracker counts the messages one receiving unit got from a contiguous range
// of publishers: a plain subscriber, or a whole shared-subscription group
// (whose members each get a part of the stream). It is not safe for
// concurrent use; a group's members share one Tracker behind a mutex.
type Tracker struct {
	lo   uint32 // first publisher index expected
	pubs []pubTrack

	Unique     int64 // distinct messages received from expected publishers
	Duplicates int64 // messages received again (same publisher and sequence)
	OutOfOrder int64 // messages with a sequence number below one already received
	Late       int64 // out-of-order messages older than the window (dup status unknown)
	Unexpected int64 // messages from publishers outside the range, or without a header
}

// NewTracker returns a tracker expecting messages from publishers lo..lo+n-1.
func NewTracker(lo uint32, n int) *Tracker {
	return &Tracker{lo: lo, pubs: make([]pubTrack, n)}
}

// Publishers returns the range of publisher indexes the tracker expects.
func (t *Tracker) Publishers() (lo uint32, n int) { return t.lo, len(t.pubs) }

// Observe accounts for one received message. It reports whether the message
// was new (not a duplicate and from an expected publisher).
func (t *Tracker) Observe(pub uint32, seq uint64) bool {
	i := pub - t.lo
	if pub < t.lo || int(i) >= len(t.pubs) {
		t.Unexpected++
		return false
	}
	p := &t.pubs[i]
	if p.bits == nil {
		p.bits = make([]uint64, windowWords)
	}
	if seq >= p.next {
		// In order (seq == next) or after a gap: the ring slots of the
		// skipped sequence numbers still hold old ones; clear them.
		if gap := seq - p.next; gap >= WindowSize {
			clear(p.bits)
		} else {
			for s := p.next; s < seq; s++ {
				p.bits[(s/64)%windowWords] &^= 1 << (s % 64)
			}
		}
		p.bits[(seq/64)%windowWords] |= 1 << (seq % 64)
		p.next = seq + 1
		t.Unique++
		return true
	}
	if p.next-seq > WindowSize {
		t.OutOfOrder++
		t.Late++
		t.Unique++
		return true
	}
	w, b := (seq/64)%windowWords, uint64(1)<<(seq%64)
	if p.bits[w]&b != 0 {
		t.Duplicates++
		return false
	}
	p.bits[w] |= b
	t.OutOfOrder++
	t.Unique++
	return true
}

// Lost returns how many of the expected messages never arrived. sent[i] is
// the number of messages publisher i sent (for the whole slice of
// publishers of the run).
func (t *Tracker) Lost(sent []int64) int64 {
	var want int64
	for i := range t.pubs {
		if j := int(t.lo) + i; j < len(sent) {
			want += sent[j]
		}
	}
	if lost := want - t.Unique; lost > 0 {
		return lost
	}
	return 0
}

// Expected returns how many messages the tracker should receive given the
// per-publisher sent counts.
func (t *Tracker) Expected(sent []int64) int64 {
	var want int64
	for i := range t.pubs {
		if j := int(t.lo) + i; j < len(sent) {
			want += sent[j]
		}
	}
	return want
}
