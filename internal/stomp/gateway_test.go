package stomp_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/isobar-mq/isobar/internal/stomp"
	"github.com/isobar-mq/isobar/internal/testutil"
)

func TestConnectVersions(t *testing.T) {
	t.Parallel()
	_, addr := runNode(t, "")
	for _, tc := range []struct{ accept, want string }{
		{"", stomp.V10}, {"1.0", stomp.V10}, {"1.1", stomp.V11}, {"1.0,1.1,1.2", stomp.V12}, {"1.2,2.0", stomp.V12},
	} {
		c := dial(t, addr)
		f := frame("CONNECT")
		if tc.accept != "" {
			f.Add("accept-version", tc.accept)
		}
		c.send(f)
		r := c.expect("CONNECTED")
		v := r.Value("version")
		if v != tc.want {
			t.Errorf("accept-version %q: version %q, want %s", tc.accept, v, tc.want)
		}
		if !strings.HasPrefix(r.Value("server"), "Isobar/") || !strings.HasPrefix(r.Value("session"), "stomp-") {
			t.Errorf("CONNECTED headers %v", r.Headers)
		}
		c.version = tc.want
		c.disconnect()
	}
	// The STOMP command, 1.2.
	c := dial(t, addr)
	c.send(frame("STOMP", "accept-version:1.2", "host:whatever"))
	if r := c.expect("CONNECTED"); r.Value("version") != "1.2" || r.Value("heart-beat") != "10000,10000" {
		t.Errorf("STOMP: %v", r.Headers)
	}
	// No version in common.
	c = dial(t, addr)
	c.send(frame("CONNECT", "accept-version:2.0,3.1"))
	if e := c.expectErrorClose("supported protocol versions"); e.Value("version") != "1.0,1.1,1.2" {
		t.Errorf("ERROR %v", e.Headers)
	}
}

func TestTopicPubSub(t *testing.T) {
	t.Parallel()
	_, addr := runNode(t, "")
	sub := connect(t, addr, "1.2")
	sub.subscribe("exact", "/topic/a.b.c")
	sub.subscribe("star", "/topic/a.*.c")
	sub.subscribe("gt", "/topic/a.>")
	pub := connect(t, addr, "1.1")
	pub.sendMsg("/topic/a.b.c", "one", "content-type:text/plain", "x-app:v1", "persistent:true")
	got := map[string]*stomp.Frame{}
	for range 3 {
		f := sub.expect("MESSAGE")
		got[f.Value("subscription")] = f
	}
	for _, id := range []string{"exact", "star", "gt"} {
		f := got[id]
		if f == nil {
			t.Fatalf("no message for %s", id)
		}
		if string(f.Body) != "one" || f.Value("destination") != "/topic/a.b.c" || f.Value("content-type") != "text/plain" ||
			f.Value("x-app") != "v1" || f.Value("persistent") != "true" || f.Value("message-id") == "" || f.Value("content-length") != "3" {
			t.Errorf("%s: %v %q", id, f.Headers, f.Body)
		}
	}
	// a.> matches a itself (as MQTT a/# does) but a.*.c does not match a.b.
	pub.sendMsg("/topic/a", "two")
	if f := sub.expect("MESSAGE"); f.Value("subscription") != "gt" || string(f.Body) != "two" {
		t.Fatalf("got %v %q", f.Headers, f.Body)
	}
	pub.sendMsg("/topic/a.b", "three")
	if f := sub.expect("MESSAGE"); f.Value("subscription") != "gt" || string(f.Body) != "three" {
		t.Fatalf("got %v %q", f.Headers, f.Body)
	}
	sub.expectNothing(200 * time.Millisecond)
	// UNSUBSCRIBE stops deliveries.
	sub.send(frame("UNSUBSCRIBE", "id:gt", "receipt:u"))
	sub.receipt("u")
	pub.sendMsg("/topic/a", "four")
	sub.expectNothing(200 * time.Millisecond)
	sub.disconnect()
	pub.disconnect()
}

func TestSTOMP10SubscribeByDestination(t *testing.T) {
	t.Parallel()
	_, addr := runNode(t, "")
	c := connect(t, addr, "")
	c.send(frame("SUBSCRIBE", "destination:/topic/x", "receipt:s"))
	c.receipt("s")
	c.sendMsg("/topic/x", "hi")
	f := c.expect("MESSAGE")
	if f.Value("subscription") != "/topic/x" || string(f.Body) != "hi" {
		t.Fatalf("got %v", f.Headers)
	}
	c.send(frame("UNSUBSCRIBE", "destination:/topic/x", "receipt:u"))
	c.receipt("u")
	c.sendMsg("/topic/x", "again")
	c.expectNothing(200 * time.Millisecond)
}

