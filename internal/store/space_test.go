package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// logBuffer collects log output safely across goroutines.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// eventually polls cond every 5 ms for at most d.
func eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func putMsg(s Store, clientID string, seq uint64, payload []byte, sync bool) error {
	b := s.NewBatch()
	b.PutMessage(clientID, seq, &MessageRecord{Topic: "t", Payload: payload, QoS: 1})
	if sync {
		return b.Commit()
	}
	return b.CommitNoSync()
}

// TestFreeSpaceFloor: below the floor commits fail with ErrNoSpace
// without applying anything, Writable and Stats say so, the floor has a
// hysteresis, and the store recovers by itself when space returns.
func TestFreeSpaceFloor(t *testing.T) {
	var free atomic.Uint64
	free.Store(1 << 30)
	var logs logBuffer
	dir := t.TempDir()
	s := openT(t, Options{Dir: dir, MinFreeBytes: 10 << 20, Logger: logs.logger(), checkInterval: 2 * time.Millisecond,
		diskFree: func(string) (uint64, error) { return free.Load(), nil }})
	if err := putMsg(s, "c", 1, []byte("before"), true); err != nil {
		t.Fatal(err)
	}
	if err := s.Writable(); err != nil {
		t.Fatal(err)
	}

	free.Store(5 << 20)
	eventually(t, 5*time.Second, "store not degraded below the floor", func() bool { return s.Writable() != nil })
	err := s.Writable()
	if !errors.Is(err, ErrNoSpace) || !strings.Contains(err.Error(), "store.min_free_bytes") || !strings.Contains(err.Error(), "5.0 MiB") {
		t.Fatalf("Writable: %v", err)
	}
	for _, sync := range []bool{true, false} {
		if err := putMsg(s, "c", 2, []byte("refused"), sync); !errors.Is(err, ErrNoSpace) {
			t.Fatalf("commit (sync %v) below the floor: %v", sync, err)
		}
	}
	if st := s.Stats(); !st.Degraded || st.FreeBytes != 5<<20 {
		t.Fatalf("stats %+v", st)
	}
	// Just above the floor is not enough to recover (hysteresis).
	free.Store(10<<20 + 1)
	time.Sleep(30 * time.Millisecond)
	if err := s.Writable(); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("recovered within the hysteresis: %v", err)
	}
	free.Store(1 << 30)
	eventually(t, 5*time.Second, "store did not recover", func() bool { return s.Writable() == nil })
	if err := putMsg(s, "c", 3, []byte("after"), true); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Degraded || st.FreeBytes != 1<<30 {
		t.Fatalf("stats %+v", st)
	}
	ls := loadAll(t, s)
	if len(ls) != 0 {
		t.Fatalf("sessions %v", ls)
	}
	// Nothing of the refused commits was applied (messages without a
	// session are orphans: count the keys directly).
	if got := countKeys(t, s); got != 2 {
		t.Fatalf("%d message keys, want 2", got)
	}
	// One line when degrading, one when recovering.
	if n := strings.Count(logs.String(), "refusing durable writes"); n != 1 {
		t.Fatalf("%d 'refusing' lines:\n%s", n, logs.String())
	}
	if n := strings.Count(logs.String(), "writable again"); n != 1 {
		t.Fatalf("%d 'writable again' lines:\n%s", n, logs.String())
	}
}

func countKeys(t testing.TB, s *PebbleStore) int {
	t.Helper()
	it, err := s.db.NewIter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	n := 0
	for it.First(); it.Valid(); it.Next() {
		if it.Key()[0] == tagMessage {
			n++
		}
	}
	return n
}

