package broker

import (
	"time"

	"github.com/isobar-mq/isobar/internal/mqtt/packet"
)

// Session lifecycle: attach on CONNECT, detach when the connection ends,
// expiry, will messages, and restoring sessions from the store.

// attach binds a connected client to its session (new, resumed or taken
// over). CONNACK, and then anything the session has pending, are sent
// through tx once the session's new state is durable.
//
// A session belongs to the identity that created it (the verified user
// name; anonymous clients, including those whose claimed user name was not
// verified, share the anonymous identity): a client authenticated as
// someone else may neither take it over nor resume or discard it, unless
// Options.AllowForeignTakeover is set (or there is no Auth at all). attach
// then returns false and changes nothing.
func (s *Server) attach(c *client, clean bool, expiry uint32, will *Message, willDelay uint32, ack *packet.Connack, tx *Txn) bool {
	tookOver := false
	for {
		s.mu.Lock()
		old := s.sessions[c.id]
		var oldClient *client
		if old != nil {
			if s.auth != nil && !s.opts.AllowForeignTakeover && owner(old.username(), uint8(old.role.Load())) != owner(c.username, c.role) {
				s.mu.Unlock()
				s.stats.takeoversRefused.Add(1)
				s.log.Warn("client identifier in use by another user: refused", "client", c.id, "user", c.username, "remote", c.remote)
				return false
			}
			old.mu.Lock()
			oldClient = old.client
			old.mu.Unlock()
		}
		if oldClient != nil {
			tookOver = true
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
		ended := false
		if old != nil && !clean {
			sess = old
			present = true
		} else {
			if old != nil {
				s.endSessionLocked(old, tx)
				ended = true
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
		sess.leftAt = 0
		sess.online.Store(true)
		sess.user.Store(&c.username)
		sess.role.Store(uint32(c.role))
		sess.claimStamp, sess.claimNode = c.claimStamp, s.opts.NodeName
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
		if tx.Durable() {
			if sess.persistentLocked() {
				tx.batch.PutSession(sess.sessionRecordLocked())
				sess.stored = true
			} else if sess.stored {
				tx.batch.DeleteSession(sess.id)
				sess.stored = false
			}
		}
		if present {
			// Rules or the role may have changed since the session was
			// created: inherited subscriptions and held messages pass the
			// current ACL.
			sess.recheckLocked(tx)
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

		if hs := s.hooks.Load(); hs != nil && len(hs.session) > 0 {
			if tookOver {
				s.sessionEvent(SessionTakenOver, c.id, c.username)
			}
			if ended {
				s.sessionEvent(SessionEnded, c.id, c.username)
			}
			if sess == old {
				s.sessionEvent(SessionResumed, c.id, c.username)
			} else {
				s.sessionEvent(SessionCreated, c.id, c.username)
			}
		}

		tx.thenOr(func() {
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
		}, func() { c.commitFailed = true })
		return true
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
	sess.leftAt = time.Now().UnixNano()
	sess.online.Store(false)
	s.online.Add(-1)
	will := sess.will
	if normal {
		// DISCONNECT 0x00: the will is discarded [MQTT-3.1.2-10].
		sess.will = nil
		will = nil
	}
	expiry := sess.expiryInterval
	redispatch := sess.takeSharedLocked(tx)
	if expiry == 0 {
		// The session ends with the connection, so a will is published now
		// whatever its delay [MQTT-3.1.3-9].
		sess.will = nil
		sess.mu.Unlock()
		s.mu.Lock()
		ended := s.sessions[sess.id] == sess
		if ended {
			s.endSessionLocked(sess, tx)
		}
		s.mu.Unlock()
		if ended {
			s.sessionEvent(SessionEnded, sess.id, sess.username())
		}
	} else {
		switch {
		case will != nil && sess.willDelay > 0 && sess.willDelay < expiry:
			delay := time.Duration(sess.willDelay) * time.Second
			sess.willAt = time.Now().Add(delay).UnixNano()
			sess.willTimer = time.AfterFunc(delay, func() { s.safely("will", func() { s.fireWill(sess) }) })
			will = nil
		case will != nil && sess.willDelay > 0:
			// Sent when the session ends, whichever is first
			// [MQTT-3.1.3-9]: it stays in the session until expiry.
			will = nil
		default:
			sess.will = nil
		}
		if expiry != 0xFFFFFFFF {
			sess.expiryTimer = time.AfterFunc(time.Duration(expiry)*time.Second, func() { s.safely("session expiry", func() { s.expireSession(sess) }) })
		}
		if sess.persistentLocked() && tx.Durable() {
			tx.batch.PutSession(sess.sessionRecordLocked())
			sess.stored = true
		}
		sess.mu.Unlock()
	}
	if will != nil {
		s.publishWill(will, sess.info(), tx)
	}
	for _, d := range redispatch {
		s.dispatchShared(d, sess, tx, sess.redeliver)
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
func (s *Server) endSessionLocked(sess *session, tx *Txn) {
	delete(s.sessions, sess.id)
	sess.mu.Lock()
	sess.ended = true
	for f := range sess.subs {
		s.indexUnsubscribe(sess, f)
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
	sess.releaseAllLocked()
	sess.queue = nil
	sess.msgs = nil
	if sess.stored && tx.Durable() {
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
	if !online {
		s.sessionEvent(SessionExpired, sess.id, sess.username())
		s.sessionEvent(SessionEnded, sess.id, sess.username())
	}
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
	if sess.persistentLocked() && tx.Durable() && !sess.ended {
		tx.batch.PutSession(sess.sessionRecordLocked())
	}
	sess.mu.Unlock()
	if will != nil {
		s.publishWill(will, sess.info(), tx)
	}
	_ = tx.commit(s)
}

func (s *Server) publishWill(will *Message, owner ClientInfo, tx *Txn) {
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

// recheckLocked applies the current authorization to a resumed session:
// subscriptions the owner may no longer make are removed, and held
// messages it may no longer receive are dropped (counted). Messages whose
// PUBREL was already sent stay: their payload is not sent again.
func (sess *session) recheckLocked(tx *Txn) {
	a := sess.srv.auth
	if a == nil {
		return
	}
	info := sess.info()
	for f := range sess.subs {
		if !a.CanSubscribe(info, f) {
			delete(sess.subs, f)
			sess.srv.indexUnsubscribe(sess, f)
			if sess.persistentLocked() && tx.Durable() {
				tx.batch.DeleteSubscription(sess.id, f)
			}
			sess.srv.stats.subscriptionsRevoked.Add(1)
		}
	}
	keep := sess.queue[:0]
	for _, m := range sess.queue {
		if a.CanReceive(info, m.d.Msg.Topic) {
			keep = append(keep, m)
			continue
		}
		sess.dropLocked(m, tx)
	}
	clear(sess.queue[len(keep):])
	sess.queue = keep
	for id, m := range sess.msgs {
		if m.state == outPublished && !a.CanReceive(info, m.d.Msg.Topic) {
			delete(sess.msgs, id)
			sess.sent--
			sess.releaseLocked(m)
			if sess.persistentLocked() && tx.Durable() {
				tx.batch.DeleteMessage(sess.id, m.seq)
			}
			sess.srv.stats.droppedNotAuthorized.Add(1)
		}
	}
}

// dropLocked removes a queued message that is not delivered because its
// receiver may not have it.
func (sess *session) dropLocked(m *outMsg, tx *Txn) {
	sess.releaseLocked(m)
	sess.srv.stats.droppedNotAuthorized.Add(1)
	if m.id != 0 {
		delete(sess.msgs, m.id)
		if sess.persistentLocked() && tx.Durable() {
			tx.batch.DeleteMessage(sess.id, m.seq)
		}
	}
}

// redeliver takes back a shared-subscription message no other member of
// its group could have, while the session lives on: offline, or online
// again if its client reconnected while the message was being
// re-dispatched (detach releases the session before that).
func (sess *session) redeliver(d Delivery, tx *Txn) {
	sess.mu.Lock()
	defer sess.mu.Unlock()
	if !sess.ended && (sess.client != nil || sess.expiryInterval != 0) {
		sess.deliverLocked(d, tx, time.Now().UnixNano())
		return
	}
	sess.srv.stats.droppedSessionEnd.Add(1)
}
