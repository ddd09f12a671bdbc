package sectest

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/isobar-mq/isobar/internal/mqtt/packet"
)

// A minimal synchronous MQTT 3.1.1/5.0 client over any net.Conn (TCP, TLS,
// WebSocket, PROXY protocol), built on Isobar's codec, that reports the
// exact reason codes the broker sends. All methods run on the test
// goroutine; messages that arrive while an acknowledgement is awaited are
// kept for expectMsg.

type mc struct {
	t       *testing.T
	name    string
	conn    net.Conn
	br      *bufio.Reader
	v       byte
	nextID  uint16
	pending []*packet.Publish
}

// connOpts describes a CONNECT.
type connOpts struct {
	id         string
	v          byte // packet.V311 (default) or packet.V5
	user, pass string
	hasUser    bool
	hasPass    bool
	will       *packet.Publish
	persistent bool // clean session 0 / session expiry > 0
}

func (o connOpts) withUser(user, pass string) connOpts {
	o.user, o.pass, o.hasUser, o.hasPass = user, pass, true, true
	return o
}

func dialTCP(t *testing.T, address string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", address, timeout)
	if err != nil {
		t.Fatalf("dial %s: %v", address, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// dialTLS connects and completes the TLS handshake (with TLS 1.3 a client
// certificate is judged by the server after that: see expectRefusedTLS).
func dialTLS(t *testing.T, address string, cfg *tls.Config) (net.Conn, error) {
	t.Helper()
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: timeout}, Config: cfg}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", address)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { _ = c.Close() })
	return c, nil
}

func mustDialTLS(t *testing.T, address string, cfg *tls.Config) net.Conn {
	t.Helper()
	c, err := dialTLS(t, address, cfg)
	if err != nil {
		t.Fatalf("TLS dial %s: %v", address, err)
	}
	return c
}

// connectOn sends CONNECT on conn and returns the CONNACK, or an error if
// the connection ends (or nothing arrives) first.
func connectOn(t *testing.T, conn net.Conn, o connOpts) (*mc, *packet.Connack, error) {
	t.Helper()
	if o.v == 0 {
		o.v = packet.V311
	}
	c := &mc{t: t, name: o.id, conn: conn, br: bufio.NewReader(conn), v: o.v}
	cp := packet.Connect{
		ProtocolName: "MQTT", ProtocolVersion: o.v, CleanStart: !o.persistent, KeepAlive: 60,
		ClientID: o.id, UsernameFlag: o.hasUser, Username: o.user, PasswordFlag: o.hasPass, Password: []byte(o.pass),
	}
	if o.persistent && o.v == packet.V5 {
		cp.Props.SessionExpiryInterval = 300
		cp.Props.Set(packet.PropSessionExpiryInterval)
	}
	if w := o.will; w != nil {
		cp.WillFlag, cp.WillTopic, cp.WillPayload, cp.WillQoS, cp.WillRetain = true, w.Topic, w.Payload, w.QoS, w.Retain
	}
	if err := c.write(cp.Append(nil)); err != nil {
		return nil, nil, fmt.Errorf("sending CONNECT: %w", err)
	}
	p, err := c.read(timeout)
	if err != nil {
		return nil, nil, fmt.Errorf("waiting for CONNACK: %w", err)
	}
	ack, ok := p.(*packet.Connack)
	if !ok {
		return nil, nil, fmt.Errorf("got %T instead of CONNACK", p)
	}
	return c, ack, nil
}

// connect connects on conn and fails the test unless the CONNACK has code.
func connect(t *testing.T, conn net.Conn, o connOpts, code byte) *mc {
	t.Helper()
	c, ack, err := connectOn(t, conn, o)
	if err != nil {
		t.Fatalf("client %q: %v", o.id, err)
	}
	if ack.ReasonCode != code {
		t.Fatalf("client %q: CONNACK code 0x%02X (%s), want 0x%02X", o.id, ack.ReasonCode, ack.Props.ReasonString, code)
	}
	return c
}

// connectTCP dials address and connects; the CONNACK must be a success.
func connectTCP(t *testing.T, address string, o connOpts) *mc {
	t.Helper()
	return connect(t, dialTCP(t, address), o, 0)
}

// refusedCode connects over TCP and returns the CONNACK code, requiring
// the broker to close the connection after a refusal.
func refusedCode(t *testing.T, address string, o connOpts) byte {
	t.Helper()
	c, ack, err := connectOn(t, dialTCP(t, address), o)
	if err != nil {
		t.Fatalf("client %q: %v", o.id, err)
	}
	if ack.ReasonCode != 0 {
		c.expectClosed()
	}
	return ack.ReasonCode
}

func (c *mc) write(b []byte) error {
	_ = c.conn.SetWriteDeadline(time.Now().Add(timeout))
	_, err := c.conn.Write(b)
	return err
}

func (c *mc) send(b []byte) {
	c.t.Helper()
	if err := c.write(b); err != nil {
		c.t.Fatalf("client %q: write: %v", c.name, err)
	}
}

func (c *mc) read(d time.Duration) (any, error) {
	_ = c.conn.SetReadDeadline(time.Now().Add(d))
	return packet.ReadPacket(c.br, c.v, 0)
}

func (c *mc) id() uint16 {
	c.nextID++
	if c.nextID == 0 {
		c.nextID = 1
	}
	return c.nextID
}

// next reads packets until one satisfies want, keeping PUBLISH packets
// (acknowledged at QoS 1) for expectMsg.
func (c *mc) next(what string, want func(any) bool) any {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		p, err := c.read(time.Until(deadline))
		if err != nil {
			c.t.Fatalf("client %q: waiting for %s: %v", c.name, what, err)
		}
		if want(p) {
			return p
		}
		if pub, ok := p.(*packet.Publish); ok {
			c.ackPublish(pub)
			c.pending = append(c.pending, pub)
			continue
		}
		c.t.Fatalf("client %q: waiting for %s, got %#v", c.name, what, p)
	}
}

