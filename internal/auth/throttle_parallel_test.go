package auth

import (
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// brokerLogin authenticates the way internal/node's broker adapter does
// today: ask for the throttle delay, verify, and (in the broker) answer
// after the delay.
func brokerLogin(a *Authenticator, user, password string, ip netip.Addr) (Result, time.Duration) {
	d := a.Delay(ip)
	_, res := a.AuthenticateAfter(d, user, true, []byte(password), true, ip)
	return res, d
}

// verifySeam replaces the Authenticator's password check: it counts the
// verifications, remembers which passwords were checked and, until
// release is closed, holds every verification in flight.
type verifySeam struct {
	calls   atomic.Int32
	mu      sync.Mutex
	checked []string
	release chan struct{}
}

func installVerifySeam(a *Authenticator, hold bool) *verifySeam {
	s := &verifySeam{release: make(chan struct{})}
	if !hold {
		close(s.release)
	}
	a.verify = func(pf *PasswordFile, user string, password []byte) bool {
		s.calls.Add(1)
		s.mu.Lock()
		s.checked = append(s.checked, string(password))
		s.mu.Unlock()
		select {
		case <-s.release:
		case <-time.After(10 * time.Second): // bounded: never hang a test
		}
		return pf.Verify(user, password)
	}
	return s
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestThrottleParallelGuesses reproduces the security review's finding:
// 40 concurrent CONNECT guesses from one address, the right password among
// them, were all verified within the delay window and the right one was
// accepted. Attempts in flight must count as failures until they succeed,
// so that once Threshold guesses are in flight the others wait for their
// outcome and, the address being throttled by then, are refused without
// their password being checked.
func TestThrottleParallelGuesses(t *testing.T) {
	const threshold, guesses = 5, 40
	f := newAuthFixture(t)
	// Enough hashing slots for every guess (a big machine): the bound on
	// concurrent hashes is about CPU, not a defence.
	a := f.new(t, Config{MaxConcurrentHashes: guesses,
		Throttle: ThrottleConfig{Threshold: threshold, BaseDelay: time.Minute, MaxDelay: time.Hour}})
	seam := installVerifySeam(a, true)
	ip := netip.MustParseAddr("127.0.0.9")

	type outcome struct {
		res   Result
		delay time.Duration
	}
	results := make(chan outcome, guesses)
	var wg sync.WaitGroup
	for i := range guesses - 1 {
		wg.Go(func() {
			res, d := brokerLogin(a, "alice", fmt.Sprintf("guess-%d", i), ip)
			results <- outcome{res, d}
		})
	}
	// The first Threshold guesses are being verified (held by the seam);
	// give the others time to be (wrongly) let through too.
	waitFor(t, "guesses in flight", func() bool { return seam.calls.Load() >= threshold })
	time.Sleep(50 * time.Millisecond)
	// The right password arrives while the guesses are in flight.
	right := make(chan outcome, 1)
	wg.Go(func() {
		res, d := brokerLogin(a, "alice", "alicepw", ip)
		right <- outcome{res, d}
	})
	time.Sleep(50 * time.Millisecond)
	close(seam.release)
	wg.Wait()
	close(results)

	if r := <-right; r.res == ResultOK {
		t.Errorf("the right password was accepted while the address was being throttled (delay %v)", r.delay)
	}
	for r := range results {
		if r.res != ResultBadCredentials {
			t.Errorf("a wrong guess got %v", r.res)
		}
	}
	if n := seam.calls.Load(); n > threshold {
		t.Errorf("%d passwords were checked for %d parallel guesses, want at most %d", n, guesses, threshold)
	}
	if got := a.Stats().BadCredentials.Load(); got != guesses {
		t.Errorf("BadCredentials = %d, want %d", got, guesses)
	}
	if d := a.Delay(ip); d < time.Minute-time.Second {
		t.Errorf("after %d failures Delay = %v, want the base delay", threshold, d)
	}
}

// TestThrottleParallelGuessesUnheld: the same attack with nothing holding
// the verifications: however the 40 attempts interleave, few passwords are
// checked, and the right one is accepted only if it was checked among the
// first Threshold, before the address was throttled.
func TestThrottleParallelGuessesUnheld(t *testing.T) {
	const threshold, guesses = 5, 40
	for round := range 3 {
		f := newAuthFixture(t)
		a := f.new(t, Config{Throttle: ThrottleConfig{Threshold: threshold, BaseDelay: time.Minute}})
		seam := installVerifySeam(a, false)
		ip := netip.MustParseAddr("127.0.0.10")
		start := make(chan struct{})
		var wg sync.WaitGroup
		var accepted atomic.Int32
		rightAt := (round * 17) % guesses
		for i := range guesses {
			wg.Go(func() {
				pw := fmt.Sprintf("guess-%d", i)
				if i == rightAt {
					pw = "alicepw"
				}
				<-start
				if res, _ := brokerLogin(a, "alice", pw, ip); res == ResultOK {
					accepted.Add(1)
				}
			})
		}
		close(start)
		wg.Wait()
		// Threshold failures, the one attempt queued for the end of the
		// block, and the right password if it is checked among the first
		// ones (a success does not count as a failure, so one more wrong
		// guess is needed to reach the threshold).
		n := int(seam.calls.Load())
		limit := threshold + 1
		if accepted.Load() > 0 {
			limit++
		}
		if n > limit {
			t.Errorf("round %d: %d passwords checked, want at most %d", round, n, limit)
		}
		if accepted.Load() > 0 {
			idx := -1
			for i, p := range seam.checked {
				if p == "alicepw" {
					idx = i
				}
			}
			if idx < 0 || idx >= threshold {
				t.Errorf("round %d: right password accepted as check %d of %v", round, idx+1, seam.checked)
			}
		}
	}
}
