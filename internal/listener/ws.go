package listener

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

// WebSocket transport for MQTT (MQTT 5.0 section 6 / MQTT 3.1.1 section 6).
//
// Subprotocol policy: the MQTT specification says the Client MUST offer
// "mqtt" [MQTT-6.0.0-3] and the subprotocol selected by the Server MUST be
// "mqtt" [MQTT-6.0.0-4]; legacy MQTT 3.1 clients offer "mqttv3.1" only.
// We select "mqtt" whenever it is offered (whatever its position), else
// "mqttv3.1", and refuse the upgrade with 400 Bad Request when the client
// offers neither (or sends no Sec-WebSocket-Protocol header at all): such a
// client violates [MQTT-6.0.0-3], and accepting it would mean answering
// without a subprotocol. RabbitMQ and EMQX (fail_if_no_subprotocol, the
// default) refuse such clients too.

const (
	wsReadBufSize       = 4096
	wsMaxHandshakeBytes = 16 << 10 // request line + headers
	wsCloseFrameTimeout = 250 * time.Millisecond
	wsCoalesceMax       = 4096 // payloads up to this are copied after the header for non-TCP sockets
)

// WebSocket opcodes and close codes (RFC 6455).
const (
	opContinuation = 0x0
	opText         = 0x1
	opBinary       = 0x2
	opClose        = 0x8
	opPing         = 0x9
	opPong         = 0xA

	closeNormal          = 1000
	closeProtocolError   = 1002
	closeUnsupported     = 1003
	closeNoStatus        = 1005
	closeInvalidPayload  = 1007
	closeMessageTooBig   = 1009
	maxControlPayloadLen = 125
)

// WSCloseError is returned by Read on a WebSocket connection when the
// listener closed it for a protocol violation; Code is the close status
// sent to the client.
type WSCloseError struct {
	Code   int
	Reason string
}

func (e *WSCloseError) Error() string {
	return fmt.Sprintf("websocket: %s (closed with status %d)", e.Reason, e.Code)
}

var headerXFF = []byte("X-Forwarded-For")

var (
	errWSClosing = errors.New("websocket: close frame already sent")
	errNotHTTP   = errors.New("websocket: request is not HTTP (control bytes in the request head)")

	errHandshakeTooLarge = fmt.Errorf("websocket: upgrade request head larger than %d bytes", wsMaxHandshakeBytes)
)

// handshakeReader feeds the upgrader at most one line per Read and at most
// wsMaxHandshakeBytes in total, so the upgrader's internal buffer never
// swallows bytes past the end of the request headers: they stay in br for
// the frame reader.
type handshakeReader struct {
	br *bufio.Reader
	n  int
}

func (h *handshakeReader) Read(p []byte) (int, error) {
	if h.n >= wsMaxHandshakeBytes {
		return 0, errHandshakeTooLarge
	}
	if len(p) > wsMaxHandshakeBytes-h.n {
		p = p[:wsMaxHandshakeBytes-h.n]
	}
	if _, err := h.br.Peek(1); err != nil {
		return 0, err
	}
	buf, _ := h.br.Peek(h.br.Buffered())
	if len(buf) > len(p) {
		buf = buf[:len(p)]
	}
	if i := bytes.IndexByte(buf, '\n'); i >= 0 {
		buf = buf[:i+1]
	}
	for _, b := range buf {
		if (b < 0x20 && b != '\r' && b != '\n' && b != '\t') || b == 0x7f {
			// Binary data (e.g. MQTT sent to a WebSocket port): fail now
			// instead of waiting for a line end until the timeout.
			return 0, errNotHTTP
		}
	}
	n := copy(p, buf)
	_, _ = h.br.Discard(n)
	h.n += n
	return n, nil
}

// wsPathMatches reports whether the request URI's path is path.
func wsPathMatches(uri []byte, path string) bool {
	s := string(uri)
	if strings.HasPrefix(s, "/") {
		if i := strings.IndexAny(s, "?#"); i >= 0 {
			s = s[:i]
		}
		return s == path
	}
	// absolute-form: GET http://host/mqtt HTTP/1.1
	u, err := url.ParseRequestURI(s)
	if err != nil {
		return false
	}
	return u.Path == path || (u.Path == "" && path == "/")
}

