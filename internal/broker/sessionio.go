package broker

import (
	"errors"
	"slices"
	"time"

	"github.com/isobar-mq/isobar/internal/store"
	"github.com/isobar-mq/isobar/internal/topic"
)

// Session export and import.
//
// A session's whole state (its record with expiry, user, role and will,
// its subscriptions with their options, its queued and in-flight QoS 1/2
// messages with packet identifiers and states, and the inbound QoS 2
// identifiers awaiting PUBREL) is one store.LoadedSession: the snapshot
// format. store.EncodeSession makes it a versioned byte string for the
// wire. The incremental changes after a snapshot are the store.Batch
// operations the broker records as it goes (a Batch is the change stream).
// Restore imports each stored session this way; moving a session to another
// node exports it on one and imports it on the other.

// ErrSessionExists is returned by ImportSession when the client
// identifier already has a session here.
var ErrSessionExists = errors.New("a session with this client identifier exists")

// ExportSession returns a snapshot of a session (online or offline), and
// false if there is none.
func (s *Server) ExportSession(clientID string) (*store.LoadedSession, bool) {
	s.mu.Lock()
	sess := s.sessions[clientID]
	s.mu.Unlock()
	if sess == nil {
		return nil, false
	}
	sess.mu.Lock()
	defer sess.mu.Unlock()
	if sess.ended {
		return nil, false
	}
	return sess.exportLocked(), true
}

// exportLocked builds the session's snapshot.
func (sess *session) exportLocked() *store.LoadedSession {
	ls := &store.LoadedSession{Session: *sess.sessionRecordLocked()}
	if sess.seenUntil != 0 && time.Now().UnixNano() <= sess.seenUntil {
		// Its de-duplication set goes with it (see LoadedSession.Seen).
		ls.Seen = make([][2]uint64, 0, len(sess.seen))
		for id := range sess.seen {
			ls.Seen = append(ls.Seen, [2]uint64{id.Node, id.Seq})
		}
	}
	for _, sub := range sess.subs {
		ls.Subscriptions = append(ls.Subscriptions, store.SubscriptionRecord{
			Filter: sub.filter, QoS: sub.opts.QoS, NoLocal: sub.opts.NoLocal,
			RetainAsPublished: sub.opts.RetainAsPublished, RetainHandling: sub.opts.RetainHandling, ID: sub.opts.ID,
		})
	}
	slices.SortFunc(ls.Subscriptions, func(a, b store.SubscriptionRecord) int {
		switch {
		case a.Filter < b.Filter:
			return -1
		case a.Filter > b.Filter:
			return 1
		}
		return 0
	})
	for _, m := range sess.msgs {
		ls.Messages = append(ls.Messages, store.SeqMessage{Seq: m.seq, Msg: *sess.record(m)})
	}
	slices.SortFunc(ls.Messages, func(a, b store.SeqMessage) int {
		switch {
		case a.Seq < b.Seq:
			return -1
		case a.Seq > b.Seq:
			return 1
		}
		return 0
	})
	for id := range sess.inboundQoS2 {
		ls.Inbound = append(ls.Inbound, id)
	}
	slices.Sort(ls.Inbound)
	return ls
}

// ImportSession installs a session from a snapshot (offline, as if its
// client had just disconnected at ls.Session.DisconnectedAt, or now if that
// is 0), recording it in the store. A will that is due is published. It
// fails if the client identifier already has a session.
func (s *Server) ImportSession(ls *store.LoadedSession) error {
	s.mu.Lock()
	_, exists := s.sessions[ls.Session.ClientID]
	s.mu.Unlock()
	if exists {
		return ErrSessionExists
	}
	tx := s.newTxn()
	now := time.Now().UnixNano()
	if tx.Durable() {
		tx.batch.PutSession(&ls.Session)
		for i := range ls.Subscriptions {
			tx.batch.PutSubscription(ls.Session.ClientID, &ls.Subscriptions[i])
		}
		for i := range ls.Messages {
			tx.batch.PutMessage(ls.Session.ClientID, ls.Messages[i].Seq, &ls.Messages[i].Msg)
		}
		for _, id := range ls.Inbound {
			tx.batch.PutInbound(ls.Session.ClientID, id)
		}
	}
	cleanup := tx.batch
	var wills []ownedWill
	res := s.importSession(ls, now, cleanup, &wills)
	if res.sess != nil {
		s.mu.Lock()
		if _, exists := s.sessions[ls.Session.ClientID]; exists {
			s.mu.Unlock()
			res.sess.discard()
			return ErrSessionExists
		}
		s.sessions[res.sess.id] = res.sess
		s.mu.Unlock()
	}
	for _, w := range wills {
		s.publishWill(w.m, w.owner, tx)
	}
	return tx.commit(s)
}

