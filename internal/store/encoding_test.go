package store

import (
	"bytes"
	"math"
	"reflect"
	"strings"
	"testing"

	"github.com/isobar-mq/isobar/internal/mqtt/packet"
)

// messageProps is the set of Present bits a stored message keeps.
const messageProps = 1<<packet.PropPayloadFormatIndicator | 1<<packet.PropMessageExpiryInterval |
	1<<packet.PropContentType | 1<<packet.PropResponseTopic | 1<<packet.PropCorrelationData |
	1<<packet.PropUserProperty

// stored returns what decoding the encoding of m must produce, per the
// documented normalisation: only message properties are kept, and only
// when present; an empty payload, subscription id list or user property
// list is nil; present correlation data is non-nil.
func stored(m MessageRecord) MessageRecord {
	if len(m.Payload) == 0 {
		m.Payload = nil
	}
	if len(m.SubIDs) == 0 {
		m.SubIDs = nil
	}
	in := m.Props
	p := packet.Properties{Present: in.Present & messageProps}
	if p.Has(packet.PropPayloadFormatIndicator) {
		p.PayloadFormatIndicator = in.PayloadFormatIndicator
	}
	if p.Has(packet.PropMessageExpiryInterval) {
		p.MessageExpiryInterval = in.MessageExpiryInterval
	}
	if p.Has(packet.PropContentType) {
		p.ContentType = in.ContentType
	}
	if p.Has(packet.PropResponseTopic) {
		p.ResponseTopic = in.ResponseTopic
	}
	if p.Has(packet.PropCorrelationData) {
		p.CorrelationData = append([]byte{}, in.CorrelationData...)
	}
	if len(in.User) > 0 {
		p.User = in.User
	}
	m.Props = p
	return m
}

func allProps() packet.Properties {
	var p packet.Properties
	for _, id := range []byte{packet.PropPayloadFormatIndicator, packet.PropMessageExpiryInterval,
		packet.PropContentType, packet.PropResponseTopic, packet.PropCorrelationData, packet.PropUserProperty} {
		p.Set(id)
	}
	p.PayloadFormatIndicator = 1
	p.MessageExpiryInterval = 3600
	p.ContentType = "application/json; charset=utf-8"
	p.ResponseTopic = "reply/ü/€"
	p.CorrelationData = []byte{0, 1, 2, 0xFF}
	p.User = []packet.UserProperty{{Key: "k", Value: "v"}, {Key: "k", Value: "v2"}, {Key: "", Value: ""}, {Key: "日本", Value: "語"}}
	return p
}

