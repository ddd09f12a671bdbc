package broker

import (
	"time"

	"github.com/isobar-mq/isobar/internal/mqtt/packet"
	"github.com/isobar-mq/isobar/internal/store"
	"github.com/isobar-mq/isobar/internal/topic"
)

// Session lifecycle: attach on CONNECT, detach when the connection ends,
// expiry, will messages, and restoring sessions from the store.

// attach binds a connected client to its session (new, resumed or taken
// over). CONNACK, and then anything the session has pending, are sent
// through tx once the session's new state is durable.
func (s *Server) attach(c *client, clean bool, expiry uint32, will *Message, willDelay uint32, ack *packet.Connack, tx *txn) {
	for {
		s.mu.Lock()
		old := s.sessions[c.id]
		var oldClient *client
		if old != nil {
			old.mu.Lock()
			oldClient = old.client
			old.mu.Unlock()
		}
		if oldClient != nil {
			s.mu.Unlock()
			// Takeover [MQTT-3.1.4-3]: the existing connection is closed
			// (v5: DISCONNECT 0x8E) and its teardown completes first.
			s.stats.takeovers.Add(1)
			oldClient.kick(packet.SessionTakenOver, errTakenOver)
			select {
			case <-oldClient.done:
			case <-time.After(5 * time.Second):
				_ = oldClient.conn.Close()
				<-oldClient.done
			}
			continue
		}
		var sess *session
		present := false
		if old != nil && !clean {
			sess = old
			present = true
		} else {
			if old != nil {
				s.endSessionLocked(old, tx)
			}
			sess = newSession(s, c.id)
			s.sessions[c.id] = sess
		}
		s.clients[c] = struct{}{}
		s.listenerConns[c.listener]++
		sess.mu.Lock()
		s.mu.Unlock()

		c.sess = sess
		sess.client = c
		sess.online.Store(true)
		sess.user.Store(&c.username)
		sess.role.Store(uint32(c.role))
		sess.expiryInterval = expiry
		if sess.expiryTimer != nil {
			sess.expiryTimer.Stop()
			sess.expiryTimer = nil
		}
		if sess.willTimer != nil {
			// Reconnected before the will delay passed: not sent
			// [MQTT-3.1.3-9].
			sess.willTimer.Stop()
			sess.willTimer = nil
		}
		sess.will = will
		sess.willDelay = willDelay
		if tx.durable() {
			if sess.persistentLocked() {
				tx.batch.PutSession(sess.sessionRecordLocked())
				sess.stored = true
			} else if sess.stored {
				tx.batch.DeleteSession(sess.id)
				sess.stored = false
			}
		}
		if c.version < packet.V5 && clean {
			present = false
		}
		ack.SessionPresent = present
		ack.ReasonCode = packet.Success
		c.connected.Store(true)
		s.online.Add(1)
		s.stats.connectsTotal.Add(1)
		sess.mu.Unlock()

		tx.then(func() {
			sess.mu.Lock()
			defer sess.mu.Unlock()
			if sess.client != c {
				return
			}
			c.send(func(b []byte) []byte { return ack.Append(b, c.version) })
			c.acked = true
			if present {
				sess.resendLocked()
			}
			sess.drainLocked(time.Now().UnixNano())
		})
		return
	}
}

// detach unbinds a closing client from its session. normal is true when
// the client sent DISCONNECT with reason 0 (no will).
func (s *Server) detach(c *client, normal bool) {
	sess := c.sess
	if sess == nil {
		return
	}
	tx := s.newTxn()
	sess.mu.Lock()
	if sess.client != c {
		sess.mu.Unlock()
		return
	}
	sess.client = nil
	sess.online.Store(false)
	s.online.Add(-1)
	will := sess.will
	if normal {
		// DISCONNECT 0x00: the will is discarded [MQTT-3.1.2-10].
		sess.will = nil
		will = nil
	}
	expiry := sess.expiryInterval
	redispatch := s.takeSharedLocked(sess, tx)
	if expiry == 0 {
		// The session ends with the connection, so a will is published now
		// whatever its delay [MQTT-3.1.3-9].
		sess.will = nil
		sess.mu.Unlock()
		s.mu.Lock()
		if s.sessions[sess.id] == sess {
			s.endSessionLocked(sess, tx)
		}
		s.mu.Unlock()
	} else {
		switch {
		case will != nil && sess.willDelay > 0 && sess.willDelay < expiry:
			delay := time.Duration(sess.willDelay) * time.Second
			sess.willAt = time.Now().Add(delay).UnixNano()
			sess.willTimer = time.AfterFunc(delay, func() { s.fireWill(sess) })
			will = nil
		case will != nil && sess.willDelay > 0:
			// Sent when the session ends, whichever is first
			// [MQTT-3.1.3-9]: it stays in the session until expiry.
			will = nil
		default:
			sess.will = nil
		}
		if expiry != 0xFFFFFFFF {
			sess.expiryTimer = time.AfterFunc(time.Duration(expiry)*time.Second, func() { s.expireSession(sess) })
		}
		if sess.persistentLocked() && tx.durable() {
			tx.batch.PutSession(sess.sessionRecordLocked())
			sess.stored = true
		}
		sess.mu.Unlock()
	}
	if will != nil {
		s.publishWill(will, sess.info(), tx)
	}
	for _, d := range redispatch {
		s.dispatchShared(d, sess, tx)
	}
	_ = tx.commit(s)
}

