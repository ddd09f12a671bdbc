// Package peer decides what a test does when something it needs is missing:
// a peer program (mosquitto, mosquitto_pub, HAProxy, Prometheus, Chromium,
// Node with MQTT.js...), a Python module, the ../shared data, or a
// capability of the machine (a pseudo-terminal, root). On a developer's
// machine the test is skipped and says what to install; in CI ($CI=true) it
// fails, because there every peer must be present and a test that passes by
// skipping would hide a broken setup.
//
// It depends on the standard library only, so that any package's internal
// tests can use it (package testutil imports the node and, through it,
// almost every package of the module).
package peer

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
)

// CIEnv is the environment variable that marks a continuous-integration
// run. When it holds a true value ("true", as GitHub Actions, GitLab CI and
// most other CI systems set it, or "1"), a test whose peer is missing fails
// instead of skipping: in CI every peer is installed (scripts/test does it),
// so a missing one is a broken setup, and a test that passes by skipping
// would hide it. .ci/run sets it.
const CIEnv = "CI"

// InCI reports whether $CI marks a continuous-integration run.
func InCI() bool {
	ci, err := strconv.ParseBool(os.Getenv(CIEnv))
	return err == nil && ci
}

// Missing reports that something the test needs is not available: a peer
// program (mosquitto, HAProxy, Prometheus, Chromium, Node...), a Python
// module, the ../shared data, or a capability of the machine (a
// pseudo-terminal, root). On a developer's machine the test is skipped
// with the message; in CI (see InCI) it fails with it. Like t.Skip and
// t.Fatal, Missing does not return.
//
// Skips that are not about a missing peer (testing.Short, a long run that
// needs an environment variable to opt in, a helper process) must keep
// calling t.Skip directly: they are wanted in CI too.
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if InCI() {
		t.Fatalf("%s\n(%s=%s: in CI a missing peer fails the test instead of skipping it)", msg, CIEnv, os.Getenv(CIEnv))
		return
	}
	t.Skip(msg)
}

// Need calls Missing with the message unless ok.
func Need(t testing.TB, ok bool, format string, args ...any) {
	t.Helper()
	if !ok {
		Missing(t, format, args...)
	}
}

// Optional is for a test that still does useful work without a peer (for
// example a comparison that runs Isobar alone when Mosquitto is absent).
// It returns ok. When ok is false it fails the test in CI, and on a
// developer's machine it logs the message and lets the test go on.
func Optional(t testing.TB, ok bool, format string, args ...any) bool {
	t.Helper()
	if ok {
		return true
	}
	msg := fmt.Sprintf(format, args...)
	if InCI() {
		t.Fatalf("%s\n(%s=%s: in CI every peer is required)", msg, CIEnv, os.Getenv(CIEnv))
		return false
	}
	t.Log(msg)
	return false
}

// sbinDirs are searched after $PATH: Debian installs daemons (mosquitto,
// haproxy) in sbin directories, which are not in an ordinary user's PATH.
var sbinDirs = []string{"/usr/local/sbin", "/usr/sbin", "/sbin"}

// LookBinary returns the path of program: found in $PATH, else an
// executable file of that name in /usr/local/sbin, /usr/sbin or /sbin.
// A program containing a slash is only checked to be executable.
func LookBinary(program string) (string, error) {
	if p, err := exec.LookPath(program); err == nil {
		return p, nil
	} else if filepath.Base(program) != program {
		return "", err
	}
	for _, dir := range sbinDirs {
		p := filepath.Join(dir, program)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found in $PATH or %v", program, sbinDirs)
}

// NeedBinary returns the path of program (see LookBinary) or, when it is
// not installed, calls Missing naming the Debian package that provides it.
func NeedBinary(t testing.TB, program, debianPackage string) string {
	t.Helper()
	p, err := LookBinary(program)
	if err != nil {
		Missing(t, "%s not installed (Debian package %s; scripts/test installs it): %v", program, debianPackage, err)
		return ""
	}
	return p
}
