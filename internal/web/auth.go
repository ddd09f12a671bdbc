package web

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/isobar-mq/isobar/internal/auth"
)

// Authentication: HTTP Basic with an administrator's password, a bearer
// API key, or the console's session cookie. Password checks are argon2id
// (tens of milliseconds and megabytes each), so they are bounded: at most
// verifySlots run at once and a check waits at most verifyWait for a slot
// (503 after), a successful check is cached briefly (so a script using
// Basic auth does not pay it on every call), and attempts are throttled
// per address and per user name (see throttle.go).

const (
	cookieName  = "isobar_session"
	csrfHeader  = "X-Isobar-CSRF"
	verifySlots = 2
	verifyWait  = 5 * time.Second
	okCacheTTL  = 5 * time.Minute
	okCacheMax  = 256
	maxSessions = 1024
)

// principal is who made a request and how.
type principal struct {
	name   string // user name, or "apikey:<name>"
	method string // "basic", "bearer" or "session"
	sess   *session
	role   role
	topics []string // allow list; nil = every topic
}

type session struct {
	token   string
	user    string
	csrf    string
	expires time.Time
}

// account is a configured administrator or API key's permissions.
type account struct {
	hash   string // password hash (users only)
	role   role
	topics []string
}

type authenticator struct {
	users   map[string]account
	keys    []APIKey
	khash   [][]byte
	kacct   []account
	ttl     time.Duration
	now     func() time.Time
	proxies proxies

	slots chan struct{}
	wait  time.Duration

	mu       sync.Mutex
	okCache  map[[32]byte]time.Time
	sessions map[string]*session
	addrs    *limiter
	names    *limiter
}

var (
	errNoCredentials  = errors.New("authentication required")
	errBadCredentials = errors.New("invalid credentials")
	errCSRF           = errors.New("missing or invalid " + csrfHeader + " header")
	errBusy           = errors.New("too many password checks in progress; try again shortly")
)

// throttledError is a refused attempt: the address or user name failed
// too often.
type throttledError struct{ retry time.Duration }

func (e *throttledError) Error() string {
	return "too many failed attempts; try again later"
}

// retryAfter is e's Retry-After header value, in whole seconds (at least 1).
func (e *throttledError) retryAfter() string {
	s := int64((e.retry + time.Second - 1) / time.Second)
	return strconv.FormatInt(max(s, 1), 10)
}

// newAuthenticator builds the authenticator of a validated configuration.
func newAuthenticator(cfg Config) *authenticator {
	a := &authenticator{
		users:    make(map[string]account, len(cfg.Users)),
		keys:     cfg.APIKeys,
		ttl:      cfg.SessionTTL,
		now:      time.Now,
		slots:    make(chan struct{}, verifySlots),
		wait:     verifyWait,
		okCache:  make(map[[32]byte]time.Time),
		sessions: make(map[string]*session),
		addrs:    newLimiter(addrLimits(), nil),
	}
	names := make([]string, 0, len(cfg.Users))
	for _, u := range cfg.Users {
		r, _ := parseRole(u.Role) // validated by Config.Validate
		a.users[u.Username] = account{hash: u.PasswordHash, role: r, topics: u.Topics}
		names = append(names, nameKey(u.Username))
	}
	a.names = newLimiter(nameLimits(), names)
	for _, k := range cfg.APIKeys {
		h, _ := parseKeyHash(k.Hash) // validated by Config.Validate
		a.khash = append(a.khash, h)
		r, _ := parseRole(k.Role)
		a.kacct = append(a.kacct, account{role: r, topics: k.Topics})
	}
	for _, p := range cfg.TrustedProxies {
		if pp, err := parseProxy(p); err == nil {
			a.proxies = append(a.proxies, pp)
		}
	}
	return a
}

