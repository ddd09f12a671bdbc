package stomp

import (
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/isobar-mq/isobar/internal/stomp/queue"
	"github.com/prometheus/client_golang/prometheus"
)

// fakeBus connects fake cluster nodes in memory: per-receiver FIFO
// delivery, links that can be cut (Send fails, both sides told) or made
// black holes (Send succeeds, nothing arrives).
type fakeBus struct {
	mu    sync.Mutex
	nodes map[string]*fakeNode
	cut   map[[2]string]bool
	hole  map[string]bool // messages to this node vanish
}

type fakeNode struct {
	bus     *fakeBus
	name    string
	handler func(string, []byte)
	changed []func()
	downs   []func(string)
	inbox   chan fakeMsg
	done    chan struct{}
}

type fakeMsg struct {
	from string
	body []byte
}

func newFakeBus() *fakeBus {
	return &fakeBus{nodes: map[string]*fakeNode{}, cut: map[[2]string]bool{}, hole: map[string]bool{}}
}

func (b *fakeBus) add(t *testing.T, name string) *fakeNode {
	n := &fakeNode{bus: b, name: name, inbox: make(chan fakeMsg, 4096), done: make(chan struct{})}
	b.mu.Lock()
	b.nodes[name] = n
	b.mu.Unlock()
	go func() {
		for {
			select {
			case m := <-n.inbox:
				b.mu.Lock()
				h := n.handler
				b.mu.Unlock()
				if h != nil {
					h(m.from, m.body)
				}
			case <-n.done:
				return
			}
		}
	}()
	t.Cleanup(func() { close(n.done) })
	return n
}

func pair(a, b string) [2]string {
	if a > b {
		a, b = b, a
	}
	return [2]string{a, b}
}

// setCut cuts or restores the link between a and b.
func (b *fakeBus) setCut(x, y string, cut bool) {
	b.mu.Lock()
	b.cut[pair(x, y)] = cut
	nx, ny := b.nodes[x], b.nodes[y]
	b.mu.Unlock()
	if cut {
		for _, f := range nx.downs {
			f(y)
		}
		for _, f := range ny.downs {
			f(x)
		}
	}
	for _, n := range []*fakeNode{nx, ny} {
		for _, f := range n.changed {
			f()
		}
	}
}

func (n *fakeNode) Name() string { return n.name }

func (n *fakeNode) Members() []string {
	n.bus.mu.Lock()
	defer n.bus.mu.Unlock()
	var out []string
	for name := range n.bus.nodes {
		out = append(out, name)
	}
	slices.Sort(out)
	return out
}

func (n *fakeNode) Rank(key string, nodes []string) []string {
	out := slices.Clone(nodes)
	h := func(nm string) uint64 {
		f := fnv.New64a()
		_, _ = f.Write([]byte(nm + "\x00" + key))
		return f.Sum64()
	}
	slices.SortFunc(out, func(a, b string) int {
		ha, hb := h(a), h(b)
		switch {
		case ha > hb:
			return -1
		case ha < hb:
			return 1
		}
		return 0
	})
	return out
}

func (n *fakeNode) OnMembersChanged(f func())      { n.changed = append(n.changed, f) }
func (n *fakeNode) OnPeerDown(f func(node string)) { n.downs = append(n.downs, f) }

func (n *fakeNode) Service(_ string, h func(string, []byte)) func(string, []byte) bool {
	n.bus.mu.Lock()
	n.handler = h
	n.bus.mu.Unlock()
	return func(to string, body []byte) bool {
		b := n.bus
		b.mu.Lock()
		defer b.mu.Unlock()
		dst := b.nodes[to]
		if dst == nil || b.cut[pair(n.name, to)] {
			return false
		}
		if b.hole[to] {
			return true
		}
		select {
		case dst.inbox <- fakeMsg{from: n.name, body: slices.Clone(body)}:
			return true
		default:
			return false
		}
	}
}

// chanCons is a consumer that takes everything.
type chanCons chan *queue.Message

func (c chanCons) Deliver(_ string, m *queue.Message) bool {
	select {
	case c <- m:
		return true
	default:
		return false
	}
}

type fakeCQ struct {
	cq *cqueues
	m  *queue.Manager
}