func TestTopicClientAck(t *testing.T) {
	t.Parallel()
	_, addr := runNode(t, "")
	c := connect(t, addr, "1.2")
	// A window of 2: the third unacknowledged message is dropped.
	c.subscribe("s", "/topic/w", "ack:client", "activemq.prefetchSize:2")
	for i := range 3 {
		c.sendMsg("/topic/w", fmt.Sprint(i))
	}
	m0 := c.expect("MESSAGE")
	m1 := c.expect("MESSAGE")
	c.expectNothing(200 * time.Millisecond)
	if m1.Value("ack") == "" {
		t.Fatalf("no ack header: %v", m1.Headers)
	}
	// A cumulative ACK of the second frees both.
	_ = m0
	c.send(frame("ACK", "id:"+m1.Value("ack"), "receipt:a"))
	c.receipt("a")
	c.sendMsg("/topic/w", "3")
	c.sendMsg("/topic/w", "4")
	if a, b := c.expect("MESSAGE"), c.expect("MESSAGE"); string(a.Body) != "3" || string(b.Body) != "4" {
		t.Fatalf("got %q %q", a.Body, b.Body)
	}
}

func TestTransactions(t *testing.T) {
	t.Parallel()
	_, addr := runNode(t, "")
	sub := connect(t, addr, "1.2")
	sub.subscribe("s", "/topic/tx")
	pub := connect(t, addr, "1.2")
	pub.send(frame("BEGIN", "transaction:t1"))
	f := frame("SEND", "destination:/topic/tx", "transaction:t1")
	f.Body = []byte("in-tx")
	pub.send(f)
	sub.expectNothing(200 * time.Millisecond)
	pub.send(frame("COMMIT", "transaction:t1", "receipt:c"))
	pub.receipt("c")
	if m := sub.expect("MESSAGE"); string(m.Body) != "in-tx" {
		t.Fatalf("got %q", m.Body)
	}
	// ABORT discards.
	pub.send(frame("BEGIN", "transaction:t2"))
	f = frame("SEND", "destination:/topic/tx", "transaction:t2")
	f.Body = []byte("aborted")
	pub.send(f)
	pub.send(frame("ABORT", "transaction:t2", "receipt:a"))
	pub.receipt("a")
	sub.expectNothing(200 * time.Millisecond)
	// An unknown transaction is an error.
	pub.send(frame("COMMIT", "transaction:nope", "receipt:x"))
	e := pub.expectErrorClose("unknown transaction")
	if e.Value("receipt-id") != "x" {
		t.Errorf("ERROR without receipt-id: %v", e.Headers)
	}
}

func TestMalformedFrames(t *testing.T) {
	t.Parallel()
	_, addr := runNode(t, "stomp: {max_frame_size: 4096, max_headers: 8, max_header_length: 512}\n")
	cases := []struct {
		name, pre, wire, want string
	}{
		{"send before connect", "", "SEND\ndestination:/topic/a\n\nx\x00", "before CONNECT"},
		{"unknown command", "c", "FOO\n\n\x00", "unknown command"},
		{"missing destination", "c", "SEND\n\nx\x00", "destination"},
		{"bad destination", "c", "SEND\ndestination:/nowhere/x\n\nx\x00", "invalid destination"},
		{"wildcard in send", "c", "SEND\ndestination:/topic/a.#\n\nx\x00", "invalid destination"},
		{"frame too large", "c", "SEND\ndestination:/topic/a\n\n" + strings.Repeat("x", 5000) + "\x00", "larger than"},
		{"content-length too large", "c", "SEND\ndestination:/topic/a\ncontent-length:99999\n\n", "larger than"},
		{"bad escape", "c", "SEND\ndestination:/topic/a\nx:\\t\n\n\x00", "escape"},
		{"too many headers", "c", "SEND\n" + strings.Repeat("a:b\n", 9) + "\nx\x00", "headers"},
		{"header too long", "c", "SEND\na:" + strings.Repeat("b", 600) + "\n\n\x00", "header line"},
		{"header without colon", "c", "SEND\nabc\n\n\x00", "without ':'"},
		{"subscribe without id", "c", "SUBSCRIBE\ndestination:/topic/a\n\n\x00", "id"},
		{"ack without id", "c", "ACK\n\n\x00", "id header"},
		{"bad ack mode", "c", "SUBSCRIBE\nid:1\ndestination:/topic/a\nack:sometimes\n\n\x00", "ack must be"},
		{"connect twice", "c", "CONNECT\naccept-version:1.2\n\n\x00", "already connected"},
		{"bad heart-beat", "", "CONNECT\naccept-version:1.2\nheart-beat:x\n\n\x00", "heart-beat"},
		{"unsubscribe unknown", "c", "UNSUBSCRIBE\nid:zz\n\n\x00", "no subscription"},
		{"bad content-length", "c", "SEND\ndestination:/topic/a\ncontent-length:abc\n\nx\x00", "content-length"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var c *client
			if tc.pre == "c" {
				c = connect(t, addr, "1.2")
			} else {
				c = dial(t, addr)
			}
			c.raw(tc.wire)
			c.expectErrorClose(tc.want)
		})
	}
}

