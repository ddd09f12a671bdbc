package listener

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

type tlsEnv struct {
	ca, otherCA                      *testCA
	server                           *testLeaf
	client, expired, foreign, sanURI *testLeaf
}

func newTLSEnv(t *testing.T) *tlsEnv {
	t.Helper()
	e := &tlsEnv{ca: newCA(t, "isobar test CA"), otherCA: newCA(t, "rogue CA")}
	e.server = e.ca.server(t, "server-a")
	e.client = e.ca.issue(t, leafOpts{cn: "client-1", dns: []string{"dev1.example.com"}, emails: []string{"dev1@example.com"}, client: true})
	e.expired = e.ca.issue(t, leafOpts{cn: "old", client: true,
		notBefore: time.Now().Add(-48 * time.Hour), notAfter: time.Now().Add(-24 * time.Hour)})
	e.foreign = e.otherCA.issue(t, leafOpts{cn: "client-1", client: true})
	e.sanURI = e.ca.issue(t, leafOpts{uris: []string{"spiffe://isobar/device/42"}, client: true})
	return e
}

// clientConfig presents cert (if any) whatever CAs the server asks for,
// so that certificates of a foreign CA really reach the server.
func (e *tlsEnv) clientConfig(cert *testLeaf) *tls.Config {
	c := &tls.Config{RootCAs: e.ca.pool(), ServerName: "localhost"}
	if cert != nil {
		c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return &cert.tls, nil
		}
	}
	return c
}

// expectTLSRefused asserts that the server refuses the client promptly
// (an alert or a close, not a timeout).
func expectTLSRefused(t *testing.T, addr net.Addr, cfg *tls.Config) {
	t.Helper()
	_, err := tlsClientOutcome(t, addr, cfg)
	if err == nil {
		t.Fatal("client accepted")
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("no refusal from the server: %v", err)
	}
}

func (e *tlsEnv) listener(t *testing.T, clientCA bool, require bool, mod func(*Config)) (Listener, tlsFiles, *logCapture) {
	t.Helper()
	var ca *testCA
	if clientCA {
		ca = e.ca
	}
	f := writeTLSFiles(t, e.server, ca)
	cfg := Config{TLS: &TLSConfig{CertFile: f.cert, KeyFile: f.key, ClientCAFile: f.ca, RequireClientCert: require, ReloadInterval: -1}}
	if mod != nil {
		mod(&cfg)
	}
	l, logs := startListener(t, cfg)
	return l, f, logs
}

// tlsClientOutcome dials with cfg and reports whether the server accepted
// the connection: in TLS 1.3 a rejected client certificate only shows up
// on the client's first read.
func tlsClientOutcome(t *testing.T, addr net.Addr, cfg *tls.Config) (*tls.Conn, error) {
	t.Helper()
	c, err := tlsDial(t, addr, cfg)
	if err != nil {
		return nil, err
	}
	if _, err := c.Write([]byte("ping")); err != nil {
		return nil, err
	}
	_ = c.SetReadDeadline(time.Now().Add(testTimeout))
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil {
		return nil, err
	}
	_ = c.SetReadDeadline(time.Time{})
	return c, nil
}

// serveOne accepts one connection and answers "ping" with "pong".
func serveOne(t *testing.T, l Listener) <-chan net.Conn {
	ch := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			close(ch)
			return
		}
		buf := make([]byte, 4)
		_ = c.SetReadDeadline(time.Now().Add(testTimeout))
		if _, err := io.ReadFull(c, buf); err == nil {
			_, _ = c.Write([]byte("pong"))
		}
		_ = c.SetReadDeadline(time.Time{})
		ch <- c
	}()
	return ch
}

