package broker

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/isobar-mq/isobar/internal/hlc"
	"github.com/isobar-mq/isobar/internal/store"
	"github.com/isobar-mq/isobar/internal/topic"
)

// The cluster seams: what internal/cluster needs from the broker, and
// nothing protocol-specific. A cluster node is told about its local
// interest (InterestObserver), stands for other nodes in the router
// (RemoteSubscriber), injects what other nodes forward (Forwarder),
// replicates retained messages (RetainObserver, ApplyRetained), and keeps
// client identifiers unique across nodes (SessionDirectory,
// ReleaseSession, DeliverToSession).

// RemoteSubscriber is a Subscriber standing for another node: its
// subscriptions are not local interest (they are not reported to the
// InterestObserver), shared groups prefer local members over it, and
// messages forwarded from other nodes never go to it (a message crosses at
// most one node-to-node link).
type RemoteSubscriber interface {
	Subscriber
	RemoteNode() string
}

func isRemote(s Subscriber) bool {
	_, ok := s.(RemoteSubscriber)
	return ok
}

// InterestObserver is told when the set of distinct filters held by this
// node's own subscribers (sessions, internal subscribers; not remote
// nodes) changes: added when a filter gets its first subscriber, removed
// when it loses its last. Shared subscriptions are reported with their
// full "$share/group/filter" form. Calls are serialized and made with an
// internal lock held: they must not block nor call back into the Server.
type InterestObserver interface {
	InterestChanged(filter string, added bool)
}

// interest counts local subscribers per filter, when an observer is set.
type interest struct {
	mu     sync.Mutex
	counts map[string]int
}

func (s *Server) indexSubscribe(sub Subscriber, filter string, opts topic.Options) {
	existed := s.index.Subscribe(sub, filter, opts)
	if !existed && s.opts.Interest != nil && !isRemote(sub) {
		s.interest.mu.Lock()
		s.interest.counts[filter]++
		if s.interest.counts[filter] == 1 {
			s.opts.Interest.InterestChanged(filter, true)
		}
		s.interest.mu.Unlock()
	}
}

func (s *Server) indexUnsubscribe(sub Subscriber, filter string) bool {
	existed := s.index.Unsubscribe(sub, filter)
	if existed && s.opts.Interest != nil && !isRemote(sub) {
		s.interest.mu.Lock()
		if n := s.interest.counts[filter]; n <= 1 {
			delete(s.interest.counts, filter)
			if n == 1 {
				s.opts.Interest.InterestChanged(filter, false)
			}
		} else {
			s.interest.counts[filter] = n - 1
		}
		s.interest.mu.Unlock()
	}
	return existed
}

// InterestSnapshot calls fn with the current local interest (sorted),
// while no change can be reported: a change made after the snapshot is
// reported to the observer after fn returns. fn must not block.
func (s *Server) InterestSnapshot(fn func(filters []string)) {
	s.interest.mu.Lock()
	defer s.interest.mu.Unlock()
	out := make([]string, 0, len(s.interest.counts))
	for f := range s.interest.counts {
		out = append(out, f)
	}
	slices.Sort(out)
	fn(out)
}

// InterestCount is the number of distinct filters of local interest.
func (s *Server) InterestCount() int {
	s.interest.mu.Lock()
	defer s.interest.mu.Unlock()
	return len(s.interest.counts)
}

// SubscribeRemote adds (or replaces) a subscription of a remote node (or of
// any cluster-internal subscriber) to the index, with no ACL, no retained
// delivery and no limits: the node's own sessions were checked where they
// live. UnsubscribeRemote removes it.
func (s *Server) SubscribeRemote(sub Subscriber, filter string, opts topic.Options) {
	s.indexSubscribe(sub, filter, opts)
}

// UnsubscribeRemote removes a subscription added by SubscribeRemote.
func (s *Server) UnsubscribeRemote(sub Subscriber, filter string) bool {
	return s.indexUnsubscribe(sub, filter)
}

