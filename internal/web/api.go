package web

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"

	"github.com/isobar-mq/isobar/internal/broker"
	"github.com/isobar-mq/isobar/internal/metrics"
	"github.com/isobar-mq/isobar/internal/mqtt/packet"
)

// Paging limits for list endpoints.
const (
	defaultLimit = 100
	maxLimit     = 1000
)

type methods map[string]http.HandlerFunc

// apiError is the body of every error response.
type apiError struct {
	Error string `json:"error"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(true)
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, status int, format string, args ...any) {
	writeJSON(w, status, apiError{Error: fmt.Sprintf(format, args...)})
}

// route registers pattern with a handler per method; other methods get a
// JSON 405 with an Allow header. HEAD is allowed wherever GET is.
func (s *Server) route(mux *http.ServeMux, pattern string, authRequired bool, m methods) {
	allowed := make([]string, 0, len(m)+1)
	for k := range m {
		allowed = append(allowed, k)
	}
	if m[http.MethodGet] != nil {
		allowed = append(allowed, http.MethodHead)
	}
	sort.Strings(allowed)
	allow := strings.Join(allowed, ", ")
	mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		method := r.Method
		if method == http.MethodHead {
			method = http.MethodGet
		}
		h := m[method]
		if h == nil {
			w.Header().Set("Allow", allow)
			writeError(w, http.StatusMethodNotAllowed, "method %s not allowed; allowed: %s", r.Method, allow)
			return
		}
		if authRequired {
			p, err := s.auth.authenticate(r)
			if err != nil {
				s.authError(w, r, err)
				return
			}
			r = r.WithContext(withPrincipal(r.Context(), p))
		}
		h(w, r)
	})
}

func (s *Server) authError(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, errTooMany):
		w.Header().Set("Retry-After", strconv.Itoa(int(failWindow/time.Second)))
		writeError(w, http.StatusTooManyRequests, "%v", err)
	case errors.Is(err, errCSRF):
		writeError(w, http.StatusForbidden, "%v", err)
	default:
		// The console sends X-Requested-With so that browsers do not pop
		// up their own Basic login dialog.
		if r.Header.Get("X-Requested-With") == "" {
			w.Header().Set("WWW-Authenticate", `Basic realm="Isobar", charset="UTF-8"`)
		}
		writeError(w, http.StatusUnauthorized, "%v", err)
	}
}

// decodeJSON reads a JSON request body into v, strictly.
func decodeJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/json" {
		writeError(w, http.StatusUnsupportedMediaType, "Content-Type must be application/json")
		return false
	}
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeError(w, http.StatusRequestEntityTooLarge, "request body larger than %d bytes", mbe.Limit)
			return false
		}
		if errors.Is(err, io.EOF) {
			writeError(w, http.StatusBadRequest, "request body is empty")
			return false
		}
		writeError(w, http.StatusBadRequest, "invalid JSON body: %v", err)
		return false
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeError(w, http.StatusRequestEntityTooLarge, "request body larger than %d bytes", mbe.Limit)
			return false
		}
		writeError(w, http.StatusBadRequest, "invalid JSON body: unexpected data after the object")
		return false
	}
	return true
}

// page reads ?limit= and ?offset=.
func page(w http.ResponseWriter, r *http.Request) (limit, offset int, ok bool) {
	limit, offset = defaultLimit, 0
	q := r.URL.Query()
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxLimit {
			writeError(w, http.StatusBadRequest, "limit: must be an integer in 1..%d", maxLimit)
			return 0, 0, false
		}
		limit = n
	}
	if v := q.Get("offset"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			writeError(w, http.StatusBadRequest, "offset: must be a non-negative integer")
			return 0, 0, false
		}
		offset = n
	}
	return limit, offset, true
}

// List is the envelope of paged list responses.
type List[T any] struct {
	Total  int `json:"total"`
	Offset int `json:"offset"`
	Limit  int `json:"limit"`
	Items  []T `json:"items"`
}

func paged[T any](items []T, limit, offset int) List[T] {
	l := List[T]{Total: len(items), Offset: offset, Limit: limit, Items: []T{}}
	if offset < len(items) {
		l.Items = items[offset:min(len(items), offset+limit)]
	}
	return l
}

func (s *Server) routes(mux *http.ServeMux) {
	s.route(mux, "/healthz", false, methods{http.MethodGet: s.healthz})
	s.route(mux, "/readyz", false, methods{http.MethodGet: s.readyz})
	mh := s.metricsHandler()
	s.route(mux, "/metrics", s.cfg.MetricsAuth, methods{http.MethodGet: mh.ServeHTTP})

	s.route(mux, "/api/v1/login", false, methods{http.MethodPost: s.login})
	s.route(mux, "/api/v1/logout", false, methods{http.MethodPost: s.logout})
	s.route(mux, "/api/v1/session", true, methods{http.MethodGet: s.whoami})
	s.route(mux, "/api/v1/broker", true, methods{http.MethodGet: s.brokerInfo})
	s.route(mux, "/api/v1/stats", true, methods{http.MethodGet: s.stats})
	s.route(mux, "/api/v1/stats/history", true, methods{http.MethodGet: s.statsHistory})
	s.route(mux, "/api/v1/listeners", true, methods{http.MethodGet: s.listeners})
	s.route(mux, "/api/v1/clients", true, methods{http.MethodGet: s.clients})
	s.route(mux, "/api/v1/clients/{id}", true, methods{http.MethodGet: s.client, http.MethodDelete: s.kick})
	s.route(mux, "/api/v1/sessions", true, methods{http.MethodGet: s.sessions})
	s.route(mux, "/api/v1/sessions/{id}", true, methods{http.MethodGet: s.session})
	s.route(mux, "/api/v1/subscriptions", true, methods{http.MethodGet: s.subscriptions})
	s.route(mux, "/api/v1/retained", true, methods{http.MethodGet: s.retainedList})
	s.route(mux, "/api/v1/retained/message", true, methods{http.MethodGet: s.retainedGet, http.MethodDelete: s.retainedDelete})
	s.route(mux, "/api/v1/publish", true, methods{http.MethodPost: s.publish})
	s.route(mux, "/api/v1/config", true, methods{http.MethodGet: s.config})
	mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such endpoint: %s", r.URL.Path)
	})
}

// --- health ---

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	checks := map[string]string{}
	ready := true
	for _, c := range s.readyChecks() {
		if err := c.Check(); err != nil {
			checks[c.Name] = err.Error()
			ready = false
		} else {
			checks[c.Name] = "ok"
		}
	}
	if s.opts.Broker.ShuttingDown() {
		checks["broker"] = "shutting down"
		ready = false
	} else {
		checks["broker"] = "ok"
	}
	status, code := "ready", http.StatusOK
	if !ready {
		status, code = "not ready", http.StatusServiceUnavailable
	}
	writeJSON(w, code, map[string]any{"status": status, "checks": checks})
}

// --- login ---

type loginRequest struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

type sessionInfo struct {
	Username  string     `json:"username"`
	Method    string     `json:"auth_method"`
	CSRFToken string     `json:"csrf_token,omitempty"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
}

