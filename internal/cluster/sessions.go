package cluster

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/isobar-mq/isobar/internal/broker"
	"github.com/isobar-mq/isobar/internal/store"
	"github.com/isobar-mq/isobar/internal/topic"
)

// Client identifiers are unique across the cluster. A CONNECT claims its
// client identifier on every node whose link is up, with an HLC stamp;
// a node holding the session disconnects its client (0x8E), handles the
// will, and hands the session over (or ends it for a clean start). Of two
// concurrent claims the later (stamp, node name) wins on every node; the
// loser's CONNECT is refused as Server busy. During a split both sides may
// accept the same client identifier; when links come back, nodes exchange
// their session claims and the older one gives its session (queued
// messages) to the newer.

// Claim reply kinds.
const (
	claimNone uint8 = iota
	claimMoved
	claimEnded
	claimNewer
	claimForeign
)

// sessionMoveGrace is how long a node that handed a session over keeps
// forwarding what is routed to it for that session (until every node
// learned the new routes).
const sessionMoveGrace = 10 * time.Second

// localClaim is a CONNECT of this node in progress: from its claim
// until the broker attached the client (Attached), so that a later claim
// from another node arriving meanwhile either makes it lose (before it
// is decided) or waits for the attach and then takes the session over.
type localClaim struct {
	stamp   uint64
	node    string
	lostTo  string        // a later claim from this node arrived first
	decided bool          // Claim returned: the broker is attaching
	done    chan struct{} // closed by Attached
	// early holds what the node that gave the session up forwarded for
	// it before it was installed here (SessionDeliver can overtake the
	// claim's answer): delivered once attached.
	early []broker.Delivery
}

type directory Node

// Claim implements broker.SessionDirectory.
func (dir *directory) Claim(ctx context.Context, req broker.ClaimRequest) (*store.LoadedSession, error) {
	got, linkLost, err := dir.claimOnce(ctx, req)
	if got != nil || err != nil || !linkLost || req.Clean {
		return got, err
	}
	// A node's link went down while it was asked (killed just now) and
	// nobody handed the session over: the node holding its replica may
	// not have seen the link go down yet, and refused to hand over a copy
	// whose owner looked alive. Asked again a moment later, it does.
	t := time.NewTimer(claimRetryDelay)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
		return nil, nil
	case <-(*Node)(dir).quit:
		return nil, nil
	}
	got, _, err = dir.claimOnce(ctx, req)
	return got, err
}

// claimRetryDelay is how long a claim waits before asking again after a
// node's link went down during it.
const claimRetryDelay = 300 * time.Millisecond

