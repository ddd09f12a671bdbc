package broker

// Helpers of the seams tests (seams_*_test.go): white-box tests of the
// session state machine, Txn, shared dispatch, the Subscriber interface,
// the internal API, hooks and session export/import. Every identifier here
// starts with "seam" so that the other test files of the package (written
// in parallel) cannot clash with them.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/isobar-mq/isobar/internal/mqtt/packet"
	"github.com/isobar-mq/isobar/internal/store"
	"github.com/isobar-mq/isobar/internal/topic"
)

// seamWait bounds every wait for something that must happen (generous: the
// tests run with -race on a shared two-core machine; passing tests never
// wait for it). seamQuiet is how long a negative check listens.
const (
	seamWait  = 5 * time.Second
	seamQuiet = 200 * time.Millisecond
)

// seamEventually polls cond every 2 ms until it returns "" or seamWait
// passes, then fails with its last answer.
func seamEventually(t testing.TB, cond func() string) {
	t.Helper()
	deadline := time.Now().Add(seamWait)
	for {
		msg := cond()
		if msg == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not reached within %v: %s", seamWait, msg)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// seamNewServer returns a server that is shut down when the test ends.
func seamNewServer(t testing.TB, o Options, auth Auth) *Server {
	t.Helper()
	s := New(o, nil, auth)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), seamWait)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return s
}

// seamListen serves s on a loopback listener and returns its address.
func seamListen(t testing.TB, s *Server) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.Serve(l, "mqtt")
	}()
	t.Cleanup(func() {
		_ = l.Close()
		<-done
	})
	return l.Addr().String()
}

// seamPebble opens a Pebble store in dir, closed when the test ends (after
// any server registered later was shut down).
func seamPebble(t testing.TB, dir string) *store.PebbleStore {
	t.Helper()
	st, err := store.Open(store.Options{Dir: dir, Sync: store.SyncAlways})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() {
		if err := st.Close(); err != nil {
			t.Errorf("close store: %v", err)
		}
	})
	return st
}

// ---------------------------------------------------------------------------
// An in-process client: a *client attached to its session over a conn that
// records what the server writes.

// seamRecConn is a net.Conn that records writes; reads block until Close.
type seamRecConn struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	closed chan struct{}
	once   sync.Once
}

func newSeamRecConn() *seamRecConn { return &seamRecConn{closed: make(chan struct{})} }

func (r *seamRecConn) Read([]byte) (int, error) { <-r.closed; return 0, io.EOF }
func (r *seamRecConn) Write(b []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.buf.Write(b)
}
func (r *seamRecConn) Close() error { r.once.Do(func() { close(r.closed) }); return nil }
func (r *seamRecConn) LocalAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1883}
}
func (r *seamRecConn) RemoteAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}
}
func (r *seamRecConn) SetDeadline(time.Time) error      { return nil }
func (r *seamRecConn) SetReadDeadline(time.Time) error  { return nil }
func (r *seamRecConn) SetWriteDeadline(time.Time) error { return nil }

// seamClient is an in-process client of a server.
type seamClient struct {
	t       testing.TB
	s       *Server
	c       *client
	conn    *seamRecConn
	connack packet.Connack
	// pending holds packets read with the CONNACK, returned by the next
	// packets call.
	pending []any
}

// seamAttach connects an in-process client: attach, commit, and the
// CONNACK read. quota is its in-flight window (Receive Maximum); maxOut
// its Maximum Packet Size (0: none).
func seamAttach(t testing.TB, s *Server, id string, version byte, clean bool, expiry uint32, quota int, maxOut uint32) *seamClient {
	t.Helper()
	sc := &seamClient{t: t, s: s, conn: newSeamRecConn()}
	c := newClient(s, sc.conn, "test")
	c.id = id
	c.version = version
	c.sendQuota = quota
	c.maxOut = maxOut
	c.tx = s.newTxn()
	sc.c = c
	if !s.attach(c, clean, expiry, nil, 0, &sc.connack, c.tx) {
		t.Fatalf("attach %s refused", id)
	}
	if err := c.tx.commit(s); err != nil {
		t.Fatalf("attach %s: commit: %v", id, err)
	}
	pkts := sc.packets()
	if len(pkts) == 0 {
		t.Fatalf("attach %s: no CONNACK", id)
	}
	if _, ok := pkts[0].(*packet.Connack); !ok {
		t.Fatalf("attach %s: first packet %s", id, seamDescribe(pkts[0]))
	}
	sc.pending = pkts[1:]
	t.Cleanup(func() { _ = sc.conn.Close() })
	return sc
}

