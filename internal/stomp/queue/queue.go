// Package queue holds the STOMP gateway's point-to-point queues: FIFO
// within priority, each message to exactly one consumer whose selector
// matches, acknowledgements, redelivery with a dead-letter queue, expiry,
// bounds, and optional durability in a Pebble database of its own.
//
// Concurrency: a Manager has one lock for its map of queues and one lock
// per queue (always taken in that order). Deliveries are made by a small
// pool of workers, one queue at a time per worker, calling
// Consumer.Deliver with no lock held. A background goroutine expires
// messages, forgets idle queues and syncs the database. Close stops them
// all.
package queue

import (
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/isobar-mq/isobar/internal/stomp/selector"
)

// Header is one application header of a message.
type Header struct{ Name, Value string }

// Message is a queued message. Send takes ownership of it: the caller
// must not change it afterwards. A Consumer gets its own copy of the
// struct; Headers and Body are shared and must not be modified.
type Message struct {
	Headers    []Header // application headers as sent
	Body       []byte
	Expires    int64 // absolute unix milliseconds; 0 = never. Applies while waiting in the queue too.
	Priority   uint8 // 0..9 (larger values count as 9), default 4; higher is delivered first, FIFO within a priority
	Persistent bool  // survives a restart when Options.Dir is set

	// Set by the Manager:
	ID          uint64 // unique in the manager, increasing in send order (survives restart)
	Timestamp   int64  // unix ms when sent
	Redelivered bool   // delivered before and not acknowledged
	Deliveries  int    // how many times delivered so far
}

// Options configure Open.
type Options struct {
	Dir             string        // "" = memory only; else a directory for a Pebble database of its own
	MaxMessages     int           // per queue, default 100000
	MaxBytes        int64         // per queue (bodies+headers), default 64 MiB
	MaxRedeliveries int           // NACKs/abandoned deliveries before the message moves to queue "ActiveMQ.DLQ"; default (also for 0) 6; <0 = never
	IdleTimeout     time.Duration // a queue with no consumer and no message is forgotten after this; default 5m
	Log             *slog.Logger
	Registerer      prometheus.Registerer // may be nil
	Now             func() time.Time      // nil = time.Now

	// For tests.
	diskFree    func(dir string) (uint64, error) // default: the file system's free space
	minFree     int64                            // free-space floor, default defaultMinFree; <0 = none
	ballastSize int64                            // default defaultBallast; <0 = none
	tick        time.Duration                    // sweep period, default from IdleTimeout
}

// DLQ is the name of the dead-letter queue.
const DLQ = "ActiveMQ.DLQ"

// MaxNameLength is the longest queue name, in bytes.
const MaxNameLength = 1024

// Defaults of Options.
const (
	DefaultMaxMessages     = 100000
	DefaultMaxBytes        = 64 << 20
	DefaultMaxRedeliveries = 6
	DefaultIdleTimeout     = 5 * time.Minute
)

var (
	// ErrFull is returned by Send when the queue is at its bounds.
	ErrFull = errors.New("queue: queue full")
	// ErrClosed is returned after Manager.Close.
	ErrClosed = errors.New("queue: closed")
	// ErrBadName is returned for an empty name, one longer than
	// MaxNameLength bytes, or one with a NUL byte or invalid UTF-8.
	ErrBadName = errors.New("queue: invalid queue name")
)

// sweepBudget bounds the messages the sweep looks at per tick, across
// all queues.
const sweepBudget = 20000

// dispatchBurst is how many messages a worker delivers from one queue
// before giving the other queues a turn.
const dispatchBurst = 64

// Manager holds the queues.
type Manager struct {
	o   Options
	log *slog.Logger
	now func() time.Time
	db  *durable // nil: memory only

	mu     sync.Mutex
	queues map[string]*queue
	closed bool

	nextID atomic.Uint64 // the last ID assigned
	total  atomic.Int64  // messages in all queues

	// Work for the delivery workers: queues with something to deliver.
	wmu   sync.Mutex
	wcond *sync.Cond
	work  []*queue
	wstop bool

	// The sweep's position: a snapshot of the queues and an index in it.
	sweepList []*queue
	sweepIdx  int

	stop chan struct{}
	wg   sync.WaitGroup

	met *metrics
}