func (dir *directory) claimOnce(ctx context.Context, req broker.ClaimRequest) (_ *store.LoadedSession, linkLost bool, _ error) {
	n := (*Node)(dir)
	lc := &localClaim{stamp: req.Stamp, node: req.Node, done: make(chan struct{})}
	n.mu.Lock()
	if prev := n.claims[req.ClientID]; prev == nil || claimLater(lc.stamp, lc.node, prev.stamp, prev.node) {
		n.claims[req.ClientID] = lc
	}
	n.mu.Unlock()
	ok := false
	defer func() {
		n.mu.Lock()
		if !ok && n.claims[req.ClientID] == lc {
			delete(n.claims, req.ClientID)
			close(lc.done)
		}
		n.mu.Unlock()
	}()
	if n.repl != nil {
		// A copy held here of a session whose owner is gone: this node
		// takes it (other nodes may still answer with a newer one).
		if rs, gone := n.repl.take(req.ClientID); rs != nil && !req.Clean {
			if err := n.srv.MergeSession(rs, sessionDedupWindow); err != nil {
				n.log.Warn("cluster: replica not installed", "client", req.ClientID, "err", err)
			}
			n.srv.MarkSeen(req.ClientID, gone, sessionDedupWindow)
		}
	}
	var asked []*peer
	var e Enc
	id, ch := n.newRequestN()
	defer n.endRequest(id)
	e.U64(id)
	e.String(req.ClientID)
	e.String(req.Username)
	e.U8(req.Role)
	e.Bool(req.Clean)
	e.U64(req.Stamp)
	e.String(req.Node)
	for _, p := range n.livePeers() {
		if l := p.link(); l != nil && l.Send(FrameClaim, e.B, true) {
			asked = append(asked, p)
		}
	}
	if len(asked) == 0 {
		return nil, false, nil
	}
	ctx, cancel := n.waitCtx(ctx, n.cfg.ClaimTimeout)
	defer cancel()
	var got *store.LoadedSession
	var lostTo string
	foreign := false
	answered := make(map[string]bool, len(asked))
	sentOn := make(map[string]*Link, len(asked))
	for _, p := range asked {
		sentOn[p.name] = p.link()
	}
	poll := time.NewTicker(50 * time.Millisecond)
	defer poll.Stop()
	for waiting := len(asked); waiting > 0; {
		var r reply
		select {
		case r = <-ch:
			if !answered[r.from] {
				waiting--
			}
		case <-poll.C:
			// A node whose link went down since (killed, cut off) will
			// not answer: not waited for.
			for _, p := range asked {
				if !answered[p.name] && p.link() != sentOn[p.name] {
					answered[p.name] = true
					waiting--
					linkLost = true
				}
			}
			continue
		case <-ctx.Done():
			n.met.claims.WithLabelValues("timeout").Inc()
			n.log.Warn("cluster: client identifier claim not answered by every node in time", "client", req.ClientID)
			// Settled later: the silent nodes get this claim as a session
			// digest once the connection is up (the older claim loses).
			var late []*peer
			for _, p := range asked {
				if !answered[p.name] {
					late = append(late, p)
				}
			}
			n.settleLater(req, late)
			goto decided
		}
		answered[r.from] = true
		switch r.kind {
		case claimMoved:
			ls, err := decodeMoving(r.body)
			if err != nil {
				n.log.Error("cluster: session handed over undecodable", "client", req.ClientID, "from", r.from, "err", err)
				continue
			}
			if got == nil {
				got = ls
			} else {
				n.mergeInto(got, ls)
			}
		case claimNewer:
			lostTo = r.from
		case claimForeign:
			foreign = true
		}
	}
decided:
	n.mu.Lock()
	if lostTo == "" && lc.lostTo != "" {
		lostTo = lc.lostTo // a later claim arrived while ours was out
	}
	if lostTo == "" && !foreign {
		lc.decided, ok = true, true
	}
	n.mu.Unlock()
	switch {
	case foreign:
		n.met.claims.WithLabelValues("foreign").Inc()
		if got != nil {
			_ = n.srv.MergeSession(got, 0) // keep what was handed over
		}
		return nil, linkLost, broker.ErrClaimForeign
	case lostTo != "":
		n.met.claims.WithLabelValues("lost").Inc()
		if got != nil {
			// Handed to us, but a later connect won elsewhere: pass it on.
			if p := n.peer(lostTo); p != nil {
				go n.handoffTo(context.Background(), p, got)
			} else {
				_ = n.srv.MergeSession(got, 0)
			}
		}
		return nil, linkLost, broker.ErrClaimLost
	}
	if got != nil {
		n.met.claims.WithLabelValues("moved").Inc()
	} else {
		n.met.claims.WithLabelValues("none").Inc()
	}
	return got, linkLost, nil
}

// Attached implements broker.SessionDirectory: the CONNECT whose claim
// succeeded is attached (or failed); claims from other nodes for this
// client identifier are answered from the session from now on.
func (dir *directory) Attached(clientID string, stamp uint64) {
	n := (*Node)(dir)
	n.mu.Lock()
	var early []broker.Delivery
	if lc := n.claims[clientID]; lc != nil && lc.stamp == stamp {
		delete(n.claims, clientID)
		close(lc.done)
		early = lc.early
	}
	n.mu.Unlock()
	for _, d := range early {
		n.srv.DeliverToSession(clientID, d) // duplicates dropped (message ids)
	}
}

// settleLater sends a claim that some nodes did not answer in time to
// them as a one-entry session digest, a moment after the CONNECT went
// through: if one of them holds the same client identifier under a later
// claim it answers with its own entry, and the older one gives way.
func (n *Node) settleLater(req broker.ClaimRequest, peers []*peer) {
	if len(peers) == 0 {
		return
	}
	var e Enc
	encodeClaims(&e, []broker.SessionClaim{{ClientID: req.ClientID, Stamp: req.Stamp, Node: req.Node, Online: true}})
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		t := time.NewTimer(500 * time.Millisecond)
		defer t.Stop()
		select {
		case <-t.C:
		case <-n.quit:
			return
		}
		for _, p := range peers {
			if l := p.link(); l != nil {
				l.Send(FrameSessionDigest, e.B, true)
			}
		}
	}()
}

