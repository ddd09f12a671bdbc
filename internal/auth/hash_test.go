package auth

import (
	"crypto/hmac"
	"crypto/sha512"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/isobar-mq/isobar/internal/testutil/peer"
)

// refPBKDF2SHA512 is an independent PBKDF2-HMAC-SHA512 (RFC 8018) used to
// build $7$ vectors without going through the code under test.
func refPBKDF2SHA512(password, salt []byte, iter, keyLen int) []byte {
	var out []byte
	for block := uint32(1); len(out) < keyLen; block++ {
		mac := hmac.New(sha512.New, password)
		mac.Write(salt)
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], block)
		mac.Write(b[:])
		u := mac.Sum(nil)
		t := append([]byte(nil), u...)
		for i := 1; i < iter; i++ {
			mac = hmac.New(sha512.New, password)
			mac.Write(u)
			u = mac.Sum(nil)
			for j := range t {
				t[j] ^= u[j]
			}
		}
		out = append(out, t...)
	}
	return out[:keyLen]
}

func TestMosquitto6Vector(t *testing.T) {
	// Mosquitto's $6$: base64(SHA-512(password || salt)) with a 12-byte salt.
	salt := []byte("0123456789ab")
	sum := sha512.Sum512(append([]byte("hunter2"), salt...))
	enc := "$6$" + base64.StdEncoding.EncodeToString(salt) + "$" + base64.StdEncoding.EncodeToString(sum[:])
	for _, tc := range []struct {
		pw   string
		want bool
	}{{"hunter2", true}, {"hunter3", false}, {"", false}, {"hunter2 ", false}} {
		ok, err := VerifyHash(enc, []byte(tc.pw))
		if err != nil || ok != tc.want {
			t.Errorf("VerifyHash($6$, %q) = %v, %v; want %v", tc.pw, ok, err, tc.want)
		}
	}
}

func TestMosquitto7Vector(t *testing.T) {
	salt := []byte("saltsaltsalt")
	for _, iter := range []int{1, 101, 1000} {
		key := refPBKDF2SHA512([]byte("p@ss"), salt, iter, 64)
		enc := fmt.Sprintf("$7$%d$%s$%s", iter, base64.StdEncoding.EncodeToString(salt), base64.StdEncoding.EncodeToString(key))
		if ok, err := VerifyHash(enc, []byte("p@ss")); !ok || err != nil {
			t.Errorf("iter %d: correct password rejected: %v %v", iter, ok, err)
		}
		if ok, _ := VerifyHash(enc, []byte("p@sS")); ok {
			t.Errorf("iter %d: wrong password accepted", iter)
		}
	}
}

func TestHashPasswordRoundTrip(t *testing.T) {
	for _, s := range []HashScheme{SchemeArgon2id, SchemePBKDF2SHA512, SchemeSHA512} {
		enc, err := HashPassword(s, []byte("correct horse"))
		if err != nil {
			t.Fatalf("%s: %v", s, err)
		}
		enc2, _ := HashPassword(s, []byte("correct horse"))
		if enc == enc2 {
			t.Errorf("%s: two hashes of the same password are identical (salt not random)", s)
		}
		if ok, err := VerifyHash(enc, []byte("correct horse")); !ok || err != nil {
			t.Errorf("%s: round trip failed: %v %v (%s)", s, ok, err, enc)
		}
		if ok, _ := VerifyHash(enc, []byte("correct horsE")); ok {
			t.Errorf("%s: wrong password accepted", s)
		}
	}
	enc, _ := HashPassword("", []byte("x")) // empty scheme = argon2id
	want := fmt.Sprintf("$argon2id$v=19$m=%d,t=%d,p=%d$", Argon2Memory, Argon2Time, Argon2Threads)
	if !strings.HasPrefix(enc, want) {
		t.Errorf("argon2id hash %q does not start with %q", enc, want)
	}
	if _, err := HashPassword("md5", []byte("x")); err == nil {
		t.Error("unknown scheme accepted")
	}
}

func TestArgon2ParametersFromString(t *testing.T) {
	// A hash made with non-default parameters must verify with those.
	h := &passwordHash{scheme: SchemeArgon2id, memory: 64, time: 1, threads: 1, salt: []byte("somesaltsomesalt"), key: make([]byte, 24)}
	h.key = h.derive([]byte("pw"))
	enc := h.encode()
	if !strings.Contains(enc, "m=64,t=1,p=1") {
		t.Fatalf("encode: %s", enc)
	}
	if ok, err := VerifyHash(enc, []byte("pw")); !ok || err != nil {
		t.Fatalf("custom-parameter hash rejected: %v %v", ok, err)
	}
	// Changing a parameter in the string changes the derived key.
	if ok, _ := VerifyHash(strings.Replace(enc, "t=1", "t=2", 1), []byte("pw")); ok {
		t.Fatal("verification ignored the t parameter")
	}
	// Padded base64 is accepted too.
	padded := fmt.Sprintf("$argon2id$v=19$m=64,t=1,p=1$%s$%s", base64.StdEncoding.EncodeToString(h.salt), base64.StdEncoding.EncodeToString(h.key))
	if ok, err := VerifyHash(padded, []byte("pw")); !ok || err != nil {
		t.Fatalf("padded base64 rejected: %v %v", ok, err)
	}
}

