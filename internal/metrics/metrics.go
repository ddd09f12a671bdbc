// Package metrics exposes a broker's counters and gauges to Prometheus.
//
// The Collector reads the broker when it is scraped and at no other time:
// the broker's hot path only bumps its own atomic counters (broker.Stats),
// which are loaded here, so the cost of metrics is paid by the scraper, not
// by message traffic. Gauges that need a walk of the sessions (sessions,
// in-flight, queued, connections) are computed during the scrape too.
//
// Every metric is named isobar_*, uses base units (seconds, bytes) and
// carries only bounded labels: listener names from the configuration, the
// MQTT protocol version, a QoS level, a fixed table of causes and reason
// names, or a packet type. Never a client identifier or a topic.
//
// There are no package-level registries: NewRegistry builds one per node,
// so several nodes can run in one process (tests).
package metrics

import (
	"errors"
	"fmt"
	"net"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/isobar-mq/isobar/internal/auth"
	"github.com/isobar-mq/isobar/internal/broker"
	"github.com/isobar-mq/isobar/internal/listener"
	"github.com/isobar-mq/isobar/internal/mqtt/packet"
)

// Namespace prefixes every metric name.
const Namespace = "isobar"

// Collector is a prometheus.Collector reading one broker at scrape time.
// It also counts accepted connections per listener (see WrapListener).
type Collector struct {
	srv     *broker.Server
	version string
	start   time.Time

	// AuthStats, when set, exports the authenticator's throttle counters;
	// Listeners, the listeners' counters. Set them before serving.
	AuthStats func() *auth.Stats
	Listeners []listener.Listener

	mu      sync.Mutex
	accepts map[string]*acceptState
	order   []string

	descs descs
}

type descs struct {
	buildInfo, startTime, connectionsMax                                     *prometheus.Desc
	connections, accepted, connects, connectsRefused, authFailures           *prometheus.Desc
	disconnects, takeovers, protocolErrors, malformed                        *prometheus.Desc
	msgsReceived, msgsSent, bytesReceived, bytesSent, dropped, slowConsumers *prometheus.Desc
	sessions, sessionsExpired, inflight, queued, retained, subscriptions     *prometheus.Desc
	willsPublished, sharedRedispatched, latency                              *prometheus.Desc
	storeDegraded, storeErrors, panics, takeoversRefused, queuedBytes        *prometheus.Desc
	subscriptionsRevoked, authThrottled, authRefused, proxyUntrusted         *prometheus.Desc
}

func newDesc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(Namespace+"_"+name, help, labels, nil)
}

