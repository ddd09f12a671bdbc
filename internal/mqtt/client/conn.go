package client

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/isobar-mq/isobar/internal/mqtt/packet"
)

var noDeadline time.Time

// conn is one network connection to the server, from CONNECT to its loss.
type conn struct {
	c       *Client
	nc      net.Conn      // the raw connection: deadlines and Close
	rw      io.ReadWriter // MQTT packets: nc, or the WebSocket adapter
	r       *bufio.Reader
	version byte // codec version: 4 or 5 (the bridge bit is not part of it)

	wmu          sync.Mutex // one packet at a time on the wire
	writeTimeout time.Duration
	readTimeout  time.Duration // 1.5 x keep alive
	pingEvery    time.Duration

	ackMu sync.Mutex // held while acknowledgements are dequeued and written, to keep their order
	// Guarded by c.mu:
	pending []*Message // inbound QoS 1/2 messages in arrival order, acknowledged from the head
	// overLimit is set once the server exceeded the advertised Receive
	// Maximum on this connection (logged once).
	overLimit bool
	dead      bool
}

// write sends one or more complete packets. A failure closes the
// connection, so the read loop ends and the client reconnects.
func (cn *conn) write(b []byte) error {
	cn.wmu.Lock()
	defer cn.wmu.Unlock()
	_ = cn.nc.SetWriteDeadline(time.Now().Add(cn.writeTimeout))
	_, err := cn.rw.Write(b)
	if err != nil {
		_ = cn.nc.Close()
	}
	return err
}

// connectAndServe makes one connection and serves it until it is lost. up
// is how long it was connected (0 if CONNECT failed).
func (c *Client) connectAndServe() (up time.Duration, err error) {
	cn, ack, err := c.connect()
	if err != nil {
		return 0, err
	}
	began := time.Now()
	stop := context.AfterFunc(c.ctx, func() { _ = cn.nc.Close() })
	defer stop()
	err = c.serve(cn, ack)
	return time.Since(began), err
}

