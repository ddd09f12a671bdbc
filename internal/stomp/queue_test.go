package stomp_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/isobar-mq/isobar/internal/stomp"
	"github.com/isobar-mq/isobar/internal/testutil"
)

func TestQueueLoadBalancingAndAcks(t *testing.T) {
	t.Parallel()
	_, addr := runNode(t, "")
	a := connect(t, addr, "1.2")
	b := connect(t, addr, "1.2")
	a.subscribe("qa", "/queue/work", "ack:client-individual", "activemq.prefetchSize:1")
	b.subscribe("qb", "/queue/work", "ack:client-individual", "activemq.prefetchSize:1")
	p := connect(t, addr, "1.1")
	for i := range 4 {
		p.sendMsg("/queue/work", fmt.Sprint(i), "persistent:true", "x-n:"+fmt.Sprint(i))
	}
	// Each consumer holds one message at most (its window) and gets the
	// next when it acknowledges; both get some.
	clients := []*client{a, b}
	chans := []<-chan *stomp.Frame{a.pump(), b.pump()}
	next := func() (int, *stomp.Frame) {
		t.Helper()
		select {
		case f := <-chans[0]:
			return 0, f
		case f := <-chans[1]:
			return 1, f
		case <-time.After(5 * time.Second):
			t.Fatal("no MESSAGE")
		}
		return 0, nil
	}
	got := map[string]bool{}
	per := [2]int{}
	for len(got) < 4 {
		i, m := next()
		if m == nil || m.Command != "MESSAGE" || m.Value("destination") != "/queue/work" || m.Value("x-n") != string(m.Body) {
			t.Fatalf("got %v", m)
		}
		if got[string(m.Body)] {
			t.Fatalf("%q delivered twice", m.Body)
		}
		got[string(m.Body)] = true
		per[i]++
		clients[i].send(frame("ACK", "id:"+m.Value("ack")))
	}
	if per[0] == 0 || per[1] == 0 {
		t.Fatalf("%d to a, %d to b", per[0], per[1])
	}

	// NACK, as in ActiveMQ, is a poison acknowledgement: the message is
	// not offered again (a persistent one goes to ActiveMQ.DLQ).
	p.sendMsg("/queue/work", "again")
	i, f := next()
	if string(f.Body) != "again" || f.Value("redelivered") == "true" {
		t.Fatalf("first delivery %v %q", f.Headers, f.Body)
	}
	clients[i].send(frame("NACK", "id:"+f.Value("ack"), "receipt:k"))
	if _, r := next(); r.Command != "RECEIPT" {
		t.Fatalf("after NACK got %s %v %q (redelivered?)", r.Command, r.Headers, r.Body)
	}
	// UNSUBSCRIBE with a message unacknowledged returns it to the queue.
	p.sendMsg("/queue/work", "third")
	i, f = next()
	if string(f.Body) != "third" {
		t.Fatalf("got %q", f.Body)
	}
	clients[i].send(frame("UNSUBSCRIBE", "id:"+[]string{"qa", "qb"}[i]))
	if j, g := next(); j == i || string(g.Body) != "third" || g.Value("redelivered") != "true" {
		t.Fatalf("after UNSUBSCRIBE: client %d got %v %q", j, g.Headers, g.Body)
	}
}

func TestQueueAutoAckAndSelector(t *testing.T) {
	t.Parallel()
	_, addr := runNode(t, "")
	p := connect(t, addr, "1.2")
	p.sendMsg("/queue/sel", "red", "color:red")
	p.sendMsg("/queue/sel", "blue", "color:blue", "priority:9")
	c := connect(t, addr, "1.2")
	c.send(frame("SUBSCRIBE", "id:1", "destination:/queue/sel", "selector:color = 'blue'"))
	if f := c.expect("MESSAGE"); string(f.Body) != "blue" || f.Value("priority") != "9" {
		t.Fatalf("got %v %q", f.Headers, f.Body)
	}
	c.expectNothing(200 * time.Millisecond)
	// The red one is still queued for a consumer that matches it.
	d := connect(t, addr, "1.2")
	d.send(frame("SUBSCRIBE", "id:1", "destination:/queue/sel"))
	if f := d.expect("MESSAGE"); string(f.Body) != "red" {
		t.Fatalf("got %q", f.Body)
	}
	// A topic subscription with a selector.
	c.subscribe("t", "/topic/sel", "selector:n > 2")
	for i := range 5 {
		p.sendMsg("/topic/sel", fmt.Sprint(i), "n:"+fmt.Sprint(i))
	}
	for _, want := range []string{"3", "4"} {
		if f := c.expect("MESSAGE"); string(f.Body) != want {
			t.Fatalf("got %q, want %s", f.Body, want)
		}
	}
	// A bad selector is an ERROR.
	c.send(frame("SUBSCRIBE", "id:2", "destination:/queue/x", "selector:n >"))
	c.expectErrorClose("selector")
}