// Forwarder injects messages forwarded by other nodes: they go to this
// node's own subscribers only (never to remote nodes), and to one local
// member of each shared group the sending node picked this node for. No
// ACL, no hooks, no retained update (retained messages are replicated
// with ApplyRetained): all of that happened on the node the message
// entered. Like a Publisher it batches: done callbacks run after the
// commit that makes the deliveries durable. One goroutine at a time.
type Forwarder struct {
	srv *Server
	sc  routeScratch
	tx  *Txn
	n   int
}

// NewForwarder returns a Forwarder.
func (s *Server) NewForwarder() *Forwarder {
	return &Forwarder{srv: s, tx: s.newTxn()}
}

// Forward routes m (which the Forwarder takes ownership of) to local
// subscribers (when plain) and to the listed shared groups ("group/filter"
// as in Delivery.Group). done (may be nil) gets the outcome after the
// next Flush.
func (f *Forwarder) Forward(m *Message, plain bool, groups []string, done func(PublishResult)) error {
	s := f.srv
	if s.isClosed() {
		return ErrServerClosed
	}
	if err := topic.ValidateName(m.Topic, 0, -1); err != nil || m.QoS > 2 {
		return ErrInvalidForward
	}
	if m.Received == 0 {
		m.Received = time.Now().UnixNano()
	}
	m.Props.Present &= messagePropMask
	s.stats.forwardedIn.Add(1)
	f.sc.localOnly = true
	f.sc.skipPlain = !plain
	f.sc.groups = groups
	n := s.route(m, &f.sc, f.tx)
	f.sc.groups = nil
	if done != nil {
		f.tx.Then(func(err error) { done(PublishResult{Routed: n, Err: err}) })
	}
	f.n++
	if f.n >= 256 {
		return f.Flush()
	}
	return nil
}

// Flush commits and runs the pending done callbacks.
func (f *Forwarder) Flush() error {
	f.n = 0
	return f.tx.commit(f.srv)
}

// ErrInvalidForward is returned for a forwarded message that could not
// have been accepted by any node (bad topic or QoS).
var ErrInvalidForward = errors.New("invalid forwarded message")

// RedispatchShared hands a shared-subscription delivery that a member
// (from) will not complete, e.g. a remote node that died before
// acknowledging it, to another member of its group (local members
// first). It returns once the new delivery is durable, reporting whether a
// member took it.
func (s *Server) RedispatchShared(d Delivery, from Subscriber) bool {
	tx := s.newTxn()
	taken := true
	s.dispatchShared(d, from, tx, func(Delivery, *Txn) { taken = false })
	_ = tx.commit(s)
	return taken
}

// RetainObserver is told about every retained-message change made on
// this node (a publish with the retain flag, a deletion by an empty
// payload or the API), with its stamp: m.Payload is empty for a deletion.
// Not called for changes applied with ApplyRetained, nor for $SYS topics.
// Called from the publishing goroutine; it must not block.
type RetainObserver interface {
	RetainedChanged(m *Message)
}

// RetainedNewer reports whether version a of a retained message wins
// over b: the higher stamp, then the higher node id.
func RetainedNewer(aStamp, aNode, bStamp, bNode uint64) bool {
	if aStamp != bStamp {
		return aStamp > bStamp
	}
	return aNode > bNode
}

// retVersion is the version (stamp, node) of a retained-message deletion.
type retVersion struct{ stamp, node uint64 }

// retTombTTL is how long the version of a retained-message deletion is
// remembered, so that an older version arriving later (from a peer that
// missed the deletion) loses to it as it would to a message.
const retTombTTL = 24 * time.Hour

// tombLocked remembers the deletion m (clustered servers only). Requires
// retMu.
func (s *Server) tombLocked(m *Message) {
	if s.hclock == nil {
		return
	}
	if s.retTomb == nil {
		s.retTomb = make(map[string]retVersion)
	}
	if tv, ok := s.retTomb[m.Topic]; !ok || RetainedNewer(m.Stamp, m.ID.Node, tv.stamp, tv.node) {
		s.retTomb[m.Topic] = retVersion{m.Stamp, m.ID.Node}
	}
}

