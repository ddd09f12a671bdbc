package broker_test

// Helpers for the end-to-end tests: a raw packet connection built on the
// project's codec (for assertions on the wire: DUP, topic aliases, flow
// control, exact CONNACK properties), and thin wrappers around the real
// clients paho.mqtt.golang (3.1.1) and paho.golang (5.0) that collect what
// they receive in channels.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/isobar-mq/isobar/internal/mqtt/packet"
	"github.com/isobar-mq/isobar/internal/node"
	"github.com/isobar-mq/isobar/internal/testutil"
)

// waitT bounds every wait for something that must happen. It is generous
// because the tests run under the race detector on a shared two-core box;
// passing tests never wait for it.
const waitT = 5 * time.Second

// quietT is how long a negative check ("nothing more arrives") listens.
// Where possible the tests use a barrier message instead.
const quietT = 300 * time.Millisecond

// startNode runs a node with one MQTT listener on 127.0.0.1:0 plus the
// given extra top-level YAML (e.g. "mqtt:\n  max_qos: 1\n") and returns it
// with the listener's address.
func startNode(t *testing.T, extra string) (*node.Node, string) {
	t.Helper()
	cfg := "listeners:\n  - {name: mqtt, protocol: mqtt, address: \"127.0.0.1:0\"}\n" + extra
	n := testutil.RunNode(t, cfg)
	return n, testutil.Addr(t, n, "")
}

// contextT is a context bounded by waitT.
func contextT() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), waitT)
}

// waitClients waits until the server counts want connected clients, so
// that a disconnection has been processed before the test goes on.
func waitClients(t testing.TB, n *node.Node, want int) {
	t.Helper()
	testutil.CheckFor(t, waitT, 5*time.Millisecond, func() error {
		if c := n.Server.ClientCount(); c != want {
			return fmt.Errorf("%d clients connected, want %d", c, want)
		}
		return nil
	})
}

// ---------------------------------------------------------------------------
// Raw packet connection.

// pconn is a raw MQTT client connection that encodes with the project's
// codec and decodes whatever the server sends with packet.ReadPacket. Every
// failing method calls t.Fatal, so use it from the test goroutine only.
type pconn struct {
	t   testing.TB
	c   net.Conn
	ver byte
}

func dialP(t testing.TB, addr string, ver byte) *pconn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, waitT)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return &pconn{t: t, c: c, ver: ver}
}

func (p *pconn) write(b []byte) {
	p.t.Helper()
	_ = p.c.SetWriteDeadline(time.Now().Add(waitT))
	if _, err := p.c.Write(b); err != nil {
		p.t.Fatalf("write: %v", err)
	}
}

// try reads one packet within d.
func (p *pconn) try(d time.Duration) (any, error) {
	_ = p.c.SetReadDeadline(time.Now().Add(d))
	return packet.ReadPacket(p.c, p.ver, 0)
}

// next reads one packet and fails the test if none arrives within waitT.
func (p *pconn) next() any {
	p.t.Helper()
	pkt, err := p.try(waitT)
	if err != nil {
		p.t.Fatalf("waiting for a packet: %v", err)
	}
	return pkt
}

func describe(pkt any) string {
	switch v := pkt.(type) {
	case *packet.Publish:
		return fmt.Sprintf("PUBLISH{topic %q qos %d retain %v dup %v id %d payload %q props %+v}", v.Topic, v.QoS, v.Retain, v.Dup, v.PacketID, v.Payload, v.Props)
	case *packet.Ack:
		return fmt.Sprintf("%s{id %d reason 0x%02X}", v.Type, v.PacketID, v.ReasonCode)
	case *packet.Disconnect:
		return fmt.Sprintf("DISCONNECT{reason 0x%02X}", v.ReasonCode)
	default:
		return fmt.Sprintf("%T%+v", pkt, pkt)
	}
}

// connect sends CONNECT (the protocol version is the connection's) and
// returns the CONNACK, whatever its code.
func (p *pconn) connectAck(cp packet.Connect) *packet.Connack {
	p.t.Helper()
	cp.ProtocolVersion = p.ver
	p.write(cp.Append(nil))
	pkt := p.next()
	ack, ok := pkt.(*packet.Connack)
	if !ok {
		p.t.Fatalf("expected CONNACK, got %s", describe(pkt))
	}
	return ack
}

