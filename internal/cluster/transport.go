package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// linkMagicFirstByte is the first byte of a node link ("ISBL"). memberlist's
// own stream messages start with a message type below 0x20 (or its
// encryption type), so one byte tells the two apart.
const linkMagicFirstByte = 'I'

const (
	// defaultPeekTimeout is how long an accepted TCP connection may stay
	// silent before its first byte; then it is closed.
	defaultPeekTimeout = 5 * time.Second
	// maxPendingPeeks bounds the accepted connections waiting for their
	// first byte; more are closed at once (a flood of silent connections
	// cannot pile up goroutines).
	maxPendingPeeks = 256
	// linkBacklog is the buffer of Links(): link connections that the
	// link layer has not taken yet. When it is full, new ones are closed.
	linkBacklog = 64
	// maxInboundStreams bounds the accepted memberlist streams open at
	// once (each holds a memberlist goroutine for up to its 10 s TCP
	// timeout); more are closed at once.
	maxInboundStreams = 128
	// udpPacketBuf is the receive buffer of one gossip packet.
	udpPacketBuf = 65536
	// udpBindAttempts is how often a port-0 bind retries when the UDP
	// port of the TCP port the kernel chose is taken.
	udpBindAttempts = 10
)

// transportMetrics are the counters the transport updates (nil-safe).
type transportMetrics struct {
	gossipIn, gossipOut func(n int)
	dropped             func(reason string)
}

// muxTransport is a memberlist.NodeAwareTransport that owns the node's one
// cluster port: a UDP socket for memberlist packets and a TCP listener whose
// connections are memberlist streams or node links, told apart by their
// first byte.
type muxTransport struct {
	log         *slog.Logger
	metrics     transportMetrics
	peekTimeout time.Duration

	tcp       *net.TCPListener
	udp       *net.UDPConn
	bindIP    net.IP // nil when bound to the unspecified address
	bind4     bool   // the bind address is IPv4
	advertise netip.AddrPort

	packetCh chan *memberlist.Packet
	streamCh chan net.Conn
	links    chan net.Conn

	ctx     context.Context // cancelled on shutdown
	cancel  context.CancelFunc
	wg      sync.WaitGroup // accept loop, UDP loop, peekers
	peeks   chan struct{}  // semaphore of pending first-byte reads
	streams chan struct{}  // semaphore of open inbound memberlist streams

	mu       sync.Mutex
	closed   bool
	conns    map[net.Conn]struct{} // open memberlist streams and pending peeks
	shutOnce sync.Once
}

var _ memberlist.NodeAwareTransport = (*muxTransport)(nil)

// newMuxTransport binds TCP then UDP on bind ("ip:port"; port 0 picks a
// free port, the same for both). advertise ("" = the bound address; port 0
// = the bound port) is what the other nodes are told.
func newMuxTransport(bind, advertise string, peekTimeout time.Duration, log *slog.Logger, m transportMetrics) (*muxTransport, error) {
	ap, err := netip.ParseAddrPort(bind)
	if err != nil {
		return nil, fmt.Errorf("cluster bind %q: want ip:port: %w", bind, err)
	}
	ip := ap.Addr().Unmap()
	tcpAddr := &net.TCPAddr{IP: net.IP(ip.AsSlice()), Port: int(ap.Port()), Zone: ip.Zone()}
	var tcp *net.TCPListener
	var udp *net.UDPConn
	for attempt := 0; ; attempt++ {
		tcp, err = net.ListenTCP("tcp", tcpAddr)
		if err != nil {
			return nil, fmt.Errorf("cluster bind %s (tcp): %w", bind, err)
		}
		port := tcp.Addr().(*net.TCPAddr).Port
		udp, err = net.ListenUDP("udp", &net.UDPAddr{IP: tcpAddr.IP, Port: port, Zone: tcpAddr.Zone})
		if err == nil {
			break
		}
		_ = tcp.Close()
		if ap.Port() != 0 || attempt+1 >= udpBindAttempts {
			return nil, fmt.Errorf("cluster bind %s (udp port %d): %w", bind, port, err)
		}
	}
	// A bigger receive buffer absorbs gossip bursts; best effort.
	for size := 2 << 20; size >= 64<<10; size /= 2 {
		if udp.SetReadBuffer(size) == nil {
			break
		}
	}
	port := uint16(tcp.Addr().(*net.TCPAddr).Port)
	t := &muxTransport{
		log:         log,
		metrics:     m,
		peekTimeout: peekTimeout,
		tcp:         tcp,
		udp:         udp,
		packetCh:    make(chan *memberlist.Packet),
		streamCh:    make(chan net.Conn),
		links:       make(chan net.Conn, linkBacklog),
		peeks:       make(chan struct{}, maxPendingPeeks),
		streams:     make(chan struct{}, maxInboundStreams),
		conns:       map[net.Conn]struct{}{},
	}
	if t.peekTimeout <= 0 {
		t.peekTimeout = defaultPeekTimeout
	}
	t.bind4 = ip.Is4()
	if !ip.IsUnspecified() {
		t.bindIP = tcpAddr.IP
	}
	if advertise == "" {
		if ip.IsUnspecified() {
			_ = tcp.Close()
			_ = udp.Close()
			return nil, fmt.Errorf("cluster: bind %s is a wildcard address, so an advertise address is required", bind)
		}
		t.advertise = netip.AddrPortFrom(ip, port)
	} else {
		adv, err := netip.ParseAddrPort(advertise)
		if err != nil || adv.Addr().Unmap().IsUnspecified() {
			_ = tcp.Close()
			_ = udp.Close()
			return nil, fmt.Errorf("cluster advertise %q: want a specific ip:port", advertise)
		}
		if adv.Port() == 0 {
			adv = netip.AddrPortFrom(adv.Addr(), port)
		}
		t.advertise = netip.AddrPortFrom(adv.Addr().Unmap(), adv.Port())
	}
	t.ctx, t.cancel = context.WithCancel(context.Background())
	t.wg.Add(2)
	go t.acceptLoop()
	go t.udpLoop()
	return t, nil
}

