package listener

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

type wsClient struct {
	conn net.Conn
	r    io.Reader
	hs   ws.Handshake
}

func wsDial(t *testing.T, l Listener, path string, protocols []string, hdr http.Header, tlsCfg *tls.Config) (*wsClient, error) {
	t.Helper()
	scheme := "ws"
	if tlsCfg != nil {
		scheme = "wss"
	}
	d := ws.Dialer{Protocols: protocols, TLSConfig: tlsCfg, Timeout: testTimeout}
	if hdr != nil {
		d.Header = ws.HandshakeHeaderHTTP(hdr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	conn, br, hs, err := d.Dial(ctx, fmt.Sprintf("%s://%s%s", scheme, l.Addr(), path))
	if err != nil {
		if conn != nil {
			_ = conn.Close()
		}
		return nil, err
	}
	t.Cleanup(func() { _ = conn.Close() })
	return &wsClient{conn: conn, r: readerOf(conn, br), hs: hs}, nil
}

func mustWSDial(t *testing.T, l Listener) *wsClient {
	t.Helper()
	c, err := wsDial(t, l, "/mqtt", []string{"mqtt"}, nil, nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	return c
}

// frame builds a client frame; masked unless told otherwise.
func frame(op ws.OpCode, fin bool, payload []byte) []byte {
	return ws.MustCompileFrame(ws.MaskFrame(ws.NewFrame(op, fin, payload)))
}

func (c *wsClient) send(t *testing.T, frames ...[]byte) {
	t.Helper()
	if _, err := c.conn.Write(bytes.Join(frames, nil)); err != nil {
		t.Fatalf("client write: %v", err)
	}
}

func (c *wsClient) readFrame(t *testing.T) ws.Frame {
	t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(testTimeout))
	h, err := ws.ReadHeader(c.r)
	if err != nil {
		t.Fatalf("client read frame header: %v", err)
	}
	if h.Length > 1<<24 {
		t.Fatalf("client read frame: length %d", h.Length)
	}
	f := ws.Frame{Header: h, Payload: make([]byte, h.Length)}
	if _, err := io.ReadFull(c.r, f.Payload); err != nil {
		t.Fatalf("client read frame payload: %v", err)
	}
	if f.Header.Masked {
		t.Fatal("server frame is masked")
	}
	return f
}

func (c *wsClient) expectClose(t *testing.T, code int) {
	t.Helper()
	f := c.readFrame(t)
	if f.Header.OpCode != ws.OpClose {
		t.Fatalf("got opcode %v, want close", f.Header.OpCode)
	}
	if len(f.Payload) < 2 || int(binary.BigEndian.Uint16(f.Payload)) != code {
		t.Fatalf("close payload %q, want status %d", f.Payload, code)
	}
}

func wsListener(t *testing.T, mod func(*Config)) (Listener, *logCapture) {
	cfg := Config{Protocol: ProtocolWS}
	if mod != nil {
		mod(&cfg)
	}
	return startListener(t, cfg)
}

// wsPair dials and accepts one WebSocket connection.
func wsPair(t *testing.T, l Listener) (*wsClient, net.Conn) {
	t.Helper()
	ch := acceptAsync(l)
	c := mustWSDial(t, l)
	return c, waitAccept(t, ch)
}

// readStream reads n stream bytes from the server side.
func readStream(t *testing.T, sc net.Conn, n int) []byte {
	t.Helper()
	_ = sc.SetReadDeadline(time.Now().Add(testTimeout))
	buf := make([]byte, n)
	if _, err := io.ReadFull(sc, buf); err != nil {
		t.Fatalf("server read: %v", err)
	}
	return buf
}

// expectRefusedThenGood asserts nothing was delivered to the pending
// Accept ch, then completes it with a good client.
func expectRefusedThenGood(t *testing.T, l Listener, ch <-chan acceptResult) {
	t.Helper()
	expectNoAccept(t, ch, 20*time.Millisecond)
	mustWSDial(t, l)
	waitAccept(t, ch)
}

func TestWSSubprotocolNegotiation(t *testing.T) {
	l, _ := wsListener(t, nil)
	for _, tc := range []struct {
		offer []string
		want  string // "" = refused with 400
	}{
		{[]string{"mqtt"}, "mqtt"},
		{[]string{"mqttv3.1"}, "mqttv3.1"},
		{[]string{"chat", "mqtt"}, "mqtt"},
		{[]string{"mqttv3.1", "mqtt"}, "mqtt"}, // [MQTT-6.0.0-4]
		{[]string{"chat", "mqttv3.1"}, "mqttv3.1"},
		{[]string{"MQTT"}, ""},
		{[]string{"chat"}, ""},
		{nil, ""},
	} {
		t.Run(strings.Join(tc.offer, ","), func(t *testing.T) {
			ch := acceptAsync(l)
			c, err := wsDial(t, l, "/mqtt", tc.offer, nil, nil)
			if tc.want == "" {
				var se ws.StatusError
				if !errors.As(err, &se) || int(se) != 400 {
					t.Fatalf("dial error %v, want status 400", err)
				}
				expectRefusedThenGood(t, l, ch)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.hs.Protocol != tc.want {
				t.Fatalf("negotiated %q, want %q", c.hs.Protocol, tc.want)
			}
			sc := waitAccept(t, ch)
			if p := sc.(interface{ Subprotocol() string }).Subprotocol(); p != tc.want {
				t.Fatalf("server conn subprotocol %q", p)
			}
		})
	}
}

func TestWSPaths(t *testing.T) {
	l, _ := wsListener(t, func(c *Config) { c.WSPath = "/broker/mqtt" })
	for _, tc := range []struct {
		path   string
		status int // 0 = upgraded
	}{
		{"/broker/mqtt", 0},
		{"/broker/mqtt?client=1", 0},
		{"/mqtt", 404},
		{"/broker/mqtt/", 404},
		{"/", 404},
	} {
		t.Run(tc.path, func(t *testing.T) {
			ch := acceptAsync(l)
			_, err := wsDial(t, l, tc.path, []string{"mqtt"}, http.Header{"Cookie": {strings.Repeat("c", 3000)}}, nil)
			if tc.status == 0 {
				if err != nil {
					t.Fatal(err)
				}
				waitAccept(t, ch)
				return
			}
			var se ws.StatusError
			if !errors.As(err, &se) || int(se) != tc.status {
				t.Fatalf("dial error %v, want status %d", err, tc.status)
			}
			ch2 := make(chan acceptResult, 1)
			go func() { ch2 <- <-ch }()
			_, err = wsDial(t, l, "/broker/mqtt", []string{"mqtt"}, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			waitAccept(t, ch2)
		})
	}
}

func TestWSRejectsNonUpgradeRequests(t *testing.T) {
	l, _ := wsListener(t, nil)
	for _, req := range []string{
		"GET /mqtt HTTP/1.1\r\nHost: x\r\n\r\n",
		"POST /mqtt HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
		"GET /mqtt HTTP/1.0\r\n\r\n",
		"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00",
	} {
		ch := acceptAsync(l)
		c := dialTCP(t, l.Addr())
		if _, err := c.Write([]byte(req)); err != nil {
			t.Fatal(err)
		}
		expectClosed(t, c)
		expectRefusedThenGood(t, l, ch)
	}
	// Oversized request headers.
	ch := acceptAsync(l)
	c := dialTCP(t, l.Addr())
	go func() {
		_, _ = c.Write([]byte("GET /mqtt HTTP/1.1\r\nHost: x\r\n"))
		for range 40 {
			if _, err := c.Write([]byte("X-Filler: " + strings.Repeat("f", 1000) + "\r\n")); err != nil {
				return
			}
		}
	}()
	expectClosed(t, c)
	expectRefusedThenGood(t, l, ch)
}

func TestWSHandshakeTimeout(t *testing.T) {
	const timeout = time.Second
	l, _ := wsListener(t, func(c *Config) { c.HandshakeTimeout = timeout })
	dialed := time.Now()
	slow := dialTCP(t, l.Addr())
	if _, err := slow.Write([]byte("GET /mqtt HTTP/1.1\r\nHost: x\r\n")); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, sc := wsPair(t, l)
	if d := time.Since(start); d >= timeout {
		t.Fatalf("good client waited %v", d)
	}
	_ = sc
	expectClosed(t, slow)
	if d := time.Since(dialed); d < timeout {
		t.Fatalf("slow upgrade closed after %v", d)
	}
}

func TestWSStream(t *testing.T) {
	l, _ := wsListener(t, nil)
	c, sc := wsPair(t, l)
	connect := []byte("\x10\x10\x00\x04MQTT\x05\x02\x00\x3c\x00\x00\x03abc")
	ping := []byte{0xC0, 0x00}

	// One packet split over three frames (separate messages).
	c.send(t, frame(ws.OpBinary, true, connect[:1]), frame(ws.OpBinary, true, connect[1:5]), frame(ws.OpBinary, true, connect[5:]))
	if got := readStream(t, sc, len(connect)); !bytes.Equal(got, connect) {
		t.Fatalf("split packet: %q", got)
	}
	// Several packets in one frame.
	multi := bytes.Join([][]byte{ping, connect, ping}, nil)
	c.send(t, frame(ws.OpBinary, true, multi))
	if got := readStream(t, sc, len(multi)); !bytes.Equal(got, multi) {
		t.Fatalf("multi packet frame: %q", got)
	}
	// A fragmented message with an empty fragment and a ping in between.
	c.send(t,
		frame(ws.OpBinary, false, connect[:3]),
		frame(ws.OpContinuation, false, nil),
		frame(ws.OpPing, true, []byte("mid")),
		frame(ws.OpContinuation, false, connect[3:10]),
		frame(ws.OpContinuation, true, connect[10:]),
		frame(ws.OpBinary, true, nil),
		frame(ws.OpBinary, true, ping))
	if got := readStream(t, sc, len(connect)+len(ping)); !bytes.Equal(got, append(bytes.Clone(connect), ping...)) {
		t.Fatalf("fragmented message: %q", got)
	}
	if f := c.readFrame(t); f.Header.OpCode != ws.OpPong || string(f.Payload) != "mid" {
		t.Fatalf("pong %v %q", f.Header.OpCode, f.Payload)
	}
	// Small reads across frame boundaries.
	c.send(t, frame(ws.OpBinary, true, []byte("abc")), frame(ws.OpBinary, true, []byte("defg")))
	var got []byte
	_ = sc.SetReadDeadline(time.Now().Add(testTimeout))
	for len(got) < 7 {
		b := make([]byte, 2)
		n, err := sc.Read(b)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, b[:n]...)
	}
	if string(got) != "abcdefg" {
		t.Fatalf("small reads %q", got)
	}
	// Large frame (64-bit length) delivered intact.
	big := make([]byte, 200_000)
	for i := range big {
		big[i] = byte(i * 7)
	}
	c.send(t, frame(ws.OpBinary, true, big))
	if got := readStream(t, sc, len(big)); !bytes.Equal(got, big) {
		t.Fatal("large frame corrupted")
	}
}

func TestWSServerWrites(t *testing.T) {
	l, _ := wsListener(t, nil)
	c, sc := wsPair(t, l)
	for _, size := range []int{1, 125, 126, 65535, 65536, 100_000} {
		p := bytes.Repeat([]byte{byte(size)}, size)
		if n, err := sc.Write(p); err != nil || n != size {
			t.Fatalf("Write(%d) = %d, %v", size, n, err)
		}
		f := c.readFrame(t)
		if f.Header.OpCode != ws.OpBinary || !f.Header.Fin || !bytes.Equal(f.Payload, p) {
			t.Fatalf("size %d: frame %+v, %d bytes", size, f.Header, len(f.Payload))
		}
	}
	if n, err := sc.Write(nil); n != 0 || err != nil {
		t.Fatalf("empty write: %d %v", n, err)
	}
	v := net.Buffers{[]byte("\x30\x05\x00\x01a"), []byte("bc"), nil, []byte("\xd0\x00")}
	if n, err := WriteBuffers(sc, &v); n != 9 || err != nil || len(v) != 0 {
		t.Fatalf("WriteBuffers %d %v %d", n, err, len(v))
	}
	if f := c.readFrame(t); string(f.Payload) != "\x30\x05\x00\x01abc\xd0\x00" {
		t.Fatalf("batch frame %q", f.Payload)
	}
	// Server-initiated close.
	if err := sc.Close(); err != nil {
		t.Fatal(err)
	}
	c.expectClose(t, 1000)
}

func TestWSPingPongAndClose(t *testing.T) {
	l, _ := wsListener(t, nil)
	c, sc := wsPair(t, l)
	readErr := make(chan error, 1)
	go func() {
		_, err := sc.Read(make([]byte, 10))
		readErr <- err
	}()
	c.send(t, frame(ws.OpPing, true, []byte("are you there")))
	if f := c.readFrame(t); f.Header.OpCode != ws.OpPong || string(f.Payload) != "are you there" {
		t.Fatalf("got %v %q", f.Header.OpCode, f.Payload)
	}
	c.send(t, frame(ws.OpPong, true, []byte("unsolicited")), frame(ws.OpPing, true, nil))
	if f := c.readFrame(t); f.Header.OpCode != ws.OpPong || len(f.Payload) != 0 {
		t.Fatalf("got %v %q", f.Header.OpCode, f.Payload)
	}
	c.send(t, frame(ws.OpClose, true, ws.NewCloseFrameBody(ws.StatusGoingAway, "bye")))
	select {
	case err := <-readErr:
		if err != io.EOF {
			t.Fatalf("Read after close frame: %v, want io.EOF", err)
		}
	case <-time.After(testTimeout):
		t.Fatal("Read did not return")
	}
	c.expectClose(t, 1001)
	if _, err := sc.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("second Read: %v", err)
	}
	if _, err := sc.Write([]byte("late")); err == nil {
		t.Fatal("Write after close handshake succeeded")
	}

	// Close frame without status: empty close reply.
	c2, sc2 := wsPair(t, l)
	c2.send(t, frame(ws.OpClose, true, nil))
	if _, err := sc2.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("Read: %v", err)
	}
	if f := c2.readFrame(t); f.Header.OpCode != ws.OpClose || len(f.Payload) != 0 {
		t.Fatalf("reply %v %q", f.Header.OpCode, f.Payload)
	}
}

func TestWSProtocolViolations(t *testing.T) {
	l, _ := wsListener(t, func(c *Config) { c.WSMaxFrame = 1024 })
	unmasked := ws.MustCompileFrame(ws.NewBinaryFrame([]byte("abc")))
	rsv := frame(ws.OpBinary, true, []byte("abc"))
	rsv[0] |= 0x40
	for _, tc := range []struct {
		name   string
		frames [][]byte
		code   int
	}{
		{"text frame", [][]byte{frame(ws.OpText, true, []byte("hello"))}, 1003},
		{"unmasked frame", [][]byte{unmasked}, 1002},
		{"oversized frame", [][]byte{frame(ws.OpBinary, true, make([]byte, 1025))}, 1009},
		{"oversized fragment", [][]byte{frame(ws.OpBinary, false, make([]byte, 10)), frame(ws.OpContinuation, true, make([]byte, 2000))}, 1009},
		{"reserved bits", [][]byte{rsv}, 1002},
		{"reserved opcode", [][]byte{frame(ws.OpCode(0x3), true, nil)}, 1002},
		{"reserved control opcode", [][]byte{frame(ws.OpCode(0xB), true, nil)}, 1002},
		{"lone continuation", [][]byte{frame(ws.OpContinuation, true, []byte("x"))}, 1002},
		{"binary inside fragmented message", [][]byte{frame(ws.OpBinary, false, []byte("x")), frame(ws.OpBinary, true, []byte("y"))}, 1002},
		{"fragmented ping", [][]byte{frame(ws.OpPing, false, nil)}, 1002},
		{"long ping", [][]byte{frame(ws.OpPing, true, make([]byte, 126))}, 1002},
		{"1-byte close", [][]byte{frame(ws.OpClose, true, []byte{3})}, 1002},
		{"close status 1005", [][]byte{frame(ws.OpClose, true, []byte{0x03, 0xED})}, 1002},
		{"close reason not utf-8", [][]byte{frame(ws.OpClose, true, []byte{0x03, 0xE8, 0xff})}, 1007},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, sc := wsPair(t, l)
			c.send(t, tc.frames...)
			_ = sc.SetReadDeadline(time.Now().Add(testTimeout))
			var err error
			for err == nil {
				_, err = sc.Read(make([]byte, 4096))
			}
			var ce *WSCloseError
			if !errors.As(err, &ce) || ce.Code != tc.code {
				t.Fatalf("Read error %v, want close %d", err, tc.code)
			}
			c.expectClose(t, tc.code)
			if _, err2 := sc.Read(make([]byte, 1)); !errors.As(err2, &ce) {
				t.Fatalf("error not sticky: %v", err2)
			}
		})
	}
	// A frame of exactly the limit is fine.
	c, sc := wsPair(t, l)
	c.send(t, frame(ws.OpBinary, true, make([]byte, 1024)))
	readStream(t, sc, 1024)
}

