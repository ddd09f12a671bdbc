package broker

import (
	"slices"
	"time"

	"github.com/isobar-mq/isobar/internal/store"
	"github.com/isobar-mq/isobar/internal/topic"
)

// Subscriber is anything the router delivers messages to: a local MQTT
// session, a remote cluster node, a bridge link, a STOMP subscription or an
// internal subscriber (see Server.NewSubscriber). All of them live in the
// one subscription index; routing, overlap merging, subscription
// identifiers, No Local and shared-group selection work on this interface
// only. Protocol specifics (packet identifiers, topic aliases, encoding,
// Receive Maximum) stay behind it.
//
// Implementations must be comparable (pointer types) and their methods
// must not block: Deliver queues, and takes responsibility for QoS 1/2
// messages through tx (a store record, or tx.Hold until a remote peer
// accepted the message).
type Subscriber interface {
	// SubscriberID is the client identifier No Local compares with the
	// publisher's [MQTT-3.8.3-3]; "" when No Local never applies.
	SubscriberID() string
	// MayReceive reports whether the subscriber is authorized to receive
	// a message on topic (the read ACL). It is asked for every delivery,
	// shared-subscription deliveries included. A remote node answers true:
	// its own sessions are checked where they live.
	MayReceive(topic string) bool
	// Online reports whether the subscriber takes deliveries now; shared
	// groups prefer online members.
	Online() bool
	// Deliver takes one message. now is the routing time (unix
	// nanoseconds), read once per routed message.
	Deliver(d Delivery, tx *Txn, now int64)
}

// target is one subscriber a message goes to, with its merged options.
type target struct {
	sub Subscriber
	d   Delivery
}

// routeScratch is per-publisher scratch space for routing, reused so that
// steady-state fan-out does not allocate.
type routeScratch struct {
	res     topic.Result[Subscriber]
	idx     map[Subscriber]int
	targets []target
	// localOnly routes a message forwarded by another node: to local
	// subscribers only, and to the shared groups in groups.
	localOnly bool
	skipPlain bool
	groups    []string
}

// publish stores a retained message if needed and routes it. It returns
// the number of subscribers it was delivered to.
func (s *Server) publish(m *Message, sc *routeScratch, tx *Txn) int {
	if m.ID.IsZero() {
		m.ID = MessageID{Node: s.nodeHash, Seq: s.msgSeq.Add(1)}
	}
	if m.Retain && !s.opts.DisableRetain {
		s.setRetainedLocal(m, tx)
	}
	return s.route(m, sc, tx)
}

// route delivers m to every matching subscriber: one delivery per
// subscriber for its non-shared subscriptions (highest granted QoS, every
// subscription identifier [MQTT-3.3.4-2, -3]), plus one per matching
// shared-subscription group, to a member allowed to receive it.
func (s *Server) route(m *Message, sc *routeScratch, tx *Txn) int {
	s.index.Match(m.Topic, &sc.res)
	if len(sc.res.Subs) == 0 && len(sc.res.Shared) == 0 {
		return 0
	}
	now := time.Now().UnixNano() // once per message, not per delivery
	// With one matching filter every subscriber appears once (the common
	// case, and the fan-out hot path): plain deliveries go out at once,
	// with no merging. With several, a subscriber matched by overlapping
	// filters gets one delivery with the merged options; subscribers the
	// read ACL refuses get index -1, checked once per message.
	merge := sc.res.SubFilters > 1
	if merge {
		if sc.idx == nil {
			sc.idx = make(map[Subscriber]int)
		}
		clear(sc.idx)
	}
	targets := sc.targets[:0]
	n := 0
	subs := sc.res.Subs
	if sc.skipPlain {
		subs = nil
	}
	for i := range subs {
		e := &subs[i]
		sub := e.Key
		if sc.localOnly && isRemote(sub) {
			continue // forwarded messages cross one link at most
		}
		if e.Opts.NoLocal && m.From != "" && sub.SubscriberID() == m.From {
			continue // [MQTT-3.8.3-3]
		}
		qos := min(m.QoS, e.Opts.QoS)
		retain := m.Retain && e.Opts.RetainAsPublished
		if merge {
			if j, ok := sc.idx[sub]; ok {
				if j < 0 {
					continue
				}
				t := &targets[j]
				t.d.QoS = max(t.d.QoS, qos)
				t.d.Retain = t.d.Retain || retain
				if e.Opts.ID != 0 && !slices.Contains(t.d.SubIDs, e.Opts.ID) {
					t.d.SubIDs = append(t.d.SubIDs, e.Opts.ID)
				}
				continue
			}
		}
		if !sub.MayReceive(m.Topic) {
			if merge {
				sc.idx[sub] = -1
			}
			continue
		}
		d := Delivery{Msg: m, QoS: qos, Retain: retain}
		if e.Opts.ID != 0 {
			d.SubIDs = []uint32{e.Opts.ID}
		}
		if !merge {
			sub.Deliver(d, tx, now)
			n++
			continue
		}
		sc.idx[sub] = len(targets)
		targets = append(targets, target{sub: sub, d: d})
	}
	for i := range sc.res.Shared {
		g := &sc.res.Shared[i]
		if sc.localOnly && !groupListed(sc.groups, g.Group, g.Filter) {
			continue // the sending node picked another node's member
		}
		e := pickShared(g.Members, g.Next, nil, m.Topic, sc.localOnly)
		if e == nil {
			s.stats.droppedNotAuthorized.Add(1)
			continue
		}
		d := Delivery{Msg: m, QoS: min(m.QoS, e.Opts.QoS), Retain: m.Retain && e.Opts.RetainAsPublished, Group: g.Group + "/" + g.Filter}
		if e.Opts.ID != 0 {
			d.SubIDs = []uint32{e.Opts.ID}
		}
		targets = append(targets, target{sub: e.Key, d: d})
	}
	for i := range targets {
		targets[i].sub.Deliver(targets[i].d, tx, now)
	}
	n += len(targets)
	clear(targets)
	sc.targets = targets[:0]
	return n
}

