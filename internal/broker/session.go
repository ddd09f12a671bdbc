package broker

import (
	"slices"
	"sync/atomic"
	"time"

	"github.com/isobar-mq/isobar/internal/mqtt/packet"
	"github.com/isobar-mq/isobar/internal/store"
	"github.com/isobar-mq/isobar/internal/topic"
)

// subscription is one entry of a session's subscription set, keyed by the
// full filter (including any $share/group/ prefix).
type subscription struct {
	filter string
	opts   topic.Options
}

// outState is the state of an outbound message of a session.
type outState uint8

const (
	outQueued    outState = iota // waiting to be sent
	outPublished                 // PUBLISH sent, waiting for PUBACK/PUBREC
	outReleased                  // PUBREC received, PUBREL sent, waiting for PUBCOMP
)

// outMsg is a message on its way to a session's client. QoS 1/2 messages
// get their packet identifier when they enter the session, so that the
// identifier is recorded durably with the message before it is ever sent:
// after a crash the message is resent with the same identifier, which a
// QoS 2 receiver recognises [MQTT-4.3.3-10].
type outMsg struct {
	d     delivery
	id    uint16 // 0 for QoS 0
	seq   uint64 // order within the session, also the store key
	state outState
	// pending is set while the record is not committed yet: the message
	// is not sent before it is durable.
	pending bool
	// resend marks a message loaded from the store: sent with DUP.
	resend bool
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
	role   atomic.Uint32          // Auth role of the last connection

	mu     mutex
	client *client // current connection, nil while offline
	ended  bool    // removed from the server; deliveries are dropped
	stored bool    // a record of it is in the store

	subs map[string]subscription

	// msgs holds the QoS 1/2 messages of the session, queued or in
	// flight, by packet identifier.
	msgs   map[uint16]*outMsg
	queue  []*outMsg // waiting to be sent, in order (QoS 0 entries have id 0)
	sent   int       // messages in flight (published or released)
	seq    uint64
	nextID uint16

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
	willAt    int64 // when the delayed will is due (unix nanos)
}

func newSession(srv *Server, id string) *session {
	return &session{
		srv:         srv,
		id:          id,
		subs:        make(map[string]subscription),
		msgs:        make(map[uint16]*outMsg),
		inboundQoS2: make(map[uint16]struct{}),
	}
}

// persistent reports whether the session's state is mirrored to the store.
func (s *session) persistentLocked() bool { return s.srv.store != nil && s.expiryInterval > 0 }

// deliver hands a routed message to the session.
func (s *session) deliver(d delivery, tx *txn, now int64) {
	s.mu.Lock()
	s.deliverLocked(d, tx, now)
	s.mu.Unlock()
}

// deliverLocked sends a message to the connected client, or queues it:
// while offline, while the in-flight window is full, or until its record is
// committed.
// now is the current time (unix nanoseconds), read once per routed
// message by the caller.
func (s *session) deliverLocked(d delivery, tx *txn, now int64) {
	if s.ended {
		return
	}
	if d.msg.expired(now) {
		s.srv.stats.droppedExpired.Add(1)
		return
	}
	c := s.client
	if d.qos == 0 {
		switch {
		case c != nil && c.acked:
			c.sendPublish(&d, 0, false, now)
		case s.srv.opts.QueueQoS0 && s.expiryInterval > 0:
			if len(s.queue) >= s.srv.opts.MaxQueued {
				s.srv.stats.droppedQueueFull.Add(1)
				return
			}
			s.seq++
			s.queue = append(s.queue, &outMsg{d: d, seq: s.seq})
		default:
			s.srv.stats.droppedOffline.Add(1)
		}
		return
	}
	if len(s.queue) >= s.srv.opts.MaxQueued || len(s.msgs) >= 65535 {
		s.srv.stats.droppedQueueFull.Add(1)
		return
	}
	m := &outMsg{d: d, id: s.allocIDLocked(), state: outQueued}
	s.seq++
	m.seq = s.seq
	s.msgs[m.id] = m
	s.queue = append(s.queue, m)
	if s.persistentLocked() && tx.durable() {
		m.pending = true
		tx.batch.PutMessage(s.id, m.seq, s.record(m))
		tx.then(func() {
			s.mu.Lock()
			m.pending = false
			s.drainLocked(time.Now().UnixNano())
			s.mu.Unlock()
		})
		return
	}
	s.drainLocked(now)
}

