package sectest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"testing"
	"time"
)

// pki is a test certificate authority with a server certificate and client
// certificates, all written as PEM files in a temporary directory.
type pki struct {
	dir string
	ca  *ca

	CAFile     string // the CA certificate
	ServerCert string // server certificate for localhost and 127.0.0.1
	ServerKey  string
	ServerPEM  string // certificate then key in one file (HAProxy's crt)

	Alice   clientCert // valid, CN alice
	Bob     clientCert // valid, CN bob
	Expired clientCert // CN alice, expired an hour ago
	Rogue   clientCert // CN alice, issued by another CA
}

type ca struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

// clientCert is a client certificate: files for the mosquitto clients and a
// tls.Certificate for Go clients.
type clientCert struct {
	CertFile, KeyFile string
	TLS               tls.Certificate
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	p := &pki{dir: t.TempDir(), ca: newCA(t, "Isobar Test CA")}
	p.CAFile = writeFile(t, p.dir, "ca.pem", p.ca.pem)
	certPEM, keyPEM := p.ca.issue(t, x509.Certificate{
		Subject:     pkix.Name{CommonName: "localhost"},
		DNSNames:    []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	p.ServerCert = writeFile(t, p.dir, "server.crt", certPEM)
	p.ServerKey = writeFile(t, p.dir, "server.key", keyPEM)
	p.ServerPEM = writeFile(t, p.dir, "server.pem", append(append([]byte(nil), certPEM...), keyPEM...))
	p.Alice = p.client(t, p.ca, "alice", "alice", time.Now().Add(24*time.Hour))
	p.Bob = p.client(t, p.ca, "bob", "bob", time.Now().Add(24*time.Hour))
	p.Expired = p.client(t, p.ca, "expired", "alice", time.Now().Add(-time.Hour))
	p.Rogue = p.client(t, newCA(t, "Rogue CA"), "rogue", "alice", time.Now().Add(24*time.Hour))
	return p
}

func (p *pki) client(t *testing.T, issuer *ca, file, cn string, notAfter time.Time) clientCert {
	t.Helper()
	certPEM, keyPEM := issuer.issue(t, x509.Certificate{
		Subject:     pkix.Name{CommonName: cn},
		NotBefore:   notAfter.Add(-48 * time.Hour),
		NotAfter:    notAfter,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	c := clientCert{
		CertFile: writeFile(t, p.dir, file+".crt", certPEM),
		KeyFile:  writeFile(t, p.dir, file+".key", keyPEM),
	}
	var err error
	if c.TLS, err = tls.X509KeyPair(certPEM, keyPEM); err != nil {
		t.Fatal(err)
	}
	return c
}

// pool is a certificate pool holding the CA.
func (p *pki) pool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(p.ca.cert)
	return pool
}

// clientTLS is a client configuration trusting the CA and presenting the
// certificate, if any, whatever CAs the server names as acceptable (Go's
// default is to send none unless its issuer is among them; OpenSSL-based
// clients such as mosquitto send what they are given).
func (p *pki) clientTLS(cert ...tls.Certificate) *tls.Config {
	cfg := &tls.Config{RootCAs: p.pool(), ServerName: "127.0.0.1"}
	if len(cert) > 0 {
		c := cert[0]
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &c, nil }
	}
	return cfg
}

func serial(t *testing.T) *big.Int {
	n, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	return n.Add(n, big.NewInt(1))
}

func newCA(t *testing.T, name string) *ca {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(t),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-72 * time.Hour),
		NotAfter:              time.Now().Add(72 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &ca{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue signs a leaf certificate from tmpl (serial, key usage and, when
// unset, validity filled in) and returns the certificate and key as PEM.
func (c *ca) issue(t *testing.T, tmpl x509.Certificate) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl.SerialNumber = serial(t)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	if tmpl.NotBefore.IsZero() {
		tmpl.NotBefore = time.Now().Add(-time.Hour)
	}
	if tmpl.NotAfter.IsZero() {
		tmpl.NotAfter = time.Now().Add(24 * time.Hour)
	}
	der, err := x509.CreateCertificate(rand.Reader, &tmpl, c.cert, &key.PublicKey, c.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
}
