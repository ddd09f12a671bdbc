package packet

import (
	"strings"
	"unicode/utf8"
)

// ValidString reports whether s is acceptable as an MQTT UTF-8 Encoded String
// (MQTT 5.0 section 1.5.4, MQTT 3.1.1 section 1.5.3). It is the single place
// where the codec decides what a string may contain, and every decoded string
// (topics, filters, client identifier, user name, protocol-level strings and
// string properties, including user properties) goes through it.
//
// Required by the specification (a violation is a Malformed Packet):
//   - well-formed UTF-8: no overlong forms, no code points above U+10FFFF;
//   - no UTF-16 surrogates U+D800..U+DFFF [MQTT-1.5.4-1];
//   - no U+0000 [MQTT-1.5.4-2].
//
// Also rejected, as Mosquitto does (the specification says these SHOULD NOT
// be sent and a receiver MAY treat a packet containing them as malformed):
//   - control characters U+0001..U+001F and U+007F..U+009F;
//   - non-characters U+FDD0..U+FDEF and U+nFFFE/U+nFFFF in every plane.
//
// The Mosquitto conformance suite expects these to be rejected in client
// identifiers, user names, will topics and topic names/filters.
//
// Payloads with Payload Format Indicator 1 are checked with utf8.Valid
// instead: a payload is character data, not an MQTT string, so tabs and
// newlines are fine there.
func ValidString(s string) bool {
	const lsb, msb = 0x0101010101010101, 0x8080808080808080
	for i := 0; i < len(s); {
		// Fast path: eight printable ASCII bytes (0x20..0x7E) at a time.
		for i+8 <= len(s) {
			t := s[i : i+8]
			x := uint64(t[0]) | uint64(t[1])<<8 | uint64(t[2])<<16 | uint64(t[3])<<24 |
				uint64(t[4])<<32 | uint64(t[5])<<40 | uint64(t[6])<<48 | uint64(t[7])<<56
			del := x ^ 0x7F*lsb // a zero byte where x has 0x7F
			if x&msb != 0 || (x-0x20*lsb)&^x&msb != 0 || (del-lsb)&^del&msb != 0 {
				break
			}
			i += 8
		}
		if i >= len(s) {
			break
		}
		c := s[i]
		if c < utf8.RuneSelf {
			if c < 0x20 || c == 0x7F {
				return false
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			return false // ill-formed, overlong or surrogate
		}
		if r <= 0x9F {
			return false // C1 control characters U+0080..U+009F
		}
		if r >= 0xFDD0 && (r <= 0xFDEF || r&0xFFFE == 0xFFFE) {
			return false // non-characters
		}
		i += size
	}
	return true
}

// hasWildcard reports whether a topic name contains a wildcard character,
// which is forbidden in topic names [MQTT-3.3.2-2].
func hasWildcard(s string) bool {
	return strings.IndexByte(s, '+') >= 0 || strings.IndexByte(s, '#') >= 0
}

// validConnackCode reports whether rc is a CONNACK reason code of MQTT 5.0
// (section 3.2.2.2) or, for 3.x, a CONNACK return code (0..5).
func validConnackCode(rc, version byte) bool {
	if version != V5 {
		return rc <= ConnRefusedNotAuthorized
	}
	switch rc {
	case Success, UnspecifiedError, MalformedPacket, ProtocolError, ImplementationSpecificError,
		UnsupportedProtocolVersion, ClientIdentifierNotValid, BadUserNameOrPassword, NotAuthorized,
		ServerUnavailable, ServerBusy, Banned, BadAuthenticationMethod, TopicNameInvalid, PacketTooLarge,
		QuotaExceeded, PayloadFormatInvalid, RetainNotSupported, QoSNotSupported, UseAnotherServer,
		ServerMoved, ConnectionRateExceeded:
		return true
	}
	return false
}

// validAckCode reports whether rc is a valid MQTT 5.0 reason code for the
// acknowledgement type t (sections 3.4.2.1, 3.5.2.1, 3.6.2.1, 3.7.2.1).
func validAckCode(t Type, rc byte) bool {
	switch t {
	case PUBACK, PUBREC:
		switch rc {
		case Success, NoMatchingSubscribers, UnspecifiedError, ImplementationSpecificError, NotAuthorized,
			TopicNameInvalid, PacketIdentifierInUse, QuotaExceeded, PayloadFormatInvalid:
			return true
		}
	case PUBREL, PUBCOMP:
		return rc == Success || rc == PacketIdentifierNotFound
	}
	return false
}

// validSubackCode reports whether rc is a valid SUBACK reason/return code.
func validSubackCode(rc, version byte) bool {
	switch rc {
	case GrantedQoS0, GrantedQoS1, GrantedQoS2, UnspecifiedError:
		return true
	case ImplementationSpecificError, NotAuthorized, TopicFilterInvalid, PacketIdentifierInUse,
		QuotaExceeded, SharedSubscriptionsNotSupported, SubscriptionIdentifiersNotSupported,
		WildcardSubscriptionsNotSupported:
		return version == V5
	}
	return false
}

// validUnsubackCode reports whether rc is a valid MQTT 5.0 UNSUBACK reason code.
func validUnsubackCode(rc byte) bool {
	switch rc {
	case Success, NoSubscriptionExisted, UnspecifiedError, ImplementationSpecificError, NotAuthorized,
		TopicFilterInvalid, PacketIdentifierInUse:
		return true
	}
	return false
}

// ValidDisconnectCode reports whether rc is a DISCONNECT reason code that the
// given side may send (MQTT 5.0 section 3.14.2.1): fromServer selects the
// codes a server may send, otherwise those a client may send.
func ValidDisconnectCode(rc byte, fromServer bool) bool {
	switch rc {
	case NormalDisconnection, UnspecifiedError, MalformedPacket, ProtocolError, ImplementationSpecificError,
		TopicNameInvalid, ReceiveMaximumExceeded, TopicAliasInvalid, PacketTooLarge, MessageRateTooHigh,
		QuotaExceeded, AdministrativeAction, PayloadFormatInvalid:
		return true
	case DisconnectWithWill:
		return !fromServer
	case NotAuthorized, ServerBusy, ServerShuttingDown, KeepAliveTimeout, SessionTakenOver,
		TopicFilterInvalid, RetainNotSupported, QoSNotSupported, UseAnotherServer, ServerMoved,
		SharedSubscriptionsNotSupported, ConnectionRateExceeded, MaximumConnectTime,
		SubscriptionIdentifiersNotSupported, WildcardSubscriptionsNotSupported:
		return fromServer
	}
	return false
}

// ValidAuthCode reports whether rc is an AUTH reason code that the given side
// may send (MQTT 5.0 section 3.15.2.1): Re-authenticate (0x19) is sent only by
// a client.
func ValidAuthCode(rc byte, fromServer bool) bool {
	switch rc {
	case Success, ContinueAuthentication:
		return true
	case ReAuthenticate:
		return !fromServer
	}
	return false
}
