package sectest

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/isobar-mq/isobar/internal/mqtt/packet"
	"github.com/isobar-mq/isobar/internal/testutil"
)

// dialProxied connects to a proxy_protocol listener and sends a PROXY v1
// header claiming the client is srcIP.
func dialProxied(t *testing.T, address, srcIP string, srcPort int) net.Conn {
	t.Helper()
	c := dialTCP(t, address)
	_, dport, _ := net.SplitHostPort(address)
	if _, err := fmt.Fprintf(c, "PROXY TCP4 %s 127.0.0.1 %d %s\r\n", srcIP, srcPort, dport); err != nil {
		t.Fatal(err)
	}
	return c
}

// timedConnect connects on conn and returns the CONNACK code and how long
// it took from CONNECT to CONNACK.
func timedConnect(t *testing.T, conn net.Conn, o connOpts) (byte, time.Duration) {
	t.Helper()
	start := time.Now()
	_, ack, err := connectOn(t, conn, o)
	if err != nil {
		t.Fatalf("client %q: %v", o.id, err)
	}
	return ack.ReasonCode, time.Since(start)
}

// TestFailedLoginThrottle: after threshold failures from one address the
// CONNACK to that address comes later and later (even for a correct
// password), while other addresses (given by the PROXY protocol) and
// connected clients are not slowed.
func TestFailedLoginThrottle(t *testing.T) {
	t.Parallel()
	pw := passwordFile(t, t.TempDir(), "alice:secret-a")
	const base, slack = 300 * time.Millisecond, 150 * time.Millisecond
	n := startNode(t, fmt.Sprintf(`listeners:
  - {name: mqtt, protocol: mqtt, address: "127.0.0.1:0"}
  - {name: proxied, protocol: mqtt, address: "127.0.0.1:0", proxy_protocol: true}
auth:
  allow_anonymous: false
  password_file: %q
  throttle: {threshold: 2, base_delay: %s, max_delay: 5s}
`, pw, base))
	a, pa := addr(t, n, "mqtt"), addr(t, n, "proxied")
	ctl := connectTCP(t, a, connOpts{id: "control", v: packet.V5}.withUser("alice", "secret-a"))
	ctl.mustSubscribe("control")
	wrong := connOpts{id: "guess", v: packet.V5}.withUser("alice", "guess")

	// Failures 1 and 2 are answered at once; the 2nd sets a delay of
	// base, the 3rd 2*base, the 4th 4*base.
	for i, minDelay := range []time.Duration{0, 0, base, 2 * base, 4 * base} {
		o := wrong
		if i == 4 {
			o = connOpts{id: "alice", v: packet.V5}.withUser("alice", "secret-a")
		}
		code, took := timedConnect(t, dialTCP(t, a), o)
		want := byte(0x86)
		if i == 4 {
			want = 0 // a correct password waits too
		}
		if code != want {
			t.Fatalf("attempt %d: CONNACK 0x%02X, want 0x%02X", i+1, code, want)
		}
		t.Logf("attempt %d (%s): CONNACK 0x%02X after %v", i+1, o.pass, code, took.Round(time.Millisecond))
		if minDelay == 0 && took >= base {
			t.Errorf("attempt %d took %v: not throttled yet, want under %v", i+1, took, base)
		}
		// Each delay counts from the planned end of the previous one, so a
		// late answer (a loaded machine) shortens the next wait by as much.
		if minDelay > 0 && took < minDelay-slack {
			t.Errorf("attempt %d took %v, want at least %v", i+1, took, minDelay)
		}
	}

	// Meanwhile (the next attempt from 127.0.0.1 would wait 8 x base):
	// the connected client, and another address behind the proxy, are
	// not slowed.
	begin := time.Now()
	ctl.mustPublish("control", "ok")
	ctl.expectMsg("control", "ok")
	code, took := timedConnect(t, dialProxied(t, pa, "192.0.2.10", 40000), connOpts{id: "other", v: packet.V5}.withUser("alice", "secret-a"))
	if code != 0 || took >= base {
		t.Errorf("client from 192.0.2.10: CONNACK 0x%02X after %v, want 0 at once", code, took)
	}
	if d := time.Since(begin); d >= base {
		t.Errorf("control round trip and other login took %v", d)
	}

	// Behind the proxy, failures count against the address in the PROXY
	// header, not against the proxy.
	for i := range 3 {
		code, took := timedConnect(t, dialProxied(t, pa, "192.0.2.20", 40001+i), wrong)
		if code != 0x86 {
			t.Fatalf("192.0.2.20 attempt %d: 0x%02X", i+1, code)
		}
		if (i < 2 && took >= base) || (i == 2 && took < base-slack) {
			t.Errorf("192.0.2.20 attempt %d took %v (base delay %v after 2 failures)", i+1, took, base)
		}
	}
	if n.Auth.Stats().Throttled.Load() < 4 {
		t.Errorf("throttled %d, want at least 4", n.Auth.Stats().Throttled.Load())
	}
}

