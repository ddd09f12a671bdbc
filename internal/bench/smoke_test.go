package bench

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/isobar-mq/isobar/internal/mqtt/packet"
	"github.com/isobar-mq/isobar/internal/testutil"
)

// benchNodeConfig is an in-process Isobar with the limits that would
// throttle a benchmark raised, as scripts/bench-compare does.
const benchNodeConfig = `
listeners:
  - {name: mqtt, protocol: mqtt, address: "127.0.0.1:0"}
  - {name: ws, protocol: ws, address: "127.0.0.1:0"}
http: {enabled: false}
mqtt:
  max_inflight: 1000
  receive_maximum: 1000
  max_queued_messages: 60000
`

// quick returns a short run against addr.
func quick(addr, scenario string) Config {
	return Config{
		Scenario: scenario,
		Addr:     addr,
		Duration: 700 * time.Millisecond,
		Warmup:   100 * time.Millisecond,
		Drain:    5 * time.Second,
	}
}

func run(t *testing.T, cfg Config) *Result {
	t.Helper()
	res, err := Run(context.Background(), cfg, nil)
	if err != nil {
		t.Fatalf("Run(%s): %v", cfg.Scenario, err)
	}
	t.Logf("%s: sent %d received %d expected %d lost %d dup %d ooo %d recv %.0f/s p50 %dµs p99 %dµs errors %v",
		cfg.Scenario, res.Sent, res.Received, res.Expected, res.Lost, res.Duplicates, res.OutOfOrder,
		res.RecvRate, res.Latency.P50, res.Latency.P99, res.Errors)
	if res.Connect.Failed > 0 || res.Disconnected > 0 || len(res.Errors) > 0 {
		t.Fatalf("%s: connection problems: %+v %v", cfg.Scenario, res.Connect, res.Errors)
	}
	if res.Sent == 0 || res.Latency.Count == 0 || res.RecvRate <= 0 {
		t.Fatalf("%s: nothing measured: sent %d, latency samples %d, rate %.0f", cfg.Scenario, res.Sent, res.Latency.Count, res.RecvRate)
	}
	if l := res.Latency; !(l.P50 > 0 && l.P50 <= l.P90 && l.P90 <= l.P99 && l.P99 <= l.P999 && l.P999 <= l.Max) {
		t.Fatalf("%s: latency percentiles not ordered: %+v", cfg.Scenario, l)
	}
	if res.Duplicates != 0 || res.OutOfOrder != 0 || res.Unexpected != 0 || res.BadAcks != 0 {
		t.Fatalf("%s: duplicates %d, out of order %d, unexpected %d, bad acks %d",
			cfg.Scenario, res.Duplicates, res.OutOfOrder, res.Unexpected, res.BadAcks)
	}
	return res
}

// exact checks that every expected message arrived exactly once.
func exact(t *testing.T, res *Result, perSent int64) {
	t.Helper()
	if res.Lost != 0 || res.Expected != perSent*res.Sent || res.Received != res.Expected {
		t.Fatalf("%s: sent %d, expected %d (want %d), received %d, lost %d",
			res.Scenario, res.Sent, res.Expected, perSent*res.Sent, res.Received, res.Lost)
	}
	if res.QoS > 0 && res.Acked != res.Sent {
		t.Fatalf("%s: %d sent but %d acknowledged", res.Scenario, res.Sent, res.Acked)
	}
}

