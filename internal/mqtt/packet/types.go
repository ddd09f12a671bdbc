// Package packet is Isobar's MQTT 3.1, 3.1.1 and 5.0 codec.
//
// Decoding is zero-copy: every string and byte slice in a decoded packet
// aliases the body buffer handed to the decoder, so the caller must give each
// packet its own body buffer and never modify it afterwards. Encoding appends
// to a caller-supplied slice and allocates only when that slice must grow.
//
// Every decoder validates strictly (reserved bits, lengths, UTF-8, property
// placement and duplicates) and returns *Error carrying the MQTT 5 reason
// code that the server should answer with.
//
// # Reason codes
//
// Where the specification leaves the choice between Malformed Packet (0x81)
// and Protocol Error (0x82), the codec answers what Mosquitto does, as
// recorded in the Mosquitto packet-sequence conformance suite (the package
// tests check every case of it that decoding alone decides). For property
// blocks this means:
//   - a structural fault (value truncated, property length beyond the packet,
//     unknown identifier, invalid variable byte integer or string) is
//     MalformedPacket and is reported at once;
//   - a semantic fault (property not allowed in the packet, duplicate
//     property other than User Property and, in PUBLISH, Subscription
//     Identifier, a value out of range such as Receive Maximum 0, Maximum
//     Packet Size 0, Topic Alias 0, Subscription Identifier 0, a 0/1 byte
//     that is neither, an empty or wildcard Response Topic, Authentication
//     Data without Authentication Method) is ProtocolError, reported after
//     the whole block parsed cleanly;
//   - in SUBSCRIBE and UNSUBSCRIBE, not-allowed properties and out-of-range
//     values are MalformedPacket instead (section 2.2.2.2 calls an
//     identifier not valid for the packet type a Malformed Packet), while
//     duplicates stay ProtocolError.
//
// Decoders reset the struct they fill but reuse the capacity of its slices
// (Props.User, Props.SubscriptionIdentifiers, Subs, Filters), so a slice kept
// beyond the next decode into the same struct must be copied first.
//
// Strings are checked by ValidString. Encoders never validate: they write
// what they are given.
package packet

import "fmt"

// Type is an MQTT control packet type (the high nibble of the first byte).
type Type byte

// Control packet types.
const (
	CONNECT     Type = 1
	CONNACK     Type = 2
	PUBLISH     Type = 3
	PUBACK      Type = 4
	PUBREC      Type = 5
	PUBREL      Type = 6
	PUBCOMP     Type = 7
	SUBSCRIBE   Type = 8
	SUBACK      Type = 9
	UNSUBSCRIBE Type = 10
	UNSUBACK    Type = 11
	PINGREQ     Type = 12
	PINGRESP    Type = 13
	DISCONNECT  Type = 14
	AUTH        Type = 15
)

var typeNames = [...]string{"RESERVED", "CONNECT", "CONNACK", "PUBLISH", "PUBACK", "PUBREC", "PUBREL", "PUBCOMP",
	"SUBSCRIBE", "SUBACK", "UNSUBSCRIBE", "UNSUBACK", "PINGREQ", "PINGRESP", "DISCONNECT", "AUTH"}

func (t Type) String() string {
	if int(t) < len(typeNames) {
		return typeNames[t]
	}
	return fmt.Sprintf("Type(%d)", byte(t))
}

// Protocol versions (the protocol level byte of CONNECT).
const (
	V31  byte = 3
	V311 byte = 4
	V5   byte = 5
)

// MaxRemainingLength is the largest remaining length the variable byte
// integer encoding can express (268,435,455).
const MaxRemainingLength = 268435455

