package store

import (
	"bytes"
	"math"
	"reflect"
	"strings"
	"testing"
)

// storedSession is what a session snapshot of ls must decode to: records
// normalised as stored, empty lists nil.
func storedSession(ls *LoadedSession) *LoadedSession {
	out := &LoadedSession{Session: ls.Session}
	if w := ls.Session.Will; w != nil {
		m := stored(*w)
		out.Session.Will = &m
	}
	out.Subscriptions = clone(ls.Subscriptions)
	for _, sm := range ls.Messages {
		out.Messages = append(out.Messages, SeqMessage{Seq: sm.Seq, Msg: stored(sm.Msg)})
	}
	out.Inbound = clone(ls.Inbound)
	return out
}

func snapshotCases() map[string]*LoadedSession {
	out := map[string]*LoadedSession{}
	for _, ls := range sampleFixture().sessions {
		out["fixture "+ls.Session.ClientID] = ls
	}
	cases := messageCases()
	out["new fields"] = &LoadedSession{
		Session: SessionRecord{ClientID: "mover", Role: 1, Username: "everyone", ExpiryInterval: 3600,
			Will: &MessageRecord{Topic: "w", IDNode: 5, IDSeq: 6, OriginKind: OriginClient, OriginName: "mqtt"}, WillDelay: 10},
		Subscriptions: []SubscriptionRecord{{Filter: "a/#", QoS: 1}, {Filter: "b", QoS: 2, ID: 7}},
		Messages: []SeqMessage{
			{Seq: 1, Msg: cases["identity"]},
			{Seq: 2, Msg: cases["origin bridge"]},
			{Seq: 1 << 40, Msg: cases["origin max"]},
		},
		Inbound: []uint16{1, 2, 65535},
	}
	return out
}

func TestSessionSnapshotRoundTrip(t *testing.T) {
	for name, ls := range snapshotCases() {
		t.Run(name, func(t *testing.T) {
			enc := EncodeSession(ls)
			got, err := DecodeSession(enc)
			if err != nil {
				t.Fatalf("DecodeSession: %v", err)
			}
			want := storedSession(ls)
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("round trip:\n got %+v\nwant %+v", abbrevSession(got), abbrevSession(want))
			}
			// Canonical: encoding the decoded session gives the same bytes.
			if again := EncodeSession(got); !bytes.Equal(again, enc) {
				t.Fatal("re-encoding a decoded snapshot changed it")
			}
			// The result does not alias the snapshot.
			for i := range enc {
				enc[i] ^= 0xFF
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatal("decoded session aliases the snapshot")
			}
		})
	}
}

func abbrevSession(ls *LoadedSession) LoadedSession {
	out := *ls
	out.Messages = nil
	for _, sm := range ls.Messages {
		out.Messages = append(out.Messages, SeqMessage{Seq: sm.Seq, Msg: abbrev(sm.Msg)})
	}
	return out
}

// TestSessionSnapshotSorts: a session assembled out of order encodes in
// canonical order, and the caller's slices are not reordered.
func TestSessionSnapshotSorts(t *testing.T) {
	ls := &LoadedSession{
		Session:       SessionRecord{ClientID: "c"},
		Subscriptions: []SubscriptionRecord{{Filter: "z"}, {Filter: "a", QoS: 1}, {Filter: "m"}},
		Messages:      []SeqMessage{{Seq: 9, Msg: MessageRecord{Topic: "9"}}, {Seq: 3, Msg: MessageRecord{Topic: "3"}}},
		Inbound:       []uint16{7, 1, 4},
	}
	orig := storedSession(ls)
	got, err := DecodeSession(EncodeSession(ls))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(storedSession(ls), orig) {
		t.Fatal("EncodeSession reordered its argument")
	}
	if got.Subscriptions[0].Filter != "a" || got.Subscriptions[2].Filter != "z" || got.Messages[0].Seq != 3 ||
		!reflect.DeepEqual(got.Inbound, []uint16{1, 4, 7}) {
		t.Fatalf("not sorted: %+v", got)
	}
}

