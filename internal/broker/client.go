package broker

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/isobar-mq/isobar/internal/mqtt/packet"
)

var (
	errPacketTooLarge = errors.New("packet exceeds maximum packet size")
	errSlowConsumer   = errors.New("slow consumer")
	errTakenOver      = errors.New("session taken over")
	errShutdown       = errors.New("server shutting down")
	errKeepAlive      = errors.New("keep-alive timeout")
	errAdmin          = errors.New("disconnected by administrator")
	errBadLength      = errors.New("malformed packet: wrong remaining length")
)

// protoError is a protocol violation detected while handling a packet: the
// connection is closed, after a v5 DISCONNECT with code when appropriate.
type protoError struct {
	code byte
	msg  string
}

func (e *protoError) Error() string { return e.msg }

func protoErr(code byte, msg string) error { return &protoError{code: code, msg: msg} }

// client is one network connection. The read loop goroutine owns the
// fields marked "read loop"; the outbound fields are guarded by omu.
type client struct {
	srv      *Server
	conn     net.Conn
	remote   string
	listener string

	// Set by CONNECT handling, read-only afterwards.
	id          string
	version     byte
	username    string
	role        uint8
	keepAlive   uint16
	sess        *session
	sendQuota   int    // max in-flight QoS 1/2 to this client
	maxOut      uint32 // client's Maximum Packet Size (0 = protocol max)
	aliasOutMax uint16
	problemInfo bool // v5 Request Problem Information (default true)
	acked       bool // CONNACK sent; guarded by sess.mu
	connected   atomic.Bool
	connectedAt time.Time

	// read loop
	tx         *Txn
	rbuf       []byte
	rpos, rlen int
	aliasIn    map[uint16]string
	scratch    routeScratch
	disconnect bool // DISCONNECT received
	// commitFailed is set when a commit failed and an acknowledgement
	// that depended on it cannot be sent: the connection is closed.
	commitFailed bool
	// claimStamp is this connection's cluster claim (0 if not clustered).
	claimStamp uint64
	// maxIn is the largest packet accepted now: MaxConnectSize until
	// CONNECT is handled, then MaxPacketSize.
	maxIn       uint32
	willOnClose bool // DISCONNECT 0x04: publish the will anyway
	lastType    packet.Type
	rate        publishLimiter
	rateLimited bool // over the connection rate of its source address
	// Decoding targets, reused; allocated on first use so that idle
	// connections do not carry them.
	pub *packet.Publish
	ack *packet.Ack

	// outbound, guarded by omu
	omu       sync.Mutex
	flushCond sync.Cond
	obuf      []byte
	segStart  int
	ovec      [][]byte
	spareBuf  []byte
	spareVec  [][]byte
	pending   int
	flushing  bool
	flushDead bool
	closing   bool // no more output accepted
	slow      bool
	aliasOut  map[string]uint16

	kicked     atomic.Bool
	kickCode   atomic.Uint32
	kickReason atomic.Pointer[error]
	done       chan struct{}
}

func newClient(srv *Server, conn net.Conn, listener string) *client {
	c := &client{
		srv:         srv,
		conn:        conn,
		listener:    listener,
		rbuf:        make([]byte, 512),
		problemInfo: true,
		done:        make(chan struct{}),
	}
	if a := conn.RemoteAddr(); a != nil {
		c.remote = a.String()
	}
	c.flushCond.L = &c.omu
	return c
}

// kick asks the connection to close from another goroutine: the read loop
// wakes up and tears down, sending a v5 DISCONNECT with code first.
func (c *client) kick(code byte, why error) {
	if c.kicked.Swap(true) {
		return
	}
	c.kickCode.Store(uint32(code))
	c.kickReason.Store(&why)
	_ = c.conn.SetReadDeadline(time.Now())
}

// send appends an encoded packet to the output.
func (c *client) send(encode func([]byte) []byte) {
	c.omu.Lock()
	if c.closing || c.flushDead {
		c.omu.Unlock()
		return
	}
	before := len(c.obuf)
	c.obuf = encode(c.obuf)
	c.addedLocked(len(c.obuf) - before)
	c.omu.Unlock()
}

func (c *client) sendAck(t packet.Type, id uint16, reason byte) {
	c.omu.Lock()
	if c.closing || c.flushDead {
		c.omu.Unlock()
		return
	}
	a := packet.Ack{Type: t, PacketID: id, ReasonCode: reason}
	if c.version < packet.V5 {
		a.ReasonCode = 0
	}
	before := len(c.obuf)
	c.obuf = a.Append(c.obuf, c.version)
	c.addedLocked(len(c.obuf) - before)
	c.omu.Unlock()
}

