// Package bridge links Isobar to other MQTT brokers: outgoing MQTT 3.1.1
// or 5.0 connections (internal/mqtt/client) with topic rules in, out and
// both, local and remote prefixes and a QoS per rule, as mosquitto's
// bridges; and, with demand set, network-of-brokers links that ask the
// remote broker only for what this broker's clients subscribe to (one
// remote subscription per distinct filter, however many local
// subscribers: a conduit).
//
// # Data flow
//
// Out: each link is a broker.Subscriber of the rules' local filters. The
// router's Deliver puts a message into the link's bounded buffer (count
// and bytes; beyond either a message is dropped and counted) and, for
// QoS 1 and 2 while the link is up, holds the publisher's transaction
// until the remote broker acknowledged it (at most holdFor): the local
// publisher's PUBACK then means the remote has the message. While the
// link is down the buffer fills and publishers are not held. One sender
// goroutine per link publishes in order.
//
// In: the link subscribes on the remote broker to the rules' remote
// filters (or, with demand, to the local interest they cover). Each
// message is mapped to its local topic and published through a
// broker.Publisher (origin bridge, the link's name) by the link's inbound
// goroutine; the remote's PUBACK is sent once the message is routed and
// durable.
//
// Loops are prevented as loop.go describes. In a cluster each link runs
// on the one node Placement names and moves when the members change.
package bridge

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/isobar-mq/isobar/internal/broker"
	"github.com/isobar-mq/isobar/internal/mqtt/client"
	"github.com/isobar-mq/isobar/internal/mqtt/packet"
	"github.com/isobar-mq/isobar/internal/topic"
)

// Defaults.
const (
	DefaultMaxHops        = 8
	DefaultBufferMessages = 100_000
	DefaultBufferBytes    = 64 << 20
	// holdFor bounds how long a local publisher's acknowledgement waits
	// for the remote broker (below the broker's hold timeout, 10 s by
	// default): past it the message stays buffered and is acknowledged
	// locally.
	holdFor = 4 * time.Second
)

// Placement says which cluster node runs each bridge. Owner must give the
// same answer on every node that sees the same members.
type Placement interface {
	Self() string
	Owner(bridge string) string
	// OnChange registers f, called (without locks, must not block) when
	// owners may have changed.
	OnChange(f func())
}

// LinkConfig is one bridge.
type LinkConfig struct {
	Name string
	// Client is the MQTT client's configuration; Handler, OnConnect,
	// OnConnectionLost and Subscriptions are the bridge's own.
	Client client.Config
	Rules  []Rule
	// MaxHops is the network TTL: a message that went through more
	// brokers is not forwarded (default DefaultMaxHops).
	MaxHops int
	// BufferMessages and BufferBytes bound the outgoing buffer.
	BufferMessages int
	BufferBytes    int64
	// Demand: subscribe remotely only to the local interest the in rules
	// cover (network of brokers), not to the rules' whole filters.
	Demand bool
}

// Options configure an Engine.
type Options struct {
	Server *broker.Server
	// Self names this broker on hop paths (the node name).
	Self  string
	Links []LinkConfig
	// Placement is nil for a single node: every link runs here.
	Placement Placement
	// SysInterval is how often link status goes to $SYS (0 = never).
	SysInterval time.Duration
	Log         *slog.Logger
	Registerer  prometheus.Registerer
}

// Engine runs the bridges of one node.
type Engine struct {
	srv   *broker.Server
	self  string
	idGen broker.MessageID // Node part of the ids this engine stamps
	log   *slog.Logger
	place Placement
	seen  *seenIDs
	sysIv time.Duration
	// maxHops is the largest max_hops of the links: the limit for
	// messages other brokers push here.
	maxHops int
	// Messages other brokers pushed here that the publish hook dropped.
	pushedLoop, pushedHops, pushedDup atomic.Uint64

	mu      sync.Mutex
	links   map[string]*link
	order   []string
	closed  bool
	seq     atomic.Uint64
	started bool
	// interest counts, per filter, the sources that report it (this
	// node's broker; in a cluster, the other nodes' routes too): demand
	// links follow its transitions between 0 and 1.
	interest map[string]int
	// evMu guards evq: InterestChanged is called under the broker's
	// interest lock, also while a link (under mu) subscribes locally.
	evMu     sync.Mutex
	evq      []interestEvent
	evNotify chan struct{}
	quit     chan struct{}
	wg       sync.WaitGroup
}

