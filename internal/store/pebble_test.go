package store

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/isobar-mq/isobar/internal/mqtt/packet"
)

func openT(t testing.TB, o Options) *PebbleStore {
	t.Helper()
	if o.Dir == "" {
		o.Dir = t.TempDir()
	}
	s, err := Open(o)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func commitT(t testing.TB, b Batch) {
	t.Helper()
	if err := b.Commit(); err != nil {
		t.Fatalf("Commit: %v", err)
	}
	if b.Len() != 0 {
		t.Fatalf("Len %d after Commit", b.Len())
	}
}

func loadAll(t testing.TB, s Store) []*LoadedSession {
	t.Helper()
	var out []*LoadedSession
	if err := s.LoadSessions(func(ls *LoadedSession) error {
		out = append(out, ls)
		return nil
	}); err != nil {
		t.Fatalf("LoadSessions: %v", err)
	}
	return out
}

func loadRetained(t testing.TB, s Store) []*MessageRecord {
	t.Helper()
	var out []*MessageRecord
	if err := s.LoadRetained(func(m *MessageRecord) error {
		out = append(out, m)
		return nil
	}); err != nil {
		t.Fatalf("LoadRetained: %v", err)
	}
	return out
}

// fixture is a store state and what loading it must return.
type fixture struct {
	sessions []*LoadedSession
	retained []*MessageRecord
}

func (f *fixture) write(t testing.TB, s Store) {
	b := s.NewBatch()
	for _, ls := range f.sessions {
		b.PutSession(&ls.Session)
		// Out of order on purpose: loading sorts.
		for i := len(ls.Subscriptions) - 1; i >= 0; i-- {
			b.PutSubscription(ls.Session.ClientID, &ls.Subscriptions[i])
		}
		for i := len(ls.Messages) - 1; i >= 0; i-- {
			b.PutMessage(ls.Session.ClientID, ls.Messages[i].Seq, &ls.Messages[i].Msg)
		}
		for _, id := range ls.Inbound {
			b.PutInbound(ls.Session.ClientID, id)
		}
	}
	for _, m := range f.retained {
		b.PutRetained(m)
	}
	commitT(t, b)
}

func (f *fixture) check(t testing.TB, s Store) {
	t.Helper()
	got := loadAll(t, s)
	if len(got) != len(f.sessions) {
		t.Fatalf("loaded %d sessions, want %d", len(got), len(f.sessions))
	}
	for i, want := range f.sessions {
		w := *want
		if w.Session.Will != nil {
			m := stored(*w.Session.Will)
			w.Session.Will = &m
		}
		w.Messages = nil
		for _, sm := range want.Messages {
			w.Messages = append(w.Messages, SeqMessage{Seq: sm.Seq, Msg: stored(sm.Msg)})
		}
		if !reflect.DeepEqual(*got[i], w) {
			t.Fatalf("session %d:\n got %+v\nwant %+v", i, *got[i], w)
		}
	}
	gotR := loadRetained(t, s)
	if len(gotR) != len(f.retained) {
		t.Fatalf("loaded %d retained, want %d", len(gotR), len(f.retained))
	}
	for i, m := range f.retained {
		if want := stored(*m); !reflect.DeepEqual(*gotR[i], want) {
			t.Fatalf("retained %d:\n got %+v\nwant %+v", i, *gotR[i], want)
		}
	}
}

// sampleFixture has sessions sorted by client id, subscriptions by
// filter, messages by sequence, inbound ids ascending and retained
// messages by topic: the order loading returns.
func sampleFixture() *fixture {
	will := MessageRecord{Topic: "clients/a/status", Payload: []byte("offline"), QoS: 1, Retain: true, Props: allProps(), Received: 1}
	cases := messageCases()
	return &fixture{
		sessions: []*LoadedSession{
			{Session: SessionRecord{ClientID: ""}}, // empty id: its own key range
			{
				Session: SessionRecord{ClientID: "a", ExpiryInterval: math.MaxUint32, DisconnectedAt: 123, Username: "alice",
					Will: &will, WillAt: 456, NextPacketID: 65535},
				Subscriptions: []SubscriptionRecord{
					{Filter: "", QoS: 0},
					{Filter: "$share/g/sensors/#", QoS: 2, NoLocal: true, RetainAsPublished: true, RetainHandling: 2, ID: 268435455},
					{Filter: "a/+/c", QoS: 1, ID: 1},
				},
				Messages: []SeqMessage{
					{Seq: 0, Msg: cases["typical"]},
					{Seq: 1, Msg: cases["all props"]},
					{Seq: 255, Msg: cases["empty payload"]},
					{Seq: 256, Msg: cases["unicode"]},
					{Seq: math.MaxUint64, Msg: cases["foreign props dropped"]},
				},
				Inbound: []uint16{0, 1, 256, 65535},
			},
			{
				Session:       SessionRecord{ClientID: "a\x01"},
				Subscriptions: []SubscriptionRecord{{Filter: "x"}},
				Messages:      []SeqMessage{{Seq: 7, Msg: MessageRecord{Topic: "x", Payload: []byte("a\x01")}}},
			},
			{
				Session:       SessionRecord{ClientID: "ab", Username: "bob"},
				Subscriptions: []SubscriptionRecord{{Filter: "b/#", QoS: 1}},
				Messages:      []SeqMessage{{Seq: 3, Msg: MessageRecord{Topic: "b/1", Payload: []byte("for ab")}}},
				Inbound:       []uint16{9},
			},
			{
				Session:  SessionRecord{ClientID: "клиент/😀"},
				Messages: []SeqMessage{{Seq: 1, Msg: cases["max"]}},
			},
		},
		retained: []*MessageRecord{
			{Topic: "", Payload: []byte("empty topic")},
			{Topic: "a/b", Payload: []byte("r1"), Retain: true, QoS: 1, Props: allProps()},
			{Topic: "a/b/c", Payload: []byte{}, Retain: true},
			{Topic: "日本/€", Payload: []byte("r3"), Expiry: 99},
		},
	}
}

func TestRoundTripAndReopen(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	f := sampleFixture()
	f.write(t, s)
	f.check(t, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2 := openT(t, Options{Dir: dir, Sync: SyncInterval})
	f.check(t, s2)
}

func TestPrefixIsolationAndDeleteSession(t *testing.T) {
	s := openT(t, Options{})
	f := sampleFixture()
	f.write(t, s)

	b := s.NewBatch()
	b.DeleteSession("a")
	if b.Len() != 1 {
		t.Fatalf("Len %d", b.Len())
	}
	commitT(t, b)
	f.sessions = append(f.sessions[:1], f.sessions[2:]...)
	f.check(t, s)

	// Nothing of "a" is left in the key space; "a\x01", "ab" and "" keep
	// everything.
	count := map[string]int{}
	it, err := s.db.NewIter(nil)
	if err != nil {
		t.Fatal(err)
	}
	for it.First(); it.Valid(); it.Next() {
		k := it.Key()
		switch k[0] {
		case tagSession:
			count[string(k[1:])]++
		case tagSub, tagMessage, tagInbound:
			cid, _, _ := splitClientKey(k)
			count[string(cid)]++
		}
	}
	if err := it.Close(); err != nil {
		t.Fatal(err)
	}
	want := map[string]int{"": 1, "a\x01": 3, "ab": 4, "клиент/😀": 2}
	if !reflect.DeepEqual(count, want) {
		t.Fatalf("keys per client after delete: %v, want %v", count, want)
	}

	// Deleting and re-creating in one batch keeps the new records only.
	b.DeleteSession("ab")
	b.PutSession(&SessionRecord{ClientID: "ab", Username: "new"})
	b.PutSubscription("ab", &SubscriptionRecord{Filter: "new/#"})
	b.PutMessage("ab", 1, &MessageRecord{Topic: "new"})
	b.DeleteSession("nobody") // deleting what does not exist is fine
	commitT(t, b)
	for _, ls := range loadAll(t, s) {
		if ls.Session.ClientID != "ab" {
			continue
		}
		if ls.Session.Username != "new" || len(ls.Subscriptions) != 1 || ls.Subscriptions[0].Filter != "new/#" ||
			len(ls.Messages) != 1 || ls.Messages[0].Seq != 1 || len(ls.Inbound) != 0 {
			t.Fatalf("re-created session: %+v", ls)
		}
	}
}

func TestSingleDeletes(t *testing.T) {
	s := openT(t, Options{})
	f := sampleFixture()
	f.write(t, s)
	b := s.NewBatch()
	b.DeleteSubscription("a", "a/+/c")
	b.DeleteSubscription("ab", "a/+/c") // ab has no such filter
	b.DeleteMessage("a", 255)
	b.DeleteInbound("a", 256)
	b.DeleteInbound("a", 257) // absent
	b.DeleteRetained("a/b")
	b.DeleteRetained("never")
	if b.Len() != 7 {
		t.Fatalf("Len %d", b.Len())
	}
	commitT(t, b)
	a := f.sessions[1]
	a.Subscriptions = a.Subscriptions[:2]
	a.Messages = append(a.Messages[:2], a.Messages[3:]...)
	a.Inbound = []uint16{0, 1, 65535}
	f.retained = append(f.retained[:1], f.retained[2:]...)
	f.check(t, s)

	// Overwrites replace.
	b.PutSession(&SessionRecord{ClientID: "a", Username: "carol"})
	b.PutRetained(&MessageRecord{Topic: "", Payload: []byte("v2")})
	commitT(t, b)
	for _, ls := range loadAll(t, s) {
		if ls.Session.ClientID == "a" && (ls.Session.Username != "carol" || ls.Session.Will != nil || len(ls.Messages) != 4) {
			t.Fatalf("overwritten session: %+v", ls.Session)
		}
	}
	if r := loadRetained(t, s); string(r[0].Payload) != "v2" {
		t.Fatalf("overwritten retained: %+v", r[0])
	}
}

func TestNULClientIDPoisonsBatch(t *testing.T) {
	s := openT(t, Options{})
	b := s.NewBatch()
	b.PutSession(&SessionRecord{ClientID: "good"})
	b.PutMessage("bad\x00id", 1, &MessageRecord{Topic: "t"})
	b.PutRetained(&MessageRecord{Topic: "r"})
	if err := b.Commit(); !errors.Is(err, errNUL) {
		t.Fatalf("Commit: %v, want errNUL", err)
	}
	if n := len(loadAll(t, s)); n != 0 {
		t.Fatalf("%d sessions stored by a failed batch", n)
	}
	if n := len(loadRetained(t, s)); n != 0 {
		t.Fatalf("%d retained stored by a failed batch", n)
	}
	// The batch is usable again.
	b.PutSession(&SessionRecord{ClientID: "good"})
	commitT(t, b)
	if n := len(loadAll(t, s)); n != 1 {
		t.Fatalf("%d sessions, want 1", n)
	}
	for _, f := range []func(Batch){
		func(b Batch) { b.DeleteSession("\x00") },
		func(b Batch) { b.PutSubscription("x\x00", &SubscriptionRecord{}) },
		func(b Batch) { b.DeleteSubscription("x\x00", "f") },
		func(b Batch) { b.DeleteMessage("x\x00", 1) },
		func(b Batch) { b.PutInbound("x\x00", 1) },
		func(b Batch) { b.DeleteInbound("x\x00", 1) },
	} {
		f(b)
		if err := b.Commit(); !errors.Is(err, errNUL) {
			t.Fatalf("Commit: %v, want errNUL", err)
		}
	}
}

func TestBatchReuseDoesNotAliasCallerBuffers(t *testing.T) {
	s := openT(t, Options{})
	b := s.NewBatch()
	payload := []byte("original")
	m := MessageRecord{Topic: "t", Payload: payload}
	b.PutRetained(&m)
	copy(payload, "mutated!") // before Commit: the batch has its own copy
	commitT(t, b)
	if r := loadRetained(t, s); string(r[0].Payload) != "original" {
		t.Fatalf("payload %q", r[0].Payload)
	}
	// A batch bigger than half a memtable is committed by Pebble as a
	// flushable batch; the Batch stays reusable.
	big := MessageRecord{Topic: "big", Payload: bytes.Repeat([]byte{7}, memTableSize/2+1)}
	b.PutRetained(&big)
	commitT(t, b)
	b.PutRetained(&MessageRecord{Topic: "small", Payload: []byte("s")})
	commitT(t, b)
	if r := loadRetained(t, s); len(r) != 3 || !bytes.Equal(r[0].Payload, big.Payload) || string(r[1].Payload) != "s" {
		t.Fatalf("retained after big batch: %d records", len(r))
	}
	// Empty commit is a no-op.
	commitT(t, s.NewBatch())
	if got := s.Stats().Commits; got != 3 {
		t.Fatalf("Commits %d, want 3", got)
	}
}

func TestCloseSemantics(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(Options{Dir: dir, Sync: SyncInterval, SyncInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	b := s.NewBatch()
	b.PutSession(&SessionRecord{ClientID: "c"})
	commitT(t, b) // NoSync: made durable by Close
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); !errors.Is(err, ErrClosed) {
		t.Fatalf("second Close: %v", err)
	}
	b.PutSession(&SessionRecord{ClientID: "d"})
	if err := b.Commit(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Commit after Close: %v", err)
	}
	if err := s.LoadSessions(func(*LoadedSession) error { return nil }); !errors.Is(err, ErrClosed) {
		t.Fatalf("LoadSessions after Close: %v", err)
	}
	if err := s.LoadRetained(func(*MessageRecord) error { return nil }); !errors.Is(err, ErrClosed) {
		t.Fatalf("LoadRetained after Close: %v", err)
	}
	if err := s.Compact(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Compact after Close: %v", err)
	}
	_ = s.Stats()
	s2 := openT(t, Options{Dir: dir})
	if got := loadAll(t, s2); len(got) != 1 || got[0].Session.ClientID != "c" {
		t.Fatalf("after reopen: %+v", got)
	}
}

func TestCallbackErrorStopsLoading(t *testing.T) {
	s := openT(t, Options{})
	sampleFixture().write(t, s)
	stop := errors.New("stop")
	n := 0
	err := s.LoadSessions(func(*LoadedSession) error { n++; return stop })
	if err != stop || n != 1 {
		t.Fatalf("LoadSessions: %v after %d calls", err, n)
	}
	n = 0
	err = s.LoadRetained(func(*MessageRecord) error { n++; return stop })
	if err != stop || n != 1 {
		t.Fatalf("LoadRetained: %v after %d calls", err, n)
	}
}

func TestOptionsValidation(t *testing.T) {
	for _, o := range []Options{
		{},
		{Dir: t.TempDir(), Sync: "sometimes"},
		{Dir: t.TempDir(), Sync: SyncInterval, SyncInterval: -time.Second},
	} {
		if s, err := Open(o); err == nil {
			s.Close()
			t.Fatalf("Open(%+v) succeeded", o)
		}
	}
	// A missing directory (and its parents) is created.
	s := openT(t, Options{Dir: filepath.Join(t.TempDir(), "x", "y")})
	if st := s.Stats(); st.DiskBytes == 0 {
		t.Fatalf("DiskBytes 0 for an open store")
	}
}

func TestRefuseForeignDirectory(t *testing.T) {
	t.Run("other files", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "important.txt"), []byte("keep me"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Mkdir(filepath.Join(dir, "sub"), 0o700); err != nil {
			t.Fatal(err)
		}
		_, err := Open(Options{Dir: dir})
		if err == nil || !strings.Contains(err.Error(), "not an isobar data directory") {
			t.Fatalf("Open: %v", err)
		}
		names := dirNames(t, dir)
		if !reflect.DeepEqual(names, []string{"important.txt", "sub"}) {
			t.Fatalf("directory now holds %v", names)
		}
		if b, _ := os.ReadFile(filepath.Join(dir, "important.txt")); string(b) != "keep me" {
			t.Fatalf("file changed: %q", b)
		}
	})
	t.Run("pebble without meta", func(t *testing.T) {
		dir := t.TempDir()
		db, err := pebble.Open(dir, &pebble.Options{Logger: testPebbleLogger()})
		if err != nil {
			t.Fatal(err)
		}
		if err := db.Set([]byte("sfoo"), []byte("someone else's"), pebble.Sync); err != nil {
			t.Fatal(err)
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		_, err = Open(Options{Dir: dir})
		if err == nil || !strings.Contains(err.Error(), "not an isobar store") {
			t.Fatalf("Open: %v", err)
		}
		// Still there, and the directory is unlocked again.
		db, err = pebble.Open(dir, &pebble.Options{Logger: testPebbleLogger()})
		if err != nil {
			t.Fatal(err)
		}
		v, c, err := db.Get([]byte("sfoo"))
		if err != nil || string(v) != "someone else's" {
			t.Fatalf("foreign key: %q %v", v, err)
		}
		c.Close()
		db.Close()
	})
	t.Run("older pebble format", func(t *testing.T) {
		// Ours, written by an older Pebble format: upgraded on open. A
		// foreign one of the same format is refused and left as it was.
		for _, ours := range []bool{true, false} {
			dir := t.TempDir()
			db, err := pebble.Open(dir, &pebble.Options{Logger: testPebbleLogger(),
				FormatMajorVersion: pebble.FormatMinSupported})
			if err != nil {
				t.Fatal(err)
			}
			key, val := []byte("sx"), []byte("foreign")
			if ours {
				key, val = metaKey(), appendMeta(nil, formatVersion, 1)
			}
			if err := db.Set(key, val, pebble.Sync); err != nil {
				t.Fatal(err)
			}
			db.Close()
			s, err := Open(Options{Dir: dir})
			if ours {
				if err != nil {
					t.Fatal(err)
				}
				if v := s.db.FormatMajorVersion(); v != pebbleFormat {
					t.Fatalf("format %v, want %v", v, pebbleFormat)
				}
				s.Close()
				continue
			}
			if err == nil {
				s.Close()
				t.Fatal("foreign database opened")
			}
			desc, err := pebble.Peek(dir, vfs.Default)
			if err != nil || desc.FormatMajorVersion != pebble.FormatMinSupported {
				t.Fatalf("foreign database format now %v (%v)", desc.FormatMajorVersion, err)
			}
		}
	})
	t.Run("empty pebble is initialised", func(t *testing.T) {
		// What a crash between Pebble's creation and the meta write leaves.
		dir := t.TempDir()
		db, err := pebble.Open(dir, &pebble.Options{Logger: testPebbleLogger()})
		if err != nil {
			t.Fatal(err)
		}
		db.Close()
		s := openT(t, Options{Dir: dir})
		s.Close()
		_ = openT(t, Options{Dir: dir}) // and now it has its meta record
	})
	t.Run("lone lock file", func(t *testing.T) {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, "LOCK"), nil, 0o600)
		openT(t, Options{Dir: dir})
	})
	for name, meta := range map[string][]byte{
		"newer format": appendMeta(nil, formatVersion+1, time.Now().UnixNano()),
		"format zero":  appendMeta(nil, 0, 0),
		"bad magic":    []byte("definitely not our meta"),
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			s := openT(t, Options{Dir: dir})
			b := s.NewBatch()
			b.PutSession(&SessionRecord{ClientID: "c"})
			commitT(t, b)
			if err := s.db.Set(metaKey(), meta, pebble.Sync); err != nil {
				t.Fatal(err)
			}
			s.Close()
			_, err := Open(Options{Dir: dir})
			if err == nil {
				t.Fatal("Open succeeded")
			}
			if name == "newer format" && !strings.Contains(err.Error(), fmt.Sprintf("format version %d", formatVersion+1)) {
				t.Fatalf("Open: %v", err)
			}
			t.Log(err)
		})
	}
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func TestOpenTwiceInProcess(t *testing.T) {
	dir := t.TempDir()
	openT(t, Options{Dir: dir})
	_, err := Open(Options{Dir: dir})
	if err == nil || !strings.Contains(err.Error(), "already open in this process") {
		t.Fatalf("second Open: %v", err)
	}
}

