package auth

import (
	"container/list"
	"hash/maphash"
	"net/netip"
	"sync"
	"time"
)

// ThrottleConfig configures the authentication failure throttle. Zero
// fields take the documented defaults.
//
// Failures are counted per source (an IPv4 address, or the /64 of an IPv6
// address: one host commonly controls a whole /64) and per username. The
// first Threshold-1 failures of a source cost nothing. The Threshold-th
// failure, and every one after it, blocks the source for BaseDelay,
// doubling with each further failure, capped at MaxDelay, counted from
// the moment the failed attempt was answered. Usernames are throttled the
// same way from UserThreshold failures (from any sources) on, capped at
// UserMaxDelay, which is short so that an attacker cannot lock a real user
// out for long.
//
// While a source or a username is blocked, at most one further attempt is
// queued, for the moment the block ends (the caller holds its answer until
// then); any other attempt is refused without its password being checked.
// Attempts in flight count as failures until they succeed: once the
// attempts being verified could reach a threshold, newer attempts wait for
// their outcome, so parallel guesses are no faster than sequential ones.
//
// A source from which a username logged in successfully (within the last
// 24 hours) is not subject to that username's throttle, only to its own:
// a real user keeps logging in from where it did while its username is
// attacked from elsewhere.
//
// A source or username is forgotten Window after its last failure.
// Successful logins do not reset the counts, so one valid account cannot
// be used to launder guesses at others. At most MaxEntries sources, as
// many usernames and as many known-good (username, source) pairs are
// remembered; beyond that the least recently failed is evicted.
type ThrottleConfig struct {
	Disabled   bool          `yaml:"disabled,omitempty"`
	Threshold  int           `yaml:"threshold,omitempty"`   // default 5
	BaseDelay  time.Duration `yaml:"base_delay,omitempty"`  // default 1s
	MaxDelay   time.Duration `yaml:"max_delay,omitempty"`   // default 60s
	Window     time.Duration `yaml:"window,omitempty"`      // default 15m
	MaxEntries int           `yaml:"max_entries,omitempty"` // default 16384
	// UserThreshold is the number of failures for one username, from any
	// sources, before it is throttled (default 10); negative disables
	// the per-username throttle.
	UserThreshold int `yaml:"user_threshold,omitempty"`
	// UserMaxDelay caps the per-username delay (default 10s).
	UserMaxDelay time.Duration `yaml:"user_max_delay,omitempty"`
}

// Defaults for ThrottleConfig.
const (
	DefaultThrottleThreshold     = 5
	DefaultThrottleBaseDelay     = time.Second
	DefaultThrottleMaxDelay      = time.Minute
	DefaultThrottleWindow        = 15 * time.Minute
	DefaultThrottleMaxEntries    = 16384
	DefaultThrottleUserThreshold = 10
	DefaultThrottleUserMaxDelay  = 10 * time.Second
)

const (
	// knownGoodTTL is how long a successful login exempts its (username,
	// source) pair from the username's throttle.
	knownGoodTTL = 24 * time.Hour
	// maxInflightWait bounds how long an attempt waits for the outcome of
	// the attempts in flight before it is refused.
	maxInflightWait = 2 * time.Second
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
	if c.UserThreshold == 0 {
		c.UserThreshold = DefaultThrottleUserThreshold
	}
	if c.UserMaxDelay <= 0 {
		c.UserMaxDelay = DefaultThrottleUserMaxDelay
	}
	if c.UserMaxDelay < c.BaseDelay {
		c.UserMaxDelay = c.BaseDelay
	}
	return c
}

// policy is the backoff of one table.
type policy struct {
	threshold      int
	base, maxDelay time.Duration
}

// delay is the block set by the failures-th failure (0 below threshold).
func (p policy) delay(failures int) time.Duration {
	over := failures - p.threshold
	if over < 0 {
		return 0
	}
	d := p.base
	for i := 0; i < over && d < p.maxDelay; i++ {
		d *= 2
	}
	return min(d, p.maxDelay)
}

// bucket is the state of one source or username.
type bucket struct {
	failures     int
	inflight     int           // admitted attempts not finished yet
	last         time.Time     // last failure, as counted (when it was answered)
	blockedUntil time.Time     // no attempt is processed before this
	queuedUntil  time.Time     // an attempt was queued for this moment
	changed      chan struct{} // closed when an attempt in flight ends; nil if no one waits
	el           *list.Element
}

