// Package relay is the WIS2 Global Broker relay: it subscribes to the
// configured sources (WIS2 Nodes, Global Caches, other Global Brokers),
// checks every notification (topic against the WIS2 Topic Hierarchy, the
// message against the WIS2 Notification Message schema and size limits,
// optionally its metadata), drops duplicates by notification id through a
// cluster-safe store, republishes what is new byte for byte on the same
// topic to the local broker (QoS 1, never retained), and publishes a WIS2
// Monitoring Event for every message it discards. Its metrics have the
// names and labels of the WIS2 metric hierarchy (wmo_wis2_gb_*).
//
// The relay depends on its parts through the small interfaces below, so
// that it can be tested with fakes and the parts (MQTT client, checks,
// de-duplication backends) live in their own packages; internal/node wires
// the real ones.
package relay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/isobar-mq/isobar/internal/broker"
	"github.com/prometheus/client_golang/prometheus"
)

// Mode says what a check does with a message that fails it.
type Mode string

const (
	// Discard: counted, reported (monitoring event), not published.
	Discard Mode = "discard"
	// Verify: counted and reported, published anyway.
	Verify Mode = "verify"
	// Off: not checked.
	Off Mode = "off"
)

// Kind is what a source is; only a WIS2 Node is held to its own centre-id.
type Kind string

const (
	KindNode   Kind = "node"
	KindCache  Kind = "cache"
	KindBroker Kind = "broker"
)

// KindOf infers a source's kind from its centre-id (WIS2 Guide naming:
// <id>-global-cache, <id>-global-broker).
func KindOf(centreID string) Kind {
	switch {
	case strings.HasSuffix(centreID, "-global-cache"):
		return KindCache
	case strings.HasSuffix(centreID, "-global-broker"):
		return KindBroker
	}
	return KindNode
}

// SourceConfig is one remote broker the relay subscribes to.
type SourceConfig struct {
	// CentreID is the source's centre-id: the centre_id label of its
	// metrics, and for a WIS2 Node the only centre-id it may publish under.
	CentreID string
	Kind     Kind
	// Topics are the filters subscribed (QoS 1).
	Topics []string
	// Opaque is what the SourceFactory needs to connect (URL, credentials,
	// TLS...); the relay does not look at it.
	Opaque any
}

// Inbound is one message from a source.
type Inbound struct {
	Topic   string
	Payload []byte
	// Ack acknowledges the message to the source (PUBACK); called once the
	// relay is done with it (published durably, or dropped).
	Ack func()
}

// Source is a running subscription to a remote broker.
type Source interface {
	Start()
	Close() error
}

// SourceHooks are the callbacks a SourceFactory's source calls.
type SourceHooks struct {
	Message func(Inbound)
	Up      func()
	Down    func(error)
}

// SourceFactory makes a source (an MQTT client subscribed to sc.Topics).
type SourceFactory func(sc SourceConfig, h SourceHooks) (Source, error)

// TopicChecker checks a topic against the WIS2 Topic Hierarchy and returns
// the centre-id it names (level 4) and whether it is a metadata topic.
type TopicChecker interface {
	CheckTopic(topic string) (centreID string, metadata bool, err error)
}

// FormatChecker checks a notification (schema, formats, size limits). It
// returns the notification id whenever the message has one (also when it
// is otherwise invalid) and its metadata id ("" if none).
type FormatChecker interface {
	CheckFormat(payload []byte) (id, metadataID string, err error)
}

// MetadataChecker reports whether a notification's metadata is registered.
type MetadataChecker interface {
	Known(metadataID, topic string) bool
}

// ClaimResult is a de-duplication store's answer to a claim.
type ClaimResult int

const (
	Claimed   ClaimResult = iota // publish, then Confirm (Release on failure)
	Published                    // a copy was published already: drop
	Leased                       // another holder has not confirmed yet: retry
)

// Dedup is the de-duplication store (set-if-absent with a lease).
type Dedup interface {
	Claim(ctx context.Context, id string, lease time.Duration) (ClaimResult, string, error)
	Confirm(ctx context.Context, id, token string, ttl time.Duration) error
	Release(ctx context.Context, id, token string) error
}