type interestEvent struct {
	filter string
	added  bool
}

// New validates the links and returns an engine that is not started.
func New(o Options) (*Engine, error) {
	if o.Server == nil {
		return nil, errors.New("bridge: no server")
	}
	if o.Self == "" {
		return nil, errors.New("bridge: no broker name")
	}
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	e := &Engine{srv: o.Server, self: o.Self, log: log.With("component", "bridge"), place: o.Placement,
		seen: newSeenIDs(), sysIv: o.SysInterval, links: make(map[string]*link),
		interest: make(map[string]int), evNotify: make(chan struct{}, 1), quit: make(chan struct{})}
	e.idGen.Node = broker.NodeHash("bridge:" + o.Self)
	e.seq.Store(uint64(time.Now().UnixNano()))
	for _, lc := range o.Links {
		if lc.Name == "" {
			return nil, errors.New("bridge: a link has no name")
		}
		if _, dup := e.links[lc.Name]; dup {
			return nil, fmt.Errorf("bridge %q: name used twice", lc.Name)
		}
		if len(lc.Rules) == 0 {
			return nil, fmt.Errorf("bridge %q: no topics", lc.Name)
		}
		for _, r := range lc.Rules {
			if err := r.validate(); err != nil {
				return nil, fmt.Errorf("bridge %q: %w", lc.Name, err)
			}
		}
		// The client's own checks (URL, client identifier, credentials)
		// fail the start rather than every attempt to run the link.
		probe, err := client.New(lc.Client)
		if err != nil {
			return nil, fmt.Errorf("bridge %q: %w", lc.Name, err)
		}
		_ = probe.Close()
		if lc.MaxHops <= 0 {
			lc.MaxHops = DefaultMaxHops
		}
		if lc.BufferMessages <= 0 {
			lc.BufferMessages = DefaultBufferMessages
		}
		if lc.BufferBytes <= 0 {
			lc.BufferBytes = DefaultBufferBytes
		}
		e.maxHops = max(e.maxHops, lc.MaxHops)
		l := &link{e: e, cfg: lc, log: e.log.With("bridge", lc.Name)}
		e.links[lc.Name] = l
		e.order = append(e.order, lc.Name)
	}
	if o.Registerer != nil {
		if err := o.Registerer.Register(&collector{e: e}); err != nil {
			return nil, fmt.Errorf("bridge: metrics: %w", err)
		}
	}
	return e, nil
}

// Start stamps local messages with ids, starts the links this node owns
// and follows placement changes.
func (e *Engine) Start() error {
	e.mu.Lock()
	if e.started || e.closed {
		e.mu.Unlock()
		return nil
	}
	e.started = true
	e.mu.Unlock()
	e.srv.AddHook(stampHook{e})
	e.wg.Add(1)
	go e.interestLoop()
	if e.sysIv > 0 {
		e.wg.Add(1)
		go e.sysLoop()
	}
	e.rebalance()
	if e.place != nil {
		// Membership changes are also looked at periodically: a state
		// the cluster reports no event for (a node marked dead after
		// its link was gone) must still move the bridge.
		e.wg.Add(1)
		go e.placementLoop()
		e.place.OnChange(func() {
			// Off the cluster's goroutine: starting a link may block
			// briefly (a client, subscriptions).
			e.mu.Lock()
			defer e.mu.Unlock()
			if e.closed {
				return
			}
			e.wg.Add(1)
			go func() { defer e.wg.Done(); e.rebalance() }()
		})
	}
	return nil
}