func messageCases() map[string]MessageRecord {
	emptyPresent := packet.Properties{}
	for _, id := range []byte{packet.PropContentType, packet.PropResponseTopic, packet.PropCorrelationData, packet.PropUserProperty} {
		emptyPresent.Set(id)
	}
	emptyPresent.CorrelationData = nil // present with a nil slice: decodes as empty, non-nil
	foreign := allProps()
	foreign.Set(packet.PropTopicAlias)
	foreign.TopicAlias = 7
	foreign.Set(packet.PropSubscriptionIdentifier)
	foreign.SubscriptionIdentifiers = []uint32{1, 2}
	foreign.ReasonString = "not stored"
	notPresent := packet.Properties{ContentType: "ignored without its Present bit", CorrelationData: []byte("x")}
	return map[string]MessageRecord{
		"zero":          {},
		"empty payload": {Topic: "a/b", Payload: []byte{}},
		"nil payload":   {Topic: "a/b"},
		"typical": {Topic: "sensors/1/temp", Payload: []byte("21.5"), QoS: 1, Received: 1_700_000_000_000_000_000,
			From: "client-1", DeliverQoS: 1, SubIDs: []uint32{5}, State: StatePublished, PacketID: 42},
		"max": {Topic: strings.Repeat("t", 65535), Payload: bytes.Repeat([]byte{0xAB}, 1<<20), QoS: 255, Retain: true,
			Props: allProps(), Received: math.MaxInt64, Expiry: math.MaxInt64, From: strings.Repeat("c", 1000),
			DeliverQoS: 255, DeliverRetain: true, SubIDs: []uint32{math.MaxUint32, 0, 268435455}, Group: "g/f/#",
			State: 255, PacketID: math.MaxUint16},
		"min times":             {Topic: "x", Received: math.MinInt64, Expiry: -1},
		"unicode":               {Topic: "日本/€/ü/😀", From: "клиент", Group: "grüppe/#", Payload: []byte("😀")},
		"all props":             {Topic: "p", Props: allProps(), Payload: []byte{0}},
		"present empty props":   {Topic: "p", Props: emptyPresent},
		"user present no list":  {Topic: "p", Props: packet.Properties{Present: 1 << packet.PropUserProperty}},
		"user list no present":  {Topic: "p", Props: packet.Properties{User: []packet.UserProperty{{Key: "a", Value: "b"}}}},
		"foreign props dropped": {Topic: "p", Props: foreign},
		"values not present":    {Topic: "p", Props: notPresent},
		"empty subids":          {Topic: "p", SubIDs: []uint32{}},
		"retained flags":        {Topic: "p", Retain: true, DeliverRetain: false, State: StateReleased},
		"identity": {Topic: "c/1", Payload: []byte("x"), QoS: 1, From: "c", IDNode: 0x9E3779B97F4A7C15, IDSeq: 1,
			DeliverQoS: 1, SubIDs: []uint32{3}},
		"identity seq only":  {Topic: "c/2", IDSeq: math.MaxUint64},
		"identity node only": {Topic: "c/3", IDNode: math.MaxUint64},
		"origin bridge": {Topic: "b/1", Payload: []byte("via bridge"), IDNode: 1, IDSeq: 300, Hops: 2,
			OriginKind: OriginBridge, OriginName: "upstream-ü", Props: allProps()},
		"origin kind only": {Topic: "s/1", OriginKind: OriginServer},
		"origin name only": {Topic: "l/1", OriginName: "mqtt-tls"},
		"origin max":       {Topic: "g", Hops: 255, OriginKind: 255, OriginName: strings.Repeat("n", 300), Retain: true},
		"stamp":            {Topic: "r/1", Payload: []byte("v"), Retain: true, Stamp: 0x0192_3456_789A_0001},
		"stamp with all": {Topic: "r/2", Payload: []byte("v"), Retain: true, IDNode: 7, IDSeq: 8, Hops: 1,
			OriginKind: OriginCluster, OriginName: "n2", Stamp: math.MaxUint64},
	}
}

func TestMessageEncodingRoundTrip(t *testing.T) {
	for name, m := range messageCases() {
		t.Run(name, func(t *testing.T) {
			enc := appendMessage([]byte("prefix"), &m)
			if string(enc[:6]) != "prefix" {
				t.Fatal("appendMessage overwrote dst")
			}
			enc = enc[6:]
			var got MessageRecord
			got.Topic = "stale" // decode must overwrite
			if err := decodeMessage(enc, &got); err != nil {
				t.Fatalf("decode: %v", err)
			}
			want := stored(m)
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("round trip:\n got %+v\nwant %+v", abbrev(got), abbrev(want))
			}
			if got.Props.Has(packet.PropCorrelationData) && got.Props.CorrelationData == nil {
				t.Fatal("present correlation data decoded as nil")
			}
			// Decoded values must not alias the encoding.
			if len(got.Payload) > 0 {
				for i := range enc {
					enc[i] ^= 0xFF
				}
				if !bytes.Equal(got.Payload, want.Payload) {
					t.Fatal("payload aliases the encoded value")
				}
			}
		})
	}
}

func abbrev(m MessageRecord) MessageRecord {
	if len(m.Topic) > 40 {
		m.Topic = m.Topic[:40] + "…"
	}
	if len(m.Payload) > 40 {
		m.Payload = m.Payload[:40]
	}
	return m
}

