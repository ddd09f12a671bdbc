package broker

import (
	"slices"
	"strings"
	"time"

	"github.com/isobar-mq/isobar/internal/mqtt/packet"
	"github.com/isobar-mq/isobar/internal/topic"
)

func (c *client) info() ClientInfo {
	return ClientInfo{ClientID: c.id, Username: c.username, Listener: c.listener, Role: c.role}
}

func (c *client) handlePublish(h packet.FixedHeader, body []byte) error {
	// The message outlives the read buffer: give it its own copy (the
	// one allocation per inbound PUBLISH; topic, properties and payload
	// all alias it).
	body = append(make([]byte, 0, len(body)), body...)
	if c.pub == nil {
		c.pub = new(packet.Publish)
	}
	p := c.pub
	if err := packet.DecodePublish(p, h.Flags, body, c.version); err != nil {
		return err
	}
	o := &c.srv.opts
	v5 := c.version >= packet.V5
	c.srv.stats.receivedByQoS[p.QoS].Add(1)

	if v5 && len(p.Props.SubscriptionIdentifiers) > 1 {
		// A client may not send Subscription Identifiers [MQTT-3.3.4-6];
		// several of them is a protocol error.
		return protoErr(packet.ProtocolError, "subscription identifiers in PUBLISH from a client")
	}
	if int(p.QoS) > o.MaxQoS {
		// [MQTT-3.2.2-11]: QoS above Maximum QoS is a protocol violation.
		return protoErr(packet.QoSNotSupported, "QoS not supported")
	}
	if p.Retain && o.DisableRetain {
		return protoErr(packet.RetainNotSupported, "retain not supported") // [MQTT-3.2.2-14]
	}

	// Topic aliases [MQTT-3.3.2-7..-12].
	name := p.Topic
	if v5 && p.Props.Has(packet.PropTopicAlias) {
		a := p.Props.TopicAlias
		if a == 0 || int(a) > o.TopicAliasMaximum {
			return protoErr(packet.TopicAliasInvalid, "topic alias out of range")
		}
		if name != "" {
			if c.aliasIn == nil {
				c.aliasIn = make(map[uint16]string)
			}
			c.aliasIn[a] = strings.Clone(name)
		} else {
			known, ok := c.aliasIn[a]
			if !ok {
				return protoErr(packet.ProtocolError, "unknown topic alias")
			}
			name = known
		}
	}
	if err := topic.ValidateName(name, o.MaxTopicLen, o.MaxTopicLevels); err != nil {
		if v5 {
			return protoErr(packet.TopicNameInvalid, "invalid topic name: "+err.Error())
		}
		return protoErr(packet.ProtocolError, "invalid topic name: "+err.Error())
	}

	sess := c.sess
	if p.QoS == 2 {
		sess.mu.Lock()
		_, dup := sess.inboundQoS2[p.PacketID]
		if !dup && len(sess.inboundQoS2) >= int(o.ReceiveMaximum) && v5 {
			sess.mu.Unlock()
			return protoErr(packet.ReceiveMaximumExceeded, "receive maximum exceeded") // [MQTT-3.3.4-9]
		}
		sess.mu.Unlock()
		if dup {
			// Resent QoS 2 PUBLISH before PUBREL: not routed again
			// [MQTT-4.3.3-10 / -11].
			id := p.PacketID
			c.tx.then(func() { c.sendAck(packet.PUBREC, id, packet.Success) })
			return nil
		}
	}

	if c.srv.auth != nil && !c.srv.auth.CanPublish(c.info(), name) {
		c.srv.stats.droppedNotAuthorized.Add(1)
		id := p.PacketID
		switch p.QoS {
		case 1:
			c.tx.then(func() { c.sendAck(packet.PUBACK, id, packet.NotAuthorized) })
		case 2:
			c.tx.then(func() { c.sendAck(packet.PUBREC, id, packet.NotAuthorized) })
		}
		return nil
	}

	if !c.allowPublish(len(body)) {
		c.srv.stats.droppedRateLimited.Add(1)
		id := p.PacketID
		code := packet.Success
		if v5 {
			code = packet.QuotaExceeded
		}
		switch p.QoS {
		case 1:
			c.tx.then(func() { c.sendAck(packet.PUBACK, id, code) })
		case 2:
			c.tx.then(func() { c.sendAck(packet.PUBREC, id, code) })
		}
		return nil
	}

	m := newMessage(p, name, c.id, time.Now())
	if len(m.Props.User) > 0 {
		m.Props.User = slices.Clone(m.Props.User) // p is reused
	}
	if m.Props.Has(packet.PropMessageExpiryInterval) && m.Props.MessageExpiryInterval == 0 {
		m.Props.Clear(packet.PropMessageExpiryInterval)
		m.Expiry = 0
	}
	n := c.srv.publish(m, &c.scratch, c.tx)

	reason := packet.Success
	if n == 0 && v5 {
		reason = packet.NoMatchingSubscribers
	}
	// The acknowledgement goes out once the routed message is durable.
	id := p.PacketID
	switch p.QoS {
	case 1:
		c.tx.then(func() { c.sendAck(packet.PUBACK, id, reason) })
	case 2:
		// PUBREC carries no "no matching subscribers": the message is only
		// released by PUBREL (as Mosquitto does).
		sess.mu.Lock()
		sess.inboundQoS2[id] = struct{}{}
		if sess.persistentLocked() && c.tx.durable() {
			c.tx.batch.PutInbound(sess.id, id)
		}
		sess.mu.Unlock()
		c.tx.then(func() { c.sendAck(packet.PUBREC, id, packet.Success) })
	}
	return nil
}

