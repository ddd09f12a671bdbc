package stomp

import (
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/isobar-mq/isobar/internal/stomp/queue"
	"github.com/isobar-mq/isobar/internal/stomp/selector"
	"github.com/prometheus/client_golang/prometheus"
)

// Queues in a cluster (docs/stomp.md, "Queues in a cluster").
//
// Every queue has one owner, the node that ranks first for the queue's
// name by rendezvous hashing over the nodes running the STOMP gateway.
// The owner's queue.Manager holds the queue's messages and its consumers,
// so a message goes to exactly one consumer cluster-wide, chosen (and its
// selector evaluated) where the messages are. A SEND on another node is
// forwarded to the owner and answered once stored there; a SUBSCRIBE on
// another node registers a remote consumer at the owner, whose deliveries
// come back over the node link and whose ACKs go to the owner. When the
// owner changes, consumers register at the new owner and the messages a
// node holds for a queue it no longer owns are moved to the owner (sent
// there, then acknowledged here: at least once). Temporary queues stay on
// the node of their connection.

// Cluster is what the gateway needs from the cluster (internal/cluster's
// Node, adapted by internal/node): the live members, a ranking, change
// notifications and a named message service over the node links. The
// callbacks must not block and are called without the cluster's locks.
type Cluster interface {
	// Name is this node's name.
	Name() string
	// Members lists the live members, this node included, sorted.
	Members() []string
	// Rank orders nodes for key by rendezvous hashing (first = owner).
	Rank(key string, nodes []string) []string
	// OnMembersChanged: members changed, or a link came up or went down.
	OnMembersChanged(f func())
	// OnPeerDown: a link to or from node closed (messages may be lost).
	OnPeerDown(f func(node string))
	// Service registers the handler of a service and returns its sender,
	// which returns false when nothing could be queued for node.
	Service(name string, h func(from string, body []byte)) func(node string, body []byte) bool
}

// queueSub is a queue subscription as the connection uses it.
type queueSub interface {
	Ack(id uint64) bool
	Reject(id uint64) bool
	Ready()
	Close()
}

// queueBackend is the gateway's queue layer: the local manager on a single
// node, the cluster layer (cqueues) on a cluster.
type queueBackend interface {
	Send(name string, msg *queue.Message) error
	Subscribe(name string, sel *selector.Selector, window int, c queue.Consumer) (queueSub, error)
	Delete(name string)
	Close()
}

// localQueues is the single-node backend.
type localQueues struct{ m *queue.Manager }

