package peer

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
)

// outcomeTB records how a helper ended the test: "skip", "fatal" or ""
// (returned normally), with the message, and what it logged. Skip and
// Fatal end the goroutine like the real ones.
type outcomeTB struct {
	testing.TB
	mu   sync.Mutex
	kind string
	msg  string
	logs []string
}

func (o *outcomeTB) Helper() {}

func (o *outcomeTB) end(kind, msg string) {
	o.mu.Lock()
	o.kind, o.msg = kind, msg
	o.mu.Unlock()
	runtime.Goexit()
}

func (o *outcomeTB) Skip(args ...any)                  { o.end("skip", fmt.Sprint(args...)) }
func (o *outcomeTB) Skipf(format string, args ...any)  { o.end("skip", fmt.Sprintf(format, args...)) }
func (o *outcomeTB) SkipNow()                          { o.end("skip", "") }
func (o *outcomeTB) Fatal(args ...any)                 { o.end("fatal", fmt.Sprint(args...)) }
func (o *outcomeTB) Fatalf(format string, args ...any) { o.end("fatal", fmt.Sprintf(format, args...)) }
func (o *outcomeTB) FailNow()                          { o.end("fatal", "") }

func (o *outcomeTB) Log(args ...any) {
	o.mu.Lock()
	o.logs = append(o.logs, fmt.Sprint(args...))
	o.mu.Unlock()
}

func (o *outcomeTB) Logf(format string, args ...any) { o.Log(fmt.Sprintf(format, args...)) }

// runOutcome runs fn with an outcomeTB in its own goroutine and returns it
// once fn has returned or ended the test.
func runOutcome(t *testing.T, fn func(tb testing.TB)) *outcomeTB {
	t.Helper()
	o := &outcomeTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(o)
	}()
	<-done
	o.mu.Lock()
	defer o.mu.Unlock()
	return o
}

func TestInCI(t *testing.T) {
	for _, tc := range []struct {
		value string
		want  bool
	}{
		{"true", true}, {"1", true}, {"TRUE", true},
		{"", false}, {"false", false}, {"0", false}, {"yes-please", false},
	} {
		t.Setenv(CIEnv, tc.value)
		if got := InCI(); got != tc.want {
			t.Errorf("CI=%q: InCI() = %v, want %v", tc.value, got, tc.want)
		}
	}
	t.Setenv(CIEnv, "")
	_ = os.Unsetenv(CIEnv) // restored by the Setenv cleanup
	if InCI() {
		t.Error("InCI() with CI unset")
	}
}

// TestMissingSkipsLocallyFailsInCI: the same missing peer skips the test on
// a developer's machine and fails it in CI, with the reason in both.
func TestMissingSkipsLocallyFailsInCI(t *testing.T) {
	for _, tc := range []struct{ ci, want string }{{"", "skip"}, {"false", "skip"}, {"true", "fatal"}, {"1", "fatal"}} {
		t.Setenv(CIEnv, tc.ci)
		o := runOutcome(t, func(tb testing.TB) {
			Missing(tb, "mosquitto_sub not installed (%s)", "mosquitto-clients")
			tb.Log("went on after Missing")
		})
		if o.kind != tc.want || !strings.Contains(o.msg, "mosquitto_sub not installed (mosquitto-clients)") {
			t.Errorf("CI=%q: ended with %s %q, want %s with the reason", tc.ci, o.kind, o.msg, tc.want)
		}
		if len(o.logs) != 0 {
			t.Errorf("CI=%q: Missing returned", tc.ci)
		}
		if tc.want == "fatal" && !strings.Contains(o.msg, "CI="+tc.ci) {
			t.Errorf("CI=%q: the failure does not say it is because of CI: %q", tc.ci, o.msg)
		}
	}
}

