package queue

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/isobar-mq/isobar/internal/stomp/selector"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// consumer records deliveries; refuse makes Deliver return false.
type consumer struct {
	mu     sync.Mutex
	got    []*Message
	refuse atomic.Bool
	onMsg  func(*Message)
}

func (c *consumer) Deliver(_ string, m *Message) bool {
	if c.refuse.Load() {
		return false
	}
	c.mu.Lock()
	c.got = append(c.got, m)
	f := c.onMsg
	c.mu.Unlock()
	if f != nil {
		f(m)
	}
	return true
}

func (c *consumer) msgs() []*Message {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*Message(nil), c.got...)
}

func (c *consumer) bodies() string {
	var b []string
	for _, m := range c.msgs() {
		b = append(b, string(m.Body))
	}
	return strings.Join(b, ",")
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// settle gives the workers time to (wrongly) deliver more.
func settle() { time.Sleep(30 * time.Millisecond) }

func open(t testing.TB, o Options) *Manager {
	t.Helper()
	if o.ballastSize == 0 {
		o.ballastSize = -1
	}
	m, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	return m
}

func send(t testing.TB, m *Manager, q, body string, mod ...func(*Message)) {
	t.Helper()
	msg := &Message{Body: []byte(body), Priority: 4}
	for _, f := range mod {
		f(msg)
	}
	if err := m.Send(q, msg); err != nil {
		t.Fatalf("Send %s: %v", body, err)
	}
}

func prio(p uint8) func(*Message) { return func(m *Message) { m.Priority = p } }

func hdr(k, v string) func(*Message) {
	return func(m *Message) { m.Headers = append(m.Headers, Header{k, v}) }
}

func mustSel(t *testing.T, s string) *selector.Selector {
	t.Helper()
	sel, err := selector.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return sel
}

func info(m *Manager, name string) QueueInfo {
	for _, q := range m.Queues() {
		if q.Name == name {
			return q
		}
	}
	return QueueInfo{}
}

func TestOrderAndPriority(t *testing.T) {
	m := open(t, Options{})
	send(t, m, "q", "a")
	send(t, m, "q", "b", prio(9))
	send(t, m, "q", "c")
	send(t, m, "q", "d", prio(0))
	send(t, m, "q", "e", prio(9))
	send(t, m, "q", "f", prio(200)) // counts as 9
	c := &consumer{}
	if _, err := m.Subscribe("q", nil, 0, c); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "6 messages", func() bool { return len(c.msgs()) == 6 })
	if got := c.bodies(); got != "b,e,f,a,c,d" {
		t.Fatalf("order %s", got)
	}
	var last uint64
	for _, msg := range c.msgs() {
		if msg.Deliveries != 1 || msg.Redelivered || msg.Timestamp == 0 {
			t.Errorf("message %+v", msg)
		}
		if msg.Priority == 4 && msg.ID <= last {
			t.Errorf("IDs not increasing")
		}
		if msg.Priority == 4 {
			last = msg.ID
		}
	}
}

func TestSelectorsWait(t *testing.T) {
	m := open(t, Options{})
	c1 := &consumer{}
	s1, err := m.Subscribe("q", mustSel(t, "mc_identity = 'node1'"), 0, c1)
	if err != nil {
		t.Fatal(err)
	}
	send(t, m, "q", "for2", hdr("mc_identity", "node2"))
	send(t, m, "q", "for1", hdr("mc_identity", "node1"))
	send(t, m, "q", "none")
	send(t, m, "q", "for1b", hdr("mc_identity", "node1"))
	waitFor(t, "node1's messages", func() bool { return len(c1.msgs()) == 2 })
	settle()
	if got := c1.bodies(); got != "for1,for1b" {
		t.Fatalf("node1 got %s", got)
	}
	for _, msg := range c1.msgs() {
		s1.Ack(msg.ID)
	}
	if i := info(m, "q"); i.Messages != 2 || i.Consumers != 1 {
		t.Fatalf("info %+v", i)
	}
	// A consumer for node2 gets the message that waited, not the other.
	c2 := &consumer{}
	if _, err := m.Subscribe("q", mustSel(t, "mc_identity = 'node2'"), 0, c2); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "node2's message", func() bool { return len(c2.msgs()) == 1 })
	// A consumer without selector takes the rest.
	c3 := &consumer{}
	if _, err := m.Subscribe("q", nil, 0, c3); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the rest", func() bool { return len(c3.msgs()) == 1 })
	settle()
	if c2.bodies() != "for2" || c3.bodies() != "none" || len(c1.msgs()) != 2 {
		t.Fatalf("got %s / %s / %s", c1.bodies(), c2.bodies(), c3.bodies())
	}
}

