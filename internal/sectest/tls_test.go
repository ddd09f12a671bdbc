package sectest

import (
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/isobar-mq/isobar/internal/mqtt/packet"
)

// tlsNode starts a node with a plain listener ("mqtt"), a TLS listener
// ("tls") and a mutual-TLS listener requiring client certificates ("mtls").
func tlsNode(t *testing.T, p *pki, extra string) string {
	return fmt.Sprintf(`listeners:
  - {name: mqtt, protocol: mqtt, address: "127.0.0.1:0"}
  - name: tls
    protocol: mqtt
    address: "127.0.0.1:0"
    tls: {cert_file: %q, key_file: %q}
  - name: mtls
    protocol: mqtt
    address: "127.0.0.1:0"
    tls: {cert_file: %q, key_file: %q, client_ca_file: %q, require_client_cert: true}
%s`, p.ServerCert, p.ServerKey, p.ServerCert, p.ServerKey, p.CAFile, extra)
}

// TestTLSMosquittoClients: mosquitto_sub and mosquitto_pub round trips over
// TLS (server verified with --cafile) and mutual TLS (--cert/--key), in
// MQTT 3.1.1 and 5.0.
func TestTLSMosquittoClients(t *testing.T) {
	t.Parallel()
	sub := need(t, "mosquitto_sub", "mosquitto-clients")
	pub := need(t, "mosquitto_pub", "mosquitto-clients")
	p := newPKI(t)
	n := startNode(t, tlsNode(t, p, ""))
	for _, lis := range []string{"tls", "mtls"} {
		for _, v := range []string{"mqttv311", "mqttv5"} {
			name := lis + "-" + v
			args := []string{"-h", "127.0.0.1", "-p", port(t, n, lis), "--cafile", p.CAFile, "-V", v, "-q", "1"}
			if lis == "mtls" {
				args = append(args, "--cert", p.Alice.CertFile, "--key", p.Alice.KeyFile)
			}
			s := start(t, nil, sub, append(args, "-i", "sub-"+name, "-t", "tls/"+name, "-C", "1", "-W", "10")...)
			waitSubscribed(t, n, "sub-"+name, 1)
			c, _ := clientView(n, "sub-"+name)
			if c.Listener != lis {
				t.Fatalf("%s: subscriber on listener %q", name, c.Listener)
			}
			mustRun(t, pub, append(args, "-i", "pub-"+name, "-t", "tls/"+name, "-m", "hello "+name)...)
			s.waitLine(t, func(l string) bool { return l == "hello "+name })
			if code := s.wait(t); code != 0 {
				t.Fatalf("%s: mosquitto_sub exit %d:\n%s", name, code, s.output())
			}
		}
	}

	// The mutual-TLS listener refuses mosquitto clients without a
	// certificate, with an expired one or one from another CA.
	for _, tc := range []struct {
		name string
		cert *clientCert
	}{{"no certificate", nil}, {"expired certificate", &p.Expired}, {"certificate from another CA", &p.Rogue}} {
		args := []string{"-h", "127.0.0.1", "-p", port(t, n, "mtls"), "--cafile", p.CAFile, "-i", "refused",
			"-t", "tls/refused", "-m", "x", "-q", "1"}
		if tc.cert != nil {
			args = append(args, "--cert", tc.cert.CertFile, "--key", tc.cert.KeyFile)
		}
		out, code := run(t, pub, args...)
		if code == 0 {
			t.Errorf("mosquitto_pub with %s: accepted by the mutual-TLS listener:\n%s", tc.name, out)
		}
		t.Logf("mosquitto_pub with %s: exit %d: %s", tc.name, code, strings.TrimSpace(out))
	}
}