func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	var req loginRequest
	if !decodeJSON(w, r, &req) {
		return
	}
	if req.Username == "" || req.Password == "" {
		writeError(w, http.StatusBadRequest, "username and password are required")
		return
	}
	ip := clientIP(r)
	if s.auth.blocked(ip) {
		s.authError(w, r, errTooMany)
		return
	}
	if !s.auth.checkPassword(req.Username, req.Password) {
		s.auth.failed(ip)
		s.log.Warn("console login failed", "username", req.Username, "remote", r.RemoteAddr)
		writeError(w, http.StatusUnauthorized, "invalid username or password")
		return
	}
	sess := s.auth.newSession(req.Username)
	http.SetCookie(w, &http.Cookie{
		Name: cookieName, Value: sess.token, Path: "/", Expires: sess.expires,
		MaxAge: int(s.cfg.SessionTTL / time.Second), HttpOnly: true, SameSite: http.SameSiteStrictMode,
		Secure: s.cfg.TLS != nil,
	})
	s.log.Info("console login", "username", req.Username, "remote", r.RemoteAddr)
	exp := sess.expires.UTC()
	writeJSON(w, http.StatusOK, sessionInfo{Username: sess.user, Method: "session", CSRFToken: sess.csrf, ExpiresAt: &exp})
}

