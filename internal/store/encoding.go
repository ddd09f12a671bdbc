package store

// On-disk format, version 1 (formatVersion).
//
// # Keys
//
// Every key starts with a one-byte tag. Client identifiers, filters and
// topics are stored as their UTF-8 bytes; they never contain U+0000 (the
// packet codec rejects it), so 0x00 separates a client identifier from the
// rest of the key, and the key range of one client is exactly
// [tag clientid 0x00, tag clientid 0x01): a client "a" never sees the keys
// of a client "ab". Within one tag, keys sort by client identifier (bytewise)
// for every tag, which lets LoadSessions merge the four session tags in one
// forward pass.
//
//	0x00 "isobar"                    meta: the store's identity (below)
//	's' clientid                     SessionRecord
//	'u' clientid 0x00 filter         SubscriptionRecord
//	'm' clientid 0x00 seq            MessageRecord, seq big-endian uint64
//	'i' clientid 0x00 packetid       inbound QoS 2 id, big-endian uint16
//	'r' topic                        retained MessageRecord
//
// # Meta value
//
//	"isobar-store" (12 bytes) | format version uint32 BE | created unix ns int64 BE
//
// Open refuses a database whose format version is newer than the one this
// code writes, and a non-empty database without the meta key.
//
// # Values
//
// Every value starts with a value version byte, so a record type can
// change its encoding without rewriting the others: messages and sessions
// are written in value version 2, subscriptions and inbound ids in 1.
// Decoders read every version this code ever wrote (a version 1 message or
// session decodes exactly as before, its new fields zero). Integers are
// unsigned varints (encoding/binary Uvarint; int64 times are stored as
// their uint64 two's complement), strings and byte strings are a varint
// length followed by the bytes. Decoders reject unknown versions, unknown
// flag bits, out-of-range integers, lengths beyond the value and trailing
// bytes, and never panic.
//
// Message (MessageRecord; used for 'm', 'r' and a session's will):
//
//	version=2 (or 1)
//	varint H, then H bytes of head:
//	  flags        bit0 Retain, bit1 DeliverRetain, bit2 identity follows,
//	               bit3 origin follows, bit4 stamp follows (bits 2 to 4:
//	               version 2 only)
//	  QoS, DeliverQoS, State                   one byte each
//	  PacketID, Received, Expiry               varints
//	  Topic, From, Group                       strings
//	  varint n, then n SubIDs                  varints
//	  propflags    bit0 payload format indicator, bit1 message expiry
//	               interval, bit2 content type, bit3 response topic,
//	               bit4 correlation data, bit5 user property present bit,
//	               bit6 user property list follows
//	  the present properties in that order: byte, varint, string, string,
//	  bytes, then varint n and n (key, value) string pairs
//	  [identity: IDNode uint64 BE (8 bytes, a hash), IDSeq varint]
//	  [origin: Hops byte, OriginKind byte, OriginName string]
//	  [stamp: Stamp uint64 BE (a retained message's HLC timestamp)]
//	payload: the rest of the value
//
// The identity is written when IDNode or IDSeq is non-zero, the origin
// when Hops, OriginKind or OriginName is; so a message without them costs
// no more than in version 1.
//
// Properties other than these message properties (and the Present bits of
// those others) are not stored. A property's value is stored only when its
// Present bit is set. On decoding an empty Payload is nil, present
// CorrelationData is non-nil (possibly empty), and strings share one
// allocation per message.
//
// Session (SessionRecord; ClientID comes from the key):
//
//	version=2 | flags (bit0 will follows, bit1 will delay follows) |
//	ExpiryInterval varint | DisconnectedAt varint | NextPacketID varint |
//	Username string | Role byte | [WillAt varint | will message as bytes] |
//	[WillDelay varint]
//
// Version 1 is the same without Role (decoded as 0). The will is a message
// value of either version.
//
// Subscription (SubscriptionRecord; Filter comes from the key):
//
//	version=1 | flags (bit0 NoLocal, bit1 RetainAsPublished) | QoS |
//	RetainHandling | ID varint
//
// Inbound: the single byte version=1.
//
// # Session snapshot
//
// EncodeSession writes a whole LoadedSession as one self-contained value
// (to move a session between nodes; never stored under a key):
//
//	"isobar-session" (14 bytes) | snapshot version=1 |
//	ClientID string | session value as bytes |
//	varint n, n times: Filter string, subscription value as bytes |
//	varint n, n times: Seq varint, message value as bytes |
//	varint n, n times: inbound packet id varint
//
// The embedded values are the record encodings above (with their own
// versions). Subscriptions are in strictly increasing filter order,
// messages in strictly increasing sequence order, inbound ids strictly
// increasing; the client id contains no U+0000. DecodeSession rejects
// anything else, and trailing bytes.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/isobar-mq/isobar/internal/mqtt/packet"
)

