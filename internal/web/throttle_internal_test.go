package web

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestLimiterBackoff: free failures, then blocks that double up to the
// cap; in-flight attempts count; a success neither blocks nor resets.
func TestLimiterBackoff(t *testing.T) {
	cfg := limiterConfig{free: 3, base: time.Second, maxBlock: 10 * time.Second, forget: time.Hour, maxKeys: 10}
	l := newLimiter(cfg, nil)
	now := time.Unix(1000, 0)
	fail := func() {
		t.Helper()
		ok, _ := l.admit("k", now)
		if !ok {
			t.Fatalf("attempt refused at %v: %+v", now, *l.m["k"])
		}
		l.done("k", now, true, false)
	}
	// Three concurrent attempts use up the free ones: the fourth waits.
	for i := range 3 {
		if ok, _ := l.admit("k", now); !ok {
			t.Fatalf("free attempt %d refused", i)
		}
	}
	if ok, _ := l.admit("k", now); ok {
		t.Fatal("fourth concurrent attempt admitted")
	}
	for range 3 {
		l.done("k", now, true, false)
	}
	// Third failure: blocked 1s.
	if ok, retry := l.admit("k", now); ok || retry != time.Second {
		t.Fatalf("after 3 failures: ok=%v retry=%v", ok, retry)
	}
	var blocks []time.Duration
	for range 6 {
		now = l.m["k"].until
		fail()
		blocks = append(blocks, l.m["k"].until.Sub(now))
	}
	want := []time.Duration{2 * time.Second, 4 * time.Second, 8 * time.Second, 10 * time.Second, 10 * time.Second, 10 * time.Second}
	if fmt.Sprint(blocks) != fmt.Sprint(want) {
		t.Errorf("blocks %v, want %v", blocks, want)
	}
	// Beyond the free attempts, one at a time even when not blocked.
	now = l.m["k"].until
	if ok, _ := l.admit("k", now); !ok {
		t.Fatal("attempt after the block refused")
	}
	if ok, retry := l.admit("k", now); ok || retry <= 0 {
		t.Fatalf("second concurrent attempt beyond the free ones: ok=%v retry=%v", ok, retry)
	}
	l.done("k", now, true, true) // success: no block
	if ok, _ := l.admit("k", now); !ok {
		t.Fatal("attempt after a success refused")
	}
	l.done("k", now, false, false) // not checked (queue timeout): no block
	if ok, _ := l.admit("k", now); !ok {
		t.Fatal("attempt after an unchecked one refused")
	}
	l.done("k", now, true, true)
	if r := l.m["k"]; r.failures != 9 || r.inflight != 0 {
		t.Errorf("record %+v", *r)
	}
	// Forgotten after an idle hour.
	now = now.Add(time.Hour + time.Second)
	if ok, _ := l.admit("k", now); !ok || l.m["k"].failures != 0 {
		t.Errorf("not forgotten: %+v", *l.m["k"])
	}
}

// TestLimiterBounded: the table never grows beyond maxKeys; blocked keys
// and pinned keys (configured user names) are the last to go.
func TestLimiterBounded(t *testing.T) {
	cfg := limiterConfig{free: 1, base: time.Minute, maxBlock: time.Minute, forget: time.Hour, maxKeys: 100}
	l := newLimiter(cfg, []string{"admin"})
	now := time.Unix(1000, 0)
	// admin and a few others are blocked.
	for _, k := range []string{"admin", "b1", "b2"} {
		if ok, _ := l.admit(k, now); !ok {
			t.Fatal(k)
		}
		l.done(k, now, true, false)
	}
	for i := range 10000 {
		now = now.Add(time.Millisecond)
		k := fmt.Sprintf("spray-%d", i)
		if ok, _ := l.admit(k, now); !ok {
			t.Fatalf("%s refused", k)
		}
		l.done(k, now, true, true)
		if l.n > cfg.maxKeys {
			t.Fatalf("%d records", l.n)
		}
	}
	for _, k := range []string{"admin", "b1", "b2"} {
		if ok, _ := l.admit(k, now); ok {
			t.Errorf("%s unblocked by a flood of other keys", k)
		}
	}
	// Only when everything else is blocked does a blocked key go, the one
	// whose block ends first; pinned keys never.
	for i := range 200 {
		now = now.Add(time.Millisecond)
		k := fmt.Sprintf("blocked-%d", i)
		if ok, _ := l.admit(k, now); ok {
			l.done(k, now, true, false)
		}
		if l.n > cfg.maxKeys {
			t.Fatalf("%d records", l.n)
		}
	}
	if r := l.m["admin"]; r == nil || r.failures != 1 {
		t.Errorf("pinned record lost: %+v", r)
	}
	// A table full of attempts in flight refuses new keys.
	l = newLimiter(limiterConfig{free: 5, base: time.Second, maxBlock: time.Second, forget: time.Hour, maxKeys: 3}, nil)
	for _, k := range []string{"a", "b", "c"} {
		l.admit(k, now)
	}
	if ok, retry := l.admit("d", now); ok || retry <= 0 {
		t.Errorf("full table of in-flight attempts admitted a new key")
	}
}

