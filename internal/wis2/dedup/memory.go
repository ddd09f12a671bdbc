package dedup

import (
	"container/heap"
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// MemoryOptions configure NewMemory.
type MemoryOptions struct {
	// MaxEntries bounds the entries held (leases and published ids);
	// default 1,000,000. When the store is full, the entry closest to
	// expiry is dropped to make room (counted in
	// isobar_wis2_dedup_evictions_total): a later copy of that id may then
	// be published again, a duplicate but never a loss.
	MaxEntries int
	// SweepInterval is how often a single background goroutine removes
	// expired entries; default 1s. Every call also removes a few, so a
	// busy store stays clean between sweeps. Negative: no goroutine.
	SweepInterval time.Duration
	// Now is the clock (tests); default time.Now.
	Now func() time.Time

	Log        *slog.Logger
	Registerer prometheus.Registerer // may be nil
}

// DefaultMaxEntries is MemoryOptions.MaxEntries' default.
const DefaultMaxEntries = 1_000_000

// sweepPerCall is how many expired entries a call removes on its way,
// bounded so that no single call pays for a large backlog.
const sweepPerCall = 8

// sweepBatch is how many expired entries the sweeper removes per hold of
// the lock, so that calls are not stalled behind a long sweep.
const sweepBatch = 4096

// Memory is a Store for a single node: the same semantics as Redis, in
// process. Entries live in a map and in a min-heap ordered by expiry, so
// that expired entries (and, when full, the entry closest to expiry) are
// found without scanning and without a timer or goroutine per entry.
type Memory struct {
	max   int
	now   func() time.Time
	log   *slog.Logger
	m     *metrics
	base  time.Time // expiries are durations since base (monotonic)
	stop  chan struct{}
	swept sync.WaitGroup

	mu     sync.Mutex
	items  map[string]*memEntry
	byExp  expHeap
	closed bool
}

type memEntry struct {
	id        string
	token     Token
	published bool
	exp       time.Duration // since Memory.base
	index     int           // in byExp
}

// NewMemory returns a memory store. A metrics registration error (for
// example the same Registerer used twice) is logged and the store then
// runs without metrics.
func NewMemory(o MemoryOptions) *Memory {
	if o.MaxEntries <= 0 {
		o.MaxEntries = DefaultMaxEntries
	}
	if o.SweepInterval == 0 {
		o.SweepInterval = time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(o.Registerer, "memory")
	if err != nil {
		o.Log.Warn("wis2 dedup: memory store runs without metrics", "err", err)
	}
	s := &Memory{
		max:   o.MaxEntries,
		now:   o.Now,
		log:   o.Log,
		m:     m,
		base:  o.Now(),
		stop:  make(chan struct{}),
		items: make(map[string]*memEntry),
	}
	if o.SweepInterval > 0 {
		s.swept.Add(1)
		go s.sweeper(o.SweepInterval)
	}
	return s
}

func (s *Memory) clock() time.Duration { return s.now().Sub(s.base) }

// Claim implements Store.
func (s *Memory) Claim(ctx context.Context, id string, lease time.Duration) (Result, Token, error) {
	start := time.Now()
	r, t, err := s.claim(ctx, id, lease)
	s.m.claimDone(r, err, start)
	return r, t, err
}

func (s *Memory) claim(ctx context.Context, id string, lease time.Duration) (Result, Token, error) {
	if err := checkID(id); err != nil {
		return 0, "", err
	}
	if err := checkDuration("lease", lease); err != nil {
		return 0, "", err
	}
	if err := ctx.Err(); err != nil {
		return 0, "", err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, "", ErrClosed
	}
	now := s.clock()
	s.sweepLocked(now, sweepPerCall)
	if e := s.lookupLocked(id, now); e != nil {
		if e.published {
			return Published, "", nil
		}
		return Leased, "", nil
	}
	t := newToken()
	s.insertLocked(&memEntry{id: id, token: t, exp: now + lease})
	return Claimed, t, nil
}

// Confirm implements Store.
func (s *Memory) Confirm(ctx context.Context, id string, t Token, ttl time.Duration) error {
	start := time.Now()
	err := s.confirm(ctx, id, t, ttl)
	s.m.done(opConfirm, resultOf(err), start)
	return err
}

func (s *Memory) confirm(ctx context.Context, id string, t Token, ttl time.Duration) error {
	if err := checkID(id); err != nil {
		return err
	}
	if err := checkToken(t); err != nil {
		return err
	}
	if err := checkDuration("ttl", ttl); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	now := s.clock()
	e := s.lookupLocked(id, now)
	switch {
	case e == nil:
		// t's lease expired and nobody claimed the id since: the message was
		// published all the same, so remember it.
		s.insertLocked(&memEntry{id: id, token: t, published: true, exp: now + ttl})
	case e.token == t:
		e.published = true
		e.exp = now + ttl
		heap.Fix(&s.byExp, e.index)
	default:
		return ErrNotHolder
	}
	return nil
}

// Release implements Store.
func (s *Memory) Release(ctx context.Context, id string, t Token) error {
	start := time.Now()
	err := s.release(ctx, id, t)
	s.m.done(opRelease, resultOf(err), start)
	return err
}

func (s *Memory) release(ctx context.Context, id string, t Token) error {
	if err := checkID(id); err != nil {
		return err
	}
	if err := checkToken(t); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	e := s.lookupLocked(id, s.clock())
	switch {
	case e == nil:
		return nil
	case e.token == t && !e.published:
		s.removeLocked(e)
		return nil
	}
	return ErrNotHolder
}

// Len returns the number of entries held, expired ones not yet swept
// included.
func (s *Memory) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.items)
}

