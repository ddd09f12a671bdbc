package broker

import (
	"time"

	"github.com/isobar-mq/isobar/internal/mqtt/packet"
)

// Message is an application message as routed inside the server. It is
// immutable once routed: many sessions share one *Message.
type Message struct {
	Topic   string
	Payload []byte
	QoS     byte
	Retain  bool

	// Props holds the message properties that travel with it (payload
	// format, content type, response topic, correlation data, user
	// properties, message expiry). Topic alias and subscription
	// identifiers are per-delivery and never stored here.
	Props packet.Properties

	// Received is when the server received the message (unix nanoseconds);
	// Expiry is when it expires (unix nanoseconds, 0 = never).
	Received int64
	Expiry   int64

	// From is the client identifier of the publisher ("" when the server
	// itself published), used for No Local.
	From string
}

// messagePropMask selects the properties a Message keeps.
const messagePropMask = 1<<packet.PropPayloadFormatIndicator | 1<<packet.PropMessageExpiryInterval |
	1<<packet.PropContentType | 1<<packet.PropResponseTopic | 1<<packet.PropCorrelationData |
	1<<packet.PropUserProperty

// newMessage builds a Message from a decoded PUBLISH (its buffers are owned
// by the caller and must not be reused).
func newMessage(p *packet.Publish, topic, from string, now time.Time) *Message {
	m := &Message{
		Topic:    topic,
		Payload:  p.Payload,
		QoS:      p.QoS,
		Retain:   p.Retain,
		Received: now.UnixNano(),
		From:     from,
	}
	m.Props.Present = p.Props.Present & messagePropMask
	if m.Props.Present != 0 {
		m.Props.PayloadFormatIndicator = p.Props.PayloadFormatIndicator
		m.Props.ContentType = p.Props.ContentType
		m.Props.ResponseTopic = p.Props.ResponseTopic
		m.Props.CorrelationData = p.Props.CorrelationData
		m.Props.User = p.Props.User
		m.Props.MessageExpiryInterval = p.Props.MessageExpiryInterval
		m.stampExpiry()
	}
	return m
}

// stampExpiry sets Expiry from Received and the Message Expiry Interval
// property, when present.
func (m *Message) stampExpiry() {
	if m.Props.Has(packet.PropMessageExpiryInterval) {
		m.Expiry = m.Received + int64(m.Props.MessageExpiryInterval)*int64(time.Second)
	}
}

// expired reports whether the message has expired at now (unix nanos).
func (m *Message) expired(now int64) bool { return m.Expiry != 0 && now >= m.Expiry }

// remainingExpiry is the Message Expiry Interval to forward at now: the
// received value minus the whole seconds the message has waited.
func (m *Message) remainingExpiry(now int64) uint32 {
	waited := uint32((now - m.Received) / int64(time.Second))
	if waited >= m.Props.MessageExpiryInterval {
		return 0
	}
	return m.Props.MessageExpiryInterval - waited
}

// delivery is one message on its way to one session, with the options of
// the subscription(s) it matched.
type delivery struct {
	msg    *Message
	qos    byte
	retain bool
	subIDs []uint32
	group  string // shared subscription "group/filter" it came through, "" if none
}
