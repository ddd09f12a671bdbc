package client_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"github.com/isobar-mq/isobar/internal/mqtt/client"
	"log/slog"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/isobar-mq/isobar/internal/mqtt/packet"
	"github.com/isobar-mq/isobar/internal/testutil/peer"
)

// testLog returns a logger writing to the test log.
func testLog(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// recorder collects received messages.
type recorder struct {
	mu   sync.Mutex
	msgs []*client.Message
	ch   chan *client.Message
}

func newRecorder() *recorder { return &recorder{ch: make(chan *client.Message, 1000)} }

func (r *recorder) handler(ack bool) func(*client.Message) {
	return func(m *client.Message) {
		r.mu.Lock()
		r.msgs = append(r.msgs, m)
		r.mu.Unlock()
		if ack {
			m.Ack()
		}
		r.ch <- m
	}
}

func (r *recorder) next(t *testing.T, d time.Duration) *client.Message {
	t.Helper()
	select {
	case m := <-r.ch:
		return m
	case <-time.After(d):
		t.Fatalf("no message within %v", d)
		return nil
	}
}

func (r *recorder) none(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case m := <-r.ch:
		t.Fatalf("unexpected message %q %q", m.Topic, m.Payload)
	case <-time.After(d):
	}
}

// waitConnected waits until c is connected.
func waitConnected(t *testing.T, c *client.Client, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !c.Connected() {
		if time.Now().After(deadline) {
			t.Fatalf("not connected after %v: %s", d, c.Stats().LastError)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func mustNew(t *testing.T, cfg client.Config) *client.Client {
	t.Helper()
	if cfg.Log == nil {
		cfg.Log = testLog(t)
	}
	c, err := client.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func publish(t *testing.T, c *client.Client, m *client.Message) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Publish(ctx, m); err != nil {
		t.Fatalf("publish %s: %v", m.Topic, err)
	}
}

// --- a scripted server, for what real brokers do not let a test observe ---

type fakeServer struct {
	ln    net.Listener
	conns chan net.Conn
}

func newFakeServer(t *testing.T) *fakeServer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeServer{ln: ln, conns: make(chan net.Conn, 16)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			f.conns <- c
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		<-done
		close(f.conns)
		for c := range f.conns {
			_ = c.Close()
		}
	})
	return f
}

func (f *fakeServer) url() string { return "mqtt://" + f.ln.Addr().String() }

type fakeConn struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
	v byte
}

// accept waits for the client's connection and reads its CONNECT.
func (f *fakeServer) accept(t *testing.T, v byte) (*fakeConn, *packet.Connect) {
	t.Helper()
	select {
	case c := <-f.conns:
		t.Cleanup(func() { _ = c.Close() })
		fc := &fakeConn{t: t, c: c, r: bufio.NewReader(c), v: v}
		p, ok := fc.read().(*packet.Connect)
		if !ok {
			t.Fatal("first packet is not CONNECT")
		}
		return fc, p
	case <-time.After(5 * time.Second):
		t.Fatal("no connection")
		return nil, nil
	}
}

func (fc *fakeConn) read() any {
	fc.t.Helper()
	_ = fc.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	p, err := packet.ReadPacket(fc.r, fc.v, 0)
	if err != nil {
		fc.t.Fatalf("fake server read: %v", err)
	}
	return p
}

// readNothing checks that the client sends nothing for d.
func (fc *fakeConn) readNothing(d time.Duration) {
	fc.t.Helper()
	_ = fc.c.SetReadDeadline(time.Now().Add(d))
	p, err := packet.ReadPacket(fc.r, fc.v, 0)
	if err == nil {
		fc.t.Fatalf("unexpected %s from the client", fmt.Sprintf("%T", p))
	}
}

func (fc *fakeConn) send(b []byte) {
	fc.t.Helper()
	if _, err := fc.c.Write(b); err != nil {
		fc.t.Fatalf("fake server write: %v", err)
	}
}

func (fc *fakeConn) connack(sessionPresent bool, props packet.Properties) {
	fc.send((&packet.Connack{SessionPresent: sessionPresent, Props: props}).Append(nil, fc.v))
}

func (fc *fakeConn) expectAck(typ packet.Type, id uint16) *packet.Ack {
	fc.t.Helper()
	for {
		p := fc.read()
		if p == packet.PINGREQ {
			continue
		}
		a, ok := p.(*packet.Ack)
		if !ok || a.Type != typ || a.PacketID != id {
			fc.t.Fatalf("got %s %+v, want %s %d", fmt.Sprintf("%T", p), p, typ, id)
		}
		return a
	}
}

