package cluster

import (
	"errors"

	"github.com/isobar-mq/isobar/internal/broker"
	"github.com/isobar-mq/isobar/internal/topic"
)

// inbound runs a link another node opened to this one: its route
// changes, forwarded messages, retained changes, claims and hand-offs
// come in on it; acks and answers go back on it. Frames are processed in
// order by one goroutine, which commits forwarded messages in batches
// (one store commit for everything that arrived together) and then acks
// the highest sequence number committed.
type inbound struct {
	n    *Node
	info PeerInfo
	ch   chan inFrame
	fwd  *broker.Forwarder
}

type inFrame struct {
	t    FrameType
	body []byte
}

func newInbound(n *Node, info PeerInfo) *inbound {
	return &inbound{n: n, info: info, ch: make(chan inFrame, 1024)}
}

// handle is the link's read-loop callback: it copies the frame for the
// processing goroutine (blocking when it is behind: back-pressure to the
// sender through TCP).
func (in *inbound) handle(l *Link, t FrameType, body []byte) {
	f := inFrame{t: t, body: append([]byte(nil), body...)}
	select {
	case in.ch <- f:
	case <-l.Done():
	}
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
	np := newPeer(n, Member{Name: info.Name, Start: info.Start})
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

func (in *inbound) run(l *Link) {
	p := in.n.peerFor(in.info)
	if p == nil {
		l.Close(errors.New("stale node incarnation"))
		return
	}
	srv := in.n.srv
	in.fwd = srv.NewForwarder()
	defer in.fwd.Flush()
	for {
		var f inFrame
		select {
		case f = <-in.ch:
		case <-l.Done():
			return
		}
		var batchMax uint64
		committed := p.inSeq.Load()
		acks := false
	batch:
		for {
			if err := in.process(l, p, f, committed, &batchMax, &acks); err != nil {
				in.n.log.Warn("cluster: bad frame from node", "node", in.info.Name, "type", f.t.String(), "err", err)
				l.Close(err)
				return
			}
			select {
			case f = <-in.ch:
			default:
				break batch
			}
		}
		if acks {
			if err := in.fwd.Flush(); err != nil {
				// Not durable here: the sender resends after the new link.
				l.Close(err)
				return
			}
			if batchMax > committed {
				p.inSeq.Store(batchMax)
			}
			var e Enc
			e.U64(p.inSeq.Load())
			l.Send(FrameAck, e.B, true)
		}
	}
}

// process handles one frame. committed is the last sequence number known
// committed; batchMax the highest taken in this batch.
func (in *inbound) process(l *Link, p *peer, f inFrame, committed uint64, batchMax *uint64, acks *bool) error {
	n := in.n
	switch f.t {
	case FramePublish:
		seq, plain, groups, m, err := decodePublish(f.body)
		if err != nil {
			return err
		}
		*acks = true
		if seq <= committed || seq <= *batchMax {
			return nil // a resend of something already taken
		}
		*batchMax = seq
		p.received.Add(1)
		if m.Hops < 255 {
			m.Hops++
		}
		if err := in.fwd.Forward(m, plain, groups, nil); err != nil && !errors.Is(err, broker.ErrInvalidForward) {
			return err
		}
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
		return n.answerRetainedDigest(p, f.body)
	case FrameClaim:
		return n.handleClaim(l, f.body)
	case FrameSessionDeliver:
		return n.handleSessionDeliver(f.body)
	case FrameSessionDigest:
		return n.handleSessionDigest(p, f.body)
	case FrameSessionMerge:
		return n.handleSessionMerge(f.body)
	case FrameHandoff:
		return n.handleHandoff(l, f.body)
	}
	return nil
}

// Routes: the peer's interest, mirrored as subscriptions of its proxy.

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
	}
	for _, f := range del {
		delete(p.routes, f)
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
	p.routes[f] = struct{}{}
	p.mu.Unlock()
	if !had {
		p.n.srv.SubscribeRemote(p.proxy, f, proxyOpts)
	}
}

func (p *peer) delRoute(f string) {
	p.mu.Lock()
	_, had := p.routes[f]
	delete(p.routes, f)
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
	if added {
		t = FrameRouteAdd
	}
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
