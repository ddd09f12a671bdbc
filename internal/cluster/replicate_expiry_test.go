package cluster_test

import (
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/isobar-mq/isobar/internal/cluster"
)

// Expiry across owner changes (docs/cluster.md, "Replicated sessions"):
// session expiry, message expiry and will delay keep counting from the
// events that started them when a replica is promoted, and a session that
// ends on one node is gone everywhere, replicas included.

// startRepl3 starts three nodes with one replica per session (ack:
// replicated) and waits until every link is up.
func startRepl3(t *testing.T) []*tnode {
	t.Helper()
	var nodes []*tnode
	for i := range 3 {
		var seeds []string
		if i > 0 {
			seeds = []string{nodes[0].cn.Addr()}
		}
		nodes = append(nodes, startNodeWith(t, fmt.Sprintf("n%d", i+1), seeds, func(c *cluster.Config) { c.Replicas = 1 }))
	}
	waitLinks(t, nodes, 3)
	return nodes
}

// v5c is a paho.golang (MQTT 5) client on a connection the test owns, so
// that it can also be cut without a DISCONNECT.
type v5c struct {
	conn net.Conn
	cli  *paho.Client
	mu   sync.Mutex
	got  []*paho.Publish
}

// dialV5 connects cp to addr; the connection is closed at the end of the
// test whatever happened to it.
func dialV5(t *testing.T, addr string, cp *paho.Connect) (*v5c, *paho.Connack) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c := &v5c{conn: conn}
	c.cli = paho.NewClient(paho.ClientConfig{Conn: conn, OnClientError: func(error) {},
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){
			func(pr paho.PublishReceived) (bool, error) {
				c.mu.Lock()
				c.got = append(c.got, pr.Packet)
				c.mu.Unlock()
				return true, nil
			}}})
	t.Cleanup(func() { _ = conn.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ca, err := c.cli.Connect(ctx, cp)
	if err != nil {
		t.Fatalf("connect %s to %s: %v", cp.ClientID, addr, err)
	}
	return c, ca
}

func (c *v5c) list() []*paho.Publish {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*paho.Publish(nil), c.got...)
}

func (c *v5c) subscribe(t *testing.T, filter string, qos byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.cli.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: qos}}}); err != nil {
		t.Fatalf("subscribe %s: %v", filter, err)
	}
}

func (c *v5c) publish(t *testing.T, p *paho.Publish) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.cli.Publish(ctx, p); err != nil {
		t.Fatalf("publish %s: %v", p.Topic, err)
	}
}

// disconnect sends DISCONNECT 0x00 and closes the connection.
func (c *v5c) disconnect() {
	_ = c.cli.Disconnect(&paho.Disconnect{ReasonCode: 0})
	_ = c.conn.Close()
}

func u32(v uint32) *uint32 { return &v }

// persistentV5 is a CONNECT resuming (or creating) a session that outlives
// its connection by expiry seconds.
func persistentV5(id string, expiry uint32) *paho.Connect {
	return &paho.Connect{ClientID: id, KeepAlive: 30, Properties: &paho.ConnectProperties{SessionExpiryInterval: u32(expiry)}}
}

func holds(tn *tnode, id string) bool {
	for _, s := range tn.srv.SessionIDs() {
		if s == id {
			return true
		}
	}
	return false
}

// holder returns the first node holding the session, or nil.
func holder(nodes []*tnode, id string) *tnode {
	for _, tn := range nodes {
		if holds(tn, id) {
			return tn
		}
	}
	return nil
}

// replicaHolder waits until exactly one of nodes holds a replica copy and
// returns it.
func replicaHolder(t *testing.T, nodes []*tnode) *tnode {
	t.Helper()
	var h *tnode
	checkFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		h = nil
		copies := 0
		for _, tn := range nodes {
			if n := tn.cn.Status().ReplicaCopies; n > 0 {
				copies += n
				h = tn
			}
		}
		if copies != 1 {
			return fmt.Errorf("%d replica copies, want 1", copies)
		}
		return nil
	})
	return h
}

