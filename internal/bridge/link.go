package bridge

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/isobar-mq/isobar/internal/broker"
	"github.com/isobar-mq/isobar/internal/mqtt/client"
	"github.com/isobar-mq/isobar/internal/mqtt/packet"
	"github.com/isobar-mq/isobar/internal/topic"
)

// errMoved fails the local acknowledgements still waiting for a link that
// stops on this node (moved to another node, or shut down): their
// publishers send again rather than lose the messages.
var errMoved = errors.New("bridge stopped on this node")

// inQueue bounds the inbound messages waiting for the local publisher;
// beyond it the client's read loop waits (back-pressure on the remote).
const inQueue = 1024

// outItem is one buffered outgoing message.
type outItem struct {
	m       client.Message
	size    int64
	release func(error) // the local publisher's hold, nil if none
	heldAt  time.Time
}

// link is one bridge's runtime on this node.
type link struct {
	e   *Engine
	cfg LinkConfig
	log *slog.Logger

	mu      sync.Mutex
	cli     *client.Client
	sub     *outSub
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	buf     []*outItem
	head    int
	bytes   int64
	notify  chan struct{}
	up      chan struct{} // closed while connected
	isUp    bool
	inq     chan *client.Message
	lastErr string
	// demand: remote filter -> number of local filters needing it; and
	// the remote filters each local filter needs.
	demand   map[string]int
	demandBy map[string][]string
	ownOut   map[string]bool // local filters of this engine's out rules

	in, out, dropFull, dropLoop, dropHops, dropDup, dropRefused atomic.Uint64
	reconnectBase                                               uint64
}

func (l *link) running() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.cli != nil
}

func (l *link) setError(err error) {
	l.mu.Lock()
	l.lastErr = err.Error()
	l.mu.Unlock()
}

// start connects the link and subscribes its out rules locally. Called
// with e.mu held.
func (l *link) start() error {
	cc := l.cfg.Client
	cc.Handler = l.handle
	cc.OnConnect = l.onConnect
	cc.OnConnectionLost = l.onLost
	cc.Log = l.log
	cc.Subscriptions = nil
	if !l.cfg.Demand {
		for _, r := range l.cfg.Rules {
			if r.Direction&In != 0 {
				cc.Subscriptions = append(cc.Subscriptions, l.remoteSub(r.RemoteFilter(), r.QoS))
			}
		}
	}
	cli, err := client.New(cc)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	sub := &outSub{l: l}
	l.mu.Lock()
	l.cli, l.sub, l.ctx, l.cancel = cli, sub, ctx, cancel
	l.notify = make(chan struct{}, 1)
	l.up = make(chan struct{})
	l.isUp = false
	l.inq = make(chan *client.Message, inQueue)
	l.demand = make(map[string]int)
	l.demandBy = make(map[string][]string)
	l.ownOut = make(map[string]bool)
	l.mu.Unlock()
	for _, r := range l.cfg.Rules {
		if r.Direction&Out != 0 {
			l.ownOut[r.LocalFilter()] = true
			l.e.srv.SubscribeRemote(sub, r.LocalFilter(), topic.Options{QoS: r.QoS, RetainAsPublished: true})
		}
	}
	l.wg.Add(3)
	go l.sender(ctx, cli)
	go l.inbound(ctx)
	go l.sweeper(ctx)
	cli.Start()
	return nil
}

// remoteSub is the remote subscription for a filter: No Local (v5) so
// that the remote never sends back what this link published, and Retain
// As Published so that retained messages stay retained here.
func (l *link) remoteSub(f string, qos byte) client.Subscription {
	return client.Subscription{Filter: f, QoS: qos, NoLocal: true, RetainAsPublished: true}
}

// stop disconnects the link; what it buffered is dropped (counted) and
// the local acknowledgements it held fail, so that QoS 1/2 publishers
// send again (to the node the link moves to).
func (l *link) stop() {
	l.mu.Lock()
	cli, sub, cancel := l.cli, l.sub, l.cancel
	if cli == nil {
		l.mu.Unlock()
		return
	}
	l.sub = nil
	l.mu.Unlock()
	for _, r := range l.cfg.Rules {
		if r.Direction&Out != 0 {
			l.e.srv.UnsubscribeRemote(sub, r.LocalFilter())
		}
	}
	cancel()
	_ = cli.Close()
	l.wg.Wait()
	st := cli.Stats()
	l.mu.Lock()
	l.reconnectBase += st.Reconnects
	n := len(l.buf) - l.head
	for _, it := range l.buf[l.head:] {
		if it.release != nil {
			it.release(errMoved)
		}
	}
	l.buf, l.head, l.bytes = nil, 0, 0
	l.cli = nil
	l.isUp = false
	l.mu.Unlock()
	if n > 0 {
		l.dropFull.Add(uint64(n))
		l.log.Warn("bridge stopped with buffered messages; held ones fail locally and are sent again by their publishers", "buffered", n)
	}
}