func TestOpenRefusesBelowFloor(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	start := time.Now()
	_, err := Open(Options{Dir: dir, MinFreeBytes: 8 << 20, diskFree: func(string) (uint64, error) { return 3 << 20, nil }})
	if !errors.Is(err, ErrNoSpace) || !strings.Contains(err.Error(), "only 3.0 MiB (3145728 bytes) free") || !strings.Contains(err.Error(), "store.min_free_bytes") {
		t.Fatalf("Open: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Open took %v", d)
	}
	// The default floor applies when MinFreeBytes is 0; a negative one
	// disables it.
	if _, err := Open(Options{Dir: dir, diskFree: func(string) (uint64, error) { return DefaultMinFreeBytes - 1, nil }}); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("Open with the default floor: %v", err)
	}
	s := openT(t, Options{Dir: dir, MinFreeBytes: -1, diskFree: func(string) (uint64, error) { return 0, nil }})
	if err := s.Writable(); err != nil {
		t.Fatalf("no floor: %v", err)
	}
}

// enospcFS fails writes and file creation with ENOSPC while full is set.
type enospcFS struct {
	vfs.FS
	full *atomic.Bool
}

func (fs enospcFS) Create(name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	if fs.full.Load() {
		return nil, &os.PathError{Op: "open", Path: name, Err: syscall.ENOSPC}
	}
	f, err := fs.FS.Create(name, c)
	if err != nil {
		return nil, err
	}
	return enospcFile{f, fs.full}, nil
}

func (fs enospcFS) ReuseForWrite(oldname, newname string, c vfs.DiskWriteCategory) (vfs.File, error) {
	if fs.full.Load() {
		return nil, &os.PathError{Op: "open", Path: newname, Err: syscall.ENOSPC}
	}
	f, err := fs.FS.ReuseForWrite(oldname, newname, c)
	if err != nil {
		return nil, err
	}
	return enospcFile{f, fs.full}, nil
}

func (fs enospcFS) OpenReadWrite(name string, c vfs.DiskWriteCategory, opts ...vfs.OpenOption) (vfs.File, error) {
	f, err := fs.FS.OpenReadWrite(name, c, opts...)
	if err != nil {
		return nil, err
	}
	return enospcFile{f, fs.full}, nil
}

type enospcFile struct {
	vfs.File
	full *atomic.Bool
}

func (f enospcFile) Write(p []byte) (int, error) {
	if f.full.Load() {
		// Like a real full disk: part of the data may fit.
		n := len(p) / 3
		if n > 0 {
			if m, err := f.File.Write(p[:n]); err != nil {
				return m, err
			}
		}
		return n, &os.PathError{Op: "write", Path: "x", Err: syscall.ENOSPC}
	}
	return f.File.Write(p)
}

func (f enospcFile) WriteAt(p []byte, off int64) (int, error) {
	if f.full.Load() {
		return 0, &os.PathError{Op: "write", Path: "x", Err: syscall.ENOSPC}
	}
	return f.File.WriteAt(p, off)
}

