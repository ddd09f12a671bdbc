// Package web is Isobar's built-in HTTP listener: the management console
// (static files embedded in the binary), the REST API under /api/v1,
// Prometheus metrics at /metrics and health checks at /healthz and /readyz.
//
// It binds 127.0.0.1:18083 by default, never a public address unless
// configured so, and answers only requests whose Host names it (DNS
// rebinding; hosts.go). Everything but /healthz, /readyz, the console's
// static files and (unless metrics_auth is set) /metrics requires a user:
// HTTP Basic, a bearer API key, or the console's session cookie with a
// CSRF header on state changes; password checks are throttled
// (throttle.go). Each user and key has a role (read, publish, admin) and
// optionally a topic allow list (roles.go). API input is validated as
// strictly as the MQTT decoder validates packets (validate.go). The
// handlers live in one file per resource, routed in router.go. See
// docs/api.md.
package web

import (
	"context"
	"crypto/tls"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/isobar-mq/isobar/internal/auth"
	"github.com/isobar-mq/isobar/internal/broker"
	"github.com/isobar-mq/isobar/internal/listener"
	"github.com/isobar-mq/isobar/internal/metrics"
)

//go:embed static
var staticFiles embed.FS

// Options is what a Server needs from the node.
type Options struct {
	Config  Config
	Broker  *broker.Server
	Metrics *metrics.Collector
	// Registry is served at /metrics; nil builds one from Metrics.
	Registry  *prometheus.Registry
	Listeners []listener.Listener
	Version   string
	// Settings is the node's whole configuration, shown (with secrets
	// redacted) by GET /api/v1/config. It is marshalled as YAML first, so
	// the field names are the configuration file's.
	Settings any
	// PasswordFile is where the generated administrator password goes
	// when Config.Users is empty (Config.GeneratedPasswordFile wins when
	// set). With neither, a password cannot be generated and Start fails.
	PasswordFile string
	// DrainTimeout bounds a cluster drain requested through the API
	// (POST /api/v1/cluster/drain); zero means DefaultDrainTimeout.
	DrainTimeout time.Duration
	Log          *slog.Logger
}

// ReadyCheck reports why a component is not ready (nil = ready).
type ReadyCheck struct {
	Name  string
	Check func() error
}

// Server is a running HTTP listener.
type Server struct {
	opts  Options
	cfg   Config
	log   *slog.Logger
	auth  *authenticator
	start time.Time
	ln    net.Listener
	http  *http.Server
	hist  *history
	reg   *prometheus.Registry
	hosts hostRules

	mu    sync.Mutex
	ready []ReadyCheck

	cl clusterState // see cluster.go
	br bridgeState  // see bridges.go

	served chan struct{}
}

// Start binds the listener and serves. It returns nil, nil when the
// listener is disabled, or when no address is configured and
// DefaultAddress is in use (a warning is logged: the broker runs without
// its console rather than not at all). An explicitly configured address
// that cannot be bound is an error.
func Start(opts Options) (*Server, error) {
	if !opts.Config.Enabled {
		return nil, nil
	}
	if err := opts.Config.Validate(); err != nil {
		return nil, err
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	cfg := opts.Config.withDefaults()
	log := opts.Log.With("component", "http")
	s := &Server{opts: opts, cfg: cfg, log: log, start: time.Now(), served: make(chan struct{})}

	addr := cfg.Address
	if addr == "" {
		addr = DefaultAddress
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		if cfg.Address == "" && errors.Is(err, syscall.EADDRINUSE) {
			log.Warn("default HTTP address in use; running without the console, API and /metrics (set http.address)", "address", addr)
			return nil, nil
		}
		return nil, fmt.Errorf("http listener: %w", err)
	}
	if cfg.TLS != nil {
		cert, err := tls.LoadX509KeyPair(cfg.TLS.CertFile, cfg.TLS.KeyFile)
		if err != nil {
			_ = ln.Close()
			return nil, fmt.Errorf("http.tls: %w", err)
		}
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	}
	s.ln = ln
	s.hosts = newHostRules(cfg.AllowedHosts, addr)
	if len(cfg.AllowedHosts) == 0 && !loopbackAddress(addr) {
		log.Info("http.allowed_hosts is not set: requests naming this listener by a host name other than localhost get 421 (IP addresses work)", "address", addr)
	}

	if len(cfg.Users) == 0 {
		// No administrator configured: a random password, valid until
		// restart, written to a file only the broker's user can read (never
		// to the log, which is often shipped elsewhere). It changes at
		// every start, which nudges towards configuring http.users, and
		// the listener is loopback-only unless configured otherwise.
		path := cfg.GeneratedPasswordFile
		if path == "" {
			path = opts.PasswordFile
		}
		h, err := generateAdminPassword(path)
		if err != nil {
			_ = ln.Close()
			return nil, err
		}
		cfg.Users = []User{{Username: "admin", PasswordHash: h}}
		log.Warn("no http.users configured: generated a password for user \"admin\", valid until restart, in a file readable only by this user; configure http.users to set your own",
			"username", "admin", "password_file", path)
	}
	s.auth = newAuthenticator(cfg)

	s.reg = opts.Registry
	if s.reg == nil && opts.Metrics != nil {
		s.reg = metrics.NewRegistry(opts.Metrics)
	}
	s.hist = startHistory(opts.Broker, historyInterval, historyLen)

	s.http = &http.Server{
		Handler:           s.handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       60 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	go func() {
		defer close(s.served)
		if err := s.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("HTTP listener stopped", "err", err)
		}
	}()
	scheme := "http"
	if cfg.TLS != nil {
		scheme = "https"
	}
	log.Info("console and API listening", "url", scheme+"://"+ln.Addr().String()+"/")
	return s, nil
}

// Addr is the bound address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// AddReadyCheck adds a condition to /readyz (e.g. store or cluster
// membership). Checks run at every /readyz request and must be quick.
func (s *Server) AddReadyCheck(name string, check func() error) {
	s.mu.Lock()
	s.ready = append(s.ready, ReadyCheck{Name: name, Check: check})
	s.mu.Unlock()
}

func (s *Server) readyChecks() []ReadyCheck {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]ReadyCheck(nil), s.ready...)
}

