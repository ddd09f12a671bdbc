package testutil

import (
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/isobar-mq/isobar/internal/mqtt/packet"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeTB records a Fatal instead of failing the real test. Fatal ends the
// goroutine like the real one, so the code under test runs in runFake's
// goroutine.
type fakeTB struct {
	testing.TB
	mu  sync.Mutex
	msg string
}

func (f *fakeTB) Helper() {}

func (f *fakeTB) Fatalf(format string, args ...any) {
	f.mu.Lock()
	f.msg = fmt.Sprintf(format, args...)
	f.mu.Unlock()
	runtime.Goexit()
}

func (f *fakeTB) Fatal(args ...any) {
	f.mu.Lock()
	f.msg = fmt.Sprint(args...)
	f.mu.Unlock()
	runtime.Goexit()
}

// runFake runs fn with a fakeTB and returns the fatal message ("" if fn
// returned normally).
func runFake(t *testing.T, fn func(tb testing.TB)) string {
	t.Helper()
	f := &fakeTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(f)
	}()
	<-done
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.msg
}

// serveOnce listens on 127.0.0.1:0, runs handler on the first connection and
// closes it afterwards. The test waits for the handler at cleanup.
func serveOnce(t *testing.T, handler func(c net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		handler(c)
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		<-done
	})
	return ln.Addr().String()
}

func TestCheckFor(t *testing.T) {
	n := 0
	CheckFor(t, 2*time.Second, time.Millisecond, func() error {
		n++
		if n < 3 {
			return fmt.Errorf("attempt %d", n)
		}
		return nil
	})
	if n != 3 {
		t.Fatalf("f called %d times, want 3", n)
	}

	start := time.Now()
	calls := 0
	msg := runFake(t, func(tb testing.TB) {
		CheckFor(tb, 50*time.Millisecond, 10*time.Millisecond, func() error {
			calls++
			return fmt.Errorf("still bad %d", calls)
		})
	})
	if elapsed := time.Since(start); elapsed < 50*time.Millisecond || elapsed > 2*time.Second {
		t.Errorf("CheckFor gave up after %v, want about 50ms", elapsed)
	}
	if calls < 2 {
		t.Errorf("f called %d times, want several", calls)
	}
	if want := fmt.Sprintf("still bad %d", calls); !strings.Contains(msg, want) {
		t.Errorf("message %q does not contain the last error %q", msg, want)
	}
}

func TestDecodeHex(t *testing.T) {
	b, err := DecodeHex("82 06 1234 0001 70 01")
	if err != nil || Hex(b) != "82 06 12 34 00 01 70 01" {
		t.Fatalf("got %s, %v", Hex(b), err)
	}
	if b, err := DecodeHex("e0 01 8F"); err != nil || Hex(b) != "E0 01 8F" {
		t.Fatalf("mixed case: got %s, %v", Hex(b), err)
	}
	for _, bad := range []string{"E0 0", "zz", "E0\t01", "E0-01"} {
		if _, err := DecodeHex(bad); err == nil {
			t.Errorf("DecodeHex(%q) accepted", bad)
		}
	}
	if Hex(nil) != "(none)" {
		t.Errorf("Hex(nil) = %q", Hex(nil))
	}
}

func TestRawConnRoundTrip(t *testing.T) {
	addr := serveOnce(t, func(c net.Conn) {
		buf := make([]byte, 6)
		if _, err := c.Read(buf[:1]); err != nil {
			return
		}
		// Read the rest, then answer in two separate writes so that
		// Expect has to loop over short reads.
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		n := 1
		for n < 6 {
			m, err := c.Read(buf[n:])
			if err != nil {
				return
			}
			n += m
		}
		if string(buf) != "\xC0\x00\x01\x02\x03\x04" {
			return
		}
		_, _ = c.Write([]byte{0xD0})
		time.Sleep(20 * time.Millisecond)
		_, _ = c.Write([]byte{0x00})
	})
	c := DialRaw(t, addr)
	c.Send("C0 00", []byte{1, 2}, byte(3), "04")
	c.ExpectHex("D0 00")
	c.ExpectClosed(time.Second)
}

func TestRawConnExpectMismatch(t *testing.T) {
	addr := serveOnce(t, func(c net.Conn) {
		_, _ = c.Write([]byte{0x90, 0x03, 0x12, 0x34, 0x80, 0xE0, 0x00})
	})
	msg := runFake(t, func(tb testing.TB) {
		c := DialRaw(tb, addr)
		c.ExpectHex("90 03 1234 01")
	})
	for _, want := range []string{
		"expected 90 03 12 34 01 [SUBACK]",
		"got 90 03 12 34 80 (first difference at byte 4)",
		"in total received 90 03 12 34 80 E0 00 [SUBACK, DISCONNECT]",
		"then connection closed by peer (EOF)",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q lacks %q", msg, want)
		}
	}
}

func TestRawConnExpectShort(t *testing.T) {
	addr := serveOnce(t, func(c net.Conn) {
		_, _ = c.Write([]byte{0x20, 0x02})
	})
	msg := runFake(t, func(tb testing.TB) {
		c := DialRaw(tb, addr)
		c.ExpectHex("20 02 00 00")
	})
	if !strings.Contains(msg, "stopped after 2 of 4 bytes: connection closed by peer (EOF)") {
		t.Errorf("message %q does not explain the short read", msg)
	}

	silent := make(chan struct{})
	addr = serveOnce(t, func(c net.Conn) { <-silent })
	defer close(silent)
	msg = runFake(t, func(tb testing.TB) {
		c := DialRaw(tb, addr)
		c.SetTimeout(50 * time.Millisecond)
		c.ExpectHex("20 02 00 00")
	})
	if !strings.Contains(msg, "stopped after 0 of 4 bytes: timed out") {
		t.Errorf("message %q does not report the timeout", msg)
	}
}