// table is an LRU map of buckets.
type table[K comparable] struct {
	pol policy
	m   map[K]*bucket
	lru list.List // of K, front = most recently used
}

func newTable[K comparable](pol policy) *table[K] {
	return &table[K]{pol: pol, m: make(map[K]*bucket)}
}

// stale reports whether b holds nothing worth keeping at now.
func (t *Throttle) stale(b *bucket, now time.Time) bool {
	return b.inflight == 0 && b.changed == nil && !b.queuedUntil.After(now) &&
		(b.failures == 0 || now.Sub(b.last) > t.cfg.Window)
}

// refresh forgets failures older than the window.
func (t *Throttle) refresh(b *bucket, now time.Time) {
	if b.failures > 0 && now.Sub(b.last) > t.cfg.Window {
		b.failures = 0
		b.blockedUntil = time.Time{}
	}
}

func get[K comparable](t *Throttle, tb *table[K], key K, now time.Time, create bool) *bucket {
	if b, ok := tb.m[key]; ok {
		t.refresh(b, now)
		tb.lru.MoveToFront(b.el)
		return b
	}
	if !create {
		return nil
	}
	// Drop a few stale buckets from the cold end, then make room.
	for range 4 {
		el := tb.lru.Back()
		if el == nil || !t.stale(tb.m[el.Value.(K)], now) {
			break
		}
		remove(tb, el.Value.(K))
	}
	for len(tb.m) >= t.cfg.MaxEntries {
		el := tb.lru.Back()
		k := el.Value.(K)
		if b := tb.m[k]; !t.stale(b, now) {
			t.evictions++
		}
		// An attempt in flight keeps its bucket; finishing it only updates
		// the detached copy.
		remove(tb, k)
	}
	b := &bucket{}
	b.el = tb.lru.PushFront(key)
	tb.m[key] = b
	return b
}

func remove[K comparable](tb *table[K], key K) {
	if b, ok := tb.m[key]; ok {
		tb.lru.Remove(b.el)
		delete(tb.m, key)
	}
}

// dropIfStale removes b from tb when it no longer holds anything.
func dropIfStale[K comparable](t *Throttle, tb *table[K], key K, b *bucket, now time.Time) {
	if cur, ok := tb.m[key]; ok && cur == b && t.stale(b, now) {
		remove(tb, key)
	}
}

// recordFailure counts a failure answered at at; it reports whether the
// failure made b reach the threshold.
func recordFailure(b *bucket, pol policy, at time.Time) (crossed bool) {
	b.failures++
	if at.After(b.last) {
		b.last = at
	}
	if d := pol.delay(b.failures); d > 0 {
		if until := at.Add(d); until.After(b.blockedUntil) {
			b.blockedUntil = until
		}
	}
	return b.failures == pol.threshold
}

type goodKey struct {
	user uint64
	src  netip.Prefix
}

// Throttle tracks authentication failures per source and per username. It
// is safe for concurrent use. A nil *Throttle never delays or refuses.
type Throttle struct {
	cfg          ThrottleConfig
	now          func() time.Time
	inflightWait time.Duration
	seed         maphash.Seed

	mu        sync.Mutex
	addrs     *table[netip.Prefix]
	users     *table[uint64] // nil: no per-username throttle
	good      map[goodKey]*list.Element
	goodLRU   list.List // of goodEntry, front = most recent success
	evictions uint64
}

type goodEntry struct {
	key goodKey
	at  time.Time
}

