package crashtest

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/isobar-mq/isobar/internal/mqtt/packet"
)

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

// TestFullDisk runs the real binary on a small file system and fills it
// with retained QoS 1 messages. It used to die on Pebble's "fatal commit
// error" panic, and a restart on the full disk hung writing megabytes of
// one log line. Now: the broker keeps running and stops acknowledging
// (at the free-space floor, or when the disk is full), says so once,
// recovers by itself when space is freed, stops cleanly, and everything it
// acknowledged is there after a restart.
func TestFullDisk(t *testing.T) {
	mnt := mountTmpfs(t, "64m")
	// ballast is freed to recover, reserve before the restart.
	ballast, reserve := filepath.Join(mnt, "ballast"), filepath.Join(mnt, "reserve")
	for f, size := range map[string]int{ballast: 20 << 20, reserve: 16 << 20} {
		if err := os.WriteFile(f, make([]byte, size), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	b := newBroker(t, "")
	b.dataDir = filepath.Join(mnt, "data")
	b.storeExtra = ", min_free_bytes: 8388608"
	b.start()

	r := rand.New(rand.NewChaCha8([32]byte{9}))
	payload := make([]byte, 64<<10)
	c, _ := mustDial(t, b.addr(), clientOpts{id: "filler", v: packet.V5, clean: true})
	acked := 0
	var failed error
	deadline := time.Now().Add(90 * time.Second)
	for i := 0; i < 2000 && failed == nil && time.Now().Before(deadline); i++ {
		for j := range payload {
			payload[j] = byte(r.Uint32())
		}
		var rc byte
		rc, failed = c.publishSync(uint16(i%60000+1), fmt.Sprintf("fill/%04d", i), payload, 1, true)
		if failed == nil && rc >= 0x80 {
			failed = fmt.Errorf("PUBACK reason 0x%02X", rc)
		}
		if failed == nil {
			acked++
		}
	}
	if failed == nil {
		t.Fatalf("%d retained messages of 64 KiB acknowledged on a 64 MiB file system", acked)
	}
	t.Logf("%d acknowledged, then: %v", acked, failed)
	if !b.running() {
		t.Fatalf("broker exited (%v):\n%s", b.waitErr, tailFile(b.logPath, 40))
	}
	// The floor or, as Pebble reserves 110% of the memtable size for each
	// new log file at once (17.6 MiB), the full disk itself.
	b.waitLog(5*time.Second, "store refusing durable writes")

	// Still full: a new publisher is not acknowledged either, promptly.
	c2, _ := mustDial(t, b.addr(), clientOpts{id: "late", v: packet.V5, clean: true})
	start := time.Now()
	if rc, err := c2.publishSync(1, "fill/late", []byte("x"), 1, true); err == nil && rc < 0x80 {
		t.Fatal("publish acknowledged below the floor")
	}
	if d := time.Since(start); d > 6*time.Second {
		t.Fatalf("refusal took %v", d)
	}

	if err := os.Remove(ballast); err != nil {
		t.Fatal(err)
	}
	b.waitLog(10*time.Second, "store writable again")
	// The broker notices within its store health check (250 ms) and stops
	// refusing durable operations.
	b.waitLog(5*time.Second, "durable operations resumed")
	c3, _ := mustDial(t, b.addr(), clientOpts{id: "after", v: packet.V5, clean: true})
	if rc, err := c3.publishSync(1, "fill/after", []byte("after"), 1, true); err != nil || rc >= 0x80 {
		t.Fatalf("publish after freeing space: 0x%02X %v", rc, err)
	}
	acked++
	c3.disconnect()
	b.stop()

	log := readFile(b.logPath)
	for _, bad := range []string{"panic", "goroutine "} {
		if strings.Contains(log, bad) {
			t.Fatalf("log contains %q:\n%s", bad, tailFile(b.logPath, 40))
		}
	}
	if n := strings.Count(log, "store refusing durable writes"); n != 1 {
		t.Fatalf("%d 'refusing' lines", n)
	}
	if n := strings.Count(log, "\n"); n > 100 {
		t.Fatalf("%d log lines:\n%s", n, tailFile(b.logPath, 40))
	}

	// Everything acknowledged survived.
	if err := os.Remove(reserve); err != nil {
		t.Fatal(err)
	}
	b.start()
	sub, _ := mustDial(t, b.addr(), clientOpts{id: "check", v: packet.V5, clean: true})
	// QoS 1: the retained messages (several MiB) are flow-controlled by the
	// in-flight window; at QoS 0 those beyond mqtt.max_pending_bytes would
	// be dropped as for any slow consumer.
	if _, err := sub.subscribeSync(1, packet.Subscription{Filter: "fill/#", QoS: 1}); err != nil {
		t.Fatal(err)
	}
	got := sub.recvN(t, acked, 60*time.Second, 0)
	if len(got) < acked {
		t.Fatalf("%d retained messages after restart, %d acknowledged", len(got), acked)
	}
	sub.disconnect()
	b.stop()
}
