package listener

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"testing"

	"github.com/gobwas/ws"
)

// streamConn is a net.Conn over an in-memory reader and writer.
type streamConn struct {
	net.Conn
	r io.Reader
	w io.Writer
}

func (c *streamConn) Read(p []byte) (int, error)  { return c.r.Read(p) }
func (c *streamConn) Write(p []byte) (int, error) { return c.w.Write(p) }

// loopReader replays data forever.
type loopReader struct {
	data []byte
	off  int
}

func (r *loopReader) Read(p []byte) (int, error) {
	n := copy(p, r.data[r.off:])
	r.off = (r.off + n) % len(r.data)
	return n, nil
}

func benchWSConn(r io.Reader, w io.Writer) *wsConn {
	c := &streamConn{r: r, w: w}
	return &wsConn{c: c, br: bufio.NewReaderSize(c, wsReadBufSize), maxFrame: DefaultWSMaxFrame}
}

func BenchmarkWSRead(b *testing.B) {
	for _, size := range []int{64, 1024, 16384} {
		b.Run(byteSize(size), func(b *testing.B) {
			var frames []byte
			for range 64 {
				frames = append(frames, frame(ws.OpBinary, true, bytes.Repeat([]byte{'a'}, size))...)
			}
			c := benchWSConn(&loopReader{data: frames}, io.Discard)
			buf := make([]byte, size)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := io.ReadFull(c, buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkWSWrite(b *testing.B) {
	for _, size := range []int{64, 1024, 16384} {
		b.Run(byteSize(size), func(b *testing.B) {
			c := benchWSConn(&loopReader{data: []byte{0}}, io.Discard)
			p := bytes.Repeat([]byte{'a'}, size)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.Write(p); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkParseProxyV1(b *testing.B) {
	hdr := []byte("PROXY TCP4 192.0.2.10 198.51.100.1 56324 1883\r\n")
	r := bytes.NewReader(hdr)
	br := bufio.NewReaderSize(r, proxyBufSize)
	b.ReportAllocs()
	for b.Loop() {
		r.Reset(hdr)
		br.Reset(r)
		if _, err := readProxyHeader(br); err != nil {
			b.Fatal(err)
		}
	}
}

func byteSize(n int) string { return fmt.Sprintf("%dB", n) }
