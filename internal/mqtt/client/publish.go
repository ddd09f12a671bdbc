package client

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/isobar-mq/isobar/internal/mqtt/packet"
)

// Message is an application message, received (Handler) or to publish.
type Message struct {
	Topic   string
	Payload []byte
	QoS     byte
	Retain  bool
	Dup     bool
	Props   packet.Properties // v5 properties as received/sent (user properties, content type, expiry, ...)

	// Set on received QoS 1/2 messages; guarded by c.mu.
	c     *Client
	id    uint16
	acked bool
	cn    *conn // the connection whose acknowledgement queue holds the message
}

// Ack acknowledges a received QoS 1 or 2 message: its PUBACK (or PUBREC)
// is sent once every message that arrived before it on the connection was
// acknowledged too. It is idempotent, may be called from any goroutine at
// any time, and is a no-op for QoS 0, for messages built by the
// application, and once the connection the message came on is gone (the
// server then sends it again).
func (m *Message) Ack() {
	if m == nil || m.c == nil || m.QoS == 0 {
		return
	}
	c := m.c
	c.mu.Lock()
	if m.acked {
		c.mu.Unlock()
		return
	}
	m.acked = true
	cn := m.cn
	c.mu.Unlock()
	if cn != nil {
		cn.flushAcks()
	}
}

// flushAcks sends the acknowledgements of the acknowledged messages at the
// head of the queue, in arrival order.
func (cn *conn) flushAcks() {
	c := cn.c
	cn.ackMu.Lock()
	defer cn.ackMu.Unlock()
	var b []byte
	c.mu.Lock()
	for len(cn.pending) > 0 && cn.pending[0].acked {
		m := cn.pending[0]
		cn.pending[0] = nil
		cn.pending = cn.pending[1:]
		t := packet.PUBACK
		if m.QoS == 2 {
			t = packet.PUBREC
		}
		b = (&packet.Ack{Type: t, PacketID: m.id}).Append(b, cn.version)
	}
	dead := cn.dead
	c.mu.Unlock()
	if len(b) > 0 && !dead {
		_ = cn.write(b)
	}
}

// maxPending bounds the inbound QoS 1/2 messages awaiting acknowledgement
// on one connection: no more packet identifiers exist.
const maxPending = 65535

// handlePublish hands an inbound PUBLISH to the Handler.
func (c *Client) handlePublish(cn *conn, p *packet.Publish) error {
	if p.Props.Has(packet.PropTopicAlias) {
		// The client's CONNECT carries no Topic Alias Maximum: 0.
		return &protoErr{packet.TopicAliasInvalid, "PUBLISH with a topic alias, but the client allows none"}
	}
	m := &Message{Topic: p.Topic, Payload: p.Payload, QoS: p.QoS, Retain: p.Retain, Dup: p.Dup, Props: p.Props}
	if p.QoS > 0 {
		m.c, m.id = c, p.PacketID
		c.mu.Lock()
		if len(cn.pending) >= maxPending {
			c.mu.Unlock()
			return &protoErr{packet.ReceiveMaximumExceeded, fmt.Sprintf("more than %d unacknowledged QoS 1/2 messages", maxPending)}
		}
		if cn.version == packet.V5 && len(cn.pending) >= int(c.cfg.ReceiveMaximum) && !cn.overLimit {
			// The spec has the client disconnect (0x93) here, but
			// servers in the field (mosquitto 2.0.11, when the
			// acknowledgements are slow) send more than the Receive
			// Maximum; a bridge that disconnected would only get the
			// same messages again, in a loop. Tolerated, up to the
			// packet identifier space, and logged once per connection.
			cn.overLimit = true
			c.log.Warn("the server sends more unacknowledged QoS 1/2 messages than the Receive Maximum; tolerated",
				"receive_maximum", c.cfg.ReceiveMaximum)
		}
		if p.QoS == 2 {
			if old := c.qos2In[p.PacketID]; old != nil {
				// A copy the Handler already has: answer it when (or as
				// soon as) that one is acknowledged, and do not deliver
				// it twice.
				if old.cn == cn && !old.acked {
					c.mu.Unlock()
					return nil
				}
				old.cn = cn
				cn.pending = append(cn.pending, old)
				acked := old.acked
				c.mu.Unlock()
				if acked {
					cn.flushAcks()
				}
				return nil
			}
			c.qos2In[p.PacketID] = m
		}
		m.cn = cn
		cn.pending = append(cn.pending, m)
		c.stats.In++
		c.mu.Unlock()
	} else {
		c.mu.Lock()
		c.stats.In++
		c.mu.Unlock()
	}
	if h := c.cfg.Handler; h != nil {
		h(m)
	} else {
		m.Ack()
	}
	return nil
}