// formatVersion is the version of the key layout and value encodings above.
const formatVersion uint32 = 1

// Key tags.
const (
	tagMeta     byte = 0x00
	tagSession  byte = 's'
	tagSub      byte = 'u'
	tagMessage  byte = 'm'
	tagInbound  byte = 'i'
	tagRetained byte = 'r'
)

const (
	metaMagic  = "isobar-store"
	metaLen    = len(metaMagic) + 4 + 8
	valueV1    = 1
	valueV2    = 2
	keySep     = 0x00
	keySepNext = 0x01
)

// metaKey returns the key of the meta record.
func metaKey() []byte { return []byte{tagMeta, 'i', 's', 'o', 'b', 'a', 'r'} }

func appendMeta(dst []byte, version uint32, created int64) []byte {
	dst = append(dst, metaMagic...)
	dst = binary.BigEndian.AppendUint32(dst, version)
	return binary.BigEndian.AppendUint64(dst, uint64(created))
}

// decodeMeta returns the format version and creation time of a meta value.
func decodeMeta(v []byte) (version uint32, created int64, err error) {
	if len(v) != metaLen || string(v[:len(metaMagic)]) != metaMagic {
		return 0, 0, errors.New("meta record is not an isobar store identity")
	}
	version = binary.BigEndian.Uint32(v[len(metaMagic):])
	created = int64(binary.BigEndian.Uint64(v[len(metaMagic)+4:]))
	return version, created, nil
}

// errNUL is recorded by a batch given a client id that contains U+0000.
var errNUL = errors.New("client identifier contains U+0000")

func appendSessionKey(dst []byte, clientID string) []byte {
	return append(append(dst, tagSession), clientID...)
}

// appendClientPrefix appends tag, clientID and the separator: the prefix of
// every key of that tag and client.
func appendClientPrefix(dst []byte, tag byte, clientID string) []byte {
	return append(append(append(dst, tag), clientID...), keySep)
}

// appendClientEnd appends the exclusive upper bound of the keys under
// appendClientPrefix(tag, clientID).
func appendClientEnd(dst []byte, tag byte, clientID string) []byte {
	return append(append(append(dst, tag), clientID...), keySepNext)
}

func appendSubKey(dst []byte, clientID, filter string) []byte {
	return append(appendClientPrefix(dst, tagSub, clientID), filter...)
}

func appendMessageKey(dst []byte, clientID string, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(appendClientPrefix(dst, tagMessage, clientID), seq)
}

func appendInboundKey(dst []byte, clientID string, packetID uint16) []byte {
	return binary.BigEndian.AppendUint16(appendClientPrefix(dst, tagInbound, clientID), packetID)
}

func appendRetainedKey(dst []byte, topic string) []byte {
	return append(append(dst, tagRetained), topic...)
}

// splitClientKey splits a 'u', 'm' or 'i' key into its client id and the
// part after the separator.
func splitClientKey(k []byte) (clientID, rest []byte, ok bool) {
	if len(k) < 2 {
		return nil, nil, false
	}
	i := bytes.IndexByte(k[1:], keySep)
	if i < 0 {
		return nil, nil, false
	}
	return k[1 : 1+i], k[2+i:], true
}

// keyString renders a key for error messages.
func keyString(k []byte) string { return strconv.Quote(string(k)) }

// Message property flags.
const (
	pfPayloadFormat = 1 << iota
	pfMessageExpiry
	pfContentType
	pfResponseTopic
	pfCorrelationData
	pfUserPresent
	pfUserList
	pfAll = 1<<iota - 1
)

const (
	mfRetain = 1 << iota
	mfDeliverRetain
	mfIdentity // version 2: IDNode, IDSeq follow the properties
	mfOrigin   // version 2: Hops, OriginKind, OriginName follow
	mfStamp    // version 2: the retained stamp (uint64 BE) follows
	mfAll      = 1<<iota - 1
	mfAllV1    = mfRetain | mfDeliverRetain
)

