package stomptest

import (
	"bytes"
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/isobar-mq/isobar/internal/testutil/peer"
)

// TestMQTTInterop checks the mapping between MQTT topics and STOMP
// /topic destinations with the mosquitto clients. Isobar only: the private
// ActiveMQ has no MQTT transport (the mapping is Isobar's own).
func TestMQTTInterop(t *testing.T) {
	if targetName() != "isobar" {
		t.Skip("MQTT<->STOMP is an Isobar feature; the activemq target has no MQTT listener")
	}
	pub := peer.NeedBinary(t, "mosquitto_pub", "mosquitto-clients")
	subBin := peer.NeedBinary(t, "mosquitto_sub", "mosquitto-clients")
	tg := newTarget(t, "")
	host, port, _ := strings.Cut(tg.mqtt, ":")
	mqttArgs := func(args ...string) []string {
		return append([]string{"-h", host, "-p", port, "-u", "admin", "-P", "adminpw"}, args...)
	}
	run := func(t *testing.T, bin string, args ...string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if out, err := exec.CommandContext(ctx, bin, mqttArgs(args...)...).CombinedOutput(); err != nil {
			t.Fatalf("%s %v: %v\n%s", bin, args, err, out)
		}
	}
	stompSub := func(t *testing.T, dest string) *rawStomp {
		s := dialStomp(t, tg.stomp)
		s.connect("accept-version:1.2\n")
		s.mustWrite("SUBSCRIBE\nid:s\ndestination:" + dest + "\nreceipt:sub\n\n\x00")
		s.expect("RECEIPT")
		return s
	}

	t.Run("MQTT to STOMP", func(t *testing.T) {
		s := stompSub(t, "/topic/a.b.c")
		run(t, pub, "-V", "mqttv311", "-q", "1", "-t", "a/b/c", "-m", "from-mqtt")
		m := s.expect("MESSAGE")
		if d, _ := m.header("destination"); d != "/topic/a.b.c" || string(m.body) != "from-mqtt" {
			t.Fatalf("got %s", m)
		}
	})
	t.Run("MQTT 5 properties to STOMP headers", func(t *testing.T) {
		s := stompSub(t, "/topic/a.props")
		run(t, pub, "-V", "mqttv5", "-q", "1", "-t", "a/props", "-m", "p",
			"-D", "publish", "user-property", "x-app", "42",
			"-D", "publish", "content-type", "text/plain",
			"-D", "publish", "correlation-data", "corr-7",
			"-D", "publish", "response-topic", "replies/r1")
		m := s.expect("MESSAGE")
		t.Logf("%s", m)
		for k, v := range map[string]string{"x-app": "42", "content-type": "text/plain", "correlation-id": "corr-7",
			"reply-to": "/topic/replies.r1"} {
			if got, _ := m.header(k); got != v {
				t.Errorf("header %s = %q, want %q", k, got, v)
			}
		}
	})
	t.Run("wildcards", func(t *testing.T) {
		s := stompSub(t, "/topic/w.*.x")
		s2 := stompSub(t, "/topic/w.>")
		run(t, pub, "-t", "w/1/x", "-m", "one")
		for _, c := range []*rawStomp{s, s2} {
			if m := c.expect("MESSAGE"); string(m.body) != "one" {
				t.Fatalf("got %s", m)
			}
		}
		run(t, pub, "-t", "w", "-m", "parent")
		if m := s2.expect("MESSAGE"); string(m.body) != "parent" {
			t.Fatalf("/topic/w.> got %s, want the message on w itself", m)
		}
	})
	t.Run("STOMP to MQTT", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var out bytes.Buffer
		cmd := exec.CommandContext(ctx, subBin, mqttArgs("-V", "mqttv5", "-q", "1", "-t", "s/+/c", "-C", "1",
			"-F", "%t|%p|%P")...)
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		s := dialStomp(t, tg.stomp)
		s.connect("accept-version:1.2\n")
		// mosquitto_sub tells nobody when it has subscribed: send until
		// it has received one.
		for i := 0; ; i++ {
			s.mustWrite("SEND\ndestination:/topic/s.b.c\nx-h:v1\ncontent-type:text/plain\n\nfrom-stomp\x00")
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("mosquitto_sub: %v\n%s", err, out.String())
				}
				got := strings.TrimSpace(out.String())
				t.Logf("mosquitto_sub: %s", got)
				if !strings.HasPrefix(got, "s/b/c|from-stomp|") || !strings.Contains(got, "x-h:v1") {
					t.Fatalf("mosquitto_sub got %q, want s/b/c|from-stomp|...x-h:v1...", got)
				}
				return
			case <-time.After(200 * time.Millisecond):
			}
			if i > 40 {
				t.Fatalf("mosquitto_sub received nothing: %s", out.String())
			}
		}
	})
}
