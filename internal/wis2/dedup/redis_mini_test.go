package dedup

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func newMini(t *testing.T, o RedisOptions) (*miniredis.Miniredis, *Redis) {
	t.Helper()
	m := miniredis.RunT(t)
	o.Addrs = []string{m.Addr()}
	s, err := NewRedis(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return m, s
}

func TestMiniredisSuite(t *testing.T) {
	m, s := newMini(t, RedisOptions{})
	runSuite(t, harness{s: s, lease: 10 * time.Second, advance: m.FastForward})
	for _, k := range m.Keys() {
		if !strings.HasPrefix(k, DefaultKeyPrefix) {
			t.Errorf("key %q without the default prefix", k)
		}
	}
}

func TestMiniredisKeys(t *testing.T) {
	m, s := newMini(t, RedisOptions{KeyPrefix: "gb1:", DB: 3})
	ctx := context.Background()
	_, tok, err := s.Claim(ctx, "abc", 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	m.Select(3)
	if v, _ := m.Get("gb1:abc"); v != string(tok) {
		t.Fatalf("leased value = %q, want the token %q", v, tok)
	}
	if ttl := m.TTL("gb1:abc"); ttl != 3*time.Second {
		t.Fatalf("lease TTL = %v", ttl)
	}
	if err := s.Confirm(ctx, "abc", tok, 48*time.Hour); err != nil {
		t.Fatal(err)
	}
	if v, _ := m.Get("gb1:abc"); v != publishedPrefix+string(tok) {
		t.Fatalf("published value = %q", v)
	}
	if ttl := m.TTL("gb1:abc"); ttl != 48*time.Hour {
		t.Fatalf("published TTL = %v", ttl)
	}
	// A sub-millisecond lease is rounded up, never sent as 0 (an error).
	if r, _, err := s.Claim(ctx, "tiny", time.Microsecond); err != nil || r != Claimed {
		t.Fatalf("Claim with 1µs lease = %v, %v", r, err)
	}
}

func TestMiniredisAuth(t *testing.T) {
	m := miniredis.RunT(t)
	m.RequireUserAuth("alice", "s3cret")
	if _, err := NewRedis(RedisOptions{Addrs: []string{m.Addr()}, Username: "alice", Password: "wrong"}); err == nil {
		t.Fatal("NewRedis with a wrong password succeeded")
	}
	s, err := NewRedis(RedisOptions{Addrs: []string{m.Addr()}, Username: "alice", Password: "s3cret"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	mustClaim(t, s, "x", time.Second, Claimed)
}

func TestMiniredisErrors(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, s := newMini(t, RedisOptions{Registerer: reg, Timeout: 300 * time.Millisecond})
	ctx := context.Background()
	tok := mustClaim(t, s, "e", time.Second, Claimed)
	m.SetError("LOADING Redis is loading the dataset in memory")
	if _, _, err := s.Claim(ctx, "e2", time.Second); err == nil {
		t.Fatal("Claim succeeded on a failing server")
	}
	if err := s.Confirm(ctx, "e", tok, time.Minute); err == nil || errors.Is(err, ErrNotHolder) {
		t.Fatalf("Confirm on a failing server = %v", err)
	}
	if err := s.Release(ctx, "e", tok); err == nil || errors.Is(err, ErrNotHolder) {
		t.Fatalf("Release on a failing server = %v", err)
	}
	m.SetError("")
	if err := s.Confirm(ctx, "e", tok, time.Minute); err != nil {
		t.Fatal(err)
	}
	for _, op := range []string{opClaim, opConfirm, opRelease} {
		if v := testutil.ToFloat64(s.m.errors.WithLabelValues(op)); v != 1 {
			t.Errorf("errors{%s} = %v, want 1", op, v)
		}
	}
	// The server goes away: calls fail within the timeout, they do not hang.
	m.Close()
	start := time.Now()
	if _, _, err := s.Claim(ctx, "gone", time.Second); err == nil {
		t.Fatal("Claim succeeded with the server gone")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Claim took %v with the server gone (timeout 300ms)", d)
	}
	_ = s.Close()
	if _, _, err := s.Claim(ctx, "closed", time.Second); !errors.Is(err, ErrClosed) {
		t.Fatalf("Claim after Close = %v", err)
	}
	if n, err := testutil.GatherAndCount(reg); err != nil || n != 0 {
		t.Fatalf("%d series left after Close (%v)", n, err)
	}
}

func TestMiniredisExactlyOnce(t *testing.T) {
	m := miniredis.RunT(t)
	var stores []Store
	for range 3 {
		s, err := NewRedis(RedisOptions{Addrs: []string{m.Addr()}})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		stores = append(stores, s)
	}
	confirmed, errs := exactlyOnce(t, stores, 24, 300, time.Second, 15*time.Second)
	checkExactlyOnce(t, confirmed)
	if errs != 0 {
		t.Errorf("%d errors", errs)
	}
}

func TestRedisOptionsInvalid(t *testing.T) {
	for _, o := range []RedisOptions{
		{},
		{Addrs: []string{"nohostport"}},
		{Addrs: []string{"127.0.0.1:1", "127.0.0.1:2"}},
		{Addrs: []string{"127.0.0.1:1"}, Cluster: true, DB: 1},
		{Addrs: []string{"127.0.0.1:1"}, Timeout: -1},
	} {
		if s, err := NewRedis(o); err == nil {
			_ = s.Close()
			t.Errorf("NewRedis(%+v) succeeded", o)
		}
	}
}