func (l localQueues) Send(name string, msg *queue.Message) error { return l.m.Send(name, msg) }
func (l localQueues) Delete(name string)                         { l.m.Delete(name) }
func (l localQueues) Close()                                     {}
func (l localQueues) Subscribe(name string, sel *selector.Selector, window int, c queue.Consumer) (queueSub, error) {
	s, err := l.m.Subscribe(name, sel, window, c)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// serviceName is the cluster service of the queue layer.
const serviceName = "stomp.queue"

// Operations of the service (the first byte of a body).
const (
	opHello     = 1  // I run the gateway (answered by opHelloAck)
	opSend      = 2  // req u64 | queue | message: store it (the receiver is the owner)
	opSendReply = 3  // req u64 | code u8 | text
	opSub       = 4  // reg u64 | queue | selector | window: register a consumer
	opUnsub     = 5  // reg u64
	opAck       = 6  // reg u64 | id u64
	opReject    = 7  // reg u64 | id u64
	opDeliver   = 8  // reg u64 | message (owner to subscriber)
	opGone      = 9  // reg u64 | text: the owner has no such registration (anymore)
	opSync      = 10 // count | reg u64...: the registrations the sender holds at the receiver
	opHelloAck  = 11 // I run the gateway too
)

// Send reply codes.
const (
	codeOK = iota
	codeFull
	codeBadName
	codeOther
)

// DefaultClusterTimeout bounds a SEND forwarded to a queue's owner.
const DefaultClusterTimeout = 5 * time.Second

// remoteWindow is the window of a remote consumer whose subscription has
// none (auto acknowledgement): it bounds what is in flight on the link.
const remoteWindow = DefaultPrefetch

// syncInterval is the period of the anti-entropy pass: registrations
// re-checked at their owners, misplaced messages moved, lost hellos
// repeated.
const syncInterval = time.Second

var (
	errOwnerUnreachable = errors.New("queue owner unreachable")
	errNotSent          = fmt.Errorf("%w: not sent", errOwnerUnreachable)
)

// cqueues is the cluster backend.
type cqueues struct {
	m       *queue.Manager
	cl      Cluster
	self    string
	log     *slog.Logger
	timeout time.Duration
	send    func(node string, body []byte) bool
	reg     prometheus.Registerer
	sends   *prometheus.CounterVec
	moved   prometheus.Counter
	remote  prometheus.GaugeFunc

	mu      sync.Mutex
	closed  bool
	gw      map[string]bool // other nodes known to run the gateway (hello)
	nextID  uint64          // request and registration ids
	reqs    map[uint64]*sendReq
	subs    map[uint64]remotePlacement // this node's consumers placed at other nodes, by registration id
	all     map[*csub]struct{}
	regs    map[regKey]*rreg // consumers of other nodes registered here
	movers  map[string]bool  // queues being moved to their owner
	inbox   []inMsg
	wakeIn  chan struct{}
	quit    chan struct{}
	wg      sync.WaitGroup
	changed chan struct{}
}

type inMsg struct {
	from string
	body []byte // nil: the peer is down
}

type sendReq struct {
	owner string
	ch    chan error
}

// remotePlacement is a consumer of this node registered at owner.
type remotePlacement struct {
	s     *csub
	owner string
}

type regKey struct {
	node string
	id   uint64
}

func newCQueues(m *queue.Manager, cl Cluster, timeout time.Duration, log *slog.Logger, reg prometheus.Registerer) (*cqueues, error) {
	if timeout <= 0 {
		timeout = DefaultClusterTimeout
	}
	cq := &cqueues{
		m: m, cl: cl, self: cl.Name(), log: log, timeout: timeout, reg: reg,
		gw: make(map[string]bool), reqs: make(map[uint64]*sendReq), subs: make(map[uint64]remotePlacement),
		all: make(map[*csub]struct{}), regs: make(map[regKey]*rreg), movers: make(map[string]bool),
		wakeIn: make(chan struct{}, 1), quit: make(chan struct{}), changed: make(chan struct{}, 1),
		// Ids start from the clock so that those of a restarted node (same
		// name) do not collide with its previous run's, which the other
		// nodes may still hold for a moment.
		nextID: uint64(time.Now().UnixNano()),
	}
	cq.sends = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "isobar_stomp_cluster_queue_sends_total",
		Help: "SENDs to a queue owned by another node, by result: forwarded (stored by the owner), " +
			"local (owner unreachable: stored here, moved later), failed."}, []string{"result"})
	cq.moved = prometheus.NewCounter(prometheus.CounterOpts{Name: "isobar_stomp_cluster_queue_moved_total",
		Help: "Queue messages moved from this node to their queue's owner."})
	cq.remote = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "isobar_stomp_cluster_queue_remote_consumers",
		Help: "Consumers of other nodes registered at this node's queues."}, func() float64 {
		cq.mu.Lock()
		defer cq.mu.Unlock()
		return float64(len(cq.regs))
	})
	if reg != nil {
		cs := []prometheus.Collector{cq.sends, cq.moved, cq.remote}
		for i, c := range cs {
			if err := reg.Register(c); err != nil {
				for _, p := range cs[:i] {
					reg.Unregister(p)
				}
				return nil, err
			}
		}
	}
	cq.send = cl.Service(serviceName, cq.receive)
	cl.OnPeerDown(func(node string) { cq.push(inMsg{from: node}) })
	cl.OnMembersChanged(cq.kick)
	cq.wg.Add(2)
	go cq.inLoop()
	go cq.syncLoop()
	cq.kick()
	return cq, nil
}

// receive is the service handler (a link's read loop): queued in order.
func (cq *cqueues) receive(from string, body []byte) {
	if len(body) == 0 {
		return
	}
	cq.push(inMsg{from: from, body: body})
}

func (cq *cqueues) push(m inMsg) {
	cq.mu.Lock()
	if !cq.closed {
		cq.inbox = append(cq.inbox, m)
	}
	cq.mu.Unlock()
	select {
	case cq.wakeIn <- struct{}{}:
	default:
	}
}