func (sc *seamClient) sess() *session { return sc.c.sess }

// flushed waits until the client's flusher has written everything queued.
func (sc *seamClient) flushed() {
	sc.t.Helper()
	c := sc.c
	deadline := time.Now().Add(seamWait)
	for {
		c.omu.Lock()
		idle := !c.flushing && len(c.ovec) == 0 && len(c.obuf) == 0
		c.omu.Unlock()
		if idle {
			return
		}
		if time.Now().After(deadline) {
			sc.t.Fatal("output not flushed in time")
		}
		time.Sleep(time.Millisecond)
	}
}

// packets returns every packet the server wrote since the last call.
func (sc *seamClient) packets() []any {
	sc.t.Helper()
	sc.flushed()
	out := sc.pending
	sc.pending = nil
	sc.conn.mu.Lock()
	b := append([]byte(nil), sc.conn.buf.Bytes()...)
	sc.conn.buf.Reset()
	sc.conn.mu.Unlock()
	r := bytes.NewReader(b)
	for r.Len() > 0 {
		p, err := packet.ReadPacket(r, sc.c.version, 0)
		if err != nil {
			sc.t.Fatalf("decoding the server's output: %v", err)
		}
		out = append(out, p)
	}
	return out
}

// publishes returns the PUBLISH packets written since the last call,
// failing on anything else.
func (sc *seamClient) publishes() []*packet.Publish {
	sc.t.Helper()
	var out []*packet.Publish
	for _, p := range sc.packets() {
		pub, ok := p.(*packet.Publish)
		if !ok {
			sc.t.Fatalf("expected only PUBLISH packets, got %s", seamDescribe(p))
		}
		out = append(out, pub)
	}
	return out
}

// detach ends the connection (normal: DISCONNECT 0x00 semantics).
func (sc *seamClient) detach() {
	sc.s.detach(sc.c, true)
	sc.s.clientGone(sc.c)
	_ = sc.conn.Close()
}

// ack feeds an acknowledgement from the client through the server's
// handler and commits the read loop's transaction.
func (sc *seamClient) ack(t packet.Type, id uint16, reason byte) {
	sc.t.Helper()
	a := packet.Ack{Type: t, PacketID: id, ReasonCode: reason}
	b := a.Append(nil, sc.c.version)
	h, n, err := packet.ParseFixedHeader(b)
	if err != nil {
		sc.t.Fatal(err)
	}
	if err := sc.c.handleAck(h, b[n:]); err != nil {
		sc.t.Fatalf("%s %d: %v", t, id, err)
	}
	if err := sc.c.tx.commit(sc.s); err != nil {
		sc.t.Fatalf("%s %d: commit: %v", t, id, err)
	}
}

// seamDeliver delivers m to sess at qos (outside any client transaction
// unless tx is given).
func seamDeliver(s *Server, sess *session, m *Message, qos byte, tx *Txn) {
	if tx == nil {
		tx = s.newTxn()
		defer func() { _ = tx.commit(s) }()
	}
	sess.Deliver(Delivery{Msg: m, QoS: qos}, tx, time.Now().UnixNano())
}

// seamMsg is a message as a client would have published it.
func seamMsg(topicName, payload string, qos byte) *Message {
	return &Message{Topic: topicName, Payload: []byte(payload), QoS: qos, Received: time.Now().UnixNano(), From: "publisher"}
}

// seamCheckIdle requires the session to hold nothing and every byte it
// held to be released, in the session and server-wide.
func seamCheckIdle(t testing.TB, s *Server, sess *session) {
	t.Helper()
	sess.mu.Lock()
	bytes, nq, nm, sent := sess.bytes, len(sess.queue), len(sess.msgs), sess.sent
	sess.mu.Unlock()
	if bytes != 0 || nq != 0 || nm != 0 || sent != 0 {
		t.Fatalf("session %s not idle: bytes %d, queue %d, msgs %d, sent %d", sess.id, bytes, nq, nm, sent)
	}
	if q := s.QueuedBytes(); q != 0 {
		t.Fatalf("server queuedBytes %d, want 0", q)
	}
}

