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
	d     Delivery
	id    uint16 // 0 for QoS 0
	seq   uint64 // order within the session, also the store key
	state outState
	// pending is set while the record is not committed yet: the message
	// is not sent before it is durable.
	pending bool
	// resend marks a message loaded from the store: sent with DUP.
	resend bool
	// size is what the message counts against the queued-bytes limits.
	size int64
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
	// bytes is the memory the session's held messages (queued and in
	// flight) count against Options.MaxQueuedBytes; reserved (>= bytes) is
	// what it took of Server.queuedBytes (MaxQueuedBytesTotal).
	bytes    int64
	reserved int64

	// inboundQoS2 holds packet identifiers of QoS 2 PUBLISHes received and
	// routed but not yet released by PUBREL.
	inboundQoS2 map[uint16]struct{}

	// expiryInterval in seconds; 0 = ends when the connection closes,
	// 0xFFFFFFFF = never.
	expiryInterval uint32
	expiryTimer    *time.Timer
	// leftAt is when the client went away (unix nanos; 0 while online or
	// unknown): the offline session's record carries it, so that a
	// session rewritten later (a will fired, a snapshot for a replica, a
	// restart) does not restart its expiry.
	leftAt int64

	will      *Message // will of the current/last connection, nil if none
	willDelay uint32
	willTimer *time.Timer
	willAt    int64 // when the delayed will is due (unix nanos)

	// claimStamp and claimNode order this session's current connection
	// against connects of the same client identifier on other nodes (0
	// when not clustered).
	claimStamp uint64
	claimNode  string
	// seen holds the ids of messages delivered since the session moved
	// here from another node, until seenUntil (unix nanos): a message
	// that reaches it twice (routed here and forwarded by the node it
	// left) counts once.
	seen      map[MessageID]struct{}
	seenUntil int64
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

// persistentLocked reports whether the session's state is mirrored to the store.
func (s *session) persistentLocked() bool { return s.srv.store != nil && s.expiryInterval > 0 }

// SubscriberID implements Subscriber: the client identifier.
func (s *session) SubscriberID() string { return s.id }

// Online implements Subscriber.
func (s *session) Online() bool { return s.online.Load() }

// MayReceive implements Subscriber: the read ACL of the session's owner.
func (s *session) MayReceive(topic string) bool {
	return s.srv.auth == nil || s.srv.auth.CanReceive(s.info(), topic)
}

// Deliver implements Subscriber: it hands a routed message to the session.
func (s *session) Deliver(d Delivery, tx *Txn, now int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.deliverLocked(d, tx, now)
}

// deliverLocked sends a message to the connected client, or queues it:
// while offline, while the in-flight window is full, or until its record is
// committed.
// now is the current time (unix nanoseconds), read once per routed
// message by the caller.
func (s *session) deliverLocked(d Delivery, tx *Txn, now int64) {
	if s.ended {
		return
	}
	if s.seenUntil != 0 && s.seenLocked(d.Msg.ID, now) {
		s.srv.stats.droppedDuplicate.Add(1)
		return
	}
	if d.Msg.expired(now) {
		s.srv.stats.droppedExpired.Add(1)
		return
	}
	c := s.client
	if d.QoS == 0 {
		switch {
		case c != nil && c.acked:
			c.sendPublish(&d, 0, false, now)
		case s.srv.opts.QueueQoS0 && s.expiryInterval > 0:
			if len(s.queue) >= s.srv.opts.MaxQueued {
				s.srv.stats.droppedQueueFull.Add(1)
				return
			}
			m := &outMsg{d: d}
			if !s.holdLocked(m) {
				return
			}
			s.seq++
			m.seq = s.seq
			s.queue = append(s.queue, m)
		default:
			s.srv.stats.droppedOffline.Add(1)
		}
		return
	}
	if len(s.queue) >= s.srv.opts.MaxQueued || len(s.msgs) >= 65535 {
		s.srv.stats.droppedQueueFull.Add(1)
		s.srv.deliveryOutcome(DeliveryDropped, s.id, &d)
		return
	}
	m := &outMsg{d: d, state: outQueued}
	if !s.holdLocked(m) {
		s.srv.deliveryOutcome(DeliveryDropped, s.id, &d)
		return
	}
	m.id = s.allocIDLocked()
	s.seq++
	m.seq = s.seq
	s.msgs[m.id] = m
	s.queue = append(s.queue, m)
	if s.persistentLocked() && tx.Durable() {
		m.pending = true
		tx.batch.PutMessage(s.id, m.seq, s.record(m))
		// Released for sending once its record is committed; released too
		// if the commit fails (the message is then held in memory only,
		// and the publisher, not acknowledged, resends it).
		tx.always(func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			m.pending = false
			s.drainLocked(time.Now().UnixNano())
		})
		return
	}
	s.drainLocked(now)
}