// pruneTombs forgets deletions older than retTombTTL.
func (s *Server) pruneTombs(now time.Time) {
	s.retMu.Lock()
	for t, tv := range s.retTomb {
		if now.Sub(hlc.Time(tv.stamp)) > retTombTTL {
			delete(s.retTomb, t)
		}
	}
	s.retMu.Unlock()
}

// setRetainedLocal records a local retained change: stamped, stored and
// reported. Requires nothing; takes retMu.
func (s *Server) setRetainedLocal(m *Message, tx *Txn) {
	s.retMu.Lock()
	if s.hclock != nil {
		m.Stamp = s.hclock.Now()
	}
	if len(m.Payload) == 0 {
		s.retained.Delete(m.Topic) // [MQTT-3.3.1-6]
		s.tombLocked(m)
		if tx.Durable() {
			tx.batch.DeleteRetained(m.Topic)
		}
	} else {
		s.retained.Set(m.Topic, m)
		delete(s.retTomb, m.Topic)
		// $SYS values are recomputed at every start: not stored.
		if tx.Durable() && !isSys(m.Topic) {
			r := messageRecord(m)
			r.Retain = true
			tx.batch.PutRetained(r)
		}
	}
	s.retMu.Unlock()
	if o := s.opts.Retained; o != nil && !isSys(m.Topic) {
		o.RetainedChanged(m)
	}
}

func isSys(t string) bool { return len(t) >= 5 && t[:5] == "$SYS/" }

// ApplyRetained applies a retained-message version from another node if
// it is newer (RetainedNewer) than the one held here: set, or deleted when
// m.Payload is empty. It reports whether it applied it. The change is
// stored; it is not reported to the RetainObserver.
func (s *Server) ApplyRetained(m *Message) bool {
	if s.opts.DisableRetain || topic.ValidateName(m.Topic, 0, -1) != nil || isSys(m.Topic) {
		return false
	}
	if s.hclock != nil && s.hclock.Update(m.Stamp) < m.Stamp {
		// Beyond what the clock adopts (hlc.MaxSkew ahead): a broken
		// clock's version would beat every later local change here, and
		// the peers would refuse those.
		return false
	}
	m.Retain = true
	m.Props.Present &= messagePropMask
	tx := s.newTxn()
	s.retMu.Lock()
	cur, ok := s.retained.Get(m.Topic)
	if ok && !RetainedNewer(m.Stamp, m.ID.Node, cur.Stamp, cur.ID.Node) {
		s.retMu.Unlock()
		return false
	}
	if tv, dead := s.retTomb[m.Topic]; !ok && dead && !RetainedNewer(m.Stamp, m.ID.Node, tv.stamp, tv.node) {
		s.retMu.Unlock()
		return false // deleted by a later version
	}
	if len(m.Payload) == 0 {
		s.tombLocked(m) // even with nothing held: older versions lose to it
		if !ok {
			s.retMu.Unlock()
			return false
		}
		s.retained.Delete(m.Topic)
		if tx.Durable() {
			tx.batch.DeleteRetained(m.Topic)
		}
	} else {
		s.retained.Set(m.Topic, m)
		delete(s.retTomb, m.Topic)
		if tx.Durable() {
			r := messageRecord(m)
			r.Retain = true
			tx.batch.PutRetained(r)
		}
	}
	s.retMu.Unlock()
	_ = tx.commit(s)
	return true
}

// RetainedSnapshot calls fn for every retained message except $SYS ones,
// until fn returns false.
func (s *Server) RetainedSnapshot(fn func(m *Message) bool) {
	s.retained.Range(func(t string, m *Message) bool {
		if isSys(t) {
			return true
		}
		return fn(m)
	})
}

// Clock returns the server's hybrid logical clock (Options.Clock, or nil).
func (s *Server) Clock() *hlc.Clock { return s.hclock }