func seamDescribe(pkt any) string {
	switch v := pkt.(type) {
	case *packet.Publish:
		return fmt.Sprintf("PUBLISH{topic %q qos %d retain %v dup %v id %d payload %q subids %v}", v.Topic, v.QoS, v.Retain, v.Dup, v.PacketID, v.Payload, v.Props.SubscriptionIdentifiers)
	case *packet.Ack:
		return fmt.Sprintf("%s{id %d reason 0x%02X}", v.Type, v.PacketID, v.ReasonCode)
	case *packet.Connack:
		return fmt.Sprintf("CONNACK{present %v code 0x%02X}", v.SessionPresent, v.ReasonCode)
	case *packet.Suback:
		return fmt.Sprintf("SUBACK{id %d codes %v}", v.PacketID, v.ReasonCodes)
	case *packet.Disconnect:
		return fmt.Sprintf("DISCONNECT{reason 0x%02X}", v.ReasonCode)
	default:
		return fmt.Sprintf("%T%+v", pkt, pkt)
	}
}

// ---------------------------------------------------------------------------
// A fake store: commits recorded, failures injectable.

type seamStore struct {
	mu      sync.Mutex
	failErr error // commits fail with it while set
	commits int   // successful Commit calls
	noSync  int   // successful CommitNoSync calls
	failed  int   // failed commits
	applied []string
	// onCommit, when set, runs at the start of every commit (outside mu).
	onCommit func()
}

func (st *seamStore) setFail(err error) {
	st.mu.Lock()
	st.failErr = err
	st.mu.Unlock()
}

func (st *seamStore) counts() (commits, noSync, failed int) {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.commits, st.noSync, st.failed
}

func (st *seamStore) ops() []string {
	st.mu.Lock()
	defer st.mu.Unlock()
	return append([]string(nil), st.applied...)
}

func (st *seamStore) NewBatch() store.Batch                               { return &seamBatch{st: st} }
func (st *seamStore) LoadSessions(func(*store.LoadedSession) error) error { return nil }
func (st *seamStore) LoadRetained(func(*store.MessageRecord) error) error { return nil }
func (st *seamStore) Stats() store.Stats                                  { return store.Stats{} }
func (st *seamStore) Writable() error                                     { return nil }
func (st *seamStore) Close() error                                        { return nil }

type seamBatch struct {
	st  *seamStore
	ops []string
}

func (b *seamBatch) add(format string, args ...any) {
	b.ops = append(b.ops, fmt.Sprintf(format, args...))
}

func (b *seamBatch) PutSession(s *store.SessionRecord) { b.add("PutSession %s", s.ClientID) }
func (b *seamBatch) DeleteSession(id string)           { b.add("DeleteSession %s", id) }
func (b *seamBatch) PutSubscription(id string, s *store.SubscriptionRecord) {
	b.add("PutSubscription %s %s", id, s.Filter)
}
func (b *seamBatch) DeleteSubscription(id, f string) { b.add("DeleteSubscription %s %s", id, f) }
func (b *seamBatch) PutMessage(id string, seq uint64, m *store.MessageRecord) {
	b.add("PutMessage %s %d state %d", id, seq, m.State)
}
func (b *seamBatch) DeleteMessage(id string, seq uint64) { b.add("DeleteMessage %s %d", id, seq) }
func (b *seamBatch) PutInbound(id string, p uint16)      { b.add("PutInbound %s %d", id, p) }
func (b *seamBatch) DeleteInbound(id string, p uint16)   { b.add("DeleteInbound %s %d", id, p) }
func (b *seamBatch) PutRetained(m *store.MessageRecord)  { b.add("PutRetained %s", m.Topic) }
func (b *seamBatch) DeleteRetained(t string)             { b.add("DeleteRetained %s", t) }
func (b *seamBatch) Len() int                            { return len(b.ops) }
func (b *seamBatch) Commit() error                       { return b.commit(false) }
func (b *seamBatch) CommitNoSync() error                 { return b.commit(true) }