func (s *Server) logout(w http.ResponseWriter, r *http.Request) {
	if c, err := r.Cookie(cookieName); err == nil && c.Value != "" {
		if sess := s.auth.session(c.Value); sess != nil {
			if r.Header.Get(csrfHeader) != sess.csrf {
				writeError(w, http.StatusForbidden, "%v", errCSRF)
				return
			}
			s.auth.endSession(c.Value)
		}
	}
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: "", Path: "/", MaxAge: -1, HttpOnly: true,
		SameSite: http.SameSiteStrictMode, Secure: s.cfg.TLS != nil})
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) whoami(w http.ResponseWriter, r *http.Request) {
	p := principalFrom(r.Context())
	info := sessionInfo{Username: p.name, Method: p.method}
	if p.sess != nil {
		exp := p.sess.expires.UTC()
		info.CSRFToken, info.ExpiresAt = p.sess.csrf, &exp
	}
	writeJSON(w, http.StatusOK, info)
}

// --- broker and stats ---

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

// ListenerInfo is one entry of GET /api/v1/listeners.
type ListenerInfo struct {
	Name          string `json:"name"`
	Protocol      string `json:"protocol"`
	Address       string `json:"address"`
	TLS           bool   `json:"tls"`
	ClientCerts   bool   `json:"client_certificates"`
	ProxyProtocol bool   `json:"proxy_protocol"`
	WSPath        string `json:"ws_path,omitempty"`
	Connections   int    `json:"connections"`
	Accepted      uint64 `json:"connections_accepted"`
}

func (s *Server) listeners(w http.ResponseWriter, r *http.Request) {
	by := s.opts.Broker.Totals().ConnectionsByListener
	out := []ListenerInfo{}
	for _, l := range s.opts.Listeners {
		c := l.Config()
		li := ListenerInfo{Name: c.Name, Protocol: c.Protocol, Address: l.Addr().String(), TLS: c.TLS != nil,
			ProxyProtocol: c.ProxyProtocol, Connections: by[c.Name]}
		if c.TLS != nil {
			li.ClientCerts = c.TLS.ClientCAFile != ""
		}
		if c.Protocol == "ws" {
			li.WSPath = c.WSPath
		}
		if s.opts.Metrics != nil {
			li.Accepted = s.opts.Metrics.Accepted(c.Name)
		}
		out = append(out, li)
	}
	writeJSON(w, http.StatusOK, map[string]any{"items": out})
}

// --- clients and sessions ---