// kick asks the sync loop for a pass now.
func (cq *cqueues) kick() {
	select {
	case cq.changed <- struct{}{}:
	default:
	}
}

// inLoop handles what other nodes sent, one message at a time, in the
// order each node sent them (peer-down events included).
func (cq *cqueues) inLoop() {
	defer cq.wg.Done()
	for {
		select {
		case <-cq.quit:
			return
		case <-cq.wakeIn:
		}
		for {
			cq.mu.Lock()
			batch := cq.inbox
			cq.inbox = nil
			cq.mu.Unlock()
			if len(batch) == 0 {
				break
			}
			for _, m := range batch {
				if m.body == nil {
					cq.peerDown(m.from)
					continue
				}
				if err := cq.handle(m.from, m.body); err != nil {
					cq.log.Warn("stomp cluster queues: bad message from node", "node", m.from, "err", err)
				}
			}
		}
	}
}

// syncLoop runs the anti-entropy pass on every change and every second.
func (cq *cqueues) syncLoop() {
	defer cq.wg.Done()
	t := time.NewTicker(syncInterval)
	defer t.Stop()
	for {
		select {
		case <-cq.quit:
			return
		case <-t.C:
		case <-cq.changed:
		}
		cq.pass()
	}
}

// Close ends the cluster layer (the connections are closed first): remote
// consumers registered here are closed, waiting SENDs fail.
func (cq *cqueues) Close() {
	cq.mu.Lock()
	if cq.closed {
		cq.mu.Unlock()
		return
	}
	cq.closed = true
	regs := cq.regs
	cq.regs = make(map[regKey]*rreg)
	reqs := cq.reqs
	cq.reqs = make(map[uint64]*sendReq)
	cq.mu.Unlock()
	close(cq.quit)
	for _, r := range regs {
		r.close()
	}
	for _, r := range reqs {
		r.ch <- queue.ErrClosed
	}
	cq.wg.Wait()
	if cq.reg != nil {
		cq.reg.Unregister(cq.sends)
		cq.reg.Unregister(cq.moved)
		cq.reg.Unregister(cq.remote)
	}
}

// owners returns the nodes running the gateway, this one included.
func (cq *cqueues) gatewaysLocked() []string {
	out := []string{cq.self}
	for _, n := range cq.cl.Members() {
		if cq.gw[n] {
			out = append(out, n)
		}
	}
	return out
}

// ownerLocked returns the owner of a queue.
func (cq *cqueues) ownerLocked(name string) string {
	if rest, ok := strings.CutPrefix(name, tempQueuePrefix); ok {
		// A temporary queue lives with its connection, whose session id
		// names its node: stomp-<node tag>-<random>.
		tag, _, _ := strings.Cut(strings.TrimPrefix(rest, "stomp-"), "-")
		for _, n := range cq.gatewaysLocked() {
			if nodeTag(n) == tag {
				return n
			}
		}
		return cq.self
	}
	return cq.cl.Rank(name, cq.gatewaysLocked())[0]
}

// nodeTag is the part of a clustered gateway's session ids that names
// its node (a hash: node names may hold any character).
func nodeTag(node string) string {
	h := fnv.New32a()
	_, _ = h.Write([]byte(node))
	return strconv.FormatUint(uint64(h.Sum32()), 36)
}

func (cq *cqueues) owner(name string) string {
	cq.mu.Lock()
	defer cq.mu.Unlock()
	return cq.ownerLocked(name)
}

// Send stores msg in its queue at the queue's owner. When the owner's
// link is down the message is stored here and moved to the owner later;
// when the owner does not answer in time the SEND fails (the message may
// or may not be stored there: the client resends, at least once).
func (cq *cqueues) Send(name string, msg *queue.Message) error {
	owner := cq.owner(name)
	if owner == cq.self {
		return cq.m.Send(name, msg)
	}
	err := cq.forward(owner, name, msg)
	switch {
	case err == nil:
		cq.sends.WithLabelValues("forwarded").Inc()
	case errors.Is(err, errNotSent):
		cq.sends.WithLabelValues("local").Inc()
		return cq.m.Send(name, msg)
	default:
		cq.sends.WithLabelValues("failed").Inc()
	}
	return err
}

