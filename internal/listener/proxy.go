package listener

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
)

// PROXY protocol (HAProxy, versions 1 and 2) header parsing. Reference:
// https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt

// ErrInvalidProxyHeader is wrapped by every error about a malformed or
// missing PROXY protocol header.
var ErrInvalidProxyHeader = errors.New("invalid PROXY protocol header")

const (
	proxyV1MaxLen  = 107 // including CRLF
	proxyV2HdrLen  = 16
	proxyBufSize   = 256 // holds a v1 line or a v2 header with any address block
	proxyV2AddrIP4 = 12
	proxyV2AddrIP6 = 36
	proxyV2AddrUx  = 216
)

var (
	proxyV1Prefix = []byte("PROXY ")
	proxyV2Sig    = []byte("\r\n\r\n\x00\r\nQUIT\n")
)

// proxyHeader is a parsed PROXY header.
type proxyHeader struct {
	version int  // 1 or 2
	local   bool // v2 LOCAL command (health checks from the proxy itself)
	// hasAddr is false for LOCAL, v1 UNKNOWN and v2 UNSPEC/UNIX families:
	// the socket's own peer address stays in use.
	hasAddr  bool
	src, dst netip.AddrPort
}

func proxyErr(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidProxyHeader}, args...)...)
}

// readProxyHeader consumes exactly one PROXY header from br. Bytes after the
// header stay in br. Read errors (timeouts, EOF) are returned as is.
func readProxyHeader(br *bufio.Reader) (proxyHeader, error) {
	first, err := br.Peek(1)
	if err != nil {
		return proxyHeader{}, err
	}
	switch first[0] {
	case 'P':
		return readProxyV1(br)
	case '\r':
		return readProxyV2(br)
	default:
		return proxyHeader{}, proxyErr("connection does not start with a PROXY header")
	}
}

// peekPrefix waits until br holds at least len(want) bytes, failing as soon
// as the buffered bytes diverge from want.
func peekPrefix(br *bufio.Reader, want []byte) error {
	for {
		buf, _ := br.Peek(br.Buffered())
		m := min(len(buf), len(want))
		if !bytes.Equal(buf[:m], want[:m]) {
			return proxyErr("bad signature")
		}
		if m == len(want) {
			return nil
		}
		if _, err := br.Peek(len(buf) + 1); err != nil {
			return err
		}
	}
}

func readProxyV1(br *bufio.Reader) (proxyHeader, error) {
	if err := peekPrefix(br, proxyV1Prefix); err != nil {
		return proxyHeader{}, err
	}
	var line []byte
	for {
		buf, _ := br.Peek(br.Buffered())
		if i := bytes.IndexByte(buf[:min(len(buf), proxyV1MaxLen)], '\n'); i >= 0 {
			line = buf[:i+1]
			break
		}
		if len(buf) >= proxyV1MaxLen {
			return proxyHeader{}, proxyErr("v1 header longer than %d bytes", proxyV1MaxLen)
		}
		if _, err := br.Peek(len(buf) + 1); err != nil {
			return proxyHeader{}, err
		}
	}
	h, err := parseProxyV1Line(line)
	if err != nil {
		return proxyHeader{}, err
	}
	_, _ = br.Discard(len(line))
	return h, nil
}

// parseProxyV1Line parses "PROXY <proto> <src> <dst> <sport> <dport>\r\n".
func parseProxyV1Line(line []byte) (proxyHeader, error) {
	n := len(line)
	if n < 2 || line[n-2] != '\r' || line[n-1] != '\n' {
		return proxyHeader{}, proxyErr("v1 header not terminated by CRLF")
	}
	body := line[len(proxyV1Prefix) : n-2]
	h := proxyHeader{version: 1}
	proto, rest, _ := bytes.Cut(body, []byte{' '})
	switch string(proto) {
	case "UNKNOWN":
		// The receiver must ignore anything after UNKNOWN.
		return h, nil
	case "TCP4", "TCP6":
	default:
		return proxyHeader{}, proxyErr("v1 unknown protocol %q", proto)
	}
	fields := bytes.Split(rest, []byte{' '})
	if len(fields) != 4 {
		return proxyHeader{}, proxyErr("v1 %s needs 4 fields, got %d", proto, len(fields))
	}
	v4 := string(proto) == "TCP4"
	var addrs [2]netip.Addr
	for i := range 2 {
		a, err := netip.ParseAddr(string(fields[i]))
		if err != nil || a.Zone() != "" || a.Is4() != v4 {
			return proxyHeader{}, proxyErr("v1 bad %s address %q", proto, fields[i])
		}
		addrs[i] = a
	}
	var ports [2]uint16
	for i := range 2 {
		p, ok := parsePort(fields[2+i])
		if !ok {
			return proxyHeader{}, proxyErr("v1 bad port %q", fields[2+i])
		}
		ports[i] = p
	}
	h.hasAddr = true
	h.src = netip.AddrPortFrom(addrs[0], ports[0])
	h.dst = netip.AddrPortFrom(addrs[1], ports[1])
	return h, nil
}