// allocIDLocked returns a packet identifier not in use by the session's
// messages (outbound identifiers start at 1 for a new session).
func (s *session) allocIDLocked() uint16 {
	for {
		s.nextID++
		if s.nextID == 0 {
			s.nextID = 1
		}
		if _, used := s.msgs[s.nextID]; !used {
			return s.nextID
		}
	}
}

// drainLocked sends queued messages to the client while it has room.
func (s *session) drainLocked(now int64) {
	c := s.client
	if c == nil || !c.acked {
		return
	}
	n := 0
	for n < len(s.queue) {
		m := s.queue[n]
		if m.pending || (m.id != 0 && s.sent >= c.sendQuota) {
			break
		}
		n++
		if m.d.msg.expired(now) {
			s.srv.stats.droppedExpired.Add(1)
			if m.id != 0 {
				delete(s.msgs, m.id)
				s.forget(m)
			}
			continue
		}
		if m.id == 0 {
			c.sendPublish(&m.d, 0, false, now)
			continue
		}
		switch c.sendPublish(&m.d, m.id, m.resend, now) {
		case sendOK:
			m.state = outPublished
			s.sent++
		case sendTooBig:
			// Dropped as if delivered [MQTT-3.1.2-25].
			delete(s.msgs, m.id)
			s.forget(m)
		case sendNotSent:
			// The connection is closing: the message stays queued,
			// delivery has not started.
			n--
			goto done
		}
	}
done:
	if n > 0 {
		clear(s.queue[:n])
		s.queue = s.queue[n:]
		if len(s.queue) == 0 {
			s.queue = nil
		}
	}
}

// forget removes a message's record from the store, outside any client
// transaction (nothing is acknowledged because of it, so the removal may
// be lost in a crash: the message is then dropped again at the next
// start).
func (s *session) forget(m *outMsg) {
	if s.persistentLocked() {
		s.srv.storeAsync(func(b store.Batch) { b.DeleteMessage(s.id, m.seq) })
	}
}

// resendLocked re-sends every in-flight message after the session was
// resumed on a new connection: PUBLISH with DUP set, or PUBREL for messages
// whose PUBREC was received [MQTT-4.4.0-1].
func (s *session) resendLocked() {
	c := s.client
	if c == nil || s.sent == 0 {
		return
	}
	list := make([]*outMsg, 0, s.sent)
	for _, m := range s.msgs {
		if m.state != outQueued {
			list = append(list, m)
		}
	}
	slices.SortFunc(list, func(a, b *outMsg) int {
		switch {
		case a.seq < b.seq:
			return -1
		case a.seq > b.seq:
			return 1
		}
		return 0
	})
	now := time.Now().UnixNano()
	// PUBRELs first: those messages count against the client's Receive
	// Maximum until PUBCOMP, and must complete.
	var requeue []*outMsg
	inFlight := 0
	for _, m := range list {
		if m.state == outReleased {
			c.sendAck(packet.PUBREL, m.id, packet.Success)
			inFlight++
		}
	}
	for _, m := range list {
		if m.state == outReleased {
			continue
		}
		if inFlight >= c.sendQuota {
			// The new connection's Receive Maximum is smaller than what
			// was in flight [MQTT-3.3.4-9]: the rest wait, at the front
			// of the queue, with their identifiers, and go out (DUP) as
			// acknowledgements arrive.
			m.state = outQueued
			m.resend = true
			s.sent--
			requeue = append(requeue, m)
			continue
		}
		switch c.sendPublish(&m.d, m.id, true, now) {
		case sendTooBig:
			delete(s.msgs, m.id)
			s.sent--
			s.forget(m)
		default:
			inFlight++
		}
	}
	if len(requeue) > 0 {
		s.queue = append(requeue, s.queue...)
	}
}