// Reason codes (MQTT 5.0 section 2.4). Version 3 return codes for CONNACK are
// the separate ConnRefused* constants.
const (
	Success                             byte = 0x00
	NormalDisconnection                 byte = 0x00
	GrantedQoS0                         byte = 0x00
	GrantedQoS1                         byte = 0x01
	GrantedQoS2                         byte = 0x02
	DisconnectWithWill                  byte = 0x04
	NoMatchingSubscribers               byte = 0x10
	NoSubscriptionExisted               byte = 0x11
	ContinueAuthentication              byte = 0x18
	ReAuthenticate                      byte = 0x19
	UnspecifiedError                    byte = 0x80
	MalformedPacket                     byte = 0x81
	ProtocolError                       byte = 0x82
	ImplementationSpecificError         byte = 0x83
	UnsupportedProtocolVersion          byte = 0x84
	ClientIdentifierNotValid            byte = 0x85
	BadUserNameOrPassword               byte = 0x86
	NotAuthorized                       byte = 0x87
	ServerUnavailable                   byte = 0x88
	ServerBusy                          byte = 0x89
	Banned                              byte = 0x8A
	ServerShuttingDown                  byte = 0x8B
	BadAuthenticationMethod             byte = 0x8C
	KeepAliveTimeout                    byte = 0x8D
	SessionTakenOver                    byte = 0x8E
	TopicFilterInvalid                  byte = 0x8F
	TopicNameInvalid                    byte = 0x90
	PacketIdentifierInUse               byte = 0x91
	PacketIdentifierNotFound            byte = 0x92
	ReceiveMaximumExceeded              byte = 0x93
	TopicAliasInvalid                   byte = 0x94
	PacketTooLarge                      byte = 0x95
	MessageRateTooHigh                  byte = 0x96
	QuotaExceeded                       byte = 0x97
	AdministrativeAction                byte = 0x98
	PayloadFormatInvalid                byte = 0x99
	RetainNotSupported                  byte = 0x9A
	QoSNotSupported                     byte = 0x9B
	UseAnotherServer                    byte = 0x9C
	ServerMoved                         byte = 0x9D
	SharedSubscriptionsNotSupported     byte = 0x9E
	ConnectionRateExceeded              byte = 0x9F
	MaximumConnectTime                  byte = 0xA0
	SubscriptionIdentifiersNotSupported byte = 0xA1
	WildcardSubscriptionsNotSupported   byte = 0xA2
)

// MQTT 3.1/3.1.1 CONNACK return codes.
const (
	ConnAccepted                 byte = 0x00
	ConnRefusedProtocolVersion   byte = 0x01
	ConnRefusedIdentifier        byte = 0x02
	ConnRefusedServerUnavailable byte = 0x03
	ConnRefusedBadCredentials    byte = 0x04
	ConnRefusedNotAuthorized     byte = 0x05
)

// V3SubackFailure is the 3.1.1 SUBACK return code for a refused subscription.
const V3SubackFailure byte = 0x80

// Property identifiers (MQTT 5.0 section 2.2.2.2).
const (
	PropPayloadFormatIndicator          byte = 0x01
	PropMessageExpiryInterval           byte = 0x02
	PropContentType                     byte = 0x03
	PropResponseTopic                   byte = 0x08
	PropCorrelationData                 byte = 0x09
	PropSubscriptionIdentifier          byte = 0x0B
	PropSessionExpiryInterval           byte = 0x11
	PropAssignedClientIdentifier        byte = 0x12
	PropServerKeepAlive                 byte = 0x13
	PropAuthenticationMethod            byte = 0x15
	PropAuthenticationData              byte = 0x16
	PropRequestProblemInformation       byte = 0x17
	PropWillDelayInterval               byte = 0x18
	PropRequestResponseInformation      byte = 0x19
	PropResponseInformation             byte = 0x1A
	PropServerReference                 byte = 0x1C
	PropReasonString                    byte = 0x1F
	PropReceiveMaximum                  byte = 0x21
	PropTopicAliasMaximum               byte = 0x22
	PropTopicAlias                      byte = 0x23
	PropMaximumQoS                      byte = 0x24
	PropRetainAvailable                 byte = 0x25
	PropUserProperty                    byte = 0x26
	PropMaximumPacketSize               byte = 0x27
	PropWildcardSubscriptionAvailable   byte = 0x28
	PropSubscriptionIdentifierAvailable byte = 0x29
	PropSharedSubscriptionAvailable     byte = 0x2A
)

// UserProperty is one MQTT 5 user property (a UTF-8 string pair). Order and
// duplicates are significant and preserved.
type UserProperty struct {
	Key, Value string
}

