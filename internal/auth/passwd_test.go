package auth

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/isobar-mq/isobar/internal/testutil/peer"
	"golang.org/x/sys/unix"
)

type passwdRun struct {
	code           int
	stdout, stderr string
}

func runPasswdCmd(t *testing.T, stdin string, args ...string) passwdRun {
	t.Helper()
	var out, errb bytes.Buffer
	code := RunPasswd(args, strings.NewReader(stdin), &out, &errb)
	return passwdRun{code, out.String(), errb.String()}
}

func loadPF(t *testing.T, p string) *PasswordFile {
	t.Helper()
	pf, err := LoadPasswordFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return pf
}

func TestRunPasswdBatchAndDelete(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "pw")
	secret := "Tr0ub4dor&3"
	r := runPasswdCmd(t, "", "-c", "-b", f, "alice", secret)
	if r.code != 0 {
		t.Fatalf("create: %+v", r)
	}
	if r.code = RunPasswd([]string{"-b", f, "bob", "bobpw"}, nil, &bytes.Buffer{}, &bytes.Buffer{}); r.code != 0 {
		t.Fatal("add bob failed")
	}
	pf := loadPF(t, f)
	if !pf.Verify("alice", []byte(secret)) || !pf.Verify("bob", []byte("bobpw")) {
		t.Fatal("batch passwords not stored")
	}
	if data, _ := os.ReadFile(f); !strings.Contains(string(data), "alice:$argon2id$") {
		t.Fatalf("default scheme is not argon2id:\n%s", data)
	}
	if st, _ := os.Stat(f); st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", st.Mode().Perm())
	}
	// Update keeps other users.
	if r := runPasswdCmd(t, "", "-b", f, "alice", "changed"); r.code != 0 {
		t.Fatalf("update: %+v", r)
	}
	pf = loadPF(t, f)
	if pf.Verify("alice", []byte(secret)) || !pf.Verify("alice", []byte("changed")) || !pf.Verify("bob", []byte("bobpw")) {
		t.Fatal("update wrong")
	}
	// Delete.
	if r := runPasswdCmd(t, "", "-D", f, "bob"); r.code != 0 {
		t.Fatalf("delete: %+v", r)
	}
	if got := loadPF(t, f).Users(); !slices.Equal(got, []string{"alice"}) {
		t.Fatalf("after delete: %v", got)
	}
	r = runPasswdCmd(t, "", "-D", f, "bob")
	if r.code != 1 || !strings.Contains(r.stderr, "not found") {
		t.Fatalf("delete missing user: %+v", r)
	}
	// -c overwrites.
	if r := runPasswdCmd(t, "", "-c", "-b", f, "carol", "c"); r.code != 0 {
		t.Fatal(r)
	}
	if got := loadPF(t, f).Users(); !slices.Equal(got, []string{"carol"}) {
		t.Fatalf("-c did not overwrite: %v", got)
	}
	// Mosquitto-compatible scheme on request.
	if r := runPasswdCmd(t, "", "-H", "sha512-pbkdf2", "-b", f, "dave", "d"); r.code != 0 {
		t.Fatal(r)
	}
	if data, _ := os.ReadFile(f); !strings.Contains(string(data), "dave:$7$101$") {
		t.Fatalf("-H sha512-pbkdf2 not honoured:\n%s", data)
	}
}

