package auth

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestRunPasswdWarnsWeakScheme: writing a hash in a format other than
// argon2id warns on stderr (and still works); argon2id, deleting and
// converting nothing do not warn.
func TestRunPasswdWarnsWeakScheme(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "pw")
	for _, tc := range []struct {
		args []string
		warn string // "" = no warning
	}{
		{[]string{"-c", "-b", f, "alice", "a"}, ""},
		{[]string{"-H", "sha512", "-b", f, "bob", "b"}, "sha512"},
		{[]string{"-H", "sha512-pbkdf2", "-b", f, "carol", "c"}, "sha512-pbkdf2"},
		{[]string{"-Hsha512", "-b", f, "bob", "b2"}, "sha512"},
		{[]string{"-D", f, "bob"}, ""},
		{[]string{"-H", "sha512", "-U", f}, ""}, // nothing to convert
	} {
		r := runPasswdCmd(t, "", tc.args...)
		if r.code != 0 {
			t.Fatalf("%q: %+v", tc.args, r)
		}
		warned := strings.Contains(r.stderr, "Warning")
		switch {
		case tc.warn == "" && warned:
			t.Errorf("%q warned: %q", tc.args, r.stderr)
		case tc.warn != "" && (!warned || !strings.Contains(r.stderr, tc.warn) || !strings.Contains(r.stderr, "argon2id")):
			t.Errorf("%q: stderr %q, want a warning naming %s and recommending argon2id", tc.args, r.stderr, tc.warn)
		}
		if r.stdout != "" {
			t.Errorf("%q wrote to stdout: %q", tc.args, r.stdout)
		}
	}
	plain := writeFile(t, dir, "plain", "dave:plainpw\n")
	if r := runPasswdCmd(t, "", "-H", "sha512", "-U", plain); r.code != 0 || !strings.Contains(r.stderr, "Warning") {
		t.Errorf("-U converting to sha512: %+v", r)
	}
	if data, _ := os.ReadFile(f); !strings.Contains(string(data), "carol:$7$") || !strings.Contains(string(data), "alice:$argon2id$") {
		t.Fatalf("file content:\n%s", data)
	}
}

// TestRunPasswdKeepsMode: rewriting an existing password file keeps its
// permissions (e.g. 0640 for a broker reading it through its group) and,
// when allowed, its owner; a new file is created 0600.
func TestRunPasswdKeepsMode(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "pw")
	if r := runPasswdCmd(t, "", "-c", "-b", f, "alice", "a"); r.code != 0 {
		t.Fatal(r)
	}
	if st, _ := os.Stat(f); st.Mode().Perm() != 0o600 {
		t.Fatalf("new file mode %v, want 0600", st.Mode().Perm())
	}
	if err := os.Chmod(f, 0o640); err != nil {
		t.Fatal(err)
	}
	root := os.Getuid() == 0
	if root {
		if err := os.Chown(f, 4242, 4343); err != nil {
			t.Fatal(err)
		}
	}
	for _, args := range [][]string{
		{"-b", f, "bob", "b"},
		{"-b", f, "alice", "changed"},
		{"-D", f, "bob"},
		{"-U", f},
		{"-c", "-b", f, "carol", "c"},
	} {
		if r := runPasswdCmd(t, "", args...); r.code != 0 {
			t.Fatalf("%q: %+v", args, r)
		}
		st, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o640 {
			t.Errorf("%q: mode %v, want the existing 0640", args, st.Mode().Perm())
		}
		if sys := st.Sys().(*syscall.Stat_t); root && (sys.Uid != 4242 || sys.Gid != 4343) {
			t.Errorf("%q: owner %d:%d, want 4242:4343", args, sys.Uid, sys.Gid)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("temporary files left behind: %v", ents)
	}
	// A world-readable file is kept as it is, with a warning.
	if err := os.Chmod(f, 0o644); err != nil {
		t.Fatal(err)
	}
	r := runPasswdCmd(t, "", "-b", f, "dan", "d")
	if st, _ := os.Stat(f); r.code != 0 || st.Mode().Perm() != 0o644 || !strings.Contains(r.stderr, "readable by all users") {
		t.Errorf("world-readable file: mode %v, %+v", st.Mode().Perm(), r)
	}
}
