package broker

import (
	"github.com/isobar-mq/isobar/internal/topic"
)

// Hooks extend the broker at well-defined points, in registration order.
// A hook implements Hook plus any of the point interfaces below; AddHook
// files it under each point it implements. With no hook registered a point
// costs one atomic pointer load.
//
// Hooks run on the broker's goroutines (a client's read loop, a timer) and
// some run with a session lock held (noted per point): they must be quick,
// must not block, and must not call back into the Server synchronously.
type Hook interface {
	// HookName identifies the hook in logs.
	HookName() string
}

// ConnectHook runs after a client authenticated, before its session is
// attached. Returning a reason code >= 0x80 refuses the connection with it
// (v5 CONNACK code; 3.x clients get the nearest return code); 0 accepts.
type ConnectHook interface {
	Hook
	OnConnect(c ClientInfo, clean bool) byte
}

// PublishHook runs before a message is routed, for every publish from a
// client, an internal publisher or the API (not for $SYS and not for
// wills). It may validate (return a refusal code >= 0x80: the publisher gets
// it in PUBACK/PUBREC for QoS 1/2), drop (return nil, 0: acknowledged as
// success, not routed, counted), rewrite (return another *Message: the
// original is shared and must not be modified) or de-duplicate (drop).
type PublishHook interface {
	Hook
	OnPublish(from ClientInfo, m *Message) (*Message, byte)
}

// SubscribeHook runs for each requested subscription after the ACL check.
// A code >= 0x80 refuses that filter in SUBACK; opts may be modified (e.g.
// to downgrade the QoS).
type SubscribeHook interface {
	Hook
	OnSubscribe(c ClientInfo, filter string, opts *topic.Options) byte
}

// SessionEventKind says what happened to a session.
type SessionEventKind uint8

// Session events.
const (
	SessionCreated   SessionEventKind = iota + 1 // a new session began
	SessionResumed                               // a client resumed an existing session
	SessionTakenOver                             // another connection took the session over
	SessionExpired                               // the session expired while offline (SessionEnded follows)
	SessionEnded                                 // the session ended (clean session closed, clean start, expiry)
)

// String names the kind.
func (k SessionEventKind) String() string {
	switch k {
	case SessionCreated:
		return "created"
	case SessionResumed:
		return "resumed"
	case SessionTakenOver:
		return "taken_over"
	case SessionExpired:
		return "expired"
	case SessionEnded:
		return "ended"
	}
	return "unknown"
}

// SessionEvent is one session lifecycle event.
type SessionEvent struct {
	Kind     SessionEventKind
	ClientID string
	Username string
}

// SessionHook observes session lifecycle events. It runs without session
// locks held.
type SessionHook interface {
	Hook
	OnSessionEvent(e SessionEvent)
}

// DeliveryOutcomeKind says how a delivery to a session ended.
type DeliveryOutcomeKind uint8

// Delivery outcomes.
const (
	DeliveryAcknowledged DeliveryOutcomeKind = iota + 1 // QoS 1 PUBACK or QoS 2 PUBCOMP received
	DeliveryDropped                                     // dropped (queue full, expired, too large, refused by the receiver)
)

// DeliveryOutcome is the end of one QoS 1/2 delivery to a session.
type DeliveryOutcome struct {
	Kind     DeliveryOutcomeKind
	ClientID string
	Msg      *Message
	QoS      byte
}

// DeliveryHook observes the outcome of QoS 1/2 deliveries to sessions.
// It runs with the session's lock held.
type DeliveryHook interface {
	Hook
	OnDelivery(o DeliveryOutcome)
}

// hookSet is the immutable set of registered hooks, per point.
type hookSet struct {
	connect   []ConnectHook
	publish   []PublishHook
	subscribe []SubscribeHook
	session   []SessionHook
	delivery  []DeliveryHook
}

// AddHook registers h at every point it implements, after the hooks
// already registered. Safe to call while serving.
func (s *Server) AddHook(h Hook) {
	s.hookMu.Lock()
	defer s.hookMu.Unlock()
	var n hookSet
	if old := s.hooks.Load(); old != nil {
		n = *old
		n.connect = slices0(old.connect)
		n.publish = slices0(old.publish)
		n.subscribe = slices0(old.subscribe)
		n.session = slices0(old.session)
		n.delivery = slices0(old.delivery)
	}
	if x, ok := h.(ConnectHook); ok {
		n.connect = append(n.connect, x)
	}
	if x, ok := h.(PublishHook); ok {
		n.publish = append(n.publish, x)
	}
	if x, ok := h.(SubscribeHook); ok {
		n.subscribe = append(n.subscribe, x)
	}
	if x, ok := h.(SessionHook); ok {
		n.session = append(n.session, x)
	}
	if x, ok := h.(DeliveryHook); ok {
		n.delivery = append(n.delivery, x)
	}
	s.hooks.Store(&n)
}

// slices0 copies a hook slice so that a published hookSet never changes.
func slices0[T any](in []T) []T { return append([]T(nil), in...) }

// runPublishHooks passes m through the publish hooks. It returns the
// message to route (nil: dropped) and a refusal code (>= 0x80) if refused.
func (s *Server) runPublishHooks(from ClientInfo, m *Message) (*Message, byte) {
	hs := s.hooks.Load()
	if hs == nil || len(hs.publish) == 0 {
		return m, 0
	}
	for _, h := range hs.publish {
		out, code := h.OnPublish(from, m)
		if code >= 0x80 {
			s.stats.droppedByHook.Add(1)
			return nil, code
		}
		if out == nil {
			s.stats.droppedByHook.Add(1)
			return nil, 0
		}
		if out != m {
			// A rewrite is often a modified copy, carrying the size the
			// original arrived with: unknown now (measured at delivery).
			out.size = 0
		}
		m = out
	}
	return m, 0
}

// sessionEvent tells the session hooks about e.
func (s *Server) sessionEvent(kind SessionEventKind, id, user string) {
	hs := s.hooks.Load()
	if hs == nil || len(hs.session) == 0 {
		return
	}
	e := SessionEvent{Kind: kind, ClientID: id, Username: user}
	for _, h := range hs.session {
		h.OnSessionEvent(e)
	}
}

// deliveryOutcome tells the delivery hooks how a delivery ended.
func (s *Server) deliveryOutcome(kind DeliveryOutcomeKind, id string, d *Delivery) {
	hs := s.hooks.Load()
	if hs == nil || len(hs.delivery) == 0 {
		return
	}
	o := DeliveryOutcome{Kind: kind, ClientID: id, Msg: d.Msg, QoS: d.QoS}
	for _, h := range hs.delivery {
		h.OnDelivery(o)
	}
}