func recvConn(t *testing.T, ch <-chan net.Conn) net.Conn {
	t.Helper()
	select {
	case c, ok := <-ch:
		if !ok {
			t.Fatal("Accept failed")
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	case <-time.After(testTimeout):
		t.Fatal("no connection accepted")
		return nil
	}
}

func TestTLSRequireClientCert(t *testing.T) {
	e := newTLSEnv(t)
	l, _, _ := e.listener(t, true, true, nil)
	if _, ok := l.(Reloader); !ok {
		t.Fatal("TLS listener does not implement Reloader")
	}

	srv := serveOne(t, l)
	if _, err := tlsClientOutcome(t, l.Addr(), e.clientConfig(e.client)); err != nil {
		t.Fatalf("valid client refused: %v", err)
	}
	sc := recvConn(t, srv)
	if _, ok := sc.(*tls.Conn); !ok {
		t.Fatalf("accepted %T", sc)
	}
	st, ok := TLSState(sc)
	if !ok || !st.HandshakeComplete || len(st.PeerCertificates) == 0 {
		t.Fatalf("TLSState %v %v", st, ok)
	}
	if st.Version < tls.VersionTLS12 {
		t.Fatalf("version %x", st.Version)
	}
	if id, ok := PeerIdentity(sc, "cn"); !ok || id != "client-1" {
		t.Fatalf("cn identity %q %v", id, ok)
	}
	if id, ok := PeerIdentity(sc, "san"); !ok || id != "dev1.example.com" {
		t.Fatalf("san identity %q %v", id, ok)
	}
	if _, ok := PeerIdentity(sc, "serial"); ok {
		t.Fatal("unknown identity source accepted")
	}

	for _, tc := range []struct {
		name string
		cert *testLeaf
	}{
		{"no certificate", nil},
		{"expired certificate", e.expired},
		{"certificate from another CA", e.foreign},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ch := acceptAsync(l)
			expectTLSRefused(t, l.Addr(), e.clientConfig(tc.cert))
			expectNoAccept(t, ch, 20*time.Millisecond)
			// The listener keeps working and delivers the next good client.
			if _, err := tlsDial(t, l.Addr(), e.clientConfig(e.client)); err != nil {
				t.Fatal(err)
			}
			sc := waitAccept(t, ch)
			if id, _ := PeerIdentity(sc, "cn"); id != "client-1" {
				t.Fatalf("delivered connection has identity %q", id)
			}
		})
	}
}

func TestTLSOptionalClientCert(t *testing.T) {
	e := newTLSEnv(t)
	l, _, _ := e.listener(t, true, false, nil)

	srv := serveOne(t, l)
	if _, err := tlsClientOutcome(t, l.Addr(), e.clientConfig(nil)); err != nil {
		t.Fatalf("client without certificate refused: %v", err)
	}
	sc := recvConn(t, srv)
	if _, ok := PeerIdentity(sc, "cn"); ok {
		t.Fatal("identity without certificate")
	}
	if st, ok := TLSState(sc); !ok || len(st.PeerCertificates) != 0 {
		t.Fatalf("TLSState %v %v", st, ok)
	}

	srv = serveOne(t, l)
	if _, err := tlsClientOutcome(t, l.Addr(), e.clientConfig(e.sanURI)); err != nil {
		t.Fatalf("client with URI SAN refused: %v", err)
	}
	sc = recvConn(t, srv)
	if id, ok := PeerIdentity(sc, "san"); !ok || id != "spiffe://isobar/device/42" {
		t.Fatalf("uri san %q %v", id, ok)
	}
	if _, ok := PeerIdentity(sc, "cn"); ok {
		t.Fatal("empty CN reported as identity")
	}

	// A presented certificate is still verified.
	for _, bad := range []*testLeaf{e.foreign, e.expired} {
		ch := acceptAsync(l)
		expectTLSRefused(t, l.Addr(), e.clientConfig(bad))
		expectNoAccept(t, ch, 20*time.Millisecond)
		if _, err := tlsDial(t, l.Addr(), e.clientConfig(nil)); err != nil {
			t.Fatal(err)
		}
		waitAccept(t, ch)
	}
}