func TestArgon2DefaultCost(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("timing is meaningless in -short or -race runs")
	}
	best := time.Hour
	for range 3 {
		start := time.Now()
		if _, err := HashPassword(SchemeArgon2id, []byte("pw")); err != nil {
			t.Fatal(err)
		}
		best = min(best, time.Since(start))
	}
	t.Logf("argon2id default parameters: %v per hash", best)
	// The target is < ~100 ms; allow slack for a loaded shared machine.
	if best > 400*time.Millisecond {
		t.Errorf("argon2id default hash takes %v", best)
	}
}

func TestParseHashErrors(t *testing.T) {
	b := base64.StdEncoding.EncodeToString
	salt12, key64 := b(make([]byte, 12)), b(make([]byte, 64))
	raw := base64.RawStdEncoding.EncodeToString
	s16, k32 := raw(make([]byte, 16)), raw(make([]byte, 32))
	cases := []struct{ in, want string }{
		{"plaintext", "not a recognised"},
		{"$argon2i$v=19$m=64,t=1,p=1$" + s16 + "$" + k32, "argon2id variant"},
		{"$argon2id$v=16$m=64,t=1,p=1$" + s16 + "$" + k32, "version"},
		{"$argon2id$v=19$m=64,t=1$" + s16 + "$" + k32, "must specify"},
		{"$argon2id$v=19$m=64,t=0,p=1$" + s16 + "$" + k32, "time cost"},
		{"$argon2id$v=19$m=64,t=1,p=0$" + s16 + "$" + k32, "parallelism"},
		{"$argon2id$v=19$m=4,t=1,p=1$" + s16 + "$" + k32, "memory"},
		{"$argon2id$v=19$m=99999999,t=1,p=1$" + s16 + "$" + k32, "memory"},
		{"$argon2id$v=19$m=64,t=1,p=1,x=2$" + s16 + "$" + k32, "unknown argon2id parameter"},
		{"$argon2id$v=19$m=64,t=1,p=1$!!$" + k32, "salt"},
		{"$argon2id$v=19$m=64,t=1,p=1$" + s16, "malformed"},
		{"$argon2id$v=19$m=64,t=1,p=1$" + raw([]byte("short")) + "$" + k32, "salt length"},
		{"$7$0$" + salt12 + "$" + key64, "iteration"},
		{"$7$abc$" + salt12 + "$" + key64, "iteration"},
		{"$7$101$" + salt12 + "$" + b(make([]byte, 32)), "key is 32 bytes"},
		{"$7$101$" + salt12, "malformed"},
		{"$6$" + salt12 + "$" + b(make([]byte, 63)), "key is 63 bytes"},
		{"$6$" + salt12 + "$%%%", "not valid base64"},
		{"$6$" + salt12, "malformed"},
	}
	for _, c := range cases {
		_, err := parseHash(c.in)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("parseHash(%q) error = %v, want containing %q", c.in, err, c.want)
		}
	}
}

// mosquittoPasswd returns the path of the real mosquitto_passwd, or skips
// the test (fails it in CI) when it is not installed.
func mosquittoPasswd(t *testing.T) string {
	t.Helper()
	return peer.NeedBinary(t, "mosquitto_passwd", "mosquitto")
}

func TestMosquittoPasswdInterop(t *testing.T) {
	bin := mosquittoPasswd(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "pw")
	run := func(args ...string) {
		t.Helper()
		out, err := exec.Command(bin, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("mosquitto_passwd %v: %v\n%s", args, err, out)
		}
	}
	run("-c", "-b", file, "alice", "s3cret!")
	run("-b", file, "bob", "pä55:wörd with spaces")
	run("-H", "sha512", "-b", file, "carol", "legacy")
	data, _ := os.ReadFile(file)
	if !strings.Contains(string(data), "alice:$7$") || !strings.Contains(string(data), "carol:$6$") {
		t.Fatalf("unexpected mosquitto_passwd output:\n%s", data)
	}
	pf, err := LoadPasswordFile(file)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		user, pw string
		want     bool
	}{
		{"alice", "s3cret!", true},
		{"alice", "s3cret", false},
		{"bob", "pä55:wörd with spaces", true},
		{"bob", "pä55", false},
		{"carol", "legacy", true},
		{"carol", "Legacy", false},
		{"dave", "s3cret!", false},
	} {
		if got := pf.Verify(c.user, []byte(c.pw)); got != c.want {
			t.Errorf("Verify(%s, %q) = %v, want %v", c.user, c.pw, got, c.want)
		}
	}
	// Files we write with Mosquitto's schemes stay usable by mosquitto_passwd
	// (it re-reads and rewrites the file when adding a user).
	if err := pf.SetWithScheme("erin", []byte("fromisobar"), SchemePBKDF2SHA512); err != nil {
		t.Fatal(err)
	}
	if err := pf.Save(file); err != nil {
		t.Fatal(err)
	}
	run("-b", file, "frank", "added-later")
	pf2, err := LoadPasswordFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if !pf2.Verify("erin", []byte("fromisobar")) || !pf2.Verify("frank", []byte("added-later")) || !pf2.Verify("alice", []byte("s3cret!")) {
		t.Fatal("file round trip through mosquitto_passwd lost a credential")
	}
}
