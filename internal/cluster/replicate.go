package cluster

import (
	"hash/fnv"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/isobar-mq/isobar/internal/broker"
	"github.com/isobar-mq/isobar/internal/store"
	"github.com/isobar-mq/isobar/internal/topic"
)

// Replicated sessions. Every persistent session has an owner (the node it
// lives on) and Config.Replicas replica nodes: the first ones, other than
// the owner, in a rendezvous ranking of the client identifier over the
// nodes whose link is up (deterministic, and moving minimally when nodes
// come and go).
//
// The owner ships the session's change stream to its replicas: the
// broker writes every session change into a store.Batch, and the owner's
// store is wrapped (replStore) so that each committed batch's session
// operations (session record, subscriptions, messages with their state,
// inbound QoS 2 ids, deletions) also go to the session's replicas, in
// order. A new replica gets a snapshot first.
//
// With ack: replicated (the default), each replica also subscribes on the
// session's behalf (a standby subscriber: local interest, advertised like
// any other): a QoS 1/2 publish for the session is forwarded to the owner
// and to every replica node, so the publisher's PUBACK/PUBREC waits until
// the owner and the replicas have it. A standby never delivers: it only
// records. The owner's acknowledgements (message deletions) remove the
// replicas' copies; ids deleted recently are remembered so that a late
// standby copy of a message already acknowledged is dropped.
//
// When the owner dies, the first alive node in the session's ranking that
// holds a replica promotes it: the session is installed there (offline,
// with every message), takes over the subscriptions, and gets replicas of
// its own. A client reconnecting anywhere claims it as usual. A replica
// node that receives a claim for a session whose owner is dead hands its
// copy over directly.

// op is one session operation of a batch.
type op struct {
	kind     uint8
	clientID string
	sess     *store.SessionRecord
	sub      *store.SubscriptionRecord
	filter   string
	seq      uint64
	msg      *store.MessageRecord
	packetID uint16
}

const (
	opPutSession uint8 = iota + 1
	opDeleteSession
	opPutSub
	opDeleteSub
	opPutMsg
	opDeleteMsg
	opPutInbound
	opDeleteInbound
)

// replicator holds both sides: what this node ships as an owner and the
// replicas it holds for others.
type replicator struct {
	n       *Node
	k       int
	standby bool

	mu      sync.Mutex
	placed  map[string][]string // owner side: client id -> replica nodes shipped to
	held    map[string]*replica // replica side: client id -> copy
	deleted map[broker.MessageID]int64
	// offline (owner side) is, per offline session owned here, when its
	// client went away: the broker stamps an offline session's record
	// with the time it is written (an export, a later update), and a copy
	// promoted from a record stamped later would expire late.
	offline map[string]int64
	// resyncAsked (replica side): when a snapshot was last asked for a
	// session whose changes arrived with no copy here.
	resyncAsked map[string]time.Time

	shipped   atomic.Uint64
	promoted  atomic.Uint64
	underRepl atomic.Int64
	lagNs     atomic.Int64 // age of the latest operation applied here when it arrived
}

// replica is a copy of another node's session.
type replica struct {
	owner string
	// stamp and claimNode are the owner's claim on the session.
	stamp     uint64
	claimNode string
	sess      store.SessionRecord
	subs      map[string]store.SubscriptionRecord
	msgs      map[uint64]store.MessageRecord // by the owner's sequence number
	ids       map[broker.MessageID]uint64    // id -> owner seq
	extra     []store.MessageRecord          // received by the standby, not (yet) in the owner's stream
	inbound   map[uint16]struct{}
	// gone records the messages the owner completed or dropped lately
	// (id -> when, unix nanos; bounded, pruned after replGoneKeep): a
	// promoted copy does not take them back from a stale copy merged in.
	gone    map[broker.MessageID]int64
	standby *standbySub
	updated time.Time
}

func newReplicator(n *Node, k int, standby bool) *replicator {
	return &replicator{n: n, k: k, standby: standby, placed: make(map[string][]string), offline: make(map[string]int64), resyncAsked: make(map[string]time.Time),
		held: make(map[string]*replica), deleted: make(map[broker.MessageID]int64)}
}

