package bench

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
)

// Transports the generator speaks.
const (
	TransportTCP = "tcp"
	TransportTLS = "tls"
	TransportWS  = "ws"
	TransportWSS = "wss"
)

// dialer opens transport connections to one broker address.
type dialer struct {
	transport string
	addr      string // host:port
	wsPath    string
	tlsConfig *tls.Config
	local     []*net.TCPAddr // source addresses, used round robin
	timeout   time.Duration
	tlsState  atomic.Pointer[string] // version and cipher suite of the first TLS handshake
}

func newDialer(cfg *Config) (*dialer, error) {
	d := &dialer{transport: cfg.Transport, addr: cfg.Addr, wsPath: cfg.WSPath, timeout: cfg.ConnectTimeout}
	if d.wsPath == "" {
		d.wsPath = "/mqtt"
	}
	switch cfg.Transport {
	case TransportTCP, TransportWS:
	case TransportTLS, TransportWSS:
		host, _, err := net.SplitHostPort(cfg.Addr)
		if err != nil {
			return nil, err
		}
		tc := &tls.Config{ServerName: host, InsecureSkipVerify: cfg.Insecure, MinVersion: tls.VersionTLS12}
		if cfg.CAFile != "" {
			pem, err := os.ReadFile(cfg.CAFile)
			if err != nil {
				return nil, err
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("%s: no PEM certificate", cfg.CAFile)
			}
			tc.RootCAs = pool
		}
		// Resumption keeps reconnect storms cheap, as real clients do.
		tc.ClientSessionCache = tls.NewLRUClientSessionCache(1024)
		d.tlsConfig = tc
	default:
		return nil, fmt.Errorf("unknown transport %q (want tcp, tls, ws or wss)", cfg.Transport)
	}
	for _, s := range cfg.LocalAddrs {
		ip := net.ParseIP(s)
		if ip == nil {
			return nil, fmt.Errorf("source address %q is not an IP address", s)
		}
		d.local = append(d.local, &net.TCPAddr{IP: ip})
	}
	return d, nil
}

