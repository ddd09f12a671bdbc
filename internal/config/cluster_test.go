package config

import (
	"strings"
	"testing"
	"time"
)

// Without a cluster section the node is a single node, as before.
func TestClusterAbsentIsSingleNode(t *testing.T) {
	cfg, err := Parse([]byte("node_name: n1\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Cluster != nil {
		t.Fatalf("cluster = %+v, want nil", cfg.Cluster)
	}
	if cfg, err := Parse(nil); err != nil || cfg.Cluster != nil {
		t.Fatalf("defaults: %v %+v", err, cfg)
	}
}

func TestClusterDefaults(t *testing.T) {
	cfg, err := Parse([]byte("node_name: n1\ncluster:\n  secret_file: /etc/isobar/secret\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := DefaultClusterConfig()
	want.SecretFile = "/etc/isobar/secret"
	got := *cfg.Cluster
	if got.Bind != "127.0.0.1:7946" || got.ProbeInterval != time.Second || got.ProbeTimeout != 500*time.Millisecond ||
		got.SuspicionMult != 4 || got.GossipInterval != 200*time.Millisecond || got.LinkQueueBytes != 64<<20 ||
		got.MaxFrameSize != 64<<20 || got.ClaimTimeout != 2*time.Second || got.DrainTimeout != 30*time.Second ||
		got.SecretFile != want.SecretFile || got.Advertise != "" || len(got.Seeds) != 0 || got.TLS.Enabled() {
		t.Fatalf("defaults %+v", got)
	}
}

func TestClusterParse(t *testing.T) {
	cfg, err := Parse([]byte(`
node_name: node-1.example
cluster:
  bind: 0.0.0.0:7946
  advertise: 10.0.0.1:7946
  seeds: [10.0.0.2:7946, "seeds.example.org:7946", "[fd00::3]:7946", _isobar._tcp.example.org]
  secret_file: secret
  tls: {cert_file: c.pem, key_file: k.pem, ca_file: ca.pem}
  probe_interval: 2s
  probe_timeout: 1s
  suspicion_mult: 6
  gossip_interval: 300ms
  link_queue_bytes: 134217728
  max_frame_size: 1048576
  claim_timeout: 3s
  drain_timeout: 1m
`))
	if err != nil {
		t.Fatal(err)
	}
	c := cfg.Cluster
	if c.Bind != "0.0.0.0:7946" || c.Advertise != "10.0.0.1:7946" || len(c.Seeds) != 4 || c.Seeds[3] != "_isobar._tcp.example.org" ||
		!c.TLS.Enabled() || c.TLS.CAFile != "ca.pem" || c.ProbeInterval != 2*time.Second || c.ProbeTimeout != time.Second ||
		c.SuspicionMult != 6 || c.GossipInterval != 300*time.Millisecond || c.LinkQueueBytes != 128<<20 ||
		c.MaxFrameSize != 1<<20 || c.ClaimTimeout != 3*time.Second || c.DrainTimeout != time.Minute {
		t.Fatalf("parsed %+v", c)
	}
}

func TestClusterValidation(t *testing.T) {
	const base = "node_name: n1\ncluster:\n  secret_file: s\n"
	for _, tc := range []struct{ yaml, want string }{
		{"node_name: n1\ncluster: {}\n", "cluster.secret_file: required"},
		{"node_name: n1\ncluster: {bind: 127.0.0.1:7946}\n", "cluster.secret_file"},
		{base + "  bind: localhost:7946\n", "cluster.bind"},
		{base + "  bind: 127.0.0.1\n", "cluster.bind"},
		{base + "  bind: 127.0.0.1:70000\n", "cluster.bind"},
		{base + "  bind: 0.0.0.0:7946\n", "cluster.advertise: required"},
		{base + "  bind: '[::]:7946'\n", "cluster.advertise: required"},
		{base + "  advertise: 0.0.0.0:7946\n", "cluster.advertise"},
		{base + "  advertise: host.example:7946\n", "cluster.advertise"},
		{base + "  seeds: [10.0.0.1]\n", "cluster.seeds[0]"},
		{base + "  seeds: [10.0.0.1:7946, 'x:0']\n", "cluster.seeds[1]"},
		{base + "  seeds: [':7946']\n", "cluster.seeds[0]"},
		{base + "  seeds: [_isobar]\n", "cluster.seeds[0]"},
		{base + "  tls: {cert_file: c.pem, key_file: k.pem}\n", "cluster.tls"},
		{base + "  tls: {ca_file: ca.pem}\n", "cluster.tls"},
		{base + "  probe_interval: -1s\n", "cluster.probe_interval"},
		{base + "  probe_timeout: 1s\n", "cluster.probe_timeout"},
		{base + "  suspicion_mult: -1\n", "cluster.suspicion_mult"},
		{base + "  gossip_interval: -1ms\n", "cluster.gossip_interval"},
		{base + "  claim_timeout: -1s\n", "cluster.claim_timeout"},
		{base + "  drain_timeout: -1s\n", "cluster.drain_timeout"},
		{base + "  max_frame_size: 100\n", "cluster.max_frame_size"},
		{base + "  max_frame_size: 8589934592\n  link_queue_bytes: 8589934592\n", "cluster.max_frame_size"},
		{base + "  link_queue_bytes: 65536\n", "cluster.link_queue_bytes"},
		{base + "  link_queue_bytes: -1\n", "cluster.link_queue_bytes"},
		{base + "  bogus: 1\n", "bogus"},
		{base + "  tls: {cert: x}\n", "cert"},
		{"node_name: 'bad name'\ncluster:\n  secret_file: s\n", "node_name"},
		{"node_name: ''\ncluster:\n  secret_file: s\n", "node_name"},
	} {
		_, err := Parse([]byte(tc.yaml))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want an error mentioning %q", tc.yaml, err, tc.want)
		}
	}
}
