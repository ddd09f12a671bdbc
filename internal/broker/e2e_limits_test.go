package broker_test

// End-to-end tests of the configurable limits that change protocol-visible
// behaviour, and of will delays across takeovers.

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/isobar-mq/isobar/internal/auth"
	"github.com/isobar-mq/isobar/internal/mqtt/packet"
)

// mqtt.max_session_expiry caps the Session Expiry Interval, and the capped
// value is returned in CONNACK (section 3.2.2.3.2: the server uses the
// property to tell the client a value other than the one it asked for).
func TestMaxSessionExpiry(t *testing.T) {
	t.Parallel()
	_, addr := startNode(t, "mqtt:\n  max_session_expiry: 10\n")
	for _, c := range []struct {
		ask  uint32
		want *uint32
	}{{100, u32(10)}, {0xFFFFFFFF, u32(10)}, {10, nil}, {5, nil}} {
		cl := connectV5(t, addr, &paho.Connect{ClientID: fmt.Sprint("mse-", c.ask), CleanStart: true, KeepAlive: 30,
			Properties: &paho.ConnectProperties{SessionExpiryInterval: u32(c.ask)}}, nil)
		var got *uint32
		if cl.Ack.Properties != nil {
			got = cl.Ack.Properties.SessionExpiryInterval
		}
		if (got == nil) != (c.want == nil) || got != nil && *got != *c.want {
			t.Errorf("asked %d: CONNACK Session Expiry Interval %v, want %v", c.ask, deref(got), deref(c.want))
		}
	}
}

// mqtt.persistent_session_expiry: a 3.1.1 session with clean session 0
// ends that many seconds after its connection closed.
func TestPersistentSessionExpiryV3(t *testing.T) {
	t.Parallel()
	n, addr := startNode(t, "mqtt:\n  persistent_session_expiry: 1\n")
	c := connectV3(t, addr, "pse", false, nil)
	c.sub(1, "pse/t")
	c.Disconnect(50)
	waitClients(t, n, 0)
	c = connectV3(t, addr, "pse", false, nil)
	if !c.sp {
		t.Fatal("session gone at once")
	}
	c.Disconnect(50)
	waitClients(t, n, 0)
	time.Sleep(2 * time.Second) // the expiry is the subject
	c = connectV3(t, addr, "pse", false, nil)
	if c.sp {
		t.Fatal("session still present 2 s after it should have expired")
	}
}

// mqtt.max_subscriptions_per_client: beyond it SUBACK 0x97 (5.0) or 0x80
// (3.1.1); replacing an existing subscription still works.
func TestMaxSubscriptionsPerClient(t *testing.T) {
	t.Parallel()
	_, addr := startNode(t, "mqtt:\n  max_subscriptions_per_client: 2\n")
	c := dialP(t, addr, packet.V5)
	c.connectID("msub5")
	sa := c.subscribe(1, packet.Properties{}, packet.Subscription{Filter: "ms/a"}, packet.Subscription{Filter: "ms/b"},
		packet.Subscription{Filter: "ms/c"}, packet.Subscription{Filter: "ms/a", QoS: 1})
	if !slices.Equal(sa.ReasonCodes, []byte{0, 0, packet.QuotaExceeded, 1}) {
		t.Fatalf("5.0 SUBACK %x, want 00 00 97 01", sa.ReasonCodes)
	}
	v3 := dialP(t, addr, packet.V311)
	v3.connectID("msub3")
	sa = v3.subscribe(1, packet.Properties{}, packet.Subscription{Filter: "ms/a"}, packet.Subscription{Filter: "ms/b"},
		packet.Subscription{Filter: "ms/c"})
	if !slices.Equal(sa.ReasonCodes, []byte{0, 0, packet.V3SubackFailure}) {
		t.Fatalf("3.1.1 SUBACK %x, want 00 00 80", sa.ReasonCodes)
	}
}

// mqtt.max_queued_messages bounds an offline session's queue (later
// messages are dropped); mqtt.queue_qos0 also queues QoS 0 messages for
// offline sessions (the specification allows either, section 3.1.2.4).
func TestQueueLimits(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		config string
		want   []string
	}{
		{"max_queued", "mqtt:\n  max_queued_messages: 3\n", []string{"1:0", "1:1", "1:2"}},
		{"no_qos0", "", []string{"1:0", "1:1", "1:2", "1:3"}},
		{"queue_qos0", "mqtt:\n  queue_qos0: true\n", []string{"1:0", "0:x", "1:1", "1:2", "1:3"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			n, addr := startNode(t, tc.config)
			connect := func(clean bool) *pahoV5 {
				return connectV5(t, addr, &paho.Connect{ClientID: "ql", CleanStart: clean, KeepAlive: 30,
					Properties: &paho.ConnectProperties{SessionExpiryInterval: u32(60)}}, nil)
			}
			s := connect(true)
			s.sub(paho.SubscribeOptions{Topic: "ql/#", QoS: 1})
			_ = s.Disconnect(&paho.Disconnect{})
			waitClients(t, n, 0)
			p := v5(t, addr, "ql-pub")
			p.pub(&paho.Publish{Topic: "ql/t", QoS: 1, Payload: []byte("0")})
			p.pub(&paho.Publish{Topic: "ql/t", QoS: 0, Payload: []byte("x")})
			for i := 1; i < 4; i++ {
				p.pub(&paho.Publish{Topic: "ql/t", QoS: 1, Payload: []byte(fmt.Sprint(i))})
			}
			s = connect(false)
			p.pub(&paho.Publish{Topic: "ql/end", QoS: 1})
			var got []string
			for _, m := range s.recvUntil("ql/end") {
				got = append(got, fmt.Sprintf("%d:%s", m.QoS, m.Payload))
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("delivered on reconnection %v, want %v", got, tc.want)
			}
		})
	}
}