// Results of sendPublish.
const (
	sendOK      = iota
	sendTooBig  // over the client's Maximum Packet Size: dropped [MQTT-3.1.2-25]
	sendNotSent // the connection is closing: nothing was written
)

// sendPublish encodes a delivery to this client. id is the packet
// identifier for QoS > 0.
//
// Called with the session lock held (lock order session.mu → client.omu).
func (c *client) sendPublish(d *Delivery, id uint16, dup bool, now int64) int {
	m := d.Msg
	p := packet.Publish{
		Dup:      dup,
		QoS:      d.QoS,
		Retain:   d.Retain,
		Topic:    m.Topic,
		PacketID: id,
		Payload:  m.Payload,
	}
	if c.version >= packet.V5 {
		p.Props = m.Props
		if m.Props.Has(packet.PropMessageExpiryInterval) {
			p.Props.MessageExpiryInterval = m.remainingExpiry(now)
		}
		if len(d.SubIDs) > 0 {
			p.Props.SubscriptionIdentifiers = d.SubIDs
			p.Props.Set(packet.PropSubscriptionIdentifier)
		}
	}
	c.omu.Lock()
	defer c.omu.Unlock()
	if c.closing || c.flushDead {
		return sendNotSent
	}
	if d.QoS == 0 && c.pending > c.srv.opts.MaxPendingBytes {
		c.srv.stats.droppedSlow.Add(1)
		return sendOK
	}
	if c.version >= packet.V5 && c.aliasOutMax > 0 {
		if a, ok := c.aliasOut[m.Topic]; ok {
			p.Topic = ""
			p.Props.TopicAlias = a
			p.Props.Set(packet.PropTopicAlias)
		} else if len(c.aliasOut) < int(c.aliasOutMax) {
			if c.aliasOut == nil {
				c.aliasOut = make(map[string]uint16)
			}
			a := uint16(len(c.aliasOut) + 1)
			c.aliasOut[m.Topic] = a
			p.Props.TopicAlias = a
			p.Props.Set(packet.PropTopicAlias)
		}
	}
	// The re-encoding for this client can be larger than the message as it
	// arrived, by at most: its topic name (it may have arrived as a topic
	// alias), 5 bytes per subscription identifier, a topic alias and longer
	// length fields. Only when that bound nears the protocol maximum is the
	// exact size computed.
	grow := uint64(len(m.Topic)) + 5*uint64(len(d.SubIDs)) + 16
	if limit := c.maxOut; limit > 0 || m.size == 0 || uint64(m.size)+grow > packet.MaxRemainingLength {
		// Never build a packet the protocol (or the client) cannot carry.
		if limit == 0 || limit > packet.MaxRemainingLength+5 {
			limit = packet.MaxRemainingLength + 5 // a remaining length of at most MaxRemainingLength
		}
		if size := p.Len(c.version); uint64(size) > uint64(limit) {
			if p.Topic == "" || p.Props.Has(packet.PropTopicAlias) {
				// Keep alias state consistent: an alias assigned for a packet
				// never sent must not be used later.
				if a, ok := c.aliasOut[m.Topic]; ok && p.Topic != "" && a == p.Props.TopicAlias {
					delete(c.aliasOut, m.Topic)
				}
			}
			c.srv.stats.droppedTooLarge.Add(1)
			return sendTooBig
		}
	}
	before := len(c.obuf)
	if len(m.Payload) > largePayload {
		c.obuf = p.AppendHeader(c.obuf, c.version)
		c.cutLocked()
		c.ovec = append(c.ovec, m.Payload)
	} else {
		c.obuf = p.Append(c.obuf, c.version)
	}
	n := len(c.obuf) - before
	if len(m.Payload) > largePayload {
		n += len(m.Payload)
	}
	c.srv.stats.sentByQoS[d.QoS].Add(1)
	if !dup {
		c.srv.stats.latency.observe(now - m.Received)
	}
	c.addedLocked(n)
	return sendOK
}

// serve runs the connection until it closes. A panic while handling this
// connection's input is contained: logged with its stack, counted, and the
// connection is closed; the process and every other client carry on.
func (c *client) serve() {
	defer close(c.done)
	err := c.readLoopSafe()
	c.teardown(err)
}

var errInternal = errors.New("internal error")

func (c *client) readLoopSafe() (err error) {
	defer func() {
		if r := recover(); r != nil {
			c.srv.recovered(r, "client", c.id, "remote", c.remote)
			err = protoErr(packet.ImplementationSpecificError, errInternal.Error())
		}
	}()
	return c.readLoop()
}

