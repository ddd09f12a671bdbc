package cluster

import (
	"bytes"
	"crypto/rand"
	"io"
	"net"
	"testing"
	"time"
)

func mbPeekTimeout(d time.Duration) mbOpt {
	return func(c *MembershipConfig) { c.peekTimeout = d }
}

func mbDial(t *testing.T, n *mbNode) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", n.Local().Addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func mbTakeLink(t *testing.T, n *mbNode) net.Conn {
	t.Helper()
	select {
	case c, ok := <-n.Links():
		if !ok {
			t.Fatal("Links() closed")
		}
		t.Cleanup(func() { c.Close() })
		return c
	case <-time.After(3 * time.Second):
		t.Fatal("no link connection arrived")
	}
	return nil
}

// A TCP connection that starts with "ISBL" comes out of Links() with every
// byte intact (the peeked one replayed), in both directions, while
// memberlist keeps working on the same port.
func TestTransportLinkConnOnSharedPort(t *testing.T) {
	a := mbStart(t, "a", "127.0.0.1:0", nil, &mbFast)
	payload := make([]byte, 256<<10)
	_, _ = rand.Read(payload)
	msg := append([]byte("ISBL\x01"), payload...)

	c := mbDial(t, a)
	errc := make(chan error, 1)
	go func() { _, err := c.Write(msg); errc <- err }()
	l := mbTakeLink(t, a)
	got := make([]byte, len(msg))
	_ = l.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(l, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatal("link bytes differ from what was sent")
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if _, err := l.Write([]byte("reply")); err != nil {
		t.Fatal(err)
	}
	back := make([]byte, 5)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c, back); err != nil || string(back) != "reply" {
		t.Fatalf("reply %q %v", back, err)
	}

	// Gossip (UDP and TCP push/pull) on the same port still works.
	b := mbStart(t, "b", "127.0.0.1:0", []string{a.Local().Addr}, &mbFast)
	mbWaitFor(t, 10*time.Second, "a and b to see each other", func() bool { return mbAllAlive([]*mbNode{a, b}) })

	// DialLink reaches the other node's Links() from the bind address.
	dc, err := a.DialLink(t.Context(), b.Local().Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer dc.Close()
	if host, _, _ := net.SplitHostPort(dc.LocalAddr().String()); host != "127.0.0.1" {
		t.Errorf("DialLink from %s", dc.LocalAddr())
	}
	if _, err := dc.Write([]byte("ISBL")); err != nil {
		t.Fatal(err)
	}
	bl := mbTakeLink(t, b)
	four := make([]byte, 4)
	_ = bl.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(bl, four); err != nil || string(four) != "ISBL" {
		t.Fatalf("got %q %v", four, err)
	}
}

// A connection that sends nothing is closed after the peek deadline and
// counted; it never reaches Links() or memberlist.
func TestTransportSilentConnClosed(t *testing.T) {
	a := mbStart(t, "a", "127.0.0.1:0", nil, &mbFast, mbPeekTimeout(300*time.Millisecond))
	c := mbDial(t, a)
	began := time.Now()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := c.Read(make([]byte, 1))
	if n != 0 || err == nil {
		t.Fatalf("read %d, %v: want the server to close", n, err)
	}
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("the silent connection was not closed within 5s")
	}
	if d := time.Since(began); d < 250*time.Millisecond {
		t.Fatalf("closed after %v, before the deadline", d)
	}
	mbWaitFor(t, time.Second, "the drop to be counted", func() bool {
		return mbMetric(t, a.reg, "isobar_cluster_transport_dropped_conns_total", "reason", "silent") == 1
	})
	select {
	case l := <-a.Links():
		t.Fatalf("a silent connection reached Links(): %v", l.RemoteAddr())
	default:
	}
}

// Links() has a bounded backlog: when the link layer does not take them,
// extra link connections are closed (and counted), not queued without end.
func TestTransportLinkBacklogBounded(t *testing.T) {
	a := mbStart(t, "a", "127.0.0.1:0", nil, &mbFast)
	var conns []net.Conn
	for range linkBacklog {
		c := mbDial(t, a)
		if _, err := c.Write([]byte("I")); err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	mbWaitFor(t, 5*time.Second, "the backlog to fill", func() bool { return len(a.Links()) == linkBacklog })
	extra := mbDial(t, a)
	if _, err := extra.Write([]byte("I")); err != nil {
		t.Fatal(err)
	}
	_ = extra.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := extra.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("extra link: %v, want EOF", err)
	}
	if v := mbMetric(t, a.reg, "isobar_cluster_transport_dropped_conns_total", "reason", "link_backlog"); v != 1 {
		t.Fatalf("link_backlog drops = %v", v)
	}
	// Shutdown closes Links() and the connections still in it.
	if err := a.Shutdown(); err != nil {
		t.Fatal(err)
	}
	if _, ok := <-a.Links(); ok {
		t.Fatal("Links() still open after Shutdown")
	}
	_ = conns[0].SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := conns[0].Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("queued link after shutdown: %v, want EOF", err)
	}
	if _, err := a.DialLink(t.Context(), "127.0.0.1:1"); err == nil {
		t.Fatal("DialLink after Shutdown succeeded")
	}
}

// Shutdown also closes connections still waiting for their first byte
// (no goroutine waits out the peek deadline; goleak checks).
func TestTransportShutdownClosesPending(t *testing.T) {
	a := mbStart(t, "a", "127.0.0.1:0", nil, &mbFast)
	c := mbDial(t, a)
	time.Sleep(50 * time.Millisecond)
	began := time.Now()
	if err := a.Shutdown(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(began); d > 2*time.Second {
		t.Fatalf("Shutdown took %v", d)
	}
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("pending conn after shutdown: %v, want EOF", err)
	}
}

// Inbound memberlist streams are bounded: connections that start like an
// encrypted gossip stream and then stall hold a place until they end, and
// past maxInboundStreams new ones are closed at once; places come back
// when the streams close.
func TestTransportStreamLimit(t *testing.T) {
	a := mbStart(t, "a", "127.0.0.1:0", nil, &mbFast)
	const encryptMsg = 10 // memberlist's encrypted-stream message type
	var held []net.Conn
	for range maxInboundStreams {
		c := mbDial(t, a)
		if _, err := c.Write([]byte{encryptMsg}); err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	mbWaitFor(t, 5*time.Second, "every stream handed to memberlist", func() bool { return len(a.tr.streams) == maxInboundStreams })
	extra := mbDial(t, a)
	if _, err := extra.Write([]byte{encryptMsg}); err != nil {
		t.Fatal(err)
	}
	_ = extra.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := extra.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("stream over the limit: %v, want EOF", err)
	}
	if v := mbMetric(t, a.reg, "isobar_cluster_transport_dropped_conns_total", "reason", "stream_limit"); v != 1 {
		t.Fatalf("stream_limit drops = %v", v)
	}
	for _, c := range held {
		c.Close()
	}
	mbWaitFor(t, 5*time.Second, "the places to be released", func() bool { return len(a.tr.streams) == 0 })
	// Gossip still works afterwards.
	b := mbStart(t, "b", "127.0.0.1:0", []string{a.Local().Addr}, &mbFast)
	mbWaitFor(t, 10*time.Second, "a and b to see each other", func() bool { return mbAllAlive([]*mbNode{a, b}) })
}
