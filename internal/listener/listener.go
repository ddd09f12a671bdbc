// Package listener implements the broker's network listeners: MQTT over
// TCP, TLS, WebSocket and secure WebSocket, optionally behind a proxy
// speaking the PROXY protocol (v1 and v2).
//
// The broker only sees net.Conn values from Listener.Accept. The pipeline
// for one connection is
//
//	TCP accept -> [PROXY peer check, PROXY header] -> [TLS handshake] -> [WebSocket upgrade]
//
// On a ProxyProtocol listener only the peers in ProxyProtocolTrusted
// (default: loopback) may connect at all: anyone else could claim any
// client address in the header. Their connections are closed in the accept
// loop before a byte is read, counted in Stats.ProxyUntrusted and logged at
// warn level (at most one line per 10 s, with the number suppressed).
//
// Plain TCP listeners (no TLS, no PROXY protocol) return the *net.TCPConn
// itself (TCP_NODELAY set), accepted in the caller's goroutine. Every other
// listener runs an accept loop that hands each new socket to its own
// goroutine, which performs the steps above under deadlines
// (ProxyHeaderTimeout for the PROXY header, HandshakeTimeout for the TLS
// handshake and again for the WebSocket upgrade request) and delivers the
// ready connection to Accept through a channel. A client that never
// completes its PROXY header, TLS handshake or upgrade therefore never
// delays other clients; connections returned by Accept have completed their
// TLS handshake (TLSState and PeerIdentity work at once) and carry no
// deadline. Connections that fail a step are closed and logged at debug
// level. Close aborts the steps in progress.
//
// What Accept returns:
//
//   - mqtt: *net.TCPConn; with PROXY protocol a wrapper whose RemoteAddr is
//     the address from the header (the socket peer for LOCAL/UNKNOWN).
//   - mqtt + TLS: *tls.Conn (over the PROXY wrapper if enabled).
//   - ws / ws + TLS: a WebSocket stream connection: Read returns the
//     payloads of the client's binary frames as one byte stream (packets
//     may span frames, frames may hold several packets), Write sends one
//     binary frame per call. Control frames are handled inside Read, so the
//     broker must keep a reader running (it always does).
//
// Use TLSState and PeerIdentity to reach the TLS state through any wrapper,
// and WriteBuffers to send a net.Buffers batch efficiently on any of them
// (writev on TCP, one frame per batch on WebSocket, few TLS records on TLS).
package listener

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gobwas/ws"
)

// Listener accepts client connections.
type Listener interface {
	// Accept blocks until a connection is ready. After Close it returns
	// net.ErrClosed.
	Accept() (net.Conn, error)
	// Close stops accepting, aborts connections still in their handshake
	// and waits for the listener's goroutines. Connections already returned
	// by Accept are not affected.
	Close() error
	// Addr is the bound address (with the real port when Address used 0).
	Addr() net.Addr
	// Config is the listener's configuration with defaults filled in.
	Config() Config
	// Stats returns the listener's live counters.
	Stats() *Stats
}

// Stats are a listener's counters, updated atomically; read them at any
// time.
type Stats struct {
	// ProxyUntrusted counts connections to a proxy_protocol listener
	// closed unread because the peer is not in proxy_protocol_trusted.
	ProxyUntrusted atomic.Uint64
}

type listener struct {
	cfg   Config
	log   *slog.Logger
	ln    *net.TCPListener
	certs *certStore // nil without TLS
	tlsc  *tls.Config
	// direct: plain TCP, Accept calls the socket listener itself.
	direct bool

	ready    chan net.Conn
	done     chan struct{}
	fatal    chan struct{} // closed when the accept loop died; see fatalErr
	fatalErr error

	mu      sync.Mutex
	closed  bool
	pending map[net.Conn]struct{} // sockets still in their handshake

	closeOnce sync.Once
	closeErr  error
	wg        sync.WaitGroup

	stats       Stats
	untrustWarn warnLimiter
}

// tlsListener adds Reload to TLS listeners.
type tlsListener struct{ *listener }

