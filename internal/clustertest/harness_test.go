package clustertest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// TestHarnessCheckerCounts feeds the checker a made-up history and checks
// that it finds exactly the lost, duplicated and reordered messages, and
// that a fault window excuses a loss only for the nodes it affects.
func TestHarnessCheckerCounts(t *testing.T) {
	ch := NewChecker(t, nil)
	ch.AddPublisher(PublisherSpec{ID: "p", Nodes: []int{0}, QoS: 2})
	ch.AddSubscriber(SubscriberSpec{ID: "s0", Nodes: []int{0}, QoS: 2})
	ch.AddSubscriber(SubscriberSpec{ID: "s1", Nodes: []int{1}, QoS: 2})
	ch.AddSubscriber(SubscriberSpec{ID: "s3", Nodes: []int{0}, QoS: 2, Version: 4})
	base := time.Now().Add(-time.Minute)
	p := ch.pubs[0]
	for i := range 10 {
		at := base.Add(time.Duration(i) * 10 * time.Second)
		rec := pubRecord{node: 0, sent: at, acked: at.Add(time.Millisecond)}
		if i == 9 {
			rec.acked = time.Time{} // never acknowledged: may be lost
		}
		p.recs = append(p.recs, rec)
	}
	s0, s1, s3 := ch.subs[0], ch.subs[1], ch.subs[2]
	for _, seq := range []string{"1", "2", "3", "3", "4", "5", "6", "7", "8", "9"} {
		ch.receive(s3, []byte("p "+seq), 2) // a 3.1.1 client's QoS 2 duplicate
	}
	for _, seq := range []string{"1", "2", "4", "3", "4", "6", "7", "8"} { // 5, 9 lost; 4 twice; 3 late
		ch.receive(s0, []byte("p "+seq), 2)
	}
	for _, seq := range []string{"1", "2", "3", "4", "5", "6", "7", "8", "9", "10"} {
		ch.receive(s1, []byte("p "+seq), 1)
	}
	ch.receive(s1, []byte("p 2"), 1)
	ch.receive(s1, []byte("junk"), 1)
	// A fault of node 1 around message 9 excuses nothing for s0 (node 0
	// publisher, node 0 subscriber).
	ch.NodeFault(1, base.Add(80*time.Second), base.Add(81*time.Second))
	// A fault of node 0 around message 5 excuses it.
	ch.NodeFault(0, base.Add(40*time.Second), base.Add(41*time.Second))
	r := ch.Check(nil)
	t.Log(r)
	a, b := r.Subs[0], r.Subs[1]
	if a.MissingCount != 1 || len(a.Missing["p"]) != 1 || a.Missing["p"][0] != 9 || a.Excused != 1 {
		t.Errorf("s0: missing %v (%d), excused %d; want [9] and 1 excused (5)", a.Missing, a.MissingCount, a.Excused)
	}
	if a.DupQoS2 != 1 || a.Reordered != 1 {
		t.Errorf("s0: dup qos2 %d, reordered %d; want 1, 1", a.DupQoS2, a.Reordered)
	}
	if b.MissingCount != 0 || b.DupQoS1 != 1 || b.DupQoS2 != 0 || b.Reordered != 0 || b.Unknown != 1 {
		t.Errorf("s1: %+v; want nothing missing, 1 QoS 1 duplicate, 1 unknown", b)
	}
	if c := r.Subs[2]; c.DupQoS2 != 0 || c.DupQoS2Client != 1 || c.MissingCount != 0 {
		t.Errorf("s3 (MQTT 3.1.1): %+v; want its QoS 2 duplicate counted as the client's", c)
	}
	if r.Lost() != 1 || r.DupQoS2() != 1 {
		t.Errorf("Lost %d, DupQoS2 %d; want 1, 1", r.Lost(), r.DupQoS2())
	}
	if r := ch.Check(func(s SubscriberSpec) bool { return s.ID != "s0" }); r.Lost() != 0 {
		t.Errorf("with s0 not required: Lost %d, want 0", r.Lost())
	}
	ch.shutdown()
}