// TestPasswordQueueTimeout: a password check waits for a verification
// slot at most a.wait, then the request gets 503 and the attempt does not
// count as a failure.
func TestPasswordQueueTimeout(t *testing.T) {
	a := newAuthenticator(Config{Users: []User{{Username: "admin", PasswordHash: dummyHash()}}}.withDefaults())
	a.wait = 50 * time.Millisecond
	for range verifySlots {
		a.slots <- struct{}{}
	}
	start := time.Now()
	err := a.attempt(context.Background(), "127.0.0.1", "admin", "x")
	if !errors.Is(err, errBusy) || time.Since(start) > 5*time.Second {
		t.Fatalf("attempt with no free slot: %v after %v", err, time.Since(start))
	}
	if r := a.addrs.m["127.0.0.1"]; r.failures != 0 || r.inflight != 0 {
		t.Errorf("address record after a timeout: %+v", *r)
	}
	if r := a.names.m["admin"]; r.failures != 0 || r.inflight != 0 {
		t.Errorf("name record after a timeout: %+v", *r)
	}
	// A cancelled request stops waiting too.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	a.wait = time.Hour
	if err := a.attempt(ctx, "127.0.0.1", "admin", "x"); !errors.Is(err, errBusy) {
		t.Errorf("cancelled: %v", err)
	}
	s := &Server{auth: a}
	w := httptest.NewRecorder()
	s.authError(w, httptest.NewRequest("GET", "/api/v1/stats", nil), errBusy)
	if w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") == "" || !strings.Contains(w.Body.String(), `"error"`) {
		t.Errorf("busy answer: %d %q %s", w.Code, w.Header().Get("Retry-After"), w.Body)
	}
}

func TestClientAddr(t *testing.T) {
	var ps proxies
	for _, p := range []string{"127.0.0.1", "10.0.0.0/8", "::1"} {
		pp, err := parseProxy(p)
		if err != nil {
			t.Fatal(err)
		}
		ps = append(ps, pp)
	}
	for _, c := range []struct {
		remote string
		xff    []string
		want   string
	}{
		{"127.0.0.1:5000", nil, "127.0.0.1"},
		{"127.0.0.1:5000", []string{"127.0.0.9"}, "127.0.0.9"},
		{"127.0.0.1:5000", []string{"127.0.0.8, 127.0.0.9"}, "127.0.0.9"},
		{"127.0.0.1:5000", []string{"127.0.0.9, 10.1.2.3"}, "127.0.0.9"},
		{"127.0.0.1:5000", []string{"127.0.0.8", "127.0.0.9 , 10.1.2.3"}, "127.0.0.9"},
		{"127.0.0.1:5000", []string{"[2001:db8::1]:443"}, "2001:db8::1"},
		{"127.0.0.1:5000", []string{"127.0.0.9, garbage"}, "127.0.0.1"},
		{"127.0.0.1:5000", []string{"10.0.0.1, 10.0.0.2"}, "10.0.0.1"},
		{"127.0.0.2:5000", []string{"127.0.0.9"}, "127.0.0.2"},
		{"[::ffff:127.0.0.1]:5000", []string{"127.0.0.9"}, "127.0.0.9"},
		{"[::1]:5000", []string{"127.0.0.9"}, "127.0.0.9"},
	} {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = c.remote
		r.Header["x-forwarded-for"] = c.xff // non-canonical spelling
		a, _, ok := ps.clientAddr(r)
		if !ok || a.String() != c.want {
			t.Errorf("%s %q: %v %v, want %s", c.remote, c.xff, a, ok, c.want)
		}
	}
	r := httptest.NewRequest("GET", "/", nil)
	r.RemoteAddr = "[2001:db8:1:2:3:4:5:6]:80"
	a := &authenticator{}
	if k, shown := a.source(r); k != "2001:db8:1:2::/64" || shown != "2001:db8:1:2:3:4:5:6" {
		t.Errorf("IPv6 source %q %q", k, shown)
	}
}

func TestMatchFilter(t *testing.T) {
	for _, c := range []struct {
		f, t string
		want bool
	}{
		{"a/#", "a", true}, {"a/#", "a/b/c", true}, {"a/+", "a/b", true}, {"a/+", "a/b/c", false}, {"a/+", "a", false},
		{"+/b", "a/b", true}, {"#", "a", true}, {"#", "$SYS/x", false}, {"+/x", "$SYS/x", false}, {"$SYS/#", "$SYS/x", true},
		{"a/b", "a/b", true}, {"a/b", "a/bc", false}, {"a", "a/b", false}, {"a/+/c", "a//c", true}, {"+", "", true}, {"a/#", "ab", false},
	} {
		if got := matchFilter(c.f, c.t); got != c.want {
			t.Errorf("matchFilter(%q, %q) = %v", c.f, c.t, got)
		}
	}
}

func TestHostRules(t *testing.T) {
	hr := newHostRules([]string{"Broker.Example", "*.svc.example", "[fd00::1]"}, "myhost:18083")
	for h, want := range map[string]bool{
		"": true, "127.0.0.1": true, "10.1.2.3:80": true, "[::1]:18083": true, "[fe80::1%25eth0]:80": true,
		"localhost": true, "localhost.": true, "myhost:1": true, "broker.example": true, "a.svc.example": true,
		"svc.example": false, "evil.example": false, "127.0.0.1.evil.example": false, "broker.example.evil": false,
		"[fd00::1]": true, "xsvc.example": false,
	} {
		if got := hr.allows(h); got != want {
			t.Errorf("allows(%q) = %v", h, got)
		}
	}
	if !newHostRules([]string{"*"}, "127.0.0.1:1").allows("anything") {
		t.Error("* does not allow everything")
	}
}
