package web

import (
	"crypto/sha256"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"
)

// Login throttling. Every password (and API key) attempt is admitted by two
// limiters, one keyed by the client's address and one by the user name, so
// that neither one address guessing many names nor many addresses guessing
// one name get far. Each key may fail freely a few times; after that every
// failure blocks the key for a time that doubles up to a cap, and at most
// one attempt at a time is admitted. An attempt counts as a failure from
// the moment it is admitted until it is known to have succeeded, so
// parallel guesses cannot overtake the count. A throttled attempt is
// refused (429, Retry-After) without its password being checked.
//
// The user-name lockout is short (see nameMaxBlock): anybody can trigger
// it, for any name. Session cookies and valid API keys are never
// throttled, so an administrator always has a way in.

// limiterConfig is one limiter's policy.
type limiterConfig struct {
	free     int           // failures allowed before blocking
	base     time.Duration // first block
	maxBlock time.Duration // longest block
	forget   time.Duration // a key idle this long starts afresh
	maxKeys  int           // table bound (pinned keys excluded)
}

// Policies: per address, and per user name (whose lockout anybody can
// cause, so it stays short).
const (
	throttleFree      = 10
	throttleBase      = time.Second
	addrMaxBlock      = 10 * time.Minute
	addrForget        = time.Hour
	nameMaxBlock      = time.Minute
	nameForget        = 15 * time.Minute
	throttleTableSize = 10000
)

func addrLimits() limiterConfig {
	return limiterConfig{free: throttleFree, base: throttleBase, maxBlock: addrMaxBlock, forget: addrForget, maxKeys: throttleTableSize}
}

func nameLimits() limiterConfig {
	return limiterConfig{free: throttleFree, base: throttleBase, maxBlock: nameMaxBlock, forget: nameForget, maxKeys: throttleTableSize}
}

// record is the state of one key.
type record struct {
	failures int
	inflight int
	until    time.Time // blocked until
	last     time.Time // last admitted attempt or failure
	pinned   bool      // never evicted (configured user names)
}

func (r *record) idle(now time.Time, forget time.Duration) bool {
	return r.inflight == 0 && !now.Before(r.until) && now.Sub(r.last) > forget
}

// limiter is a bounded table of records. It is not safe for concurrent
// use: the authenticator's mutex guards it.
type limiter struct {
	cfg limiterConfig
	m   map[string]*record
	n   int // unpinned records in m
}

func newLimiter(cfg limiterConfig, pinned []string) *limiter {
	l := &limiter{cfg: cfg, m: make(map[string]*record, len(pinned))}
	for _, k := range pinned {
		l.m[k] = &record{pinned: true}
	}
	return l
}

// admit reserves an attempt for key, or says how long to wait.
func (l *limiter) admit(key string, now time.Time) (bool, time.Duration) {
	r := l.m[key]
	if r != nil && !r.pinned && r.idle(now, l.cfg.forget) {
		l.remove(key, r)
		r = nil
	}
	if r != nil && r.pinned && r.idle(now, l.cfg.forget) {
		*r = record{pinned: true}
	}
	if r == nil {
		if l.n >= l.cfg.maxKeys && !l.evict(now) {
			return false, time.Second // every tracked key has an attempt in flight
		}
		r = &record{}
		l.m[key] = r
		l.n++
	}
	if now.Before(r.until) {
		return false, r.until.Sub(now)
	}
	if r.inflight > 0 && r.failures+r.inflight >= l.cfg.free {
		// Beyond the free attempts, one at a time.
		return false, time.Second
	}
	r.inflight++
	r.last = now
	return true, 0
}

// blocked reports whether key is blocked now.
func (l *limiter) blocked(key string, now time.Time) bool {
	r := l.m[key]
	return r != nil && now.Before(r.until)
}