// newRequestN is newRequest with a reply channel large enough for every
// peer's answer.
func (n *Node) newRequestN() (uint64, chan reply) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.nextReq++
	ch := make(chan reply, len(n.peers)+1)
	n.requests[n.nextReq] = ch
	return n.nextReq, ch
}

func claimLater(a uint64, an string, b uint64, bn string) bool {
	if a != b {
		return a > b
	}
	return an > bn
}

// claimBeats reports whether claim a beats claim b for one client
// identifier held on two nodes: a session whose client is connected beats
// one whose client is not (a replica promoted while a split hid its owner,
// whose client stayed connected there, must not take the session from
// under it); otherwise the later claim wins.
func claimBeats(a, b broker.SessionClaim) bool {
	if a.Online != b.Online {
		return a.Online
	}
	return claimLater(a.Stamp, a.Node, b.Stamp, b.Node)
}

// encodeClaims writes a session digest body: a count, then per claim the
// client identifier, stamp, claiming node and whether the client is
// connected.
func encodeClaims(e *Enc, claims []broker.SessionClaim) {
	e.Uvarint(uint64(len(claims)))
	for _, c := range claims {
		e.String(c.ClientID)
		e.U64(c.Stamp)
		e.String(c.Node)
		e.Bool(c.Online)
	}
}

// mergeInto appends to dst the messages of src it does not hold (two
// nodes both had the session).
func (n *Node) mergeInto(dst, src *store.LoadedSession) {
	have := make(map[[2]uint64]bool, len(dst.Messages))
	var maxSeq uint64
	for _, m := range dst.Messages {
		have[[2]uint64{m.Msg.IDNode, m.Msg.IDSeq}] = true
		maxSeq = max(maxSeq, m.Seq)
	}
	for _, m := range src.Messages {
		if have[[2]uint64{m.Msg.IDNode, m.Msg.IDSeq}] {
			continue
		}
		maxSeq++
		mm := m
		mm.Seq = maxSeq
		mm.Msg.PacketID = 0
		mm.Msg.State = store.StateQueued
		dst.Messages = append(dst.Messages, mm)
	}
}

// handleClaim answers another node's claim (in the background: a
// takeover waits for the old connection's teardown).
func (n *Node) handleClaim(l *Link, body []byte) error {
	d := Dec{B: body}
	id := d.U64()
	req := broker.ClaimRequest{ClientID: d.String(), Username: d.String(), Role: d.U8(), Clean: d.Bool(), Stamp: d.U64(), Node: d.String()}
	if d.Err != nil {
		return d.Err
	}
	n.clock.Update(req.Stamp)
	select {
	case n.claimSem <- struct{}{}:
	case <-l.Done():
		return nil
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		defer func() { <-n.claimSem }()
		kind, payload := n.release(req)
		var e Enc
		e.U64(id)
		e.U8(kind)
		e.B = append(e.B, payload...)
		l.Send(FrameClaimReply, e.B, true)
	}()
	return nil
}

// release gives up the local session for a claim from another node.
func (n *Node) release(req broker.ClaimRequest) (uint8, []byte) {
	n.mu.Lock()
	lc := n.claims[req.ClientID]
	var wait chan struct{}
	if lc != nil {
		if claimLater(lc.stamp, lc.node, req.Stamp, req.Node) {
			n.mu.Unlock()
			return claimNewer, nil
		}
		if lc.decided {
			wait = lc.done // our older CONNECT is attaching: take over after
		} else {
			lc.lostTo = req.Node // our older CONNECT in progress loses
		}
	}
	n.mu.Unlock()
	if wait != nil {
		select {
		case <-wait:
		case <-time.After(5 * time.Second):
		case <-n.quit:
		}
	}
	// Forwarding to the claimant starts at the export, before the session
	// leaves the index, so nothing routed here meanwhile is lost (the
	// claimant drops duplicates by message id).
	var ms *movedSub
	var filters []string
	req.Exported = func(ls *store.LoadedSession) { ms, filters = n.subscribeMoved(ls, req.Node) }
	ls, out := n.srv.ReleaseSession(req)
	if out == broker.ReleaseMoved {
		n.keepMoved(ms, filters)
	} else if ms != nil {
		n.unsubscribeMoved(ms, filters)
	}
	if out == broker.ReleaseNone && n.repl != nil {
		// Not here, but perhaps a copy of a session whose owner is gone.
		if rs, gone := n.repl.take(req.ClientID); rs != nil {
			// What its owner completed lately goes with it: a stale copy
			// merged into the claimant later does not bring it back.
			for _, id := range gone {
				rs.Seen = append(rs.Seen, [2]uint64{id.Node, id.Seq})
			}
			if req.Clean {
				return claimEnded, nil
			}
			return claimMoved, encodeMoving(rs)
		}
	}
	switch out {
	case broker.ReleaseMoved:
		return claimMoved, encodeMoving(ls)
	case broker.ReleaseEnded:
		return claimEnded, nil
	case broker.ReleaseNewer:
		return claimNewer, nil
	case broker.ReleaseForeign:
		return claimForeign, nil
	}
	return claimNone, nil
}

