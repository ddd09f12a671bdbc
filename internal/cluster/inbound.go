package cluster

import (
	"errors"
	"hash/fnv"
	"runtime"
	"slices"
	"sync"

	"github.com/isobar-mq/isobar/internal/broker"
	"github.com/isobar-mq/isobar/internal/topic"
)

// inbound runs a link another node opened to this one: its route
// changes, forwarded messages, retained changes, claims and hand-offs
// come in on it; acks and answers go back on it.
//
// Forwarded messages are routed by a few workers (the receiving side of
// a link would otherwise be one goroutine doing the routing and delivery
// work that a single node spreads over all its publishers' read loops).
// A message goes to the worker chosen by its publisher, so one
// publisher's messages keep their order. Each worker commits what it took
// in batches; the link acknowledges the highest sequence number below
// which every message is committed. Other frames are handled in order on
// the read loop.
type inbound struct {
	n       *Node
	info    PeerInfo
	p       *peer
	workers []*inWorker
	wg      sync.WaitGroup
	link    *Link

	mu        sync.Mutex
	track     []tracked // dispatched publishes not yet committed, in sequence order
	dispatchd uint64    // highest sequence dispatched
	resendAck bool      // a duplicate arrived: repeat the acknowledgement
}

type tracked struct {
	seq  uint64
	done bool
}

type inWorker struct {
	in  *inbound
	ch  chan inJob
	fwd *broker.Forwarder
}

type inJob struct {
	seq    uint64
	m      *broker.Message
	plain  bool
	groups []string
}

// maxInBatch bounds the messages a worker commits and acknowledges
// together: under a steady stream the acknowledgements (hence the
// publishers' PUBACKs) must not wait for the stream to pause.
const maxInBatch = 128

type inFrame struct {
	t    FrameType
	body []byte
}

func newInbound(n *Node, info PeerInfo) *inbound {
	return &inbound{n: n, info: info}
}

// start makes the workers (before the link delivers frames).
func (in *inbound) start() {
	k := min(max(runtime.GOMAXPROCS(0), 1), 4)
	for range k {
		w := &inWorker{in: in, ch: make(chan inJob, 512), fwd: in.n.srv.NewForwarder()}
		in.workers = append(in.workers, w)
		in.wg.Add(1)
		go w.run()
	}
}

// stop ends the workers once the link is done.
func (in *inbound) stop() {
	for _, w := range in.workers {
		close(w.ch)
	}
	in.wg.Wait()
}

func (w *inWorker) run() {
	in := w.in
	defer in.wg.Done()
	seqs := make([]uint64, 0, maxInBatch)
	for j := range w.ch {
		seqs = append(seqs[:0], w.forward(j))
	more:
		for len(seqs) < maxInBatch {
			select {
			case j2, ok := <-w.ch:
				if !ok {
					break more
				}
				seqs = append(seqs, w.forward(j2))
			default:
				break more
			}
		}
		if err := w.fwd.Flush(); err != nil {
			// Not durable here: the sender resends after a new link.
			in.link.Close(err)
			continue
		}
		in.committed(seqs)
	}
	_ = w.fwd.Flush()
}

func (w *inWorker) forward(j inJob) uint64 {
	if err := w.fwd.Forward(j.m, j.plain, j.groups, nil); err != nil && !errors.Is(err, broker.ErrInvalidForward) {
		w.in.link.Close(err)
	}
	return j.seq
}

// committed marks sequence numbers committed and acknowledges the new
// watermark if it moved.
func (in *inbound) committed(seqs []uint64) {
	in.mu.Lock()
	defer in.mu.Unlock()
	for _, s := range seqs {
		// The track is in sequence order: binary search.
		i, ok := slices.BinarySearchFunc(in.track, s, func(t tracked, s uint64) int {
			switch {
			case t.seq < s:
				return -1
			case t.seq > s:
				return 1
			}
			return 0
		})
		if ok {
			in.track[i].done = true
		}
	}
	moved := false
	k := 0
	for k < len(in.track) && in.track[k].done {
		in.p.inSeq.Store(in.track[k].seq)
		k++
		moved = true
	}
	if k > 0 {
		in.track = append(in.track[:0], in.track[k:]...)
	}
	if moved || in.resendAck {
		in.resendAck = false
		in.sendAckLocked()
	}
}

