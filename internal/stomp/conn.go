package stomp

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/isobar-mq/isobar/internal/broker"
	"github.com/isobar-mq/isobar/internal/listener"
	"github.com/isobar-mq/isobar/internal/stomp/queue"
	"github.com/isobar-mq/isobar/internal/stomp/selector"
	"github.com/isobar-mq/isobar/internal/topic"
)

// Ack modes.
const (
	ackAuto = iota
	ackClient
	ackIndividual
)

var (
	errShutdown      = errors.New("server shutting down")
	errConnectTime   = errors.New("no CONNECT frame in time")
	errHeartBeatLost = errors.New("heart-beat timeout")
)

// outItem is one frame (or heart-beat) waiting to be written.
type outItem struct {
	b     []byte
	cmd   string
	kind  string // messages: "topic" or "queue"
	after func() // run once written (auto-ack of queue messages)
}

// pendingMsg is a delivered MESSAGE awaiting ACK or NACK.
type pendingMsg struct {
	sub *subscription
	qid uint64 // queue message id (queue subscriptions)
}

// subscription is one SUBSCRIBE of a connection. For topics it is the
// broker.Subscriber in the index; for queues the queue.Consumer.
type subscription struct {
	c       *conn
	id      string
	d       dest
	dstName string // the destination header of MESSAGE frames
	ack     int
	sel     *selector.Selector
	window  int
	filter  string // MQTT filter (topics)
	trusted bool   // temporary topic of this connection: no ACL

	qsub  queueSub // queue subscriptions; set before ready closes
	ready chan struct{}

	// Guarded by c.mu.
	unacked   []string // message ids in delivery order (client ack modes)
	closed    bool
	needReady bool
}

// transaction holds the SEND, ACK and NACK frames of a transaction until
// COMMIT.
type transaction struct{ frames []*Frame }

// conn is one STOMP connection. The reader goroutine (serve) decodes and
// executes frames; a writer goroutine writes what is queued in out, with
// a deadline, and the heart-beats. Deliveries (from the router and the
// queue manager) encode their MESSAGE frames into out under mu and never
// block.
type conn struct {
	g        *Gateway
	nc       net.Conn
	listener string
	remote   string
	br       *bufio.Reader
	dec      *Decoder
	sid      string
	version  string
	info     broker.ClientInfo

	connected  bool
	connectBy  time.Time
	hbIn       time.Duration // expected client heart-beat interval (0 = none)
	hbOut      time.Duration // our heart-beat interval (0 = none)
	pub        *broker.Publisher
	tpub       *broker.Publisher // trusted, for temporary topics
	pubPending bool
	subs       map[string]*subscription
	txs        map[string]*transaction
	tempQueues map[string]bool

	stopping atomic.Bool // shutdown or an asynchronous failure: the reader stops
	failMsg  atomic.Pointer[string]

	mu         sync.Mutex
	out        []outItem
	spare      []outItem
	outBytes   int
	outClosed  bool // the writer drains and exits
	closing    bool // no new MESSAGE frames
	msgSeq     uint64
	pending    map[string]pendingMsg
	wake       chan struct{}
	writerDone chan struct{}
	writeErr   error
	waiting    []*subscription // queue subscriptions refused for lack of room
}

func newConn(g *Gateway, nc net.Conn, name string) *conn {
	var b [12]byte
	_, _ = rand.Read(b[:])
	c := &conn{
		g: g, nc: nc, listener: name, remote: nc.RemoteAddr().String(),
		sid:        "stomp-" + g.sidTag + hex.EncodeToString(b[:]),
		subs:       make(map[string]*subscription),
		txs:        make(map[string]*transaction),
		tempQueues: make(map[string]bool),
		pending:    make(map[string]pendingMsg),
		wake:       make(chan struct{}, 1),
		writerDone: make(chan struct{}),
		connectBy:  time.Now().Add(g.opts.ConnectTimeout),
	}
	c.br = bufio.NewReaderSize(deadlineReader{c}, 16<<10)
	c.dec = NewDecoder(c.br, g.opts.Limits)
	return c
}

// deadlineReader sets the read deadline before every read of the socket:
// the CONNECT deadline until the connection is established, then twice
// the client's heart-beat interval (when it promised one).
type deadlineReader struct{ c *conn }

func (r deadlineReader) Read(p []byte) (int, error) {
	c := r.c
	if c.stopping.Load() {
		return 0, errShutdown
	}
	var dl time.Time
	switch {
	case !c.connected:
		dl = c.connectBy
	case c.hbIn > 0:
		dl = time.Now().Add(2*c.hbIn + c.hbIn/2)
	}
	_ = c.nc.SetReadDeadline(dl)
	if c.stopping.Load() {
		// shutdown may have set its deadline before ours replaced it.
		return 0, errShutdown
	}
	n, err := c.nc.Read(p)
	if c.stopping.Load() {
		return n, errShutdown
	}
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		if !c.connected {
			return n, errConnectTime
		}
		return n, errHeartBeatLost
	}
	return n, err
}

