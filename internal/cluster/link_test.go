package cluster

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
)

// linkWaitFor polls cond every 5 ms until it holds or d passes.
func linkWaitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func linkWaitDone(t *testing.T, l *Link, d time.Duration) {
	t.Helper()
	select {
	case <-l.Done():
	case <-time.After(d):
		t.Fatalf("link not done after %v", d)
	}
}

func TestLinkFramesInOrder(t *testing.T) {
	const n = 100_000
	c1, c2 := linkTCPPair(t)
	var got atomic.Int64
	var bad atomic.Value
	recvDone := make(chan struct{})
	rx := NewLink(c2, PeerInfo{Name: "a"}, LinkConfig{}, func(l *Link, ft FrameType, body []byte) {
		d := Dec{B: body}
		seq := d.U64()
		payload := d.Bytes()
		want := got.Load()
		if d.Err != nil || ft != FramePublish || int64(seq) != want || len(payload) != int(seq%50) {
			bad.CompareAndSwap(nil, "frame out of order or corrupt")
		}
		if got.Add(1) == n {
			close(recvDone)
		}
	})
	tx := NewLink(c1, PeerInfo{Name: "b"}, LinkConfig{}, nil)
	defer tx.Close(nil)
	defer rx.Close(nil)
	payload := make([]byte, 50)
	for i := range n {
		critical := i%2 == 0
		var ok bool
		if i%3 == 0 {
			ok = tx.SendFunc(FramePublish, critical, func(b []byte) []byte {
				e := Enc{B: b}
				e.U64(uint64(i))
				e.Bytes(payload[:i%50])
				return e.B
			})
		} else {
			var e Enc
			e.U64(uint64(i))
			e.Bytes(payload[:i%50])
			ok = tx.Send(FramePublish, e.B, critical)
		}
		if !ok {
			t.Fatalf("frame %d refused", i)
		}
	}
	select {
	case <-recvDone:
	case <-time.After(30 * time.Second):
		t.Fatalf("received %d of %d frames", got.Load(), n)
	}
	if v := bad.Load(); v != nil {
		t.Fatal(v)
	}
	if s := tx.Stats(); s.FramesOut < n || s.Dropped != 0 {
		t.Fatalf("sender stats %+v", s)
	}
}

// linkGateConn holds the first Write until the gate opens and counts Writes.
type linkGateConn struct {
	net.Conn
	gate   chan struct{}
	writes atomic.Int64
}

func (c *linkGateConn) Write(p []byte) (int, error) {
	if c.writes.Add(1) == 1 {
		<-c.gate
	}
	return c.Conn.Write(p)
}

func TestLinkBatchesWrites(t *testing.T) {
	const n = 5000
	c1, c2 := linkTCPPair(t)
	gc := &linkGateConn{Conn: c1, gate: make(chan struct{})}
	var got atomic.Int64
	rx := NewLink(c2, PeerInfo{Name: "a"}, LinkConfig{}, func(*Link, FrameType, []byte) { got.Add(1) })
	tx := NewLink(gc, PeerInfo{Name: "b"}, LinkConfig{PingInterval: time.Hour}, nil)
	defer rx.Close(nil)
	defer tx.Close(nil)
	tx.Send(FrameRouteAdd, []byte("first"), true)
	linkWaitFor(t, 5*time.Second, "the first write", func() bool { return gc.writes.Load() == 1 })
	for i := range n {
		if !tx.Send(FrameRouteAdd, []byte("sensors/+/temp"), i%2 == 0) {
			t.Fatal("refused")
		}
	}
	close(gc.gate)
	linkWaitFor(t, 10*time.Second, "all frames", func() bool { return got.Load() == n+1 })
	if w := gc.writes.Load(); w > 3 {
		t.Fatalf("%d frames took %d writes, want them batched in at most 3", n+1, w)
	}
}