// Will delay across a takeover [MQTT-3.1.3-9]: a new connection to the
// session within the delay (clean start 0) cancels the will; clean start 1
// ends the old session, and the will is published then.
func TestV5WillDelayTakeover(t *testing.T) {
	t.Parallel()
	_, addr := startNode(t, "")
	w := v5(t, addr, "wdt-watch")
	w.sub(paho.SubscribeOptions{Topic: "wdt/#", QoS: 1})
	connect := func(id string, clean bool) *pahoV5 {
		return connectV5(t, addr, &paho.Connect{ClientID: id, CleanStart: clean, KeepAlive: 30,
			Properties:     &paho.ConnectProperties{SessionExpiryInterval: u32(30)},
			WillMessage:    &paho.WillMessage{Topic: "wdt/" + id, QoS: 1, Payload: []byte(id)},
			WillProperties: &paho.WillProperties{WillDelayInterval: u32(1)}}, nil)
	}
	keep := connect("resume", true)
	ends := connect("clean", true)
	start := time.Now()
	_ = connect("resume", false)
	_ = connect("clean", true)
	_ = keep.serverDisconnect()
	_ = ends.serverDisconnect()
	m := w.recv()
	if m.Topic != "wdt/clean" {
		t.Fatalf("got will %s, want wdt/clean", m.Topic)
	}
	if el := time.Since(start); el > 900*time.Millisecond {
		t.Errorf("the will of the ended session came after %v, want at once", el)
	}
	time.Sleep(time.Until(start.Add(1500 * time.Millisecond))) // past the will delay
	w.pub(&paho.Publish{Topic: "wdt/end", QoS: 1})
	if got := w.recvUntil("wdt/end"); len(got) != 0 {
		t.Fatalf("unexpected will %s (the taken-over session was resumed within the delay)", got[0].Topic)
	}
}

// Password authentication through a password file: the right password is
// accepted; a wrong one gets CONNACK 0x86 (5.0) / 0x04 (3.1.1); without a
// user name, when anonymous access is off, 0x87 / 0x05 (sections 3.2.2.2
// of both specifications); the connection is then closed [MQTT-3.2.2-7]
// (3.1.1: [MQTT-3.2.2-5]).
func TestPasswordAuthentication(t *testing.T) {
	t.Parallel()
	hash, err := auth.HashPassword(auth.SchemeSHA512, []byte("s3cret"))
	if err != nil {
		t.Fatal(err)
	}
	pwFile := filepath.Join(t.TempDir(), "passwords")
	if err := os.WriteFile(pwFile, []byte("alice:"+hash+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, addr := startNode(t, fmt.Sprintf("auth:\n  allow_anonymous: false\n  password_file: %q\n", pwFile))
	for _, tc := range []struct {
		name       string
		ver        byte
		user, pass string
		hasUser    bool
		want       byte
	}{
		{"v5 right", packet.V5, "alice", "s3cret", true, 0},
		{"v5 wrong", packet.V5, "alice", "nope", true, packet.BadUserNameOrPassword},
		{"v5 unknown user", packet.V5, "mallory", "s3cret", true, packet.BadUserNameOrPassword},
		{"v5 anonymous", packet.V5, "", "", false, packet.NotAuthorized},
		{"v3 right", packet.V311, "alice", "s3cret", true, 0},
		{"v3 wrong", packet.V311, "alice", "nope", true, packet.ConnRefusedBadCredentials},
		{"v3 anonymous", packet.V311, "", "", false, packet.ConnRefusedNotAuthorized},
	} {
		c := dialP(t, addr, tc.ver)
		cp := packet.Connect{ClientID: "pw-" + strings.ReplaceAll(tc.name, " ", "-"), CleanStart: true, KeepAlive: 30,
			UsernameFlag: tc.hasUser, Username: tc.user, PasswordFlag: tc.hasUser, Password: []byte(tc.pass)}
		ack := c.connectAck(cp)
		if ack.ReasonCode != tc.want {
			t.Errorf("%s: CONNACK 0x%02X, want 0x%02X", tc.name, ack.ReasonCode, tc.want)
			continue
		}
		if tc.want != 0 {
			if ack.SessionPresent {
				t.Errorf("%s: session present with a refusal [MQTT-3.2.2-6]", tc.name)
			}
			c.expectClosed(waitT)
			continue
		}
		c.write(packet.AppendPingreq(nil))
		if pkt := c.next(); pkt != packet.PINGRESP {
			t.Errorf("%s: expected PINGRESP, got %s", tc.name, describe(pkt))
		}
	}
}