// connect is connectAck that requires success.
func (p *pconn) connect(cp packet.Connect) *packet.Connack {
	p.t.Helper()
	ack := p.connectAck(cp)
	if ack.ReasonCode != 0 {
		p.t.Fatalf("CONNACK code 0x%02X", ack.ReasonCode)
	}
	return ack
}

// connectID connects with a clean start, the given id and keep-alive 60.
func (p *pconn) connectID(id string) *packet.Connack {
	p.t.Helper()
	return p.connect(packet.Connect{ClientID: id, CleanStart: true, KeepAlive: 60})
}

func (p *pconn) subscribe(id uint16, props packet.Properties, subs ...packet.Subscription) *packet.Suback {
	p.t.Helper()
	sp := packet.Subscribe{PacketID: id, Props: props, Subs: subs}
	p.write(sp.Append(nil, p.ver))
	pkt := p.next()
	sa, ok := pkt.(*packet.Suback)
	if !ok || sa.PacketID != id {
		p.t.Fatalf("expected SUBACK %d, got %s", id, describe(pkt))
	}
	return sa
}

// sub subscribes to one filter at qos and requires it granted as asked.
func (p *pconn) sub(filter string, qos byte) {
	p.t.Helper()
	sa := p.subscribe(1, packet.Properties{}, packet.Subscription{Filter: filter, QoS: qos})
	if len(sa.ReasonCodes) != 1 || sa.ReasonCodes[0] != qos {
		p.t.Fatalf("SUBACK for %s: %v", filter, sa.ReasonCodes)
	}
}

func (p *pconn) publish(pub packet.Publish) {
	p.t.Helper()
	p.write(pub.Append(nil, p.ver))
}

func (p *pconn) ack(t packet.Type, id uint16) {
	p.t.Helper()
	a := packet.Ack{Type: t, PacketID: id}
	p.write(a.Append(nil, p.ver))
}

// expectAck reads the next packet and requires an acknowledgement of type t
// for id; it returns it (for its reason code).
func (p *pconn) expectAck(t packet.Type, id uint16) *packet.Ack {
	p.t.Helper()
	pkt := p.next()
	a, ok := pkt.(*packet.Ack)
	if !ok || a.Type != t || a.PacketID != id {
		p.t.Fatalf("expected %s %d, got %s", t, id, describe(pkt))
	}
	return a
}

// pub1 publishes at QoS 1 and waits for the PUBACK.
func (p *pconn) pub1(topic string, payload []byte, id uint16) *packet.Ack {
	p.t.Helper()
	p.publish(packet.Publish{Topic: topic, QoS: 1, PacketID: id, Payload: payload})
	return p.expectAck(packet.PUBACK, id)
}

// nextPublish reads the next packet and requires a PUBLISH.
func (p *pconn) nextPublish() *packet.Publish {
	p.t.Helper()
	pkt := p.next()
	pub, ok := pkt.(*packet.Publish)
	if !ok {
		p.t.Fatalf("expected PUBLISH, got %s", describe(pkt))
	}
	return pub
}

// expectNothing fails if a packet arrives or the connection ends within d.
func (p *pconn) expectNothing(d time.Duration) {
	p.t.Helper()
	pkt, err := p.try(d)
	if err == nil {
		p.t.Fatalf("expected nothing, got %s", describe(pkt))
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		p.t.Fatalf("expected nothing, connection ended: %v", err)
	}
}

// expectDisconnect requires a v5 DISCONNECT with code, then the end of the
// connection.
func (p *pconn) expectDisconnect(code byte) {
	p.t.Helper()
	pkt, err := p.try(waitT)
	if err != nil {
		p.t.Fatalf("expected DISCONNECT 0x%02X, got %v", code, err)
	}
	d, ok := pkt.(*packet.Disconnect)
	if !ok || d.ReasonCode != code {
		p.t.Fatalf("expected DISCONNECT 0x%02X, got %s", code, describe(pkt))
	}
	p.expectClosed(waitT)
}

// expectClosed requires the connection to end (EOF or reset) within d with
// nothing more received.
func (p *pconn) expectClosed(d time.Duration) {
	p.t.Helper()
	pkt, err := p.try(d)
	if err == nil {
		p.t.Fatalf("expected the connection to close, got %s", describe(pkt))
	}
	if !isClosedErr(err) {
		p.t.Fatalf("expected the connection to close: %v", err)
	}
}

func isClosedErr(err error) bool {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) {
		return true
	}
	s := err.Error()
	return strings.Contains(s, "connection reset") || strings.Contains(s, "broken pipe")
}

