package client_test

import (
	"context"
	"errors"
	"fmt"
	"github.com/isobar-mq/isobar/internal/mqtt/client"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/isobar-mq/isobar/internal/mqtt/packet"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestNewValidates(t *testing.T) {
	for _, cfg := range []client.Config{
		{URL: "http://x", ClientID: "a"},
		{URL: "mqtt://", ClientID: "a"},
		{URL: "mqtt://u:p@h", ClientID: "a"},
		{URL: "mqtt://h"},
		{URL: "mqtt://h", ClientID: "a", Version: 3},
		{URL: "mqtt://h", ClientID: "a", Subscriptions: []client.Subscription{{Filter: "a", QoS: 3}}},
		{URL: "mqtt://h", ClientID: "a", MinBackoff: time.Minute, MaxBackoff: time.Second},
	} {
		if _, err := client.New(cfg); err == nil {
			t.Errorf("New(%+v) accepted", cfg)
		}
	}
	c, err := client.New(client.Config{URL: "wss://example.org/mqtt", CleanStart: true})
	if err != nil {
		t.Fatal(err)
	}
	_ = c.Close()
	if err := c.Publish(context.Background(), &client.Message{Topic: "a"}); !errors.Is(err, client.ErrClosed) {
		t.Errorf("Publish after Close: %v", err)
	}
}

// TestAckOrder: acknowledgements wait for Ack and go out in arrival order;
// a QoS 2 duplicate before PUBREL is not delivered twice.
func TestAckOrder(t *testing.T) {
	f := newFakeServer(t)
	rec := newRecorder()
	c := mustNew(t, client.Config{URL: f.url(), ClientID: "order", Handler: rec.handler(false), KeepAlive: 10 * time.Second})
	c.Start()
	fc, conn := f.accept(t, packet.V5)
	if conn.ClientID != "order" || conn.KeepAlive != 10 || conn.Props.ReceiveMaximum != client.DefaultReceiveMaximum ||
		conn.Props.MaximumPacketSize != client.DefaultMaxPacketSize {
		t.Fatalf("CONNECT %+v", conn)
	}
	fc.connack(false, packet.Properties{})
	for i, q := range []byte{1, 2, 1} {
		fc.send((&packet.Publish{QoS: q, PacketID: uint16(i + 1), Topic: "t", Payload: []byte{byte('a' + i)}}).Append(nil, packet.V5))
	}
	// The QoS 2 message again, as a server resending it would.
	fc.send((&packet.Publish{QoS: 2, Dup: true, PacketID: 2, Topic: "t", Payload: []byte("b")}).Append(nil, packet.V5))
	var ms []*client.Message
	for range 3 {
		ms = append(ms, rec.next(t, 2*time.Second))
	}
	rec.none(t, 100*time.Millisecond)
	fc.readNothing(100 * time.Millisecond)
	ms[2].Ack()
	ms[1].Ack()
	fc.readNothing(100 * time.Millisecond) // message 1 not acknowledged yet
	ms[0].Ack()
	ms[0].Ack() // idempotent
	fc.expectAck(packet.PUBACK, 1)
	fc.expectAck(packet.PUBREC, 2)
	fc.expectAck(packet.PUBACK, 3)
	fc.send((&packet.Ack{Type: packet.PUBREL, PacketID: 2}).Append(nil, packet.V5))
	fc.expectAck(packet.PUBCOMP, 2)
	// After PUBREL the identifier is free: a new message with it is new.
	fc.send((&packet.Publish{QoS: 2, PacketID: 2, Topic: "t", Payload: []byte("d")}).Append(nil, packet.V5))
	if m := rec.next(t, 2*time.Second); string(m.Payload) != "d" {
		t.Fatalf("payload %q", m.Payload)
	}
	if s := c.Stats(); s.In != 4 || !s.Connected {
		t.Errorf("stats %+v", s)
	}
}

// TestOutboundResend: messages in flight are resent with DUP (or PUBREL)
// after a reconnection, and the Publish callers get the final outcome.
func TestOutboundResend(t *testing.T) {
	for _, v := range []byte{packet.V311, packet.V5} {
		t.Run(map[byte]string{4: "v311", 5: "v5"}[v], func(t *testing.T) {
			f := newFakeServer(t)
			c := mustNew(t, client.Config{URL: f.url(), ClientID: "resend", Version: v,
				MinBackoff: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond})
			c.Start()
			fc, _ := f.accept(t, v)
			fc.connack(false, packet.Properties{})
			waitConnected(t, c, 2*time.Second)
			errs := make(chan error, 2)
			go func() {
				errs <- c.Publish(context.Background(), &client.Message{Topic: "q1", QoS: 1, Payload: []byte("one")})
			}()
			p1 := fc.expectPublish()
			go func() {
				errs <- c.Publish(context.Background(), &client.Message{Topic: "q2", QoS: 2, Payload: []byte("two")})
			}()
			p2 := fc.expectPublish()
			fc.send((&packet.Ack{Type: packet.PUBREC, PacketID: p2.PacketID}).Append(nil, v))
			fc.expectAck(packet.PUBREL, p2.PacketID)
			_ = fc.c.Close()

			fc, conn := f.accept(t, v)
			if conn.CleanStart {
				t.Fatal("clean start on reconnection")
			}
			fc.connack(true, packet.Properties{})
			r1 := fc.expectPublish()
			if !r1.Dup || r1.PacketID != p1.PacketID || string(r1.Payload) != "one" {
				t.Fatalf("resent %+v", r1)
			}
			fc.expectAck(packet.PUBREL, p2.PacketID)
			fc.send((&packet.Ack{Type: packet.PUBACK, PacketID: p1.PacketID}).Append(nil, v))
			fc.send((&packet.Ack{Type: packet.PUBCOMP, PacketID: p2.PacketID}).Append(nil, v))
			for range 2 {
				select {
				case err := <-errs:
					if err != nil {
						t.Fatal(err)
					}
				case <-time.After(3 * time.Second):
					t.Fatal("Publish did not return")
				}
			}
			if s := c.Stats(); s.Reconnects != 1 || s.Out != 2 {
				t.Errorf("stats %+v", s)
			}
		})
	}
}

