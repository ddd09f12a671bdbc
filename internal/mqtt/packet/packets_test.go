package packet

import (
	"bytes"
	"reflect"
	"testing"
)

func withProps(p Properties, ids ...byte) Properties {
	for _, id := range ids {
		p.Set(id)
	}
	return p
}

// encodeCases are packets with their exact wire encoding. Each is checked in
// both directions: Append produces the bytes, Len matches, and decoding the
// bytes gives the packet back.
var encodeCases = []struct {
	name    string
	version byte
	server  bool // decode as sent by the server (DISCONNECT/AUTH reason codes)
	pkt     any
	hex     string
}{
	{"CONNECT 3.1.1 minimal", V311, false,
		&Connect{ProtocolName: "MQTT", ProtocolVersion: V311, CleanStart: true, KeepAlive: 10, ClientID: "p"},
		"10 0D 0004 4D515454 04 02 000A 0001 70"},
	{"CONNECT 3.1", V31, false,
		&Connect{ProtocolName: "MQIsdp", ProtocolVersion: V31, CleanStart: true, KeepAlive: 10, ClientID: "p"},
		"10 0F 0006 4D5149736470 03 02 000A 0001 70"},
	{"CONNECT 3.1.1 will user password", V311, false,
		&Connect{ProtocolName: "MQTT", ProtocolVersion: V311, CleanStart: true, KeepAlive: 60, ClientID: "c",
			WillFlag: true, WillQoS: 1, WillRetain: true, WillTopic: "t", WillPayload: []byte("hi"),
			UsernameFlag: true, Username: "u", PasswordFlag: true, Password: []byte("pw")},
		"10 1B 0004 4D515454 04 EE 003C 0001 63 0001 74 0002 6869 0001 75 0002 7077"},
	{"CONNECT 3.1.1 empty client id, empty user name", V311, false,
		&Connect{ProtocolName: "MQTT", ProtocolVersion: V311, CleanStart: true, UsernameFlag: true},
		"10 0E 0004 4D515454 04 82 0000 0000 0000"},
	{"CONNECT 5.0 properties will password only", V5, false,
		&Connect{ProtocolName: "MQTT", ProtocolVersion: V5, CleanStart: true, KeepAlive: 60, ClientID: "c",
			Props: withProps(Properties{SessionExpiryInterval: 0x78, ReceiveMaximum: 20,
				User: []UserProperty{{"k", "v"}}}, PropSessionExpiryInterval, PropReceiveMaximum, PropUserProperty),
			WillFlag: true, WillTopic: "t", WillPayload: []byte("x"),
			WillProps: withProps(Properties{PayloadFormatIndicator: 1, ContentType: "a", WillDelayInterval: 5},
				PropPayloadFormatIndicator, PropContentType, PropWillDelayInterval),
			PasswordFlag: true, Password: []byte("pw")},
		"10 33 0004 4D515454 05 46 003C 0F 1100000078 210014 2600016B000176 0001 63 0B 0101 03000161 1800000005 0001 74 0001 78 0002 7077"},
	{"CONNECT 5.0 auth method and data", V5, false,
		&Connect{ProtocolName: "MQTT", ProtocolVersion: V5, ClientID: "c",
			Props: withProps(Properties{AuthenticationMethod: "m", AuthenticationData: []byte{1}},
				PropAuthenticationMethod, PropAuthenticationData)},
		"10 16 0004 4D515454 05 00 0000 08 15 0001 6D 16 0001 01 0001 63"},
	{"CONNACK 3.1.1 session present", V311, false, &Connack{SessionPresent: true}, "20 02 01 00"},
	{"CONNACK 3.1.1 refused", V311, false, &Connack{ReasonCode: ConnRefusedIdentifier}, "20 02 00 02"},
	{"CONNACK 3.1", V31, false, &Connack{}, "20 02 00 00"},
	{"CONNACK 5.0 Mosquitto default", V5, false,
		&Connack{Props: withProps(Properties{TopicAliasMaximum: 10, ReceiveMaximum: 20}, PropTopicAliasMaximum, PropReceiveMaximum)},
		"20 09 00 00 06 22000A 210014"},
	{"CONNACK 5.0 refused", V5, false, &Connack{ReasonCode: UnsupportedProtocolVersion}, "20 03 00 84 00"},
	{"CONNACK 5.0 all properties", V5, false,
		&Connack{SessionPresent: true, Props: withProps(Properties{SessionExpiryInterval: 1, AssignedClientIdentifier: "a",
			ServerKeepAlive: 2, ResponseInformation: "r", ServerReference: "s", ReasonString: "x", ReceiveMaximum: 3,
			TopicAliasMaximum: 4, MaximumQoS: 1, RetainAvailable: 0, MaximumPacketSize: 5,
			WildcardSubscriptionAvailable: 1, SubscriptionIdentifierAvailable: 0, SharedSubscriptionAvailable: 1,
			User: []UserProperty{{"a", "b"}, {"a", "c"}}},
			PropSessionExpiryInterval, PropAssignedClientIdentifier, PropServerKeepAlive, PropResponseInformation,
			PropServerReference, PropReasonString, PropReceiveMaximum, PropTopicAliasMaximum, PropMaximumQoS,
			PropRetainAvailable, PropMaximumPacketSize, PropWildcardSubscriptionAvailable,
			PropSubscriptionIdentifierAvailable, PropSharedSubscriptionAvailable, PropUserProperty)},
		"20 3E 01 00 3B 1100000001 220004 12000161 130002 1A000172 1C000173 1F000178 210003 2401 2500 2700000005 2801 2900 2A01 26000161000162 26000161000163"},
	{"PUBLISH 3.1.1 QoS 0", V311, false, &Publish{Topic: "p", Payload: []byte("message")}, "30 0A 0001 70 6d657373616765"},
	{"PUBLISH 3.1.1 QoS 1 dup retain", V311, false,
		&Publish{Dup: true, QoS: 1, Retain: true, Topic: "p", PacketID: 1, Payload: []byte("message")},
		"3B 0C 0001 70 0001 6d657373616765"},
	{"PUBLISH 3.1.1 QoS 2 empty payload, 4-byte UTF-8", V311, false,
		&Publish{QoS: 2, Topic: "A\U0002A6D4", PacketID: 0xFFFF}, "34 09 0005 41F0AA9B94 FFFF"},
	{"PUBLISH 5.0 QoS 0", V5, false, &Publish{Topic: "p", Payload: []byte("message")}, "30 0B 0001 70 00 6d657373616765"},
	{"PUBLISH 5.0 QoS 2 properties", V5, false,
		&Publish{QoS: 2, Topic: "a/b", PacketID: 7, Payload: []byte("hi"),
			Props: withProps(Properties{PayloadFormatIndicator: 1, MessageExpiryInterval: 60, ResponseTopic: "r",
				CorrelationData: []byte("c"), SubscriptionIdentifiers: []uint32{1, 300}, TopicAlias: 3,
				User: []UserProperty{{"k", "v"}}},
				PropPayloadFormatIndicator, PropMessageExpiryInterval, PropResponseTopic, PropCorrelationData,
				PropSubscriptionIdentifier, PropTopicAlias, PropUserProperty)},
		"34 28 0003 612F62 0007 1E 0101 020000003C 08000172 09000163 0B01 0BAC02 230003 2600016B000176 6869"},
	{"PUBLISH 5.0 empty topic with alias", V5, false,
		&Publish{Props: withProps(Properties{TopicAlias: 5}, PropTopicAlias)}, "30 06 0000 03 230005"},
	{"PUBLISH 5.0 largest subscription identifier", V5, false,
		&Publish{Topic: "t", Props: withProps(Properties{SubscriptionIdentifiers: []uint32{MaxRemainingLength}},
			PropSubscriptionIdentifier)},
		"30 09 0001 74 05 0B FFFFFF7F"},
	{"PUBACK 3.1.1", V311, false, &Ack{Type: PUBACK, PacketID: 1}, "40 02 0001"},
	{"PUBREC 3.1.1", V311, false, &Ack{Type: PUBREC, PacketID: 0x1234}, "50 02 1234"},
	{"PUBREL 3.1.1", V311, false, &Ack{Type: PUBREL, PacketID: 0x1234}, "62 02 1234"},
	{"PUBCOMP 3.1.1", V311, false, &Ack{Type: PUBCOMP, PacketID: 0x1234}, "70 02 1234"},
	{"PUBACK 5.0 success short form", V5, false, &Ack{Type: PUBACK, PacketID: 1}, "40 02 0001"},
	{"PUBACK 5.0 reason without properties", V5, false,
		&Ack{Type: PUBACK, PacketID: 0x1234, ReasonCode: NoMatchingSubscribers}, "40 03 1234 10"},
	{"PUBREC 5.0 reason string", V5, false,
		&Ack{Type: PUBREC, PacketID: 1, ReasonCode: UnspecifiedError,
			Props: withProps(Properties{ReasonString: "p"}, PropReasonString)},
		"50 08 0001 80 04 1F000170"},
	{"PUBREL 5.0 success with user property", V5, false,
		&Ack{Type: PUBREL, PacketID: 1, Props: withProps(Properties{User: []UserProperty{{"", ""}}}, PropUserProperty)},
		"62 09 0001 00 05 26 0000 0000"},
	{"PUBCOMP 5.0 not found", V5, false,
		&Ack{Type: PUBCOMP, PacketID: 1, ReasonCode: PacketIdentifierNotFound}, "70 03 0001 92"},
	{"SUBSCRIBE 3.1.1", V311, false,
		&Subscribe{PacketID: 0x1234, Subs: []Subscription{{Filter: "p"}, {Filter: "q/#", QoS: 2}}},
		"82 0C 1234 0001 70 00 0003 712F23 02"},
	{"SUBSCRIBE 5.0 options and identifier", V5, false,
		&Subscribe{PacketID: 0x1234, Props: withProps(Properties{SubscriptionIdentifiers: []uint32{5}}, PropSubscriptionIdentifier),
			Subs: []Subscription{{Filter: "p", QoS: 1, NoLocal: true, RetainAsPublished: true, RetainHandling: 2},
				{Filter: "+"}}},
		"82 0D 1234 02 0B05 0001 70 2D 0001 2B 00"},
	{"SUBACK 3.1.1", V311, false, &Suback{PacketID: 0x1234, ReasonCodes: []byte{0, 0x80}}, "90 04 1234 00 80"},
	{"SUBACK 5.0", V5, false, &Suback{PacketID: 0x1234, ReasonCodes: []byte{1, 0x87}}, "90 05 1234 00 01 87"},
	{"SUBACK 5.0 reason string", V5, false,
		&Suback{PacketID: 0x1234, ReasonCodes: []byte{0, 2},
			Props: withProps(Properties{ReasonString: "p"}, PropReasonString)},
		"90 09 1234 04 1F000170 00 02"},
	{"UNSUBSCRIBE 3.1.1", V311, false, &Unsubscribe{PacketID: 0x1234, Filters: []string{"p", "q"}},
		"A2 08 1234 0001 70 0001 71"},
	{"UNSUBSCRIBE 5.0 user property", V5, false,
		&Unsubscribe{PacketID: 1, Filters: []string{"p"},
			Props: withProps(Properties{User: []UserProperty{{"p", "q"}}}, PropUserProperty)},
		"A2 0D 0001 07 26000170000171 0001 70"},
	{"UNSUBACK 3.1.1", V311, false, &Unsuback{PacketID: 0x1234}, "B0 02 1234"},
	{"UNSUBACK 5.0", V5, false, &Unsuback{PacketID: 0x1234, ReasonCodes: []byte{0, 0x11}}, "B0 05 1234 00 00 11"},
	{"PINGREQ", V311, false, PINGREQ, "C0 00"},
	{"PINGRESP", V5, false, PINGRESP, "D0 00"},
	{"DISCONNECT 3.1.1", V311, false, &Disconnect{}, "E0 00"},
	{"DISCONNECT 5.0 normal short form", V5, false, &Disconnect{}, "E0 00"},
	{"DISCONNECT 5.0 with will", V5, false, &Disconnect{ReasonCode: DisconnectWithWill}, "E0 01 04"},
	{"DISCONNECT 5.0 from server", V5, true, &Disconnect{ReasonCode: SessionTakenOver}, "E0 01 8E"},
	{"DISCONNECT 5.0 properties", V5, false,
		&Disconnect{Props: withProps(Properties{ReasonString: "xy"}, PropSessionExpiryInterval, PropReasonString)},
		"E0 0C 00 0A 1100000000 1F00027879"},
	{"AUTH continue", V5, false,
		&Auth{ReasonCode: ContinueAuthentication, Props: withProps(Properties{AuthenticationMethod: "abc"}, PropAuthenticationMethod)},
		"F0 08 18 06 150003616263"},
	{"AUTH re-authenticate with data", V5, false,
		&Auth{ReasonCode: ReAuthenticate, Props: withProps(Properties{AuthenticationMethod: "abc", AuthenticationData: []byte{1, 2}},
			PropAuthenticationMethod, PropAuthenticationData)},
		"F0 0D 19 0B 150003616263 1600020102"},
	{"AUTH success from server", V5, true,
		&Auth{Props: withProps(Properties{AuthenticationMethod: "abc"}, PropAuthenticationMethod)},
		"F0 08 00 06 150003616263"},
}