// Open starts a Manager; with o.Dir it opens (or creates) the database
// there and loads the persistent messages back into their queues.
func Open(o Options) (*Manager, error) {
	if o.MaxMessages <= 0 {
		o.MaxMessages = DefaultMaxMessages
	}
	if o.MaxBytes <= 0 {
		o.MaxBytes = DefaultMaxBytes
	}
	if o.MaxRedeliveries == 0 {
		o.MaxRedeliveries = DefaultMaxRedeliveries
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = DefaultIdleTimeout
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.tick <= 0 {
		o.tick = min(max(o.IdleTimeout/4, 10*time.Millisecond), time.Second)
	}
	m := &Manager{o: o, log: o.Log, now: o.Now, queues: make(map[string]*queue), stop: make(chan struct{})}
	m.wcond = sync.NewCond(&m.wmu)
	met, err := newMetrics(o.Registerer, m)
	if err != nil {
		return nil, err
	}
	m.met = met
	if o.Dir != "" {
		db, err := openDurable(o, m.log)
		if err != nil {
			met.unregister()
			return nil, err
		}
		m.db = db
		n := 0
		err = db.load(func(name string, msg *Message) {
			q := m.queueLocked(name)
			e := newEntry(msg)
			q.n++
			q.bytes += e.size
			q.main[e.prio].insertFromTail(e)
			n++
		})
		if err != nil {
			_ = db.close()
			met.unregister()
			return nil, err
		}
		m.nextID.Store(db.highID)
		db.nextID = m.nextID.Load
		m.total.Store(int64(n))
		if n > 0 {
			m.log.Info("queued messages restored", "messages", n, "queues", len(m.queues))
		}
	}
	workers := max(2, min(runtime.GOMAXPROCS(0), 8))
	m.wg.Add(workers + 1)
	for range workers {
		go m.worker()
	}
	go m.background()
	return m, nil
}

// Close stops the workers and the background goroutine and closes the
// database. Subscriptions stop receiving; unacknowledged persistent
// messages stay in the database and come back on the next Open.
func (m *Manager) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	m.mu.Unlock()
	close(m.stop)
	m.wmu.Lock()
	m.wstop = true
	m.wcond.Broadcast()
	m.wmu.Unlock()
	m.wg.Wait()
	m.met.unregister()
	if m.db != nil {
		return m.db.close()
	}
	return nil
}

func validName(name string) bool {
	return name != "" && len(name) <= MaxNameLength && utf8.ValidString(name) && strings.IndexByte(name, 0) < 0
}

// queueLocked returns the named queue, creating it; m.mu is held (or
// Open is running alone).
func (m *Manager) queueLocked(name string) *queue {
	q := m.queues[name]
	if q == nil {
		q = &queue{name: name, m: m}
		m.queues[name] = q
	}
	return q
}

// lockQueue returns the named queue, created if missing, with its lock
// held, or ErrClosed.
func (m *Manager) lockQueue(name string) (*queue, error) {
	for {
		m.mu.Lock()
		if m.closed {
			m.mu.Unlock()
			return nil, ErrClosed
		}
		q := m.queueLocked(name)
		q.mu.Lock()
		m.mu.Unlock()
		if !q.deleted {
			return q, nil
		}
		q.mu.Unlock()
	}
}

func (m *Manager) nowMs() int64 { return m.now().UnixMilli() }

