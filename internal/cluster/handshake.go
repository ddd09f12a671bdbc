package cluster

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"
)

// The link handshake. Every node link starts with it; it runs under one
// deadline (HandshakeConfig.Timeout), which is cleared when it succeeds.
//
//	D -> A  "ISBL" 0x01                    preamble: magic, protocol version
//	        [TLS 1.3, D is the client; both sides present a certificate of the cluster CA]
//	A -> D  nonceA[32]
//	D -> A  u16 len | lp(nameD) | startD u64 | lp(expect) | nonceD[32] | mac1[32]
//	A -> D  u16 len | lp(nameA) | startA u64 | mac2[32]
//	D -> A  0x01                           D accepted mac2 (and nameA)
//
//	mac1 = HMAC-SHA256(key, "isbl-d1" | 0 | nonceA | nonceD | lp(nameD) | startD | lp(expect) | lp(bind))
//	mac2 = HMAC-SHA256(key, "isbl-a1" | 0 | nonceA | nonceD | lp(nameD) | startD | lp(expect) | lp(nameA) | startA | lp(bind))
//
// lp(x) is a length byte then x; the names are at most 255 bytes; starts are
// the incarnations (unix ns) as u64. bind is empty without TLS and, with TLS,
// 32 bytes exported from the TLS session (RFC 8446 section 7.5, label
// "EXPORTER-isobar-link-v1"), so the proofs are bound to this TLS session:
// a man in the middle holding a certificate of the cluster CA but not the
// secret cannot relay one node's proof into its own session with the other.
//
// Properties:
//   - Each side proves it holds the key over both fresh nonces and both
//     identities, under distinct labels (a proof cannot be reflected).
//   - A recorded transcript replayed to either side fails: the other
//     side's nonce is new.
//   - The acceptor (the side whose port anyone can reach) sends nothing but
//     32 random bytes before the dialer has proved the key; without the key
//     a connection learns nothing else, and every failure is the same silent
//     close (the local error and log say more).
//   - expect (the name the dialer wants, "" = any) is checked by the
//     acceptor (mac1 covers it) and nameA by the dialer: a link to the
//     wrong node (a stale address) fails at once.
//
// Without TLS the handshake authenticates the two ends at connect time only:
// the frames that follow are neither encrypted nor integrity protected.
// Configure TLS when the network between nodes is not trusted.

// ErrAuthFailed is returned by both handshakes when the peer did not prove
// the cluster secret (or its TLS certificate was refused, or it is not the
// node expected). The error may wrap a reason for the local log; the peer is
// told nothing.
var ErrAuthFailed = errors.New("cluster link: authentication failed")

// ErrLinkVersion is returned by ServerHandshake when the dialer speaks
// another version of the link protocol.
var ErrLinkVersion = errors.New("cluster link: unsupported link protocol version")

// LinkMagic starts every node link connection; the mux transport routes a
// TCP connection whose first byte is LinkMagic[0] to the link layer.
const LinkMagic = "ISBL"

// LinkVersion is the link protocol version this code speaks.
const LinkVersion = 1

// DefaultHandshakeTimeout bounds a whole handshake.
const DefaultHandshakeTimeout = 5 * time.Second

const (
	nonceLen       = 32
	macLen         = sha256.Size
	maxNameLen     = 255
	minKeyLen      = 32
	bindLen        = 32
	bindLabel      = "EXPORTER-isobar-link-v1"
	labelDialer    = "isbl-d1"
	labelAcceptor  = "isbl-a1"
	maxHelloLen    = 1 + maxNameLen + 8 + 1 + maxNameLen + nonceLen + macLen
	minHelloLen    = 1 + 1 + 8 + 1 + nonceLen + macLen
	maxWelcomeLen  = 1 + maxNameLen + 8 + macLen
	minWelcomeLen  = 1 + 1 + 8 + macLen
	handshakeAckOK = 0x01
)

