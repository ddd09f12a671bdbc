package cluster

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// A node link is one authenticated connection (see ClientHandshake)
// carrying frames both ways. Each Link runs two goroutines:
//
//   - the read loop reads frames through a 64 KiB bufio.Reader (ReadFrame,
//     bounded by MaxFrame), answers Ping with Pong itself and hands every
//     other frame to the handler, in order, one at a time. A link on which
//     nothing at all arrives for 3 x PingInterval is dead and closed.
//   - the write loop: Send appends frames to one pending buffer under a
//     mutex and wakes the writer, which swaps it with its spare buffer and
//     writes the whole batch (in writes of at most 256 KiB, each under
//     WriteTimeout: a peer that accepts nothing for that long is closed).
//     Frames queued while a batch is being written form the next batch, so
//     the number of writes falls as the load rises. When nothing was sent
//     or nothing received during a PingInterval it queues a Ping, so both
//     ends always hear from each other.
//
// Send never blocks. Data frames (critical=false) are refused once the
// queue (pending plus the batch being written) would exceed QueueBytes;
// control frames (critical=true) are always accepted: the protocol bounds
// them, and a peer that stops reading is closed by the write deadline.

// Defaults of LinkConfig.
const (
	DefaultQueueBytes   = 64 << 20
	DefaultPingInterval = time.Second
	DefaultWriteTimeout = 10 * time.Second
)

const (
	linkReadBuffer = 64 << 10
	writeChunk     = 256 << 10
	// keepBufCap: buffers up to this size are kept for reuse; larger ones
	// only while they are used well (a burst should not pin memory).
	keepBufCap   = 1 << 20
	maxPingEcho  = 64
	minBackoff   = 50 * time.Millisecond
	maxBackoff   = 2 * time.Second
	pingBodySize = 8
)

// Link errors (Err wraps them).
var (
	// ErrLinkClosed: Close was called with a nil error.
	ErrLinkClosed = errors.New("cluster link: closed")
	// ErrLinkDead: nothing was received for 3 x PingInterval.
	ErrLinkDead = errors.New("cluster link: peer silent")
	// ErrDialerStopped: the link ended because its Dialer was stopped.
	ErrDialerStopped = errors.New("cluster link: dialer stopped")
)

// LinkConfig tunes a Link. Zero values take the defaults.
type LinkConfig struct {
	// QueueBytes bounds the queued outbound data frames (default 64 MiB).
	QueueBytes int
	// MaxFrame bounds a frame body, both ways (default 64 MiB): a larger
	// incoming frame closes the link, a larger outgoing one is refused.
	MaxFrame int
	// PingInterval (default 1 s): idle links ping; a link on which nothing
	// arrives for 3 x PingInterval is closed.
	PingInterval time.Duration
	// WriteTimeout (default 10 s): a write that makes no progress for this
	// long closes the link.
	WriteTimeout time.Duration
	Logger       *slog.Logger
	// Metrics may be nil.
	Metrics *LinkMetrics
}

