package node

import (
	"log/slog"

	"github.com/isobar-mq/isobar/internal/auth"
	"github.com/isobar-mq/isobar/internal/broker"
	"github.com/isobar-mq/isobar/internal/config"
	"github.com/isobar-mq/isobar/internal/listener"
)

// Roles passed through broker.ClientInfo.Role.
const (
	roleAnonymous = broker.RoleAnonymous // the user name, if any, was not verified
	roleReadOnly  = broker.RoleAnonymous << 1
)

// Security implements broker.Auth with the auth package's Authenticator
// (password file, ACLs, read-only role, failed-login throttling), plus the
// per-listener settings: anonymous access and client-certificate identity.
type Security struct {
	a         *auth.Authenticator
	anonymous bool
	listeners map[string]listener.Config
	log       *slog.Logger
}

// NewSecurity returns nil when the configuration imposes nothing (anonymous
// allowed everywhere, no password file, no ACL, no read-only role, no
// certificate identities): the broker then skips every check.
func NewSecurity(cfg *config.Config, log *slog.Logger) (*Security, error) {
	a := cfg.Auth
	open := a.AllowAnonymous && a.PasswordFile == "" && a.ACLFile == "" && len(a.ACL) == 0 && a.ReadOnly == nil
	ls := make(map[string]listener.Config, len(cfg.Listeners))
	for _, l := range cfg.Listeners {
		ls[l.Name] = l
		if l.CertIdentity != "" || (l.AllowAnonymous != nil && !*l.AllowAnonymous) {
			open = false
		}
	}
	if open {
		return nil, nil
	}
	rules := make([]auth.Rule, len(a.ACL))
	for i, r := range a.ACL {
		rules[i] = auth.Rule{User: r.User, Pattern: r.Pattern, Access: r.Access, Topic: r.Topic}
	}
	authn, err := auth.NewAuthenticator(auth.Config{
		AllowAnonymous: a.AllowAnonymous,
		PasswordFile:   a.PasswordFile,
		ACL:            auth.ACLConfig{File: a.ACLFile, Rules: rules, SubscribeCheck: a.SubscribeCheck, Default: a.ACLDefault},
		ReadOnly:       a.ReadOnly,
		Throttle:       a.Throttle,
	}, log)
	if err != nil {
		return nil, err
	}
	if acl := authn.ACL(); acl != nil {
		for _, w := range acl.Warnings() {
			log.Warn("acl", "warning", w)
		}
	}
	return &Security{a: authn, anonymous: a.AllowAnonymous, listeners: ls, log: log}, nil
}

// Reload re-reads the password and ACL files; on error the old rules stay.
func (s *Security) Reload() error { return s.a.Reload() }

// Stats exposes the authenticator's counters.
func (s *Security) Stats() *auth.Stats { return s.a.Stats() }

// Authenticate implements broker.Auth.
func (s *Security) Authenticate(r broker.AuthRequest) broker.AuthResponse {
	lc := s.listeners[r.Listener]
	if lc.CertIdentity != "" && r.Conn != nil {
		if name, ok := listener.PeerIdentity(r.Conn, lc.CertIdentity); ok && name != "" {
			// Mutual TLS: the verified certificate names the user.
			return broker.AuthResponse{Result: broker.AuthOK, Username: name}
		}
	}
	anonymousOK := s.anonymous
	if lc.AllowAnonymous != nil {
		anonymousOK = *lc.AllowAnonymous
	}
	if !r.HasUsername {
		if !anonymousOK {
			return broker.AuthResponse{Result: broker.AuthNotAuthorized}
		}
		if !s.anonymous {
			// Allowed on this listener only: anonymous identity directly.
			return broker.AuthResponse{Result: broker.AuthOK, Role: roleAnonymous}
		}
	}
	// The broker waits the throttle delay after this call returns, so the
	// credentials are verified first and a failure counts from the end
	// of the wait.
	id, res, delay := s.a.Login(auth.Credentials{User: r.Username, HasUser: r.HasUsername,
		Password: r.Password, HasPassword: r.HasPassword, Remote: r.Remote})
	resp := broker.AuthResponse{Delay: delay}
	switch res {
	case auth.ResultOK:
		resp.Result = broker.AuthOK
		if id.Anonymous {
			resp.Role |= roleAnonymous
		}
		if id.ReadOnly {
			resp.Role |= roleReadOnly
		}
	case auth.ResultBadCredentials:
		resp.Result = broker.AuthBadCredentials
	default:
		resp.Result = broker.AuthNotAuthorized
	}
	return resp
}

func identity(c broker.ClientInfo) auth.Identity {
	id := auth.Identity{Anonymous: c.Role&roleAnonymous != 0, ReadOnly: c.Role&roleReadOnly != 0}
	if !id.Anonymous {
		id.User = c.Username
	}
	return id
}

// CanPublish implements broker.Auth.
func (s *Security) CanPublish(c broker.ClientInfo, topic string) bool {
	return s.a.CanPublish(identity(c), c.ClientID, topic)
}

// CanSubscribe implements broker.Auth.
func (s *Security) CanSubscribe(c broker.ClientInfo, filter string) bool {
	return s.a.CanSubscribe(identity(c), c.ClientID, filter)
}

// CanReceive implements broker.Auth.
func (s *Security) CanReceive(c broker.ClientInfo, topic string) bool {
	return s.a.CanReceive(identity(c), c.ClientID, topic)
}
