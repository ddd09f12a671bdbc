package web

import (
	"net/http"
	"os"
	"runtime"
	"time"
)

// BrokerInfo is GET /api/v1/broker.
type BrokerInfo struct {
	Node          string    `json:"node"`
	Version       string    `json:"version"`
	GoVersion     string    `json:"go_version"`
	OS            string    `json:"os"`
	Arch          string    `json:"arch"`
	PID           int       `json:"pid"`
	StartedAt     time.Time `json:"started_at"`
	UptimeSeconds int64     `json:"uptime_seconds"`
	Limits        Limits    `json:"limits"`
}

// Limits are the broker's effective protocol limits and features.
type Limits struct {
	MaxConnections          int    `json:"max_connections"`
	MaxPacketSize           uint32 `json:"max_packet_size"`
	MaxQoS                  int    `json:"max_qos"`
	ReceiveMaximum          uint16 `json:"receive_maximum"`
	MaxInflight             int    `json:"max_inflight"`
	MaxQueued               int    `json:"max_queued_messages"`
	MaxKeepAlive            uint16 `json:"max_keepalive"`
	TopicAliasMaximum       int    `json:"topic_alias_maximum"`
	RetainAvailable         bool   `json:"retain_available"`
	WildcardSubscriptions   bool   `json:"wildcard_subscriptions"`
	SharedSubscriptions     bool   `json:"shared_subscriptions"`
	SubscriptionIdentifiers bool   `json:"subscription_identifiers"`
}

func (s *Server) brokerInfo(w http.ResponseWriter, r *http.Request) {
	o := s.opts.Broker.Options()
	writeJSON(w, http.StatusOK, BrokerInfo{
		Node: o.NodeName, Version: s.opts.Version, GoVersion: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH,
		PID: os.Getpid(), StartedAt: s.start.UTC().Truncate(time.Second), UptimeSeconds: int64(time.Since(s.start) / time.Second),
		Limits: Limits{
			MaxConnections: o.MaxConnections, MaxPacketSize: o.MaxPacketSize, MaxQoS: o.MaxQoS,
			ReceiveMaximum: o.ReceiveMaximum, MaxInflight: o.MaxInflight, MaxQueued: o.MaxQueued,
			MaxKeepAlive: o.MaxKeepAlive, TopicAliasMaximum: o.TopicAliasMaximum, RetainAvailable: !o.DisableRetain,
			WildcardSubscriptions: !o.DisableWildcardSubscriptions, SharedSubscriptions: !o.DisableSharedSubscriptions,
			SubscriptionIdentifiers: !o.DisableSubscriptionIdentifiers,
		},
	})
}
