// Package broker is Isobar's MQTT server: connections, sessions, routing,
// retained and will messages.
//
// Lock order, outermost first (never take an earlier lock while holding a
// later one):
//
//	Server.mu → session.mu → client.omu
//
// The topic index and the retained tree have their own internal locks and
// call no broker code while holding them. delivery from a publisher's read
// loop takes the target session's mu and then the target client's omu;
// no goroutine holds two session locks at once.
package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/isobar-mq/isobar/internal/hlc"
	"github.com/isobar-mq/isobar/internal/mqtt/packet"
	"github.com/isobar-mq/isobar/internal/store"
	"github.com/isobar-mq/isobar/internal/topic"
)

type mutex = sync.Mutex

// cacheLine is the padding that keeps hot fields on cache lines of their
// own.
const cacheLine = 64

// AuthResult is the outcome of authenticating a CONNECT.
type AuthResult int

// Authentication outcomes.
const (
	AuthOK AuthResult = iota
	AuthBadCredentials
	AuthNotAuthorized
)

// AuthRequest carries what a CONNECT offers for authentication.
type AuthRequest struct {
	ClientID    string
	Username    string
	HasUsername bool
	Password    []byte
	HasPassword bool
	Remote      netip.Addr
	Listener    string
	Conn        net.Conn // for TLS client certificates
}

// AuthResponse is what an Authenticator decides. Username, when set,
// replaces the CONNECT's user name (e.g. taken from a client certificate).
type AuthResponse struct {
	Result   AuthResult
	Username string
	// Role carries what the Auth needs later to authorize this client
	// (e.g. anonymous, read-only); the broker passes it back unchanged in
	// ClientInfo and stores it with the session. One bit is the broker's:
	// RoleAnonymous.
	Role uint8
	// Delay, when positive, is waited before answering CONNECT (failed
	// login throttling): the connection is slowed, nobody else.
	Delay time.Duration
}

// RoleAnonymous in AuthResponse.Role says the client's user name (if any)
// was not verified: for session ownership it is anonymous, whatever user
// name it claimed.
const RoleAnonymous uint8 = 1

// owner is the identity a session belongs to: the verified user name, ""
// for anonymous clients.
func owner(user string, role uint8) string {
	if role&RoleAnonymous != 0 {
		return ""
	}
	return user
}

// ClientInfo identifies a connected client to authorization checks.
type ClientInfo struct {
	ClientID string
	Username string
	Listener string
	Role     uint8
}

// Auth is the security seam: authentication at CONNECT and authorization
// of every publish, subscribe and delivery. A nil Auth allows everything.
type Auth interface {
	Authenticate(AuthRequest) AuthResponse
	CanPublish(c ClientInfo, topic string) bool
	CanSubscribe(c ClientInfo, filter string) bool
	CanReceive(c ClientInfo, topic string) bool
}

// Server is one MQTT broker node. Several can run in one process.
type Server struct {
	opts Options
	log  *slog.Logger
	auth Auth

	store store.Store

	index    *topic.Index[Subscriber]
	retained *topic.Retained[*Message]
	stats    Stats

	// Read on every message, rarely written: kept away from the counters
	// below so that their writes do not evict it from other cores.
	nodeHash      uint64
	hooks         atomic.Pointer[hookSet]
	storeDegraded atomic.Bool // set while the store refuses writes
	_             [cacheLine]byte

	// msgSeq makes MessageIDs with nodeHash: it starts at the start time in
	// nanoseconds, so ids stay unique across restarts. Written once per
	// message by whichever goroutine routes it.
	msgSeq atomic.Uint64
	_      [cacheLine - 8]byte

	// queuedBytes is what every session's held messages count against
	// Options.MaxQueuedBytesTotal; sessions reserve it in chunks
	// (holdLocked), so it changes rarely.
	queuedBytes atomic.Int64
	_           [cacheLine - 8]byte

	hookMu         sync.Mutex
	storeErrLogged atomic.Int64

	mu       mutex
	sessions map[string]*session
	clients  map[*client]struct{}
	closed   bool

	lnMu      sync.Mutex
	listeners []net.Listener
	wg        sync.WaitGroup // accept loops and connections

	connRate      *connRateLimiter
	listenerConns map[string]int // connected clients per listener, guarded by mu

	// clock is a coarse wall clock (unix nanoseconds) updated every
	// clockTick, read where exactness does not matter.
	clock atomic.Int64

	online atomic.Int64
	conns  atomic.Int64
	quit   chan struct{}

	// Cluster seams (cluster.go).
	interest interest
	retMu    sync.Mutex            // orders retained changes (local and applied)
	retTomb  map[string]retVersion // retained deletions' versions (retMu)
	hclock   *hlc.Clock
	// ctx ends when the server shuts down.
	ctx    context.Context
	cancel context.CancelFunc
}