func TestSessionSnapshotRejects(t *testing.T) {
	ls := snapshotCases()["new fields"]
	enc := EncodeSession(ls)
	for i := range enc {
		if _, err := DecodeSession(enc[:i]); err == nil {
			t.Fatalf("snapshot truncated to %d of %d bytes decoded", i, len(enc))
		}
	}
	// A snapshot with one message whose encoding is m, built by hand.
	build := func(clientID string, subs [][2]string, seqs []uint64, inb []uint64) []byte {
		b := append([]byte(snapshotMagic), snapshotV1)
		b = appendStr(b, clientID)
		b = appendBytes(b, appendSession(nil, &SessionRecord{}))
		b = appendUvarintT(b, uint64(len(subs)))
		for _, s := range subs {
			b = appendStr(b, s[0])
			b = appendBytes(b, []byte(s[1]))
		}
		b = appendUvarintT(b, uint64(len(seqs)))
		for _, seq := range seqs {
			b = appendUvarintT(b, seq)
			b = appendBytes(b, appendMessage(nil, &MessageRecord{Topic: "t"}))
		}
		b = appendUvarintT(b, uint64(len(inb)))
		for _, id := range inb {
			b = appendUvarintT(b, id)
		}
		return b
	}
	sub := string(appendSubscription(nil, &SubscriptionRecord{QoS: 1}))
	if _, err := DecodeSession(build("ok", [][2]string{{"a", sub}, {"b", sub}}, []uint64{1, 2}, []uint64{1, 2})); err != nil {
		t.Fatalf("hand-built snapshot: %v", err)
	}
	bad := map[string][]byte{
		"empty":          nil,
		"magic":          append([]byte("isobar-sessiox"), enc[len(snapshotMagic):]...),
		"store value":    appendSession(nil, &SessionRecord{}),
		"version 0":      append(append([]byte(snapshotMagic), 0), enc[len(snapshotMagic)+1:]...),
		"version 2":      append(append([]byte(snapshotMagic), 2), enc[len(snapshotMagic)+1:]...),
		"trailing":       append(bytes.Clone(enc), 0),
		"NUL client id":  build("a\x00b", nil, nil, nil),
		"dup filter":     build("c", [][2]string{{"a", sub}, {"a", sub}}, nil, nil),
		"filter order":   build("c", [][2]string{{"b", sub}, {"a", sub}}, nil, nil),
		"bad sub value":  build("c", [][2]string{{"a", "\x01\x09\x00\x00\x00"}}, nil, nil),
		"dup seq":        build("c", nil, []uint64{5, 5}, nil),
		"seq order":      build("c", nil, []uint64{6, 5}, nil),
		"dup inbound":    build("c", nil, nil, []uint64{3, 3}),
		"inbound order":  build("c", nil, nil, []uint64{4, 3}),
		"inbound range":  build("c", nil, nil, []uint64{65536}),
		"huge sub count": append(append([]byte(snapshotMagic), snapshotV1, 0, 7, 2, 0, 0, 0, 0, 0, 0), 0xFF, 0xFF, 0xFF, 0xFF, 0x0F),
	}
	for name, v := range bad {
		if got, err := DecodeSession(v); err == nil {
			t.Errorf("%s: decoded %+v", name, got)
		} else if !strings.HasPrefix(err.Error(), "store: session snapshot: ") {
			t.Errorf("%s: error %q lacks the prefix", name, err)
		}
	}
	// Sanity for the hand-built session value used above.
	if _, err := DecodeSession(build("c", nil, []uint64{0, math.MaxUint64}, []uint64{0, 65535})); err != nil {
		t.Fatalf("extremes: %v", err)
	}
}

func appendUvarintT(b []byte, v uint64) []byte {
	for v >= 0x80 {
		b = append(b, byte(v)|0x80)
		v >>= 7
	}
	return append(b, byte(v))
}

// FuzzDecodeSessionSnapshot: decoding arbitrary bytes never panics nor
// modifies its input, and whatever decodes re-encodes to a snapshot that
// decodes to the same session.
func FuzzDecodeSessionSnapshot(f *testing.F) {
	for _, ls := range snapshotCases() {
		enc := EncodeSession(ls)
		if len(enc) > 4096 {
			continue
		}
		f.Add(enc)
		f.Add(enc[:len(enc)/2])
	}
	f.Add([]byte(snapshotMagic + "\x01"))
	f.Fuzz(func(t *testing.T, data []byte) {
		orig := bytes.Clone(data)
		ls, err := DecodeSession(data)
		if !bytes.Equal(data, orig) {
			t.Fatal("decoder modified its input")
		}
		if err != nil {
			if ls != nil {
				t.Fatal("non-nil session with an error")
			}
			return
		}
		again, err := DecodeSession(EncodeSession(ls))
		if err != nil {
			t.Fatalf("re-encoding of a decoded snapshot does not decode: %v", err)
		}
		if !reflect.DeepEqual(ls, again) {
			t.Fatalf("re-encoding changed the session:\n%+v\n%+v", ls, again)
		}
	})
}
