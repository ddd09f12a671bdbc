package testutil

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/isobar-mq/isobar/internal/testutil/wire"
)

// DefaultTimeout is the per-operation deadline of a RawConn unless changed
// with SetTimeout or SetDeadline.
const DefaultTimeout = 2 * time.Second

// drainGrace is how long a failing Expect keeps reading to show what else
// the peer sent.
const drainGrace = 200 * time.Millisecond

// RawConn is a TCP connection to an MQTT server for tests that write and
// expect exact bytes. Every method that can fail calls t.Fatal, so RawConn
// methods must be called from the test goroutine (the usual testing.TB rule).
// The connection is closed automatically when the test ends.
type RawConn struct {
	t        testing.TB
	conn     net.Conn
	timeout  time.Duration
	deadline time.Time // absolute deadline overriding timeout when non-zero
}

// DialRaw connects to addr ("127.0.0.1:port") with DefaultTimeout and fails
// the test if it cannot.
func DialRaw(t testing.TB, addr string) *RawConn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, DefaultTimeout)
	if err != nil {
		t.Fatalf("DialRaw %s: %v", addr, err)
	}
	c := &RawConn{t: t, conn: conn, timeout: DefaultTimeout}
	t.Cleanup(func() { _ = conn.Close() })
	return c
}

// NewRawConn wraps an existing connection (for example one end of net.Pipe
// or a TLS connection). It is closed when the test ends.
func NewRawConn(t testing.TB, conn net.Conn) *RawConn {
	c := &RawConn{t: t, conn: conn, timeout: DefaultTimeout}
	t.Cleanup(func() { _ = conn.Close() })
	return c
}

// Conn returns the underlying connection.
func (c *RawConn) Conn() net.Conn { return c.conn }

// SetTimeout sets the deadline applied to each later read or write, counted
// from the start of that operation (default DefaultTimeout). It clears an
// absolute deadline set with SetDeadline.
func (c *RawConn) SetTimeout(d time.Duration) {
	c.timeout = d
	c.deadline = time.Time{}
}

// SetDeadline sets an absolute deadline for all later reads and writes,
// replacing the per-operation timeout. The zero time restores the
// per-operation timeout.
func (c *RawConn) SetDeadline(t time.Time) { c.deadline = t }

func (c *RawConn) opDeadline() time.Time {
	if !c.deadline.IsZero() {
		return c.deadline
	}
	return time.Now().Add(c.timeout)
}

// Close closes the connection. Closing twice is harmless.
func (c *RawConn) Close() error { return c.conn.Close() }

// Send writes the concatenation of parts in a single write. Each part is a
// hex string (spaces allowed), a []byte, or a single byte.
func (c *RawConn) Send(parts ...any) {
	c.t.Helper()
	var out []byte
	for i, p := range parts {
		switch v := p.(type) {
		case string:
			b, err := wire.DecodeHex(v)
			if err != nil {
				c.t.Fatalf("Send part %d: %v", i, err)
			}
			out = append(out, b...)
		case []byte:
			out = append(out, v...)
		case byte:
			out = append(out, v)
		default:
			c.t.Fatalf("Send part %d: unsupported type %T (want hex string, []byte or byte)", i, p)
		}
	}
	c.write(out)
}

// SendHex writes the bytes of a hex string (spaces allowed).
func (c *RawConn) SendHex(s string) {
	c.t.Helper()
	b, err := wire.DecodeHex(s)
	if err != nil {
		c.t.Fatalf("SendHex: %v", err)
	}
	c.write(b)
}

func (c *RawConn) write(b []byte) {
	c.t.Helper()
	if err := c.conn.SetWriteDeadline(c.opDeadline()); err != nil {
		c.t.Fatalf("Send: %v", err)
	}
	if _, err := c.conn.Write(b); err != nil {
		c.t.Fatalf("Send %s [%s]: %s", wire.Hex(b), wire.Describe(b), wire.DescribeErr(err))
	}
}

// ReadN reads exactly n bytes within the deadline and fails the test
// otherwise, showing the bytes that did arrive.
func (c *RawConn) ReadN(n int) []byte {
	c.t.Helper()
	got, err := wire.ReadFull(c.conn, n, c.opDeadline())
	if err != nil {
		c.t.Fatalf("ReadN(%d): got %d bytes %s [%s], then %s", n, len(got), wire.Hex(got), wire.Describe(got),
			wire.DescribeErr(err))
	}
	return got
}

// Expect reads exactly len(want) bytes within the deadline and fails the
// test unless they equal want. The failure shows both sides in hex with
// their MQTT packet types, the first differing offset, and whatever else the
// peer sent during a short grace period.
func (c *RawConn) Expect(want []byte) {
	c.t.Helper()
	got, err := wire.ReadFull(c.conn, len(want), c.opDeadline())
	if err != nil {
		c.t.Fatalf("Expect: %s; stopped after %d of %d bytes: %s", wire.Mismatch(want, got), len(got), len(want),
			wire.DescribeErr(err))
	}
	if string(got) != string(want) {
		extra, derr := wire.Drain(c.conn, drainGrace)
		c.t.Fatalf("Expect: %s", wire.MismatchAfter(want, got, extra, derr))
	}
}

// ExpectHex is Expect with the expected bytes given as a hex string.
func (c *RawConn) ExpectHex(s string) {
	c.t.Helper()
	want, err := wire.DecodeHex(s)
	if err != nil {
		c.t.Fatalf("ExpectHex: %v", err)
	}
	c.Expect(want)
}

// ExpectClosed waits up to timeout for the peer to close the connection.
// EOF or a connection reset passes. Receiving any byte fails the test and
// shows it (with whatever follows within a short grace); so does the
// connection still being open when timeout elapses.
func (c *RawConn) ExpectClosed(timeout time.Duration) {
	c.t.Helper()
	got, err := wire.ReadFull(c.conn, 1, time.Now().Add(timeout))
	switch {
	case len(got) > 0:
		extra, derr := wire.Drain(c.conn, drainGrace)
		all := append(got, extra...)
		c.t.Fatalf("ExpectClosed: connection still open, received %s [%s], then %s", wire.Hex(all),
			wire.Describe(all), wire.StateAfter(derr))
	case wire.IsClosed(err):
		return
	case wire.IsTimeout(err):
		c.t.Fatalf("ExpectClosed: connection still open after %v, nothing received", timeout)
	default:
		c.t.Fatalf("ExpectClosed: %v", err)
	}
}

// ExpectNothing fails the test if any byte arrives, or the connection is
// closed, within d. Use it to check that no message is delivered.
func (c *RawConn) ExpectNothing(d time.Duration) {
	c.t.Helper()
	got, err := wire.ReadFull(c.conn, 1, time.Now().Add(d))
	switch {
	case len(got) > 0:
		extra, derr := wire.Drain(c.conn, drainGrace)
		all := append(got, extra...)
		c.t.Fatalf("ExpectNothing: received %s [%s], then %s", wire.Hex(all), wire.Describe(all),
			wire.StateAfter(derr))
	case wire.IsTimeout(err):
		return
	default:
		c.t.Fatalf("ExpectNothing: %s", wire.DescribeErr(err))
	}
}

// String identifies the connection in messages.
func (c *RawConn) String() string {
	return fmt.Sprintf("RawConn(%s->%s)", c.conn.LocalAddr(), c.conn.RemoteAddr())
}
