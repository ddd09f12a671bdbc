package web

import (
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/isobar-mq/isobar/internal/auth"
)

// DefaultAddress is where the HTTP listener binds when Config.Address is
// empty: loopback only, never open to the world by default.
const DefaultAddress = "127.0.0.1:18083"

// Defaults for Config fields left zero.
const (
	DefaultSessionTTL  = 8 * time.Hour
	DefaultMaxBodySize = 1 << 20
)

// Config is the http: section of the configuration file.
type Config struct {
	// Enabled turns the HTTP listener (console, API, metrics, health) on.
	Enabled bool `yaml:"enabled"`
	// Address is host:port. Empty means DefaultAddress, bound on a best
	// effort basis: if that port is taken the broker starts without HTTP
	// and logs a warning. An address given explicitly must be free.
	Address string `yaml:"address,omitempty"`
	// TLS serves HTTPS when set.
	TLS *TLSConfig `yaml:"tls,omitempty"`
	// Users are the administrators allowed in the API and the console.
	Users []User `yaml:"users,omitempty"`
	// APIKeys are bearer tokens for automation, stored as hashes.
	APIKeys []APIKey `yaml:"api_keys,omitempty"`
	// MetricsAuth requires authentication (Basic or Bearer) on /metrics.
	MetricsAuth bool `yaml:"metrics_auth,omitempty"`
	// SessionTTL is how long a console login lasts (default 8h).
	SessionTTL time.Duration `yaml:"session_ttl,omitempty"`
	// MaxBodySize limits request bodies in bytes (default 1 MiB).
	MaxBodySize int64 `yaml:"max_body_size,omitempty"`
	// AllowedHosts are the host names accepted in the Host header, besides
	// IP address literals (which DNS rebinding cannot forge), "localhost"
	// and the host of Address. "*" accepts any host. An entry "*.example.com"
	// accepts every subdomain of example.com.
	AllowedHosts []string `yaml:"allowed_hosts,omitempty"`
	// TrustedProxies are addresses or CIDR prefixes of reverse proxies whose
	// X-Forwarded-For header names the client (for login throttling and
	// logs). Empty: X-Forwarded-For is ignored.
	TrustedProxies []string `yaml:"trusted_proxies,omitempty"`
	// CookieSecure marks the session cookie Secure. Unset: Secure exactly
	// when the listener itself serves TLS; set true behind a proxy that
	// terminates TLS.
	CookieSecure *bool `yaml:"cookie_secure,omitempty"`
	// GeneratedPasswordFile is where the password generated for "admin"
	// (when Users is empty) is written, mode 0600. Empty: the node's choice
	// (http-admin-password in store.data_dir).
	GeneratedPasswordFile string `yaml:"generated_password_file,omitempty"`
}

// TLSConfig is a certificate and key for HTTPS.
type TLSConfig struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// User is an administrator: a user name and an argon2id (or other
// supported, see auth.VerifyHash) password hash, as written by
// "isobar passwd".
type User struct {
	Username     string `yaml:"username"`
	PasswordHash string `yaml:"password_hash"`
	// Role is read, publish or admin (the default); see docs/api.md.
	Role string `yaml:"role,omitempty"`
	// Topics, when set, are the MQTT topic filters this user may publish
	// to and see or change the retained messages of through the API.
	Topics []string `yaml:"topics,omitempty"`
}

// APIKey is a named bearer token. Hash is "sha256:" followed by the
// lower-case hex SHA-256 of the token: API keys are long random strings,
// so a fast hash is enough and lets every request be checked cheaply.
type APIKey struct {
	Name string `yaml:"name"`
	Hash string `yaml:"hash"`
	// Role and Topics as for User.
	Role   string   `yaml:"role,omitempty"`
	Topics []string `yaml:"topics,omitempty"`
}

// DefaultConfig is the http: section used when the file has none.
func DefaultConfig() Config { return Config{Enabled: true} }