// HandshakeConfig is one node's side of the link handshake.
type HandshakeConfig struct {
	// LocalName is this node's name (1 to 255 bytes); LocalStart its
	// incarnation (unix ns of this process's start).
	LocalName  string
	LocalStart int64
	// Key is DeriveKey(secret, LinkKeyLabel): at least 32 bytes.
	Key []byte
	// TLS, when set, wraps the link in mutual TLS (build it with
	// NewLinkTLS); nil means plain TCP.
	TLS *tls.Config
	// Timeout bounds the whole handshake (default 5 s).
	Timeout time.Duration
	// Metrics, when set, counts authentication failures (and limits their
	// log lines to one per 10 s).
	Metrics *LinkMetrics
	// Logger receives a warning for each authentication failure, naming
	// the remote address (nil: no log).
	Logger *slog.Logger
}

// PeerInfo is the identity the peer proved in the handshake.
type PeerInfo struct {
	Name  string
	Start int64
}

func (cfg *HandshakeConfig) check() error {
	if len(cfg.Key) < minKeyLen {
		return fmt.Errorf("cluster link: handshake key is %d bytes, need at least %d", len(cfg.Key), minKeyLen)
	}
	if cfg.LocalName == "" || len(cfg.LocalName) > maxNameLen {
		return fmt.Errorf("cluster link: node name must be 1 to %d bytes", maxNameLen)
	}
	return nil
}

func (cfg *HandshakeConfig) timeout() time.Duration {
	if cfg.Timeout > 0 {
		return cfg.Timeout
	}
	return DefaultHandshakeTimeout
}

// authError is an authentication failure with its reason (for the local
// log only); errors.Is(err, ErrAuthFailed) holds.
type authError struct{ reason string }

func (e *authError) Error() string        { return ErrAuthFailed.Error() + ": " + e.reason }
func (e *authError) Is(target error) bool { return target == ErrAuthFailed }

func authFail(format string, args ...any) error {
	return &authError{reason: fmt.Sprintf(format, args...)}
}

// failed closes conn and, for an authentication failure, counts and logs it.
// Other errors (time-outs, I/O) are returned wrapped with the remote
// address, unlogged: the caller decides.
func (cfg *HandshakeConfig) failed(conn net.Conn, role string, err error) error {
	_ = conn.Close()
	remote := addrString(conn.RemoteAddr())
	if ae := (*authError)(nil); errors.As(err, &ae) {
		if cfg.Metrics != nil {
			cfg.Metrics.authFailures.Inc()
		}
		if cfg.Logger != nil {
			var suppressed int
			log := true
			if cfg.Metrics != nil {
				log, suppressed = cfg.Metrics.authLog.allow(time.Now())
			}
			if log {
				attrs := []any{"remote", remote, "role", role, "reason", ae.reason}
				if suppressed > 0 {
					attrs = append(attrs, "suppressed", suppressed)
				}
				cfg.Logger.Warn("cluster link: authentication failed", attrs...)
			}
		}
	}
	return fmt.Errorf("cluster link: %s handshake with %s: %w", role, remote, err)
}

func addrString(a net.Addr) string {
	if a == nil {
		return "?"
	}
	return a.String()
}

// ClientHandshake runs the dialer's side on conn (a fresh connection to the
// peer's cluster port). expectName is the peer's node name ("" accepts
// any). It returns the connection to use (the TLS connection when TLS is
// configured) and the peer's proved identity. On any error conn is closed.
func ClientHandshake(conn net.Conn, cfg HandshakeConfig, expectName string) (net.Conn, PeerInfo, error) {
	if err := cfg.check(); err != nil {
		_ = conn.Close()
		return nil, PeerInfo{}, err
	}
	if len(expectName) > maxNameLen {
		_ = conn.Close()
		return nil, PeerInfo{}, fmt.Errorf("cluster link: expected peer name longer than %d bytes", maxNameLen)
	}
	_ = conn.SetDeadline(time.Now().Add(cfg.timeout()))
	c, peer, err := clientHandshake(conn, &cfg, expectName)
	if err != nil {
		return nil, PeerInfo{}, cfg.failed(conn, "dialer", err)
	}
	if err := c.SetDeadline(time.Time{}); err != nil {
		return nil, PeerInfo{}, cfg.failed(conn, "dialer", err)
	}
	return c, peer, nil
}