// publish stores a retained message if needed and routes it. It returns
// the number of sessions it was delivered to.
func (s *Server) publish(m *Message, sc *routeScratch, tx *txn) int {
	if m.Retain && !s.opts.DisableRetain {
		if len(m.Payload) == 0 {
			s.retained.Delete(m.Topic) // [MQTT-3.3.1-6]
			if tx.durable() {
				tx.batch.DeleteRetained(m.Topic)
			}
		} else {
			s.retained.Set(m.Topic, m)
			// $SYS values are recomputed at every start: not stored.
			if tx.durable() && !strings.HasPrefix(m.Topic, "$SYS/") {
				r := messageRecord(m)
				r.Retain = true
				tx.batch.PutRetained(r)
			}
		}
	}
	return s.route(m, sc, tx)
}

type target struct {
	sess *session
	d    delivery
}

// route delivers m to every matching session: one delivery per session for
// its non-shared subscriptions (highest granted QoS, every subscription
// identifier), plus one per matching shared-subscription group.
func (s *Server) route(m *Message, sc *routeScratch, tx *txn) int {
	s.index.Match(m.Topic, &sc.res)
	if len(sc.res.Subs) == 0 && len(sc.res.Shared) == 0 {
		return 0
	}
	if sc.idx == nil {
		sc.idx = make(map[*session]int)
	}
	clear(sc.idx)
	targets := sc.targets[:0]
	for i := range sc.res.Subs {
		e := &sc.res.Subs[i]
		sess := e.Key
		if e.Opts.NoLocal && m.From != "" && sess.id == m.From {
			continue // [MQTT-3.8.3-3]
		}
		qos := min(m.QoS, e.Opts.QoS)
		retain := m.Retain && e.Opts.RetainAsPublished
		if j, ok := sc.idx[sess]; ok {
			t := &targets[j]
			t.d.qos = max(t.d.qos, qos)
			t.d.retain = t.d.retain || retain
			if e.Opts.ID != 0 && !slices.Contains(t.d.subIDs, e.Opts.ID) {
				t.d.subIDs = append(t.d.subIDs, e.Opts.ID)
			}
			continue
		}
		if s.auth != nil && !s.auth.CanReceive(sess.info(), m.Topic) {
			continue
		}
		t := target{sess: sess, d: delivery{msg: m, qos: qos, retain: retain}}
		if e.Opts.ID != 0 {
			t.d.subIDs = []uint32{e.Opts.ID}
		}
		sc.idx[sess] = len(targets)
		targets = append(targets, t)
	}
	for i := range sc.res.Shared {
		g := &sc.res.Shared[i]
		e := pickShared(g.Members, g.Next, nil)
		if e == nil {
			continue
		}
		d := delivery{msg: m, qos: min(m.QoS, e.Opts.QoS), retain: m.Retain && e.Opts.RetainAsPublished, group: g.Group + "/" + g.Filter}
		if e.Opts.ID != 0 {
			d.subIDs = []uint32{e.Opts.ID}
		}
		targets = append(targets, target{sess: e.Key, d: d})
	}
	now := time.Now().UnixNano() // once per message, not per delivery
	for i := range targets {
		targets[i].sess.deliver(targets[i].d, tx, now)
	}
	n := len(targets)
	clear(targets)
	sc.targets = targets[:0]
	return n
}

// pickShared chooses the member of a shared group that gets a message:
// round robin from next, preferring connected sessions, never exclude.
func pickShared(members []topic.Entry[*session], next uint64, exclude *session) *topic.Entry[*session] {
	n := len(members)
	if n == 0 {
		return nil
	}
	var fallback *topic.Entry[*session]
	for i := 0; i < n; i++ {
		e := &members[(int(next%uint64(n))+i)%n]
		if e.Key == exclude {
			continue
		}
		if e.Key.online.Load() {
			return e
		}
		if fallback == nil {
			fallback = e
		}
	}
	return fallback
}