// rank orders nodes for a client id (highest hash first).
func rank(clientID string, nodes []string) []string {
	type hn struct {
		h    uint64
		name string
	}
	hs := make([]hn, 0, len(nodes))
	for _, nm := range nodes {
		h := fnv.New64a()
		_, _ = h.Write([]byte(nm))
		_, _ = h.Write([]byte{0})
		_, _ = h.Write([]byte(clientID))
		// FNV alone ranks nodes alike for ids that differ in their last
		// characters (dev-001, dev-002...): mixed, they spread.
		hs = append(hs, hn{mix64(h.Sum64()), nm})
	}
	slices.SortFunc(hs, func(a, b hn) int {
		switch {
		case a.h > b.h:
			return -1
		case a.h < b.h:
			return 1
		}
		return 0
	})
	out := make([]string, len(hs))
	for i, x := range hs {
		out[i] = x.name
	}
	return out
}

// mix64 is the splitmix64 finalizer: every input bit affects every
// output bit.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// targets are the replica nodes of a session owned here.
func (r *replicator) targets(clientID string) []string {
	var up []string
	for _, p := range r.n.livePeers() {
		if p.link() != nil {
			up = append(up, p.name)
		}
	}
	t := rank(clientID, up)
	if len(t) > r.k {
		t = t[:r.k]
	}
	slices.Sort(t)
	return t
}

// ship sends a committed batch's session operations to the replicas.
func (r *replicator) ship(ops []op) {
	if len(ops) == 0 || r.n.srv == nil {
		return
	}
	for i := range ops {
		r.keepOffline(&ops[i])
	}
	// Group by client id, keeping each one's order.
	var order []string
	by := make(map[string][]op)
	for _, o := range ops {
		if _, ok := by[o.clientID]; !ok {
			order = append(order, o.clientID)
		}
		by[o.clientID] = append(by[o.clientID], o)
	}
	// A QoS 2 delivery's packet identifier must reach the replicas before
	// the owner sends the PUBLISH (after this commit): a replica promoted
	// without it would deliver the message again under a new identifier,
	// a duplicate for the client. The frames are waited for until the
	// kernel has them: they reach the peer even if this process is killed
	// right after.
	var marks *[]linkMark
	for _, o := range ops {
		if o.kind == opPutMsg && o.msg != nil && o.msg.DeliverQoS == 2 {
			marks = new([]linkMark)
			break
		}
	}
	for _, id := range order {
		r.shipOne(id, by[id], marks)
	}
	if marks != nil {
		for _, m := range *marks {
			if !m.l.WaitWritten(m.at, replWriteWait) {
				r.n.log.Debug("cluster: replica change stream not written in time", "node", m.l.Peer().Name)
			}
		}
	}
}

// keepOffline makes a session record shipped while its client stays
// away carry the time it went away (the first offline record since it
// was last online), not the time of the write: a replica promoted from it
// expires the session, and fires a will due with it, when the owner would
// have. An online record or the session's end forgets it.
func (r *replicator) keepOffline(o *op) {
	switch o.kind {
	case opPutSession:
		id := o.sess.ClientID
		r.mu.Lock()
		defer r.mu.Unlock()
		if o.sess.DisconnectedAt == 0 {
			delete(r.offline, id)
			return
		}
		if at, ok := r.offline[id]; ok && at < o.sess.DisconnectedAt {
			rec := *o.sess // the broker's record, also the inner store's
			rec.DisconnectedAt = at
			o.sess = &rec
			return
		}
		r.offline[id] = o.sess.DisconnectedAt
	case opDeleteSession:
		r.mu.Lock()
		delete(r.offline, o.clientID)
		r.mu.Unlock()
	}
}

// linkMark is a position in a link's output (Link.Mark).
type linkMark struct {
	l  *Link
	at uint64
}

// replWriteWait bounds how long a commit with QoS 2 deliveries waits for
// their change stream to be written to the replicas' links (a link stuck
// that long is closed by its write timeout).
const replWriteWait = 2 * time.Second

// sendMarked sends a frame and records where it ends when marks is set.
func sendMarked(l *Link, t FrameType, body []byte, marks *[]linkMark) {
	if l.Send(t, body, true) && marks != nil {
		*marks = append(*marks, linkMark{l, l.Mark()})
	}
}

