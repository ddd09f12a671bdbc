package auth

import (
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// withFakeClock gives a's throttle a manual clock.
func withFakeClock(a *Authenticator) *fakeClock {
	clk := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	a.throttle.now = clk.now
	return clk
}

func login(a *Authenticator, user, password string, ip netip.Addr) (Result, time.Duration) {
	_, res, d := a.Login(Credentials{User: user, HasUser: true, Password: []byte(password), HasPassword: true, Remote: ip})
	return res, d
}

// TestLoginSchedule: a client retrying as soon as it is answered is held
// for the doubling delay and then has its password checked; a correct
// password after the failures waits its turn too.
func TestLoginSchedule(t *testing.T) {
	f := newAuthFixture(t)
	a := f.new(t, Config{Throttle: ThrottleConfig{Threshold: 2, BaseDelay: time.Second, MaxDelay: time.Minute}})
	clk := withFakeClock(a)
	seam := installVerifySeam(a, false)
	ip := netip.MustParseAddr("127.0.0.20")
	for i, want := range []time.Duration{0, 0, time.Second, 2 * time.Second, 4 * time.Second} {
		res, d := login(a, "alice", "guess", ip)
		if res != ResultBadCredentials || d != want {
			t.Fatalf("attempt %d: %v after %v, want bad credentials after %v", i+1, res, d, want)
		}
		clk.advance(d)
	}
	if res, d := login(a, "alice", "alicepw", ip); res != ResultOK || d != 8*time.Second {
		t.Fatalf("right password: %v after %v, want ok after 8s", res, d)
	}
	if n := seam.calls.Load(); n != 6 {
		t.Fatalf("%d passwords checked for 6 sequential attempts", n)
	}
}

// TestLoginParallelGuesses: through Login (the broker holding each answer
// for the wait returned), 40 parallel guesses get at most Threshold
// immediate checks plus one queued for the end of the block; the right
// password, sent while the guesses are in flight, is never accepted
// before the block ends.
func TestLoginParallelGuesses(t *testing.T) {
	const threshold, guesses = 5, 40
	f := newAuthFixture(t)
	a := f.new(t, Config{MaxConcurrentHashes: guesses,
		Throttle: ThrottleConfig{Threshold: threshold, BaseDelay: time.Minute, MaxDelay: time.Hour}})
	seam := installVerifySeam(a, true)
	ip := netip.MustParseAddr("127.0.0.21")
	type outcome struct {
		res   Result
		delay time.Duration
	}
	results := make(chan outcome, guesses)
	var wg sync.WaitGroup
	for i := range guesses - 1 {
		wg.Go(func() {
			res, d := login(a, "alice", fmt.Sprintf("guess-%d", i), ip)
			results <- outcome{res, d}
		})
	}
	waitFor(t, "guesses in flight", func() bool { return seam.calls.Load() >= threshold })
	time.Sleep(50 * time.Millisecond)
	wg.Go(func() {
		res, d := login(a, "alice", "alicepw", ip)
		if res == ResultOK && d < time.Minute-time.Second {
			t.Errorf("right password accepted after %v, before the block ended", d)
		}
		results <- outcome{res, d}
	})
	time.Sleep(50 * time.Millisecond)
	close(seam.release)
	wg.Wait()
	close(results)
	refusedHeld := 0
	for r := range results {
		if r.res != ResultOK && r.delay > 0 {
			refusedHeld++
		}
	}
	if n := seam.calls.Load(); n > threshold+1 {
		t.Errorf("%d passwords checked, want at most %d", n, threshold+1)
	}
	if got := a.Stats().Refused.Load(); got < guesses-threshold-1 {
		t.Errorf("Refused = %d, want at least %d", got, guesses-threshold-1)
	}
	// Refusals are held until the block ends, like a checked attempt
	// would be, so a refusal is not faster than a verdict.
	if refusedHeld < guesses-threshold-1 {
		t.Errorf("%d refusals held back, want at least %d", refusedHeld, guesses-threshold-1)
	}
}

// TestLoginParallelCorrectNotRefused: many clients behind one address
// (a NAT) logging in at once with the right password all get in: attempts
// in flight delay the others only until their outcome is known.
func TestLoginParallelCorrectNotRefused(t *testing.T) {
	f := newAuthFixture(t)
	a := f.new(t, Config{Throttle: ThrottleConfig{Threshold: 3}})
	a.verify = func(pf *PasswordFile, user string, password []byte) bool {
		time.Sleep(5 * time.Millisecond) // make the attempts overlap
		return pf.Verify(user, password)
	}
	ip := netip.MustParseAddr("127.0.0.22")
	var wg sync.WaitGroup
	var ok atomic.Int32
	for range 20 {
		wg.Go(func() {
			if res, d := login(a, "alice", "alicepw", ip); res == ResultOK && d == 0 {
				ok.Add(1)
			}
		})
	}
	wg.Wait()
	if ok.Load() != 20 {
		t.Fatalf("%d of 20 parallel correct logins accepted at once", ok.Load())
	}
	if a.Throttle().Failures(ip) != 0 || a.Throttle().Len() != 0 {
		t.Fatalf("successful logins left state: failures %d, sources %d", a.Throttle().Failures(ip), a.Throttle().Len())
	}
}

// TestUserThrottle: guesses at one username from many addresses throttle
// the username (each address alone stays under its threshold). While it is
// throttled, other attempts are refused without a check, except from an
// address the user logged in from before; the block is short (at most
// user_max_delay after the last failure).
func TestUserThrottle(t *testing.T) {
	f := newAuthFixture(t)
	a := f.new(t, Config{Throttle: ThrottleConfig{Threshold: 100, BaseDelay: time.Second, UserThreshold: 3, UserMaxDelay: 4 * time.Second}})
	clk := withFakeClock(a)
	seam := installVerifySeam(a, false)
	home := netip.MustParseAddr("127.0.0.200")
	addr := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{127, 0, 1, byte(i)}) }
	if _, res := a.Authenticate("alice", true, []byte("alicepw"), true, home); res != ResultOK {
		t.Fatal("first login from home", res)
	}
	for i := range 3 {
		if res, d := login(a, "alice", "guess", addr(i)); res != ResultBadCredentials || d != 0 {
			t.Fatalf("guess %d: %v %v", i+1, res, d)
		}
	}
	if !strings.Contains(f.logs.String(), "throttling the user name") {
		t.Errorf("user throttling not logged:\n%s", f.logs)
	}
	checks := seam.calls.Load()
	// A caller that answers at once is refused, unchecked.
	if _, res := a.Authenticate("alice", true, []byte("alicepw"), true, addr(10)); res != ResultBadCredentials {
		t.Fatalf("right password from a new address while the user is throttled: %v", res)
	}
	// Login queues one attempt for the end of the block (1s) ...
	if res, d := login(a, "alice", "guess", addr(11)); res != ResultBadCredentials || d != time.Second {
		t.Fatalf("queued guess: %v after %v", res, d)
	}
	// ... and refuses the others meanwhile, the right password included.
	if res, d := login(a, "alice", "alicepw", addr(12)); res != ResultBadCredentials || d <= 0 || d > 4*time.Second {
		t.Fatalf("right password while another attempt is queued: %v after %v", res, d)
	}
	if got := seam.calls.Load() - checks; got != 1 {
		t.Fatalf("%d passwords checked while throttled, want 1 (the queued one)", got)
	}
	// The user's usual address is not affected.
	if res, d := login(a, "alice", "alicepw", home); res != ResultOK || d != 0 {
		t.Fatalf("login from the known-good address: %v after %v", res, d)
	}
	// Continued guessing: the username's block never exceeds user_max_delay.
	for i := range 6 {
		clk.advance(5 * time.Second)
		res, d := login(a, "alice", "guess", addr(20+i))
		if res != ResultBadCredentials || d > 4*time.Second {
			t.Fatalf("guess %d: %v after %v (user_max_delay 4s)", i, res, d)
		}
	}
	// A real user from a new address right after a guess waits at most
	// user_max_delay.
	if res, d := login(a, "alice", "alicepw", addr(39)); res != ResultOK || d != 4*time.Second {
		t.Fatalf("right password from a new address during the attack: %v after %v, want ok after 4s", res, d)
	}
	clk.advance(5 * time.Second)
	if res, d := login(a, "alice", "alicepw", addr(40)); res != ResultOK || d != 0 {
		t.Fatalf("right password from a new address after the block: %v after %v", res, d)
	}
	if a.Throttle().UserFailures("alice") < 3 || a.Throttle().UserFailures("bob") != 0 {
		t.Fatalf("user failures alice %d bob %d", a.Throttle().UserFailures("alice"), a.Throttle().UserFailures("bob"))
	}
	// Past the window the username is forgotten.
	clk.advance(DefaultThrottleWindow + time.Second)
	if a.Throttle().UserFailures("alice") != 0 {
		t.Fatal("user failures not forgotten after the window")
	}

	// user_threshold < 0 disables the per-username throttle.
	b := f.new(t, Config{Throttle: ThrottleConfig{Threshold: 100, UserThreshold: -1}})
	for i := range 20 {
		if res, d := login(b, "alice", "guess", addr(100+i)); res != ResultBadCredentials || d != 0 {
			t.Fatalf("user throttle disabled, guess %d: %v %v", i, res, d)
		}
	}
	if res, _ := login(b, "alice", "alicepw", addr(150)); res != ResultOK {
		t.Fatal("user throttle disabled: right password refused")
	}
}