// Reload re-reads the TLS certificate, key and client CA files.
func (l tlsListener) Reload() error { return l.certs.Reload() }

// New validates cfg, binds the address and starts accepting. log may be
// nil.
func New(cfg Config, log *slog.Logger) (Listener, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("listener", cfg.Name, "protocol", cfg.Protocol)
	l := &listener{
		cfg:     cfg,
		log:     log,
		ready:   make(chan net.Conn),
		done:    make(chan struct{}),
		fatal:   make(chan struct{}),
		pending: make(map[net.Conn]struct{}),
	}
	if cfg.TLS != nil {
		certs, err := newCertStore(*cfg.TLS, log)
		if err != nil {
			return nil, fmt.Errorf("listener %q: %w", cfg.Name, err)
		}
		l.certs = certs
		l.tlsc = certs.serverConfig()
	}
	ln, err := net.Listen("tcp", cfg.Address)
	if err != nil {
		return nil, fmt.Errorf("listener %q: %w", cfg.Name, err)
	}
	l.ln = ln.(*net.TCPListener)
	l.direct = (cfg.Protocol == ProtocolMQTT || cfg.Protocol == ProtocolStomp) && cfg.TLS == nil && !cfg.ProxyProtocol
	if !l.direct {
		l.wg.Add(1)
		go l.acceptLoop()
	}
	log.Info("listening", "addr", l.ln.Addr().String(), "tls", cfg.TLS != nil, "proxy_protocol", cfg.ProxyProtocol)
	if l.certs != nil {
		l.certs.logLoaded()
		if cfg.TLS.ReloadInterval > 0 {
			l.wg.Add(1)
			go func() {
				defer l.wg.Done()
				l.certs.watch(l.done)
			}()
		}
		return tlsListener{l}, nil
	}
	return l, nil
}

func (l *listener) Addr() net.Addr { return l.ln.Addr() }
func (l *listener) Stats() *Stats  { return &l.stats }
func (l *listener) Config() Config {
	c := l.cfg
	c.TrustedProxies = append(Networks(nil), c.TrustedProxies...)
	c.ProxyProtocolTrusted = append(Networks(nil), c.ProxyProtocolTrusted...)
	if c.TLS != nil {
		t := *c.TLS
		c.TLS = &t
	}
	return c
}

func (l *listener) Accept() (net.Conn, error) {
	if l.direct {
		c, err := l.acceptTCP()
		if err != nil {
			return nil, err
		}
		return c, nil
	}
	select {
	case <-l.done:
		return nil, net.ErrClosed
	default:
	}
	select {
	case c := <-l.ready:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	case <-l.fatal:
		return nil, l.fatalErr
	}
}

func (l *listener) Close() error {
	l.closeOnce.Do(func() {
		close(l.done)
		if err := l.ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			l.closeErr = err
		}
		l.mu.Lock()
		l.closed = true
		for c := range l.pending {
			_ = c.Close()
		}
		l.mu.Unlock()
		l.wg.Wait()
		l.log.Info("listener closed")
	})
	return l.closeErr
}

