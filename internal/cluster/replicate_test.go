package cluster_test

import (
	"fmt"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/isobar-mq/isobar/internal/cluster"
	"github.com/isobar-mq/isobar/internal/testutil/peer"
)

func startReplicated(t *testing.T, n int, ack string) []*tnode {
	t.Helper()
	peer.NeedBinary(t, "mosquitto_sub", "mosquitto-clients")
	var nodes []*tnode
	for i := range n {
		var seeds []string
		if i > 0 {
			seeds = []string{nodes[0].cn.Addr()}
		}
		nodes = append(nodes, startNodeWith(t, fmt.Sprintf("n%d", i+1), seeds, func(c *cluster.Config) {
			c.Replicas = 1
			c.AckLocal = ack == "local"
		}))
	}
	waitLinks(t, nodes, n)
	return nodes
}

// connectCollect connects a persistent v3.1.1 client and collects what
// it receives; it reports session present.
func connectCollect(t *testing.T, addr, id string, col *collector) (mqtt.Client, bool) {
	t.Helper()
	o := mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).SetCleanSession(false).
		SetAutoReconnect(false).SetOrderMatters(true).SetDefaultPublishHandler(col.handler)
	c := mqtt.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect %s to %s: %v", id, addr, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(50) })
	return c, tok.(*mqtt.ConnectToken).SessionPresent()
}

// The owner of a persistent session dies: the session, with every
// acknowledged message (those queued before, and those published while
// the death was not yet detected), is there on another node.
func TestClusterReplicatedSessionSurvivesOwner(t *testing.T) {
	nodes := startReplicated(t, 3, "replicated")
	var col collector
	c, _ := connectCollect(t, nodes[0].mqtt, "durable", &col)
	subscribe(t, c, "rep/#", 1, &col)
	waitRoutes(t, nodes, "n1", 1)
	c.Disconnect(100)
	pub := client(t, nodes[2].mqtt, "pub", true)
	for i := range 20 {
		publish(t, pub, "rep/a", 1, false, fmt.Sprint(i))
	}
	// The replica holds them.
	checkFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		copies := 0
		for _, tn := range nodes[1:] {
			copies += tn.cn.Status().ReplicaCopies
		}
		if copies != 1 {
			return fmt.Errorf("%d replica copies, want 1", copies)
		}
		return nil
	})
	nodes[0].stop() // the owner dies (no leave)
	for i := 20; i < 30; i++ {
		publish(t, pub, "rep/a", 1, false, fmt.Sprint(i)) // acknowledged: the replica has them
	}
	// Promoted on a survivor; the client finds it from any node.
	checkFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		for _, tn := range nodes[1:] {
			for _, id := range tn.srv.SessionIDs() {
				if id == "durable" {
					return nil
				}
			}
		}
		return fmt.Errorf("session not promoted yet")
	})
	for i := 30; i < 35; i++ {
		publish(t, pub, "rep/a", 1, false, fmt.Sprint(i)) // routed to the promoted session
	}
	// The client comes back on another survivor (mosquitto_sub: a real
	// v3.1.1 client resuming its session, no new subscription needed).
	h, port, _ := net.SplitHostPort(nodes[2].mqtt)
	if nodes[2].cn.Status().ReplicaCopies == 0 {
		h, port, _ = net.SplitHostPort(nodes[1].mqtt)
	}
	out, err := exec.Command("mosquitto_sub", "-h", h, "-p", port, "-i", "durable", "-c", "-q", "1",
		"-t", "rep/#", "-v", "-C", "35", "-W", "10").Output()
	if err != nil {
		t.Fatalf("mosquitto_sub: %v (got %q)", err, out)
	}
	got := strings.Split(strings.TrimSpace(string(out)), "\n")
	seen := map[string]int{}
	for _, g := range got {
		seen[g]++
	}
	for i := range 35 {
		if seen[fmt.Sprintf("rep/a %d", i)] == 0 {
			t.Fatalf("acknowledged message %d lost; got %v", i, got)
		}
	}
	// In order per publisher.
	last := -1
	for _, g := range got {
		var k int
		if _, err := fmt.Sscanf(g, "rep/a %d", &k); err == nil {
			if k < last {
				t.Fatalf("reordered: %d after %d in %v", k, last, got)
			}
			last = k
		}
	}
}

// With ack: local the replica follows the owner's change stream.
func TestClusterReplicatedSessionAckLocal(t *testing.T) {
	nodes := startReplicated(t, 3, "local")
	var col collector
	c, _ := connectCollect(t, nodes[0].mqtt, "lcl", &col)
	subscribe(t, c, "lc/#", 1, &col)
	waitRoutes(t, nodes, "n1", 1)
	c.Disconnect(100)
	pub := client(t, nodes[1].mqtt, "pub", true)
	for i := range 10 {
		publish(t, pub, "lc/x", 1, false, fmt.Sprint(i))
	}
	time.Sleep(300 * time.Millisecond) // the change stream is asynchronous
	nodes[0].stop()
	var col2 collector
	checkFor(t, 10*time.Second, 100*time.Millisecond, func() error {
		for _, tn := range nodes[1:] {
			for _, id := range tn.srv.SessionIDs() {
				if id == "lcl" {
					return nil
				}
			}
		}
		return fmt.Errorf("not promoted")
	})
	_, present := connectCollect(t, nodes[1].mqtt, "lcl", &col2)
	if !present {
		t.Fatal("session not present")
	}
	if got := col2.wait(t, 10); len(got) < 10 {
		t.Fatalf("got %v", got)
	}
}

// Messages the client acknowledged on the owner are not redelivered by
// the replica after a failover.
func TestClusterReplicatedSessionAcksFollow(t *testing.T) {
	nodes := startReplicated(t, 3, "replicated")
	var col collector
	c, _ := connectCollect(t, nodes[0].mqtt, "acker", &col)
	subscribe(t, c, "ak/#", 1, &col)
	waitRoutes(t, nodes, "n1", 1)
	pub := client(t, nodes[2].mqtt, "pub", true)
	for i := range 10 {
		publish(t, pub, "ak/x", 1, false, fmt.Sprint(i))
	}
	col.wait(t, 10)
	time.Sleep(300 * time.Millisecond) // acknowledgements reach the replica
	c.Disconnect(100)
	nodes[0].stop()
	checkFor(t, 10*time.Second, 100*time.Millisecond, func() error {
		for _, tn := range nodes[1:] {
			for _, id := range tn.srv.SessionIDs() {
				if id == "acker" {
					return nil
				}
			}
		}
		return fmt.Errorf("not promoted")
	})
	publish(t, pub, "ak/x", 1, false, "after")
	var col2 collector
	_, present := connectCollect(t, nodes[1].mqtt, "acker", &col2)
	if !present {
		t.Fatal("session not present")
	}
	col2.wait(t, 1)
	time.Sleep(500 * time.Millisecond)
	if got := col2.list(); len(got) != 1 || got[0] != "ak/x after" {
		t.Fatalf("after failover got %v, want only the new message", got)
	}
}
