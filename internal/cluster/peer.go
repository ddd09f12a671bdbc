package cluster

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/isobar-mq/isobar/internal/broker"
	"github.com/isobar-mq/isobar/internal/store"
	"github.com/isobar-mq/isobar/internal/topic"
)

// peer is another node (one incarnation of it): the outbound link to it,
// the subscriber standing for it in the local router, its routes, and the
// messages forwarded to it and not yet acknowledged.
type peer struct {
	n     *Node
	name  string
	start int64
	proxy *remoteSub

	mu       sync.Mutex
	addr     string
	dialer   *Dialer
	out      *Link
	since    time.Time
	dead     bool
	routes   map[string]struct{}
	rhash    uint64               // digest of routes (sum of routeHash)
	seq      uint64               // last sequence number given to a forwarded frame
	inflight []*pending           // QoS 1/2 frames not yet acknowledged, by seq
	holds    map[holdKey]*pending // latest inflight frame of each publisher round
	inBytes  int                  // bytes of inflight
	digest   map[string]version   // retained digest being received

	// inMu is held by the inbound link being processed (one at a time).
	inMu sync.Mutex
	// inSeq is the last sequence number of this peer's forwarded frames
	// processed and committed here (frames at or below it are resends).
	inSeq atomic.Uint64

	forwarded, received, dropped atomic.Uint64
}

// pending is a forwarded QoS 1/2 frame waiting for the peer's ack.
type pending struct {
	seq     uint64
	body    []byte
	release func(error) // on the latest frame of a publisher's round (see holds)
	key     holdKey
	shared  *broker.Delivery // a shared-group delivery, re-dispatched if the peer dies
}

// holdKey is one commit round of one publisher's transaction.
type holdKey struct {
	tx    *broker.Txn
	round uint64
}

func newPeer(n *Node, m Member) *peer {
	p := &peer{n: n, name: m.Name, start: m.Start, addr: m.Addr, routes: make(map[string]struct{}), holds: make(map[holdKey]*pending)}
	p.proxy = &remoteSub{p: p}
	return p
}

func (p *peer) setAddr(a string) {
	p.mu.Lock()
	if a != "" {
		p.addr = a
	}
	p.mu.Unlock()
}

func (p *peer) getAddr() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.addr
}

// link returns the current outbound link, nil when down.
func (p *peer) link() *Link {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out
}

func (p *peer) startDialer() {
	n := p.n
	d := StartDialer(DialerConfig{
		Peer: p.name,
		Addr: p.getAddr,
		Dial: func(ctx context.Context, addr string) (net.Conn, error) {
			n.mu.Lock()
			ml := n.ml
			n.mu.Unlock()
			if ml == nil {
				return nil, errors.New("not started")
			}
			return ml.DialLink(ctx, addr)
		},
		Handshake: n.hs,
		Link:      n.linkConfig(),
		Handler:   p.handleReply,
		OnUp:      p.up,
		OnDown:    p.down,
		Logger:    n.log,
	})
	p.mu.Lock()
	if p.dead {
		p.mu.Unlock()
		d.Stop()
		return
	}
	p.dialer = d
	p.mu.Unlock()
}

// up: a new outbound link. Unacknowledged frames are sent again first,
// in order (the peer drops those it already has), then our routes and
// retained digest, then session digest.
func (p *peer) up(l *Link) {
	if l.Peer().Start != p.start && p.start != 0 {
		// Another incarnation answered: this peer object is stale.
		l.Close(errors.New("peer restarted"))
		return
	}
	p.mu.Lock()
	if p.dead {
		p.mu.Unlock()
		l.Close(errors.New("peer gone"))
		return
	}
	p.out = l
	p.since = time.Now()
	for _, e := range p.inflight {
		l.Send(FramePublish, e.body, true)
	}
	p.mu.Unlock()
	p.n.log.Info("cluster link up", "node", p.name)
	p.sendRouteSnapshot(l)
	p.n.sendRetainedDigest(l)
	p.n.sendSessionDigest(l)
	p.n.servicesChanged()
	if r := p.n.repl; r != nil {
		p.n.wg.Add(1)
		go func() {
			defer p.n.wg.Done()
			r.rebalance(p.name)
		}()
	}
}