// TestTLSPaho: Go paho with a tls.Config, server verified against the CA
// and a client certificate for the mutual-TLS listener.
func TestTLSPaho(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	n := startNode(t, tlsNode(t, p, ""))
	for _, lis := range []string{"tls", "mtls"} {
		cfg := p.clientTLS()
		if lis == "mtls" {
			cfg = p.clientTLS(p.Alice.TLS)
		}
		newClient := func(id string) mqtt.Client {
			o := mqtt.NewClientOptions().AddBroker("ssl://" + addr(t, n, lis)).SetClientID(id).
				SetTLSConfig(cfg).SetAutoReconnect(false).SetConnectTimeout(timeout)
			c := mqtt.NewClient(o)
			if tok := c.Connect(); !tok.WaitTimeout(timeout) || tok.Error() != nil {
				t.Fatalf("paho %s on %s: connect: %v", id, lis, tok.Error())
			}
			t.Cleanup(func() { c.Disconnect(100) })
			return c
		}
		got := make(chan string, 1)
		s := newClient("paho-sub-" + lis)
		if tok := s.Subscribe("paho/"+lis, 1, func(_ mqtt.Client, m mqtt.Message) { got <- string(m.Payload()) }); !tok.WaitTimeout(timeout) || tok.Error() != nil {
			t.Fatalf("subscribe: %v", tok.Error())
		}
		pc := newClient("paho-pub-" + lis)
		if tok := pc.Publish("paho/"+lis, 1, false, "over "+lis); !tok.WaitTimeout(timeout) || tok.Error() != nil {
			t.Fatalf("publish: %v", tok.Error())
		}
		select {
		case m := <-got:
			if m != "over "+lis {
				t.Fatalf("got %q", m)
			}
		case <-time.After(timeout):
			t.Fatalf("%s: message not received", lis)
		}
		if c, ok := clientView(n, "paho-pub-"+lis); !ok || c.Listener != lis {
			t.Fatalf("publisher view %+v", c)
		}
	}
}

// expectRefusedTLS requires a TLS connection to fail with an alert from the
// server, at the handshake or (TLS 1.3, where the server judges the client
// certificate after the client finished) before any MQTT byte comes back.
// The alert must be one of alerts (e.g. "expired certificate").
func expectRefusedTLS(t *testing.T, address string, cfg *tls.Config, what string, alerts ...string) {
	t.Helper()
	conn, err := dialTLS(t, address, cfg)
	if err == nil {
		_, ack, cerr := connectOn(t, conn, connOpts{id: "refused"})
		if cerr == nil {
			t.Fatalf("%s: the server accepted the connection (CONNACK 0x%02X)", what, ack.ReasonCode)
		}
		err = cerr
	}
	for _, a := range alerts {
		if strings.Contains(err.Error(), "remote error: tls: "+a) {
			t.Logf("%s: %v", what, err)
			return
		}
	}
	t.Fatalf("%s: error %v is not one of the TLS alerts %q from the server", what, err, alerts)
}

// TestMutualTLSRefusals: require_client_cert refuses, at the TLS level,
// clients without a certificate, with an expired one and with one from an
// unknown CA; a valid client on the same listener is unaffected.
func TestMutualTLSRefusals(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	n := startNode(t, tlsNode(t, p, ""))
	a := addr(t, n, "mtls")
	ctl := connect(t, mustDialTLS(t, a, p.clientTLS(p.Bob.TLS)), connOpts{id: "control", v: packet.V5}, 0)
	ctl.mustSubscribe("control/#")
	for _, tc := range []struct {
		name   string
		certs  []tls.Certificate
		alerts []string
	}{
		{"no certificate", nil, []string{"certificate required", "handshake failure", "bad certificate"}},
		{"expired certificate", []tls.Certificate{p.Expired.TLS}, []string{"expired certificate", "bad certificate"}},
		{"certificate from another CA", []tls.Certificate{p.Rogue.TLS}, []string{"unknown certificate authority", "bad certificate"}},
	} {
		for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
			cfg := p.clientTLS(tc.certs...)
			cfg.MinVersion, cfg.MaxVersion = v, v
			expectRefusedTLS(t, a, cfg, fmt.Sprintf("%s (%s)", tc.name, tls.VersionName(v)), tc.alerts...)
		}
		ctl.mustPublish("control/"+tc.name, "still here")
		ctl.expectMsg("control/"+tc.name, "still here")
	}
	if len(n.Server.Clients()) != 1 {
		t.Fatalf("clients %+v, want only the control client", n.Server.Clients())
	}
	// The valid certificate still works in both TLS versions.
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		cfg := p.clientTLS(p.Alice.TLS)
		cfg.MinVersion, cfg.MaxVersion = v, v
		c := connect(t, mustDialTLS(t, a, cfg), connOpts{id: "valid-" + tls.VersionName(v)}, 0)
		c.disconnect()
	}
}