func TestEncodeDecodeExact(t *testing.T) {
	for _, tc := range encodeCases {
		t.Run(tc.name, func(t *testing.T) {
			want := hexb(t, tc.hex)
			got := appendPacket(nil, tc.pkt, tc.version)
			if !bytes.Equal(got, want) {
				t.Errorf("Append:\n got % X\nwant % X", got, want)
			}
			if n := packetLen(tc.pkt, tc.version); n != len(want) {
				t.Errorf("Len = %d, want %d", n, len(want))
			}
			// Appending to a prefix keeps the prefix and adds the same bytes.
			prefixed := appendPacket([]byte{0xAA}, tc.pkt, tc.version)
			if prefixed[0] != 0xAA || !bytes.Equal(prefixed[1:], want) {
				t.Errorf("Append after prefix: % X", prefixed)
			}
			dec, err := decodeRaw(want, tc.version, tc.server)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if !reflect.DeepEqual(dec, tc.pkt) {
				t.Errorf("decode:\n got %#v\nwant %#v", dec, tc.pkt)
			}
		})
	}
}

// decodeCases are decoding results for wire bytes: code -1 is success,
// otherwise the reason code of the *Error.
var decodeCases = []struct {
	name    string
	version byte
	hex     string
	code    int
}{
	// Fixed header.
	{"reserved type 0", V5, "00 00", int(ProtocolError)},
	{"reserved type 0 with flags", V311, "0F 00", int(ProtocolError)},
	{"remaining length 5 bytes", V311, "10 FFFFFFFF7F", int(MalformedPacket)},
	{"remaining length overlong", V311, "C0 80 00", int(MalformedPacket)},

	// CONNECT.
	{"CONNECT protocol level 6", V311, "10 0D 0004 4D515454 06 02 000A 0001 70", int(UnsupportedProtocolVersion)},
	{"CONNECT protocol level 2", V311, "10 0D 0004 4D515454 02 02 000A 0001 70", int(UnsupportedProtocolVersion)},
	{"CONNECT MQTT level 3", V311, "10 0D 0004 4D515454 03 02 000A 0001 70", int(UnsupportedProtocolVersion)},
	{"CONNECT MQIsdp level 4", V311, "10 0F 0006 4D5149736470 04 02 000A 0001 70", int(UnsupportedProtocolVersion)},
	{"CONNECT protocol name MQTU", V311, "10 0D 0004 4D515455 04 02 000A 0001 70", int(ProtocolError)},
	{"CONNECT protocol name empty", V311, "10 09 0000 04 02 000A 0001 70", int(ProtocolError)},
	{"CONNECT protocol name truncated", V311, "10 04 0004 4D51", int(MalformedPacket)},
	{"CONNECT no protocol level", V311, "10 06 0004 4D515454", int(MalformedPacket)},
	{"CONNECT no flags", V311, "10 07 0004 4D515454 04", int(MalformedPacket)},
	{"CONNECT no keep alive", V311, "10 09 0004 4D515454 04 02 00", int(MalformedPacket)},
	{"CONNECT no client id", V311, "10 0A 0004 4D515454 04 02 000A", int(MalformedPacket)},
	{"CONNECT fixed header flags 3.1.1", V311, "11 0D 0004 4D515454 04 02 000A 0001 70", int(MalformedPacket)},
	{"CONNECT fixed header flags 5.0", V5, "18 0E 0004 4D515454 05 02 000A 00 0001 70", int(MalformedPacket)},
	{"CONNECT fixed header flags 3.1 ignored", V31, "14 0F 0006 4D5149736470 03 02 000A 0001 70", -1},
	{"CONNECT reserved flag", V311, "10 0D 0004 4D515454 04 03 000A 0001 70", int(MalformedPacket)},
	{"CONNECT reserved flag 3.1 ignored", V31, "10 0F 0006 4D5149736470 03 03 000A 0001 70", -1},
	{"CONNECT will QoS 3", V311, "10 13 0004 4D515454 04 1E 000A 0001 70 0001 70 0001 70", int(MalformedPacket)},
	{"CONNECT will QoS without will", V311, "10 0D 0004 4D515454 04 0A 000A 0001 70", int(MalformedPacket)},
	{"CONNECT will retain without will", V311, "10 0D 0004 4D515454 04 22 000A 0001 70", int(MalformedPacket)},
	{"CONNECT will without topic", V311, "10 0D 0004 4D515454 04 06 000A 0001 70", int(MalformedPacket)},
	{"CONNECT will without payload", V311, "10 10 0004 4D515454 04 06 000A 0001 70 0001 70", int(MalformedPacket)},
	{"CONNECT empty will topic", V311, "10 12 0004 4D515454 04 06 000A 0001 70 0000 0001 70", int(ProtocolError)},
	{"CONNECT will topic wildcard", V311, "10 13 0004 4D515454 04 06 000A 0001 70 0001 23 0001 70", int(ProtocolError)},
	{"CONNECT will topic U+0000", V311, "10 17 0004 4D515454 04 06 000A 0001 70 0005 746F700000 0001 70", int(MalformedPacket)},
	{"CONNECT client id U+D800", V311, "10 11 0004 4D515454 04 02 000A 0005 746FEDA080", int(MalformedPacket)},
	{"CONNECT client id U+0001", V5, "10 12 0004 4D515454 05 02 000A 00 0005 746F700170", int(MalformedPacket)},
	{"CONNECT client id U+009F", V5, "10 12 0004 4D515454 05 02 000A 00 0005 746FC29F70", int(MalformedPacket)},
	{"CONNECT client id U+FFFF", V311, "10 11 0004 4D515454 04 02 000A 0005 746FEDBFBF", int(MalformedPacket)},
	{"CONNECT user name U+007F", V311, "10 14 0004 4D515454 04 82 000A 0001 70 0005 746F707F70", int(MalformedPacket)},
	{"CONNECT user name missing", V5, "10 0E 0004 4D515454 05 82 000A 00 0001 70", int(MalformedPacket)},
	{"CONNECT password missing", V311, "10 10 0004 4D515454 04 C2 000A 0001 70 0001 70", int(MalformedPacket)},
	{"CONNECT password without user name 3.1.1", V311, "10 10 0004 4D515454 04 42 000A 0001 70 0001 70", int(ProtocolError)},
	{"CONNECT password without user name 3.1", V31, "10 12 0006 4D5149736470 03 42 000A 0001 70 0001 70", int(ProtocolError)},
	{"CONNECT password without user name 5.0", V5, "10 11 0004 4D515454 05 42 000A 00 0001 70 0001 70", -1},
	{"CONNECT password with U+0000", V311, "10 17 0004 4D515454 04 C2 000A 0001 70 0001 70 0005 746F700000", -1},
	{"CONNECT trailing user name without flag", V311, "10 10 0004 4D515454 04 02 000A 0001 70 0001 70", int(MalformedPacket)},
	{"CONNECT trailing 5.0", V5, "10 11 0004 4D515454 05 02 000A 00 0001 71 0001 71", int(MalformedPacket)},
	{"CONNECT remaining length short", V311, "10 07 0004 4D515454 04", int(MalformedPacket)},
	{"CONNECT property not allowed", V5, "10 10 0004 4D515454 05 02 000A 02 01 01 0001 70", int(ProtocolError)},
	{"CONNECT property not allowed truncated", V5, "10 0F 0004 4D515454 05 02 000A 01 01 0001 70", int(MalformedPacket)},
	{"CONNECT property length beyond packet", V5, "10 0F 0004 4D515454 05 02 000A 24 01 0001 70", int(MalformedPacket)},
	{"CONNECT property unknown", V5, "10 10 0004 4D515454 05 02 000A 02 04 01 0001 70", int(MalformedPacket)},
	{"CONNECT property identifier 0", V5, "10 10 0004 4D515454 05 02 000A 02 00 01 0001 70", int(MalformedPacket)},
	{"CONNECT property identifier multi-byte", V5, "10 11 0004 4D515454 05 02 000A 03 8001 01 0001 70", int(MalformedPacket)},
	{"CONNECT duplicate session expiry", V5, "10 18 0004 4D515454 05 02 000A 0A 11 00000001 11 00000001 0001 70", int(ProtocolError)},
	{"CONNECT receive maximum 0", V5, "10 11 0004 4D515454 05 02 000A 03 21 0000 0001 70", int(ProtocolError)},
	{"CONNECT topic alias maximum 0", V5, "10 11 0004 4D515454 05 02 000A 03 22 0000 0001 70", -1},
	{"CONNECT maximum packet size 0", V5, "10 13 0004 4D515454 05 02 000A 05 27 00000000 0001 70", int(ProtocolError)},
	{"CONNECT request problem information 2", V5, "10 10 0004 4D515454 05 02 000A 02 17 02 0001 70", int(ProtocolError)},
	{"CONNECT request response information 2", V5, "10 10 0004 4D515454 05 02 000A 02 19 02 0001 70", int(ProtocolError)},
	{"CONNECT authentication data without method", V5, "10 12 0004 4D515454 05 02 000A 04 16 0001 70 0001 70", int(ProtocolError)},
	{"CONNECT user property missing value", V5, "10 12 0004 4D515454 05 02 000A 04 26 0001 70 0001 70", int(MalformedPacket)},
	{"CONNECT user property invalid UTF-8", V5, "10 15 0004 4D515454 05 02 000A 07 26 0001 70 0001 FF 0001 70", int(MalformedPacket)},
	{"CONNECT protocol error then malformed", V5, "10 14 0004 4D515454 05 02 000A 06 01 01 11 00 00 00 0001 70", int(MalformedPacket)},
	{"CONNECT will property not allowed", V5, "10 17 0004 4D515454 05 06 000A 00 0001 70 02 17 01 0001 70 0001 70", int(ProtocolError)},
	{"CONNECT will response topic empty", V5, "10 18 0004 4D515454 05 06 000A 00 0001 70 03 08 0000 0001 70 0001 70", int(ProtocolError)},
	{"CONNECT will payload not UTF-8", V5, "10 17 0004 4D515454 05 06 000A 00 0001 70 02 01 01 0001 70 0001 FF", int(PayloadFormatInvalid)},
	{"CONNECT will payload UTF-8", V5, "10 17 0004 4D515454 05 06 000A 00 0001 70 02 01 01 0001 70 0001 0A", -1},

	// CONNACK.
	{"CONNACK flags", V311, "21 02 00 00", int(MalformedPacket)},
	{"CONNACK reserved acknowledge flags", V311, "20 02 02 00", int(MalformedPacket)},
	{"CONNACK 3.1 acknowledge flags ignored", V31, "20 02 FF 00", -1},
	{"CONNACK return code 6", V311, "20 02 00 06", int(ProtocolError)},
	{"CONNACK session present with refusal", V311, "20 02 01 05", int(ProtocolError)},
	{"CONNACK 3.1.1 long", V311, "20 03 00 00 00", int(MalformedPacket)},
	{"CONNACK short", V311, "20 01 00", int(MalformedPacket)},
	{"CONNACK 5.0 without property length", V5, "20 02 00 00", int(MalformedPacket)},
	{"CONNACK 5.0 invalid reason code", V5, "20 03 00 01 00", int(ProtocolError)},
	{"CONNACK 5.0 property not allowed", V5, "20 06 00 00 03 230001", int(ProtocolError)},
	{"CONNACK 5.0 maximum QoS 2", V5, "20 05 00 00 02 2402", int(ProtocolError)},
	{"CONNACK 5.0 retain available 2", V5, "20 05 00 00 02 2502", int(ProtocolError)},
	{"CONNACK 5.0 trailing", V5, "20 04 00 00 00 00", int(MalformedPacket)},

	// PUBLISH.
	{"PUBLISH QoS 3", V5, "36 0F 0005 746F706963 00 7061796C6F6164", int(MalformedPacket)},
	{"PUBLISH QoS 3 with id", V311, "36 10 0005 746F706963 1234 7061796C6F6164", int(MalformedPacket)},
	{"PUBLISH DUP on QoS 0", V311, "38 0E 0005 746F706963 7061796C6F6164", int(MalformedPacket)},
	{"PUBLISH topic +", V5, "30 0F 0005 2B6F706963 00 7061796C6F6164", int(MalformedPacket)},
	{"PUBLISH topic #", V311, "30 0E 0005 236F706963 7061796C6F6164", int(MalformedPacket)},
	{"PUBLISH empty topic 3.1.1", V311, "30 09 0000 7061796C6F6164", int(MalformedPacket)},
	{"PUBLISH empty topic 5.0 without alias", V5, "30 0A 0000 00 7061796C6F6164", int(MalformedPacket)},
	{"PUBLISH topic U+0000", V311, "30 0E 0005 746F700000 7061796C6F6164", int(MalformedPacket)},
	{"PUBLISH topic U+001F", V5, "30 0F 0005 746F701F70 00 7061796C6F6164", int(MalformedPacket)},
	{"PUBLISH topic overlong UTF-8", V5, "30 0C 0002 C0AF 00 7061796C6F6164", int(MalformedPacket)},
	{"PUBLISH QoS 1 id 0", V5, "32 11 0005 746F706963 0000 00 7061796C6F6164", int(ProtocolError)},
	{"PUBLISH QoS 2 id 0 3.1.1", V311, "34 10 0005 746F706963 0000 7061796C6F6164", int(ProtocolError)},
	{"PUBLISH topic truncated", V311, "30 04 0005 7470", int(MalformedPacket)},
	{"PUBLISH no topic length", V311, "30 01 00", int(MalformedPacket)},
	{"PUBLISH id truncated", V311, "32 04 0001 70 00", int(MalformedPacket)},
	{"PUBLISH 5.0 no property length", V5, "30 03 0001 70", int(MalformedPacket)},
	{"PUBLISH payload format 1 not UTF-8", V5, "30 08 0001 70 02 0101 C3 28", int(PayloadFormatInvalid)},
	{"PUBLISH payload format 1 UTF-8 with newline", V5, "30 09 0001 70 02 0101 C3A90A", -1},
	{"PUBLISH payload format 0 binary", V5, "30 08 0001 70 02 0100 C3 28", -1},
	{"PUBLISH payload format 2", V5, "32 13 0005 746F706963 1234 02 0102 7061796C6F6164", int(ProtocolError)},
	{"PUBLISH duplicate payload format", V5, "32 15 0005 746F706963 1234 04 0101 0101 7061796C6F6164", int(ProtocolError)},
	{"PUBLISH topic alias 0", V5, "30 08 0001 70 03 230000 70", int(TopicAliasInvalid)}, // [MQTT-3.3.2-8],
	{"PUBLISH duplicate topic alias", V5, "32 17 0005 746F706963 1234 06 230001 230002 7061796C6F6164", int(ProtocolError)},
	{"PUBLISH subscription identifier 0", V5, "32 13 0005 746F706963 1234 02 0B00 7061796C6F6164", int(ProtocolError)},
	{"PUBLISH subscription identifier overlong", V5, "32 14 0005 746F706963 1234 03 0B8000 7061796C6F6164", int(MalformedPacket)},
	{"PUBLISH subscription identifier 5 bytes", V5, "32 17 0005 746F706963 1234 06 0B8080808001 7061796C6F6164", int(MalformedPacket)},
	{"PUBLISH two subscription identifiers", V5, "32 15 0005 746F706963 1234 04 0B01 0B01 7061796C6F6164", -1},
	{"PUBLISH response topic wildcard", V5, "32 15 0005 746F706963 1234 04 08000123 7061796C6F6164", int(ProtocolError)},
	{"PUBLISH response topic empty", V5, "32 14 0005 746F706963 1234 03 080000 7061796C6F6164", int(ProtocolError)},
	{"PUBLISH correlation data empty", V5, "32 14 0005 746F706963 1234 03 090000 7061796C6F6164", -1},
	{"PUBLISH session expiry not allowed", V5, "32 16 0005 746F706963 1234 05 1100000001 7061796C6F6164", int(ProtocolError)},
	{"PUBLISH reason string not allowed", V5, "32 15 0005 746F706963 1234 04 1F000170 7061796C6F6164", int(ProtocolError)},
	{"PUBLISH property truncated", V5, "32 12 0005 746F706963 1234 01 02 7061796C6F6164", int(MalformedPacket)},
	{"PUBLISH content type truncated", V5, "32 13 0005 746F706963 1234 02 0300 7061796C6F6164", int(MalformedPacket)},

	// Acknowledgements.
	{"PUBACK 3.1.1 long", V311, "40 03 0001 00", int(MalformedPacket)},
	{"PUBACK short 1", V311, "40 01 01", int(MalformedPacket)},
	{"PUBACK short 0", V5, "40 00", int(MalformedPacket)},
	{"PUBACK id 0 3.1.1", V311, "40 02 0000", int(ProtocolError)},
	{"PUBACK id 0 5.0", V5, "40 03 0000 00", int(ProtocolError)},
	{"PUBACK flags", V5, "41 03 0001 00", int(MalformedPacket)},
	{"PUBACK flags 3.1 ignored", V31, "41 02 0001", -1},
	{"PUBACK 5.0 reason 0xFF", V5, "40 04 0001 FF 00", int(ProtocolError)},
	{"PUBACK 5.0 reason 0x92", V5, "40 03 0001 92", int(ProtocolError)},
	{"PUBACK 5.0 reason 0x80 no properties", V5, "40 03 0001 80", -1},
	{"PUBACK 5.0 empty properties", V5, "40 04 0001 00 00", -1},
	{"PUBACK 5.0 property length beyond", V5, "40 04 0001 00 01", int(MalformedPacket)},
	{"PUBACK 5.0 trailing", V5, "40 05 0001 00 00 00", int(MalformedPacket)},
	{"PUBACK 5.0 reason string incomplete", V5, "40 06 0001 00 02 1F 00", int(MalformedPacket)},
	{"PUBACK 5.0 duplicate reason string", V5, "40 0C 0001 00 08 1F000170 1F000171", int(ProtocolError)},
	{"PUBACK 5.0 property not allowed", V5, "40 06 0001 00 02 0100", int(ProtocolError)},
	{"PUBACK 5.0 unknown property", V5, "40 06 0001 00 02 7F01", int(MalformedPacket)},
	{"PUBREC 5.0 quota exceeded", V5, "50 03 0001 97", -1},
	{"PUBREL flags 0", V311, "60 02 0001", int(MalformedPacket)},
	{"PUBREL flags 3", V5, "63 03 0001 00", int(MalformedPacket)},
	{"PUBREL 5.0 reason 0x80", V5, "62 03 0001 80", int(ProtocolError)},
	{"PUBCOMP 5.0 reason 0x80", V5, "70 03 0001 80", int(ProtocolError)},
	{"PUBCOMP 5.0 reason 0x20", V5, "70 03 0001 20", int(ProtocolError)},
	{"PUBCOMP flags", V311, "72 02 0001", int(MalformedPacket)},

	// SUBSCRIBE.
	{"SUBSCRIBE flags 0", V311, "80 06 1234 0001 70 00", int(MalformedPacket)},
	{"SUBSCRIBE flags 3", V5, "83 07 1234 00 0001 70 00", int(MalformedPacket)},
	{"SUBSCRIBE flags 3.1 ignored", V31, "80 06 1234 0001 70 00", -1},
	{"SUBSCRIBE id 0", V5, "82 07 0000 00 0001 70 00", int(MalformedPacket)},
	{"SUBSCRIBE no filter 3.1.1", V311, "82 02 1234", int(MalformedPacket)},
	{"SUBSCRIBE no filter 5.0", V5, "82 03 1234 00", int(MalformedPacket)},
	{"SUBSCRIBE no options", V5, "82 06 1234 00 0001 70", int(MalformedPacket)},
	{"SUBSCRIBE empty filter", V311, "82 05 1234 0000 00", int(MalformedPacket)},
	{"SUBSCRIBE second filter empty", V5, "82 0A 1234 00 0001 71 00 0000 00", int(MalformedPacket)},
	{"SUBSCRIBE filter U+FFFF", V311, "82 0A 1234 0005 746FEDBFBF 00", int(MalformedPacket)},
	{"SUBSCRIBE QoS 3", V311, "82 06 1234 0001 70 03", int(MalformedPacket)},
	{"SUBSCRIBE 3.1.1 option 0x04", V311, "82 06 1234 0001 70 04", int(MalformedPacket)},
	{"SUBSCRIBE 5.0 no local", V5, "82 07 1234 00 0001 70 04", -1},
	{"SUBSCRIBE 5.0 retain handling 3", V5, "82 07 1234 00 0001 70 30", int(MalformedPacket)},
	{"SUBSCRIBE 5.0 option 0x40", V5, "82 07 1234 00 0001 70 40", int(MalformedPacket)},
	{"SUBSCRIBE 5.0 QoS 3", V5, "82 07 1234 00 0001 70 03", int(MalformedPacket)},
	{"SUBSCRIBE 5.0 long", V5, "82 08 1234 00 0001 70 00 00", int(MalformedPacket)},
	{"SUBSCRIBE 5.0 property not allowed", V5, "82 09 0001 02 0100 0001 70 00", int(MalformedPacket)},
	{"SUBSCRIBE 5.0 subscription identifier 0", V5, "82 09 0001 02 0B00 0001 70 00", int(MalformedPacket)},
	{"SUBSCRIBE 5.0 duplicate subscription identifier", V5, "82 0B 0001 04 0B010B01 0001 70 00", int(ProtocolError)},
	{"SUBSCRIBE 5.0 user property", V5, "82 0E 0001 07 26000170000171 0001 70 00", -1},

	// SUBACK.
	{"SUBACK flags", V5, "91 04 0001 00 00", int(MalformedPacket)},
	{"SUBACK id 0", V311, "90 03 0000 00", int(ProtocolError)},
	{"SUBACK no reason code", V311, "90 02 0001", int(MalformedPacket)},
	{"SUBACK 5.0 no reason code", V5, "90 03 0001 00", int(MalformedPacket)},
	{"SUBACK 3.1.1 code 0x87", V311, "90 03 0001 87", int(ProtocolError)},
	{"SUBACK 5.0 code 0x11", V5, "90 04 0001 00 11", int(ProtocolError)},
	{"SUBACK 5.0 code 0xA2", V5, "90 04 0001 00 A2", -1},
	{"SUBACK 5.0 property not allowed", V5, "90 06 0001 02 0100 00", int(ProtocolError)},
	{"SUBACK 5.0 property truncated", V5, "90 05 0001 01 1F 00", int(MalformedPacket)},

	// UNSUBSCRIBE.
	{"UNSUBSCRIBE flags 0", V311, "A0 05 1234 0001 70", int(MalformedPacket)},
	{"UNSUBSCRIBE flags 6", V5, "A6 06 1234 00 0001 70", int(MalformedPacket)},
	{"UNSUBSCRIBE id 0", V5, "A2 06 0000 00 0001 70", int(MalformedPacket)},
	{"UNSUBSCRIBE no filter 3.1.1", V311, "A2 02 1234", int(MalformedPacket)},
	{"UNSUBSCRIBE no filter 5.0", V5, "A2 03 1234 00", int(MalformedPacket)},
	{"UNSUBSCRIBE empty filter", V5, "A2 08 1234 00 0000 0001 71", int(MalformedPacket)},
	{"UNSUBSCRIBE filter truncated", V311, "A2 04 1234 0001", int(MalformedPacket)},
	{"UNSUBSCRIBE filter U+D800", V311, "A2 09 1234 0005 746FEDA080", int(MalformedPacket)},
	{"UNSUBSCRIBE property not allowed", V5, "A2 0A 0001 04 03000170 0001 70", int(MalformedPacket)},
	{"UNSUBSCRIBE user property missing value", V5, "A2 0A 0001 04 26000170 0001 70", int(MalformedPacket)},

	// UNSUBACK.
	{"UNSUBACK flags", V311, "B1 02 0001", int(MalformedPacket)},
	{"UNSUBACK 3.1.1 long", V311, "B0 03 0001 00", int(MalformedPacket)},
	{"UNSUBACK id 0", V311, "B0 02 0000", int(ProtocolError)},
	{"UNSUBACK 5.0 no reason code", V5, "B0 03 0001 00", int(MalformedPacket)},
	{"UNSUBACK 5.0 no property length", V5, "B0 02 0001", int(MalformedPacket)},
	{"UNSUBACK 5.0 invalid code", V5, "B0 04 0001 00 01", int(ProtocolError)},
	{"UNSUBACK 5.0 not authorized", V5, "B0 04 0001 00 87", -1},

	// PINGREQ / PINGRESP.
	{"PINGREQ flags", V5, "C1 00", int(MalformedPacket)},
	{"PINGREQ long", V311, "C0 01 00", int(MalformedPacket)},
	{"PINGRESP flags", V5, "D8 00", int(MalformedPacket)},
	{"PINGRESP long", V5, "D0 01 00", int(MalformedPacket)},

	// DISCONNECT (from a client).
	{"DISCONNECT 3.1.1 long", V311, "E0 01 00", int(MalformedPacket)},
	{"DISCONNECT 3.1.1 flags", V311, "E1 00", int(MalformedPacket)},
	{"DISCONNECT 5.0 flags", V5, "E2 00", int(MalformedPacket)},
	{"DISCONNECT 5.0 reason only", V5, "E0 01 00", -1},
	{"DISCONNECT 5.0 empty properties", V5, "E0 02 82 00", -1},
	{"DISCONNECT 5.0 reason 0x01", V5, "E0 01 01", int(ProtocolError)},
	{"DISCONNECT 5.0 reason 0x8B from client", V5, "E0 01 8B", int(ProtocolError)},
	{"DISCONNECT 5.0 reason 0x99", V5, "E0 01 99", -1},
	{"DISCONNECT 5.0 property identifier 0", V5, "E0 03 00 01 00", int(MalformedPacket)},
	{"DISCONNECT 5.0 session expiry truncated", V5, "E0 06 00 04 11000000", int(MalformedPacket)},
	{"DISCONNECT 5.0 trailing", V5, "E0 03 00 00 00", int(MalformedPacket)},
	{"DISCONNECT 5.0 property not allowed", V5, "E0 04 00 02 2400", int(ProtocolError)},
	{"DISCONNECT 5.0 duplicate reason string", V5, "E0 0A 00 08 1F000170 1F000171", int(ProtocolError)},
	{"DISCONNECT 5.0 server reference empty", V5, "E0 05 00 03 1C 0000", -1},

	// AUTH (from a client).
	{"AUTH 3.1.1", V311, "F0 00", int(ProtocolError)},
	{"AUTH flags", V5, "F1 00", int(MalformedPacket)},
	{"AUTH without method", V5, "F0 00", int(ProtocolError)},
	{"AUTH reason only", V5, "F0 01 18", int(ProtocolError)},
	{"AUTH empty properties", V5, "F0 02 18 00", int(ProtocolError)},
	{"AUTH reason 0x05", V5, "F0 08 05 06 150003616263", int(ProtocolError)},
	{"AUTH data without method", V5, "F0 07 18 05 1600020102", int(ProtocolError)},
	{"AUTH property not allowed", V5, "F0 0A 18 08 150003616263 2401", int(ProtocolError)},
	{"AUTH trailing", V5, "F0 09 18 06 150003616263 00", int(MalformedPacket)},
	{"AUTH method truncated", V5, "F0 05 18 03 150003", int(MalformedPacket)},
}