// placementRecheck is how often placement is looked at without an event.
const placementRecheck = time.Second

func (e *Engine) placementLoop() {
	defer e.wg.Done()
	t := time.NewTicker(placementRecheck)
	defer t.Stop()
	for {
		select {
		case <-e.quit:
			return
		case <-t.C:
			e.rebalance()
		}
	}
}

// rebalance starts the links this node owns and stops the others.
func (e *Engine) rebalance() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return
	}
	for _, name := range e.order {
		l := e.links[name]
		own := e.place == nil || e.place.Owner(name) == e.place.Self()
		switch {
		case own && !l.running():
			if err := l.start(); err != nil {
				l.log.Error("bridge not started", "err", err)
				l.setError(err)
			} else {
				l.log.Info("bridge started", "url", l.cfg.Client.URL, "demand", l.cfg.Demand)
				if l.cfg.Demand {
					l.demandSnapshot(e.interest)
				}
			}
		case !own && l.running():
			l.log.Info("bridge moves to another node", "owner", e.place.Owner(name))
			l.stop()
		}
	}
}

// Close stops every link.
func (e *Engine) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	close(e.quit)
	links := make([]*link, 0, len(e.links))
	for _, name := range e.order {
		links = append(links, e.links[name])
	}
	e.mu.Unlock()
	for _, l := range links {
		l.stop()
	}
	e.wg.Wait()
	return nil
}

// InterestChanged implements broker.InterestObserver: it only queues (the
// broker's interest lock is held). Other sources of interest (the routes
// of the other nodes of a cluster) report through it too: a filter is of
// interest while at least one source reports it.
func (e *Engine) InterestChanged(filter string, added bool) {
	e.evMu.Lock()
	e.evq = append(e.evq, interestEvent{filter, added})
	e.evMu.Unlock()
	select {
	case e.evNotify <- struct{}{}:
	default:
	}
}

// SetInterest replaces the known local interest (the broker's snapshot
// when the engine is attached).
func (e *Engine) SetInterest(filters []string) {
	e.evMu.Lock()
	for _, f := range filters {
		e.evq = append(e.evq, interestEvent{f, true})
	}
	e.evMu.Unlock()
	select {
	case e.evNotify <- struct{}{}:
	default:
	}
}

func (e *Engine) interestLoop() {
	defer e.wg.Done()
	for {
		select {
		case <-e.quit:
			return
		case <-e.evNotify:
		}
		e.evMu.Lock()
		evs := e.evq
		e.evq = nil
		e.evMu.Unlock()
		e.mu.Lock()
		var changed []interestEvent
		for _, ev := range evs {
			n := e.interest[ev.filter]
			switch {
			case ev.added:
				e.interest[ev.filter] = n + 1
				if n == 0 {
					changed = append(changed, ev)
				}
			case n <= 1:
				delete(e.interest, ev.filter)
				if n == 1 {
					changed = append(changed, ev)
				}
			default:
				e.interest[ev.filter] = n - 1
			}
		}
		var demand []*link
		for _, name := range e.order {
			if l := e.links[name]; l.cfg.Demand && l.running() {
				demand = append(demand, l)
			}
		}
		e.mu.Unlock()
		for _, l := range demand {
			for _, ev := range changed {
				l.demandChanged(ev.filter, ev.added)
			}
		}
	}
}

// nextID stamps a message entering the network here.
func (e *Engine) nextID() broker.MessageID {
	return broker.MessageID{Node: e.idGen.Node, Seq: e.seq.Add(1)}
}