// Properties holds MQTT 5 properties. Scalar properties are meaningful only
// when their bit is set in Present (see Has/Set); strings and byte slices are
// present when Has reports so, which allows zero-length values.
//
// SubscriptionIdentifiers may hold several values in a PUBLISH sent by the
// server; in SUBSCRIBE at most one is allowed.
type Properties struct {
	Present uint64 // bit 1<<PropXxx for every property present

	PayloadFormatIndicator          byte
	MessageExpiryInterval           uint32
	ContentType                     string
	ResponseTopic                   string
	CorrelationData                 []byte
	SubscriptionIdentifiers         []uint32
	SessionExpiryInterval           uint32
	AssignedClientIdentifier        string
	ServerKeepAlive                 uint16
	AuthenticationMethod            string
	AuthenticationData              []byte
	RequestProblemInformation       byte
	WillDelayInterval               uint32
	RequestResponseInformation      byte
	ResponseInformation             string
	ServerReference                 string
	ReasonString                    string
	ReceiveMaximum                  uint16
	TopicAliasMaximum               uint16
	TopicAlias                      uint16
	MaximumQoS                      byte
	RetainAvailable                 byte
	User                            []UserProperty
	MaximumPacketSize               uint32
	WildcardSubscriptionAvailable   byte
	SubscriptionIdentifierAvailable byte
	SharedSubscriptionAvailable     byte
}

// Has reports whether property id is present.
func (p *Properties) Has(id byte) bool { return p.Present&(1<<id) != 0 }

// Set marks property id as present.
func (p *Properties) Set(id byte) { p.Present |= 1 << id }

// Clear marks property id as absent.
func (p *Properties) Clear(id byte) { p.Present &^= 1 << id }

// Connect is a CONNECT packet.
type Connect struct {
	ProtocolName    string // "MQTT" or "MQIsdp"
	ProtocolVersion byte   // V31, V311 or V5
	CleanStart      bool   // Clean Session in 3.x
	KeepAlive       uint16
	Props           Properties
	ClientID        string

	WillFlag    bool
	WillQoS     byte
	WillRetain  bool
	WillProps   Properties
	WillTopic   string
	WillPayload []byte

	UsernameFlag bool
	Username     string
	PasswordFlag bool
	Password     []byte
}

// Connack is a CONNACK packet.
type Connack struct {
	SessionPresent bool
	ReasonCode     byte // v5 reason code, or v3 return code
	Props          Properties
}

// Publish is a PUBLISH packet.
type Publish struct {
	Dup      bool
	QoS      byte
	Retain   bool
	Topic    string // may be empty in v5 when Props has a TopicAlias
	PacketID uint16 // only for QoS > 0
	Props    Properties
	Payload  []byte
}

// Ack is PUBACK, PUBREC, PUBREL or PUBCOMP. ReasonCode defaults to Success
// when absent on the wire.
type Ack struct {
	Type       Type
	PacketID   uint16
	ReasonCode byte
	Props      Properties
}

// Subscription is one topic filter with its options in a SUBSCRIBE.
type Subscription struct {
	Filter            string
	QoS               byte
	NoLocal           bool // v5
	RetainAsPublished bool // v5
	RetainHandling    byte // v5: 0, 1 or 2
}

// Subscribe is a SUBSCRIBE packet.
type Subscribe struct {
	PacketID uint16
	Props    Properties
	Subs     []Subscription
}

// Suback is a SUBACK packet.
type Suback struct {
	PacketID    uint16
	Props       Properties
	ReasonCodes []byte
}

// Unsubscribe is an UNSUBSCRIBE packet.
type Unsubscribe struct {
	PacketID uint16
	Props    Properties
	Filters  []string
}

// Unsuback is an UNSUBACK packet (reason codes only in v5).
type Unsuback struct {
	PacketID    uint16
	Props       Properties
	ReasonCodes []byte
}

// Disconnect is a DISCONNECT packet. In 3.x it has no body.
type Disconnect struct {
	ReasonCode byte
	Props      Properties
}

// Auth is an AUTH packet (v5 only).
type Auth struct {
	ReasonCode byte
	Props      Properties
}

// Error is a decoding or validation failure. Code is the MQTT 5 reason code
// the server should report (MalformedPacket, ProtocolError, ...).
type Error struct {
	Code byte
	Msg  string
	// Payload is set when the error is in a CONNECT payload field (a
	// missing or malformed client identifier, will, user name or
	// password) rather than in the header or properties.
	Payload bool
}

func (e *Error) Error() string { return fmt.Sprintf("%s (0x%02X)", e.Msg, e.Code) }

// Errorf builds an *Error.
func Errorf(code byte, format string, args ...any) *Error {
	return &Error{Code: code, Msg: fmt.Sprintf(format, args...)}
}