// New returns a collector for srv (set AuthStats and Listeners to export
// the authenticator's and the listeners' counters too). version is reported by
// isobar_build_info.
func New(srv *broker.Server, version string) *Collector {
	c := &Collector{srv: srv, version: version, start: time.Now(), accepts: make(map[string]*acceptState)}
	c.descs = descs{
		buildInfo:            newDesc("build_info", "Always 1; labels give the broker version, node name and Go version.", "version", "node", "goversion"),
		startTime:            newDesc("start_time_seconds", "Unix time the broker started."),
		connectionsMax:       newDesc("connections_max", "Configured limit on concurrent client connections (0 = unlimited)."),
		connections:          newDesc("connections", "Connected MQTT clients (CONNACK sent, not yet disconnected).", "listener", "protocol_version"),
		accepted:             newDesc("connections_accepted_total", "Network connections accepted (before CONNECT).", "listener"),
		connects:             newDesc("connects_total", "CONNECT packets accepted (CONNACK success)."),
		connectsRefused:      newDesc("connects_refused_total", "CONNECT packets refused with an error CONNACK (any reason, including authentication)."),
		authFailures:         newDesc("auth_failures_total", "CONNECT packets refused because authentication failed or the client is not authorized to connect."),
		disconnects:          newDesc("disconnects_total", "Connections of connected clients that ended, by MQTT reason (normal includes network closes by the client).", "reason"),
		takeovers:            newDesc("session_takeovers_total", "Connections closed because a client connected again with the same client identifier."),
		protocolErrors:       newDesc("protocol_errors_total", "Connections closed for a protocol violation or a malformed packet."),
		malformed:            newDesc("malformed_packets_total", "Packets that failed to decode, by packet type.", "packet_type"),
		msgsReceived:         newDesc("messages_received_total", "PUBLISH packets received from clients, by QoS.", "qos"),
		msgsSent:             newDesc("messages_sent_total", "PUBLISH packets sent to clients, by QoS (retransmissions included).", "qos"),
		bytesReceived:        newDesc("received_bytes_total", "Bytes read from client connections (all packets)."),
		bytesSent:            newDesc("sent_bytes_total", "Bytes written to client connections (all packets)."),
		dropped:              newDesc("messages_dropped_total", "Messages not delivered to a subscriber, by cause.", "cause"),
		slowConsumers:        newDesc("slow_consumer_disconnects_total", "Clients disconnected because they did not read their output fast enough."),
		sessions:             newDesc("sessions", "Sessions, by state: online (client connected) or offline (persistent session kept).", "state"),
		sessionsExpired:      newDesc("sessions_expired_total", "Offline sessions removed because their expiry interval passed."),
		inflight:             newDesc("inflight_messages", "QoS 1 and 2 messages sent to clients and not yet acknowledged."),
		queued:               newDesc("queued_messages", "Messages queued in sessions beyond the in-flight window (offline or flow-controlled)."),
		retained:             newDesc("retained_messages", "Retained messages stored."),
		subscriptions:        newDesc("subscriptions", "Subscriptions (shared subscriptions included)."),
		willsPublished:       newDesc("wills_published_total", "Will messages published."),
		sharedRedispatched:   newDesc("shared_redispatched_total", "Shared-subscription messages redelivered to another group member after a client left."),
		latency:              newDesc("delivery_latency_seconds", "Time from receiving a PUBLISH to writing it to a subscriber's connection buffer."),
		storeDegraded:        newDesc("store_degraded", "1 while the store refuses writes (disk full, free space below store.min_free_bytes, write errors): durable operations are refused."),
		storeErrors:          newDesc("store_errors_total", "Store commits that failed."),
		panics:               newDesc("panics_total", "Internal errors (panics) contained: the connection or task concerned was closed, the broker carried on."),
		takeoversRefused:     newDesc("session_takeovers_refused_total", "CONNECTs refused because the client identifier's session belongs to another user."),
		queuedBytes:          newDesc("queued_bytes", "Memory held by messages queued or in flight in sessions (counted against mqtt.max_queued_bytes_total)."),
		subscriptionsRevoked: newDesc("subscriptions_revoked_total", "Subscriptions removed from a resumed session because the ACL no longer allows them."),
		authThrottled:        newDesc("auth_throttled_total", "Login attempts delayed, queued or refused because their source address or user name is throttled."),
		authRefused:          newDesc("auth_throttle_refused_total", "Login attempts refused while throttled, without checking the password."),
		proxyUntrusted:       newDesc("proxy_untrusted_total", "Connections to a PROXY protocol listener closed unread because the peer is not in proxy_protocol_trusted.", "listener"),
	}
	return c
}

// NewRegistry returns a registry holding c and the Go runtime and process
// collectors. Each node has its own; nothing is registered globally.
func NewRegistry(c *Collector) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	reg.MustRegister(collectors.NewGoCollector())
	reg.MustRegister(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// acceptState counts a listener's accepted connections and tracks whether
// its accept loop runs.
type acceptState struct {
	n     atomic.Uint64
	state atomic.Int32 // listenerStarting, listenerAccepting, listenerClosed
}

const (
	listenerStarting int32 = iota
	listenerAccepting
	listenerClosed
)

// Accepted returns the number of connections accepted on a listener
// wrapped by WrapListener.
func (c *Collector) Accepted(listener string) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if a := c.accepts[listener]; a != nil {
		return a.n.Load()
	}
	return 0
}

// ListenersUp returns nil when every wrapped listener's accept loop is
// running, else an error naming those that are not (yet, or any more).
// It backs the node's /readyz.
func (c *Collector) ListenersUp() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var down []string
	for _, name := range c.order {
		switch c.accepts[name].state.Load() {
		case listenerStarting:
			down = append(down, name+" (starting)")
		case listenerClosed:
			down = append(down, name+" (closed)")
		}
	}
	if len(down) > 0 {
		return fmt.Errorf("listeners not accepting: %s", strings.Join(down, ", "))
	}
	return nil
}

func (c *Collector) acceptCounter(name string) *acceptState {
	c.mu.Lock()
	defer c.mu.Unlock()
	a := c.accepts[name]
	if a == nil {
		a = new(acceptState)
		c.accepts[name] = a
		c.order = append(c.order, name)
	}
	return a
}