func (c *client) readLoop() error {
	_ = c.conn.SetReadDeadline(time.Now().Add(c.srv.opts.ConnectTimeout))
	// Nothing bigger than MaxConnectSize is read before authentication.
	c.maxIn = c.srv.opts.MaxConnectSize
	h, body, err := c.readPacket()
	if err != nil {
		return err
	}
	c.lastType = h.Type
	if h.Type != packet.CONNECT {
		return protoErr(packet.ProtocolError, "first packet is not CONNECT")
	}
	c.tx = c.srv.newTxn()
	if err := c.handleConnect(h, body); err != nil {
		return err
	}
	c.maxIn = c.srv.opts.MaxPacketSize
	var armedAt int64
	for {
		// Keep alive [MQTT-3.1.2-22]: the read deadline is re-armed only
		// when a good part of the window has passed (a deadline per packet
		// costs a clock read and a timer update), with slack so that a
		// client is never cut off earlier than 1.5 x keep-alive after its
		// last packet.
		if c.keepAlive > 0 {
			window := time.Duration(c.keepAlive) * 1500 * time.Millisecond
			rearm := min(window/4, time.Second)
			if now := c.srv.clock.Load(); time.Duration(now-armedAt) >= rearm {
				armedAt = now
				_ = c.conn.SetReadDeadline(time.Unix(0, now).Add(window + rearm + 2*clockTick))
			}
		} else if armedAt == 0 {
			armedAt = 1
			_ = c.conn.SetReadDeadline(time.Time{})
		}
		// Commit once no complete packet is left in the read buffer: one
		// durable write (and fsync) covers everything that arrived
		// together, and the acknowledgements waiting for it go out.
		if c.tx.pending() && (!c.bufferedPacket() || (c.tx.Durable() && c.tx.batch.Len() > 1024)) {
			if err := c.tx.commit(c.srv); err != nil && c.commitFailed {
				// An acknowledgement depended on the failed commit and
				// could not be answered otherwise.
				return protoErr(packet.UnspecifiedError, "store: "+err.Error())
			}
		}
		if c.kicked.Load() {
			return errKicked
		}
		h, body, err := c.readPacket()
		if err != nil {
			return err
		}
		c.lastType = h.Type
		if err := c.handle(h, body); err != nil {
			return err
		}
		if c.disconnect {
			return nil
		}
	}
}

var errKicked = errors.New("kicked")

func (c *client) handle(h packet.FixedHeader, body []byte) error {
	switch h.Type {
	case packet.PUBLISH:
		return c.handlePublish(h, body)
	case packet.PUBACK, packet.PUBREC, packet.PUBREL, packet.PUBCOMP:
		return c.handleAck(h, body)
	case packet.SUBSCRIBE:
		return c.handleSubscribe(h, body)
	case packet.UNSUBSCRIBE:
		return c.handleUnsubscribe(h, body)
	case packet.PINGREQ:
		if err := packet.DecodePing(h.Type, h.Flags, body); err != nil {
			if len(body) > 0 {
				return errBadLength // closed without a DISCONNECT
			}
			return err
		}
		c.send(packet.AppendPingresp)
		return nil
	case packet.DISCONNECT:
		return c.handleDisconnect(h, body)
	case packet.AUTH:
		if c.version < packet.V5 {
			return protoErr(packet.ProtocolError, "AUTH in MQTT 3")
		}
		// No enhanced authentication method was agreed at CONNECT, so any
		// AUTH, well-formed or not, is a protocol error [MQTT-4.12.0-1].
		return protoErr(packet.ProtocolError, "AUTH without an authentication method")
	case packet.CONNECT:
		return protoErr(packet.ProtocolError, "second CONNECT [MQTT-3.1.0-2]")
	default:
		// CONNACK, SUBACK, UNSUBACK, PINGRESP are server-to-client only;
		// type 0 is reserved. Reserved flag bits make the packet malformed
		// first [MQTT-2.1.3-1]; a PINGRESP with a body is closed silently.
		if h.Flags != 0 && h.Type != packet.CONNACK {
			return protoErr(packet.MalformedPacket, "reserved flags set on "+h.Type.String())
		}
		if h.Type == packet.PINGRESP && len(body) > 0 {
			return errBadLength
		}
		return protoErr(packet.ProtocolError, "unexpected "+h.Type.String()+" from client")
	}
}

