package broker

import (
	"net/netip"
	"sync"
	"time"
)

// Quotas beyond the protocol limits: per-listener connection caps, a
// connection rate per source address, and per-client publish rates. Every
// refusal is counted.

// ListenerLimits are per-listener settings of the broker.
type ListenerLimits struct {
	// MaxConnections caps concurrent connections on the listener (0 = no
	// cap beyond Options.MaxConnections).
	MaxConnections int
}

// bucket is a token bucket.
type bucket struct {
	tokens float64
	last   time.Time
}

// take refills the bucket at rate per second up to burst and takes n
// tokens, reporting whether there were enough.
func (b *bucket) take(now time.Time, rate float64, burst, n float64) bool {
	if b.last.IsZero() {
		b.tokens = burst
	} else {
		b.tokens = min(burst, b.tokens+now.Sub(b.last).Seconds()*rate)
	}
	b.last = now
	if b.tokens < n {
		return false
	}
	b.tokens -= n
	return true
}

// connRateLimiter limits new connections per source address. Memory is
// bounded: idle addresses are forgotten once their bucket is full again.
type connRateLimiter struct {
	rate, burst float64
	mu          sync.Mutex
	buckets     map[netip.Addr]*bucket
	lastSweep   time.Time
}

func (l *connRateLimiter) allow(a netip.Addr, now time.Time) bool {
	if l == nil || l.rate <= 0 || !a.IsValid() {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.buckets == nil {
		l.buckets = make(map[netip.Addr]*bucket)
	}
	full := time.Duration(l.burst / l.rate * float64(time.Second))
	if now.Sub(l.lastSweep) > full && len(l.buckets) > 0 {
		for k, b := range l.buckets {
			if now.Sub(b.last) > full {
				delete(l.buckets, k)
			}
		}
		l.lastSweep = now
	}
	b := l.buckets[a]
	if b == nil {
		b = &bucket{}
		l.buckets[a] = b
	}
	return b.take(now, l.rate, l.burst, 1)
}

// publishLimiter is a client's publish rate state (read loop only).
type publishLimiter struct {
	msgs, bytes bucket
}

// allowPublish applies the per-client publish rates.
func (c *client) allowPublish(size int) bool {
	o := &c.srv.opts
	if o.PublishRate <= 0 && o.PublishByteRate <= 0 {
		return true
	}
	now := time.Now()
	if o.PublishRate > 0 && !c.rate.msgs.take(now, o.PublishRate, float64(max(o.PublishBurst, 1)), 1) {
		return false
	}
	if o.PublishByteRate > 0 {
		burst := float64(max(o.PublishByteBurst, size))
		if !c.rate.bytes.take(now, o.PublishByteRate, burst, float64(size)) {
			return false
		}
	}
	return true
}
