package auth

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// cheapArgon2 returns an argon2id hash with tiny parameters so tests that
// need many hashes stay fast.
func cheapArgon2(t testing.TB, pw string) string {
	t.Helper()
	h := &passwordHash{scheme: SchemeArgon2id, memory: 64, time: 1, threads: 1, salt: randomBytes(16), key: make([]byte, 32)}
	h.key = h.derive([]byte(pw))
	return h.encode()
}

func writeFile(t testing.TB, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadPasswordFile(t *testing.T) {
	dir := t.TempDir()
	a, b := cheapArgon2(t, "alpha"), cheapArgon2(t, "beta")
	p := writeFile(t, dir, "pw", "# users\n\nalice:"+a+"\r\n  bob : "+b+"  \n   # indented comment\n")
	pf, err := LoadPasswordFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if got := pf.Users(); !slices.Equal(got, []string{"alice", "bob"}) {
		t.Fatalf("Users = %v", got)
	}
	checks := []struct {
		user, pw string
		want     bool
	}{
		{"alice", "alpha", true},
		{"alice", "beta", false},
		{"bob", "beta", true},
		{"bob", "", false},
		{"carol", "alpha", false},
		{"", "alpha", false},
		{"Alice", "alpha", false},
	}
	for _, c := range checks {
		if got := pf.Verify(c.user, []byte(c.pw)); got != c.want {
			t.Errorf("Verify(%q,%q) = %v, want %v", c.user, c.pw, got, c.want)
		}
	}
}

func TestLoadPasswordFileErrors(t *testing.T) {
	dir := t.TempDir()
	good := cheapArgon2(t, "x")
	cases := []struct {
		name, content string
		line          int
		want          string
	}{
		{"nocolon", "alice:" + good + "\nbob\n", 2, "missing ':'"},
		{"emptyuser", "# c\n:" + good + "\n", 2, "empty username"},
		{"emptyhash", "alice:\n", 1, "empty password hash"},
		{"plain", "\nalice:secretpassword\n", 2, "plain-text"},
		{"badhash", "alice:$7$101$AAAA$BBBB\n", 1, "invalid password hash"},
		{"dup", "alice:" + good + "\nbob:" + good + "\nalice:" + good + "\n", 3, "duplicate user \"alice\" (first defined at line 1)"},
		{"colonhash", "alice:" + good + ":extra\n", 1, "invalid password hash"},
		{"ctrl", "al\x01ice:" + good + "\n", 1, "control characters"},
		{"utf8", "al\xffice:" + good + "\n", 1, "UTF-8"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := writeFile(t, dir, c.name, c.content)
			_, err := LoadPasswordFile(p)
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("error %v is not a *ParseError", err)
			}
			if pe.File != p || pe.Line != c.line || !strings.Contains(pe.Msg, c.want) {
				t.Fatalf("got %v; want %s:%d containing %q", err, p, c.line, c.want)
			}
			if !strings.HasPrefix(err.Error(), p+":") {
				t.Fatalf("error %q does not name the file", err)
			}
			if strings.Contains(err.Error(), "secretpassword") {
				t.Fatalf("error leaks the plain-text password: %v", err)
			}
		})
	}
	if _, err := LoadPasswordFile(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
}