func (p *peer) down(l *Link, err error) {
	p.mu.Lock()
	if p.out == l {
		p.out = nil
		p.since = time.Now()
	}
	p.mu.Unlock()
	if err != nil {
		p.n.log.Info("cluster link down", "node", p.name, "err", err)
	}
	p.n.servicesPeerDown(p.name)
}

// handleReply handles what the peer sends back on our outbound link.
func (p *peer) handleReply(l *Link, t FrameType, body []byte) {
	d := Dec{B: body}
	switch t {
	case FrameAck:
		seq := d.U64()
		if d.Err == nil {
			p.ack(seq)
		}
	case FrameRouteResync:
		p.sendRouteSnapshot(l)
	case FrameRetain:
		// A version the peer holds newer than ours (digest answer).
		if err := p.n.applyRetainFrame(body); err != nil {
			l.Close(err)
		}
	case FrameSessionMerge:
		if err := p.n.handleSessionMerge(body); err != nil {
			l.Close(err)
		}
	case FrameSessionDigest:
		// The answer to a late claim: the peer's claim is later.
		if err := p.n.handleSessionDigest(l, append([]byte(nil), body...)); err != nil {
			l.Close(err)
		}
	case FrameClaimReply, FrameHandoffReply:
		id := d.U64()
		kind := d.U8()
		rest := append([]byte(nil), d.B...)
		if d.Err == nil {
			p.n.answer(id, reply{from: p.name, kind: kind, body: rest})
		}
	}
}

// ack releases every forwarded frame up to seq.
func (p *peer) ack(seq uint64) {
	p.mu.Lock()
	i := 0
	for i < len(p.inflight) && p.inflight[i].seq <= seq {
		i++
	}
	done := make([]*pending, i)
	copy(done, p.inflight[:i])
	for _, e := range done {
		p.inBytes -= len(e.body)
		if e.key.tx != nil && p.holds[e.key] == e {
			delete(p.holds, e.key)
		}
	}
	p.inflight = append(p.inflight[:0], p.inflight[i:]...)
	p.mu.Unlock()
	for _, e := range done {
		if e.release != nil {
			e.release(nil)
		}
	}
}

// errPeerOverloaded fails a QoS 1/2 publish whose message cannot be
// buffered for a node that is not keeping up.
var errPeerOverloaded = errors.New("cluster node not keeping up: message not accepted")

// forward sends one delivery to the peer.
func (p *peer) forward(d broker.Delivery, tx *broker.Txn) {
	p.mu.Lock()
	if p.dead {
		p.mu.Unlock()
		return
	}
	p.seq++
	body := encodePublish(nil, p.seq, d)
	l := p.out
	if d.QoS == 0 {
		p.mu.Unlock()
		if l == nil || !l.Send(FramePublish, body, false) {
			p.dropped.Add(1)
			return
		}
		p.forwarded.Add(1)
		return
	}
	if p.inBytes+len(body) > p.n.cfg.LinkQueueBytes {
		p.mu.Unlock()
		p.dropped.Add(1)
		if tx != nil {
			tx.Hold()(errPeerOverloaded)
		}
		return
	}
	e := &pending{seq: p.seq, body: body}
	if d.Group != "" {
		dc := d
		e.shared = &dc
	}
	if tx != nil {
		// One hold per publisher round and peer: it moves to the round's
		// latest frame, released once the peer acknowledged up to it.
		k := holdKey{tx, tx.Round()}
		if last := p.holds[k]; last != nil {
			e.release, last.release = last.release, nil
		} else {
			e.release = tx.Hold()
		}
		e.key = k
		p.holds[k] = e
	}
	p.inflight = append(p.inflight, e)
	p.inBytes += len(body)
	if l != nil {
		l.Send(FramePublish, body, true)
	}
	p.mu.Unlock()
	p.forwarded.Add(1)
}

