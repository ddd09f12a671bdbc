package bridgetest

import (
	"fmt"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/isobar-mq/isobar/internal/testutil"
)

// TestMosquittoRules: out, in and both rules with prefixes and QoS
// between an Isobar node and a real mosquitto, in MQTT 5 and 3.1.1.
func TestMosquittoRules(t *testing.T) {
	for _, v := range []int{5, 4} {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			m := startMosquitto(t)
			n, url := isobar(t, "a", fmt.Sprintf(`bridges:
  - name: to-m
    url: %s
    version: %d
    min_backoff: 50ms
    max_backoff: 500ms
    topics:
      - {pattern: "sensors/#", direction: out, qos: 1, remote_prefix: "site-a/"}
      - {pattern: "commands/#", direction: in, qos: 1, local_prefix: "remote/"}
      - {pattern: "shared/#", direction: both, qos: 1}
`, m.url(), v))
			waitConnected(t, n, "to-m")
			onM := subscribe(t, m.url(), "sub-m", "site-a/#", "shared/#", "sensors/#")
			onA := subscribe(t, url, "sub-a", "remote/#", "shared/#", "commands/#")
			time.Sleep(300 * time.Millisecond) // the bridge's remote SUBACKs
			pa := publisher(t, url, "pub-a")
			pm := publisher(t, m.url(), "pub-m")

			publish(t, pa, "sensors/room1/temp", "21.5", 1)
			publish(t, pm, "commands/go", "now", 1)
			publish(t, pa, "shared/from-a", "x", 1)
			publish(t, pm, "shared/from-m", "y", 1)
			onM.waitCount(t, 3, 10*time.Second)
			onA.waitCount(t, 3, 10*time.Second)
			time.Sleep(500 * time.Millisecond) // anything more would be a duplicate or an echo

			if got := onM.topic("site-a/sensors/room1/temp"); !slices.Equal(got, []string{"21.5"}) {
				t.Errorf("mosquitto: site-a/sensors/room1/temp = %q", got)
			}
			if got := onA.topic("remote/commands/go"); !slices.Equal(got, []string{"now"}) {
				t.Errorf("isobar: remote/commands/go = %q", got)
			}
			if got := onM.topic("shared/from-a"); !slices.Equal(got, []string{"x"}) {
				t.Errorf("mosquitto: shared/from-a = %q", got)
			}
			if got := onA.topic("shared/from-a"); !slices.Equal(got, []string{"x"}) {
				t.Errorf("isobar: shared/from-a = %q (echo?)", got)
			}
			if got := onA.topic("shared/from-m"); !slices.Equal(got, []string{"y"}) {
				t.Errorf("isobar: shared/from-m = %q", got)
			}
			if got := onM.topic("shared/from-m"); !slices.Equal(got, []string{"y"}) {
				t.Errorf("mosquitto: shared/from-m = %q (echo?)", got)
			}
			if c := onM.count(); c != 3 {
				t.Errorf("mosquitto subscriber got %d messages, want 3: %v", c, onM.got)
			}
			if c := onA.count(); c != 3 {
				t.Errorf("isobar subscriber got %d messages, want 3: %v", c, onA.got)
			}
			st := n.Bridges.Status()[0]
			if st.Out != 2 || st.In != 2 || !st.Connected {
				t.Errorf("status %+v", st)
			}
		})
	}
}

