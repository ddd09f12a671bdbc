package crashtest

import (
	"strconv"
	"testing"
	"time"

	"github.com/isobar-mq/isobar/internal/mqtt/packet"
)

// restartModes are the two ways a broker goes down in these tests.
var restartModes = []struct {
	name string
	down func(*brokerProc)
}{
	{"graceful", (*brokerProc).stop},
	{"sigkill", (*brokerProc).kill},
}

// detachMargin is how long the tests give the broker, after it logged that
// a client went away, to commit the session's new state (disconnect time,
// pending will). Nothing acknowledges that commit, so a test that kills
// the broker right after a client left can only wait for it.
const detachMargin = 300 * time.Millisecond

// waitDetached waits until the broker has logged the end of client id's
// connection (debug log) and then for detachMargin.
func waitDetached(b *brokerProc, id string) {
	b.t.Helper()
	b.waitLog(5*time.Second, `msg="client disconnected"`, "client="+id+" ")
	time.Sleep(detachMargin)
}

// TestRestartRetained: retained messages (set, replaced, deleted, at QoS
// 1 and 2) survive a graceful stop and a SIGKILL, twice.
func TestRestartRetained(t *testing.T) {
	for _, mode := range restartModes {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			b := newBroker(t, "")
			b.start()
			pub, _ := mustDial(t, b.addr(), clientOpts{id: "ret-pub", v: packet.V5, clean: true})
			steps := []struct {
				topic, payload string
				qos            byte
			}{
				{"r/q1", "one", 1},
				{"r/q2", "two", 2},
				{"r/gone", "x", 1},
				{"r/gone", "", 1}, // deletes it [MQTT-3.3.1-6]
				{"r/replaced", "old", 2},
				{"r/replaced", "new", 1},
			}
			for i, s := range steps {
				if rc, err := pub.publishSync(uint16(i+1), s.topic, []byte(s.payload), s.qos, true); err != nil || rc >= 0x80 {
					t.Fatalf("publish %s: 0x%02X %v", s.topic, rc, err)
				}
			}
			want := map[string]string{"r/q1": "one", "r/q2": "two", "r/replaced": "new"}
			wantQoS := map[string]byte{"r/q1": 1, "r/q2": 2, "r/replaced": 1}
			if mode.name == "graceful" {
				// A QoS 0 retained message has no acknowledgement; on a
				// graceful stop it is kept like the others.
				if _, err := pub.publishSync(0, "r/q0", []byte("zero"), 0, true); err != nil {
					t.Fatal(err)
				}
				want["r/q0"], wantQoS["r/q0"] = "zero", 0
				// Let the broker read it before the stop (PUBACK of a
				// later packet on the same connection).
				if _, err := pub.publishSync(9, "other", []byte("sync"), 1, false); err != nil {
					t.Fatal(err)
				}
			}
			pub.close()

			for round := 1; round <= 2; round++ {
				mode.down(b)
				b.start()
				sub, _ := mustDial(t, b.addr(), clientOpts{id: "ret-sub-" + strconv.Itoa(round), v: packet.V5, clean: true})
				if _, err := sub.subscribeSync(1, packet.Subscription{Filter: "r/#", QoS: 2}); err != nil {
					t.Fatal(err)
				}
				got := sub.recvN(t, len(want), 5*time.Second, 300*time.Millisecond)
				for _, p := range got {
					if want[p.Topic] != string(p.Payload) || !p.Retain || p.QoS != wantQoS[p.Topic] {
						t.Errorf("round %d: retained %s = %q (retain %v, QoS %d), want %q at QoS %d",
							round, p.Topic, p.Payload, p.Retain, p.QoS, want[p.Topic], wantQoS[p.Topic])
					}
				}
				sub.disconnect()
			}
		})
	}
}