// ---------------------------------------------------------------------------
// paho.golang (MQTT 5.0).

type pahoV5 struct {
	*paho.Client
	t    testing.TB
	Ack  *paho.Connack
	Msgs chan *paho.Publish
	Disc chan *paho.Disconnect // DISCONNECT sent by the server
	Errs chan error            // client errors (connection lost ...)
	Conn net.Conn
}

// dialV5 connects a paho.golang client; mod may adjust the client
// configuration (e.g. for manual acknowledgements). It returns the CONNACK
// and Connect's error without failing the test.
func dialV5(t testing.TB, addr string, cp *paho.Connect, mod func(*paho.ClientConfig)) (*pahoV5, error) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, waitT)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	c := &pahoV5{
		t:    t,
		Msgs: make(chan *paho.Publish, 4096),
		Disc: make(chan *paho.Disconnect, 1),
		Errs: make(chan error, 16),
		Conn: conn,
	}
	cfg := paho.ClientConfig{
		Conn: conn,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){
			func(pr paho.PublishReceived) (bool, error) { c.Msgs <- pr.Packet; return true, nil },
		},
		OnServerDisconnect: func(d *paho.Disconnect) {
			select {
			case c.Disc <- d:
			default:
			}
		},
		OnClientError: func(err error) {
			select {
			case c.Errs <- err:
			default:
			}
		},
		PacketTimeout: waitT,
	}
	if mod != nil {
		mod(&cfg)
	}
	c.Client = paho.NewClient(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), waitT)
	defer cancel()
	c.Ack, err = c.Connect(ctx, cp)
	if err != nil {
		_ = conn.Close()
		return c, err
	}
	t.Cleanup(func() {
		_ = c.Client.Disconnect(&paho.Disconnect{})
		select {
		case <-c.Done():
		case <-time.After(waitT):
			t.Errorf("paho client %s did not stop", cp.ClientID)
		}
	})
	return c, nil
}

// connectV5 is dialV5 that requires success.
func connectV5(t testing.TB, addr string, cp *paho.Connect, mod func(*paho.ClientConfig)) *pahoV5 {
	t.Helper()
	c, err := dialV5(t, addr, cp, mod)
	if err != nil {
		t.Fatalf("v5 connect %q: %v", cp.ClientID, err)
	}
	return c
}

// v5 connects a clean-start paho.golang client with keep-alive 30.
func v5(t testing.TB, addr, id string) *pahoV5 {
	t.Helper()
	return connectV5(t, addr, &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30}, nil)
}

func (c *pahoV5) sub(opts ...paho.SubscribeOptions) *paho.Suback {
	c.t.Helper()
	return c.subProps(nil, opts...)
}

func (c *pahoV5) subProps(props *paho.SubscribeProperties, opts ...paho.SubscribeOptions) *paho.Suback {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitT)
	defer cancel()
	sa, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: opts, Properties: props})
	if err != nil {
		c.t.Fatalf("subscribe %+v: %v", opts, err)
	}
	return sa
}

func (c *pahoV5) pub(p *paho.Publish) *paho.PublishResponse {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitT)
	defer cancel()
	r, err := c.Publish(ctx, p)
	if err != nil {
		c.t.Fatalf("publish to %s: %v", p.Topic, err)
	}
	return r
}

// recv waits for the next message.
func (c *pahoV5) recv() *paho.Publish {
	c.t.Helper()
	select {
	case m := <-c.Msgs:
		return m
	case <-time.After(waitT):
		c.t.Fatalf("no message received within %v", waitT)
		return nil
	}
}

// recvUntil collects messages up to and including one on the barrier topic.
func (c *pahoV5) recvUntil(barrier string) []*paho.Publish {
	c.t.Helper()
	var got []*paho.Publish
	for {
		m := c.recv()
		if m.Topic == barrier {
			return got
		}
		got = append(got, m)
	}
}

func (c *pahoV5) noMsg(d time.Duration) {
	c.t.Helper()
	select {
	case m := <-c.Msgs:
		c.t.Fatalf("unexpected message on %s: %q", m.Topic, m.Payload)
	case <-time.After(d):
	}
}

// serverDisconnect waits for a DISCONNECT from the server.
func (c *pahoV5) serverDisconnect() *paho.Disconnect {
	c.t.Helper()
	select {
	case d := <-c.Disc:
		return d
	case <-time.After(waitT):
		c.t.Fatalf("no DISCONNECT from the server within %v", waitT)
		return nil
	}
}