func randomToken(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// source is the client address of r as the throttle sees it (the key)
// and as logs show it.
func (a *authenticator) source(r *http.Request) (key, shown string) {
	addr, raw, ok := a.proxies.clientAddr(r)
	if !ok {
		return raw, raw
	}
	return addrKey(addr), addr.String()
}

// admit reserves a throttled attempt for the address key and, when user is
// not empty, the user name.
func (a *authenticator) admit(addr, user string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.now()
	ok, retry := a.addrs.admit(addr, now)
	if !ok {
		return &throttledError{retry: retry}
	}
	if user != "" {
		if ok, retry = a.names.admit(nameKey(user), now); !ok {
			a.addrs.done(addr, now, false, false)
			return &throttledError{retry: retry}
		}
	}
	return nil
}

// finish ends an attempt admit allowed.
func (a *authenticator) finish(addr, user string, checked, ok bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.now()
	a.addrs.done(addr, now, checked, ok)
	if user != "" {
		a.names.done(nameKey(user), now, checked, ok)
	}
}

// attempt checks a password, throttled. The error is nil (the password is
// right), errBadCredentials, a *throttledError or errBusy.
func (a *authenticator) attempt(ctx context.Context, addr, user, password string) error {
	if a.cachedOK(addr, user, password) {
		return nil
	}
	if err := a.admit(addr, user); err != nil {
		return err
	}
	ok, err := a.checkPassword(ctx, user, password)
	a.finish(addr, user, err == nil, ok)
	if err != nil {
		return err
	}
	if !ok {
		return errBadCredentials
	}
	return nil
}

// okKey is the okCache key of a user name and password.
func okKey(user, password string) [32]byte {
	return sha256.Sum256([]byte(user + "\x00" + password))
}

// cachedOK reports whether user and password were verified recently and
// neither the address nor the user name is blocked. Such a request is not
// counted as in flight, so a script sending many requests in parallel with
// the right password is not slowed by the throttle; a blocked key still
// gets 429, so the cache is no way around it.
func (a *authenticator) cachedOK(addr, user, password string) bool {
	key := okKey(user, password)
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.now()
	exp, hit := a.okCache[key]
	return hit && now.Before(exp) && !a.addrs.blocked(addr, now) && !a.names.blocked(nameKey(user), now)
}

// checkPassword verifies an administrator's password. It waits at most
// a.wait (and while ctx lasts) for a verification slot: errBusy after.
func (a *authenticator) checkPassword(ctx context.Context, user, password string) (bool, error) {
	acct, ok := a.users[user]
	key := okKey(user, password)
	if ok {
		a.mu.Lock()
		exp, hit := a.okCache[key]
		a.mu.Unlock()
		if hit && a.now().Before(exp) {
			return true, nil
		}
	}
	t := time.NewTimer(a.wait)
	defer t.Stop()
	select {
	case a.slots <- struct{}{}:
	case <-t.C:
		return false, errBusy
	case <-ctx.Done():
		return false, errBusy
	}
	defer func() { <-a.slots }()
	if !ok {
		// Same cost for unknown users, so timing does not reveal them.
		_, _ = auth.VerifyHash(dummyHash(), []byte(password))
		return false, nil
	}
	match, err := auth.VerifyHash(acct.hash, []byte(password))
	if err != nil || !match {
		return false, nil
	}
	a.mu.Lock()
	if len(a.okCache) >= okCacheMax {
		clear(a.okCache)
	}
	a.okCache[key] = a.now().Add(okCacheTTL)
	a.mu.Unlock()
	return true, nil
}

// dummyHash is an argon2id hash of a random password with the default
// parameters, verified for unknown user names. Computed once, on first use.
var dummyHash = sync.OnceValue(func() string {
	h, err := auth.HashPassword(auth.SchemeArgon2id, []byte(randomToken(16)))
	if err != nil {
		panic(err)
	}
	return h
})

// checkKey finds the API key whose hash matches token, comparing against
// every key in constant time.
func (a *authenticator) checkKey(token string) (*principal, bool) {
	sum := sha256.Sum256([]byte(token))
	found := -1
	for i, h := range a.khash {
		if subtle.ConstantTimeCompare(sum[:], h) == 1 {
			found = i
		}
	}
	if found < 0 {
		return nil, false
	}
	k := a.kacct[found]
	return &principal{name: "apikey:" + a.keys[found].Name, method: "bearer", role: k.role, topics: k.topics}, true
}

// userPrincipal is the principal of a configured user.
func (a *authenticator) userPrincipal(user, method string, s *session) *principal {
	acct := a.users[user]
	return &principal{name: user, method: method, sess: s, role: acct.role, topics: acct.topics}
}

func (a *authenticator) newSession(user string) *session {
	s := &session{token: randomToken(32), user: user, csrf: randomToken(24), expires: a.now().Add(a.ttl)}
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.sessions) >= maxSessions {
		now := a.now()
		var oldest *session
		for _, x := range a.sessions {
			if now.After(x.expires) {
				delete(a.sessions, x.token)
			} else if oldest == nil || x.expires.Before(oldest.expires) {
				oldest = x
			}
		}
		if len(a.sessions) >= maxSessions && oldest != nil {
			delete(a.sessions, oldest.token)
		}
	}
	a.sessions[s.token] = s
	return s
}

func (a *authenticator) session(token string) *session {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := a.sessions[token]
	if s == nil {
		return nil
	}
	if a.now().After(s.expires) {
		delete(a.sessions, token)
		return nil
	}
	return s
}

func (a *authenticator) endSession(token string) {
	a.mu.Lock()
	delete(a.sessions, token)
	a.mu.Unlock()
}

// authenticate identifies the caller. Requests with an Authorization
// header are judged by it alone; otherwise the session cookie counts.
// Cookie-authenticated requests that change state must carry the
// session's CSRF token in the X-Isobar-CSRF header.
//
// Password checks are throttled (a *throttledError while the address or
// user name is blocked, before the password is looked at). A valid API key
// or session cookie is never throttled; a wrong API key counts as a failure
// of its address.
func (a *authenticator) authenticate(r *http.Request) (*principal, error) {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, cred, _ := strings.Cut(h, " ")
		cred = strings.TrimSpace(cred)
		switch strings.ToLower(scheme) {
		case "basic":
			addr, _ := a.source(r)
			user, pass, ok := r.BasicAuth()
			if !ok {
				return nil, errBadCredentials
			}
			if err := a.attempt(r.Context(), addr, user, pass); err != nil {
				return nil, err
			}
			return a.userPrincipal(user, "basic", nil), nil
		case "bearer":
			if p, ok := a.checkKey(cred); ok {
				return p, nil
			}
			addr, _ := a.source(r)
			if err := a.admit(addr, ""); err != nil {
				return nil, err
			}
			a.finish(addr, "", true, false)
			return nil, errBadCredentials
		default:
			return nil, errBadCredentials
		}
	}
	c, err := r.Cookie(cookieName)
	if err != nil || c.Value == "" {
		return nil, errNoCredentials
	}
	s := a.session(c.Value)
	if s == nil {
		return nil, errNoCredentials
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
	default:
		if subtle.ConstantTimeCompare([]byte(r.Header.Get(csrfHeader)), []byte(s.csrf)) != 1 {
			return nil, errCSRF
		}
	}
	return a.userPrincipal(s.user, "session", s), nil
}
