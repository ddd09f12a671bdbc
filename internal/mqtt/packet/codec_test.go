package packet

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
)

func TestVarint(t *testing.T) {
	for _, tc := range []struct {
		v   int
		hex string
	}{
		{0, "00"}, {1, "01"}, {127, "7F"}, {128, "8001"}, {16383, "FF7F"}, {16384, "808001"},
		{2097151, "FFFF7F"}, {2097152, "80808001"}, {MaxRemainingLength, "FFFFFF7F"},
	} {
		want := hexb(t, tc.hex)
		if got := EncodeVarint(nil, tc.v); !bytes.Equal(got, want) {
			t.Errorf("EncodeVarint(%d) = % X, want % X", tc.v, got, want)
		}
		if n := VarintLen(tc.v); n != len(want) {
			t.Errorf("VarintLen(%d) = %d, want %d", tc.v, n, len(want))
		}
		if v, n := uvarint(want); v != tc.v || n != len(want) {
			t.Errorf("uvarint(% X) = %d, %d", want, v, n)
		}
	}
	for _, bad := range []string{"8000", "FF00", "808000", "80808000", "8080808001", "FFFFFFFF7F"} {
		if _, n := uvarint(hexb(t, bad)); n >= 0 {
			t.Errorf("uvarint(%s) accepted (n=%d)", bad, n)
		}
	}
	for _, short := range []string{"", "80", "FFFF", "FFFFFF"} {
		if _, n := uvarint(hexb(t, short)); n != 0 {
			t.Errorf("uvarint(%s) = n %d, want 0 (need more)", short, n)
		}
	}
	for _, v := range []int{-1, MaxRemainingLength + 1} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("EncodeVarint(%d) did not panic", v)
				}
			}()
			EncodeVarint(nil, v)
		}()
	}
}

func TestOversizedStringPanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("a 65536-byte topic was encoded")
		}
	}()
	(&Publish{Topic: strings.Repeat("a", 0x10000)}).Append(nil, V311)
}

func TestParseFixedHeader(t *testing.T) {
	for _, tc := range []struct {
		hex  string
		want FixedHeader
		n    int
		code int
	}{
		{"", FixedHeader{}, 0, -1},
		{"30", FixedHeader{}, 0, -1},
		{"30 80", FixedHeader{}, 0, -1},
		{"30 FF FF FF", FixedHeader{}, 0, -1},
		{"30 00", FixedHeader{PUBLISH, 0, 0}, 2, -1},
		{"3D 7F AA", FixedHeader{PUBLISH, 0xD, 127}, 2, -1},
		{"62 80 01", FixedHeader{PUBREL, 2, 128}, 3, -1},
		{"F0 FF FF FF 7F", FixedHeader{AUTH, 0, MaxRemainingLength}, 5, -1},
		{"30 FF FF FF FF", FixedHeader{}, 0, int(MalformedPacket)},
		{"30 80 80 80 80 01", FixedHeader{}, 0, int(MalformedPacket)},
		{"30 80 00", FixedHeader{}, 0, int(MalformedPacket)},
		{"00", FixedHeader{}, 0, int(ProtocolError)},
		{"01 00", FixedHeader{}, 0, int(ProtocolError)},
	} {
		h, n, err := ParseFixedHeader(hexb(t, tc.hex))
		if h != tc.want || n != tc.n || codeOf(err) != tc.code {
			t.Errorf("ParseFixedHeader(%s) = %+v, %d, %v; want %+v, %d, code %d", tc.hex, h, n, err, tc.want, tc.n, tc.code)
		}
	}
	if got := AppendFixedHeader(nil, PUBREL, 2, 321); !bytes.Equal(got, hexb(t, "62 C1 02")) {
		t.Errorf("AppendFixedHeader = % X", got)
	}
}