func TestWSReadDeadline(t *testing.T) {
	l, _ := wsListener(t, nil)
	c, sc := wsPair(t, l)
	// Half a frame header, then a deadline expires: the frame must still
	// be read correctly afterwards.
	f := frame(ws.OpBinary, true, bytes.Repeat([]byte("z"), 300))
	c.send(t, f[:3])
	_ = sc.SetReadDeadline(time.Now().Add(30 * time.Millisecond))
	_, err := sc.Read(make([]byte, 10))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("Read: %v, want timeout", err)
	}
	c.send(t, f[3:])
	if got := readStream(t, sc, 300); !bytes.Equal(got, bytes.Repeat([]byte("z"), 300)) {
		t.Fatal("frame corrupted after timeout")
	}
	if sc.LocalAddr().String() != l.Addr().String() {
		t.Fatalf("LocalAddr %v", sc.LocalAddr())
	}
	if err := sc.SetDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}
	if err := sc.SetWriteDeadline(time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
}

// TestWSConcurrentWritesAndPings checks that pong replies from the read
// side never interleave with data frames written concurrently.
func TestWSConcurrentWritesAndPings(t *testing.T) {
	l, _ := wsListener(t, nil)
	c, sc := wsPair(t, l)
	const writers, perWriter, pings = 4, 50, 100

	var wg sync.WaitGroup
	wg.Go(func() { // broker reader: handles control frames
		buf := make([]byte, 64)
		for {
			if _, err := sc.Read(buf); err != nil {
				return
			}
		}
	})
	for w := range writers {
		wg.Go(func() {
			for i := range perWriter {
				p := fmt.Appendf(nil, "w%d-%03d|%s", w, i, strings.Repeat("x", 100*w+i))
				if _, err := sc.Write(p); err != nil {
					t.Errorf("Write: %v", err)
					return
				}
			}
		})
	}
	wg.Go(func() {
		for i := range pings {
			if _, err := c.conn.Write(frame(ws.OpPing, true, fmt.Appendf(nil, "p%d", i))); err != nil {
				t.Errorf("ping: %v", err)
				return
			}
		}
	})

	next := make([]int, writers)
	pongs := 0
	for pongs < pings || sumInts(next) < writers*perWriter {
		f := c.readFrame(t)
		switch f.Header.OpCode {
		case ws.OpPong:
			if want := fmt.Sprintf("p%d", pongs); string(f.Payload) != want {
				t.Fatalf("pong %q, want %q", f.Payload, want)
			}
			pongs++
		case ws.OpBinary:
			var w, i int
			if _, err := fmt.Sscanf(string(f.Payload), "w%d-%03d|", &w, &i); err != nil {
				t.Fatalf("bad frame %q", f.Payload)
			}
			want := fmt.Sprintf("w%d-%03d|%s", w, i, strings.Repeat("x", 100*w+i))
			if string(f.Payload) != want || i != next[w] {
				t.Fatalf("frame %q out of order or corrupted", f.Payload)
			}
			next[w]++
		default:
			t.Fatalf("unexpected opcode %v", f.Header.OpCode)
		}
	}
	_ = sc.Close()
	wg.Wait()
}

