package store

import (
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// benchMessage has an incompressible 100-byte payload.
func benchMessage() MessageRecord {
	payload := make([]byte, 100)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range payload {
		payload[i] = byte(r.Uint32())
	}
	return MessageRecord{Topic: "devices/1234/telemetry", Payload: payload, QoS: 1,
		Received: time.Now().UnixNano(), From: "device-1234", DeliverQoS: 1, State: StateQueued}
}

func BenchmarkEncodeMessage(b *testing.B) {
	m := benchMessage()
	m.Props = allProps()
	var buf []byte
	b.ReportAllocs()
	for b.Loop() {
		buf = appendMessage(buf[:0], &m)
	}
	b.SetBytes(int64(len(buf)))
}

func BenchmarkDecodeMessage(b *testing.B) {
	m := benchMessage()
	m.Props = allProps()
	enc := appendMessage(nil, &m)
	b.SetBytes(int64(len(enc)))
	b.ReportAllocs()
	var d MessageRecord
	for b.Loop() {
		if err := decodeMessage(enc, &d); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCommitMessage puts one 100-byte message and commits, from one
// goroutine: the latency of a commit per sync policy.
func BenchmarkCommitMessage(b *testing.B) {
	for _, policy := range []SyncPolicy{SyncAlways, SyncInterval} {
		b.Run(string(policy), func(b *testing.B) {
			s := openT(b, Options{Sync: policy})
			m := benchMessage()
			batch := s.NewBatch()
			b.ReportAllocs()
			seq := uint64(0)
			for b.Loop() {
				seq++
				batch.PutMessage("bench-client", seq, &m)
				if err := batch.Commit(); err != nil {
					b.Fatal(err)
				}
			}
			st := s.Stats()
			b.ReportMetric(float64(st.Syncs)/float64(b.N), "syncs/op")
		})
	}
}

// BenchmarkGroupCommit runs N goroutines committing one message each per
// commit with SyncAlways. Pebble shares one fsync among the commits
// waiting for it, so throughput grows with N instead of staying at one
// commit per fsync.
func BenchmarkGroupCommit(b *testing.B) {
	for _, n := range []int{1, 4, 16, 64} {
		b.Run(fmt.Sprintf("committers=%d", n), func(b *testing.B) {
			s := openT(b, Options{Sync: SyncAlways})
			before := s.Stats()
			var next atomic.Int64
			var wg sync.WaitGroup
			total := int64(b.N)
			b.ResetTimer()
			start := time.Now()
			for w := range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					batch := s.NewBatch()
					m := benchMessage()
					cid := fmt.Sprintf("client-%d", w)
					for {
						i := next.Add(1)
						if i > total {
							return
						}
						batch.PutMessage(cid, uint64(i), &m)
						if err := batch.Commit(); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			el := time.Since(start)
			b.StopTimer()
			st := s.Stats()
			b.ReportMetric(float64(b.N)/el.Seconds(), "commits/s")
			if syncs := st.Syncs - before.Syncs; syncs > 0 {
				b.ReportMetric(float64(b.N)/float64(syncs), "commits/sync")
			}
		})
	}
}

// loadFixture writes sessions × perSession messages (plus a subscription
// and an inbound id per session) with SyncInterval and closes the store.
func loadFixture(tb testing.TB, dir string, sessions, perSession int) {
	tb.Helper()
	s, err := Open(Options{Dir: dir, Sync: SyncInterval})
	if err != nil {
		tb.Fatal(err)
	}
	m := benchMessage()
	r := rand.New(rand.NewPCG(3, 4)) // distinct payloads: nothing compresses
	b := s.NewBatch()
	for i := range sessions {
		cid := fmt.Sprintf("client-%07d", i)
		b.PutSession(&SessionRecord{ClientID: cid, ExpiryInterval: 86400, Username: "user"})
		b.PutSubscription(cid, &SubscriptionRecord{Filter: "devices/" + cid + "/cmd/#", QoS: 1})
		for j := range perSession {
			for k := range m.Payload {
				m.Payload[k] = byte(r.Uint32())
			}
			b.PutMessage(cid, uint64(j), &m)
		}
		b.PutInbound(cid, 7)
		if b.Len() >= 10_000 {
			if err := b.Commit(); err != nil {
				tb.Fatal(err)
			}
		}
	}
	if err := b.Commit(); err != nil {
		tb.Fatal(err)
	}
	if err := s.Close(); err != nil {
		tb.Fatal(err)
	}
}

// BenchmarkLoad measures LoadSessions over 10k sessions × 10 messages
// (the store is open; see TestBigLoad for open plus load at scale).
func BenchmarkLoad(b *testing.B) {
	dir := b.TempDir()
	loadFixture(b, dir, 10_000, 10)
	s := openT(b, Options{Dir: dir})
	b.ReportAllocs()
	for b.Loop() {
		msgs := 0
		if err := s.LoadSessions(func(ls *LoadedSession) error {
			msgs += len(ls.Messages)
			return nil
		}); err != nil {
			b.Fatal(err)
		}
		if msgs != 100_000 {
			b.Fatalf("%d messages", msgs)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/100_000, "ns/msg")
}

// TestBigLoad measures opening and loading 100k sessions with 1M queued
// messages. Run with ISOBAR_STORE_BIG=1 (not in CI: ~1 GB of writes).
func TestBigLoad(t *testing.T) {
	if os.Getenv("ISOBAR_STORE_BIG") != "1" {
		t.Skip("set ISOBAR_STORE_BIG=1")
	}
	dir := t.TempDir()
	start := time.Now()
	loadFixture(t, dir, 100_000, 10)
	t.Logf("write 100k sessions, 1M messages: %v, %d MB on disk", time.Since(start), duBytes(t, dir, allFiles)>>20)

	runtime.GC()
	var ms0 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	start = time.Now()
	s := openT(t, Options{Dir: dir})
	opened := time.Since(start)
	var sessions, msgs int
	var kept []*LoadedSession // what a broker does: keep everything
	if err := s.LoadSessions(func(ls *LoadedSession) error {
		sessions++
		msgs += len(ls.Messages)
		kept = append(kept, ls)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	total := time.Since(start)
	runtime.GC()
	var ms1 runtime.MemStats
	runtime.ReadMemStats(&ms1)
	if sessions != 100_000 || msgs != 1_000_000 {
		t.Fatalf("loaded %d sessions, %d messages", sessions, msgs)
	}
	t.Logf("open %v, open+LoadSessions %v (%.0f ns/message); live heap of the loaded state %d MB",
		opened, total, float64(total.Nanoseconds())/1e6, (ms1.HeapAlloc-ms0.HeapAlloc)>>20)
	runtime.KeepAlive(kept)
}
