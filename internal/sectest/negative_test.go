package sectest

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/isobar-mq/isobar/internal/mqtt/packet"
)

// proxyV2 is a PROXY protocol v2 header (PROXY command, TCP over IPv4).
func proxyV2(src, dst netip.AddrPort) []byte {
	b := []byte("\r\n\r\n\x00\r\nQUIT\n")
	b = append(b, 0x21, 0x11, 0, 12)
	s4, d4 := src.Addr().As4(), dst.Addr().As4()
	b = append(b, s4[:]...)
	b = append(b, d4[:]...)
	b = binary.BigEndian.AppendUint16(b, src.Port())
	return binary.BigEndian.AppendUint16(b, dst.Port())
}

// connectBytes is a complete MQTT 3.1.1 CONNECT.
func connectBytes(id string) []byte {
	c := packet.Connect{ProtocolName: "MQTT", ProtocolVersion: packet.V311, CleanStart: true, KeepAlive: 30, ClientID: id}
	return c.Append(nil)
}

// expectDropped requires the server to close conn without an MQTT answer
// (bytes of a TLS alert or an HTTP error are allowed, a CONNACK is not).
func expectDropped(t *testing.T, conn net.Conn, what string) {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(timeout))
	got, err := io.ReadAll(conn)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("%s: connection still open after %v (received % X)", what, timeout, got)
	}
	if len(got) > 0 && got[0] == 0x20 {
		t.Fatalf("%s: the broker answered with a CONNACK % X", what, got)
	}
	t.Logf("%s: closed (after %d bytes % X; %v)", what, len(got), got, err)
}