func TestDecodeCases(t *testing.T) {
	for _, tc := range decodeCases {
		t.Run(tc.name, func(t *testing.T) {
			raw := hexb(t, tc.hex)
			pkt, err := decodeRaw(raw, tc.version, false)
			if got := codeOf(err); got != tc.code {
				t.Fatalf("got code %d (%v), want %d", got, err, tc.code)
			}
			if err != nil {
				return
			}
			// A successful decode must survive a round trip.
			enc := appendPacket(nil, pkt, tc.version)
			if n := packetLen(pkt, tc.version); n != len(enc) {
				t.Errorf("Len = %d, encoded %d bytes", n, len(enc))
			}
			again, err := decodeRaw(enc, tc.version, false)
			if err != nil {
				t.Fatalf("re-decode of % X: %v", enc, err)
			}
			if !reflect.DeepEqual(again, pkt) {
				t.Errorf("round trip:\n got %#v\nwant %#v", again, pkt)
			}
		})
	}
}

func TestDecodeConnectReportsVersionOnError(t *testing.T) {
	for _, tc := range []struct {
		hex     string
		name    string
		version byte
		code    byte
	}{
		{"0004 4D515454 06 02 000A 0001 70", "MQTT", 6, UnsupportedProtocolVersion},
		{"0006 4D5149736470 02 02 000A 0001 70", "MQIsdp", 2, UnsupportedProtocolVersion},
		{"0004 4D515454 05 02 000A 01 11 0001 70", "MQTT", V5, MalformedPacket},
		{"0004 4D515455 05 02 000A 00 0001 70", "MQTU", V5, ProtocolError},
		{"0004 4D51", "", 0, MalformedPacket},
	} {
		var p Connect
		err := DecodeConnect(&p, 0, hexb(t, tc.hex))
		if codeOf(err) != int(tc.code) {
			t.Errorf("%s: got %v, want code 0x%02X", tc.hex, err, tc.code)
		}
		if p.ProtocolName != tc.name || p.ProtocolVersion != tc.version {
			t.Errorf("%s: got name %q version %d, want %q %d", tc.hex, p.ProtocolName, p.ProtocolVersion, tc.name, tc.version)
		}
	}
}