// gone: the peer died or left. Its routes leave the router; QoS 1/2
// messages it had not acknowledged are released (their subscribers died
// with it), shared-group ones first re-dispatched to another member.
func (p *peer) gone() {
	p.mu.Lock()
	p.dead = true
	inflight := p.inflight
	p.inflight, p.inBytes = nil, 0
	clear(p.holds)
	routes := p.routes
	p.routes = make(map[string]struct{})
	p.rhash = 0
	p.mu.Unlock()
	p.stop()
	srv := p.n.srv
	if srv != nil {
		for f := range routes {
			srv.UnsubscribeRemote(p.proxy, f)
		}
	}
	for _, e := range inflight {
		if e.shared != nil && srv != nil {
			srv.RedispatchShared(*e.shared, p.proxy)
		}
		if e.release != nil {
			e.release(nil)
		}
	}
	p.n.lm.Forget(p.name)
}

// stop ends the outbound link and its redial loop.
func (p *peer) stop() {
	p.mu.Lock()
	p.dead = true
	d := p.dialer
	p.dialer = nil
	l := p.out
	p.out = nil
	p.mu.Unlock()
	if d != nil {
		d.Stop()
	}
	if l != nil {
		l.Close(errors.New("peer stopped"))
	}
}

func (p *peer) fill(ms *MemberStatus) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.out != nil:
		ms.Link = "up"
		ms.QueuedBytes = p.out.QueuedBytes()
	case p.dialer != nil:
		ms.Link = "connecting"
	default:
		ms.Link = "down"
	}
	ms.LinkSince = p.since
	ms.Routes = len(p.routes)
	ms.Inflight = len(p.inflight)
	ms.Forwarded = p.forwarded.Load()
	ms.Received = p.received.Load()
	ms.Dropped = p.dropped.Load()
}

// remoteSub stands for a peer in the local router.
type remoteSub struct{ p *peer }

func (r *remoteSub) SubscriberID() string   { return "" }
func (r *remoteSub) MayReceive(string) bool { return true }
func (r *remoteSub) Online() bool           { return r.p.link() != nil }
func (r *remoteSub) RemoteNode() string     { return r.p.name }
func (r *remoteSub) Deliver(d broker.Delivery, tx *broker.Txn, _ int64) {
	r.p.forward(d, tx)
}

// proxyOpts are the options of a peer's subscriptions here: everything
// is forwarded at the publisher's QoS with its retain flag, the peer
// applies its own subscribers' options.
var proxyOpts = topic.Options{QoS: 2, RetainAsPublished: true}

// Publish frame body: seq u64 | flags u8 (bit0: deliver to plain
// subscribers) | groups (uvarint n, n strings) | message record bytes.
func encodePublish(dst []byte, seq uint64, d broker.Delivery) []byte {
	e := Enc{B: dst}
	e.U64(seq)
	var flags uint8
	if d.Group == "" {
		flags |= 1
	}
	e.U8(flags)
	if d.Group == "" {
		e.Uvarint(0)
	} else {
		e.Uvarint(1)
		e.String(d.Group)
	}
	e.Bytes(store.AppendMessage(nil, broker.MessageToRecord(d.Msg)))
	return e.B
}

func decodePublish(body []byte) (seq uint64, plain bool, groups []string, m *broker.Message, err error) {
	d := Dec{B: body}
	seq = d.U64()
	plain = d.U8()&1 != 0
	ng := d.Uvarint()
	if ng > 64 {
		return 0, false, nil, nil, ErrShortBody
	}
	for range ng {
		groups = append(groups, d.String())
	}
	rec := d.Bytes()
	if d.Err != nil {
		return 0, false, nil, nil, d.Err
	}
	var r store.MessageRecord
	if err := store.DecodeMessage(rec, &r); err != nil {
		return 0, false, nil, nil, err
	}
	return seq, plain, groups, broker.MessageFromRecord(&r), nil
}
