package listener

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

// encodeProxyV2 builds a v2 header (test helper). fam/proto byte and
// command are explicit so malformed headers can be built too.
func encodeProxyV2(cmd, famProto byte, addr []byte, tlvs []byte) []byte {
	b := append([]byte(nil), proxyV2Sig...)
	b = append(b, 0x20|cmd, famProto)
	b = binary.BigEndian.AppendUint16(b, uint16(len(addr)+len(tlvs)))
	b = append(b, addr...)
	return append(b, tlvs...)
}

func v2Addr(src, dst netip.AddrPort) []byte {
	var b []byte
	b = append(b, src.Addr().AsSlice()...)
	b = append(b, dst.Addr().AsSlice()...)
	b = binary.BigEndian.AppendUint16(b, src.Port())
	return binary.BigEndian.AppendUint16(b, dst.Port())
}

func encodeProxyV1(h proxyHeader) []byte {
	if !h.hasAddr {
		return []byte("PROXY UNKNOWN\r\n")
	}
	proto := "TCP4"
	if h.src.Addr().Is6() {
		proto = "TCP6"
	}
	return fmt.Appendf(nil, "PROXY %s %s %s %d %d\r\n", proto, h.src.Addr(), h.dst.Addr(), h.src.Port(), h.dst.Port())
}

var (
	src4 = netip.MustParseAddrPort("192.0.2.10:56324")
	dst4 = netip.MustParseAddrPort("198.51.100.1:1883")
	src6 = netip.MustParseAddrPort("[2001:db8::1]:40000")
	dst6 = netip.MustParseAddrPort("[2001:db8::2]:8883")
)

type proxyCase struct {
	name string
	in   []byte
	want proxyHeader // when err is empty
	err  string      // substring; "EOF" for truncated input
}

