package cluster_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/isobar-mq/isobar/internal/cluster"
)

// writeClusterPKI writes a cluster CA and one certificate per node name.
func writeClusterPKI(t *testing.T, names ...string) (caFile string, certs, keys map[string]string) {
	t.Helper()
	dir := t.TempDir()
	write := func(path, typ string, der []byte) {
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "isobar test cluster CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	caFile = filepath.Join(dir, "ca.pem")
	write(caFile, "CERTIFICATE", caDER)
	certs, keys = map[string]string{}, map[string]string{}
	for i, n := range names {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(int64(i + 2)), Subject: pkix.Name{CommonName: n},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kder, _ := x509.MarshalECPrivateKey(k)
		certs[n], keys[n] = filepath.Join(dir, n+".pem"), filepath.Join(dir, n+".key")
		write(certs[n], "CERTIFICATE", der)
		write(keys[n], "EC PRIVATE KEY", kder)
	}
	return caFile, certs, keys
}

// Node links over mutual TLS: a cluster forms and forwards; the secret is
// still required on top of the certificates.
func TestClusterMutualTLS(t *testing.T) {
	ca, certs, keys := writeClusterPKI(t, "n1", "n2", "n3")
	var nodes []*tnode
	for i := range 3 {
		name := fmt.Sprintf("n%d", i+1)
		tc, err := cluster.NewLinkTLS(certs[name], keys[name], ca)
		if err != nil {
			t.Fatal(err)
		}
		var seeds []string
		if i > 0 {
			seeds = []string{nodes[0].cn.Addr()}
		}
		nodes = append(nodes, startNodeWith(t, name, seeds, func(c *cluster.Config) { c.TLS = tc }))
	}
	waitLinks(t, nodes, 3)
	var col collector
	sub := client(t, nodes[0].mqtt, "tls-sub", true)
	subscribe(t, sub, "tls/#", 1, &col)
	waitRoutes(t, nodes, "n1", 1)
	pub := client(t, nodes[2].mqtt, "tls-pub", true)
	publish(t, pub, "tls/x", 1, false, "over tls")
	if got := col.wait(t, 1); got[0] != "tls/x over tls" {
		t.Fatalf("got %v", got)
	}
	// A node with a valid certificate of the same CA but without the
	// secret neither joins nor links.
	tc, _ := cluster.NewLinkTLS(certs["n3"], keys["n3"], ca)
	intruder := startNodeWith(t, "intruder", []string{nodes[0].cn.Addr()}, func(c *cluster.Config) {
		c.TLS = tc
		c.Secret = []byte("another secret of at least thirty-two bytes")
	})
	time.Sleep(2 * time.Second)
	for _, m := range nodes[0].cn.Status().Members {
		if m.Name == "intruder" {
			t.Fatalf("a node without the secret is a member: %+v", m)
		}
	}
	if n := len(intruder.cn.Status().Members); n > 1 {
		t.Fatalf("the intruder sees %d members", n)
	}
}