func hasIdentity(m *MessageRecord) bool { return m.IDNode != 0 || m.IDSeq != 0 }

func hasOrigin(m *MessageRecord) bool {
	return m.Hops != 0 || m.OriginKind != 0 || m.OriginName != ""
}

// appendMessage appends the encoding of m.
func appendMessage(dst []byte, m *MessageRecord) []byte {
	return appendMessageHead(dst, m, messageHeadLen(m))
}

// appendMessageHead is appendMessage given messageHeadLen(m).
func appendMessageHead(dst []byte, m *MessageRecord, n int) []byte {
	dst = append(dst, valueV2)
	dst = binary.AppendUvarint(dst, uint64(n))
	start := len(dst)
	var flags byte
	if m.Retain {
		flags |= mfRetain
	}
	if m.DeliverRetain {
		flags |= mfDeliverRetain
	}
	identity, origin := hasIdentity(m), hasOrigin(m)
	if identity {
		flags |= mfIdentity
	}
	if origin {
		flags |= mfOrigin
	}
	if m.Stamp != 0 {
		flags |= mfStamp
	}
	dst = append(dst, flags, m.QoS, m.DeliverQoS, m.State)
	dst = binary.AppendUvarint(dst, uint64(m.PacketID))
	dst = binary.AppendUvarint(dst, uint64(m.Received))
	dst = binary.AppendUvarint(dst, uint64(m.Expiry))
	dst = appendStr(dst, m.Topic)
	dst = appendStr(dst, m.From)
	dst = appendStr(dst, m.Group)
	dst = binary.AppendUvarint(dst, uint64(len(m.SubIDs)))
	for _, id := range m.SubIDs {
		dst = binary.AppendUvarint(dst, uint64(id))
	}
	p := &m.Props
	pf := propFlags(p)
	dst = append(dst, pf)
	if pf&pfPayloadFormat != 0 {
		dst = append(dst, p.PayloadFormatIndicator)
	}
	if pf&pfMessageExpiry != 0 {
		dst = binary.AppendUvarint(dst, uint64(p.MessageExpiryInterval))
	}
	if pf&pfContentType != 0 {
		dst = appendStr(dst, p.ContentType)
	}
	if pf&pfResponseTopic != 0 {
		dst = appendStr(dst, p.ResponseTopic)
	}
	if pf&pfCorrelationData != 0 {
		dst = appendBytes(dst, p.CorrelationData)
	}
	if pf&pfUserList != 0 {
		dst = binary.AppendUvarint(dst, uint64(len(p.User)))
		for i := range p.User {
			dst = appendStr(dst, p.User[i].Key)
			dst = appendStr(dst, p.User[i].Value)
		}
	}
	if identity {
		dst = binary.BigEndian.AppendUint64(dst, m.IDNode)
		dst = binary.AppendUvarint(dst, m.IDSeq)
	}
	if origin {
		dst = append(dst, m.Hops, m.OriginKind)
		dst = appendStr(dst, m.OriginName)
	}
	if m.Stamp != 0 {
		dst = binary.BigEndian.AppendUint64(dst, m.Stamp)
	}
	if len(dst)-start != n {
		panic(fmt.Sprintf("store: message head is %d bytes, computed %d", len(dst)-start, n))
	}
	return append(dst, m.Payload...)
}

func propFlags(p *packet.Properties) byte {
	var pf byte
	if p.Has(packet.PropPayloadFormatIndicator) {
		pf |= pfPayloadFormat
	}
	if p.Has(packet.PropMessageExpiryInterval) {
		pf |= pfMessageExpiry
	}
	if p.Has(packet.PropContentType) {
		pf |= pfContentType
	}
	if p.Has(packet.PropResponseTopic) {
		pf |= pfResponseTopic
	}
	if p.Has(packet.PropCorrelationData) {
		pf |= pfCorrelationData
	}
	if p.Has(packet.PropUserProperty) {
		pf |= pfUserPresent
	}
	if len(p.User) > 0 {
		pf |= pfUserList
	}
	return pf
}