func proxyCases() []proxyCase {
	tlvs := []byte{0x04, 0x00, 0x03, 'a', 'b', 'c', 0x01, 0x00, 0x02, 'h', '2'} // NOOP + ALPN
	return []proxyCase{
		{"v1 tcp4", []byte("PROXY TCP4 192.0.2.10 198.51.100.1 56324 1883\r\n"), proxyHeader{version: 1, hasAddr: true, src: src4, dst: dst4}, ""},
		{"v1 tcp6", []byte("PROXY TCP6 2001:db8::1 2001:db8::2 40000 8883\r\n"), proxyHeader{version: 1, hasAddr: true, src: src6, dst: dst6}, ""},
		{"v1 tcp6 max length", []byte("PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n"),
			proxyHeader{version: 1, hasAddr: true,
				src: netip.MustParseAddrPort("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"),
				dst: netip.MustParseAddrPort("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535")}, ""},
		{"v1 unknown", []byte("PROXY UNKNOWN\r\n"), proxyHeader{version: 1}, ""},
		{"v1 unknown with addresses", []byte("PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n"), proxyHeader{version: 1}, ""},
		{"v1 port zero", []byte("PROXY TCP4 192.0.2.10 198.51.100.1 0 0\r\n"),
			proxyHeader{version: 1, hasAddr: true, src: netip.AddrPortFrom(src4.Addr(), 0), dst: netip.AddrPortFrom(dst4.Addr(), 0)}, ""},
		{"v1 lf only", []byte("PROXY TCP4 192.0.2.10 198.51.100.1 56324 1883\n"), proxyHeader{}, "CRLF"},
		{"v1 lowercase", []byte("proxy TCP4 192.0.2.10 198.51.100.1 56324 1883\r\n"), proxyHeader{}, "does not start"},
		{"v1 no space", []byte("PROXYTCP4 192.0.2.10 198.51.100.1 56324 1883\r\n"), proxyHeader{}, "bad signature"},
		{"v1 unknown proto", []byte("PROXY UDP4 192.0.2.10 198.51.100.1 56324 1883\r\n"), proxyHeader{}, "unknown protocol"},
		{"v1 v6 in tcp4", []byte("PROXY TCP4 2001:db8::1 198.51.100.1 56324 1883\r\n"), proxyHeader{}, "bad TCP4 address"},
		{"v1 v4 in tcp6", []byte("PROXY TCP6 192.0.2.10 2001:db8::2 56324 1883\r\n"), proxyHeader{}, "bad TCP6 address"},
		{"v1 zone", []byte("PROXY TCP6 fe80::1%eth0 2001:db8::2 56324 1883\r\n"), proxyHeader{}, "bad TCP6 address"},
		{"v1 port too big", []byte("PROXY TCP4 192.0.2.10 198.51.100.1 65536 1883\r\n"), proxyHeader{}, "bad port"},
		{"v1 port leading zero", []byte("PROXY TCP4 192.0.2.10 198.51.100.1 01883 1883\r\n"), proxyHeader{}, "bad port"},
		{"v1 port sign", []byte("PROXY TCP4 192.0.2.10 198.51.100.1 +1 1883\r\n"), proxyHeader{}, "bad port"},
		{"v1 double space", []byte("PROXY TCP4 192.0.2.10  198.51.100.1 56324 1883\r\n"), proxyHeader{}, "fields"},
		{"v1 missing field", []byte("PROXY TCP4 192.0.2.10 198.51.100.1 56324\r\n"), proxyHeader{}, "fields"},
		{"v1 trailing space", []byte("PROXY TCP4 192.0.2.10 198.51.100.1 56324 1883 \r\n"), proxyHeader{}, "fields"},
		{"v1 too long", []byte("PROXY UNKNOWN " + strings.Repeat("x", 100) + "\r\n"), proxyHeader{}, "longer than 107"},
		{"v1 truncated", []byte("PROXY TCP4 192.0.2.10"), proxyHeader{}, "EOF"},
		{"v2 tcp4", encodeProxyV2(1, 0x11, v2Addr(src4, dst4), nil), proxyHeader{version: 2, hasAddr: true, src: src4, dst: dst4}, ""},
		{"v2 tcp6", encodeProxyV2(1, 0x21, v2Addr(src6, dst6), nil), proxyHeader{version: 2, hasAddr: true, src: src6, dst: dst6}, ""},
		{"v2 tcp4 with tlvs", encodeProxyV2(1, 0x11, v2Addr(src4, dst4), tlvs), proxyHeader{version: 2, hasAddr: true, src: src4, dst: dst4}, ""},
		{"v2 tcp6 with large tlv", encodeProxyV2(1, 0x21, v2Addr(src6, dst6), append([]byte{0xEE, 0x03, 0x00}, make([]byte, 768)...)),
			proxyHeader{version: 2, hasAddr: true, src: src6, dst: dst6}, ""},
		{"v2 local", encodeProxyV2(0, 0x00, nil, nil), proxyHeader{version: 2, local: true}, ""},
		{"v2 local ignores family", encodeProxyV2(0, 0x11, v2Addr(src4, dst4), nil), proxyHeader{version: 2, local: true}, ""},
		{"v2 unspec", encodeProxyV2(1, 0x00, nil, nil), proxyHeader{version: 2}, ""},
		{"v2 unix", encodeProxyV2(1, 0x31, make([]byte, 216), nil), proxyHeader{version: 2}, ""},
		{"v2 bad version", append(append(append([]byte(nil), proxyV2Sig...), 0x11, 0x11), 0, 0), proxyHeader{}, "unsupported version"},
		{"v2 bad command", encodeProxyV2(2, 0x11, v2Addr(src4, dst4), nil), proxyHeader{}, "unknown command"},
		{"v2 bad family", encodeProxyV2(1, 0x41, nil, nil), proxyHeader{}, "unknown address family"},
		{"v2 dgram", encodeProxyV2(1, 0x12, v2Addr(src4, dst4), nil), proxyHeader{}, "not STREAM"},
		{"v2 bad transport", encodeProxyV2(1, 0x03, nil, nil), proxyHeader{}, "unknown transport"},
		{"v2 short address", encodeProxyV2(1, 0x21, v2Addr(src4, dst4), nil), proxyHeader{}, "too short"},
		{"v2 bad signature", append([]byte("\r\n\r\n\x00\r\nQUIX\n"), 0x21, 0x11, 0, 0), proxyHeader{}, "bad signature"},
		{"v2 truncated", encodeProxyV2(1, 0x11, v2Addr(src4, dst4), nil)[:20], proxyHeader{}, "EOF"},
		{"v2 truncated tlvs", encodeProxyV2(1, 0x11, v2Addr(src4, dst4), tlvs)[:30], proxyHeader{}, "EOF"},
		{"garbage", []byte("\x10\x0c\x00\x04MQTT"), proxyHeader{}, "does not start"},
		{"http", []byte("GET / HTTP/1.1\r\n"), proxyHeader{}, "does not start"},
		{"empty", nil, proxyHeader{}, "EOF"},
	}
}

