package listener

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

func TestConfigValidate(t *testing.T) {
	ok := func() Config { return Config{Name: "l", Protocol: "mqtt", Address: "127.0.0.1:1883"} }
	tests := []struct {
		name    string
		mod     func(*Config)
		wantErr string
	}{
		{"valid", func(*Config) {}, ""},
		{"valid ws", func(c *Config) {
			c.Protocol = "ws"
			c.WSPath = "/ws"
			c.WSMaxFrame = 4096
			c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
		}, ""},
		{"valid tls", func(c *Config) {
			c.TLS = &TLSConfig{CertFile: "c", KeyFile: "k", ClientCAFile: "ca", RequireClientCert: true, MinVersion: "1.3"}
		}, ""},
		{"port 0", func(c *Config) { c.Address = ":0" }, ""},
		{"valid stomp", func(c *Config) { c.Protocol = "stomp"; c.ProxyProtocol = true }, ""},
		{"valid stomp-ws", func(c *Config) {
			c.Protocol = "stomp-ws"
			c.WSPath = "/"
			c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
		}, ""},
		{"ws_path on stomp", func(c *Config) { c.Protocol = "stomp"; c.WSPath = "/stomp" }, "ws_path only applies"},
		{"no name", func(c *Config) { c.Name = " " }, "name is required"},
		{"no protocol", func(c *Config) { c.Protocol = "" }, "protocol is required"},
		{"bad protocol", func(c *Config) { c.Protocol = "http" }, `unknown protocol "http"`},
		{"no address", func(c *Config) { c.Address = "" }, "address is required"},
		{"no port", func(c *Config) { c.Address = "localhost" }, `address "localhost"`},
		{"named port", func(c *Config) { c.Address = "localhost:mqtt" }, "port must be a number"},
		{"big port", func(c *Config) { c.Address = "localhost:65536" }, "port must be a number"},
		{"negative proxy timeout", func(c *Config) { c.ProxyHeaderTimeout = -1 }, "proxy_header_timeout"},
		{"negative handshake timeout", func(c *Config) { c.HandshakeTimeout = -1 }, "handshake_timeout"},
		{"ws_path on mqtt", func(c *Config) { c.WSPath = "/mqtt" }, "ws_path only applies"},
		{"ws_max_frame on mqtt", func(c *Config) { c.WSMaxFrame = 10 }, "ws_max_frame only applies"},
		{"trusted_proxies on mqtt", func(c *Config) {
			c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
		}, "trusted_proxies only applies"},
		{"relative ws path", func(c *Config) { c.Protocol = "ws"; c.WSPath = "mqtt" }, "must start with '/'"},
		{"ws path with query", func(c *Config) { c.Protocol = "ws"; c.WSPath = "/mqtt?x" }, "plain path"},
		{"negative max frame", func(c *Config) { c.Protocol = "ws"; c.WSMaxFrame = -1 }, "ws_max_frame must not be negative"},
		{"invalid prefix", func(c *Config) { c.Protocol = "ws"; c.TrustedProxies = []netip.Prefix{{}} }, "trusted_proxies[0]"},
		{"valid proxy_protocol_trusted", func(c *Config) {
			c.ProxyProtocol = true
			c.ProxyProtocolTrusted = Networks{netip.MustParsePrefix("10.0.0.5/32")}
		}, ""},
		{"proxy_protocol_trusted without proxy_protocol", func(c *Config) {
			c.ProxyProtocolTrusted = Networks{netip.MustParsePrefix("10.0.0.5/32")}
		}, "proxy_protocol_trusted only applies with proxy_protocol: true"},
		{"invalid proxy_protocol_trusted", func(c *Config) {
			c.ProxyProtocol = true
			c.ProxyProtocolTrusted = Networks{netip.MustParsePrefix("10.0.0.5/32"), {}}
		}, "proxy_protocol_trusted[1]"},
		{"tls no cert", func(c *Config) { c.TLS = &TLSConfig{KeyFile: "k"} }, "tls.cert_file is required"},
		{"tls no key", func(c *Config) { c.TLS = &TLSConfig{CertFile: "c"} }, "tls.key_file is required"},
		{"require without CA", func(c *Config) {
			c.TLS = &TLSConfig{CertFile: "c", KeyFile: "k", RequireClientCert: true}
		}, "require_client_cert needs tls.client_ca_file"},
		{"bad min version", func(c *Config) { c.TLS = &TLSConfig{CertFile: "c", KeyFile: "k", MinVersion: "1.1"} }, `min_version "1.1"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := ok()
			tt.mod(&c)
			err := c.Validate()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tt.wantErr != "" && err == nil:
				t.Fatalf("no error, want %q", tt.wantErr)
			case tt.wantErr != "" && !strings.Contains(err.Error(), tt.wantErr):
				t.Fatalf("error %q does not contain %q", err, tt.wantErr)
			}
		})
	}
	var nilCfg *Config
	if err := nilCfg.Validate(); err == nil {
		t.Fatal("nil config validated")
	}
}

func TestConfigYAML(t *testing.T) {
	const doc = `
name: websockets
protocol: ws
address: "0.0.0.0:8083"
proxy_protocol: true
proxy_header_timeout: 3s
handshake_timeout: 2s
ws_path: /mqtt
ws_max_frame: 65536
trusted_proxies: [10.0.0.0/8, "fd00::/8"]
tls:
  cert_file: /etc/isobar/server.crt
  key_file: /etc/isobar/server.key
  client_ca_file: /etc/isobar/ca.pem
  require_client_cert: true
  min_version: "1.3"
  reload_interval: 30s
`
	var c Config
	if err := yaml.Unmarshal([]byte(doc), &c); err != nil {
		t.Fatal(err)
	}
	want := Config{
		Name: "websockets", Protocol: "ws", Address: "0.0.0.0:8083",
		ProxyProtocol: true, ProxyHeaderTimeout: 3 * time.Second, HandshakeTimeout: 2 * time.Second,
		WSPath: "/mqtt", WSMaxFrame: 65536,
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")},
		TLS: &TLSConfig{
			CertFile: "/etc/isobar/server.crt", KeyFile: "/etc/isobar/server.key",
			ClientCAFile: "/etc/isobar/ca.pem", RequireClientCert: true, MinVersion: "1.3",
			ReloadInterval: 30 * time.Second,
		},
	}
	if c.Name != want.Name || c.Protocol != want.Protocol || c.Address != want.Address ||
		c.ProxyProtocol != want.ProxyProtocol || c.ProxyHeaderTimeout != want.ProxyHeaderTimeout ||
		c.HandshakeTimeout != want.HandshakeTimeout || c.WSPath != want.WSPath || c.WSMaxFrame != want.WSMaxFrame ||
		len(c.TrustedProxies) != 2 || c.TrustedProxies[0] != want.TrustedProxies[0] ||
		c.TrustedProxies[1] != want.TrustedProxies[1] || c.TLS == nil || *c.TLS != *want.TLS {
		t.Fatalf("decoded %+v (tls %+v)", c, c.TLS)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	var bad Config
	if err := yaml.Unmarshal([]byte("trusted_proxies: [10.0.0.0/33]"), &bad); err == nil {
		t.Fatal("invalid prefix decoded without error")
	}
}

func TestConfigDefaults(t *testing.T) {
	c := Config{Name: "w", Protocol: "ws", Address: ":0", TLS: &TLSConfig{CertFile: "c", KeyFile: "k"}}.withDefaults()
	if c.WSPath != "/mqtt" || c.WSMaxFrame != 1<<20 || c.ProxyHeaderTimeout != 5*time.Second ||
		c.HandshakeTimeout != 10*time.Second || c.TLS.MinVersion != "1.2" || c.TLS.ReloadInterval != 5*time.Second {
		t.Fatalf("defaults not applied: %+v %+v", c, c.TLS)
	}
	m := Config{Name: "m", Protocol: "mqtt", Address: ":0"}.withDefaults()
	if m.WSPath != "" || m.WSMaxFrame != 0 {
		t.Fatalf("ws defaults applied to mqtt listener: %+v", m)
	}
	s := Config{Name: "s", Protocol: "stomp-ws", Address: ":0"}.withDefaults()
	if s.WSPath != "/stomp" || s.WSMaxFrame != 1<<20 {
		t.Fatalf("stomp-ws defaults: %+v", s)
	}
	if p := (Config{Name: "s", Protocol: "stomp", Address: ":0"}.withDefaults()); p.WSPath != "" {
		t.Fatalf("ws defaults applied to a stomp listener: %+v", p)
	}
}

func TestNetworksYAML(t *testing.T) {
	var c Config
	doc := "proxy_protocol: true\nproxy_protocol_trusted: [10.0.0.5, 192.168.1.77/24, \"::1\", \"fd00::/8\", \"::ffff:10.1.0.0/112\"]\n" +
		"trusted_proxies: [172.16.0.1]\n"
	if err := yaml.Unmarshal([]byte(doc), &c); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range c.ProxyProtocolTrusted {
		got = append(got, p.String())
	}
	if want := "10.0.0.5/32 192.168.1.0/24 ::1/128 fd00::/8 10.1.0.0/16"; strings.Join(got, " ") != want {
		t.Fatalf("proxy_protocol_trusted %v, want %s", got, want)
	}
	if len(c.TrustedProxies) != 1 || c.TrustedProxies[0].String() != "172.16.0.1/32" {
		t.Fatalf("trusted_proxies %v", c.TrustedProxies)
	}
	if !c.ProxyProtocolTrusted.Contains(netip.MustParseAddr("::ffff:10.1.2.3")) || c.ProxyProtocolTrusted.Contains(netip.MustParseAddr("10.0.0.6")) {
		t.Fatal("Contains")
	}
	for _, tc := range []struct{ doc, want string }{
		{"proxy_protocol_trusted: [10.0.0.0/8, 10.0.0.0/33]", `line 1: "10.0.0.0/33" is not an IP address or CIDR prefix`},
		{"proxy_protocol_trusted: [localhost]", `line 1: "localhost" is not`},
		{"proxy_protocol_trusted: [\"fe80::1%eth0\"]", `"fe80::1%eth0" is not`},
		{"proxy_protocol_trusted:\n  - 10.0.0.1\n  - [x]", "line 3: want an IP address"},
		{"trusted_proxies: 10.0.0.1", "line 1: want a list"},
	} {
		var bad Config
		err := yaml.Unmarshal([]byte(tc.doc), &bad)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want %q", tc.doc, err, tc.want)
		}
	}
}
