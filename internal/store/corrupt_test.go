package store

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// storeDir writes sampleFixture into a new data directory and closes it:
// compacted into an sstable (compact) or left in write-ahead logs.
func storeDir(t *testing.T, compact bool) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "data")
	s, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	sampleFixture().write(t, s)
	if compact {
		if err := s.Compact(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	b := s.NewBatch()
	b.PutSession(&SessionRecord{ClientID: "zz", Username: "last"})
	commitT(t, b)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return dir
}

// files returns the non-empty files of dir whose name matches pattern.
func files(t *testing.T, dir, pattern string) []string {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(dir, pattern))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, n := range names {
		if fi, err := os.Stat(n); err == nil && fi.Size() > 0 {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	if len(out) == 0 {
		t.Fatalf("no %s in %s", pattern, dir)
	}
	return out
}

// flip inverts the byte at off (negative: from the end) of path.
func flip(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if off < 0 {
		fi, err := f.Stat()
		if err != nil {
			t.Fatal(err)
		}
		off += fi.Size()
	}
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0xFF
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// openCorrupt opens dir, which must fail with ErrCorrupt naming what
// (when not empty) and advising the check and reset commands, promptly
// and without a fatal fault.
func openCorrupt(t *testing.T, dir, what string) {
	t.Helper()
	start := time.Now()
	s, err := Open(Options{Dir: dir, OnFatal: unexpectedFatal})
	if err == nil {
		s.Close()
		t.Fatal("corrupt store opened")
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("Open took %v", d)
	}
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), what) ||
		!strings.Contains(err.Error(), "isobar store check --data-dir "+dir) ||
		!strings.Contains(err.Error(), "isobar store reset --data-dir "+dir) {
		t.Fatalf("Open: %v", err)
	}
	// The directory is not left locked.
	lock, err := pebble.LockDirectory(dir, vfs.Default)
	if err != nil {
		t.Fatalf("directory left locked: %v", err)
	}
	_ = lock.Close()
}

// TestOpenCorruptFiles: a damaged sstable used to make Pebble's Fatalf
// panic during Open; every kind of damaged file is now an error that
// names it and says what to do.
func TestOpenCorruptFiles(t *testing.T) {
	t.Run("sstable block", func(t *testing.T) {
		dir := storeDir(t, true)
		sst := files(t, dir, "*.sst")[0]
		flip(t, sst, 200)
		openCorrupt(t, dir, "data file "+filepath.Base(sst)+" is corrupt")
	})
	t.Run("sstable footer", func(t *testing.T) {
		dir := storeDir(t, true)
		sst := files(t, dir, "*.sst")[0]
		flip(t, sst, -10)
		openCorrupt(t, dir, filepath.Base(sst))
	})
	t.Run("manifest", func(t *testing.T) {
		dir := storeDir(t, true)
		flip(t, files(t, dir, "MANIFEST-*")[0], 3)
		openCorrupt(t, dir, "MANIFEST")
	})
	t.Run("write-ahead log", func(t *testing.T) {
		dir := storeDir(t, false)
		logs := files(t, dir, "*.log")
		if len(logs) < 2 {
			t.Fatalf("logs %v: want one before the last", logs)
		}
		// Damage before the end of the log: not a torn last write.
		flip(t, logs[0], 20)
		openCorrupt(t, dir, "write-ahead log")
	})
}

func TestCorruptRecordOnLoad(t *testing.T) {
	dir := storeDir(t, true)
	s := openT(t, Options{Dir: dir})
	if err := s.db.Set([]byte("sa"), []byte{2, 9}, pebble.Sync); err != nil {
		t.Fatal(err)
	}
	err := s.LoadSessions(func(*LoadedSession) error { return nil })
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), `"sa"`) || !strings.Contains(err.Error(), "isobar store check") {
		t.Fatalf("LoadSessions: %v", err)
	}
	// A callback's own error is passed through untouched.
	mine := errors.New("mine")
	if err := s.LoadRetained(func(*MessageRecord) error { return mine }); err != mine {
		t.Fatalf("LoadRetained: %v", err)
	}
}

func dirState(t *testing.T, dir string) map[string]int64 {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, e := range ents {
		fi, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = fi.Size()
	}
	return out
}

