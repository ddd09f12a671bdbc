// Package stomp is Isobar's STOMP 1.0, 1.1 and 1.2 gateway: STOMP clients
// publish into and subscribe to the broker's MQTT topic space
// (/topic/a.b.c is MQTT a/b/c) with the same users, ACL and limits as
// MQTT clients, and use point-to-point queues (/queue/name, served by
// package queue) that live beside the topic space. docs/stomp.md is the
// user guide; the frame codec is frame.go, the destination mapping
// dest.go, the message mapping mapping.go and one connection conn.go.
package stomp

import (
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/isobar-mq/isobar/internal/broker"
	"github.com/isobar-mq/isobar/internal/stomp/queue"
	"github.com/prometheus/client_golang/prometheus"
)

// Defaults for zero Options fields.
const (
	DefaultHeartBeatSend    = 10 * time.Second
	DefaultHeartBeatReceive = 10 * time.Second
	DefaultConnectTimeout   = 10 * time.Second
	DefaultWriteTimeout     = 10 * time.Second
	DefaultMaxPendingBytes  = 8 << 20
	DefaultMaxSubscriptions = 1000
	DefaultMaxTransactions  = 16
	DefaultMaxTxFrames      = 10000
	// DefaultPrefetch is the window of a subscription with ack mode
	// client or client-individual and no activemq.prefetchSize.
	DefaultPrefetch = 1000
)

// Options configure a Gateway.
type Options struct {
	// Server is the broker the gateway publishes into and subscribes to.
	Server *broker.Server
	// Auth authenticates CONNECT and authorizes destinations; nil allows
	// everything (as for the broker).
	Auth broker.Auth
	// Queues configures the queue manager the gateway opens (Log and
	// Registerer are filled in from these options when nil).
	Queues queue.Options
	// Limits bound the frames accepted from clients.
	Limits Limits
	// HeartBeatSend is the smallest interval at which the gateway sends
	// heart-beats, HeartBeatReceive the interval it asks of clients (the
	// CONNECTED heart-beat header sx,sy). Negative disables that
	// direction; zero takes the default.
	HeartBeatSend, HeartBeatReceive time.Duration
	// ConnectTimeout closes a connection that sent no CONNECT in time.
	ConnectTimeout time.Duration
	// WriteTimeout closes a connection whose socket accepted no data for
	// this long (a consumer stuck that long is disconnected).
	WriteTimeout time.Duration
	// MaxPendingBytes bounds the frames queued for writing to one
	// connection: topic messages beyond it are dropped (counted), queue
	// messages wait in their queue.
	MaxPendingBytes int
	// MaxSubscriptions per connection.
	MaxSubscriptions int
	// MaxTransactions open at once per connection, and MaxTxFrames
	// frames held by one transaction.
	MaxTransactions, MaxTxFrames int
	// Version is the broker version for the CONNECTED server header.
	Version string
	// Cluster, when set, makes queues cluster-wide: each queue lives at
	// one owner node, SENDs and consumers on other nodes go there (see
	// docs/stomp.md, "Queues in a cluster"). Nil: queues are this node's.
	Cluster Cluster
	// ClusterTimeout bounds the wait for a queue's owner to store a SEND
	// forwarded to it (default DefaultClusterTimeout).
	ClusterTimeout time.Duration
	// Log and Registerer: nil = discard / not registered.
	Log        *slog.Logger
	Registerer prometheus.Registerer
}

// Gateway serves STOMP connections.
type Gateway struct {
	opts   Options
	srv    *broker.Server
	log    *slog.Logger
	queues *queue.Manager
	qs     queueBackend // queues as the connections use them: local, or cluster-wide
	sidTag string       // in a cluster, names this node in session ids (temporary queues)
	m      *metrics

	mu     sync.Mutex
	closed bool
	lns    map[net.Listener]struct{}
	conns  map[*conn]struct{}
	perLn  map[string]int // open connections per listener
	wg     sync.WaitGroup

	dropped atomic.Uint64
	maxQoS  int // the broker's, read once
}

// Connections is the number of STOMP connections open now.
func (g *Gateway) Connections() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.conns)
}