// A peer that never reads: data frames are refused once QueueBytes is
// queued, Send never blocks, control frames are still accepted, and the
// write deadline closes the link.
func TestLinkPeerNotReading(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewLinkMetrics(reg)
	c1, c2 := net.Pipe() // synchronous: nothing is buffered anywhere
	defer c2.Close()
	const queue = 64 << 10
	l := NewLink(c1, PeerInfo{Name: "stuck"}, LinkConfig{
		QueueBytes: queue, WriteTimeout: 300 * time.Millisecond, PingInterval: time.Hour, Metrics: m,
	}, nil)
	body := make([]byte, 1000)
	start := time.Now()
	accepted, refused := 0, 0
	for range 1000 {
		if l.Send(FramePublish, body, false) {
			accepted++
		} else {
			refused++
		}
	}
	if el := time.Since(start); el > 200*time.Millisecond {
		t.Fatalf("1000 Sends took %v: Send blocked", el)
	}
	if refused == 0 || accepted*(len(body)+FrameHeaderLen) > queue {
		t.Fatalf("accepted %d, refused %d: the queue bound of %d bytes was not applied", accepted, refused, queue)
	}
	if q := l.QueuedBytes(); q > queue {
		t.Fatalf("queued %d bytes, bound %d", q, queue)
	}
	for range 100 {
		if !l.Send(FrameAck, body[:8], true) {
			t.Fatal("a control frame was refused")
		}
	}
	if q := l.QueuedBytes(); q <= queue {
		t.Fatalf("queued %d bytes after the control frames", q)
	}
	if s := l.Stats(); s.Dropped != uint64(refused) {
		t.Fatalf("dropped %d, refused %d", s.Dropped, refused)
	}
	if d := testutil.ToFloat64(m.dropped.WithLabelValues("stuck")); d != float64(refused) {
		t.Fatalf("dropped metric %v, want %d", d, refused)
	}
	linkWaitDone(t, l, 5*time.Second)
	if err := l.Err(); err == nil || !strings.Contains(err.Error(), "accepted nothing") {
		t.Fatalf("closed with %v, want the write deadline", err)
	}
	if l.Send(FrameAck, nil, true) {
		t.Fatal("Send after close returned true")
	}
	if q := testutil.ToFloat64(m.queue.WithLabelValues("stuck")); q != 0 {
		t.Fatalf("queue gauge %v after close", q)
	}
}

func TestLinkPingKeepsIdleLinkUp(t *testing.T) {
	c1, c2 := linkTCPPair(t)
	cfg := LinkConfig{PingInterval: 100 * time.Millisecond}
	a := NewLink(c1, PeerInfo{Name: "b"}, cfg, nil)
	b := NewLink(c2, PeerInfo{Name: "a"}, cfg, nil)
	defer a.Close(nil)
	defer b.Close(nil)
	time.Sleep(time.Second) // > 3 x PingInterval several times over
	select {
	case <-a.Done():
		t.Fatalf("idle link closed: %v", a.Err())
	case <-b.Done():
		t.Fatalf("idle link closed: %v", b.Err())
	default:
	}
	sa := a.Stats()
	if sa.FramesIn == 0 || sa.FramesOut == 0 || sa.RTT <= 0 {
		t.Fatalf("no ping traffic: %+v", sa)
	}
}

// A link that only sends (one-way traffic, so it never pings for being
// idle) to a peer that never pings by itself stays up: a link that hears
// nothing for a PingInterval pings, and is answered.
func TestLinkOneWayTrafficStaysUp(t *testing.T) {
	c1, c2 := linkTCPPair(t)
	a := NewLink(c1, PeerInfo{Name: "b"}, LinkConfig{PingInterval: 100 * time.Millisecond}, nil)
	// The peer: a raw frame stream answering pings, never pinging itself.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		r := bufio.NewReader(c2)
		for {
			ft, body, err := ReadFrame(r, 0, nil)
			if err != nil {
				return
			}
			if ft == FramePing {
				if _, err := c2.Write(AppendFrame(nil, FramePong, body)); err != nil {
					return
				}
			}
		}
	}()
	end := time.After(time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
loop:
	for {
		select {
		case <-a.Done():
			t.Fatalf("closed: %v", a.Err())
		case <-end:
			break loop
		case <-tick.C:
			a.Send(FramePublish, []byte("data"), false)
		}
	}
	close(stop)
	a.Close(nil)
	c2.Close()
	wg.Wait()
}

func TestLinkSilentPeerClosed(t *testing.T) {
	c1, c2 := linkTCPPair(t)
	go func() { _, _ = io.Copy(io.Discard, c2) }() // reads, never writes
	start := time.Now()
	l := NewLink(c1, PeerInfo{Name: "mute"}, LinkConfig{PingInterval: 40 * time.Millisecond}, nil)
	linkWaitDone(t, l, 3*time.Second)
	if !errors.Is(l.Err(), ErrLinkDead) {
		t.Fatalf("closed with %v, want ErrLinkDead", l.Err())
	}
	if el := time.Since(start); el < 100*time.Millisecond {
		t.Fatalf("closed after %v, before 3 x PingInterval", el)
	}
}