// done ends an admitted attempt: failed, succeeded, or not made (checked
// false: e.g. the password check queue timed out).
func (l *limiter) done(key string, now time.Time, checked, ok bool) {
	r := l.m[key]
	if r == nil {
		return // cannot happen: records with attempts in flight are kept
	}
	r.inflight--
	if !checked || ok {
		// A success does not reset the count: on a shared address (a
		// proxy) the failures may be somebody else's.
		return
	}
	r.failures++
	r.last = now
	if k := r.failures - l.cfg.free; k >= 0 {
		d := l.cfg.maxBlock
		if k < 30 && l.cfg.base<<k < d {
			d = l.cfg.base << k
		}
		r.until = now.Add(d)
	}
}

// evict makes room for one record: it drops idle records, else the
// unpinned record without attempts in flight whose block ends first.
func (l *limiter) evict(now time.Time) bool {
	var victim string
	var vr *record
	for k, r := range l.m {
		if r.pinned || r.inflight > 0 {
			continue
		}
		if r.idle(now, l.cfg.forget) {
			l.remove(k, r)
			continue
		}
		if vr == nil || later(vr, r) {
			victim, vr = k, r
		}
	}
	if l.n < l.cfg.maxKeys {
		return true
	}
	if vr == nil {
		return false
	}
	l.remove(victim, vr)
	return true
}

// later reports whether a's block ends after b's (then by last use).
func later(a, b *record) bool {
	if !a.until.Equal(b.until) {
		return a.until.After(b.until)
	}
	return a.last.After(b.last)
}

func (l *limiter) remove(k string, r *record) {
	delete(l.m, k)
	if !r.pinned {
		l.n--
	}
}

// nameKey is the limiter key of a user name; long names are hashed so
// that the table stays small.
func nameKey(user string) string {
	if len(user) <= 64 {
		return user
	}
	h := sha256.Sum256([]byte(user))
	return "\x00" + string(h[:])
}

// addrKey is the limiter key of a client address: the address itself for
// IPv4, its /64 for IPv6 (one host usually holds a whole /64).
func addrKey(a netip.Addr) string {
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.String()
	}
	return a.String()
}

// proxies are the trusted reverse proxies.
type proxies []netip.Prefix

func parseProxy(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func (ps proxies) trusted(a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// parseHostAddr parses an address as found in RemoteAddr or
// X-Forwarded-For: "ip", "ip:port" or "[ipv6]:port".
func parseHostAddr(s string) (netip.Addr, bool) {
	s = strings.TrimSpace(s)
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap(), true
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap(), true
	}
	if h, _, err := net.SplitHostPort(s); err == nil {
		if a, err := netip.ParseAddr(h); err == nil {
			return a.Unmap(), true
		}
	}
	return netip.Addr{}, false
}

// headerValues returns every value of the header called name, matching the
// name case-insensitively (net/http canonicalises names it parses, but a
// Header built by hand may hold other spellings).
func headerValues(h http.Header, name string) []string {
	var out []string
	for k, v := range h {
		if strings.EqualFold(k, name) {
			out = append(out, v...)
		}
	}
	return out
}

// clientAddr is the address a request comes from: the peer's, unless the
// peer is a trusted proxy, in which case X-Forwarded-For is read from the
// right: the first address that is not a trusted proxy is the client (a
// client cannot forge it: everything to its left is the client's own
// text). ok is false when RemoteAddr holds no IP (then raw is all we have).
func (ps proxies) clientAddr(r *http.Request) (a netip.Addr, raw string, ok bool) {
	a, ok = parseHostAddr(r.RemoteAddr)
	if !ok {
		return netip.Addr{}, r.RemoteAddr, false
	}
	if len(ps) == 0 || !ps.trusted(a) {
		return a, a.String(), true
	}
	vals := headerValues(r.Header, "X-Forwarded-For")
	var hops []string
	for _, v := range vals {
		hops = append(hops, strings.Split(v, ",")...)
	}
	for i := len(hops) - 1; i >= 0; i-- {
		h, ok := parseHostAddr(hops[i])
		if !ok {
			break // garbage: trust nothing further left
		}
		a = h
		if !ps.trusted(h) {
			break
		}
	}
	return a, a.String(), true
}