// listenerFull reports whether the listener has more connections than
// its max_connections.
func (g *Gateway) listenerFull(name string) bool {
	lim := g.srv.Options().Listeners[name].MaxConnections
	if lim <= 0 {
		return false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.perLn[name] > lim
}

// Dropped is the number of topic messages not delivered to a subscriber
// because its connection had too many bytes pending or its window was
// full (isobar_stomp_dropped_total).
func (g *Gateway) Dropped() uint64 { return g.dropped.Load() }

// New opens the queue manager and returns a gateway ready to Serve.
func New(o Options) (*Gateway, error) {
	if o.Server == nil {
		return nil, errors.New("stomp: Options.Server is required")
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	o.Limits = o.Limits.withDefaults()
	if o.HeartBeatSend == 0 {
		o.HeartBeatSend = DefaultHeartBeatSend
	}
	if o.HeartBeatReceive == 0 {
		o.HeartBeatReceive = DefaultHeartBeatReceive
	}
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = DefaultConnectTimeout
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = DefaultWriteTimeout
	}
	if o.MaxPendingBytes <= 0 {
		o.MaxPendingBytes = DefaultMaxPendingBytes
	}
	if o.MaxSubscriptions <= 0 {
		o.MaxSubscriptions = DefaultMaxSubscriptions
	}
	if o.MaxTransactions <= 0 {
		o.MaxTransactions = DefaultMaxTransactions
	}
	if o.MaxTxFrames <= 0 {
		o.MaxTxFrames = DefaultMaxTxFrames
	}
	if o.Version == "" {
		o.Version = "dev"
	}
	log := o.Log.With("component", "stomp")
	qo := o.Queues
	if qo.Log == nil {
		qo.Log = log
	}
	if qo.Registerer == nil {
		qo.Registerer = o.Registerer
	}
	m, err := newMetrics(o.Registerer)
	if err != nil {
		return nil, err
	}
	qm, err := queue.Open(qo)
	if err != nil {
		m.unregister(o.Registerer)
		return nil, err
	}
	var qs queueBackend = localQueues{qm}
	sidTag := ""
	if o.Cluster != nil {
		sidTag = nodeTag(o.Cluster.Name()) + "-"
		cq, err := newCQueues(qm, o.Cluster, o.ClusterTimeout, log, o.Registerer)
		if err != nil {
			_ = qm.Close()
			m.unregister(o.Registerer)
			return nil, err
		}
		qs = cq
	}
	return &Gateway{
		opts: o, srv: o.Server, log: log, queues: qm, qs: qs, sidTag: sidTag, m: m, maxQoS: o.Server.Options().MaxQoS,
		lns: make(map[net.Listener]struct{}), conns: make(map[*conn]struct{}), perLn: make(map[string]int),
	}, nil
}

// Queues is the gateway's queue manager.
func (g *Gateway) Queues() *queue.Manager { return g.queues }

// Serve accepts STOMP connections on l (name is the listener name, used
// for authorization and logs) until l or the gateway is closed.
func (g *Gateway) Serve(l net.Listener, name string) error {
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		_ = l.Close()
		return net.ErrClosed
	}
	g.lns[l] = struct{}{}
	g.wg.Add(1)
	g.mu.Unlock()
	defer g.wg.Done()
	var delay time.Duration
	for {
		nc, err := l.Accept()
		if err != nil {
			g.mu.Lock()
			closed := g.closed
			g.mu.Unlock()
			if closed || errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			if delay == 0 {
				delay = 5 * time.Millisecond
			} else if delay *= 2; delay > time.Second {
				delay = time.Second
			}
			g.log.Warn("accept failed; retrying", "listener", name, "err", err, "delay", delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		g.ServeConn(nc, name)
	}
}

// ServeConn serves one accepted connection in its own goroutines.
func (g *Gateway) ServeConn(nc net.Conn, listener string) {
	c := newConn(g, nc, listener)
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		_ = nc.Close()
		return
	}
	g.conns[c] = struct{}{}
	g.perLn[listener]++
	g.wg.Add(1)
	g.mu.Unlock()
	go func() {
		defer g.wg.Done()
		c.serve()
		g.mu.Lock()
		delete(g.conns, c)
		g.perLn[listener]--
		g.mu.Unlock()
	}()
}

// Close stops the listeners, closes every connection (open transactions
// are aborted, unacknowledged queue messages go back to their queues),
// waits for them and closes the queue manager.
func (g *Gateway) Close() error {
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return nil
	}
	g.closed = true
	for l := range g.lns {
		_ = l.Close()
	}
	conns := make([]*conn, 0, len(g.conns))
	for c := range g.conns {
		conns = append(conns, c)
	}
	g.mu.Unlock()
	for _, c := range conns {
		c.shutdown()
	}
	g.wg.Wait()
	g.qs.Close()
	err := g.queues.Close()
	g.m.unregister(g.opts.Registerer)
	return err
}

// metrics are the gateway's Prometheus metrics.
type metrics struct {
	connections  prometheus.Gauge
	connTotal    prometheus.Counter
	framesIn     *prometheus.CounterVec
	framesOut    *prometheus.CounterVec
	messagesIn   *prometheus.CounterVec
	messagesOut  *prometheus.CounterVec
	errors       *prometheus.CounterVec
	dropped      *prometheus.CounterVec
	collectors   []prometheus.Collector
	unregistered bool
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		connections: prometheus.NewGauge(prometheus.GaugeOpts{Name: "isobar_stomp_connections",
			Help: "STOMP connections open now."}),
		connTotal: prometheus.NewCounter(prometheus.CounterOpts{Name: "isobar_stomp_connections_total",
			Help: "STOMP connections accepted."}),
		framesIn: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "isobar_stomp_frames_received_total",
			Help: "STOMP frames received, by command."}, []string{"command"}),
		framesOut: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "isobar_stomp_frames_sent_total",
			Help: "STOMP frames sent, by command."}, []string{"command"}),
		messagesIn: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "isobar_stomp_messages_received_total",
			Help: "Messages received from STOMP clients (SEND), by destination kind."}, []string{"kind"}),
		messagesOut: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "isobar_stomp_messages_sent_total",
			Help: "Messages sent to STOMP clients (MESSAGE), by destination kind."}, []string{"kind"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "isobar_stomp_errors_total",
			Help: "ERROR frames sent (each closes its connection), by reason."}, []string{"reason"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "isobar_stomp_dropped_total",
			Help: "Topic messages not delivered to a STOMP subscriber, by reason (pending_bytes, window)."}, []string{"reason"}),
	}
	m.collectors = []prometheus.Collector{m.connections, m.connTotal, m.framesIn, m.framesOut, m.messagesIn, m.messagesOut, m.errors, m.dropped}
	if reg != nil {
		for i, c := range m.collectors {
			if err := reg.Register(c); err != nil {
				for _, p := range m.collectors[:i] {
					reg.Unregister(p)
				}
				return nil, err
			}
		}
	}
	return m, nil
}

func (m *metrics) unregister(reg prometheus.Registerer) {
	if reg == nil || m.unregistered {
		return
	}
	m.unregistered = true
	for _, c := range m.collectors {
		reg.Unregister(c)
	}
}