func TestRawConnExpectClosed(t *testing.T) {
	t.Run("closed", func(t *testing.T) {
		addr := serveOnce(t, func(c net.Conn) {})
		msg := runFake(t, func(tb testing.TB) { DialRaw(tb, addr).ExpectClosed(time.Second) })
		if msg != "" {
			t.Fatalf("unexpected failure: %s", msg)
		}
	})
	t.Run("reset", func(t *testing.T) {
		addr := serveOnce(t, func(c net.Conn) {
			// Close with unread input: Linux answers with RST.
			buf := make([]byte, 1)
			_, _ = c.Read(buf)
			_ = c.(*net.TCPConn).SetLinger(0)
		})
		msg := runFake(t, func(tb testing.TB) {
			c := DialRaw(tb, addr)
			c.SendHex("C0 00 C0 00")
			c.ExpectClosed(time.Second)
		})
		if msg != "" {
			t.Fatalf("unexpected failure: %s", msg)
		}
	})
	t.Run("data", func(t *testing.T) {
		addr := serveOnce(t, func(c net.Conn) { _, _ = c.Write([]byte{0xE0, 0x01, 0x82}) })
		msg := runFake(t, func(tb testing.TB) { DialRaw(tb, addr).ExpectClosed(time.Second) })
		if !strings.Contains(msg, "received E0 01 82 [DISCONNECT reason 0x82 protocol error]") {
			t.Fatalf("message %q does not show the bytes", msg)
		}
	})
	t.Run("open", func(t *testing.T) {
		stop := make(chan struct{})
		addr := serveOnce(t, func(c net.Conn) { <-stop })
		defer close(stop)
		msg := runFake(t, func(tb testing.TB) { DialRaw(tb, addr).ExpectClosed(50 * time.Millisecond) })
		if !strings.Contains(msg, "still open after 50ms") {
			t.Fatalf("message %q does not report the open connection", msg)
		}
	})
}

func TestRawConnExpectNothing(t *testing.T) {
	stop := make(chan struct{})
	addr := serveOnce(t, func(c net.Conn) {
		<-stop
		_, _ = c.Write([]byte{0x30, 0x03, 0x00, 0x01, 0x70})
	})
	c := DialRaw(t, addr)
	c.ExpectNothing(30 * time.Millisecond)
	close(stop)
	msg := runFake(t, func(tb testing.TB) {
		c.t = tb
		c.ExpectNothing(time.Second)
	})
	if !strings.Contains(msg, "received 30 03 00 01 70 [PUBLISH qos 0]") {
		t.Fatalf("message %q does not show the bytes", msg)
	}
}

func TestRawConnSendErrors(t *testing.T) {
	addr := serveOnce(t, func(c net.Conn) {})
	msg := runFake(t, func(tb testing.TB) { DialRaw(tb, addr).Send(42) })
	if !strings.Contains(msg, "unsupported type int") {
		t.Errorf("message %q", msg)
	}
	addr = serveOnce(t, func(c net.Conn) {})
	msg = runFake(t, func(tb testing.TB) { DialRaw(tb, addr).SendHex("C0 0") })
	if !strings.Contains(msg, "bad hex") {
		t.Errorf("message %q", msg)
	}
}

func TestSetDeadline(t *testing.T) {
	stop := make(chan struct{})
	addr := serveOnce(t, func(c net.Conn) { <-stop })
	defer close(stop)
	start := time.Now()
	msg := runFake(t, func(tb testing.TB) {
		c := DialRaw(tb, addr)
		c.SetDeadline(time.Now().Add(40 * time.Millisecond))
		c.ReadN(1)
	})
	if !strings.Contains(msg, "timed out") {
		t.Errorf("message %q", msg)
	}
	if time.Since(start) > time.Second {
		t.Errorf("absolute deadline not applied")
	}
}

func TestDialRawFails(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	msg := runFake(t, func(tb testing.TB) { DialRaw(tb, addr) })
	if !strings.Contains(msg, "DialRaw "+addr) {
		t.Errorf("message %q", msg)
	}
}

func TestRawConnReadPacket(t *testing.T) {
	addr := serveOnce(t, func(c net.Conn) {
		_, _ = c.Write([]byte{0x20, 0x03, 0x01, 0x00, 0x00, 0xD0, 0x00, 0x90, 0x03, 0x12, 0x34, 0x01})
	})
	c := DialRaw(t, addr)
	p, err := c.ReadPacket(5)
	if err != nil {
		t.Fatal(err)
	}
	ack, ok := p.(*packet.Connack)
	if !ok || !ack.SessionPresent || ack.ReasonCode != 0 {
		t.Fatalf("got %#v", p)
	}
	p, err = c.ReadPacket(5)
	if err != nil || p != packet.PINGRESP {
		t.Fatalf("got %#v, %v", p, err)
	}
	// Mixing with Expect: ReadPacket must not have read ahead.
	c.ExpectHex("90 03 1234 01")
	if _, err := c.ReadPacket(5); !errors.Is(err, io.EOF) {
		t.Fatalf("after close: %v, want io.EOF", err)
	}
}
