package listener

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Reloader is implemented by listeners configured with TLS. Reload re-reads
// the certificate, key and client CA files; on success new handshakes use
// them while established connections are untouched. On failure the
// previous material stays in use and the error is returned (and logged).
type Reloader interface {
	Reload() error
}

func (t *TLSConfig) minVersion() (uint16, error) {
	switch t.MinVersion {
	case "", "1.2":
		return tls.VersionTLS12, nil
	case "1.3":
		return tls.VersionTLS13, nil
	default:
		return 0, fmt.Errorf("tls.min_version %q: want \"1.2\" or \"1.3\"", t.MinVersion)
	}
}

// fileStamp identifies one version of a file for change polling.
type fileStamp struct {
	modTime int64
	size    int64
	ino     uint64
	err     string
}

type filesStamp [3]fileStamp // cert, key, client CA

// certStore owns the TLS material of one listener and swaps it atomically.
type certStore struct {
	cfg TLSConfig
	log *slog.Logger

	cert atomic.Pointer[tls.Certificate]
	// withCAs is the per-handshake config carrying the current client CA
	// pool; nil when no client CA file is configured.
	withCAs atomic.Pointer[tls.Config]
	base    *tls.Config

	mu         sync.Mutex // serialises loads and guards the stamps below
	loaded     filesStamp // stamp of the files behind the material in use
	lastFailed filesStamp
}

func newCertStore(cfg TLSConfig, log *slog.Logger) (*certStore, error) {
	minV, err := cfg.minVersion()
	if err != nil {
		return nil, err
	}
	s := &certStore{cfg: cfg, log: log}
	s.base = &tls.Config{
		MinVersion:     minV,
		GetCertificate: s.getCertificate,
	}
	if cfg.ClientCAFile != "" {
		if cfg.RequireClientCert {
			s.base.ClientAuth = tls.RequireAndVerifyClientCert
		} else {
			s.base.ClientAuth = tls.VerifyClientCertIfGiven
		}
		s.base.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return s.withCAs.Load(), nil
		}
	}
	if err := s.load(); err != nil {
		return nil, err
	}
	return s, nil
}

// serverConfig is the *tls.Config to hand to tls.Server.
func (s *certStore) serverConfig() *tls.Config { return s.base }

func (s *certStore) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return s.cert.Load(), nil
}

func (s *certStore) stamp() filesStamp {
	var st filesStamp
	for i, name := range [3]string{s.cfg.CertFile, s.cfg.KeyFile, s.cfg.ClientCAFile} {
		if name == "" {
			continue
		}
		fi, err := os.Stat(name)
		if err != nil {
			st[i].err = err.Error()
			continue
		}
		st[i].modTime = fi.ModTime().UnixNano()
		st[i].size = fi.Size()
		if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
			st[i].ino = sys.Ino
		}
	}
	return st
}

// load reads all files and installs the new material if everything is
// valid. Callers must not hold s.mu.
func (s *certStore) load() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.loadLocked(s.stamp())
}

func (s *certStore) loadLocked(st filesStamp) error {
	cert, err := tls.LoadX509KeyPair(s.cfg.CertFile, s.cfg.KeyFile)
	if err != nil {
		return fmt.Errorf("load certificate %s / key %s: %w", s.cfg.CertFile, s.cfg.KeyFile, err)
	}
	if cert.Leaf == nil {
		leaf, err := x509.ParseCertificate(cert.Certificate[0])
		if err != nil {
			return fmt.Errorf("parse certificate %s: %w", s.cfg.CertFile, err)
		}
		cert.Leaf = leaf
	}
	var withCAs *tls.Config
	if s.cfg.ClientCAFile != "" {
		pem, err := os.ReadFile(s.cfg.ClientCAFile)
		if err != nil {
			return fmt.Errorf("read client CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("client CA file %s: no PEM certificates found", s.cfg.ClientCAFile)
		}
		withCAs = s.base.Clone()
		withCAs.GetConfigForClient = nil
		withCAs.ClientCAs = pool
	}
	now := time.Now()
	if now.After(cert.Leaf.NotAfter) || now.Before(cert.Leaf.NotBefore) {
		s.log.Warn("tls certificate is outside its validity period",
			"cert_file", s.cfg.CertFile, "not_before", cert.Leaf.NotBefore, "not_after", cert.Leaf.NotAfter)
	}
	if withCAs != nil {
		s.withCAs.Store(withCAs)
	}
	s.cert.Store(&cert)
	s.loaded = st
	s.lastFailed = filesStamp{}
	return nil
}

// Reload re-reads the files now.
func (s *certStore) Reload() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.loadLocked(s.stamp()); err != nil {
		s.log.Error("tls reload failed; keeping the previous certificate", "err", err)
		return err
	}
	s.logLoaded()
	return nil
}

func (s *certStore) logLoaded() {
	leaf := s.cert.Load().Leaf
	s.log.Info("tls certificate loaded", "cert_file", s.cfg.CertFile,
		"subject", leaf.Subject.String(), "not_after", leaf.NotAfter)
}

// poll checks the files for changes and reloads when they changed. A
// failed reload is retried on every poll (a cert and key replaced one after
// the other are briefly mismatched) but logged once per file state.
func (s *certStore) poll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stamp()
	if st == s.loaded {
		return
	}
	if err := s.loadLocked(st); err != nil {
		if st != s.lastFailed {
			s.log.Error("tls files changed but reload failed; keeping the previous certificate", "err", err)
			s.lastFailed = st
		}
		return
	}
	s.logLoaded()
}

// watch polls until done is closed.
func (s *certStore) watch(done <-chan struct{}) {
	t := time.NewTicker(s.cfg.ReloadInterval)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
			s.poll()
		}
	}
}