func TestRunPasswdStdin(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "pw")
	r := runPasswdCmd(t, "from-stdin\r\nignored second line\n", "-c", f, "alice")
	if r.code != 0 {
		t.Fatalf("%+v", r)
	}
	if !loadPF(t, f).Verify("alice", []byte("from-stdin")) {
		t.Fatal("password from stdin not stored")
	}
	if strings.Contains(r.stdout+r.stderr, "from-stdin") {
		t.Fatal("password echoed")
	}
	// No trailing newline.
	if r := runPasswdCmd(t, "eof-terminated", f, "bob"); r.code != 0 || !loadPF(t, f).Verify("bob", []byte("eof-terminated")) {
		t.Fatalf("%+v", r)
	}
	// Empty password refused.
	r = runPasswdCmd(t, "\n", f, "carol")
	if r.code != 1 || !strings.Contains(r.stderr, "empty password") {
		t.Fatalf("%+v", r)
	}
	// Adding to a missing file without -c fails.
	r = runPasswdCmd(t, "pw\n", filepath.Join(dir, "missing"), "x")
	if r.code != 1 || !strings.Contains(r.stderr, "-c") {
		t.Fatalf("%+v", r)
	}
}

func TestRunPasswdUsage(t *testing.T) {
	f := filepath.Join(t.TempDir(), "pw")
	for _, args := range [][]string{
		{},
		{f},
		{"-b", f, "u"},
		{f, "u", "extra"},
		{"-c", "-D", f, "u"},
		{"-b", "-D", f, "u", "p"},
		{"-U"},
		{"-U", "-c", f},
		{"-x", f, "u"},
		{"-H", "md5", "-b", f, "u", "p"},
		{"-H"},
		{"-b", f, "user:colon", "p"},
		{"-h"},
	} {
		r := runPasswdCmd(t, "", args...)
		if r.code != 1 || !strings.Contains(r.stderr, "Usage: isobar passwd") {
			t.Errorf("args %q: code %d stderr %q", args, r.code, r.stderr)
		}
	}
	if _, err := os.Stat(f); err == nil {
		t.Fatal("a usage error created the file")
	}
	// Combined flags and "--" work.
	if r := runPasswdCmd(t, "", "-cb", "--", f, "-dash-user", "p"); r.code != 0 {
		t.Fatalf("%+v", r)
	}
	if !loadPF(t, f).Verify("-dash-user", []byte("p")) {
		t.Fatal("user after -- not stored")
	}
}

func TestRunPasswdUpgrade(t *testing.T) {
	dir := t.TempDir()
	hashed := cheapArgon2(t, "already")
	f := writeFile(t, dir, "pw", "# plain file\nalice:plainpw\nbob:"+hashed+"\n\ncarol:another one\n")
	r := runPasswdCmd(t, "", "-U", f)
	if r.code != 0 {
		t.Fatalf("%+v", r)
	}
	data, _ := os.ReadFile(f)
	if strings.Contains(string(data), "plainpw") || !strings.Contains(string(data), "bob:"+hashed+"\n") || !strings.HasPrefix(string(data), "# plain file\n") {
		t.Fatalf("upgraded file:\n%s", data)
	}
	pf := loadPF(t, f)
	if !pf.Verify("alice", []byte("plainpw")) || !pf.Verify("bob", []byte("already")) || !pf.Verify("carol", []byte("another one")) {
		t.Fatal("upgrade lost a password")
	}
	// Running it again changes nothing.
	before, _ := os.ReadFile(f)
	if r := runPasswdCmd(t, "", "-U", f); r.code != 0 {
		t.Fatal(r)
	}
	after, _ := os.ReadFile(f)
	if !bytes.Equal(before, after) {
		t.Fatal("second -U rehashed hashes")
	}
	// Malformed lines are reported with their line number.
	bad := writeFile(t, dir, "bad", "alice:x\nnocolon\n")
	r = runPasswdCmd(t, "", "-U", bad)
	if r.code != 1 || !strings.Contains(r.stderr, bad+":2:") {
		t.Fatalf("%+v", r)
	}
}

// TestRunPasswdOutputInterop checks mosquitto_passwd's own files can be
// edited by isobar passwd.
func TestRunPasswdOnMosquittoFile(t *testing.T) {
	bin := mosquittoPasswd(t)
	f := filepath.Join(t.TempDir(), "pw")
	if out, err := exec.Command(bin, "-c", "-b", f, "mosq", "mpw").CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	if r := runPasswdCmd(t, "", "-b", f, "iso", "ipw"); r.code != 0 {
		t.Fatal(r)
	}
	pf := loadPF(t, f)
	if !pf.Verify("mosq", []byte("mpw")) || !pf.Verify("iso", []byte("ipw")) {
		t.Fatal("mixed file does not verify")
	}
}