// reserveChunk is how much of the server-wide queued-bytes budget a session
// takes at a time: the shared counter then changes about once per 64 KiB of
// messages instead of twice per message (it would otherwise bounce between
// the cores of the publisher and of the subscribers' acknowledgements).
const reserveChunk = 64 << 10

// holdLocked accounts for a message the session starts holding, against
// the per-session and the server-wide queued-bytes limits. It returns
// false (counted) when the message does not fit.
func (s *session) holdLocked(m *outMsg) bool {
	size := m.d.Msg.memSize()
	if s.bytes+size > s.srv.opts.MaxQueuedBytes {
		s.srv.stats.droppedQueueBytes.Add(1)
		return false
	}
	if need := s.bytes + size - s.reserved; need > 0 && !s.reserveLocked(need) {
		s.srv.stats.droppedQueueBytes.Add(1)
		return false
	}
	m.size = size
	s.bytes += size
	return true
}

// reserveLocked takes at least need bytes of the server-wide budget: a
// whole chunk when it fits, else exactly need.
func (s *session) reserveLocked(need int64) bool {
	g, limit := &s.srv.queuedBytes, s.srv.opts.MaxQueuedBytesTotal
	chunk := max(need, reserveChunk)
	if g.Add(chunk) <= limit {
		s.reserved += chunk
		return true
	}
	g.Add(-chunk)
	if chunk > need {
		if g.Add(need) <= limit {
			s.reserved += need
			return true
		}
		g.Add(-need)
	}
	return false
}

// releaseLocked undoes holdLocked for a message the session lets go of.
// Budget beyond two chunks of what the session still holds goes back.
func (s *session) releaseLocked(m *outMsg) {
	if m.size != 0 {
		s.bytes -= m.size
		m.size = 0
		if extra := s.reserved - s.bytes - reserveChunk; extra > reserveChunk {
			s.srv.queuedBytes.Add(-extra)
			s.reserved -= extra
		}
	}
}

