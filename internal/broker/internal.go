package broker

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/isobar-mq/isobar/internal/mqtt/packet"
	"github.com/isobar-mq/isobar/internal/topic"
)

// The internal API: what a bridge, relay or gateway uses to publish and
// subscribe without a socket, with the same authorization, limits,
// retained handling, hooks and metrics as an MQTT client.

// Errors of the internal API.
var (
	ErrNotAuthorized  = errors.New("not authorized")
	ErrStoreDegraded  = errors.New("store not writable: durable publish refused")
	ErrRefusedByHook  = errors.New("refused by a publish hook")
	ErrPublisherClose = errors.New("publisher closed")
	ErrServerClosed   = errShutdown
)

// PublisherOptions configure an internal publisher.
type PublisherOptions struct {
	// Client identifies the publisher to authorization and hooks (ClientID
	// is also the From of its messages, for No Local). Leave Username empty
	// and set Trusted to bypass the ACL (the server's own components).
	Client ClientInfo
	// Trusted publishers skip the ACL and may publish to '$' topics.
	Trusted bool
	// Origin is stamped on every message (Kind and Name).
	Origin Origin
	// MaxBatch is how many messages are routed before an automatic commit
	// (default 256).
	MaxBatch int
}

// PublishResult is the outcome of one internal publish, reported once the
// message is routed and, with a store, durable.
type PublishResult struct {
	// Routed is the number of subscribers the message went to.
	Routed int
	// Err is nil on success.
	Err error
}

// Publisher publishes into the broker from inside the process. It owns its
// routing scratch space and its transaction: messages published between
// two Flush calls share one store commit (group commit), and each one's
// done callback runs after that commit. A Publisher is used by one
// goroutine at a time.
type Publisher struct {
	srv    *Server
	opts   PublisherOptions
	sc     routeScratch
	tx     *Txn
	n      int
	closed bool
	// uncounted: the server's own messages ($SYS, API) are not counted as
	// received.
	uncounted bool
}

// NewPublisher returns an internal publisher.
func (s *Server) NewPublisher(o PublisherOptions) *Publisher {
	if o.MaxBatch <= 0 {
		o.MaxBatch = 256
	}
	return &Publisher{srv: s, opts: o, tx: s.newTxn()}
}

// Publish validates m and routes it. The message is copied: the caller
// keeps ownership of m (its Payload and property slices must not change
// until done runs). done (may be nil) is called with the outcome once the
// routed message is durable: at the next Flush, or when MaxBatch messages
// are pending. A validation or authorization failure returns an error at
// once and done is not called.
func (p *Publisher) Publish(m *Message, done func(PublishResult)) error {
	if p.closed {
		return ErrPublisherClose
	}
	s := p.srv
	if s.isClosed() {
		return ErrServerClosed
	}
	size, err := s.messageSize(m)
	if err != nil {
		return err
	}
	if !p.opts.Trusted {
		if len(m.Topic) > 0 && m.Topic[0] == '$' {
			s.stats.droppedNotAuthorized.Add(1)
			return ErrNotAuthorized
		}
		if s.auth != nil && !s.auth.CanPublish(p.opts.Client, m.Topic) {
			s.stats.droppedNotAuthorized.Add(1)
			return ErrNotAuthorized
		}
	}
	if m.QoS > 0 && s.durableRefused() {
		s.stats.droppedStoreDegraded.Add(1)
		return ErrStoreDegraded
	}
	c := *m // never modify the caller's message
	c.ID = m.ID
	if c.Received == 0 {
		c.Received = time.Now().UnixNano()
	}
	if c.Expiry == 0 {
		c.stampExpiry()
	}
	if c.From == "" {
		c.From = p.opts.Client.ClientID
	}
	if c.Origin == (Origin{}) {
		c.Origin = p.opts.Origin
	}
	c.Props.Present &= messagePropMask
	c.size = size
	if !p.uncounted {
		s.stats.receivedByQoS[c.QoS].Add(1)
	}
	routed := &c
	if !p.uncounted || !strings.HasPrefix(c.Topic, "$SYS/") {
		var code byte
		if routed, code = s.runPublishHooks(p.opts.Client, &c); code >= 0x80 {
			return ErrRefusedByHook
		}
	}
	n := 0
	if routed != nil {
		n = s.publish(routed, &p.sc, p.tx)
	}
	if done != nil {
		p.tx.Then(func(err error) { done(PublishResult{Routed: n, Err: err}) })
	}
	p.n++
	if p.n >= p.opts.MaxBatch {
		return p.Flush()
	}
	return nil
}

// Flush commits what was published since the last Flush and runs the done
// callbacks.
func (p *Publisher) Flush() error {
	p.n = 0
	return p.tx.commit(p.srv)
}

// Close flushes and closes the publisher.
func (p *Publisher) Close() error {
	if p.closed {
		return nil
	}
	err := p.Flush()
	p.closed = true
	return err
}

