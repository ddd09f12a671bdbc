package broker

import (
	"errors"
	"sort"
	"time"
	"unicode/utf8"

	"github.com/isobar-mq/isobar/internal/mqtt/packet"
	"github.com/isobar-mq/isobar/internal/topic"
)

// Introspection and administration, for the management API, $SYS and
// metrics. Everything here copies state out under the usual locks; nothing
// is on the message hot path.

// ClientInfoView describes a connected client.
type ClientInfoView struct {
	ClientID      string    `json:"client_id"`
	Username      string    `json:"username,omitempty"`
	Remote        string    `json:"remote_addr"`
	Listener      string    `json:"listener"`
	Protocol      string    `json:"protocol_version"`
	KeepAlive     uint16    `json:"keep_alive"`
	ConnectedAt   time.Time `json:"connected_at"`
	Subscriptions int       `json:"subscriptions"`
	Inflight      int       `json:"inflight"`
	Queued        int       `json:"queued"`
	PendingBytes  int       `json:"pending_bytes"`
	SessionExpiry uint32    `json:"session_expiry_interval"`
}

// SessionView describes a session, online or not.
type SessionView struct {
	ClientID       string `json:"client_id"`
	Online         bool   `json:"online"`
	Username       string `json:"username,omitempty"`
	ExpiryInterval uint32 `json:"expiry_interval"`
	Subscriptions  int    `json:"subscriptions"`
	Inflight       int    `json:"inflight"`
	Queued         int    `json:"queued"`
}

// SubscriptionView is one subscription of one session.
type SubscriptionView struct {
	ClientID          string `json:"client_id"`
	Filter            string `json:"filter"`
	QoS               byte   `json:"qos"`
	NoLocal           bool   `json:"no_local,omitempty"`
	RetainAsPublished bool   `json:"retain_as_published,omitempty"`
	RetainHandling    byte   `json:"retain_handling,omitempty"`
	ID                uint32 `json:"subscription_identifier,omitempty"`
}

// ProtocolName renders a protocol level.
func ProtocolName(v byte) string {
	switch v {
	case packet.V31:
		return "3.1"
	case packet.V311:
		return "3.1.1"
	case packet.V5:
		return "5.0"
	}
	return "unknown"
}

func (s *Server) clientList() []*client {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*client, 0, len(s.clients))
	for c := range s.clients {
		out = append(out, c)
	}
	return out
}

func (c *client) view() ClientInfoView {
	v := ClientInfoView{
		ClientID: c.id, Username: c.username, Remote: c.remote, Listener: c.listener,
		Protocol: ProtocolName(c.version), KeepAlive: c.keepAlive, ConnectedAt: c.connectedAt,
	}
	if s := c.sess; s != nil {
		s.mu.Lock()
		v.Subscriptions = len(s.subs)
		v.Inflight = s.sent
		v.Queued = len(s.queue)
		v.SessionExpiry = s.expiryInterval
		s.mu.Unlock()
	}
	c.omu.Lock()
	v.PendingBytes = c.pending
	c.omu.Unlock()
	return v
}

// Clients lists connected clients sorted by client identifier.
func (s *Server) Clients() []ClientInfoView {
	list := s.clientList()
	out := make([]ClientInfoView, 0, len(list))
	for _, c := range list {
		if c.connected.Load() {
			out = append(out, c.view())
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ClientID < out[j].ClientID })
	return out
}

// Client describes one connected client.
func (s *Server) Client(id string) (ClientInfoView, bool) {
	c := s.connectedClient(id)
	if c == nil {
		return ClientInfoView{}, false
	}
	return c.view(), true
}

// connectedClient returns the connection of session id, nil if none.
func (s *Server) connectedClient(id string) *client {
	s.mu.Lock()
	sess := s.sessions[id]
	s.mu.Unlock()
	if sess == nil {
		return nil
	}
	sess.mu.Lock()
	defer sess.mu.Unlock()
	return sess.client
}

// DisconnectClient closes a client's connection (v5: DISCONNECT 0x98,
// Administrative action). Its session stays per its expiry. It reports
// whether the client was connected.
func (s *Server) DisconnectClient(id string) bool {
	c := s.connectedClient(id)
	if c == nil {
		return false
	}
	c.kick(packet.AdministrativeAction, errAdmin)
	return true
}

// Sessions lists every session sorted by client identifier.
func (s *Server) Sessions() []SessionView {
	s.mu.Lock()
	list := make([]*session, 0, len(s.sessions))
	for _, ss := range s.sessions {
		list = append(list, ss)
	}
	s.mu.Unlock()
	out := make([]SessionView, 0, len(list))
	for _, ss := range list {
		ss.mu.Lock()
		out = append(out, ss.viewLocked())
		ss.mu.Unlock()
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ClientID < out[j].ClientID })
	return out
}