func TestReceiptOnError(t *testing.T) {
	t.Parallel()
	_, addr := runNode(t, "")
	c := connect(t, addr, "1.2")
	c.raw("SEND\nreceipt:77\n\nx\x00")
	if e := c.expectErrorClose("destination"); e.Value("receipt-id") != "77" {
		t.Fatalf("ERROR %v", e.Headers)
	}
}

func TestConnectTimeout(t *testing.T) {
	t.Parallel()
	_, addr := runNode(t, "stomp: {connect_timeout: 300ms}\n")
	c := dial(t, addr)
	start := time.Now()
	c.expectErrorClose("no CONNECT")
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("closed after %v", d)
	}
}

func TestHeartBeats(t *testing.T) {
	t.Parallel()
	_, addr := runNode(t, "stomp: {heart_beat_send: 100ms, heart_beat_receive: 100ms}\n")
	// The client promises beats every 100ms and asks for them every 100ms.
	c := connect(t, addr, "1.2", "heart-beat:100,100")
	// The server beats: EOLs arrive (the decoder skips them; read raw).
	buf := make([]byte, 1)
	_ = c.nc.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.nc.Read(buf); err != nil || buf[0] != '\n' {
		t.Fatalf("no heart-beat: %v %q", err, buf)
	}
	// Beating keeps the connection open past the timeout.
	for range 5 {
		c.raw("\n")
		time.Sleep(80 * time.Millisecond)
	}
	c.sendMsg("/topic/hb", "alive")
	// Silence: closed with an ERROR after about 2x the interval.
	start := time.Now()
	c.expectErrorClose("heart-beat")
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("closed after %v", d)
	}
}

func TestListenerOptions(t *testing.T) {
	t.Parallel()
	n := testutil.RunNode(t, `listeners:
  - {name: mqtt, protocol: mqtt, address: "127.0.0.1:0"}
  - {name: capped, protocol: stomp, address: "127.0.0.1:0", max_connections: 1}
  - {name: proxied, protocol: stomp, address: "127.0.0.1:0", proxy_protocol: true}
`)
	capped := testutil.Addr(t, n, "capped")
	first := connect(t, capped, "1.2")
	c := dial(t, capped)
	c.send(frame("CONNECT", "accept-version:1.2"))
	c.expectErrorClose("connection limit")
	first.disconnect()
	// The slot is free again once the first connection is gone.
	deadline := time.Now().Add(5 * time.Second)
	for n.Stomp.Connections() > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	connect(t, capped, "1.2").disconnect()

	// Behind a PROXY protocol v1 header.
	p := dial(t, testutil.Addr(t, n, "proxied"))
	p.raw("PROXY TCP4 192.0.2.10 127.0.0.1 40000 61613\r\n")
	p.send(frame("CONNECT", "accept-version:1.2"))
	p.expect("CONNECTED")
}

func TestHeaderEscapingThroughTopics(t *testing.T) {
	t.Parallel()
	_, addr := runNode(t, "")
	r12 := connect(t, addr, "1.2")
	r12.subscribe("e", "/topic/esc")
	r10 := connect(t, addr, "1.0")
	r10.subscribe("e", "/topic/esc")
	p := connect(t, addr, "1.2")
	p.raw("SEND\ndestination:/topic/esc\nx-esc:a\\nb\\cc\\\\d\\re\nx\\cname:v\nreceipt:r\n\nbody\x00")
	p.receipt("r")
	f := r12.expect("MESSAGE")
	if f.Value("x-esc") != "a\nb:c\\d\re" || f.Value("x:name") != "v" {
		t.Fatalf("1.2: %q", f.Headers)
	}
	f = r10.expect("MESSAGE")
	if f.Value("x-esc") != "a b:c\\d\re" {
		t.Fatalf("1.0: %q", f.Headers)
	}
}