// WrapListener returns l counting its accepted connections under name for
// isobar_connections_accepted_total (one atomic add per accept) and
// tracking whether it accepts (ListenersUp). A nil Collector returns l
// unchanged.
func (c *Collector) WrapListener(l net.Listener, name string) net.Listener {
	if c == nil {
		return l
	}
	return &countingListener{Listener: l, a: c.acceptCounter(name)}
}

type countingListener struct {
	net.Listener
	a *acceptState
}

func (l *countingListener) Accept() (net.Conn, error) {
	l.a.state.CompareAndSwap(listenerStarting, listenerAccepting)
	conn, err := l.Listener.Accept()
	if err == nil {
		l.a.n.Add(1)
	} else if errors.Is(err, net.ErrClosed) {
		l.a.state.Store(listenerClosed)
	}
	return conn, err
}

func (l *countingListener) Close() error {
	l.a.state.Store(listenerClosed)
	return l.Listener.Close()
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	d := &c.descs
	for _, x := range []*prometheus.Desc{
		d.buildInfo, d.startTime, d.connectionsMax, d.connections, d.accepted, d.connects, d.connectsRefused,
		d.authFailures, d.disconnects, d.takeovers, d.protocolErrors, d.malformed, d.msgsReceived,
		d.msgsSent, d.bytesReceived, d.bytesSent, d.dropped, d.slowConsumers, d.sessions,
		d.sessionsExpired, d.inflight, d.queued, d.retained, d.subscriptions, d.willsPublished,
		d.sharedRedispatched, d.latency, d.storeDegraded, d.storeErrors, d.panics, d.takeoversRefused,
		d.queuedBytes, d.subscriptionsRevoked, d.authThrottled, d.authRefused, d.proxyUntrusted,
	} {
		ch <- x
	}
}

var protocolVersions = []string{
	broker.ProtocolName(packet.V31), broker.ProtocolName(packet.V311), broker.ProtocolName(packet.V5),
}

// DropCauses names the causes of isobar_messages_dropped_total.
var DropCauses = []string{"queue_full", "expired", "slow_consumer", "not_authorized", "too_large", "offline", "session_end",
	"queue_bytes", "store_degraded", "hook", "rate_limited"}

func dropValues(s *broker.Snapshot) []uint64 {
	return []uint64{s.DroppedQueueFull, s.DroppedExpired, s.DroppedSlowConsumer, s.DroppedNotAuthorized,
		s.DroppedTooLarge, s.DroppedOffline, s.DroppedSessionEnd,
		s.DroppedQueueBytes, s.DroppedStoreDegraded, s.DroppedByHook, s.DroppedRateLimited}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	d := &c.descs
	sn := c.srv.Stats().Snapshot()
	tot := c.srv.Totals()
	opts := c.srv.Options()
	counter := func(desc *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(desc *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, v, labels...)
	}

	gauge(d.buildInfo, 1, c.version, opts.NodeName, runtime.Version())
	gauge(d.startTime, float64(c.start.UnixNano())/1e9)
	gauge(d.connectionsMax, float64(opts.MaxConnections))

	// Known listeners always get a series per protocol version, 0 when
	// idle, so that dashboards and alerts see 0 rather than no data.
	conns := c.srv.ConnectionsByListenerVersion()
	c.mu.Lock()
	for name, a := range c.accepts {
		counter(d.accepted, a.n.Load(), name)
		for _, v := range protocolVersions {
			k := broker.ListenerVersion{Listener: name, Protocol: v}
			if _, ok := conns[k]; !ok {
				conns[k] = 0
			}
		}
	}
	c.mu.Unlock()
	for k, n := range conns {
		gauge(d.connections, float64(n), k.Listener, k.Protocol)
	}
	counter(d.connects, sn.ConnectsTotal)
	counter(d.connectsRefused, sn.ConnectRefused)
	counter(d.authFailures, sn.AuthFailures)
	byReason := make(map[string]uint64, len(sn.DisconnectsByReason))
	for code, n := range sn.DisconnectsByReason {
		byReason[ReasonName(code)] += n
	}
	for name, n := range byReason {
		counter(d.disconnects, n, name)
	}
	counter(d.takeovers, sn.Takeovers)
	counter(d.protocolErrors, sn.ProtocolErrors)
	for t, n := range sn.MalformedByType {
		if n > 0 {
			counter(d.malformed, n, PacketTypeName(byte(t)))
		}
	}
	for q := range 3 {
		qs := strconv.Itoa(q)
		counter(d.msgsReceived, sn.ReceivedByQoS[q], qs)
		counter(d.msgsSent, sn.SentByQoS[q], qs)
	}
	counter(d.bytesReceived, sn.BytesReceived)
	counter(d.bytesSent, sn.BytesSent)
	for i, v := range dropValues(&sn) {
		counter(d.dropped, v, DropCauses[i])
	}
	counter(d.slowConsumers, sn.SlowConsumers)
	gauge(d.sessions, float64(tot.SessionsOnline), "online")
	gauge(d.sessions, float64(tot.SessionsOffline), "offline")
	counter(d.sessionsExpired, sn.SessionsExpired)
	gauge(d.inflight, float64(tot.Inflight))
	gauge(d.queued, float64(tot.Queued))
	gauge(d.retained, float64(c.srv.RetainedCount()))
	gauge(d.subscriptions, float64(c.srv.SubscriptionCount()))
	counter(d.willsPublished, sn.WillsPublished)
	counter(d.sharedRedispatched, sn.SharedRedispatched)
	degraded := 0.0
	if c.srv.StoreDegraded() {
		degraded = 1
	}
	gauge(d.storeDegraded, degraded)
	counter(d.storeErrors, sn.StoreErrors)
	counter(d.panics, sn.Panics)
	counter(d.takeoversRefused, sn.TakeoversRefused)
	counter(d.subscriptionsRevoked, sn.SubscriptionsRevoked)
	gauge(d.queuedBytes, float64(tot.QueuedBytes))
	if c.AuthStats != nil {
		if as := c.AuthStats(); as != nil {
			counter(d.authThrottled, as.Throttled.Load())
			counter(d.authRefused, as.Refused.Load())
		}
	}
	for _, l := range c.Listeners {
		counter(d.proxyUntrusted, l.Stats().ProxyUntrusted.Load(), l.Config().Name)
	}

	buckets := make(map[float64]uint64, len(broker.LatencyBuckets))
	for i, le := range broker.LatencyBuckets {
		buckets[le] = sn.Latency.Cumulative[i]
	}
	ch <- prometheus.MustNewConstHistogram(d.latency, sn.Latency.Count, sn.Latency.SumSeconds, buckets)
}