func TestCertIdentitySANOrder(t *testing.T) {
	e := newTLSEnv(t)
	email := e.ca.issue(t, leafOpts{cn: "x", emails: []string{"a@b.c"}, uris: []string{"urn:x"}, client: true})
	leaf, err := x509.ParseCertificate(email.tls.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if id, ok := certIdentity(leaf, "san"); !ok || id != "a@b.c" {
		t.Fatalf("email san: %q %v", id, ok)
	}
}

func TestTLSMinVersion13(t *testing.T) {
	e := newTLSEnv(t)
	l, _, _ := e.listener(t, false, false, func(c *Config) { c.TLS.MinVersion = "1.3" })
	cfg := e.clientConfig(nil)
	cfg.MaxVersion = tls.VersionTLS12
	if _, err := tlsDial(t, l.Addr(), cfg); err == nil {
		t.Fatal("TLS 1.2 client accepted by a 1.3-only listener")
	}
	srv := serveOne(t, l)
	if _, err := tlsClientOutcome(t, l.Addr(), e.clientConfig(nil)); err != nil {
		t.Fatal(err)
	}
	if st, _ := TLSState(recvConn(t, srv)); st.Version != tls.VersionTLS13 {
		t.Fatalf("version %x", st.Version)
	}
	// Default minimum is 1.2: a 1.1 client is refused.
	l2, _, _ := e.listener(t, false, false, nil)
	cfg = e.clientConfig(nil)
	cfg.MinVersion, cfg.MaxVersion = tls.VersionTLS10, tls.VersionTLS11
	if _, err := tlsDial(t, l2.Addr(), cfg); err == nil {
		t.Fatal("TLS 1.1 client accepted")
	}
}

func TestTLSPlainBytesFailCleanly(t *testing.T) {
	e := newTLSEnv(t)
	l, _, logs := e.listener(t, false, false, nil)
	ch := acceptAsync(l)
	c := dialTCP(t, l.Addr())
	if _, err := c.Write([]byte("\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00")); err != nil {
		t.Fatal(err)
	}
	expectClosed(t, c)
	expectNoAccept(t, ch, 20*time.Millisecond)
	if _, err := tlsDial(t, l.Addr(), e.clientConfig(nil)); err != nil {
		t.Fatal(err)
	}
	waitAccept(t, ch)
	if !logs.contains("tls handshake") {
		t.Fatal("failed handshake not logged")
	}
}

// TestTLSHandshakeDoesNotBlockAccept: clients that never send a
// ClientHello neither delay others nor live past HandshakeTimeout.
func TestTLSHandshakeDoesNotBlockAccept(t *testing.T) {
	const timeout = time.Second
	e := newTLSEnv(t)
	l, _, _ := e.listener(t, false, false, func(c *Config) { c.HandshakeTimeout = timeout })
	dialed := time.Now()
	silent := []*net.TCPConn{dialTCP(t, l.Addr()), dialTCP(t, l.Addr())}
	partial := dialTCP(t, l.Addr())
	if _, err := partial.Write([]byte{0x16, 0x03, 0x01, 0x02}); err != nil { // start of a record
		t.Fatal(err)
	}
	start := time.Now()
	srv := serveOne(t, l)
	if _, err := tlsClientOutcome(t, l.Addr(), e.clientConfig(nil)); err != nil {
		t.Fatal(err)
	}
	recvConn(t, srv)
	if d := time.Since(start); d >= timeout {
		t.Fatalf("good client took %v", d)
	}
	for _, c := range append(silent, partial) {
		expectClosed(t, c)
	}
	if d := time.Since(dialed); d < timeout {
		t.Fatalf("stalled handshakes closed after %v", d)
	}
}

func serverCN(t *testing.T, addr net.Addr, cfg *tls.Config) string {
	t.Helper()
	c, err := tlsDial(t, addr, cfg)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].Subject.CommonName
}