// Send appends msg to the named queue (created on first use). With Dir
// set and msg.Persistent it returns only once the message is durable
// (fsync; concurrent senders share fsyncs). ErrFull when the queue is at
// its bounds. A message that has already expired is dropped (counted) and
// Send returns nil.
func (m *Manager) Send(name string, msg *Message) error {
	if !validName(name) {
		return ErrBadName
	}
	if msg == nil {
		return errors.New("queue: nil message")
	}
	own := *msg
	msg = &own
	msg.Priority = min(msg.Priority, 9)
	msg.Redelivered, msg.Deliveries = false, 0
	now := m.nowMs()
	msg.Timestamp = now
	e := newEntry(msg)
	q, err := m.lockQueue(name)
	if err != nil {
		return err
	}
	if msg.Expires != 0 && msg.Expires <= now {
		q.expired++
		q.mu.Unlock()
		m.met.expired.Inc()
		return nil
	}
	if q.n+1 > m.o.MaxMessages || q.bytes+e.size > m.o.MaxBytes {
		q.dropped++
		q.mu.Unlock()
		m.met.dropped.WithLabelValues("full").Inc()
		return ErrFull
	}
	// Reserve the room and the ID; the message becomes visible only once
	// it is durable, so no consumer can see a message Send then fails.
	q.n++
	q.bytes += e.size
	msg.ID = m.nextID.Add(1)
	q.mu.Unlock()

	durable := m.db != nil && msg.Persistent
	if durable {
		if err := m.db.put(name, msg); err != nil {
			q.mu.Lock()
			q.n--
			q.bytes -= e.size
			q.mu.Unlock()
			m.met.dropped.WithLabelValues("store_error").Inc()
			return err
		}
	}
	q.mu.Lock()
	if q.deleted {
		// Deleted while the message was being written.
		q.mu.Unlock()
		if durable {
			m.db.remove(name, msg.ID)
		}
		m.met.dropped.WithLabelValues("deleted").Inc()
		return nil
	}
	q.main[e.prio].insertFromTail(e)
	q.enqueued++
	m.total.Add(1)
	m.met.enqueued.Inc()
	q.scheduleLocked()
	q.mu.Unlock()
	return nil
}

// Delete drops a queue and its messages (temporary queues when their
// connection closes). Its subscriptions stop receiving; their Ack and
// Nack return false.
func (m *Manager) Delete(name string) {
	m.mu.Lock()
	q := m.queues[name]
	if q == nil {
		m.mu.Unlock()
		return
	}
	delete(m.queues, name)
	q.mu.Lock()
	m.mu.Unlock()
	q.deleted = true
	n := 0
	for p := range q.main {
		for _, l := range []*list{&q.main[p], &q.parked[p]} {
			for e := l.head; e != nil; {
				nx := e.next
				q.unlink(e)
				n++
				e = nx
			}
		}
	}
	for _, s := range q.subs {
		n += len(s.inflight)
		clear(s.inflight)
		s.closed = true
	}
	q.subs = nil
	q.n, q.bytes = 0, 0
	q.mu.Unlock()
	m.total.Add(-int64(n))
	if n > 0 {
		m.met.dropped.WithLabelValues("deleted").Add(float64(n))
	}
	if m.db != nil {
		m.db.deleteQueue(name)
	}
}

// QueueInfo describes a queue.
type QueueInfo struct {
	Name                                 string
	Messages                             int   // waiting and unacknowledged
	Bytes                                int64 // of those messages
	Consumers                            int
	Enqueued, Dequeued, Expired, Dropped uint64
}

