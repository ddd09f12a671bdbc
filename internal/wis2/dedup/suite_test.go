package dedup

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// harness is a store under test and a way to let time pass for it: a fake
// clock (memory), miniredis' FastForward, or a real sleep (redis-server).
type harness struct {
	s Store
	// lease is the lease the suite uses; advance(lease) must expire it.
	lease   time.Duration
	advance func(time.Duration)
}

func mustClaim(t *testing.T, s Store, id string, lease time.Duration, want Result) Token {
	t.Helper()
	r, tok, err := s.Claim(context.Background(), id, lease)
	if err != nil {
		t.Fatalf("Claim(%q): %v", id, err)
	}
	if r != want {
		t.Fatalf("Claim(%q) = %v, want %v", id, r, want)
	}
	if (r == Claimed) != (tok != "") {
		t.Fatalf("Claim(%q) = %v with token %q", id, r, tok)
	}
	return tok
}

// runSuite checks the Store semantics shared by every backend.
func runSuite(t *testing.T, h harness) {
	ctx := context.Background()
	s, lease := h.s, h.lease
	ttl := time.Hour

	t.Run("ClaimConfirm", func(t *testing.T) {
		tok := mustClaim(t, s, "a", lease, Claimed)
		mustClaim(t, s, "a", lease, Leased)
		if err := s.Confirm(ctx, "a", tok, ttl); err != nil {
			t.Fatal(err)
		}
		mustClaim(t, s, "a", lease, Published)
		// Confirming again with the same token is harmless.
		if err := s.Confirm(ctx, "a", tok, ttl); err != nil {
			t.Fatalf("second Confirm: %v", err)
		}
		if err := s.Confirm(ctx, "a", "other", ttl); !errors.Is(err, ErrNotHolder) {
			t.Fatalf("Confirm with another token = %v, want ErrNotHolder", err)
		}
		if err := s.Release(ctx, "a", tok); !errors.Is(err, ErrNotHolder) {
			t.Fatalf("Release after Confirm = %v, want ErrNotHolder", err)
		}
		// Published outlives the lease.
		h.advance(lease * 2)
		mustClaim(t, s, "a", lease, Published)
	})

	t.Run("PublishedExpires", func(t *testing.T) {
		tok := mustClaim(t, s, "ttl", lease, Claimed)
		if err := s.Confirm(ctx, "ttl", tok, lease); err != nil {
			t.Fatal(err)
		}
		mustClaim(t, s, "ttl", lease, Published)
		h.advance(lease * 2)
		mustClaim(t, s, "ttl", lease, Claimed)
	})

	t.Run("ReleaseLetsAnotherClaim", func(t *testing.T) {
		tok := mustClaim(t, s, "r", lease, Claimed)
		if err := s.Release(ctx, "r", "not-mine"); !errors.Is(err, ErrNotHolder) {
			t.Fatalf("Release with another token = %v, want ErrNotHolder", err)
		}
		mustClaim(t, s, "r", lease, Leased)
		if err := s.Release(ctx, "r", tok); err != nil {
			t.Fatal(err)
		}
		tok2 := mustClaim(t, s, "r", lease, Claimed)
		if tok2 == tok {
			t.Fatal("same token twice")
		}
		if err := s.Confirm(ctx, "r", tok, ttl); !errors.Is(err, ErrNotHolder) {
			t.Fatalf("Confirm by the releaser = %v, want ErrNotHolder", err)
		}
		// Releasing a free id is not an error.
		if err := s.Release(ctx, "free", tok); err != nil {
			t.Fatalf("Release of a free id: %v", err)
		}
	})

	t.Run("LeaseExpiry", func(t *testing.T) {
		first := mustClaim(t, s, "x", lease, Claimed)
		// The first holder dies: its lease runs out and the next copy wins.
		h.advance(lease * 2)
		second := mustClaim(t, s, "x", lease, Claimed)
		if err := s.Confirm(ctx, "x", first, ttl); !errors.Is(err, ErrNotHolder) {
			t.Fatalf("late Confirm by the dead holder = %v, want ErrNotHolder", err)
		}
		if err := s.Confirm(ctx, "x", second, ttl); err != nil {
			t.Fatal(err)
		}
		mustClaim(t, s, "x", lease, Published)
	})

	t.Run("LateConfirmOfFreeID", func(t *testing.T) {
		// The holder was slow: its lease expired but nobody claimed the id.
		// It did publish, so the id is remembered.
		tok := mustClaim(t, s, "late", lease, Claimed)
		h.advance(lease * 2)
		if err := s.Confirm(ctx, "late", tok, ttl); err != nil {
			t.Fatal(err)
		}
		mustClaim(t, s, "late", lease, Published)
	})

	t.Run("Invalid", func(t *testing.T) {
		if _, _, err := s.Claim(ctx, "", lease); !errors.Is(err, ErrInvalid) {
			t.Errorf("empty id: %v", err)
		}
		if _, _, err := s.Claim(ctx, strings.Repeat("x", MaxIDLength+1), lease); !errors.Is(err, ErrInvalid) {
			t.Errorf("long id: %v", err)
		}
		if _, _, err := s.Claim(ctx, "i", 0); !errors.Is(err, ErrInvalid) {
			t.Errorf("zero lease: %v", err)
		}
		if err := s.Confirm(ctx, "i", "", ttl); !errors.Is(err, ErrInvalid) {
			t.Errorf("empty token: %v", err)
		}
		if err := s.Confirm(ctx, "i", "t", -time.Second); !errors.Is(err, ErrInvalid) {
			t.Errorf("negative ttl: %v", err)
		}
		if err := s.Release(ctx, "", "t"); !errors.Is(err, ErrInvalid) {
			t.Errorf("release empty id: %v", err)
		}
		// Odd but valid ids are stored as given.
		for _, id := range []string{"urn:wmo:md:x:y/{tag}", "ü 🙂", "P:" + "id", strings.Repeat("y", MaxIDLength)} {
			tok := mustClaim(t, s, id, lease, Claimed)
			if err := s.Confirm(ctx, id, tok, ttl); err != nil {
				t.Fatal(err)
			}
			mustClaim(t, s, id, lease, Published)
		}
	})
}