// upgradeWS performs the HTTP upgrade on c (deadline already set by the
// caller) and returns the WebSocket stream connection.
func (l *listener) upgradeWS(c net.Conn) (net.Conn, error) {
	br := bufio.NewReaderSize(c, wsReadBufSize)
	var (
		offeredMQTT, offeredV31 bool
		xff                     []byte
		xffSeen                 bool
		stompProto              string // highest vNN.stomp offered (stomp-ws)
	)
	stomp := l.cfg.Protocol == ProtocolStompWS
	u := ws.Upgrader{
		OnRequest: func(uri []byte) error {
			if !wsPathMatches(uri, l.cfg.WSPath) {
				return ws.RejectConnectionError(ws.RejectionStatus(404), ws.RejectionReason("not found"))
			}
			return nil
		},
		// Record the offers from every Sec-WebSocket-Protocol header;
		// the selection is made (and written) in OnBeforeUpgrade.
		ProtocolCustom: func(v []byte) (string, bool) {
			for tok := range bytes.SplitSeq(v, []byte{','}) {
				switch string(bytes.TrimSpace(tok)) {
				case "mqtt":
					offeredMQTT = true
				case "mqttv3.1":
					offeredV31 = true
				case "v10.stomp", "v11.stomp", "v12.stomp":
					stompProto = max(stompProto, string(bytes.TrimSpace(tok)))
				}
			}
			return "", true
		},
		OnHeader: func(k, v []byte) error {
			// Field names are case-insensitive (RFC 9110 section 5.1);
			// do not rely on the upgrader canonicalising them.
			if len(l.cfg.TrustedProxies) > 0 && bytes.EqualFold(k, headerXFF) {
				if xffSeen {
					xff = append(xff, ',')
				}
				xff = append(xff, v...)
				xffSeen = true
			}
			return nil
		},
		OnBeforeUpgrade: func() (ws.HandshakeHeader, error) {
			if stomp {
				// STOMP over WebSocket: the highest STOMP subprotocol
				// offered, or none (as ActiveMQ and RabbitMQ accept).
				if stompProto == "" {
					return nil, nil
				}
				return ws.HandshakeHeaderString("Sec-WebSocket-Protocol: " + stompProto + "\r\n"), nil
			}
			switch {
			case offeredMQTT:
				return ws.HandshakeHeaderString("Sec-WebSocket-Protocol: mqtt\r\n"), nil
			case offeredV31:
				return ws.HandshakeHeaderString("Sec-WebSocket-Protocol: mqttv3.1\r\n"), nil
			}
			return nil, ws.RejectConnectionError(ws.RejectionStatus(400),
				ws.RejectionReason("MQTT over WebSocket requires the Sec-WebSocket-Protocol mqtt"))
		},
	}
	rw := struct {
		io.Reader
		io.Writer
	}{&handshakeReader{br: br}, c}
	if _, err := u.Upgrade(rw); err != nil {
		return nil, fmt.Errorf("websocket upgrade: %w", err)
	}
	wc := &wsConn{
		c:        c,
		br:       br,
		remote:   c.RemoteAddr(),
		maxFrame: int64(l.cfg.WSMaxFrame),
		protocol: "mqtt",
	}
	if !offeredMQTT {
		wc.protocol = "mqttv3.1"
	}
	if stomp {
		// STOMP clients (stomp.js) send text frames.
		wc.protocol, wc.allowText = stompProto, true
	}
	_, wc.vectored = c.(*net.TCPConn)
	if xffSeen {
		if ap, ok := clientFromXFF(addrOf(c.RemoteAddr()), string(xff), l.cfg.TrustedProxies); ok {
			wc.remote = net.TCPAddrFromAddrPort(ap)
		}
	}
	if tc, ok := c.(*tls.Conn); ok {
		return &wsTLSConn{wsConn: wc, tc: tc}, nil
	}
	return wc, nil
}

// addrOf extracts the IP of a TCP address (unmapped), or the zero Addr.
func addrOf(a net.Addr) netip.Addr {
	if ta, ok := a.(*net.TCPAddr); ok {
		ip, _ := netip.AddrFromSlice(ta.IP)
		return ip.Unmap()
	}
	return netip.Addr{}
}

func trusted(a netip.Addr, nets []netip.Prefix) bool { return Networks(nets).Contains(a) }