func parsePort(b []byte) (uint16, bool) {
	if len(b) == 0 || len(b) > 5 || (len(b) > 1 && b[0] == '0') {
		return 0, false
	}
	v := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + int(c-'0')
	}
	if v > 65535 {
		return 0, false
	}
	return uint16(v), true
}

func readProxyV2(br *bufio.Reader) (proxyHeader, error) {
	if err := peekPrefix(br, proxyV2Sig); err != nil {
		return proxyHeader{}, err
	}
	hdr, err := br.Peek(proxyV2HdrLen)
	if err != nil {
		return proxyHeader{}, err
	}
	if v := hdr[12] >> 4; v != 2 {
		return proxyHeader{}, proxyErr("v2 unsupported version %d", v)
	}
	cmd := hdr[12] & 0x0f
	fam, transport := hdr[13]>>4, hdr[13]&0x0f
	length := int(binary.BigEndian.Uint16(hdr[14:16]))
	h := proxyHeader{version: 2}
	switch cmd {
	case 0x0: // LOCAL: keep the socket endpoints, ignore the address block.
		h.local = true
	case 0x1: // PROXY
		var need int
		switch fam {
		case 0x0: // AF_UNSPEC
		case 0x1:
			need = proxyV2AddrIP4
		case 0x2:
			need = proxyV2AddrIP6
		case 0x3:
			need = proxyV2AddrUx
		default:
			return proxyHeader{}, proxyErr("v2 unknown address family %d", fam)
		}
		if transport > 2 {
			return proxyHeader{}, proxyErr("v2 unknown transport %d", transport)
		}
		if (fam == 0x1 || fam == 0x2) && transport != 0x1 {
			return proxyHeader{}, proxyErr("v2 transport %d is not STREAM", transport)
		}
		if length < need {
			return proxyHeader{}, proxyErr("v2 address block of %d bytes too short for family %d", length, fam)
		}
		if fam == 0x1 || fam == 0x2 {
			b, err := br.Peek(proxyV2HdrLen + need)
			if err != nil {
				return proxyHeader{}, err
			}
			b = b[proxyV2HdrLen:]
			alen := need/2 - 2
			src, _ := netip.AddrFromSlice(b[:alen])
			dst, _ := netip.AddrFromSlice(b[alen : 2*alen])
			sp := binary.BigEndian.Uint16(b[2*alen:])
			dp := binary.BigEndian.Uint16(b[2*alen+2:])
			h.hasAddr = true
			h.src = netip.AddrPortFrom(src, sp)
			h.dst = netip.AddrPortFrom(dst, dp)
		}
	default:
		return proxyHeader{}, proxyErr("v2 unknown command %d", cmd)
	}
	// Skip the header, the address block and any TLVs.
	if _, err := br.Discard(proxyV2HdrLen + length); err != nil {
		return proxyHeader{}, err
	}
	return h, nil
}

// proxyConn is a connection whose PROXY header has been consumed. Reads
// return the bytes buffered past the header first; RemoteAddr reports the
// address from the header.
type proxyConn struct {
	net.Conn
	remote net.Addr

	drained atomic.Bool
	mu      sync.Mutex
	pending []byte
}

func newProxyConn(c net.Conn, br *bufio.Reader, h proxyHeader) *proxyConn {
	pc := &proxyConn{Conn: c, remote: c.RemoteAddr()}
	if h.hasAddr {
		pc.remote = net.TCPAddrFromAddrPort(h.src)
	}
	if n := br.Buffered(); n > 0 {
		b, _ := br.Peek(n)
		pc.pending = bytes.Clone(b)
	} else {
		pc.drained.Store(true)
	}
	return pc
}

func (c *proxyConn) Read(p []byte) (int, error) {
	if !c.drained.Load() {
		c.mu.Lock()
		if len(c.pending) > 0 {
			n := copy(p, c.pending)
			c.pending = c.pending[n:]
			if len(c.pending) == 0 {
				c.pending = nil
				c.drained.Store(true)
			}
			c.mu.Unlock()
			return n, nil
		}
		c.mu.Unlock()
	}
	return c.Conn.Read(p)
}

// RemoteAddr is the client address from the PROXY header, or the socket
// peer for LOCAL/UNKNOWN headers.
func (c *proxyConn) RemoteAddr() net.Addr { return c.remote }

// NetConn returns the underlying socket connection.
func (c *proxyConn) NetConn() net.Conn { return c.Conn }

// WriteBuffers writes v with a single vectored write when the socket
// supports it; see BuffersWriter.
func (c *proxyConn) WriteBuffers(v *net.Buffers) (int64, error) { return v.WriteTo(c.Conn) }