type ownedWill struct {
	m     *Message
	owner ClientInfo
}

// importResult is what importSession made of one stored session.
type importResult struct {
	sess    *session // nil if it had expired
	msgs    int
	expired bool
}

// importSession rebuilds one session from its snapshot at time now (unix
// nanoseconds): expiry and will delays count wall-clock time since the
// client went offline. Records to drop (expired session or messages,
// superseded duplicates) go to cleanup (may be nil); wills that are due
// go to wills. The session is subscribed in the index but not yet in
// s.sessions: the caller adds it.
func (s *Server) importSession(ls *store.LoadedSession, now int64, cleanup store.Batch, wills *[]ownedWill) importResult {
	r := &ls.Session
	owner := ClientInfo{ClientID: r.ClientID, Username: r.Username, Role: r.Role}
	expiresAt := int64(0)
	if r.ExpiryInterval != 0xFFFFFFFF {
		expiresAt = r.DisconnectedAt + int64(r.ExpiryInterval)*int64(time.Second)
	}
	online := r.DisconnectedAt == 0
	if online {
		// Online when the node stopped (or the snapshot was taken): offline
		// since then.
		r.DisconnectedAt = now
		if r.ExpiryInterval != 0xFFFFFFFF {
			expiresAt = now + int64(r.ExpiryInterval)*int64(time.Second)
		}
	}
	if expiresAt != 0 && expiresAt <= now {
		if cleanup != nil {
			cleanup.DeleteSession(r.ClientID)
		}
		if r.Will != nil {
			*wills = append(*wills, ownedWill{messageFromRecord(r.Will), owner})
		}
		return importResult{expired: true}
	}
	sess := newSession(s, r.ClientID)
	sess.leftAt = r.DisconnectedAt
	sess.stored = true
	sess.expiryInterval = r.ExpiryInterval
	sess.nextID = r.NextPacketID
	user := r.Username
	sess.user.Store(&user)
	sess.role.Store(uint32(r.Role))
	for _, sr := range ls.Subscriptions {
		opts := topic.Options{QoS: sr.QoS, NoLocal: sr.NoLocal, RetainAsPublished: sr.RetainAsPublished, RetainHandling: sr.RetainHandling, ID: sr.ID}
		sess.subs[sr.Filter] = subscription{filter: sr.Filter, opts: opts}
		s.indexSubscribe(sess, sr.Filter, opts)
	}
	n := 0
	for _, sm := range ls.Messages {
		mr := sm.Msg
		msg := messageFromRecord(&mr)
		if _, err := protocolSize(msg, 0, 0); err != nil && mr.State == store.StateQueued {
			s.log.Warn("queued message dropped at restore: not valid MQTT", "client", r.ClientID, "topic", msg.Topic, "err", err)
			if cleanup != nil {
				cleanup.DeleteMessage(r.ClientID, sm.Seq)
			}
			continue
		}
		if msg.expired(now) && mr.State == store.StateQueued {
			if cleanup != nil {
				cleanup.DeleteMessage(r.ClientID, sm.Seq)
			}
			continue
		}
		m := &outMsg{
			d:      Delivery{Msg: msg, QoS: mr.DeliverQoS, Retain: mr.DeliverRetain, SubIDs: mr.SubIDs, Group: mr.Group},
			id:     mr.PacketID,
			seq:    sm.Seq,
			resend: true,
		}
		if sm.Seq > sess.seq {
			sess.seq = sm.Seq
		}
		if m.id == 0 {
			continue // QoS 0 messages are not stored
		}
		if old, dup := sess.msgs[m.id]; dup {
			// An identifier is reused only after its message was
			// acknowledged, so the older record is one whose removal was
			// lost in a crash (see Txn.deleteAcked): the newer wins.
			if cleanup != nil {
				cleanup.DeleteMessage(r.ClientID, old.seq)
			}
			if old.state == outQueued {
				if i := slices.Index(sess.queue, old); i >= 0 {
					sess.queue = slices.Delete(sess.queue, i, i+1)
				}
			} else {
				sess.sent--
			}
			sess.releaseLocked(old)
			n--
		}
		// Restored messages count against the byte limits but are never
		// dropped for them: they were accepted before.
		m.size = msg.memSize()
		sess.bytes += m.size
		if sess.bytes > sess.reserved {
			s.queuedBytes.Add(sess.bytes - sess.reserved)
			sess.reserved = sess.bytes
		}
		switch mr.State {
		case store.StateReleased:
			m.state = outReleased
			sess.sent++
		case store.StatePublished:
			m.state = outPublished
			sess.sent++
		default:
			m.state = outQueued
			sess.queue = append(sess.queue, m)
		}
		sess.msgs[m.id] = m
		n++
	}
	for _, id := range ls.Inbound {
		sess.inboundQoS2[id] = struct{}{}
	}
	if r.Will != nil {
		will := messageFromRecord(r.Will)
		sess.will = will
		sess.willDelay = r.WillDelay
		switch {
		case r.WillAt != 0:
			// A delayed will was pending: due at its time (wall clock).
			sess.willAt = r.WillAt
			sess.willTimer = time.AfterFunc(max(time.Duration(r.WillAt-now), 0), func() { s.safely("will", func() { s.fireWill(sess) }) })
		case online && r.WillDelay == 0:
			// The connection ended with the crash: its will is due now.
			sess.will = nil
			*wills = append(*wills, ownedWill{will, owner})
			if cleanup != nil {
				rec := *r
				rec.Will = nil
				cleanup.PutSession(&rec)
			}
		case online && r.WillDelay < r.ExpiryInterval:
			delay := time.Duration(r.WillDelay) * time.Second
			sess.willAt = now + int64(delay)
			sess.willTimer = time.AfterFunc(delay, func() { s.safely("will", func() { s.fireWill(sess) }) })
		default:
			// Published when the session ends (delay >= expiry).
			sess.willDelay = max(r.WillDelay, 1)
		}
	}
	if expiresAt != 0 {
		sess.expiryTimer = time.AfterFunc(time.Duration(expiresAt-now), func() { s.safely("session expiry", func() { s.expireSession(sess) }) })
	}
	return importResult{sess: sess, msgs: n}
}