// New creates a server. log may be nil (discard).
func New(opts Options, log *slog.Logger, auth Auth) *Server {
	opts.setDefaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		opts:          opts,
		log:           log,
		auth:          auth,
		index:         topic.NewIndex[Subscriber](),
		nodeHash:      NodeHash(opts.NodeName),
		retained:      topic.NewRetained[*Message](),
		sessions:      make(map[string]*session),
		clients:       make(map[*client]struct{}),
		quit:          make(chan struct{}),
		store:         opts.Store,
		connRate:      &connRateLimiter{rate: opts.ConnectionRate, burst: float64(max(opts.ConnectionBurst, 1))},
		listenerConns: make(map[string]int),
		hclock:        opts.Clock,
	}
	if opts.Interest != nil {
		s.interest.counts = make(map[string]int)
	}
	if s.hclock == nil && (opts.Retained != nil || opts.Directory != nil) {
		s.hclock = new(hlc.Clock)
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.clock.Store(time.Now().UnixNano())
	s.msgSeq.Store(uint64(time.Now().UnixNano()))
	s.wg.Add(2)
	go s.housekeeping()
	go s.tick()
	return s
}

const clockTick = 100 * time.Millisecond

// tick updates the coarse clock.
func (s *Server) tick() {
	defer s.wg.Done()
	t := time.NewTicker(clockTick)
	defer t.Stop()
	for {
		select {
		case <-s.quit:
			return
		case now := <-t.C:
			s.clock.Store(now.UnixNano())
		}
	}
}

// Options returns the effective options (defaults filled in).
func (s *Server) Options() Options { return s.opts }

// Stats returns the server's counters.
func (s *Server) Stats() *Stats { return &s.stats }

// Serve accepts connections from l until it is closed or the server shuts
// down. name identifies the listener in logs and metrics.
func (s *Server) Serve(l net.Listener, name string) error {
	s.lnMu.Lock()
	if s.isClosed() {
		s.lnMu.Unlock()
		_ = l.Close()
		return errShutdown
	}
	s.listeners = append(s.listeners, l)
	s.wg.Add(1)
	s.lnMu.Unlock()
	defer s.wg.Done()
	var delay time.Duration
	for {
		conn, err := l.Accept()
		if err != nil {
			if s.isClosed() || errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			// Temporary failures (EMFILE ...): back off like net/http.
			if delay == 0 {
				delay = 5 * time.Millisecond
			} else if delay *= 2; delay > time.Second {
				delay = time.Second
			}
			s.log.Warn("accept failed; retrying", "listener", name, "err", err, "delay", delay)
			select {
			case <-time.After(delay):
				continue
			case <-s.quit:
				return nil
			}
		}
		delay = 0
		s.ServeConn(conn, name)
	}
}

// ServeConn serves one already-accepted connection in its own goroutine.
func (s *Server) ServeConn(conn net.Conn, listener string) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		_ = conn.Close()
		return
	}
	s.wg.Add(1)
	s.mu.Unlock()
	s.conns.Add(1)
	s.stats.connectionsTotal.Add(1)
	c := newClient(s, conn, listener)
	if ap, err := netip.ParseAddrPort(c.remote); err == nil && !s.connRate.allow(ap.Addr().Unmap(), time.Now()) {
		c.rateLimited = true
	}
	go func() {
		defer s.wg.Done()
		c.serve()
	}()
}