// shutdown makes the reader stop (the gateway is closing).
func (c *conn) shutdown() {
	c.stopping.Store(true)
	_ = c.nc.SetReadDeadline(time.Now())
}

// failAsync ends the connection from another goroutine with an ERROR.
func (c *conn) failAsync(msg string) {
	c.failMsg.CompareAndSwap(nil, &msg)
	c.shutdown()
}

func (c *conn) serve() {
	m := c.g.m
	m.connections.Inc()
	m.connTotal.Inc()
	defer m.connections.Dec()
	go c.writer()
	var final *Frame
	err := func() (err error) {
		defer func() {
			if r := recover(); r != nil {
				c.g.log.Error("panic in a STOMP connection", "remote", c.remote, "panic", r)
				err = protoErr("internal", "internal error")
			}
		}()
		return c.readLoop()
	}()
	if c.pub != nil {
		_ = c.pub.Close()
	}
	if c.tpub != nil {
		_ = c.tpub.Close()
	}
	c.cleanup()
	var reason, msg, receipt string
	var pe *ProtocolError
	var re *receiptError
	switch {
	case err == nil:
	case errors.As(err, &re):
		reason, msg, receipt = re.Reason, re.Msg, re.receipt
	case errors.As(err, &pe):
		reason, msg = pe.Reason, pe.Msg
	case errors.Is(err, errShutdown):
		reason, msg = "shutdown", "server shutting down"
		if p := c.failMsg.Load(); p != nil {
			reason, msg = "store", *p
		}
	case errors.Is(err, errConnectTime):
		reason, msg = "connect_timeout", "no CONNECT frame within "+c.g.opts.ConnectTimeout.String()
	case errors.Is(err, errHeartBeatLost):
		reason, msg = "heartbeat_timeout", "no data from the client within 2.5 times its heart-beat interval"
	default:
		c.g.log.Debug("STOMP connection closed", "remote", c.remote, "session", c.sid, "err", err)
	}
	c.mu.Lock()
	werr := c.writeErr
	c.mu.Unlock()
	if werr != nil {
		reason = "" // the socket is gone: nothing more can be said
	}
	if reason != "" {
		final = c.errorFrame(reason, msg, receipt)
		if reason == "bad_version" {
			final.Headers = append(final.Headers, Header{"version", "1.0,1.1,1.2"}) // STOMP 1.2 "Protocol Negotiation"
		}
	}
	c.mu.Lock()
	if final != nil {
		c.enqueueLocked(final)
	}
	c.outClosed = true
	c.mu.Unlock()
	c.signal()
	if final != nil || err == nil {
		// The last RECEIPT or ERROR goes out before the close.
		t := time.NewTimer(c.g.opts.WriteTimeout)
		select {
		case <-c.writerDone:
		case <-t.C:
		}
		t.Stop()
	}
	_ = c.nc.Close()
	<-c.writerDone
}

// receiptError is a protocol error about a frame that asked for a
// receipt: the ERROR carries receipt-id.
type receiptError struct {
	*ProtocolError
	receipt string
}

func (c *conn) errorFrame(reason, msg, receipt string) *Frame {
	c.g.m.errors.WithLabelValues(reason).Inc()
	c.g.log.Debug("STOMP protocol error", "remote", c.remote, "session", c.sid, "reason", reason, "msg", msg)
	f := &Frame{Command: "ERROR"}
	f.Add("message", msg)
	if receipt != "" {
		f.Add("receipt-id", receipt)
	}
	f.Add("content-type", "text/plain")
	f.Body = []byte(msg + "\n")
	f.Add("content-length", strconv.Itoa(len(f.Body)))
	return f
}

// cleanup ends every subscription, aborts open transactions and deletes
// the connection's temporary queues.
func (c *conn) cleanup() {
	c.mu.Lock()
	c.closing = true
	c.mu.Unlock()
	for _, s := range c.subs {
		c.endSub(s)
	}
	clear(c.subs)
	clear(c.txs)
	for q := range c.tempQueues {
		c.g.qs.Delete(q)
	}
}

func (c *conn) readLoop() error {
	for {
		if c.pubPending && c.br.Buffered() == 0 {
			if err := c.flush(); err != nil {
				return err
			}
		}
		f, err := c.dec.Decode()
		if err != nil {
			return err
		}
		c.g.m.framesIn.WithLabelValues(commandLabel(f.Command)).Inc()
		done, err := c.handle(f)
		if err != nil {
			var pe *ProtocolError
			if errors.As(err, &pe) {
				if r, ok := f.Get("receipt"); ok {
					return &receiptError{ProtocolError: pe, receipt: r}
				}
			}
			return err
		}
		if done {
			return nil
		}
	}
}