func TestTempDestinations(t *testing.T) {
	t.Parallel()
	_, addr := runNode(t, "")
	req := connect(t, addr, "1.2")
	req.subscribe("r", "/temp-queue/replies")
	req.subscribe("rt", "/temp-topic/events")
	srv := connect(t, addr, "1.2")
	srv.subscribe("s", "/queue/service")
	req.sendMsg("/queue/service", "ping", "reply-to:/temp-queue/replies")
	f := srv.expect("MESSAGE")
	rt := f.Value("reply-to")
	if rt == "" || rt == "/temp-queue/replies" {
		t.Fatalf("reply-to not rewritten: %v", f.Headers)
	}
	srv.sendMsg(rt, "pong")
	if g := req.expect("MESSAGE"); string(g.Body) != "pong" || g.Value("subscription") != "r" {
		t.Fatalf("reply %v %q", g.Headers, g.Body)
	}
	// The temporary topic, named as in a rewritten reply-to.
	req.sendMsg("/queue/service", "ping2", "reply-to:/temp-topic/events")
	f = srv.expect("MESSAGE")
	srv.sendMsg(f.Value("reply-to"), "event")
	if g := req.expect("MESSAGE"); string(g.Body) != "event" || g.Value("subscription") != "rt" {
		t.Fatalf("reply %v %q", g.Headers, g.Body)
	}
	// Another connection's /temp-queue/replies is its own queue.
	srv.sendMsg("/temp-queue/replies", "not for req")
	req.expectNothing(200 * time.Millisecond)
	// Nobody else may consume a temporary queue.
	srv.send(frame("SUBSCRIBE", "id:x", "destination:"+rt))
	srv.expectErrorClose("temporary")
}

func TestPersistentQueueSurvivesRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := baseYAML + "store: {mode: pebble, data_dir: \"" + dir + "\"}\n"
	n := testutil.RunNode(t, cfg)
	p := connect(t, stompAddr(t, n), "1.2")
	p.sendMsg("/queue/durable", "kept", "persistent:true", "x-h:1")
	p.sendMsg("/queue/durable", "lost")
	p.disconnect()
	if err := n.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	n = testutil.RunNode(t, cfg)
	c := connect(t, stompAddr(t, n), "1.2")
	c.send(frame("SUBSCRIBE", "id:1", "destination:/queue/durable"))
	if f := c.expect("MESSAGE"); string(f.Body) != "kept" || f.Value("x-h") != "1" || f.Value("persistent") != "true" {
		t.Fatalf("got %v %q", f.Headers, f.Body)
	}
	c.expectNothing(200 * time.Millisecond)
}

func TestTransactionalAcks(t *testing.T) {
	t.Parallel()
	_, addr := runNode(t, "")
	c := connect(t, addr, "1.2")
	c.sendMsg("/queue/txa", "m1")
	c.sendMsg("/queue/txa", "m2")
	c.subscribe("s", "/queue/txa", "ack:client-individual")
	m1, m2 := c.expect("MESSAGE"), c.expect("MESSAGE")
	// m1 acknowledged in a committed transaction, m2 in an aborted one.
	c.send(frame("BEGIN", "transaction:a"))
	c.send(frame("ACK", "id:"+m1.Value("ack"), "transaction:a"))
	c.send(frame("COMMIT", "transaction:a"))
	c.send(frame("BEGIN", "transaction:b"))
	c.send(frame("ACK", "id:"+m2.Value("ack"), "transaction:b"))
	c.send(frame("ABORT", "transaction:b"))
	c.send(frame("UNSUBSCRIBE", "id:s", "receipt:u"))
	c.receipt("u")
	// Only m2 is back in the queue.
	d := connect(t, addr, "1.2")
	d.send(frame("SUBSCRIBE", "id:1", "destination:/queue/txa"))
	if f := d.expect("MESSAGE"); string(f.Body) != "m2" || f.Value("redelivered") != "true" {
		t.Fatalf("got %v %q", f.Headers, f.Body)
	}
	d.expectNothing(200 * time.Millisecond)
}