func (b *seamBatch) commit(noSync bool) error {
	ops := b.ops
	b.ops = nil // empty afterwards, whatever the outcome (as Pebble)
	st := b.st
	st.mu.Lock()
	hook := st.onCommit
	st.mu.Unlock()
	if hook != nil {
		hook()
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.failErr != nil {
		st.failed++
		return st.failErr
	}
	if noSync {
		st.noSync++
	} else {
		st.commits++
	}
	st.applied = append(st.applied, ops...)
	return nil
}

var errSeamDisk = errors.New("disk on fire")

// ---------------------------------------------------------------------------
// An Auth with per-test rules (nil rule: allowed).

type seamAuth struct {
	pub, sub, recv func(c ClientInfo, t string) bool
}

func (a *seamAuth) Authenticate(r AuthRequest) AuthResponse {
	return AuthResponse{Result: AuthOK}
}
func (a *seamAuth) CanPublish(c ClientInfo, t string) bool   { return a.pub == nil || a.pub(c, t) }
func (a *seamAuth) CanSubscribe(c ClientInfo, f string) bool { return a.sub == nil || a.sub(c, f) }
func (a *seamAuth) CanReceive(c ClientInfo, t string) bool   { return a.recv == nil || a.recv(c, t) }

// ---------------------------------------------------------------------------
// A test double of a remote cluster node: a Subscriber with no client
// identifier (No Local never applies), allowed to receive everything,
// that records deliveries and takes QoS 1/2 messages asynchronously: it
// holds the publisher's transaction and releases it from another
// goroutine after delay (with err).

type seamRemote struct {
	delay time.Duration

	mu       sync.Mutex
	err      error
	got      []Delivery
	released []time.Time
	offline  bool
	notify   chan struct{}
	wg       sync.WaitGroup
}

func newSeamRemote(t testing.TB, delay time.Duration, err error) *seamRemote {
	r := &seamRemote{delay: delay, err: err, notify: make(chan struct{}, 1)}
	t.Cleanup(func() {
		// No release goroutine outlives the test. The test learnt of the
		// deliveries over sockets, which the race detector does not see
		// as synchronisation: mu orders every Add before this Wait.
		r.mu.Lock()
		wg := &r.wg
		r.mu.Unlock()
		wg.Wait()
	})
	return r
}

func (r *seamRemote) SubscriberID() string   { return "" }
func (r *seamRemote) MayReceive(string) bool { return true }
func (r *seamRemote) Online() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return !r.offline
}

func (r *seamRemote) Deliver(d Delivery, tx *Txn, now int64) {
	d.SubIDs = append([]uint32(nil), d.SubIDs...) // the router reuses nothing, but be safe
	hold := d.QoS > 0 && tx != nil
	r.mu.Lock()
	r.got = append(r.got, d)
	if hold {
		r.wg.Add(1) // under mu: the cleanup's Wait locks it first
	}
	r.mu.Unlock()
	select {
	case r.notify <- struct{}{}:
	default:
	}
	if !hold {
		return
	}
	release := tx.Hold()
	go func() {
		defer r.wg.Done()
		time.Sleep(r.delay)
		r.mu.Lock()
		r.released = append(r.released, time.Now())
		err := r.err
		r.mu.Unlock()
		release(err)
	}()
}

// setErr changes what the next releases report.
func (r *seamRemote) setErr(err error) {
	r.mu.Lock()
	r.err = err
	r.mu.Unlock()
}

func (r *seamRemote) deliveries() []Delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Delivery(nil), r.got...)
}

func (r *seamRemote) releaseTimes() []time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]time.Time(nil), r.released...)
}

// waitN waits until the double has n deliveries.
func (r *seamRemote) waitN(t testing.TB, n int) []Delivery {
	t.Helper()
	seamEventually(t, func() string {
		if got := len(r.deliveries()); got < n {
			return fmt.Sprintf("remote has %d deliveries, want %d", got, n)
		}
		return ""
	})
	return r.deliveries()
}

// seamSubscribe puts any Subscriber in the server's index, as a cluster
// layer would.
func seamSubscribe(s *Server, sub Subscriber, filter string, opts topic.Options) {
	s.index.Subscribe(sub, filter, opts)
}

// ---------------------------------------------------------------------------
// A raw MQTT connection over loopback TCP, using the project's codec.

type seamPC struct {
	t   testing.TB
	c   net.Conn
	ver byte
}

func seamDial(t testing.TB, addr string, ver byte) *seamPC {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, seamWait)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return &seamPC{t: t, c: c, ver: ver}
}

func (p *seamPC) write(b []byte) {
	p.t.Helper()
	_ = p.c.SetWriteDeadline(time.Now().Add(seamWait))
	if _, err := p.c.Write(b); err != nil {
		p.t.Fatalf("write: %v", err)
	}
}

func (p *seamPC) try(d time.Duration) (any, error) {
	_ = p.c.SetReadDeadline(time.Now().Add(d))
	return packet.ReadPacket(p.c, p.ver, 0)
}

func (p *seamPC) next() any {
	p.t.Helper()
	pkt, err := p.try(seamWait)
	if err != nil {
		p.t.Fatalf("waiting for a packet: %v", err)
	}
	return pkt
}