func TestPasswordFileSetDeleteSave(t *testing.T) {
	dir := t.TempDir()
	p := writeFile(t, dir, "pw", "# header comment\nalice:"+cheapArgon2(t, "old")+"\n\nbob:"+cheapArgon2(t, "b")+"\n")
	pf, err := LoadPasswordFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := pf.Set("alice", "new"); err != nil {
		t.Fatal(err)
	}
	if pf.Verify("alice", []byte("old")) || !pf.Verify("alice", []byte("new")) {
		t.Fatal("Set did not replace the password")
	}
	if err := pf.Set("carol", "c"); err != nil {
		t.Fatal(err)
	}
	if !pf.Delete("bob") || pf.Delete("bob") {
		t.Fatal("Delete result wrong")
	}
	for _, bad := range []string{"", "a:b", "x\ny", " lead", "#hash"} {
		if err := pf.Set(bad, "pw"); err == nil {
			t.Errorf("Set(%q) accepted", bad)
		}
	}
	if err := pf.SetHash("dan", "plain"); err == nil {
		t.Error("SetHash accepted a non-hash")
	}
	if err := pf.Save(p); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("mode = %v, want 0600", st.Mode().Perm())
	}
	data, _ := os.ReadFile(p)
	if !strings.HasPrefix(string(data), "# header comment\nalice:$argon2id$") || strings.Contains(string(data), "bob") {
		t.Errorf("saved content:\n%s", data)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("temporary files left behind: %v", ents)
	}
	pf2, err := LoadPasswordFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(pf2.Users(), []string{"alice", "carol"}) || !pf2.Verify("carol", []byte("c")) || !pf2.Verify("alice", []byte("new")) {
		t.Fatalf("reloaded users %v", pf2.Users())
	}
	// Saving through a symlink replaces the target and keeps the link;
	// the owner of an existing file is kept.
	target := filepath.Join(dir, "real")
	if err := os.WriteFile(target, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if os.Getuid() == 0 {
		if err := os.Chown(target, 4242, 4343); err != nil {
			t.Fatal(err)
		}
	}
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	if err := pf.Save(link); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("symlink replaced: %v", err)
	}
	if !loadPF(t, link).Verify("carol", []byte("c")) {
		t.Fatal("content not written through the symlink")
	}
	if os.Getuid() == 0 {
		fi, _ := os.Stat(target)
		if sys := fi.Sys().(*syscall.Stat_t); sys.Uid != 4242 || sys.Gid != 4343 {
			t.Errorf("owner not preserved: %d:%d", sys.Uid, sys.Gid)
		}
	}
	// Save into a missing directory fails and leaves nothing behind.
	if err := pf.Save(filepath.Join(dir, "nodir", "pw")); err == nil {
		t.Error("Save into missing directory succeeded")
	}
}

// TestUnknownUserCost checks that verifying an unknown user runs a hash of
// the same cost as a known user's instead of returning early.
func TestUnknownUserCost(t *testing.T) {
	dir := t.TempDir()
	// Use a deliberately expensive PBKDF2 count so the difference between
	// "hashing" and "not hashing" dwarfs scheduling noise.
	h := &passwordHash{scheme: SchemePBKDF2SHA512, iterations: 20000, salt: randomBytes(12), key: make([]byte, 64)}
	h.key = h.derive([]byte("pw"))
	p := writeFile(t, dir, "pw", "alice:"+h.encode()+"\n")
	pf, err := LoadPasswordFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if pf.dummy.scheme != SchemePBKDF2SHA512 || pf.dummy.iterations != 20000 {
		t.Fatalf("dummy hash does not mirror the file's cost: %+v", pf.dummy)
	}
	measure := func(user string) time.Duration {
		best := time.Hour
		for range 5 {
			start := time.Now()
			pf.Verify(user, []byte("wrong"))
			best = min(best, time.Since(start))
		}
		return best
	}
	known, unknown := measure("alice"), measure("mallory")
	t.Logf("known %v unknown %v", known, unknown)
	if unknown < known/3 {
		t.Fatalf("unknown user verified in %v, known in %v: unknown users are cheaper", unknown, known)
	}
}

func TestParsePasswordFileEmpty(t *testing.T) {
	pf, err := ParsePasswordFile(strings.NewReader("# nothing\n"), "<test>")
	if err != nil {
		t.Fatal(err)
	}
	if pf.Len() != 0 || pf.Verify("x", []byte("y")) {
		t.Fatal("empty file should verify nothing")
	}
	if pf.dummy.scheme != SchemeArgon2id {
		t.Fatal("empty file should use an argon2id dummy")
	}
}