// exactlyOnce runs goroutines x ids: every goroutine goes through every id
// (in its own order) with one of the stores, as redundant subscribers on
// several nodes do, and keeps trying until the id is published. It returns
// how many Confirms succeeded per id, and the number of errors seen.
// Errors from the store are retried: a relay never drops a message on an
// error.
func exactlyOnce(t *testing.T, stores []Store, goroutines, ids int, lease time.Duration, deadline time.Duration) ([]int32, int64) {
	t.Helper()
	confirmed := make([]int32, ids)
	var errs atomic.Int64
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			s := stores[g%len(stores)]
			order := rand.Perm(ids)
			for _, i := range order {
				id := fmt.Sprintf("id-%d", i)
				for ctx.Err() == nil {
					r, tok, err := s.Claim(ctx, id, lease)
					if err != nil {
						errs.Add(1)
						time.Sleep(5 * time.Millisecond)
						continue
					}
					if r == Published {
						break
					}
					if r == Leased {
						time.Sleep(time.Millisecond)
						continue
					}
					// Claimed: "publish", then confirm.
					if err := s.Confirm(ctx, id, tok, time.Minute); err == nil {
						atomic.AddInt32(&confirmed[i], 1)
						break
					} else if !errors.Is(err, ErrNotHolder) {
						errs.Add(1)
					}
				}
			}
		})
	}
	wg.Wait()
	if ctx.Err() != nil {
		t.Fatalf("not every id published within %v (%d errors)", deadline, errs.Load())
	}
	return confirmed, errs.Load()
}

func checkExactlyOnce(t *testing.T, confirmed []int32) {
	t.Helper()
	for i, n := range confirmed {
		if n != 1 {
			t.Errorf("id-%d confirmed %d times, want exactly once", i, n)
		}
	}
}