// Queues lists the queues, by name.
func (m *Manager) Queues() []QueueInfo {
	m.mu.Lock()
	qs := make([]*queue, 0, len(m.queues))
	for _, q := range m.queues {
		qs = append(qs, q)
	}
	m.mu.Unlock()
	out := make([]QueueInfo, 0, len(qs))
	for _, q := range qs {
		q.mu.Lock()
		out = append(out, QueueInfo{Name: q.name, Messages: q.n, Bytes: q.bytes, Consumers: len(q.subs),
			Enqueued: q.enqueued, Dequeued: q.dequeued, Expired: q.expired, Dropped: q.dropped})
		q.mu.Unlock()
	}
	slices.SortFunc(out, func(a, b QueueInfo) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Consumer receives deliveries. Deliver is called from the manager's
// goroutines, never while holding a lock the consumer could need, and
// must not block: it returns false if the consumer cannot take the
// message now (its window is full); the manager offers again after
// Subscription.Ready. Deliveries to one subscription are made one at a
// time, in order.
type Consumer interface {
	Deliver(queue string, msg *Message) bool
}

// Subscription is a consumer of one queue.
type Subscription struct {
	q      *queue
	sel    *selector.Selector
	window int
	c      Consumer

	// Guarded by q.mu.
	inflight map[uint64]*entry
	blocked  bool   // Deliver returned false: wait for Ready
	readyGen uint64 // Ready calls, to notice one racing with a refusal
	closed   bool
}

// Subscribe adds a consumer. window is the number of unacknowledged
// messages it may hold (0 = unlimited). A message goes to exactly one
// consumer whose selector matches (round robin among those with room); a
// message no consumer's selector matches waits for one (never given to
// another).
func (m *Manager) Subscribe(name string, sel *selector.Selector, window int, c Consumer) (*Subscription, error) {
	if !validName(name) {
		return nil, ErrBadName
	}
	if c == nil {
		return nil, errors.New("queue: nil consumer")
	}
	if window < 0 {
		window = 0
	}
	q, err := m.lockQueue(name)
	if err != nil {
		return nil, err
	}
	defer q.mu.Unlock()
	s := &Subscription{q: q, sel: sel, window: window, c: c, inflight: make(map[uint64]*entry)}
	q.subs = append(q.subs, s)
	q.idleSince = time.Time{}
	// Messages no earlier consumer wanted may be for this one.
	for p := range q.parked {
		var back []*entry
		for e := q.parked[p].head; e != nil; {
			nx := e.next
			if sel.Match(e.get) {
				q.unlink(e)
				back = append(back, e)
			}
			e = nx
		}
		q.main[p].merge(back)
	}
	q.scheduleLocked()
	return s, nil
}

// takeLocked removes and returns the message id delivered to s and not
// yet acknowledged or given back (nil if there is none, or s is closed);
// q.mu is held.
func (s *Subscription) takeLocked(id uint64) *entry {
	e := s.inflight[id]
	if e == nil || s.closed {
		return nil
	}
	delete(s.inflight, id)
	return e
}

// Ack removes a delivered message (durably, with the next fsync of the
// database, at most a sweep period later). It returns false if id is not
// a message delivered to s and not yet acknowledged or given back.
func (s *Subscription) Ack(id uint64) bool {
	q := s.q
	q.mu.Lock()
	e := s.takeLocked(id)
	if e == nil {
		q.mu.Unlock()
		return false
	}
	q.n--
	q.bytes -= e.size
	q.dequeued++
	q.scheduleLocked()
	q.mu.Unlock()
	m := q.m
	m.total.Add(-1)
	m.met.dequeued.Inc()
	if m.db != nil && e.msg.Persistent {
		m.db.remove(q.name, id)
	}
	return true
}

// Nack gives a delivered message back: it is offered again (Redelivered
// set), or moved to the dead-letter queue once it was delivered more than
// MaxRedeliveries times. It returns false if id is not a message
// delivered to s and not yet acknowledged or given back.
func (s *Subscription) Nack(id uint64) bool {
	q := s.q
	q.mu.Lock()
	e := s.takeLocked(id)
	if e == nil {
		q.mu.Unlock()
		return false
	}
	dead := q.giveBack(e)
	q.scheduleLocked()
	q.mu.Unlock()
	q.m.deadLetter(q, dead)
	return true
}

// Reject refuses a delivered message as ActiveMQ treats a STOMP NACK (a
// poison acknowledgement): it is never offered again; a persistent one
// moves to the dead-letter queue, a non-persistent one is dropped
// (counted). It returns false if id is not a message delivered to s and
// not yet acknowledged or given back.
func (s *Subscription) Reject(id uint64) bool {
	q := s.q
	q.mu.Lock()
	e := s.takeLocked(id)
	if e == nil {
		q.mu.Unlock()
		return false
	}
	q.n--
	q.bytes -= e.size
	q.scheduleLocked()
	if e.msg.Persistent && q.name != DLQ {
		q.mu.Unlock()
		q.m.deadLetter(q, []*entry{e})
		return true
	}
	q.dropped++
	q.mu.Unlock()
	q.m.total.Add(-1)
	q.m.met.dropped.WithLabelValues("rejected").Inc()
	if q.m.db != nil && e.msg.Persistent {
		q.m.db.remove(q.name, e.msg.ID)
	}
	return true
}

// Ready tells the manager the consumer has room again after a Deliver
// that returned false.
func (s *Subscription) Ready() {
	q := s.q
	q.mu.Lock()
	s.readyGen++
	if s.blocked {
		s.blocked = false
	}
	if !s.closed {
		q.scheduleLocked()
	}
	q.mu.Unlock()
}

// Close removes the subscription: its unacknowledged messages go back to
// their queue (Redelivered set; to the dead-letter queue past
// MaxRedeliveries).
func (s *Subscription) Close() {
	q := s.q
	q.mu.Lock()
	if s.closed {
		q.mu.Unlock()
		return
	}
	s.closed = true
	if i := slices.Index(q.subs, s); i >= 0 {
		q.subs = slices.Delete(q.subs, i, i+1)
		if q.rr > i {
			q.rr--
		}
	}
	ids := make([]uint64, 0, len(s.inflight))
	for id := range s.inflight {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	var dead []*entry
	for _, id := range ids {
		dead = append(dead, q.giveBack(s.inflight[id])...)
	}
	clear(s.inflight)
	q.scheduleLocked()
	q.mu.Unlock()
	q.m.deadLetter(q, dead)
}

// queue is one named queue.
type queue struct {
	name string
	m    *Manager

	mu        sync.Mutex
	main      [10]list // waiting messages by priority
	parked    [10]list // waiting messages no consumer's selector matched
	n         int      // messages: waiting, in flight and being written
	bytes     int64
	subs      []*Subscription
	rr        int // next subscription to try first
	deleted   bool
	sched     bool // in the workers' list or being dispatched
	idleSince time.Time

	// The sweep's position in this queue.
	sweepList int    // index into main then parked (0..19)
	sweepAt   *entry // next entry to look at, nil = start of sweepList

	enqueued, dequeued, expired, dropped uint64
}

// entry is a message in a queue.
type entry struct {
	msg        *Message
	size       int64
	prio       uint8
	prev, next *entry
	in         *list // nil while in flight
}

func newEntry(msg *Message) *entry {
	size := int64(len(msg.Body))
	for _, h := range msg.Headers {
		size += int64(len(h.Name) + len(h.Value))
	}
	return &entry{msg: msg, size: size, prio: min(msg.Priority, 9)}
}

// get reads a header for selectors: the application headers, then the
// fields the gateway takes out of the headers.
func (e *entry) get(name string) (string, bool) {
	for _, h := range e.msg.Headers {
		if h.Name == name {
			return h.Value, true
		}
	}
	switch name {
	case "priority":
		return strconv.Itoa(int(e.msg.Priority)), true
	case "persistent":
		return strconv.FormatBool(e.msg.Persistent), true
	case "expires":
		if e.msg.Expires != 0 {
			return strconv.FormatInt(e.msg.Expires, 10), true
		}
	case "timestamp":
		return strconv.FormatInt(e.msg.Timestamp, 10), true
	}
	return "", false
}

func (e *entry) expiredAt(now int64) bool { return e.msg.Expires != 0 && e.msg.Expires <= now }

// unlink removes e from its list, keeping the sweep cursor valid.
func (q *queue) unlink(e *entry) {
	if q.sweepAt == e {
		q.sweepAt = e.next
		if q.sweepAt == nil {
			q.sweepList++
		}
	}
	e.in.remove(e)
}

// scheduleLocked hands the queue to a worker if it is not already.
func (q *queue) scheduleLocked() {
	if q.sched || q.deleted {
		return
	}
	q.sched = true
	m := q.m
	m.wmu.Lock()
	m.work = append(m.work, q)
	m.wcond.Signal()
	m.wmu.Unlock()
}

// giveBack puts an unacknowledged message back at its place, or returns
// it (as a one-element slice) when it must go to the dead-letter queue;
// q.mu is held.
func (q *queue) giveBack(e *entry) []*entry {
	max := q.m.o.MaxRedeliveries
	if max >= 0 && e.msg.Deliveries > max {
		q.n--
		q.bytes -= e.size
		return []*entry{e}
	}
	e.msg.Redelivered = true
	q.main[e.prio].insertFromHead(e)
	return nil
}

// deadLetter moves messages that were redelivered too often from src
// (already removed from it) to the dead-letter queue. Messages of the
// dead-letter queue itself are dropped.
func (m *Manager) deadLetter(src *queue, dead []*entry) {
	if len(dead) == 0 {
		return
	}
	src.mu.Lock()
	src.dropped += uint64(len(dead))
	src.mu.Unlock()
	m.total.Add(-int64(len(dead)))
	if src.name == DLQ {
		for _, e := range dead {
			m.log.Warn("message of the dead-letter queue redelivered too often, dropped", "id", e.msg.ID)
			if m.db != nil && e.msg.Persistent {
				m.db.remove(src.name, e.msg.ID)
			}
		}
		m.met.dropped.WithLabelValues("redeliveries").Add(float64(len(dead)))
		return
	}
	q, err := m.lockQueue(DLQ)
	if err != nil {
		// Closed: persistent messages stay in the database under their
		// queue and come back on the next Open.
		return
	}
	var moved, full []*entry
	for _, e := range dead {
		if q.n+1 > m.o.MaxMessages || q.bytes+e.size > m.o.MaxBytes {
			full = append(full, e)
			continue
		}
		msg := *e.msg
		msg.Headers = append(slices.Clip(msg.Headers), Header{Name: "original-destination", Value: "/queue/" + src.name})
		msg.Deliveries, msg.Redelivered = 0, true
		ne := newEntry(&msg)
		q.n++
		q.bytes += ne.size
		q.main[ne.prio].insertFromTail(ne)
		q.enqueued++
		moved = append(moved, ne)
	}
	q.dropped += uint64(len(full))
	if len(moved) > 0 {
		q.scheduleLocked()
	}
	q.mu.Unlock()
	m.total.Add(int64(len(moved)))
	m.met.dropped.WithLabelValues("dlq").Add(float64(len(moved)))
	m.met.enqueued.Add(float64(len(moved)))
	if len(full) > 0 {
		m.met.dropped.WithLabelValues("dlq_full").Add(float64(len(full)))
		m.log.Warn("dead-letter queue full, messages dropped", "queue", src.name, "messages", len(full))
	}
	if m.db != nil {
		m.db.move(src.name, DLQ, moved, full, dead)
	}
}

// worker delivers messages of scheduled queues.
func (m *Manager) worker() {
	defer m.wg.Done()
	for {
		m.wmu.Lock()
		for len(m.work) == 0 && !m.wstop {
			m.wcond.Wait()
		}
		if m.wstop {
			m.wmu.Unlock()
			return
		}
		q := m.work[0]
		m.work[0] = nil
		m.work = m.work[1:]
		m.wmu.Unlock()
		m.dispatch(q)
	}
}

// dispatch delivers messages of q until nothing can be delivered, or for
// dispatchBurst messages, then requeues q behind the other queues.
func (m *Manager) dispatch(q *queue) {
	for range dispatchBurst {
		select {
		case <-m.stop:
			q.mu.Lock()
			q.sched = false
			q.mu.Unlock()
			return
		default:
		}
		q.mu.Lock()
		e, s, gen, expired := q.next(m.nowMs())
		if e == nil {
			q.sched = false
			q.mu.Unlock()
			m.expire(q, expired)
			return
		}
		msg := *e.msg
		q.mu.Unlock()
		m.expire(q, expired)
		if s.c.Deliver(q.name, &msg) {
			continue
		}
		q.mu.Lock()
		if s.inflight[e.msg.ID] == e && !s.closed {
			delete(s.inflight, e.msg.ID)
			e.msg.Deliveries--
			q.main[e.prio].insertFromHead(e)
			if s.readyGen == gen {
				s.blocked = true
			}
		}
		q.mu.Unlock()
	}
	m.wmu.Lock()
	m.work = append(m.work, q)
	m.wcond.Signal()
	m.wmu.Unlock()
}

func (s *Subscription) room() bool {
	return !s.blocked && (s.window == 0 || len(s.inflight) < s.window)
}

// next picks the next message to deliver and its consumer, marking it in
// flight; nil when there is none. Expired messages met on the way are
// removed and returned. Messages no consumer's selector matches are
// parked. q.mu is held.
func (q *queue) next(now int64) (e *entry, s *Subscription, gen uint64, expired []*entry) {
	if q.deleted {
		return nil, nil, 0, nil
	}
	ns := len(q.subs)
	anyRoom := false
	for _, s := range q.subs {
		if s.room() {
			anyRoom = true
			break
		}
	}
	if !anyRoom {
		return nil, nil, 0, nil
	}
	for p := 9; p >= 0; p-- {
		for e := q.main[p].head; e != nil; {
			nx := e.next
			if e.expiredAt(now) {
				q.unlink(e)
				q.n--
				q.bytes -= e.size
				expired = append(expired, e)
				e = nx
				continue
			}
			for k := range ns {
				i := (q.rr + k) % ns
				s := q.subs[i]
				if s.room() && s.sel.Match(e.get) {
					q.rr = (i + 1) % ns
					q.unlink(e)
					e.msg.Deliveries++
					s.inflight[e.msg.ID] = e
					return e, s, s.readyGen, expired
				}
			}
			// No consumer with room wants it: if none at all does, park
			// it until a new consumer comes.
			wanted := false
			for _, s := range q.subs {
				if !s.room() && s.sel.Match(e.get) {
					wanted = true
					break
				}
			}
			if !wanted {
				q.unlink(e)
				q.parked[p].insertFromTail(e)
			}
			e = nx
		}
	}
	return nil, nil, 0, expired
}

// expire accounts for messages next or the sweep removed as expired.
func (m *Manager) expire(q *queue, expired []*entry) {
	if len(expired) == 0 {
		return
	}
	q.mu.Lock()
	q.expired += uint64(len(expired))
	q.mu.Unlock()
	m.total.Add(-int64(len(expired)))
	m.met.expired.Add(float64(len(expired)))
	if m.db != nil {
		for _, e := range expired {
			if e.msg.Persistent {
				m.db.remove(q.name, e.msg.ID)
			}
		}
	}
}

// background runs the periodic sweep until Close.
func (m *Manager) background() {
	defer m.wg.Done()
	t := time.NewTicker(m.o.tick)
	defer t.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-t.C:
			m.sweep()
			if m.db != nil {
				m.db.tick()
			}
		}
	}
}

// sweep removes expired messages (looking at no more than sweepBudget
// messages, resuming where it stopped) and forgets idle queues.
func (m *Manager) sweep() {
	now := m.now()
	nowMs := now.UnixMilli()
	budget := sweepBudget
	if m.sweepIdx >= len(m.sweepList) {
		m.mu.Lock()
		m.sweepList = m.sweepList[:0]
		for _, q := range m.queues {
			m.sweepList = append(m.sweepList, q)
		}
		m.mu.Unlock()
		m.sweepIdx = 0
	}
	for budget > 0 && m.sweepIdx < len(m.sweepList) {
		q := m.sweepList[m.sweepIdx]
		q.mu.Lock()
		var expired []*entry
		done := false
		for budget > 0 {
			if q.sweepList >= 2*len(q.main) {
				q.sweepList, q.sweepAt = 0, nil
				done = true
				break
			}
			l := &q.main[q.sweepList%10]
			if q.sweepList >= 10 {
				l = &q.parked[q.sweepList%10]
			}
			e := q.sweepAt
			if e == nil {
				e = l.head
				if e == nil {
					q.sweepList++
					continue
				}
			}
			budget--
			q.sweepAt = e.next
			if e.next == nil {
				q.sweepList++
			}
			if e.expiredAt(nowMs) {
				e.in.remove(e) // the cursor has already moved past e
				q.n--
				q.bytes -= e.size
				expired = append(expired, e)
			}
		}
		idle := !q.deleted && q.n == 0 && len(q.subs) == 0
		if !idle {
			q.idleSince = time.Time{}
		} else if q.idleSince.IsZero() {
			q.idleSince = now
		}
		forget := idle && now.Sub(q.idleSince) >= m.o.IdleTimeout
		q.mu.Unlock()
		m.expire(q, expired)
		if forget {
			m.forget(q)
		}
		if done {
			m.sweepList[m.sweepIdx] = nil
			m.sweepIdx++
		}
	}
}

// forget removes an idle queue from the map if it is still idle.
func (m *Manager) forget(q *queue) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.queues[q.name] != q {
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.n != 0 || len(q.subs) != 0 {
		return
	}
	q.deleted = true
	delete(m.queues, q.name)
}

// list is a doubly linked list of entries in ID order.
type list struct {
	head, tail *entry
	n          int
}

func (l *list) remove(e *entry) {
	if e.prev != nil {
		e.prev.next = e.next
	} else {
		l.head = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	} else {
		l.tail = e.prev
	}
	e.prev, e.next, e.in = nil, nil, nil
	l.n--
}

// insertAfter links e after at (at the head if at is nil).
func (l *list) insertAfter(at, e *entry) {
	e.in = l
	e.prev = at
	if at == nil {
		e.next = l.head
		l.head = e
	} else {
		e.next = at.next
		at.next = e
	}
	if e.next != nil {
		e.next.prev = e
	} else {
		l.tail = e
	}
	l.n++
}

// insertFromTail inserts e at its place by ID, looking from the tail
// (new messages belong at or near it).
func (l *list) insertFromTail(e *entry) {
	at := l.tail
	for at != nil && at.msg.ID > e.msg.ID {
		at = at.prev
	}
	l.insertAfter(at, e)
}

// insertFromHead inserts e at its place by ID, looking from the head
// (given-back messages belong near it).
func (l *list) insertFromHead(e *entry) {
	var at *entry
	for nx := l.head; nx != nil && nx.msg.ID < e.msg.ID; nx = nx.next {
		at = nx
	}
	l.insertAfter(at, e)
}

// merge inserts es (in ID order) at their places in one pass.
func (l *list) merge(es []*entry) {
	var at *entry
	for _, e := range es {
		nx := l.head
		if at != nil {
			nx = at.next
		}
		for nx != nil && nx.msg.ID < e.msg.ID {
			at, nx = nx, nx.next
		}
		l.insertAfter(at, e)
		at = e
	}
}

// metrics are the manager's Prometheus metrics.
type metrics struct {
	reg                         prometheus.Registerer
	cs                          []prometheus.Collector
	enqueued, dequeued, expired prometheus.Counter
	dropped                     *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer, m *Manager) (*metrics, error) {
	mt := &metrics{
		reg:      reg,
		enqueued: prometheus.NewCounter(prometheus.CounterOpts{Name: "isobar_stomp_queue_enqueued_total", Help: "Messages added to STOMP queues."}),
		dequeued: prometheus.NewCounter(prometheus.CounterOpts{Name: "isobar_stomp_queue_dequeued_total", Help: "Messages acknowledged by STOMP queue consumers."}),
		expired:  prometheus.NewCounter(prometheus.CounterOpts{Name: "isobar_stomp_queue_expired_total", Help: "Messages of STOMP queues dropped because they expired."}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "isobar_stomp_queue_dropped_total",
			Help: "Messages refused or removed from STOMP queues other than by acknowledgement or expiry, by reason (full, dlq, dlq_full, redeliveries, deleted, store_error)."}, []string{"reason"}),
	}
	msgs := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "isobar_stomp_queue_messages", Help: "Messages in STOMP queues (waiting and unacknowledged)."},
		func() float64 { return float64(m.total.Load()) })
	queues := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "isobar_stomp_queues", Help: "STOMP queues."},
		func() float64 {
			m.mu.Lock()
			defer m.mu.Unlock()
			return float64(len(m.queues))
		})
	for _, r := range []string{"full", "dlq", "dlq_full", "redeliveries", "deleted", "store_error"} {
		mt.dropped.WithLabelValues(r)
	}
	mt.cs = []prometheus.Collector{mt.enqueued, mt.dequeued, mt.expired, mt.dropped, msgs, queues}
	if reg == nil {
		return mt, nil
	}
	for i, c := range mt.cs {
		if err := reg.Register(c); err != nil {
			for _, c := range mt.cs[:i] {
				reg.Unregister(c)
			}
			return nil, fmt.Errorf("queue: registering metrics: %w", err)
		}
	}
	return mt, nil
}

func (mt *metrics) unregister() {
	if mt.reg == nil {
		return
	}
	for _, c := range mt.cs {
		mt.reg.Unregister(c)
	}
}
