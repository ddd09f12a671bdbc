package client_test

import (
	"crypto/tls"
	"fmt"
	"github.com/isobar-mq/isobar/internal/mqtt/client"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/isobar-mq/isobar/internal/mqtt/packet"
)

var versions = []struct {
	name string
	v    byte
}{{"v311", packet.V311}, {"v5", packet.V5}}

// roundTrip subscribes with one client and publishes with another at QoS
// 0, 1 and 2, checking topic, payload, QoS and (v5) user properties.
func roundTrip(t *testing.T, subURL, pubURL string, v byte, tlsConf *tls.Config, bridge bool) {
	t.Helper()
	rec := newRecorder()
	connected := make(chan bool, 4)
	sub := mustNew(t, client.Config{URL: subURL, Version: v, ClientID: "sub-" + t.Name(), TLS: tlsConf, Bridge: bridge,
		SessionExpiry: 60, Handler: rec.handler(true), OnConnect: func(sp bool) { connected <- sp },
		Subscriptions: []client.Subscription{{Filter: "rt/#", QoS: 2}}})
	sub.Start()
	pub := mustNew(t, client.Config{URL: pubURL, Version: v, ClientID: "pub-" + t.Name(), TLS: tlsConf, CleanStart: true})
	pub.Start()
	<-connected
	waitConnected(t, pub, 5*time.Second)
	// The SUBACK may still be on its way: retry a probe until it arrives.
	checkFor(t, 5*time.Second, 100*time.Millisecond, func() error {
		publish(t, pub, &client.Message{Topic: "rt/probe", QoS: 1})
		select {
		case <-rec.ch:
			return nil
		case <-time.After(100 * time.Millisecond):
			return fmt.Errorf("probe not received")
		}
	})
	for len(rec.ch) > 0 {
		<-rec.ch
	}
	for q := byte(0); q <= 2; q++ {
		m := &client.Message{Topic: fmt.Sprintf("rt/q%d", q), QoS: q, Payload: []byte(fmt.Sprintf("payload %d", q))}
		if v == packet.V5 {
			m.Props.User = []packet.UserProperty{{Key: "k", Value: "v"}}
		}
		publish(t, pub, m)
		got := rec.next(t, 5*time.Second)
		if got.Topic != m.Topic || string(got.Payload) != string(m.Payload) || got.QoS != q {
			t.Fatalf("got %s %q QoS %d, want %s %q QoS %d", got.Topic, got.Payload, got.QoS, m.Topic, m.Payload, q)
		}
		if v == packet.V5 && (len(got.Props.User) != 1 || got.Props.User[0].Value != "v") {
			t.Fatalf("user properties %+v", got.Props.User)
		}
	}
	if s := pub.Stats(); s.Out < 4 {
		t.Errorf("publisher stats %+v", s)
	}
}

// TestMosquitto: round trips through a real mosquitto in both versions,
// and with the 3.1.1 bridge bit.
func TestMosquitto(t *testing.T) {
	m := startMosquitto(t, "")
	for _, ver := range versions {
		t.Run(ver.name, func(t *testing.T) { roundTrip(t, m.url(), m.url(), ver.v, nil, false) })
	}
	t.Run("bridge", func(t *testing.T) { roundTrip(t, m.url(), m.url(), packet.V311, nil, true) })
}