func TestNoHeadOfLineBlock(t *testing.T) {
	// A full consumer's messages at the head do not hold back another's.
	m := open(t, Options{})
	c1 := &consumer{}
	if _, err := m.Subscribe("q", mustSel(t, "k = 'a'"), 1, c1); err != nil {
		t.Fatal(err)
	}
	c2 := &consumer{}
	if _, err := m.Subscribe("q", mustSel(t, "k = 'b'"), 0, c2); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		send(t, m, "q", fmt.Sprint("a", i), hdr("k", "a"))
	}
	send(t, m, "q", "b0", hdr("k", "b"))
	waitFor(t, "b0", func() bool { return len(c2.msgs()) == 1 })
	settle()
	if c1.bodies() != "a0" {
		t.Fatalf("c1 got %s", c1.bodies())
	}
}

func TestLoadBalancing(t *testing.T) {
	m := open(t, Options{})
	cs := []*consumer{{}, {}, {}}
	for _, c := range cs {
		if _, err := m.Subscribe("q", nil, 0, c); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 30 {
		send(t, m, "q", fmt.Sprint(i))
	}
	waitFor(t, "30 messages", func() bool { return len(cs[0].msgs())+len(cs[1].msgs())+len(cs[2].msgs()) == 30 })
	for i, c := range cs {
		if n := len(c.msgs()); n != 10 {
			t.Errorf("consumer %d got %d", i, n)
		}
	}
}

func TestWindowAndReady(t *testing.T) {
	m := open(t, Options{})
	c := &consumer{}
	s, err := m.Subscribe("q", nil, 2, c)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		send(t, m, "q", fmt.Sprint(i))
	}
	waitFor(t, "2 messages", func() bool { return len(c.msgs()) == 2 })
	settle()
	if len(c.msgs()) != 2 {
		t.Fatal("window exceeded")
	}
	if !s.Ack(c.msgs()[0].ID) {
		t.Fatal("ack")
	}
	if s.Ack(c.msgs()[0].ID) {
		t.Fatal("second ack of the same message")
	}
	waitFor(t, "3rd message", func() bool { return len(c.msgs()) == 3 })
	// The consumer refuses: nothing is lost, Ready resumes.
	c.refuse.Store(true)
	s.Ack(c.msgs()[1].ID)
	settle()
	c.refuse.Store(false)
	settle()
	if len(c.msgs()) != 3 {
		t.Fatal("delivered while blocked")
	}
	s.Ready()
	waitFor(t, "4th message", func() bool { return len(c.msgs()) == 4 })
	got := c.msgs()
	if string(got[3].Body) != "3" || got[3].Deliveries != 1 || got[3].Redelivered {
		t.Fatalf("after refusal: %+v", got[3])
	}
}

func TestNackAndRedelivery(t *testing.T) {
	m := open(t, Options{})
	c := &consumer{}
	s, err := m.Subscribe("q", nil, 1, c)
	if err != nil {
		t.Fatal(err)
	}
	send(t, m, "q", "a")
	send(t, m, "q", "b")
	waitFor(t, "a", func() bool { return len(c.msgs()) == 1 })
	if !s.Nack(c.msgs()[0].ID) {
		t.Fatal("nack")
	}
	waitFor(t, "a again", func() bool { return len(c.msgs()) == 2 })
	a := c.msgs()[1]
	if string(a.Body) != "a" || !a.Redelivered || a.Deliveries != 2 {
		t.Fatalf("redelivered %+v", a)
	}
	if first := c.msgs()[0]; first.Redelivered || first.Deliveries != 1 {
		t.Fatalf("the first delivery's copy changed: %+v", first)
	}
	s.Ack(a.ID)
	waitFor(t, "b", func() bool { return len(c.msgs()) == 3 })
	if s.Nack(12345) {
		t.Fatal("nack of an unknown id")
	}
}