// ClaimRequest describes a CONNECT to the SessionDirectory.
type ClaimRequest struct {
	ClientID string
	Username string
	Role     uint8
	// Clean is the Clean Start / Clean Session flag.
	Clean bool
	// Stamp orders concurrent connects of one client identifier across
	// the cluster (with Node to break ties): the later one wins.
	Stamp uint64
	Node  string
	// Force skips the owner check (a session another node of the cluster
	// holds under the same claim rules, e.g. after a split).
	Force bool
	// KeepWill exports a pending will with the session (a hand-over with
	// no new connection, e.g. a drain: the will is still due).
	KeepWill bool
	// Settle releases the session only while it holds exactly the claim
	// (HeldStamp, HeldNode), whatever the order of the claims: the cluster
	// decided that this session loses to the requester's (a session
	// digest after a split), unless it was claimed anew meanwhile.
	Settle    bool
	HeldStamp uint64
	HeldNode  string
	// Exported, if set, is called by ReleaseSession with the export, after
	// the old connection ended and before the session leaves the index:
	// what is routed to the session from then on can be caught (and sent
	// after it). It runs with the server's lock held: it may subscribe in
	// the index, nothing more.
	Exported func(*store.LoadedSession)
}

// Errors a SessionDirectory returns to refuse a CONNECT.
var (
	// ErrClaimLost: a concurrent connect of the same client identifier
	// on another node won (v5 0x89 Server busy, v3 return code 3).
	ErrClaimLost = errors.New("client identifier claimed concurrently on another node")
	// ErrClaimForeign: the session belongs to another user (v5 0x87, v3 5).
	ErrClaimForeign = errors.New("client identifier belongs to another user")
)

// SessionDirectory keeps client identifiers unique across a cluster. Claim
// is called for every CONNECT, after authentication and before the local
// session is looked up; it returns the session another node handed over
// (nil if none), which the server then installs in place of any local one.
type SessionDirectory interface {
	Claim(ctx context.Context, req ClaimRequest) (*store.LoadedSession, error)
	// Attached is called once the CONNECT whose Claim succeeded is
	// attached to its session (or failed to), with the claim's stamp.
	Attached(clientID string, stamp uint64)
}

// ReleaseOutcome says what ReleaseSession did.
type ReleaseOutcome uint8

// Release outcomes.
const (
	ReleaseNone    ReleaseOutcome = iota // no session here
	ReleaseMoved                         // exported and removed here (returned)
	ReleaseEnded                         // clean start: ended here (will handled)
	ReleaseNewer                         // this node's connection is the newer claim: kept
	ReleaseForeign                       // owned by another user: kept
)

// ReleaseSession gives up this node's session of req.ClientID for a
// CONNECT on another node: the connected client (if any) is disconnected
// (v5 DISCONNECT 0x8E Session taken over) and its connection teardown
// completes (will handled per [MQTT-3.1.3-9]); then, for a clean start,
// the session ends here; otherwise it is exported, removed (without
// publishing a delayed will: a new connection is opening) and returned.
// A session whose current connection's claim is newer than req is kept.
func (s *Server) ReleaseSession(req ClaimRequest) (*store.LoadedSession, ReleaseOutcome) {
	for range 3 {
		s.mu.Lock()
		sess := s.sessions[req.ClientID]
		if sess == nil {
			s.mu.Unlock()
			return nil, ReleaseNone
		}
		if !req.Force && s.auth != nil && !s.opts.AllowForeignTakeover && owner(sess.username(), uint8(sess.role.Load())) != owner(req.Username, req.Role) {
			s.mu.Unlock()
			s.stats.takeoversRefused.Add(1)
			return nil, ReleaseForeign
		}
		sess.mu.Lock()
		c := sess.client
		stamp, node := sess.claimStamp, sess.claimNode
		sess.mu.Unlock()
		if req.Settle {
			if stamp != req.HeldStamp || node != req.HeldNode {
				s.mu.Unlock()
				return nil, ReleaseNewer
			}
		} else if stamp != 0 && claimAfter(stamp, node, req.Stamp, req.Node) {
			s.mu.Unlock()
			return nil, ReleaseNewer
		}
		if c != nil {
			s.mu.Unlock()
			s.stats.takeovers.Add(1)
			c.kick(0x8E, errTakenOver) // Session taken over
			select {
			case <-c.done:
			case <-time.After(5 * time.Second):
				_ = c.conn.Close()
				<-c.done
			}
			continue
		}
		tx := s.newTxn()
		if req.Clean {
			s.endSessionLocked(sess, tx)
			s.mu.Unlock()
			_ = tx.commit(s)
			s.sessionEvent(SessionEnded, sess.id, sess.username())
			return nil, ReleaseEnded
		}
		sess.mu.Lock()
		if !req.KeepWill {
			// A new connection opens before the will delay passed: the
			// will is not sent [MQTT-3.1.3-9].
			sess.will = nil
		}
		ls := sess.exportLocked() // with a pending will (KeepWill): the new node keeps its timer
		if sess.willTimer != nil {
			sess.willTimer.Stop()
			sess.willTimer = nil
		}
		sess.will = nil
		sess.mu.Unlock()
		if req.Exported != nil {
			req.Exported(ls)
		}
		// Removed without a will and without counting its messages as
		// dropped: they travel with the export.
		delete(s.sessions, sess.id)
		sess.mu.Lock()
		sess.ended = true
		for f := range sess.subs {
			s.indexUnsubscribe(sess, f)
		}
		sess.subs = nil
		if sess.expiryTimer != nil {
			sess.expiryTimer.Stop()
		}
		sess.releaseAllLocked()
		sess.queue, sess.msgs = nil, nil
		if sess.stored && tx.Durable() {
			tx.batch.DeleteSession(sess.id)
			sess.stored = false
		}
		sess.mu.Unlock()
		s.mu.Unlock()
		_ = tx.commit(s)
		s.stats.sessionsMovedOut.Add(1)
		s.sessionEvent(SessionTakenOver, sess.id, sess.username())
		return ls, ReleaseMoved
	}
	return nil, ReleaseNewer
}