func (c *LinkConfig) defaults() {
	if c.QueueBytes <= 0 {
		c.QueueBytes = DefaultQueueBytes
	}
	if c.MaxFrame <= 0 {
		c.MaxFrame = DefaultMaxFrame
	}
	if c.PingInterval <= 0 {
		c.PingInterval = DefaultPingInterval
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// LinkStats are one link's counters (frames and bytes include the Ping and
// Pong frames and the frame headers).
type LinkStats struct {
	FramesIn, FramesOut uint64
	BytesIn, BytesOut   uint64
	// Dropped counts frames Send refused while the link was open.
	Dropped uint64
	// Connected is when the link was made.
	Connected time.Time
	// RTT is the last Ping round trip (0 before the first Pong).
	RTT time.Duration
}

// Link is one authenticated node-link connection. Its methods are safe for
// concurrent use.
type Link struct {
	conn    net.Conn
	peer    PeerInfo
	cfg     LinkConfig
	handler func(*Link, FrameType, []byte)
	pm      *peerMetrics
	created time.Time

	mu        sync.Mutex
	out       []byte // frames waiting for the writer
	outFrames uint64 // frames in out
	spare     []byte // the writer's other buffer
	writing   int    // bytes of the batch being written
	active    bool   // a frame other than Ping was queued since the last tick
	err       error
	// appended counts the bytes ever queued, wrote those handed to the
	// connection; wrote is closed and replaced after every write (Mark
	// and WaitWritten).
	appended uint64
	written  uint64
	wrote    chan struct{}

	closed  atomic.Bool
	wake    chan struct{}
	closing chan struct{}
	done    chan struct{}
	running atomic.Int32

	framesIn, framesOut, bytesIn, bytesOut, dropped atomic.Uint64
	rtt                                             atomic.Int64
}

// NewLink starts the read and write loops on an authenticated conn. handler
// is called from the read loop, in order, one frame at a time (body valid
// only during the call; Ping and Pong are handled by the link); it must not
// block for long, and must not wait for Done. A handler that panics closes
// the link (the panic is logged), never the process. nil ignores frames.
func NewLink(conn net.Conn, peer PeerInfo, cfg LinkConfig, handler func(l *Link, t FrameType, body []byte)) *Link {
	cfg.defaults()
	l := &Link{
		conn:    conn,
		peer:    peer,
		cfg:     cfg,
		handler: handler,
		pm:      cfg.Metrics.peer(peer.Name),
		created: time.Now(),
		wake:    make(chan struct{}, 1),
		wrote:   make(chan struct{}),
		closing: make(chan struct{}),
		done:    make(chan struct{}),
	}
	l.running.Store(2)
	go l.readLoop()
	go l.writeLoop()
	return l
}

// Peer returns the identity the peer proved in the handshake.
func (l *Link) Peer() PeerInfo { return l.peer }

// Send queues the frame t with body (copied). Control frames
// (critical=true) are always queued; data frames are refused (false,
// counted as dropped) when the queue would exceed QueueBytes. A body above
// MaxFrame is refused either way. Never blocks; false also once closed.
func (l *Link) Send(t FrameType, body []byte, critical bool) bool {
	if len(body) > l.cfg.MaxFrame {
		l.drop()
		return false
	}
	l.mu.Lock()
	if l.closed.Load() {
		l.mu.Unlock()
		return false
	}
	n := FrameHeaderLen + len(body)
	if !critical && len(l.out)+l.writing+n > l.cfg.QueueBytes {
		l.mu.Unlock()
		l.drop()
		return false
	}
	wasEmpty := len(l.out) == 0
	l.out = AppendFrame(l.out, t, body)
	l.queued(t, n, wasEmpty)
	l.mu.Unlock()
	return true
}

// SendFunc is Send with the body encoded by fill directly into the queue:
// fill must append the body to b and return the result (as append does),
// quickly, without calling the Link. It is not called when the link is
// closed or, for a data frame, when the queue is already full; a body that
// turns out too large is removed again. If fill panics the queue is left
// as it was and the panic goes on.
func (l *Link) SendFunc(t FrameType, critical bool, fill func(b []byte) []byte) bool {
	l.mu.Lock()
	committed := false
	var start int
	defer func() {
		if !committed && len(l.out) > start {
			l.out = l.out[:start]
		}
		l.mu.Unlock()
		if !committed && !l.closed.Load() {
			l.drop()
		}
	}()
	if l.closed.Load() {
		return false
	}
	start = len(l.out)
	if !critical && start+l.writing+FrameHeaderLen > l.cfg.QueueBytes {
		return false
	}
	l.out = append(l.out, byte(t), 0, 0, 0, 0)
	out := fill(l.out)
	if len(out) < start+FrameHeaderLen {
		l.out = out
		return false
	}
	l.out = out
	body := len(out) - start - FrameHeaderLen
	if body > l.cfg.MaxFrame || (!critical && len(out)+l.writing > l.cfg.QueueBytes) {
		return false
	}
	binary.BigEndian.PutUint32(out[start+1:], uint32(body))
	committed = true
	l.queued(t, FrameHeaderLen+body, start == 0)
	return true
}

// queued accounts for a frame of n bytes just appended; l.mu is held.
func (l *Link) queued(t FrameType, n int, wasEmpty bool) {
	l.outFrames++
	l.appended += uint64(n)
	if t != FramePing {
		l.active = true
	}
	if l.pm != nil {
		l.pm.queue.Add(float64(n))
	}
	if wasEmpty {
		select {
		case l.wake <- struct{}{}:
		default:
		}
	}
}

func (l *Link) drop() {
	l.dropped.Add(1)
	if l.pm != nil {
		l.pm.dropped.Inc()
	}
}

// Mark returns the position after the frames queued so far, for
// WaitWritten.
func (l *Link) Mark() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.appended
}

// WaitWritten waits until every frame queued before mark was handed to
// the connection (so that it reaches the peer even if this process dies
// now: the kernel sends what it was given), for at most timeout. It
// reports whether they were; false also once the link is closed.
func (l *Link) WaitWritten(mark uint64, timeout time.Duration) bool {
	var t *time.Timer
	for {
		l.mu.Lock()
		if l.written >= mark {
			l.mu.Unlock()
			return true
		}
		ch := l.wrote
		l.mu.Unlock()
		if t == nil {
			t = time.NewTimer(timeout)
			defer t.Stop()
		}
		select {
		case <-ch:
		case <-l.done:
			return false
		case <-l.closing:
			return false
		case <-t.C:
			return false
		}
	}
}

// QueuedBytes returns the bytes queued and not yet written.
func (l *Link) QueuedBytes() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.out) + l.writing
}