func TestCloseRedelivers(t *testing.T) {
	m := open(t, Options{})
	c1 := &consumer{}
	s1, err := m.Subscribe("q", nil, 0, c1)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		send(t, m, "q", fmt.Sprint(i))
	}
	waitFor(t, "4 messages", func() bool { return len(c1.msgs()) == 4 })
	s1.Ack(c1.msgs()[1].ID)
	s1.Close()
	s1.Close()
	if s1.Ack(c1.msgs()[0].ID) {
		t.Fatal("ack after close")
	}
	send(t, m, "q", "4")
	c2 := &consumer{}
	if _, err := m.Subscribe("q", nil, 0, c2); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "redelivery", func() bool { return len(c2.msgs()) == 4 })
	if got := c2.bodies(); got != "0,2,3,4" {
		t.Fatalf("order %s", got)
	}
	for i, msg := range c2.msgs() {
		if want := i < 3; msg.Redelivered != want {
			t.Errorf("%s: redelivered %v", msg.Body, msg.Redelivered)
		}
	}
}

func TestDeadLetterQueue(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := open(t, Options{MaxRedeliveries: 2, Registerer: reg})
	c := &consumer{}
	s, err := m.Subscribe("work", nil, 0, c)
	if err != nil {
		t.Fatal(err)
	}
	send(t, m, "work", "poison", hdr("x", "1"))
	for n := 1; n <= 3; n++ {
		waitFor(t, "delivery", func() bool { return len(c.msgs()) == n })
		s.Nack(c.msgs()[n-1].ID)
	}
	settle()
	if len(c.msgs()) != 3 {
		t.Fatalf("delivered %d times", len(c.msgs()))
	}
	if i := info(m, "work"); i.Messages != 0 || i.Dropped != 1 {
		t.Fatalf("work: %+v", i)
	}
	d := &consumer{}
	if _, err := m.Subscribe(DLQ, nil, 0, d); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "dead letter", func() bool { return len(d.msgs()) == 1 })
	msg := d.msgs()[0]
	if string(msg.Body) != "poison" || len(msg.Headers) != 2 || msg.Headers[1] != (Header{"original-destination", "/queue/work"}) {
		t.Fatalf("dead letter %+v", msg)
	}
	if v := testutil.ToFloat64(m.met.dropped.WithLabelValues("dlq")); v != 1 {
		t.Fatalf("dropped{dlq} = %v", v)
	}
}