// connect dials, sends CONNECT and reads CONNACK, all within ConnectTimeout.
func (c *Client) connect() (*conn, *packet.Connack, error) {
	ctx, cancel := context.WithTimeout(c.ctx, c.cfg.ConnectTimeout)
	defer cancel()
	nc, rw, err := c.dial(ctx)
	if err != nil {
		return nil, nil, err
	}
	ok := false
	defer func() {
		if !ok {
			_ = nc.Close()
		}
	}()
	stop := context.AfterFunc(ctx, func() { _ = nc.Close() })
	defer stop()
	deadline, _ := ctx.Deadline()
	_ = nc.SetDeadline(deadline)

	c.mu.Lock()
	clientID := c.clientID
	if c.cfg.CleanStart {
		// A clean start asks for a fresh identifier each time when none
		// was configured.
		clientID = c.cfg.ClientID
	}
	c.mu.Unlock()
	p := packet.Connect{
		ProtocolVersion: c.cfg.Version,
		CleanStart:      c.cfg.CleanStart,
		KeepAlive:       uint16(c.cfg.KeepAlive / time.Second),
		ClientID:        clientID,
	}
	c.mu.Lock()
	bridgeBit := c.cfg.Bridge && c.cfg.Version == packet.V311 && !c.noBridgeBit
	c.mu.Unlock()
	if bridgeBit {
		p.ProtocolVersion = 0x80 | packet.V311
	}
	if c.cfg.Username != "" {
		p.UsernameFlag, p.Username = true, c.cfg.Username
	}
	if c.cfg.Password != "" {
		p.PasswordFlag, p.Password = true, []byte(c.cfg.Password)
	}
	if c.cfg.Version == packet.V5 {
		if c.cfg.SessionExpiry > 0 {
			p.Props.Set(packet.PropSessionExpiryInterval)
			p.Props.SessionExpiryInterval = c.cfg.SessionExpiry
		}
		p.Props.Set(packet.PropReceiveMaximum)
		p.Props.ReceiveMaximum = c.cfg.ReceiveMaximum
		if c.cfg.MaxPacketSize < packet.MaxRemainingLength+5 {
			p.Props.Set(packet.PropMaximumPacketSize)
			p.Props.MaximumPacketSize = uint32(c.cfg.MaxPacketSize)
		}
	}
	if _, err := rw.Write(p.Append(nil)); err != nil {
		return nil, nil, c.ctxErr(ctx, fmt.Errorf("write CONNECT: %w", err))
	}
	r := bufio.NewReaderSize(rw, 16<<10)
	pkt, err := packet.ReadPacket(r, c.cfg.Version, c.cfg.MaxPacketSize)
	if err != nil {
		if bridgeBit && c.ctx.Err() == nil {
			c.dropBridgeBit(err)
		}
		return nil, nil, c.ctxErr(ctx, fmt.Errorf("read CONNACK: %w", err))
	}
	var ack *packet.Connack
	switch v := pkt.(type) {
	case *packet.Connack:
		ack = v
	case *packet.Disconnect:
		return nil, nil, &ConnectError{Version: c.cfg.Version, Code: v.ReasonCode, Reason: v.Props.ReasonString}
	default:
		return nil, nil, fmt.Errorf("protocol error: %s before CONNACK", packetName(pkt))
	}
	if ack.ReasonCode != packet.Success {
		if bridgeBit && ack.ReasonCode == packet.ConnRefusedProtocolVersion {
			c.dropBridgeBit(errors.New("unacceptable protocol version"))
		}
		return nil, nil, &ConnectError{Version: c.cfg.Version, Code: ack.ReasonCode, Reason: ack.Props.ReasonString}
	}
	if c.cfg.CleanStart && ack.SessionPresent {
		return nil, nil, errors.New("protocol error: CONNACK with session present after a clean start [MQTT-3.2.2-2]")
	}
	if !stop() {
		return nil, nil, c.ctxErr(ctx, ctx.Err())
	}
	_ = nc.SetDeadline(noDeadline)
	ka := c.cfg.KeepAlive
	if ack.Props.Has(packet.PropServerKeepAlive) {
		ka = time.Duration(ack.Props.ServerKeepAlive) * time.Second
	}
	cn := &conn{
		c:            c,
		nc:           nc,
		rw:           rw,
		r:            r,
		version:      c.cfg.Version,
		writeTimeout: c.cfg.ConnectTimeout,
		readTimeout:  ka * 3 / 2,
		pingEvery:    ka,
	}
	ok = true
	return cn, ack, nil
}

// dropBridgeBit makes the next attempts plain 3.1.1 CONNECTs: the server
// refused one with the bridge bit (protocol level 0x84), with return code
// 1, an answer that is no 3.1.1 CONNACK, or by closing the connection, as
// servers that do not know the bit do. Mosquitto's try_private falls back
// the same way.
func (c *Client) dropBridgeBit(why error) {
	c.mu.Lock()
	c.noBridgeBit = true
	c.mu.Unlock()
	c.log.Warn("the server refused the bridge bit; connecting as a plain MQTT 3.1.1 client from now on", "err", why)
}

// ctxErr prefers the context's reason (Close, connect timeout) over the
// I/O error that closing the connection caused.
func (c *Client) ctxErr(ctx context.Context, err error) error {
	if c.ctx.Err() != nil {
		return ErrClosed
	}
	if ctx.Err() != nil {
		return fmt.Errorf("no CONNACK within %v: %w", c.cfg.ConnectTimeout, err)
	}
	return err
}