// Event is a monitoring event about a discarded message.
type Event struct {
	// Source is the centre-id of the source it came from; Topic, ID and
	// Payload are the message's (ID may be "").
	Source, Topic, ID string
	Payload           []byte
	// Reason is "invalid_topic", "invalid_format" or "no_metadata";
	// Detail the checker's explanation, Err its error (nil for
	// no_metadata).
	Reason, Detail string
	Err            error
}

// EventEncoder builds the WIS2 Monitoring Event for e: the topic to
// publish it on and its JSON.
type EventEncoder func(reportBy string, e Event) (topic string, payload []byte, err error)

// Config configures a Relay.
type Config struct {
	// CentreID is this Global Broker's centre-id (report_by).
	CentreID string
	Sources  []SourceConfig
	// Checks: what each check does with a failing message.
	TopicMode, FormatMode, MetadataMode Mode
	// DedupTTL is how long a published id is remembered (default 1 h);
	// DedupLease how long a claim holds an id before it is published
	// (default 10 s; a holder that died frees it then).
	DedupTTL, DedupLease time.Duration
	// Workers process messages concurrently (default 16).
	Workers int
	// QueueLen bounds the messages waiting for a worker (default 4096):
	// beyond it the sources' read loops wait (back-pressure to the
	// remote brokers, whose MQTT flow control holds the rest).
	QueueLen int
	// CallTimeout bounds every de-duplication call (default 5 s).
	CallTimeout time.Duration

	Log        *slog.Logger
	Registerer prometheus.Registerer
}

// Deps are the relay's parts.
type Deps struct {
	Broker    *broker.Server
	Sources   SourceFactory
	Topics    TopicChecker    // nil: no topic check
	Format    FormatChecker   // nil: no format check (ids then from a minimal parse)
	Metadata  MetadataChecker // nil: no metadata check
	Dedup     Dedup
	EncodeWME EventEncoder // nil: no monitoring events
}

// Relay runs the relay.
type Relay struct {
	cfg  Config
	deps Deps
	log  *slog.Logger
	met  *metrics

	work    chan *item
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	mu      sync.Mutex
	sources []*source
	closed  bool
}

type source struct {
	cfg   SourceConfig
	src   Source
	mu    sync.Mutex
	up    bool
	since time.Time
	err   string
}

type item struct {
	src   *source
	in    Inbound
	tries int
	id    string // the notification id, once known
	plain bool   // relayed without de-duplication (monitoring events)
}

// New checks the configuration and builds a relay (not started).
func New(cfg Config, deps Deps) (*Relay, error) {
	if cfg.CentreID == "" {
		return nil, errors.New("wis2 relay: centre_id is required")
	}
	if deps.Broker == nil || deps.Sources == nil || deps.Dedup == nil {
		return nil, errors.New("wis2 relay: broker, sources and dedup are required")
	}
	if cfg.DedupTTL <= 0 {
		cfg.DedupTTL = time.Hour
	}
	if cfg.DedupLease <= 0 {
		cfg.DedupLease = 10 * time.Second
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 16
	}
	if cfg.QueueLen <= 0 {
		cfg.QueueLen = 4096
	}
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = 5 * time.Second
	}
	for _, m := range []*Mode{&cfg.TopicMode, &cfg.FormatMode, &cfg.MetadataMode} {
		switch *m {
		case "":
			*m = Discard
		case Discard, Verify, Off:
		default:
			return nil, fmt.Errorf("wis2 relay: check mode %q is not discard, verify or off", *m)
		}
	}
	if cfg.MetadataMode != Off && deps.Metadata == nil {
		return nil, errors.New("wis2 relay: the metadata check needs a metadata registry")
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	seen := map[string]bool{}
	for i := range cfg.Sources {
		s := &cfg.Sources[i]
		if s.CentreID == "" {
			return nil, fmt.Errorf("wis2 relay: sources[%d]: centre_id is required", i)
		}
		if seen[s.CentreID] {
			return nil, fmt.Errorf("wis2 relay: sources[%d]: centre_id %q twice", i, s.CentreID)
		}
		seen[s.CentreID] = true
		if s.Kind == "" {
			s.Kind = KindOf(s.CentreID)
		}
		if len(s.Topics) == 0 {
			s.Topics = DefaultTopics(*s)
		}
	}
	met, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	r := &Relay{cfg: cfg, deps: deps, log: cfg.Log, met: met, work: make(chan *item, cfg.QueueLen)}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	return r, nil
}

