package broker

import (
	"slices"
	"sync/atomic"
	"time"

	"github.com/isobar-mq/isobar/internal/mqtt/packet"
	"github.com/isobar-mq/isobar/internal/topic"
)

// subscription is one entry of a session's subscription set, keyed by the
// full filter (including any $share/group/ prefix).
type subscription struct {
	filter string
	opts   topic.Options
}

// outState is the state of an outbound QoS 1/2 message.
type outState uint8

const (
	outPublished outState = iota // PUBLISH sent, waiting for PUBACK/PUBREC
	outReleased                  // PUBREC received, PUBREL sent, waiting for PUBCOMP
)

// inflight is an outbound QoS 1/2 message that has been given a packet
// identifier.
type inflight struct {
	d     delivery
	id    uint16
	state outState
	seq   uint64 // send order, for resending on resume
}

// session is the server side of an MQTT session. Everything in it is
// guarded by mu.
//
// Lock order (see also server.go): Server.mu → session.mu → client.omu.
// A goroutine holding a session's mu never takes Server.mu or another
// session's mu.
type session struct {
	srv *Server
	id  string

	online atomic.Bool            // client != nil, readable without mu
	user   atomic.Pointer[string] // user name of the last connection

	mu     mutex
	client *client // current connection, nil while offline
	ended  bool    // removed from the server; deliveries are dropped

	subs map[string]subscription

	inflight map[uint16]*inflight
	seq      uint64
	nextID   uint16
	queue    []delivery // waiting for in-flight room or for the client

	// inboundQoS2 holds packet identifiers of QoS 2 PUBLISHes received and
	// routed but not yet released by PUBREL.
	inboundQoS2 map[uint16]struct{}

	// expiryInterval in seconds; 0 = ends when the connection closes,
	// 0xFFFFFFFF = never.
	expiryInterval uint32
	expiryTimer    *time.Timer

	will      *Message // will of the current/last connection, nil if none
	willDelay uint32
	willTimer *time.Timer
}

func newSession(srv *Server, id string) *session {
	return &session{
		srv:         srv,
		id:          id,
		subs:        make(map[string]subscription),
		inflight:    make(map[uint16]*inflight),
		inboundQoS2: make(map[uint16]struct{}),
	}
}

// deliver hands a routed message to the session: straight to the client
// when it is connected and has room, otherwise to the queue.
func (s *session) deliver(d delivery) {
	s.mu.Lock()
	s.deliverLocked(d)
	s.mu.Unlock()
}

func (s *session) deliverLocked(d delivery) {
	if s.ended {
		return
	}
	now := time.Now().UnixNano()
	if d.msg.expired(now) {
		s.srv.stats.droppedExpired.Add(1)
		return
	}
	c := s.client
	if d.qos == 0 {
		if c != nil {
			c.sendPublish(&d, 0, false, now)
		} else if s.srv.opts.QueueQoS0 {
			s.enqueueLocked(d)
		} else {
			s.srv.stats.droppedOffline.Add(1)
		}
		return
	}
	if c != nil && len(s.queue) == 0 && len(s.inflight) < c.sendQuota {
		s.sendNewLocked(c, d, now)
		return
	}
	s.enqueueLocked(d)
}

func (s *session) enqueueLocked(d delivery) {
	if len(s.queue) >= s.srv.opts.MaxQueued {
		s.srv.stats.droppedQueueFull.Add(1)
		return
	}
	s.queue = append(s.queue, d)
}

// allocIDLocked returns a packet identifier not in use by an in-flight
// message (outbound identifiers start at 1 for a new session).
func (s *session) allocIDLocked() uint16 {
	for {
		s.nextID++
		if s.nextID == 0 {
			s.nextID = 1
		}
		if _, used := s.inflight[s.nextID]; !used {
			return s.nextID
		}
	}
}