func (r *replicator) shipOne(clientID string, ops []op, marks *[]linkMark) {
	deleted := false
	for _, o := range ops {
		if o.kind == opDeleteSession {
			deleted = true
		}
	}
	r.mu.Lock()
	prev, placed := r.placed[clientID]
	r.mu.Unlock()
	if placed && !deleted {
		// The common case: the same replicas as before (placement changes
		// only with membership, in rebalance).
		body := r.encodeOps(clientID, ops)
		for _, name := range prev {
			if p := r.n.peer(name); p != nil {
				if l := p.link(); l != nil {
					sendMarked(l, FrameReplOps, body, marks)
				}
			}
		}
		r.shipped.Add(uint64(len(ops)))
		return
	}
	if deleted {
		body := r.encodeOps(clientID, ops)
		for _, name := range prev {
			if p := r.n.peer(name); p != nil {
				if l := p.link(); l != nil {
					sendMarked(l, FrameReplOps, body, marks)
				}
			}
		}
		r.mu.Lock()
		delete(r.placed, clientID)
		r.mu.Unlock()
		return
	}
	// A session new to replication: its replicas get a snapshot.
	now := r.targets(clientID)
	var snap []byte
	for _, name := range now {
		if p := r.n.peer(name); p != nil {
			if l := p.link(); l != nil {
				if snap == nil {
					if snap = r.snapshot(clientID); snap == nil {
						return
					}
				}
				sendMarked(l, FrameReplSnapshot, snap, marks)
			}
		}
	}
	r.mu.Lock()
	r.placed[clientID] = now
	r.mu.Unlock()
	r.shipped.Add(uint64(len(ops)))
}

// snapshot: the session's snapshot | claim stamp, claim node.
func (r *replicator) snapshot(clientID string) []byte {
	ls, ok := r.n.srv.ExportSession(clientID)
	if !ok {
		return nil
	}
	if ls.Session.DisconnectedAt != 0 {
		// Offline: since its client went away, not since this export.
		r.mu.Lock()
		if at, ok := r.offline[clientID]; ok && at < ls.Session.DisconnectedAt {
			ls.Session.DisconnectedAt = at
		}
		r.mu.Unlock()
	}
	stamp, node, _ := r.n.srv.ClaimOf(clientID)
	var e Enc
	e.Bytes(store.EncodeSession(ls))
	e.U64(stamp)
	e.String(node)
	return e.B
}

// accepts reports whether a copy held for owner under claim c may be
// replaced by sender's: its owner's own updates always, another node's
// only with a later claim (a stale former owner, restarted with an old
// copy, never overwrites the live owner's).
func (rep *replica) accepts(sender string, stamp uint64, node string) bool {
	return rep.owner == sender || claimLater(stamp, node, rep.stamp, rep.claimNode)
}

// dropFrom tells the nodes in prev but not in now to drop their copy.
func (r *replicator) dropFrom(clientID string, prev, now []string) {
	for _, name := range prev {
		if slices.Contains(now, name) {
			continue
		}
		if p := r.n.peer(name); p != nil {
			if l := p.link(); l != nil {
				var e Enc
				e.String(clientID)
				l.Send(FrameReplDrop, e.B, true)
			}
		}
	}
}

// rebalance re-places every session owned here (after a membership or
// link change): snapshots to new replicas (and to refresh, a node whose
// link just came back and may have missed changes), drops to former ones.
func (r *replicator) rebalance(refresh string) {
	srv := r.n.srv
	if srv == nil {
		return
	}
	under := int64(0)
	for _, id := range srv.SessionIDs() {
		if !r.persistent(id) {
			continue
		}
		r.mu.Lock()
		prev := r.placed[id]
		r.mu.Unlock()
		now := r.targets(id)
		for _, name := range now {
			if slices.Contains(prev, name) && name != refresh {
				continue
			}
			if p := r.n.peer(name); p != nil {
				if l := p.link(); l != nil {
					if snap := r.snapshot(id); snap != nil {
						l.Send(FrameReplSnapshot, snap, true)
					}
				}
			}
		}
		r.dropFrom(id, prev, now)
		r.mu.Lock()
		r.placed[id] = now
		r.mu.Unlock()
		if len(now) < r.k {
			under++
		}
	}
	r.underRepl.Store(under)
}

// persistent reports whether a session outlives its connection.
func (r *replicator) persistent(clientID string) bool {
	ls, ok := r.n.srv.ExportSession(clientID)
	return ok && ls.Session.ExpiryInterval > 0
}

// Replica side.

