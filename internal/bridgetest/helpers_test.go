// Package bridgetest runs bridges end to end: in-process Isobar nodes
// linked to each other and to a real mosquitto.
package bridgetest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/isobar-mq/isobar/internal/mqtt/client"
	"github.com/isobar-mq/isobar/internal/node"
	"github.com/isobar-mq/isobar/internal/testutil"
	"github.com/isobar-mq/isobar/internal/testutil/peer"
)

// TestMain checks for leaked goroutines. A memberlist probe running when
// a cluster node shuts down ends only at its probe timeout: ignored.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("github.com/hashicorp/memberlist.(*Memberlist).probeNode"))
}

// isobar runs a node named name with one MQTT listener and the given
// extra configuration (a bridges: section).
func isobar(t *testing.T, name, extra string) (*node.Node, string) {
	t.Helper()
	n := testutil.RunNode(t, fmt.Sprintf("node_name: %s\nsys_interval: 0s\nlisteners:\n  - {name: mqtt, protocol: mqtt, address: \"127.0.0.1:0\"}\n%s", name, extra))
	return n, "mqtt://" + testutil.Addr(t, n, "mqtt")
}

// freePort returns a port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// mosquitto is a real mosquitto on a free port.
type mosquitto struct {
	t    *testing.T
	bin  string
	conf string
	addr string
	mu   sync.Mutex
	log  bytes.Buffer
	cmd  *exec.Cmd
	done chan struct{}
}

func (m *mosquitto) Write(p []byte) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.log.Write(p)
}

func (m *mosquitto) url() string { return "mqtt://" + m.addr }

func startMosquitto(t *testing.T) *mosquitto {
	t.Helper()
	bin := peer.NeedBinary(t, "mosquitto", "mosquitto")
	dir := t.TempDir()
	for range 5 {
		port := freePort(t)
		m := &mosquitto{t: t, bin: bin, addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), conf: filepath.Join(dir, "mosquitto.conf")}
		// "user root" keeps a root mosquitto from switching to user
		// mosquitto, who could not write the test's directory.
		cfg := fmt.Sprintf("user root\nlistener %d 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location %s/\nlog_dest stderr\nlog_type error\nlog_type warning\n", port, dir)
		if err := os.WriteFile(m.conf, []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := m.start(); err == nil {
			t.Cleanup(m.stop)
			return m
		} else if !strings.Contains(err.Error(), "in use") {
			t.Fatalf("mosquitto: %v", err)
		}
	}
	t.Fatal("mosquitto: no free port")
	return nil
}

func (m *mosquitto) start() error {
	m.cmd = exec.Command(m.bin, "-c", m.conf)
	m.cmd.Stdout, m.cmd.Stderr = m, m
	if err := m.cmd.Start(); err != nil {
		return err
	}
	m.done = make(chan struct{})
	cmd, done := m.cmd, m.done
	go func() { _ = cmd.Wait(); close(done) }()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-done:
			m.mu.Lock()
			defer m.mu.Unlock()
			return fmt.Errorf("mosquitto exited: %s", m.log.String())
		default:
		}
		if c, err := net.DialTimeout("tcp", m.addr, 200*time.Millisecond); err == nil {
			_ = c.Close()
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = m.cmd.Process.Kill()
	<-done
	return fmt.Errorf("mosquitto did not listen on %s", m.addr)
}

// stop ends mosquitto gracefully (it saves its sessions).
func (m *mosquitto) stop() {
	if m.cmd == nil {
		return
	}
	_ = m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.done:
	case <-time.After(5 * time.Second):
		_ = m.cmd.Process.Kill()
		<-m.done
	}
	m.cmd = nil
}

// sub is a test subscriber collecting what it receives.
type sub struct {
	c   *client.Client
	mu  sync.Mutex
	got map[string][]string // topic -> payloads, in order
	n   int
}

func subscribe(t *testing.T, url, id string, filters ...string) *sub {
	t.Helper()
	s := &sub{got: map[string][]string{}}
	var subs []client.Subscription
	for _, f := range filters {
		subs = append(subs, client.Subscription{Filter: f, QoS: 1})
	}
	connected := make(chan struct{}, 1)
	c, err := client.New(client.Config{URL: url, ClientID: id, CleanStart: false, SessionExpiry: 300,
		Subscriptions: subs, MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
		OnConnect: func(bool) {
			select {
			case connected <- struct{}{}:
			default:
			}
		},
		Handler: func(m *client.Message) {
			s.mu.Lock()
			s.got[m.Topic] = append(s.got[m.Topic], string(m.Payload))
			s.n++
			s.mu.Unlock()
			m.Ack()
		}})
	if err != nil {
		t.Fatal(err)
	}
	c.Start()
	t.Cleanup(func() { _ = c.Close() })
	select {
	case <-connected:
	case <-time.After(5 * time.Second):
		t.Fatalf("subscriber %s: no connection to %s", id, url)
	}
	s.c = c
	// The SUBACK is not waited for: a round trip makes sure it came.
	pingPublish(t, c)
	return s
}

// pingPublish publishes a QoS 1 message on a topic nobody bridges: once
// acknowledged, the SUBSCRIBEs sent before it were processed.
func pingPublish(t *testing.T, c *client.Client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Publish(ctx, &client.Message{Topic: "zz-ping", QoS: 1}); err != nil {
		t.Fatal(err)
	}
}

func (s *sub) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n
}

func (s *sub) topic(tp string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.got[tp]...)
}

// waitCount waits until s received n messages (failing after timeout).
func (s *sub) waitCount(t *testing.T, n int, timeout time.Duration) {
	t.Helper()
	testutil.CheckFor(t, timeout, 20*time.Millisecond, func() error {
		if c := s.count(); c < n {
			return fmt.Errorf("received %d of %d", c, n)
		}
		return nil
	})
}

// publisher connects a client for publishing.
func publisher(t *testing.T, url, id string) *client.Client {
	t.Helper()
	c, err := client.New(client.Config{URL: url, ClientID: id, CleanStart: true, MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	c.Start()
	t.Cleanup(func() { _ = c.Close() })
	testutil.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if !c.Connected() {
			return fmt.Errorf("not connected to %s", url)
		}
		return nil
	})
	return c
}

func publish(t *testing.T, c *client.Client, topic, payload string, qos byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Publish(ctx, &client.Message{Topic: topic, Payload: []byte(payload), QoS: qos}); err != nil {
		t.Fatalf("publish %s: %v", topic, err)
	}
}

// waitConnected waits until the node's bridge is connected.
func waitConnected(t *testing.T, n *node.Node, name string) {
	t.Helper()
	testutil.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		for _, s := range n.Bridges.Status() {
			if s.Name == name {
				if s.Connected {
					return nil
				}
				return fmt.Errorf("bridge %s not connected: %s", name, s.LastError)
			}
		}
		return fmt.Errorf("no bridge %s", name)
	})
}

// waitDown waits until every bridge of n is disconnected.
func waitDown(t *testing.T, n *node.Node) {
	t.Helper()
	testutil.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		for _, s := range n.Bridges.Status() {
			if s.Connected {
				return fmt.Errorf("bridge %s still connected", s.Name)
			}
		}
		return nil
	})
}