// messageHeadLen is the length of the head appendMessage writes.
func messageHeadLen(m *MessageRecord) int {
	n := 4 + uvarintLen(uint64(m.PacketID)) + uvarintLen(uint64(m.Received)) + uvarintLen(uint64(m.Expiry)) +
		strLen(len(m.Topic)) + strLen(len(m.From)) + strLen(len(m.Group)) + uvarintLen(uint64(len(m.SubIDs)))
	for _, id := range m.SubIDs {
		n += uvarintLen(uint64(id))
	}
	p := &m.Props
	pf := propFlags(p)
	n++
	if pf&pfPayloadFormat != 0 {
		n++
	}
	if pf&pfMessageExpiry != 0 {
		n += uvarintLen(uint64(p.MessageExpiryInterval))
	}
	if pf&pfContentType != 0 {
		n += strLen(len(p.ContentType))
	}
	if pf&pfResponseTopic != 0 {
		n += strLen(len(p.ResponseTopic))
	}
	if pf&pfCorrelationData != 0 {
		n += strLen(len(p.CorrelationData))
	}
	if pf&pfUserList != 0 {
		n += uvarintLen(uint64(len(p.User)))
		for i := range p.User {
			n += strLen(len(p.User[i].Key)) + strLen(len(p.User[i].Value))
		}
	}
	if hasIdentity(m) {
		n += 8 + uvarintLen(m.IDSeq)
	}
	if hasOrigin(m) {
		n += 2 + strLen(len(m.OriginName))
	}
	if m.Stamp != 0 {
		n += 8
	}
	return n
}

func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

func strLen(n int) int { return uvarintLen(uint64(n)) + n }

func appendStr(dst []byte, s string) []byte {
	return append(binary.AppendUvarint(dst, uint64(len(s))), s...)
}

func appendBytes(dst, b []byte) []byte {
	return append(binary.AppendUvarint(dst, uint64(len(b))), b...)
}

// decodeMessage decodes a message value into m, which it overwrites.
func decodeMessage(v []byte, m *MessageRecord) error {
	*m = MessageRecord{}
	if len(v) == 0 {
		return errors.New("empty message value")
	}
	version := v[0]
	if version != valueV1 && version != valueV2 {
		return fmt.Errorf("unknown message value version %d", version)
	}
	r := decoder{b: v[1:]}
	h := r.uvarint("head length", math.MaxUint64)
	if r.err != nil {
		return r.err
	}
	if h > uint64(r.left()) {
		return fmt.Errorf("head length %d exceeds the %d bytes left", h, r.left())
	}
	head := r.b[r.off : r.off+int(h)]
	if payload := r.b[r.off+int(h):]; len(payload) > 0 {
		m.Payload = bytes.Clone(payload)
	}
	// All strings of the head share this one allocation.
	d := decoder{b: head, s: string(head)}
	flags := d.byte("flags")
	known := byte(mfAll)
	if version == valueV1 {
		known = mfAllV1
	}
	if flags&^known != 0 {
		return fmt.Errorf("unknown message flags 0x%02X (value version %d)", flags, version)
	}
	m.Retain = flags&mfRetain != 0
	m.DeliverRetain = flags&mfDeliverRetain != 0
	m.QoS = d.byte("QoS")
	m.DeliverQoS = d.byte("delivery QoS")
	m.State = d.byte("state")
	m.PacketID = uint16(d.uvarint("packet id", math.MaxUint16))
	m.Received = int64(d.uvarint("received time", math.MaxUint64))
	m.Expiry = int64(d.uvarint("expiry time", math.MaxUint64))
	m.Topic = d.str("topic")
	m.From = d.str("from")
	m.Group = d.str("group")
	// Every element takes at least a byte: bound counts by what is left
	// so a corrupt count cannot allocate more than the value's size.
	if n := d.uvarint("subscription id count", uint64(d.left())); n > 0 {
		m.SubIDs = make([]uint32, n)
		for i := range m.SubIDs {
			m.SubIDs[i] = uint32(d.uvarint("subscription id", math.MaxUint32))
		}
	}
	pf := d.byte("property flags")
	if pf&^pfAll != 0 && d.err == nil {
		return fmt.Errorf("unknown property flags 0x%02X", pf)
	}
	p := &m.Props
	if pf&pfPayloadFormat != 0 {
		p.Set(packet.PropPayloadFormatIndicator)
		p.PayloadFormatIndicator = d.byte("payload format indicator")
	}
	if pf&pfMessageExpiry != 0 {
		p.Set(packet.PropMessageExpiryInterval)
		p.MessageExpiryInterval = uint32(d.uvarint("message expiry interval", math.MaxUint32))
	}
	if pf&pfContentType != 0 {
		p.Set(packet.PropContentType)
		p.ContentType = d.str("content type")
	}
	if pf&pfResponseTopic != 0 {
		p.Set(packet.PropResponseTopic)
		p.ResponseTopic = d.str("response topic")
	}
	if pf&pfCorrelationData != 0 {
		p.Set(packet.PropCorrelationData)
		p.CorrelationData = []byte(d.str("correlation data"))
		if p.CorrelationData == nil {
			p.CorrelationData = []byte{}
		}
	}
	if pf&pfUserPresent != 0 {
		p.Set(packet.PropUserProperty)
	}
	if pf&pfUserList != 0 {
		n := d.uvarint("user property count", uint64(d.left()/2))
		if n == 0 && d.err == nil {
			return errors.New("empty user property list")
		}
		p.User = make([]packet.UserProperty, n)
		for i := range p.User {
			p.User[i].Key = d.str("user property key")
			p.User[i].Value = d.str("user property value")
		}
	}
	if flags&mfIdentity != 0 {
		m.IDNode = d.uint64("identity node")
		m.IDSeq = d.uvarint("identity sequence", math.MaxUint64)
	}
	if flags&mfOrigin != 0 {
		m.Hops = d.byte("hops")
		m.OriginKind = d.byte("origin kind")
		m.OriginName = d.str("origin name")
	}
	if flags&mfStamp != 0 {
		m.Stamp = d.uint64("stamp")
	}
	return d.finish("message")
}

