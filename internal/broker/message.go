package broker

import (
	"hash/fnv"
	"time"

	"github.com/isobar-mq/isobar/internal/mqtt/packet"
)

// MessageID identifies a message in a cluster: the node that first
// accepted it (a hash of its node name) and a sequence number on that node.
// It is what de-duplication across nodes and loop prevention across bridges
// compare. Assigning one costs an atomic increment, no allocation.
type MessageID struct {
	Node uint64
	Seq  uint64
}

// IsZero reports whether the id was never assigned.
func (id MessageID) IsZero() bool { return id.Node == 0 && id.Seq == 0 }

// NodeHash is the Node part of the MessageIDs a node named name assigns.
func NodeHash(name string) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(name))
	v := h.Sum64()
	if v == 0 {
		v = 1
	}
	return v
}

// OriginKind says what kind of endpoint first brought a message in.
type OriginKind uint8

// Origin kinds. The values are stored (store.MessageRecord.OriginKind).
const (
	OriginClient  OriginKind = 0 // an MQTT client on one of the node's listeners
	OriginServer  OriginKind = 1 // the server itself: API, $SYS, wills of restored sessions
	OriginBridge  OriginKind = 2 // a bridge link to another broker
	OriginGateway OriginKind = 3 // a protocol gateway (STOMP)
	OriginCluster OriginKind = 4 // another node of the cluster
)

// String names the kind for logs and the API.
func (k OriginKind) String() string {
	switch k {
	case OriginClient:
		return "client"
	case OriginServer:
		return "server"
	case OriginBridge:
		return "bridge"
	case OriginGateway:
		return "gateway"
	case OriginCluster:
		return "cluster"
	}
	return "unknown"
}

// Origin says where a message entered the broker network.
type Origin struct {
	Kind OriginKind
	// Name is the listener, bridge or gateway name ("" if none). It points
	// at a string the endpoint owns: no copy per message.
	Name string
}

// Message is an application message as routed inside the server. It is
// immutable once routed: many subscribers share one *Message.
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

	// ID is assigned when the message is first routed (unless the endpoint
	// that brought it in already carries one, e.g. from another node).
	ID MessageID
	// Origin is where the message entered; Hops counts the broker-to-broker
	// links (bridges, cluster forwarding) it has crossed, for loop
	// prevention.
	Origin Origin
	Hops   uint8
	// Stamp orders versions of a retained message across cluster nodes
	// (hybrid logical clock; set when a retained message is stored).
	Stamp uint64

	// size is the message's encoded size as it arrived (0 = unknown): a
	// cheap bound used to avoid building packets the protocol cannot carry.
	size uint32
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

// memSize is what a held reference to the message counts against queued
// byte limits: payload, topic and the variable properties.
func (m *Message) memSize() int64 {
	n := len(m.Payload) + len(m.Topic) + len(m.Props.ContentType) + len(m.Props.ResponseTopic) + len(m.Props.CorrelationData)
	for _, u := range m.Props.User {
		n += len(u.Key) + len(u.Value)
	}
	return int64(n) + 64
}

// Delivery is one message on its way to one subscriber, with the options
// of the subscription(s) it matched.
type Delivery struct {
	Msg    *Message
	QoS    byte     // granted: min(message QoS, subscription QoS)
	Retain bool     // retain flag to deliver with
	SubIDs []uint32 // subscription identifiers of every matching subscription
	Group  string   // shared subscription "group/filter" it came through, "" if none
}
