package stomptest

import (
	"context"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/isobar-mq/isobar/internal/testutil/peer"
)

// python is Debian's interpreter, the one python3-stomp is installed for
// (a python3 earlier in $PATH, such as a pyenv shim, may lack the module).
const python = "/usr/bin/python3"

func needPythonStomp(t *testing.T) {
	t.Helper()
	out, err := exec.Command(python, "-c", "import stomp").CombinedOutput()
	peer.Need(t, err == nil, "python3-stomp not installed (Debian package python3-stomp): %v %s", err, out)
}

func needRubyStomp(t *testing.T) string {
	t.Helper()
	ruby := peer.NeedBinary(t, "ruby", "ruby")
	out, err := exec.Command(ruby, "-e", `require "stomp"`).CombinedOutput()
	peer.Need(t, err == nil, "ruby-stomp not installed (Debian package ruby-stomp): %v %s", err, out)
	return ruby
}

// runScript runs a client script case against tg and fails the test with
// its output unless it exits 0 within timeout.
func runScript(t *testing.T, tg *target, timeout time.Duration, prog string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	args = append(args[:len(args)-1:len(args)-1], "--target", tg.name, "--addr", tg.stomp, args[len(args)-1])
	cmd := exec.CommandContext(ctx, prog, args...)
	cmd.WaitDelay = time.Second
	out, err := cmd.CombinedOutput()
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Fatalf("%s %s: no result within %v\n%s", prog, strings.Join(args, " "), timeout, out)
	}
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", prog, strings.Join(args, " "), err, out)
	}
	t.Logf("%s", out)
}

// pythonCases are the case_* functions of testdata/cases.py.
var pythonCases = []string{
	"connect_versions", "login_refused", "heartbeat_client", "receipts",
	"topic_fanout", "topic_wildcards", "headers_roundtrip", "body_nul", "escape12",
	"queue_one_consumer", "queue_stored", "ack_client", "ack_individual", "ack_v11_v10", "nack",
	"unacked_to_other", "selectors", "expires", "priority",
	"transactions", "temp_queue", "reply_named_queue", "acl", "acl_mcollective",
}

// TestPython runs every python3-stomp case against one broker.
func TestPython(t *testing.T) {
	needPythonStomp(t)
	tg := newTarget(t, "")
	for _, c := range pythonCases {
		t.Run(c, func(t *testing.T) {
			t.Parallel()
			runScript(t, tg, 25*time.Second, python, "testdata/cases.py", c)
		})
	}
}

// rubyCases are the cases of testdata/cases.rb.
var rubyCases = []string{"connect", "login_refused", "topic", "queue_client_ack", "selector", "heartbeat", "transaction"}

// TestRuby runs the ruby-stomp cases (the client library MCollective uses).
func TestRuby(t *testing.T) {
	ruby := needRubyStomp(t)
	// Heart-beats at 1 s, so that the heartbeat case sees some.
	tg := newTarget(t, "stomp:\n  heart_beat_send: 1s\n  heart_beat_receive: 1s\n")
	for _, c := range rubyCases {
		t.Run(c, func(t *testing.T) {
			t.Parallel()
			runScript(t, tg, 25*time.Second, ruby, "testdata/cases.rb", c)
		})
	}
}
