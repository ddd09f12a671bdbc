package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Bridge is one entry of the bridges: section: an outgoing MQTT link to
// another broker (docs/bridges.md). Zero values take the defaults noted
// (applied by validateBridges).
type Bridge struct {
	Name string `yaml:"name"`
	// URL is mqtt://, mqtts://, ws:// or wss://host:port[/path]; or give
	// Address (host:port, as mosquitto's address) and TLS.
	URL     string `yaml:"url"`
	Address string `yaml:"address"`
	// TLS with Address makes the link mqtts (implied by ca_file or
	// cert_file).
	TLS      bool   `yaml:"tls"`
	Version  int    `yaml:"version"` // 4 (3.1.1) or 5; default 5
	ClientID string `yaml:"client_id"`
	// CleanStart starts a new remote session on every connection
	// (mosquitto cleansession); default false, with SessionExpiry
	// (default 1 h, v5) keeping it across reconnections.
	CleanStart    bool          `yaml:"clean_start"`
	SessionExpiry time.Duration `yaml:"session_expiry"`
	KeepAlive     time.Duration `yaml:"keepalive"`
	Username      string        `yaml:"username"`
	Password      string        `yaml:"password"`
	CAFile        string        `yaml:"ca_file"`
	CertFile      string        `yaml:"cert_file"`
	KeyFile       string        `yaml:"key_file"`
	// Insecure skips the verification of the remote's certificate
	// (mosquitto bridge_insecure; tests only).
	Insecure bool `yaml:"insecure"`
	// TryPrivate sets the bridge bit in a 3.1.1 CONNECT (mosquitto
	// try_private; nil = true).
	TryPrivate *bool         `yaml:"try_private"`
	Topics     []BridgeTopic `yaml:"topics"`
	MaxHops    int           `yaml:"max_hops"`
	Buffer     BridgeBuffer  `yaml:"buffer"`
	// Demand forwards in only what local clients subscribe to (network of
	// brokers).
	Demand bool `yaml:"demand"`
	// MinBackoff and MaxBackoff bound the reconnection delay
	// (exponential with jitter; mosquitto restart_timeout).
	MinBackoff time.Duration `yaml:"min_backoff"`
	MaxBackoff time.Duration `yaml:"max_backoff"`
}

// BridgeTopic is one topic rule (mosquitto: topic pattern [[[out|in|both]
// qos] local-prefix remote-prefix]).
type BridgeTopic struct {
	Pattern      string `yaml:"pattern"`
	Direction    string `yaml:"direction"` // in, out, both; default out
	QoS          *int   `yaml:"qos"`       // default 0 (mosquitto's default)
	LocalPrefix  string `yaml:"local_prefix"`
	RemotePrefix string `yaml:"remote_prefix"`
}

// BridgeBuffer bounds a bridge's outgoing buffer.
type BridgeBuffer struct {
	MaxMessages int      `yaml:"max_messages"`
	MaxBytes    ByteSize `yaml:"max_bytes"`
}

// ByteSize is a byte count written as a number or with a unit: 512KiB,
// 64MiB, 1GiB (also KB, MB, GB as powers of 1000).
type ByteSize int64

// UnmarshalYAML implements yaml.Unmarshaler.
func (b *ByteSize) UnmarshalYAML(n *yaml.Node) error {
	s := strings.TrimSpace(n.Value)
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		m      int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"B", 1}} {
		if v, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = strings.TrimSpace(v), u.m
			break
		}
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < 0 || v > (1<<62)/mult {
		return fmt.Errorf("line %d: %q is not a byte size (e.g. 67108864 or 64MiB)", n.Line, n.Value)
	}
	*b = ByteSize(v * mult)
	return nil
}

// Bridge defaults.
const (
	DefaultBridgeMaxHops        = 8
	DefaultBridgeBufferMessages = 100_000
	DefaultBridgeBufferBytes    = 64 << 20
	DefaultBridgeSessionExpiry  = time.Hour
)