// Status is one link's state, for the API, $SYS and metrics.
type Status struct {
	Name           string    `json:"name"`
	URL            string    `json:"url"`
	Running        bool      `json:"running"` // on this node
	Connected      bool      `json:"connected"`
	Since          time.Time `json:"since"`
	LastError      string    `json:"last_error,omitempty"`
	Reconnects     uint64    `json:"reconnects"`
	In             uint64    `json:"messages_in"`
	Out            uint64    `json:"messages_out"`
	Buffered       int       `json:"buffered"`
	BufferedBytes  int64     `json:"buffered_bytes"`
	DroppedFull    uint64    `json:"dropped_buffer_full"`
	DroppedLoop    uint64    `json:"dropped_loop"`
	DroppedHops    uint64    `json:"dropped_max_hops"`
	DroppedDup     uint64    `json:"dropped_duplicate"`
	DroppedRefused uint64    `json:"dropped_refused"`
	Demand         []string  `json:"demand,omitempty"` // remote filters subscribed for local interest
}

// Status returns every link's status, in configuration order.
func (e *Engine) Status() []Status {
	e.mu.Lock()
	links := make([]*link, 0, len(e.order))
	for _, name := range e.order {
		links = append(links, e.links[name])
	}
	e.mu.Unlock()
	out := make([]Status, 0, len(links))
	for _, l := range links {
		out = append(out, l.status())
	}
	return out
}

// stampHook runs on every publish on this broker. A message without a
// bridge id gets one (and a path naming this broker), so that a message
// entering the network here can be recognised on every other broker
// whichever way it comes: remote links also pull messages from here as
// plain MQTT subscribers. A message that already has one was pushed here
// by another broker's link (as a plain MQTT client): it is dropped if its
// path names this broker (a loop), if it went through more brokers than
// any link here allows, or if its id was routed here recently (it came
// another way too); otherwise this broker is added to its path. The
// engine's own inbound publishers did those checks already.
type stampHook struct{ e *Engine }

func (stampHook) HookName() string { return "bridge-loop-prevention" }

func (h stampHook) OnPublish(from broker.ClientInfo, m *broker.Message) (*broker.Message, byte) {
	if len(m.Topic) > 0 && m.Topic[0] == '$' {
		return m, 0
	}
	e := h.e
	path, id, ok := pathOf(&m.Props)
	if ok && from.Listener == "" && strings.HasPrefix(from.ClientID, inboundClientPrefix) {
		return m, 0
	}
	c := *m
	if !ok {
		c.Props.User = withLoopProps(m.Props.User, e.self, e.nextID())
		c.Props.Present |= 1 << packet.PropUserProperty
		return &c, 0
	}
	if pathContains(path, e.self) || id.Node == e.idGen.Node {
		e.pushedLoop.Add(1)
		return nil, 0
	}
	path = appendPath(path, e.self)
	if pathLen(path)-1 > e.maxHops {
		e.pushedHops.Add(1)
		return nil, 0
	}
	if e.seen.check(id, time.Now()) {
		e.pushedDup.Add(1)
		return nil, 0
	}
	c.Props.User = withLoopProps(m.Props.User, path, id)
	c.Hops = uint8(min(pathLen(path)-1, 255))
	return &c, 0
}

// inboundClientPrefix starts the client identifier of a link's inbound
// publisher.
const inboundClientPrefix = "bridge:"

// sortedKeys returns a map's keys, sorted.
func sortedKeys(m map[string]int) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// localDemandFilter maps a local interest filter to the remote filter a
// demand link subscribes to for it under rule r ("" if none).
func localDemandFilter(r Rule, f string) string {
	if r.Direction&In == 0 {
		return ""
	}
	if _, inner, shared := topic.ParseShared(f); shared {
		f = inner
	}
	if f == "" || f[0] == '$' {
		return ""
	}
	x := intersect(r.LocalFilter(), f)
	if x == "" {
		return ""
	}
	rest, ok := cutFilterPrefix(x, r.LocalPrefix)
	if !ok {
		// The interest's wildcards reach into the prefix: the rule's
		// own filter is the narrowest that covers it.
		return r.RemoteFilter()
	}
	return r.RemotePrefix + rest
}

// cutFilterPrefix removes a literal prefix from a filter.
func cutFilterPrefix(f, prefix string) (string, bool) {
	rest, ok := strings.CutPrefix(f, prefix)
	if !ok || (rest == "" && prefix != "") {
		return "", false
	}
	return rest, true
}