func (c *mc) ackPublish(p *packet.Publish) {
	if p.QoS == 1 {
		a := packet.Ack{Type: packet.PUBACK, PacketID: p.PacketID}
		c.send(a.Append(nil, c.v))
	}
}

// subscribe sends one SUBSCRIBE (QoS 1 for every filter) and returns the
// SUBACK codes.
func (c *mc) subscribe(filters ...string) []byte {
	c.t.Helper()
	s := packet.Subscribe{PacketID: c.id()}
	for _, f := range filters {
		s.Subs = append(s.Subs, packet.Subscription{Filter: f, QoS: 1})
	}
	c.send(s.Append(nil, c.v))
	p := c.next("SUBACK", func(p any) bool {
		a, ok := p.(*packet.Suback)
		return ok && a.PacketID == s.PacketID
	})
	return p.(*packet.Suback).ReasonCodes
}

// mustSubscribe subscribes and requires every filter granted.
func (c *mc) mustSubscribe(filters ...string) {
	c.t.Helper()
	codes := c.subscribe(filters...)
	for i, code := range codes {
		if code >= 0x80 {
			c.t.Fatalf("client %q: subscription to %q refused with 0x%02X", c.name, filters[i], code)
		}
	}
}

// publish publishes; at QoS 1 it returns the PUBACK reason code.
func (c *mc) publish(topic, payload string, qos byte, retain bool) byte {
	c.t.Helper()
	p := packet.Publish{Topic: topic, Payload: []byte(payload), QoS: qos, Retain: retain}
	if qos > 0 {
		p.PacketID = c.id()
	}
	c.send(p.Append(nil, c.v))
	if qos == 0 {
		return 0
	}
	a := c.next("PUBACK", func(x any) bool {
		a, ok := x.(*packet.Ack)
		return ok && a.Type == packet.PUBACK && a.PacketID == p.PacketID
	})
	return a.(*packet.Ack).ReasonCode
}

// mustPublish publishes at QoS 1 and requires success (0x00, or 0x10 No
// matching subscribers).
func (c *mc) mustPublish(topic, payload string) {
	c.t.Helper()
	if code := c.publish(topic, payload, 1, false); code >= 0x80 {
		c.t.Fatalf("client %q: publish to %q: PUBACK 0x%02X", c.name, topic, code)
	}
}

// ping round-trips a PINGREQ: everything sent before is processed.
func (c *mc) ping() {
	c.t.Helper()
	c.send(packet.AppendPingreq(nil))
	c.next("PINGRESP", func(p any) bool { t, ok := p.(packet.Type); return ok && t == packet.PINGRESP })
}

// expectMsg waits for the next message and requires its topic and payload.
func (c *mc) expectMsg(topic, payload string) *packet.Publish {
	c.t.Helper()
	var p *packet.Publish
	if len(c.pending) > 0 {
		p, c.pending = c.pending[0], c.pending[1:]
	} else {
		x := c.next("PUBLISH "+topic, func(x any) bool { _, ok := x.(*packet.Publish); return ok })
		p = x.(*packet.Publish)
		c.ackPublish(p)
	}
	if p.Topic != topic || string(p.Payload) != payload {
		c.t.Fatalf("client %q: got message %q %q, want %q %q", c.name, p.Topic, p.Payload, topic, payload)
	}
	return p
}

