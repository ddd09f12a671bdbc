package cluster

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func hsKey(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }

func hsCfg(name string, start int64, key []byte) HandshakeConfig {
	return HandshakeConfig{LocalName: name, LocalStart: start, Key: key, Timeout: 2 * time.Second}
}

type hsResult struct {
	conn net.Conn
	peer PeerInfo
	err  error
}

// hsRun runs both sides over the two ends of a connection.
func hsRun(dconn, aconn net.Conn, d, a HandshakeConfig, expect string) (hsResult, hsResult) {
	var dr, ar hsResult
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		dr.conn, dr.peer, dr.err = ClientHandshake(dconn, d, expect)
	}()
	go func() {
		defer wg.Done()
		ar.conn, ar.peer, ar.err = ServerHandshake(aconn, a)
	}()
	wg.Wait()
	return dr, ar
}

// linkTCPPair returns the two ends of a TCP connection on 127.0.0.1.
func linkTCPPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ch := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			ch <- nil
			return
		}
		ch <- c
	}()
	d, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	a := <-ch
	if a == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { d.Close(); a.Close() })
	return d, a
}

func hsCheckOK(t *testing.T, dr, ar hsResult, dname string, dstart int64, aname string, astart int64) {
	t.Helper()
	if dr.err != nil || ar.err != nil {
		t.Fatalf("handshake failed: dialer %v, acceptor %v", dr.err, ar.err)
	}
	if dr.peer != (PeerInfo{aname, astart}) || ar.peer != (PeerInfo{dname, dstart}) {
		t.Fatalf("peers: dialer saw %+v, acceptor saw %+v", dr.peer, ar.peer)
	}
	// The deadline is cleared and the connection carries data both ways.
	go func() { _, _ = dr.conn.Write([]byte("ping")) }()
	got := make([]byte, 4)
	if _, err := io.ReadFull(ar.conn, got); err != nil || string(got) != "ping" {
		t.Fatalf("after the handshake: %q %v", got, err)
	}
}

func TestHandshakePipe(t *testing.T) {
	key := hsKey(1)
	d, a := net.Pipe()
	defer d.Close()
	defer a.Close()
	dr, ar := hsRun(d, a, hsCfg("n1", 11, key), hsCfg("n2", 22, key), "n2")
	hsCheckOK(t, dr, ar, "n1", 11, "n2", 22)
}

func TestHandshakeTCP(t *testing.T) {
	key := hsKey(1)
	d, a := linkTCPPair(t)
	dcfg, acfg := hsCfg("n1", 11, key), hsCfg("n2", -5, key)
	dcfg.Timeout, acfg.Timeout = 200*time.Millisecond, 200*time.Millisecond
	dr, ar := hsRun(d, a, dcfg, acfg, "")
	// Wait past the handshake timeout: the deadline must have been cleared.
	time.Sleep(300 * time.Millisecond)
	hsCheckOK(t, dr, ar, "n1", 11, "n2", -5)
}

func TestHandshakeWrongKeyFailsBothSides(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewLinkMetrics(reg)
	d, a := linkTCPPair(t)
	dcfg, acfg := hsCfg("n1", 1, hsKey(1)), hsCfg("n2", 2, hsKey(2))
	acfg.Metrics = m
	dr, ar := hsRun(d, a, dcfg, acfg, "n2")
	if !errors.Is(dr.err, ErrAuthFailed) || !errors.Is(ar.err, ErrAuthFailed) {
		t.Fatalf("dialer %v, acceptor %v: want ErrAuthFailed on both", dr.err, ar.err)
	}
	if dr.conn != nil || ar.conn != nil {
		t.Fatal("a connection returned on failure")
	}
	if n := testutil.ToFloat64(m.authFailures); n != 1 {
		t.Fatalf("auth failures %v, want 1", n)
	}
}

func TestHandshakeExpectNameMismatch(t *testing.T) {
	key := hsKey(1)
	d, a := net.Pipe()
	dr, ar := hsRun(d, a, hsCfg("n1", 1, key), hsCfg("n2", 2, key), "n3")
	if !errors.Is(dr.err, ErrAuthFailed) || !errors.Is(ar.err, ErrAuthFailed) {
		t.Fatalf("dialer %v, acceptor %v: want ErrAuthFailed on both", dr.err, ar.err)
	}
	// A dialer claiming the acceptor's own name is refused too.
	d, a = net.Pipe()
	dr, ar = hsRun(d, a, hsCfg("n2", 1, key), hsCfg("n2", 2, key), "")
	if !errors.Is(dr.err, ErrAuthFailed) || !errors.Is(ar.err, ErrAuthFailed) {
		t.Fatalf("same name: dialer %v, acceptor %v", dr.err, ar.err)
	}
}