func TestLinkOversizeFrameClosesLink(t *testing.T) {
	c1, c2 := linkTCPPair(t)
	var calls atomic.Int64
	l := NewLink(c1, PeerInfo{Name: "big"}, LinkConfig{MaxFrame: 1024}, func(*Link, FrameType, []byte) { calls.Add(1) })
	if _, err := c2.Write(AppendFrame(nil, FramePublish, make([]byte, 1025))); err != nil {
		t.Fatal(err)
	}
	linkWaitDone(t, l, 3*time.Second)
	if !errors.Is(l.Err(), ErrFrameTooLarge) || calls.Load() != 0 {
		t.Fatalf("err %v, %d handler calls", l.Err(), calls.Load())
	}
	// Outgoing frames above MaxFrame are refused, not sent.
	c3, c4 := linkTCPPair(t)
	go func() { _, _ = io.Copy(io.Discard, c4) }()
	l2 := NewLink(c3, PeerInfo{Name: "x"}, LinkConfig{MaxFrame: 10}, nil)
	defer l2.Close(nil)
	if l2.Send(FrameAck, make([]byte, 11), true) {
		t.Fatal("Send accepted a frame above MaxFrame")
	}
	if l2.SendFunc(FrameAck, true, func(b []byte) []byte { return append(b, make([]byte, 11)...) }) {
		t.Fatal("SendFunc accepted a frame above MaxFrame")
	}
	if q := l2.QueuedBytes(); q != 0 {
		t.Fatalf("%d bytes left queued by refused frames", q)
	}
}

func TestLinkHandlerPanicClosesLink(t *testing.T) {
	c1, c2 := linkTCPPair(t)
	l := NewLink(c1, PeerInfo{Name: "p"}, LinkConfig{}, func(*Link, FrameType, []byte) { panic("boom") })
	if _, err := c2.Write(AppendFrame(nil, FrameClaim, []byte("x"))); err != nil {
		t.Fatal(err)
	}
	linkWaitDone(t, l, 3*time.Second)
	if err := l.Err(); err == nil || !strings.Contains(err.Error(), "panicked") {
		t.Fatalf("closed with %v", err)
	}
}

func TestLinkSendFuncPanicLeavesQueueIntact(t *testing.T) {
	c1, c2 := linkTCPPair(t)
	var got []string
	var mu sync.Mutex
	rx := NewLink(c2, PeerInfo{Name: "a"}, LinkConfig{}, func(_ *Link, _ FrameType, body []byte) {
		mu.Lock()
		got = append(got, string(body))
		mu.Unlock()
	})
	tx := NewLink(c1, PeerInfo{Name: "b"}, LinkConfig{}, nil)
	defer rx.Close(nil)
	defer tx.Close(nil)
	tx.Send(FrameAck, []byte("one"), true)
	func() {
		defer func() { _ = recover() }()
		tx.SendFunc(FrameAck, true, func(b []byte) []byte {
			_ = append(b, "half"...)
			panic("fill failed")
		})
	}()
	tx.Send(FrameAck, []byte("two"), true)
	linkWaitFor(t, 3*time.Second, "two frames", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == 2 })
	mu.Lock()
	defer mu.Unlock()
	if got[0] != "one" || got[1] != "two" {
		t.Fatalf("got %q", got)
	}
}

func TestLinkCloseAndMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewLinkMetrics(reg)
	c1, c2 := linkTCPPair(t)
	var got atomic.Int64
	rx := NewLink(c2, PeerInfo{Name: "n1"}, LinkConfig{Metrics: m}, func(*Link, FrameType, []byte) { got.Add(1) })
	tx := NewLink(c1, PeerInfo{Name: "n2"}, LinkConfig{Metrics: m}, nil)
	for range 10 {
		tx.Send(FrameRetain, []byte("abc"), false)
	}
	linkWaitFor(t, 3*time.Second, "10 frames", func() bool { return got.Load() == 10 })
	linkWaitFor(t, 3*time.Second, "the out counter", func() bool {
		return testutil.ToFloat64(m.frames.WithLabelValues("n2", "out")) >= 10
	})
	if v := testutil.ToFloat64(m.bytes.WithLabelValues("n1", "in")); v < 10*8 {
		t.Fatalf("bytes in %v", v)
	}
	tx.Close(errors.New("bye"))
	tx.Close(errors.New("again")) // idempotent, first reason kept
	linkWaitDone(t, tx, 3*time.Second)
	linkWaitDone(t, rx, 3*time.Second)
	if tx.Err().Error() != "bye" || rx.Err() == nil {
		t.Fatalf("errors: %v, %v", tx.Err(), rx.Err())
	}
	m.Forget("n1")
	m.Forget("n2")
	if n := testutil.CollectAndCount(reg,
		"isobar_cluster_link_frames_total", "isobar_cluster_link_bytes_total", "isobar_cluster_link_queue_bytes"); n != 0 {
		t.Fatalf("%d series left after Forget", n)
	}
	var nilMetrics *LinkMetrics
	nilMetrics.Forget("x")
	nilMetrics.AuthFailure()
}