// clientFromXFF applies the standard right-to-left X-Forwarded-For
// algorithm: the header is believed only if the TCP peer is a trusted
// proxy; entries are walked from the right (nearest hop) skipping trusted
// proxies, and the first untrusted address is the client. If every entry is
// trusted the left-most one is used. Addresses left of the first untrusted
// one were supplied by the client and are never used (taking the left-most
// entry outright would let any client spoof its address). A malformed entry
// reached during the walk makes the whole header ignored (ok is false).
func clientFromXFF(peer netip.Addr, xff string, nets []netip.Prefix) (netip.AddrPort, bool) {
	if !peer.IsValid() || !trusted(peer, nets) {
		return netip.AddrPort{}, false
	}
	var last netip.AddrPort
	found := false
	for rest := xff; ; {
		i := strings.LastIndexByte(rest, ',')
		ap, ok := parseXFFEntry(strings.TrimSpace(rest[i+1:]))
		if !ok {
			return netip.AddrPort{}, false
		}
		if !trusted(ap.Addr(), nets) {
			return ap, true
		}
		last, found = ap, true
		if i < 0 {
			break
		}
		rest = rest[:i]
	}
	return last, found
}

func parseXFFEntry(s string) (netip.AddrPort, bool) {
	if a, err := netip.ParseAddr(s); err == nil {
		return netip.AddrPortFrom(a.WithZone("").Unmap(), 0), true
	}
	if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") {
		if a, err := netip.ParseAddr(s[1 : len(s)-1]); err == nil && a.Is6() {
			return netip.AddrPortFrom(a.WithZone("").Unmap(), 0), true
		}
		return netip.AddrPort{}, false
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return netip.AddrPortFrom(ap.Addr().WithZone("").Unmap(), ap.Port()), true
	}
	return netip.AddrPort{}, false
}

// wsConn presents the payloads of the client's binary frames as one byte
// stream and sends each Write as one binary frame. Control frames are
// handled inside Read: pings are answered, a close frame is answered and
// then Read returns io.EOF.
type wsConn struct {
	c        net.Conn
	br       *bufio.Reader
	remote   net.Addr
	maxFrame int64
	protocol string
	// allowText accepts text frames as data (STOMP); MQTT refuses them.
	allowText bool
	vectored  bool // c is a *net.TCPConn: header and payload go out in one writev

	rmu        sync.Mutex // serialises Read
	remaining  int64      // payload bytes left in the current data frame
	mask       [4]byte
	maskPos    int
	fragmented bool // inside a fragmented binary message
	readErr    error
	ctrl       [maxControlPayloadLen]byte

	wmu       sync.Mutex // serialises frame writes (data and control)
	closeSent bool
	writeErr  error
	hdr       [10]byte
	bufs      [][]byte
	nb        net.Buffers
	scratch   []byte

	closeOnce sync.Once
	closeErr  error
}

// Subprotocol returns the negotiated WebSocket subprotocol ("mqtt" or
// "mqttv3.1"; for stomp-ws "v12.stomp", "v11.stomp", "v10.stomp" or "").
func (c *wsConn) Subprotocol() string { return c.protocol }

func (c *wsConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.rmu.Lock()
	defer c.rmu.Unlock()
	for {
		if c.readErr != nil {
			return 0, c.readErr
		}
		if c.remaining > 0 {
			q := p
			if int64(len(q)) > c.remaining {
				q = q[:c.remaining]
			}
			n, err := c.br.Read(q)
			if n > 0 {
				ws.Cipher(q[:n], c.mask, c.maskPos)
				c.maskPos += n
				c.remaining -= int64(n)
			}
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return n, err
		}
		if err := c.nextFrame(); err != nil {
			return 0, err
		}
	}
}

// fail sends a close frame with code and makes every later Read fail.
func (c *wsConn) fail(code int, reason string) error {
	err := &WSCloseError{Code: code, Reason: reason}
	c.readErr = err
	c.wmu.Lock()
	_ = c.writeCloseLocked(code, reason)
	c.wmu.Unlock()
	return err
}