// nothingLeft checks that no node holds the session, a replica copy, or a
// replica message.
func nothingLeft(nodes []*tnode, id string) error {
	for _, tn := range nodes {
		if holds(tn, id) {
			return fmt.Errorf("%s still holds session %s", tn.name, id)
		}
		st := tn.cn.Status()
		if st.ReplicaCopies != 0 || st.ReplicaMessages != 0 || st.Replicated != 0 {
			return fmt.Errorf("%s: %d replica copies (%d messages), %d sessions replicated", tn.name, st.ReplicaCopies, st.ReplicaMessages, st.Replicated)
		}
	}
	return nil
}

// The owner of an offline session dies 1 s after the DISCONNECT: the
// promoted copy expires when the session would have on its owner (4 s
// after the DISCONNECT, not 4 s after the promotion), and then the session
// is gone everywhere.
func TestClusterReplicatedSessionExpiryAcrossFailover(t *testing.T) {
	nodes := startRepl3(t)
	const id = "exp-fo"
	c, _ := dialV5(t, nodes[0].mqtt, persistentV5(id, 4))
	c.subscribe(t, "xf/#", 1)
	waitRoutes(t, nodes, "n1", 1)
	replicaHolder(t, nodes[1:])
	c.disconnect()
	disconnected := time.Now()
	time.Sleep(time.Second)
	nodes[0].stop() // the owner dies (no leave)
	survivors := nodes[1:]
	var promotedAt time.Time
	checkFor(t, 8*time.Second, 20*time.Millisecond, func() error {
		if holder(survivors, id) == nil {
			return fmt.Errorf("session not promoted yet")
		}
		promotedAt = time.Now()
		return nil
	})
	checkFor(t, 8*time.Second, 20*time.Millisecond, func() error {
		if tn := holder(survivors, id); tn != nil {
			return fmt.Errorf("%s still holds the session %v after the DISCONNECT", tn.name, time.Since(disconnected).Round(time.Millisecond))
		}
		return nil
	})
	expired := time.Since(disconnected)
	t.Logf("promoted %v after the DISCONNECT, expired %v after it", promotedAt.Sub(disconnected).Round(time.Millisecond), expired.Round(time.Millisecond))
	if expired < 3800*time.Millisecond || expired > 4800*time.Millisecond {
		t.Fatalf("the promoted session expired %v after the DISCONNECT, want about 4s", expired)
	}
	// Gone on every node: no replica left.
	checkFor(t, 3*time.Second, 20*time.Millisecond, func() error { return nothingLeft(survivors, id) })
	// Published after the expiry: queued nowhere.
	pub, _ := dialV5(t, nodes[2].mqtt, &paho.Connect{ClientID: "xf-pub", KeepAlive: 30, CleanStart: true})
	pub.publish(t, &paho.Publish{Topic: "xf/a", QoS: 1, Payload: []byte("late")})
	time.Sleep(300 * time.Millisecond)
	if err := nothingLeft(survivors, id); err != nil {
		t.Fatal(err)
	}
	for _, tn := range survivors {
		if st := tn.cn.Status(); st.ReplicaMessages != 0 {
			t.Fatalf("%s queued %d replica messages after the expiry", tn.name, st.ReplicaMessages)
		}
	}
	// A reconnect finds no session.
	c2, ca := dialV5(t, nodes[1].mqtt, persistentV5(id, 0))
	if ca.SessionPresent {
		t.Fatal("session present after the expiry")
	}
	time.Sleep(300 * time.Millisecond)
	if got := c2.list(); len(got) != 0 {
		t.Fatalf("the expired session delivered %d messages after a reconnect", len(got))
	}
	c2.disconnect()
}