func sumInts(v []int) (s int) {
	for _, x := range v {
		s += x
	}
	return s
}

func TestClientFromXFF(t *testing.T) {
	nets := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")}
	peer := netip.MustParseAddr("127.0.0.1")
	for _, tc := range []struct {
		peer netip.Addr
		xff  string
		want string // "" = not used
	}{
		{peer, "203.0.113.7", "203.0.113.7:0"},
		{peer, "203.0.113.7, 10.0.0.1", "203.0.113.7:0"},
		{peer, "1.1.1.1, 203.0.113.7, 10.0.0.2", "203.0.113.7:0"}, // left part is client-supplied
		{peer, "10.0.0.3, 10.0.0.2", "10.0.0.3:0"},                // all trusted: left-most
		{peer, " 203.0.113.7:4711 ", "203.0.113.7:4711"},
		{peer, "[2001:db8::7]:80", "[2001:db8::7]:80"},
		{peer, "[2001:db8::7]", "[2001:db8::7]:0"},
		{peer, "2001:db8::7,fd00::1", "[2001:db8::7]:0"},
		{peer, "::ffff:203.0.113.9", "203.0.113.9:0"},
		{peer, "garbage, 203.0.113.7", "203.0.113.7:0"}, // never reached
		{peer, "203.0.113.7, garbage", ""},
		{peer, "203.0.113.7,", ""},
		{peer, "unknown", ""},
		{peer, "", ""},
		{netip.MustParseAddr("192.0.2.1"), "203.0.113.7", ""}, // untrusted peer
		{netip.Addr{}, "203.0.113.7", ""},
	} {
		got, ok := clientFromXFF(tc.peer, tc.xff, nets)
		switch {
		case tc.want == "" && ok:
			t.Errorf("%v %q: got %v, want header ignored", tc.peer, tc.xff, got)
		case tc.want != "" && (!ok || got.String() != tc.want):
			t.Errorf("%v %q: got %v %v, want %s", tc.peer, tc.xff, got, ok, tc.want)
		}
	}
	if _, ok := clientFromXFF(peer, "203.0.113.7", nil); ok {
		t.Error("no trusted proxies but header used")
	}
}

