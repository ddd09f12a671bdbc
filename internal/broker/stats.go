package broker

import (
	"sync/atomic"
	"time"
)

// Stats are the server's counters: plain atomics updated on the hot path
// (no locks, no maps); the metrics layer reads them at scrape time.
type Stats struct {
	connectionsTotal     atomic.Uint64
	connectsTotal        atomic.Uint64
	connectRefused       atomic.Uint64
	authFailures         atomic.Uint64
	protocolErrors       atomic.Uint64
	takeovers            atomic.Uint64
	bytesReceived        atomic.Uint64
	bytesSent            atomic.Uint64
	droppedQueueFull     atomic.Uint64
	droppedExpired       atomic.Uint64
	droppedSlow          atomic.Uint64
	droppedOffline       atomic.Uint64
	droppedTooLarge      atomic.Uint64
	droppedNotAuthorized atomic.Uint64
	droppedSessionEnd    atomic.Uint64
	slowConsumers        atomic.Uint64
	sessionsExpired      atomic.Uint64
	willsPublished       atomic.Uint64
	sharedRedispatched   atomic.Uint64
	storeErrors          atomic.Uint64
	droppedRateLimited   atomic.Uint64
	connRateRefused      atomic.Uint64
	listenerFull         atomic.Uint64
	droppedQueueBytes    atomic.Uint64
	droppedStoreDegraded atomic.Uint64
	droppedByHook        atomic.Uint64
	holdFailures         atomic.Uint64
	takeoversRefused     atomic.Uint64
	subscriptionsRevoked atomic.Uint64
	panics               atomic.Uint64
	forwardedIn          atomic.Uint64
	sessionsMovedIn      atomic.Uint64
	sessionsMovedOut     atomic.Uint64
	droppedDuplicate     atomic.Uint64
	claimsRefused        atomic.Uint64

	receivedByQoS [3]atomic.Uint64
	sentByQoS     [3]atomic.Uint64
	// malformed counts packets that failed to decode, by packet type.
	malformed [16]atomic.Uint64
	// disconnects counts connection ends by reason code (0 = normal
	// DISCONNECT or network close by the client; see DisconnectReasons).
	disconnects [256]atomic.Uint64

	latency latencyHist
}

// Snapshot is a point-in-time copy of Stats.
type Snapshot struct {
	ConnectionsTotal, ConnectsTotal, ConnectRefused, AuthFailures, ProtocolErrors, Takeovers uint64
	MessagesReceived, MessagesSent, BytesReceived, BytesSent                                 uint64
	DroppedQueueFull, DroppedExpired, DroppedSlowConsumer, DroppedOffline                    uint64
	DroppedTooLarge, DroppedNotAuthorized, DroppedSessionEnd                                 uint64
	SlowConsumers, SessionsExpired, WillsPublished, SharedRedispatched                       uint64
	StoreErrors, DroppedRateLimited, ConnectionRateRefused, ListenerFull                     uint64
	DroppedQueueBytes, DroppedStoreDegraded, DroppedByHook, HoldFailures                     uint64
	TakeoversRefused, SubscriptionsRevoked, Panics                                           uint64
	// Cluster: messages forwarded in by other nodes, sessions moved in and
	// out, deliveries dropped as duplicates after a move, connects refused
	// because a concurrent one won on another node.
	ForwardedIn, SessionsMovedIn, SessionsMovedOut, DroppedDuplicate, ClaimsRefused uint64

	ReceivedByQoS, SentByQoS [3]uint64
	// MalformedByType is indexed by packet type (1..15; 0 = unknown).
	MalformedByType [16]uint64
	// DisconnectsByReason maps an MQTT 5 reason code (also used for 3.x
	// clients) to the number of connections that ended with it.
	DisconnectsByReason map[byte]uint64
	// Latency is the publish-to-delivery latency histogram.
	Latency LatencySnapshot
}