func TestSmokeAgainstIsobar(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a broker and loads it for a few seconds")
	}
	n := testutil.RunNode(t, benchNodeConfig)
	addr := testutil.Addr(t, n, "mqtt")
	wsAddr := testutil.Addr(t, n, "ws")

	t.Run("p2p-qos0", func(t *testing.T) {
		cfg := quick(addr, ScenarioP2P)
		cfg.Pubs, cfg.Rate = 4, 4000 // paced: QoS 0 may be dropped under overload
		res := run(t, cfg)
		exact(t, res, 1)
		if want := 0.7 * 4000; res.Sent < int64(want) {
			t.Fatalf("sent %d at 4000 msg/s for 0.8 s", res.Sent)
		}
	})
	t.Run("p2p-qos1", func(t *testing.T) {
		cfg := quick(addr, ScenarioP2P)
		cfg.Pubs, cfg.QoS = 4, 1
		exact(t, run(t, cfg), 1)
	})
	t.Run("p2p-qos2-v5", func(t *testing.T) {
		cfg := quick(addr, ScenarioP2P)
		cfg.Pubs, cfg.QoS, cfg.MQTTVersion = 2, 2, packet.V5
		exact(t, run(t, cfg), 1)
	})
	t.Run("fanout-qos1", func(t *testing.T) {
		cfg := quick(addr, ScenarioFanOut)
		cfg.Subs, cfg.QoS, cfg.Rate = 20, 1, 2000
		exact(t, run(t, cfg), 20)
	})
	t.Run("fanin-qos1", func(t *testing.T) {
		cfg := quick(addr, ScenarioFanIn)
		cfg.Pubs, cfg.QoS, cfg.Rate = 10, 1, 5000
		exact(t, run(t, cfg), 1)
	})
	t.Run("shared-qos1", func(t *testing.T) {
		cfg := quick(addr, ScenarioShared)
		cfg.Pubs, cfg.Subs, cfg.QoS, cfg.MQTTVersion = 2, 5, 1, packet.V5
		exact(t, run(t, cfg), 1)
	})
	t.Run("ws-qos1", func(t *testing.T) {
		cfg := quick(wsAddr, ScenarioP2P)
		cfg.Transport, cfg.Pubs, cfg.QoS, cfg.PayloadSize = TransportWS, 2, 1, 3000
		exact(t, run(t, cfg), 1)
	})
	t.Run("conn", func(t *testing.T) {
		cfg := quick(addr, ScenarioConn)
		cfg.Conns, cfg.Duration, cfg.BrokerPID = 200, 100*time.Millisecond, os.Getpid()
		res, err := Run(context.Background(), cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		if res.Connect.Established != 200 || res.Connect.Failed != 0 || res.Connect.Rate <= 0 || res.Connect.Latency.Count != 200 {
			t.Fatalf("connect stats %+v", res.Connect)
		}
		if b := res.BrokerProc; b == nil || b.SampleError != "" || b.RSSAfter <= 0 || b.RSSPeak < b.RSSAfter {
			t.Fatalf("process stats %+v", b)
		}
	})
}

func TestCLIJSON(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a broker")
	}
	n := testutil.RunNode(t, benchNodeConfig)
	addr := testutil.Addr(t, n, "mqtt")
	var out, errb bytes.Buffer
	code := Main([]string{"fanout", "--addr", addr, "--subs", "5", "--qos", "1", "--rate", "1000",
		"--duration", "300ms", "--warmup", "100ms", "--json", "--quiet"}, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d, stderr: %s", code, errb.String())
	}
	var res Result
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatalf("JSON output does not parse: %v\n%s", err, out.String())
	}
	if res.Scenario != "fanout" || res.Subscribers != 5 || res.Sent == 0 || res.Expected != 5*res.Sent ||
		res.Lost != 0 || res.Latency.Count == 0 {
		t.Fatalf("unexpected result: %+v", res)
	}
	// The human table names the same figures.
	out.Reset()
	code = Main([]string{"p2p", "--addr", addr, "--pubs", "1", "--rate", "500",
		"--duration", "200ms", "--warmup", "0s", "--quiet"}, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d, stderr: %s", code, errb.String())
	}
	for _, want := range []string{"scenario", "p2p", "lost 0", "latency", "p99.9"} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("table lacks %q:\n%s", want, out.String())
		}
	}
}

func TestTLSInsecure(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a broker")
	}
	dir := t.TempDir()
	cert, key := selfSigned(t, dir)
	n := testutil.RunNode(t, fmt.Sprintf(`
listeners:
  - {name: mqtts, protocol: mqtt, address: "127.0.0.1:0", tls: {cert_file: %q, key_file: %q}}
  - {name: wss, protocol: ws, address: "127.0.0.1:0", tls: {cert_file: %q, key_file: %q}}
http: {enabled: false}
mqtt: {max_inflight: 1000, receive_maximum: 1000, max_queued_messages: 60000}
`, cert, key, cert, key))
	for _, tr := range []struct{ transport, listener string }{{TransportTLS, "mqtts"}, {TransportWSS, "wss"}} {
		cfg := quick(testutil.Addr(t, n, tr.listener), ScenarioP2P)
		cfg.Transport, cfg.Pubs, cfg.QoS, cfg.Duration = tr.transport, 1, 1, 300*time.Millisecond
		// Without --insecure or --ca the self-signed certificate is refused.
		res, err := Run(context.Background(), cfg, nil)
		if err != nil || res.Connect.Failed != 2 || !strings.Contains(strings.Join(res.Errors, " "), "certificate") {
			t.Fatalf("%s without --insecure: err %v, %+v %v", tr.transport, err, res.Connect, res.Errors)
		}
		cfg.Insecure = true
		exact(t, run(t, cfg), 1)
		cfg.Insecure, cfg.CAFile = false, cert
		exact(t, run(t, cfg), 1)
	}
}

