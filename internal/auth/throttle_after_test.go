package auth

import (
	"net/netip"
	"testing"
	"time"
)

// TestThrottleFailureAfter: a caller that verifies first and then waits the
// delay it was given (the broker holding back the CONNACK) records each
// failure with that wait, so the delays seen by a client retrying as soon as
// it is answered double as documented instead of being shortened by the
// previous wait (they were base, base, 3*base, 5*base... before).
func TestThrottleFailureAfter(t *testing.T) {
	const base = time.Second
	th, clk := newTestThrottle(ThrottleConfig{Threshold: 2, BaseDelay: base, MaxDelay: time.Minute, Window: time.Hour})
	ip := netip.MustParseAddr("192.0.2.9")
	want := []time.Duration{0, 0, base, 2 * base, 4 * base, 8 * base}
	for i, w := range want {
		d := th.Delay(ip)
		if d != w {
			t.Fatalf("attempt %d: Delay = %v, want %v", i+1, d, w)
		}
		th.FailureAfter(ip, d)
		clk.advance(d) // the answer goes out; the client retries at once
	}
	// Concurrent attempts told the same delay do not stack: each counts
	// from the same moment, the longest delay wins.
	th2, _ := newTestThrottle(ThrottleConfig{Threshold: 1, BaseDelay: base, MaxDelay: time.Minute, Window: time.Hour})
	th2.Failure(ip)
	d := th2.Delay(ip)
	for range 3 {
		th2.FailureAfter(ip, d)
	}
	if got, want := th2.Delay(ip), d+8*base; got != want {
		t.Fatalf("after 3 concurrent failures waiting %v: Delay = %v, want %v", d, got, want)
	}
}