// TestLockHelperProcess is the other process of
// TestDirectoryInUseByAnotherProcess.
func TestLockHelperProcess(t *testing.T) {
	dir := os.Getenv("ISOBAR_STORE_LOCK_HELPER")
	if dir == "" {
		t.Skip("helper process only")
	}
	s, err := Open(Options{Dir: dir})
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Println("ready")
	_, _ = io.Copy(io.Discard, os.Stdin) // hold the store until stdin closes
	s.Close()
	os.Exit(0)
}

func TestDirectoryInUseByAnotherProcess(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestLockHelperProcess$")
	cmd.Env = append(os.Environ(), "ISOBAR_STORE_LOCK_HELPER="+dir)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "ready\n" {
		t.Fatalf("helper: %q %v", line, err)
	}
	_, err = Open(Options{Dir: dir})
	if err == nil || !strings.Contains(err.Error(), "in use by another process") {
		t.Fatalf("Open of a directory held by another process: %v", err)
	}
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("helper: %v", err)
	}
	openT(t, Options{Dir: dir}) // released
}

func TestConcurrentCommits(t *testing.T) {
	for _, policy := range []SyncPolicy{SyncAlways, SyncInterval} {
		t.Run(string(policy), func(t *testing.T) {
			// fsync takes at least 1 ms (tmpfs would make it free and
			// leave nothing to group).
			s := openT(t, Options{Sync: policy, SyncInterval: 5 * time.Millisecond, fs: slowSyncFS{vfs.Default, time.Millisecond}})
			const workers, commits = 8, 50
			var wg sync.WaitGroup
			errs := make(chan error, workers)
			for w := range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					b := s.NewBatch()
					cid := fmt.Sprintf("client-%d", w)
					for i := range commits {
						if i == 0 {
							b.PutSession(&SessionRecord{ClientID: cid})
						}
						b.PutMessage(cid, uint64(i), &MessageRecord{Topic: "t", Payload: []byte{byte(i)}})
						b.PutRetained(&MessageRecord{Topic: fmt.Sprintf("r/%d/%d", w, i)})
						if err := b.Commit(); err != nil {
							errs <- err
							return
						}
					}
				}()
			}
			// Loads and stats run concurrently with the commits.
			for range 3 {
				_ = loadAll(t, s)
				_ = s.Stats()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			sessions := loadAll(t, s)
			if len(sessions) != workers {
				t.Fatalf("%d sessions", len(sessions))
			}
			for _, ls := range sessions {
				if len(ls.Messages) != commits {
					t.Fatalf("%s: %d messages", ls.Session.ClientID, len(ls.Messages))
				}
				for i, m := range ls.Messages {
					if m.Seq != uint64(i) || m.Msg.Payload[0] != byte(i) {
						t.Fatalf("%s: message %d is %+v", ls.Session.ClientID, i, m)
					}
				}
			}
			if n := len(loadRetained(t, s)); n != workers*commits {
				t.Fatalf("%d retained", n)
			}
			st := s.Stats()
			if st.Commits != workers*commits {
				t.Fatalf("Commits %d", st.Commits)
			}
			t.Logf("%d commits, %d syncs", st.Commits, st.Syncs)
			// Group commit: concurrent SyncAlways commits share fsyncs.
			if policy == SyncAlways && st.Syncs*2 > st.Commits {
				t.Fatalf("%d syncs for %d concurrent commits: no group commit", st.Syncs, st.Commits)
			}
		})
	}
}

