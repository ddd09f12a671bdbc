// Package clustertest is a process-level test harness for Isobar clusters:
// it builds cmd/isobar once, starts n real broker processes on their own
// loopback addresses (127.0.0.(10+i)), kills, stops, pauses and restarts
// them, splits the network between them with nftables, and checks what MQTT
// publishers and persistent subscribers saw (checker.go) while a seeded
// random fault schedule runs (faults.go).
//
// Splits need root and a network namespace of their own, so that the
// host's firewall is never touched: a test binary's TestMain calls Main,
// which, when run as root outside the test namespace, re-executes the test
// binary under `unshare -n` with ISOBAR_TEST_NETNS=1 and brings lo up there.
// Every nft command asserts ISOBAR_TEST_NETNS=1 first. Without root the
// tests run normally and those that need the namespace call NeedNetns,
// which skips on a developer's machine and fails in CI.
//
// Cluster tests in one test binary must not run in parallel with each
// other: a split applies to the whole namespace.
//
// Knobs:
//
//	-seed N / ISOBAR_SEED=N         replay a checker and fault schedule (printed at start and on failure)
//	-chaos.long / ISOBAR_CHAOS=long  the long fault schedule (give go test -timeout 30m)
//	ISOBAR_CLUSTERTEST_BIN=PATH      use this isobar binary instead of building ./cmd/isobar
//	ISOBAR_CLUSTERTEST_LOGS=1        print the brokers' logs after every test, not only failed ones
//
// Run: go test -count=1 -v ./internal/clustertest/ (as root it re-executes
// itself in a network namespace).
package clustertest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"testing"

	"github.com/isobar-mq/isobar/internal/testutil/peer"
)

// NetnsEnv marks a process running inside the test network namespace.
const NetnsEnv = "ISOBAR_TEST_NETNS"

// InNetns reports whether this process runs inside the test namespace
// (re-executed by Main).
func InNetns() bool { return os.Getenv(NetnsEnv) == "1" }

// Main is a TestMain body: it runs the tests inside a network namespace of
// their own when it can (root, unshare installed), otherwise directly, and
// exits with the tests' code. Built binaries (BuildIsobar) are removed at
// the end.
func Main(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if !InNetns() && os.Geteuid() == 0 {
		code, err := reexecInNetns()
		if err == nil {
			return code
		}
		fmt.Fprintf(os.Stderr, "clustertest: cannot enter a network namespace (%v); running without one: network splits are unavailable\n", err)
	}
	if InNetns() {
		if out, err := exec.Command("ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "clustertest: ip link set lo up: %v: %s\n", err, out)
			return 1
		}
	}
	code := m.Run()
	removeBuilds()
	return code
}

// reexecInNetns runs this test binary again, with the same arguments, under
// `unshare -n` and returns its exit code. An error means the namespace could
// not be entered at all (the caller then runs the tests itself).
func reexecInNetns() (int, error) {
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		return 0, err
	}
	if _, err := peer.LookBinary("ip"); err != nil {
		return 0, err
	}
	// Probe first, so that a refused unshare (a container without
	// CAP_SYS_ADMIN) is told apart from failing tests.
	if out, err := exec.Command(unshare, "-n", "true").CombinedOutput(); err != nil {
		return 0, fmt.Errorf("unshare -n: %v: %s", err, out)
	}
	self, err := os.Executable()
	if err != nil {
		return 0, err
	}
	cmd := exec.Command(unshare, append([]string{"-n", "--", self}, os.Args[1:]...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), NetnsEnv+"=1")
	// Build the broker out here: inside the namespace there is no
	// network, so a module missing from the cache could not be fetched.
	if os.Getenv(BinEnv) == "" && !listing() {
		if bin, err := buildIsobar(); err == nil {
			cmd.Env = append(cmd.Env, BinEnv+"="+bin)
			defer removeBuilds()
		} else {
			fmt.Fprintf(os.Stderr, "clustertest: %v (the tests will try again)\n", err)
		}
	}
	// unshare execs the test binary in place, so this kills the tests
	// (and, through their own Pdeathsig, the brokers) if we die.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGQUIT)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case s := <-sigs:
				_ = cmd.Process.Signal(s)
			case <-done:
				return
			}
		}
	}()
	err = cmd.Wait()
	close(done)
	signal.Stop(sigs)
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ee.ExitCode() < 0 {
			return 1, nil // killed by a signal
		}
		return ee.ExitCode(), nil
	}
	if err != nil {
		return 1, nil
	}
	return 0, nil
}

// listing reports whether the test binary was asked only to list tests.
func listing() bool {
	for _, a := range os.Args[1:] {
		if strings.HasPrefix(a, "-test.list") || strings.HasPrefix(a, "--test.list") {
			return true
		}
	}
	return false
}

// NeedNetns skips the test (fails it in CI) unless it runs inside the test
// network namespace, where nft may be used.
func NeedNetns(t testing.TB) {
	t.Helper()
	peer.Need(t, InNetns(), "test needs its own network namespace: run the tests as root (TestMain re-executes them under `unshare -n`; util-linux and iproute2 installed)")
	peer.NeedBinary(t, "nft", "nftables")
}

// assertNetns guards every nft call: the host's firewall is never touched.
func assertNetns() error {
	if !InNetns() {
		return fmt.Errorf("clustertest: refusing to run nft outside the test network namespace (%s is not 1)", NetnsEnv)
	}
	return nil
}