func TestReadProxyHeader(t *testing.T) {
	payload := []byte("\x10\x10\x00\x04MQTT\x05\x02\x00\x3c\x00\x00\x03abc")
	for _, tc := range proxyCases() {
		for _, split := range []bool{false, true} {
			name := tc.name
			if split {
				name += "/byte-by-byte"
			}
			t.Run(name, func(t *testing.T) {
				var r io.Reader = bytes.NewReader(append(bytes.Clone(tc.in), payload...))
				if tc.err == "EOF" {
					r = bytes.NewReader(tc.in)
				}
				if split {
					r = iotest.OneByteReader(r)
				}
				br := bufio.NewReaderSize(r, proxyBufSize)
				h, err := readProxyHeader(br)
				if tc.err != "" {
					if err == nil {
						t.Fatalf("parsed %+v, want error %q", h, tc.err)
					}
					if !strings.Contains(err.Error(), tc.err) {
						t.Fatalf("error %q, want %q", err, tc.err)
					}
					if tc.err != "EOF" && !errors.Is(err, ErrInvalidProxyHeader) {
						t.Fatalf("error %v does not wrap ErrInvalidProxyHeader", err)
					}
					return
				}
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				if h != tc.want {
					t.Fatalf("got %+v, want %+v", h, tc.want)
				}
				rest, err := io.ReadAll(br)
				if err != nil || !bytes.Equal(rest, payload) {
					t.Fatalf("payload after header: %q, %v", rest, err)
				}
			})
		}
	}
}

func TestProxyConnReadsBufferedBytes(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	go func() {
		_, _ = a.Write([]byte("PROXY TCP4 192.0.2.10 198.51.100.1 56324 1883\r\nabc"))
		_, _ = a.Write([]byte("def"))
	}()
	br := bufio.NewReaderSize(b, proxyBufSize)
	h, err := readProxyHeader(br)
	if err != nil {
		t.Fatal(err)
	}
	pc := newProxyConn(b, br, h)
	if pc.RemoteAddr().String() != "192.0.2.10:56324" {
		t.Fatalf("RemoteAddr %v", pc.RemoteAddr())
	}
	buf := make([]byte, 6)
	if _, err := io.ReadFull(pc, buf); err != nil || string(buf) != "abcdef" {
		t.Fatalf("read %q, %v", buf, err)
	}
	if pc.NetConn() != b {
		t.Fatal("NetConn does not unwrap")
	}
}

// proxyListener starts a PROXY-protocol listener of the given protocol.
func proxyListener(t *testing.T, cfg Config) Listener {
	cfg.ProxyProtocol = true
	l, _ := startListener(t, cfg)
	return l
}

func TestProxyListenerV1AndV2(t *testing.T) {
	l := proxyListener(t, Config{})
	payload := "\x10\x0c\x00\x04MQTT\x05\x02\x00\x3c\x00"
	cases := []struct {
		name   string
		header []byte
		want   string // RemoteAddr; "" means the socket peer
	}{
		{"v1 tcp4", []byte("PROXY TCP4 192.0.2.10 198.51.100.1 56324 1883\r\n"), "192.0.2.10:56324"},
		{"v1 tcp6", []byte("PROXY TCP6 2001:db8::1 2001:db8::2 40000 8883\r\n"), "[2001:db8::1]:40000"},
		{"v1 unknown", []byte("PROXY UNKNOWN\r\n"), ""},
		{"v2 tcp4", encodeProxyV2(1, 0x11, v2Addr(src4, dst4), []byte{0x04, 0x00, 0x01, 0x00}), "192.0.2.10:56324"},
		{"v2 tcp6", encodeProxyV2(1, 0x21, v2Addr(src6, dst6), nil), "[2001:db8::1]:40000"},
		{"v2 local", encodeProxyV2(0, 0x00, nil, nil), ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ch := acceptAsync(l)
			c := dialTCP(t, l.Addr())
			// Header and the first packet in one write: nothing may be lost.
			if _, err := c.Write(append(bytes.Clone(tc.header), payload...)); err != nil {
				t.Fatal(err)
			}
			sc := waitAccept(t, ch)
			want := tc.want
			if want == "" {
				want = c.LocalAddr().String()
			}
			if got := sc.RemoteAddr().String(); got != want {
				t.Fatalf("RemoteAddr %s, want %s", got, want)
			}
			if sc.LocalAddr().String() != l.Addr().String() {
				t.Fatalf("LocalAddr %v", sc.LocalAddr())
			}
			buf := make([]byte, len(payload))
			_ = sc.SetReadDeadline(time.Now().Add(testTimeout))
			if _, err := io.ReadFull(sc, buf); err != nil || string(buf) != payload {
				t.Fatalf("payload %q, %v", buf, err)
			}
			roundTrip(t, sc, c, "reply")
			roundTrip(t, c, sc, "more")
			var v net.Buffers = [][]byte{[]byte("x"), []byte("yz")}
			if n, err := WriteBuffers(sc, &v); n != 3 || err != nil {
				t.Fatalf("WriteBuffers %d %v", n, err)
			}
			buf = make([]byte, 3)
			if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "xyz" {
				t.Fatalf("read %q %v", buf, err)
			}
		})
	}
}