// outMsg is an outbound QoS 1/2 message in flight.
type outMsg struct {
	id       uint16
	pub      packet.Publish
	everSent bool       // DUP on later sends
	sent     bool       // sent on the current connection
	released bool       // QoS 2 past PUBREC: PUBREL is what is (re)sent
	done     chan error // buffered: the outcome, for a Publish still waiting
}

// appendTo encodes what the message needs next: PUBLISH, or PUBREL past
// PUBREC.
func (om *outMsg) appendTo(dst []byte, version byte, resend bool) []byte {
	if om.released {
		return (&packet.Ack{Type: packet.PUBREL, PacketID: om.id}).Append(dst, version)
	}
	om.pub.Dup = resend && om.everSent
	om.everSent = true
	return om.pub.Append(dst, version)
}

// allocIDLocked returns a free packet identifier, 0 if none is.
func (c *Client) allocIDLocked() uint16 {
	for range 65535 {
		c.nextID++
		if c.nextID == 0 {
			c.nextID = 1
		}
		id := c.nextID
		if _, used := c.inflight[id]; used {
			continue
		}
		if _, used := c.subIDs[id]; used {
			continue
		}
		return id
	}
	return 0
}

// finishLocked ends an outbound message's flight.
func (c *Client) finishLocked(om *outMsg, err error) {
	delete(c.inflight, om.id)
	if i := slices.Index(c.order, om); i >= 0 {
		c.order = slices.Delete(c.order, i, i+1)
	}
	if err == nil {
		c.stats.Out++
	}
	om.done <- err
	c.wakeLocked()
}

// sendNextLocked encodes the oldest message in flight not yet sent on cn
// (there is one only when the server's Receive Maximum was below the
// number in flight at reconnection).
func (c *Client) sendNextLocked(cn *conn) []byte {
	if c.cur != cn {
		return nil
	}
	sent := 0
	for _, om := range c.order {
		if om.sent {
			sent++
		}
	}
	for _, om := range c.order {
		if sent >= int(c.srv.receiveMax) {
			break
		}
		if !om.sent {
			om.sent = true
			return om.appendTo(nil, cn.version, true)
		}
	}
	return nil
}

// handleAck handles PUBACK, PUBREC, PUBCOMP (outbound flows) and PUBREL
// (inbound QoS 2).
func (c *Client) handleAck(cn *conn, p *packet.Ack) error {
	var out []byte
	c.mu.Lock()
	switch p.Type {
	case packet.PUBREL:
		rc := packet.Success
		if _, ok := c.qos2In[p.PacketID]; ok {
			delete(c.qos2In, p.PacketID)
		} else {
			rc = packet.PacketIdentifierNotFound
		}
		out = (&packet.Ack{Type: packet.PUBCOMP, PacketID: p.PacketID, ReasonCode: rc}).Append(nil, cn.version)
	case packet.PUBACK:
		om := c.inflight[p.PacketID]
		if om == nil || om.pub.QoS != 1 {
			break // a late acknowledgement, e.g. of a message resent twice
		}
		c.finishLocked(om, ackErr(p))
		out = c.sendNextLocked(cn)
	case packet.PUBREC:
		om := c.inflight[p.PacketID]
		if om == nil || om.pub.QoS != 2 {
			out = (&packet.Ack{Type: packet.PUBREL, PacketID: p.PacketID, ReasonCode: packet.PacketIdentifierNotFound}).Append(nil, cn.version)
			break
		}
		if err := ackErr(p); err != nil {
			c.finishLocked(om, err)
			out = c.sendNextLocked(cn)
			break
		}
		om.released = true
		out = om.appendTo(nil, cn.version, false)
	case packet.PUBCOMP:
		om := c.inflight[p.PacketID]
		if om == nil || !om.released {
			break
		}
		// PacketIdentifierNotFound: the server no longer knew the
		// message (a session lost between PUBREC and PUBREL), which it
		// had received: done.
		c.finishLocked(om, nil)
		out = c.sendNextLocked(cn)
	}
	c.mu.Unlock()
	if len(out) > 0 {
		return cn.write(out)
	}
	return nil
}

func ackErr(p *packet.Ack) error {
	if p.ReasonCode < 0x80 {
		return nil
	}
	return &PublishError{Code: p.ReasonCode, Reason: p.Props.ReasonString}
}