func (r *replicator) applySnapshot(owner string, body []byte) error {
	d := Dec{B: body}
	b := d.Bytes()
	stamp, cnode := d.U64(), d.String()
	if d.Err != nil {
		return d.Err
	}
	ls, err := store.DecodeSession(b)
	if err != nil {
		return err
	}
	r.mu.Lock()
	if cur := r.held[ls.Session.ClientID]; cur != nil && !cur.accepts(owner, stamp, cnode) {
		r.mu.Unlock()
		return nil
	}
	r.mu.Unlock()
	rep := &replica{owner: owner, stamp: stamp, claimNode: cnode, sess: ls.Session, subs: make(map[string]store.SubscriptionRecord),
		msgs: make(map[uint64]store.MessageRecord), ids: make(map[broker.MessageID]uint64), inbound: make(map[uint16]struct{}), updated: time.Now()}
	for _, s := range ls.Subscriptions {
		rep.subs[s.Filter] = s
	}
	for _, m := range ls.Messages {
		rep.msgs[m.Seq] = m.Msg
		rep.ids[broker.MessageID{Node: m.Msg.IDNode, Seq: m.Msg.IDSeq}] = m.Seq
	}
	for _, id := range ls.Inbound {
		rep.inbound[id] = struct{}{}
	}
	r.mu.Lock()
	old := r.held[ls.Session.ClientID]
	r.held[ls.Session.ClientID] = rep
	r.mu.Unlock()
	if old != nil {
		r.unstandby(old)
	}
	r.restandby(ls.Session.ClientID, rep)
	return nil
}

// resync answers a replica node that received changes of a session it
// holds no copy of: it gets a snapshot, if the session is still here.
func (r *replicator) resync(from string, l *Link, body []byte) error {
	d := Dec{B: body}
	id := d.String()
	if d.Err != nil {
		return d.Err
	}
	if _, _, ok := r.n.srv.ClaimOf(id); !ok {
		return nil
	}
	r.mu.Lock()
	placed := slices.Contains(r.placed[id], from)
	r.mu.Unlock()
	if !placed {
		return nil // not a replica of it (any more): nothing to send
	}
	snap := r.snapshot(id)
	if snap == nil {
		return nil
	}
	l.Send(FrameReplSnapshot, snap, true)
	r.n.log.Info("cluster: replica resent to a node that had lost it", "client", id, "node", from)
	return nil
}

func (r *replicator) applyDrop(from string, body []byte) error {
	d := Dec{B: body}
	id := d.String()
	if d.Err != nil {
		return d.Err
	}
	r.mu.Lock()
	rep := r.held[id]
	if rep != nil && rep.owner != from {
		// Only the copy's owner drops it: a former or stale holder of the
		// session (restarted from its store, or the loser of a double
		// ownership) rebalancing its own view must not delete the live
		// owner's copy.
		r.mu.Unlock()
		return nil
	}
	delete(r.held, id)
	r.mu.Unlock()
	if rep != nil {
		r.unstandby(rep)
	}
	return nil
}

func (r *replicator) applyOps(owner string, body []byte) error {
	clientID, sent, claim, ops, err := decodeOps(body)
	if err != nil {
		return err
	}
	now := time.Now().UnixNano()
	if lag := now - sent; sent > 0 && lag >= 0 {
		r.lagNs.Store(lag)
	}
	r.mu.Lock()
	rep := r.held[clientID]
	if rep == nil {
		// No copy here (this node restarted, or dropped it): a copy only
		// ever starts from a snapshot, never from a change stream, which
		// would leave out what did not change since (the subscriptions:
		// a copy promoted without them would take no messages). Ask the
		// owner for one, at most once a second per session.
		ask := false
		for _, o := range ops {
			if o.kind != opDeleteSession {
				ask = true
			}
		}
		now := time.Now()
		if ask && now.Sub(r.resyncAsked[clientID]) >= time.Second {
			r.resyncAsked[clientID] = now
		} else {
			ask = false
		}
		r.mu.Unlock()
		if ask {
			if p := r.n.peer(owner); p != nil {
				if l := p.link(); l != nil {
					var e Enc
					e.String(clientID)
					l.Send(FrameReplResync, e.B, true)
				}
			}
		}
		return nil
	}
	if rep != nil && rep.owner != owner {
		// Only the copy's owner changes it (a new owner starts with a
		// snapshot, checked against the claims).
		r.mu.Unlock()
		return nil
	}
	if rep != nil {
		rep.stamp, rep.claimNode = claim.stamp, claim.node
	}
	subsChanged := false
	for _, o := range ops {
		switch o.kind {
		case opPutSession:
			if rep == nil || rep.owner != owner {
				if rep != nil {
					old := rep
					defer r.unstandby(old)
				}
				rep = &replica{owner: owner, stamp: claim.stamp, claimNode: claim.node, subs: make(map[string]store.SubscriptionRecord), msgs: make(map[uint64]store.MessageRecord),
					ids: make(map[broker.MessageID]uint64), inbound: make(map[uint16]struct{})}
				r.held[clientID] = rep
				subsChanged = true
			}
			rep.sess = *o.sess
		case opDeleteSession:
			if rep != nil {
				old := rep
				defer r.unstandby(old)
				delete(r.held, clientID)
				rep = nil
			}
		}
		if rep == nil || o.kind == opPutSession || o.kind == opDeleteSession {
			continue
		}
		switch o.kind {
		case opPutSub:
			rep.subs[o.sub.Filter] = *o.sub
			subsChanged = true
		case opDeleteSub:
			delete(rep.subs, o.filter)
			subsChanged = true
		case opPutMsg:
			rep.msgs[o.seq] = *o.msg
			id := broker.MessageID{Node: o.msg.IDNode, Seq: o.msg.IDSeq}
			rep.ids[id] = o.seq
			rep.extra = slices.DeleteFunc(rep.extra, func(m store.MessageRecord) bool {
				return m.IDNode == id.Node && m.IDSeq == id.Seq
			})
		case opDeleteMsg:
			if m, ok := rep.msgs[o.seq]; ok {
				id := broker.MessageID{Node: m.IDNode, Seq: m.IDSeq}
				delete(rep.ids, id)
				r.deleted[id] = now
				if rep.gone == nil {
					rep.gone = make(map[broker.MessageID]int64)
				}
				if len(rep.gone) < replGoneMax {
					rep.gone[id] = now
				}
			}
			delete(rep.msgs, o.seq)
		case opPutInbound:
			rep.inbound[o.packetID] = struct{}{}
		case opDeleteInbound:
			delete(rep.inbound, o.packetID)
		}
	}
	if rep != nil {
		rep.updated = time.Now()
	}
	r.mu.Unlock()
	if subsChanged && rep != nil {
		r.restandby(clientID, rep)
	}
	return nil
}