// nextFrame reads one frame header. For data frames it prepares the
// payload for Read; control frames are consumed and handled entirely. The
// header (and a control frame's payload) is only consumed once complete,
// so a read deadline firing mid-frame leaves the state consistent.
func (c *wsConn) nextFrame() error {
	b, err := c.br.Peek(2)
	if err != nil {
		return c.frameReadErr(err)
	}
	fin := b[0]&0x80 != 0
	rsv := b[0] & 0x70
	op := b[0] & 0x0f
	masked := b[1]&0x80 != 0
	n := 2
	switch b[1] & 0x7f {
	case 126:
		n += 2
	case 127:
		n += 8
	}
	if masked {
		n += 4
	}
	switch {
	case rsv != 0:
		return c.fail(closeProtocolError, "reserved bits set without a negotiated extension")
	case !masked:
		return c.fail(closeProtocolError, "client frame is not masked")
	}
	if b, err = c.br.Peek(n); err != nil {
		return c.frameReadErr(err)
	}
	var length uint64
	switch l7 := b[1] & 0x7f; l7 {
	case 126:
		length = uint64(binary.BigEndian.Uint16(b[2:4]))
	case 127:
		length = binary.BigEndian.Uint64(b[2:10])
		if length>>63 != 0 {
			return c.fail(closeProtocolError, "invalid payload length")
		}
	default:
		length = uint64(l7)
	}
	var mask [4]byte
	copy(mask[:], b[n-4:n])

	switch op {
	case opText, opBinary, opContinuation:
		if op == opText && !c.allowText {
			return c.fail(closeUnsupported, "text frames are not supported; MQTT uses binary frames")
		}
		if op != opContinuation && c.fragmented {
			return c.fail(closeProtocolError, "new message started inside a fragmented message")
		}
		if op == opContinuation && !c.fragmented {
			return c.fail(closeProtocolError, "continuation frame without a message to continue")
		}
		if length > uint64(c.maxFrame) {
			return c.fail(closeMessageTooBig, fmt.Sprintf("frame of %d bytes exceeds the limit of %d", length, c.maxFrame))
		}
		_, _ = c.br.Discard(n)
		c.fragmented = !fin
		c.remaining = int64(length)
		c.mask = mask
		c.maskPos = 0
		return nil
	case opClose, opPing, opPong:
		if !fin {
			return c.fail(closeProtocolError, "fragmented control frame")
		}
		if length > maxControlPayloadLen {
			return c.fail(closeProtocolError, "control frame payload longer than 125 bytes")
		}
	default:
		return c.fail(closeProtocolError, fmt.Sprintf("reserved opcode %#x", op))
	}

	// Control frame: consume header and payload together.
	full, err := c.br.Peek(n + int(length))
	if err != nil {
		return c.frameReadErr(err)
	}
	payload := c.ctrl[:length]
	copy(payload, full[n:])
	_, _ = c.br.Discard(n + int(length))
	ws.Cipher(payload, mask, 0)

	switch op {
	case opPing:
		c.wmu.Lock()
		defer c.wmu.Unlock()
		if c.closeSent || c.writeErr != nil {
			return nil
		}
		_, err := c.writeFrameLocked(opPong, payload, nil)
		return err
	case opPong:
		return nil
	}
	// opClose
	code := closeNoStatus
	switch {
	case len(payload) == 1:
		return c.fail(closeProtocolError, "close frame with a 1-byte payload")
	case len(payload) >= 2:
		code = int(binary.BigEndian.Uint16(payload))
		if !validCloseCode(code) {
			return c.fail(closeProtocolError, fmt.Sprintf("invalid close status %d", code))
		}
		if !utf8.Valid(payload[2:]) {
			return c.fail(closeInvalidPayload, "close reason is not valid UTF-8")
		}
	}
	c.wmu.Lock()
	if !c.closeSent && c.writeErr == nil {
		if code == closeNoStatus {
			c.closeSent = true
			_, _ = c.writeFrameLocked(opClose, nil, nil)
		} else {
			_ = c.writeCloseLocked(code, "")
		}
	}
	c.wmu.Unlock()
	c.readErr = io.EOF
	return io.EOF
}

func (c *wsConn) frameReadErr(err error) error {
	if err == io.EOF && c.br.Buffered() > 0 {
		return io.ErrUnexpectedEOF
	}
	return err
}

// validCloseCode reports whether a received close status is allowed on the
// wire (RFC 6455 section 7.4).
func validCloseCode(code int) bool {
	switch {
	case code >= 1000 && code <= 1003, code >= 1007 && code <= 1014:
		return true
	case code >= 3000 && code <= 4999:
		return true
	}
	return false
}

// Write sends p as one binary frame. It is safe for concurrent use with
// Read (control replies) and other Writes.
func (c *wsConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.writableLocked(); err != nil {
		return 0, err
	}
	if len(p) == 0 {
		return 0, nil
	}
	n, err := c.writeFrameLocked(opBinary, p, nil)
	return int(n), err
}

// WriteBuffers sends all of v as a single binary frame (one vectored write
// on plain TCP). On success v is consumed, like net.Buffers.WriteTo.
func (c *wsConn) WriteBuffers(v *net.Buffers) (int64, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.writableLocked(); err != nil {
		return 0, err
	}
	var total int
	for _, b := range *v {
		total += len(b)
	}
	if total == 0 {
		*v = (*v)[len(*v):]
		return 0, nil
	}
	n, err := c.writeFrameLocked(opBinary, nil, *v)
	if err == nil {
		*v = (*v)[len(*v):]
	}
	return n, err
}