// dial opens connection number i to addr ("" = the dialer's address) and
// returns it ready for MQTT bytes, with a reader that may already hold bytes
// received during a WebSocket upgrade.
func (d *dialer) dial(ctx context.Context, i int, addr string) (net.Conn, error) {
	if addr == "" {
		addr = d.addr
	}
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	nd := net.Dialer{}
	if len(d.local) > 0 {
		nd.LocalAddr = d.local[i%len(d.local)]
	}
	c, err := nd.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	dl, _ := ctx.Deadline()
	_ = c.SetDeadline(dl)
	if d.tlsConfig != nil {
		conf := d.tlsConfig
		if addr != d.addr {
			// Verify another broker (--pub-addrs, --sub-addrs) by its own name.
			if host, _, err := net.SplitHostPort(addr); err == nil && host != conf.ServerName {
				conf = conf.Clone()
				conf.ServerName = host
			}
		}
		tc := tls.Client(c, conf)
		if err := tc.HandshakeContext(ctx); err != nil {
			_ = c.Close()
			return nil, fmt.Errorf("tls handshake: %w", err)
		}
		if d.tlsState.Load() == nil {
			st := tc.ConnectionState()
			desc := tls.VersionName(st.Version) + " " + tls.CipherSuiteName(st.CipherSuite)
			d.tlsState.CompareAndSwap(nil, &desc)
		}
		c = tc
	}
	if d.transport == TransportWS || d.transport == TransportWSS {
		scheme := "ws"
		if d.tlsConfig != nil {
			scheme = "wss"
		}
		u := &url.URL{Scheme: scheme, Host: addr, Path: d.wsPath}
		wd := ws.Dialer{Protocols: []string{"mqtt"}}
		br, hs, err := wd.Upgrade(c, u)
		if err != nil {
			_ = c.Close()
			return nil, fmt.Errorf("websocket upgrade: %w", err)
		}
		if hs.Protocol != "mqtt" {
			_ = c.Close()
			return nil, fmt.Errorf("websocket upgrade: server selected subprotocol %q, want mqtt", hs.Protocol)
		}
		c = newWSClientConn(c, br)
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}

// wsClientConn carries an MQTT byte stream over client-side WebSocket
// frames: every Write is one masked binary frame, Read returns the payload
// of data frames, answers pings and reports a close frame as io.EOF. MQTT
// packets may span frames (MQTT 5.0 section 6), so the buffered writer in
// front of it decides the framing.
type wsClientConn struct {
	net.Conn
	r       *bufio.Reader
	left    int64 // unread payload bytes of the current data frame
	masked  bool  // current frame is masked (servers must not mask; tolerated)
	mask    [4]byte
	pos     int // offset into the current frame for unmasking
	wmu     sync.Mutex
	wbuf    []byte
	rng     *rand.PCG
	ctlBuf  [125]byte
	closing bool
}

func newWSClientConn(c net.Conn, br *bufio.Reader) *wsClientConn {
	w := &wsClientConn{Conn: c, rng: rand.NewPCG(rand.Uint64(), rand.Uint64())}
	if br != nil {
		w.r = bufio.NewReaderSize(io.MultiReader(br, c), 4096)
	} else {
		w.r = bufio.NewReaderSize(c, 4096)
	}
	return w
}

func (w *wsClientConn) Read(p []byte) (int, error) {
	for w.left == 0 {
		h, err := ws.ReadHeader(w.r)
		if err != nil {
			return 0, err
		}
		if h.OpCode.IsControl() {
			if err := w.control(h); err != nil {
				return 0, err
			}
			continue
		}
		if h.OpCode == ws.OpText {
			return 0, errors.New("websocket: text frame from server (MQTT uses binary frames)")
		}
		w.left, w.masked, w.mask, w.pos = h.Length, h.Masked, h.Mask, 0
	}
	if int64(len(p)) > w.left {
		p = p[:w.left]
	}
	n, err := w.r.Read(p)
	if w.masked {
		ws.Cipher(p[:n], w.mask, w.pos)
	}
	w.pos += n
	w.left -= int64(n)
	return n, err
}

func (w *wsClientConn) control(h ws.Header) error {
	if h.Length > int64(len(w.ctlBuf)) {
		return errors.New("websocket: control frame too long")
	}
	p := w.ctlBuf[:h.Length]
	if _, err := io.ReadFull(w.r, p); err != nil {
		return err
	}
	if h.Masked {
		ws.Cipher(p, h.Mask, 0)
	}
	switch h.OpCode {
	case ws.OpPing:
		return w.writeFrame(ws.OpPong, p)
	case ws.OpClose:
		w.wmu.Lock()
		already := w.closing
		w.closing = true
		w.wmu.Unlock()
		if !already {
			_ = w.writeFrame(ws.OpClose, p[:min(len(p), 2)])
		}
		return io.EOF
	}
	return nil // pong
}

func (w *wsClientConn) Write(p []byte) (int, error) {
	if err := w.writeFrame(ws.OpBinary, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// writeFrame writes one masked frame in a single write to the socket.
func (w *wsClientConn) writeFrame(op ws.OpCode, p []byte) error {
	w.wmu.Lock()
	defer w.wmu.Unlock()
	if w.closing && op != ws.OpClose {
		return net.ErrClosed
	}
	var mask [4]byte
	v := w.rng.Uint64()
	mask[0], mask[1], mask[2], mask[3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
	h := ws.Header{Fin: true, OpCode: op, Length: int64(len(p)), Masked: true, Mask: mask}
	need := ws.HeaderSize(h) + len(p)
	if cap(w.wbuf) < need {
		w.wbuf = make([]byte, need)
	}
	buf := w.wbuf[:need]
	hw := fixedWriter{b: buf}
	if err := ws.WriteHeader(&hw, h); err != nil {
		return err
	}
	copy(buf[hw.n:], p)
	ws.Cipher(buf[hw.n:], mask, 0)
	_, err := w.Conn.Write(buf)
	return err
}

// Close sends a normal close frame (best effort) and closes the socket.
func (w *wsClientConn) Close() error {
	w.wmu.Lock()
	already := w.closing
	w.closing = true
	w.wmu.Unlock()
	if !already {
		_ = w.Conn.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
		_ = w.writeFrame(ws.OpClose, []byte{0x03, 0xe8}) // 1000 normal closure
	}
	return w.Conn.Close()
}

// fixedWriter writes into a preallocated slice.
type fixedWriter struct {
	b []byte
	n int
}

func (f *fixedWriter) Write(p []byte) (int, error) {
	if len(p) > len(f.b)-f.n {
		return 0, io.ErrShortBuffer
	}
	f.n += copy(f.b[f.n:], p)
	return len(p), nil
}