// TestBufferWhileDown: QoS 1 messages published while the remote is down
// are buffered, then delivered when it is back (reconnection with
// backoff), none lost or duplicated; the status shows the buffer.
func TestBufferWhileDown(t *testing.T) {
	m := startMosquitto(t)
	n, url := isobar(t, "a", fmt.Sprintf(`bridges:
  - name: to-m
    url: %s
    min_backoff: 50ms
    max_backoff: 400ms
    buffer: {max_messages: 1000, max_bytes: 1MiB}
    topics:
      - {pattern: "data/#", direction: out, qos: 1}
`, m.url()))
	waitConnected(t, n, "to-m")
	onM := subscribe(t, m.url(), "sub-m", "data/#")
	_ = onM.c.Close() // a persistent session: mosquitto queues for it
	m.stop()
	waitDown(t, n)
	pa := publisher(t, url, "pub-a")
	const total = 50
	for i := range total {
		publish(t, pa, "data/x", fmt.Sprint(i), 1)
	}
	if st := n.Bridges.Status()[0]; st.Buffered != total || st.Connected {
		t.Fatalf("while down: %+v", st)
	}
	if err := m.start(); err != nil {
		t.Fatal(err)
	}
	waitConnected(t, n, "to-m")
	onM = subscribe(t, m.url(), "sub-m", "data/#")
	onM.waitCount(t, total, 10*time.Second)
	time.Sleep(300 * time.Millisecond)
	got := onM.topic("data/x")
	want := make([]string, total)
	for i := range want {
		want[i] = fmt.Sprint(i)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("after reconnection got %d messages: %s", len(got), strings.Join(got, ","))
	}
	st := n.Bridges.Status()[0]
	if st.Buffered != 0 || st.Out != total || st.Reconnects < 1 || st.DroppedFull != 0 {
		t.Fatalf("after: %+v", st)
	}
}

// TestHoldUntilRemoteAck: while the link is up, a local QoS 1 publisher's
// PUBACK waits for the remote's; a remote that stops answering (SIGSTOP)
// holds it at most about 4 s, then the message stays buffered and is
// delivered when the remote answers again.
func TestHoldUntilRemoteAck(t *testing.T) {
	m := startMosquitto(t)
	n, url := isobar(t, "a", fmt.Sprintf(`bridges:
  - name: to-m
    url: %s
    keepalive: 30s
    topics:
      - {pattern: "data/#", direction: out, qos: 1}
`, m.url()))
	waitConnected(t, n, "to-m")
	onM := subscribe(t, m.url(), "sub-m", "data/#")
	pa := publisher(t, url, "pub-a")
	publish(t, pa, "data/x", "0", 1)
	onM.waitCount(t, 1, 5*time.Second)

	_ = m.cmd.Process.Signal(syscall.SIGSTOP)
	stopped := true
	defer func() {
		if stopped {
			_ = m.cmd.Process.Signal(syscall.SIGCONT)
		}
	}()
	start := time.Now()
	publish(t, pa, "data/x", "1", 1)
	held := time.Since(start)
	if held < 3*time.Second || held > 8*time.Second {
		t.Fatalf("local PUBACK after %v, want it held about 4 s", held)
	}
	if st := n.Bridges.Status()[0]; st.Buffered != 1 {
		t.Fatalf("status %+v", st)
	}
	_ = m.cmd.Process.Signal(syscall.SIGCONT)
	stopped = false
	onM.waitCount(t, 2, 10*time.Second)
	if got := onM.topic("data/x"); !slices.Equal(got, []string{"0", "1"}) {
		t.Fatalf("got %v", got)
	}
}

// TestBufferBound: the outgoing buffer is bounded by count and bytes;
// what does not fit is dropped and counted, and publishers are never
// blocked by a link that is down.
func TestBufferBound(t *testing.T) {
	n, url := isobar(t, "a", fmt.Sprintf(`bridges:
  - name: nowhere
    url: mqtt://127.0.0.1:%d
    min_backoff: 1s
    buffer: {max_messages: 5, max_bytes: 2KiB}
    topics:
      - {pattern: "data/#", direction: out, qos: 1}
`, freePort(t)))
	pa := publisher(t, url, "pub-a")
	start := time.Now()
	publish(t, pa, "data/big", strings.Repeat("x", 4096), 1) // larger than max_bytes
	for i := range 10 {
		publish(t, pa, "data/x", fmt.Sprint(i), byte(i%2))
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("publishing took %v with the link down", d)
	}
	testutil.CheckFor(t, 2*time.Second, 10*time.Millisecond, func() error {
		st := n.Bridges.Status()[0]
		if st.Buffered != 5 || st.DroppedFull != 6 || st.Connected || st.LastError == "" {
			return fmt.Errorf("status %+v", st)
		}
		return nil
	})
}