func (c *conn) flush() error {
	c.pubPending = false
	if c.pub != nil {
		if err := c.pub.Flush(); err != nil {
			return protoErr("store", "message not stored: %v", err)
		}
	}
	if c.tpub != nil {
		if err := c.tpub.Flush(); err != nil {
			return protoErr("store", "message not stored: %v", err)
		}
	}
	return nil
}

func commandLabel(cmd string) string {
	switch cmd {
	case "CONNECT", "STOMP", "SEND", "SUBSCRIBE", "UNSUBSCRIBE", "ACK", "NACK", "BEGIN", "COMMIT", "ABORT", "DISCONNECT":
		return cmd
	}
	return "other"
}

// handle executes one frame. done ends the connection cleanly.
func (c *conn) handle(f *Frame) (done bool, err error) {
	if !c.connected {
		if f.Command != "CONNECT" && f.Command != "STOMP" {
			return false, protoErr("not_connected", "%s before CONNECT", safeCmd(f.Command))
		}
		return false, c.handleConnect(f)
	}
	switch f.Command {
	case "SEND":
		if tx, ok := f.Get("transaction"); ok {
			return false, c.addToTx(tx, f)
		}
		return false, c.handleSend(f)
	case "SUBSCRIBE":
		err = c.handleSubscribe(f)
	case "UNSUBSCRIBE":
		err = c.handleUnsubscribe(f)
	case "ACK", "NACK":
		if tx, ok := f.Get("transaction"); ok {
			if err := c.checkAck(f); err != nil {
				return false, err
			}
			return false, c.addToTx(tx, f)
		}
		err = c.handleAck(f)
	case "BEGIN", "COMMIT", "ABORT":
		err = c.handleTx(f)
	case "DISCONNECT":
		if r, ok := f.Get("receipt"); ok {
			// Everything sent so far is routed and durable before the
			// receipt goes out.
			if err := c.flush(); err != nil {
				return false, err
			}
			c.receipt(r)
		}
		return true, nil
	case "CONNECT", "STOMP":
		return false, protoErr("already_connected", "already connected")
	default:
		return false, protoErr("unknown_command", "unknown command %q", safeCmd(f.Command))
	}
	if err != nil {
		return false, err
	}
	if r, ok := f.Get("receipt"); ok {
		c.receipt(r)
	}
	return false, nil
}

func safeCmd(s string) string {
	if len(s) > 32 {
		s = s[:32] + "..."
	}
	return strings.ToValidUTF8(s, "?")
}

func (c *conn) receipt(id string) {
	f := &Frame{Command: "RECEIPT", Headers: []Header{{"receipt-id", id}}}
	c.mu.Lock()
	c.enqueueLocked(f)
	c.mu.Unlock()
	c.signal()
}

// negotiate picks the highest version both sides speak.
func negotiate(accept string, has bool) (string, bool) {
	if !has {
		return V10, true
	}
	best := ""
	for v := range strings.SplitSeq(accept, ",") {
		switch v = strings.TrimSpace(v); v {
		case V10, V11, V12:
			if v > best {
				best = v
			}
		}
	}
	return best, best != ""
}