func TestDecodeDirection(t *testing.T) {
	// Reason codes a server may send but a client may not, and the reverse.
	for _, tc := range []struct {
		hex                 string
		fromClient, fromSrv int
	}{
		{"E0 01 8E", int(ProtocolError), -1},
		{"E0 01 9C", int(ProtocolError), -1},
		{"E0 01 04", -1, int(ProtocolError)},
		{"E0 01 05", int(ProtocolError), int(ProtocolError)},
		{"F0 08 19 06 150003616263", -1, int(ProtocolError)},
	} {
		raw := hexb(t, tc.hex)
		if _, err := decodeRaw(raw, V5, false); codeOf(err) != tc.fromClient {
			t.Errorf("%s from client: %v, want %d", tc.hex, err, tc.fromClient)
		}
		if _, err := decodeRaw(raw, V5, true); codeOf(err) != tc.fromSrv {
			t.Errorf("%s from server: %v, want %d", tc.hex, err, tc.fromSrv)
		}
	}
	var d Disconnect
	if err := DecodeDisconnect(&d, 0, []byte{SessionTakenOver}, V5); codeOf(err) != int(ProtocolError) {
		t.Errorf("DecodeDisconnect(0x8E) = %v, want protocol error", err)
	}
	var a Auth
	if err := DecodeAuth(&a, 0, hexb(t, "19 06 150003616263"), V5); err != nil {
		t.Errorf("DecodeAuth(re-authenticate) = %v", err)
	}
}