// Publish injects one message from the server itself (API, $SYS) and
// returns once it is routed and, with a store, durable. m is not modified.
// Topics beginning with '$' are allowed here (the server's own); the API
// checks its callers' rights before calling it.
func (s *Server) Publish(m *Message) error {
	p := Publisher{srv: s, opts: PublisherOptions{Trusted: true, Origin: Origin{Kind: OriginServer}, MaxBatch: 1 << 30}, tx: s.newTxn(), uncounted: true}
	var res PublishResult
	if err := p.Publish(m, func(r PublishResult) { res = r }); err != nil {
		return err
	}
	if err := p.Flush(); err != nil {
		return err
	}
	return res.Err
}

// ValidateMessage checks that m can be carried by MQTT to any subscriber:
// a valid topic name within the configured limits, QoS 0..2, properties
// within their protocol bounds, and a whole PUBLISH (v5, with room for
// subscription identifiers and a topic alias) within both the configured
// maximum packet size and the protocol's maximum.
func (s *Server) ValidateMessage(m *Message) error {
	_, err := s.messageSize(m)
	return err
}

// messageSize validates m (see ValidateMessage) and returns its encoded
// size as a v5 PUBLISH.
func (s *Server) messageSize(m *Message) (uint32, error) {
	o := &s.opts
	size, err := protocolSize(m, o.MaxTopicLen, o.MaxTopicLevels)
	if err != nil {
		return 0, err
	}
	if int(m.QoS) > o.MaxQoS {
		return 0, errors.New("QoS above the server's maximum")
	}
	if m.Retain && o.DisableRetain {
		return 0, errors.New("retain not supported")
	}
	if size > uint64(o.MaxPacketSize) {
		return 0, errors.New("message larger than the maximum packet size")
	}
	return uint32(size), nil
}

// protocolSize checks what the protocol itself requires of a message (the
// topic also against maxLen and maxLevels, 0 = only the protocol's limits)
// and returns its encoded size as a v5 PUBLISH with room for subscription
// identifiers and a topic alias.
func protocolSize(m *Message, maxLen, maxLevels int) (uint64, error) {
	if m.QoS > 2 {
		return 0, errors.New("QoS must be 0, 1 or 2")
	}
	if err := topic.ValidateName(m.Topic, maxLen, maxLevels); err != nil {
		return 0, err
	}
	// Strings reach subscribers as MQTT UTF-8 strings, which their codecs
	// check [MQTT-1.5.4-1] (ours, like Mosquitto's, also refuses control
	// characters): one they refuse costs them the connection.
	if !packet.ValidString(m.Topic) {
		return 0, errors.New("topic name is not a valid MQTT UTF-8 string")
	}
	pr := &m.Props
	if len(pr.ContentType) > 65535 || len(pr.ResponseTopic) > 65535 || len(pr.CorrelationData) > 65535 {
		return 0, errors.New("a property exceeds 65,535 bytes")
	}
	if pr.Has(packet.PropContentType) && !packet.ValidString(pr.ContentType) {
		return 0, errors.New("content type is not a valid MQTT UTF-8 string")
	}
	if pr.Has(packet.PropResponseTopic) {
		if err := topic.ValidateName(pr.ResponseTopic, 0, 0); err != nil {
			return 0, errors.New("response topic: " + err.Error())
		}
		if !packet.ValidString(pr.ResponseTopic) {
			return 0, errors.New("response topic is not a valid MQTT UTF-8 string")
		}
	}
	for _, u := range pr.User {
		if len(u.Key) > 65535 || len(u.Value) > 65535 {
			return 0, errors.New("a user property exceeds 65,535 bytes")
		}
		if !packet.ValidString(u.Key) || !packet.ValidString(u.Value) {
			return 0, errors.New("a user property is not a valid MQTT UTF-8 string")
		}
	}
	p := packet.Publish{QoS: m.QoS, Retain: m.Retain, Topic: m.Topic, PacketID: 1, Payload: m.Payload, Props: m.Props}
	p.Props.Present &= messagePropMask
	size := uint64(p.Len(packet.V5)) + 16 // subscription identifier and alias room
	if size > packet.MaxRemainingLength {
		return 0, errors.New("message too large for an MQTT packet")
	}
	return size, nil
}

// SubscriberOptions configure an internal subscriber.
type SubscriberOptions struct {
	// Client identifies the subscriber to authorization (ClientID is also
	// what No Local compares with). Trusted skips the ACL.
	Client  ClientInfo
	Trusted bool
	// QueueSize bounds the messages waiting to be received (default
	// 1024). Beyond it deliveries are dropped and counted (Dropped), as
	// for a session's queue: the router never blocks on a slow consumer.
	QueueSize int
}