func (s *Server) connClosed() { s.conns.Add(-1) }

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// Shutdown stops accepting, tells MQTT 5 clients 0x8B (Server shutting
// down), closes every connection and waits for them, bounded by ctx and
// Options.ShutdownTimeout.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	clients := make([]*client, 0, len(s.clients))
	for c := range s.clients {
		clients = append(clients, c)
	}
	s.mu.Unlock()
	close(s.quit)
	s.cancel()

	s.lnMu.Lock()
	for _, l := range s.listeners {
		_ = l.Close()
	}
	s.lnMu.Unlock()
	for _, c := range clients {
		c.kick(packet.ServerShuttingDown, errShutdown)
	}
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	timer := time.NewTimer(s.opts.ShutdownTimeout)
	defer timer.Stop()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = ctx.Err()
	case <-timer.C:
		err = errors.New("shutdown timed out")
	}
	if err != nil {
		// Force: close every socket so their goroutines end.
		s.mu.Lock()
		for c := range s.clients {
			_ = c.conn.Close()
		}
		s.mu.Unlock()
		<-done
	}
	s.stopTimers()
	return err
}

// stopTimers stops session expiry and will timers after shutdown.
func (s *Server) stopTimers() {
	s.mu.Lock()
	sessions := make([]*session, 0, len(s.sessions))
	for _, ss := range s.sessions {
		sessions = append(sessions, ss)
	}
	s.mu.Unlock()
	for _, ss := range sessions {
		ss.mu.Lock()
		if ss.expiryTimer != nil {
			ss.expiryTimer.Stop()
		}
		if ss.willTimer != nil {
			ss.willTimer.Stop()
		}
		ss.mu.Unlock()
	}
}

// housekeeping sweeps expired retained messages and watches the store's
// health (degraded mode ends by itself when the store is writable again).
func (s *Server) housekeeping() {
	defer s.wg.Done()
	t := time.NewTicker(10 * time.Second)
	defer t.Stop()
	health := time.NewTicker(250 * time.Millisecond)
	defer health.Stop()
	for {
		select {
		case <-s.quit:
			return
		case <-health.C:
			s.checkStore()
		case <-t.C:
			now := time.Now().UnixNano()
			var expired []string
			s.retained.Range(func(topic string, m *Message) bool {
				if m.expired(now) {
					expired = append(expired, topic)
				}
				return true
			})
			for _, t := range expired {
				if m, ok := s.retained.Get(t); ok && m.expired(now) {
					s.retained.Delete(t)
					s.storeAsync(func(b store.Batch) { b.DeleteRetained(t) })
				}
			}
			s.pruneTombs(time.Unix(0, now))
		}
	}
}

// SessionCount returns the number of sessions (online and offline).
func (s *Server) SessionCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sessions)
}

// ClientCount returns the number of connected (CONNACKed) clients.
func (s *Server) ClientCount() int { return int(s.online.Load()) }

// RetainedCount returns the number of retained messages.
func (s *Server) RetainedCount() int { return s.retained.Len() }

// SubscriptionCount returns the number of subscriptions.
func (s *Server) SubscriptionCount() int { return s.index.Len() }

// recovered logs a panic contained by the broker (with its stack) and
// counts it. kv are extra log attributes.
func (s *Server) recovered(r any, kv ...any) {
	s.stats.panics.Add(1)
	args := append([]any{"panic", fmt.Sprint(r), "stack", string(debug.Stack())}, kv...)
	s.log.Error("internal error contained; the connection or task is closed", args...)
}

// safely runs fn, containing a panic (timers and background tasks).
func (s *Server) safely(what string, fn func()) {
	defer func() {
		if r := recover(); r != nil {
			s.recovered(r, "task", what)
		}
	}()
	fn()
}