// TestDecoderReuse decodes a rich packet and then a minimal one into the same
// struct: nothing of the first may survive.
func TestDecoderReuse(t *testing.T) {
	for _, tc := range []struct {
		name          string
		version       byte
		rich, minimal string
	}{
		{"CONNECT", V5, "10 33 0004 4D515454 05 46 003C 0F 1100000078 210014 2600016B000176 0001 63 0B 0101 03000161 1800000005 0001 74 0001 78 0002 7077",
			"10 0D 0004 4D515454 05 00 0000 00 0000"},
		{"CONNACK", V5, "20 09 01 00 06 22000A 210014", "20 03 00 80 00"},
		{"PUBLISH", V5, "34 28 0003 612F62 0007 1E 0101 020000003C 08000172 09000163 0B01 0BAC02 230003 2600016B000176 6869",
			"30 04 0001 70 00"},
		{"PUBREC", V5, "50 08 0001 80 04 1F000170", "50 02 0002"},
		{"SUBSCRIBE", V5, "82 0D 1234 02 0B05 0001 70 2D 0001 2B 00", "82 07 0001 00 0001 71 00"},
		{"SUBACK", V5, "90 09 1234 04 1F000170 00 02", "90 04 0001 00 00"},
		{"UNSUBSCRIBE", V5, "A2 0D 0001 07 26000170000171 0001 70", "A2 06 0002 00 0001 71"},
		{"UNSUBACK", V5, "B0 09 1234 04 1F000170 00 11", "B0 04 0001 00 00"},
		{"DISCONNECT", V5, "E0 0C 00 0A 1100000000 1F00027879", "E0 00"},
		{"AUTH", V5, "F0 0D 19 0B 150003616263 1600020102", "F0 08 18 06 150003616263"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rich, minimal := hexb(t, tc.rich), hexb(t, tc.minimal)
			fresh, err := decodeRaw(minimal, tc.version, false)
			if err != nil {
				t.Fatal(err)
			}
			reused := reflect.New(reflect.TypeOf(fresh).Elem()).Interface()
			decodeInto := func(raw []byte) error {
				h, n, _ := ParseFixedHeader(raw)
				body := raw[n:]
				switch p := reused.(type) {
				case *Connect:
					return DecodeConnect(p, h.Flags, body)
				case *Connack:
					return DecodeConnack(p, h.Flags, body, tc.version)
				case *Publish:
					return DecodePublish(p, h.Flags, body, tc.version)
				case *Ack:
					return DecodeAck(p, h.Type, h.Flags, body, tc.version)
				case *Subscribe:
					return DecodeSubscribe(p, h.Flags, body, tc.version)
				case *Suback:
					return DecodeSuback(p, h.Flags, body, tc.version)
				case *Unsubscribe:
					return DecodeUnsubscribe(p, h.Flags, body, tc.version)
				case *Unsuback:
					return DecodeUnsuback(p, h.Flags, body, tc.version)
				case *Disconnect:
					return DecodeDisconnect(p, h.Flags, body, tc.version)
				case *Auth:
					return DecodeAuth(p, h.Flags, body, tc.version)
				}
				t.Fatalf("unhandled %T", reused)
				return nil
			}
			if err := decodeInto(rich); err != nil {
				t.Fatalf("rich: %v", err)
			}
			if err := decodeInto(minimal); err != nil {
				t.Fatalf("minimal: %v", err)
			}
			// Reused slices keep their capacity, so compare through a
			// round trip plus the fields that matter.
			got := appendPacket(nil, reused, tc.version)
			want := appendPacket(nil, fresh, tc.version)
			if !bytes.Equal(got, want) {
				t.Errorf("reused decode re-encodes as % X, fresh as % X", got, want)
			}
			if !equalIgnoringEmptySlices(reused, fresh) {
				t.Errorf("reused:\n%#v\nfresh:\n%#v", reused, fresh)
			}
		})
	}
}

