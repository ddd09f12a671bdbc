// Package e2e runs Isobar against real third-party MQTT clients that live
// outside Go: the Mosquitto command line clients (Debian
// mosquitto-clients) and Python paho (Debian python3-paho-mqtt). Each test
// skips, saying why, when its peer is not installed, and fails instead in CI
// ($CI=true, see package testutil/peer); scripts/test installs them.
package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"go.uber.org/goleak"

	"github.com/isobar-mq/isobar/internal/node"
	"github.com/isobar-mq/isobar/internal/testutil"
	"github.com/isobar-mq/isobar/internal/testutil/peer"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// cmdTimeout bounds every external client run.
const cmdTimeout = 20 * time.Second

func needMosquittoClients(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"mosquitto_pub", "mosquitto_sub"} {
		peer.NeedBinary(t, tool, "mosquitto-clients")
	}
}

func startNode(t *testing.T) (*node.Node, string, string) {
	t.Helper()
	n := testutil.RunNode(t, "")
	addr := testutil.Addr(t, n, "")
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return n, host, port
}

// run runs a command to completion and returns its stdout; a failure
// (other than an allowed exit code) fails the test with stderr.
func run(t *testing.T, allowExit int, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != allowExit || allowExit == 0 {
			t.Fatalf("%s %s: %v\nstdout: %s\nstderr: %s", name, strings.Join(args, " "), err, out.String(), errb.String())
		}
	}
	return out.String()
}

// subProc is a running mosquitto_sub.
type subProc struct {
	cmd  *exec.Cmd
	out  bytes.Buffer
	errb bytes.Buffer
	done chan error
}

// startSub starts mosquitto_sub with client identifier id and waits until
// its subscription to filter exists in the broker.
func startSub(t *testing.T, n *node.Node, id, filter string, args ...string) *subProc {
	t.Helper()
	args = append([]string{"-i", id}, args...)
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	t.Cleanup(cancel)
	s := &subProc{cmd: exec.CommandContext(ctx, "mosquitto_sub", args...), done: make(chan error, 1)}
	s.cmd.Stdout, s.cmd.Stderr = &s.out, &s.errb
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { s.done <- s.cmd.Wait() }()
	t.Cleanup(func() {
		_ = s.cmd.Process.Kill()
		<-s.done
	})
	testutil.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		select {
		case err := <-s.done:
			s.done <- err
			return fmt.Errorf("mosquitto_sub exited early: %v: %s", err, s.errb.String())
		default:
		}
		for _, sv := range n.Server.Subscriptions() {
			if sv.ClientID == id && sv.Filter == filter {
				return nil
			}
		}
		return fmt.Errorf("mosquitto_sub %v has not subscribed yet", args)
	})
	return s
}

// wait waits for mosquitto_sub to exit by itself (-C) and returns its
// output.
func (s *subProc) wait(t *testing.T) string {
	t.Helper()
	select {
	case err := <-s.done:
		s.done <- err
		if err != nil {
			t.Fatalf("mosquitto_sub: %v\nstdout: %s\nstderr: %s", err, s.out.String(), s.errb.String())
		}
	case <-time.After(cmdTimeout):
		t.Fatalf("mosquitto_sub did not exit; stdout so far: %q", s.out.String())
	}
	return s.out.String()
}

// Round trips between mosquitto_pub and mosquitto_sub through Isobar, for
// 3.1.1 and 5.0 (and across versions), at QoS 0, 1 and 2: the subscriber
// gets the topic, payload and QoS published (section 4.3 of both
// specifications; delivered QoS = min(published, granted), [MQTT-3.8.4-6]
// in 3.1.1, [MQTT-3.8.4-8] in 5.0).
func TestMosquittoClientsRoundTrip(t *testing.T) {
	needMosquittoClients(t)
	n, host, port := startNode(t)
	for _, pv := range []string{"mqttv311", "mqttv5"} {
		for _, sv := range []string{"mqttv311", "mqttv5"} {
			for qos := 0; qos <= 2; qos++ {
				topic := fmt.Sprintf("cli/%s/%s/%d", pv, sv, qos)
				payload := fmt.Sprintf("hello %s to %s at %d", pv, sv, qos)
				sub := startSub(t, n, "sub-"+strings.ReplaceAll(topic, "/", "-"), topic, "-h", host, "-p", port, "-V", sv, "-q", fmt.Sprint(qos), "-t", topic,
					"-C", "1", "-W", "15", "-F", "%t|%q|%r|%p")
				run(t, 0, "mosquitto_pub", "-h", host, "-p", port, "-V", pv, "-q", fmt.Sprint(qos), "-t", topic, "-m", payload)
				want := fmt.Sprintf("%s|%d|0|%s\n", topic, qos, payload)
				if got := sub.wait(t); got != want {
					t.Errorf("publisher %s, subscriber %s, QoS %d: got %q, want %q", pv, sv, qos, got, want)
				}
			}
		}
	}
}

