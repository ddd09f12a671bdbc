package web

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/isobar-mq/isobar/internal/auth"
)

// Authentication: HTTP Basic with an administrator's password, a bearer
// API key, or the console's session cookie. Password checks are argon2id
// (tens of milliseconds and megabytes each), so they are bounded: at most
// verifySlots run at once, a successful check is cached briefly (so a
// script using Basic auth does not pay it on every call), and a source
// address that fails too often is refused for a while (429).

const (
	cookieName   = "isobar_session"
	csrfHeader   = "X-Isobar-CSRF"
	verifySlots  = 2
	okCacheTTL   = 5 * time.Minute
	okCacheMax   = 256
	maxSessions  = 1024
	failWindow   = 5 * time.Minute
	failLimit    = 10
	failTrackMax = 10000
)

// principal is who made a request and how.
type principal struct {
	name   string // user name, or "apikey:<name>"
	method string // "basic", "bearer" or "session"
	sess   *session
}

type session struct {
	token   string
	user    string
	csrf    string
	expires time.Time
}

type failRecord struct {
	count int
	first time.Time
}

type authenticator struct {
	users map[string]string // user -> hash
	keys  []APIKey
	khash [][]byte
	ttl   time.Duration
	now   func() time.Time

	slots chan struct{}

	mu       sync.Mutex
	okCache  map[[32]byte]time.Time
	sessions map[string]*session
	fails    map[string]*failRecord
}

var (
	errNoCredentials  = errors.New("authentication required")
	errBadCredentials = errors.New("invalid credentials")
	errTooMany        = errors.New("too many failed attempts; try again later")
	errCSRF           = errors.New("missing or invalid " + csrfHeader + " header")
)

func newAuthenticator(cfg Config) *authenticator {
	a := &authenticator{
		users:    make(map[string]string, len(cfg.Users)),
		keys:     cfg.APIKeys,
		ttl:      cfg.SessionTTL,
		now:      time.Now,
		slots:    make(chan struct{}, verifySlots),
		okCache:  make(map[[32]byte]time.Time),
		sessions: make(map[string]*session),
		fails:    make(map[string]*failRecord),
	}
	for _, u := range cfg.Users {
		a.users[u.Username] = u.PasswordHash
	}
	for _, k := range cfg.APIKeys {
		h, _ := parseKeyHash(k.Hash) // validated by Config.Validate
		a.khash = append(a.khash, h)
	}
	return a
}

func randomToken(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// blocked reports whether ip has failed too often recently.
func (a *authenticator) blocked(ip string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	f := a.fails[ip]
	if f == nil {
		return false
	}
	if a.now().Sub(f.first) > failWindow {
		delete(a.fails, ip)
		return false
	}
	return f.count >= failLimit
}

func (a *authenticator) failed(ip string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.now()
	f := a.fails[ip]
	if f == nil || now.Sub(f.first) > failWindow {
		if len(a.fails) >= failTrackMax {
			for k, v := range a.fails {
				if now.Sub(v.first) > failWindow {
					delete(a.fails, k)
				}
			}
			if len(a.fails) >= failTrackMax {
				clear(a.fails) // under attack from many sources: start over
			}
		}
		f = &failRecord{first: now}
		a.fails[ip] = f
	}
	f.count++
}

// checkPassword verifies an administrator's password.
func (a *authenticator) checkPassword(user, password string) bool {
	hash, ok := a.users[user]
	key := sha256.Sum256([]byte(user + "\x00" + password))
	if ok {
		a.mu.Lock()
		exp, hit := a.okCache[key]
		a.mu.Unlock()
		if hit && a.now().Before(exp) {
			return true
		}
	}
	a.slots <- struct{}{}
	defer func() { <-a.slots }()
	if !ok {
		// Same cost for unknown users, so timing does not reveal them.
		_, _ = auth.VerifyHash(dummyHash(), []byte(password))
		return false
	}
	match, err := auth.VerifyHash(hash, []byte(password))
	if err != nil || !match {
		return false
	}
	a.mu.Lock()
	if len(a.okCache) >= okCacheMax {
		clear(a.okCache)
	}
	a.okCache[key] = a.now().Add(okCacheTTL)
	a.mu.Unlock()
	return true
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
func (a *authenticator) checkKey(token string) (string, bool) {
	sum := sha256.Sum256([]byte(token))
	found := -1
	for i, h := range a.khash {
		if subtle.ConstantTimeCompare(sum[:], h) == 1 {
			found = i
		}
	}
	if found < 0 {
		return "", false
	}
	return a.keys[found].Name, true
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
func (a *authenticator) authenticate(r *http.Request) (*principal, error) {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, cred, _ := strings.Cut(h, " ")
		cred = strings.TrimSpace(cred)
		switch strings.ToLower(scheme) {
		case "basic":
			ip := clientIP(r)
			if a.blocked(ip) {
				return nil, errTooMany
			}
			user, pass, ok := r.BasicAuth()
			if !ok || !a.checkPassword(user, pass) {
				a.failed(ip)
				return nil, errBadCredentials
			}
			return &principal{name: user, method: "basic"}, nil
		case "bearer":
			ip := clientIP(r)
			if a.blocked(ip) {
				return nil, errTooMany
			}
			name, ok := a.checkKey(cred)
			if !ok {
				a.failed(ip)
				return nil, errBadCredentials
			}
			return &principal{name: "apikey:" + name, method: "bearer"}, nil
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
	return &principal{name: s.user, method: "session", sess: s}, nil
}