// claimAfter reports whether claim (a, an) is later than (b, bn).
func claimAfter(a uint64, an string, b uint64, bn string) bool {
	if a != b {
		return a > b
	}
	return an > bn
}

// SessionClaim is one session's ownership claim, for the digest nodes
// exchange after a split heals.
type SessionClaim struct {
	ClientID string
	Stamp    uint64
	Node     string
	Online   bool
}

// SessionClaims lists the sessions held here with their claims.
func (s *Server) SessionClaims() []SessionClaim {
	s.mu.Lock()
	out := make([]SessionClaim, 0, len(s.sessions))
	for _, sess := range s.sessions {
		sess.mu.Lock()
		out = append(out, SessionClaim{ClientID: sess.id, Stamp: sess.claimStamp, Node: sess.claimNode, Online: sess.client != nil})
		sess.mu.Unlock()
	}
	s.mu.Unlock()
	return out
}

// AdoptSession installs a session handed over by another node, replacing
// a local one (which is discarded: the other node's was the live one).
// Deliveries to it for the next dedupWindow are checked against the
// message ids it already holds and received, so that a message reaching
// it both directly and through the node it moved from counts once.
func (s *Server) AdoptSession(ls *store.LoadedSession, dedupWindow time.Duration) error {
	s.mu.Lock()
	old := s.sessions[ls.Session.ClientID]
	if old != nil {
		old.mu.Lock()
		online := old.client != nil
		old.mu.Unlock()
		if online {
			s.mu.Unlock()
			return ErrSessionExists
		}
		tx := s.newTxn()
		s.endSessionLocked(old, tx)
		s.mu.Unlock()
		_ = tx.commit(s)
	} else {
		s.mu.Unlock()
	}
	if err := s.ImportSession(ls); err != nil {
		return err
	}
	s.stats.sessionsMovedIn.Add(1)
	if dedupWindow > 0 {
		s.mu.Lock()
		sess := s.sessions[ls.Session.ClientID]
		s.mu.Unlock()
		if sess != nil {
			sess.mu.Lock()
			sess.seen = make(map[MessageID]struct{}, len(sess.msgs))
			for _, m := range sess.msgs {
				sess.seen[m.d.Msg.ID] = struct{}{}
			}
			for _, m := range sess.queue {
				sess.seen[m.d.Msg.ID] = struct{}{}
			}
			for _, id := range ls.Seen {
				if len(sess.seen) >= maxSeen {
					break
				}
				sess.seen[MessageID{Node: id[0], Seq: id[1]}] = struct{}{}
			}
			sess.seenUntil = time.Now().Add(dedupWindow).UnixNano()
			sess.mu.Unlock()
		}
	}
	return nil
}