func (l *link) onConnect(sessionPresent bool) {
	l.mu.Lock()
	if !l.isUp {
		l.isUp = true
		close(l.up)
	}
	l.mu.Unlock()
	l.log.Info("bridge connected", "session_present", sessionPresent)
}

func (l *link) onLost(err error) {
	l.mu.Lock()
	if l.isUp {
		l.isUp = false
		l.up = make(chan struct{})
	}
	l.lastErr = err.Error()
	// Local publishers are not kept waiting for a link that is down:
	// their messages stay buffered.
	for _, it := range l.buf[l.head:] {
		if it.release != nil {
			it.release(nil)
			it.release = nil
		}
	}
	l.mu.Unlock()
	l.log.Warn("bridge connection lost", "err", err)
}

// outSub is the link's subscriber in the local index (a new one per
// start, so that a stopped link's entries are never confused with the
// next one's).
type outSub struct{ l *link }

func (s *outSub) SubscriberID() string                                 { return "" }
func (s *outSub) MayReceive(string) bool                               { return true }
func (s *outSub) Online() bool                                         { return true }
func (s *outSub) Deliver(d broker.Delivery, tx *broker.Txn, now int64) { s.l.deliver(s, d, tx, now) }

// deliver buffers one outgoing message (from a router goroutine: it never
// blocks).
func (l *link) deliver(sub *outSub, d broker.Delivery, tx *broker.Txn, now int64) {
	m := d.Msg
	if m.Origin.Kind == broker.OriginBridge && m.Origin.Name == l.cfg.Name {
		l.dropLoop.Add(1) // never back over the link it came in on
		return
	}
	path, id, hasID := pathOf(&m.Props)
	if !hasID {
		id = m.ID
	}
	path = appendPath(path, l.e.self)
	if pathLen(path) > l.cfg.MaxHops {
		l.dropHops.Add(1)
		return
	}
	var rt string
	ok := false
	for _, r := range l.cfg.Rules {
		if r.Direction&Out != 0 {
			if rt, ok = r.toRemote(m.Topic); ok {
				break
			}
		}
	}
	if !ok {
		return
	}
	props := m.Props
	if m.Expiry > 0 {
		left := m.Expiry - now
		if left <= 0 {
			return
		}
		props.MessageExpiryInterval = uint32((left + int64(time.Second) - 1) / int64(time.Second))
		props.Present |= 1 << packet.PropMessageExpiryInterval
	}
	props.User = withLoopProps(m.Props.User, path, id)
	props.Present |= 1 << packet.PropUserProperty
	it := &outItem{m: client.Message{Topic: rt, Payload: m.Payload, QoS: d.QoS, Retain: d.Retain, Props: props},
		size: int64(len(m.Payload) + len(rt) + 64)}
	l.mu.Lock()
	if l.sub != sub {
		l.mu.Unlock()
		return
	}
	if len(l.buf)-l.head >= l.cfg.BufferMessages || l.bytes+it.size > l.cfg.BufferBytes {
		l.mu.Unlock()
		l.dropFull.Add(1)
		return
	}
	if d.QoS > 0 && tx != nil && l.isUp {
		it.release = tx.Hold()
		it.heldAt = time.Now()
	}
	l.buf = append(l.buf, it)
	l.bytes += it.size
	l.mu.Unlock()
	select {
	case l.notify <- struct{}{}:
	default:
	}
}

// next waits for the oldest buffered message and a connection.
func (l *link) next(ctx context.Context) (*outItem, bool) {
	for {
		l.mu.Lock()
		var it *outItem
		if l.head < len(l.buf) {
			it = l.buf[l.head]
		}
		up, isUp, notify := l.up, l.isUp, l.notify
		l.mu.Unlock()
		switch {
		case it != nil && isUp:
			return it, true
		case it != nil:
			select {
			case <-up:
			case <-ctx.Done():
				return nil, false
			}
		default:
			select {
			case <-notify:
			case <-ctx.Done():
				return nil, false
			}
		}
	}
}