// standbySub records, on a replica node, what is routed to the session's
// subscriptions: with it the publisher's acknowledgement waits for the
// replicas too.
type standbySub struct {
	r        *replicator
	clientID string
	mu       sync.Mutex
	filters  map[string]struct{}
}

func (s *standbySub) SubscriberID() string   { return s.clientID }
func (s *standbySub) MayReceive(string) bool { return true }
func (s *standbySub) Online() bool           { return false }
func (s *standbySub) Deliver(d broker.Delivery, _ *broker.Txn, now int64) {
	if d.QoS == 0 {
		return
	}
	r := s.r
	r.mu.Lock()
	defer r.mu.Unlock()
	rep := r.held[s.clientID]
	if rep == nil || rep.standby != s {
		return
	}
	id := d.Msg.ID
	if _, ok := rep.ids[id]; ok {
		return
	}
	if _, ok := r.deleted[id]; ok {
		return
	}
	for i := range rep.extra {
		if rep.extra[i].IDNode == id.Node && rep.extra[i].IDSeq == id.Seq {
			return
		}
	}
	rec := *broker.MessageToRecord(d.Msg)
	rec.DeliverQoS = d.QoS
	rec.DeliverRetain = d.Retain
	rec.SubIDs = d.SubIDs
	rec.State = store.StateQueued
	rep.extra = append(rep.extra, rec)
}

// restandby makes the standby subscriptions follow the replica's
// (non-shared) subscriptions.
func (r *replicator) restandby(clientID string, rep *replica) {
	if !r.standby || r.n.srv == nil {
		return
	}
	r.mu.Lock()
	sb := rep.standby
	if sb == nil {
		sb = &standbySub{r: r, clientID: clientID, filters: make(map[string]struct{})}
		rep.standby = sb
	}
	want := make(map[string]store.SubscriptionRecord)
	for f, s := range rep.subs {
		if _, _, shared := topic.ParseShared(f); !shared && validRoute(f) {
			want[f] = s
		}
	}
	r.mu.Unlock()
	sb.mu.Lock()
	defer sb.mu.Unlock()
	for f := range sb.filters {
		if _, ok := want[f]; !ok {
			r.n.srv.UnsubscribeRemote(sb, f)
			delete(sb.filters, f)
		}
	}
	for f, s := range want {
		if _, ok := sb.filters[f]; !ok {
			r.n.srv.SubscribeRemote(sb, f, topic.Options{QoS: s.QoS, NoLocal: s.NoLocal, RetainAsPublished: s.RetainAsPublished, ID: s.ID})
			sb.filters[f] = struct{}{}
		}
	}
}

func (r *replicator) unstandby(rep *replica) {
	r.mu.Lock()
	sb := rep.standby
	rep.standby = nil
	r.mu.Unlock()
	if sb == nil || r.n.srv == nil {
		return
	}
	sb.mu.Lock()
	defer sb.mu.Unlock()
	for f := range sb.filters {
		r.n.srv.UnsubscribeRemote(sb, f)
	}
	sb.filters = map[string]struct{}{}
}