// publishProps are the properties a client may send in PUBLISH (Topic
// Alias aside, which this client does not use).
const publishProps = 1<<packet.PropPayloadFormatIndicator | 1<<packet.PropMessageExpiryInterval |
	1<<packet.PropContentType | 1<<packet.PropResponseTopic | 1<<packet.PropCorrelationData

// outProps copies the publishable properties of p, so that a message kept
// in flight does not share memory with the caller's.
func outProps(p *packet.Properties) packet.Properties {
	q := packet.Properties{
		Present:                p.Present & publishProps,
		PayloadFormatIndicator: p.PayloadFormatIndicator,
		MessageExpiryInterval:  p.MessageExpiryInterval,
		ContentType:            p.ContentType,
		ResponseTopic:          p.ResponseTopic,
		User:                   slices.Clone(p.User),
	}
	if p.Has(packet.PropCorrelationData) {
		q.CorrelationData = bytes.Clone(p.CorrelationData)
	}
	return q
}

// Publish sends m. QoS 0 returns once written; QoS 1 and 2 once the server
// acknowledged (PUBACK, PUBCOMP), blocking while the server's Receive
// Maximum is reached. Errors: ErrNotConnected when down (nothing was sent;
// the caller buffers), ErrClosed, ErrPacketTooLarge, *PublishError (a v5
// refusal), ctx.Err(). When ctx ends after a QoS 1/2 message was sent, it
// stays in flight and may still be delivered. The client copies m: the
// caller may reuse it once Publish returns.
func (c *Client) Publish(ctx context.Context, m *Message) error {
	if m.QoS > 2 {
		return fmt.Errorf("mqtt client: QoS %d", m.QoS)
	}
	if m.Topic == "" || strings.ContainsAny(m.Topic, "+#") || !packet.ValidString(m.Topic) || len(m.Topic) > 65535 {
		return fmt.Errorf("mqtt client: %q is not a valid topic name", m.Topic)
	}
	pub := packet.Publish{QoS: m.QoS, Retain: m.Retain, Topic: m.Topic, Payload: m.Payload}
	c.mu.Lock()
	var cn *conn
	var id uint16
	for {
		if c.closed {
			c.mu.Unlock()
			return ErrClosed
		}
		cn = c.cur
		if cn == nil {
			c.mu.Unlock()
			return ErrNotConnected
		}
		if cn.version == packet.V5 {
			pub.Props = outProps(&m.Props)
		}
		if err := c.checkLimitsLocked(&pub, cn.version); err != nil {
			c.mu.Unlock()
			return err
		}
		if pub.QoS == 0 {
			c.mu.Unlock()
			if err := cn.write(pub.Append(nil, cn.version)); err != nil {
				return fmt.Errorf("%w: %v", ErrNotConnected, err)
			}
			c.mu.Lock()
			c.stats.Out++
			c.mu.Unlock()
			return nil
		}
		if len(c.order) < int(c.srv.receiveMax) {
			if id = c.allocIDLocked(); id != 0 {
				break
			}
		}
		room := c.room
		c.mu.Unlock()
		select {
		case <-room:
		case <-ctx.Done():
			return ctx.Err()
		}
		c.mu.Lock()
	}
	pub.PacketID = id
	pub.Payload = bytes.Clone(m.Payload)
	om := &outMsg{id: id, pub: pub, sent: true, done: make(chan error, 1)}
	c.inflight[id] = om
	c.order = append(c.order, om)
	b := om.appendTo(nil, cn.version, false)
	c.mu.Unlock()
	// A failed write leaves the message in flight: it is sent again on
	// the next connection.
	_ = cn.write(b)
	select {
	case err := <-om.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-c.ctx.Done():
		return ErrClosed
	}
}

// checkLimitsLocked checks pub against what the server announced.
func (c *Client) checkLimitsLocked(pub *packet.Publish, version byte) error {
	if pub.QoS > c.srv.maxQoS {
		return fmt.Errorf("mqtt client: QoS %d is above the server's Maximum QoS %d", pub.QoS, c.srv.maxQoS)
	}
	if pub.Retain && !c.srv.retain {
		return fmt.Errorf("mqtt client: the server does not support retained messages")
	}
	n := pub.Len(version)
	if n > packet.MaxRemainingLength || (c.srv.maxPacket > 0 && n > c.srv.maxPacket) {
		return ErrPacketTooLarge
	}
	return nil
}
