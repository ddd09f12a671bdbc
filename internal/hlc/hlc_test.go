package hlc

import (
	"sync"
	"testing"
	"time"
)

func TestMonotonicWhenWallStandsStill(t *testing.T) {
	now := time.UnixMilli(1_000_000)
	c := &Clock{Wall: func() time.Time { return now }}
	prev := c.Now()
	for range 1000 {
		ts := c.Now()
		if ts <= prev {
			t.Fatalf("not increasing: %d after %d", ts, prev)
		}
		prev = ts
	}
	now = now.Add(-time.Minute) // the wall clock steps back
	if ts := c.Now(); ts <= prev {
		t.Fatalf("went backwards after a wall-clock step: %d after %d", ts, prev)
	}
}

func TestUpdateOrdersAfterRemote(t *testing.T) {
	a := &Clock{Wall: func() time.Time { return time.UnixMilli(5000) }}
	b := &Clock{Wall: func() time.Time { return time.UnixMilli(1000) }} // b lags by 4 s
	ta := a.Now()
	tb := b.Update(ta)
	if tb <= ta {
		t.Fatalf("update %d not after remote %d", tb, ta)
	}
	if n := b.Now(); n <= tb {
		t.Fatalf("now %d not after update %d", n, tb)
	}
	if Time(tb).UnixMilli() != 5000 {
		t.Fatalf("physical part %v, want the remote's", Time(tb))
	}
}

func TestUpdateIgnoresFarFuture(t *testing.T) {
	c := &Clock{Wall: func() time.Time { return time.UnixMilli(1000) }}
	far := uint64(time.UnixMilli(1000).Add(2*time.Hour).UnixMilli()) << logicalBits
	ts := c.Update(far)
	if ts >= far {
		t.Fatalf("adopted a timestamp two hours ahead")
	}
}

func TestConcurrentUnique(t *testing.T) {
	var c Clock
	var mu sync.Mutex
	seen := make(map[uint64]bool)
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 2000 {
				ts := c.Now()
				mu.Lock()
				if seen[ts] {
					t.Errorf("duplicate %d", ts)
				}
				seen[ts] = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
}
