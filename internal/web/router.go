package web

import (
	"errors"
	"net/http"
	"sort"
	"strings"
)

// op is an endpoint's handler for one method and the role it needs (when
// the route requires authentication).
type op struct {
	fn   http.HandlerFunc
	need role
}

func read(fn http.HandlerFunc) op      { return op{fn, roleRead} }
func publisher(fn http.HandlerFunc) op { return op{fn, rolePublish} }
func admin(fn http.HandlerFunc) op     { return op{fn, roleAdmin} }

type methods map[string]op

// route registers pattern with a handler per method; other methods get a
// JSON 405 with an Allow header. HEAD is allowed wherever GET is. With
// authRequired, the caller must be authenticated and hold the method's
// role (403 otherwise).
func (s *Server) route(mux *http.ServeMux, pattern string, authRequired bool, m methods) {
	allowed := make([]string, 0, len(m)+1)
	for k := range m {
		allowed = append(allowed, k)
	}
	if _, ok := m[http.MethodGet]; ok {
		allowed = append(allowed, http.MethodHead)
	}
	sort.Strings(allowed)
	allow := strings.Join(allowed, ", ")
	mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		method := r.Method
		if method == http.MethodHead {
			method = http.MethodGet
		}
		h, ok := m[method]
		if !ok {
			w.Header().Set("Allow", allow)
			writeError(w, http.StatusMethodNotAllowed, "method %s not allowed; allowed: %s", r.Method, allow)
			return
		}
		if authRequired {
			p, err := s.auth.authenticate(r)
			if err != nil {
				s.authError(w, r, err)
				return
			}
			if p.role < h.need {
				writeError(w, http.StatusForbidden, "%s %s needs the %s role; %s has the %s role",
					r.Method, r.URL.Path, h.need, p.name, p.role)
				return
			}
			r = r.WithContext(withPrincipal(r.Context(), p))
		}
		h.fn(w, r)
	})
}

func (s *Server) authError(w http.ResponseWriter, r *http.Request, err error) {
	var te *throttledError
	switch {
	case errors.As(err, &te):
		w.Header().Set("Retry-After", te.retryAfter())
		writeError(w, http.StatusTooManyRequests, "%v", err)
	case errors.Is(err, errBusy):
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, "%v", err)
	case errors.Is(err, errCSRF):
		writeError(w, http.StatusForbidden, "%v", err)
	default:
		// The console sends X-Requested-With so that browsers do not pop
		// up their own Basic login dialog.
		if r.Header.Get("X-Requested-With") == "" {
			w.Header().Set("WWW-Authenticate", `Basic realm="Isobar", charset="UTF-8"`)
		}
		writeError(w, http.StatusUnauthorized, "%v", err)
	}
}

func (s *Server) routes(mux *http.ServeMux) {
	s.route(mux, "/healthz", false, methods{http.MethodGet: read(s.healthz)})
	s.route(mux, "/readyz", false, methods{http.MethodGet: read(s.readyz)})
	mh := s.metricsHandler()
	s.route(mux, "/metrics", s.cfg.MetricsAuth, methods{http.MethodGet: read(mh.ServeHTTP)})

	s.route(mux, "/api/v1/login", false, methods{http.MethodPost: read(s.login)})
	s.route(mux, "/api/v1/logout", false, methods{http.MethodPost: read(s.logout)})
	s.route(mux, "/api/v1/session", true, methods{http.MethodGet: read(s.whoami)})
	s.route(mux, "/api/v1/broker", true, methods{http.MethodGet: read(s.brokerInfo)})
	s.route(mux, "/api/v1/stats", true, methods{http.MethodGet: read(s.stats)})
	s.route(mux, "/api/v1/stats/history", true, methods{http.MethodGet: read(s.statsHistory)})
	s.route(mux, "/api/v1/listeners", true, methods{http.MethodGet: read(s.listeners)})
	s.route(mux, "/api/v1/clients", true, methods{http.MethodGet: read(s.clients)})
	s.route(mux, "/api/v1/clients/{id}", true, methods{http.MethodGet: read(s.client), http.MethodDelete: admin(s.kick)})
	s.route(mux, "/api/v1/sessions", true, methods{http.MethodGet: read(s.sessions)})
	s.route(mux, "/api/v1/sessions/{id}", true, methods{http.MethodGet: read(s.session)})
	s.route(mux, "/api/v1/subscriptions", true, methods{http.MethodGet: read(s.subscriptions)})
	s.route(mux, "/api/v1/retained", true, methods{http.MethodGet: read(s.retainedList)})
	s.route(mux, "/api/v1/retained/message", true, methods{http.MethodGet: read(s.retainedGet), http.MethodDelete: admin(s.retainedDelete)})
	s.route(mux, "/api/v1/publish", true, methods{http.MethodPost: publisher(s.publish)})
	s.route(mux, "/api/v1/config", true, methods{http.MethodGet: read(s.config)})
	s.route(mux, "/api/v1/cluster", true, methods{http.MethodGet: read(s.clusterStatus)})
	s.route(mux, "/api/v1/cluster/drain", true, methods{http.MethodPost: admin(s.clusterDrain)})
	s.route(mux, "/api/v1/cluster/routes", true, methods{http.MethodGet: read(s.clusterRoutes)})
	s.route(mux, "/api/v1/bridges", true, methods{http.MethodGet: read(s.bridges)})
	mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such endpoint: %s", r.URL.Path)
	})
}