// DefaultTopics are what a source is subscribed to when its configuration
// names none: a WIS2 Node its own origin tree (WIS2 Guide: a Global Broker
// subscribes to origin/a/wis2/<centre-id>/#), a Global Cache the cache
// tree, another Global Broker both.
func DefaultTopics(s SourceConfig) []string {
	switch s.Kind {
	case KindCache:
		return []string{"cache/a/wis2/#"}
	case KindBroker:
		return []string{"origin/a/wis2/#", "cache/a/wis2/#"}
	}
	return []string{"origin/a/wis2/" + s.CentreID + "/#"}
}

// Start connects to every source and starts the workers.
func (r *Relay) Start() error {
	for range r.cfg.Workers {
		r.wg.Add(1)
		go r.worker()
	}
	for _, sc := range r.cfg.Sources {
		s := &source{cfg: sc}
		r.met.connected.WithLabelValues(sc.CentreID, r.cfg.CentreID).Set(0)
		src, err := r.deps.Sources(sc, SourceHooks{
			Message: func(in Inbound) { r.enqueue(s, in) },
			Up: func() {
				s.mu.Lock()
				s.up, s.since, s.err = true, time.Now(), ""
				s.mu.Unlock()
				r.met.connected.WithLabelValues(sc.CentreID, r.cfg.CentreID).Set(1)
				r.log.Info("wis2 relay: source connected", "source", sc.CentreID)
			},
			Down: func(err error) {
				s.mu.Lock()
				s.up, s.since = false, time.Now()
				if err != nil {
					s.err = err.Error()
				}
				s.mu.Unlock()
				r.met.connected.WithLabelValues(sc.CentreID, r.cfg.CentreID).Set(0)
				r.log.Warn("wis2 relay: source disconnected", "source", sc.CentreID, "err", err)
			},
		})
		if err != nil {
			_ = r.Close()
			return fmt.Errorf("wis2 relay: source %s: %w", sc.CentreID, err)
		}
		s.src = src
		r.mu.Lock()
		r.sources = append(r.sources, s)
		r.mu.Unlock()
		src.Start()
	}
	return nil
}

// Close stops the sources, then the workers.
func (r *Relay) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	srcs := r.sources
	r.mu.Unlock()
	var errs []error
	for _, s := range srcs {
		if err := s.src.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	r.cancel()
	r.wg.Wait()
	return errors.Join(errs...)
}

// SourceStatus is one source's state (API, dashboard).
type SourceStatus struct {
	CentreID  string    `json:"centre_id"`
	Connected bool      `json:"connected"`
	Since     time.Time `json:"since"`
	LastError string    `json:"last_error,omitempty"`
}

// Status lists the sources' states.
func (r *Relay) Status() []SourceStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]SourceStatus, 0, len(r.sources))
	for _, s := range r.sources {
		s.mu.Lock()
		out = append(out, SourceStatus{CentreID: s.cfg.CentreID, Connected: s.up, Since: s.since, LastError: s.err})
		s.mu.Unlock()
	}
	return out
}

// enqueue hands a message to the workers; it waits while they are all
// busy and the queue is full (back-pressure on the source's read loop).
func (r *Relay) enqueue(s *source, in Inbound) {
	it := &item{src: s, in: in}
	select {
	case r.work <- it:
	case <-r.ctx.Done():
	}
}

func (r *Relay) worker() {
	defer r.wg.Done()
	pub := r.deps.Broker.NewPublisher(broker.PublisherOptions{
		Client:  broker.ClientInfo{ClientID: "wis2-relay"},
		Trusted: true,
		Origin:  broker.Origin{Kind: broker.OriginBridge, Name: "wis2-relay"},
	})
	defer pub.Close()
	for {
		select {
		case it := <-r.work:
			r.process(pub, it)
		case <-r.ctx.Done():
			return
		}
	}
}