func TestValidString(t *testing.T) {
	for _, tc := range []struct {
		s  string
		ok bool
	}{
		{"", true},
		{"sport/tennis/player1", true},
		{"caf\u00e9 \u00a0\u00ff \u4e2d\u6587", true},
		{"A\U0002A6D4", true},
		{"\U0010FFFD", true},
		{"\uFFFD", true}, // the replacement character itself is fine
		{"tab\tin", false},
		{"nl\n", false},
		{"\x00", false},
		{"\x01", false},
		{"\x1F", false},
		{"\x7F", false},
		{"\u0080", false},
		{"\u009F", false},
		{"\xED\xA0\x80", false},     // U+D800
		{"\xED\xBF\xBF", false},     // U+DFFF
		{"\xC0\x80", false},         // overlong U+0000
		{"\xC1\xBF", false},         // overlong
		{"\xE0\x9F\xBF", false},     // overlong
		{"\xF4\x90\x80\x80", false}, // above U+10FFFF
		{"\xF8\x88\x80\x80\x80", false},
		{"\xE4\xB8", false}, // truncated
		{"\x80", false},     // lone continuation
		{"\uFDD0", false},
		{"\uFDEF", false},
		{"\uFDF0", true},
		{"\uFFFE", false},
		{"\uFFFF", false},
		{"\U0001FFFF", false},
		{"\U0010FFFE", false},
		{"0123456789 ~!@#$%^&*()_+{}|:<>?`-=[];',./AZaz", true},
		{"abcdefgh\x7Fijklmnop", false},
		{"abcdefghijklmno\x1F", false},
		{"abcdefgh\x00ijklmnop", false},
		{"abcdefgh\u00e9ijklmnop\u0085qrstuvwx", false},
		{"abcdefgh\u00e9ijklmnop\u00a0qrstuvwx", true},
	} {
		if got := ValidString(tc.s); got != tc.ok {
			t.Errorf("ValidString(%q) = %v, want %v", tc.s, got, tc.ok)
		}
	}
}

func TestReadPacket(t *testing.T) {
	var stream []byte
	pub := &Publish{QoS: 1, Topic: "a", PacketID: 1, Payload: []byte("x")}
	stream = pub.Append(stream, V5)
	stream = (&Ack{Type: PUBACK, PacketID: 1, ReasonCode: NoMatchingSubscribers}).Append(stream, V5)
	stream = AppendPingresp(stream)
	stream = (&Disconnect{ReasonCode: ServerShuttingDown}).Append(stream, V5)

	r := iotest.OneByteReader(bytes.NewReader(stream))
	var got []any
	for {
		p, err := ReadPacket(r, V5, 0)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, p)
	}
	want := []any{pub, &Ack{Type: PUBACK, PacketID: 1, ReasonCode: NoMatchingSubscribers}, PINGRESP,
		&Disconnect{ReasonCode: ServerShuttingDown}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("read %#v, want %#v", got, want)
	}

	// Each packet owns its body: the first payload survives later reads.
	r = bytes.NewReader(append(pub.Append(nil, V311), (&Publish{Topic: "b", Payload: []byte("y")}).Append(nil, V311)...))
	p1, _ := ReadPacket(r, V311, 0)
	p2, _ := ReadPacket(r, V311, 0)
	if p1.(*Publish).Topic != "a" || string(p1.(*Publish).Payload) != "x" || p2.(*Publish).Topic != "b" {
		t.Errorf("packets share buffers: %+v %+v", p1, p2)
	}

	for _, tc := range []struct {
		name    string
		hex     string
		max     int
		err     error
		code    int
		version byte
	}{
		{"empty stream", "", 0, io.EOF, -2, V5},
		{"inside header", "30", 0, io.ErrUnexpectedEOF, -2, V5},
		{"inside remaining length", "30 80", 0, io.ErrUnexpectedEOF, -2, V5},
		{"inside body", "30 05 0001 74", 0, io.ErrUnexpectedEOF, -2, V5},
		{"too large", "30 05 0001 74 00 78", 6, nil, int(PacketTooLarge), V5},
		{"exactly the maximum", "30 05 0001 74 00 78", 7, nil, -1, V5},
		{"reserved type", "00 00", 0, nil, int(ProtocolError), V5},
		{"malformed remaining length", "30 FF FF FF FF 7F", 0, nil, int(MalformedPacket), V5},
		{"malformed body", "30 02 0001", 0, nil, int(MalformedPacket), V311},
		{"server may send session taken over", "E0 01 8E", 0, nil, -1, V5},
		{"server may not send disconnect with will", "E0 01 04", 0, nil, int(ProtocolError), V5},
		{"connect ignores version", "10 0D 0004 4D515454 04 02 000A 0001 70", 0, nil, -1, V5},
	} {
		p, err := ReadPacket(bytes.NewReader(hexb(t, tc.hex)), tc.version, tc.max)
		switch {
		case tc.err != nil:
			if !errors.Is(err, tc.err) {
				t.Errorf("%s: got %v, want %v", tc.name, err, tc.err)
			}
		case codeOf(err) != tc.code:
			t.Errorf("%s: got %v (%d), want code %d", tc.name, err, codeOf(err), tc.code)
		}
		if (err == nil) != (p != nil) {
			t.Errorf("%s: packet %v with error %v", tc.name, p, err)
		}
	}
}

