package node

import (
	"fmt"
	"log/slog"
	"sync/atomic"

	"github.com/isobar-mq/isobar/internal/auth"
	"github.com/isobar-mq/isobar/internal/broker"
	"github.com/isobar-mq/isobar/internal/config"
)

// Security implements broker.Auth from the configuration: anonymous
// access, a password file and ACLs, all reloadable.
type Security struct {
	cfg       config.Auth
	log       *slog.Logger
	passwords atomic.Pointer[auth.PasswordFile]
	acl       atomic.Pointer[auth.ACL]
}

// NewSecurity returns nil when the configuration imposes nothing (anonymous
// allowed, no password file, no ACL): the broker then skips every check.
func NewSecurity(cfg config.Auth, log *slog.Logger) (*Security, error) {
	if cfg.AllowAnonymous && cfg.PasswordFile == "" && cfg.ACLFile == "" && len(cfg.ACL) == 0 {
		return nil, nil
	}
	s := &Security{cfg: cfg, log: log}
	if err := s.Reload(); err != nil {
		return nil, err
	}
	return s, nil
}

// Reload re-reads the password and ACL files; on error the old rules stay.
func (s *Security) Reload() error {
	var pf *auth.PasswordFile
	if s.cfg.PasswordFile != "" {
		var err error
		if pf, err = auth.LoadPasswordFile(s.cfg.PasswordFile); err != nil {
			return fmt.Errorf("password file: %w", err)
		}
	}
	rules := make([]auth.Rule, len(s.cfg.ACL))
	for i, r := range s.cfg.ACL {
		rules[i] = auth.Rule{User: r.User, Pattern: r.Pattern, Access: r.Access, Topic: r.Topic}
	}
	acl, err := auth.LoadACL(auth.ACLConfig{File: s.cfg.ACLFile, Rules: rules})
	if err != nil {
		return fmt.Errorf("acl: %w", err)
	}
	s.passwords.Store(pf)
	s.acl.Store(acl)
	return nil
}

// Authenticate implements broker.Auth.
func (s *Security) Authenticate(r broker.AuthRequest) broker.AuthResponse {
	if !r.HasUsername {
		if s.cfg.AllowAnonymous {
			return broker.AuthResponse{Result: broker.AuthOK}
		}
		return broker.AuthResponse{Result: broker.AuthNotAuthorized}
	}
	pf := s.passwords.Load()
	if pf == nil {
		// No password file: user names are accepted as given.
		return broker.AuthResponse{Result: broker.AuthOK}
	}
	if !pf.Verify(r.Username, r.Password) {
		return broker.AuthResponse{Result: broker.AuthBadCredentials}
	}
	return broker.AuthResponse{Result: broker.AuthOK}
}

// CanPublish implements broker.Auth.
func (s *Security) CanPublish(c broker.ClientInfo, topic string) bool {
	return s.acl.Load().CanPublish(c.Username, c.ClientID, topic)
}

// CanSubscribe implements broker.Auth.
func (s *Security) CanSubscribe(c broker.ClientInfo, filter string) bool {
	return s.acl.Load().CanSubscribe(c.Username, c.ClientID, filter)
}

// CanReceive implements broker.Auth.
func (s *Security) CanReceive(c broker.ClientInfo, topic string) bool {
	return s.acl.Load().CanReceive(c.Username, c.ClientID, topic)
}