func TestSyncStats(t *testing.T) {
	t.Run("always", func(t *testing.T) {
		s := openT(t, Options{})
		before := s.Stats()
		b := s.NewBatch()
		for i := range 5 {
			b.PutInbound("c", uint16(i))
			commitT(t, b)
		}
		// Pebble records an fsync just after releasing its waiters.
		deadline := time.Now().Add(10 * time.Second)
		for {
			st := s.Stats()
			if st.Commits == 5 && st.Syncs >= before.Syncs+5 && st.SyncSecondsSum > before.SyncSecondsSum {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("stats %+v after 5 sequential synced commits (before %+v)", st, before)
			}
			time.Sleep(time.Millisecond)
		}
	})
	t.Run("interval", func(t *testing.T) {
		s := openT(t, Options{Sync: SyncInterval, SyncInterval: 10 * time.Millisecond})
		b := s.NewBatch()
		// Commits do not sync: many in a row cost at most a few syncs
		// from the background loop.
		before := s.Stats()
		start := time.Now()
		for i := range 200 {
			b.PutInbound("c", uint16(i))
			commitT(t, b)
		}
		st := s.Stats()
		ticks := uint64(time.Since(start)/(10*time.Millisecond)) + 1
		if st.Commits != 200 || st.Syncs-before.Syncs > ticks {
			t.Fatalf("stats %+v after 200 commits in %v (before %+v)", st, time.Since(start), before)
		}
		// The background loop syncs them.
		deadline := time.Now().Add(10 * time.Second)
		for s.Stats().Syncs == st.Syncs {
			if time.Now().After(deadline) {
				t.Fatalf("no sync within 10 s: %+v", s.Stats())
			}
			time.Sleep(5 * time.Millisecond)
		}
		// And it is idle when nothing was committed.
		for s.dirty.Load() {
			if time.Now().After(deadline) {
				t.Fatal("dirty flag never cleared")
			}
			time.Sleep(5 * time.Millisecond)
		}
	})
}