// forward sends msg to owner and waits for its answer. errNotSent means
// nothing was sent; errOwnerUnreachable (without errNotSent), that the
// owner may or may not have stored it.
func (cq *cqueues) forward(owner, name string, msg *queue.Message) error {
	cq.mu.Lock()
	if cq.closed {
		cq.mu.Unlock()
		return queue.ErrClosed
	}
	cq.nextID++
	id := cq.nextID
	r := &sendReq{owner: owner, ch: make(chan error, 1)}
	cq.reqs[id] = r
	var e enc
	e.u8(opSend)
	e.u64(id)
	e.str(name)
	e.msg(msg)
	ok := cq.send(owner, e.b)
	if !ok {
		delete(cq.reqs, id)
	}
	cq.mu.Unlock()
	if !ok {
		return errNotSent
	}
	t := time.NewTimer(cq.timeout)
	defer t.Stop()
	select {
	case err := <-r.ch:
		return err
	case <-cq.quit:
		return queue.ErrClosed
	case <-t.C:
		cq.mu.Lock()
		delete(cq.reqs, id)
		cq.mu.Unlock()
		return fmt.Errorf("%w: no answer from node %s in %v", errOwnerUnreachable, owner, cq.timeout)
	}
}

// Delete drops a queue here (temporary queues, which never leave this
// node).
func (cq *cqueues) Delete(name string) { cq.m.Delete(name) }