func clientHandshake(conn net.Conn, cfg *HandshakeConfig, expect string) (net.Conn, PeerInfo, error) {
	if _, err := conn.Write([]byte{LinkMagic[0], LinkMagic[1], LinkMagic[2], LinkMagic[3], LinkVersion}); err != nil {
		return nil, PeerInfo{}, err
	}
	c, bind, err := startTLS(conn, cfg.TLS, true)
	if err != nil {
		return nil, PeerInfo{}, err
	}
	var nonceA [nonceLen]byte
	if _, err := io.ReadFull(c, nonceA[:]); err != nil {
		// Under TLS the acceptor's verdict on our certificate arrives here.
		if isTLSAlert(err) {
			return nil, PeerInfo{}, authFail("peer refused the TLS session: %v", err)
		}
		return nil, PeerInfo{}, err
	}
	var nonceD [nonceLen]byte
	_, _ = rand.Read(nonceD[:])
	me := PeerInfo{Name: cfg.LocalName, Start: cfg.LocalStart}
	mac1 := dialerMAC(cfg.Key, nonceA[:], nonceD[:], me, expect, bind)

	var e Enc
	e.U16(0)
	putName(&e, me.Name)
	e.U64(uint64(me.Start))
	putName(&e, expect)
	e.B = append(e.B, nonceD[:]...)
	e.B = append(e.B, mac1...)
	binary.BigEndian.PutUint16(e.B, uint16(len(e.B)-2))
	if _, err := c.Write(e.B); err != nil {
		return nil, PeerInfo{}, err
	}

	// From here on the acceptor only closes if it refused our proof.
	msg, err := readMsg(c, minWelcomeLen, maxWelcomeLen)
	if err != nil {
		if errors.Is(err, ErrAuthFailed) || isTimeout(err) {
			return nil, PeerInfo{}, err
		}
		return nil, PeerInfo{}, authFail("peer closed the connection after our proof: %v", err)
	}
	d := Dec{B: msg}
	peer := PeerInfo{Name: getName(&d)}
	peer.Start = int64(d.U64())
	mac2 := d.take(macLen)
	if d.Err != nil || d.Len() != 0 || peer.Name == "" {
		return nil, PeerInfo{}, authFail("malformed reply")
	}
	want := acceptorMAC(cfg.Key, nonceA[:], nonceD[:], me, expect, peer, bind)
	if !hmac.Equal(mac2, want) {
		return nil, PeerInfo{}, authFail("peer's proof does not match the link key")
	}
	if expect != "" && peer.Name != expect {
		return nil, PeerInfo{}, authFail("peer is %q, expected %q", peer.Name, expect)
	}
	if _, err := c.Write([]byte{handshakeAckOK}); err != nil {
		return nil, PeerInfo{}, err
	}
	return c, peer, nil
}

// ServerHandshake runs the acceptor's side on conn, from its first byte
// (the mux transport replays the byte it peeked). It returns the connection
// to use (the TLS connection when TLS is configured) and the dialer's proved
// identity. On any error conn is closed.
func ServerHandshake(conn net.Conn, cfg HandshakeConfig) (net.Conn, PeerInfo, error) {
	if err := cfg.check(); err != nil {
		_ = conn.Close()
		return nil, PeerInfo{}, err
	}
	_ = conn.SetDeadline(time.Now().Add(cfg.timeout()))
	c, peer, err := serverHandshake(conn, &cfg)
	if err != nil {
		return nil, PeerInfo{}, cfg.failed(conn, "acceptor", err)
	}
	if err := c.SetDeadline(time.Time{}); err != nil {
		return nil, PeerInfo{}, cfg.failed(conn, "acceptor", err)
	}
	return c, peer, nil
}