// TestMosquittoRestart: mosquitto stopped (sessions saved) and restarted
// on the same port: the client reconnects with its session, the
// unacknowledged message comes again, the subscription still works; then
// killed and restarted without its database: the client subscribes again.
func TestMosquittoRestart(t *testing.T) {
	m := startMosquitto(t, "")
	for _, ver := range versions {
		t.Run(ver.name, func(t *testing.T) {
			rec := newRecorder()
			ackNext := atomic.Bool{}
			connected := make(chan bool, 8)
			sub := mustNew(t, client.Config{URL: m.url(), Version: ver.v, ClientID: "restart-" + ver.name, SessionExpiry: 300,
				MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
				OnConnect: func(sp bool) { connected <- sp },
				Handler: func(msg *client.Message) {
					if ackNext.Load() {
						msg.Ack()
					}
					rec.ch <- msg
				},
				Subscriptions: []client.Subscription{{Filter: "rs/#", QoS: 1}}})
			sub.Start()
			if sp := <-connected; sp {
				t.Log("first connection found an old session")
			}
			pub := mustNew(t, client.Config{URL: m.url(), Version: ver.v, ClientID: "restart-pub-" + ver.name, CleanStart: true,
				MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
			pub.Start()
			waitConnected(t, pub, 5*time.Second)
			time.Sleep(200 * time.Millisecond) // SUBACK
			publish(t, pub, &client.Message{Topic: "rs/1", QoS: 1, Payload: []byte("one")})
			if got := rec.next(t, 5*time.Second); string(got.Payload) != "one" {
				t.Fatalf("got %q", got.Payload)
			}
			// Not acknowledged: mosquitto keeps it for the session.
			m.stop(syscall.SIGTERM)
			if err := m.start(); err != nil {
				t.Fatal(err)
			}
			ackNext.Store(true)
			select {
			case sp := <-connected:
				if !sp {
					t.Fatal("session not present after restart")
				}
			case <-time.After(5 * time.Second):
				t.Fatal("no reconnection")
			}
			if got := rec.next(t, 5*time.Second); string(got.Payload) != "one" || !got.Dup {
				t.Fatalf("redelivered %q dup %v", got.Payload, got.Dup)
			}
			waitConnected(t, pub, 5*time.Second)
			publish(t, pub, &client.Message{Topic: "rs/2", QoS: 1, Payload: []byte("two")})
			if got := rec.next(t, 5*time.Second); string(got.Payload) != "two" {
				t.Fatalf("got %q", got.Payload)
			}

			// Killed, database gone: a fresh broker; the client subscribes again.
			m.kill()
			_ = os.Remove(filepath.Join(m.dir, "mosquitto.db"))
			if err := m.start(); err != nil {
				t.Fatal(err)
			}
			select {
			case sp := <-connected:
				if sp {
					t.Fatal("session present on a fresh broker")
				}
			case <-time.After(5 * time.Second):
				t.Fatal("no reconnection")
			}
			waitConnected(t, pub, 5*time.Second)
			checkFor(t, 5*time.Second, 200*time.Millisecond, func() error {
				publish(t, pub, &client.Message{Topic: "rs/3", QoS: 1, Payload: []byte("three")})
				select {
				case got := <-rec.ch:
					if string(got.Payload) != "three" {
						return fmt.Errorf("got %q", got.Payload)
					}
					return nil
				case <-time.After(200 * time.Millisecond):
					return fmt.Errorf("not resubscribed")
				}
			})
			if s := sub.Stats(); s.Reconnects < 2 {
				t.Errorf("stats %+v", s)
			}
		})
	}
}

// TestMosquittoPaused: a stopped (SIGSTOP) mosquitto is detected by keep
// alive; after SIGCONT the client is back.
func TestMosquittoPaused(t *testing.T) {
	m := startMosquitto(t, "")
	lost := make(chan error, 4)
	c := mustNew(t, client.Config{URL: m.url(), ClientID: "paused", KeepAlive: time.Second, ConnectTimeout: time.Second,
		MinBackoff: 50 * time.Millisecond, MaxBackoff: 100 * time.Millisecond,
		OnConnectionLost: func(err error) { lost <- err }})
	c.Start()
	waitConnected(t, c, 5*time.Second)
	m.signal(syscall.SIGSTOP)
	start := time.Now()
	select {
	case err := <-lost:
		if d := time.Since(start); d > 2500*time.Millisecond || !strings.Contains(err.Error(), "keep alive") {
			t.Fatalf("lost after %v: %v", d, err)
		}
	case <-time.After(4 * time.Second):
		m.signal(syscall.SIGCONT)
		t.Fatal("paused broker not detected")
	}
	if c.Connected() {
		t.Fatal("still connected")
	}
	m.signal(syscall.SIGCONT)
	waitConnected(t, c, 5*time.Second)
}

// TestMosquittoTransports: TLS, WebSocket and secure WebSocket through
// mosquitto's own listeners.
func TestMosquittoTransports(t *testing.T) {
	cert, key, pool := testCerts(t)
	tlsPort, wsPort, wssPort := freePort(t), freePort(t), freePort(t)
	m := startMosquitto(t, fmt.Sprintf("listener %d 127.0.0.1\ncertfile %s\nkeyfile %s\nlistener %d 127.0.0.1\nprotocol websockets\nlistener %d 127.0.0.1\nprotocol websockets\ncertfile %s\nkeyfile %s\n",
		tlsPort, cert, key, wsPort, wssPort, cert, key))
	tlsConf := &tls.Config{RootCAs: pool}
	for _, ver := range versions {
		t.Run(ver.name+"/tls", func(t *testing.T) {
			roundTrip(t, fmt.Sprintf("mqtts://127.0.0.1:%d", tlsPort), m.url(), ver.v, tlsConf, false)
		})
		t.Run(ver.name+"/ws", func(t *testing.T) {
			roundTrip(t, fmt.Sprintf("ws://127.0.0.1:%d/mqtt", wsPort), m.url(), ver.v, nil, false)
		})
		t.Run(ver.name+"/wss", func(t *testing.T) {
			roundTrip(t, fmt.Sprintf("wss://127.0.0.1:%d/mqtt", wssPort), m.url(), ver.v, tlsConf, false)
		})
	}
}

func freePort(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