func (s *Server) clients(w http.ResponseWriter, r *http.Request) {
	limit, offset, ok := page(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	user, lis, prefix := q.Get("username"), q.Get("listener"), q.Get("prefix")
	search := strings.ToLower(q.Get("search"))
	all := s.opts.Broker.Clients()
	items := all[:0]
	for _, c := range all {
		if (q.Has("username") && c.Username != user) || (lis != "" && c.Listener != lis) ||
			!strings.HasPrefix(c.ClientID, prefix) {
			continue
		}
		if search != "" && !strings.Contains(strings.ToLower(c.ClientID), search) &&
			!strings.Contains(strings.ToLower(c.Username), search) && !strings.Contains(c.Remote, search) {
			continue
		}
		items = append(items, c)
	}
	writeJSON(w, http.StatusOK, paged(items, limit, offset))
}

func (s *Server) client(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	c, ok := s.opts.Broker.Client(id)
	if !ok {
		writeError(w, http.StatusNotFound, "client %q is not connected", id)
		return
	}
	_, subs, _ := s.opts.Broker.Session(id)
	if subs == nil {
		subs = []broker.SubscriptionView{}
	}
	writeJSON(w, http.StatusOK, struct {
		broker.ClientInfoView
		SubscriptionList []broker.SubscriptionView `json:"subscription_list"`
	}{c, subs})
}

func (s *Server) kick(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !s.opts.Broker.DisconnectClient(id) {
		writeError(w, http.StatusNotFound, "client %q is not connected", id)
		return
	}
	s.log.Info("client disconnected by administrator", "client", id, "by", principalFrom(r.Context()).name)
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) sessions(w http.ResponseWriter, r *http.Request) {
	limit, offset, ok := page(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	prefix := q.Get("prefix")
	var online *bool
	if v := q.Get("online"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			writeError(w, http.StatusBadRequest, "online: want true or false")
			return
		}
		online = &b
	}
	all := s.opts.Broker.Sessions()
	items := all[:0]
	for _, ss := range all {
		if !strings.HasPrefix(ss.ClientID, prefix) || (online != nil && ss.Online != *online) {
			continue
		}
		items = append(items, ss)
	}
	writeJSON(w, http.StatusOK, paged(items, limit, offset))
}

func (s *Server) session(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	v, subs, ok := s.opts.Broker.Session(id)
	if !ok {
		writeError(w, http.StatusNotFound, "no session for client %q", id)
		return
	}
	writeJSON(w, http.StatusOK, struct {
		broker.SessionView
		SubscriptionList []broker.SubscriptionView `json:"subscription_list"`
	}{v, subs})
}

func (s *Server) subscriptions(w http.ResponseWriter, r *http.Request) {
	limit, offset, ok := page(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	cid, filter, prefix := q.Get("client_id"), q.Get("filter"), q.Get("prefix")
	all := s.opts.Broker.Subscriptions()
	items := all[:0]
	for _, sub := range all {
		if (cid != "" && sub.ClientID != cid) || (filter != "" && sub.Filter != filter) || !strings.HasPrefix(sub.Filter, prefix) {
			continue
		}
		items = append(items, sub)
	}
	if items == nil {
		items = []broker.SubscriptionView{}
	}
	writeJSON(w, http.StatusOK, paged(items, limit, offset))
}

// --- retained messages ---

// MessageView is a retained message as the API shows it. Payload is text
// when it is valid UTF-8, else base64 (PayloadEncoding says which). Lists
// show at most the first 1 KiB of each payload (Truncated is then set);
// the single-message endpoint shows it whole.
type MessageView struct {
	Topic           string         `json:"topic"`
	QoS             byte           `json:"qos"`
	Payload         string         `json:"payload"`
	PayloadEncoding string         `json:"payload_encoding"`
	PayloadSize     int            `json:"payload_size"`
	Truncated       bool           `json:"truncated,omitempty"`
	ReceivedAt      time.Time      `json:"received_at"`
	ExpiresAt       *time.Time     `json:"expires_at,omitempty"`
	From            string         `json:"from_client_id,omitempty"`
	ContentType     string         `json:"content_type,omitempty"`
	UserProperties  []UserProperty `json:"user_properties,omitempty"`
}

// UserProperty is an MQTT 5 user property.
type UserProperty struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// previewLimit bounds payloads included in list responses.
const previewLimit = 1024

func messageView(m *broker.Message, max int) MessageView {
	v := MessageView{Topic: m.Topic, QoS: m.QoS, PayloadSize: len(m.Payload), From: m.From,
		ReceivedAt: time.Unix(0, m.Received).UTC()}
	if m.Expiry != 0 {
		t := time.Unix(0, m.Expiry).UTC()
		v.ExpiresAt = &t
	}
	p := m.Payload
	if max > 0 && len(p) > max {
		p, v.Truncated = p[:max], true
	}
	if t := p; utf8.Valid(t) || (v.Truncated && utf8.Valid(trimPartialRune(t))) {
		v.Payload, v.PayloadEncoding = string(trimPartialRune(t)), "text"
	} else {
		v.Payload, v.PayloadEncoding = base64.StdEncoding.EncodeToString(p), "base64"
	}
	if m.Props.Has(packet.PropContentType) {
		v.ContentType = m.Props.ContentType
	}
	for _, u := range m.Props.User {
		v.UserProperties = append(v.UserProperties, UserProperty{Key: u.Key, Value: u.Value})
	}
	return v
}

// trimPartialRune drops an incomplete UTF-8 sequence cut at the end.
func trimPartialRune(p []byte) []byte {
	for i := 0; i < utf8.UTFMax && len(p) > 0; i++ {
		if utf8.Valid(p) {
			return p
		}
		p = p[:len(p)-1]
	}
	return p
}

func (s *Server) retainedList(w http.ResponseWriter, r *http.Request) {
	limit, offset, ok := page(w, r)
	if !ok {
		return
	}
	filter := r.URL.Query().Get("filter")
	if filter == "" {
		filter = "#"
	}
	if err := validFilter(filter); err != nil {
		writeError(w, http.StatusBadRequest, "filter: %v", err)
		return
	}
	msgs := s.opts.Broker.RetainedMessages(filter, 0)
	items := make([]MessageView, 0, min(limit, max(0, len(msgs)-offset)))
	for i := offset; i < len(msgs) && i < offset+limit; i++ {
		items = append(items, messageView(msgs[i], previewLimit))
	}
	writeJSON(w, http.StatusOK, List[MessageView]{Total: len(msgs), Offset: offset, Limit: limit, Items: items})
}

// validFilter checks an MQTT topic filter's wildcard placement.
func validFilter(f string) error {
	if f == "" {
		return errors.New("empty topic filter")
	}
	if !utf8.ValidString(f) || strings.ContainsRune(f, 0) {
		return errors.New("topic filter is not valid UTF-8")
	}
	levels := strings.Split(f, "/")
	for i, l := range levels {
		if strings.Contains(l, "#") && (l != "#" || i != len(levels)-1) {
			return errors.New("'#' must be alone in the last level")
		}
		if strings.Contains(l, "+") && l != "+" {
			return errors.New("'+' must occupy a whole level")
		}
	}
	return nil
}

func (s *Server) topicParam(w http.ResponseWriter, r *http.Request) (string, bool) {
	t := r.URL.Query().Get("topic")
	if t == "" {
		writeError(w, http.StatusBadRequest, "topic: query parameter is required")
		return "", false
	}
	if err := s.opts.Broker.ValidTopicName(t); err != nil {
		writeError(w, http.StatusBadRequest, "topic: %v", err)
		return "", false
	}
	return t, true
}

func (s *Server) retainedGet(w http.ResponseWriter, r *http.Request) {
	t, ok := s.topicParam(w, r)
	if !ok {
		return
	}
	m, ok := s.opts.Broker.RetainedMessage(t)
	if !ok {
		writeError(w, http.StatusNotFound, "no retained message on %q", t)
		return
	}
	writeJSON(w, http.StatusOK, messageView(m, 0))
}

func (s *Server) retainedDelete(w http.ResponseWriter, r *http.Request) {
	t, ok := s.topicParam(w, r)
	if !ok {
		return
	}
	if !s.opts.Broker.DeleteRetained(t) {
		writeError(w, http.StatusNotFound, "no retained message on %q", t)
		return
	}
	s.log.Info("retained message deleted by administrator", "topic", t, "by", principalFrom(r.Context()).name)
	w.WriteHeader(http.StatusNoContent)
}

// --- publish ---

// PublishRequest is the body of POST /api/v1/publish.
type PublishRequest struct {
	Topic string `json:"topic"`
	// Payload is text, or base64 when PayloadEncoding is "base64".
	Payload               string         `json:"payload"`
	PayloadEncoding       string         `json:"payload_encoding"`
	QoS                   int            `json:"qos"`
	Retain                bool           `json:"retain"`
	UserProperties        []UserProperty `json:"user_properties"`
	ContentType           string         `json:"content_type"`
	ResponseTopic         string         `json:"response_topic"`
	MessageExpiryInterval *uint32        `json:"message_expiry_interval"`
}

func hasNUL(s string) bool { return strings.IndexByte(s, 0) >= 0 }

func (s *Server) publish(w http.ResponseWriter, r *http.Request) {
	var req PublishRequest
	if !decodeJSON(w, r, &req) {
		return
	}
	b := s.opts.Broker
	o := b.Options()
	if req.Topic == "" {
		writeError(w, http.StatusBadRequest, "topic: required")
		return
	}
	if strings.HasPrefix(req.Topic, "$") {
		writeError(w, http.StatusBadRequest, "topic: topics beginning with '$' are reserved for the broker")
		return
	}
	if err := b.ValidTopicName(req.Topic); err != nil {
		writeError(w, http.StatusBadRequest, "topic: %v", err)
		return
	}
	if req.QoS < 0 || req.QoS > 2 {
		writeError(w, http.StatusBadRequest, "qos: must be 0, 1 or 2")
		return
	}
	if req.QoS > o.MaxQoS {
		writeError(w, http.StatusBadRequest, "qos: the broker's maximum QoS is %d", o.MaxQoS)
		return
	}
	if req.Retain && o.DisableRetain {
		writeError(w, http.StatusBadRequest, "retain: retained messages are disabled on this broker")
		return
	}
	var payload []byte
	switch req.PayloadEncoding {
	case "", "text":
		payload = []byte(req.Payload)
	case "base64":
		p, err := base64.StdEncoding.DecodeString(req.Payload)
		if err != nil {
			writeError(w, http.StatusBadRequest, "payload: invalid base64: %v", err)
			return
		}
		payload = p
	default:
		writeError(w, http.StatusBadRequest, "payload_encoding: must be \"text\" or \"base64\"")
		return
	}
	if uint64(len(payload)) > uint64(o.MaxPacketSize) {
		writeError(w, http.StatusRequestEntityTooLarge, "payload: %d bytes exceeds the broker's maximum packet size %d", len(payload), o.MaxPacketSize)
		return
	}
	m := &broker.Message{Topic: req.Topic, Payload: payload, QoS: byte(req.QoS), Retain: req.Retain}
	for i, u := range req.UserProperties {
		if hasNUL(u.Key) || hasNUL(u.Value) {
			writeError(w, http.StatusBadRequest, "user_properties[%d]: U+0000 is not allowed in MQTT strings", i)
			return
		}
		m.Props.User = append(m.Props.User, packet.UserProperty{Key: u.Key, Value: u.Value})
	}
	if len(m.Props.User) > 0 {
		m.Props.Set(packet.PropUserProperty)
	}
	if req.ContentType != "" {
		if hasNUL(req.ContentType) {
			writeError(w, http.StatusBadRequest, "content_type: U+0000 is not allowed in MQTT strings")
			return
		}
		m.Props.ContentType = req.ContentType
		m.Props.Set(packet.PropContentType)
	}
	if req.ResponseTopic != "" {
		if err := b.ValidTopicName(req.ResponseTopic); err != nil {
			writeError(w, http.StatusBadRequest, "response_topic: %v", err)
			return
		}
		m.Props.ResponseTopic = req.ResponseTopic
		m.Props.Set(packet.PropResponseTopic)
	}
	if req.MessageExpiryInterval != nil {
		m.Props.MessageExpiryInterval = *req.MessageExpiryInterval
		m.Props.Set(packet.PropMessageExpiryInterval)
	}
	if req.PayloadEncoding != "base64" && utf8.Valid(payload) {
		// Text from the form: mark it as UTF-8 for MQTT 5 receivers.
		m.Props.PayloadFormatIndicator = 1
		m.Props.Set(packet.PropPayloadFormatIndicator)
	}
	if err := b.Publish(m); err != nil {
		writeError(w, http.StatusInternalServerError, "publish failed: %v", err)
		return
	}
	s.log.Info("message published by administrator", "topic", req.Topic, "qos", req.QoS, "retain", req.Retain,
		"bytes", len(payload), "by", principalFrom(r.Context()).name)
	writeJSON(w, http.StatusOK, map[string]any{"topic": req.Topic, "qos": req.QoS, "retain": req.Retain, "payload_size": len(payload)})
}

// --- configuration ---

// redactedKeys are configuration keys whose values are never shown.
func redactKey(k string) bool {
	k = strings.ToLower(k)
	return k == "hash" || strings.Contains(k, "password") || strings.Contains(k, "secret") ||
		strings.Contains(k, "token") || strings.Contains(k, "private")
}

const redacted = "[redacted]"

func redact(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			if redactKey(k) {
				if e != nil && e != "" {
					x[k] = redacted
				}
				continue
			}
			x[k] = redact(e)
		}
		return x
	case []any:
		for i := range x {
			x[i] = redact(x[i])
		}
		return x
	}
	return v
}

func (s *Server) config(w http.ResponseWriter, r *http.Request) {
	if s.opts.Settings == nil {
		writeError(w, http.StatusNotFound, "configuration not available")
		return
	}
	raw, err := yaml.Marshal(s.opts.Settings)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "rendering configuration: %v", err)
		return
	}
	var tree any
	if err := yaml.Unmarshal(raw, &tree); err != nil {
		writeError(w, http.StatusInternalServerError, "rendering configuration: %v", err)
		return
	}
	writeJSON(w, http.StatusOK, redact(tree))
}