// Close stops the listener, waiting for requests in progress up to ctx.
func (s *Server) Close(ctx context.Context) error {
	if s == nil {
		return nil
	}
	s.hist.stop()
	s.stopDrain(ctx)
	err := s.http.Shutdown(ctx)
	if err != nil {
		_ = s.http.Close()
	}
	<-s.served
	return err
}

func (s *Server) handler() http.Handler {
	mux := http.NewServeMux()
	s.routes(mux)
	static, _ := fs.Sub(staticFiles, "static")
	files := http.FileServerFS(static)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		if r.URL.Path == "/" || r.URL.Path == "/index.html" {
			w.Header().Set("Cache-Control", "no-cache")
			http.ServeFileFS(w, r, static, "index.html")
			return
		}
		w.Header().Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r)
	})
	return s.secure(mux)
}

// secure adds security headers to every response and bounds bodies.
func (s *Server) secure(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
		if !s.checkHost(w, r) {
			return
		}
		if r.Body != nil {
			r.Body = http.MaxBytesReader(w, r.Body, s.cfg.MaxBodySize)
		}
		next.ServeHTTP(w, r)
	})
}

func (s *Server) metricsHandler() http.Handler {
	if s.reg == nil {
		return http.NotFoundHandler()
	}
	return promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{
		ErrorLog:            slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		ErrorHandling:       promhttp.ContinueOnError,
		MaxRequestsInFlight: 4,
		Timeout:             10 * time.Second,
	})
}

// cookieSecure reports whether the session cookie is marked Secure:
// http.cookie_secure when set, else whether this listener serves TLS.
func (s *Server) cookieSecure() bool {
	if s.cfg.CookieSecure != nil {
		return *s.cfg.CookieSecure
	}
	return s.cfg.TLS != nil
}

// loopbackAddress reports whether host:port binds a loopback address.
func loopbackAddress(hostport string) bool {
	h, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return false
	}
	if h == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(h)
	return err == nil && a.IsLoopback()
}

// generateAdminPassword makes a random password, writes it to path (mode
// 0600, replacing the file atomically: a symbolic link there is replaced,
// not followed) and returns its hash.
func generateAdminPassword(path string) (string, error) {
	if path == "" {
		return "", errors.New("http: no http.users configured and nowhere to write a generated password (set http.users or http.generated_password_file)")
	}
	pw := randomToken(18)
	h, err := auth.HashPassword(auth.SchemeArgon2id, []byte(pw))
	if err != nil {
		return "", err
	}
	if err := writeSecretFile(path, []byte(pw+"\n")); err != nil {
		return "", fmt.Errorf("http: no http.users configured, and the generated password cannot be written (set http.users, or http.generated_password_file to a writable path): %w", err)
	}
	return h, nil
}

func writeSecretFile(path string, data []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() { _ = os.Remove(tmp) }() // after a successful rename, a no-op
	if err := f.Chmod(0o600); err != nil {
		_ = f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
