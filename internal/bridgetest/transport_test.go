package bridgetest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/isobar-mq/isobar/internal/auth"
	"github.com/isobar-mq/isobar/internal/testutil"
)

// testCA writes a CA and a server certificate for 127.0.0.1 (PEM files).
func testCA(t *testing.T) (caFile, certFile, keyFile string) {
	t.Helper()
	dir := t.TempDir()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "bridgetest CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
	caFile, certFile, keyFile = filepath.Join(dir, "ca.pem"), filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	for f, b := range map[string]*pem.Block{caFile: {Type: "CERTIFICATE", Bytes: caDER},
		certFile: {Type: "CERTIFICATE", Bytes: der}, keyFile: {Type: "PRIVATE KEY", Bytes: keyDER}} {
		if err := os.WriteFile(f, pem.EncodeToMemory(b), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return caFile, certFile, keyFile
}

// TestTransports: bridges over TLS (address + ca_file, as mosquitto), WebSocket
// and secure WebSocket, with a username and password, to another Isobar.
func TestTransports(t *testing.T) {
	caFile, certFile, keyFile := testCA(t)
	hash, err := auth.HashPassword(auth.SchemeSHA512, []byte("right"))
	if err != nil {
		t.Fatal(err)
	}
	pw := filepath.Join(t.TempDir(), "passwords")
	if err := os.WriteFile(pw, []byte("alice:"+hash+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// Anonymous clients are allowed (the test's subscribers), but a user
	// name must come with its password.
	b := testutil.RunNode(t, fmt.Sprintf(`node_name: b
sys_interval: 0s
auth: {allow_anonymous: true, password_file: %q}
listeners:
  - {name: mqtt, protocol: mqtt, address: "127.0.0.1:0"}
  - {name: tls, protocol: mqtt, address: "127.0.0.1:0", tls: {cert_file: %q, key_file: %q}}
  - {name: ws, protocol: ws, address: "127.0.0.1:0"}
  - {name: wss, protocol: ws, address: "127.0.0.1:0", tls: {cert_file: %q, key_file: %q}}
`, pw, certFile, keyFile, certFile, keyFile))
	bu := "mqtt://" + testutil.Addr(t, b, "mqtt")
	links := fmt.Sprintf(`bridges:
  - {name: tls, address: %q, ca_file: %q, username: alice, password: right, min_backoff: 50ms, topics: [{pattern: "t/tls", direction: out, qos: 1}]}
  - {name: ws, url: "ws://%s/mqtt", version: 4, min_backoff: 50ms, topics: [{pattern: "t/ws", direction: out, qos: 1}]}
  - {name: wss, url: "wss://%s/mqtt", ca_file: %q, min_backoff: 50ms, topics: [{pattern: "t/wss", direction: in, qos: 1}]}
  - {name: wrong-password, url: %q, username: alice, password: wrong, min_backoff: 50ms, topics: [{pattern: "t/none", direction: out}]}
  - {name: unknown-ca, address: %q, tls: true, min_backoff: 50ms, topics: [{pattern: "t/none", direction: out}]}
`, testutil.Addr(t, b, "tls"), caFile, testutil.Addr(t, b, "ws"), testutil.Addr(t, b, "wss"), caFile, bu, testutil.Addr(t, b, "tls"))
	a, au := isobar(t, "a", links)
	for _, name := range []string{"tls", "ws", "wss"} {
		waitConnected(t, a, name)
	}
	testutil.CheckFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		for _, st := range a.Bridges.Status()[3:] {
			if st.Connected || st.LastError == "" {
				return fmt.Errorf("%s: %+v", st.Name, st)
			}
		}
		return nil
	})
	st := a.Bridges.Status()
	if !strings.Contains(st[3].LastError, "bad user name or password") || !strings.Contains(st[4].LastError, "certificate") {
		t.Fatalf("errors: %q, %q", st[3].LastError, st[4].LastError)
	}
	time.Sleep(200 * time.Millisecond) // the wss link's remote SUBACK
	onB := subscribe(t, bu, "sub-b", "t/#")
	onA := subscribe(t, au, "sub-a", "t/wss")
	pa := publisher(t, au, "pub-a")
	publish(t, pa, "t/tls", "1", 1)
	publish(t, pa, "t/ws", "2", 1)
	publish(t, publisher(t, bu, "pub-b"), "t/wss", "3", 1)
	onB.waitCount(t, 3, 10*time.Second) // t/tls, t/ws and its own t/wss
	onA.waitCount(t, 1, 10*time.Second)
	if !slices.Equal(onB.topic("t/tls"), []string{"1"}) || !slices.Equal(onB.topic("t/ws"), []string{"2"}) ||
		!slices.Equal(onA.topic("t/wss"), []string{"3"}) {
		t.Fatalf("b got %v, a got %v", onB.got, onA.got)
	}
}