func TestNeed(t *testing.T) {
	for _, ci := range []string{"", "true"} {
		t.Setenv(CIEnv, ci)
		if o := runOutcome(t, func(tb testing.TB) { Need(tb, true, "never shown") }); o.kind != "" {
			t.Errorf("CI=%q: present peer ended the test: %s %q", ci, o.kind, o.msg)
		}
	}
	t.Setenv(CIEnv, "")
	if o := runOutcome(t, func(tb testing.TB) { Need(tb, false, "no %s", "pty") }); o.kind != "skip" || o.msg != "no pty" {
		t.Errorf("local: %s %q, want skip", o.kind, o.msg)
	}
	t.Setenv(CIEnv, "true")
	if o := runOutcome(t, func(tb testing.TB) { Need(tb, false, "no %s", "pty") }); o.kind != "fatal" || !strings.HasPrefix(o.msg, "no pty\n") {
		t.Errorf("CI: %s %q, want fatal", o.kind, o.msg)
	}
}

// TestOptional: a test that can run reduced logs and goes on locally, and
// fails in CI.
func TestOptional(t *testing.T) {
	t.Setenv(CIEnv, "true")
	var got bool
	o := runOutcome(t, func(tb testing.TB) { got = Optional(tb, true, "never shown") })
	if o.kind != "" || !got || len(o.logs) != 0 {
		t.Errorf("present peer: %v, %s %q, logs %q", got, o.kind, o.msg, o.logs)
	}
	o = runOutcome(t, func(tb testing.TB) { Optional(tb, false, "mosquitto absent: Isobar alone") })
	if o.kind != "fatal" || !strings.Contains(o.msg, "mosquitto absent: Isobar alone") {
		t.Errorf("CI: %s %q, want fatal", o.kind, o.msg)
	}
	t.Setenv(CIEnv, "")
	got = true
	o = runOutcome(t, func(tb testing.TB) {
		got = Optional(tb, false, "mosquitto absent: %s", "Isobar alone")
		tb.Log("went on")
	})
	if o.kind != "" || got || len(o.logs) != 2 || o.logs[0] != "mosquitto absent: Isobar alone" {
		t.Errorf("local: %v, %s %q, logs %q; want false, logged, test going on", got, o.kind, o.msg, o.logs)
	}
}

func TestNeedBinary(t *testing.T) {
	dir := t.TempDir()
	prog := filepath.Join(dir, "isobar-test-peer")
	if err := os.WriteFile(prog, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "not-executable"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir)

	t.Setenv(CIEnv, "true")
	var p string
	if o := runOutcome(t, func(tb testing.TB) { p = NeedBinary(tb, "isobar-test-peer", "none") }); o.kind != "" || p != prog {
		t.Errorf("installed program: %q, %s %q", p, o.kind, o.msg)
	}
	if o := runOutcome(t, func(tb testing.TB) { p = NeedBinary(tb, prog, "none") }); o.kind != "" || p != prog {
		t.Errorf("absolute path: %q, %s %q", p, o.kind, o.msg)
	}
	for _, name := range []string{"isobar-no-such-program", "not-executable", filepath.Join(dir, "absent")} {
		o := runOutcome(t, func(tb testing.TB) { NeedBinary(tb, name, "isobar-pkg") })
		if o.kind != "fatal" || !strings.Contains(o.msg, "Debian package isobar-pkg") {
			t.Errorf("CI, %s: %s %q, want fatal naming the package", name, o.kind, o.msg)
		}
	}
	t.Setenv(CIEnv, "")
	if o := runOutcome(t, func(tb testing.TB) { NeedBinary(tb, "isobar-no-such-program", "isobar-pkg") }); o.kind != "skip" || !strings.Contains(o.msg, "isobar-no-such-program not installed") {
		t.Errorf("local: %s %q, want skip", o.kind, o.msg)
	}
}

// TestLookBinarySbin: daemons in an sbin directory are found even when it
// is not in $PATH (Debian's mosquitto and haproxy for a non-root user).
func TestLookBinarySbin(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	if _, err := LookBinary("sh"); err == nil {
		t.Error("sh found outside $PATH and the sbin directories")
	}
	for _, dir := range sbinDirs {
		entries, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, e := range entries {
			info, err := e.Info()
			if err != nil || !info.Mode().IsRegular() || info.Mode()&0o111 == 0 {
				continue
			}
			p, err := LookBinary(e.Name())
			if err != nil || filepath.Base(p) != e.Name() {
				t.Errorf("%s in %s: %q, %v", e.Name(), dir, p, err)
			}
			return
		}
	}
	t.Log("no executable in any sbin directory on this machine")
}