// equalIgnoringEmptySlices compares two values treating nil and empty slices
// as equal.
func equalIgnoringEmptySlices(a, b any) bool {
	return equalValue(reflect.ValueOf(a), reflect.ValueOf(b))
}

func equalValue(a, b reflect.Value) bool {
	if a.Kind() != b.Kind() {
		return false
	}
	switch a.Kind() {
	case reflect.Pointer:
		if a.IsNil() || b.IsNil() {
			return a.IsNil() == b.IsNil()
		}
		return equalValue(a.Elem(), b.Elem())
	case reflect.Struct:
		for i := 0; i < a.NumField(); i++ {
			if !equalValue(a.Field(i), b.Field(i)) {
				return false
			}
		}
		return true
	case reflect.Slice:
		if a.Len() != b.Len() {
			return false
		}
		for i := 0; i < a.Len(); i++ {
			if !equalValue(a.Index(i), b.Index(i)) {
				return false
			}
		}
		return true
	default:
		return a.Equal(b)
	}
}

func TestPublishAppendHeader(t *testing.T) {
	for _, v := range []byte{V311, V5} {
		p := &Publish{QoS: 1, Topic: "a/b", PacketID: 9, Payload: bytes.Repeat([]byte("x"), 300),
			Props: withProps(Properties{ContentType: "text/plain"}, PropContentType)}
		full := p.Append(nil, v)
		hdr := p.AppendHeader(nil, v)
		if !bytes.Equal(append(hdr, p.Payload...), full) {
			t.Errorf("%s: header+payload differs from Append", versionName(v))
		}
		if len(full) != p.Len(v) {
			t.Errorf("%s: Len %d, encoded %d", versionName(v), p.Len(v), len(full))
		}
		h, n, err := ParseFixedHeader(hdr)
		if err != nil || n == 0 || n+h.Remaining != len(full) {
			t.Errorf("%s: header says %d+%d, packet is %d (%v)", versionName(v), n, h.Remaining, len(full), err)
		}
	}
}