func (fc *fakeConn) expectPublish() *packet.Publish {
	fc.t.Helper()
	for {
		p := fc.read()
		if p == packet.PINGREQ {
			continue
		}
		pub, ok := p.(*packet.Publish)
		if !ok {
			fc.t.Fatalf("got %s, want PUBLISH", fmt.Sprintf("%T", p))
		}
		return pub
	}
}

// --- mosquitto ---

type mosquitto struct {
	t       *testing.T
	bin     string
	conf    string
	dir     string
	addr    string
	cmd     *exec.Cmd
	exited  chan struct{}
	log     *bytes.Buffer
	logMu   *sync.Mutex
	stopped bool
}

type lockedWriter2 struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w lockedWriter2) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// startMosquitto runs the system mosquitto on a free 127.0.0.1 port with
// persistence in a temporary directory. extra is appended to the
// configuration. Mosquitto cannot listen on port 0, so the port comes from
// a closed Go listener; a lost race is retried.
func startMosquitto(t *testing.T, extra string) *mosquitto {
	t.Helper()
	bin := peer.NeedBinary(t, "mosquitto", "mosquitto")
	dir := t.TempDir()
	var lastErr error
	for range 5 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		_ = ln.Close()
		m := &mosquitto{t: t, bin: bin, dir: dir, addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
			log: &bytes.Buffer{}, logMu: &sync.Mutex{}}
		m.conf = filepath.Join(dir, "mosquitto.conf")
		// "user root" keeps a root mosquitto from switching to user
		// mosquitto, who could not write the test's directory.
		cfg := fmt.Sprintf("user root\nlistener %d 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location %s/\nlog_dest stderr\nlog_type all\n%s",
			port, dir, extra)
		if err := os.WriteFile(m.conf, []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
		if lastErr = m.start(); lastErr == nil {
			t.Cleanup(m.kill)
			return m
		}
		if !strings.Contains(lastErr.Error(), "in use") {
			break
		}
	}
	t.Fatalf("cannot start mosquitto: %v", lastErr)
	return nil
}

func (m *mosquitto) url() string { return "mqtt://" + m.addr }

func (m *mosquitto) logString() string {
	m.logMu.Lock()
	defer m.logMu.Unlock()
	return m.log.String()
}

// start starts mosquitto and waits until it listens.
func (m *mosquitto) start() error {
	cmd := exec.Command(m.bin, "-c", m.conf)
	w := lockedWriter2{m.logMu, m.log}
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		return err
	}
	m.cmd = cmd
	m.exited = make(chan struct{})
	go func() { _ = cmd.Wait(); close(m.exited) }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		select {
		case <-m.exited:
			return fmt.Errorf("mosquitto exited: %s", m.logString())
		default:
		}
		c, err := net.DialTimeout("tcp", m.addr, 200*time.Millisecond)
		if err == nil {
			_ = c.Close()
			m.stopped = false
			return nil
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-m.exited
			return fmt.Errorf("mosquitto not listening on %s: %s", m.addr, m.logString())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop ends mosquitto with sig (SIGTERM saves the persistent sessions).
func (m *mosquitto) stop(sig os.Signal) {
	if m.cmd == nil || m.stopped {
		return
	}
	_ = m.cmd.Process.Signal(syscall.SIGCONT)
	_ = m.cmd.Process.Signal(sig)
	select {
	case <-m.exited:
	case <-time.After(5 * time.Second):
		_ = m.cmd.Process.Kill()
		<-m.exited
	}
	m.stopped = true
}

func (m *mosquitto) kill() { m.stop(syscall.SIGKILL) }

func (m *mosquitto) signal(sig os.Signal) { _ = m.cmd.Process.Signal(sig) }

// --- certificates ---

// testCerts writes a CA and a server certificate for 127.0.0.1 and
// localhost into dir and returns the file names and a pool with the CA.
func testCerts(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	dir := t.TempDir()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "client test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
	certFile, keyFile = filepath.Join(dir, "server.pem"), filepath.Join(dir, "server-key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(ca)
	return certFile, keyFile, pool
}

// checkFor calls f until it returns nil or total has elapsed, like
// testutil.CheckFor; the mosquitto and scripted-server tests use it so that
// they do not depend on internal/testutil (and through it internal/node,
// which imports this package).
func checkFor(t *testing.T, total, interval time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(total)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met after %v: %v", total, err)
		}
		time.Sleep(interval)
	}
}