// Close closes the link at once (queued frames are discarded); err (nil:
// ErrLinkClosed) becomes Err. Only the first call counts. It does not wait
// for the loops: Done does.
func (l *Link) Close(err error) {
	if err == nil {
		err = ErrLinkClosed
	}
	l.mu.Lock()
	if l.closed.Load() {
		l.mu.Unlock()
		return
	}
	l.closed.Store(true)
	l.err = err
	if l.pm != nil && len(l.out) > 0 {
		l.pm.queue.Sub(float64(len(l.out)))
	}
	l.out, l.outFrames, l.spare = nil, 0, nil
	l.mu.Unlock()
	close(l.closing)
	_ = l.conn.Close()
}

// Done is closed when the link is closed and both its loops have ended
// (so the handler is not running).
func (l *Link) Done() <-chan struct{} { return l.done }

// Err returns why the link closed, nil while it is open.
func (l *Link) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// Stats returns the link's counters.
func (l *Link) Stats() LinkStats {
	return LinkStats{
		FramesIn:  l.framesIn.Load(),
		FramesOut: l.framesOut.Load(),
		BytesIn:   l.bytesIn.Load(),
		BytesOut:  l.bytesOut.Load(),
		Dropped:   l.dropped.Load(),
		Connected: l.created,
		RTT:       time.Duration(l.rtt.Load()),
	}
}

func (l *Link) loopDone() {
	if l.running.Add(-1) == 0 {
		l.Close(nil)
		close(l.done)
	}
}

// deadlineReader gives every read of the connection a fresh deadline, so a
// link on which nothing arrives for d fails its read.
type deadlineReader struct {
	c net.Conn
	d time.Duration
}

func (r deadlineReader) Read(p []byte) (int, error) {
	_ = r.c.SetReadDeadline(time.Now().Add(r.d))
	return r.c.Read(p)
}

func (l *Link) readLoop() {
	defer l.loopDone()
	silence := 3 * l.cfg.PingInterval
	r := bufio.NewReaderSize(deadlineReader{c: l.conn, d: silence}, linkReadBuffer)
	var buf []byte
	for !l.closed.Load() {
		t, body, err := ReadFrame(r, l.cfg.MaxFrame, buf)
		if err != nil {
			switch {
			case l.closed.Load():
			case isTimeout(err):
				err = fmt.Errorf("%w: nothing received from %s for %v", ErrLinkDead, l.peer.Name, silence)
			case errors.Is(err, ErrFrameTooLarge):
				err = fmt.Errorf("%w: %v frame above %d bytes from %s", err, t, l.cfg.MaxFrame, l.peer.Name)
			case err == io.EOF:
				err = fmt.Errorf("cluster link: %s closed the connection", l.peer.Name)
			default:
				err = fmt.Errorf("cluster link: reading from %s: %w", l.peer.Name, err)
			}
			l.Close(err)
			return
		}
		l.framesIn.Add(1)
		l.bytesIn.Add(uint64(FrameHeaderLen + len(body)))
		if l.pm != nil {
			l.pm.framesIn.Inc()
			l.pm.bytesIn.Add(float64(FrameHeaderLen + len(body)))
		}
		switch t {
		case FramePing:
			if len(body) > maxPingEcho {
				body = body[:0]
			}
			l.Send(FramePong, body, true)
		case FramePong:
			if len(body) == pingBodySize {
				sent := time.Duration(binary.BigEndian.Uint64(body))
				if rtt := time.Since(l.created) - sent; rtt >= 0 {
					l.rtt.Store(int64(rtt))
				}
			}
		default:
			if l.handler != nil && !l.handle(t, body) {
				return
			}
		}
		if cap(body) <= keepBufCap {
			buf = body[:0]
		} else {
			buf = nil
		}
	}
}