// sendNewLocked assigns a packet identifier and sends a QoS 1/2 delivery.
//
// Deliveries own their subIDs slice (never reused by the router), so it is
// stored as is.
func (s *session) sendNewLocked(c *client, d delivery, now int64) {
	id := s.allocIDLocked()
	s.seq++
	s.inflight[id] = &inflight{d: d, id: id, seq: s.seq}
	if !c.sendPublish(&d, id, false, now) {
		// Too large for the client: dropped as if delivered [MQTT-3.1.2-25].
		delete(s.inflight, id)
	}
}

// drainLocked moves queued messages to the client while it has room.
func (s *session) drainLocked() {
	c := s.client
	if c == nil {
		return
	}
	now := time.Now().UnixNano()
	n := 0
	for n < len(s.queue) {
		d := s.queue[n]
		if d.qos > 0 && len(s.inflight) >= c.sendQuota {
			break
		}
		n++
		if d.msg.expired(now) {
			s.srv.stats.droppedExpired.Add(1)
			continue
		}
		if d.qos == 0 {
			c.sendPublish(&d, 0, false, now)
			continue
		}
		id := s.allocIDLocked()
		s.seq++
		s.inflight[id] = &inflight{d: d, id: id, seq: s.seq}
		if !c.sendPublish(&d, id, false, now) {
			delete(s.inflight, id)
		}
	}
	if n > 0 {
		clear(s.queue[:n])
		s.queue = s.queue[n:]
		if len(s.queue) == 0 {
			s.queue = nil
		}
	}
}

// resendLocked re-sends every in-flight message after the session was
// resumed on a new connection: PUBLISH with DUP set, or PUBREL for messages
// whose PUBREC was received [MQTT-4.4.0-1].
func (s *session) resendLocked() {
	c := s.client
	if c == nil || len(s.inflight) == 0 {
		return
	}
	list := make([]*inflight, 0, len(s.inflight))
	for _, f := range s.inflight {
		list = append(list, f)
	}
	slices.SortFunc(list, func(a, b *inflight) int { return int(a.seq - b.seq) })
	now := time.Now().UnixNano()
	for _, f := range list {
		if f.state == outReleased {
			c.sendAck(packet.PUBREL, f.id, packet.Success)
			continue
		}
		if f.d.msg.expired(now) && f.d.qos == 1 {
			// An expired QoS 1 message that the client may not have seen is
			// dropped; the identifier is freed.
			delete(s.inflight, f.id)
			s.srv.stats.droppedExpired.Add(1)
			continue
		}
		if !c.sendPublish(&f.d, f.id, true, now) {
			delete(s.inflight, f.id)
		}
	}
}

// ack handles PUBACK (qos 1) and PUBCOMP (qos 2 after PUBREC) from the
// client. It reports whether the identifier was in the expected state.
func (s *session) complete(id uint16, t packet.Type) (ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.inflight[id]
	if f == nil {
		return true // unknown identifier: ignored (e.g. already completed)
	}
	switch t {
	case packet.PUBACK:
		if f.d.qos != 1 {
			return false
		}
	case packet.PUBCOMP:
		if f.d.qos != 2 || f.state != outReleased {
			return false
		}
	}
	delete(s.inflight, id)
	s.drainLocked()
	return true
}

// received handles PUBREC for an outbound QoS 2 message. It returns whether
// the identifier was known, and whether the packet fits the flow.
func (s *session) received(id uint16, reason byte) (known, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.inflight[id]
	if f == nil {
		return false, true
	}
	if f.d.qos != 2 {
		return true, false
	}
	if reason >= 0x80 {
		// The receiver refused the message: the flow ends here
		// [MQTT-4.3.3] (v5 PUBREC with an error reason code).
		delete(s.inflight, id)
		s.drainLocked()
		return true, true
	}
	f.state = outReleased
	return true, true
}

// subscriptionIDs are kept per session for the management API.
func (s *session) subscriptionCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.subs)
}

func (s *session) username() string {
	if u := s.user.Load(); u != nil {
		return *u
	}
	return ""
}