// pop removes the oldest buffered message (the one just sent).
func (l *link) pop(it *outItem, err error) {
	l.mu.Lock()
	if l.head < len(l.buf) && l.buf[l.head] == it {
		l.buf[l.head] = nil
		l.head++
		l.bytes -= it.size
		if l.head == len(l.buf) {
			l.buf, l.head = l.buf[:0], 0
		} else if l.head > 4096 && l.head > len(l.buf)/2 {
			l.buf = append(l.buf[:0], l.buf[l.head:]...)
			l.head = 0
		}
	}
	rel := it.release
	it.release = nil
	l.mu.Unlock()
	if rel != nil {
		rel(err)
	}
}

// sender publishes the buffer in order. A QoS 1/2 Publish waits for the
// remote's acknowledgement, across reconnections.
func (l *link) sender(ctx context.Context, cli *client.Client) {
	defer l.wg.Done()
	for {
		it, ok := l.next(ctx)
		if !ok {
			return
		}
		err := cli.Publish(ctx, &it.m)
		switch {
		case err == nil:
			l.out.Add(1)
			l.pop(it, nil)
		case errors.Is(err, client.ErrNotConnected):
			// Lost between next and Publish: wait for the next
			// connection (onLost replaced l.up).
			l.mu.Lock()
			up := l.up
			isUp := l.isUp
			l.mu.Unlock()
			if isUp {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			select {
			case <-up:
			case <-ctx.Done():
				return
			}
		case errors.Is(err, client.ErrClosed) || ctx.Err() != nil:
			return
		default:
			// Refused by the remote (v5 reason code, too large, QoS or
			// retain not supported): sending it again would not help.
			l.dropRefused.Add(1)
			l.log.Warn("message refused by the remote broker; dropped", "topic", it.m.Topic, "err", err)
			l.setError(err)
			l.pop(it, nil)
		}
	}
}

// sweeper lets local publishers go when the remote is slow to
// acknowledge: past holdFor their messages are acknowledged locally and
// stay buffered.
func (l *link) sweeper(ctx context.Context) {
	defer l.wg.Done()
	t := time.NewTicker(holdFor / 4)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		var rel []func(error)
		l.mu.Lock()
		for _, it := range l.buf[l.head:] {
			if it.release != nil && now.Sub(it.heldAt) >= holdFor {
				rel = append(rel, it.release)
				it.release = nil
			}
		}
		l.mu.Unlock()
		for _, f := range rel {
			f(nil)
		}
	}
}

// handle takes an inbound message from the client's read loop.
func (l *link) handle(m *client.Message) {
	l.mu.Lock()
	ctx, q := l.ctx, l.inq
	l.mu.Unlock()
	select {
	case q <- m:
	case <-ctx.Done():
	}
}

// inbound publishes inbound messages locally, one goroutine per link
// (a Publisher is used by one goroutine at a time).
func (l *link) inbound(ctx context.Context) {
	defer l.wg.Done()
	l.mu.Lock()
	q := l.inq
	l.mu.Unlock()
	pub := l.e.srv.NewPublisher(broker.PublisherOptions{
		Client:  broker.ClientInfo{ClientID: inboundClientPrefix + l.cfg.Name},
		Trusted: true, // the rules are the administrator's; '$' topics are refused below
		Origin:  broker.Origin{Kind: broker.OriginBridge, Name: l.cfg.Name},
	})
	defer func() { _ = pub.Close() }()
	for {
		select {
		case <-ctx.Done():
			return
		case m := <-q:
			l.publishIn(pub, m)
			if len(q) == 0 {
				if err := pub.Flush(); err != nil {
					l.log.Warn("inbound messages not committed", "err", err)
				}
			}
		}
	}
}