// openPTY returns the master and slave ends of a new pseudo-terminal. A
// machine without working pseudo-terminals skips the test (fails it in CI).
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		peer.Missing(t, "no pty support: %v", err)
	}
	// Use SyscallConn rather than Fd so the master stays non-blocking and
	// read deadlines keep working.
	rc, err := m.SyscallConn()
	if err != nil {
		m.Close()
		peer.Missing(t, "pty: %v", err)
	}
	var n int
	var ioErr error
	if err := rc.Control(func(fd uintptr) {
		if ioErr = unix.IoctlSetPointerInt(int(fd), unix.TIOCSPTLCK, 0); ioErr == nil {
			n, ioErr = unix.IoctlGetInt(int(fd), unix.TIOCGPTN)
		}
	}); err != nil || ioErr != nil {
		m.Close()
		peer.Missing(t, "unlockpt/ptsname: %v %v", err, ioErr)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		m.Close()
		peer.Missing(t, "open slave: %v", err)
	}
	t.Cleanup(func() { s.Close(); m.Close() })
	return m, s
}

// syncBuffer is a bytes.Buffer safe for one writer and concurrent readers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitEchoOff waits until the terminal has echo disabled and out contains
// want.
func waitEchoOff(t *testing.T, tty *os.File, out *syncBuffer, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		tio, err := unix.IoctlGetTermios(int(tty.Fd()), unix.TCGETS)
		if err != nil {
			t.Fatal(err)
		}
		if tio.Lflag&unix.ECHO == 0 && strings.Contains(out.String(), want) {
			return
		}
		time.Sleep(2 * time.Millisecond)
	}
	t.Fatalf("terminal echo never disabled after prompt %q (stdout %q)", want, out.String())
}

func TestRunPasswdTerminal(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "pw")
	for _, tc := range []struct {
		name, first, second string
		code                int
	}{
		{"match", "s3cret", "s3cret", 0},
		{"mismatch", "s3cret", "other", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			master, slave := openPTY(t)
			var out syncBuffer
			var errb bytes.Buffer
			done := make(chan int, 1)
			go func() { done <- RunPasswd([]string{"-c", f, "alice"}, slave, &out, &errb) }()
			waitEchoOff(t, slave, &out, "Password: ")
			if _, err := master.WriteString(tc.first + "\n"); err != nil {
				t.Fatal(err)
			}
			waitEchoOff(t, slave, &out, "Reenter password: ")
			if _, err := master.WriteString(tc.second + "\n"); err != nil {
				t.Fatal(err)
			}
			var code int
			select {
			case code = <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("RunPasswd did not return")
			}
			if code != tc.code {
				t.Fatalf("code %d, stderr %q", code, errb.String())
			}
			if tc.code == 1 && !strings.Contains(errb.String(), "do not match") {
				t.Fatalf("stderr %q", errb.String())
			}
			if tio, _ := unix.IoctlGetTermios(int(slave.Fd()), unix.TCGETS); tio.Lflag&unix.ECHO == 0 {
				t.Fatal("terminal echo not restored")
			}
			// Whatever the terminal echoed back must not contain the password.
			if err := master.SetReadDeadline(time.Now().Add(100 * time.Millisecond)); err == nil {
				buf := make([]byte, 256)
				n, _ := master.Read(buf)
				if bytes.Contains(buf[:n], []byte(tc.first)) {
					t.Fatalf("password echoed to the terminal: %q", buf[:n])
				}
			}
			if tc.code == 0 && !loadPF(t, f).Verify("alice", []byte("s3cret")) {
				t.Fatal("password not stored")
			}
		})
	}
}