// TestListenerMaxConnections: max_connections caps one listener (0x97 v5,
// 3 v3) and not the others; a freed slot is usable again.
func TestListenerMaxConnections(t *testing.T) {
	t.Parallel()
	n := startNode(t, `listeners:
  - {name: small, protocol: mqtt, address: "127.0.0.1:0", max_connections: 2}
  - {name: big, protocol: mqtt, address: "127.0.0.1:0"}
`)
	small, big := addr(t, n, "small"), addr(t, n, "big")
	c1 := connectTCP(t, small, connOpts{id: "c1", v: packet.V5})
	connectTCP(t, small, connOpts{id: "c2"})
	if got := refusedCode(t, small, connOpts{id: "c3", v: packet.V5}); got != 0x97 {
		t.Fatalf("v5 client over max_connections: 0x%02X, want 0x97", got)
	}
	if got := refusedCode(t, small, connOpts{id: "c3"}); got != 3 {
		t.Fatalf("v3 client over max_connections: %d, want 3", got)
	}
	for i := range 3 {
		connectTCP(t, big, connOpts{id: fmt.Sprint("big", i)})
	}
	c1.disconnect()
	waitGone(t, n, "c1")
	connectTCP(t, small, connOpts{id: "c4", v: packet.V5})
	if got := refusedCode(t, small, connOpts{id: "c5", v: packet.V5}); got != 0x97 {
		t.Fatalf("full again: 0x%02X, want 0x97", got)
	}
}

// TestConnectionRate: new connections per second per source address; the
// burst is admitted, the next one gets 0x9F (v5) or 3 (v3); another source
// (PROXY protocol) has its own bucket.
func TestConnectionRate(t *testing.T) {
	t.Parallel()
	n := startNode(t, `listeners:
  - {name: mqtt, protocol: mqtt, address: "127.0.0.1:0"}
  - {name: proxied, protocol: mqtt, address: "127.0.0.1:0", proxy_protocol: true}
mqtt:
  connection_rate: 0.1
  connection_burst: 3
`)
	a, pa := addr(t, n, "mqtt"), addr(t, n, "proxied")
	for i := range 3 {
		connectTCP(t, a, connOpts{id: fmt.Sprint("burst", i), v: packet.V5})
	}
	if got := refusedCode(t, a, connOpts{id: "over5", v: packet.V5}); got != 0x9F {
		t.Fatalf("v5 over the connection rate: 0x%02X, want 0x9F", got)
	}
	if got := refusedCode(t, a, connOpts{id: "over3"}); got != 3 {
		t.Fatalf("v3 over the connection rate: %d, want 3", got)
	}
	connect(t, dialProxied(t, pa, "192.0.2.40", 40000), connOpts{id: "elsewhere", v: packet.V5}, 0)
	for i := range 3 {
		connect(t, dialProxied(t, pa, "192.0.2.41", 40000+i), connOpts{id: fmt.Sprint("p", i), v: packet.V5}, 0)
	}
	c, ack, err := connectOn(t, dialProxied(t, pa, "192.0.2.41", 40009), connOpts{id: "p-over", v: packet.V5})
	if err != nil || ack.ReasonCode != 0x9F {
		t.Fatalf("4th connection from 192.0.2.41: %v %+v, want 0x9F", err, ack)
	}
	c.expectClosed()
}