// MergeSession adds to the local session of ls's client identifier the
// queued and in-flight messages of ls it does not hold (by message id,
// also against what the session received in its de-duplication window),
// as new queued deliveries; with no local session it installs ls. For a
// session another node gave up after holding it too (a split, a restart
// with a stale copy): the local session wins, nothing it has is replaced.
func (s *Server) MergeSession(ls *store.LoadedSession, dedupWindow time.Duration) error {
	for range 3 {
		s.mu.Lock()
		sess := s.sessions[ls.Session.ClientID]
		s.mu.Unlock()
		if sess == nil {
			err := s.AdoptSession(ls, dedupWindow)
			if errors.Is(err, ErrSessionExists) {
				continue // created meanwhile: merge into it
			}
			return err
		}
		tx := s.newTxn()
		now := time.Now().UnixNano()
		sess.mu.Lock()
		if sess.ended {
			sess.mu.Unlock()
			continue
		}
		have := make(map[MessageID]bool, len(sess.msgs)+len(sess.queue))
		for _, m := range sess.msgs {
			have[m.d.Msg.ID] = true
		}
		for _, m := range sess.queue {
			have[m.d.Msg.ID] = true
		}
		added := 0
		for i := range ls.Messages {
			r := ls.Messages[i].Msg
			id := MessageID{Node: r.IDNode, Seq: r.IDSeq}
			if have[id] {
				continue
			}
			if _, seen := sess.seen[id]; seen && now <= sess.seenUntil {
				continue
			}
			have[id] = true
			d := Delivery{Msg: messageFromRecord(&r), QoS: r.DeliverQoS, Retain: r.DeliverRetain, SubIDs: r.SubIDs, Group: r.Group}
			sess.deliverLocked(d, tx, now)
			added++
		}
		if dedupWindow > 0 {
			// What reaches the session both directly and through the node
			// that gave it up counts once for a while, as after a move.
			if sess.seen == nil || now > sess.seenUntil {
				sess.seen = make(map[MessageID]struct{}, len(have))
			}
			for id := range have {
				if len(sess.seen) < maxSeen {
					sess.seen[id] = struct{}{}
				}
			}
			for _, id := range ls.Seen {
				if len(sess.seen) >= maxSeen {
					break
				}
				sess.seen[MessageID{Node: id[0], Seq: id[1]}] = struct{}{}
			}
			sess.seenUntil = max(sess.seenUntil, now+int64(dedupWindow))
		}
		sess.mu.Unlock()
		_ = tx.commit(s)
		if added > 0 {
			s.log.Info("messages of a session given up by another node merged", "client", ls.Session.ClientID, "messages", added)
		}
		return nil
	}
	return ErrSessionExists
}

// MarkSeen adds message ids to the de-duplication set of the local
// session of a client identifier and keeps its window open for at least
// window: messages that session completed on another node (a replica's
// record of its owner's removals) are then not delivered again when a
// stale copy of it (a restarted or cut-off former owner's) is merged in.
func (s *Server) MarkSeen(clientID string, ids []MessageID, window time.Duration) {
	if len(ids) == 0 || window <= 0 {
		return
	}
	s.mu.Lock()
	sess := s.sessions[clientID]
	s.mu.Unlock()
	if sess == nil {
		return
	}
	now := time.Now().UnixNano()
	sess.mu.Lock()
	defer sess.mu.Unlock()
	if sess.seen == nil || now > sess.seenUntil {
		sess.seen = make(map[MessageID]struct{}, len(ids))
		// What the session holds counts as seen too, as at an adoption.
		for _, m := range sess.msgs {
			sess.seen[m.d.Msg.ID] = struct{}{}
		}
		for _, m := range sess.queue {
			sess.seen[m.d.Msg.ID] = struct{}{}
		}
	}
	for _, id := range ids {
		if len(sess.seen) >= maxSeen {
			break
		}
		sess.seen[id] = struct{}{}
	}
	sess.seenUntil = max(sess.seenUntil, now+int64(window))
}