func startFakeCQ(t *testing.T, n *fakeNode) fakeCQ {
	t.Helper()
	m, err := queue.Open(queue.Options{})
	if err != nil {
		t.Fatal(err)
	}
	cq, err := newCQueues(m, n, 300*time.Millisecond, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cq.Close()
		_ = m.Close()
	})
	return fakeCQ{cq, m}
}

func waitCond(t *testing.T, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func queueFor(n *fakeNode, owner string, nodes []string) string {
	for i := 0; ; i++ {
		q := fmt.Sprintf("q%d", i)
		if n.Rank(q, nodes)[0] == owner {
			return q
		}
	}
}

func recvWithin(t *testing.T, ch chan *queue.Message, d time.Duration) *queue.Message {
	t.Helper()
	select {
	case m := <-ch:
		return m
	case <-time.After(d):
		t.Fatal("no delivery")
		return nil
	}
}

// TestCQueuesLinkLoss: a consumer registered at a remote owner gets the
// owner's messages; when the link drops, the owner gives its
// unacknowledged message back and, once the link is back, the consumer
// (registered again) gets it redelivered. Remote acknowledgements remove
// messages at the owner.
func TestCQueuesLinkLoss(t *testing.T) {
	bus := newFakeBus()
	na, nb := bus.add(t, "a"), bus.add(t, "b")
	a, b := startFakeCQ(t, na), startFakeCQ(t, nb)
	waitCond(t, "hellos", func() bool { return len(a.cq.nodes()) == 2 && len(b.cq.nodes()) == 2 })
	q := queueFor(na, "b", []string{"a", "b"})

	ch := make(chanCons, 16)
	sub, err := a.cq.Subscribe(q, nil, 4, ch)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	for i := range 2 {
		if err := a.cq.Send(q, &queue.Message{Body: fmt.Appendf(nil, "m%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	m0 := recvWithin(t, ch, 2*time.Second)
	m1 := recvWithin(t, ch, 2*time.Second)
	if string(m0.Body) != "m0" || string(m1.Body) != "m1" {
		t.Fatalf("got %q %q", m0.Body, m1.Body)
	}
	if !sub.Ack(m0.ID) {
		t.Fatal("ack refused")
	}
	waitCond(t, "ack at the owner", func() bool {
		for _, qi := range b.m.Queues() {
			if qi.Name == q {
				return qi.Messages == 1
			}
		}
		return false
	})

	// The link drops: b closes a's consumer (m1 goes back); while cut,
	// the queue's owner is a itself for a.
	bus.setCut("a", "b", true)
	waitCond(t, "a alone", func() bool { return slices.Equal(a.cq.nodes(), []string{"a"}) })
	if err := a.cq.Send(q, &queue.Message{Body: []byte("during")}); err != nil {
		t.Fatal(err)
	}
	recvWithin(t, ch, 2*time.Second) // "during", now local at a
	bus.setCut("a", "b", false)
	// Back together: a's consumer registers at b again and gets m1
	// redelivered; "during", unacknowledged at a's local placement, goes
	// back to a's queue when that placement ends and is moved to b.
	seen := map[string]bool{}
	deadline := time.After(5 * time.Second)
	for !seen["m1"] || !seen["during"] {
		select {
		case m := <-ch:
			seen[string(m.Body)] = true
			if string(m.Body) == "m1" && !m.Redelivered {
				t.Error("m1 not marked redelivered")
			}
			sub.Ack(m.ID)
		case <-deadline:
			t.Fatalf("after the link came back: got %v", seen)
		}
	}
	waitCond(t, "everything acknowledged", func() bool {
		for _, m := range []*queue.Manager{a.m, b.m} {
			for _, qi := range m.Queues() {
				if qi.Name == q && qi.Messages != 0 {
					return false
				}
			}
		}
		return true
	})
}

// TestCQueuesOwnerSilent: an owner that does not answer fails the SEND
// (the client gets an ERROR and may resend) instead of losing it.
func TestCQueuesOwnerSilent(t *testing.T) {
	bus := newFakeBus()
	na, nb := bus.add(t, "a"), bus.add(t, "b")
	a, b := startFakeCQ(t, na), startFakeCQ(t, nb)
	waitCond(t, "hellos", func() bool { return len(a.cq.nodes()) == 2 && len(b.cq.nodes()) == 2 })
	q := queueFor(na, "b", []string{"a", "b"})
	bus.mu.Lock()
	bus.hole["b"] = true
	bus.mu.Unlock()
	err := a.cq.Send(q, &queue.Message{Body: []byte("x")})
	if err == nil || !errors.Is(err, errOwnerUnreachable) || errors.Is(err, errNotSent) {
		t.Fatalf("SEND to a silent owner: %v", err)
	}
}

// TestCQueuesCodec: a message survives the service encoding, and a
// truncated body is an error, never a panic.
func TestCQueuesCodec(t *testing.T) {
	m := &queue.Message{Headers: []queue.Header{{Name: "a", Value: "1"}, {Name: "b:c", Value: ""}}, Body: []byte("body"),
		Expires: 123, Priority: 9, Persistent: true, ID: 77, Timestamp: 456, Redelivered: true, Deliveries: 3}
	var e enc
	e.msg(m)
	d := dec{b: e.b}
	got := d.msg()
	if d.err != nil || fmt.Sprint(*got) != fmt.Sprint(*m) {
		t.Fatalf("round trip: %+v, %v", got, d.err)
	}
	for i := range len(e.b) {
		d := dec{b: e.b[:i]}
		if d.msg() != nil || d.err == nil {
			t.Fatalf("truncated at %d: no error", i)
		}
	}
	// Every operation with garbage after its op byte.
	bus := newFakeBus()
	a := startFakeCQ(t, bus.add(t, "a"))
	for op := range byte(16) {
		for _, tail := range [][]byte{nil, {0xff}, {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}} {
			_ = a.cq.handle("x", append([]byte{op}, tail...))
		}
	}
}

// TestCQueuesRemoteWindow: a remote consumer's window is kept at the
// owner: with window 1 the next message comes only after the ACK; a
// consumer that refuses a delivery gets it again after Ready, in order.
func TestCQueuesRemoteWindow(t *testing.T) {
	bus := newFakeBus()
	na, nb := bus.add(t, "a"), bus.add(t, "b")
	a, b := startFakeCQ(t, na), startFakeCQ(t, nb)
	waitCond(t, "hellos", func() bool { return len(a.cq.nodes()) == 2 && len(b.cq.nodes()) == 2 })
	q := queueFor(na, "b", []string{"a", "b"})
	gate := &gateCons{}
	sub, err := a.cq.Subscribe(q, nil, 1, gate)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	for i := range 3 {
		if err := a.cq.Send(q, &queue.Message{Body: fmt.Appendf(nil, "m%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	waitCond(t, "a refusal", func() bool { return gate.refused() > 0 })
	gate.open(true)
	sub.Ready()
	waitCond(t, "first delivery", func() bool { return len(gate.got()) == 1 })
	time.Sleep(100 * time.Millisecond)
	if n := len(gate.got()); n != 1 {
		t.Fatalf("window 1: %d messages delivered before the ACK", n)
	}
	for i := 1; i < 3; i++ {
		got := gate.got()
		sub.Ack(got[len(got)-1].ID)
		waitCond(t, "next delivery", func() bool { return len(gate.got()) == i+1 })
	}
	for i, m := range gate.got() {
		if string(m.Body) != fmt.Sprintf("m%d", i) {
			t.Fatalf("delivery %d is %q", i, m.Body)
		}
	}
	b.cq.mu.Lock()
	n := len(b.cq.regs)
	b.cq.mu.Unlock()
	if n != 1 {
		t.Fatalf("owner holds %d registrations", n)
	}
}

// gateCons refuses deliveries until opened.
type gateCons struct {
	mu    sync.Mutex
	ok    bool
	n     int
	taken []*queue.Message
}

func (g *gateCons) Deliver(_ string, m *queue.Message) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.ok {
		g.n++
		return false
	}
	g.taken = append(g.taken, m)
	return true
}

func (g *gateCons) open(v bool) {
	g.mu.Lock()
	g.ok = v
	g.mu.Unlock()
}

func (g *gateCons) refused() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.n
}

func (g *gateCons) got() []*queue.Message {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.taken)
}