// complete handles PUBACK (QoS 1) and PUBCOMP (QoS 2 after PUBREC). It
// reports whether the packet fits the message's flow.
func (s *session) complete(id uint16, t packet.Type, tx *txn) (ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.msgs[id]
	if m == nil || m.state == outQueued {
		return true // unknown identifier: ignored (e.g. already completed)
	}
	switch t {
	case packet.PUBACK:
		if m.d.qos != 1 {
			return false
		}
	case packet.PUBCOMP:
		if m.d.qos != 2 || m.state != outReleased {
			return false
		}
	}
	delete(s.msgs, id)
	s.sent--
	if s.persistentLocked() && tx.durable() {
		tx.deleteAcked(s.id, m.seq)
	}
	s.drainLocked(time.Now().UnixNano())
	return true
}

// received handles PUBREC for an outbound QoS 2 message. It returns
// whether the identifier was known, and whether the packet fits the flow.
// When a PUBREL is due, it is sent through tx once the new state is
// durable: a PUBREL sent before a crash that forgot it could make the
// receiver complete, and the resent PUBLISH look new.
func (s *session) received(id uint16, reason byte, tx *txn) (known, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.msgs[id]
	if m == nil || m.state == outQueued {
		return false, true
	}
	if m.d.qos != 2 {
		return true, false
	}
	if reason >= 0x80 {
		// The receiver refused the message: the flow ends here.
		delete(s.msgs, id)
		s.sent--
		if s.persistentLocked() && tx.durable() {
			tx.deleteAcked(s.id, m.seq)
		}
		s.drainLocked(time.Now().UnixNano())
		return true, true
	}
	if m.state != outReleased {
		m.state = outReleased
		if s.persistentLocked() && tx.durable() {
			tx.batch.PutMessage(s.id, m.seq, s.record(m))
		}
	}
	return true, true
}

// info identifies the session's owner to authorization checks.
func (s *session) info() ClientInfo {
	return ClientInfo{ClientID: s.id, Username: s.username(), Role: uint8(s.role.Load())}
}

func (s *session) username() string {
	if u := s.user.Load(); u != nil {
		return *u
	}
	return ""
}

// record converts a session message to its store form.
func (s *session) record(m *outMsg) *store.MessageRecord {
	r := messageRecord(m.d.msg)
	r.DeliverQoS = m.d.qos
	r.DeliverRetain = m.d.retain
	r.SubIDs = m.d.subIDs
	r.Group = m.d.group
	r.PacketID = m.id
	switch m.state {
	case outReleased:
		r.State = store.StateReleased
	case outPublished:
		r.State = store.StatePublished
	default:
		r.State = store.StateQueued
	}
	return r
}

// sessionRecordLocked is the session's own store record.
func (s *session) sessionRecordLocked() *store.SessionRecord {
	r := &store.SessionRecord{
		ClientID:       s.id,
		ExpiryInterval: s.expiryInterval,
		Username:       s.username(),
		NextPacketID:   s.nextID,
	}
	if s.client == nil {
		r.DisconnectedAt = time.Now().UnixNano()
	}
	// The will is part of the session state: while online it is due if
	// the node crashes (the connection then ends abnormally); while
	// offline it is the delayed will, or the one held until the session
	// ends (delay >= expiry).
	if s.will != nil {
		r.Will = messageRecord(s.will)
		r.WillDelay = s.willDelay
		if s.willTimer != nil {
			r.WillAt = s.willAt
		}
	}
	return r
}

func messageRecord(m *Message) *store.MessageRecord {
	return &store.MessageRecord{
		Topic: m.Topic, Payload: m.Payload, QoS: m.QoS, Retain: m.Retain, Props: m.Props,
		Received: m.Received, Expiry: m.Expiry, From: m.From,
	}
}

func messageFromRecord(r *store.MessageRecord) *Message {
	m := &Message{
		Topic: r.Topic, Payload: r.Payload, QoS: r.QoS, Retain: r.Retain, Props: r.Props,
		Received: r.Received, Expiry: r.Expiry, From: r.From,
	}
	m.Props.Present &= messagePropMask
	return m
}