func (in *inbound) sendAckLocked() {
	var e Enc
	e.U64(in.p.inSeq.Load())
	in.link.Send(FrameAck, e.B, true)
}

// handle is the link's read-loop callback. The body is copied: forwarded
// messages keep pointing into it.
func (in *inbound) handle(l *Link, t FrameType, body []byte) {
	body = append([]byte(nil), body...)
	if t == FramePublish {
		if err := in.dispatch(body); err != nil {
			in.n.log.Warn("cluster: bad frame from node", "node", in.info.Name, "type", t.String(), "err", err)
			l.Close(err)
		}
		return
	}
	if err := in.process(l, in.p, inFrame{t: t, body: body}); err != nil {
		in.n.log.Warn("cluster: bad frame from node", "node", in.info.Name, "type", t.String(), "err", err)
		l.Close(err)
	}
}

// dispatch hands a forwarded message to its publisher's worker.
func (in *inbound) dispatch(body []byte) error {
	seq, plain, groups, m, err := decodePublish(body)
	if err != nil {
		return err
	}
	in.mu.Lock()
	if seq <= in.dispatchd || seq <= in.p.inSeq.Load() {
		// A resend of something already taken (after a reconnect).
		if len(in.track) == 0 {
			in.sendAckLocked()
		} else {
			in.resendAck = true
		}
		in.mu.Unlock()
		return nil
	}
	in.dispatchd = seq
	in.track = append(in.track, tracked{seq: seq})
	in.mu.Unlock()
	in.p.received.Add(1)
	if m.Hops < 255 {
		m.Hops++
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(m.From))
	if m.From == "" {
		_, _ = h.Write([]byte(m.Topic))
	}
	w := in.workers[int(h.Sum32()%uint32(len(in.workers)))]
	select {
	case w.ch <- inJob{seq: seq, m: m, plain: plain, groups: groups}:
	case <-in.link.Done():
	}
	return nil
}

// peerFor finds the peer object of the link's node incarnation, creating
// it when the link arrived before the membership event.
func (n *Node) peerFor(info PeerInfo) *peer {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil
	}
	p := n.peers[info.Name]
	if p != nil && p.start == info.Start {
		return p
	}
	if p != nil && p.start > info.Start {
		return nil // a stale link from an older incarnation
	}
	np := n.newPeerLocked(Member{Name: info.Name, Start: info.Start})
	if p != nil {
		np.addr = p.getAddr()
		delete(n.peers, info.Name)
		go p.gone()
	} else if n.ml != nil {
		for _, m := range n.ml.Members() {
			if m.Name == info.Name {
				np.addr = m.Addr
			}
		}
	}
	n.peers[info.Name] = np
	go np.startDialer()
	return np
}

// process handles one frame. committed is the last sequence number known
// committed; batchMax the highest taken in this batch.
func (in *inbound) process(l *Link, p *peer, f inFrame) error {
	n := in.n
	switch f.t {
	case FrameRouteSnapshot:
		d := Dec{B: f.body}
		cnt := d.Uvarint()
		if cnt > uint64(len(f.body)) {
			return ErrShortBody
		}
		set := make(map[string]struct{}, cnt)
		for range cnt {
			set[d.String()] = struct{}{}
		}
		if d.Err != nil {
			return d.Err
		}
		p.setRoutes(set)
	case FrameRouteDigest:
		d := Dec{B: f.body}
		cnt, sum := d.Uvarint(), d.U64()
		if d.Err != nil {
			return d.Err
		}
		p.mu.Lock()
		ok := uint64(len(p.routes)) == cnt && p.rhash == sum
		p.mu.Unlock()
		if !ok {
			// A missed update: ask for the whole set.
			l.Send(FrameRouteResync, nil, true)
		}
	case FrameRouteAdd, FrameRouteDel:
		d := Dec{B: f.body}
		filter := d.String()
		if d.Err != nil {
			return d.Err
		}
		if f.t == FrameRouteAdd {
			p.addRoute(filter)
		} else {
			p.delRoute(filter)
		}
	case FrameRetain:
		return n.applyRetainFrame(f.body)
	case FrameRetainDigest:
		return n.answerRetainedDigest(l, p, f.body)
	case FrameClaim:
		return n.handleClaim(l, f.body)
	case FrameSessionDeliver:
		return n.handleSessionDeliver(f.body)
	case FrameSessionDigest:
		return n.handleSessionDigest(l, f.body)
	case FrameSessionMerge:
		return n.handleSessionMerge(f.body)
	case FrameHandoff:
		return n.handleHandoff(l, f.body)
	case FrameService:
		return n.handleService(p.name, f.body)
	case FrameReplOps, FrameReplSnapshot, FrameReplDrop, FrameReplResync:
		if n.repl == nil {
			return nil // replication off here: ignored
		}
		switch f.t {
		case FrameReplOps:
			return n.repl.applyOps(p.name, f.body)
		case FrameReplSnapshot:
			return n.repl.applySnapshot(p.name, f.body)
		case FrameReplResync:
			return n.repl.resync(p.name, l, f.body)
		default:
			return n.repl.applyDrop(p.name, f.body)
		}
	}
	return nil
}