// hsRecordConn records what is written to it.
type hsRecordConn struct {
	net.Conn
	mu  sync.Mutex
	out bytes.Buffer
}

func (c *hsRecordConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.out.Write(p)
	c.mu.Unlock()
	return c.Conn.Write(p)
}

func (c *hsRecordConn) written() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return bytes.Clone(c.out.Bytes())
}

func TestHandshakeReplayFails(t *testing.T) {
	key := hsKey(1)
	d, a := net.Pipe()
	rd, ra := &hsRecordConn{Conn: d}, &hsRecordConn{Conn: a}
	dr, ar := hsRun(rd, ra, hsCfg("n1", 1, key), hsCfg("n2", 2, key), "n2")
	hsCheckOK(t, dr, ar, "n1", 1, "n2", 2)
	dialerBytes, acceptorBytes := rd.written(), ra.written()
	dialerBytes = dialerBytes[:len(dialerBytes)-4] // minus hsCheckOK's "ping"

	// The dialer's transcript replayed to a new acceptor.
	x, y := linkTCPPair(t)
	go func(x net.Conn) {
		_, _ = x.Write(dialerBytes)
		_, _ = io.Copy(io.Discard, x)
	}(x)
	_, _, err := ServerHandshake(y, hsCfg("n2", 2, key))
	x.Close()
	if !errors.Is(err, ErrAuthFailed) {
		t.Fatalf("replayed dialer transcript: %v, want ErrAuthFailed", err)
	}

	// The acceptor's transcript replayed to a new dialer.
	x, y = linkTCPPair(t)
	go func(x net.Conn) {
		pre := make([]byte, 5)
		if _, err := io.ReadFull(x, pre); err != nil {
			return
		}
		_, _ = x.Write(acceptorBytes)
		_, _ = io.Copy(io.Discard, x)
	}(x)
	_, _, err = ClientHandshake(y, hsCfg("n1", 1, key), "n2")
	x.Close()
	if !errors.Is(err, ErrAuthFailed) {
		t.Fatalf("replayed acceptor transcript: %v, want ErrAuthFailed", err)
	}
}

// Without the key a connection gets 32 random bytes from the acceptor, then
// a close: no name, no incarnation, no reason.
func TestHandshakeAcceptorRevealsNothingBeforeProof(t *testing.T) {
	d, a := linkTCPPair(t)
	done := make(chan error, 1)
	go func() {
		_, _, err := ServerHandshake(a, hsCfg("secret-name", 99, hsKey(1)))
		done <- err
	}()
	dcfg := hsCfg("n1", 1, hsKey(2))
	rc := &hsReadRecorder{Conn: d}
	_, _, err := ClientHandshake(rc, dcfg, "")
	if !errors.Is(err, ErrAuthFailed) {
		t.Fatalf("dialer: %v", err)
	}
	if err := <-done; !errors.Is(err, ErrAuthFailed) {
		t.Fatalf("acceptor: %v", err)
	}
	if got := rc.n; got != nonceLen {
		t.Fatalf("the acceptor sent %d bytes to an unauthenticated dialer, want only the %d-byte nonce", got, nonceLen)
	}
}

type hsReadRecorder struct {
	net.Conn
	n int
}

func (r *hsReadRecorder) Read(p []byte) (int, error) {
	n, err := r.Conn.Read(p)
	r.n += n
	return n, err
}

func TestHandshakeSilentPeerTimesOut(t *testing.T) {
	key := hsKey(1)
	cfg := hsCfg("n1", 1, key)
	cfg.Timeout = 150 * time.Millisecond

	// A dialer that connects and says nothing.
	d, a := linkTCPPair(t)
	start := time.Now()
	_, _, err := ServerHandshake(a, cfg)
	if !errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, ErrAuthFailed) {
		t.Fatalf("silent dialer: %v, want a deadline error", err)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("took %v", el)
	}
	// The acceptor closed the connection.
	_ = d.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := d.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("after the timeout the dialer reads %v, want EOF", err)
	}

	// An acceptor that accepts and says nothing.
	d, a = linkTCPPair(t)
	go func(a net.Conn) { _, _ = io.Copy(io.Discard, a) }(a)
	_, _, err = ClientHandshake(d, cfg, "")
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("silent acceptor: %v, want a deadline error", err)
	}

	// A dialer that sends a valid preamble, then half a hello, then stalls.
	d, a = linkTCPPair(t)
	go func(d net.Conn) {
		_, _ = d.Write([]byte("ISBL\x01\x00\x50n1"))
		_, _ = io.Copy(io.Discard, d)
	}(d)
	_, _, err = ServerHandshake(a, cfg)
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("stalled dialer: %v, want a deadline error", err)
	}
}