func (c *conn) handleConnect(f *Frame) error {
	o := &c.g.opts
	av, has := f.Get("accept-version")
	v, ok := negotiate(av, has)
	if !ok {
		return protoErr("bad_version", "supported protocol versions are 1.0,1.1,1.2")
	}
	c.mu.Lock()
	c.version = v // read by deliveries and the writer under mu
	c.mu.Unlock()
	c.dec.Version = v
	// Heart-beating (STOMP 1.1+): the client's cx,cy against our sx,sy.
	if v != V10 {
		if hb, ok := f.Get("heart-beat"); ok {
			cx, cy, ok := parseHeartBeat(hb)
			if !ok {
				return protoErr("bad_header", "heart-beat must be two integers cx,cy")
			}
			sx, sy := durMS(o.HeartBeatSend), durMS(o.HeartBeatReceive)
			if cx > 0 && sy > 0 {
				c.hbIn = time.Duration(max(cx, sy)) * time.Millisecond
			}
			if cy > 0 && sx > 0 {
				c.mu.Lock()
				c.hbOut = time.Duration(max(cy, sx)) * time.Millisecond
				c.mu.Unlock()
			}
		}
	}
	if c.g.listenerFull(c.listener) {
		return protoErr("listener_full", "listener connection limit reached")
	}
	login, hasLogin := f.Get("login")
	pass, hasPass := f.Get("passcode")
	info := broker.ClientInfo{ClientID: c.sid, Username: login, Listener: c.listener}
	if a := o.Auth; a != nil {
		var remote netip.Addr
		if ap, err := netip.ParseAddrPort(c.remote); err == nil {
			remote = ap.Addr().Unmap()
		}
		res := a.Authenticate(broker.AuthRequest{
			ClientID: c.sid, Username: login, HasUsername: hasLogin,
			Password: []byte(pass), HasPassword: hasPass,
			Remote: remote, Listener: c.listener, Conn: c.nc,
		})
		if res.Delay > 0 {
			time.Sleep(min(res.Delay, 5*time.Second))
		}
		switch res.Result {
		case broker.AuthOK:
			if res.Username != "" {
				info.Username = res.Username
			}
			info.Role = res.Role
		case broker.AuthBadCredentials:
			c.g.log.Info("STOMP authentication failed", "user", login, "remote", c.remote, "listener", c.listener)
			return protoErr("auth", "bad login or passcode")
		default:
			c.g.log.Info("STOMP connection not authorized", "user", login, "remote", c.remote, "listener", c.listener)
			return protoErr("auth", "not authorized")
		}
	}
	c.info = info
	c.connected = true
	c.pub = c.g.srv.NewPublisher(broker.PublisherOptions{Client: info, Origin: broker.Origin{Kind: broker.OriginGateway, Name: c.listener}})
	r := &Frame{Command: "CONNECTED"}
	r.Add("version", v) // 1.0 too, as ActiveMQ does
	r.Add("session", c.sid)
	r.Add("server", "Isobar/"+o.Version)
	if v != V10 {
		r.Add("heart-beat", strconv.FormatInt(durMS(o.HeartBeatSend), 10)+","+strconv.FormatInt(durMS(o.HeartBeatReceive), 10))
	}
	c.mu.Lock()
	c.enqueueLocked(r)
	c.mu.Unlock()
	c.signal()
	c.g.log.Debug("STOMP client connected", "session", c.sid, "user", info.Username, "remote", c.remote, "version", v,
		"heart_beat_in", c.hbIn, "heart_beat_out", c.hbOut)
	return nil
}

func durMS(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64(d / time.Millisecond)
}

func parseHeartBeat(s string) (int64, int64, bool) {
	a, b, ok := strings.Cut(s, ",")
	if !ok {
		return 0, 0, false
	}
	x, err1 := strconv.ParseInt(strings.TrimSpace(a), 10, 32)
	y, err2 := strconv.ParseInt(strings.TrimSpace(b), 10, 32)
	if err1 != nil || err2 != nil || x < 0 || y < 0 {
		return 0, 0, false
	}
	return x, y, true
}

// destination reads and parses a frame's destination header.
func (c *conn) destination(f *Frame, filter bool) (dest, string, error) {
	ds, ok := f.Get("destination")
	if !ok || ds == "" {
		return dest{}, "", protoErr("missing_header", "%s without a destination header", f.Command)
	}
	d, err := parseDest(ds, c.sid, filter)
	if err != nil {
		return dest{}, ds, protoErr("bad_destination", "invalid destination %q (use /topic/..., /queue/..., /temp-topic/... or /temp-queue/...)", clip(ds))
	}
	return d, ds, nil
}

func clip(s string) string {
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return strings.ToValidUTF8(s, "?")
}

// queueACLTopic is the topic the ACL is asked about for a queue:
// "$queue/" and the queue name mapped like a topic name ('.' -> '/').
func queueACLTopic(name string) string {
	t, err := topicToMQTT(name, false)
	if err != nil {
		t = name
	}
	return "$queue/" + t
}

// replyTo rewrites a reply-to naming one of this connection's temporary
// destinations to the name other connections can send to.
func (c *conn) replyTo(f *Frame) string {
	v, ok := f.Get("reply-to")
	if !ok {
		return ""
	}
	if d, err := parseDest(v, c.sid, false); err == nil && (d.kind == destTempTopic || d.kind == destTempQueue) {
		return d.replyName()
	}
	return v
}