// clientGone forgets a closed client.
func (s *Server) clientGone(c *client) {
	s.mu.Lock()
	delete(s.clients, c)
	s.mu.Unlock()
}

// endSessionLocked removes a session: its subscriptions leave the index,
// its record leaves the store, and a will still pending is published.
// Requires s.mu.
func (s *Server) endSessionLocked(sess *session, tx *txn) {
	delete(s.sessions, sess.id)
	sess.mu.Lock()
	sess.ended = true
	for f := range sess.subs {
		s.index.Unsubscribe(sess, f)
	}
	sess.subs = nil
	if sess.expiryTimer != nil {
		sess.expiryTimer.Stop()
	}
	will := sess.will
	sess.will = nil
	if sess.willTimer != nil {
		sess.willTimer.Stop()
		sess.willTimer = nil
	} else if sess.client != nil || sess.willDelay == 0 {
		will = nil // published (or discarded) when its connection closed
	}
	dropped := len(sess.queue)
	for _, m := range sess.msgs {
		if m.state != outQueued {
			dropped++
		}
	}
	sess.queue = nil
	sess.msgs = nil
	if sess.stored && tx.durable() {
		// Only sessions that were ever stored cost a write: a clean
		// session ends without touching the store.
		tx.batch.DeleteSession(sess.id)
		sess.stored = false
	}
	sess.mu.Unlock()
	if dropped > 0 {
		s.stats.droppedSessionEnd.Add(uint64(dropped))
	}
	if will != nil {
		// Will delay outlasted by the session: published now, outside
		// s.mu (routing takes session locks).
		owner := sess.info()
		go func() {
			tx := s.newTxn()
			s.publishWill(will, owner, tx)
			_ = tx.commit(s)
		}()
	}
}

func (s *Server) expireSession(sess *session) {
	tx := s.newTxn()
	s.mu.Lock()
	if s.sessions[sess.id] != sess {
		s.mu.Unlock()
		return
	}
	sess.mu.Lock()
	online := sess.client != nil
	sess.mu.Unlock()
	if !online {
		s.stats.sessionsExpired.Add(1)
		s.endSessionLocked(sess, tx)
	}
	s.mu.Unlock()
	_ = tx.commit(s)
}

func (s *Server) fireWill(sess *session) {
	tx := s.newTxn()
	sess.mu.Lock()
	will := sess.will
	if sess.willTimer == nil || sess.client != nil {
		sess.mu.Unlock()
		return
	}
	sess.will = nil
	sess.willTimer = nil
	if sess.persistentLocked() && tx.durable() && !sess.ended {
		tx.batch.PutSession(sess.sessionRecordLocked())
	}
	sess.mu.Unlock()
	if will != nil {
		s.publishWill(will, sess.info(), tx)
	}
	_ = tx.commit(s)
}

func (s *Server) publishWill(will *Message, owner ClientInfo, tx *txn) {
	m := *will
	m.Received = time.Now().UnixNano()
	m.stampExpiry()
	if s.auth != nil && !s.auth.CanPublish(owner, m.Topic) {
		// The will's topic was checked at CONNECT; rules may have changed.
		s.stats.droppedNotAuthorized.Add(1)
		return
	}
	s.stats.willsPublished.Add(1)
	var sc routeScratch
	s.publish(&m, &sc, tx)
}