// pickShared chooses the member of a shared group that gets a message on
// topic: round robin from next, never exclude, and only members allowed to
// receive it (shared deliveries pass the same read ACL as plain ones);
// preferring, in order, online local members, online remote nodes,
// offline local members, then unreachable remote nodes. localOnly leaves
// remote nodes out. nil when no member may have it.
func pickShared(members []topic.Entry[Subscriber], next uint64, exclude Subscriber, topicName string, localOnly bool) *topic.Entry[Subscriber] {
	n := len(members)
	if n == 0 {
		return nil
	}
	var best *topic.Entry[Subscriber]
	bestRank := 4
	for i := 0; i < n; i++ {
		e := &members[(int(next%uint64(n))+i)%n]
		if exclude != nil && e.Key == exclude {
			continue
		}
		rank := 0
		if isRemote(e.Key) {
			if localOnly {
				continue
			}
			rank = 1
		}
		if !e.Key.Online() {
			rank += 2
		}
		if rank >= bestRank || !e.Key.MayReceive(topicName) {
			continue
		}
		if rank == 0 {
			return e
		}
		best, bestRank = e, rank
	}
	return best
}

// groupListed reports whether "group/filter" is in groups.
func groupListed(groups []string, group, filter string) bool {
	for _, g := range groups {
		if len(g) == len(group)+1+len(filter) && g[len(group)] == '/' && g[:len(group)] == group && g[len(group)+1:] == filter {
			return true
		}
	}
	return false
}

// dispatchShared re-delivers a shared-subscription message to another
// online member of its group; if none is left, back to the original
// subscriber when it still wants it (redeliver).
func (s *Server) dispatchShared(d Delivery, from Subscriber, tx *Txn, redeliver func(Delivery, *Txn)) {
	var res topic.Result[Subscriber]
	s.index.Match(d.Msg.Topic, &res)
	for i := range res.Shared {
		g := &res.Shared[i]
		if g.Group+"/"+g.Filter != d.Group {
			continue
		}
		e := pickShared(g.Members, g.Next, from, d.Msg.Topic, false)
		if e != nil && e.Key.Online() {
			nd := Delivery{Msg: d.Msg, QoS: min(d.Msg.QoS, e.Opts.QoS), Retain: d.Retain, Group: d.Group}
			if e.Opts.ID != 0 {
				nd.SubIDs = []uint32{e.Opts.ID}
			}
			s.stats.sharedRedispatched.Add(1)
			e.Key.Deliver(nd, tx, time.Now().UnixNano())
			return
		}
	}
	if redeliver != nil {
		redeliver(d, tx)
	}
}

// storeFailed records a failed store commit: counted, logged (at most
// once a second), and the store is checked for degraded mode.
func (s *Server) storeFailed(err error) {
	s.stats.storeErrors.Add(1)
	now := time.Now().UnixNano()
	if last := s.storeErrLogged.Load(); now-last > int64(time.Second) && s.storeErrLogged.CompareAndSwap(last, now) {
		s.log.Error("store commit failed", "err", err)
	}
	s.checkStore()
}

// checkStore refreshes the degraded flag from the store.
func (s *Server) checkStore() {
	if s.store == nil {
		return
	}
	err := s.store.Writable()
	was := s.storeDegraded.Load()
	switch {
	case err != nil && !was:
		s.storeDegraded.Store(true)
		s.log.Error("store not writable: refusing what needs durability (QoS 1/2 publishes, persistent sessions and their subscriptions) until it recovers", "err", err)
	case err == nil && was:
		s.storeDegraded.Store(false)
		s.log.Info("store writable again: durable operations resumed")
	}
}

// StoreDegraded reports whether the store currently refuses writes (full
// disk, free space below the floor, write errors).
func (s *Server) StoreDegraded() bool { return s.storeDegraded.Load() }

// durableRefused reports whether an operation that needs the store must
// be refused now.
func (s *Server) durableRefused() bool { return s.store != nil && s.storeDegraded.Load() }

// storeAsync records a change nothing waits for, in the background.
func (s *Server) storeAsync(fn func(store.Batch)) {
	if s.store == nil {
		return
	}
	b := s.store.NewBatch()
	fn(b)
	go func() {
		if err := b.Commit(); err != nil {
			s.storeFailed(err)
		}
	}()
}
