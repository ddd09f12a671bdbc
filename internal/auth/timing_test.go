package auth

import (
	"strings"
	"testing"
	"time"
)

func hashWith(t testing.TB, h *passwordHash, pw string) string {
	t.Helper()
	h.key = h.derive([]byte(pw))
	return h.encode()
}

func argon2Hash(t testing.TB, memory, passes uint32, pw string) string {
	return hashWith(t, &passwordHash{scheme: SchemeArgon2id, memory: memory, time: passes, threads: 1, salt: randomBytes(16), key: make([]byte, 32)}, pw)
}

func pbkdf2Hash(t testing.TB, iterations int, pw string) string {
	return hashWith(t, &passwordHash{scheme: SchemePBKDF2SHA512, iterations: iterations, salt: randomBytes(12), key: make([]byte, 64)}, pw)
}

func sha512Hash(t testing.TB, pw string) string {
	return hashWith(t, &passwordHash{scheme: SchemeSHA512, salt: randomBytes(12), key: make([]byte, 64)}, pw)
}

// TestUnknownUserStrongestCost: the review measured 46 ms for a known
// argon2id user, 34 ms for an unknown one and 0.2 ms for a $6$ user: the
// dummy check for unknown users used the most common hash in the file. It
// must use the strongest (slowest) one, so that no known user is slower to
// refuse than an unknown one.
func TestUnknownUserStrongestCost(t *testing.T) {
	// A migrated Mosquitto file: mostly $6$ and $7$, one argon2id user.
	var b strings.Builder
	for _, u := range []string{"m1", "m2", "m3", "m4"} {
		b.WriteString(u + ":" + sha512Hash(t, "pw") + "\n")
	}
	for _, u := range []string{"p1", "p2"} {
		b.WriteString(u + ":" + pbkdf2Hash(t, MosquittoPBKDF2Iterations, "pw") + "\n")
	}
	b.WriteString("strong:" + argon2Hash(t, 4096, 2, "pw") + "\n")
	pf, err := ParsePasswordFile(strings.NewReader(b.String()), "<test>")
	if err != nil {
		t.Fatal(err)
	}
	if d := pf.dummy; d.scheme != SchemeArgon2id || d.memory != 4096 || d.time != 2 {
		t.Errorf("dummy is %s m=%d t=%d, want the argon2id m=4096 t=2 of the strongest user", d.scheme, d.memory, d.time)
	}
	// Best of several interleaved runs, after a warm-up (the first
	// argon2id runs grow the heap), so that load from elsewhere on the
	// machine hits both sides alike.
	users := []string{"strong", "nobody", "m1"}
	best := make([]time.Duration, len(users))
	for round := range 10 {
		for i, u := range users {
			start := time.Now()
			pf.Verify(u, []byte("wrong"))
			if d := time.Since(start); round == 1 || (round > 1 && d < best[i]) {
				best[i] = d
			}
		}
	}
	strong, unknown, weak := best[0], best[1], best[2]
	t.Logf("strongest known user %v, unknown user %v, $6$ user %v", strong, unknown, weak)
	if unknown < strong/2 || unknown > strong*2 {
		t.Fatalf("unknown user verified in %v, strongest known user in %v: not within a factor of 2", unknown, strong)
	}
	if n := pf.WeakerHashes(); n != 6 {
		t.Errorf("WeakerHashes = %d, want 6", n)
	}
}

// TestDummyCostSelection: the strongest hash wins across schemes and
// parameters, however few users have it.
func TestDummyCostSelection(t *testing.T) {
	for _, tc := range []struct {
		name  string
		lines []string
		check func(*passwordHash) bool
	}{
		{"argon2id parameters", []string{argon2Hash(t, 1024, 1, "x"), argon2Hash(t, 1024, 1, "x"), argon2Hash(t, 2048, 2, "x"), argon2Hash(t, 8192, 1, "x")},
			func(h *passwordHash) bool { return h.scheme == SchemeArgon2id && h.memory == 8192 && h.time == 1 }},
		{"pbkdf2 beats a tiny argon2id", []string{argon2Hash(t, 64, 1, "x"), argon2Hash(t, 64, 1, "x"), pbkdf2Hash(t, 20000, "x")},
			func(h *passwordHash) bool { return h.scheme == SchemePBKDF2SHA512 && h.iterations == 20000 }},
		{"pbkdf2 beats sha512", []string{sha512Hash(t, "x"), sha512Hash(t, "x"), pbkdf2Hash(t, 101, "x")},
			func(h *passwordHash) bool { return h.scheme == SchemePBKDF2SHA512 }},
		{"only sha512", []string{sha512Hash(t, "x")},
			func(h *passwordHash) bool { return h.scheme == SchemeSHA512 }},
	} {
		var b strings.Builder
		for i, l := range tc.lines {
			b.WriteString(string(rune('a'+i)) + ":" + l + "\n")
		}
		pf, err := ParsePasswordFile(strings.NewReader(b.String()), "<test>")
		if err != nil {
			t.Fatal(err)
		}
		if !tc.check(pf.dummy) {
			t.Errorf("%s: dummy %s m=%d t=%d i=%d", tc.name, pf.dummy.scheme, pf.dummy.memory, pf.dummy.time, pf.dummy.iterations)
		}
	}
}

// TestAuthenticatorWarnsWeakerHashes: loading a file that mixes hash costs
// says that users with cheap hashes can be told apart.
func TestAuthenticatorWarnsWeakerHashes(t *testing.T) {
	f := newAuthFixture(t)
	f.pwFile = writeFile(t, f.dir, "mixed", "old:"+sha512Hash(t, "x")+"\nnew:"+argon2Hash(t, 1024, 1, "y")+"\n")
	f.new(t, Config{})
	if !strings.Contains(f.logs.String(), "re-hash them") || !strings.Contains(f.logs.String(), "users=1") {
		t.Fatalf("no warning about the weaker hash:\n%s", f.logs)
	}
	g := newAuthFixture(t)
	g.new(t, Config{})
	if strings.Contains(g.logs.String(), "re-hash them") {
		t.Fatalf("warning for a uniform file:\n%s", g.logs)
	}
}