// disconnect sends DISCONNECT and closes.
func (c *mc) disconnect() {
	d := packet.Disconnect{}
	_ = c.write(d.Append(nil, c.v))
	_ = c.conn.Close()
}

// expectClosed requires the broker to close the connection (a v5
// DISCONNECT before the close is accepted and returned).
func (c *mc) expectClosed() *packet.Disconnect {
	c.t.Helper()
	var d *packet.Disconnect
	deadline := time.Now().Add(timeout)
	for {
		p, err := c.read(time.Until(deadline))
		if err != nil {
			if isClosed(err) {
				return d
			}
			c.t.Fatalf("client %q: connection not closed: %v", c.name, err)
		}
		switch x := p.(type) {
		case *packet.Disconnect:
			d = x
		case *packet.Publish:
			c.pending = append(c.pending, x)
		default:
			c.t.Fatalf("client %q: got %#v while waiting for the close", c.name, p)
		}
	}
}

// isClosed tells an end of connection from a timeout.
func isClosed(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return false
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return false
	}
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) ||
		strings.Contains(err.Error(), "connection reset") || strings.Contains(err.Error(), "broken pipe") ||
		errors.As(err, new(*wsClosed))
}

// ---- WebSocket client transport ----

// wsClosed is returned by wsConn.Read when the server sent a close frame.
type wsClosed struct {
	code   int
	reason string
}

func (e *wsClosed) Error() string { return fmt.Sprintf("websocket closed: %d %s", e.code, e.reason) }

// wsConn carries MQTT over WebSocket for mc: each Write is one masked
// binary frame; Read returns the payload of data frames, answers pings and
// reports a close frame as *wsClosed.
type wsConn struct {
	net.Conn
	r   io.Reader
	cur io.Reader
}

// dialWS opens a WebSocket to url ("ws://host:port/path" or "wss://...")
// offering the given subprotocols, with extra request headers.
func dialWS(t *testing.T, url string, protocols []string, header map[string]string, cfg *tls.Config) (*wsConn, error) {
	t.Helper()
	d := ws.Dialer{Protocols: protocols, TLSConfig: cfg, Timeout: timeout}
	if len(header) > 0 {
		d.Header = ws.HandshakeHeaderFunc(func(w io.Writer) (int64, error) {
			var n int64
			for k, v := range header {
				m, err := fmt.Fprintf(w, "%s: %s\r\n", k, v)
				n += int64(m)
				if err != nil {
					return n, err
				}
			}
			return n, nil
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	conn, br, _, err := d.Dial(ctx, url)
	if err != nil {
		if conn != nil {
			_ = conn.Close()
		}
		return nil, err
	}
	t.Cleanup(func() { _ = conn.Close() })
	c := &wsConn{Conn: conn, r: conn}
	if br != nil {
		c.r = br
	}
	return c, nil
}

func mustDialWS(t *testing.T, url string, cfg *tls.Config) *wsConn {
	t.Helper()
	c, err := dialWS(t, url, []string{"mqtt"}, nil, cfg)
	if err != nil {
		t.Fatalf("WebSocket dial %s: %v", url, err)
	}
	return c
}

func (c *wsConn) Read(p []byte) (int, error) {
	for {
		if c.cur != nil {
			n, err := c.cur.Read(p)
			if n > 0 || !errors.Is(err, io.EOF) {
				return n, err
			}
			c.cur = nil
		}
		h, err := ws.ReadHeader(c.r)
		if err != nil {
			return 0, err
		}
		switch h.OpCode {
		case ws.OpClose, ws.OpPing, ws.OpPong:
			payload := make([]byte, h.Length)
			if _, err := io.ReadFull(c.r, payload); err != nil {
				return 0, err
			}
			switch h.OpCode {
			case ws.OpClose:
				e := &wsClosed{code: 1005}
				if len(payload) >= 2 {
					e.code, e.reason = int(binary.BigEndian.Uint16(payload)), string(payload[2:])
				}
				return 0, e
			case ws.OpPing:
				if err := ws.WriteFrame(c.Conn, ws.MaskFrame(ws.NewPongFrame(payload))); err != nil {
					return 0, err
				}
			}
		default:
			c.cur = io.LimitReader(c.r, h.Length)
		}
	}
}

func (c *wsConn) Write(p []byte) (int, error) {
	if err := ws.WriteFrame(c.Conn, ws.MaskFrame(ws.NewBinaryFrame(p))); err != nil {
		return 0, err
	}
	return len(p), nil
}