// discard undoes importSession for a session that is not installed after
// all: its timers are stopped, its subscriptions leave the index, and the
// bytes of its messages are released (it takes no more deliveries).
func (sess *session) discard() {
	sess.mu.Lock()
	defer sess.mu.Unlock()
	sess.ended = true
	sess.releaseAllLocked()
	if sess.expiryTimer != nil {
		sess.expiryTimer.Stop()
	}
	if sess.willTimer != nil {
		sess.willTimer.Stop()
	}
	for f := range sess.subs {
		sess.srv.indexUnsubscribe(sess, f)
	}
}

// Restore loads sessions and retained messages from the store. Call it
// once, before serving. Expiry and will delays count wall-clock time
// across the downtime.
func (s *Server) Restore() error {
	if s.store == nil {
		return nil
	}
	start := time.Now()
	now := start.UnixNano()
	var nRetained, nSessions, nMsgs, nExpired int
	cleanup := s.store.NewBatch()
	err := s.store.LoadRetained(func(r *store.MessageRecord) error {
		m := messageFromRecord(r)
		if m.expired(now) {
			cleanup.DeleteRetained(m.Topic)
			return nil
		}
		if _, err := protocolSize(m, 0, 0); err != nil {
			// Stored by an older version without today's validation: it
			// could not be sent to anyone.
			s.log.Warn("retained message dropped at restore: not valid MQTT", "topic", m.Topic, "err", err)
			cleanup.DeleteRetained(m.Topic)
			return nil
		}
		if s.hclock != nil {
			// Later local changes are stamped above every stored version,
			// even if the wall clock went back across the restart.
			s.hclock.Update(m.Stamp)
		}
		s.retained.Set(m.Topic, m)
		nRetained++
		return nil
	})
	if err != nil {
		return err
	}
	var wills []ownedWill
	err = s.store.LoadSessions(func(ls *store.LoadedSession) error {
		res := s.importSession(ls, now, cleanup, &wills)
		if res.expired {
			nExpired++
			return nil
		}
		s.mu.Lock()
		s.sessions[res.sess.id] = res.sess
		s.mu.Unlock()
		nSessions++
		nMsgs += res.msgs
		return nil
	})
	if err != nil {
		return err
	}
	if cleanup.Len() > 0 {
		if err := cleanup.Commit(); err != nil {
			return err
		}
	}
	for _, w := range wills {
		tx := s.newTxn()
		s.publishWill(w.m, w.owner, tx)
		if err := tx.commit(s); err != nil {
			return err
		}
	}
	s.log.Info("state restored from store", "sessions", nSessions, "messages", nMsgs, "retained", nRetained,
		"expired_sessions", nExpired, "duration", time.Since(start).Round(time.Millisecond))
	return nil
}