// An offline session holds a message with a 3 s Message Expiry Interval
// and one without; its owner dies. A reconnect to a survivor after 4 s
// gets only the second; one after 1 s gets the first with its interval
// reduced by the time it waited [MQTT 5 3.3.2.3.3], never increased.
func TestClusterReplicatedMessageExpiryAcrossFailover(t *testing.T) {
	for _, tc := range []struct {
		name  string
		after time.Duration
	}{{"expired", 4 * time.Second}, {"reduced", time.Second}} {
		t.Run(tc.name, func(t *testing.T) {
			nodes := startRepl3(t)
			id := "mexp-" + tc.name
			c, _ := dialV5(t, nodes[0].mqtt, persistentV5(id, 60))
			c.subscribe(t, "mx/#", 1)
			waitRoutes(t, nodes, "n1", 1)
			replicaHolder(t, nodes[1:])
			c.disconnect()
			time.Sleep(100 * time.Millisecond)
			pub, _ := dialV5(t, nodes[2].mqtt, &paho.Connect{ClientID: "mx-pub", KeepAlive: 30, CleanStart: true})
			pub.publish(t, &paho.Publish{Topic: "mx/a", QoS: 1, Payload: []byte("short"), Properties: &paho.PublishProperties{MessageExpiry: u32(3)}})
			published := time.Now()
			pub.publish(t, &paho.Publish{Topic: "mx/a", QoS: 1, Payload: []byte("forever")})
			nodes[0].stop() // the owner dies (no leave)
			// The reconnect goes to the survivor that does not hold the
			// copy when the other one has not promoted it yet: both claim
			// paths are covered by the two variants.
			time.Sleep(time.Until(published.Add(tc.after)))
			target := nodes[2]
			if holds(nodes[2], id) {
				target = nodes[1]
			}
			c2, ca := dialV5(t, target.mqtt, persistentV5(id, 60))
			waited := time.Since(published)
			if !ca.SessionPresent {
				t.Fatalf("session not present on %s after the failover", target.name)
			}
			want := 1
			if tc.name == "reduced" {
				want = 2
			}
			checkFor(t, 5*time.Second, 20*time.Millisecond, func() error {
				if n := len(c2.list()); n < want {
					return fmt.Errorf("%d of %d messages", n, want)
				}
				return nil
			})
			time.Sleep(300 * time.Millisecond)
			got := c2.list()
			var names []string
			for _, p := range got {
				names = append(names, string(p.Payload))
			}
			if len(got) != want {
				t.Fatalf("got %v, want %d messages", names, want)
			}
			if tc.name == "expired" {
				if string(got[0].Payload) != "forever" {
					t.Fatalf("got %v, want only the message without expiry", names)
				}
				if got[0].Properties != nil && got[0].Properties.MessageExpiry != nil {
					t.Fatalf("the message without expiry arrived with a Message Expiry Interval of %d", *got[0].Properties.MessageExpiry)
				}
			} else {
				if string(got[0].Payload) != "short" || string(got[1].Payload) != "forever" {
					t.Fatalf("got %v, want short then forever", names)
				}
				p := got[0].Properties
				if p == nil || p.MessageExpiry == nil {
					t.Fatal("the message with expiry arrived without its Message Expiry Interval")
				}
				// Whole seconds waited, at least those before the CONNECT.
				max := uint32(3 - int(waited/time.Second))
				if *p.MessageExpiry == 0 || *p.MessageExpiry > max || *p.MessageExpiry >= 3 {
					t.Fatalf("Message Expiry Interval %d after waiting %v, want 1..%d", *p.MessageExpiry, waited.Round(time.Millisecond), max)
				}
				t.Logf("Message Expiry Interval %d after waiting %v", *p.MessageExpiry, waited.Round(time.Millisecond))
			}
			c2.disconnect()
		})
	}
}

// willWatch counts the will messages two clean subscribers (one per
// survivor) receive.
type willWatch struct {
	subs []*v5c
}

func watchWills(t *testing.T, nodes []*tnode, filter string) *willWatch {
	t.Helper()
	w := &willWatch{}
	for i, tn := range nodes {
		s, _ := dialV5(t, tn.mqtt, &paho.Connect{ClientID: fmt.Sprintf("will-watch-%d", i), KeepAlive: 30, CleanStart: true})
		s.subscribe(t, filter, 1)
		w.subs = append(w.subs, s)
	}
	return w
}

// counts returns how many wills each subscriber received.
func (w *willWatch) counts() []int {
	var out []int
	for _, s := range w.subs {
		out = append(out, len(s.list()))
	}
	return out
}