func (c Config) withDefaults() Config {
	if c.SessionTTL <= 0 {
		c.SessionTTL = DefaultSessionTTL
	}
	if c.MaxBodySize <= 0 {
		c.MaxBodySize = DefaultMaxBodySize
	}
	return c
}

// Validate checks the section; errors name the key.
func (c *Config) Validate() error {
	if c.Address != "" {
		_, port, err := net.SplitHostPort(c.Address)
		if err != nil {
			return fmt.Errorf("http.address: %q: %v", c.Address, err)
		}
		if _, err := strconv.ParseUint(port, 10, 16); err != nil {
			return fmt.Errorf("http.address: %q: port must be a number in 0..65535", c.Address)
		}
	}
	if c.TLS != nil && (c.TLS.CertFile == "" || c.TLS.KeyFile == "") {
		return errors.New("http.tls: cert_file and key_file are both required")
	}
	seen := map[string]bool{}
	for i, u := range c.Users {
		if u.Username == "" {
			return fmt.Errorf("http.users[%d]: username is required", i)
		}
		if strings.ContainsAny(u.Username, ":\x00") {
			return fmt.Errorf("http.users[%d]: username may not contain ':'", i)
		}
		if seen[u.Username] {
			return fmt.Errorf("http.users[%d]: duplicate username %q", i, u.Username)
		}
		seen[u.Username] = true
		if _, err := auth.VerifyHash(u.PasswordHash, nil); err != nil {
			return fmt.Errorf("http.users[%d] (%s): password_hash: %v (create one with \"isobar passwd\")", i, u.Username, err)
		}
		if err := validPermissions(u.Role, u.Topics); err != nil {
			return fmt.Errorf("http.users[%d] (%s): %v", i, u.Username, err)
		}
	}
	names := map[string]bool{}
	for i, k := range c.APIKeys {
		if k.Name == "" {
			return fmt.Errorf("http.api_keys[%d]: name is required", i)
		}
		if names[k.Name] {
			return fmt.Errorf("http.api_keys[%d]: duplicate name %q", i, k.Name)
		}
		names[k.Name] = true
		if _, err := parseKeyHash(k.Hash); err != nil {
			return fmt.Errorf("http.api_keys[%d] (%s): hash: %v", i, k.Name, err)
		}
		if err := validPermissions(k.Role, k.Topics); err != nil {
			return fmt.Errorf("http.api_keys[%d] (%s): %v", i, k.Name, err)
		}
	}
	if c.SessionTTL < 0 {
		return errors.New("http.session_ttl: must not be negative")
	}
	if c.MaxBodySize < 0 {
		return errors.New("http.max_body_size: must not be negative")
	}
	for i, h := range c.AllowedHosts {
		if err := validHostRule(h); err != nil {
			return fmt.Errorf("http.allowed_hosts[%d]: %q: %v", i, h, err)
		}
	}
	for i, p := range c.TrustedProxies {
		if _, err := parseProxy(p); err != nil {
			return fmt.Errorf("http.trusted_proxies[%d]: %q: want an IP address or a CIDR prefix such as 10.0.0.0/8", i, p)
		}
	}
	return nil
}

// validPermissions checks a user's or API key's role and topics.
func validPermissions(r string, topics []string) error {
	if _, err := parseRole(r); err != nil {
		return fmt.Errorf("role: %v", err)
	}
	if topics != nil && len(topics) == 0 {
		return errors.New("topics: an empty list allows nothing; omit the key to allow every topic")
	}
	for j, t := range topics {
		if err := validTopicRule(t); err != nil {
			return fmt.Errorf("topics[%d]: %q: %v", j, t, err)
		}
	}
	return nil
}

func parseKeyHash(s string) ([]byte, error) {
	h, ok := strings.CutPrefix(s, "sha256:")
	if !ok {
		return nil, errors.New(`want "sha256:<64 hex digits>"`)
	}
	b, err := hex.DecodeString(h)
	if err != nil || len(b) != 32 {
		return nil, errors.New(`want "sha256:<64 hex digits>"`)
	}
	return b, nil
}