func TestCheck(t *testing.T) {
	t.Run("clean", func(t *testing.T) {
		dir := storeDir(t, false)
		s := openT(t, Options{Dir: dir})
		b := s.NewBatch()
		b.PutSubscription("ghost", &SubscriptionRecord{Filter: "x"})
		commitT(t, b)
		s.Close()
		before := dirState(t, dir)
		rep, err := Check(dir)
		if err != nil {
			t.Fatal(err)
		}
		want := CheckReport{Sessions: 6, Subscriptions: 6, Messages: 8, Inbound: 5, Retained: 4, Orphans: 1}
		if rep.Corrupt || rep.Sessions != want.Sessions || rep.Subscriptions != want.Subscriptions || rep.Messages != want.Messages ||
			rep.Inbound != want.Inbound || rep.Retained != want.Retained || rep.Orphans != want.Orphans {
			t.Fatalf("report %+v, want %+v", rep, want)
		}
		var out strings.Builder
		if _, err := rep.WriteTo(&out); err != nil || !strings.Contains(out.String(), "no problems found") {
			t.Fatalf("%v %s", err, out.String())
		}
		// Read-only: nothing changed (not even the log replayed into
		// new files).
		if after := dirState(t, dir); len(after) != len(before) {
			t.Fatalf("check changed the directory: %v -> %v", before, after)
		}
	})
	t.Run("corrupt record", func(t *testing.T) {
		dir := storeDir(t, true)
		s := openT(t, Options{Dir: dir})
		for _, k := range []string{"sa", "rb", "q-unknown"} {
			if err := s.db.Set([]byte(k), []byte{7}, pebble.Sync); err != nil {
				t.Fatal(err)
			}
		}
		s.Close()
		rep, err := Check(dir)
		if err != nil {
			t.Fatal(err)
		}
		var out strings.Builder
		_, _ = rep.WriteTo(&out)
		if !rep.Corrupt || rep.ProblemCount != 3 || !strings.Contains(out.String(), `key "sa"`) ||
			!strings.Contains(out.String(), "unknown key tag") || !strings.Contains(out.String(), "CORRUPT: 3 problem(s)") {
			t.Fatalf("report:\n%s", out.String())
		}
	})
	t.Run("corrupt sstable", func(t *testing.T) {
		dir := storeDir(t, true)
		sst := files(t, dir, "*.sst")[0]
		flip(t, sst, 200)
		rep, err := Check(dir)
		if err != nil {
			t.Fatal(err)
		}
		var out strings.Builder
		_, _ = rep.WriteTo(&out)
		if !rep.Corrupt || !strings.Contains(out.String(), filepath.Base(sst)) {
			t.Fatalf("report:\n%s", out.String())
		}
	})
	t.Run("corrupt log", func(t *testing.T) {
		dir := storeDir(t, false)
		flip(t, files(t, dir, "*.log")[0], 20)
		rep, err := Check(dir)
		if err != nil {
			t.Fatal(err)
		}
		if !rep.Corrupt || !strings.Contains(strings.Join(rep.Problems, "\n"), "write-ahead log") {
			t.Fatalf("report %+v", rep)
		}
	})
	t.Run("in use", func(t *testing.T) {
		dir := storeDir(t, false)
		openT(t, Options{Dir: dir})
		if _, err := Check(dir); err == nil || !strings.Contains(err.Error(), "already open") {
			t.Fatalf("Check of an open store: %v", err)
		}
	})
	t.Run("not a store", func(t *testing.T) {
		if _, err := Check(t.TempDir()); err == nil {
			t.Fatal("Check of an empty directory succeeded")
		}
		if _, err := Check(filepath.Join(t.TempDir(), "missing")); err == nil {
			t.Fatal("Check of a missing directory succeeded")
		}
	})
}

func TestReset(t *testing.T) {
	dir := storeDir(t, true)
	sst := files(t, dir, "*.sst")[0]
	flip(t, sst, 200)
	before := dirState(t, dir)
	now := time.Date(2026, 3, 4, 5, 6, 7, 0, time.FixedZone("X", 3600))
	moved, err := Reset(dir, now)
	if err != nil {
		t.Fatal(err)
	}
	if moved != dir+".corrupt-20260304T040607Z" {
		t.Fatalf("moved to %s", moved)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("%s still exists: %v", dir, err)
	}
	if after := dirState(t, moved); len(after) != len(before) {
		t.Fatalf("moved copy differs: %v -> %v", before, after)
	}
	// The next start is fresh.
	s := openT(t, Options{Dir: dir})
	if ls := loadAll(t, s); len(ls) != 0 {
		t.Fatalf("sessions after reset: %d", len(ls))
	}
	// In use: refused. Then a second reset in the same second gets a
	// suffix.
	if _, err := Reset(dir, now); err == nil || !strings.Contains(err.Error(), "already open") {
		t.Fatalf("Reset of an open store: %v", err)
	}
	s.Close()
	moved2, err := Reset(dir, now)
	if err != nil || moved2 != moved+"-1" {
		t.Fatalf("second reset: %q %v", moved2, err)
	}
	// Not a Pebble directory: refused, untouched.
	other := t.TempDir()
	if err := os.WriteFile(filepath.Join(other, "notes.txt"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Reset(other, now); err == nil || !strings.Contains(err.Error(), "no Pebble database") {
		t.Fatalf("Reset of a foreign directory: %v", err)
	}
	if _, err := os.Stat(filepath.Join(other, "notes.txt")); err != nil {
		t.Fatal(err)
	}
}
