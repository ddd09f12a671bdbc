package store

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestFileModes: the data directory is created 0700 and every file in it
// 0600, whatever the umask (the store holds messages, user names and
// client identifiers).
func TestFileModes(t *testing.T) {
	old := syscall.Umask(0o002) // permissive, as on many desktops
	defer syscall.Umask(old)
	dir := filepath.Join(t.TempDir(), "data")
	s := openT(t, Options{Dir: dir, Sync: SyncInterval})
	sampleFixture().write(t, s)
	if err := s.Compact(context.Background()); err != nil {
		t.Fatal(err)
	}
	check := func() {
		t.Helper()
		fi, err := os.Stat(dir)
		if err != nil {
			t.Fatal(err)
		}
		if m := fi.Mode().Perm(); m != 0o700 {
			t.Fatalf("data directory mode %v, want 0700", m)
		}
		ents, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		kinds := map[string]bool{}
		for _, e := range ents {
			fi, err := e.Info()
			if err != nil {
				t.Fatal(err)
			}
			if m := fi.Mode().Perm(); m != 0o600 {
				t.Errorf("%s: mode %v, want 0600", e.Name(), m)
			}
			kinds[filepath.Ext(e.Name())] = true
			if len(e.Name()) > 8 {
				kinds[e.Name()[:8]] = true
			}
		}
		for _, k := range []string{".sst", ".log", "MANIFEST", "OPTIONS-", "marker.f"} {
			if !kinds[k] {
				t.Errorf("no %s file checked (have %v)", k, kinds)
			}
		}
	}
	check()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openT(t, Options{Dir: dir})
	b := s.NewBatch()
	b.PutSession(&SessionRecord{ClientID: "after-reopen"})
	commitT(t, b)
	check()
}