// linkServer accepts links on 127.0.0.1 and can drop them.
type linkServer struct {
	ln    net.Listener
	hs    HandshakeConfig
	mu    sync.Mutex
	links []*Link
	wg    sync.WaitGroup
}

func startLinkServer(t *testing.T, hs HandshakeConfig) *linkServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &linkServer{ln: ln, hs: hs}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				conn, peer, err := ServerHandshake(c, s.hs)
				if err != nil {
					return
				}
				l := NewLink(conn, peer, LinkConfig{}, func(l *Link, ft FrameType, body []byte) {
					if ft == FrameClaim {
						l.Send(FrameClaimReply, body, true)
					}
				})
				s.mu.Lock()
				s.links = append(s.links, l)
				s.mu.Unlock()
				<-l.Done()
			}()
		}
	}()
	return s
}

func (s *linkServer) closeLinks() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range s.links {
		l.Close(nil)
	}
}

func (s *linkServer) stop() {
	_ = s.ln.Close()
	s.closeLinks()
	s.wg.Wait()
}

func TestLinkDialerReconnects(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	key := hsKey(3)
	reg := prometheus.NewRegistry()
	m := NewLinkMetrics(reg)
	srv := startLinkServer(t, hsCfg("server", 2, key))
	defer srv.stop()
	var ups, downs atomic.Int64
	replies := make(chan string, 16)
	d := StartDialer(DialerConfig{
		Peer:      "server",
		Addr:      func() string { return srv.ln.Addr().String() },
		Handshake: hsCfg("client", 1, key),
		Link:      LinkConfig{Metrics: m},
		Handler: func(_ *Link, ft FrameType, body []byte) {
			if ft == FrameClaimReply {
				replies <- string(body)
			}
		},
		OnUp: func(l *Link) {
			ups.Add(1)
			if l.Peer().Name != "server" || l.Peer().Start != 2 {
				t.Errorf("peer %+v", l.Peer())
			}
			l.Send(FrameClaim, []byte("hello"), true)
		},
		OnDown: func(*Link, error) { downs.Add(1) },
	})
	for round := 1; round <= 3; round++ {
		select {
		case r := <-replies:
			if r != "hello" {
				t.Fatalf("reply %q", r)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("round %d: no reply over the link", round)
		}
		if d.Current() == nil {
			t.Fatal("Current is nil while the link is up")
		}
		if st, _ := d.State(); st != LinkUp {
			t.Fatalf("state %q", st)
		}
		if round < 3 {
			srv.closeLinks()
		}
	}
	if ups.Load() != 3 || downs.Load() != 2 {
		t.Fatalf("ups %d downs %d", ups.Load(), downs.Load())
	}
	if v := testutil.ToFloat64(m.reconnects.WithLabelValues("server")); v != 2 {
		t.Fatalf("reconnects %v, want 2", v)
	}
	if v := testutil.ToFloat64(m.up.WithLabelValues("server")); v != 1 {
		t.Fatalf("up %v", v)
	}
	d.Stop()
	if d.Current() != nil || downs.Load() != 3 {
		t.Fatalf("after Stop: current %v, downs %d", d.Current(), downs.Load())
	}
	if st, _ := d.State(); st != LinkDown {
		t.Fatalf("state after Stop %q", st)
	}
	if v := testutil.ToFloat64(m.up.WithLabelValues("server")); v != 0 {
		t.Fatalf("up %v after Stop", v)
	}
}

// A dialer over mutual TLS: the link carries frames both ways.
func TestLinkDialerTLS(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	pki := newHSPKI(t, "cluster CA")
	key := hsKey(6)
	scfg := hsCfg("server", 2, key)
	scfg.TLS = pki.tls(t, "server")
	srv := startLinkServer(t, scfg)
	defer srv.stop()
	ccfg := hsCfg("client", 1, key)
	ccfg.TLS = pki.tls(t, "client")
	replies := make(chan int, 1)
	body := make([]byte, 300<<10) // more than one write chunk and one TLS record
	for i := range body {
		body[i] = byte(i)
	}
	d := StartDialer(DialerConfig{
		Peer:      "server",
		Addr:      func() string { return srv.ln.Addr().String() },
		Handshake: ccfg,
		Handler: func(_ *Link, ft FrameType, b []byte) {
			if ft == FrameClaimReply && len(b) == len(body) && b[len(b)-1] == body[len(body)-1] {
				replies <- len(b)
			}
		},
		OnUp: func(l *Link) { l.Send(FrameClaim, body, true) },
	})
	defer d.Stop()
	select {
	case <-replies:
	case <-time.After(5 * time.Second):
		t.Fatal("no reply over the TLS link")
	}
	if _, ok := d.Current().conn.(*tls.Conn); !ok {
		t.Fatalf("link conn is %T, want *tls.Conn", d.Current().conn)
	}
}

// A dialer that cannot authenticate backs off, counts the failures and
// stops at once, even in the middle of a handshake with a silent peer.
func TestLinkDialerAuthFailureAndStop(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	reg := prometheus.NewRegistry()
	m := NewLinkMetrics(reg)
	srv := startLinkServer(t, hsCfg("server", 2, hsKey(4)))
	defer srv.stop()
	var dials atomic.Int64
	d := StartDialer(DialerConfig{
		Peer: "server",
		Addr: func() string { return srv.ln.Addr().String() },
		Dial: func(ctx context.Context, addr string) (net.Conn, error) {
			dials.Add(1)
			var nd net.Dialer
			return nd.DialContext(ctx, "tcp", addr)
		},
		Handshake: hsCfg("client", 1, hsKey(5)),
		Link:      LinkConfig{Metrics: m},
		OnUp:      func(*Link) { t.Error("link up with the wrong key") },
	})
	start := time.Now()
	linkWaitFor(t, 5*time.Second, "three failed attempts", func() bool { return testutil.ToFloat64(m.authFailures) >= 3 })
	el := time.Since(start)
	d.Stop()
	// First at once, then after 50 and 100 ms (jittered down to half): >= 75 ms.
	if n := dials.Load(); n > 6 || el < 60*time.Millisecond {
		t.Fatalf("%d dials, 3 failures in %v: no backoff", n, el)
	}

	// A peer that accepts and never answers: Stop interrupts the handshake.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan net.Conn, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	d = StartDialer(DialerConfig{
		Peer:      "server",
		Addr:      func() string { return ln.Addr().String() },
		Handshake: HandshakeConfig{LocalName: "client", Key: hsKey(5), Timeout: time.Minute},
	})
	var c net.Conn
	select {
	case c = <-accepted:
	case <-time.After(5 * time.Second):
		t.Fatal("no connection")
	}
	linkWaitFor(t, 2*time.Second, "connecting state", func() bool { st, _ := d.State(); return st == LinkConnecting })
	start = time.Now()
	d.Stop()
	if el := time.Since(start); el > time.Second {
		t.Fatalf("Stop took %v during a handshake", el)
	}
	_ = ln.Close()
	_ = c.Close()

	// No address yet: the dialer waits and Stop still ends it.
	d = StartDialer(DialerConfig{Peer: "x", Addr: func() string { return "" }, Handshake: hsCfg("client", 1, hsKey(5))})
	time.Sleep(100 * time.Millisecond)
	d.Stop()
}