// boundAddr is the TCP (and UDP) address actually bound.
func (t *muxTransport) boundAddr() *net.TCPAddr { return t.tcp.Addr().(*net.TCPAddr) }

// FinalAdvertiseAddr ignores memberlist's values: the transport decides.
func (t *muxTransport) FinalAdvertiseAddr(string, int) (net.IP, int, error) {
	return net.IP(t.advertise.Addr().AsSlice()), int(t.advertise.Port()), nil
}

func (t *muxTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	return t.WriteToAddress(b, memberlist.Address{Addr: addr})
}

func (t *muxTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	var ua *net.UDPAddr
	if ap, err := netip.ParseAddrPort(a.Addr); err == nil {
		ua = net.UDPAddrFromAddrPort(ap)
	} else if ua, err = net.ResolveUDPAddr("udp", a.Addr); err != nil {
		return time.Time{}, err
	}
	n, err := t.udp.WriteTo(b, ua)
	if n > 0 && t.metrics.gossipOut != nil {
		t.metrics.gossipOut(n)
	}
	return time.Now(), err
}

func (t *muxTransport) PacketCh() <-chan *memberlist.Packet { return t.packetCh }
func (t *muxTransport) StreamCh() <-chan net.Conn           { return t.streamCh }

// Links returns accepted connections whose first byte is a link's; the
// channel is closed on Shutdown.
func (t *muxTransport) Links() <-chan net.Conn { return t.links }

func (t *muxTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	return t.DialAddressTimeout(memberlist.Address{Addr: addr}, timeout)
}

func (t *muxTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(t.ctx, timeout)
	defer cancel()
	c, err := t.dial(ctx, a.Addr)
	if err != nil {
		return nil, err
	}
	tc, ok := t.track(c, nil)
	if !ok {
		return nil, net.ErrClosed
	}
	return tc, nil
}

// dial opens a TCP connection from the bind address (same family, same
// source IP when bound to one), cancelled by shutdown.
func (t *muxTransport) dial(ctx context.Context, addr string) (net.Conn, error) {
	d := net.Dialer{}
	network := "tcp"
	switch {
	case t.bindIP != nil && t.bind4:
		d.LocalAddr, network = &net.TCPAddr{IP: t.bindIP}, "tcp4"
	case t.bindIP != nil:
		d.LocalAddr, network = &net.TCPAddr{IP: t.bindIP, Zone: t.boundAddr().Zone}, "tcp6"
	case t.bind4:
		network = "tcp4" // bound to 0.0.0.0
	}
	return d.DialContext(ctx, network, addr)
}

// dialLink dials a node link: a plain TCP connection, not tracked (the link
// layer owns it), stopped by ctx or by shutdown.
func (t *muxTransport) dialLink(ctx context.Context, addr string) (net.Conn, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(t.ctx, cancel)
	defer stop()
	return t.dial(ctx, addr)
}

// track registers a memberlist stream so shutdown closes it, and wraps it
// to count gossip bytes; release (if any) runs when it is closed. It fails
// (closing c) after shutdown.
func (t *muxTransport) track(c net.Conn, release func()) (net.Conn, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		_ = c.Close()
		return nil, false
	}
	tc := &streamConn{Conn: c, t: t, release: release}
	t.conns[tc] = struct{}{}
	return tc, true
}

func (t *muxTransport) untrack(c net.Conn) {
	t.mu.Lock()
	delete(t.conns, c)
	t.mu.Unlock()
}