// releaseAllLocked gives back everything a session that takes no more
// deliveries held and reserved.
func (s *session) releaseAllLocked() {
	s.srv.queuedBytes.Add(-s.reserved)
	s.reserved = 0
	s.bytes = 0
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
		if m.d.Msg.expired(now) {
			s.srv.stats.droppedExpired.Add(1)
			s.releaseLocked(m)
			if m.id != 0 {
				delete(s.msgs, m.id)
				s.forget(m)
				s.srv.deliveryOutcome(DeliveryDropped, s.id, &m.d)
			}
			continue
		}
		if m.id == 0 {
			if c.sendPublish(&m.d, 0, false, now) == sendNotSent {
				n--
				goto done
			}
			s.releaseLocked(m)
			continue
		}
		switch c.sendPublish(&m.d, m.id, m.resend, now) {
		case sendOK:
			m.state = outPublished
			s.sent++
		case sendTooBig:
			// Dropped as if delivered [MQTT-3.1.2-25].
			delete(s.msgs, m.id)
			s.releaseLocked(m)
			s.forget(m)
			s.srv.deliveryOutcome(DeliveryDropped, s.id, &m.d)
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
			s.releaseLocked(m)
			s.forget(m)
			s.srv.deliveryOutcome(DeliveryDropped, s.id, &m.d)
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
func (s *session) complete(id uint16, t packet.Type, tx *Txn) (ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.msgs[id]
	if m == nil || m.state == outQueued {
		return true // unknown identifier: ignored (e.g. already completed)
	}
	switch t {
	case packet.PUBACK:
		if m.d.QoS != 1 {
			return false
		}
	case packet.PUBCOMP:
		if m.d.QoS != 2 || m.state != outReleased {
			return false
		}
	}
	delete(s.msgs, id)
	s.sent--
	s.releaseLocked(m)
	if s.persistentLocked() && tx.Durable() {
		tx.deleteAcked(s.id, m.seq)
	}
	s.srv.deliveryOutcome(DeliveryAcknowledged, s.id, &m.d)
	s.drainLocked(time.Now().UnixNano())
	return true
}

// received handles PUBREC for an outbound QoS 2 message. It returns
// whether the identifier was known, and whether the packet fits the flow.
// When a PUBREL is due, it is sent through tx once the new state is
// durable: a PUBREL sent before a crash that forgot it could make the
// receiver complete, and the resent PUBLISH look new.
func (s *session) received(id uint16, reason byte, tx *Txn) (known, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.msgs[id]
	if m == nil || m.state == outQueued {
		return false, true
	}
	if m.d.QoS != 2 {
		return true, false
	}
	if reason >= 0x80 {
		// The receiver refused the message: the flow ends here.
		delete(s.msgs, id)
		s.sent--
		s.releaseLocked(m)
		s.srv.deliveryOutcome(DeliveryDropped, s.id, &m.d)
		if s.persistentLocked() && tx.Durable() {
			tx.deleteAcked(s.id, m.seq)
		}
		s.drainLocked(time.Now().UnixNano())
		return true, true
	}
	if m.state != outReleased {
		m.state = outReleased
		if s.persistentLocked() && tx.Durable() {
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
	r := messageRecord(m.d.Msg)
	r.DeliverQoS = m.d.QoS
	r.DeliverRetain = m.d.Retain
	r.SubIDs = m.d.SubIDs
	r.Group = m.d.Group
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
		Role:           uint8(s.role.Load()),
		NextPacketID:   s.nextID,
	}
	if s.client == nil {
		r.DisconnectedAt = s.leftAt
		if r.DisconnectedAt == 0 {
			r.DisconnectedAt = time.Now().UnixNano()
		}
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
		IDNode: m.ID.Node, IDSeq: m.ID.Seq, Hops: m.Hops,
		OriginKind: uint8(m.Origin.Kind), OriginName: m.Origin.Name, Stamp: m.Stamp,
	}
}

func messageFromRecord(r *store.MessageRecord) *Message {
	m := &Message{
		Topic: r.Topic, Payload: r.Payload, QoS: r.QoS, Retain: r.Retain, Props: r.Props,
		Received: r.Received, Expiry: r.Expiry, From: r.From,
		ID: MessageID{Node: r.IDNode, Seq: r.IDSeq}, Hops: r.Hops,
		Origin: Origin{Kind: OriginKind(r.OriginKind), Name: r.OriginName}, Stamp: r.Stamp,
	}
	m.Props.Present &= messagePropMask
	return m
}

// takeSharedLocked removes from a session whose client went away the
// messages it got through shared subscriptions and has not started
// delivering under QoS 2, so another member can have them [MQTT-4.8.2-3].
// QoS 2 messages already sent stay: they must complete with this client
// [MQTT-4.8.2-4].
func (sess *session) takeSharedLocked(tx *Txn) []Delivery {
	var out []Delivery
	drop := func(m *outMsg) {
		out = append(out, m.d)
		sess.releaseLocked(m)
		if m.id != 0 {
			delete(sess.msgs, m.id)
			if sess.persistentLocked() && tx.Durable() {
				tx.batch.DeleteMessage(sess.id, m.seq)
			}
		}
	}
	keep := sess.queue[:0]
	for _, m := range sess.queue {
		if m.d.Group != "" && !m.pending {
			drop(m)
		} else {
			keep = append(keep, m)
		}
	}
	clear(sess.queue[len(keep):])
	sess.queue = keep
	for _, m := range sess.msgs {
		if m.d.Group != "" && m.d.QoS == 1 && m.state == outPublished {
			drop(m)
			sess.sent--
		}
	}
	return out
}
