package auth

import (
	"container/list"
	"net/netip"
	"sync"
	"time"
)

// ThrottleConfig configures the per-source-address authentication failure
// throttle. Zero fields take the documented defaults.
//
// Sources are IPv4 addresses, or the /64 of an IPv6 address (one host
// commonly controls a whole /64). The first Threshold-1 failures of a
// source cost nothing. The Threshold-th failure, and every one after it,
// sets a delay that must pass (counted from that failure) before the next
// attempt from the source is processed: BaseDelay, doubling with each
// further failure, capped at MaxDelay. Throttle.Delay returns the time
// remaining. Concurrent attempts do not help an attacker: each failure
// doubles the delay. A source is forgotten Window after its last failure.
// Successful logins do not reset the count, so one valid account cannot be
// used to launder guesses at others. At most MaxEntries sources are
// tracked; beyond that the least recently failed one is evicted.
type ThrottleConfig struct {
	Disabled   bool          `yaml:"disabled,omitempty"`
	Threshold  int           `yaml:"threshold,omitempty"`   // default 5
	BaseDelay  time.Duration `yaml:"base_delay,omitempty"`  // default 1s
	MaxDelay   time.Duration `yaml:"max_delay,omitempty"`   // default 60s
	Window     time.Duration `yaml:"window,omitempty"`      // default 15m
	MaxEntries int           `yaml:"max_entries,omitempty"` // default 16384
}

// Defaults for ThrottleConfig.
const (
	DefaultThrottleThreshold  = 5
	DefaultThrottleBaseDelay  = time.Second
	DefaultThrottleMaxDelay   = time.Minute
	DefaultThrottleWindow     = 15 * time.Minute
	DefaultThrottleMaxEntries = 16384
)

func (c ThrottleConfig) withDefaults() ThrottleConfig {
	if c.Threshold <= 0 {
		c.Threshold = DefaultThrottleThreshold
	}
	if c.BaseDelay <= 0 {
		c.BaseDelay = DefaultThrottleBaseDelay
	}
	if c.MaxDelay <= 0 {
		c.MaxDelay = DefaultThrottleMaxDelay
	}
	if c.MaxDelay < c.BaseDelay {
		c.MaxDelay = c.BaseDelay
	}
	if c.Window <= 0 {
		c.Window = DefaultThrottleWindow
	}
	if c.MaxEntries <= 0 {
		c.MaxEntries = DefaultThrottleMaxEntries
	}
	return c
}

// Throttle tracks authentication failures per source. It is safe for
// concurrent use. A nil *Throttle never delays.
type Throttle struct {
	cfg ThrottleConfig
	now func() time.Time

	mu      sync.Mutex
	entries map[netip.Prefix]*list.Element // of *throttleEntry
	lru     list.List                      // front = most recent failure

	evictions uint64
}

type throttleEntry struct {
	key      netip.Prefix
	failures int
	last     time.Time // last failure
	next     time.Time // earliest time the next attempt should be processed
}

// NewThrottle returns a throttle, or nil if cfg.Disabled.
func NewThrottle(cfg ThrottleConfig) *Throttle {
	if cfg.Disabled {
		return nil
	}
	return &Throttle{cfg: cfg.withDefaults(), now: time.Now, entries: make(map[netip.Prefix]*list.Element)}
}

// throttleKey maps an address to its throttling bucket; ok is false for
// addresses that are not throttled (invalid, e.g. a Unix socket peer).
func throttleKey(ip netip.Addr) (netip.Prefix, bool) {
	if !ip.IsValid() {
		return netip.Prefix{}, false
	}
	ip = ip.Unmap().WithZone("")
	bits := 32
	if ip.Is6() {
		bits = 64
	}
	p, err := ip.Prefix(bits)
	return p, err == nil
}

// Failure records a failed authentication from ip. It reports whether this
// failure made the source exceed the threshold for the first time in the
// current window (for logging).
func (t *Throttle) Failure(ip netip.Addr) (crossed bool) {
	return t.FailureAfter(ip, 0)
}

// FailureAfter records a failed authentication from ip whose answer the
// caller holds back for wait (the Delay it got for the attempt) after
// verifying: the failure, and the delay it sets for the next attempt, count
// from the end of that wait, as if the attempt had been verified then.
// Without this a caller that verifies first and waits afterwards would see
// each delay shortened by the previous one instead of doubling.
func (t *Throttle) FailureAfter(ip netip.Addr, wait time.Duration) (crossed bool) {
	if t == nil {
		return false
	}
	key, ok := throttleKey(ip)
	if !ok {
		return false
	}
	now := t.now().Add(max(wait, 0))
	t.mu.Lock()
	defer t.mu.Unlock()
	var e *throttleEntry
	if el, found := t.entries[key]; found {
		e = el.Value.(*throttleEntry)
		if now.Sub(e.last) > t.cfg.Window {
			e.failures = 0
			e.next = time.Time{}
		}
		t.lru.MoveToFront(el)
	} else {
		for len(t.entries) >= t.cfg.MaxEntries {
			t.evictOldest(now)
		}
		e = &throttleEntry{key: key}
		t.entries[key] = t.lru.PushFront(e)
	}
	e.failures++
	e.last = now
	if over := e.failures - t.cfg.Threshold; over >= 0 {
		d := t.cfg.BaseDelay
		for i := 0; i < over && d < t.cfg.MaxDelay; i++ {
			d *= 2
		}
		d = min(d, t.cfg.MaxDelay)
		e.next = now.Add(d)
		return over == 0
	}
	return false
}

func (t *Throttle) evictOldest(now time.Time) {
	el := t.lru.Back()
	if el == nil {
		return
	}
	e := el.Value.(*throttleEntry)
	t.lru.Remove(el)
	delete(t.entries, e.key)
	if now.Sub(e.last) <= t.cfg.Window {
		t.evictions++
	}
}

// Delay returns how long the broker should wait before processing an
// authentication attempt from ip (0 if none). The broker should postpone
// verifying the CONNECT (and so its CONNACK) by this much, re-checking
// afterwards, rather than verifying early.
func (t *Throttle) Delay(ip netip.Addr) time.Duration {
	if t == nil {
		return 0
	}
	key, ok := throttleKey(ip)
	if !ok {
		return 0
	}
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	el, found := t.entries[key]
	if !found {
		return 0
	}
	e := el.Value.(*throttleEntry)
	if now.Sub(e.last) > t.cfg.Window {
		t.lru.Remove(el)
		delete(t.entries, key)
		return 0
	}
	if d := e.next.Sub(now); d > 0 {
		return d
	}
	return 0
}

// Failures returns the failure count recorded for ip's source within the
// window.
func (t *Throttle) Failures(ip netip.Addr) int {
	if t == nil {
		return 0
	}
	key, ok := throttleKey(ip)
	if !ok {
		return 0
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if el, found := t.entries[key]; found {
		e := el.Value.(*throttleEntry)
		if t.now().Sub(e.last) <= t.cfg.Window {
			return e.failures
		}
	}
	return 0
}

// Len returns the number of tracked sources.
func (t *Throttle) Len() int {
	if t == nil {
		return 0
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.entries)
}

// Evictions returns how many sources still within their window were
// evicted because MaxEntries was reached.
func (t *Throttle) Evictions() uint64 {
	if t == nil {
		return 0
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.evictions
}