func u32(v uint32) *uint32 { return &v }
func u16(v uint16) *uint16 { return &v }
func byteP(v byte) *byte   { return &v }

// ---------------------------------------------------------------------------
// paho.mqtt.golang (MQTT 3.1.1).

type pahoV3 struct {
	mqtt.Client
	t    testing.TB
	Msgs chan mqtt.Message
	Lost chan error
	Conn chan net.Conn // the network connection, for closing it abruptly
	sp   bool
}

// connectV3 connects a paho.mqtt.golang client speaking 3.1.1 with auto
// reconnect off. Every message arrives through the default publish handler
// (subscribe with a nil callback) into Msgs, once per PUBLISH received.
func connectV3(t testing.TB, addr, id string, clean bool, mod func(*mqtt.ClientOptions)) *pahoV3 {
	t.Helper()
	c, err := dialV3(t, addr, id, clean, mod)
	if err != nil {
		t.Fatalf("v3 connect %q: %v", id, err)
	}
	return c
}

func dialV3(t testing.TB, addr, id string, clean bool, mod func(*mqtt.ClientOptions)) (*pahoV3, error) {
	t.Helper()
	c := &pahoV3{t: t, Msgs: make(chan mqtt.Message, 4096), Lost: make(chan error, 1), Conn: make(chan net.Conn, 1)}
	u, _ := url.Parse("tcp://" + addr)
	o := mqtt.NewClientOptions().AddBroker(u.String()).SetClientID(id).SetCleanSession(clean).
		SetProtocolVersion(4).SetAutoReconnect(false).SetConnectRetry(false).
		SetConnectTimeout(waitT).SetKeepAlive(30 * time.Second).SetWriteTimeout(waitT).
		SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) { c.Msgs <- m }).
		SetConnectionLostHandler(func(_ mqtt.Client, err error) {
			select {
			case c.Lost <- err:
			default:
			}
		}).
		SetCustomOpenConnectionFn(func(u *url.URL, _ mqtt.ClientOptions) (net.Conn, error) {
			conn, err := net.DialTimeout("tcp", u.Host, waitT)
			if err == nil {
				select {
				case c.Conn <- conn:
				default:
				}
			}
			return conn, err
		})
	if mod != nil {
		mod(o)
	}
	c.Client = mqtt.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(waitT) {
		c.Disconnect(0)
		return c, errors.New("connect timed out")
	}
	if err := tok.Error(); err != nil {
		return c, err
	}
	c.sp = tok.(*mqtt.ConnectToken).SessionPresent()
	t.Cleanup(func() { c.Disconnect(50) })
	return c, nil
}

func wait(t testing.TB, tok mqtt.Token, what string) {
	t.Helper()
	if !tok.WaitTimeout(waitT) {
		t.Fatalf("%s: timed out", what)
	}
	if err := tok.Error(); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// sub subscribes to filters (all at qos) and returns the granted codes.
func (c *pahoV3) sub(qos byte, filters ...string) []byte {
	c.t.Helper()
	m := make(map[string]byte, len(filters))
	for _, f := range filters {
		m[f] = qos
	}
	tok := c.SubscribeMultiple(m, nil)
	wait(c.t, tok, "subscribe")
	st := tok.(*mqtt.SubscribeToken)
	res := st.Result()
	out := make([]byte, len(filters))
	for i, f := range filters {
		out[i] = res[f]
	}
	return out
}

func (c *pahoV3) pub(topic string, qos byte, retain bool, payload string) {
	c.t.Helper()
	wait(c.t, c.Publish(topic, qos, retain, payload), "publish to "+topic)
}

func (c *pahoV3) recv() mqtt.Message {
	c.t.Helper()
	select {
	case m := <-c.Msgs:
		return m
	case <-time.After(waitT):
		c.t.Fatalf("no message received within %v", waitT)
		return nil
	}
}

// recvUntil collects messages up to and including one on the barrier topic.
func (c *pahoV3) recvUntil(barrier string) []mqtt.Message {
	c.t.Helper()
	var got []mqtt.Message
	for {
		m := c.recv()
		if m.Topic() == barrier {
			return got
		}
		got = append(got, m)
	}
}

// netConn returns the client's current network connection.
func (c *pahoV3) netConn() net.Conn {
	c.t.Helper()
	select {
	case conn := <-c.Conn:
		return conn
	case <-time.After(waitT):
		c.t.Fatal("no connection captured")
		return nil
	}
}
