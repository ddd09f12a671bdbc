package broker

import (
	"context"
	"strings"
	"testing"

	"github.com/isobar-mq/isobar/internal/mqtt/packet"
	"github.com/isobar-mq/isobar/internal/store"
)

// A retained message that is not valid MQTT (a content type over 65,535
// bytes, as the REST API accepted before it validated its input) in a store
// written by an older version is dropped at restore, from memory and from
// the store, instead of crashing the encoder of every matching subscriber
// at every start.
func TestHardeningRestoreDropsInvalidRetained(t *testing.T) {
	dir := t.TempDir()
	st, err := store.Open(store.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	b := st.NewBatch()
	bad := &store.MessageRecord{Topic: "r/bad", Payload: []byte("x"), Retain: true}
	bad.Props.ContentType = strings.Repeat("c", 70000)
	bad.Props.Set(packet.PropContentType)
	b.PutRetained(bad)
	b.PutRetained(&store.MessageRecord{Topic: "r/good", Payload: []byte("y"), Retain: true})
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	for round := 0; round < 2; round++ {
		st, err := store.Open(store.Options{Dir: dir})
		if err != nil {
			t.Fatal(err)
		}
		s := New(Options{Store: st}, nil, nil)
		if err := s.Restore(); err != nil {
			t.Fatal(err)
		}
		if _, ok := s.RetainedMessage("r/bad"); ok {
			t.Fatalf("round %d: invalid retained message restored", round)
		}
		if _, ok := s.RetainedMessage("r/good"); !ok {
			t.Fatalf("round %d: valid retained message lost", round)
		}
		_ = s.Shutdown(context.Background())
		var topics []string
		if err := st.LoadRetained(func(r *store.MessageRecord) error {
			topics = append(topics, r.Topic)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if len(topics) != 1 || topics[0] != "r/good" {
			t.Fatalf("round %d: store holds %v after restore, want [r/good]", round, topics)
		}
		if err := st.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// Deleting a retained message (what DELETE /api/v1/retained does) is
// persisted: it does not come back after a restart.
func TestHardeningDeleteRetainedPersisted(t *testing.T) {
	dir := t.TempDir()
	open := func() (*Server, *store.PebbleStore) {
		st, err := store.Open(store.Options{Dir: dir})
		if err != nil {
			t.Fatal(err)
		}
		s := New(Options{Store: st}, nil, nil)
		if err := s.Restore(); err != nil {
			t.Fatal(err)
		}
		return s, st
	}
	s, st := open()
	for _, tp := range []string{"r/1", "r/2"} {
		if err := s.Publish(&Message{Topic: tp, Payload: []byte("v"), Retain: true}); err != nil {
			t.Fatal(err)
		}
	}
	if !s.DeleteRetained("r/1") {
		t.Fatal("DeleteRetained found nothing")
	}
	_ = s.Shutdown(context.Background())
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	s, st = open()
	defer st.Close()
	defer s.Shutdown(context.Background())
	if _, ok := s.RetainedMessage("r/1"); ok {
		t.Fatal("deleted retained message back after a restart")
	}
	if _, ok := s.RetainedMessage("r/2"); !ok {
		t.Fatal("the other retained message is lost")
	}
}