// movedSub keeps a session's subscriptions here for a while after the
// session moved to another node, forwarding what is routed to them: a
// node that has not yet learned the session's new routes still sends
// here. The new node drops what it already had (message ids).
type movedSub struct {
	n        *Node
	clientID string
	to       string
}

func (m *movedSub) SubscriberID() string   { return m.clientID }
func (m *movedSub) MayReceive(string) bool { return true }
func (m *movedSub) Online() bool           { return true }
func (m *movedSub) Deliver(d broker.Delivery, _ *broker.Txn, _ int64) {
	p := m.n.peer(m.to)
	if p == nil {
		return
	}
	if l := p.link(); l != nil {
		l.Send(FrameSessionDeliver, encodeSessionDeliver(m.clientID, d), true)
	}
}

// subscribeMoved subscribes a movedSub to a session's filters: from
// before the session is released until the new node has its routes, what
// is routed here for the session goes there.
func (n *Node) subscribeMoved(ls *store.LoadedSession, to string) (*movedSub, []string) {
	if to == "" || to == n.cfg.NodeName {
		return nil, nil
	}
	ms := &movedSub{n: n, clientID: ls.Session.ClientID, to: to}
	var filters []string
	for _, s := range ls.Subscriptions {
		opts := topic.Options{QoS: s.QoS, NoLocal: s.NoLocal, RetainAsPublished: s.RetainAsPublished, ID: s.ID}
		if validRoute(s.Filter) {
			n.srv.SubscribeRemote(ms, s.Filter, opts)
			filters = append(filters, s.Filter)
		}
	}
	return ms, filters
}

func (n *Node) unsubscribeMoved(ms *movedSub, filters []string) {
	for _, f := range filters {
		n.srv.UnsubscribeRemote(ms, f)
	}
}

// keepMoved ends a movedSub after sessionMoveGrace.
func (n *Node) keepMoved(ms *movedSub, filters []string) {
	if ms == nil || len(filters) == 0 {
		return
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		t := time.NewTimer(sessionMoveGrace)
		defer t.Stop()
		select {
		case <-t.C:
		case <-n.quit:
		}
		n.unsubscribeMoved(ms, filters)
	}()
}

// SessionDeliver body: client id | qos u8 | retain bool | subids
// (uvarint n, n uvarints) | group string | message record bytes.
func encodeSessionDeliver(clientID string, d broker.Delivery) []byte {
	var e Enc
	e.String(clientID)
	e.U8(d.QoS)
	e.Bool(d.Retain)
	e.Uvarint(uint64(len(d.SubIDs)))
	for _, id := range d.SubIDs {
		e.Uvarint(uint64(id))
	}
	e.String(d.Group)
	e.Bytes(store.AppendMessage(nil, broker.MessageToRecord(d.Msg)))
	return e.B
}

func (n *Node) handleSessionDeliver(body []byte) error {
	d := Dec{B: body}
	clientID := d.String()
	del := broker.Delivery{QoS: d.U8(), Retain: d.Bool()}
	cnt := d.Uvarint()
	if cnt > 1024 {
		return ErrShortBody
	}
	for range cnt {
		del.SubIDs = append(del.SubIDs, uint32(d.Uvarint()))
	}
	del.Group = d.String()
	rec := d.Bytes()
	if d.Err != nil {
		return d.Err
	}
	var r store.MessageRecord
	if err := store.DecodeMessage(rec, &r); err != nil {
		return err
	}
	del.Msg = broker.MessageFromRecord(&r)
	if del.QoS > 2 {
		return ErrShortBody
	}
	if n.srv.DeliverToSession(clientID, del) {
		return nil
	}
	// Not installed yet: the claim that moves it here is still out.
	n.mu.Lock()
	if lc := n.claims[clientID]; lc != nil && len(lc.early) < maxEarly {
		lc.early = append(lc.early, del)
	}
	n.mu.Unlock()
	return nil
}