// Retained messages with the CLI clients: stored [MQTT-3.3.1-5] and sent to
// a later subscriber with the retain flag ([MQTT-3.3.1-8] in 3.1.1), at
// the QoS published (capped by the subscription); a null retained message
// deletes it.
func TestMosquittoClientsRetained(t *testing.T) {
	needMosquittoClients(t)
	_, host, port := startNode(t)
	for _, v := range []string{"mqttv311", "mqttv5"} {
		topic := "cli/retained/" + v
		run(t, 0, "mosquitto_pub", "-h", host, "-p", port, "-V", v, "-q", "1", "-r", "-t", topic, "-m", "kept "+v)
		got := run(t, 0, "mosquitto_sub", "-h", host, "-p", port, "-V", v, "-q", "2", "-t", topic, "-C", "1", "-W", "15", "-F", "%t|%q|%r|%p")
		if want := fmt.Sprintf("%s|1|1|kept %s\n", topic, v); got != want {
			t.Errorf("%s: got %q, want %q", v, got, want)
		}
		run(t, 0, "mosquitto_pub", "-h", host, "-p", port, "-V", v, "-q", "1", "-r", "-t", topic, "-n")
		// Nothing retained any more: the subscriber times out (exit code 27)
		// with no output.
		if got := run(t, 27, "mosquitto_sub", "-h", host, "-p", port, "-V", v, "-t", topic, "-C", "1", "-W", "1", "-F", "%t|%p"); got != "" {
			t.Errorf("%s: after deletion got %q", v, got)
		}
	}
}

// MQTT 5 user properties from mosquitto_pub (-D publish user-property)
// reach mosquitto_sub and a paho.golang subscriber, in order
// [MQTT-3.3.2-17] [MQTT-3.3.2-18].
func TestMosquittoClientsUserProperties(t *testing.T) {
	needMosquittoClients(t)
	n, host, port := startNode(t)
	addr := net.JoinHostPort(host, port)

	msgs := make(chan *paho.Publish, 4)
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c := paho.NewClient(paho.ClientConfig{Conn: conn, OnPublishReceived: []func(paho.PublishReceived) (bool, error){
		func(pr paho.PublishReceived) (bool, error) { msgs <- pr.Packet; return true, nil }}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Connect(ctx, &paho.Connect{ClientID: "go-props", CleanStart: true, KeepAlive: 30}); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = c.Disconnect(&paho.Disconnect{})
		<-c.Done()
	}()
	if _, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "cli/props", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}

	sub := startSub(t, n, "sub-props", "cli/props", "-h", host, "-p", port, "-V", "mqttv5", "-q", "1", "-t", "cli/props", "-C", "1", "-W", "15", "-F", "%t|%P|%p")
	run(t, 0, "mosquitto_pub", "-h", host, "-p", port, "-V", "mqttv5", "-q", "1", "-t", "cli/props", "-m", "with props",
		"-D", "publish", "user-property", "zone", "north",
		"-D", "publish", "user-property", "app", "isobar",
		"-D", "publish", "user-property", "zone", "south")
	got := sub.wait(t)
	for _, want := range []string{"cli/props|", "zone:north", "app:isobar", "zone:south", "|with props\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("mosquitto_sub printed %q, which lacks %q", got, want)
		}
	}
	if i, j, k := strings.Index(got, "zone:north"), strings.Index(got, "app:isobar"), strings.Index(got, "zone:south"); !(i < j && j < k) {
		t.Errorf("user properties out of order in %q", got)
	}
	select {
	case m := <-msgs:
		want := paho.UserProperties{{Key: "zone", Value: "north"}, {Key: "app", Value: "isobar"}, {Key: "zone", Value: "south"}}
		if m.Properties == nil || fmt.Sprint(m.Properties.User) != fmt.Sprint(want) || string(m.Payload) != "with props" {
			t.Errorf("paho.golang got %q with %+v, want user properties %v", m.Payload, m.Properties, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("paho.golang subscriber got nothing")
	}
}