// TestHarnessSingleNode runs the checker against one node without a
// cluster: MQTT 5 and 3.1.1 publishers and persistent subscribers at QoS 1
// and 2, then a SIGKILL + restart and a SIGSTOP + SIGCONT of the node under
// load. Nothing acknowledged outside the fault windows may be lost, no QoS
// 2 message duplicated, nothing reordered, and after the restart the
// subscribers find their sessions (durable store).
func TestHarnessSingleNode(t *testing.T) {
	c := StartCluster(t, 1, Options{})
	ch := NewChecker(t, c)
	ch.AddPublisher(PublisherSpec{ID: "p5q1", Version: 5, QoS: 1})
	ch.AddPublisher(PublisherSpec{ID: "p5q2", Version: 5, QoS: 2})
	ch.AddPublisher(PublisherSpec{ID: "p3q1", Version: 4, QoS: 1})
	ch.AddPublisher(PublisherSpec{ID: "p3q2", Version: 4, QoS: 2})
	ch.AddSubscriber(SubscriberSpec{ID: "s5q2", Version: 5, QoS: 2})
	ch.AddSubscriber(SubscriberSpec{ID: "s5q1", Version: 5, QoS: 1})
	ch.AddSubscriber(SubscriberSpec{ID: "s3q2", Version: 4, QoS: 2})
	ch.AddSubscriber(SubscriberSpec{ID: "s3q1", Version: 4, QoS: 1})
	ch.Start(30 * time.Second)
	time.Sleep(2 * time.Second)
	before := ch.Acked("p5q2")
	ch.RunFaults([]Fault{{Kind: KillRestart, Hold: time.Second}, {Kind: PauseResume, Hold: time.Second}}, FaultOptions{Settle: time.Second})
	time.Sleep(2 * time.Second)
	ch.Stop(15 * time.Second)
	r := ch.Check(nil)
	t.Log(r)
	for _, p := range r.Pubs {
		if p.Acked < 20 {
			t.Errorf("publisher %s: only %d acknowledged", p.ID, p.Acked)
		}
	}
	if ch.Acked("p5q2") <= before {
		t.Errorf("p5q2 acknowledged nothing after the restart")
	}
	if r.Lost() != 0 || r.DupQoS2() != 0 || r.Reordered() != 0 {
		t.Errorf("lost %d, QoS 2 duplicates %d, reordered %d; want none", r.Lost(), r.DupQoS2(), r.Reordered())
	}
	for _, s := range r.Subs {
		if s.Connects < 2 {
			t.Errorf("subscriber %s connected %d times; the restart should have made it reconnect", s.ID, s.Connects)
		}
		if s.SessionLost != 0 {
			t.Errorf("subscriber %s: session lost %d times across a restart of a durable node", s.ID, s.SessionLost)
		}
	}
	if logs := c.Logs(0); !strings.Contains(logs, "run 2") {
		t.Errorf("log of n1 does not show the second run:\n%s", tail(logs, 2000))
	}
}