func (c *conn) handleSend(f *Frame) error {
	d, ds, err := c.destination(f, false)
	if err != nil {
		return err
	}
	a := c.g.opts.Auth
	receipt, wantReceipt := f.Get("receipt")
	switch d.kind {
	case destTopic, destTempTopic:
		m, err := c.toMQTT(f, d.mqtt, c.replyTo(f), time.Now().UnixMilli())
		if err != nil {
			return err
		}
		pub := c.pub
		if d.kind == destTempTopic {
			if c.tpub == nil {
				c.tpub = c.g.srv.NewPublisher(broker.PublisherOptions{Client: c.info, Trusted: true,
					Origin: broker.Origin{Kind: broker.OriginGateway, Name: c.listener}})
			}
			pub = c.tpub
		}
		c.g.m.messagesIn.WithLabelValues("topic").Inc()
		if m == nil {
			// Already expired: accepted and dropped, as a broker drops
			// an expired message.
			if wantReceipt {
				c.receipt(receipt)
			}
			return nil
		}
		var done func(broker.PublishResult)
		if wantReceipt {
			done = func(r broker.PublishResult) {
				if r.Err != nil {
					c.failAsync("message not stored: " + r.Err.Error())
					return
				}
				c.receipt(receipt)
			}
		}
		if err := pub.Publish(m, done); err != nil {
			if errors.Is(err, broker.ErrNotAuthorized) {
				return protoErr("not_authorized", "not authorized to send to %s", clip(ds))
			}
			return protoErr("refused", "message refused: %v", err)
		}
		c.pubPending = true
		if wantReceipt {
			return c.flush()
		}
		return nil
	case destQueue, destTempQueue:
		if d.kind == destQueue && a != nil && !a.CanPublish(c.info, queueACLTopic(d.name)) {
			return protoErr("not_authorized", "not authorized to send to %s", clip(ds))
		}
		if d.kind == destTempQueue && d.owner == c.sid {
			c.tempQueues[d.queue] = true
		}
		m, err := toQueue(f, c.replyTo(f))
		if err != nil {
			return err
		}
		c.g.m.messagesIn.WithLabelValues("queue").Inc()
		if err := c.g.qs.Send(d.queue, m); err != nil {
			switch {
			case errors.Is(err, queue.ErrFull):
				return protoErr("queue_full", "queue %s is full", clip(d.name))
			case errors.Is(err, queue.ErrBadName):
				return protoErr("bad_destination", "invalid queue name %q", clip(d.name))
			}
			return protoErr("queue", "message not queued: %v", err)
		}
		if wantReceipt {
			c.receipt(receipt)
		}
		return nil
	}
	return protoErr("bad_destination", "cannot send to %s", clip(ds))
}

func (c *conn) handleSubscribe(f *Frame) error {
	d, ds, err := c.destination(f, true)
	if err != nil {
		return err
	}
	id, ok := f.Get("id")
	if !ok || id == "" {
		if c.version != V10 {
			return protoErr("missing_header", "SUBSCRIBE without an id header")
		}
		id = ds // STOMP 1.0: the destination identifies the subscription
	}
	if _, dup := c.subs[id]; dup {
		return protoErr("duplicate_subscription", "subscription id %q already in use", clip(id))
	}
	if len(c.subs) >= c.g.opts.MaxSubscriptions {
		return protoErr("too_many_subscriptions", "more than %d subscriptions", c.g.opts.MaxSubscriptions)
	}
	s := &subscription{c: c, id: id, d: d, dstName: ds, ready: make(chan struct{})}
	switch v, _ := f.Get("ack"); v {
	case "", "auto":
	case "client":
		s.ack = ackClient
	case "client-individual":
		s.ack = ackIndividual
	default:
		return protoErr("bad_header", "ack must be auto, client or client-individual")
	}
	if v, ok := f.Get("activemq.prefetchSize"); ok {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil || n < 0 {
			return protoErr("bad_header", "activemq.prefetchSize must be a non-negative integer")
		}
		s.window = max(n, 1) // 0 would mean polling, which STOMP cannot do
	}
	if s.window == 0 && s.ack != ackAuto {
		// Unacknowledged messages are held for the client: bounded as
		// ActiveMQ bounds them by default.
		s.window = DefaultPrefetch
	}
	if v, ok := f.Get("selector"); ok {
		sel, err := selector.Parse(v)
		if err != nil {
			return protoErr("bad_selector", "invalid selector: %v", err)
		}
		s.sel = sel
	}
	a := c.g.opts.Auth
	switch d.kind {
	case destAdvisory:
		// Accepted so that ActiveMQ clients work; nothing is ever sent.
	case destTopic, destTempTopic:
		if d.kind == destTempTopic {
			if d.owner != c.sid {
				return protoErr("not_authorized", "a temporary topic can only be consumed by its connection")
			}
			s.trusted = true
		}
		s.filter = d.mqtt
		so := c.g.srv.Options()
		if err := topic.ValidateFilter(s.filter, so.MaxTopicLen, so.MaxTopicLevels); err != nil {
			return protoErr("bad_destination", "invalid destination %q: %v", clip(ds), err)
		}
		if !s.trusted && a != nil && !a.CanSubscribe(c.info, s.filter) {
			return protoErr("not_authorized", "not authorized to subscribe to %s", clip(ds))
		}
		c.g.srv.SubscribeRemote(s, s.filter, topic.Options{QoS: 2})
	case destQueue, destTempQueue:
		if d.kind == destTempQueue {
			if d.owner != c.sid {
				return protoErr("not_authorized", "a temporary queue can only be consumed by its connection")
			}
			c.tempQueues[d.queue] = true
		} else if a != nil && !a.CanSubscribe(c.info, queueACLTopic(d.name)) {
			return protoErr("not_authorized", "not authorized to subscribe to %s", clip(ds))
		}
		if d.kind == destQueue {
			s.dstName = prefixQueue + d.name
		} else {
			s.dstName = prefixTempQueue + d.name
		}
		qs, err := c.g.qs.Subscribe(d.queue, s.sel, s.window, (*queueConsumer)(s))
		if err != nil {
			close(s.ready)
			return protoErr("queue", "cannot subscribe to %s: %v", clip(ds), err)
		}
		s.qsub = qs
	}
	close(s.ready)
	c.subs[id] = s
	return nil
}

