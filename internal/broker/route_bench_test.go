package broker

import (
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/isobar-mq/isobar/internal/mqtt/packet"
	"github.com/isobar-mq/isobar/internal/topic"
)

// discardConn is a net.Conn whose writes vanish and whose reads block
// until it is closed: a subscriber that reads instantly.
type discardConn struct {
	mu     sync.Mutex
	closed chan struct{}
	n      int64
}

func newDiscardConn() *discardConn { return &discardConn{closed: make(chan struct{})} }

func (d *discardConn) Read([]byte) (int, error) { <-d.closed; return 0, io.EOF }
func (d *discardConn) Write(b []byte) (int, error) {
	d.mu.Lock()
	d.n += int64(len(b))
	d.mu.Unlock()
	return len(b), nil
}
func (d *discardConn) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	select {
	case <-d.closed:
	default:
		close(d.closed)
	}
	return nil
}
func (d *discardConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (d *discardConn) RemoteAddr() net.Addr             { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1} }
func (d *discardConn) SetDeadline(time.Time) error      { return nil }
func (d *discardConn) SetReadDeadline(time.Time) error  { return nil }
func (d *discardConn) SetWriteDeadline(time.Time) error { return nil }

// benchSubscriber attaches an in-process client with a session subscribed
// to filter at qos.
func benchSubscriber(b *testing.B, s *Server, id, filter string, qos byte, version byte) *client {
	c := newClient(s, newDiscardConn(), "bench")
	c.id = id
	c.version = version
	c.sendQuota = 65535
	c.tx = s.newTxn()
	ack := packet.Connack{}
	s.attach(c, true, 0, nil, 0, &ack, c.tx)
	sess := c.sess
	sess.mu.Lock()
	opts := subscriptionOpts(qos)
	sess.subs[filter] = subscription{filter: filter, opts: opts}
	s.index.Subscribe(sess, filter, opts)
	sess.mu.Unlock()
	return c
}

// BenchmarkPublishDeliver measures the in-process path from a decoded
// PUBLISH to bytes queued for every subscriber (routing, per-session
// delivery, encoding, output batching), for several fan-outs.
func BenchmarkPublishDeliver(b *testing.B) {
	for _, fan := range []int{1, 10, 100} {
		for _, version := range []byte{packet.V311, packet.V5} {
			b.Run(fmt.Sprintf("fanout=%d/v%d", fan, version), func(b *testing.B) {
				s := New(Options{MaxInflight: 65535, MaxQueued: 1}, nil, nil)
				defer func() { _ = s.Shutdown(b.Context()) }()
				subs := make([]*client, fan)
				for i := range subs {
					subs[i] = benchSubscriber(b, s, "sub"+strconv.Itoa(i), "bench/+/t", 0, version)
				}
				payload := make([]byte, 64)
				var sc routeScratch
				tx := s.newTxn()
				m := &Message{Topic: "bench/x/t", Payload: payload, Received: time.Now().UnixNano()}
				b.ReportAllocs()
				b.SetBytes(int64(len(payload) * fan))
				b.ResetTimer()
				for b.Loop() {
					s.publish(m, &sc, tx)
				}
				b.StopTimer()
				for _, c := range subs {
					_ = c.conn.Close()
				}
			})
		}
	}
}

// TestFanoutDoesNotAllocate checks the promise behind the benchmark: routing
// a message to subscribers that keep up allocates nothing per delivery in
// steady state (buffers are reused).
func TestFanoutDoesNotAllocate(t *testing.T) {
	s := New(Options{}, nil, nil)
	defer func() { _ = s.Shutdown(t.Context()) }()
	var subs []*client
	for i := range 50 {
		subs = append(subs, benchSubscriber(nil, s, "sub"+strconv.Itoa(i), "a/#", 0, packet.V5))
	}
	m := &Message{Topic: "a/b", Payload: make([]byte, 32), Received: time.Now().UnixNano()}
	var sc routeScratch
	tx := s.newTxn()
	// Warm up: buffers and flusher state reach their steady size.
	for range 200 {
		s.publish(m, &sc, tx)
	}
	// Let the flushers drain so buffers are recycled, then measure with
	// the flushers idle; the output buffers keep their capacity.
	for _, c := range subs {
		waitIdle(c)
	}
	allocs := testing.AllocsPerRun(100, func() {
		s.publish(m, &sc, tx)
		for _, c := range subs {
			c.omu.Lock()
			c.obuf = c.obuf[:0] // consumed, as a flush would
			c.pending = 0
			c.omu.Unlock()
		}
	})
	// One flusher goroutine start per subscriber per batch is the only
	// allocation left when every message is its own batch; allow it.
	if perSub := allocs / float64(len(subs)); perSub > 1.01 {
		t.Fatalf("%.1f allocations per publish to %d subscribers (%.2f per delivery)", allocs, len(subs), perSub)
	}
	for _, c := range subs {
		_ = c.conn.Close()
	}
}

func waitIdle(c *client) {
	for {
		c.omu.Lock()
		idle := !c.flushing
		c.omu.Unlock()
		if idle {
			return
		}
		time.Sleep(time.Millisecond)
	}
}

func subscriptionOpts(qos byte) topic.Options { return topic.Options{QoS: qos} }