// loaded builds the session a replica stands for: the owner's state plus
// what the standby received that the owner's stream had not confirmed.
func (rep *replica) loaded() *store.LoadedSession {
	ls := &store.LoadedSession{Session: rep.sess}
	for _, s := range rep.subs {
		ls.Subscriptions = append(ls.Subscriptions, s)
	}
	var maxSeq uint64
	for seq, m := range rep.msgs {
		ls.Messages = append(ls.Messages, store.SeqMessage{Seq: seq, Msg: m})
		maxSeq = max(maxSeq, seq)
	}
	slices.SortFunc(ls.Messages, func(a, b store.SeqMessage) int {
		switch {
		case a.Seq < b.Seq:
			return -1
		case a.Seq > b.Seq:
			return 1
		}
		return 0
	})
	// What only the standby has gets packet identifiers the session does
	// not use (a restored QoS 1/2 message needs one).
	used := make(map[uint16]bool, len(rep.msgs))
	for _, m := range rep.msgs {
		used[m.PacketID] = true
	}
	next := rep.sess.NextPacketID
	for _, m := range rep.extra {
		if len(used) >= 65535 {
			break // no identifier left: the session is full
		}
		for {
			next++
			if next != 0 && !used[next] {
				break
			}
		}
		used[next] = true
		maxSeq++
		m.PacketID = next
		m.State = store.StateQueued
		ls.Messages = append(ls.Messages, store.SeqMessage{Seq: maxSeq, Msg: m})
	}
	ls.Session.NextPacketID = next
	for id := range rep.inbound {
		ls.Inbound = append(ls.Inbound, id)
	}
	slices.Sort(ls.Inbound)
	slices.SortFunc(ls.Subscriptions, func(a, b store.SubscriptionRecord) int {
		switch {
		case a.Filter < b.Filter:
			return -1
		case a.Filter > b.Filter:
			return 1
		}
		return 0
	})
	return ls
}

// take removes and returns the copy of a session whose owner is gone,
// with the messages its owner completed lately (see replica.gone).
func (r *replicator) take(clientID string) (*store.LoadedSession, []broker.MessageID) {
	r.mu.Lock()
	rep := r.held[clientID]
	if rep == nil {
		r.mu.Unlock()
		return nil, nil
	}
	if p := r.n.peer(rep.owner); p != nil && p.link() != nil {
		r.mu.Unlock()
		return nil, nil // its owner is reachable: it answers for the session
	}
	delete(r.held, clientID)
	gone := rep.goneIDs()
	r.mu.Unlock()
	r.unstandby(rep)
	r.promoted.Add(1)
	return rep.loaded(), gone
}

// ownerGone promotes the copies of a dead node's sessions this node is
// first in line for.
func (r *replicator) ownerGone(owner string) {
	var alive []string
	alive = append(alive, r.n.cfg.NodeName)
	for _, p := range r.n.livePeers() {
		if p.name != owner {
			alive = append(alive, p.name)
		}
	}
	r.mu.Lock()
	var mine []string
	for id, rep := range r.held {
		if rep.owner == owner {
			if rk := rank(id, alive); len(rk) > 0 && rk[0] == r.n.cfg.NodeName {
				mine = append(mine, id)
			}
		}
	}
	r.mu.Unlock()
	for _, id := range mine {
		if ls, gone := r.take(id); ls != nil {
			if err := r.n.srv.MergeSession(ls, sessionDedupWindow); err != nil {
				r.n.log.Warn("cluster: replica not promoted", "client", id, "err", err)
				continue
			}
			r.n.srv.MarkSeen(id, gone, sessionDedupWindow)
			// Claimed by this node now: later than the dead owner's.
			r.n.srv.StampClaim(id, r.n.clock.Now(), r.n.cfg.NodeName)
			r.n.log.Info("cluster: session promoted from its replica (owner gone)", "client", id, "owner", owner)
		}
	}
}

// prune forgets old acknowledgement ids.
func (r *replicator) prune() {
	cut := time.Now().Add(-replGoneKeep).UnixNano()
	r.mu.Lock()
	for id, at := range r.deleted {
		if at < cut {
			delete(r.deleted, id)
		}
	}
	for id, at := range r.resyncAsked {
		if time.Since(at) > time.Minute {
			delete(r.resyncAsked, id)
		}
	}
	for _, rep := range r.held {
		for id, at := range rep.gone {
			if at < cut {
				delete(rep.gone, id)
			}
		}
	}
	r.mu.Unlock()
}