// Publish injects a message from the server itself (API, $SYS, bridges).
// It returns once the message is routed and, with a store, durable.
func (s *Server) Publish(m *Message) error {
	if m.Received == 0 {
		m.Received = time.Now().UnixNano()
	}
	if m.Expiry == 0 {
		m.stampExpiry()
	}
	tx := s.newTxn()
	var sc routeScratch
	s.publish(m, &sc, tx)
	return tx.commit(s)
}

// storeAsync records a change nothing waits for, in the background.
func (s *Server) storeAsync(fn func(store.Batch)) {
	if s.store == nil {
		return
	}
	b := s.store.NewBatch()
	fn(b)
	go func() {
		if err := b.Commit(); err != nil {
			s.stats.storeErrors.Add(1)
			s.log.Error("store commit failed", "err", err)
		}
	}()
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
		s.retained.Set(m.Topic, m)
		nRetained++
		return nil
	})
	if err != nil {
		return err
	}
	type ownedWill struct {
		m     *Message
		owner ClientInfo
	}
	var wills []ownedWill
	err = s.store.LoadSessions(func(ls *store.LoadedSession) error {
		r := &ls.Session
		expiresAt := int64(0)
		if r.ExpiryInterval != 0xFFFFFFFF {
			expiresAt = r.DisconnectedAt + int64(r.ExpiryInterval)*int64(time.Second)
		}
		online := r.DisconnectedAt == 0
		if online {
			// Online when the node stopped: offline since then.
			r.DisconnectedAt = now
			if r.ExpiryInterval != 0xFFFFFFFF {
				expiresAt = now + int64(r.ExpiryInterval)*int64(time.Second)
			}
		}
		if expiresAt != 0 && expiresAt <= now {
			nExpired++
			cleanup.DeleteSession(r.ClientID)
			if r.Will != nil {
				wills = append(wills, ownedWill{messageFromRecord(r.Will), ClientInfo{ClientID: r.ClientID, Username: r.Username}})
			}
			return nil
		}
		sess := newSession(s, r.ClientID)
		sess.stored = true
		sess.expiryInterval = r.ExpiryInterval
		sess.nextID = r.NextPacketID
		user := r.Username
		sess.user.Store(&user)
		for _, sr := range ls.Subscriptions {
			opts := topic.Options{QoS: sr.QoS, NoLocal: sr.NoLocal, RetainAsPublished: sr.RetainAsPublished, RetainHandling: sr.RetainHandling, ID: sr.ID}
			sess.subs[sr.Filter] = subscription{filter: sr.Filter, opts: opts}
			s.index.Subscribe(sess, sr.Filter, opts)
		}
		for _, sm := range ls.Messages {
			mr := sm.Msg
			msg := messageFromRecord(&mr)
			if msg.expired(now) && mr.State == store.StateQueued {
				cleanup.DeleteMessage(r.ClientID, sm.Seq)
				continue
			}
			m := &outMsg{
				d:      delivery{msg: msg, qos: mr.DeliverQoS, retain: mr.DeliverRetain, subIDs: mr.SubIDs, group: mr.Group},
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
				// acknowledged, so the older record is one whose removal
				// was lost in a crash (see txn.deleteAcked): the newer wins.
				cleanup.DeleteMessage(r.ClientID, old.seq)
				if old.state == outQueued {
					for i, q := range sess.queue {
						if q == old {
							sess.queue = append(sess.queue[:i], sess.queue[i+1:]...)
							break
						}
					}
				} else {
					sess.sent--
				}
				nMsgs--
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
			nMsgs++
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
				sess.willTimer = time.AfterFunc(max(time.Duration(r.WillAt-now), 0), func() { s.fireWill(sess) })
			case online && r.WillDelay == 0:
				// The connection ended with the crash: its will is due now.
				sess.will = nil
				wills = append(wills, ownedWill{will, ClientInfo{ClientID: r.ClientID, Username: r.Username}})
				rec := *r
				rec.Will = nil
				cleanup.PutSession(&rec)
			case online && r.WillDelay < r.ExpiryInterval:
				delay := time.Duration(r.WillDelay) * time.Second
				sess.willAt = now + int64(delay)
				sess.willTimer = time.AfterFunc(delay, func() { s.fireWill(sess) })
			default:
				// Published when the session ends (delay >= expiry).
				sess.willDelay = max(r.WillDelay, 1)
			}
		}
		if expiresAt != 0 {
			sess.expiryTimer = time.AfterFunc(time.Duration(expiresAt-now), func() { s.expireSession(sess) })
		}
		s.mu.Lock()
		s.sessions[sess.id] = sess
		s.mu.Unlock()
		nSessions++
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