// TestRestartWillDelay: a client with Will Delay 3 s and Session Expiry 60
// s drops its connection; the broker restarts within the delay. The will
// is published once, when the delay has passed in wall-clock time. A second
// client in the same situation that reconnects after the restart, within
// its delay, has its will cancelled [MQTT-3.1.3-9].
func TestRestartWillDelay(t *testing.T) {
	const delay = 3 * time.Second
	for _, mode := range restartModes {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			b := newBroker(t, "")
			b.logLvl = "debug"
			b.start()
			subOpts := clientOpts{id: "will-sub", v: packet.V5, expiry: 300}
			sub, _ := mustDial(t, b.addr(), subOpts)
			if _, err := sub.subscribeSync(1, packet.Subscription{Filter: "will/+", QoS: 1}); err != nil {
				t.Fatal(err)
			}
			willOpts := func(id string) clientOpts {
				return clientOpts{id: id, v: packet.V5, expiry: 60, willDelay: uint32(delay / time.Second),
					will: &packet.Publish{Topic: "will/" + id, Payload: []byte(id + " gone"), QoS: 1}}
			}
			w1, _ := mustDial(t, b.addr(), willOpts("w1"))
			w2, _ := mustDial(t, b.addr(), willOpts("w2"))
			// Abnormal ends: the connections close without DISCONNECT.
			t0 := time.Now()
			w1.close()
			w2.close()
			if mode.name == "sigkill" {
				waitDetached(b, "w1")
				waitDetached(b, "w2")
			}
			mode.down(b)
			b.start()
			if time.Since(t0) > delay-time.Second {
				t.Fatalf("restart took too long (%v) for the test to mean anything", time.Since(t0))
			}
			// w2 comes back within its delay: its will must not be sent.
			w2b, ack := mustDial(t, b.addr(), clientOpts{id: "w2", v: packet.V5, expiry: 60})
			if !ack.SessionPresent {
				t.Errorf("w2: session present 0 after restart")
			}
			defer w2b.disconnect()

			sub, ack = mustDial(t, b.addr(), subOpts)
			if !ack.SessionPresent {
				t.Fatal("will-sub: session lost across restart")
			}
			p, err := sub.recv(delay + 3*time.Second)
			if err != nil || p == nil {
				t.Fatalf("no will within %v of the disconnect (err %v)", time.Since(t0), err)
			}
			at := time.Since(t0)
			if p.Topic != "will/w1" || string(p.Payload) != "w1 gone" {
				t.Fatalf("got %s %q, want w1's will", p.Topic, p.Payload)
			}
			if at < delay {
				t.Errorf("will published %v after the disconnect, before its %v delay", at, delay)
			}
			if at > delay+1500*time.Millisecond {
				t.Errorf("will published %v after the disconnect: the %v delay should count wall-clock time across the restart", at, delay)
			}
			t.Logf("will published %v after the abnormal disconnect (delay %v)", at.Round(time.Millisecond), delay)
			// Nothing else: no second copy, no will of w2.
			if p, err := sub.recv(1500 * time.Millisecond); err != nil || p != nil {
				t.Errorf("after the will: %v %v", p, err)
			}
		})
	}
}

// TestRestartWillOfConnectedClient: a client with a delayed will is still
// connected when the broker is killed and never comes back. Its connection
// was closed without DISCONNECT (by the crash), and the Will Message and
// Will Delay are part of the server's session state (MQTT 5 §4.1), so
// after the restart the will is due once the delay has passed.
func TestRestartWillOfConnectedClient(t *testing.T) {
	const delay = time.Second
	b := newBroker(t, "")
	b.start()
	subOpts := clientOpts{id: "will-sub", v: packet.V5, expiry: 300}
	sub, _ := mustDial(t, b.addr(), subOpts)
	if _, err := sub.subscribeSync(1, packet.Subscription{Filter: "will/+", QoS: 1}); err != nil {
		t.Fatal(err)
	}
	w, _ := mustDial(t, b.addr(), clientOpts{id: "w", v: packet.V5, expiry: 60, willDelay: 1,
		will: &packet.Publish{Topic: "will/w", Payload: []byte("w gone"), QoS: 1}})
	defer w.close()
	b.kill()
	b.start()
	sub, _ = mustDial(t, b.addr(), subOpts)
	p, err := sub.recv(delay + 3*time.Second)
	if err != nil || p == nil || p.Topic != "will/w" {
		t.Fatalf("will of the client connected at the crash: got %v, %v; want will/w within %v", p, err, delay+3*time.Second)
	}
}

