package web

import (
	"net/http"
	"time"

	"github.com/isobar-mq/isobar/internal/broker"
	"github.com/isobar-mq/isobar/internal/metrics"
)

// Stats is GET /api/v1/stats: cumulative counters since start and current
// gauges.
type Stats struct {
	Time             time.Time         `json:"time"`
	UptimeSeconds    int64             `json:"uptime_seconds"`
	Connections      int               `json:"connections"`
	SessionsOnline   int               `json:"sessions_online"`
	SessionsOffline  int               `json:"sessions_offline"`
	Subscriptions    int               `json:"subscriptions"`
	RetainedMessages int               `json:"retained_messages"`
	Inflight         int               `json:"inflight_messages"`
	Queued           int               `json:"queued_messages"`
	ByListener       map[string]int    `json:"connections_by_listener"`
	ByProtocol       map[string]int    `json:"connections_by_protocol_version"`
	MessagesReceived uint64            `json:"messages_received"`
	MessagesSent     uint64            `json:"messages_sent"`
	ReceivedByQoS    [3]uint64         `json:"messages_received_by_qos"`
	SentByQoS        [3]uint64         `json:"messages_sent_by_qos"`
	BytesReceived    uint64            `json:"bytes_received"`
	BytesSent        uint64            `json:"bytes_sent"`
	Dropped          map[string]uint64 `json:"messages_dropped"`
	ConnectionsTotal uint64            `json:"connections_accepted"`
	Connects         uint64            `json:"connects"`
	ConnectsRefused  uint64            `json:"connects_refused"`
	AuthFailures     uint64            `json:"auth_failures"`
	Disconnects      map[string]uint64 `json:"disconnects"`
	SlowConsumers    uint64            `json:"slow_consumer_disconnects"`
	ProtocolErrors   uint64            `json:"protocol_errors"`
	Malformed        map[string]uint64 `json:"malformed_packets"`
	Takeovers        uint64            `json:"session_takeovers"`
	SessionsExpired  uint64            `json:"sessions_expired"`
	WillsPublished   uint64            `json:"wills_published"`
	Latency          Latency           `json:"delivery_latency"`
}

// Latency summarises the delivery latency histogram.
type Latency struct {
	Count      uint64          `json:"count"`
	SumSeconds float64         `json:"sum_seconds"`
	Buckets    []LatencyBucket `json:"buckets"`
}

// LatencyBucket is a cumulative histogram bucket.
type LatencyBucket struct {
	LE    float64 `json:"le"`
	Count uint64  `json:"count"`
}

func (s *Server) stats(w http.ResponseWriter, r *http.Request) {
	b := s.opts.Broker
	sn := b.Stats().Snapshot()
	tot := b.Totals()
	st := Stats{
		Time: time.Now().UTC(), UptimeSeconds: int64(time.Since(s.start) / time.Second),
		Connections: b.ClientCount(), SessionsOnline: tot.SessionsOnline, SessionsOffline: tot.SessionsOffline,
		Subscriptions: b.SubscriptionCount(), RetainedMessages: b.RetainedCount(), Inflight: tot.Inflight, Queued: tot.Queued,
		ByListener: tot.ConnectionsByListener, ByProtocol: tot.ConnectionsByVersion,
		MessagesReceived: sn.MessagesReceived, MessagesSent: sn.MessagesSent, ReceivedByQoS: sn.ReceivedByQoS, SentByQoS: sn.SentByQoS,
		BytesReceived: sn.BytesReceived, BytesSent: sn.BytesSent,
		Dropped: map[string]uint64{
			"queue_full": sn.DroppedQueueFull, "expired": sn.DroppedExpired, "slow_consumer": sn.DroppedSlowConsumer,
			"not_authorized": sn.DroppedNotAuthorized, "too_large": sn.DroppedTooLarge, "offline": sn.DroppedOffline,
			"session_end": sn.DroppedSessionEnd,
		},
		ConnectionsTotal: sn.ConnectionsTotal, Connects: sn.ConnectsTotal, ConnectsRefused: sn.ConnectRefused,
		AuthFailures: sn.AuthFailures, Disconnects: map[string]uint64{}, SlowConsumers: sn.SlowConsumers,
		ProtocolErrors: sn.ProtocolErrors, Malformed: map[string]uint64{}, Takeovers: sn.Takeovers,
		SessionsExpired: sn.SessionsExpired, WillsPublished: sn.WillsPublished,
		Latency: Latency{Count: sn.Latency.Count, SumSeconds: sn.Latency.SumSeconds},
	}
	for code, n := range sn.DisconnectsByReason {
		st.Disconnects[metrics.ReasonName(code)] += n
	}
	for t, n := range sn.MalformedByType {
		if n > 0 {
			st.Malformed[metrics.PacketTypeName(byte(t))] = n
		}
	}
	for i, le := range broker.LatencyBuckets {
		st.Latency.Buckets = append(st.Latency.Buckets, LatencyBucket{LE: le, Count: sn.Latency.Cumulative[i]})
	}
	writeJSON(w, http.StatusOK, st)
}

func (s *Server) statsHistory(w http.ResponseWriter, r *http.Request) {
	var since time.Time
	if v := r.URL.Query().Get("since"); v != "" {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			writeError(w, http.StatusBadRequest, "since: want an RFC 3339 time, e.g. 2024-01-02T15:04:05Z")
			return
		}
		since = t
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"interval_seconds": historyInterval.Seconds(),
		"samples":          s.hist.samples(since),
	})
}