// Snapshot reads every counter.
func (s *Stats) Snapshot() Snapshot {
	sn := Snapshot{
		ConnectionsTotal: s.connectionsTotal.Load(), ConnectsTotal: s.connectsTotal.Load(),
		ConnectRefused: s.connectRefused.Load(), AuthFailures: s.authFailures.Load(),
		ProtocolErrors: s.protocolErrors.Load(), Takeovers: s.takeovers.Load(),
		BytesReceived: s.bytesReceived.Load(), BytesSent: s.bytesSent.Load(),
		DroppedQueueFull: s.droppedQueueFull.Load(), DroppedExpired: s.droppedExpired.Load(),
		DroppedSlowConsumer: s.droppedSlow.Load(), DroppedOffline: s.droppedOffline.Load(),
		DroppedTooLarge: s.droppedTooLarge.Load(), DroppedNotAuthorized: s.droppedNotAuthorized.Load(),
		DroppedSessionEnd: s.droppedSessionEnd.Load(), SlowConsumers: s.slowConsumers.Load(),
		SessionsExpired: s.sessionsExpired.Load(), WillsPublished: s.willsPublished.Load(),
		SharedRedispatched:    s.sharedRedispatched.Load(),
		StoreErrors:           s.storeErrors.Load(),
		DroppedRateLimited:    s.droppedRateLimited.Load(),
		ConnectionRateRefused: s.connRateRefused.Load(),
		ListenerFull:          s.listenerFull.Load(),
		DroppedQueueBytes:     s.droppedQueueBytes.Load(),
		DroppedStoreDegraded:  s.droppedStoreDegraded.Load(),
		DroppedByHook:         s.droppedByHook.Load(),
		HoldFailures:          s.holdFailures.Load(),
		TakeoversRefused:      s.takeoversRefused.Load(),
		SubscriptionsRevoked:  s.subscriptionsRevoked.Load(),
		Panics:                s.panics.Load(),
		ForwardedIn:           s.forwardedIn.Load(),
		SessionsMovedIn:       s.sessionsMovedIn.Load(),
		SessionsMovedOut:      s.sessionsMovedOut.Load(),
		DroppedDuplicate:      s.droppedDuplicate.Load(),
		ClaimsRefused:         s.claimsRefused.Load(),
		DisconnectsByReason:   make(map[byte]uint64),
		Latency:               s.latency.snapshot(),
	}
	for i := range s.receivedByQoS {
		sn.ReceivedByQoS[i] = s.receivedByQoS[i].Load()
		sn.SentByQoS[i] = s.sentByQoS[i].Load()
		sn.MessagesReceived += sn.ReceivedByQoS[i]
		sn.MessagesSent += sn.SentByQoS[i]
	}
	for i := range s.malformed {
		sn.MalformedByType[i] = s.malformed[i].Load()
	}
	for i := range s.disconnects {
		if v := s.disconnects[i].Load(); v > 0 {
			sn.DisconnectsByReason[byte(i)] = v
		}
	}
	return sn
}

// LatencyBuckets are the upper bounds of the publish-to-delivery latency
// histogram, in seconds.
var LatencyBuckets = []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

var latencyBounds = func() []int64 {
	b := make([]int64, len(LatencyBuckets))
	for i, s := range LatencyBuckets {
		b[i] = int64(s * float64(time.Second))
	}
	return b
}()

// latencyHist is a fixed-bucket histogram of atomics, sharded by bucket
// only (each observation touches two words).
type latencyHist struct {
	counts [17]atomic.Uint64 // len(LatencyBuckets)+1, last = +Inf
	sumNs  atomic.Int64
}

func (h *latencyHist) observe(ns int64) {
	if ns < 0 {
		ns = 0
	}
	i := 0
	for i < len(latencyBounds) && ns > latencyBounds[i] {
		i++
	}
	h.counts[i].Add(1)
	h.sumNs.Add(ns)
}

// LatencySnapshot is a cumulative view of the latency histogram.
type LatencySnapshot struct {
	Count      uint64
	SumSeconds float64
	// Cumulative[i] counts observations <= LatencyBuckets[i].
	Cumulative []uint64
}

func (h *latencyHist) snapshot() LatencySnapshot {
	s := LatencySnapshot{Cumulative: make([]uint64, len(LatencyBuckets))}
	var cum uint64
	for i := range LatencyBuckets {
		cum += h.counts[i].Load()
		s.Cumulative[i] = cum
	}
	s.Count = cum + h.counts[len(LatencyBuckets)].Load()
	s.SumSeconds = float64(h.sumNs.Load()) / float64(time.Second)
	return s
}
