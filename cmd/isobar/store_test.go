package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/isobar-mq/isobar/internal/store"
)

// newStore writes a small store in a new directory (compacted into an
// sstable) and returns the directory.
func newStore(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "data")
	s, err := store.Open(store.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	b := s.NewBatch()
	for _, id := range []string{"a", "b", "c"} {
		b.PutSession(&store.SessionRecord{ClientID: id, ExpiryInterval: 60})
		b.PutSubscription(id, &store.SubscriptionRecord{Filter: "t/#", QoS: 1})
		b.PutMessage(id, 1, &store.MessageRecord{Topic: "t/1", Payload: bytes.Repeat([]byte("x"), 500), QoS: 1})
	}
	b.PutRetained(&store.MessageRecord{Topic: "r", Payload: []byte("kept"), Retain: true})
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := s.Compact(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return dir
}

// corruptSST flips a byte inside the first sstable of dir and returns its
// name.
func corruptSST(t *testing.T, dir string) string {
	t.Helper()
	ssts, err := filepath.Glob(filepath.Join(dir, "*.sst"))
	if err != nil || len(ssts) == 0 {
		t.Fatalf("no sstable in %s: %v", dir, err)
	}
	f, err := os.OpenFile(ssts[0], os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, 100); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0xFF
	if _, err := f.WriteAt(b, 100); err != nil {
		t.Fatal(err)
	}
	return filepath.Base(ssts[0])
}

func runCmd(args ...string) (int, string, string) {
	var stdout, stderr bytes.Buffer
	code := run(args, strings.NewReader(""), &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

func TestStoreCheck(t *testing.T) {
	dir := newStore(t)
	code, out, errOut := runCmd("store", "check", "--data-dir", dir)
	if code != 0 || !strings.Contains(out, "sessions: 3") || !strings.Contains(out, "retained messages: 1") ||
		!strings.Contains(out, "no problems found") {
		t.Fatalf("check of a sound store: %d\n%s%s", code, out, errOut)
	}
	// --config names the directory.
	cfg := filepath.Join(t.TempDir(), "isobar.yaml")
	if err := os.WriteFile(cfg, []byte("store:\n  data_dir: "+dir+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, out, errOut := runCmd("store", "check", "--config", cfg); code != 0 || !strings.Contains(out, "store "+dir) {
		t.Fatalf("check --config: %d\n%s%s", code, out, errOut)
	}
	sst := corruptSST(t, dir)
	code, out, errOut = runCmd("store", "check", "--data-dir", dir)
	if code != 1 || !strings.Contains(out, "CORRUPT") || !strings.Contains(out, sst) || !strings.Contains(out, "isobar store reset --data-dir "+dir) {
		t.Fatalf("check of a corrupt store: %d\n%s%s", code, out, errOut)
	}
	if code, _, errOut := runCmd("store", "check", "--data-dir", filepath.Join(t.TempDir(), "missing")); code != 1 || errOut == "" {
		t.Fatalf("check of a missing directory: %d %s", code, errOut)
	}
	for _, args := range [][]string{{"store"}, {"store", "fix"}, {"store", "check", "extra"}, {"store", "check", "--bogus"}} {
		if code, _, _ := runCmd(args...); code != 2 {
			t.Fatalf("%v: exit %d, want 2", args, code)
		}
	}
}

func TestStoreReset(t *testing.T) {
	dir := newStore(t)
	corruptSST(t, dir)
	code, out, errOut := runCmd("store", "reset", "--data-dir", dir)
	if code != 0 || !strings.Contains(out, "moved "+dir+" to "+dir+".corrupt-") {
		t.Fatalf("reset: %d\n%s%s", code, out, errOut)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("%s still there: %v", dir, err)
	}
	moved, _ := filepath.Glob(dir + ".corrupt-*")
	if len(moved) != 1 {
		t.Fatalf("moved copies: %v", moved)
	}
	if code, _, errOut := runCmd("store", "reset", "--data-dir", dir); code != 1 || errOut == "" {
		t.Fatalf("reset of a missing directory: %d %s", code, errOut)
	}
}

// TestServeCorruptStore: a corrupt store used to panic at startup; serve
// now exits 1 at once with a message naming the file and the commands to
// run.
func TestServeCorruptStore(t *testing.T) {
	dir := newStore(t)
	sst := corruptSST(t, dir)
	cfg := filepath.Join(t.TempDir(), "isobar.yaml")
	yaml := "listeners:\n  - {name: mqtt, protocol: mqtt, address: \"127.0.0.1:0\"}\nhttp:\n  enabled: false\nstore:\n  data_dir: " + dir + "\n"
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	type result struct {
		code        int
		out, errOut string
	}
	done := make(chan result, 1)
	go func() {
		code, out, errOut := runCmd("serve", "--config", cfg)
		done <- result{code, out, errOut}
	}()
	select {
	case r := <-done:
		if r.code != 1 || !strings.Contains(r.errOut, sst) || !strings.Contains(r.errOut, "isobar store check --data-dir "+dir) {
			t.Fatalf("serve on a corrupt store: %d\n%s%s", r.code, r.out, r.errOut)
		}
		t.Logf("serve output:\n%s", r.errOut)
		if n := strings.Count(r.errOut, "\n"); n > 3 {
			t.Fatalf("%d lines:\n%s", n, r.errOut)
		}
	case <-time.After(30 * time.Second):
		// It started: stop it (serve handles SIGTERM) and fail.
		_ = syscall.Kill(os.Getpid(), syscall.SIGTERM)
		<-done
		t.Fatal("serve started on a corrupt store")
	}
}

func TestUsageSaysWhatItIs(t *testing.T) {
	code, out, _ := runCmd("--help")
	if code != 0 || strings.Contains(out, "clustered") || !strings.Contains(out, "MQTT") || !strings.Contains(out, "isobar store check") {
		t.Fatalf("help: %d\n%s", code, out)
	}
}