// serve sets up a fresh connection (subscriptions, resent messages), then
// reads from it until it is lost.
func (c *Client) serve(cn *conn, ack *packet.Connack) error {
	srv := serverLimits{receiveMax: 65535, maxQoS: 2, retain: true}
	if ack.Props.Has(packet.PropReceiveMaximum) {
		srv.receiveMax = ack.Props.ReceiveMaximum
	}
	if ack.Props.Has(packet.PropMaximumPacketSize) {
		srv.maxPacket = int(min(ack.Props.MaximumPacketSize, packet.MaxRemainingLength+5))
	}
	if ack.Props.Has(packet.PropMaximumQoS) {
		srv.maxQoS = ack.Props.MaximumQoS
	}
	if ack.Props.Has(packet.PropRetainAvailable) {
		srv.retain = ack.Props.RetainAvailable == 1
	}
	srv.aliasMax = ack.Props.TopicAliasMaximum

	// Queue everything the new connection must send first, in order:
	// subscriptions, then the messages still in flight.
	var out []byte
	c.mu.Lock()
	if ack.Props.Has(packet.PropAssignedClientIdentifier) {
		c.clientID = ack.Props.AssignedClientIdentifier
	}
	first := c.connects == 0
	c.connects++
	if !first {
		c.stats.Reconnects++
	}
	c.srv = srv
	if !ack.SessionPresent {
		// The server forgot the inbound QoS 2 state: packet identifiers
		// start afresh.
		clear(c.qos2In)
	}
	if !ack.SessionPresent || first {
		for _, s := range c.cfg.Subscriptions {
			id := c.allocIDLocked()
			if id == 0 {
				break
			}
			c.subIDs[id] = []Subscription{s}
			sp := packet.Subscribe{PacketID: id, Subs: []packet.Subscription{{
				Filter: s.Filter, QoS: s.QoS, NoLocal: s.NoLocal,
				RetainAsPublished: s.RetainAsPublished, RetainHandling: s.RetainHandling,
			}}}
			out = sp.Append(out, cn.version)
		}
	}
	sent := 0
	for _, om := range c.order {
		om.sent = false
		if sent < int(srv.receiveMax) {
			om.sent = true
			sent++
			out = om.appendTo(out, cn.version, true)
		}
	}
	c.mu.Unlock()
	if len(out) > 0 {
		if err := cn.write(out); err != nil {
			c.connLost(cn)
			return fmt.Errorf("write after CONNACK: %w", err)
		}
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		c.connLost(cn)
		return ErrClosed
	}
	c.cur = cn
	c.stats.Since = time.Now()
	c.stats.LastError = ""
	c.wakeLocked()
	clientID := c.clientID
	c.mu.Unlock()
	c.log.Info("connected", "session_present", ack.SessionPresent, "assigned_client_id", clientID,
		"receive_maximum", srv.receiveMax, "keep_alive", cn.pingEvery)
	if f := c.cfg.OnConnect; f != nil {
		f(ack.SessionPresent)
	}

	pingDone := make(chan struct{})
	var pwg sync.WaitGroup
	pwg.Go(func() { cn.pinger(pingDone) })
	err := c.readLoop(cn)
	close(pingDone)
	_ = cn.nc.Close()
	pwg.Wait()
	c.connLost(cn)
	if c.ctx.Err() == nil {
		if f := c.cfg.OnConnectionLost; f != nil {
			f(err)
		}
	}
	return err
}

// connLost forgets the connection: Publish sees ErrNotConnected, messages
// in flight wait for the next one.
func (c *Client) connLost(cn *conn) {
	_ = cn.nc.Close()
	c.mu.Lock()
	defer c.mu.Unlock()
	cn.dead = true
	cn.pending = nil
	if c.cur == cn {
		c.cur = nil
		c.stats.Since = time.Now()
	}
	for _, om := range c.order {
		om.sent = false
	}
	clear(c.subIDs)
	c.wakeLocked()
}

// pinger sends PINGREQ every keep-alive interval. The server answers, so
// the read deadline (1.5 x keep alive after the last packet received)
// expires only when the server has gone silent.
func (cn *conn) pinger(done <-chan struct{}) {
	t := time.NewTicker(cn.pingEvery)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
			if cn.write(packet.AppendPingreq(nil)) != nil {
				return
			}
		}
	}
}

// protoErr is a server fault the client answers with DISCONNECT (v5).
type protoErr struct {
	code byte
	msg  string
}

func (e *protoErr) Error() string { return fmt.Sprintf("%s (0x%02X)", e.msg, e.code) }