// ClaimOf returns the claim of the local session of a client identifier.
func (s *Server) ClaimOf(clientID string) (stamp uint64, node string, ok bool) {
	s.mu.Lock()
	sess := s.sessions[clientID]
	s.mu.Unlock()
	if sess == nil {
		return 0, "", false
	}
	sess.mu.Lock()
	defer sess.mu.Unlock()
	return sess.claimStamp, sess.claimNode, true
}

// StampClaim sets the claim of the local session of a client identifier
// (a session promoted from a replica: it is claimed by this node now).
func (s *Server) StampClaim(clientID string, stamp uint64, node string) {
	s.mu.Lock()
	sess := s.sessions[clientID]
	s.mu.Unlock()
	if sess == nil {
		return
	}
	sess.mu.Lock()
	sess.claimStamp, sess.claimNode = stamp, node
	sess.mu.Unlock()
}

// DeliverToSession delivers one message to the named session directly (a
// message another node routed to it before the session moved here). It
// reports whether the session exists.
func (s *Server) DeliverToSession(clientID string, d Delivery) bool {
	s.mu.Lock()
	sess := s.sessions[clientID]
	s.mu.Unlock()
	if sess == nil {
		return false
	}
	if !sess.MayReceive(d.Msg.Topic) {
		s.stats.droppedNotAuthorized.Add(1)
		return true
	}
	tx := s.newTxn()
	sess.Deliver(d, tx, time.Now().UnixNano())
	_ = tx.commit(s)
	return true
}

// seenLocked reports whether a delivery of this message id is a duplicate
// within the session's de-duplication window (and records it if not).
func (sess *session) seenLocked(id MessageID, now int64) bool {
	if now > sess.seenUntil {
		sess.seen = nil
		sess.seenUntil = 0
		return false
	}
	if _, ok := sess.seen[id]; ok {
		return true
	}
	if len(sess.seen) < maxSeen {
		sess.seen[id] = struct{}{}
	}
	return false
}

// sessionDedupWindow is how long a session that moved here from another
// node drops deliveries it already had: long enough for every node to
// learn its new routes.
const sessionDedupWindow = 2 * time.Minute

// maxSeen bounds a session's de-duplication set (a busy session stops
// recording beyond it; QoS 1 may then see duplicates).
const maxSeen = 1 << 17

// quitCtx is a context that ends when the server shuts down.
func (s *Server) quitCtx() context.Context { return s.ctx }

// KickAll disconnects every client with the v5 reason code (v3 clients
// are just disconnected), e.g. 0x8B Server shutting down when a node
// drains.
func (s *Server) KickAll(reason byte) {
	for _, c := range s.clientList() {
		c.kick(reason, errKicked)
	}
}

// SessionIDs lists the client identifiers of the sessions held here.
func (s *Server) SessionIDs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.sessions))
	for id := range s.sessions {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

// HandOff exports and removes an offline session (for a draining node
// handing its sessions to the others). It returns nil if there is none or
// it is online.
func (s *Server) HandOff(clientID string) *store.LoadedSession {
	s.mu.Lock()
	sess := s.sessions[clientID]
	if sess == nil {
		s.mu.Unlock()
		return nil
	}
	sess.mu.Lock()
	online := sess.client != nil
	sess.mu.Unlock()
	s.mu.Unlock()
	if online {
		return nil
	}
	ls, out := s.ReleaseSession(ClaimRequest{ClientID: clientID, Username: sess.username(), Role: uint8(sess.role.Load()), Stamp: ^uint64(0), KeepWill: true})
	if out != ReleaseMoved {
		return nil
	}
	return ls
}

// MessageToRecord and MessageFromRecord convert between a routed message
// and its store record (the form messages travel in between nodes).
func MessageToRecord(m *Message) *store.MessageRecord { return messageRecord(m) }

// MessageFromRecord builds a message from its record.
func MessageFromRecord(r *store.MessageRecord) *Message { return messageFromRecord(r) }