func (t *muxTransport) acceptLoop() {
	defer t.wg.Done()
	var delay time.Duration
	for {
		c, err := t.tcp.Accept()
		if err != nil {
			if t.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: back off, bounded.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			t.log.Warn("cluster: accepting a connection failed", "err", err)
			select {
			case <-time.After(delay):
			case <-t.ctx.Done():
				return
			}
			continue
		}
		delay = 0
		select {
		case t.peeks <- struct{}{}:
		default:
			_ = c.Close()
			t.drop("pending_limit")
			continue
		}
		t.wg.Add(1)
		go t.peek(c)
	}
}

// peek reads the first byte of an accepted connection and routes it.
func (t *muxTransport) peek(c net.Conn) {
	defer t.wg.Done()
	defer func() { <-t.peeks }()
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		_ = c.Close()
		return
	}
	t.conns[c] = struct{}{}
	t.mu.Unlock()

	var first [1]byte
	_ = c.SetReadDeadline(time.Now().Add(t.peekTimeout))
	_, err := io.ReadFull(c, first[:])
	t.untrack(c)
	if err != nil {
		_ = c.Close()
		if t.ctx.Err() == nil {
			t.drop("silent")
			t.log.Debug("cluster: closed a connection that sent nothing", "remote", c.RemoteAddr().String(), "err", err)
		}
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	pc := &peekedConn{Conn: c, first: first[0], has: true}
	if first[0] == linkMagicFirstByte {
		select {
		case t.links <- pc:
		default:
			_ = c.Close()
			t.drop("link_backlog")
			t.log.Warn("cluster: link backlog full, closed an incoming link", "remote", c.RemoteAddr().String())
		}
		return
	}
	select {
	case t.streams <- struct{}{}:
	default:
		_ = c.Close()
		t.drop("stream_limit")
		return
	}
	tc, ok := t.track(pc, func() { <-t.streams })
	if !ok {
		<-t.streams
		return
	}
	select {
	case t.streamCh <- tc:
	case <-t.ctx.Done():
		_ = tc.Close()
	}
}

func (t *muxTransport) udpLoop() {
	defer t.wg.Done()
	for {
		buf := make([]byte, udpPacketBuf)
		n, addr, err := t.udp.ReadFrom(buf)
		ts := time.Now()
		if err != nil {
			if t.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			t.log.Debug("cluster: reading a gossip packet failed", "err", err)
			continue
		}
		if n < 1 {
			continue
		}
		if t.metrics.gossipIn != nil {
			t.metrics.gossipIn(n)
		}
		select {
		case t.packetCh <- &memberlist.Packet{Buf: buf[:n], From: addr, Timestamp: ts}:
		case <-t.ctx.Done():
			return
		}
	}
}

func (t *muxTransport) drop(reason string) {
	if t.metrics.dropped != nil {
		t.metrics.dropped(reason)
	}
}

// Shutdown closes the sockets and every connection the transport still
// tracks, waits for its goroutines, then closes Links() (closing the link
// connections nobody took). Idempotent.
func (t *muxTransport) Shutdown() error {
	t.shutOnce.Do(func() {
		t.cancel()
		t.mu.Lock()
		t.closed = true
		conns := make([]net.Conn, 0, len(t.conns))
		for c := range t.conns {
			conns = append(conns, c)
		}
		t.mu.Unlock()
		_ = t.tcp.Close()
		_ = t.udp.Close()
		for _, c := range conns {
			_ = c.Close()
		}
		t.wg.Wait()
		close(t.links)
		for c := range t.links {
			_ = c.Close()
		}
	})
	return nil
}

// peekedConn replays the byte read to classify the connection.
type peekedConn struct {
	net.Conn
	mu    sync.Mutex
	first byte
	has   bool
}

func (c *peekedConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.mu.Lock()
	if c.has {
		c.has = false
		p[0] = c.first
		c.mu.Unlock()
		// A one-byte read is a valid short read (io.Reader).
		return 1, nil
	}
	c.mu.Unlock()
	return c.Conn.Read(p)
}

// streamConn is a memberlist stream: counted, and untracked on Close.
type streamConn struct {
	net.Conn
	t       *muxTransport
	closed  atomic.Bool
	release func() // inbound: frees its place in t.streams
}

func (c *streamConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 && c.t.metrics.gossipIn != nil {
		c.t.metrics.gossipIn(n)
	}
	return n, err
}

func (c *streamConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if n > 0 && c.t.metrics.gossipOut != nil {
		c.t.metrics.gossipOut(n)
	}
	return n, err
}

func (c *streamConn) Close() error {
	if c.closed.Swap(true) {
		return nil
	}
	c.t.untrack(c)
	if c.release != nil {
		c.release()
	}
	return c.Conn.Close()
}