func serverHandshake(conn net.Conn, cfg *HandshakeConfig) (net.Conn, PeerInfo, error) {
	var pre [len(LinkMagic) + 1]byte
	if _, err := io.ReadFull(conn, pre[:]); err != nil {
		return nil, PeerInfo{}, err
	}
	if string(pre[:len(LinkMagic)]) != LinkMagic {
		return nil, PeerInfo{}, authFail("not a link connection")
	}
	if pre[len(LinkMagic)] != LinkVersion {
		return nil, PeerInfo{}, fmt.Errorf("%w %d", ErrLinkVersion, pre[len(LinkMagic)])
	}
	c, bind, err := startTLS(conn, cfg.TLS, false)
	if err != nil {
		return nil, PeerInfo{}, err
	}
	var nonceA [nonceLen]byte
	_, _ = rand.Read(nonceA[:])
	if _, err := c.Write(nonceA[:]); err != nil {
		return nil, PeerInfo{}, err
	}
	msg, err := readMsg(c, minHelloLen, maxHelloLen)
	if err != nil {
		return nil, PeerInfo{}, err
	}
	d := Dec{B: msg}
	peer := PeerInfo{Name: getName(&d)}
	peer.Start = int64(d.U64())
	expect := getName(&d)
	nonceD := d.take(nonceLen)
	mac1 := d.take(macLen)
	if d.Err != nil || d.Len() != 0 || peer.Name == "" {
		return nil, PeerInfo{}, authFail("malformed hello")
	}
	if !hmac.Equal(mac1, dialerMAC(cfg.Key, nonceA[:], nonceD, peer, expect, bind)) {
		return nil, PeerInfo{}, authFail("dialer's proof does not match the link key")
	}
	if expect != "" && expect != cfg.LocalName {
		return nil, PeerInfo{}, authFail("dialer %q wants node %q, this is %q", peer.Name, expect, cfg.LocalName)
	}
	if peer.Name == cfg.LocalName {
		return nil, PeerInfo{}, authFail("dialer uses this node's own name %q", peer.Name)
	}
	me := PeerInfo{Name: cfg.LocalName, Start: cfg.LocalStart}
	var e Enc
	e.U16(0)
	putName(&e, me.Name)
	e.U64(uint64(me.Start))
	e.B = append(e.B, acceptorMAC(cfg.Key, nonceA[:], nonceD, peer, expect, me, bind)...)
	binary.BigEndian.PutUint16(e.B, uint16(len(e.B)-2))
	if _, err := c.Write(e.B); err != nil {
		return nil, PeerInfo{}, err
	}
	var ack [1]byte
	if _, err := io.ReadFull(c, ack[:]); err != nil {
		if isTimeout(err) {
			return nil, PeerInfo{}, err
		}
		return nil, PeerInfo{}, authFail("dialer %q closed the connection after our proof: %v", peer.Name, err)
	}
	if ack[0] != handshakeAckOK {
		return nil, PeerInfo{}, authFail("dialer %q sent a bad confirmation", peer.Name)
	}
	return c, peer, nil
}

// startTLS runs the TLS handshake when tc is set and returns the connection
// and the channel binding (nil without TLS).
func startTLS(conn net.Conn, tc *tls.Config, client bool) (net.Conn, []byte, error) {
	if tc == nil {
		return conn, nil, nil
	}
	var tconn *tls.Conn
	if client {
		tconn = tls.Client(conn, tc)
	} else {
		tconn = tls.Server(conn, tc)
	}
	if err := tconn.Handshake(); err != nil {
		if isTimeout(err) {
			return nil, nil, err
		}
		return nil, nil, authFail("TLS: %v", err)
	}
	cs := tconn.ConnectionState()
	bind, err := cs.ExportKeyingMaterial(bindLabel, nil, bindLen)
	if err != nil {
		return nil, nil, authFail("TLS: %v", err)
	}
	return tconn, bind, nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

// isTLSAlert reports whether err is an alert the TLS peer sent.
func isTLSAlert(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe) && oe.Op == "remote error"
}