// TestNegativeTransport: wrong protocols and malformed preambles on TLS,
// PROXY protocol and WebSocket listeners are closed, and clients already
// connected to the same listeners keep publishing and receiving.
func TestNegativeTransport(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	n := startNode(t, fmt.Sprintf(`listeners:
  - {name: mqtt, protocol: mqtt, address: "127.0.0.1:0"}
  - name: tls
    protocol: mqtt
    address: "127.0.0.1:0"
    handshake_timeout: 500ms
    tls: {cert_file: %q, key_file: %q}
  - {name: proxied, protocol: mqtt, address: "127.0.0.1:0", proxy_protocol: true, proxy_header_timeout: 500ms}
  - {name: ws, protocol: ws, address: "127.0.0.1:0", ws_max_frame: 1024, ws_path: /broker/mqtt}
`, p.ServerCert, p.ServerKey))
	tlsAddr, proxyAddr, wsURL := addr(t, n, "tls"), addr(t, n, "proxied"), "ws://"+addr(t, n, "ws")+"/broker/mqtt"

	// One control client per listener; the one behind the PROXY header
	// claims 198.51.100.7:4242, which is what the broker must see.
	pconn := dialTCP(t, proxyAddr)
	if _, err := pconn.Write(proxyV2(netip.MustParseAddrPort("198.51.100.7:4242"), netip.MustParseAddrPort(proxyAddr))); err != nil {
		t.Fatal(err)
	}
	controls := []*mc{
		connectTCP(t, addr(t, n, "mqtt"), connOpts{id: "ctl-tcp", v: packet.V5}),
		connect(t, mustDialTLS(t, tlsAddr, p.clientTLS()), connOpts{id: "ctl-tls", v: packet.V5}, 0),
		connect(t, pconn, connOpts{id: "ctl-proxy"}, 0),
		connect(t, mustDialWS(t, wsURL, nil), connOpts{id: "ctl-ws", v: packet.V5}, 0),
	}
	if v, _ := clientView(n, "ctl-proxy"); v.Remote != "198.51.100.7:4242" {
		t.Fatalf("client behind the PROXY header seen from %q, want 198.51.100.7:4242", v.Remote)
	}
	for _, c := range controls {
		c.mustSubscribe("ctl/all", "ctl/"+c.name)
	}
	round := 0
	controlsWork := func(after string) {
		t.Helper()
		round++
		for _, c := range controls {
			c.mustPublish("ctl/"+c.name, fmt.Sprint(round))
			c.expectMsg("ctl/"+c.name, fmt.Sprint(round))
		}
		controls[0].mustPublish("ctl/all", after)
		for _, c := range controls {
			c.expectMsg("ctl/all", after)
		}
	}
	controlsWork("start")

	t.Run("plain MQTT to the TLS port", func(t *testing.T) {
		c := dialTCP(t, tlsAddr)
		if _, err := c.Write(connectBytes("plain")); err != nil {
			t.Fatal(err)
		}
		expectDropped(t, c, "plain CONNECT on TLS")
		controlsWork("after plain MQTT on TLS")
	})
	t.Run("silent TLS client", func(t *testing.T) {
		start := time.Now()
		expectDropped(t, dialTCP(t, tlsAddr), "no ClientHello")
		if d := time.Since(start); d > 3*time.Second {
			t.Fatalf("closed after %v, handshake_timeout is 500ms", d)
		}
		controlsWork("after a silent TLS client")
	})
	t.Run("garbage before the PROXY header", func(t *testing.T) {
		for name, pre := range map[string][]byte{
			"HTTP request line": []byte("GET / HTTP/1.1\r\n"),
			"one NUL byte":      {0},
			"no header at all":  nil,
		} {
			c := dialTCP(t, proxyAddr)
			msg := append(append(pre, proxyV2(netip.MustParseAddrPort("203.0.113.9:1000"), netip.MustParseAddrPort(proxyAddr))...), connectBytes("garbage")...)
			if pre == nil {
				msg = connectBytes("garbage")
			}
			if _, err := c.Write(msg); err != nil {
				t.Fatal(err)
			}
			expectDropped(t, c, name)
		}
		// A v1 header with an extra field is refused too.
		c := dialTCP(t, proxyAddr)
		if _, err := io.WriteString(c, "PROXY TCP4 203.0.113.9 127.0.0.1 1000 1883 extra\r\n"); err != nil {
			t.Fatal(err)
		}
		expectDropped(t, c, "malformed v1 header")
		start := time.Now()
		expectDropped(t, dialTCP(t, proxyAddr), "no PROXY header within proxy_header_timeout")
		if d := time.Since(start); d > 3*time.Second {
			t.Fatalf("closed after %v, proxy_header_timeout is 500ms", d)
		}
		if _, ok := clientView(n, "garbage"); ok {
			t.Fatal("a client behind garbage got connected")
		}
		controlsWork("after garbage before PROXY headers")
	})
	t.Run("oversized WebSocket frame", func(t *testing.T) {
		wc := mustDialWS(t, wsURL, nil)
		big := connect(t, wc, connOpts{id: "big-frame", v: packet.V5}, 0)
		pub := packet.Publish{Topic: "ctl/all", Payload: bytes.Repeat([]byte("x"), 2000)}
		big.send(pub.Append(nil, packet.V5)) // one frame of ~2 KB; ws_max_frame is 1024
		_ = wc.SetReadDeadline(time.Now().Add(timeout))
		_, err := io.ReadAll(wc)
		var wce *wsClosed
		if !errors.As(err, &wce) || wce.code != 1009 {
			t.Fatalf("after a 2 KB frame: %v, want a close frame with status 1009", err)
		}
		waitGone(t, n, "big-frame")
		controlsWork("after an oversized frame") // the big message was not delivered
	})
	t.Run("WebSocket without the mqtt subprotocol", func(t *testing.T) {
		for _, protos := range [][]string{nil, {"wamp"}, {"mqttv5"}} {
			_, err := dialWS(t, wsURL, protos, nil, nil)
			var se ws.StatusError
			if !errors.As(err, &se) || int(se) != 400 {
				t.Fatalf("subprotocols %q: %v, want HTTP 400", protos, err)
			}
		}
		for _, path := range []string{"/mqtt", "/broker", "/broker/mqtt/x"} { // ws_path is /broker/mqtt
			_, err := dialWS(t, "ws://"+addr(t, n, "ws")+path, []string{"mqtt"}, nil, nil)
			var se ws.StatusError
			if !errors.As(err, &se) || int(se) != 404 {
				t.Fatalf("path %s: %v, want HTTP 404", path, err)
			}
		}
		controlsWork("after refused upgrades")
	})
	if got := len(n.Server.Clients()); got != len(controls) {
		t.Fatalf("%d clients connected, want the %d controls: %+v", got, len(controls), n.Server.Clients())
	}
}