// allowedBySpec transcribes MQTT 5.0 section 2.2.2.2 (which packets may
// carry which property), independently of the codec's masks.
var allowedBySpec = map[propCtx][]byte{
	ctxConnect: {0x11, 0x15, 0x16, 0x17, 0x19, 0x21, 0x22, 0x26, 0x27},
	ctxWill:    {0x01, 0x02, 0x03, 0x08, 0x09, 0x18, 0x26},
	ctxConnack: {0x11, 0x12, 0x13, 0x15, 0x16, 0x1A, 0x1C, 0x1F, 0x21, 0x22, 0x24, 0x25, 0x26, 0x27, 0x28,
		0x29, 0x2A},
	ctxPublish:     {0x01, 0x02, 0x03, 0x08, 0x09, 0x0B, 0x23, 0x26},
	ctxAck:         {0x1F, 0x26},
	ctxSubscribe:   {0x0B, 0x26},
	ctxSuback:      {0x1F, 0x26},
	ctxUnsubscribe: {0x26},
	ctxUnsuback:    {0x1F, 0x26},
	ctxDisconnect:  {0x11, 0x1C, 0x1F, 0x26},
	ctxAuth:        {0x15, 0x16, 0x1F, 0x26},
}

var allPropIDs = []byte{0x01, 0x02, 0x03, 0x08, 0x09, 0x0B, 0x11, 0x12, 0x13, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1A,
	0x1C, 0x1F, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2A}

// propWith returns p with property id set to a valid, non-default value.
func propWith(p Properties, id byte) Properties {
	p.Set(id)
	switch id {
	case PropPayloadFormatIndicator:
		p.PayloadFormatIndicator = 1
	case PropMessageExpiryInterval:
		p.MessageExpiryInterval = 0x01020304
	case PropContentType:
		p.ContentType = "application/json"
	case PropResponseTopic:
		p.ResponseTopic = "reply/here"
	case PropCorrelationData:
		p.CorrelationData = []byte{0, 1, 2}
	case PropSubscriptionIdentifier:
		p.SubscriptionIdentifiers = append(p.SubscriptionIdentifiers, 268435455)
	case PropSessionExpiryInterval:
		p.SessionExpiryInterval = 0xFFFFFFFF
	case PropAssignedClientIdentifier:
		p.AssignedClientIdentifier = "auto-1"
	case PropServerKeepAlive:
		p.ServerKeepAlive = 0xFFFF
	case PropAuthenticationMethod:
		p.AuthenticationMethod = "SCRAM-SHA-1"
	case PropAuthenticationData:
		p.AuthenticationData = []byte("data")
		p = propWith(p, PropAuthenticationMethod)
	case PropRequestProblemInformation:
		p.RequestProblemInformation = 1
	case PropWillDelayInterval:
		p.WillDelayInterval = 7
	case PropRequestResponseInformation:
		p.RequestResponseInformation = 1
	case PropResponseInformation:
		p.ResponseInformation = "resp"
	case PropServerReference:
		p.ServerReference = "other:1883"
	case PropReasonString:
		p.ReasonString = "because"
	case PropReceiveMaximum:
		p.ReceiveMaximum = 65535
	case PropTopicAliasMaximum:
		p.TopicAliasMaximum = 9
	case PropTopicAlias:
		p.TopicAlias = 8
	case PropMaximumQoS:
		p.MaximumQoS = 1
	case PropRetainAvailable:
		p.RetainAvailable = 1
	case PropUserProperty:
		p.User = append(p.User, UserProperty{"key", "value"})
	case PropMaximumPacketSize:
		p.MaximumPacketSize = 1
	case PropWildcardSubscriptionAvailable:
		p.WildcardSubscriptionAvailable = 1
	case PropSubscriptionIdentifierAvailable:
		p.SubscriptionIdentifierAvailable = 1
	case PropSharedSubscriptionAvailable:
		p.SharedSubscriptionAvailable = 1
	}
	return p
}