func TestVersionSpecificEncoding(t *testing.T) {
	props := withProps(Properties{ReasonString: "r", User: []UserProperty{{"k", "v"}}}, PropReasonString, PropUserProperty)
	for _, tc := range []struct {
		name    string
		pkt     any
		version byte
		hex     string
	}{
		{"3.x ack ignores reason and properties", &Ack{Type: PUBACK, PacketID: 1, ReasonCode: 0x80, Props: props}, V311, "40 02 0001"},
		{"3.x UNSUBACK has no payload", &Unsuback{PacketID: 1, ReasonCodes: []byte{0x11}, Props: props}, V311, "B0 02 0001"},
		{"3.x DISCONNECT", &Disconnect{ReasonCode: 0x80, Props: props}, V311, "E0 00"},
		{"3.x CONNACK", &Connack{ReasonCode: 5, Props: props}, V311, "20 02 00 05"},
		{"3.1 CONNACK never session present", &Connack{SessionPresent: true}, V31, "20 02 00 00"},
		{"3.x PUBLISH without properties", &Publish{Topic: "t", Props: props}, V311, "30 03 0001 74"},
		{"3.x SUBSCRIBE only QoS option", &Subscribe{PacketID: 1, Props: props,
			Subs: []Subscription{{Filter: "t", QoS: 2, NoLocal: true, RetainHandling: 2}}}, V311, "82 06 0001 0001 74 02"},
		{"5.0 DISCONNECT reason without properties", &Disconnect{ReasonCode: 0x81}, V5, "E0 01 81"},
		{"5.0 AUTH success short form", &Auth{}, V5, "F0 00"},
		{"5.0 CONNACK always has property length", &Connack{}, V5, "20 03 00 00 00"},
		{"5.0 PUBREL success short form", &Ack{Type: PUBREL, PacketID: 0x1234}, V5, "62 02 1234"},
		{"5.0 PUBCOMP reason without properties", &Ack{Type: PUBCOMP, PacketID: 0x1234, ReasonCode: 0x92}, V5, "70 03 1234 92"},
	} {
		got := appendPacket(nil, tc.pkt, tc.version)
		if want := hexb(t, tc.hex); !bytes.Equal(got, want) {
			t.Errorf("%s: got % X, want % X", tc.name, got, want)
		}
		if n := packetLen(tc.pkt, tc.version); n != len(got) {
			t.Errorf("%s: Len %d, encoded %d", tc.name, n, len(got))
		}
	}
}