func (l *link) publishIn(pub *broker.Publisher, m *client.Message) {
	e := l.e
	path, id, hasID := pathOf(&m.Props)
	if pathContains(path, e.self) {
		l.dropLoop.Add(1)
		m.Ack()
		return
	}
	var lt string
	var rule Rule
	ok := false
	for _, r := range l.cfg.Rules {
		if r.Direction&In != 0 {
			if lt, ok = r.toLocal(m.Topic); ok {
				rule = r
				break
			}
		}
	}
	if !ok || (lt != "" && lt[0] == '$') {
		l.dropRefused.Add(1)
		m.Ack()
		return
	}
	if !hasID {
		id = contentID(lt, m.Payload, m.Retain)
	}
	if id.Node == e.idGen.Node {
		l.dropLoop.Add(1) // stamped here: it went round
		m.Ack()
		return
	}
	path = appendPath(path, e.self)
	if pathLen(path)-1 > l.cfg.MaxHops {
		l.dropHops.Add(1)
		m.Ack()
		return
	}
	if e.seen.check(id, time.Now()) {
		l.dropDup.Add(1)
		m.Ack()
		return
	}
	props := m.Props
	props.User = withLoopProps(m.Props.User, path, id)
	props.Present |= 1 << packet.PropUserProperty
	bm := &broker.Message{Topic: lt, Payload: m.Payload, QoS: min(m.QoS, rule.QoS), Retain: m.Retain, Props: props,
		Hops: uint8(min(pathLen(path)-1, 255))}
	if hasID {
		bm.ID = id
	}
	err := pub.Publish(bm, func(r broker.PublishResult) {
		if r.Err != nil {
			// Not acknowledged: the remote sends it again.
			e.seen.forget(id)
			l.log.Warn("inbound message not stored; the remote will send it again", "topic", lt, "err", r.Err)
			return
		}
		l.in.Add(1)
		m.Ack()
	})
	if err != nil {
		e.seen.forget(id)
		l.dropRefused.Add(1)
		l.log.Warn("inbound message refused locally; dropped", "topic", lt, "err", err)
		m.Ack()
	}
}

// demandSnapshot subscribes for the interest known when the link starts.
func (l *link) demandSnapshot(interest map[string]int) {
	for f := range interest {
		l.demandChanged(f, true)
	}
}

// demandChanged follows one change of local interest: one remote
// subscription per remote filter, however many local filters need it.
func (l *link) demandChanged(f string, added bool) {
	l.mu.Lock()
	cli := l.cli
	if cli == nil || l.ownOut[f] {
		l.mu.Unlock()
		return
	}
	var subs, unsubs []client.Subscription
	if added {
		if _, dup := l.demandBy[f]; dup {
			l.mu.Unlock()
			return
		}
		var rfs []string
		for _, r := range l.cfg.Rules {
			rf := localDemandFilter(r, f)
			if rf == "" {
				continue
			}
			rfs = append(rfs, rf)
			l.demand[rf]++
			if l.demand[rf] == 1 {
				subs = append(subs, l.remoteSub(rf, r.QoS))
			}
		}
		if len(rfs) > 0 {
			l.demandBy[f] = rfs
		}
	} else {
		for _, rf := range l.demandBy[f] {
			l.demand[rf]--
			if l.demand[rf] <= 0 {
				delete(l.demand, rf)
				unsubs = append(unsubs, client.Subscription{Filter: rf})
			}
		}
		delete(l.demandBy, f)
	}
	l.mu.Unlock()
	for _, s := range subs {
		if err := cli.Subscribe(s); err != nil {
			l.log.Warn("demand subscription failed", "filter", s.Filter, "err", err)
		}
	}
	for _, s := range unsubs {
		cli.Unsubscribe(s.Filter)
	}
}

// status reports the link.
func (l *link) status() Status {
	l.mu.Lock()
	cli := l.cli
	s := Status{Name: l.cfg.Name, URL: l.cfg.Client.URL, Running: cli != nil, Buffered: len(l.buf) - l.head,
		BufferedBytes: l.bytes, LastError: l.lastErr, Reconnects: l.reconnectBase, Demand: sortedKeys(l.demand)}
	l.mu.Unlock()
	if cli != nil {
		st := cli.Stats()
		s.Connected, s.Since, s.Reconnects = st.Connected, st.Since, s.Reconnects+st.Reconnects
		if st.LastError != "" {
			s.LastError = st.LastError
		}
	}
	s.In, s.Out = l.in.Load(), l.out.Load()
	s.DroppedFull, s.DroppedLoop, s.DroppedHops = l.dropFull.Load(), l.dropLoop.Load(), l.dropHops.Load()
	s.DroppedDup, s.DroppedRefused = l.dropDup.Load(), l.dropRefused.Load()
	return s
}