// process runs one message through the checks, the de-duplication and the
// republication. The source's message is acknowledged when the relay is
// done with it; on a failure of the de-duplication store or of the local
// publish it is not acknowledged and not dropped: it is retried (the
// source resends it too after a reconnection).
func (r *Relay) process(pub *broker.Publisher, it *item) {
	s, in := it.src, it.in
	src := s.cfg.CentreID
	rb := r.cfg.CentreID
	if it.tries == 0 {
		monitor := strings.HasPrefix(in.Topic, "monitor/")
		var centre string
		var metadata bool
		var topicErr error
		if r.deps.Topics != nil && !monitor {
			centre, metadata, topicErr = r.deps.Topics.CheckTopic(in.Topic)
		} else {
			centre = topicCentre(in.Topic)
		}
		// A WIS2 Node publishes only under its own centre-id: anything else
		// through it is neither relayed nor counted.
		if s.cfg.Kind == KindNode && centre != "" && centre != src {
			r.met.foreign.WithLabelValues(src, rb).Inc()
			r.log.Debug("wis2 relay: message under another centre-id through a WIS2 Node dropped", "source", src, "topic", in.Topic)
			in.Ack()
			return
		}
		r.met.received.WithLabelValues(src, rb).Inc()
		r.met.lastMessage.WithLabelValues(src, rb).SetToCurrentTime()
		if monitor {
			// Monitoring events of other centres are relayed as they are
			// (they are not notifications) and never reported on.
			it.plain = true
			r.publishOnce(pub, it, "", false)
			return
		}
		var id, metadataID string
		var formatErr error
		if r.deps.Format != nil {
			id, metadataID, formatErr = r.deps.Format.CheckFormat(in.Payload)
		} else {
			id = minimalID(in.Payload)
		}
		if topicErr != nil && r.cfg.TopicMode != Off {
			r.met.invalidTopic.WithLabelValues(src, rb).Inc()
			r.report(pub, Event{Source: src, Topic: in.Topic, ID: id, Payload: in.Payload, Reason: "invalid_topic", Detail: topicErr.Error(), Err: topicErr})
			if r.cfg.TopicMode == Discard {
				in.Ack()
				return
			}
		}
		if formatErr != nil && r.cfg.FormatMode != Off {
			r.met.invalidFormat.WithLabelValues(src, rb).Inc()
			r.report(pub, Event{Source: src, Topic: in.Topic, ID: id, Payload: in.Payload, Reason: "invalid_format", Detail: formatErr.Error(), Err: formatErr})
			if r.cfg.FormatMode == Discard || id == "" {
				// Without an id it cannot be de-duplicated: never published.
				in.Ack()
				return
			}
		}
		if id == "" {
			// No format check and no id: nothing to de-duplicate on.
			r.met.invalidFormat.WithLabelValues(src, rb).Inc()
			r.report(pub, Event{Source: src, Topic: in.Topic, Payload: in.Payload, Reason: "invalid_format", Detail: "no notification id"})
			in.Ack()
			return
		}
		if r.cfg.MetadataMode != Off && !metadata && !r.deps.Metadata.Known(metadataID, in.Topic) {
			r.met.noMetadata.WithLabelValues(src, rb).Inc()
			r.report(pub, Event{Source: src, Topic: in.Topic, ID: id, Payload: in.Payload, Reason: "no_metadata", Detail: "metadata " + metadataID + " is not registered"})
			if r.cfg.MetadataMode == Discard {
				in.Ack()
				return
			}
		}
		r.publishOnce(pub, it, id, true)
		return
	}
	// A retry (de-duplication store error or a lease held elsewhere):
	// the checks passed already.
	r.publishOnce(pub, it, it.id, !it.plain)
}

// publishOnce claims id, publishes the message to the local broker and
// confirms the claim; duplicates are dropped, leases held elsewhere and
// store errors retried after a while.
func (r *Relay) publishOnce(pub *broker.Publisher, it *item, id string, dedup bool) {
	src, rb := it.src.cfg.CentreID, r.cfg.CentreID
	it.id = id
	token := ""
	if dedup {
		ctx, cancel := context.WithTimeout(r.ctx, r.cfg.CallTimeout)
		res, tok, err := r.deps.Dedup.Claim(ctx, id, r.cfg.DedupLease)
		cancel()
		switch {
		case err != nil:
			r.met.dedupErrors.Inc()
			r.log.Warn("wis2 relay: de-duplication store error, will retry", "source", src, "id", id, "err", err)
			r.retry(it, time.Second)
			return
		case res == Published:
			r.met.duplicates.WithLabelValues(src, rb).Inc()
			it.in.Ack()
			return
		case res == Leased:
			// Another copy is being published (here or on another node):
			// wait for it; if its holder dies the lease expires and this
			// copy claims the id.
			r.retry(it, min(r.cfg.DedupLease/4, time.Second))
			return
		}
		token = tok
	}
	m := &broker.Message{Topic: it.in.Topic, Payload: it.in.Payload, QoS: 1}
	done := make(chan broker.PublishResult, 1)
	if err := pub.Publish(m, func(res broker.PublishResult) { done <- res }); err != nil {
		r.failed(it, id, token, err)
		return
	}
	if err := pub.Flush(); err != nil {
		r.failed(it, id, token, err)
		return
	}
	res := <-done
	if res.Err != nil {
		r.failed(it, id, token, res.Err)
		return
	}
	if dedup {
		r.confirm(id, token)
	}
	r.met.published.WithLabelValues(src, rb).Inc()
	it.in.Ack()
}