func (l *Link) handle(t FrameType, body []byte) (ok bool) {
	defer func() {
		if p := recover(); p != nil {
			l.cfg.Logger.Error("cluster link: frame handler panicked; link closed",
				"peer", l.peer.Name, "frame", t.String(), "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			l.Close(fmt.Errorf("cluster link: handler panicked on a %v frame from %s: %v", t, l.peer.Name, p))
			ok = false
		}
	}()
	l.handler(l, t, body)
	return true
}

func (l *Link) writeLoop() {
	defer l.loopDone()
	tick := time.NewTicker(l.cfg.PingInterval)
	defer tick.Stop()
	lastIn := l.framesIn.Load()
	for {
		select {
		case <-l.closing:
			return
		case <-tick.C:
			in := l.framesIn.Load()
			l.mu.Lock()
			idle := !l.active
			l.active = false
			l.mu.Unlock()
			if idle || in == lastIn {
				l.ping()
			}
			lastIn = in
		case <-l.wake:
		}
		if err := l.flush(); err != nil {
			l.Close(err)
			return
		}
	}
}

func (l *Link) ping() {
	l.SendFunc(FramePing, true, func(b []byte) []byte {
		return binary.BigEndian.AppendUint64(b, uint64(time.Since(l.created)))
	})
}

// flush writes batches until the queue is empty.
func (l *Link) flush() error {
	for {
		l.mu.Lock()
		buf, frames := l.out, l.outFrames
		if len(buf) == 0 || l.closed.Load() {
			l.mu.Unlock()
			return nil
		}
		l.out, l.outFrames, l.spare = l.spare[:0], 0, nil
		l.writing = len(buf)
		l.mu.Unlock()

		err := l.write(buf)

		l.mu.Lock()
		l.writing = 0
		if !l.closed.Load() && (cap(buf) <= keepBufCap || len(buf) >= cap(buf)/4) {
			l.spare = buf[:0]
		}
		if err == nil {
			l.written += uint64(len(buf))
			close(l.wrote)
			l.wrote = make(chan struct{})
		}
		l.mu.Unlock()
		if l.pm != nil {
			l.pm.queue.Sub(float64(len(buf)))
		}
		if err != nil {
			return err
		}
		l.framesOut.Add(frames)
		l.bytesOut.Add(uint64(len(buf)))
		if l.pm != nil {
			l.pm.framesOut.Add(float64(frames))
			l.pm.bytesOut.Add(float64(len(buf)))
		}
	}
}

func (l *Link) write(b []byte) error {
	for len(b) > 0 {
		n := min(len(b), writeChunk)
		_ = l.conn.SetWriteDeadline(time.Now().Add(l.cfg.WriteTimeout))
		m, err := l.conn.Write(b[:n])
		b = b[m:]
		if err != nil {
			if m > 0 && isTimeout(err) {
				continue // slow but moving
			}
			if isTimeout(err) {
				return fmt.Errorf("cluster link: %s accepted nothing for %v: %w", l.peer.Name, l.cfg.WriteTimeout, err)
			}
			return fmt.Errorf("cluster link: writing to %s: %w", l.peer.Name, err)
		}
	}
	return nil
}

// DialerConfig configures a Dialer.
type DialerConfig struct {
	// Peer is the expected node name ("" accepts any).
	Peer string
	// Addr returns the peer's current cluster address ("" while unknown:
	// retried with backoff).
	Addr func() string
	// Dial opens a connection (nil: TCP with net.Dialer). It is bounded by
	// the handshake timeout.
	Dial      func(ctx context.Context, addr string) (net.Conn, error)
	Handshake HandshakeConfig
	Link      LinkConfig
	Handler   func(*Link, FrameType, []byte)
	// OnUp is called with each new Link, after NewLink (the read loop runs)
	// and after Current returns it. OnDown is called when it has ended
	// (Done closed, Current nil) with its Err. Both run in the dialer's
	// goroutine: while they run no new link is made. They must not call
	// Stop.
	OnUp   func(*Link)
	OnDown func(*Link, error)
	Logger *slog.Logger
}

// Dialer keeps one outbound link to one peer: dial, handshake, NewLink and,
// when the link is lost or cannot be made, again after a backoff (50 ms
// doubling to 2 s, with jitter; back to 50 ms after a link that lasted 2 s),
// until Stop.
//
// Current returns the link as soon as it is up, before OnUp runs, so a
// frame sent through Current can precede what OnUp sends (the route
// snapshot): a sender that needs its updates ordered after the snapshot
// serialises the two with its own lock (the snapshot then either includes
// an update or is sent before it).
type Dialer struct {
	cfg    DialerConfig
	log    *slog.Logger
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
	cur    atomic.Pointer[Link]

	mu    sync.Mutex
	state string
	since time.Time
}

// Dialer states (State).
const (
	LinkUp         = "up"
	LinkConnecting = "connecting"
	LinkDown       = "down"
)

// StartDialer starts keeping a link to cfg.Peer at cfg.Addr().
func StartDialer(cfg DialerConfig) *Dialer {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Link.Logger == nil {
		cfg.Link.Logger = cfg.Logger
	}
	if cfg.Handshake.Logger == nil {
		cfg.Handshake.Logger = cfg.Logger
	}
	if cfg.Handshake.Metrics == nil {
		cfg.Handshake.Metrics = cfg.Link.Metrics
	}
	if cfg.Dial == nil {
		var nd net.Dialer
		cfg.Dial = func(ctx context.Context, addr string) (net.Conn, error) {
			return nd.DialContext(ctx, "tcp", addr)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &Dialer{cfg: cfg, log: cfg.Logger.With("peer", cfg.Peer), ctx: ctx, cancel: cancel, done: make(chan struct{})}
	d.setState(LinkConnecting)
	go d.run()
	return d
}

// Stop closes the current link, ends the dialer and waits until its
// goroutine, the link's loops and OnDown have finished.
func (d *Dialer) Stop() {
	d.cancel()
	<-d.done
}

// Current returns the link while it is up, nil otherwise.
func (d *Dialer) Current() *Link { return d.cur.Load() }

// State returns "up", "connecting" (dialing or in the handshake) or "down"
// (waiting to retry, or stopped), and since when.
func (d *Dialer) State() (string, time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.state, d.since
}

func (d *Dialer) setState(s string) {
	d.mu.Lock()
	if d.state != s {
		d.state, d.since = s, time.Now()
	}
	d.mu.Unlock()
}

func (d *Dialer) run() {
	defer close(d.done)
	defer d.setState(LinkDown)
	m := d.cfg.Link.Metrics
	backoff := minBackoff
	made := 0
	failures := 0
	for d.ctx.Err() == nil {
		d.setState(LinkConnecting)
		l, err := d.connect()
		if err != nil {
			if d.ctx.Err() != nil {
				return
			}
			failures++
			// Authentication failures are logged by the handshake.
			if failures == 1 && !errors.Is(err, ErrAuthFailed) {
				d.log.Info("cluster link: cannot connect; retrying", "err", err)
			} else {
				d.log.Debug("cluster link: cannot connect", "err", err, "attempt", failures)
			}
			d.setState(LinkDown)
			if !d.sleep(backoff) {
				return
			}
			backoff = min(2*backoff, maxBackoff)
			continue
		}
		failures = 0
		made++
		if made > 1 {
			m.reconnected(d.cfg.Peer)
		}
		d.cur.Store(l)
		d.setState(LinkUp)
		m.setUp(d.cfg.Peer, 1)
		d.log.Debug("cluster link up", "addr", addrString(l.conn.RemoteAddr()), "peer_start", l.peer.Start)
		if d.cfg.OnUp != nil {
			d.cfg.OnUp(l)
		}
		select {
		case <-l.Done():
		case <-d.ctx.Done():
			l.Close(ErrDialerStopped)
			<-l.Done()
		}
		d.cur.Store(nil)
		d.setState(LinkDown)
		m.setUp(d.cfg.Peer, 0)
		err = l.Err()
		if !errors.Is(err, ErrDialerStopped) {
			d.log.Debug("cluster link down", "err", err)
		}
		if d.cfg.OnDown != nil {
			d.cfg.OnDown(l, err)
		}
		if time.Since(l.created) >= maxBackoff {
			backoff = minBackoff
		}
		if !d.sleep(backoff) {
			return
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// sleep waits a jittered backoff (between half and all of it); false when
// stopped.
func (d *Dialer) sleep(backoff time.Duration) bool {
	t := time.NewTimer(backoff/2 + rand.N(backoff/2+1))
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-d.ctx.Done():
		return false
	}
}

func (d *Dialer) connect() (*Link, error) {
	addr := ""
	if d.cfg.Addr != nil {
		addr = d.cfg.Addr()
	}
	if addr == "" {
		return nil, errors.New("cluster link: peer address unknown")
	}
	dctx, cancel := context.WithTimeout(d.ctx, d.cfg.Handshake.timeout())
	conn, err := d.cfg.Dial(dctx, addr)
	cancel()
	if err != nil {
		return nil, err
	}
	// Stop aborts a handshake in progress by closing the connection.
	stop := context.AfterFunc(d.ctx, func() { _ = conn.Close() })
	c, peer, err := ClientHandshake(conn, d.cfg.Handshake, d.cfg.Peer)
	if !stop() {
		if err == nil {
			_ = c.Close()
		}
		return nil, d.ctx.Err()
	}
	if err != nil {
		return nil, err
	}
	return NewLink(c, peer, d.cfg.Link, d.cfg.Handler), nil
}

// LinkMetrics are the node links' Prometheus metrics, shared by all the
// links and dialers of one node. The peer label takes node names (bounded
// by the cluster's size); Forget removes a departed peer's series.
type LinkMetrics struct {
	frames, bytes, dropped, reconnects *prometheus.CounterVec
	queue, up                          *prometheus.GaugeVec
	authFailures                       prometheus.Counter
	authLog                            authFailureLog
}

// NewLinkMetrics creates the metrics and registers them with reg (nil: not
// registered). Registering twice with one registry panics.
func NewLinkMetrics(reg prometheus.Registerer) *LinkMetrics {
	m := &LinkMetrics{
		frames: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "isobar_cluster_link_frames_total",
			Help: "Frames sent (direction out) to or received (in) from a peer node on the node links, pings included.",
		}, []string{"peer", "direction"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "isobar_cluster_link_bytes_total",
			Help: "Bytes of frames (headers included) sent to or received from a peer node on the node links.",
		}, []string{"peer", "direction"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "isobar_cluster_link_dropped_total",
			Help: "Frames to a peer node refused because its link queue was full (data frames) or the frame was too large.",
		}, []string{"peer"}),
		queue: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "isobar_cluster_link_queue_bytes",
			Help: "Bytes queued on the links to a peer node and not yet written.",
		}, []string{"peer"}),
		up: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "isobar_cluster_link_up",
			Help: "1 while this node's outbound link to the peer node is up.",
		}, []string{"peer"}),
		reconnects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "isobar_cluster_link_reconnects_total",
			Help: "Outbound links to a peer node made again after the previous one was lost.",
		}, []string{"peer"}),
		authFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "isobar_cluster_link_auth_failures_total",
			Help: "Node link handshakes that failed authentication (cluster secret, TLS certificate or node name), either side.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.frames, m.bytes, m.dropped, m.queue, m.up, m.reconnects, m.authFailures)
	}
	return m
}