func TestHandshakeGarbage(t *testing.T) {
	key := hsKey(1)
	cases := map[string][]byte{
		"http":        []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
		"bad length":  append([]byte("ISBL\x01"), 0xff, 0xff),
		"zero length": append([]byte("ISBL\x01"), 0, 0),
		"bad name": func() []byte {
			// A well-sized hello whose name length runs past the end.
			b := []byte("ISBL\x01")
			b = append(b, 0, byte(minHelloLen))
			msg := make([]byte, minHelloLen)
			msg[0] = 0xff
			return append(b, msg...)
		}(),
	}
	for name, in := range cases {
		t.Run(name, func(t *testing.T) {
			d, a := linkTCPPair(t)
			go func() {
				_, _ = d.Write(in)
				_, _ = io.Copy(io.Discard, d)
			}()
			_, _, err := ServerHandshake(a, hsCfg("n2", 2, key))
			d.Close()
			if !errors.Is(err, ErrAuthFailed) {
				t.Fatalf("%v, want ErrAuthFailed", err)
			}
		})
	}
	d, a := linkTCPPair(t)
	go func() { _, _ = d.Write([]byte("ISBL\x02")); _, _ = io.Copy(io.Discard, d) }()
	_, _, err := ServerHandshake(a, hsCfg("n2", 2, key))
	d.Close()
	if !errors.Is(err, ErrLinkVersion) {
		t.Fatalf("version 2: %v, want ErrLinkVersion", err)
	}
}

func TestHandshakeBadConfig(t *testing.T) {
	for _, cfg := range []HandshakeConfig{
		hsCfg("n1", 1, nil),
		hsCfg("n1", 1, make([]byte, 16)),
		hsCfg("", 1, hsKey(1)),
		hsCfg(string(make([]byte, 256)), 1, hsKey(1)),
	} {
		d, a := net.Pipe()
		if _, _, err := ClientHandshake(d, cfg, ""); err == nil || errors.Is(err, ErrAuthFailed) {
			t.Fatalf("client with %q/%d-byte key: %v", cfg.LocalName, len(cfg.Key), err)
		}
		if _, _, err := ServerHandshake(a, cfg); err == nil || errors.Is(err, ErrAuthFailed) {
			t.Fatalf("server with %q/%d-byte key: %v", cfg.LocalName, len(cfg.Key), err)
		}
	}
}

// hsPKI writes a CA and node certificates into a temporary directory.
type hsPKI struct {
	dir    string
	caCert *x509.Certificate
	caKey  *ecdsa.PrivateKey
	caFile string
}

func newHSPKI(t *testing.T, name string) *hsPKI {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	p := &hsPKI{dir: t.TempDir(), caCert: cert, caKey: key}
	p.caFile = filepath.Join(p.dir, "ca.pem")
	hsWritePEM(t, p.caFile, "CERTIFICATE", der)
	return p
}

func hsWritePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// node issues a certificate (server auth only: any key usage is accepted)
// and returns the files.
func (p *hsPKI) node(t *testing.T, name string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.IPv4(10, 9, 9, 9)}, // not the address used: no host check
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.caCert, &key.PublicKey, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(p.dir, name+".pem"), filepath.Join(p.dir, name+".key")
	hsWritePEM(t, certFile, "CERTIFICATE", der)
	hsWritePEM(t, keyFile, "EC PRIVATE KEY", kder)
	return certFile, keyFile
}