func TestWSXForwardedFor(t *testing.T) {
	trustedLocal := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("10.0.0.0/8")}
	for _, tc := range []struct {
		name    string
		trusted []netip.Prefix
		proxy   string // PROXY v1 header to send first, if any
		xff     []string
		want    string // "" = socket peer
		header  string // header name; default X-Forwarded-For
	}{
		{"trusted peer", trustedLocal, "", []string{"203.0.113.7, 10.1.1.1"}, "203.0.113.7:0", ""},
		{"two headers", trustedLocal, "", []string{"198.51.100.3", "203.0.113.7, 10.1.1.1"}, "203.0.113.7:0", ""},
		{"untrusted peer", []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, "", []string{"203.0.113.7"}, "", ""},
		{"no trusted proxies", nil, "", []string{"203.0.113.7"}, "", ""},
		{"malformed", trustedLocal, "", []string{"203.0.113.7, bogus"}, "", ""},
		{"proxy source trusted", []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")},
			"PROXY TCP4 10.9.9.9 10.0.0.1 5000 8083\r\n", []string{"203.0.113.7"}, "203.0.113.7:0", ""},
		{"proxy source untrusted", trustedLocal,
			"PROXY TCP4 198.51.100.1 10.0.0.1 5000 8083\r\n", []string{"203.0.113.7"}, "198.51.100.1:5000", ""},
		{"proxy without xff", trustedLocal, "PROXY TCP4 198.51.100.1 10.0.0.1 5000 8083\r\n", nil, "198.51.100.1:5000", ""},
		// Header names are case-insensitive (RFC 9110 section 5.1).
		{"lower-case header", trustedLocal, "", []string{"203.0.113.7, 10.1.1.1"}, "203.0.113.7:0", "x-forwarded-for"},
		{"upper-case header", trustedLocal, "", []string{"203.0.113.7"}, "203.0.113.7:0", "X-FORWARDED-FOR"},
		{"mixed-case headers combined", trustedLocal, "", []string{"198.51.100.3", "203.0.113.7"}, "203.0.113.7:0", "x-Forwarded-FOR"},
		// A spoofed header is ignored whatever its spelling when the peer
		// is not a trusted proxy, directly or through the PROXY header.
		{"spoof from untrusted peer", []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, "", []string{"10.1.1.1"}, "", "x-forwarded-for"},
		{"spoof behind proxy", trustedLocal,
			"PROXY TCP4 198.51.100.1 10.0.0.1 5000 8083\r\n", []string{"203.0.113.7"}, "198.51.100.1:5000", "X-FORWARDED-FOR"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, _ := wsListener(t, func(c *Config) {
				c.TrustedProxies = tc.trusted
				c.ProxyProtocol = tc.proxy != ""
			})
			ch := acceptAsync(l)
			raw := dialTCP(t, l.Addr())
			if tc.proxy != "" {
				if _, err := raw.Write([]byte(tc.proxy)); err != nil {
					t.Fatal(err)
				}
			}
			req := "GET /mqtt HTTP/1.1\r\nHost: broker\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
				"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n"
			header := tc.header
			if header == "" {
				header = "X-Forwarded-For"
			}
			for _, x := range tc.xff {
				req += header + ": " + x + "\r\n"
			}
			if _, err := raw.Write([]byte(req + "\r\n")); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(bufio.NewReader(raw), nil)
			if err != nil || resp.StatusCode != 101 {
				t.Fatalf("upgrade response %v %v", resp, err)
			}
			sc := waitAccept(t, ch)
			want := tc.want
			if want == "" {
				want = raw.LocalAddr().String()
			}
			if got := sc.RemoteAddr().String(); got != want {
				t.Fatalf("RemoteAddr %s, want %s", got, want)
			}
		})
	}
}