// Session digests: sent when a link comes up, so that double ownership
// after a split is resolved.
func (n *Node) sendSessionDigest(l *Link) {
	var e Enc
	encodeClaims(&e, n.srv.SessionClaims())
	l.Send(FrameSessionDigest, e.B, true)
}

// handleSessionDigest settles client ids held both here and by the peer:
// the older claim gives its session (queued messages) to the newer, sent
// back on the link the digest came on.
func (n *Node) handleSessionDigest(l *Link, body []byte) error {
	d := Dec{B: body}
	cnt := d.Uvarint()
	if cnt > uint64(len(body)) {
		return ErrShortBody
	}
	theirs := make([]broker.SessionClaim, 0, cnt)
	for range cnt {
		theirs = append(theirs, broker.SessionClaim{ClientID: d.String(), Stamp: d.U64(), Node: d.String(), Online: d.Bool()})
	}
	if d.Err != nil {
		return d.Err
	}
	mine := make(map[string]broker.SessionClaim)
	for _, c := range n.srv.SessionClaims() {
		mine[c.ClientID] = c
	}
	var lose, held, win []broker.SessionClaim
	for _, c := range theirs {
		m, ok := mine[c.ClientID]
		if !ok || (m.Stamp == 0 && c.Stamp == 0) || (m.Stamp == c.Stamp && m.Node == c.Node) {
			continue // restored on both sides (the next connect decides), or the same claim
		}
		if claimBeats(c, m) {
			lose = append(lose, c)
			held = append(held, m)
		} else if len(theirs) == 1 {
			// A single late claim (settleLater) older than ours: tell the
			// sender, which then gives way.
			win = append(win, m)
		}
	}
	if len(win) > 0 {
		var e Enc
		encodeClaims(&e, win)
		l.Send(FrameSessionDigest, e.B, true)
	}
	if len(lose) == 0 {
		return nil
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		for i, c := range lose {
			// As for a claim: what is routed here for the session after
			// the export is forwarded to the winner for a while.
			var ms *movedSub
			var filters []string
			req := broker.ClaimRequest{ClientID: c.ClientID, Stamp: c.Stamp, Node: c.Node, Force: true,
				Settle: true, HeldStamp: held[i].Stamp, HeldNode: held[i].Node}
			req.Exported = func(ls *store.LoadedSession) { ms, filters = n.subscribeMoved(ls, c.Node) }
			ls, out := n.srv.ReleaseSession(req)
			if out != broker.ReleaseMoved {
				if ms != nil {
					n.unsubscribeMoved(ms, filters)
				}
				continue
			}
			n.keepMoved(ms, filters)
			n.met.claims.WithLabelValues("merged_after_split").Inc()
			n.log.Warn("cluster: client identifier held on two nodes (split); the other node's session wins, queued messages handed to it", "client", c.ClientID, "winner", c.Node)
			var e Enc
			e.Bytes(encodeMoving(ls))
			if !l.Send(FrameSessionMerge, e.B, true) {
				_ = n.srv.MergeSession(ls, 0) // link gone: keep it here
			}
		}
	}()
	return nil
}

func (n *Node) handleSessionMerge(body []byte) error {
	d := Dec{B: body}
	b := d.Bytes()
	if d.Err != nil {
		return d.Err
	}
	ls, err := decodeMoving(b)
	if err != nil {
		return err
	}
	n.absorb(ls)
	return nil
}

// absorb takes a session another node gave up: its messages it does not
// hold go to the session here if there is one (which wins, online or
// offline), else the session is installed.
func (n *Node) absorb(ls *store.LoadedSession) {
	if err := n.srv.MergeSession(ls, sessionDedupWindow); err != nil {
		n.log.Warn("cluster: session given up by another node not merged", "client", ls.Session.ClientID, "err", err)
	}
}