// confirm marks a published id, retrying (a store failover) until the
// claim's lease would end: a lease that expired unconfirmed lets a later
// copy be published again (a duplicate, never a loss).
func (r *Relay) confirm(id, token string) {
	deadline := time.Now().Add(r.cfg.DedupLease)
	for {
		ctx, cancel := context.WithTimeout(r.ctx, r.cfg.CallTimeout)
		err := r.deps.Dedup.Confirm(ctx, id, token, r.cfg.DedupTTL)
		cancel()
		if err == nil {
			return
		}
		r.met.dedupErrors.Inc()
		if time.Now().After(deadline) || r.ctx.Err() != nil {
			r.log.Warn("wis2 relay: confirming a published id failed", "id", id, "err", err)
			return
		}
		t := time.NewTimer(200 * time.Millisecond)
		select {
		case <-t.C:
		case <-r.ctx.Done():
			t.Stop()
			return
		}
	}
}

// failed handles a local publish failure: the claim is released (another
// copy may be published) and the message retried.
func (r *Relay) failed(it *item, id, token string, err error) {
	r.log.Warn("wis2 relay: republishing failed, will retry", "source", it.src.cfg.CentreID, "topic", it.in.Topic, "err", err)
	if token != "" {
		ctx, cancel := context.WithTimeout(r.ctx, r.cfg.CallTimeout)
		_ = r.deps.Dedup.Release(ctx, id, token)
		cancel()
	}
	if errors.Is(err, broker.ErrServerClosed) || errors.Is(err, broker.ErrPublisherClose) {
		return // shutting down: not acknowledged, the source resends it
	}
	r.retry(it, time.Second)
}

// retry processes the message again after d, unless the relay stops
// (then it is not acknowledged: the source resends it after a reconnect).
func (r *Relay) retry(it *item, d time.Duration) {
	it.tries++
	r.met.retries.Inc()
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-r.ctx.Done():
			return
		}
		select {
		case r.work <- it:
		case <-r.ctx.Done():
		}
	}()
}

// report publishes a monitoring event about a discarded message (never
// about one that came in on monitor/...).
func (r *Relay) report(pub *broker.Publisher, e Event) {
	if r.deps.EncodeWME == nil {
		return
	}
	topic, payload, err := r.deps.EncodeWME(r.cfg.CentreID, e)
	if err != nil {
		r.log.Warn("wis2 relay: monitoring event not built", "err", err)
		return
	}
	if err := pub.Publish(&broker.Message{Topic: topic, Payload: payload, QoS: 1}, nil); err != nil {
		r.log.Warn("wis2 relay: monitoring event not published", "topic", topic, "err", err)
		return
	}
	if err := pub.Flush(); err != nil {
		r.log.Warn("wis2 relay: monitoring event not published", "topic", topic, "err", err)
		return
	}
	r.met.events.WithLabelValues(e.Reason).Inc()
}

// topicCentre returns level 4 of a WIS2 topic ("" if it has fewer).
func topicCentre(t string) string {
	parts := strings.SplitN(t, "/", 5)
	if len(parts) < 4 {
		return ""
	}
	return parts[3]
}

// minimalID reads the id of a notification without a format check.
func minimalID(payload []byte) string {
	var n struct {
		ID any `json:"id"`
	}
	if json.Unmarshal(payload, &n) != nil {
		return ""
	}
	id, _ := n.ID.(string)
	return id
}