// isTemporaryAcceptErr reports accept errors worth retrying after a pause
// (resource exhaustion, aborted connections), as net/http does.
func isTemporaryAcceptErr(err error) bool {
	for _, e := range []syscall.Errno{
		syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM,
		syscall.EAGAIN, syscall.EINTR, syscall.ECONNABORTED, syscall.ECONNRESET,
		syscall.EPROTO, syscall.EPERM, syscall.ETIMEDOUT,
	} {
		if errors.Is(err, e) {
			return true
		}
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// acceptTCP accepts one socket, backing off on temporary errors. It
// returns net.ErrClosed once the listener is closed.
func (l *listener) acceptTCP() (*net.TCPConn, error) {
	var delay time.Duration
	for {
		c, err := l.ln.AcceptTCP()
		if err == nil {
			_ = c.SetNoDelay(true)
			return c, nil
		}
		select {
		case <-l.done:
			return nil, net.ErrClosed
		default:
		}
		if errors.Is(err, net.ErrClosed) {
			return nil, net.ErrClosed
		}
		if !isTemporaryAcceptErr(err) {
			l.log.Error("accept failed", "err", err)
			return nil, err
		}
		if delay == 0 {
			delay = 5 * time.Millisecond
		} else {
			delay = min(2*delay, time.Second)
		}
		l.log.Warn("accept error; retrying", "err", err, "delay", delay)
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-l.done:
			t.Stop()
			return nil, net.ErrClosed
		}
	}
}

func (l *listener) acceptLoop() {
	defer l.wg.Done()
	for {
		c, err := l.acceptTCP()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				l.fatalErr = err
				close(l.fatal)
			}
			return
		}
		if l.cfg.ProxyProtocol && !l.proxyPeerTrusted(c) {
			continue
		}
		if !l.track(c) {
			_ = c.Close()
			return
		}
		l.wg.Add(1)
		go l.prepare(c)
	}
}

// proxyPeerTrusted reports whether the socket peer of c may send a PROXY
// header. An untrusted peer could claim any client address (defeating
// per-address throttles and the X-Forwarded-For trust check), so its
// connection is closed at once, before anything is read, counted and
// logged (at most one warning per warnInterval).
func (l *listener) proxyPeerTrusted(c *net.TCPConn) bool {
	peer := addrOf(c.RemoteAddr())
	if peer.IsValid() && l.cfg.ProxyProtocolTrusted.Contains(peer) {
		return true
	}
	_ = c.Close()
	l.stats.ProxyUntrusted.Add(1)
	if ok, suppressed := l.untrustWarn.allow(time.Now()); ok {
		l.log.Warn("closed a connection from a peer not in proxy_protocol_trusted",
			"remote", peer.String(), "suppressed", suppressed, "total", l.stats.ProxyUntrusted.Load())
	}
	return false
}

func (l *listener) track(c net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	l.pending[c] = struct{}{}
	return true
}

func (l *listener) untrack(c net.Conn) {
	l.mu.Lock()
	delete(l.pending, c)
	l.mu.Unlock()
}

// prepare runs the PROXY/TLS/WebSocket steps for one socket and delivers
// the result to Accept.
func (l *listener) prepare(raw *net.TCPConn) {
	defer l.wg.Done()
	c, err := l.wrap(raw)
	l.untrack(raw)
	if err != nil {
		_ = raw.Close()
		l.log.Debug("connection setup failed", "remote", raw.RemoteAddr().String(), "err", err)
		return
	}
	select {
	case l.ready <- c:
	case <-l.done:
		_ = c.Close()
	}
}

func (l *listener) wrap(raw *net.TCPConn) (net.Conn, error) {
	var c net.Conn = raw
	if l.cfg.ProxyProtocol {
		_ = raw.SetReadDeadline(time.Now().Add(l.cfg.ProxyHeaderTimeout))
		br := bufioReader(raw)
		h, err := readProxyHeader(br)
		if err != nil {
			return nil, fmt.Errorf("proxy protocol: %w", err)
		}
		c = newProxyConn(raw, br, h)
	}
	if l.tlsc != nil {
		_ = raw.SetDeadline(time.Now().Add(l.cfg.HandshakeTimeout))
		tc := tls.Server(c, l.tlsc)
		if err := tc.Handshake(); err != nil {
			return nil, fmt.Errorf("tls handshake: %w", err)
		}
		c = tc
	}
	if IsWebSocket(l.cfg.Protocol) {
		_ = raw.SetDeadline(time.Now().Add(l.cfg.HandshakeTimeout))
		wc, err := l.upgradeWS(c)
		if err != nil {
			var rej *ws.ConnectionRejectedError
			if errors.As(err, &rej) {
				lingerClose(raw)
			}
			return nil, err
		}
		c = wc
	}
	if err := raw.SetDeadline(time.Time{}); err != nil {
		return nil, err
	}
	return c, nil
}