// TestWritesWaitForSpace: a write that fails with ENOSPC (no floor, so
// it reaches the disk) degrades the store and waits instead of failing
// in Pebble: the commit in flight returns ErrNoSpace promptly, later ones
// at once, nothing panics, and when space returns the store recovers
// and every acknowledged commit is there after a restart.
func TestWritesWaitForSpace(t *testing.T) {
	for _, policy := range []SyncPolicy{SyncAlways, SyncInterval} {
		t.Run(string(policy), func(t *testing.T) {
			var full atomic.Bool
			var logs logBuffer
			dir := t.TempDir()
			o := Options{Dir: dir, Sync: policy, SyncInterval: 5 * time.Millisecond, MinFreeBytes: -1, Logger: logs.logger(),
				fs: enospcFS{vfs.Default, &full}, retryInterval: 10 * time.Millisecond,
				OnFatal: unexpectedFatal}
			s, err := Open(o)
			if err != nil {
				t.Fatal(err)
			}
			payload := make([]byte, 4096)
			var acked []uint64
			seq := uint64(0)
			commit := func() error {
				seq++
				err := putMsg(s, "c", seq, payload, true)
				if err == nil {
					acked = append(acked, seq)
				}
				return err
			}
			for range 20 {
				if err := commit(); err != nil {
					t.Fatal(err)
				}
			}
			full.Store(true)
			// The commit that meets the full disk (SyncAlways), or the
			// background sync of SyncInterval, waits; the store degrades.
			start := time.Now()
			var failed error
			for i := 0; i < 200 && failed == nil; i++ {
				failed = commit()
				if failed == nil && policy == SyncInterval {
					time.Sleep(time.Millisecond)
				}
			}
			if !errors.Is(failed, ErrNoSpace) {
				t.Fatalf("commits on a full disk: %v", failed)
			}
			if d := time.Since(start); d > 3*time.Second {
				t.Fatalf("took %v to fail", d)
			}
			if err := s.Writable(); !errors.Is(err, ErrNoSpace) || !strings.Contains(err.Error(), "disk is full") {
				t.Fatalf("Writable: %v", err)
			}
			start = time.Now()
			if err := commit(); !errors.Is(err, ErrNoSpace) {
				t.Fatalf("commit while degraded: %v", err)
			}
			if d := time.Since(start); d > 50*time.Millisecond {
				t.Fatalf("refusal took %v", d)
			}
			full.Store(false)
			eventually(t, 10*time.Second, "store did not recover", func() bool { return s.Writable() == nil })
			for range 20 {
				if err := commit(); err != nil {
					t.Fatalf("after recovery: %v", err)
				}
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			o.fs = nil
			s2 := openT(t, o)
			got := map[uint64]bool{}
			it, err := s2.db.NewIter(nil)
			if err != nil {
				t.Fatal(err)
			}
			for it.First(); it.Valid(); it.Next() {
				if k := it.Key(); k[0] == tagMessage {
					_, rest, _ := splitClientKey(k)
					got[uint64(rest[7])|uint64(rest[6])<<8] = true
				}
			}
			_ = it.Close()
			for _, q := range acked {
				if !got[q] {
					t.Fatalf("acknowledged commit %d lost (have %d of %d)", q, len(got), len(acked))
				}
			}
			if strings.Contains(logs.String(), "panic") || strings.Count(logs.String(), "\n") > 20 {
				t.Fatalf("log:\n%s", logs.String())
			}
		})
	}
}

// TestCloseWhileWaitingForSpace: Close does not wait for space to
// return.
func TestCloseWhileWaitingForSpace(t *testing.T) {
	var full atomic.Bool
	var fatal atomic.Int32
	s := openT(t, Options{MinFreeBytes: -1, fs: enospcFS{vfs.Default, &full}, retryInterval: 10 * time.Millisecond,
		OnFatal: func(error) { fatal.Add(1) }})
	full.Store(true)
	if err := putMsg(s, "c", 1, make([]byte, 100), true); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("commit: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Close() }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "no space left") {
			t.Fatalf("Close: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close hangs on a full disk")
	}
	if fatal.Load() != 0 {
		t.Fatal("Close was fatal")
	}
}

func TestRateLimitedPebbleLog(t *testing.T) {
	var logs logBuffer
	p := &pebbleLogger{l: logs.logger(), rl: newRateLimiter(50 * time.Millisecond)}
	for i := range 1000 {
		p.Errorf("background error: write %06d.sst: no space left on device", i)
	}
	p.Errorf("another error %d", 1)
	if n := strings.Count(logs.String(), "background error"); n != 1 {
		t.Fatalf("%d lines:\n%s", n, logs.String())
	}
	time.Sleep(60 * time.Millisecond)
	p.Errorf("background error: write %06d.sst: no space left on device", 1000)
	out := logs.String()
	if n := strings.Count(out, "background error"); n != 2 || !strings.Contains(out, "suppressed_repeats=999") || !strings.Contains(out, "another error 1") {
		t.Fatalf("log:\n%s", out)
	}
}

// TestFatalfLogsOnce: Pebble's Fatalf logs one line with advice, degrades
// the store and calls OnFatal; it never returns to Pebble.
func TestFatalfLogsOnce(t *testing.T) {
	var logs logBuffer
	log := logs.logger()
	h := &health{dir: "/d", log: log}
	var calls atomic.Int32
	f := &fataler{log: log, dir: "/d", h: h, onFatal: func(error) { calls.Add(1) }}
	p := &pebbleLogger{l: log, rl: newRateLimiter(time.Second), f: f}
	for range 3 {
		func() {
			defer func() {
				if recover() == nil {
					t.Fatal("Fatalf returned")
				}
			}()
			p.Fatalf("MANIFEST write failed: write /d/MANIFEST-000009: %s", "no space left on device")
		}()
	}
	out := logs.String()
	if strings.Count(out, "\n") != 1 || !strings.Contains(out, "unrecoverable storage fault") || !strings.Contains(out, "free space") {
		t.Fatalf("log:\n%s", out)
	}
	if calls.Load() != 3 {
		t.Fatalf("OnFatal called %d times", calls.Load())
	}
	if err := h.writable(); !errors.Is(err, ErrDegraded) {
		t.Fatalf("writable: %v", err)
	}
	if a := fatalAdvice(errors.New("pebble: corrupt block checksum"), "/d"); !strings.Contains(a, "isobar store check --data-dir /d") {
		t.Fatalf("advice %q", a)
	}
}

// unexpectedFatal is the OnFatal of tests that must not reach it: it
// ends the test binary loudly (returning would let Pebble retry forever).
func unexpectedFatal(err error) { panic(fmt.Sprintf("unexpected fatal storage fault: %v", err)) }

// mountTmpfs mounts a tmpfs of the given size for the test. It needs
// root; it skips without, except in CI (CI set) where it fails.
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("this test mounts a tmpfs and must run as root in CI")
		}
		t.Skip("needs root to mount a tmpfs")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("mount: %v: %s", err, out)
		}
		t.Skipf("cannot mount a tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

// fillDisk writes path until the file system is full and returns how
// much it wrote.
func fillDisk(t *testing.T, path string) int64 {
	t.Helper()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	var n int64
	for range 100_000 {
		m, err := f.Write(buf)
		n += int64(m)
		if err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("the disk did not fill")
	return n
}

func randomPayload(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// TestRealDiskFull fills a real (tmpfs) file system with commits, no
// floor: the store refuses commits with ErrNoSpace instead of panicking
// (Pebble's "fatal commit error" before), recovers when space is freed,
// and keeps every acknowledged commit.
func TestRealDiskFull(t *testing.T) {
	mnt := mountTmpfs(t, "16m")
	ballast := filepath.Join(mnt, "ballast")
	if err := os.WriteFile(ballast, make([]byte, 4<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	var logs logBuffer
	o := Options{Dir: filepath.Join(mnt, "data"), MinFreeBytes: -1, Logger: logs.logger(), retryInterval: 20 * time.Millisecond,
		OnFatal: unexpectedFatal}
	s, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewChaCha8([32]byte{1}))
	var acked []uint64
	var failed error
	for seq := uint64(1); seq <= 400 && failed == nil; seq++ { // 400 × 100 KiB > 16 MiB
		start := time.Now()
		failed = putMsg(s, "c", seq, randomPayload(r, 100<<10), true)
		if d := time.Since(start); d > 3*time.Second {
			t.Fatalf("commit %d took %v", seq, d)
		}
		if failed == nil {
			acked = append(acked, seq)
		}
	}
	if !errors.Is(failed, ErrNoSpace) {
		t.Fatalf("filling the disk: %v (after %d commits)", failed, len(acked))
	}
	if err := s.Writable(); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("Writable: %v", err)
	}
	if err := os.Remove(ballast); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "no recovery after freeing space", func() bool { return s.Writable() == nil })
	if err := putMsg(s, "c", 10_000, []byte("after"), true); err != nil {
		t.Fatalf("commit after recovery: %v", err)
	}
	acked = append(acked, 10_000)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	// Reopen a copy on a roomier disk: opening flushes what the log
	// holds, which needs space this one may not have.
	o.Dir = filepath.Join(t.TempDir(), "copy")
	if out, err := exec.Command("cp", "-a", filepath.Join(mnt, "data"), o.Dir).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v: %s", err, out)
	}
	s2 := openT(t, o)
	if got := countKeys(t, s2); got < len(acked) {
		t.Fatalf("%d messages after restart, %d acknowledged", got, len(acked))
	}
	if out := logs.String(); strings.Count(out, "\n") > 20 {
		t.Fatalf("%d log lines:\n%s", strings.Count(out, "\n"), out)
	}
}

// TestRealDiskFloor: with a floor, commits are refused before the file
// system is actually full.
func TestRealDiskFloor(t *testing.T) {
	mnt := mountTmpfs(t, "32m")
	ballast := filepath.Join(mnt, "ballast")
	if err := os.WriteFile(ballast, make([]byte, 8<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	s := openT(t, Options{Dir: filepath.Join(mnt, "data"), MinFreeBytes: 12 << 20, checkInterval: 10 * time.Millisecond,
		OnFatal: unexpectedFatal})
	r := rand.New(rand.NewChaCha8([32]byte{2}))
	var failed error
	for seq := uint64(1); seq <= 1000 && failed == nil; seq++ {
		failed = putMsg(s, "c", seq, randomPayload(r, 32<<10), true)
	}
	if !errors.Is(failed, ErrNoSpace) || !strings.Contains(failed.Error(), "below the floor") {
		t.Fatalf("filling to the floor: %v", failed)
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(mnt, &st); err != nil {
		t.Fatal(err)
	}
	if free := st.Bavail * uint64(st.Bsize); free < 4<<20 {
		t.Fatalf("only %d bytes free: the floor did not stop the writes in time", free)
	}
	if err := os.Remove(ballast); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "no recovery after freeing space", func() bool { return s.Writable() == nil })
	if err := putMsg(s, "c", 5000, []byte("after"), true); err != nil {
		t.Fatal(err)
	}
}

// TestRealDiskFullAtOpen: a restart on a full disk used to hang in Open,
// writing megabytes of the same line. Now: with a floor it fails at once
// with a clear error; without one it either opens or exits promptly with
// one line (helper process).
func TestRealDiskFullAtOpen(t *testing.T) {
	mnt := mountTmpfs(t, "16m")
	dir := filepath.Join(mnt, "data")
	s, err := Open(Options{Dir: dir, MinFreeBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewChaCha8([32]byte{3}))
	for seq := uint64(1); seq <= 40; seq++ {
		// CommitNoSync: the log holds data to replay at the next Open.
		if err := putMsg(s, "c", seq, randomPayload(r, 100<<10), false); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	fillDisk(t, filepath.Join(mnt, "filler"))

	start := time.Now()
	_, err = Open(Options{Dir: dir})
	if !errors.Is(err, ErrNoSpace) || !strings.Contains(err.Error(), "free some space") {
		t.Fatalf("Open on a full disk: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Open took %v", d)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestFullDiskOpenHelper$")
	cmd.Env = append(os.Environ(), "ISOBAR_STORE_FULL_HELPER="+dir)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("Open without a floor on a full disk hangs; output %d bytes: %.2000s", len(out), out)
	}
	t.Logf("helper without a floor: %v: %s", err, out)
	var ee *exec.ExitError
	switch {
	case err == nil:
		if !bytes.Contains(out, []byte("opened")) {
			t.Fatalf("helper: %s", out)
		}
	case errors.As(err, &ee) && ee.ExitCode() == ExitFatal:
		if n := bytes.Count(out, []byte("\n")); n > 2 || !bytes.Contains(out, []byte("unrecoverable storage fault")) ||
			!bytes.Contains(out, []byte("free space")) {
			t.Fatalf("fatal exit with %d lines: %s", n, out)
		}
	default:
		t.Fatalf("helper: %v: %.2000s", err, out)
	}
}

// TestFullDiskOpenHelper is the process of TestRealDiskFullAtOpen that
// opens a store on a full disk without a floor.
func TestFullDiskOpenHelper(t *testing.T) {
	dir := os.Getenv("ISOBAR_STORE_FULL_HELPER")
	if dir == "" {
		t.Skip("helper process only")
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	s, err := Open(Options{Dir: dir, MinFreeBytes: -1, Logger: log})
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Println("opened")
	_ = s.Close()
	os.Exit(0)
}