// TestRestartSessionExpiry: a session with Session Expiry Interval 2 s
// whose client disconnected before the broker went down for 3 s is gone
// after the restart (CONNACK session present 0, its subscription no longer
// routes); a session with 60 s is still there with its queued message.
func TestRestartSessionExpiry(t *testing.T) {
	for _, mode := range restartModes {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			b := newBroker(t, "")
			b.logLvl = "debug"
			b.start()
			for _, c := range []struct {
				id     string
				expiry uint32
			}{{"exp-short", 2}, {"exp-long", 60}} {
				cl, _ := mustDial(t, b.addr(), clientOpts{id: c.id, v: packet.V5, expiry: c.expiry})
				if _, err := cl.subscribeSync(1, packet.Subscription{Filter: "exp/" + c.id, QoS: 1}); err != nil {
					t.Fatal(err)
				}
				cl.disconnect()
			}
			if mode.name == "sigkill" {
				waitDetached(b, "exp-short")
				waitDetached(b, "exp-long")
			}
			mode.down(b)
			time.Sleep(3 * time.Second) // the downtime under test
			b.start()

			pub, _ := mustDial(t, b.addr(), clientOpts{id: "exp-pub", v: packet.V5, clean: true})
			rc, err := pub.publishSync(1, "exp/exp-short", []byte("to short"), 1, false)
			if err != nil {
				t.Fatal(err)
			}
			if rc != packet.NoMatchingSubscribers {
				t.Errorf("publish to the expired session's topic: reason 0x%02X, want 0x10 (no matching subscribers)", rc)
			}
			if _, err := pub.publishSync(2, "exp/exp-long", []byte("to long"), 1, false); err != nil {
				t.Fatal(err)
			}

			short, ack := mustDial(t, b.addr(), clientOpts{id: "exp-short", v: packet.V5, expiry: 2})
			if ack.SessionPresent {
				t.Errorf("exp-short: session present 1 after 3 s down with a 2 s expiry")
			}
			short.recvN(t, 0, 0, 300*time.Millisecond)
			long, ack := mustDial(t, b.addr(), clientOpts{id: "exp-long", v: packet.V5, expiry: 60})
			if !ack.SessionPresent {
				t.Errorf("exp-long: session lost")
			}
			got := long.recvN(t, 1, 5*time.Second, 300*time.Millisecond)
			if string(got[0].Payload) != "to long" {
				t.Errorf("exp-long got %q", got[0].Payload)
			}
		})
	}
}

// TestRestartQueueLimit: with mqtt.max_queued_messages 10, an offline
// session keeps the first 10 of 20 messages (the others are dropped and
// counted); after a restart the restored queue is still full (new
// messages are dropped) and exactly those 10 are delivered, in order.
func TestRestartQueueLimit(t *testing.T) {
	for _, mode := range restartModes {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			b := newBroker(t, "mqtt:\n  max_queued_messages: 10\nsys_interval: 1s\n")
			b.start()
			subOpts := clientOpts{id: "ql-sub", v: packet.V311}
			sub, _ := mustDial(t, b.addr(), subOpts)
			if _, err := sub.subscribeSync(1, packet.Subscription{Filter: "q/#", QoS: 1}); err != nil {
				t.Fatal(err)
			}
			sub.disconnect()
			pub, _ := mustDial(t, b.addr(), clientOpts{id: "ql-pub", v: packet.V311, clean: true})
			for i := 0; i < 20; i++ {
				if _, err := pub.publishSync(uint16(i+1), "q/x", []byte("m"+strconv.Itoa(i)), 1, false); err != nil {
					t.Fatal(err)
				}
			}
			// The drops are counted: $SYS/broker/publish/messages/dropped.
			waitSysValue(t, b.addr(), "$SYS/broker/publish/messages/dropped", "10")
			pub.close()

			mode.down(b)
			b.start()
			pub, _ = mustDial(t, b.addr(), clientOpts{id: "ql-pub", v: packet.V311, clean: true})
			for i := 20; i < 25; i++ {
				if _, err := pub.publishSync(uint16(i+1), "q/x", []byte("m"+strconv.Itoa(i)), 1, false); err != nil {
					t.Fatal(err)
				}
			}
			// The restored queue is full: the 5 new messages are dropped.
			waitSysValue(t, b.addr(), "$SYS/broker/publish/messages/dropped", "5")
			sub, ack := mustDial(t, b.addr(), subOpts)
			if !ack.SessionPresent {
				t.Fatal("ql-sub: session lost")
			}
			got := sub.recvN(t, 10, 5*time.Second, 500*time.Millisecond)
			for i, p := range got {
				if want := "m" + strconv.Itoa(i); string(p.Payload) != want {
					t.Fatalf("delivered %s, want m0..m9 in order", payloads(got))
				}
			}
		})
	}
}

// waitSysValue polls a $SYS topic (retained, updated every sys_interval)
// until it has the wanted value.
func waitSysValue(t *testing.T, addr, topic, want string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	last := "(nothing)"
	for time.Now().Before(deadline) {
		c, _ := mustDial(t, addr, clientOpts{id: "sys-reader", v: packet.V311, clean: true})
		if _, err := c.subscribeSync(1, packet.Subscription{Filter: topic, QoS: 0}); err != nil {
			t.Fatal(err)
		}
		p, err := c.recv(500 * time.Millisecond)
		c.close()
		if err != nil {
			t.Fatal(err)
		}
		if p != nil {
			last = string(p.Payload)
			if last == want {
				return
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("%s = %s, want %s", topic, last, want)
}