// A copy remembers the messages its owner completed for replGoneKeep (as
// long as a promoted session's de-duplication window), at most
// replGoneMax of them.
const (
	replGoneKeep = sessionDedupWindow
	replGoneMax  = 1 << 14
)

// goneIDs lists a copy's recently completed messages.
func (rep *replica) goneIDs() []broker.MessageID {
	out := make([]broker.MessageID, 0, len(rep.gone))
	for id := range rep.gone {
		out = append(out, id)
	}
	return out
}

func (r *replicator) counts() (held, placed int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.held), len(r.placed)
}

// heldMessages counts the messages in the copies held here.
func (r *replicator) heldMessages() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, rep := range r.held {
		n += len(rep.msgs) + len(rep.extra)
	}
	return n
}

// Op encoding: client id | n | n x (kind u8, fields).

// encodeOps: sent time | client id | claim stamp, claim node | n ops.
func (r *replicator) encodeOps(clientID string, ops []op) []byte {
	stamp, node, _ := r.n.srv.ClaimOf(clientID)
	var e Enc
	e.U64(uint64(time.Now().UnixNano())) // when shipped: the replica's lag
	e.String(clientID)
	e.U64(stamp)
	e.String(node)
	e.Uvarint(uint64(len(ops)))
	for _, o := range ops {
		e.U8(o.kind)
		switch o.kind {
		case opPutSession:
			e.Bytes(store.EncodeSession(&store.LoadedSession{Session: *o.sess}))
		case opPutSub:
			s := o.sub
			e.String(s.Filter)
			e.U8(s.QoS)
			e.Bool(s.NoLocal)
			e.Bool(s.RetainAsPublished)
			e.U8(s.RetainHandling)
			e.U32(s.ID)
		case opDeleteSub:
			e.String(o.filter)
		case opPutMsg:
			e.U64(o.seq)
			e.Bytes(store.AppendMessage(nil, o.msg))
		case opDeleteMsg:
			e.U64(o.seq)
		case opPutInbound, opDeleteInbound:
			e.U16(o.packetID)
		}
	}
	return e.B
}

func decodeOps(body []byte) (string, int64, localClaim, []op, error) {
	d := Dec{B: body}
	sent := int64(d.U64())
	clientID := d.String()
	claim := localClaim{stamp: d.U64(), node: d.String()}
	cnt := d.Uvarint()
	if d.Err != nil {
		return "", 0, localClaim{}, nil, d.Err
	}
	if cnt > uint64(len(body)) {
		return "", 0, localClaim{}, nil, ErrShortBody
	}
	ops := make([]op, 0, cnt)
	for range cnt {
		o := op{kind: d.U8(), clientID: clientID}
		switch o.kind {
		case opPutSession:
			ls, err := store.DecodeSession(d.Bytes())
			if err != nil {
				return "", 0, localClaim{}, nil, err
			}
			o.sess = &ls.Session
		case opDeleteSession:
		case opPutSub:
			o.sub = &store.SubscriptionRecord{Filter: d.String(), QoS: d.U8(), NoLocal: d.Bool(), RetainAsPublished: d.Bool(), RetainHandling: d.U8(), ID: d.U32()}
		case opDeleteSub:
			o.filter = d.String()
		case opPutMsg:
			o.seq = d.U64()
			var m store.MessageRecord
			if err := store.DecodeMessage(d.Bytes(), &m); err != nil {
				return "", 0, localClaim{}, nil, err
			}
			o.msg = &m
		case opDeleteMsg:
			o.seq = d.U64()
		case opPutInbound, opDeleteInbound:
			o.packetID = d.U16()
		default:
			return "", 0, localClaim{}, nil, ErrShortBody
		}
		if d.Err != nil {
			return "", 0, localClaim{}, nil, d.Err
		}
		ops = append(ops, o)
	}
	return clientID, sent, claim, ops, nil
}

// The store wrapper: the owner's change stream.

// WrapStore returns the store the broker must use so that session changes
// reach the replicas (inner may be nil: a memory-only node still
// replicates). It returns inner unchanged when replication is off.
func (n *Node) WrapStore(inner store.Store) store.Store {
	if n.repl == nil {
		return inner
	}
	if inner == nil {
		inner = nullStore{}
	}
	return &replStore{inner: inner, r: n.repl}
}

type replStore struct {
	inner store.Store
	r     *replicator
}