// Forget deletes the peer's series (call it when the node has left and its
// links are closed).
func (m *LinkMetrics) Forget(peer string) {
	if m == nil {
		return
	}
	for _, dir := range []string{"in", "out"} {
		m.frames.DeleteLabelValues(peer, dir)
		m.bytes.DeleteLabelValues(peer, dir)
	}
	m.dropped.DeleteLabelValues(peer)
	m.queue.DeleteLabelValues(peer)
	m.up.DeleteLabelValues(peer)
	m.reconnects.DeleteLabelValues(peer)
}

type peerMetrics struct {
	framesIn, framesOut, bytesIn, bytesOut, dropped prometheus.Counter
	queue                                           prometheus.Gauge
}

func (m *LinkMetrics) peer(name string) *peerMetrics {
	if m == nil {
		return nil
	}
	return &peerMetrics{
		framesIn:  m.frames.WithLabelValues(name, "in"),
		framesOut: m.frames.WithLabelValues(name, "out"),
		bytesIn:   m.bytes.WithLabelValues(name, "in"),
		bytesOut:  m.bytes.WithLabelValues(name, "out"),
		dropped:   m.dropped.WithLabelValues(name),
		queue:     m.queue.WithLabelValues(name),
	}
}

// AuthFailure counts one failed link authentication. The handshakes count
// their own failures when HandshakeConfig.Metrics is set (as a Dialer's
// is): use this only for handshakes run without it.
func (m *LinkMetrics) AuthFailure() {
	if m != nil {
		m.authFailures.Inc()
	}
}

func (m *LinkMetrics) setUp(peer string, v float64) {
	if m != nil {
		m.up.WithLabelValues(peer).Set(v)
	}
}

func (m *LinkMetrics) reconnected(peer string) {
	if m != nil {
		m.reconnects.WithLabelValues(peer).Inc()
	}
}