func (c *client) handleDisconnect(h packet.FixedHeader, body []byte) error {
	var d packet.Disconnect
	if err := packet.DecodeDisconnect(&d, h.Flags, body, c.version); err != nil {
		if c.version >= packet.V5 && len(body) > 0 && !packet.ValidDisconnectCode(body[0], false) {
			// A reason code a client may not send: the connection is
			// closed without a DISCONNECT of ours (as Mosquitto does;
			// [MQTT-4.13.1-1] allows either).
			return &refusedError{why: err.Error()}
		}
		return err
	}
	if c.version >= packet.V5 && d.Props.Has(packet.PropSessionExpiryInterval) {
		s := c.sess
		s.mu.Lock()
		if s.expiryInterval == 0 && d.Props.SessionExpiryInterval != 0 {
			s.mu.Unlock()
			// [MQTT-3.14.2-2]: setting a non-zero expiry at DISCONNECT when
			// CONNECT had 0 is a protocol error.
			return protoErr(packet.ProtocolError, "session expiry set on DISCONNECT after 0 at CONNECT")
		}
		s.expiryInterval = c.srv.capExpiry(d.Props.SessionExpiryInterval)
		s.mu.Unlock()
	}
	c.disconnect = true
	c.willOnClose = d.ReasonCode == packet.DisconnectWithWill
	return nil
}

// bufferedPacket reports whether a complete packet is already buffered.
func (c *client) bufferedPacket() bool {
	h, n, err := packet.ParseFixedHeader(c.rbuf[c.rpos:c.rlen])
	return err == nil && n > 0 && c.rlen-c.rpos >= n+h.Remaining
}

// teardown closes the connection and detaches it from its session.
func (c *client) teardown(err error) {
	defer func() {
		if c.connected.Load() {
			c.srv.mu.Lock()
			c.srv.listenerConns[c.listener]--
			c.srv.mu.Unlock()
		}
	}()
	if c.tx != nil {
		// Changes made for other sessions (routed messages) must be made
		// durable and released even though this connection ends.
		_ = c.tx.commit(c.srv)
	}
	code := byte(0)
	reason := err
	var pe *protoError
	var de *packet.Error
	switch {
	case errors.As(err, &pe):
		code = pe.code
		c.srv.stats.protocolErrors.Add(1)
	case errors.As(err, &de):
		code = de.Code
		c.srv.stats.protocolErrors.Add(1)
	case errors.Is(err, errPacketTooLarge):
		code = packet.PacketTooLarge
	case c.kicked.Load():
		code = byte(c.kickCode.Load())
		if r := c.kickReason.Load(); r != nil {
			reason = *r
		}
	default:
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() && c.connected.Load() {
			code = packet.KeepAliveTimeout
			reason = errKeepAlive
		}
	}
	connected := c.connected.Load()
	var de2 *packet.Error
	if errors.As(err, &de2) || errors.Is(err, errBadLength) {
		c.srv.stats.malformed[c.lastType&15].Add(1)
	}
	if connected {
		c.srv.stats.disconnects[code].Add(1)
	}
	if connected {
		c.srv.log.Debug("client disconnected", "client", c.id, "remote", c.remote, "reason", errString(reason))
	} else if err != nil && !errors.Is(err, io.EOF) {
		c.srv.log.Debug("connection closed before CONNECT completed", "remote", c.remote, "reason", errString(reason))
	}

	// Final DISCONNECT for v5 clients when the server ends the connection
	// with a reason [MQTT-4.13.2-1]; nothing for v3 (no such packet).
	c.omu.Lock()
	if connected && c.version >= packet.V5 && code >= 0x80 && !c.closing && !c.flushDead {
		d := packet.Disconnect{ReasonCode: code}
		before := len(c.obuf)
		c.obuf = d.Append(c.obuf, c.version)
		c.pending += len(c.obuf) - before
		c.kickFlushLocked()
	}
	c.closing = true
	c.omu.Unlock()

	// Detach from the session before waiting on the socket, so deliveries
	// go to the queue from now on.
	if connected {
		c.srv.detach(c, err == nil && c.disconnect && !c.willOnClose)
	}

	// Flush what is queued (bounded by the write deadline), then close
	// gracefully: half-close and drain briefly so that our last packet is
	// not destroyed by a TCP reset caused by unread input.
	_ = c.conn.SetWriteDeadline(time.Now().Add(min(c.srv.opts.WriteTimeout, 2*time.Second)))
	c.omu.Lock()
	c.waitFlushedLocked()
	c.flushDead = true
	c.omu.Unlock()
	lingerClose(c.conn)
	if connected {
		c.srv.clientGone(c)
	}
	c.srv.connClosed()
}

func errString(err error) string {
	if err == nil {
		return "normal"
	}
	return err.Error()
}

// lingerClose half-closes a connection and discards input for a short
// while so the peer reads everything we sent before seeing EOF.
func lingerClose(conn net.Conn) {
	type closeWriter interface{ CloseWrite() error }
	if cw, ok := conn.(closeWriter); ok {
		if cw.CloseWrite() == nil {
			_ = conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
			var buf [512]byte
			for i := 0; i < 64; i++ {
				if _, err := conn.Read(buf[:]); err != nil {
					break
				}
			}
		}
	}
	_ = conn.Close()
}