func TestMessageEncodingCompact(t *testing.T) {
	m := MessageRecord{Topic: "a/b", Payload: make([]byte, 100), QoS: 1, Received: 1_700_000_000_000_000_000, DeliverQoS: 1, State: StateQueued}
	enc := appendMessage(nil, &m)
	// version, head length, 4 flag bytes, 3 varints (1+1+9), 3 strings
	// (4+1+1), subid count, prop flags, payload.
	if want := 1 + 1 + 4 + 11 + 6 + 1 + 1 + 100; len(enc) != want {
		t.Fatalf("encoded size %d, want %d", len(enc), want)
	}
	if enc[0] != 2 {
		t.Fatalf("value version byte %d", enc[0])
	}
	// Identity costs 8 bytes plus the sequence varint; origin 2 bytes
	// plus the name.
	m.IDNode, m.IDSeq = 1<<63, 5
	if got, want := len(appendMessage(nil, &m)), len(enc)+8+1; got != want {
		t.Fatalf("with identity: %d bytes, want %d", got, want)
	}
	m.Hops, m.OriginName = 1, "br"
	if got, want := len(appendMessage(nil, &m)), len(enc)+8+1+2+3; got != want {
		t.Fatalf("with identity and origin: %d bytes, want %d", got, want)
	}
}

// sessionCases are session records of every shape.
func sessionCases() map[string]SessionRecord {
	will := MessageRecord{Topic: "will/ü", Payload: []byte("bye"), QoS: 2, Retain: true, Props: allProps(), Received: 5, From: "c"}
	idWill := will
	idWill.IDNode, idWill.IDSeq, idWill.OriginName = 77, 78, "mqtt"
	return map[string]SessionRecord{
		"zero":    {},
		"typical": {ExpiryInterval: 3600, DisconnectedAt: 1_700_000_000_000_000_000, Username: "alice", NextPacketID: 7},
		"max": {ExpiryInterval: math.MaxUint32, DisconnectedAt: math.MaxInt64, Username: strings.Repeat("u", 70000),
			NextPacketID: math.MaxUint16, Will: &will, WillAt: math.MaxInt64, Role: 255},
		"negative":      {DisconnectedAt: math.MinInt64, WillAt: -1, Will: &MessageRecord{}},
		"big will":      {Will: &MessageRecord{Topic: "w", Payload: bytes.Repeat([]byte{1}, 300)}, WillAt: 1},
		"unicode":       {Username: "ユーザー"},
		"empty will":    {Will: &MessageRecord{Payload: []byte{}}},
		"will delay":    {Username: "bob", Will: &will, WillAt: 10, WillDelay: 30},
		"role":          {Username: "everyone", Role: 1, ExpiryInterval: 60},
		"role and will": {Role: 2, Will: &idWill, WillDelay: 5},
	}
}

func TestSessionEncodingRoundTrip(t *testing.T) {
	for name, s := range sessionCases() {
		t.Run(name, func(t *testing.T) {
			enc := appendSession(nil, &s)
			if enc[0] != 2 {
				t.Fatalf("value version byte %d", enc[0])
			}
			var got SessionRecord
			if err := decodeSession(enc, &got); err != nil {
				t.Fatalf("decode: %v", err)
			}
			want := s
			if s.Will != nil {
				w := stored(*s.Will)
				want.Will = &w
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("round trip:\n got %+v\nwant %+v", got, want)
			}
		})
	}
}

func TestSubscriptionEncodingRoundTrip(t *testing.T) {
	for _, s := range []SubscriptionRecord{
		{},
		{QoS: 2, NoLocal: true, RetainAsPublished: true, RetainHandling: 2, ID: 268435455},
		{QoS: 255, RetainHandling: 255, ID: math.MaxUint32, NoLocal: true},
		{RetainAsPublished: true, ID: 1},
	} {
		enc := appendSubscription(nil, &s)
		var got SubscriptionRecord
		got.Filter = "stale"
		if err := decodeSubscription(enc, &got); err != nil {
			t.Fatalf("%+v: decode: %v", s, err)
		}
		if got != s {
			t.Fatalf("round trip: got %+v, want %+v", got, s)
		}
	}
}