// Routes: the peer's interest, mirrored as subscriptions of its proxy.

// routeHash is a filter's share of a route set's digest: the digest is
// the sum of its filters' shares, so adding or removing one is O(1) and
// the order does not matter.
func routeHash(f string) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(f))
	return mix64(h.Sum64())
}

func validRoute(f string) bool {
	return topic.ValidateFilter(f, 0, -1) == nil
}

func (p *peer) setRoutes(set map[string]struct{}) {
	srv := p.n.srv
	p.mu.Lock()
	if p.dead {
		p.mu.Unlock()
		return
	}
	var add, del []string
	for f := range set {
		if _, ok := p.routes[f]; !ok && validRoute(f) {
			add = append(add, f)
		}
	}
	for f := range p.routes {
		if _, ok := set[f]; !ok {
			del = append(del, f)
		}
	}
	for _, f := range add {
		p.routes[f] = struct{}{}
		p.rhash += routeHash(f)
	}
	for _, f := range del {
		delete(p.routes, f)
		p.rhash -= routeHash(f)
	}
	p.mu.Unlock()
	for _, f := range add {
		srv.SubscribeRemote(p.proxy, f, proxyOpts)
	}
	for _, f := range del {
		srv.UnsubscribeRemote(p.proxy, f)
	}
}

func (p *peer) addRoute(f string) {
	if !validRoute(f) {
		return
	}
	p.mu.Lock()
	if p.dead {
		p.mu.Unlock()
		return
	}
	_, had := p.routes[f]
	if !had {
		p.routes[f] = struct{}{}
		p.rhash += routeHash(f)
	}
	p.mu.Unlock()
	if !had {
		p.n.srv.SubscribeRemote(p.proxy, f, proxyOpts)
	}
}

func (p *peer) delRoute(f string) {
	p.mu.Lock()
	_, had := p.routes[f]
	if had {
		delete(p.routes, f)
		p.rhash -= routeHash(f)
	}
	p.mu.Unlock()
	if had {
		p.n.srv.UnsubscribeRemote(p.proxy, f)
	}
}

// Our own interest, sent to every peer.

type interestObserver Node

// InterestChanged implements broker.InterestObserver: one route frame
// to every peer whose link is up (the others get a snapshot when their
// link comes up).
func (o *interestObserver) InterestChanged(filter string, added bool) {
	n := (*Node)(o)
	t := FrameRouteDel
	n.ihMu.Lock()
	if added {
		t = FrameRouteAdd
		n.ihash += routeHash(filter)
		n.icount++
	} else {
		n.ihash -= routeHash(filter)
		n.icount--
	}
	n.ihMu.Unlock()
	var e Enc
	e.String(filter)
	for _, p := range n.livePeers() {
		if l := p.link(); l != nil {
			l.Send(t, e.B, true)
		}
	}
}

// sendRouteSnapshot sends our whole interest on a link, atomically with
// respect to changes (which follow it).
func (p *peer) sendRouteSnapshot(l *Link) {
	p.n.srv.InterestSnapshot(func(filters []string) {
		var e Enc
		e.Uvarint(uint64(len(filters)))
		for _, f := range filters {
			e.String(f)
		}
		l.Send(FrameRouteSnapshot, e.B, true)
	})
}
