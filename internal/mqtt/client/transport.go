package client

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"sync"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

// target is a parsed Config.URL.
type target struct {
	addr string   // host:port to dial
	host string   // host name, for TLS ServerName
	tls  bool     // mqtts or wss
	ws   *url.URL // WebSocket URL (ws or wss), nil for plain MQTT
}

// parseURL accepts mqtt://, tcp:// (mqtt), mqtts://, ssl://, tls:// (mqtts),
// ws:// and wss://. A missing port is the scheme's default.
func parseURL(s string) (target, error) {
	var t target
	u, err := url.Parse(s)
	if err != nil {
		return t, fmt.Errorf("mqtt client: URL %q: %w", s, err)
	}
	if u.User != nil {
		return t, fmt.Errorf("mqtt client: URL %q: put credentials in Username and Password, not in the URL", s)
	}
	var port string
	switch strings.ToLower(u.Scheme) {
	case "mqtt", "tcp":
		port = "1883"
	case "mqtts", "ssl", "tls":
		port, t.tls = "8883", true
	case "ws":
		port = "80"
		t.ws = u
	case "wss":
		port, t.tls = "443", true
		t.ws = u
	default:
		return t, fmt.Errorf("mqtt client: URL %q: scheme must be mqtt, mqtts, ws or wss", s)
	}
	t.host = u.Hostname()
	if t.host == "" {
		return t, fmt.Errorf("mqtt client: URL %q: no host", s)
	}
	if p := u.Port(); p != "" {
		port = p
	}
	t.addr = net.JoinHostPort(t.host, port)
	if t.ws != nil {
		w := *u
		w.Host = t.addr
		if w.Path == "" {
			w.Path = "/"
		}
		t.ws = &w
	} else if u.Path != "" && u.Path != "/" {
		return t, fmt.Errorf("mqtt client: URL %q: a path is only meaningful for ws and wss", s)
	}
	return t, nil
}

// dial opens the transport: TCP, then TLS when asked for, then the
// WebSocket upgrade. It returns the raw connection (for deadlines and
// Close) and the stream MQTT packets are read from and written to, which
// is the raw connection itself except over WebSocket. The caller sets no
// deadline: ctx bounds the whole dial.
func (c *Client) dial(ctx context.Context) (net.Conn, io.ReadWriter, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", c.target.addr)
	if err != nil {
		return nil, nil, err
	}
	if deadline, ok := ctx.Deadline(); ok {
		_ = nc.SetDeadline(deadline)
	}
	// Closing the connection is the only way to interrupt a TLS or
	// WebSocket handshake when ctx ends early (Close called).
	stop := context.AfterFunc(ctx, func() { _ = nc.Close() })
	defer stop()
	if c.target.tls {
		tc := tls.Client(nc, c.tlsConfig())
		if err := tc.HandshakeContext(ctx); err != nil {
			_ = nc.Close()
			return nil, nil, fmt.Errorf("TLS handshake: %w", err)
		}
		nc = tc
	}
	var rw io.ReadWriter = nc
	if c.target.ws != nil {
		wd := ws.Dialer{Protocols: []string{"mqtt"}}
		br, _, err := wd.Upgrade(nc, c.target.ws)
		if err != nil {
			_ = nc.Close()
			return nil, nil, fmt.Errorf("WebSocket upgrade: %w", err)
		}
		rw = newWSConn(nc, br)
	}
	if ctx.Err() != nil {
		_ = nc.Close()
		return nil, nil, ctx.Err()
	}
	_ = nc.SetDeadline(noDeadline)
	return nc, rw, nil
}

// tlsConfig is Config.TLS with ServerName filled in from the URL.
func (c *Client) tlsConfig() *tls.Config {
	if c.cfg.TLS == nil {
		return &tls.Config{ServerName: c.target.host, MinVersion: tls.VersionTLS12}
	}
	tc := c.cfg.TLS.Clone()
	if tc.ServerName == "" {
		tc.ServerName = c.target.host
	}
	return tc
}

// wsConn carries MQTT over WebSocket binary frames on the client side:
// every Write is one masked binary frame (one MQTT packet), and Read
// returns the payload of binary frames as a byte stream (MQTT packets may
// span frames), answering pings and close frames on the way.
type wsConn struct {
	rd      *wsutil.Reader
	ctl     wsutil.FrameHandlerFunc
	inFrame bool

	mu sync.Mutex // serialises frames written by Write and the control handler
	w  io.Writer
}

func newWSConn(nc net.Conn, br *bufio.Reader) *wsConn {
	var src io.Reader = nc
	if br != nil {
		// Bytes the server sent right after its handshake response.
		src = io.MultiReader(br, nc)
	}
	w := &wsConn{w: nc}
	w.ctl = wsutil.ControlFrameHandler(lockedWriter{w}, ws.StateClientSide)
	w.rd = &wsutil.Reader{Source: src, State: ws.StateClientSide, OnIntermediate: w.ctl}
	return w
}

// lockedWriter writes control frame replies under the frame mutex.
type lockedWriter struct{ w *wsConn }

func (l lockedWriter) Write(p []byte) (int, error) {
	l.w.mu.Lock()
	defer l.w.mu.Unlock()
	return l.w.w.Write(p)
}

var errWSText = errors.New("websocket: text frame received (MQTT uses binary frames)")

func (w *wsConn) Read(p []byte) (int, error) {
	for {
		if w.inFrame {
			n, err := w.rd.Read(p)
			if errors.Is(err, io.EOF) {
				w.inFrame = false
				if n > 0 {
					return n, nil
				}
				continue
			}
			return n, err
		}
		hdr, err := w.rd.NextFrame()
		if err != nil {
			return 0, err
		}
		if hdr.OpCode.IsControl() {
			if err := w.ctl(hdr, w.rd); err != nil {
				return 0, err
			}
			continue
		}
		if hdr.OpCode != ws.OpBinary {
			return 0, errWSText
		}
		w.inFrame = true
	}
}

func (w *wsConn) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := wsutil.WriteClientMessage(w.w, ws.OpBinary, p); err != nil {
		return 0, err
	}
	return len(p), nil
}