// TestCertIdentityCN: with cert_identity cn a verified client certificate
// names the user (no password), whatever user name the CONNECT claims, and
// the ACL pattern users/%u/# gives each user only its own subtree.
func TestCertIdentityCN(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	n := startNode(t, fmt.Sprintf(`listeners:
  - name: certs
    protocol: mqtt
    address: "127.0.0.1:0"
    tls: {cert_file: %q, key_file: %q, client_ca_file: %q}
    cert_identity: cn
auth:
  allow_anonymous: false
  acl:
    - {pattern: true, access: readwrite, topic: "users/%%u/#"}
`, p.ServerCert, p.ServerKey, p.CAFile))
	a := addr(t, n, "certs")

	// Alice claims to be bob in CONNECT: the certificate wins.
	alice := connect(t, mustDialTLS(t, a, p.clientTLS(p.Alice.TLS)),
		connOpts{id: "alice-dev", v: packet.V5, user: "bob", hasUser: true}, 0)
	bob := connect(t, mustDialTLS(t, a, p.clientTLS(p.Bob.TLS)), connOpts{id: "bob-dev", v: packet.V5}, 0)
	for id, want := range map[string]string{"alice-dev": "alice", "bob-dev": "bob"} {
		if c, _ := clientView(n, id); c.Username != want {
			t.Fatalf("client %s has user %q, want %q (from the certificate CN)", id, c.Username, want)
		}
	}

	if codes := bob.subscribe("users/bob/#", "users/alice/#", "users/#"); codes[0] != 1 || codes[1] != 0x87 || codes[2] != 0x87 {
		t.Fatalf("bob's SUBACK codes % X, want 01 87 87", codes)
	}
	alice.mustSubscribe("users/alice/#")
	if code := alice.publish("users/bob/inbox", "from alice", 1, false); code != 0x87 {
		t.Fatalf("alice publishing to users/bob/inbox: PUBACK 0x%02X, want 0x87", code)
	}
	alice.mustPublish("users/alice/status", "online")
	alice.expectMsg("users/alice/status", "online")
	bob.mustPublish("users/bob/status", "online")
	bob.expectMsg("users/bob/status", "online") // first: alice's refused message never came

	// Without a certificate there is no identity: a user name without a
	// password file is not enough, nor is anonymity.
	for _, o := range []connOpts{{id: "nocert", v: packet.V5}, {id: "nocert", v: packet.V5, user: "alice", hasUser: true}} {
		c, ack, err := connectOn(t, mustDialTLS(t, a, p.clientTLS()), o)
		if err != nil {
			t.Fatal(err)
		}
		if ack.ReasonCode != 0x87 {
			t.Fatalf("client without certificate (user %q): CONNACK 0x%02X, want 0x87", o.user, ack.ReasonCode)
		}
		c.expectClosed()
	}
	// An expired certificate is refused at the handshake even though
	// certificates are optional on this listener.
	expectRefusedTLS(t, a, p.clientTLS(p.Expired.TLS), "expired certificate on an optional-certificate listener",
		"expired certificate", "bad certificate")
	expectRefusedTLS(t, a, p.clientTLS(p.Rogue.TLS), "certificate from another CA on an optional-certificate listener",
		"unknown certificate authority", "bad certificate")
}

// TestTLSCertificateReload: Reload (SIGHUP) swaps the server certificate
// for new connections without dropping the open ones; a broken file keeps
// the old certificate.
func TestTLSCertificateReload(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	n := startNode(t, fmt.Sprintf(`listeners:
  - name: tls
    protocol: mqtt
    address: "127.0.0.1:0"
    tls: {cert_file: %q, key_file: %q, reload_interval: -1s}
`, p.ServerCert, p.ServerKey))
	a := addr(t, n, "tls")
	serverCN := func(c net.Conn) string {
		return c.(*tls.Conn).ConnectionState().PeerCertificates[0].Subject.CommonName
	}
	first := mustDialTLS(t, a, p.clientTLS())
	old := connect(t, first, connOpts{id: "old", v: packet.V5}, 0)
	old.mustSubscribe("reload/#")
	if cn := serverCN(first); cn != "localhost" {
		t.Fatalf("server certificate CN %q", cn)
	}

	certPEM, keyPEM := p.ca.issue(t, x509.Certificate{
		Subject:     pkix.Name{CommonName: "renewed"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	replaceFile(t, p.ServerKey, keyPEM)
	replaceFile(t, p.ServerCert, certPEM)
	n.Reload()
	second := mustDialTLS(t, a, p.clientTLS())
	if cn := serverCN(second); cn != "renewed" {
		t.Fatalf("after reload: server certificate CN %q, want renewed", cn)
	}
	connect(t, second, connOpts{id: "new", v: packet.V5}, 0).mustPublish("reload/x", "1")
	old.expectMsg("reload/x", "1") // the connection from before the reload is alive

	replaceFile(t, p.ServerCert, []byte("-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n"))
	n.Reload()
	third := mustDialTLS(t, a, p.clientTLS())
	if cn := serverCN(third); cn != "renewed" {
		t.Fatalf("after a broken reload: server certificate CN %q, want renewed (kept)", cn)
	}
	connect(t, third, connOpts{id: "third", v: packet.V5}, 0).mustPublish("reload/y", "2")
	old.expectMsg("reload/y", "2")
}