func bufioReader(c net.Conn) *bufio.Reader { return bufio.NewReaderSize(c, proxyBufSize) }

// lingerClose half-closes a socket that has just been sent an HTTP error
// response and drains what the client still sends, so that closing it does
// not reset the connection before the client has read the response.
func lingerClose(raw *net.TCPConn) {
	_ = raw.CloseWrite()
	_ = raw.SetReadDeadline(time.Now().Add(time.Second))
	_, _ = io.Copy(io.Discard, io.LimitReader(raw, 64<<10))
}

// TLSState returns the TLS state of a connection returned by Accept (or of
// any connection that wraps a *tls.Conn and exposes NetConn), and false for
// connections without TLS.
func TLSState(c net.Conn) (*tls.ConnectionState, bool) {
	for c != nil {
		if s, ok := c.(interface{ ConnectionState() tls.ConnectionState }); ok {
			st := s.ConnectionState()
			return &st, true
		}
		u, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			return nil, false
		}
		c = u.NetConn()
	}
	return nil, false
}

// Identity sources for PeerIdentity.
const (
	IdentityCN  = "cn"
	IdentitySAN = "san"
)

// PeerIdentity returns the identity in the client's verified certificate:
// from "cn" the subject common name, from "san" the first DNS name, else
// the first email address, else the first URI subject alternative name.
// It returns false when there is no client certificate, the field is empty
// or from is unknown.
func PeerIdentity(c net.Conn, from string) (string, bool) {
	st, ok := TLSState(c)
	if !ok || len(st.PeerCertificates) == 0 {
		return "", false
	}
	return certIdentity(st.PeerCertificates[0], from)
}

func certIdentity(cert *x509.Certificate, from string) (string, bool) {
	switch from {
	case IdentityCN:
		if cn := cert.Subject.CommonName; cn != "" {
			return cn, true
		}
	case IdentitySAN:
		switch {
		case len(cert.DNSNames) > 0:
			return cert.DNSNames[0], true
		case len(cert.EmailAddresses) > 0:
			return cert.EmailAddresses[0], true
		case len(cert.URIs) > 0:
			return cert.URIs[0].String(), true
		}
	}
	return "", false
}

// BuffersWriter is implemented by wrapper connections that can send a
// net.Buffers batch better than one Write per buffer: PROXY-protocol
// connections use a vectored write on the socket, WebSocket connections
// send the whole batch as one frame.
type BuffersWriter interface {
	WriteBuffers(v *net.Buffers) (int64, error)
}

// WriteBuffers writes the batch v to c the best way c allows: a vectored
// write for *net.TCPConn and BuffersWriter implementations, coalesced
// writes (few TLS records) for *tls.Conn, else one Write per buffer. Like
// net.Buffers.WriteTo it consumes v on success; after an error the
// connection must be considered broken.
func WriteBuffers(c net.Conn, v *net.Buffers) (int64, error) {
	switch w := c.(type) {
	case BuffersWriter:
		return w.WriteBuffers(v)
	case *tls.Conn:
		return writeCoalesced(w, v)
	default:
		return v.WriteTo(c)
	}
}

const coalesceChunk = 64 << 10

func writeCoalesced(w net.Conn, v *net.Buffers) (int64, error) {
	var total int
	for _, b := range *v {
		total += len(b)
	}
	buf := make([]byte, 0, min(total, coalesceChunk))
	var written int64
	flush := func() error {
		if len(buf) == 0 {
			return nil
		}
		n, err := w.Write(buf)
		written += int64(n)
		buf = buf[:0]
		return err
	}
	for len(*v) > 0 {
		b := (*v)[0]
		for len(b) > 0 {
			m := copy(buf[len(buf):cap(buf)], b)
			buf = buf[:len(buf)+m]
			b = b[m:]
			if len(buf) == cap(buf) {
				if err := flush(); err != nil {
					(*v)[0] = b
					return written, err
				}
			}
		}
		*v = (*v)[1:]
	}
	return written, flush()
}