// TestPropertiesPerPacket encodes, for every packet, all the properties the
// specification allows and checks they decode back; then adds each property
// it does not allow and checks that is refused with the documented code.
func TestPropertiesPerPacket(t *testing.T) {
	for ctx, allowed := range allowedBySpec {
		var want Properties
		for _, id := range allowed {
			want = propWith(want, id)
		}
		enc := want.Append(nil)
		if len(enc) != want.Len() {
			t.Errorf("%s: Len %d, encoded %d", ctx, want.Len(), len(enc))
		}
		var got Properties
		r := reader{b: enc}
		if err := decodeProps(&r, &got, ctx); err != nil || r.left() != 0 {
			t.Errorf("%s: %v (%d bytes left)", ctx, err, r.left())
		} else if !reflect.DeepEqual(got, want) {
			t.Errorf("%s:\n got %+v\nwant %+v", ctx, got, want)
		}

		code := ProtocolError
		if ctx == ctxSubscribe || ctx == ctxUnsubscribe {
			code = MalformedPacket
		}
		for _, id := range allPropIDs {
			if bytes.IndexByte(allowed, id) >= 0 {
				continue
			}
			bad := propWith(Properties{}, id)
			r := reader{b: bad.Append(nil)}
			if err := decodeProps(&r, &got, ctx); codeOf(err) != int(code) {
				t.Errorf("%s with %s: %v, want code 0x%02X", ctx, propName(id), err, code)
			}
		}
	}
}

func TestPropertyEncodingOrder(t *testing.T) {
	var p Properties
	for _, id := range allPropIDs {
		p = propWith(p, id)
	}
	enc := p.Append(nil)
	var order []byte
	r := reader{b: enc}
	n, _ := r.varint("length")
	if n != len(enc)-r.off {
		t.Fatalf("length %d, content %d", n, len(enc)-r.off)
	}
	for r.left() > 0 {
		id := r.b[r.off]
		r.off++
		order = append(order, id)
		switch propKind(id) {
		case kindByte:
			r.off++
		case kindU16:
			r.off += 2
		case kindU32:
			r.off += 4
		case kindVarint:
			_, _ = r.varint("")
		case kindString, kindBinary:
			_, _ = r.binary("")
		case kindPair:
			_, _ = r.binary("")
			_, _ = r.binary("")
		default:
			t.Fatalf("unknown id 0x%02X in % X", id, enc)
		}
	}
	want := []byte{0x01, 0x02, 0x03, 0x08, 0x09, 0x0B, 0x11, 0x22, 0x12, 0x13, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1A,
		0x1C, 0x1F, 0x21, 0x23, 0x24, 0x25, 0x27, 0x28, 0x29, 0x2A, 0x26}
	if !bytes.Equal(order, want) {
		t.Errorf("order % X, want % X", order, want)
	}
}

func TestConnectDefaultProtocolName(t *testing.T) {
	for _, tc := range []struct {
		v   byte
		hex string
	}{
		{V31, "10 0F 0006 4D5149736470 03 00 0000 0001 70"},
		{V311, "10 0D 0004 4D515454 04 00 0000 0001 70"},
		{V5, "10 0E 0004 4D515454 05 00 0000 00 0001 70"},
	} {
		c := &Connect{ProtocolVersion: tc.v, ClientID: "p"}
		if got := c.Append(nil); !bytes.Equal(got, hexb(t, tc.hex)) {
			t.Errorf("%s: % X", versionName(tc.v), got)
		}
	}
}