func TestCorruptRecordsAreErrors(t *testing.T) {
	good := sampleFixture()
	for _, tc := range []struct {
		name string
		key  []byte
		val  []byte
		load string // "sessions" or "retained"
	}{
		{"session", []byte("sa"), []byte{1, 9}, "sessions"},
		{"subscription", appendSubKey(nil, "a", "f"), []byte{2}, "sessions"},
		{"message", appendMessageKey(nil, "a", 5), []byte{1, 0x7F}, "sessions"},
		{"message key", []byte("ma\x00short"), appendMessage(nil, &MessageRecord{}), "sessions"},
		{"inbound", appendInboundKey(nil, "a", 5), []byte{}, "sessions"},
		{"inbound key", []byte("ia\x00\x01\x02\x03"), []byte{1}, "sessions"},
		{"retained", []byte("rx"), []byte{1, 1, 0}, "retained"},
		{"retained topic", []byte("rx"), appendMessage(nil, &MessageRecord{Topic: "y"}), "retained"},
		{"malformed client key", []byte("u-no-separator"), []byte{1, 0, 0, 0, 0}, "sessions"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openT(t, Options{})
			good.write(t, s)
			if err := s.db.Set(tc.key, tc.val, pebble.NoSync); err != nil {
				t.Fatal(err)
			}
			var err error
			if tc.load == "sessions" {
				err = s.LoadSessions(func(*LoadedSession) error { return nil })
			} else {
				err = s.LoadRetained(func(*MessageRecord) error { return nil })
			}
			if err == nil {
				t.Fatal("corrupt record loaded")
			}
			if !strings.Contains(err.Error(), keyString(tc.key)) {
				t.Fatalf("error does not name the key %s: %v", keyString(tc.key), err)
			}
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error does not wrap ErrCorrupt: %v", err)
			}
		})
	}
}