func TestDeadLetterQueueBounded(t *testing.T) {
	m := open(t, Options{MaxRedeliveries: -1, MaxMessages: 1})
	c := &consumer{}
	s, _ := m.Subscribe("q", nil, 0, c)
	send(t, m, "q", "a")
	for n := 1; n <= 10; n++ {
		waitFor(t, "delivery", func() bool { return len(c.msgs()) == n })
		s.Nack(c.msgs()[n-1].ID)
	}
	s.Close()
	if i := info(m, DLQ); i.Messages != 0 {
		t.Fatalf("MaxRedeliveries < 0 moved to the DLQ: %+v", i)
	}

	// MaxRedeliveries 0 means the default; 1 moves at the second nack.
	m2 := open(t, Options{MaxRedeliveries: 1, MaxMessages: 1})
	c2 := &consumer{}
	s2, _ := m2.Subscribe("q", nil, 0, c2)
	n := 0
	for i := range 2 {
		send(t, m2, "q", fmt.Sprint(i))
		for range 2 {
			n++
			waitFor(t, "delivery", func() bool { return len(c2.msgs()) == n })
			s2.Nack(c2.msgs()[n-1].ID)
		}
	}
	if i := info(m2, DLQ); i.Messages != 1 || i.Dropped != 1 {
		t.Fatalf("DLQ %+v", i)
	}
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func TestExpiry(t *testing.T) {
	clk := &clock{t: time.Unix(1700000000, 0)}
	reg := prometheus.NewRegistry()
	m := open(t, Options{Now: clk.now, Registerer: reg, tick: time.Hour})
	exp := func(d time.Duration) func(*Message) {
		return func(msg *Message) { msg.Expires = clk.now().Add(d).UnixMilli() }
	}
	send(t, m, "q", "past", exp(-time.Second)) // dropped at once
	send(t, m, "q", "short", exp(time.Second))
	send(t, m, "q", "long", exp(time.Hour))
	send(t, m, "q", "never")
	clk.add(2 * time.Second)
	c := &consumer{}
	s, _ := m.Subscribe("q", nil, 0, c)
	waitFor(t, "2 messages", func() bool { return len(c.msgs()) == 2 })
	settle()
	if c.bodies() != "long,never" {
		t.Fatalf("got %s", c.bodies())
	}
	if i := info(m, "q"); i.Expired != 2 || i.Messages != 2 {
		t.Fatalf("info %+v", i)
	}
	// Expired while waiting in a queue no one reads: the sweep drops it.
	s.Close()
	send(t, m, "idle", "x", exp(time.Second))
	clk.add(2 * time.Second)
	m.sweep()
	m.sweep()
	if i := info(m, "idle"); i.Messages != 0 || i.Expired != 1 {
		t.Fatalf("idle: %+v", i)
	}
	// A message that expires after a consumer gave it back.
	s2, _ := m.Subscribe("q", nil, 0, c)
	send(t, m, "q", "soon", exp(time.Second))
	waitFor(t, "soon", func() bool { return len(c.msgs()) == 5 })
	clk.add(2 * time.Second)
	s2.Close()
	c3 := &consumer{}
	m.Subscribe("q", nil, 0, c3)
	waitFor(t, "redelivery", func() bool { return len(c3.msgs()) == 2 })
	settle()
	if c3.bodies() != "long,never" {
		t.Fatalf("got %s", c3.bodies())
	}
	if v := testutil.ToFloat64(m.met.expired); v != 4 {
		t.Fatalf("expired_total %v", v)
	}
}

func TestSweepBudget(t *testing.T) {
	clk := &clock{t: time.Unix(1700000000, 0)}
	m := open(t, Options{Now: clk.now, tick: time.Hour})
	n := sweepBudget + sweepBudget/2
	for i := range n {
		send(t, m, "q", "x", func(msg *Message) {
			msg.Expires = clk.now().Add(time.Second).UnixMilli()
			msg.Priority = uint8(i % 10)
		})
	}
	clk.add(2 * time.Second)
	m.sweep()
	if i := info(m, "q"); i.Messages != n-sweepBudget {
		t.Fatalf("after one sweep: %d messages", i.Messages)
	}
	m.sweep()
	if i := info(m, "q"); i.Messages != 0 {
		t.Fatalf("after two sweeps: %d messages", i.Messages)
	}
}

func TestBounds(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := open(t, Options{MaxMessages: 2, MaxBytes: 100, Registerer: reg})
	send(t, m, "q", "a")
	send(t, m, "q", "b")
	if err := m.Send("q", &Message{Body: []byte("c")}); !errors.Is(err, ErrFull) {
		t.Fatalf("3rd: %v", err)
	}
	send(t, m, "other", strings.Repeat("x", 90), hdr("k", "v"))
	if err := m.Send("other", &Message{Body: []byte(strings.Repeat("x", 9))}); !errors.Is(err, ErrFull) {
		t.Fatalf("bytes: %v", err)
	}
	// Room again after an ack.
	c := &consumer{}
	s, _ := m.Subscribe("q", nil, 0, c)
	waitFor(t, "delivery", func() bool { return len(c.msgs()) == 2 })
	if err := m.Send("q", &Message{}); !errors.Is(err, ErrFull) {
		t.Fatalf("unacknowledged messages count: %v", err)
	}
	s.Ack(c.msgs()[0].ID)
	send(t, m, "q", "c")
	if v := testutil.ToFloat64(m.met.dropped.WithLabelValues("full")); v != 3 {
		t.Fatalf("dropped{full} %v", v)
	}
}

func TestIdleQueuesForgotten(t *testing.T) {
	clk := &clock{t: time.Unix(1700000000, 0)}
	m := open(t, Options{Now: clk.now, IdleTimeout: time.Minute, tick: time.Hour})
	for i := range 100 {
		c := &consumer{}
		s, _ := m.Subscribe(fmt.Sprint("reply.", i), nil, 0, c)
		send(t, m, fmt.Sprint("reply.", i), "r")
		waitFor(t, "reply", func() bool { return len(c.msgs()) == 1 })
		s.Ack(c.msgs()[0].ID)
		s.Close()
	}
	send(t, m, "kept", "waiting")
	m.Subscribe("busy", nil, 0, &consumer{})
	m.sweep()
	clk.add(2 * time.Minute)
	m.sweep()
	var names []string
	for _, q := range m.Queues() {
		names = append(names, q.Name)
	}
	if strings.Join(names, ",") != "busy,kept" {
		t.Fatalf("queues %v", names)
	}
	// A forgotten queue comes back on use.
	send(t, m, "reply.1", "again")
	if i := info(m, "reply.1"); i.Messages != 1 {
		t.Fatalf("%+v", i)
	}
}

func TestDelete(t *testing.T) {
	m := open(t, Options{})
	c := &consumer{}
	s, _ := m.Subscribe("tmp", nil, 0, c)
	send(t, m, "tmp", "a")
	waitFor(t, "delivery", func() bool { return len(c.msgs()) == 1 })
	send(t, m, "tmp", "b")
	m.Delete("tmp")
	m.Delete("missing")
	if s.Ack(c.msgs()[0].ID) {
		t.Fatal("ack on a deleted queue")
	}
	s.Close()
	if len(m.Queues()) != 0 || m.total.Load() != 0 {
		t.Fatalf("queues %+v, total %d", m.Queues(), m.total.Load())
	}
}

func TestBadNamesAndClosed(t *testing.T) {
	m := open(t, Options{})
	for _, name := range []string{"", "a\x00b", "\xff", strings.Repeat("x", MaxNameLength+1)} {
		if err := m.Send(name, &Message{}); !errors.Is(err, ErrBadName) {
			t.Errorf("Send(%q): %v", name, err)
		}
		if _, err := m.Subscribe(name, nil, 0, &consumer{}); !errors.Is(err, ErrBadName) {
			t.Errorf("Subscribe(%q): %v", name, err)
		}
	}
	s, _ := m.Subscribe("q", nil, 0, &consumer{})
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := m.Send("q", &Message{}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Send after Close: %v", err)
	}
	if _, err := m.Subscribe("q", nil, 0, &consumer{}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Subscribe after Close: %v", err)
	}
	s.Ready()
	s.Close()
}

func TestMetricsRegistration(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := open(t, Options{Registerer: reg})
	if _, err := Open(Options{Registerer: reg}); err == nil {
		t.Fatal("second manager on the same registry")
	}
	send(t, m, "q", "a")
	if n, err := testutil.GatherAndCount(reg, "isobar_stomp_queue_messages", "isobar_stomp_queues"); err != nil || n != 2 {
		t.Fatalf("gather: %d %v", n, err)
	}
	if v := testutil.ToFloat64(m.met.enqueued); v != 1 {
		t.Fatalf("enqueued %v", v)
	}
	m.Close()
	// Unregistered at Close: a new manager can use the registry.
	m2 := open(t, Options{Registerer: reg})
	_ = m2
}

func TestStress(t *testing.T) {
	m := open(t, Options{MaxRedeliveries: -1, MaxMessages: 1000})
	const senders, perSender, consumers = 4, 2000, 4
	total := senders * perSender
	var (
		mu          sync.Mutex
		outstanding = make(map[uint64]bool) // delivered, not yet acked or nacked
		acked       = make(map[string]int)
	)
	type pending struct {
		s   *Subscription
		msg *Message
	}
	// finish acknowledges (or, one time in ten, gives back) a delivery.
	finish := func(p pending) {
		mu.Lock()
		delete(outstanding, p.msg.ID)
		mu.Unlock()
		if rand.IntN(10) == 0 {
			if !p.s.Nack(p.msg.ID) {
				t.Errorf("nack %d failed", p.msg.ID)
			}
			return
		}
		if !p.s.Ack(p.msg.ID) {
			t.Errorf("ack %d failed", p.msg.ID)
			return
		}
		mu.Lock()
		acked[string(p.msg.Body)]++
		mu.Unlock()
	}
	ackCh := make(chan pending, 1024)
	var wg sync.WaitGroup
	// Acks and nacks from other goroutines, like STOMP read loops.
	for range 2 {
		wg.Go(func() {
			for p := range ackCh {
				finish(p)
			}
		})
	}
	for i := range consumers {
		c := &consumer{}
		var s atomic.Pointer[Subscription]
		c.onMsg = func(msg *Message) {
			mu.Lock()
			if outstanding[msg.ID] {
				t.Errorf("message %d delivered twice at once", msg.ID)
			}
			outstanding[msg.ID] = true
			mu.Unlock()
			for s.Load() == nil {
				time.Sleep(time.Microsecond)
			}
			p := pending{s.Load(), msg}
			if rand.IntN(4) == 0 {
				finish(p) // from inside Deliver
				return
			}
			ackCh <- p
		}
		sub, err := m.Subscribe("stress", nil, 1+i*5, c)
		if err != nil {
			t.Fatal(err)
		}
		s.Store(sub)
	}
	var sent sync.WaitGroup
	for s := range senders {
		sent.Go(func() {
			for i := range perSender {
				for {
					err := m.Send("stress", &Message{Body: fmt.Appendf(nil, "%d-%d", s, i), Priority: uint8(i % 10)})
					if err == nil {
						break
					}
					if !errors.Is(err, ErrFull) {
						t.Error(err)
						return
					}
					time.Sleep(100 * time.Microsecond)
				}
			}
		})
	}
	sent.Wait()
	deadline := time.After(15 * time.Second)
	for {
		i := info(m, "stress")
		if i.Dequeued == uint64(total) && i.Messages == 0 {
			break
		}
		select {
		case <-deadline:
			t.Fatalf("timeout: %+v", i)
		case <-time.After(5 * time.Millisecond):
		}
	}
	close(ackCh)
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if len(acked) != total {
		t.Fatalf("%d distinct messages acknowledged, want %d", len(acked), total)
	}
	for b, n := range acked {
		if n != 1 {
			t.Fatalf("%s acknowledged %d times", b, n)
		}
	}
	if i := info(m, "stress"); i.Enqueued != uint64(total) || m.total.Load() != 0 {
		t.Fatalf("info %+v, total %d", i, m.total.Load())
	}
}

func BenchmarkSendDeliverAck(b *testing.B) {
	m := open(b, Options{})
	var s atomic.Pointer[Subscription]
	got := make(chan struct{}, 1)
	sub, err := m.Subscribe("bench", nil, 0, consumerFunc(func(msg *Message) bool {
		s.Load().Ack(msg.ID)
		got <- struct{}{}
		return true
	}))
	if err != nil {
		b.Fatal(err)
	}
	s.Store(sub)
	body := make([]byte, 256)
	hs := []Header{{"mc_identity", "node1"}}
	for b.Loop() {
		if err := m.Send("bench", &Message{Body: body, Headers: hs, Priority: 4}); err != nil {
			b.Fatal(err)
		}
		<-got
	}
}

type consumerFunc func(*Message) bool

func (f consumerFunc) Deliver(_ string, m *Message) bool { return f(m) }

// Reject (a STOMP NACK, as ActiveMQ treats it): a persistent message goes
// to the dead-letter queue at once, a non-persistent one is dropped;
// neither is offered to a consumer again.
func TestReject(t *testing.T) {
	m := open(t, Options{})
	c := &consumer{}
	s, err := m.Subscribe("q", nil, 0, c)
	if err != nil {
		t.Fatal(err)
	}
	send(t, m, "q", "p", func(msg *Message) { msg.Persistent = true })
	send(t, m, "q", "n")
	waitFor(t, "2 messages", func() bool { return len(c.msgs()) == 2 })
	for _, msg := range c.msgs() {
		if !s.Reject(msg.ID) {
			t.Fatalf("reject %s", msg.Body)
		}
	}
	if s.Reject(c.msgs()[0].ID) {
		t.Fatal("rejected twice")
	}
	settle()
	if len(c.msgs()) != 2 {
		t.Fatalf("offered again after Reject: %s", c.bodies())
	}
	if qi := info(m, "q"); qi.Messages != 0 || qi.Dropped != 2 {
		t.Fatalf("queue after rejects: %+v", qi)
	}
	d := &consumer{}
	if _, err := m.Subscribe(DLQ, nil, 0, d); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the persistent message in the DLQ", func() bool { return len(d.msgs()) == 1 })
	settle()
	if got := d.bodies(); got != "p" {
		t.Fatalf("DLQ holds %s", got)
	}
}