// validateBridges checks the bridges: section and fills in defaults.
func (c *Config) validateBridges() error {
	seen := map[string]bool{}
	for i := range c.Bridges {
		b := &c.Bridges[i]
		where := fmt.Sprintf("bridges[%d]", i)
		if b.Name == "" {
			return fmt.Errorf("%s.name: required", where)
		}
		if strings.ContainsAny(b.Name, "/+#,") {
			return fmt.Errorf("%s.name: %q must not contain / + # or ,", where, b.Name)
		}
		where = "bridges." + b.Name
		if seen[b.Name] {
			return fmt.Errorf("%s: name used twice", where)
		}
		seen[b.Name] = true
		switch {
		case b.URL != "" && b.Address != "":
			return fmt.Errorf("%s: url and address are exclusive", where)
		case b.URL == "" && b.Address == "":
			return fmt.Errorf("%s: url or address is required", where)
		case b.Address != "":
			if _, _, err := net.SplitHostPort(b.Address); err != nil {
				return fmt.Errorf("%s.address: %v", where, err)
			}
			scheme := "mqtt"
			if b.TLS || b.CAFile != "" || b.CertFile != "" {
				scheme = "mqtts"
			}
			b.URL = scheme + "://" + b.Address
		default:
			u, err := url.Parse(b.URL)
			if err != nil {
				return fmt.Errorf("%s.url: %v", where, err)
			}
			switch u.Scheme {
			case "mqtt", "tcp", "mqtts", "ssl", "tls", "ws", "wss":
			default:
				return fmt.Errorf("%s.url: scheme %q is not mqtt, mqtts, ws or wss", where, u.Scheme)
			}
		}
		switch b.Version {
		case 0:
			b.Version = 5
		case 4, 5:
		default:
			return fmt.Errorf("%s.version: %d is not 4 (3.1.1) or 5", where, b.Version)
		}
		if b.ClientID == "" {
			b.ClientID = "isobar-bridge-" + b.Name
			if c.NodeName != "" {
				b.ClientID = c.NodeName + "." + b.Name
			}
		}
		if (b.CertFile == "") != (b.KeyFile == "") {
			return fmt.Errorf("%s: cert_file and key_file go together", where)
		}
		if b.SessionExpiry < 0 || b.KeepAlive < 0 || b.MinBackoff < 0 || b.MaxBackoff < 0 {
			return fmt.Errorf("%s: durations must not be negative", where)
		}
		if b.SessionExpiry == 0 && !b.CleanStart {
			b.SessionExpiry = DefaultBridgeSessionExpiry
		}
		if b.MaxBackoff > 0 && b.MinBackoff > b.MaxBackoff {
			return fmt.Errorf("%s: min_backoff is above max_backoff", where)
		}
		if b.TryPrivate == nil {
			t := true
			b.TryPrivate = &t
		}
		if len(b.Topics) == 0 {
			return fmt.Errorf("%s.topics: at least one is required", where)
		}
		for j := range b.Topics {
			t := &b.Topics[j]
			if t.Pattern == "" {
				return fmt.Errorf("%s.topics[%d].pattern: required", where, j)
			}
			switch t.Direction {
			case "":
				t.Direction = "out"
			case "in", "out", "both":
			default:
				return fmt.Errorf("%s.topics[%d].direction: %q is not in, out or both", where, j, t.Direction)
			}
			if t.QoS == nil {
				q := 0
				t.QoS = &q
			}
			if *t.QoS < 0 || *t.QoS > 2 {
				return fmt.Errorf("%s.topics[%d].qos: %d is not 0, 1 or 2", where, j, *t.QoS)
			}
			if strings.ContainsAny(t.LocalPrefix+t.RemotePrefix, "+#") {
				return fmt.Errorf("%s.topics[%d]: prefixes must not contain wildcards", where, j)
			}
		}
		if b.MaxHops < 0 || b.MaxHops > 255 {
			return fmt.Errorf("%s.max_hops: %d is not between 1 and 255", where, b.MaxHops)
		}
		if b.MaxHops == 0 {
			b.MaxHops = DefaultBridgeMaxHops
		}
		if b.Buffer.MaxMessages < 0 || b.Buffer.MaxBytes < 0 {
			return errors.New(where + ".buffer: must not be negative")
		}
		if b.Buffer.MaxMessages == 0 {
			b.Buffer.MaxMessages = DefaultBridgeBufferMessages
		}
		if b.Buffer.MaxBytes == 0 {
			b.Buffer.MaxBytes = DefaultBridgeBufferBytes
		}
	}
	return nil
}