// Close stops the sweeper and drops every entry.
func (s *Memory) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.items = nil
	s.byExp = nil
	s.mu.Unlock()
	close(s.stop)
	s.swept.Wait()
	s.m.unregister()
	return nil
}

// lookupLocked returns id's live entry, removing it when it has expired.
func (s *Memory) lookupLocked(id string, now time.Duration) *memEntry {
	e := s.items[id]
	if e != nil && e.exp <= now {
		s.removeLocked(e)
		return nil
	}
	return e
}

func (s *Memory) insertLocked(e *memEntry) {
	for len(s.items) >= s.max && len(s.byExp) > 0 {
		s.removeLocked(s.byExp[0])
		s.m.evicted()
	}
	s.items[e.id] = e
	heap.Push(&s.byExp, e)
}

func (s *Memory) removeLocked(e *memEntry) {
	heap.Remove(&s.byExp, e.index)
	delete(s.items, e.id)
}

// sweepLocked removes up to n expired entries and reports whether more
// may remain.
func (s *Memory) sweepLocked(now time.Duration, n int) bool {
	for ; n > 0; n-- {
		if len(s.byExp) == 0 || s.byExp[0].exp > now {
			return false
		}
		s.removeLocked(s.byExp[0])
	}
	return true
}

func (s *Memory) sweeper(every time.Duration) {
	defer s.swept.Done()
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-tick.C:
		}
		for more := true; more; {
			s.mu.Lock()
			if s.closed {
				s.mu.Unlock()
				return
			}
			more = s.sweepLocked(s.clock(), sweepBatch)
			s.mu.Unlock()
		}
	}
}

// expHeap is a min-heap of entries by expiry.
type expHeap []*memEntry

func (h expHeap) Len() int           { return len(h) }
func (h expHeap) Less(i, j int) bool { return h[i].exp < h[j].exp }
func (h expHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index = i
	h[j].index = j
}
func (h *expHeap) Push(x any) {
	e := x.(*memEntry)
	e.index = len(*h)
	*h = append(*h, e)
}
func (h *expHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	e.index = -1
	return e
}
