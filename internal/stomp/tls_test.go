package stomp_test

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/isobar-mq/isobar/internal/stomp"
	"github.com/isobar-mq/isobar/internal/testutil"
)

// TestStompOverTLS serves STOMP on a TLS listener.
func TestStompOverTLS(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	n := testutil.RunNode(t, fmt.Sprintf(`listeners:
  - {name: mqtt, protocol: mqtt, address: "127.0.0.1:0"}
  - {name: stomps, protocol: stomp, address: "127.0.0.1:0", tls: {cert_file: %q, key_file: %q}}
`, certFile, keyFile))
	pool := x509.NewCertPool()
	pool.AddCert(mustParse(t, der))
	tc, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", testutil.Addr(t, n, "stomps"), &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tc.Close() }()
	c := &client{t: t, nc: tc, version: stomp.V12, dec: stomp.NewDecoder(bufio.NewReader(tc), stomp.Limits{})}
	c.send(frame("CONNECT", "accept-version:1.2"))
	c.expect("CONNECTED")
	c.dec.Version = stomp.V12
	c.subscribe("s", "/topic/tls")
	c.sendMsg("/topic/tls", "secret")
	if f := c.expect("MESSAGE"); string(f.Body) != "secret" {
		t.Fatalf("got %q", f.Body)
	}
	c.disconnect()
}

func mustParse(t *testing.T, der []byte) *x509.Certificate {
	t.Helper()
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