// connectAck sends CONNECT and returns the CONNACK whatever its code.
func (p *seamPC) connectAck(cp packet.Connect) *packet.Connack {
	p.t.Helper()
	cp.ProtocolVersion = p.ver
	if cp.KeepAlive == 0 {
		cp.KeepAlive = 60
	}
	p.write(cp.Append(nil))
	pkt := p.next()
	ack, ok := pkt.(*packet.Connack)
	if !ok {
		p.t.Fatalf("expected CONNACK, got %s", seamDescribe(pkt))
	}
	return ack
}

func (p *seamPC) connect(cp packet.Connect) *packet.Connack {
	p.t.Helper()
	ack := p.connectAck(cp)
	if ack.ReasonCode != 0 {
		p.t.Fatalf("CONNACK code 0x%02X", ack.ReasonCode)
	}
	return ack
}

// subscribe sends one SUBSCRIBE (with a subscription identifier if id > 0)
// and returns the SUBACK.
func (p *seamPC) subscribe(pid uint16, subID uint32, subs ...packet.Subscription) *packet.Suback {
	p.t.Helper()
	sp := packet.Subscribe{PacketID: pid, Subs: subs}
	if subID > 0 {
		sp.Props.SubscriptionIdentifiers = []uint32{subID}
		sp.Props.Set(packet.PropSubscriptionIdentifier)
	}
	p.write(sp.Append(nil, p.ver))
	pkt := p.next()
	sa, ok := pkt.(*packet.Suback)
	if !ok || sa.PacketID != pid {
		p.t.Fatalf("expected SUBACK %d, got %s", pid, seamDescribe(pkt))
	}
	return sa
}

// sub subscribes to one filter and requires it granted at qos.
func (p *seamPC) sub(filter string, qos byte) {
	p.t.Helper()
	sa := p.subscribe(1, 0, packet.Subscription{Filter: filter, QoS: qos})
	if len(sa.ReasonCodes) != 1 || sa.ReasonCodes[0] != qos {
		p.t.Fatalf("SUBACK for %s: %v", filter, sa.ReasonCodes)
	}
}

func (p *seamPC) publish(pub packet.Publish) {
	p.t.Helper()
	p.write(pub.Append(nil, p.ver))
}

func (p *seamPC) ack(t packet.Type, id uint16) {
	p.t.Helper()
	a := packet.Ack{Type: t, PacketID: id}
	p.write(a.Append(nil, p.ver))
}

func (p *seamPC) expectAck(t packet.Type, id uint16) *packet.Ack {
	p.t.Helper()
	pkt := p.next()
	a, ok := pkt.(*packet.Ack)
	if !ok || a.Type != t || a.PacketID != id {
		p.t.Fatalf("expected %s %d, got %s", t, id, seamDescribe(pkt))
	}
	return a
}

func (p *seamPC) nextPublish() *packet.Publish {
	p.t.Helper()
	pkt := p.next()
	pub, ok := pkt.(*packet.Publish)
	if !ok {
		p.t.Fatalf("expected PUBLISH, got %s", seamDescribe(pkt))
	}
	return pub
}

func (p *seamPC) expectNothing(d time.Duration) {
	p.t.Helper()
	pkt, err := p.try(d)
	if err == nil {
		p.t.Fatalf("expected nothing, got %s", seamDescribe(pkt))
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		p.t.Fatalf("expected nothing, connection ended: %v", err)
	}
}

func (p *seamPC) expectClosed() {
	p.t.Helper()
	pkt, err := p.try(seamWait)
	if err == nil {
		p.t.Fatalf("expected the connection to close, got %s", seamDescribe(pkt))
	}
	if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !strings.Contains(err.Error(), "reset") {
		p.t.Fatalf("expected the connection to close: %v", err)
	}
}

// ping sends PINGREQ and waits for PINGRESP: everything sent before it
// was handled.
func (p *seamPC) ping() {
	p.t.Helper()
	p.write(packet.AppendPingreq(nil))
	if pkt := p.next(); pkt != packet.PINGRESP {
		p.t.Fatalf("expected PINGRESP, got %s", seamDescribe(pkt))
	}
}

// disconnect sends DISCONNECT 0x00 and waits for the server to close.
func (p *seamPC) disconnect() {
	p.t.Helper()
	d := packet.Disconnect{}
	p.write(d.Append(nil, p.ver))
	p.expectClosed()
}

// seamWaitClients waits until s counts n connected clients.
func seamWaitClients(t testing.TB, s *Server, n int) {
	t.Helper()
	seamEventually(t, func() string {
		if c := s.ClientCount(); c != n {
			return fmt.Sprintf("%d clients connected, want %d", c, n)
		}
		return ""
	})
}