// reasonNames is the fixed table of disconnect reason label values: MQTT 5
// reason codes by their specification names in snake case. Codes not in
// the table are reported as "other" so the label stays bounded.
var reasonNames = map[byte]string{
	packet.Success: "normal",
	0x04:           "disconnect_with_will",
	0x80:           "unspecified_error",
	0x81:           "malformed_packet",
	0x82:           "protocol_error",
	0x83:           "implementation_specific_error",
	0x87:           "not_authorized",
	0x89:           "server_busy",
	0x8B:           "server_shutting_down",
	0x8D:           "keep_alive_timeout",
	0x8E:           "session_taken_over",
	0x8F:           "topic_filter_invalid",
	0x90:           "topic_name_invalid",
	0x93:           "receive_maximum_exceeded",
	0x94:           "topic_alias_invalid",
	0x95:           "packet_too_large",
	0x96:           "message_rate_too_high",
	0x97:           "quota_exceeded",
	0x98:           "administrative_action",
	0x99:           "payload_format_invalid",
	0x9A:           "retain_not_supported",
	0x9B:           "qos_not_supported",
	0x9C:           "use_another_server",
	0x9D:           "server_moved",
	0x9E:           "shared_subscriptions_not_supported",
	0x9F:           "connection_rate_exceeded",
	0xA0:           "maximum_connect_time",
	0xA1:           "subscription_identifiers_not_supported",
	0xA2:           "wildcard_subscriptions_not_supported",
}

// ReasonName maps a disconnect reason code to its label value.
func ReasonName(code byte) string {
	if n, ok := reasonNames[code]; ok {
		return n
	}
	return "other"
}

// ReasonNames lists every value the reason label can take, sorted.
func ReasonNames() []string {
	out := make([]string, 0, len(reasonNames)+1)
	for _, n := range reasonNames {
		out = append(out, n)
	}
	out = append(out, "other")
	sort.Strings(out)
	return out
}

var packetTypeNames = [16]string{"unknown", "connect", "connack", "publish", "puback", "pubrec", "pubrel",
	"pubcomp", "subscribe", "suback", "unsubscribe", "unsuback", "pingreq", "pingresp", "disconnect", "auth"}

// PacketTypeName maps an MQTT control packet type (1..15) to its label
// value; 0 and anything else is "unknown".
func PacketTypeName(t byte) string {
	if int(t) < len(packetTypeNames) {
		return packetTypeNames[t]
	}
	return "unknown"
}
