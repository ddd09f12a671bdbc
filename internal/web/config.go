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
}

// APIKey is a named bearer token. Hash is "sha256:" followed by the
// lower-case hex SHA-256 of the token: API keys are long random strings,
// so a fast hash is enough and lets every request be checked cheaply.
type APIKey struct {
	Name string `yaml:"name"`
	Hash string `yaml:"hash"`
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
	}
	if c.SessionTTL < 0 {
		return errors.New("http.session_ttl: must not be negative")
	}
	if c.MaxBodySize < 0 {
		return errors.New("http.max_body_size: must not be negative")
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
