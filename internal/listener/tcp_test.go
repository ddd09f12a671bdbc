package listener

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/isobar-mq/isobar/internal/testutil/peer"
)

func tcpNoDelay(t *testing.T, c *net.TCPConn) bool {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var v int
	var serr error
	if err := rc.Control(func(fd uintptr) {
		v, serr = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_NODELAY)
	}); err != nil {
		t.Fatal(err)
	}
	if serr != nil {
		t.Fatal(serr)
	}
	return v != 0
}

func TestTCPPlainConn(t *testing.T) {
	l, _ := startListener(t, Config{})
	if a, ok := l.Addr().(*net.TCPAddr); !ok || a.Port == 0 {
		t.Fatalf("Addr = %v", l.Addr())
	}
	if _, ok := l.(Reloader); ok {
		t.Fatal("plain listener implements Reloader")
	}
	ch := acceptAsync(l)
	client := dialTCP(t, l.Addr())
	sc := waitAccept(t, ch)
	tc, ok := sc.(*net.TCPConn)
	if !ok {
		t.Fatalf("accepted %T, want *net.TCPConn", sc)
	}
	if !tcpNoDelay(t, tc) {
		t.Fatal("TCP_NODELAY not set")
	}
	if sc.RemoteAddr().String() != client.LocalAddr().String() {
		t.Fatalf("RemoteAddr %v, want %v", sc.RemoteAddr(), client.LocalAddr())
	}
	roundTrip(t, client, sc, "\x10\x00hello")
	roundTrip(t, sc, client, "\x20\x02\x00\x00")
	if _, ok := TLSState(sc); ok {
		t.Fatal("TLSState on plain conn")
	}
	if _, ok := PeerIdentity(sc, "cn"); ok {
		t.Fatal("PeerIdentity on plain conn")
	}
	// WriteBuffers on a plain socket.
	v := net.Buffers{[]byte("ab"), []byte("cd")}
	if n, err := WriteBuffers(sc, &v); err != nil || n != 4 || len(v) != 0 {
		t.Fatalf("WriteBuffers = %d, %v, left %d", n, err, len(v))
	}
	buf := make([]byte, 4)
	_ = client.SetReadDeadline(time.Now().Add(testTimeout))
	if _, err := io.ReadFull(client, buf); err != nil || string(buf) != "abcd" {
		t.Fatalf("read %q, %v", buf, err)
	}
	if got := l.Config(); got.Name != t.Name() || got.HandshakeTimeout != DefaultHandshakeTimeout {
		t.Fatalf("Config() = %+v", got)
	}
}

func TestAcceptAfterClose(t *testing.T) {
	for _, cfg := range []Config{
		{Protocol: ProtocolMQTT},
		{Protocol: ProtocolMQTT, ProxyProtocol: true},
		{Protocol: ProtocolWS},
	} {
		t.Run(cfg.Protocol+map[bool]string{true: "+proxy", false: ""}[cfg.ProxyProtocol], func(t *testing.T) {
			l, _ := startListener(t, cfg)
			blocked := acceptAsync(l)
			expectNoAccept(t, blocked, 20*time.Millisecond)
			if err := l.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			select {
			case r := <-blocked:
				if !errors.Is(r.err, net.ErrClosed) {
					t.Fatalf("blocked Accept returned %v, %v", r.c, r.err)
				}
			case <-time.After(testTimeout):
				t.Fatal("Accept not unblocked by Close")
			}
			if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
				t.Fatalf("Accept after Close: %v", err)
			}
			if err := l.Close(); err != nil {
				t.Fatalf("second Close: %v", err)
			}
			if _, err := net.DialTimeout("tcp", l.Addr().String(), time.Second); err == nil {
				t.Fatal("dial succeeded after Close")
			}
		})
	}
}

func TestCloseAbortsPendingHandshakes(t *testing.T) {
	l, _ := startListener(t, Config{ProxyProtocol: true, ProxyHeaderTimeout: time.Minute})
	c := dialTCP(t, l.Addr())
	if _, err := c.Write([]byte("PROXY TCP4 ")); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	// Close must not wait for the header timeout.
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Close took %v", d)
	}
	expectClosed(t, c)
}

func TestNewErrors(t *testing.T) {
	if _, err := New(Config{Name: "x", Protocol: "mqtt"}, nil); err == nil {
		t.Fatal("invalid config accepted")
	}
	l, _ := startListener(t, Config{})
	_, err := New(Config{Name: "dup", Protocol: "mqtt", Address: l.Addr().String()}, nil)
	if err == nil || !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("binding a used port: %v", err)
	}
	_, err = New(Config{Name: "tls", Protocol: "mqtt", Address: "127.0.0.1:0",
		TLS: &TLSConfig{CertFile: "/nonexistent/c", KeyFile: "/nonexistent/k"}}, nil)
	if err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing cert files: %v", err)
	}
}

func TestTemporaryAcceptErrorClassification(t *testing.T) {
	for _, e := range []error{syscall.EMFILE, syscall.ENFILE, syscall.ECONNABORTED, &net.OpError{Op: "accept", Err: os.NewSyscallError("accept4", syscall.EMFILE)}} {
		if !isTemporaryAcceptErr(e) {
			t.Errorf("%v not temporary", e)
		}
	}
	for _, e := range []error{net.ErrClosed, syscall.EINVAL, errors.New("x")} {
		if isTemporaryAcceptErr(e) {
			t.Errorf("%v temporary", e)
		}
	}
}

// TestAcceptBacksOffOnEMFILE exhausts the process's file descriptors so
// accept(2) fails with EMFILE, then frees them: Accept must keep retrying
// and finally return the waiting connection.
func TestAcceptBacksOffOnEMFILE(t *testing.T) {
	var orig syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &orig); err != nil {
		peer.Missing(t, "getrlimit: %v", err)
	}
	l, logs := startListener(t, Config{})
	client := dialTCP(t, l.Addr()) // waits in the kernel accept queue

	// Lower the limit a little above the current usage and fill it up.
	var files []*os.File
	defer func() {
		for _, f := range files {
			_ = f.Close()
		}
	}()
	probe, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	lim := orig
	lim.Cur = uint64(probe.Fd()) + 8
	_ = probe.Close()
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		peer.Missing(t, "setrlimit: %v", err)
	}
	restored := false
	restore := func() {
		if !restored {
			restored = true
			if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &orig); err != nil {
				t.Errorf("restore rlimit: %v", err)
			}
		}
	}
	defer restore()
	for {
		f, err := os.Open(os.DevNull)
		if err != nil {
			if !errors.Is(err, syscall.EMFILE) {
				t.Fatalf("filling fds: %v", err)
			}
			break
		}
		files = append(files, f)
	}
	ch := acceptAsync(l)
	deadline := time.Now().Add(testTimeout)
	for !logs.contains("accept error; retrying") {
		if time.Now().After(deadline) {
			t.Fatal("no EMFILE retry logged")
		}
		time.Sleep(5 * time.Millisecond)
	}
	for _, f := range files {
		_ = f.Close()
	}
	files = nil
	restore()
	sc := waitAccept(t, ch)
	roundTrip(t, client, sc, "after emfile")
}