func TestProxyHeaderSplitAcrossWrites(t *testing.T) {
	l := proxyListener(t, Config{})
	hdr := encodeProxyV2(1, 0x21, v2Addr(src6, dst6), []byte{0x04, 0x00, 0x02, 0, 0})
	for _, h := range [][]byte{[]byte("PROXY TCP4 192.0.2.10 198.51.100.1 56324 1883\r\n"), hdr} {
		ch := acceptAsync(l)
		c := dialTCP(t, l.Addr())
		data := append(bytes.Clone(h), "payload"...)
		for _, cut := range [][2]int{{0, 3}, {3, 13}, {13, 17}, {17, len(h) + 2}, {len(h) + 2, len(data)}} {
			if _, err := c.Write(data[cut[0]:cut[1]]); err != nil {
				t.Fatal(err)
			}
			time.Sleep(2 * time.Millisecond) // let each piece travel as its own segment
		}
		sc := waitAccept(t, ch)
		buf := make([]byte, 7)
		_ = sc.SetReadDeadline(time.Now().Add(testTimeout))
		if _, err := io.ReadFull(sc, buf); err != nil || string(buf) != "payload" {
			t.Fatalf("payload %q, %v", buf, err)
		}
	}
}

func TestProxyRejectsBadHeaders(t *testing.T) {
	l, logs := startListener(t, Config{ProxyProtocol: true})
	for _, in := range [][]byte{
		[]byte("\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00"),                     // MQTT without header
		[]byte("xPROXY TCP4 192.0.2.10 198.51.100.1 56324 1883\r\n"),               // garbage before the header
		[]byte("PROXY TCP4 192.0.2.10 198.51.100.1 56324 99999\r\n"),               // bad port
		append([]byte("junk"), encodeProxyV2(1, 0x11, v2Addr(src4, dst4), nil)...), // garbage before v2
	} {
		ch := acceptAsync(l)
		c := dialTCP(t, l.Addr())
		if _, err := c.Write(in); err != nil {
			t.Fatal(err)
		}
		expectClosed(t, c)
		expectNoAccept(t, ch, 20*time.Millisecond)
		// A good connection is still accepted (by the pending Accept).
		good := dialTCP(t, l.Addr())
		if _, err := good.Write([]byte("PROXY UNKNOWN\r\n")); err != nil {
			t.Fatal(err)
		}
		waitAccept(t, ch)
	}
	if !logs.contains("level=DEBUG") || !logs.contains("PROXY") {
		t.Fatalf("refusal not logged at debug level: %v", logs.lines)
	}
}

// TestProxySlowloris: a client that never finishes its header is dropped
// after ProxyHeaderTimeout and does not delay other clients.
func TestProxySlowloris(t *testing.T) {
	const timeout = time.Second
	l, _ := startListener(t, Config{ProxyProtocol: true, ProxyHeaderTimeout: timeout})
	dialed := time.Now()
	var slow []*net.TCPConn
	for range 3 {
		c := dialTCP(t, l.Addr())
		if _, err := c.Write([]byte("PROXY TCP4 ")); err != nil {
			t.Fatal(err)
		}
		slow = append(slow, c)
	}
	silent := dialTCP(t, l.Addr())
	start := time.Now()
	ch := acceptAsync(l)
	good := dialTCP(t, l.Addr())
	if _, err := good.Write([]byte("PROXY TCP4 192.0.2.10 198.51.100.1 56324 1883\r\n")); err != nil {
		t.Fatal(err)
	}
	sc := waitAccept(t, ch)
	if d := time.Since(start); d >= timeout {
		t.Fatalf("good client accepted after %v, blocked by slow clients", d)
	}
	if sc.RemoteAddr().String() != "192.0.2.10:56324" {
		t.Fatalf("accepted the wrong connection: %v", sc.RemoteAddr())
	}
	for _, c := range append(slow, silent) {
		expectClosed(t, c)
	}
	if d := time.Since(dialed); d < timeout {
		t.Fatalf("slow clients closed after %v, before the %v timeout", d, timeout)
	}
}
