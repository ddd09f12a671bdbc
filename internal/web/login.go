package web

import (
	"errors"
	"net/http"
	"time"
)

type loginRequest struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

type sessionInfo struct {
	Username  string     `json:"username"`
	Method    string     `json:"auth_method"`
	Role      string     `json:"role"`
	CSRFToken string     `json:"csrf_token,omitempty"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
}

func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	var req loginRequest
	if !decodeJSON(w, r, &req) {
		return
	}
	if req.Username == "" || req.Password == "" {
		writeError(w, http.StatusBadRequest, "username and password are required")
		return
	}
	addr, from := s.auth.source(r)
	if err := s.auth.attempt(r.Context(), addr, req.Username, req.Password); err != nil {
		if errors.Is(err, errBadCredentials) {
			s.log.Warn("console login failed", "username", req.Username, "remote", from)
			writeError(w, http.StatusUnauthorized, "invalid username or password")
			return
		}
		s.log.Debug("console login refused", "username", req.Username, "remote", from, "reason", err)
		s.authError(w, r, err)
		return
	}
	sess := s.auth.newSession(req.Username)
	http.SetCookie(w, &http.Cookie{
		Name: cookieName, Value: sess.token, Path: "/", Expires: sess.expires,
		MaxAge: int(s.cfg.SessionTTL / time.Second), HttpOnly: true, SameSite: http.SameSiteStrictMode,
		Secure: s.cookieSecure(),
	})
	s.log.Info("console login", "username", req.Username, "remote", from)
	exp := sess.expires.UTC()
	p := s.auth.userPrincipal(sess.user, "session", sess)
	writeJSON(w, http.StatusOK, sessionInfo{Username: sess.user, Method: "session", Role: p.role.String(), CSRFToken: sess.csrf, ExpiresAt: &exp})
}

func (s *Server) logout(w http.ResponseWriter, r *http.Request) {
	if c, err := r.Cookie(cookieName); err == nil && c.Value != "" {
		if sess := s.auth.session(c.Value); sess != nil {
			if r.Header.Get(csrfHeader) != sess.csrf {
				writeError(w, http.StatusForbidden, "%v", errCSRF)
				return
			}
			s.auth.endSession(c.Value)
		}
	}
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: "", Path: "/", MaxAge: -1, HttpOnly: true,
		SameSite: http.SameSiteStrictMode, Secure: s.cookieSecure()})
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) whoami(w http.ResponseWriter, r *http.Request) {
	p := principalFrom(r.Context())
	info := sessionInfo{Username: p.name, Method: p.method, Role: p.role.String()}
	if p.sess != nil {
		exp := p.sess.expires.UTC()
		info.CSRFToken, info.ExpiresAt = p.sess.csrf, &exp
	}
	writeJSON(w, http.StatusOK, info)
}