// Session describes one session.
func (s *Server) Session(id string) (SessionView, []SubscriptionView, bool) {
	s.mu.Lock()
	ss := s.sessions[id]
	s.mu.Unlock()
	if ss == nil {
		return SessionView{}, nil, false
	}
	ss.mu.Lock()
	v := ss.viewLocked()
	subs := make([]SubscriptionView, 0, len(ss.subs))
	for f, sub := range ss.subs {
		subs = append(subs, subView(ss.id, f, sub.opts))
	}
	ss.mu.Unlock()
	sort.Slice(subs, func(i, j int) bool { return subs[i].Filter < subs[j].Filter })
	return v, subs, true
}

// viewLocked describes the session. Requires ss.mu.
func (ss *session) viewLocked() SessionView {
	return SessionView{
		ClientID: ss.id, Online: ss.client != nil, Username: ss.username(),
		ExpiryInterval: ss.expiryInterval, Subscriptions: len(ss.subs),
		Inflight: ss.sent, Queued: len(ss.queue),
	}
}

func subView(id, filter string, o topic.Options) SubscriptionView {
	return SubscriptionView{ClientID: id, Filter: filter, QoS: o.QoS, NoLocal: o.NoLocal,
		RetainAsPublished: o.RetainAsPublished, RetainHandling: o.RetainHandling, ID: o.ID}
}

// Subscriptions lists every subscription, sorted by filter then client.
func (s *Server) Subscriptions() []SubscriptionView {
	var out []SubscriptionView
	s.index.Walk(func(filter string, e topic.Entry[Subscriber]) bool {
		out = append(out, subView(e.Key.SubscriberID(), filter, e.Opts))
		return true
	})
	sort.Slice(out, func(i, j int) bool {
		if out[i].Filter != out[j].Filter {
			return out[i].Filter < out[j].Filter
		}
		return out[i].ClientID < out[j].ClientID
	})
	return out
}

// RetainedMessages returns up to limit retained messages whose topic matches
// filter (limit <= 0: all), sorted by topic.
func (s *Server) RetainedMessages(filter string, limit int) []*Message {
	var out []*Message
	now := time.Now().UnixNano()
	s.retained.Match(filter, func(_ string, m *Message) bool {
		if !m.expired(now) {
			out = append(out, m)
		}
		return true
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Topic < out[j].Topic })
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out
}

// RetainedMessage returns the retained message of one topic.
func (s *Server) RetainedMessage(t string) (*Message, bool) {
	m, ok := s.retained.Get(t)
	if !ok || m.expired(time.Now().UnixNano()) {
		return nil, false
	}
	return m, true
}

// DeleteRetained removes the retained message of one topic, in memory and
// in the store (it does not come back after a restart). It returns once
// the removal is committed, reporting whether there was one (a failed
// commit is counted and logged as a store error).
func (s *Server) DeleteRetained(t string) bool {
	if _, ok := s.retained.Get(t); !ok {
		return false
	}
	tx := s.newTxn()
	// As an empty retained publish: stamped and, in a cluster, replicated.
	s.setRetainedLocal(&Message{Topic: t, Retain: true, ID: MessageID{Node: s.nodeHash, Seq: s.msgSeq.Add(1)}}, tx)
	_ = tx.commit(s)
	return true
}

// Totals are gauges computed by walking the sessions (scrape time only).
type Totals struct {
	SessionsOnline, SessionsOffline int
	Inflight, Queued                int
	QueuedBytes                     int64 // memory held by queued and in-flight messages
	ConnectionsByListener           map[string]int
	ConnectionsByVersion            map[string]int
}

// Totals walks sessions and clients to compute gauges.
func (s *Server) Totals() Totals {
	t := Totals{ConnectionsByListener: map[string]int{}, ConnectionsByVersion: map[string]int{}}
	s.mu.Lock()
	sessions := make([]*session, 0, len(s.sessions))
	for _, ss := range s.sessions {
		sessions = append(sessions, ss)
	}
	for c := range s.clients {
		if c.connected.Load() {
			t.ConnectionsByListener[c.listener]++
			t.ConnectionsByVersion[ProtocolName(c.version)]++
		}
	}
	s.mu.Unlock()
	for _, ss := range sessions {
		ss.mu.Lock()
		if ss.client != nil {
			t.SessionsOnline++
		} else {
			t.SessionsOffline++
		}
		t.Inflight += ss.sent
		t.Queued += len(ss.queue)
		t.QueuedBytes += ss.bytes
		ss.mu.Unlock()
	}
	return t
}

// ValidTopicName reports whether t may be published to (for the API).
func (s *Server) ValidTopicName(t string) error {
	if !utf8.ValidString(t) {
		return errors.New("topic is not valid UTF-8")
	}
	return topic.ValidateName(t, s.opts.MaxTopicLen, s.opts.MaxTopicLevels)
}