// Frame bodies written by SendFunc are exactly what Enc produced, and the
// ping body carries the sender's clock for RTT.
func TestLinkPingBody(t *testing.T) {
	c1, c2 := linkTCPPair(t)
	l := NewLink(c1, PeerInfo{Name: "p"}, LinkConfig{PingInterval: 100 * time.Millisecond}, nil)
	defer l.Close(nil)
	r := bufio.NewReader(c2)
	_ = c2.SetReadDeadline(time.Now().Add(3 * time.Second))
	ft, body, err := ReadFrame(r, 0, nil)
	if err != nil || ft != FramePing || len(body) != pingBodySize {
		t.Fatalf("first frame %v %d bytes %v", ft, len(body), err)
	}
	if _, err := c2.Write(AppendFrame(nil, FramePong, body)); err != nil {
		t.Fatal(err)
	}
	linkWaitFor(t, 3*time.Second, "an RTT", func() bool { return l.Stats().RTT > 0 })
	// A ping from the peer is answered with its body echoed.
	ping := binary.BigEndian.AppendUint64(nil, 12345)
	if _, err := c2.Write(AppendFrame(nil, FramePing, ping)); err != nil {
		t.Fatal(err)
	}
	for range 100 {
		ft, body, err = ReadFrame(r, 0, nil)
		if err != nil {
			t.Fatal(err)
		}
		if ft == FramePong {
			break
		}
	}
	if ft != FramePong || binary.BigEndian.Uint64(body) != 12345 {
		t.Fatalf("answer %v %x", ft, body)
	}
}
