package store

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// v1Value is a value written by the value-version-1 encoder.
type v1Value struct {
	kind, name string
	enc        []byte
}

// readV1Values reads testdata/v1-values.txt: values the encoder wrote
// before messages and sessions moved to value version 2 (generated once
// with that code from messageCases and sessionCases; never regenerate).
func readV1Values(t testing.TB) []v1Value {
	t.Helper()
	f, err := os.Open("testdata/v1-values.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []v1Value
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		kind, rest, _ := strings.Cut(line, " ")
		i := strings.LastIndexByte(rest, ' ')
		if i < 0 {
			t.Fatalf("bad line %q", line)
		}
		name, err := strconv.Unquote(rest[:i])
		if err != nil {
			t.Fatalf("bad line %q: %v", line, err)
		}
		enc, err := hex.DecodeString(rest[i+1:])
		if err != nil {
			t.Fatalf("bad line %q: %v", line, err)
		}
		out = append(out, v1Value{kind, name, enc})
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestDecodeVersion1Values: values of the previous encoding decode to
// exactly the records they were written from, with the new fields zero,
// and a version 1 message re-encodes to the same bytes but the version.
func TestDecodeVersion1Values(t *testing.T) {
	msgs, sessions := messageCases(), sessionCases()
	var nm, ns int
	for _, v := range readV1Values(t) {
		if v.enc[0] != 1 {
			t.Fatalf("%s %q: version %d in the v1 corpus", v.kind, v.name, v.enc[0])
		}
		switch v.kind {
		case "message":
			nm++
			m, ok := msgs[v.name]
			if !ok {
				t.Fatalf("no message case %q", v.name)
			}
			var got MessageRecord
			if err := decodeMessage(v.enc, &got); err != nil {
				t.Fatalf("message %q: %v", v.name, err)
			}
			if want := stored(m); !reflect.DeepEqual(got, want) {
				t.Fatalf("message %q:\n got %+v\nwant %+v", v.name, got, want)
			}
			again := appendMessage(nil, &got)
			if again[0] != 2 || string(again[1:]) != string(v.enc[1:]) {
				t.Fatalf("message %q re-encodes as %x, want 02%x", v.name, again, v.enc[1:])
			}
		case "session":
			ns++
			s, ok := sessions[v.name]
			if !ok {
				t.Fatalf("no session case %q", v.name)
			}
			var got SessionRecord
			if err := decodeSession(v.enc, &got); err != nil {
				t.Fatalf("session %q: %v", v.name, err)
			}
			want := s
			if s.Will != nil {
				w := stored(*s.Will)
				want.Will = &w
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("session %q:\n got %+v\nwant %+v", v.name, got, want)
			}
		default:
			t.Fatalf("unknown kind %q", v.kind)
		}
	}
	if nm < 10 || ns < 5 {
		t.Fatalf("only %d messages and %d sessions in the v1 corpus", nm, ns)
	}
}

// untarStore unpacks a data directory kept as a tar.gz in testdata.
func untarStore(t testing.TB, name string) string {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "data")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		p := filepath.Join(dir, filepath.Base(h.Name))
		w, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(w, io.LimitReader(tr, 64<<20)); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// v1StoreFixture is what testdata/v1-store.tar.gz holds: a data directory
// written by the previous release (value version 1 everywhere) with
// sampleFixture compacted into an sstable and one more session only in
// the write-ahead log.
func v1StoreFixture() *fixture {
	f := sampleFixture()
	// In client id order: "wal-only" sorts before the last, "клиент/😀".
	n := len(f.sessions)
	f.sessions = append(f.sessions[:n-1:n-1], &LoadedSession{
		Session:  SessionRecord{ClientID: "wal-only", Username: "w", ExpiryInterval: 60},
		Messages: []SeqMessage{{Seq: 1, Msg: MessageRecord{Topic: "w/1", Payload: []byte("in the WAL"), QoS: 1, DeliverQoS: 1}}},
	}, f.sessions[n-1])
	return f
}

// TestOpenVersion1Store: a store written by the previous release opens
// and loads exactly as it did, keeps working with the new fields, and
// still loads after a restart.
func TestOpenVersion1Store(t *testing.T) {
	dir := untarStore(t, "v1-store.tar.gz")
	s, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	old := v1StoreFixture()
	old.check(t, s)

	// New records next to the old ones.
	b := s.NewBatch()
	b.PutSession(&SessionRecord{ClientID: "new", Role: 3, Username: "reader"})
	m := MessageRecord{Topic: "n/1", Payload: []byte("new"), IDNode: 42, IDSeq: 43, Hops: 1, OriginKind: OriginCluster, OriginName: "node-b"}
	b.PutMessage("new", 9, &m)
	commitT(t, b)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openT(t, Options{Dir: dir})
	all := loadAll(t, s)
	if len(all) != len(old.sessions)+1 {
		t.Fatalf("loaded %d sessions", len(all))
	}
	var got *LoadedSession
	for _, ls := range all {
		if ls.Session.ClientID == "new" {
			got = ls
		}
	}
	if got == nil || got.Session.Role != 3 || len(got.Messages) != 1 || !reflect.DeepEqual(got.Messages[0].Msg, m) {
		t.Fatalf("new session after reopen: %+v", got)
	}
}