func selfSigned(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "isobar-bench-test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kd, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

func TestRefusesRemoteTargets(t *testing.T) {
	for _, tc := range []struct {
		addr  string
		local []string
		ok    bool
	}{
		{"192.0.2.1:1883", nil, false},
		{"[2001:db8::1]:1883", nil, false},
		{"127.0.0.1:1", []string{"192.0.2.7"}, false},
		{"127.0.0.1:1", []string{"127.0.0.2"}, true},
		{"[::1]:1", nil, true},
		{"localhost:1", nil, true},
	} {
		cfg := Config{Scenario: ScenarioConn, Addr: tc.addr, LocalAddrs: tc.local}
		cfg.SetDefaults()
		err := checkLoopback(context.Background(), &cfg)
		if (err == nil) != tc.ok {
			t.Errorf("checkLoopback(%s, %v) = %v, want ok=%v", tc.addr, tc.local, err, tc.ok)
		}
		if !tc.ok {
			if _, err := Run(context.Background(), cfg, nil); err == nil || !strings.Contains(err.Error(), "allow-remote") {
				t.Errorf("Run(%s) = %v, want a refusal naming --allow-remote", tc.addr, err)
			}
		}
	}
}

func TestConfigValidation(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(*Config)
	}{
		{"scenario", func(c *Config) { c.Scenario = "nope" }},
		{"qos", func(c *Config) { c.QoS = 3 }},
		{"payload", func(c *Config) { c.PayloadSize = HeaderSize - 1 }},
		{"wildcard topic", func(c *Config) { c.Topic = "a/+" }},
		{"version", func(c *Config) { c.MQTTVersion = 3 }},
		{"rate", func(c *Config) { c.Rate = -1 }},
	} {
		cfg := Config{Scenario: ScenarioP2P}
		cfg.SetDefaults()
		tc.mod(&cfg)
		if err := cfg.Validate(); err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
	var out, errb bytes.Buffer
	if code := Main([]string{"p2p", "--mqtt", "4.0"}, &out, &errb); code != 2 {
		t.Errorf("bad --mqtt: exit %d", code)
	}
	if code := Main(nil, &out, &errb); code != 2 || !strings.Contains(errb.String(), "Scenarios") {
		t.Errorf("no arguments: exit %d, %q", code, errb.String())
	}
}

func TestScenarioDefaults(t *testing.T) {
	for _, tc := range []struct {
		scenario           string
		pubs, subs         int
		topic, filter, sub string
	}{
		{ScenarioP2P, 10, 10, "bench/p2p/%i", "", "bench/p2p/3"},
		{ScenarioFanIn, 100, 1, "bench/fanin/%i", "bench/fanin/+", "bench/fanin/+"},
		{ScenarioFanOut, 1, 100, "bench/fanout", "bench/fanout", "bench/fanout"},
		{ScenarioShared, 1, 10, "bench/shared", "bench/shared", "$share/bench/bench/shared"},
	} {
		cfg := Config{Scenario: tc.scenario}
		cfg.SetDefaults()
		if cfg.Pubs != tc.pubs || cfg.Subs != tc.subs || cfg.Topic != tc.topic || cfg.Filter != tc.filter {
			t.Errorf("%s defaults: pubs %d subs %d topic %q filter %q", tc.scenario, cfg.Pubs, cfg.Subs, cfg.Topic, cfg.Filter)
		}
		r := &runner{cfg: &cfg}
		r.plan()
		idx := min(3, len(r.subs)-1)
		if got := r.subs[idx].subTopic; got != tc.sub {
			t.Errorf("%s: subscriber %d filter %q, want %q", tc.scenario, idx, got, tc.sub)
		}
		if len(r.pubs) != tc.pubs || len(r.subs) != tc.subs || len(r.clients) != tc.pubs+tc.subs {
			t.Errorf("%s: planned %d pubs %d subs %d clients", tc.scenario, len(r.pubs), len(r.subs), len(r.clients))
		}
		wantSinks := tc.subs
		if tc.scenario == ScenarioShared {
			wantSinks = 1
		}
		if len(r.sinks) != wantSinks {
			t.Errorf("%s: %d sinks, want %d", tc.scenario, len(r.sinks), wantSinks)
		}
	}
}