// readMsg reads a u16 length-prefixed handshake message with a length in
// [lo, hi]; any other length is an authentication failure.
func readMsg(r io.Reader, lo, hi int) ([]byte, error) {
	var l [2]byte
	if _, err := io.ReadFull(r, l[:]); err != nil {
		return nil, err
	}
	n := int(binary.BigEndian.Uint16(l[:]))
	if n < lo || n > hi {
		return nil, authFail("handshake message of %d bytes", n)
	}
	msg := make([]byte, n)
	if _, err := io.ReadFull(r, msg); err != nil {
		return nil, unexpected(err)
	}
	return msg, nil
}

func putName(e *Enc, s string) {
	e.U8(uint8(len(s)))
	e.B = append(e.B, s...)
}

func getName(d *Dec) string {
	n := d.U8()
	return string(d.take(int(n)))
}

func dialerMAC(key, nonceA, nonceD []byte, dialer PeerInfo, expect string, bind []byte) []byte {
	m := hmac.New(sha256.New, key)
	var e Enc
	e.B = append(e.B, labelDialer...)
	e.U8(0)
	e.B = append(e.B, nonceA...)
	e.B = append(e.B, nonceD...)
	putName(&e, dialer.Name)
	e.U64(uint64(dialer.Start))
	putName(&e, expect)
	e.U8(uint8(len(bind)))
	e.B = append(e.B, bind...)
	m.Write(e.B)
	return m.Sum(nil)
}

func acceptorMAC(key, nonceA, nonceD []byte, dialer PeerInfo, expect string, acceptor PeerInfo, bind []byte) []byte {
	m := hmac.New(sha256.New, key)
	var e Enc
	e.B = append(e.B, labelAcceptor...)
	e.U8(0)
	e.B = append(e.B, nonceA...)
	e.B = append(e.B, nonceD...)
	putName(&e, dialer.Name)
	e.U64(uint64(dialer.Start))
	putName(&e, expect)
	putName(&e, acceptor.Name)
	e.U64(uint64(acceptor.Start))
	e.U8(uint8(len(bind)))
	e.B = append(e.B, bind...)
	m.Write(e.B)
	return m.Sum(nil)
}

// NewLinkTLS builds the TLS configuration of node links, for both sides:
// TLS 1.3 at least, this node's certificate (certFile, keyFile; PEM), and
// a peer certificate required and verified against the cluster CA (caFile,
// PEM, one or more certificates) only. Host names are not checked (nodes
// are addressed by IP and the CA is the cluster's own) and any key usage is
// accepted, so one certificate per node serves as client and server.
//
// The files are read once: build a new configuration to pick up renewed
// certificates (links dialed afterwards use it).
func NewLinkTLS(certFile, keyFile, caFile string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("cluster link TLS: certificate: %w", err)
	}
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("cluster link TLS: CA: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("cluster link TLS: CA: no PEM certificate in %s", caFile)
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		// Client side: the built-in check would demand a host name; the
		// chain is verified in VerifyConnection instead. Server side:
		// a certificate is required, verified there too.
		InsecureSkipVerify: true, //nolint:gosec // verified against the cluster CA in VerifyConnection
		ClientAuth:         tls.RequireAnyClientCert,
		VerifyConnection: func(cs tls.ConnectionState) error {
			return verifyPeerCert(cs.PeerCertificates, roots)
		},
	}, nil
}

func verifyPeerCert(chain []*x509.Certificate, roots *x509.CertPool) error {
	if len(chain) == 0 {
		return errors.New("cluster link TLS: peer presented no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	_, err := chain[0].Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		return fmt.Errorf("cluster link TLS: peer certificate: %w", err)
	}
	return nil
}

// authFailureLog limits authentication-failure log lines to one per
// authLogEvery, counting the ones left out.
type authFailureLog struct {
	mu         sync.Mutex
	last       time.Time
	suppressed int
}

const authLogEvery = 10 * time.Second

func (a *authFailureLog) allow(now time.Time) (bool, int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.last.IsZero() && now.Sub(a.last) < authLogEvery {
		a.suppressed++
		return false, 0
	}
	n := a.suppressed
	a.last, a.suppressed = now, 0
	return true, n
}