// readLoop reads and handles packets until the connection fails.
func (c *Client) readLoop(cn *conn) error {
	for {
		_ = cn.nc.SetReadDeadline(time.Now().Add(cn.readTimeout))
		pkt, err := packet.ReadPacket(cn.r, cn.version, c.cfg.MaxPacketSize)
		if err != nil {
			var pe *packet.Error
			if errors.As(err, &pe) {
				c.disconnect(cn, pe.Code)
				return fmt.Errorf("bad packet from the server: %w", err)
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				c.disconnect(cn, packet.KeepAliveTimeout)
				return fmt.Errorf("keep alive: nothing from the server for %v", cn.readTimeout)
			}
			if errors.Is(err, io.EOF) {
				return errors.New("connection closed by the server")
			}
			return err
		}
		if err := c.handle(cn, pkt); err != nil {
			var pe *protoErr
			if errors.As(err, &pe) {
				c.disconnect(cn, pe.code)
				return fmt.Errorf("protocol error from the server: %w", err)
			}
			return err
		}
	}
}

// disconnect tells a v5 server why the client closes (best effort).
func (c *Client) disconnect(cn *conn, code byte) {
	if cn.version != packet.V5 || !packet.ValidDisconnectCode(code, false) {
		return
	}
	_ = cn.write((&packet.Disconnect{ReasonCode: code}).Append(nil, cn.version))
}

func packetName(p any) string {
	switch v := p.(type) {
	case packet.Type:
		return v.String()
	case *packet.Connect:
		return "CONNECT"
	case *packet.Connack:
		return "CONNACK"
	case *packet.Publish:
		return "PUBLISH"
	case *packet.Ack:
		return v.Type.String()
	case *packet.Subscribe:
		return "SUBSCRIBE"
	case *packet.Suback:
		return "SUBACK"
	case *packet.Unsubscribe:
		return "UNSUBSCRIBE"
	case *packet.Unsuback:
		return "UNSUBACK"
	case *packet.Disconnect:
		return "DISCONNECT"
	case *packet.Auth:
		return "AUTH"
	}
	return fmt.Sprintf("%T", p)
}

// handle acts on one packet from the server.
func (c *Client) handle(cn *conn, pkt any) error {
	switch p := pkt.(type) {
	case *packet.Publish:
		return c.handlePublish(cn, p)
	case *packet.Ack:
		return c.handleAck(cn, p)
	case *packet.Suback:
		c.handleSuback(p)
		return nil
	case *packet.Unsuback:
		c.mu.Lock()
		delete(c.subIDs, p.PacketID)
		c.mu.Unlock()
		return nil
	case packet.Type:
		if p == packet.PINGRESP {
			return nil
		}
	case *packet.Disconnect:
		msg := fmt.Sprintf("server sent DISCONNECT 0x%02X", p.ReasonCode)
		if p.Props.ReasonString != "" {
			msg += ": " + p.Props.ReasonString
		}
		if p.Props.ServerReference != "" {
			msg += " (server reference " + p.Props.ServerReference + ")"
		}
		return errors.New(msg)
	}
	return &protoErr{packet.ProtocolError, packetName(pkt) + " not expected from a server"}
}

// handleSuback logs refused subscriptions.
func (c *Client) handleSuback(p *packet.Suback) {
	c.mu.Lock()
	subs, ok := c.subIDs[p.PacketID]
	delete(c.subIDs, p.PacketID)
	c.mu.Unlock()
	if !ok {
		return
	}
	for i, s := range subs {
		if i >= len(p.ReasonCodes) {
			break
		}
		rc := p.ReasonCodes[i]
		if rc < 0x80 {
			if rc < s.QoS {
				c.log.Info("subscription granted at a lower QoS", "filter", s.Filter, "qos", s.QoS, "granted", rc)
			}
			continue
		}
		msg := fmt.Sprintf("subscription %q refused with 0x%02X", s.Filter, rc)
		if p.Props.ReasonString != "" {
			msg += ": " + p.Props.ReasonString
		}
		c.log.Error("subscription refused", "filter", s.Filter, "reason_code", fmt.Sprintf("0x%02X", rc),
			"reason", p.Props.ReasonString)
		c.mu.Lock()
		c.stats.LastError = msg
		c.mu.Unlock()
	}
}