// handle applies one message from node from (on the in loop).
func (cq *cqueues) handle(from string, body []byte) error {
	d := dec{b: body}
	op := d.u8()
	switch op {
	case opHello, opHelloAck:
		// The answer is unconditional: an earlier one may have been
		// lost (our link to the sender was not up yet).
		cq.mu.Lock()
		known := cq.gw[from]
		cq.gw[from] = true
		if op == opHello {
			cq.send(from, []byte{opHelloAck})
		}
		cq.mu.Unlock()
		if !known {
			cq.kick()
		}
	case opSend:
		id, name, msg := d.u64(), d.str(), d.msg()
		if d.err != nil {
			return d.err
		}
		cq.wg.Add(1)
		go func() {
			// Send may wait for an fsync: not on the in loop.
			defer cq.wg.Done()
			err := cq.m.Send(name, msg)
			var e enc
			e.u8(opSendReply)
			e.u64(id)
			switch {
			case err == nil:
				e.u8(codeOK)
			case errors.Is(err, queue.ErrFull):
				e.u8(codeFull)
			case errors.Is(err, queue.ErrBadName):
				e.u8(codeBadName)
			default:
				e.u8(codeOther)
			}
			e.str(errText(err))
			cq.send(from, e.b)
		}()
	case opSendReply:
		id, code, text := d.u64(), d.u8(), d.str()
		if d.err != nil {
			return d.err
		}
		cq.mu.Lock()
		r := cq.reqs[id]
		delete(cq.reqs, id)
		cq.mu.Unlock()
		if r == nil {
			return nil // timed out already
		}
		switch code {
		case codeOK:
			r.ch <- nil
		case codeFull:
			r.ch <- queue.ErrFull
		case codeBadName:
			r.ch <- queue.ErrBadName
		default:
			r.ch <- fmt.Errorf("node %s: %s", from, text)
		}
	case opSub:
		id, name, sel, window := d.u64(), d.str(), d.str(), d.uvarint()
		if d.err != nil {
			return d.err
		}
		cq.register(from, id, name, sel, int(min(window, 1<<20)))
	case opUnsub:
		id := d.u64()
		if d.err != nil {
			return d.err
		}
		cq.unregister(from, id)
	case opAck, opReject:
		id, mid := d.u64(), d.u64()
		if d.err != nil {
			return d.err
		}
		cq.mu.Lock()
		r := cq.regs[regKey{from, id}]
		cq.mu.Unlock()
		if sub := r.get(); sub != nil {
			if op == opAck {
				sub.Ack(mid)
			} else {
				sub.Reject(mid)
			}
		}
	case opDeliver:
		id, msg := d.u64(), d.msg()
		if d.err != nil {
			return d.err
		}
		cq.mu.Lock()
		p, ok := cq.subs[id]
		cq.mu.Unlock()
		if ok {
			p.s.remoteDeliver(from, id, msg)
		}
	case opGone:
		id, text := d.u64(), d.str()
		if d.err != nil {
			return d.err
		}
		cq.mu.Lock()
		p, ok := cq.subs[id]
		cq.mu.Unlock()
		if ok {
			if text != "" {
				cq.log.Warn("stomp cluster queues: owner refused a consumer", "node", from, "queue", p.s.name, "err", text)
			}
			p.s.lost(id)
			cq.kick()
		}
	case opSync:
		n := d.uvarint()
		if n > uint64(len(body)) {
			return errShort
		}
		held := make(map[uint64]bool, n)
		for range n {
			held[d.u64()] = true
		}
		if d.err != nil {
			return d.err
		}
		var stale []*rreg
		cq.mu.Lock()
		for k, r := range cq.regs {
			if k.node == from && !held[k.id] {
				stale = append(stale, r)
				delete(cq.regs, k)
			}
		}
		for id := range held {
			if cq.regs[regKey{from, id}] == nil {
				var e enc
				e.u8(opGone)
				e.u64(id)
				e.str("")
				cq.send(from, e.b)
			}
		}
		cq.mu.Unlock()
		for _, r := range stale {
			r.close()
		}
	default:
		// A newer node's operation: ignored.
	}
	return nil
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// peerDown: a link to or from node closed. Its consumers registered here
// are closed (their unacknowledged messages are redelivered); this node's
// consumers registered there register again; SENDs waiting for it fail.
func (cq *cqueues) peerDown(node string) {
	var regs []*rreg
	var mine []*csub
	cq.mu.Lock()
	delete(cq.gw, node)
	for k, r := range cq.regs {
		if k.node == node {
			regs = append(regs, r)
			delete(cq.regs, k)
		}
	}
	for id, r := range cq.reqs {
		if r.owner == node {
			delete(cq.reqs, id)
			r.ch <- fmt.Errorf("%w: link to node %s lost", errOwnerUnreachable, node)
		}
	}
	for s := range cq.all {
		mine = append(mine, s)
	}
	cq.mu.Unlock()
	for _, r := range regs {
		r.close()
	}
	for _, s := range mine {
		s.ownerDown(node)
	}
	cq.kick()
}

// register makes a consumer of node at this node's queue.
func (cq *cqueues) register(node string, id uint64, name, selText string, window int) {
	fail := func(err error) {
		var e enc
		e.u8(opGone)
		e.u64(id)
		e.str(err.Error())
		cq.send(node, e.b)
	}
	sel, err := selector.Parse(selText)
	if err != nil {
		fail(err)
		return
	}
	k := regKey{node, id}
	cq.mu.Lock()
	if cq.closed || cq.regs[k] != nil {
		cq.mu.Unlock()
		return
	}
	r := &rreg{cq: cq, node: node, id: id}
	cq.regs[k] = r
	cq.mu.Unlock()
	sub, err := cq.m.Subscribe(name, sel, window, r)
	if err != nil {
		cq.mu.Lock()
		delete(cq.regs, k)
		cq.mu.Unlock()
		fail(err)
		return
	}
	r.mu.Lock()
	closed := r.closed
	r.sub = sub
	r.mu.Unlock()
	if closed {
		sub.Close() // unregistered while subscribing
	}
}

func (cq *cqueues) unregister(node string, id uint64) {
	k := regKey{node, id}
	cq.mu.Lock()
	r := cq.regs[k]
	delete(cq.regs, k)
	cq.mu.Unlock()
	if r != nil {
		r.close()
	}
}

// rreg is a consumer of another node registered at this node's queue.
type rreg struct {
	cq     *cqueues
	node   string
	id     uint64
	mu     sync.Mutex
	sub    *queue.Subscription
	closed bool
}

// get returns the subscription (nil for a nil r, or before it exists).
func (r *rreg) get() *queue.Subscription {
	if r == nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	return r.sub
}

// close ends the registration: its unacknowledged messages go back to
// the queue (redelivered).
func (r *rreg) close() {
	r.mu.Lock()
	r.closed = true
	sub := r.sub
	r.mu.Unlock()
	if sub != nil {
		sub.Close()
	}
}

// Deliver implements queue.Consumer: the message goes to the consumer's
// node. A refusal (link down) blocks the subscription until the link's
// loss closes it.
func (r *rreg) Deliver(_ string, m *queue.Message) bool {
	var e enc
	e.u8(opDeliver)
	e.u64(r.id)
	e.msg(m)
	return r.cq.send(r.node, e.b)
}

// pass is the anti-entropy round: hellos to nodes not known to run the
// gateway, consumers placed at their queue's owner, the registrations
// held at each owner confirmed, misplaced messages moved.
func (cq *cqueues) pass() {
	cq.mu.Lock()
	if cq.closed {
		cq.mu.Unlock()
		return
	}
	for _, n := range cq.cl.Members() {
		if n != cq.self && !cq.gw[n] {
			cq.send(n, []byte{opHello})
		}
	}
	subs := make([]*csub, 0, len(cq.all))
	for s := range cq.all {
		subs = append(subs, s)
	}
	cq.mu.Unlock()
	for _, s := range subs {
		s.place()
	}
	cq.mu.Lock()
	held := make(map[string][]uint64)
	for id, p := range cq.subs {
		held[p.owner] = append(held[p.owner], id)
	}
	for _, n := range cq.cl.Members() {
		if n == cq.self || !cq.gw[n] && held[n] == nil {
			continue
		}
		var e enc
		e.u8(opSync)
		e.uvarint(uint64(len(held[n])))
		for _, id := range held[n] {
			e.u64(id)
		}
		cq.send(n, e.b)
	}
	var move []string
	for _, qi := range cq.m.Queues() {
		if qi.Messages > 0 && qi.Consumers == 0 && !cq.movers[qi.Name] {
			if o := cq.ownerLocked(qi.Name); o != cq.self {
				cq.movers[qi.Name] = true
				move = append(move, qi.Name)
			}
		}
	}
	for _, name := range move {
		cq.wg.Add(1)
		go cq.move(name)
	}
	cq.mu.Unlock()
}

// move sends the messages of a queue this node does not own to its owner,
// acknowledging each here once the owner stored it (a crash in between
// leaves it in both: at least once). It stops when the queue is empty, the
// owner changes or a forward fails (the next pass tries again).
func (cq *cqueues) move(name string) {
	defer cq.wg.Done()
	defer func() {
		cq.mu.Lock()
		delete(cq.movers, name)
		cq.mu.Unlock()
	}()
	owner := cq.owner(name)
	ch := make(chan *queue.Message, 64)
	sub, err := cq.m.Subscribe(name, nil, cap(ch), chanConsumer(ch))
	if err != nil {
		return
	}
	defer sub.Close()
	idle := time.NewTimer(200 * time.Millisecond)
	defer idle.Stop()
	moved := 0
	for {
		select {
		case <-cq.quit:
			return
		case <-idle.C:
			if moved > 0 {
				cq.log.Info("stomp cluster queues: messages moved to the queue's owner", "queue", name, "node", owner, "messages", moved)
			}
			return
		case m := <-ch:
			if cq.owner(name) != owner {
				return
			}
			cp := &queue.Message{Headers: m.Headers, Body: m.Body, Expires: m.Expires, Priority: m.Priority, Persistent: m.Persistent}
			if err := cq.forward(owner, name, cp); err != nil {
				cq.log.Debug("stomp cluster queues: move failed", "queue", name, "node", owner, "err", err)
				return
			}
			sub.Ack(m.ID)
			cq.moved.Inc()
			moved++
			idle.Reset(200 * time.Millisecond)
		}
	}
}

// chanConsumer hands deliveries to a channel (whose capacity is the
// subscription's window, so it never refuses).
type chanConsumer chan *queue.Message

func (c chanConsumer) Deliver(_ string, m *queue.Message) bool {
	select {
	case c <- m:
		return true
	default:
		return false
	}
}

// Subscribe adds a consumer of the queue at its owner, following the
// owner as it changes.
func (cq *cqueues) Subscribe(name string, sel *selector.Selector, window int, c queue.Consumer) (queueSub, error) {
	// The manager's own check, made here so that a bad name is refused at
	// once rather than by a remote owner.
	if name == "" || len(name) > queue.MaxNameLength || !utf8.ValidString(name) || strings.IndexByte(name, 0) >= 0 {
		return nil, queue.ErrBadName
	}
	s := &csub{cq: cq, name: name, sel: sel, window: window, c: c, inflight: make(map[uint64]inflight)}
	cq.mu.Lock()
	if cq.closed {
		cq.mu.Unlock()
		return nil, queue.ErrClosed
	}
	cq.all[s] = struct{}{}
	cq.mu.Unlock()
	if err := s.place(); err != nil {
		cq.mu.Lock()
		delete(cq.all, s)
		cq.mu.Unlock()
		return nil, err
	}
	return s, nil
}

// csub is a consumer of this node: a local subscription when this node
// owns the queue, else a registration at the owner. Message ids are
// renumbered for the consumer, as two owners' ids may collide.
type csub struct {
	cq     *cqueues
	name   string
	sel    *selector.Selector
	window int
	c      queue.Consumer

	mu       sync.Mutex
	closed   bool
	owner    string              // where the consumer is placed ("" = nowhere yet)
	reg      uint64              // current registration id
	placed   bool                // the registration was sent (or the local subscription made)
	local    *queue.Subscription // when owner is this node
	next     uint64              // last id given to the consumer
	inflight map[uint64]inflight // delivered, not yet acknowledged, by our id
	backlog  []*queue.Message    // remote deliveries not yet taken by the consumer, in order
	draining bool                // a goroutine is offering the backlog
	again    bool                // Ready arrived while draining: offer again
}

// inflight is where a delivered message came from.
type inflight struct {
	local *queue.Subscription // nil: remote
	owner string
	reg   uint64
	id    uint64 // the owner's id
}

// place puts the consumer at its queue's owner if it is not there.
func (s *csub) place() error {
	cq := s.cq
	cq.mu.Lock()
	owner := cq.ownerLocked(s.name)
	cq.mu.Unlock()
	s.mu.Lock()
	if s.closed || (s.placed && s.owner == owner) {
		s.mu.Unlock()
		return nil
	}
	oldOwner, oldReg, oldLocal, wasPlaced := s.owner, s.reg, s.local, s.placed
	s.local, s.placed = nil, false
	s.dropBacklogLocked()
	cq.mu.Lock()
	delete(cq.subs, oldReg)
	cq.nextID++
	s.reg = cq.nextID
	s.owner = owner
	reg := s.reg
	if owner != cq.self {
		cq.subs[reg] = remotePlacement{s: s, owner: owner}
		var e enc
		e.u8(opSub)
		e.u64(reg)
		e.str(s.name)
		e.str(s.sel.String())
		w := s.window
		if w <= 0 {
			w = remoteWindow
		}
		e.uvarint(uint64(w))
		s.placed = cq.send(owner, e.b)
	}
	cq.mu.Unlock()
	s.mu.Unlock()
	// The previous placement ends: its unacknowledged messages go back to
	// their queue there (and reach this consumer again, redelivered).
	if oldLocal != nil {
		oldLocal.Close()
	} else if wasPlaced && oldOwner != "" && oldOwner != cq.self {
		var e enc
		e.u8(opUnsub)
		e.u64(oldReg)
		cq.send(oldOwner, e.b)
	}
	if owner != cq.self {
		return nil
	}
	ls, err := cq.m.Subscribe(s.name, s.sel, s.window, &localConsumer{s: s, reg: reg})
	if err != nil {
		return err
	}
	s.mu.Lock()
	if s.closed || s.reg != reg {
		s.mu.Unlock()
		ls.Close()
		return nil
	}
	s.local, s.placed = ls, true
	s.mu.Unlock()
	// A delivery before s.local was set was refused: offer again.
	ls.Ready()
	return nil
}

// ownerDown: the link with node was lost; a registration there is made
// again (a new one: the owner dropped the old).
func (s *csub) ownerDown(node string) {
	s.mu.Lock()
	if s.owner == node {
		s.placed = false
		s.dropBacklogLocked()
	}
	s.mu.Unlock()
}

// lost: the owner does not have registration id.
func (s *csub) lost(id uint64) {
	s.mu.Lock()
	if s.reg == id {
		s.placed = false
		s.dropBacklogLocked()
	}
	s.mu.Unlock()
}

// localConsumer receives the deliveries of one local placement.
type localConsumer struct {
	s   *csub
	reg uint64
}

func (l *localConsumer) Deliver(_ string, m *queue.Message) bool {
	s := l.s
	s.mu.Lock()
	if s.closed || s.reg != l.reg || s.local == nil {
		s.mu.Unlock()
		return false
	}
	s.next++
	id := s.next
	s.inflight[id] = inflight{local: s.local, id: m.ID}
	s.mu.Unlock()
	cp := *m
	cp.ID = id
	if s.c.Deliver(s.name, &cp) {
		return true
	}
	s.mu.Lock()
	delete(s.inflight, id)
	s.mu.Unlock()
	return false
}

// remoteDeliver takes a delivery of registration reg from owner. It joins
// the backlog, which is offered to the consumer in order.
func (s *csub) remoteDeliver(owner string, reg uint64, m *queue.Message) {
	s.mu.Lock()
	if s.closed || s.reg != reg || s.owner != owner {
		s.mu.Unlock()
		return
	}
	s.next++
	id := s.next
	s.inflight[id] = inflight{owner: owner, reg: reg, id: m.ID}
	m.ID = id
	s.backlog = append(s.backlog, m)
	s.mu.Unlock()
	s.drain()
}

// dropBacklogLocked forgets the deliveries not yet taken (their
// registration is ending: the owner gives them to a consumer again).
// Requires s.mu.
func (s *csub) dropBacklogLocked() {
	for _, m := range s.backlog {
		delete(s.inflight, m.ID)
	}
	s.backlog = nil
}

// drain offers the backlog to the consumer until it is empty or the
// consumer refuses (it calls Ready when it has room). One goroutine
// drains at a time; a call while one drains makes it try once more, so a
// Ready racing with a refusal is not lost.
func (s *csub) drain() {
	s.mu.Lock()
	if s.draining {
		s.again = true
		s.mu.Unlock()
		return
	}
	s.draining = true
	for {
		s.again = false
		if s.closed || len(s.backlog) == 0 {
			s.draining = false
			s.mu.Unlock()
			return
		}
		m := s.backlog[0]
		s.mu.Unlock()
		ok := s.c.Deliver(s.name, m)
		s.mu.Lock()
		if ok {
			if len(s.backlog) > 0 && s.backlog[0] == m {
				s.backlog = s.backlog[1:]
			}
			continue
		}
		if !s.again {
			s.draining = false
			s.mu.Unlock()
			return
		}
	}
}

func (s *csub) settle(id uint64, reject bool) bool {
	s.mu.Lock()
	f, ok := s.inflight[id]
	delete(s.inflight, id)
	s.mu.Unlock()
	if !ok {
		return false
	}
	if f.local != nil {
		if reject {
			return f.local.Reject(f.id)
		}
		return f.local.Ack(f.id)
	}
	var e enc
	if reject {
		e.u8(opReject)
	} else {
		e.u8(opAck)
	}
	e.u64(f.reg)
	e.u64(f.id)
	return s.cq.send(f.owner, e.b)
}

// Ack implements queueSub.
func (s *csub) Ack(id uint64) bool { return s.settle(id, false) }

// Reject implements queueSub.
func (s *csub) Reject(id uint64) bool { return s.settle(id, true) }

// Ready implements queueSub: the backlog is offered again, then the
// local subscription is told.
func (s *csub) Ready() {
	s.drain()
	s.mu.Lock()
	ls := s.local
	s.mu.Unlock()
	if ls != nil {
		ls.Ready()
	}
}

// Close implements queueSub: the placement ends (unacknowledged messages
// go back to the queue at its owner).
func (s *csub) Close() {
	cq := s.cq
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	owner, reg, local, placed := s.owner, s.reg, s.local, s.placed
	s.local, s.backlog = nil, nil
	clear(s.inflight)
	s.mu.Unlock()
	cq.mu.Lock()
	delete(cq.all, s)
	delete(cq.subs, reg)
	cq.mu.Unlock()
	if local != nil {
		local.Close()
	} else if placed && owner != cq.self {
		var e enc
		e.u8(opUnsub)
		e.u64(reg)
		cq.send(owner, e.b)
	}
}

// nodes returns the nodes known to run the gateway, this one included,
// sorted.
func (cq *cqueues) nodes() []string {
	cq.mu.Lock()
	defer cq.mu.Unlock()
	out := cq.gatewaysLocked()
	slices.Sort(out)
	return out
}

// QueueNodes lists the nodes over which the gateway places queues (this
// node and the others that run the gateway, sorted); nil when the gateway
// is not clustered.
func (g *Gateway) QueueNodes() []string {
	if cq, ok := g.qs.(*cqueues); ok {
		return cq.nodes()
	}
	return nil
}