func (s *replStore) NewBatch() store.Batch { return &replBatch{inner: s.inner.NewBatch(), r: s.r} }
func (s *replStore) LoadSessions(fn func(*store.LoadedSession) error) error {
	return s.inner.LoadSessions(fn)
}
func (s *replStore) LoadRetained(fn func(*store.MessageRecord) error) error {
	return s.inner.LoadRetained(fn)
}
func (s *replStore) Stats() store.Stats { return s.inner.Stats() }
func (s *replStore) Writable() error    { return s.inner.Writable() }
func (s *replStore) Close() error       { return s.inner.Close() }

type replBatch struct {
	inner store.Batch
	r     *replicator
	ops   []op
}

func (b *replBatch) PutSession(s *store.SessionRecord) {
	b.inner.PutSession(s)
	b.ops = append(b.ops, op{kind: opPutSession, clientID: s.ClientID, sess: s})
}
func (b *replBatch) DeleteSession(id string) {
	b.inner.DeleteSession(id)
	b.ops = append(b.ops, op{kind: opDeleteSession, clientID: id})
}
func (b *replBatch) PutSubscription(id string, s *store.SubscriptionRecord) {
	b.inner.PutSubscription(id, s)
	b.ops = append(b.ops, op{kind: opPutSub, clientID: id, sub: s})
}
func (b *replBatch) DeleteSubscription(id, f string) {
	b.inner.DeleteSubscription(id, f)
	b.ops = append(b.ops, op{kind: opDeleteSub, clientID: id, filter: f})
}
func (b *replBatch) PutMessage(id string, seq uint64, m *store.MessageRecord) {
	b.inner.PutMessage(id, seq, m)
	b.ops = append(b.ops, op{kind: opPutMsg, clientID: id, seq: seq, msg: m})
}
func (b *replBatch) DeleteMessage(id string, seq uint64) {
	b.inner.DeleteMessage(id, seq)
	b.ops = append(b.ops, op{kind: opDeleteMsg, clientID: id, seq: seq})
}
func (b *replBatch) PutInbound(id string, pid uint16) {
	b.inner.PutInbound(id, pid)
	b.ops = append(b.ops, op{kind: opPutInbound, clientID: id, packetID: pid})
}
func (b *replBatch) DeleteInbound(id string, pid uint16) {
	b.inner.DeleteInbound(id, pid)
	b.ops = append(b.ops, op{kind: opDeleteInbound, clientID: id, packetID: pid})
}
func (b *replBatch) PutRetained(m *store.MessageRecord) { b.inner.PutRetained(m) }
func (b *replBatch) DeleteRetained(t string)            { b.inner.DeleteRetained(t) }
func (b *replBatch) Len() int                           { return b.inner.Len() }
func (b *replBatch) Commit() error                      { return b.done(b.inner.Commit()) }
func (b *replBatch) CommitNoSync() error                { return b.done(b.inner.CommitNoSync()) }

func (b *replBatch) done(err error) error {
	if err == nil {
		b.r.ship(b.ops)
	}
	clear(b.ops)
	b.ops = b.ops[:0]
	return err
}

// nullStore is the store of a memory-only node that replicates: it keeps
// nothing, but its batches carry the change stream.
type nullStore struct{}

func (nullStore) NewBatch() store.Batch                               { return &nullBatch{} }
func (nullStore) LoadSessions(func(*store.LoadedSession) error) error { return nil }
func (nullStore) LoadRetained(func(*store.MessageRecord) error) error { return nil }
func (nullStore) Stats() store.Stats                                  { return store.Stats{} }
func (nullStore) Writable() error                                     { return nil }
func (nullStore) Close() error                                        { return nil }

type nullBatch struct{ n int }

func (b *nullBatch) PutSession(*store.SessionRecord)                   { b.n++ }
func (b *nullBatch) DeleteSession(string)                              { b.n++ }
func (b *nullBatch) PutSubscription(string, *store.SubscriptionRecord) { b.n++ }
func (b *nullBatch) DeleteSubscription(string, string)                 { b.n++ }
func (b *nullBatch) PutMessage(string, uint64, *store.MessageRecord)   { b.n++ }
func (b *nullBatch) DeleteMessage(string, uint64)                      { b.n++ }
func (b *nullBatch) PutInbound(string, uint16)                         { b.n++ }
func (b *nullBatch) DeleteInbound(string, uint16)                      { b.n++ }
func (b *nullBatch) PutRetained(*store.MessageRecord)                  { b.n++ }
func (b *nullBatch) DeleteRetained(string)                             { b.n++ }
func (b *nullBatch) Len() int                                          { return b.n }
func (b *nullBatch) Commit() error                                     { b.n = 0; return nil }
func (b *nullBatch) CommitNoSync() error                               { b.n = 0; return nil }
