package sectest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/isobar-mq/isobar/internal/broker"
	"github.com/isobar-mq/isobar/internal/node"
	"github.com/isobar-mq/isobar/internal/testutil"
	"github.com/isobar-mq/isobar/internal/testutil/peer"
)

// timeout bounds every single wait in this package.
const timeout = 10 * time.Second

// startNode runs an in-process node (memory store, no HTTP listener, no
// $SYS) from a YAML configuration that must not set http or sys_interval.
func startNode(t *testing.T, yamlConfig string) *node.Node {
	t.Helper()
	return testutil.RunNode(t, yamlConfig+"\nhttp: {enabled: false}\nsys_interval: 0s\n")
}

// addr is the address of the node's listener called name.
func addr(t *testing.T, n *node.Node, name string) string {
	t.Helper()
	return testutil.Addr(t, n, name)
}

// port is the port of the node's listener called name, as a string.
func port(t *testing.T, n *node.Node, name string) string {
	t.Helper()
	a := addr(t, n, name)
	return a[strings.LastIndexByte(a, ':')+1:]
}

// need returns the path of a program (in $PATH or an sbin directory), or
// skips the test naming the Debian package that provides it (fails it in
// CI, see package peer).
func need(t *testing.T, program, debianPackage string) string {
	t.Helper()
	return peer.NeedBinary(t, program, debianPackage)
}

// writeFile writes a file in dir and returns its path.
func writeFile(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// replaceFile replaces a file atomically, as configuration tools do.
func replaceFile(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".new"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// run runs a program to completion (at most timeout) and returns its
// combined output and exit code (-1 if it did not exit by itself).
func run(t *testing.T, program string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, program, args...)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case ctx.Err() != nil:
		return string(out), -1
	case errors.As(err, &ee):
		return string(out), ee.ExitCode()
	}
	t.Fatalf("%s: %v", program, err)
	return "", 0
}

// mustRun is run that fails the test unless the program exits 0.
func mustRun(t *testing.T, program string, args ...string) string {
	t.Helper()
	out, code := run(t, program, args...)
	if code != 0 {
		t.Fatalf("%s %s: exit %d\n%s", filepath.Base(program), strings.Join(args, " "), code, out)
	}
	return out
}

// proc is a background program whose stdout lines are collected.
type proc struct {
	name  string
	cmd   *exec.Cmd
	lines chan string
	mu    sync.Mutex
	out   bytes.Buffer // stdout and stderr, for failure messages
	done  chan struct{}
	err   error // from Wait, valid after done
}

type lockedWriter struct{ p *proc }

func (w lockedWriter) Write(b []byte) (int, error) {
	w.p.mu.Lock()
	defer w.p.mu.Unlock()
	return w.p.out.Write(b)
}

// start starts a program; it is killed (if still running) when the test
// ends.
func start(t *testing.T, env []string, program string, args ...string) *proc {
	t.Helper()
	p := &proc{name: filepath.Base(program), lines: make(chan string, 1000), done: make(chan struct{})}
	p.cmd = exec.Command(program, args...)
	if env != nil {
		p.cmd.Env = append(os.Environ(), env...)
	}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Stderr = lockedWriter{p}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", program, err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			_, _ = lockedWriter{p}.Write([]byte(line + "\n"))
			select {
			case p.lines <- line:
			default:
			}
		}
		p.err = p.cmd.Wait()
		close(p.lines)
		close(p.done)
	}()
	t.Cleanup(p.stop)
	return p
}

// stop kills the program (only this one, by its process) and waits for it.
func (p *proc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}

// output returns everything the program printed so far.
func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// waitLine waits for a stdout line for which match returns true.
func (p *proc) waitLine(t *testing.T, match func(string) bool) string {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case l, ok := <-p.lines:
			if !ok {
				t.Fatalf("%s exited (%v) without the expected line; output:\n%s", p.name, p.err, p.output())
			}
			if match(l) {
				return l
			}
		case <-deadline:
			t.Fatalf("%s: no expected line within %v; output:\n%s", p.name, timeout, p.output())
		}
	}
}

// wait waits for the program to exit and returns its exit code.
func (p *proc) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		t.Fatalf("%s did not exit within %v; output:\n%s", p.name, timeout, p.output())
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return ee.ExitCode()
	}
	if p.err != nil {
		t.Fatalf("%s: %v", p.name, p.err)
	}
	return 0
}

// clientView returns the broker's view of a connected client.
func clientView(n *node.Node, id string) (broker.ClientInfoView, bool) {
	for _, c := range n.Server.Clients() {
		if c.ClientID == id {
			return c, true
		}
	}
	return broker.ClientInfoView{}, false
}

// waitSubscribed waits until client id is connected with at least subs
// subscriptions (so a message published next reaches it).
func waitSubscribed(t *testing.T, n *node.Node, id string, subs int) {
	t.Helper()
	testutil.CheckFor(t, timeout, 10*time.Millisecond, func() error {
		c, ok := clientView(n, id)
		if !ok {
			return fmt.Errorf("client %q not connected", id)
		}
		if c.Subscriptions < subs {
			return fmt.Errorf("client %q has %d subscriptions, want %d", id, c.Subscriptions, subs)
		}
		return nil
	})
}

// waitGone waits until client id is no longer connected.
func waitGone(t *testing.T, n *node.Node, id string) {
	t.Helper()
	testutil.CheckFor(t, timeout, 10*time.Millisecond, func() error {
		if _, ok := clientView(n, id); ok {
			return fmt.Errorf("client %q still connected", id)
		}
		return nil
	})
}
