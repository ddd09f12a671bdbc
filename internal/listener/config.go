package listener

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

// Protocol names accepted in Config.Protocol.
const (
	ProtocolMQTT    = "mqtt"     // MQTT over TCP (or TLS)
	ProtocolWS      = "ws"       // MQTT over WebSocket (or WSS with TLS)
	ProtocolStomp   = "stomp"    // STOMP over TCP (or TLS), served by the STOMP gateway
	ProtocolStompWS = "stomp-ws" // STOMP over WebSocket (or WSS with TLS)
)

// IsWebSocket reports whether the protocol runs over WebSocket.
func IsWebSocket(protocol string) bool { return protocol == ProtocolWS || protocol == ProtocolStompWS }

// IsStomp reports whether the protocol is STOMP (served by the STOMP
// gateway rather than the MQTT server).
func IsStomp(protocol string) bool { return protocol == ProtocolStomp || protocol == ProtocolStompWS }

// Defaults applied by New (and reported by Listener.Config) for zero values.
const (
	DefaultProxyHeaderTimeout = 5 * time.Second
	DefaultHandshakeTimeout   = 10 * time.Second
	DefaultWSPath             = "/mqtt"
	// DefaultStompWSPath is the default ws_path of stomp-ws listeners.
	DefaultStompWSPath = "/stomp"
	// DefaultWSMaxFrame is the default limit on the payload of one
	// WebSocket frame (1 MiB). Frames are streamed, never buffered whole, so
	// the limit does not bound memory; it bounds how much a single frame may
	// carry. Clients that put one MQTT packet in one frame (most do) cannot
	// send packets larger than this; raise it if the broker allows larger
	// packets.
	DefaultWSMaxFrame = 1 << 20
	// DefaultTLSReloadInterval is how often the certificate, key and client
	// CA files are checked for changes.
	DefaultTLSReloadInterval = 5 * time.Second
)

// Config describes one network listener. Zero values mean "default" where a
// default is documented. The yaml tags let the config package embed it.
type Config struct {
	// Name is unique among listeners; it is used in logs and metrics.
	Name string `yaml:"name"`
	// Protocol is "mqtt" (MQTT over TCP), "ws" (MQTT over WebSocket),
	// "stomp" (STOMP over TCP) or "stomp-ws" (STOMP over WebSocket).
	Protocol string `yaml:"protocol"`
	// Address is host:port; port 0 picks a free port (tests).
	Address string `yaml:"address"`
	// TLS enables TLS (mqtts / wss) when non-nil.
	TLS *TLSConfig `yaml:"tls,omitempty"`
	// ProxyProtocol requires a PROXY protocol v1 or v2 header at the start of
	// every connection; connections without a valid header are closed.
	ProxyProtocol bool `yaml:"proxy_protocol,omitempty"`
	// ProxyProtocolTrusted lists the networks of the proxies allowed to
	// connect to a ProxyProtocol listener (and so to state the client
	// address in a PROXY header). A connection from any other peer is
	// closed before anything is read from it. Empty means
	// DefaultProxyProtocolTrusted (loopback only). Only valid with
	// ProxyProtocol.
	ProxyProtocolTrusted Networks `yaml:"proxy_protocol_trusted,omitempty"`
	// ProxyHeaderTimeout bounds the wait for the PROXY header (default 5s).
	ProxyHeaderTimeout time.Duration `yaml:"proxy_header_timeout,omitempty"`
	// HandshakeTimeout bounds the TLS handshake and the WebSocket upgrade
	// request, each (default 10s).
	HandshakeTimeout time.Duration `yaml:"handshake_timeout,omitempty"`
	// WSPath is the only HTTP path upgraded on ws listeners (default
	// "/mqtt"); other paths get 404.
	WSPath string `yaml:"ws_path,omitempty"`
	// WSMaxFrame is the largest accepted WebSocket frame payload in bytes
	// (default 1 MiB, see DefaultWSMaxFrame); larger frames close the
	// connection with status 1009.
	WSMaxFrame int `yaml:"ws_max_frame,omitempty"`
	// TrustedProxies lists the networks whose X-Forwarded-For header is
	// honoured on ws listeners: the header is believed only when the peer
	// (the address from the PROXY header on a ProxyProtocol listener) is
	// in the list, and it is read right to left, skipping trusted hops.
	// Empty means the header is ignored.
	TrustedProxies Networks `yaml:"trusted_proxies,omitempty"`

	// Settings the broker applies to clients of this listener (the
	// listener itself does not use them).

	// MaxConnections caps concurrent clients on this listener (0 = none).
	MaxConnections int `yaml:"max_connections,omitempty"`
	// AllowAnonymous overrides auth.allow_anonymous for this listener.
	AllowAnonymous *bool `yaml:"allow_anonymous,omitempty"`
	// CertIdentity, "cn" or "san", authenticates clients that present a
	// verified client certificate as the user named by it (mutual TLS);
	// clients without one fall back to user name and password. Requires
	// tls.client_ca_file.
	CertIdentity string `yaml:"cert_identity,omitempty"`
}

// TLSConfig configures TLS on a listener.
type TLSConfig struct {
	// CertFile and KeyFile are PEM files; CertFile may hold a chain (leaf
	// first).
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ClientCAFile is a PEM bundle of CAs used to verify client
	// certificates. When set, a client certificate is verified if presented
	// (or required, see RequireClientCert).
	ClientCAFile string `yaml:"client_ca_file,omitempty"`
	// RequireClientCert rejects clients without a valid certificate.
	// Requires ClientCAFile.
	RequireClientCert bool `yaml:"require_client_cert,omitempty"`
	// MinVersion is "1.2" (default) or "1.3".
	MinVersion string `yaml:"min_version,omitempty"`
	// ReloadInterval is how often the files are polled for changes (by
	// modification time and size) and reloaded; 0 means
	// DefaultTLSReloadInterval, negative disables polling (Reload can still
	// be called).
	ReloadInterval time.Duration `yaml:"reload_interval,omitempty"`
}

