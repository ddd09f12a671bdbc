package web

import (
	"encoding/base64"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/isobar-mq/isobar/internal/broker"
	"github.com/isobar-mq/isobar/internal/mqtt/packet"
)

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
	if err := checkFilter(filter); err != nil {
		writeError(w, http.StatusBadRequest, "filter: %v", err)
		return
	}
	msgs := s.opts.Broker.RetainedMessages(filter, 0)
	if p := principalFrom(r.Context()); p.topics != nil {
		// Only the topics the caller may use.
		kept := msgs[:0]
		for _, m := range msgs {
			if p.allows(m.Topic) {
				kept = append(kept, m)
			}
		}
		msgs = kept
	}
	items := make([]MessageView, 0, min(limit, max(0, len(msgs)-offset)))
	for i := offset; i < len(msgs) && i < offset+limit; i++ {
		items = append(items, messageView(msgs[i], previewLimit))
	}
	writeJSON(w, http.StatusOK, List[MessageView]{Total: len(msgs), Offset: offset, Limit: limit, Items: items})
}

// topicParam reads ?topic= (a topic name the caller may use).
func (s *Server) topicParam(w http.ResponseWriter, r *http.Request) (string, bool) {
	t := r.URL.Query().Get("topic")
	if t == "" {
		writeError(w, http.StatusBadRequest, "topic: query parameter is required")
		return "", false
	}
	if err := s.checkTopic(t); err != nil {
		writeError(w, http.StatusBadRequest, "topic: %v", err)
		return "", false
	}
	if forbidTopic(w, principalFrom(r.Context()), "topic", t) {
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
		writeError(w, http.StatusNotFound, "no retained message on %s", short(t))
		return
	}
	writeJSON(w, http.StatusOK, messageView(m, 0))
}

func (s *Server) retainedDelete(w http.ResponseWriter, r *http.Request) {
	t, ok := s.topicParam(w, r)
	if !ok {
		return
	}
	if strings.HasPrefix(t, "$") {
		writeError(w, http.StatusBadRequest, "topic: topics beginning with '$' are reserved for the broker")
		return
	}
	if !s.opts.Broker.DeleteRetained(t) {
		writeError(w, http.StatusNotFound, "no retained message on %s", short(t))
		return
	}
	s.log.Info("retained message deleted by administrator", "topic", t, "by", principalFrom(r.Context()).name)
	w.WriteHeader(http.StatusNoContent)
}