func (c *conn) handleUnsubscribe(f *Frame) error {
	id, ok := f.Get("id")
	if !ok || id == "" {
		if c.version == V10 {
			id, ok = f.Get("destination")
		}
		if !ok || id == "" {
			return protoErr("missing_header", "UNSUBSCRIBE without an id header")
		}
	}
	s, ok := c.subs[id]
	if !ok {
		return protoErr("unknown_subscription", "no subscription %q", clip(id))
	}
	delete(c.subs, id)
	c.endSub(s)
	return nil
}

// endSub removes a subscription from the broker or its queue. Messages of
// a topic subscription not yet acknowledged are dropped (ActiveMQ
// non-durable topic semantics); those of a queue go back to the queue.
func (c *conn) endSub(s *subscription) {
	switch s.d.kind {
	case destTopic, destTempTopic:
		c.g.srv.UnsubscribeRemote(s, s.filter)
	}
	c.mu.Lock()
	s.closed = true
	for _, id := range s.unacked {
		delete(c.pending, id)
	}
	s.unacked = nil
	c.mu.Unlock()
	if s.qsub != nil {
		s.qsub.Close()
	}
}

func ackID(f *Frame) (string, bool) {
	if v, ok := f.Get("id"); ok && v != "" {
		return v, true
	}
	if v, ok := f.Get("message-id"); ok && v != "" {
		return v, true
	}
	return "", false
}

func (c *conn) checkAck(f *Frame) error {
	if _, ok := ackID(f); !ok {
		if c.version == V12 {
			return protoErr("missing_header", "%s without an id header", f.Command)
		}
		return protoErr("missing_header", "%s without a message-id header", f.Command)
	}
	return nil
}

// handleAck applies an ACK or NACK: in client mode to every message of
// the subscription up to this one, else to this one. An id that is not
// (or no longer) pending is a protocol error, as for ActiveMQ.
func (c *conn) handleAck(f *Frame) error {
	if err := c.checkAck(f); err != nil {
		return err
	}
	id, _ := ackID(f)
	nack := f.Command == "NACK"
	c.mu.Lock()
	p, ok := c.pending[id]
	if !ok {
		c.mu.Unlock()
		return protoErr("unknown_message", "%s of a message that is not pending: %q", f.Command, clip(id))
	}
	s := p.sub
	var done []pendingMsg
	i := slices.Index(s.unacked, id)
	switch {
	case i < 0:
		done = []pendingMsg{p}
		delete(c.pending, id)
	case s.ack == ackClient:
		for _, mid := range s.unacked[:i+1] {
			done = append(done, c.pending[mid])
			delete(c.pending, mid)
		}
		s.unacked = slices.Delete(s.unacked, 0, i+1)
	default:
		done = []pendingMsg{p}
		delete(c.pending, id)
		s.unacked = slices.Delete(s.unacked, i, i+1)
	}
	c.mu.Unlock()
	if s.qsub != nil {
		for _, p := range done {
			if nack {
				// As ActiveMQ: a NACK is a poison acknowledgement, the
				// message goes to ActiveMQ.DLQ (dropped if not
				// persistent), never back to a consumer.
				s.qsub.Reject(p.qid)
			} else {
				s.qsub.Ack(p.qid)
			}
		}
	}
	return nil
}

func (c *conn) addToTx(name string, f *Frame) error {
	tx, ok := c.txs[name]
	if !ok {
		return protoErr("unknown_transaction", "unknown transaction %q", clip(name))
	}
	if len(tx.frames) >= c.g.opts.MaxTxFrames {
		return protoErr("transaction_too_large", "more than %d frames in transaction %q", c.g.opts.MaxTxFrames, clip(name))
	}
	if f.Command == "SEND" {
		// Check the destination now, so that COMMIT does not fail on it.
		if _, _, err := c.destination(f, false); err != nil {
			return err
		}
	}
	tx.frames = append(tx.frames, f)
	if r, ok := f.Get("receipt"); ok {
		c.receipt(r)
	}
	return nil
}

