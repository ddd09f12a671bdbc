package dedup

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/isobar-mq/isobar/internal/testutil/redistest"
)

// BenchmarkClaimConfirm measures a Claim of a new id followed by its
// Confirm, from 64 goroutines (the relay claims from many subscriptions at
// once), on each backend; it reports claims+confirms per second.
//
//	go test -run '^$' -bench ClaimConfirm ./internal/wis2/dedup/
func BenchmarkClaimConfirm(b *testing.B) {
	b.Run("memory", func(b *testing.B) {
		s := NewMemory(MemoryOptions{})
		defer s.Close()
		benchClaimConfirm(b, s)
	})
	// The sub-benchmarks' bodies run once per b.N tried: the servers are
	// started once, on the outer benchmark, when first needed.
	var redis, cluster *Redis
	outer := b
	b.Run("redis", func(b *testing.B) {
		if redis == nil {
			srv := redistest.Start(outer, redistest.Options{})
			redis = newBenchRedis(outer, RedisOptions{Addrs: []string{srv.Addr}})
		}
		benchClaimConfirm(b, redis)
	})
	b.Run("cluster", func(b *testing.B) {
		if cluster == nil {
			c := redistest.StartCluster(outer, 3, 1, redistest.Options{})
			cluster = newBenchRedis(outer, RedisOptions{Addrs: c.Addrs(), Cluster: true})
		}
		benchClaimConfirm(b, cluster)
	})
}

func newBenchRedis(b *testing.B, o RedisOptions) *Redis {
	s, err := NewRedis(o)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close() })
	return s
}

func benchClaimConfirm(b *testing.B, s Store) {
	ctx := context.Background()
	var next atomic.Int64
	run := time.Now().UnixNano()
	// RunParallel starts parallelism x GOMAXPROCS goroutines.
	b.SetParallelism(max(1, 64/runtime.GOMAXPROCS(0)))
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			id := fmt.Sprintf("bench-%d-%d", run, next.Add(1))
			r, tok, err := s.Claim(ctx, id, 10*time.Second)
			if err != nil || r != Claimed {
				b.Errorf("Claim = %v, %v", r, err)
				return
			}
			if err := s.Confirm(ctx, id, tok, time.Minute); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "claim+confirm/s")
}