// takeSharedLocked removes from a session whose client went away the
// messages it got through shared subscriptions and has not started
// delivering under QoS 2, so another member can have them [MQTT-4.8.2-3].
// QoS 2 messages already sent stay: they must complete with this client
// [MQTT-4.8.2-4].
func (s *Server) takeSharedLocked(sess *session, tx *txn) []delivery {
	var out []delivery
	drop := func(m *outMsg) {
		out = append(out, m.d)
		if m.id != 0 {
			delete(sess.msgs, m.id)
			if sess.persistentLocked() && tx.durable() {
				tx.batch.DeleteMessage(sess.id, m.seq)
			}
		}
	}
	keep := sess.queue[:0]
	for _, m := range sess.queue {
		if m.d.group != "" && !m.pending {
			drop(m)
		} else {
			keep = append(keep, m)
		}
	}
	clear(sess.queue[len(keep):])
	sess.queue = keep
	for _, m := range sess.msgs {
		if m.d.group != "" && m.d.qos == 1 && m.state == outPublished {
			drop(m)
			sess.sent--
		}
	}
	return out
}

// dispatchShared re-delivers a shared-subscription message to another
// member of its group; if none is left, back to the original session.
func (s *Server) dispatchShared(d delivery, from *session, tx *txn) {
	var res topic.Result[*session]
	s.index.Match(d.msg.Topic, &res)
	for i := range res.Shared {
		g := &res.Shared[i]
		if g.Group+"/"+g.Filter != d.group {
			continue
		}
		e := pickShared(g.Members, g.Next, from)
		if e != nil && e.Key.online.Load() {
			nd := delivery{msg: d.msg, qos: min(d.msg.QoS, e.Opts.QoS), retain: d.retain, group: d.group}
			if e.Opts.ID != 0 {
				nd.subIDs = []uint32{e.Opts.ID}
			}
			s.stats.sharedRedispatched.Add(1)
			e.Key.deliver(nd, tx, time.Now().UnixNano())
			return
		}
	}
	from.mu.Lock()
	if !from.ended && from.client == nil && from.expiryInterval != 0 {
		from.deliverLocked(d, tx, time.Now().UnixNano())
	}
	from.mu.Unlock()
}

func (c *client) handleAck(h packet.FixedHeader, body []byte) error {
	if c.ack == nil {
		c.ack = new(packet.Ack)
	}
	a := c.ack
	if err := packet.DecodeAck(a, h.Type, h.Flags, body, c.version); err != nil {
		return err
	}
	sess := c.sess
	id := a.PacketID
	switch h.Type {
	case packet.PUBACK, packet.PUBCOMP:
		if !sess.complete(id, h.Type, c.tx) {
			return protoErr(packet.ProtocolError, h.Type.String()+" does not match the flow of packet "+itoa(int(a.PacketID)))
		}
	case packet.PUBREC:
		known, ok := sess.received(id, a.ReasonCode, c.tx)
		switch {
		case !ok:
			return protoErr(packet.ProtocolError, "PUBREC for a QoS 1 message")
		case !known && a.ReasonCode >= 0x80:
			// A refused, unknown message: nothing to release.
		case a.ReasonCode < 0x80:
			// Known or not, answer with PUBREL so the client can finish
			// its flow (an unknown identifier was most likely completed
			// before a reconnect).
			c.tx.then(func() { c.sendAck(packet.PUBREL, id, packet.Success) })
		}
	case packet.PUBREL:
		sess.mu.Lock()
		if _, ok := sess.inboundQoS2[id]; ok {
			delete(sess.inboundQoS2, id)
			if sess.persistentLocked() && c.tx.durable() {
				c.tx.batch.DeleteInbound(sess.id, id)
			}
		}
		sess.mu.Unlock()
		// An unknown identifier is answered with PUBCOMP too: after a
		// reconnect the client resends PUBREL for a message whose PUBCOMP
		// it missed [MQTT-4.3.3-13]. PUBCOMP waits for the release to be
		// durable, or a crash could make a new message with this
		// identifier look like a duplicate.
		c.tx.then(func() { c.sendAck(packet.PUBCOMP, id, packet.Success) })
	}
	return nil
}

func itoa(n int) string {
	var b [20]byte
	i := len(b)
	if n == 0 {
		return "0"
	}
	for n > 0 {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
	}
	return string(b[i:])
}
