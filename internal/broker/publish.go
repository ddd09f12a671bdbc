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
			c.ackAfterCommit(packet.PUBREC, id, packet.Success)
			return nil
		}
	}

	// Topics beginning with '$' belong to the server ($SYS, and those of
	// later features): never writable by clients, whatever the ACL.
	if len(name) > 0 && name[0] == '$' || (c.srv.auth != nil && !c.srv.auth.CanPublish(c.info(), name)) {
		c.srv.stats.droppedNotAuthorized.Add(1)
		c.refusePublish(p.QoS, p.PacketID, packet.NotAuthorized)
		return nil
	}

	if !c.allowPublish(len(body)) {
		c.srv.stats.droppedRateLimited.Add(1)
		code := packet.Success
		if v5 {
			code = packet.QuotaExceeded
		}
		c.refusePublish(p.QoS, p.PacketID, code)
		return nil
	}

	if p.QoS > 0 && c.srv.durableRefused() {
		// The store cannot write: what needs durability is refused.
		c.srv.stats.droppedStoreDegraded.Add(1)
		if !v5 {
			// 3.x has no way to say so: closed without acknowledging.
			return protoErr(packet.QuotaExceeded, "store not writable")
		}
		c.refusePublish(p.QoS, p.PacketID, packet.QuotaExceeded)
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
	m.Origin = Origin{Kind: OriginClient, Name: c.listener}
	m.size = uint32(h.Remaining) + 5

	routed, code := c.srv.runPublishHooks(c.info(), m)
	if code >= 0x80 {
		if !v5 {
			code = packet.Success
		}
		c.refusePublish(p.QoS, p.PacketID, code)
		return nil
	}
	n := 0
	if routed != nil {
		n = c.srv.publish(routed, &c.scratch, c.tx)
	}

	reason := packet.Success
	if n == 0 && v5 && routed != nil {
		reason = packet.NoMatchingSubscribers
	}
	// The acknowledgement goes out once the routed message is durable.
	id := p.PacketID
	switch p.QoS {
	case 1:
		c.ackAfterCommit(packet.PUBACK, id, reason)
	case 2:
		// PUBREC carries no "no matching subscribers": the message is only
		// released by PUBREL (as Mosquitto does).
		sess.mu.Lock()
		sess.inboundQoS2[id] = struct{}{}
		if sess.persistentLocked() && c.tx.Durable() {
			c.tx.batch.PutInbound(sess.id, id)
		}
		sess.mu.Unlock()
		c.ackAfterCommit(packet.PUBREC, id, packet.Success)
	}
	return nil
}

// refusePublish answers a PUBLISH that is not routed: PUBACK or PUBREC
// with code for QoS 1/2 (after anything pending is durable, to keep the
// order of acknowledgements), nothing for QoS 0.
func (c *client) refusePublish(qos byte, id uint16, code byte) {
	switch qos {
	case 1:
		c.ackAfterCommit(packet.PUBACK, id, code)
	case 2:
		c.ackAfterCommit(packet.PUBREC, id, code)
	}
}

// ackAfterCommit sends an acknowledgement once the read loop's transaction
// is committed. If the commit fails, a v5 client gets PUBACK/PUBREC 0x97
// (the message was not accepted: it may resend it once the store
// recovers); anything else, and any 3.x client, is disconnected without the
// acknowledgement.
func (c *client) ackAfterCommit(t packet.Type, id uint16, code byte) {
	c.tx.thenOr(func() { c.sendAck(t, id, code) }, func() {
		if c.version >= packet.V5 && (t == packet.PUBACK || t == packet.PUBREC) {
			if t == packet.PUBREC {
				// The flow ends with the refusal: the identifier is free.
				sess := c.sess
				sess.mu.Lock()
				delete(sess.inboundQoS2, id)
				if sess.persistentLocked() && c.tx.Durable() {
					// The store commit may have succeeded (a hold
					// failed): a stale record would make the client's
					// next message with this identifier look like a
					// duplicate after a restart. Committed by the next
					// round of this commit.
					c.tx.batch.DeleteInbound(sess.id, id)
				}
				sess.mu.Unlock()
			}
			c.sendAck(t, id, packet.QuotaExceeded)
			return
		}
		c.commitFailed = true
	})
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
			c.ackAfterCommit(packet.PUBREL, id, packet.Success)
		}
	case packet.PUBREL:
		sess.mu.Lock()
		if _, ok := sess.inboundQoS2[id]; ok {
			delete(sess.inboundQoS2, id)
			if sess.persistentLocked() && c.tx.Durable() {
				c.tx.batch.DeleteInbound(sess.id, id)
			}
		}
		sess.mu.Unlock()
		// An unknown identifier is answered with PUBCOMP too: after a
		// reconnect the client resends PUBREL for a message whose PUBCOMP
		// it missed [MQTT-4.3.3-13]. PUBCOMP waits for the release to be
		// durable, or a crash could make a new message with this
		// identifier look like a duplicate.
		c.ackAfterCommit(packet.PUBCOMP, id, packet.Success)
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