// TestPublishRate: a client publishing faster than publish_rate beyond the
// burst gets PUBACK 0x97 (v5) and its messages are dropped (v3: silently).
func TestPublishRate(t *testing.T) {
	t.Parallel()
	n := startNode(t, `listeners:
  - {name: mqtt, protocol: mqtt, address: "127.0.0.1:0"}
mqtt:
  publish_rate: 0.1
  publish_burst: 2
`)
	a := addr(t, n, "mqtt")
	sub := connectTCP(t, a, connOpts{id: "sub", v: packet.V5})
	sub.mustSubscribe("rate/#")
	p5 := connectTCP(t, a, connOpts{id: "p5", v: packet.V5})
	for i, want := range []byte{0, 0, 0x97, 0x97} {
		if code := p5.publish("rate/v5", fmt.Sprint(i), 1, false); code != want {
			t.Fatalf("v5 publish %d: PUBACK 0x%02X, want 0x%02X", i+1, code, want)
		}
	}
	p3 := connectTCP(t, a, connOpts{id: "p3"})
	for i := range 4 {
		if code := p3.publish("rate/v3", fmt.Sprint(i), 1, false); code != 0 {
			t.Fatalf("v3 PUBACK %d", code)
		}
	}
	p3.publish("rate/v3", "qos0", 0, false)
	p3.ping()
	sub.expectMsg("rate/v5", "0")
	sub.expectMsg("rate/v5", "1")
	sub.expectMsg("rate/v3", "0")
	sub.expectMsg("rate/v3", "1")
	// The quota is per client: a new publisher is admitted.
	marker := connectTCP(t, a, connOpts{id: "marker", v: packet.V5})
	marker.mustPublish("rate/marker", "m")
	sub.expectMsg("rate/marker", "m")
}

// TestMaxSubscriptionsPerClient: subscriptions beyond the cap get 0x97
// (v5) or 0x80 (v3); replacing an existing one does not count.
func TestMaxSubscriptionsPerClient(t *testing.T) {
	t.Parallel()
	n := startNode(t, `listeners:
  - {name: mqtt, protocol: mqtt, address: "127.0.0.1:0"}
mqtt:
  max_subscriptions_per_client: 2
`)
	a := addr(t, n, "mqtt")
	for _, v := range []byte{packet.V5, packet.V311} {
		c := connectTCP(t, a, connOpts{id: "subs-" + versionName(v), v: v})
		over := map[byte]byte{packet.V5: 0x97, packet.V311: 0x80}[v]
		if codes := c.subscribe("a", "b", "c"); string(codes) != string([]byte{1, 1, over}) {
			t.Fatalf("%s SUBACK % X, want 01 01 %02X", versionName(v), codes, over)
		}
		if codes := c.subscribe("a", "d"); string(codes) != string([]byte{1, over}) {
			t.Fatalf("%s resubscribe: SUBACK % X, want 01 %02X", versionName(v), codes, over)
		}
		u := packet.Unsubscribe{PacketID: 99, Filters: []string{"a"}}
		c.send(u.Append(nil, c.v))
		c.next("UNSUBACK", func(p any) bool { _, ok := p.(*packet.Unsuback); return ok })
		if codes := c.subscribe("d"); codes[0] != 1 {
			t.Fatalf("%s after unsubscribing: SUBACK % X", versionName(v), codes)
		}
		testutil.CheckFor(t, timeout, 10*time.Millisecond, func() error {
			if v, _ := clientView(n, c.name); v.Subscriptions != 2 {
				return fmt.Errorf("%d subscriptions", v.Subscriptions)
			}
			return nil
		})
		c.disconnect()
	}
}