func TestUserPropertyOrderPreserved(t *testing.T) {
	user := []UserProperty{{"b", "1"}, {"a", "2"}, {"b", "3"}, {"", ""}, {"a", "2"}}
	p := &Publish{Topic: "t", Props: withProps(Properties{User: user}, PropUserProperty)}
	dec, err := decodeRaw(p.Append(nil, V5), V5, false)
	if err != nil {
		t.Fatal(err)
	}
	if got := dec.(*Publish).Props.User; !reflect.DeepEqual(got, user) {
		t.Errorf("user properties %v, want %v", got, user)
	}
}

func TestAppendDoesNotAllocate(t *testing.T) {
	buf := make([]byte, 0, 4096)
	pub := &Publish{QoS: 1, Topic: "sensors/1/temp", PacketID: 7, Payload: make([]byte, 256),
		Props: withProps(Properties{MessageExpiryInterval: 30, User: []UserProperty{{"k", "v"}},
			SubscriptionIdentifiers: []uint32{1, 2}}, PropMessageExpiryInterval, PropUserProperty)}
	conn := &Connect{ProtocolVersion: V5, ClientID: "c", Props: withProps(Properties{ReceiveMaximum: 1}, PropReceiveMaximum)}
	ack := &Ack{Type: PUBACK, PacketID: 1, ReasonCode: 0x10}
	sub := &Subscribe{PacketID: 1, Subs: []Subscription{{Filter: "a/#", QoS: 1}}}
	allocs := testing.AllocsPerRun(100, func() {
		b := pub.Append(buf[:0], V5)
		b = pub.AppendHeader(b, V311)
		b = conn.Append(b)
		b = ack.Append(b, V5)
		b = sub.Append(b, V5)
		b = (&Connack{}).Append(b, V5)
		b = (&Disconnect{ReasonCode: 0x8E}).Append(b, V5)
		_ = AppendPingresp(b)
	})
	if allocs != 0 {
		t.Errorf("Append allocates %.1f times", allocs)
	}
}

func TestDecodePublishDoesNotAllocate(t *testing.T) {
	raw := hexb(t, "34 28 0003 612F62 0007 1E 0101 020000003C 08000172 09000163 0B01 0BAC02 230003 2600016B000176 6869")
	h, n, _ := ParseFixedHeader(raw)
	body := raw[n:]
	var p Publish
	if err := DecodePublish(&p, h.Flags, body, V5); err != nil { // warm up: grows the reused slices
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(100, func() {
		if err := DecodePublish(&p, h.Flags, body, V5); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("DecodePublish allocates %.1f times", allocs)
	}
}

func TestDecodedSlicesAreCapped(t *testing.T) {
	raw := hexb(t, "30 0B 0001 70 00 6d657373616765")
	pkt, err := decodeRaw(raw, V5, false)
	if err != nil {
		t.Fatal(err)
	}
	p := pkt.(*Publish)
	if len(p.Payload) != 7 || cap(p.Payload) != 7 {
		t.Errorf("payload len %d cap %d", len(p.Payload), cap(p.Payload))
	}
	raw = hexb(t, "10 16 0004 4D515454 05 00 0000 08 15 0001 6D 16 0001 01 0001 63")
	pkt, err = decodeRaw(raw, V5, false)
	if err != nil {
		t.Fatal(err)
	}
	if d := pkt.(*Connect).Props.AuthenticationData; cap(d) != 1 {
		t.Errorf("authentication data cap %d", cap(d))
	}
}
