package dedup

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// fakeClock is a settable clock for the memory store.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Unix(1_700_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func TestMemorySuite(t *testing.T) {
	clk := newFakeClock()
	s := NewMemory(MemoryOptions{Now: clk.Now})
	defer s.Close()
	runSuite(t, harness{s: s, lease: 10 * time.Second, advance: clk.Advance})
}

func TestMemoryExactlyOnce(t *testing.T) {
	s := NewMemory(MemoryOptions{})
	defer s.Close()
	confirmed, errs := exactlyOnce(t, []Store{s}, 16, 500, time.Second, 10*time.Second)
	checkExactlyOnce(t, confirmed)
	if errs != 0 {
		t.Errorf("%d errors", errs)
	}
}

func TestMemoryBounded(t *testing.T) {
	clk := newFakeClock()
	reg := prometheus.NewRegistry()
	s := NewMemory(MemoryOptions{MaxEntries: 10, Now: clk.Now, SweepInterval: -1, Registerer: reg})
	defer s.Close()
	ctx := context.Background()
	for i := range 100 {
		id := fmt.Sprintf("b%d", i)
		// Later ids get longer leases, so the oldest (closest to expiry) go first.
		r, tok, err := s.Claim(ctx, id, time.Duration(i+1)*time.Second)
		if err != nil || r != Claimed {
			t.Fatalf("Claim(%s) = %v, %v", id, r, err)
		}
		if i%2 == 0 {
			if err := s.Confirm(ctx, id, tok, time.Hour+time.Duration(i)*time.Second); err != nil {
				t.Fatal(err)
			}
		}
	}
	if n := s.Len(); n != 10 {
		t.Fatalf("Len = %d, want 10", n)
	}
	if v := testutil.ToFloat64(s.m.evictions); v != 90 {
		t.Errorf("evictions = %v, want 90", v)
	}
	// The survivors are the entries furthest from expiry: the last
	// published ones, and b99's lease, which evicted b80.
	for i := 82; i < 100; i += 2 {
		mustClaim(t, s, fmt.Sprintf("b%d", i), time.Second, Published)
	}
	mustClaim(t, s, "b99", time.Second, Leased)
}

func TestMemorySweep(t *testing.T) {
	clk := newFakeClock()
	s := NewMemory(MemoryOptions{Now: clk.Now, SweepInterval: 5 * time.Millisecond})
	defer s.Close()
	ctx := context.Background()
	for i := range 10000 {
		if _, _, err := s.Claim(ctx, fmt.Sprint(i), time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := s.Claim(ctx, "long", time.Hour); err != nil {
		t.Fatal(err)
	}
	clk.Advance(2 * time.Second)
	deadline := time.Now().Add(5 * time.Second)
	for s.Len() != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("Len = %d after the sweep, want 1", s.Len())
		}
		time.Sleep(5 * time.Millisecond)
	}
	mustClaim(t, s, "long", time.Second, Leased)
}

func TestMemorySweepOnCalls(t *testing.T) {
	// Without the sweeper, calls clear expired entries on their way.
	clk := newFakeClock()
	s := NewMemory(MemoryOptions{Now: clk.Now, SweepInterval: -1})
	defer s.Close()
	ctx := context.Background()
	for i := range 100 {
		if _, _, err := s.Claim(ctx, fmt.Sprint(i), time.Second); err != nil {
			t.Fatal(err)
		}
	}
	clk.Advance(2 * time.Second)
	for i := range 20 {
		if _, _, err := s.Claim(ctx, fmt.Sprint("n", i), time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	if n := s.Len(); n != 20 {
		t.Fatalf("Len = %d, want 20 (100 expired, 20 calls x %d swept)", n, sweepPerCall)
	}
}

func TestMemoryClosedAndContext(t *testing.T) {
	s := NewMemory(MemoryOptions{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := s.Claim(ctx, "a", time.Second); !errors.Is(err, context.Canceled) {
		t.Errorf("Claim with a cancelled context = %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	bg := context.Background()
	if _, _, err := s.Claim(bg, "a", time.Second); !errors.Is(err, ErrClosed) {
		t.Errorf("Claim after Close = %v", err)
	}
	if err := s.Confirm(bg, "a", "t", time.Second); !errors.Is(err, ErrClosed) {
		t.Errorf("Confirm after Close = %v", err)
	}
	if err := s.Release(bg, "a", "t"); !errors.Is(err, ErrClosed) {
		t.Errorf("Release after Close = %v", err)
	}
}

func TestMemoryMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	s := NewMemory(MemoryOptions{Registerer: reg})
	ctx := context.Background()
	tok := mustClaim(t, s, "m", time.Second, Claimed)
	mustClaim(t, s, "m", time.Second, Leased)
	_ = s.Confirm(ctx, "m", tok, time.Minute)
	mustClaim(t, s, "m", time.Second, Published)
	_ = s.Release(ctx, "m", tok) // not_holder
	_, _, _ = s.Claim(ctx, "", time.Second)
	for _, c := range []struct {
		op, res string
		want    float64
	}{
		{opClaim, "claimed", 1}, {opClaim, "leased", 1}, {opClaim, "published", 1}, {opClaim, resError, 1},
		{opConfirm, resOK, 1}, {opRelease, resNotHolder, 1}, {opRelease, resOK, 0},
	} {
		if v := testutil.ToFloat64(s.m.requests.WithLabelValues(c.op, c.res)); v != c.want {
			t.Errorf("requests{%s,%s} = %v, want %v", c.op, c.res, v, c.want)
		}
	}
	if v := testutil.ToFloat64(s.m.errors.WithLabelValues(opClaim)); v != 1 {
		t.Errorf("errors{claim} = %v", v)
	}
	if n, err := testutil.GatherAndCount(reg, "isobar_wis2_dedup_latency_seconds"); err != nil || n != 3 {
		t.Errorf("latency series = %d, %v", n, err)
	}
	// A second store on the same registry cannot register: it runs without
	// metrics instead of failing.
	s2 := NewMemory(MemoryOptions{Registerer: reg})
	if s2.m != nil {
		t.Error("second store registered its metrics")
	}
	_ = s2.Close()
	_ = s.Close()
	// Close unregisters, so the registry can be reused.
	s3 := NewMemory(MemoryOptions{Registerer: reg})
	if s3.m == nil {
		t.Error("metrics not registered after the first store closed")
	}
	_ = s3.Close()
}