func TestOrphansAreSkipped(t *testing.T) {
	var logBuf bytes.Buffer
	s := openT(t, Options{Logger: slog.New(slog.NewTextHandler(&logBuf, nil))})
	f := sampleFixture()
	f.write(t, s)
	b := s.NewBatch()
	for _, cid := range []string{"0", "aa", "zzz"} { // before, between and after real sessions
		b.PutSubscription(cid, &SubscriptionRecord{Filter: "x"})
		b.PutMessage(cid, 1, &MessageRecord{Topic: "x"})
		b.PutInbound(cid, 1)
	}
	commitT(t, b)
	f.check(t, s)
	if l := logBuf.String(); !strings.Contains(l, `msg="records without a session skipped"`) || !strings.Contains(l, "count=9") {
		t.Fatalf("9 orphans not logged: %s", logBuf.String())
	}
}

func TestChurnReturnsDiskToBaseline(t *testing.T) {
	if testing.Short() {
		t.Skip("writes ~10 MB")
	}
	dir := t.TempDir()
	s, err := Open(Options{Dir: dir, Sync: SyncInterval})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	baseline := duBytes(t, dir, allFiles)

	const sessions, perSession = 10_000, 5
	payload := make([]byte, 100)
	r := rand.New(rand.NewPCG(5, 6))
	b := s.NewBatch()
	for i := range sessions {
		cid := fmt.Sprintf("churn-client-%06d", i)
		b.PutSession(&SessionRecord{ClientID: cid, ExpiryInterval: 3600})
		b.PutSubscription(cid, &SubscriptionRecord{Filter: "devices/" + cid + "/#", QoS: 1})
		for j := range perSession {
			for k := range payload {
				payload[k] = byte(r.Uint32()) // incompressible
			}
			b.PutMessage(cid, uint64(j), &MessageRecord{Topic: "devices/x", Payload: payload, QoS: 1})
		}
		b.PutInbound(cid, 1)
		if b.Len() >= 1000 {
			commitT(t, b)
		}
	}
	commitT(t, b)
	if err := s.db.Flush(); err != nil {
		t.Fatal(err)
	}
	full := settledDu(t, s, dir, allFiles)
	if full < baseline+sessions*perSession*100 {
		t.Fatalf("the data did not reach disk: %d bytes", full)
	}
	// Half the sessions lose their messages one by one (point
	// tombstones), then every session is deleted (range tombstones).
	for i := range sessions / 2 {
		for j := range perSession {
			b.DeleteMessage(fmt.Sprintf("churn-client-%06d", i), uint64(j))
		}
		if b.Len() >= 1000 {
			commitT(t, b)
		}
	}
	for i := range sessions {
		b.DeleteSession(fmt.Sprintf("churn-client-%06d", i))
		if b.Len() >= 1000 {
			commitT(t, b)
		}
	}
	commitT(t, b)
	if err := s.db.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := s.Compact(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Obsolete tables are deleted in the background, soon after. What
	// remains besides the baseline are write-ahead log files Pebble keeps
	// for recycling: at most MemTableStopWritesThreshold+1 (3) of them,
	// each about a memtable's worth of writes.
	const slack = 64 << 10
	deadline := time.Now().Add(10 * time.Second)
	for settledDu(t, s, dir, noLogs) > baseline+slack {
		if time.Now().After(deadline) {
			t.Fatalf("after Compact %d bytes besides logs, want at most %d (baseline %d, full %d)",
				duBytes(t, dir, noLogs), baseline+slack, baseline, full)
		}
		time.Sleep(20 * time.Millisecond)
	}
	compacted := settledDu(t, s, dir, allFiles)
	if logs := settledDu(t, s, dir, onlyLogs); logs > 3*memTableSize+slack {
		t.Fatalf("%d bytes of logs", logs)
	}
	if n := len(loadAll(t, s)); n != 0 {
		t.Fatalf("%d sessions left", n)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Reopening drops the recycled logs too.
	s = openT(t, Options{Dir: dir})
	for settledDu(t, s, dir, allFiles) > baseline+slack {
		if time.Now().After(deadline) {
			t.Fatalf("after reopen %d bytes, want at most %d (baseline %d)", duBytes(t, dir, allFiles), baseline+slack, baseline)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("disk: baseline %d, full %d, after deletes and Compact %d, after reopen %d",
		baseline, full, compacted, duBytes(t, dir, allFiles))
}

// settledDu is duBytes once Pebble has no flush or compaction running and
// two walks agree (a walk racing with file creation and deletion can
// miss files).
func settledDu(t testing.TB, s *PebbleStore, dir string, sel int) uint64 {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		m := s.db.Metrics()
		if m.Compact.NumInProgress == 0 && m.Flush.NumInProgress == 0 {
			a := duBytes(t, dir, sel)
			if b := duBytes(t, dir, sel); a == b {
				return a
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the store never settled")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// File selections for duBytes.
const (
	allFiles = iota
	noLogs   // all but write-ahead logs
	onlyLogs // write-ahead logs
)

// duBytes sums the sizes of the selected regular files under dir.
func duBytes(t testing.TB, dir string, sel int) uint64 {
	t.Helper()
	var n uint64
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return nil // deleted by Pebble while we walk
		}
		if err != nil || d.IsDir() || (sel == noLogs) == strings.HasSuffix(path, ".log") && sel != allFiles {
			return err
		}
		info, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		n += uint64(info.Size())
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestPropertiesSurviveStore(t *testing.T) {
	// A message decoded from the wire (packet codec) stores and loads with
	// the same message properties.
	s := openT(t, Options{})
	p := allProps()
	p.Set(packet.PropTopicAlias)
	p.TopicAlias = 3
	m := MessageRecord{Topic: "t", Props: p}
	b := s.NewBatch()
	b.PutRetained(&m)
	commitT(t, b)
	got := loadRetained(t, s)[0]
	if got.Props.Has(packet.PropTopicAlias) || got.Props.TopicAlias != 0 {
		t.Fatal("topic alias stored")
	}
	p.Clear(packet.PropTopicAlias)
	p.TopicAlias = 0
	if !reflect.DeepEqual(got.Props, p) {
		t.Fatalf("props %+v, want %+v", got.Props, p)
	}
}

// slowSyncFS makes every fsync of a file take at least delay.
type slowSyncFS struct {
	vfs.FS
	delay time.Duration
}

func (fs slowSyncFS) Create(name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.Create(name, c)
	if err != nil {
		return nil, err
	}
	return slowSyncFile{f, fs.delay}, nil
}

func (fs slowSyncFS) ReuseForWrite(oldname, newname string, c vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.ReuseForWrite(oldname, newname, c)
	if err != nil {
		return nil, err
	}
	return slowSyncFile{f, fs.delay}, nil
}

func (fs slowSyncFS) OpenReadWrite(name string, c vfs.DiskWriteCategory, opts ...vfs.OpenOption) (vfs.File, error) {
	f, err := fs.FS.OpenReadWrite(name, c, opts...)
	if err != nil {
		return nil, err
	}
	return slowSyncFile{f, fs.delay}, nil
}

type slowSyncFile struct {
	vfs.File
	delay time.Duration
}

func (f slowSyncFile) Sync() error {
	time.Sleep(f.delay)
	return f.File.Sync()
}

func (f slowSyncFile) SyncData() error {
	time.Sleep(f.delay)
	return f.File.SyncData()
}

func (f slowSyncFile) SyncTo(length int64) (bool, error) {
	time.Sleep(f.delay)
	return f.File.SyncTo(length)
}

// testPebbleLogger is a silent logger for opening Pebble directly.
func testPebbleLogger() *pebbleLogger {
	log := slog.New(slog.DiscardHandler)
	return &pebbleLogger{l: log, rl: newRateLimiter(time.Second),
		f: &fataler{log: log, h: &health{log: log}, onFatal: func(error) {}}}
}