// TestThrottleTablesBounded: usernames and known-good pairs are capped by
// max_entries like sources.
func TestThrottleTablesBounded(t *testing.T) {
	f := newAuthFixture(t)
	a := f.new(t, Config{Throttle: ThrottleConfig{MaxEntries: 50, Threshold: 1000, UserThreshold: 1000}})
	ip := netip.MustParseAddr("127.0.0.30")
	for i := range 500 {
		login(a, fmt.Sprintf("user-%d", i), "x", ip)
		login(a, "alice", "alicepw", netip.AddrFrom4([4]byte{127, 1, byte(i >> 8), byte(i)}))
	}
	th := a.Throttle()
	th.mu.Lock()
	users, good, sources := len(th.users.m), len(th.good), len(th.addrs.m)
	th.mu.Unlock()
	if users > 50 || good > 50 || sources > 50 {
		t.Fatalf("tables exceed max_entries 50: users %d, known-good %d, sources %d", users, good, sources)
	}
	if th.Evictions() == 0 {
		t.Fatal("no evictions counted")
	}
}

// TestLoginWaitsWhileAttemptsFinish: a fleet sharing one user name logs in
// at once from many addresses, with the right password, faster than
// passwords can be hashed. Attempts beyond user_threshold wait for the ones
// in flight; as long as those keep finishing they keep waiting (longer than
// the in-flight wait without progress) and none is refused.
func TestLoginWaitsWhileAttemptsFinish(t *testing.T) {
	const fleet = 40
	f := newAuthFixture(t)
	a := f.new(t, Config{MaxConcurrentHashes: 1, Throttle: ThrottleConfig{UserThreshold: 3}})
	a.throttle.inflightWait = 200 * time.Millisecond
	a.verify = func(pf *PasswordFile, user string, password []byte) bool {
		time.Sleep(10 * time.Millisecond)
		return pf.Verify(user, password)
	}
	start := time.Now()
	var wg sync.WaitGroup
	var ok atomic.Int32
	for i := range fleet {
		wg.Go(func() {
			if res, _ := login(a, "alice", "alicepw", netip.AddrFrom4([4]byte{127, 0, 2, byte(i)})); res == ResultOK {
				ok.Add(1)
			}
		})
	}
	wg.Wait()
	if took := time.Since(start); took < 3*a.throttle.inflightWait {
		t.Logf("fleet logged in in %v: the test did not exercise long waits", took)
	}
	if ok.Load() != fleet {
		t.Fatalf("%d of %d correct logins accepted (refused: %d)", ok.Load(), fleet, a.Stats().Refused.Load())
	}
}