func TestDecodeRejectsCorruptValues(t *testing.T) {
	m := MessageRecord{Topic: "a/b", Payload: []byte("xyz"), Props: allProps(), SubIDs: []uint32{1}}
	msg := appendMessage(nil, &m)
	sess := appendSession(nil, &SessionRecord{Username: "u", Will: &m})
	sub := appendSubscription(nil, &SubscriptionRecord{QoS: 1, ID: 9})

	// Every proper prefix of a session or subscription value is corrupt
	// (a message's payload can be cut anywhere, its head cannot).
	for i := range sess {
		var s SessionRecord
		if err := decodeSession(sess[:i], &s); err == nil {
			t.Fatalf("session truncated to %d bytes decoded", i)
		}
	}
	for i := range sub {
		var s SubscriptionRecord
		if err := decodeSubscription(sub[:i], &s); err == nil {
			t.Fatalf("subscription truncated to %d bytes decoded", i)
		}
	}
	headEnd := 2 + int(msg[1]) // one-byte head length in this case
	for i := 0; i < headEnd; i++ {
		var d MessageRecord
		if err := decodeMessage(msg[:i], &d); err == nil {
			t.Fatalf("message truncated to %d bytes decoded", i)
		}
	}

	bad := map[string][]byte{
		"version":         append([]byte{3}, msg[1:]...),
		"version 0":       append([]byte{0}, msg[1:]...),
		"head too long":   {1, 0x7F, 0, 0, 0},
		"head overflows":  {1, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F},
		"flags":           {1, 14, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
		"packet id range": {1, 14, 0, 0, 0, 0, 0x80, 0x80, 0x04, 0, 0, 0, 0, 0, 0, 0},
		"string too long": {1, 12, 0, 0, 0, 0, 0, 0, 0, 50, 0, 0, 0, 0},
		"subid count":     {1, 13, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x7F, 0},
		"prop flags":      {1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x80},
		"empty user list": {1, 13, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, pfUserList, 0},
		"trailing head":   {1, 13, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9},
	}
	// Sanity: the minimal valid message decodes, so the cases above fail
	// for the reason their name gives.
	var ok MessageRecord
	if err := decodeMessage([]byte{1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, &ok); err != nil {
		t.Fatalf("minimal message: %v", err)
	}
	// Version 2: the minimal message, then what it must reject.
	if err := decodeMessage([]byte{2, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, &ok); err != nil {
		t.Fatalf("minimal v2 message: %v", err)
	}
	if err := decodeMessage([]byte{2, 21, mfIdentity, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0}, &ok); err != nil ||
		ok.IDNode != 0x0102030405060708 || ok.IDSeq != 9 {
		t.Fatalf("v2 identity: %v %+v", err, ok)
	}
	if err := decodeMessage([]byte{2, 16, mfOrigin, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 4, 1, 'x'}, &ok); err != nil ||
		ok.Hops != 3 || ok.OriginKind != 4 || ok.OriginName != "x" {
		t.Fatalf("v2 origin: %v %+v", err, ok)
	}
	for name, v := range map[string][]byte{
		"v1 identity flag":   {1, 21, mfIdentity, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0},
		"v1 origin flag":     {1, 16, mfOrigin, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 4, 1, 'x'},
		"v2 unknown flag":    {2, 12, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
		"identity truncated": {2, 19, mfIdentity, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7},
		"identity no seq":    {2, 20, mfIdentity, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8},
		"identity seq 65b":   append([]byte{2, 30, mfIdentity, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8}, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F),
		"origin truncated":   {2, 14, mfOrigin, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 4},
		"origin name long":   {2, 16, mfOrigin, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 4, 5, 'x'},
		"v2 trailing head":   {2, 13, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9},
		"origin trailing":    {2, 17, mfOrigin, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 4, 1, 'x', 0},
	} {
		bad[name] = v
	}
	for name, v := range bad {
		var d MessageRecord
		if err := decodeMessage(v, &d); err == nil {
			t.Errorf("%s: decoded %x", name, v)
		}
	}
	for name, v := range map[string][]byte{
		"session version": append([]byte{9}, sess[1:]...),
		"session flags":   {1, 2, 0, 0, 0, 0},
		"session trail":   {1, 0, 0, 0, 0, 0, 0},
		"expiry range":    {1, 0, 0x80, 0x80, 0x80, 0x80, 0x10, 0, 0, 0},
		"bad will":        {1, 1, 0, 0, 0, 0, 0, 3, 1, 0x7F, 0},
		"v2 no role":      {2, 0, 0, 0, 0, 0},
		"v2 trail":        {2, 0, 0, 0, 0, 0, 0, 0},
		"v2 flags":        {2, 4, 0, 0, 0, 0, 0},
		"v2 bad will":     {2, 1, 0, 0, 0, 0, 0, 0, 3, 1, 0x7F, 0},
		"v3":              {3, 0, 0, 0, 0, 0, 0},
	} {
		var s SessionRecord
		if err := decodeSession(v, &s); err == nil {
			t.Errorf("%s: decoded %x", name, v)
		}
	}
	var s SessionRecord
	if err := decodeSession([]byte{1, 0, 0, 0, 0, 0}, &s); err != nil {
		t.Fatalf("minimal session: %v", err)
	}
	if err := decodeSession([]byte{2, 0, 0, 0, 0, 0, 7}, &s); err != nil || s.Role != 7 {
		t.Fatalf("minimal v2 session: %v %+v", err, s)
	}
	for name, v := range map[string][]byte{
		"sub version": {0, 0, 0, 0, 0},
		"sub flags":   {1, 4, 0, 0, 0},
		"sub trail":   {1, 0, 0, 0, 0, 0},
		"sub id":      {1, 0, 0, 0, 0x80, 0x80, 0x80, 0x80, 0x10},
	} {
		var s SubscriptionRecord
		if err := decodeSubscription(v, &s); err == nil {
			t.Errorf("%s: decoded %x", name, v)
		}
	}
	if err := decodeInbound([]byte{1}); err != nil {
		t.Fatal(err)
	}
	for _, v := range [][]byte{nil, {0}, {1, 0}} {
		if decodeInbound(v) == nil {
			t.Errorf("inbound %x decoded", v)
		}
	}
}

func TestKeys(t *testing.T) {
	if got := string(appendMessageKey(nil, "ab", 0x0102030405060708)); got != "mab\x00\x01\x02\x03\x04\x05\x06\x07\x08" {
		t.Fatalf("message key %q", got)
	}
	if got := string(appendInboundKey(nil, "ab", 0x0102)); got != "iab\x00\x01\x02" {
		t.Fatalf("inbound key %q", got)
	}
	if got := string(appendSubKey(nil, "ab", "$share/g/x/#")); got != "uab\x00$share/g/x/#" {
		t.Fatalf("subscription key %q", got)
	}
	if got := string(appendSessionKey(nil, "ab")); got != "sab" {
		t.Fatalf("session key %q", got)
	}
	if got := string(appendRetainedKey(nil, "a/b")); got != "ra/b" {
		t.Fatalf("retained key %q", got)
	}
	// Message keys sort by sequence number.
	if bytes.Compare(appendMessageKey(nil, "a", 255), appendMessageKey(nil, "a", 256)) >= 0 {
		t.Fatal("message keys do not sort by sequence")
	}
	// Client ranges are exact: "a"'s range excludes "ab" and "a\x01".
	lo, hi := appendClientPrefix(nil, tagSub, "a"), appendClientEnd(nil, tagSub, "a")
	for _, k := range [][]byte{appendSubKey(nil, "ab", ""), appendSubKey(nil, "a\x01", "x"), appendSubKey(nil, "", "a"), []byte("ua")} {
		if bytes.Compare(k, lo) >= 0 && bytes.Compare(k, hi) < 0 {
			t.Fatalf("key %q inside client a's range", k)
		}
	}
	for _, k := range [][]byte{appendSubKey(nil, "a", ""), appendSubKey(nil, "a", "\xff\xff")} {
		if bytes.Compare(k, lo) < 0 || bytes.Compare(k, hi) >= 0 {
			t.Fatalf("key %q outside client a's range", k)
		}
	}
	cid, rest, ok := splitClientKey(appendMessageKey(nil, "c/d", 9))
	if !ok || string(cid) != "c/d" || len(rest) != 8 {
		t.Fatalf("split: %q %q %v", cid, rest, ok)
	}
	if _, _, ok := splitClientKey([]byte("mabc")); ok {
		t.Fatal("split a key without separator")
	}
	v, c, err := decodeMeta(appendMeta(nil, 7, -5))
	if err != nil || v != 7 || c != -5 {
		t.Fatalf("meta: %d %d %v", v, c, err)
	}
	if _, _, err := decodeMeta([]byte("isobar-storX\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00")); err == nil {
		t.Fatal("bad magic accepted")
	}
}