func (p *hsPKI) tls(t *testing.T, name string) *tls.Config {
	t.Helper()
	c, k := p.node(t, name)
	cfg, err := NewLinkTLS(c, k, p.caFile)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestHandshakeTLSMutual(t *testing.T) {
	pki := newHSPKI(t, "cluster CA")
	key := hsKey(1)
	d, a := linkTCPPair(t)
	dcfg, acfg := hsCfg("n1", 1, key), hsCfg("n2", 2, key)
	dcfg.TLS, acfg.TLS = pki.tls(t, "n1"), pki.tls(t, "n2")
	dr, ar := hsRun(d, a, dcfg, acfg, "n2")
	hsCheckOK(t, dr, ar, "n1", 1, "n2", 2)
	for _, c := range []net.Conn{dr.conn, ar.conn} {
		tc, ok := c.(*tls.Conn)
		if !ok {
			t.Fatalf("returned %T, want *tls.Conn", c)
		}
		if cs := tc.ConnectionState(); cs.Version != tls.VersionTLS13 || len(cs.PeerCertificates) == 0 {
			t.Fatalf("TLS version %x, %d peer certificates", cs.Version, len(cs.PeerCertificates))
		}
	}
}

func TestHandshakeTLSRefusals(t *testing.T) {
	pki := newHSPKI(t, "cluster CA")
	other := newHSPKI(t, "other CA")
	key := hsKey(1)
	good1, good2 := pki.tls(t, "n1"), pki.tls(t, "n2")
	// A certificate from another CA, trusting ours (so only its own
	// certificate is wrong).
	oc, ok := other.node(t, "intruder")
	foreign, err := NewLinkTLS(oc, ok, pki.caFile)
	if err != nil {
		t.Fatal(err)
	}
	noCert := good1.Clone()
	noCert.Certificates = nil

	cases := []struct {
		name       string
		dtls, atls *tls.Config
		dkey       []byte
	}{
		{"dialer cert from another CA", foreign, good2, key},
		{"acceptor cert from another CA", good1, foreign, key},
		{"no client certificate", noCert, good2, key},
		{"valid certificates, wrong secret", good1, good2, hsKey(9)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d, a := linkTCPPair(t)
			dcfg, acfg := hsCfg("n1", 1, tc.dkey), hsCfg("n2", 2, key)
			dcfg.TLS, acfg.TLS = tc.dtls, tc.atls
			dr, ar := hsRun(d, a, dcfg, acfg, "n2")
			if !errors.Is(dr.err, ErrAuthFailed) || !errors.Is(ar.err, ErrAuthFailed) {
				t.Fatalf("dialer %v, acceptor %v: want ErrAuthFailed on both", dr.err, ar.err)
			}
		})
	}
	// TLS on one side only.
	d, a := linkTCPPair(t)
	dcfg, acfg := hsCfg("n1", 1, key), hsCfg("n2", 2, key)
	dcfg.Timeout, acfg.Timeout = 300*time.Millisecond, 300*time.Millisecond
	acfg.TLS = good2
	dr, ar := hsRun(d, a, dcfg, acfg, "n2")
	if dr.err == nil || ar.err == nil {
		t.Fatalf("plain dialer to a TLS acceptor: dialer %v, acceptor %v", dr.err, ar.err)
	}
}

// A man in the middle holding a certificate of the cluster CA (but not the
// secret) terminates TLS with each node and relays the handshake messages:
// the proofs are bound to each TLS session, so both nodes refuse.
func TestHandshakeTLSRelayRefused(t *testing.T) {
	pki := newHSPKI(t, "cluster CA")
	key := hsKey(1)
	mitm := pki.tls(t, "mitm")
	d, m1 := linkTCPPair(t)
	m2, a := linkTCPPair(t)
	go func() {
		pre := make([]byte, 5)
		if _, err := io.ReadFull(m1, pre); err != nil {
			return
		}
		if _, err := m2.Write(pre); err != nil {
			return
		}
		s1, s2 := tls.Server(m1, mitm), tls.Client(m2, mitm)
		if s1.Handshake() != nil || s2.Handshake() != nil {
			m1.Close()
			m2.Close()
			return
		}
		go func() { _, _ = io.Copy(s2, s1); s2.Close() }()
		_, _ = io.Copy(s1, s2)
		s1.Close()
	}()
	dcfg, acfg := hsCfg("n1", 1, key), hsCfg("n2", 2, key)
	dcfg.TLS, acfg.TLS = pki.tls(t, "n1"), pki.tls(t, "n2")
	dr, ar := hsRun(d, a, dcfg, acfg, "n2")
	if !errors.Is(dr.err, ErrAuthFailed) || !errors.Is(ar.err, ErrAuthFailed) {
		t.Fatalf("relayed: dialer %v, acceptor %v: want ErrAuthFailed on both", dr.err, ar.err)
	}
}

func TestHandshakeNewLinkTLSErrors(t *testing.T) {
	pki := newHSPKI(t, "cluster CA")
	c, k := pki.node(t, "n1")
	if _, err := NewLinkTLS(c, k, filepath.Join(pki.dir, "missing.pem")); err == nil {
		t.Fatal("missing CA file accepted")
	}
	empty := filepath.Join(pki.dir, "empty.pem")
	if err := os.WriteFile(empty, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := NewLinkTLS(c, k, empty); err == nil {
		t.Fatal("CA file without a certificate accepted")
	}
	if _, err := NewLinkTLS(c, c, pki.caFile); err == nil {
		t.Fatal("certificate as key accepted")
	}
	cfg, err := NewLinkTLS(c, k, pki.caFile)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MinVersion != tls.VersionTLS13 || cfg.ClientAuth != tls.RequireAnyClientCert || cfg.VerifyConnection == nil {
		t.Fatal("TLS config is not mutual TLS 1.3 with verification")
	}
}
