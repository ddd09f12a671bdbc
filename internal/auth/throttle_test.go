package auth

import (
	"net/netip"
	"sync"
	"testing"
	"time"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newTestThrottle(cfg ThrottleConfig) (*Throttle, *fakeClock) {
	th := NewThrottle(cfg)
	clk := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	th.now = clk.now
	return th, clk
}

func TestThrottleBackoff(t *testing.T) {
	th, clk := newTestThrottle(ThrottleConfig{Threshold: 3, BaseDelay: time.Second, MaxDelay: 10 * time.Second, Window: time.Hour})
	ip := netip.MustParseAddr("192.0.2.7")
	other := netip.MustParseAddr("192.0.2.8")
	want := []time.Duration{0, 0, time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 10 * time.Second, 10 * time.Second}
	for i, w := range want {
		crossed := th.Failure(ip)
		if crossed != (i == 2) {
			t.Errorf("failure %d: crossed = %v", i+1, crossed)
		}
		if got := th.Delay(ip); got != w {
			t.Errorf("after %d failures: Delay = %v, want %v", i+1, got, w)
		}
	}
	if th.Delay(other) != 0 {
		t.Error("another address is delayed")
	}
	// The delay counts down from the last failure.
	clk.advance(4 * time.Second)
	if got := th.Delay(ip); got != 6*time.Second {
		t.Errorf("after 4s: Delay = %v, want 6s", got)
	}
	clk.advance(6 * time.Second)
	if got := th.Delay(ip); got != 0 {
		t.Errorf("after the delay: Delay = %v", got)
	}
	if th.Failures(ip) != len(want) {
		t.Errorf("Failures = %d", th.Failures(ip))
	}
	// Past the window the source is forgotten.
	clk.advance(time.Hour + time.Second)
	if th.Failures(ip) != 0 || th.Delay(ip) != 0 {
		t.Error("source not forgotten after the window")
	}
	th.Failure(ip)
	if th.Delay(ip) != 0 || th.Failures(ip) != 1 {
		t.Errorf("count not reset after the window: %d", th.Failures(ip))
	}
}

func TestThrottleKeys(t *testing.T) {
	th, _ := newTestThrottle(ThrottleConfig{Threshold: 1, BaseDelay: time.Second})
	// IPv6 addresses in the same /64 share a bucket.
	th.Failure(netip.MustParseAddr("2001:db8:1:2::1"))
	if th.Delay(netip.MustParseAddr("2001:db8:1:2:ffff::9")) == 0 {
		t.Error("same /64 not throttled")
	}
	if th.Delay(netip.MustParseAddr("2001:db8:1:3::1")) != 0 {
		t.Error("different /64 throttled")
	}
	// IPv4-mapped IPv6 is the IPv4 address.
	th.Failure(netip.MustParseAddr("::ffff:198.51.100.1"))
	if th.Delay(netip.MustParseAddr("198.51.100.1")) == 0 {
		t.Error("IPv4-mapped address not unified")
	}
	if th.Delay(netip.MustParseAddr("198.51.100.2")) != 0 {
		t.Error("neighbouring IPv4 address throttled")
	}
	// Invalid addresses (e.g. Unix sockets) are never throttled.
	th.Failure(netip.Addr{})
	if th.Delay(netip.Addr{}) != 0 || th.Len() != 2 {
		t.Errorf("invalid address tracked: len %d", th.Len())
	}
	// Disabled and nil throttles never delay.
	var nilTh *Throttle
	nilTh.Failure(netip.MustParseAddr("192.0.2.1"))
	if nilTh.Delay(netip.MustParseAddr("192.0.2.1")) != 0 || NewThrottle(ThrottleConfig{Disabled: true}) != nil {
		t.Error("disabled throttle")
	}
}

func TestThrottleBoundedMemory(t *testing.T) {
	th, clk := newTestThrottle(ThrottleConfig{Threshold: 1, MaxEntries: 100, BaseDelay: time.Minute, Window: time.Hour})
	first := netip.MustParseAddr("10.0.0.1")
	th.Failure(first)
	for i := range 1000 {
		clk.advance(time.Millisecond)
		th.Failure(netip.AddrFrom4([4]byte{172, 16, byte(i >> 8), byte(i)}))
		if th.Len() > 100 {
			t.Fatalf("len %d exceeds MaxEntries", th.Len())
		}
	}
	if th.Delay(first) != 0 {
		t.Error("least recently failed source was not evicted")
	}
	if th.Evictions() != 901 {
		t.Errorf("evictions = %d, want 901", th.Evictions())
	}
	// The most recent sources are still tracked.
	if th.Delay(netip.AddrFrom4([4]byte{172, 16, 3, 231})) == 0 {
		t.Error("recent source lost")
	}
}

func TestThrottleConcurrent(t *testing.T) {
	th := NewThrottle(ThrottleConfig{MaxEntries: 64})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 2000 {
				ip := netip.AddrFrom4([4]byte{10, byte(g), 0, byte(i % 97)})
				th.Failure(ip)
				th.Delay(ip)
				th.Failures(ip)
			}
		})
	}
	wg.Wait()
	if th.Len() > 64 {
		t.Fatalf("len %d", th.Len())
	}
}