func TestTLSReload(t *testing.T) {
	e := newTLSEnv(t)
	l, f, _ := e.listener(t, false, false, nil)

	srv := serveOne(t, l)
	old, err := tlsClientOutcome(t, l.Addr(), e.clientConfig(nil))
	if err != nil {
		t.Fatal(err)
	}
	oldServer := recvConn(t, srv)
	if cn := old.ConnectionState().PeerCertificates[0].Subject.CommonName; cn != "server-a" {
		t.Fatalf("initial cert %q", cn)
	}

	b := e.ca.server(t, "server-b")
	writeFileAtomic(t, f.cert, b.certPEM)
	writeFileAtomic(t, f.key, b.keyPEM)
	if err := l.(Reloader).Reload(); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	ch := acceptAsync(l)
	if cn := serverCN(t, l.Addr(), e.clientConfig(nil)); cn != "server-b" {
		t.Fatalf("after reload new connections see %q", cn)
	}
	waitAccept(t, ch)
	// The existing connection is untouched.
	roundTrip(t, old, oldServer, "still up")
	roundTrip(t, oldServer, old, "both ways")

	// A broken replacement is refused and the current cert stays.
	if err := os.WriteFile(f.cert, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := l.(Reloader).Reload(); err == nil {
		t.Fatal("Reload accepted a broken certificate")
	}
	ch = acceptAsync(l)
	if cn := serverCN(t, l.Addr(), e.clientConfig(nil)); cn != "server-b" {
		t.Fatalf("after failed reload new connections see %q", cn)
	}
	waitAccept(t, ch)
	// Mismatched key.
	c := e.ca.server(t, "server-c")
	writeFileAtomic(t, f.cert, c.certPEM)
	if err := l.(Reloader).Reload(); err == nil || !strings.Contains(err.Error(), "private key does not match") {
		t.Fatalf("Reload with mismatched key: %v", err)
	}
}

func TestTLSReloadPolling(t *testing.T) {
	e := newTLSEnv(t)
	f := writeTLSFiles(t, e.server, e.ca)
	l, logs := startListener(t, Config{TLS: &TLSConfig{CertFile: f.cert, KeyFile: f.key,
		ClientCAFile: f.ca, RequireClientCert: true, ReloadInterval: 10 * time.Millisecond}})
	cfg := e.clientConfig(e.client)

	var wg sync.WaitGroup
	t.Cleanup(func() { _ = l.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				buf := make([]byte, 4)
				_ = c.SetReadDeadline(time.Now().Add(testTimeout))
				if _, err := io.ReadFull(c, buf); err == nil {
					_, _ = c.Write([]byte("pong"))
				}
			})
		}
	})

	// Cert first, key a little later: the mismatch in between must not
	// stick.
	b := e.ca.server(t, "server-b")
	writeFileAtomic(t, f.cert, b.certPEM)
	deadline := time.Now().Add(testTimeout)
	for !logs.contains("reload failed") {
		if time.Now().After(deadline) {
			t.Fatal("mismatched cert/key not reported")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if cn := serverCN(t, l.Addr(), cfg); cn != "server-a" {
		t.Fatalf("during the failed reload new connections see %q", cn)
	}
	writeFileAtomic(t, f.key, b.keyPEM)
	for serverCN(t, l.Addr(), cfg) != "server-b" {
		if time.Now().After(deadline) {
			t.Fatal("polling did not pick up the new certificate")
		}
		time.Sleep(10 * time.Millisecond)
	}

	// Client CA rotation: clients of the new CA are accepted, the old
	// CA's clients refused.
	newCA := newCA(t, "next CA")
	writeFileAtomic(t, f.ca, newCA.pem)
	newClient := newCA.issue(t, leafOpts{cn: "client-2", client: true})
	for {
		_, err := tlsClientOutcome(t, l.Addr(), e.clientConfig(newClient))
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("client CA not reloaded: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	expectTLSRefused(t, l.Addr(), cfg)
}

func TestTLSWithProxyProtocol(t *testing.T) {
	e := newTLSEnv(t)
	l, _, _ := e.listener(t, true, true, func(c *Config) { c.ProxyProtocol = true })
	ch := acceptAsync(l)
	raw := dialTCP(t, l.Addr())
	if _, err := raw.Write([]byte("PROXY TCP4 192.0.2.10 198.51.100.1 56324 8883\r\n")); err != nil {
		t.Fatal(err)
	}
	tc := tls.Client(raw, e.clientConfig(e.client))
	_ = tc.SetDeadline(time.Now().Add(testTimeout))
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	sc := waitAccept(t, ch)
	if sc.RemoteAddr().String() != "192.0.2.10:56324" {
		t.Fatalf("RemoteAddr %v", sc.RemoteAddr())
	}
	if id, ok := PeerIdentity(sc, "cn"); !ok || id != "client-1" {
		t.Fatalf("identity %q %v", id, ok)
	}
	roundTrip(t, tc, sc, "through proxy and tls")

	// Without the PROXY header the TLS ClientHello is refused.
	ch2 := acceptAsync(l)
	if _, err := tlsDial(t, l.Addr(), e.clientConfig(e.client)); err == nil {
		t.Fatal("TLS without PROXY header accepted")
	}
	expectNoAccept(t, ch2, 20*time.Millisecond)
}

func TestWriteBuffersTLSCoalesces(t *testing.T) {
	e := newTLSEnv(t)
	l, _, _ := e.listener(t, false, false, nil)
	srv := serveOne(t, l)
	cc, err := tlsClientOutcome(t, l.Addr(), e.clientConfig(nil))
	if err != nil {
		t.Fatal(err)
	}
	sc := recvConn(t, srv)
	var want []byte
	var v net.Buffers
	for i := range 200 {
		b := make([]byte, 1000+i)
		for j := range b {
			b[j] = byte(i + j)
		}
		want = append(want, b...)
		v = append(v, b)
	}
	errc := make(chan error, 1)
	go func() {
		n, err := WriteBuffers(sc, &v)
		if err == nil && (n != int64(len(want)) || len(v) != 0) {
			err = errors.New("short write")
		}
		errc <- err
	}()
	got := make([]byte, len(want))
	_ = cc.SetReadDeadline(time.Now().Add(testTimeout))
	if _, err := io.ReadFull(cc, got); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Fatal("data corrupted")
	}
}