func TestWSS(t *testing.T) {
	e := newTLSEnv(t)
	f := writeTLSFiles(t, e.server, e.ca)
	l, _ := wsListener(t, func(c *Config) {
		c.TLS = &TLSConfig{CertFile: f.cert, KeyFile: f.key, ClientCAFile: f.ca, RequireClientCert: true}
	})
	ch := acceptAsync(l)
	c, err := wsDial(t, l, "/mqtt", []string{"mqtt"}, nil, e.clientConfig(e.client))
	if err != nil {
		t.Fatal(err)
	}
	sc := waitAccept(t, ch)
	if _, ok := sc.(interface{ ConnectionState() tls.ConnectionState }); !ok {
		t.Fatalf("%T does not expose ConnectionState", sc)
	}
	st, ok := TLSState(sc)
	if !ok || !st.HandshakeComplete {
		t.Fatal("no TLS state")
	}
	if id, ok := PeerIdentity(sc, "san"); !ok || id != "dev1.example.com" {
		t.Fatalf("identity %q %v", id, ok)
	}
	c.send(t, frame(ws.OpBinary, true, []byte("\xc0\x00")))
	if got := readStream(t, sc, 2); string(got) != "\xc0\x00" {
		t.Fatalf("read %q", got)
	}
	if _, err := sc.Write([]byte("\xd0\x00")); err != nil {
		t.Fatal(err)
	}
	if fr := c.readFrame(t); string(fr.Payload) != "\xd0\x00" {
		t.Fatalf("frame %q", fr.Payload)
	}
	big := bytes.Repeat([]byte("B"), 50_000)
	if _, err := sc.Write(big); err != nil {
		t.Fatal(err)
	}
	if fr := c.readFrame(t); !bytes.Equal(fr.Payload, big) {
		t.Fatal("big frame over TLS corrupted")
	}
	// Without a client certificate the TLS handshake fails before any HTTP.
	ch2 := acceptAsync(l)
	if _, err := wsDial(t, l, "/mqtt", []string{"mqtt"}, nil, e.clientConfig(nil)); err == nil {
		t.Fatal("wss without client cert accepted")
	}
	expectNoAccept(t, ch2, 20*time.Millisecond)
	if _, err := wsDial(t, l, "/mqtt", []string{"mqtt"}, nil, e.clientConfig(e.client)); err != nil {
		t.Fatal(err)
	}
	waitAccept(t, ch2)
}