// LocalSubscriber receives messages inside the process. It is a
// Subscriber in the broker's index like any session.
type LocalSubscriber struct {
	srv  *Server
	opts SubscriberOptions

	mu      sync.Mutex
	queue   []Delivery
	head    int
	filters map[string]topic.Options
	closed  bool
	notify  chan struct{}

	dropped atomic.Uint64
}

// NewSubscriber returns an internal subscriber with no subscriptions.
func (s *Server) NewSubscriber(o SubscriberOptions) *LocalSubscriber {
	if o.QueueSize <= 0 {
		o.QueueSize = 1024
	}
	return &LocalSubscriber{srv: s, opts: o, filters: make(map[string]topic.Options), notify: make(chan struct{}, 1)}
}

// Subscribe adds (or replaces) a subscription. Retained messages matching
// a new subscription are delivered first, as for MQTT (unless
// opts.RetainHandling says otherwise).
func (l *LocalSubscriber) Subscribe(filter string, opts topic.Options) error {
	s := l.srv
	if err := topic.ValidateFilter(filter, s.opts.MaxTopicLen, s.opts.MaxTopicLevels); err != nil {
		return err
	}
	if !l.opts.Trusted && s.auth != nil && !s.auth.CanSubscribe(l.opts.Client, filter) {
		return ErrNotAuthorized
	}
	opts.QoS = min(opts.QoS, byte(s.opts.MaxQoS))
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return ErrPublisherClose
	}
	_, existed := l.filters[filter]
	l.filters[filter] = opts
	s.indexSubscribe(l, filter, opts)
	l.mu.Unlock()
	_, _, shared := topic.ParseShared(filter)
	if !shared && !s.opts.DisableRetain && (opts.RetainHandling == 0 || (opts.RetainHandling == 1 && !existed)) {
		now := time.Now().UnixNano()
		s.retained.Match(filter, func(t string, m *Message) bool {
			if !m.expired(now) && l.MayReceive(t) {
				d := Delivery{Msg: m, QoS: min(m.QoS, opts.QoS), Retain: true}
				if opts.ID != 0 {
					d.SubIDs = []uint32{opts.ID}
				}
				l.Deliver(d, nil, now)
			}
			return true
		})
	}
	return nil
}

// Unsubscribe removes a subscription; it reports whether it existed.
func (l *LocalSubscriber) Unsubscribe(filter string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.filters[filter]; !ok {
		return false
	}
	delete(l.filters, filter)
	l.srv.indexUnsubscribe(l, filter)
	return true
}

// SubscriberID implements Subscriber.
func (l *LocalSubscriber) SubscriberID() string { return l.opts.Client.ClientID }

// MayReceive implements Subscriber.
func (l *LocalSubscriber) MayReceive(t string) bool {
	return l.opts.Trusted || l.srv.auth == nil || l.srv.auth.CanReceive(l.opts.Client, t)
}

// Online implements Subscriber.
func (l *LocalSubscriber) Online() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return !l.closed
}

// Deliver implements Subscriber: it queues the delivery, or drops it
// (counted) when the queue is full.
func (l *LocalSubscriber) Deliver(d Delivery, _ *Txn, now int64) {
	l.mu.Lock()
	if l.closed || len(l.queue)-l.head >= l.opts.QueueSize {
		l.mu.Unlock()
		l.dropped.Add(1)
		l.srv.stats.droppedQueueFull.Add(1)
		return
	}
	l.queue = append(l.queue, d)
	l.mu.Unlock()
	select {
	case l.notify <- struct{}{}:
	default:
	}
}

// Receive returns the next delivery, waiting until one arrives, ctx ends
// or the subscriber is closed.
func (l *LocalSubscriber) Receive(ctx context.Context) (Delivery, error) {
	for {
		l.mu.Lock()
		if l.head < len(l.queue) {
			d := l.queue[l.head]
			l.queue[l.head] = Delivery{}
			l.head++
			if l.head == len(l.queue) {
				l.queue, l.head = l.queue[:0], 0
			}
			l.mu.Unlock()
			return d, nil
		}
		closed := l.closed
		l.mu.Unlock()
		if closed {
			return Delivery{}, ErrPublisherClose
		}
		select {
		case <-l.notify:
		case <-ctx.Done():
			return Delivery{}, ctx.Err()
		}
	}
}

// Pending is the number of deliveries waiting to be received.
func (l *LocalSubscriber) Pending() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.queue) - l.head
}

// Dropped is the number of deliveries dropped because the queue was full.
func (l *LocalSubscriber) Dropped() uint64 { return l.dropped.Load() }

// Close removes every subscription and discards pending deliveries;
// Receive then returns an error.
func (l *LocalSubscriber) Close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return
	}
	l.closed = true
	for f := range l.filters {
		l.srv.indexUnsubscribe(l, f)
	}
	l.filters = nil
	l.queue, l.head = nil, 0
	select {
	case l.notify <- struct{}{}:
	default:
	}
}