// Validate reports the first problem found in c, naming the listener and
// the offending field by its yaml name.
func (c *Config) Validate() error {
	if c == nil {
		return errors.New("listener: nil config")
	}
	if strings.TrimSpace(c.Name) == "" {
		return errors.New("listener: name is required")
	}
	errf := func(format string, args ...any) error {
		return fmt.Errorf("listener %q: "+format, append([]any{c.Name}, args...)...)
	}
	switch c.Protocol {
	case ProtocolMQTT, ProtocolWS, ProtocolStomp, ProtocolStompWS:
	case "":
		return errf("protocol is required (%q, %q, %q or %q)", ProtocolMQTT, ProtocolWS, ProtocolStomp, ProtocolStompWS)
	default:
		return errf("unknown protocol %q (want %q, %q, %q or %q)", c.Protocol, ProtocolMQTT, ProtocolWS, ProtocolStomp, ProtocolStompWS)
	}
	if c.Address == "" {
		return errf("address is required (host:port)")
	}
	_, port, err := net.SplitHostPort(c.Address)
	if err != nil {
		return errf("address %q: %v", c.Address, err)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return errf("address %q: port must be a number in 0..65535", c.Address)
	}
	switch c.CertIdentity {
	case "", IdentityCN, IdentitySAN:
	default:
		return errf("cert_identity %q is not %q or %q", c.CertIdentity, IdentityCN, IdentitySAN)
	}
	if c.CertIdentity != "" && (c.TLS == nil || c.TLS.ClientCAFile == "") {
		return errf("cert_identity needs tls.client_ca_file")
	}
	if c.MaxConnections < 0 {
		return errf("max_connections must not be negative")
	}
	if c.ProxyHeaderTimeout < 0 {
		return errf("proxy_header_timeout must not be negative")
	}
	if c.HandshakeTimeout < 0 {
		return errf("handshake_timeout must not be negative")
	}
	if !IsWebSocket(c.Protocol) {
		switch {
		case c.WSPath != "":
			return errf("ws_path only applies to protocols %q and %q", ProtocolWS, ProtocolStompWS)
		case c.WSMaxFrame != 0:
			return errf("ws_max_frame only applies to protocols %q and %q", ProtocolWS, ProtocolStompWS)
		case len(c.TrustedProxies) != 0:
			return errf("trusted_proxies only applies to protocols %q and %q (X-Forwarded-For); use proxy_protocol for %s", ProtocolWS, ProtocolStompWS, c.Protocol)
		}
	}
	if c.WSPath != "" {
		if !strings.HasPrefix(c.WSPath, "/") {
			return errf("ws_path %q must start with '/'", c.WSPath)
		}
		if strings.ContainsAny(c.WSPath, "?# \t\r\n") {
			return errf("ws_path %q must be a plain path (no query, fragment or spaces)", c.WSPath)
		}
	}
	if c.WSMaxFrame < 0 {
		return errf("ws_max_frame must not be negative")
	}
	for i, p := range c.TrustedProxies {
		if !p.IsValid() {
			return errf("trusted_proxies[%d] is not a valid CIDR prefix", i)
		}
	}
	if len(c.ProxyProtocolTrusted) > 0 && !c.ProxyProtocol {
		return errf("proxy_protocol_trusted only applies with proxy_protocol: true")
	}
	for i, p := range c.ProxyProtocolTrusted {
		if !p.IsValid() {
			return errf("proxy_protocol_trusted[%d] is not a valid CIDR prefix", i)
		}
	}
	if t := c.TLS; t != nil {
		if t.CertFile == "" {
			return errf("tls.cert_file is required")
		}
		if t.KeyFile == "" {
			return errf("tls.key_file is required")
		}
		if t.RequireClientCert && t.ClientCAFile == "" {
			return errf("tls.require_client_cert needs tls.client_ca_file to verify client certificates")
		}
		if _, err := t.minVersion(); err != nil {
			return errf("%v", err)
		}
	}
	return nil
}

// withDefaults returns a copy of c with documented defaults filled in.
func (c Config) withDefaults() Config {
	if c.ProxyHeaderTimeout == 0 {
		c.ProxyHeaderTimeout = DefaultProxyHeaderTimeout
	}
	if c.HandshakeTimeout == 0 {
		c.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if IsWebSocket(c.Protocol) {
		if c.WSPath == "" {
			c.WSPath = DefaultWSPath
			if c.Protocol == ProtocolStompWS {
				c.WSPath = DefaultStompWSPath
			}
		}
		if c.WSMaxFrame == 0 {
			c.WSMaxFrame = DefaultWSMaxFrame
		}
	}
	c.TrustedProxies = append(Networks(nil), c.TrustedProxies...)
	if c.ProxyProtocol && len(c.ProxyProtocolTrusted) == 0 {
		c.ProxyProtocolTrusted = DefaultProxyProtocolTrusted()
	} else {
		c.ProxyProtocolTrusted = append(Networks(nil), c.ProxyProtocolTrusted...)
	}
	if c.TLS != nil {
		t := *c.TLS
		if t.MinVersion == "" {
			t.MinVersion = "1.2"
		}
		if t.ReloadInterval == 0 {
			t.ReloadInterval = DefaultTLSReloadInterval
		}
		c.TLS = &t
	}
	return c
}
