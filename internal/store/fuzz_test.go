package store

import (
	"bytes"
	"reflect"
	"testing"
)

// The seed corpus in testdata/fuzz holds hand-made corrupt values; these
// add encodings of the round-trip cases (value version 2) and the values
// the version 1 encoder wrote (testdata/v1-values.txt).

// FuzzDecodeMessage checks that decoding arbitrary bytes never panics and
// that whatever decodes re-encodes to a value decoding to the same record.
func FuzzDecodeMessage(f *testing.F) {
	for _, m := range messageCases() {
		if len(m.Payload) > 1024 || len(m.Topic) > 1024 {
			continue
		}
		f.Add(appendMessage(nil, &m))
	}
	for _, v := range readV1Values(f) {
		if v.kind == "message" {
			f.Add(v.enc)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		orig := bytes.Clone(data)
		var m MessageRecord
		err := decodeMessage(data, &m)
		if !bytes.Equal(data, orig) {
			t.Fatal("decoder modified its input")
		}
		if err != nil {
			return
		}
		enc := appendMessage(nil, &m)
		var again MessageRecord
		if err := decodeMessage(enc, &again); err != nil {
			t.Fatalf("re-encoding of a decoded message does not decode: %v", err)
		}
		if !reflect.DeepEqual(m, again) {
			t.Fatalf("re-encoding changed the message:\n%+v\n%+v", m, again)
		}
		if len(enc) > len(data) {
			t.Fatalf("re-encoding grew from %d to %d bytes", len(data), len(enc))
		}
	})
}

// FuzzDecodeSession does the same for session values (which embed a will
// message) and subscription values.
func FuzzDecodeSession(f *testing.F) {
	will := MessageRecord{Topic: "w", Payload: []byte("p"), Props: allProps()}
	f.Add(appendSession(nil, &SessionRecord{Username: "u", ExpiryInterval: 10, Will: &will, WillAt: 99}))
	f.Add(appendSession(nil, &SessionRecord{}))
	for _, s := range sessionCases() {
		if len(s.Username) < 1024 {
			f.Add(appendSession(nil, &s))
		}
	}
	for _, v := range readV1Values(f) {
		if v.kind == "session" {
			f.Add(v.enc)
		}
	}
	f.Add(appendSubscription(nil, &SubscriptionRecord{QoS: 1, NoLocal: true, ID: 300}))
	f.Fuzz(func(t *testing.T, data []byte) {
		var s SessionRecord
		if decodeSession(data, &s) == nil {
			var again SessionRecord
			if err := decodeSession(appendSession(nil, &s), &again); err != nil || !reflect.DeepEqual(s, again) {
				t.Fatalf("session re-encoding: %v\n%+v\n%+v", err, s, again)
			}
		}
		var sub SubscriptionRecord
		if decodeSubscription(data, &sub) == nil {
			var again SubscriptionRecord
			if err := decodeSubscription(appendSubscription(nil, &sub), &again); err != nil || again != sub {
				t.Fatalf("subscription re-encoding: %v\n%+v\n%+v", err, sub, again)
			}
		}
	})
}
