package listener

import (
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// dialFrom connects to addr from the loopback address local (any of
// 127.0.0.0/8 works on Linux without configuration).
func dialFrom(t testing.TB, local string, addr net.Addr) *net.TCPConn {
	t.Helper()
	d := net.Dialer{Timeout: testTimeout, LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
	c, err := d.Dial("tcp", addr.String())
	if err != nil {
		t.Fatalf("dial from %s: %v", local, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c.(*net.TCPConn)
}

// TestProxyProtocolUntrustedPeer: on a proxy_protocol listener only the
// peers in proxy_protocol_trusted may connect; anyone else (who could
// otherwise claim any client address in the header) is closed before
// anything is read, counted, and logged at warn level, rate-limited.
func TestProxyProtocolUntrustedPeer(t *testing.T) {
	l, logs := startListener(t, Config{
		Address:              "127.0.0.1:0",
		ProxyProtocol:        true,
		ProxyProtocolTrusted: Networks{netip.MustParsePrefix("127.0.0.1/32")},
	})
	ch := acceptAsync(l)
	const attempts = 3
	for range attempts {
		c := dialFrom(t, "127.0.0.2", l.Addr())
		// A valid header claiming a trusted address does not help.
		if _, err := c.Write([]byte("PROXY TCP4 127.0.0.1 127.0.0.1 40000 1883\r\n\x10\x0c\x00\x04MQTT")); err != nil {
			t.Fatal(err)
		}
		expectClosed(t, c)
	}
	expectNoAccept(t, ch, 50*time.Millisecond)
	if got := l.Stats().ProxyUntrusted.Load(); got != attempts {
		t.Errorf("ProxyUntrusted = %d, want %d", got, attempts)
	}
	warns := 0
	logs.mu.Lock()
	for _, line := range logs.lines {
		if strings.Contains(line, "level=WARN") && strings.Contains(line, "127.0.0.2") {
			warns++
		}
	}
	logs.mu.Unlock()
	if warns != 1 {
		t.Errorf("%d warnings for %d refusals, want 1 (rate-limited): %v", warns, attempts, logs.lines)
	}
	// Closed before the header was read: no parse outcome was logged.
	if logs.contains("proxy protocol:") || logs.contains("connection setup failed") {
		t.Errorf("the untrusted peer's header was read: %v", logs.lines)
	}

	// The trusted proxy is served as before.
	good := dialFrom(t, "127.0.0.1", l.Addr())
	if _, err := good.Write([]byte("PROXY TCP4 192.0.2.10 198.51.100.1 56324 1883\r\n")); err != nil {
		t.Fatal(err)
	}
	if sc := waitAccept(t, ch); sc.RemoteAddr().String() != "192.0.2.10:56324" {
		t.Fatalf("RemoteAddr %v", sc.RemoteAddr())
	}
}

// TestProxyProtocolDefaultTrust: without proxy_protocol_trusted only
// loopback peers are trusted; a listener without proxy_protocol accepts
// everyone, unchanged.
func TestProxyProtocolDefaultTrust(t *testing.T) {
	l, _ := startListener(t, Config{ProxyProtocol: true})
	if got := l.Config().ProxyProtocolTrusted; len(got) != 2 || got[0].String() != "127.0.0.0/8" || got[1].String() != "::1/128" {
		t.Fatalf("default proxy_protocol_trusted %v", got)
	}
	ch := acceptAsync(l)
	c := dialFrom(t, "127.0.0.3", l.Addr())
	if _, err := c.Write([]byte("PROXY TCP4 192.0.2.10 198.51.100.1 56324 1883\r\n")); err != nil {
		t.Fatal(err)
	}
	if sc := waitAccept(t, ch); sc.RemoteAddr().String() != "192.0.2.10:56324" {
		t.Fatalf("RemoteAddr %v", sc.RemoteAddr())
	}
	if l.Stats().ProxyUntrusted.Load() != 0 {
		t.Fatal("loopback peer counted as untrusted")
	}

	plain, _ := startListener(t, Config{})
	if len(plain.Config().ProxyProtocolTrusted) != 0 {
		t.Fatalf("proxy_protocol_trusted set on a listener without proxy_protocol: %v", plain.Config().ProxyProtocolTrusted)
	}
	ch = acceptAsync(plain)
	dialFrom(t, "127.0.0.4", plain.Addr())
	if sc := waitAccept(t, ch); !strings.HasPrefix(sc.RemoteAddr().String(), "127.0.0.4:") {
		t.Fatalf("RemoteAddr %v", sc.RemoteAddr())
	}
}