// TestReceiveMaximum: no more messages in flight than the server allows;
// a v5 refusal reaches the caller.
func TestReceiveMaximum(t *testing.T) {
	f := newFakeServer(t)
	c := mustNew(t, client.Config{URL: f.url(), ClientID: "rm"})
	c.Start()
	fc, _ := f.accept(t, packet.V5)
	var props packet.Properties
	props.Set(packet.PropReceiveMaximum)
	props.ReceiveMaximum = 1
	fc.connack(false, props)
	waitConnected(t, c, 2*time.Second)
	errs := make(chan error, 2)
	go func() { errs <- c.Publish(context.Background(), &client.Message{Topic: "a", QoS: 1}) }()
	p1 := fc.expectPublish()
	go func() { errs <- c.Publish(context.Background(), &client.Message{Topic: "b", QoS: 1}) }()
	fc.readNothing(200 * time.Millisecond)
	// A waiting caller gives up with its context.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := c.Publish(ctx, &client.Message{Topic: "c", QoS: 1}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Publish with full window: %v", err)
	}
	fc.send((&packet.Ack{Type: packet.PUBACK, PacketID: p1.PacketID, ReasonCode: packet.NotAuthorized}).Append(nil, packet.V5))
	p2 := fc.expectPublish()
	if p2.Topic != "b" {
		t.Fatalf("second PUBLISH %q", p2.Topic)
	}
	fc.send((&packet.Ack{Type: packet.PUBACK, PacketID: p2.PacketID}).Append(nil, packet.V5))
	var refused, ok int
	for range 2 {
		err := <-errs
		var pe *client.PublishError
		switch {
		case err == nil:
			ok++
		case errors.As(err, &pe) && pe.Code == packet.NotAuthorized:
			refused++
		default:
			t.Fatal(err)
		}
	}
	if refused != 1 || ok != 1 {
		t.Fatalf("refused %d ok %d", refused, ok)
	}
}

// TestMalformedFromServer: a malformed packet closes the connection (v5:
// DISCONNECT 0x81), the client reconnects, nothing panics.
func TestMalformedFromServer(t *testing.T) {
	f := newFakeServer(t)
	lost := make(chan error, 4)
	c := mustNew(t, client.Config{URL: f.url(), ClientID: "bad", MinBackoff: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond,
		OnConnectionLost: func(err error) { lost <- err }})
	c.Start()
	for _, bad := range [][]byte{
		{0x30, 0x02, 0x00, 0x05},       // topic length beyond the packet
		{0x32, 0x03, 0x00, 0x01, 'a'},  // QoS 1 without packet identifier
		{0x00, 0x00},                   // reserved type
		{0x30, 0xFF, 0xFF, 0xFF, 0xFF}, // bad remaining length
		{0x30, 0xFF, 0xFF, 0xFF, 0x7F}, // too large
		{0x10, 0x00},                   // CONNECT from a server
	} {
		fc, _ := f.accept(t, packet.V5)
		fc.connack(false, packet.Properties{})
		fc.send(bad)
		select {
		case err := <-lost:
			t.Logf("% X: %v", bad, err)
		case <-time.After(3 * time.Second):
			t.Fatalf("% X: connection not closed", bad)
		}
	}
}

// TestRefusedAndCloseDuringReconnect: a refusal is a ConnectError and the
// loop continues; Close interrupts a connection attempt that hangs.
func TestRefusedAndCloseDuringReconnect(t *testing.T) {
	f := newFakeServer(t)
	c := mustNew(t, client.Config{URL: f.url(), ClientID: "refused", Version: packet.V311,
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond})
	c.Start()
	fc, _ := f.accept(t, packet.V311)
	fc.send((&packet.Connack{ReasonCode: packet.ConnRefusedBadCredentials}).Append(nil, packet.V311))
	fc, _ = f.accept(t, packet.V311) // the loop goes on
	if s := c.Stats(); !strings.Contains(s.LastError, "bad user name or password") || s.Connected {
		t.Fatalf("stats %+v", s)
	}
	// No CONNACK: the attempt hangs until Close.
	_ = fc
	start := time.Now()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("Close took %v", d)
	}
	if err := c.Publish(context.Background(), &client.Message{Topic: "a"}); !errors.Is(err, client.ErrClosed) {
		t.Fatalf("Publish after Close: %v", err)
	}
}

// TestKeepAliveFake: the client pings, and a server that stops answering
// is detected within 1.5 x keep alive.
func TestKeepAliveFake(t *testing.T) {
	f := newFakeServer(t)
	lost := make(chan error, 1)
	c := mustNew(t, client.Config{URL: f.url(), ClientID: "ka", KeepAlive: time.Second,
		OnConnectionLost: func(err error) { lost <- err }})
	c.Start()
	fc, _ := f.accept(t, packet.V5)
	fc.connack(false, packet.Properties{})
	start := time.Now()
	if p := fc.read(); p != packet.PINGREQ {
		t.Fatalf("got %s, want PINGREQ", fmt.Sprintf("%T", p))
	}
	select {
	case err := <-lost:
		if d := time.Since(start); d > 2*time.Second || !strings.Contains(err.Error(), "keep alive") {
			t.Fatalf("lost after %v: %v", d, err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("silent server not detected")
	}
}