// A client with a 3 s will delay loses its connection (no DISCONNECT);
// its owner dies 1 s later. The will is published exactly once cluster
// wide, about 3 s after the connection loss; not at all if the client
// reconnects (to any node) before the delay ends.
func TestClusterReplicatedWillDelayAcrossFailover(t *testing.T) {
	for _, reconnect := range []bool{false, true} {
		name := "published"
		if reconnect {
			name = "reconnected"
		}
		t.Run(name, func(t *testing.T) {
			nodes := startRepl3(t)
			id := "will-" + name
			w := watchWills(t, nodes[1:], "wd/#")
			waitRoutes(t, nodes, "n2", 1)
			waitRoutes(t, nodes, "n3", 1)
			cp := persistentV5(id, 60)
			cp.WillMessage = &paho.WillMessage{Topic: "wd/" + id, QoS: 1, Payload: []byte("gone")}
			cp.WillProperties = &paho.WillProperties{WillDelayInterval: u32(3)}
			c, _ := dialV5(t, nodes[0].mqtt, cp)
			replicaHolder(t, nodes[1:])
			_ = c.conn.Close() // cut: no DISCONNECT, the will is pending
			lost := time.Now()
			checkFor(t, 2*time.Second, 10*time.Millisecond, func() error {
				if nodes[0].srv.ClientCount() != 0 {
					return fmt.Errorf("the owner has not seen the connection end")
				}
				return nil
			})
			time.Sleep(time.Until(lost.Add(time.Second)))
			nodes[0].stop() // the owner dies (no leave)
			if reconnect {
				// Back before the delay ends, to the survivor without the
				// copy (the claim reaches the copy's node).
				time.Sleep(time.Until(lost.Add(2 * time.Second)))
				target := nodes[2]
				if nodes[2].cn.Status().ReplicaCopies > 0 || holds(nodes[2], id) {
					target = nodes[1]
				}
				c2, ca := dialV5(t, target.mqtt, persistentV5(id, 60))
				t.Logf("reconnected to %s %v after the loss: session present %v", target.name, time.Since(lost).Round(time.Millisecond), ca.SessionPresent)
				if !ca.SessionPresent {
					t.Errorf("session not present on %s", target.name)
				}
				time.Sleep(time.Until(lost.Add(5 * time.Second)))
				if n := w.counts(); n[0] != 0 || n[1] != 0 {
					t.Fatalf("will published (%v per subscriber) although the client reconnected before the delay", n)
				}
				c2.disconnect()
				return
			}
			var at time.Duration
			checkFor(t, 8*time.Second, 10*time.Millisecond, func() error {
				for _, n := range w.counts() {
					if n == 0 {
						return fmt.Errorf("will not received by every subscriber: %v", w.counts())
					}
				}
				at = time.Since(lost)
				return nil
			})
			t.Logf("will received %v after the connection loss", at.Round(time.Millisecond))
			if at < 2800*time.Millisecond || at > 4500*time.Millisecond {
				t.Fatalf("will published %v after the connection loss, want about 3s", at)
			}
			time.Sleep(time.Second)
			if n := w.counts(); n[0] != 1 || n[1] != 1 {
				t.Fatalf("will received %v times per subscriber, want exactly once", n)
			}
		})
	}
}