// TestHarnessPartitionRules checks the nft rules on plain sockets: TCP
// and UDP between the addresses of two nodes in different groups are cut
// (an established connection too), traffic inside a group and from the
// clients' address is not, and Heal restores everything.
func TestHarnessPartitionRules(t *testing.T) {
	NeedNetns(t)
	c := &Cluster{t: t}
	for i := range 3 {
		c.Nodes = append(c.Nodes, &Node{Name: "n", Index: i, IP: fmt.Sprintf("127.0.0.%d", 11+i)})
	}
	t.Cleanup(func() { _ = c.heal() })
	ln := make([]net.Listener, 3)
	for i, nd := range c.Nodes {
		l, err := net.Listen("tcp", nd.IP+":0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		ln[i] = l
		go func() {
			for {
				conn, err := l.Accept()
				if err != nil {
					return
				}
				go func() { // echo
					defer conn.Close()
					buf := make([]byte, 64)
					for {
						n, err := conn.Read(buf)
						if err != nil {
							return
						}
						if _, err := conn.Write(buf[:n]); err != nil {
							return
						}
					}
				}()
			}
		}()
	}
	dialFrom := func(src string, to int) (net.Conn, error) {
		d := net.Dialer{Timeout: 500 * time.Millisecond}
		if src != "" {
			d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
		}
		return d.Dial("tcp", ln[to].Addr().String())
	}
	echo := func(conn net.Conn) error {
		_ = conn.SetDeadline(time.Now().Add(500 * time.Millisecond))
		if _, err := conn.Write([]byte("x")); err != nil {
			return err
		}
		b := make([]byte, 1)
		_, err := conn.Read(b)
		return err
	}
	established, err := dialFrom(c.Nodes[0].IP, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer established.Close()
	if err := echo(established); err != nil {
		t.Fatal(err)
	}
	udp := func(src string, to int) error {
		l, err := net.ListenPacket("udp", c.Nodes[to].IP+":0")
		if err != nil {
			return err
		}
		defer l.Close()
		s, err := net.DialUDP("udp", &net.UDPAddr{IP: net.ParseIP(src)}, l.LocalAddr().(*net.UDPAddr))
		if err != nil {
			return err
		}
		defer s.Close()
		if _, err := s.Write([]byte("ping")); err != nil {
			return err
		}
		_ = l.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		_, _, err = l.ReadFrom(make([]byte, 16))
		return err
	}

	c.Partition([]int{0, 1}, []int{2})
	if out, err := exec.Command("nft", "list", "table", "inet", nftTable).CombinedOutput(); err != nil {
		t.Fatalf("table not installed: %v %s", err, out)
	}
	if conn, err := dialFrom(c.Nodes[0].IP, 2); err == nil {
		conn.Close()
		t.Error("n1 -> n3 connected across the split")
	}
	if conn, err := dialFrom(c.Nodes[2].IP, 1); err == nil {
		conn.Close()
		t.Error("n3 -> n2 connected across the split")
	}
	if err := echo(established); err == nil {
		t.Error("an established n1 -> n3 connection still works across the split")
	} else if errors.Is(err, net.ErrClosed) {
		t.Errorf("established connection: %v", err)
	}
	if err := udp(c.Nodes[0].IP, 2); err == nil {
		t.Error("UDP n1 -> n3 crossed the split")
	}
	if conn, err := dialFrom(c.Nodes[0].IP, 1); err != nil {
		t.Errorf("n1 -> n2 (same side): %v", err)
	} else {
		conn.Close()
	}
	if err := udp(c.Nodes[1].IP, 0); err != nil {
		t.Errorf("UDP n2 -> n1 (same side): %v", err)
	}
	if conn, err := dialFrom("", 2); err != nil {
		t.Errorf("client -> n3: %v", err)
	} else {
		conn.Close()
	}

	c.Heal()
	if out, err := exec.Command("nft", "list", "tables").CombinedOutput(); err != nil || strings.Contains(string(out), nftTable) {
		t.Fatalf("table still there after Heal: %v %s", err, out)
	}
	if conn, err := dialFrom(c.Nodes[0].IP, 2); err != nil {
		t.Errorf("n1 -> n3 after Heal: %v", err)
	} else {
		conn.Close()
	}
	if err := udp(c.Nodes[0].IP, 2); err != nil {
		t.Errorf("UDP n1 -> n3 after Heal: %v", err)
	}

	c.PartitionReject([]int{0}, []int{1, 2})
	start := time.Now()
	if conn, err := dialFrom(c.Nodes[0].IP, 1); err == nil {
		conn.Close()
		t.Error("n1 -> n2 connected across a rejecting split")
	} else if time.Since(start) > 400*time.Millisecond {
		t.Errorf("rejecting split: the dial took %v (%v): a reset was expected at once", time.Since(start), err)
	}
	c.Heal()
}

// TestHarnessPartitionSingleNode cuts a connected client from a real node:
// its QoS 1 publishes get no PUBACK and new connections fail while cut;
// after Heal a client connects and publishes again.
func TestHarnessPartitionSingleNode(t *testing.T) {
	NeedNetns(t)
	c := StartCluster(t, 1, Options{})
	pub := func(cli *paho.Client, timeout time.Duration) error {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		_, err := cli.Publish(ctx, &paho.Publish{Topic: "cut/t", QoS: 1, Payload: []byte("x")})
		return err
	}
	connect := func(id string) (*paho.Client, error) {
		conn, err := net.DialTimeout("tcp", c.Addr(0), time.Second)
		if err != nil {
			return nil, err
		}
		cli := paho.NewClient(paho.ClientConfig{Conn: conn})
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if _, err := cli.Connect(ctx, &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30}); err != nil {
			conn.Close()
			return nil, err
		}
		t.Cleanup(func() { _ = cli.Disconnect(&paho.Disconnect{}); conn.Close() })
		return cli, nil
	}
	cli, err := connect("cut-a")
	if err != nil {
		t.Fatal(err)
	}
	if err := pub(cli, 5*time.Second); err != nil {
		t.Fatalf("publish before the cut: %v", err)
	}
	c.CutClient(0)
	if err := pub(cli, 2*time.Second); err == nil {
		t.Error("a QoS 1 publish was acknowledged while the client was cut off")
	}
	if cli2, err := connect("cut-b"); err == nil {
		_ = cli2
		t.Error("a new client connected while cut off")
	}
	c.Heal()
	var last error
	for range 20 {
		var cli3 *paho.Client
		if cli3, last = connect("cut-c"); last == nil {
			if last = pub(cli3, 5*time.Second); last == nil {
				break
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	if last != nil {
		t.Fatalf("after Heal: %v", last)
	}
}