func (c *conn) handleTx(f *Frame) error {
	name, ok := f.Get("transaction")
	if !ok || name == "" {
		return protoErr("missing_header", "%s without a transaction header", f.Command)
	}
	tx, exists := c.txs[name]
	switch f.Command {
	case "BEGIN":
		if exists {
			return protoErr("duplicate_transaction", "transaction %q already begun", clip(name))
		}
		if len(c.txs) >= c.g.opts.MaxTransactions {
			return protoErr("too_many_transactions", "more than %d open transactions", c.g.opts.MaxTransactions)
		}
		c.txs[name] = &transaction{}
		return nil
	}
	if !exists {
		return protoErr("unknown_transaction", "unknown transaction %q", clip(name))
	}
	delete(c.txs, name)
	if f.Command == "ABORT" {
		return nil
	}
	for _, tf := range tx.frames {
		var err error
		if tf.Command == "SEND" {
			err = c.handleSend(stripReceipt(tf))
		} else {
			err = c.handleAck(tf)
		}
		if err != nil {
			return err
		}
	}
	// The receipt of COMMIT says the transaction's messages are routed
	// and durable.
	return c.flush()
}

// stripReceipt returns f without its receipt header (already answered
// when the frame joined its transaction).
func stripReceipt(f *Frame) *Frame {
	if _, ok := f.Get("receipt"); !ok {
		return f
	}
	g := *f
	g.Headers = slices.DeleteFunc(slices.Clone(f.Headers), func(h Header) bool { return h.Name == "receipt" })
	return &g
}

// SubscriberID implements broker.Subscriber.
func (s *subscription) SubscriberID() string { return s.c.sid }

// MayReceive implements broker.Subscriber: the read ACL.
func (s *subscription) MayReceive(t string) bool {
	a := s.c.g.opts.Auth
	return s.trusted || a == nil || a.CanReceive(s.c.info, t)
}

// Online implements broker.Subscriber.
func (s *subscription) Online() bool { return true }

// Deliver implements broker.Subscriber: it encodes the MESSAGE frame into
// the connection's queue, or drops it (counted) when the connection has
// too many bytes pending or the subscription's window is full.
// Retained messages are never sent (see docs/stomp.md).
func (s *subscription) Deliver(d broker.Delivery, _ *broker.Txn, now int64) {
	m := d.Msg
	if m.Expiry != 0 && now >= m.Expiry {
		return
	}
	hs := fromMQTT(m)
	if s.sel != nil && !s.sel.Match(headerGetter(hs)) {
		return
	}
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing || s.closed {
		return
	}
	if c.outBytes >= c.g.opts.MaxPendingBytes {
		c.g.m.dropped.WithLabelValues("pending_bytes").Inc()
		c.g.dropped.Add(1)
		return
	}
	if s.ack != ackAuto && s.window > 0 && len(s.unacked) >= s.window {
		c.g.m.dropped.WithLabelValues("window").Inc()
		c.g.dropped.Add(1)
		return
	}
	id := c.nextIDLocked()
	if s.ack != ackAuto {
		s.unacked = append(s.unacked, id)
		c.pending[id] = pendingMsg{sub: s}
	}
	c.enqueueMessageLocked(s, id, hs, m.Payload, "topic", nil)
	c.signalLocked()
}

// queueConsumer is a queue subscription as the queue.Consumer.
type queueConsumer subscription

// Deliver implements queue.Consumer: it encodes the MESSAGE frame into
// the connection's queue, or refuses it while too many bytes are pending
// (the manager offers it again after Ready).
func (q *queueConsumer) Deliver(_ string, m *queue.Message) bool {
	s := (*subscription)(q)
	c := s.c
	hs := fromQueue(s.dstName, m)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing || s.closed {
		return false
	}
	if c.outBytes >= c.g.opts.MaxPendingBytes {
		if !s.needReady {
			s.needReady = true
			c.waiting = append(c.waiting, s)
		}
		return false
	}
	id := c.nextIDLocked()
	var after func()
	qid := m.ID
	if s.ack == ackAuto {
		after = func() {
			<-s.ready
			if s.qsub != nil {
				s.qsub.Ack(qid)
			}
		}
	} else {
		s.unacked = append(s.unacked, id)
		c.pending[id] = pendingMsg{sub: s, qid: qid}
	}
	c.enqueueMessageLocked(s, id, hs, m.Body, "queue", after)
	c.signalLocked()
	return true
}