// Drain hands every session to the other nodes and leaves: clients are
// disconnected (v5: 0x8B Server shutting down) and reconnect elsewhere,
// where their session waits. The caller stops accepting connections
// first.
func (n *Node) Drain(ctx context.Context) error {
	n.mu.Lock()
	if n.state == "draining" || n.state == "left" {
		n.mu.Unlock()
		return errors.New("already draining")
	}
	n.state = "draining"
	n.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, n.cfg.DrainTimeout)
	defer cancel()
	n.log.Info("cluster: draining: handing sessions over")
	n.srv.KickAll(0x8B)
	for i := 0; i < 100 && n.srv.ClientCount() > 0; i++ {
		time.Sleep(20 * time.Millisecond)
	}
	moved, kept := 0, 0
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	var mu sync.Mutex
	for _, id := range n.srv.SessionIDs() {
		if ctx.Err() != nil {
			break
		}
		p := n.rendezvous(id)
		if p == nil {
			kept++
			continue
		}
		ls := n.srv.HandOff(id)
		if ls == nil {
			continue
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			ok := n.handoffTo(ctx, p, ls)
			mu.Lock()
			if ok {
				moved++
			} else {
				kept++
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	n.log.Info("cluster: drained", "sessions_moved", moved, "sessions_kept", kept)
	return n.Leave(5 * time.Second)
}

// rendezvous picks the peer (with a link up) a client id's session goes
// to: highest hash of (node, client id), so placement moves minimally when
// nodes come and go.
func (n *Node) rendezvous(clientID string) *peer {
	byName := make(map[string]*peer)
	var names []string
	for _, p := range n.livePeers() {
		if p.link() != nil {
			byName[p.name] = p
			names = append(names, p.name)
		}
	}
	if r := rank(clientID, names); len(r) > 0 {
		return byName[r[0]]
	}
	return nil
}

// handoffTo sends a session to a peer and waits for its answer; on
// failure the session is installed back here.
func (n *Node) handoffTo(ctx context.Context, p *peer, ls *store.LoadedSession) bool {
	id, ch := n.newRequest()
	defer n.endRequest(id)
	var e Enc
	e.U64(id)
	e.Bytes(encodeMoving(ls))
	l := p.link()
	if l != nil && l.Send(FrameHandoff, e.B, true) {
		wctx, cancel := n.waitCtx(ctx, 10*time.Second)
		defer cancel()
		select {
		case r := <-ch:
			if r.kind == 1 {
				n.met.claims.WithLabelValues("handed_off").Inc()
				return true
			}
		case <-wctx.Done():
		}
	}
	_ = n.srv.MergeSession(ls, 0)
	return false
}

func (n *Node) handleHandoff(l *Link, body []byte) error {
	d := Dec{B: body}
	id := d.U64()
	b := d.Bytes()
	if d.Err != nil {
		return d.Err
	}
	ls, err := decodeMoving(b)
	if err != nil {
		return err
	}
	n.absorb(ls)
	var e Enc
	e.U64(id)
	e.U8(1)
	l.Send(FrameHandoffReply, e.B, true)
	return nil
}

// sessionDedupWindow is how long a session that moved here drops
// deliveries it already holds (as the broker's own window).
const sessionDedupWindow = 2 * time.Minute

// maxEarly bounds the deliveries held for a session still moving here.
const maxEarly = 10000

// encodeMoving encodes a session moving to another node (a claim's
// answer, a hand-off, a merge after a split): its snapshot, then the
// message ids of its de-duplication set (LoadedSession.Seen).
func encodeMoving(ls *store.LoadedSession) []byte {
	var e Enc
	e.Bytes(store.EncodeSession(ls))
	e.Uvarint(uint64(len(ls.Seen)))
	for _, id := range ls.Seen {
		e.U64(id[0])
		e.U64(id[1])
	}
	return e.B
}

func decodeMoving(b []byte) (*store.LoadedSession, error) {
	d := Dec{B: b}
	snap := d.Bytes()
	cnt := d.Uvarint()
	if d.Err != nil {
		return nil, d.Err
	}
	if cnt > uint64(d.Len()/16) {
		return nil, ErrShortBody
	}
	ls, err := store.DecodeSession(snap)
	if err != nil {
		return nil, err
	}
	if cnt > 0 {
		ls.Seen = make([][2]uint64, cnt)
		for i := range ls.Seen {
			ls.Seen[i] = [2]uint64{d.U64(), d.U64()}
		}
	}
	if d.Err != nil {
		return nil, d.Err
	}
	return ls, nil
}