// appendSession appends the encoding of s (without its client id).
func appendSession(dst []byte, s *SessionRecord) []byte {
	var flags byte
	if s.Will != nil {
		flags |= 1
		if s.WillDelay > 0 {
			flags |= 2
		}
	}
	dst = append(dst, valueV2, flags)
	dst = binary.AppendUvarint(dst, uint64(s.ExpiryInterval))
	dst = binary.AppendUvarint(dst, uint64(s.DisconnectedAt))
	dst = binary.AppendUvarint(dst, uint64(s.NextPacketID))
	dst = appendStr(dst, s.Username)
	dst = append(dst, s.Role)
	if s.Will != nil {
		dst = binary.AppendUvarint(dst, uint64(s.WillAt))
		h := messageHeadLen(s.Will)
		n := 1 + uvarintLen(uint64(h)) + h + len(s.Will.Payload)
		dst = binary.AppendUvarint(dst, uint64(n))
		dst = appendMessageHead(dst, s.Will, h)
		if s.WillDelay > 0 {
			dst = binary.AppendUvarint(dst, uint64(s.WillDelay))
		}
	}
	return dst
}

// decodeSession decodes a session value into s, which it overwrites
// (ClientID is left empty).
func decodeSession(v []byte, s *SessionRecord) error {
	*s = SessionRecord{}
	if len(v) == 0 {
		return errors.New("empty session value")
	}
	version := v[0]
	if version != valueV1 && version != valueV2 {
		return fmt.Errorf("unknown session value version %d", version)
	}
	d := decoder{b: v[1:]}
	flags := d.byte("flags")
	if (flags&^3 != 0 || flags == 2) && d.err == nil {
		return fmt.Errorf("unknown session flags 0x%02X", flags)
	}
	s.ExpiryInterval = uint32(d.uvarint("expiry interval", math.MaxUint32))
	s.DisconnectedAt = int64(d.uvarint("disconnected time", math.MaxUint64))
	s.NextPacketID = uint16(d.uvarint("next packet id", math.MaxUint16))
	s.Username = d.str("username")
	if version >= valueV2 {
		s.Role = d.byte("role")
	}
	if flags&1 != 0 {
		s.WillAt = int64(d.uvarint("will time", math.MaxUint64))
		w := d.bytes("will")
		if d.err != nil {
			return d.err
		}
		s.Will = new(MessageRecord)
		if err := decodeMessage(w, s.Will); err != nil {
			return fmt.Errorf("will: %w", err)
		}
		if flags&2 != 0 {
			s.WillDelay = uint32(d.uvarint("will delay", math.MaxUint32))
		}
	}
	return d.finish("session")
}