func headerGetter(hs []Header) func(string) (string, bool) {
	return func(name string) (string, bool) {
		for _, h := range hs {
			if h.Name == name {
				return h.Value, true
			}
		}
		return "", false
	}
}

func (c *conn) nextIDLocked() string {
	c.msgSeq++
	return c.sid + "-" + strconv.FormatUint(c.msgSeq, 10)
}

func (c *conn) enqueueMessageLocked(s *subscription, id string, hs []Header, body []byte, kind string, after func()) {
	f := &Frame{Command: "MESSAGE", Headers: make([]Header, 0, len(hs)+3), Body: body}
	f.Headers = append(f.Headers, Header{"message-id", id}, Header{"subscription", s.id})
	if s.ack != ackAuto {
		f.Headers = append(f.Headers, Header{"ack", id})
	}
	f.Headers = append(f.Headers, hs...)
	b := AppendFrame(nil, f, c.version)
	c.out = append(c.out, outItem{b: b, cmd: "MESSAGE", kind: kind, after: after})
	c.outBytes += len(b)
}

// enqueueLocked queues a control frame (CONNECTED, RECEIPT, ERROR): never
// dropped, they are bounded by the client's own frames.
func (c *conn) enqueueLocked(f *Frame) {
	b := AppendFrame(nil, f, c.version)
	c.out = append(c.out, outItem{b: b, cmd: f.Command})
	c.outBytes += len(b)
}

func (c *conn) signalLocked() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

func (c *conn) signal() { c.signalLocked() }

var heartBeat = []byte{'\n'}

// writer writes the queued frames and the heart-beats until the reader
// closes the queue (then it drains it) or a write fails.
func (c *conn) writer() {
	defer close(c.writerDone)
	o := &c.g.opts
	var hb *time.Timer
	var hbC <-chan time.Time
	// The heart-beat timer starts with the first write (CONNECTED) and
	// restarts after every write.
	resetHB := func() {
		c.mu.Lock()
		iv := c.hbOut
		c.mu.Unlock()
		if iv <= 0 {
			return
		}
		if hb == nil {
			hb = time.NewTimer(iv)
			hbC = hb.C
			return
		}
		hb.Reset(iv)
	}
	defer func() {
		if hb != nil {
			hb.Stop()
		}
	}()
	var bufs net.Buffers
	for {
		c.mu.Lock()
		var batch []outItem
		if len(c.out) > 0 {
			// Swap buffers: out gets the array written last time.
			batch, c.out, c.spare = c.out, c.spare[:0], nil
		}
		closed := c.outClosed
		c.mu.Unlock()
		if len(batch) == 0 {
			if closed {
				return
			}
			select {
			case <-c.wake:
			case <-hbC:
				_ = c.nc.SetWriteDeadline(time.Now().Add(o.WriteTimeout))
				if _, err := c.nc.Write(heartBeat); err != nil {
					c.writeFailed(err)
					return
				}
				resetHB()
			}
			continue
		}
		bufs = bufs[:0]
		n := 0
		for _, it := range batch {
			bufs = append(bufs, it.b)
			n += len(it.b)
		}
		_ = c.nc.SetWriteDeadline(time.Now().Add(o.WriteTimeout))
		if _, err := listener.WriteBuffers(c.nc, &bufs); err != nil {
			c.writeFailed(err)
			return
		}
		resetHB()
		var ready []*subscription
		for i := range batch {
			it := &batch[i]
			c.g.m.framesOut.WithLabelValues(it.cmd).Inc()
			if it.kind != "" {
				c.g.m.messagesOut.WithLabelValues(it.kind).Inc()
			}
			if it.after != nil {
				it.after()
			}
			batch[i] = outItem{}
		}
		c.mu.Lock()
		c.outBytes -= n
		c.spare = batch[:0]
		if c.outBytes < o.MaxPendingBytes/2 {
			ready = c.subs2ReadyLocked()
		}
		c.mu.Unlock()
		for _, s := range ready {
			<-s.ready
			if s.qsub != nil {
				s.qsub.Ready()
			}
		}
	}
}

// subs2ReadyLocked returns the queue subscriptions refused for lack of
// room (to be told Ready), clearing the list.
func (c *conn) subs2ReadyLocked() []*subscription {
	out := c.waiting
	c.waiting = nil
	for _, s := range out {
		s.needReady = false
	}
	return out
}

func (c *conn) writeFailed(err error) {
	c.mu.Lock()
	c.writeErr = err
	c.closing = true
	c.mu.Unlock()
	c.g.log.Debug("STOMP write failed; closing", "session", c.sid, "remote", c.remote, "err", err)
	c.stopping.Store(true)
	_ = c.nc.Close()
}
