package auth

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"strings"
)

// Credential is a username and plain-text password pair for the read-only
// role. These credentials are public by design (for example WIS2's
// everyone/everyone), so they are configured in clear text.
type Credential struct {
	User     string `yaml:"user"`
	Password string `yaml:"password"`
}

// ReadOnlyRole grants subscribe-only access to a fixed set of topic filters
// to a few public credentials and, optionally, to anonymous clients. Its
// clients may never publish (wills included) and may only subscribe to
// filters within Topics and receive messages whose topic matches Topics;
// the ACL rules do not apply to them. Role credentials take precedence over
// a password-file entry with the same username.
type ReadOnlyRole struct {
	Users     []Credential `yaml:"users,omitempty"`
	Topics    []string     `yaml:"topics"`
	Anonymous bool         `yaml:"anonymous,omitempty"`
}

// WIS2ReadOnlyRole returns the WMO WIS2 Global Broker convention: user
// "everyone" with password "everyone" may subscribe to origin/a/wis2/# and
// cache/a/wis2/# and never publish.
func WIS2ReadOnlyRole() ReadOnlyRole {
	return ReadOnlyRole{
		Users:  []Credential{{User: "everyone", Password: "everyone"}},
		Topics: []string{"origin/a/wis2/#", "cache/a/wis2/#"},
	}
}

// Validate checks the role: at least one topic filter, all filters valid,
// usernames valid and unique, passwords non-empty.
func (r *ReadOnlyRole) Validate() error {
	_, err := compileReadOnly(r)
	return err
}

// readOnly is a compiled ReadOnlyRole.
type readOnly struct {
	creds     map[string][sha256.Size]byte
	topics    [][]string
	anonymous bool
}

func compileReadOnly(r *ReadOnlyRole) (*readOnly, error) {
	if r == nil {
		return nil, nil
	}
	ro := &readOnly{creds: make(map[string][sha256.Size]byte), anonymous: r.Anonymous}
	if len(r.Topics) == 0 {
		return nil, errors.New("read-only role: no topics")
	}
	for _, t := range r.Topics {
		if err := validFilter(t); err != nil {
			return nil, fmt.Errorf("read-only role: topic %q: %v", t, err)
		}
		if strings.HasPrefix(t, "$share/") {
			return nil, fmt.Errorf("read-only role: topic %q: shared subscription prefix not allowed", t)
		}
		ro.topics = append(ro.topics, strings.Split(t, "/"))
	}
	for _, c := range r.Users {
		if err := validUsername(c.User); err != nil {
			return nil, fmt.Errorf("read-only role: user %q: %v", c.User, err)
		}
		if c.Password == "" {
			return nil, fmt.Errorf("read-only role: user %q: empty password", c.User)
		}
		if _, dup := ro.creds[c.User]; dup {
			return nil, fmt.Errorf("read-only role: duplicate user %q", c.User)
		}
		ro.creds[c.User] = sha256.Sum256([]byte(c.Password))
	}
	return ro, nil
}

// knows reports whether user is a role user (false for a nil role).
func (ro *readOnly) knows(user string) bool {
	if ro == nil {
		return false
	}
	_, ok := ro.creds[user]
	return ok
}

// lookup reports whether user is a role user and, if so, whether password
// matches (compared in constant time over digests).
func (ro *readOnly) lookup(user string, password []byte) (known, ok bool) {
	want, known := ro.creds[user]
	if !known {
		return false, false
	}
	got := sha256.Sum256(password)
	return true, subtle.ConstantTimeCompare(got[:], want[:]) == 1
}

func (ro *readOnly) canSubscribe(filter string) bool {
	f, ok := splitShared(filter)
	if !ok || validFilter(f) != nil {
		return false
	}
	for _, t := range ro.topics {
		if coversLevels(t, f) {
			return true
		}
	}
	return false
}

func (ro *readOnly) canReceive(topic string) bool {
	if !plainTopic(topic) {
		return false
	}
	for _, t := range ro.topics {
		if matchLevels(t, topic) {
			return true
		}
	}
	return false
}