func TestWSSubprotocolAcrossHeaders(t *testing.T) {
	l, _ := wsListener(t, nil)
	ch := acceptAsync(l)
	raw := dialTCP(t, l.Addr())
	req := "GET /mqtt HTTP/1.1\r\nHost: broker\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" +
		"Sec-WebSocket-Protocol: mqttv3.1\r\nSec-WebSocket-Protocol: chat, mqtt\r\n\r\n"
	if _, err := raw.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(raw)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("upgrade response %v %v", resp, err)
	}
	if got := resp.Header.Values("Sec-WebSocket-Protocol"); len(got) != 1 || got[0] != "mqtt" {
		t.Fatalf("selected %q", got)
	}
	if got := resp.Header.Get("Sec-WebSocket-Accept"); got != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" {
		t.Fatalf("accept key %q", got)
	}
	sc := waitAccept(t, ch)
	if p := sc.(interface{ Subprotocol() string }).Subprotocol(); p != "mqtt" {
		t.Fatalf("subprotocol %q", p)
	}
	// A frame written by the client right after the handshake is read.
	if _, err := raw.Write(frame(ws.OpBinary, true, []byte("\xc0\x00"))); err != nil {
		t.Fatal(err)
	}
	if got := readStream(t, sc, 2); string(got) != "\xc0\x00" {
		t.Fatalf("got %q", got)
	}
}

// TestWSPipelinedFrames: bytes that arrive in the same segment as the end
// of the upgrade request are not lost.
func TestWSPipelinedFrames(t *testing.T) {
	l, _ := wsListener(t, nil)
	ch := acceptAsync(l)
	raw := dialTCP(t, l.Addr())
	req := "GET /mqtt HTTP/1.1\r\nHost: broker\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n"
	payload := []byte("\x10\x10\x00\x04MQTT\x05\x02\x00\x3c\x00\x00\x03abc")
	if _, err := raw.Write(append([]byte(req), frame(ws.OpBinary, true, payload)...)); err != nil {
		t.Fatal(err)
	}
	sc := waitAccept(t, ch)
	if got := readStream(t, sc, len(payload)); !bytes.Equal(got, payload) {
		t.Fatalf("got %q", got)
	}
}