// NewThrottle returns a throttle, or nil if cfg.Disabled.
func NewThrottle(cfg ThrottleConfig) *Throttle {
	if cfg.Disabled {
		return nil
	}
	cfg = cfg.withDefaults()
	t := &Throttle{
		cfg:          cfg,
		now:          time.Now,
		inflightWait: min(cfg.BaseDelay, maxInflightWait),
		seed:         maphash.MakeSeed(),
		addrs:        newTable[netip.Prefix](policy{cfg.Threshold, cfg.BaseDelay, cfg.MaxDelay}),
		good:         make(map[goodKey]*list.Element),
	}
	if cfg.UserThreshold > 0 {
		t.users = newTable[uint64](policy{cfg.UserThreshold, cfg.BaseDelay, cfg.UserMaxDelay})
	}
	return t
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

// userKey hashes a username (up to 64 KiB, chosen by the client) to a
// fixed-size key; the seed is random, so collisions cannot be aimed at.
func (t *Throttle) userKey(user string) uint64 { return maphash.String(t.seed, user) }

// ticket is an admitted attempt; finish it exactly once.
type ticket struct {
	addrKey netip.Prefix
	userKey uint64
	addr    *bucket // nil: source not throttled (invalid address)
	user    *bucket // nil: username not throttled (known-good pair, disabled)
}

// admitResult is the decision on an attempt.
type admitResult struct {
	tk   *ticket       // nil: refused, do not check the password
	wait time.Duration // admitted: hold the answer this long; refused: time until the block ends
	// throttled is true when the attempt was queued or refused because
	// the source or the username is blocked.
	throttled bool
}

// admit decides whether an attempt by user from ip may have its password
// checked. maxWait is how long the caller is willing to hold the answer
// (negative: as long as needed): an attempt whose turn comes later is
// refused. Admitted attempts count as failures until finish says
// otherwise, so an attempt that finds Threshold attempts in flight waits
// for their outcome: while they keep finishing (successes) it keeps
// waiting, up to the longest block a throttle may set; if none finishes
// within inflightWait, or failures block the source or user name, it is
// refused.
func (t *Throttle) admit(ip netip.Addr, user string, maxWait time.Duration) admitResult {
	if t == nil {
		return admitResult{tk: &ticket{}}
	}
	addrKey, hasAddr := throttleKey(ip)
	uk := t.userKey(user)
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	giveUp := time.Now().Add(max(t.cfg.MaxDelay, t.cfg.UserMaxDelay))
	for {
		t.mu.Lock()
		now := t.now()
		var bs [2]*bucket
		var pols [2]policy
		if hasAddr {
			bs[0], pols[0] = get(t, t.addrs, addrKey, now, true), t.addrs.pol
		}
		if t.users != nil && !t.knownGood(goodKey{uk, addrKey}, hasAddr, now) {
			bs[1], pols[1] = get(t, t.users, uk, now, true), t.users.pol
		}
		refuse := func(wait time.Duration) admitResult {
			if bs[1] != nil {
				dropIfStale(t, t.users, uk, bs[1], now)
			}
			if bs[0] != nil {
				dropIfStale(t, t.addrs, addrKey, bs[0], now)
			}
			t.mu.Unlock()
			return admitResult{wait: max(wait, 0), throttled: true}
		}
		slot := now
		queueTaken := false
		var pending []chan struct{}
		for i, b := range bs {
			if b == nil {
				continue
			}
			if b.blockedUntil.After(now) {
				slot = maxTime(slot, b.blockedUntil)
				// Another attempt already waits for this block to end.
				queueTaken = queueTaken || b.queuedUntil.After(now)
			}
			if b.inflight > 0 && b.failures+b.inflight >= pols[i].threshold {
				if b.changed == nil {
					b.changed = make(chan struct{})
				}
				pending = append(pending, b.changed)
			}
		}
		wait := slot.Sub(now)
		// Outcomes still in flight can only make the wait longer.
		if wait > 0 && (queueTaken || (maxWait >= 0 && wait > maxWait)) {
			return refuse(wait)
		}
		if len(pending) > 0 {
			// Attempts in flight count as failures until they succeed:
			// wait for their outcome.
			left := min(t.inflightWait, time.Until(giveUp))
			if left <= 0 {
				return refuse(wait)
			}
			t.mu.Unlock()
			if timer == nil {
				timer = time.NewTimer(left)
			} else {
				timer.Reset(left)
			}
			var second chan struct{}
			if len(pending) > 1 {
				second = pending[1]
			}
			select {
			case <-pending[0]:
			case <-second:
			case <-timer.C:
				t.mu.Lock()
				now = t.now()
				return refuse(0)
			}
			continue
		}
		for _, b := range bs {
			if b != nil && b.blockedUntil.After(now) {
				b.queuedUntil = slot
			}
		}
		tk := &ticket{addrKey: addrKey, userKey: uk, addr: bs[0], user: bs[1]}
		for _, b := range bs {
			if b != nil {
				b.inflight++
			}
		}
		t.mu.Unlock()
		return admitResult{tk: tk, wait: wait, throttled: wait > 0}
	}
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// knownGood reports whether user logged in successfully from the source
// recently. Call with t.mu held.
func (t *Throttle) knownGood(k goodKey, hasAddr bool, now time.Time) bool {
	if !hasAddr {
		return false
	}
	el, ok := t.good[k]
	if !ok {
		return false
	}
	if now.Sub(el.Value.(goodEntry).at) > knownGoodTTL {
		t.goodLRU.Remove(el)
		delete(t.good, k)
		return false
	}
	return true
}

// outcome of an admitted attempt.
type outcome uint8

const (
	outcomeFailure outcome = iota // bad credentials
	outcomeSuccess                // the password was right
	outcomeOther                  // no verdict on the password
)

// finish records the outcome of an admitted attempt whose answer the
// caller holds back for wait from now: a failure, and the block it sets,
// count from then (see FailureAfter). It reports whether the failure made
// the source, or the username, reach its threshold.
func (t *Throttle) finish(tk *ticket, o outcome, wait time.Duration) (addrCrossed, userCrossed bool) {
	if t == nil || tk == nil {
		return false, false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	at := now.Add(max(wait, 0))
	if b := tk.addr; b != nil {
		addrCrossed = t.finishBucket(b, t.addrs.pol, o, at, now)
		dropIfStale(t, t.addrs, tk.addrKey, b, now)
	}
	if b := tk.user; b != nil && t.users != nil {
		userCrossed = t.finishBucket(b, t.users.pol, o, at, now)
		dropIfStale(t, t.users, tk.userKey, b, now)
	}
	if o == outcomeSuccess && tk.addr != nil {
		t.rememberGood(goodKey{tk.userKey, tk.addrKey}, now)
	}
	return addrCrossed, userCrossed
}

func (t *Throttle) finishBucket(b *bucket, pol policy, o outcome, at, now time.Time) (crossed bool) {
	b.inflight--
	if o == outcomeFailure {
		t.refresh(b, at)
		crossed = recordFailure(b, pol, at)
	}
	if b.changed != nil {
		close(b.changed)
		b.changed = nil
	}
	return crossed
}

func (t *Throttle) rememberGood(k goodKey, now time.Time) {
	if el, ok := t.good[k]; ok {
		el.Value = goodEntry{k, now}
		t.goodLRU.MoveToFront(el)
		return
	}
	for len(t.good) >= t.cfg.MaxEntries {
		el := t.goodLRU.Back()
		t.goodLRU.Remove(el)
		delete(t.good, el.Value.(goodEntry).key)
	}
	t.good[k] = t.goodLRU.PushFront(goodEntry{k, now})
}

// Failure records a failed authentication from ip (outside Authenticate,
// which records its own). It reports whether this failure made the source
// reach the threshold in the current window (for logging).
func (t *Throttle) Failure(ip netip.Addr) (crossed bool) {
	return t.FailureAfter(ip, 0)
}

// FailureAfter records a failed authentication from ip whose answer the
// caller holds back for wait after verifying: the failure, and the delay
// it sets for the next attempt, count from the end of that wait, as if the
// attempt had been answered then. Without this a caller that verifies
// first and waits afterwards would see each delay shortened by the
// previous one instead of doubling.
func (t *Throttle) FailureAfter(ip netip.Addr, wait time.Duration) (crossed bool) {
	if t == nil {
		return false
	}
	key, ok := throttleKey(ip)
	if !ok {
		return false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	at := now.Add(max(wait, 0))
	b := get(t, t.addrs, key, now, true)
	t.refresh(b, at)
	return recordFailure(b, t.addrs.pol, at)
}

// Delay returns how long the source ip is still blocked (0 if it is not):
// the broker should hold the answer to an attempt from it that long. An
// attempt arriving while the source is blocked is processed (at the end of
// the block) only if no other attempt is already queued; see Authenticator.
func (t *Throttle) Delay(ip netip.Addr) time.Duration {
	if t == nil {
		return 0
	}
	key, ok := throttleKey(ip)
	if !ok {
		return 0
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	b := get(t, t.addrs, key, now, false)
	if b == nil {
		return 0
	}
	d := b.blockedUntil.Sub(now)
	dropIfStale(t, t.addrs, key, b, now)
	return max(d, 0)
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
	if b := get(t, t.addrs, key, t.now(), false); b != nil {
		return b.failures
	}
	return 0
}

// UserFailures returns the failure count recorded for user within the
// window (0 when the per-username throttle is disabled).
func (t *Throttle) UserFailures(user string) int {
	if t == nil || t.users == nil {
		return 0
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if b := get(t, t.users, t.userKey(user), t.now(), false); b != nil {
		return b.failures
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
	return len(t.addrs.m)
}

// Evictions returns how many sources or usernames still within their
// window were evicted because MaxEntries was reached.
func (t *Throttle) Evictions() uint64 {
	if t == nil {
		return 0
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.evictions
}