// appendSubscription appends the encoding of s (without its filter).
func appendSubscription(dst []byte, s *SubscriptionRecord) []byte {
	var flags byte
	if s.NoLocal {
		flags |= 1
	}
	if s.RetainAsPublished {
		flags |= 2
	}
	dst = append(dst, valueV1, flags, s.QoS, s.RetainHandling)
	return binary.AppendUvarint(dst, uint64(s.ID))
}

// decodeSubscription decodes a subscription value into s, which it
// overwrites (Filter is left empty).
func decodeSubscription(v []byte, s *SubscriptionRecord) error {
	*s = SubscriptionRecord{}
	if len(v) == 0 {
		return errors.New("empty subscription value")
	}
	if v[0] != valueV1 {
		return fmt.Errorf("unknown subscription value version %d", v[0])
	}
	d := decoder{b: v[1:]}
	flags := d.byte("flags")
	if flags&^3 != 0 && d.err == nil {
		return fmt.Errorf("unknown subscription flags 0x%02X", flags)
	}
	s.NoLocal = flags&1 != 0
	s.RetainAsPublished = flags&2 != 0
	s.QoS = d.byte("QoS")
	s.RetainHandling = d.byte("retain handling")
	s.ID = uint32(d.uvarint("subscription id", math.MaxUint32))
	return d.finish("subscription")
}

// inboundValue is the value of an inbound key.
var inboundValue = [1]byte{valueV1}

func decodeInbound(v []byte) error {
	if len(v) != 1 || v[0] != valueV1 {
		return fmt.Errorf("bad inbound value %x", v)
	}
	return nil
}

// decoder reads a value; the first fault sticks in err and makes every
// later read return zero. When s is set it holds the same bytes as b and
// strings are sliced from it instead of allocated.
type decoder struct {
	b   []byte
	s   string
	off int
	err error
}

func (d *decoder) left() int { return len(d.b) - d.off }

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf(format, args...)
	}
}

func (d *decoder) byte(what string) byte {
	if d.err != nil {
		return 0
	}
	if d.off >= len(d.b) {
		d.fail("truncated before %s", what)
		return 0
	}
	c := d.b[d.off]
	d.off++
	return c
}

// uvarint reads a varint that must not exceed max.
func (d *decoder) uvarint(what string, max uint64) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b[d.off:])
	switch {
	case n == 0:
		d.fail("truncated %s", what)
		return 0
	case n < 0:
		d.fail("%s overflows 64 bits", what)
		return 0
	case v > max:
		d.fail("%s %d out of range (max %d)", what, v, max)
		return 0
	}
	d.off += n
	return v
}

// uint64 reads a fixed 8-byte big-endian integer.
func (d *decoder) uint64(what string) uint64 {
	if d.err != nil {
		return 0
	}
	if d.left() < 8 {
		d.fail("truncated %s", what)
		return 0
	}
	v := binary.BigEndian.Uint64(d.b[d.off:])
	d.off += 8
	return v
}

// bytes returns a length-prefixed byte string, aliasing d.b.
func (d *decoder) bytes(what string) []byte {
	n := d.uvarint(what+" length", math.MaxUint64)
	if d.err != nil {
		return nil
	}
	if n > uint64(d.left()) {
		d.fail("%s length %d exceeds the %d bytes left", what, n, d.left())
		return nil
	}
	b := d.b[d.off : d.off+int(n) : d.off+int(n)]
	d.off += int(n)
	return b
}

func (d *decoder) str(what string) string {
	b := d.bytes(what)
	if d.err != nil || len(b) == 0 {
		return ""
	}
	if d.s != "" {
		return d.s[d.off-len(b) : d.off]
	}
	return string(b)
}

// finish reports the first fault, or trailing bytes.
func (d *decoder) finish(what string) error {
	if d.err != nil {
		return fmt.Errorf("%s: %w", what, d.err)
	}
	if d.left() != 0 {
		return fmt.Errorf("%s: %d trailing bytes", what, d.left())
	}
	return nil
}

// validKeyString reports whether s can be used in a key where it is
// followed by a separator.
func validKeyString(s string) bool { return strings.IndexByte(s, keySep) < 0 }