func (c *wsConn) writableLocked() error {
	if c.writeErr != nil {
		return c.writeErr
	}
	if c.closeSent {
		return errWSClosing
	}
	return nil
}

// writeCloseLocked sends a close frame (once).
func (c *wsConn) writeCloseLocked(code int, reason string) error {
	if c.closeSent || c.writeErr != nil {
		return nil
	}
	c.closeSent = true
	var body [maxControlPayloadLen]byte
	binary.BigEndian.PutUint16(body[:], uint16(code))
	if len(reason) > maxControlPayloadLen-2 {
		reason = reason[:maxControlPayloadLen-2]
		for !utf8.ValidString(reason) {
			reason = reason[:len(reason)-1]
		}
	}
	n := 2 + copy(body[2:], reason)
	_, err := c.writeFrameLocked(opClose, body[:n], nil)
	return err
}

// writeFrameLocked writes one unmasked frame whose payload is p followed by
// the buffers in more. It returns the number of payload bytes written. Any
// failure after part of the frame went out poisons the connection.
func (c *wsConn) writeFrameLocked(op byte, p []byte, more [][]byte) (int64, error) {
	length := len(p)
	for _, b := range more {
		length += len(b)
	}
	h := c.hdr[:]
	h[0] = 0x80 | op
	hn := 2
	switch {
	case length < 126:
		h[1] = byte(length)
	case length <= 0xffff:
		h[1] = 126
		binary.BigEndian.PutUint16(h[2:], uint16(length))
		hn = 4
	default:
		h[1] = 127
		binary.BigEndian.PutUint64(h[2:], uint64(length))
		hn = 10
	}
	var written int64
	var err error
	if !c.vectored && length <= wsCoalesceMax {
		// One write (one TLS record) for small frames.
		buf := append(append(c.scratch[:0], h[:hn]...), p...)
		for _, b := range more {
			buf = append(buf, b...)
		}
		c.scratch = buf[:0]
		var n int
		n, err = c.c.Write(buf)
		written = int64(n)
	} else {
		c.bufs = append(c.bufs[:0], h[:hn])
		if len(p) > 0 {
			c.bufs = append(c.bufs, p)
		}
		c.bufs = append(c.bufs, more...)
		c.nb = c.bufs // WriteTo consumes c.nb, c.bufs keeps the backing array
		written, err = c.nb.WriteTo(c.c)
		c.nb = nil
		clear(c.bufs)
		c.bufs = c.bufs[:0]
	}
	payload := max(written-int64(hn), 0)
	if err != nil && written > 0 {
		// Partial frame on the wire: the stream is unusable.
		c.writeErr = err
	}
	return payload, err
}

// Close sends a normal-closure close frame (best effort, unless one was
// already sent or a write is in progress) and closes the connection.
func (c *wsConn) Close() error {
	c.closeOnce.Do(func() {
		if c.wmu.TryLock() {
			if !c.closeSent && c.writeErr == nil {
				_ = c.c.SetWriteDeadline(time.Now().Add(wsCloseFrameTimeout))
				_ = c.writeCloseLocked(closeNormal, "")
			}
			c.closeSent = true
			c.wmu.Unlock()
		}
		c.closeErr = c.c.Close()
	})
	return c.closeErr
}

// RemoteAddr is the client address: the X-Forwarded-For client when the
// peer is a trusted proxy, otherwise the (PROXY protocol) peer.
func (c *wsConn) RemoteAddr() net.Addr               { return c.remote }
func (c *wsConn) LocalAddr() net.Addr                { return c.c.LocalAddr() }
func (c *wsConn) SetDeadline(t time.Time) error      { return c.c.SetDeadline(t) }
func (c *wsConn) SetReadDeadline(t time.Time) error  { return c.c.SetReadDeadline(t) }
func (c *wsConn) SetWriteDeadline(t time.Time) error { return c.c.SetWriteDeadline(t) }

// NetConn returns the connection below the WebSocket framing.
func (c *wsConn) NetConn() net.Conn { return c.c }

// wsTLSConn is a WSS connection; it exposes the TLS state directly.
type wsTLSConn struct {
	*wsConn
	tc *tls.Conn
}

// ConnectionState returns the TLS state of the WSS connection.
func (c *wsTLSConn) ConnectionState() tls.ConnectionState { return c.tc.ConnectionState() }