// A persistent session with a replica; the client comes back with clean
// start on another node: the old session and its replica are gone on
// every node, and nothing more is queued for it.
func TestClusterReplicatedSessionEndedEverywhere(t *testing.T) {
	nodes := startRepl3(t)
	const id = "ended"
	c, _ := dialV5(t, nodes[0].mqtt, persistentV5(id, 60))
	c.subscribe(t, "se/#", 1)
	waitRoutes(t, nodes, "n1", 1)
	c.disconnect()
	pub, _ := dialV5(t, nodes[2].mqtt, &paho.Connect{ClientID: "se-pub", KeepAlive: 30, CleanStart: true})
	pub.publish(t, &paho.Publish{Topic: "se/a", QoS: 1, Payload: []byte("queued")})
	rh := replicaHolder(t, nodes)
	checkFor(t, 3*time.Second, 20*time.Millisecond, func() error {
		if st := rh.cn.Status(); st.ReplicaMessages != 1 {
			return fmt.Errorf("%s: %d replica messages, want 1", rh.name, st.ReplicaMessages)
		}
		return nil
	})
	// Clean start, no expiry, on the node holding the replica (the claim
	// then ends the session on its owner, which must drop the replica).
	c2, ca := dialV5(t, rh.mqtt, &paho.Connect{ClientID: id, KeepAlive: 30, CleanStart: true})
	if ca.SessionPresent {
		t.Fatal("session present with clean start")
	}
	checkFor(t, 3*time.Second, 20*time.Millisecond, func() error {
		for _, tn := range nodes {
			if tn != rh && holds(tn, id) {
				return fmt.Errorf("%s still holds the old session", tn.name)
			}
			if st := tn.cn.Status(); st.ReplicaCopies != 0 || st.ReplicaMessages != 0 || st.Replicated != 0 {
				return fmt.Errorf("%s: %d replica copies (%d messages), %d replicated", tn.name, st.ReplicaCopies, st.ReplicaMessages, st.Replicated)
			}
		}
		return nil
	})
	pub.publish(t, &paho.Publish{Topic: "se/a", QoS: 1, Payload: []byte("after")})
	time.Sleep(300 * time.Millisecond)
	if got := c2.list(); len(got) != 0 {
		t.Fatalf("the clean session received %d messages of the old one's subscription", len(got))
	}
	for _, tn := range nodes {
		for _, s := range tn.srv.Sessions() {
			if s.ClientID == id && s.Queued+s.Inflight != 0 {
				t.Fatalf("%s queued %d messages for %s", tn.name, s.Queued+s.Inflight, id)
			}
		}
		if st := tn.cn.Status(); st.ReplicaCopies != 0 || st.ReplicaMessages != 0 {
			t.Fatalf("%s: %d replica copies (%d messages) after the end", tn.name, st.ReplicaCopies, st.ReplicaMessages)
		}
	}
	c2.disconnect()
	// Once disconnected (expiry 0) it is gone everywhere.
	checkFor(t, 3*time.Second, 20*time.Millisecond, func() error { return nothingLeft(nodes, id) })
}

// Two failovers in a row: the owner dies, the node that promoted the copy
// dies too before the session expires. The copy promoted second still
// expires when the session would have on its first owner (6 s after the
// DISCONNECT): a node's snapshot of an offline session carries the time
// its client went away, not the time of the snapshot.
func TestClusterReplicatedSessionExpiryAcrossTwoFailovers(t *testing.T) {
	nodes := startRepl3(t)
	const id = "exp-fo2"
	c, _ := dialV5(t, nodes[0].mqtt, persistentV5(id, 6))
	c.subscribe(t, "xf2/#", 1)
	waitRoutes(t, nodes, "n1", 1)
	replicaHolder(t, nodes[1:])
	c.disconnect()
	disconnected := time.Now()
	time.Sleep(500 * time.Millisecond)
	nodes[0].stop()
	var first *tnode
	checkFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		if first = holder(nodes[1:], id); first == nil {
			return fmt.Errorf("session not promoted yet")
		}
		return nil
	})
	var last *tnode
	for _, tn := range nodes[1:] {
		if tn != first {
			last = tn
		}
	}
	// The promoted session's own replica is on the last node.
	checkFor(t, 3*time.Second, 20*time.Millisecond, func() error {
		if n := last.cn.Status().ReplicaCopies; n != 1 {
			return fmt.Errorf("%s holds %d replica copies, want 1", last.name, n)
		}
		return nil
	})
	time.Sleep(300 * time.Millisecond)
	first.stop()
	t.Logf("second owner %s stopped %v after the DISCONNECT", first.name, time.Since(disconnected).Round(time.Millisecond))
	checkFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		if !holds(last, id) {
			return fmt.Errorf("session not promoted on %s yet", last.name)
		}
		return nil
	})
	t.Logf("promoted again %v after the DISCONNECT", time.Since(disconnected).Round(time.Millisecond))
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if holds(last, id) {
			return fmt.Errorf("%s still holds the session", last.name)
		}
		return nil
	})
	expired := time.Since(disconnected)
	t.Logf("expired %v after the DISCONNECT", expired.Round(time.Millisecond))
	if expired < 5800*time.Millisecond || expired > 6800*time.Millisecond {
		t.Fatalf("the twice promoted session expired %v after the DISCONNECT, want about 6s", expired)
	}
}
