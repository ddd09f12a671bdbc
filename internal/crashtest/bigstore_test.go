package crashtest

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/isobar-mq/isobar/internal/mqtt/packet"
	"github.com/isobar-mq/isobar/internal/store"
)

// TestStartupLargeStore measures how long a node takes to start on a store
// of 100,000 sessions holding 1,000,000 queued messages (10 each, 100-byte
// payloads), written through the store's Batch API: in process
// (node.Start, including Restore) and as the real binary. It is slow and
// memory-hungry, so it runs only with ISOBAR_CRASHTEST_BIG=1.
func TestStartupLargeStore(t *testing.T) {
	if os.Getenv("ISOBAR_CRASHTEST_BIG") != "1" {
		t.Skip("set ISOBAR_CRASHTEST_BIG=1 to run (100k sessions, 1M messages)")
	}
	const (
		sessions   = 100_000
		perSession = 10
	)
	dataDir := t.TempDir()
	st, err := store.Open(store.Options{Dir: dataDir, Sync: store.SyncAlways})
	if err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	b := st.NewBatch()
	payload := make([]byte, 100)
	now := time.Now().UnixNano()
	id := func(i int) string { return fmt.Sprintf("big-%06d", i) }
	for i := 0; i < sessions; i++ {
		cid := id(i)
		b.PutSession(&store.SessionRecord{ClientID: cid, ExpiryInterval: 0xFFFFFFFF, DisconnectedAt: now, NextPacketID: perSession})
		b.PutSubscription(cid, &store.SubscriptionRecord{Filter: "big/" + cid, QoS: 1})
		for k := 0; k < perSession; k++ {
			b.PutMessage(cid, uint64(k+1), &store.MessageRecord{
				Topic: "big/" + cid, Payload: payload, QoS: 1, Received: now, From: "loader",
				DeliverQoS: 1, PacketID: uint16(k + 1), State: store.StateQueued,
			})
		}
		if b.Len() >= 20_000 {
			if err := b.Commit(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %d sessions, %d messages in %v; data dir %d MiB", sessions, sessions*perSession,
		time.Since(began).Round(time.Millisecond), dirSize(t, dataDir)>>20)

	// In process: node.Start = open the store, Restore, listen.
	runtime.GC()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	yaml := nodeConfig(dataDir, "")
	start := time.Now()
	n, addr := startNode(t, yaml)
	startDur := time.Since(start)
	runtime.GC()
	runtime.ReadMemStats(&m1)
	if c := n.Server.SessionCount(); c != sessions {
		t.Fatalf("%d sessions restored, want %d", c, sessions)
	}
	c, ack := mustDial(t, addr, clientOpts{id: id(sessions / 2), v: packet.V311})
	if !ack.SessionPresent {
		t.Fatal("session not present")
	}
	got := c.recvN(t, perSession, 10*time.Second, 200*time.Millisecond)
	if got[0].Topic != "big/"+id(sessions/2) {
		t.Errorf("first restored message on %s", got[0].Topic)
	}
	c.disconnect()
	stopStart := time.Now()
	if err := n.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	stopDur := time.Since(stopStart)
	t.Logf("node.Start (in process): %v; heap after start %d MiB (+%d MiB); Stop %v",
		startDur.Round(time.Millisecond), m1.HeapAlloc>>20, (int64(m1.HeapAlloc)-int64(m0.HeapAlloc))>>20, stopDur.Round(time.Millisecond))

	// The real binary on the same store.
	bp := newBroker(t, "sys_interval: 0s\n")
	bp.dataDir = dataDir
	binStart := bp.start()
	t.Logf("isobar binary: started (store open, restore, listening) in %v", binStart.Round(time.Millisecond))
	bp.waitLog(time.Second, `msg="state restored from store"`)
	for _, line := range []string{tailFile(bp.logPath, 10)} {
		t.Logf("binary log:\n%s", line)
	}
	killStart := time.Now()
	bp.kill()
	restart := bp.start()
	t.Logf("isobar binary: restart after SIGKILL in %v (kill took %v)", restart.Round(time.Millisecond), time.Since(killStart).Round(time.Millisecond)-restart.Round(time.Millisecond))
	bp.stop()
}
