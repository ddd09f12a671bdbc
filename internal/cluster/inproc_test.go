package cluster_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/isobar-mq/isobar/internal/broker"
	"github.com/isobar-mq/isobar/internal/cluster"
	"github.com/prometheus/client_golang/prometheus"
)

// tnode is one in-process cluster node with an MQTT listener.
type tnode struct {
	name string
	srv  *broker.Server
	cn   *cluster.Node
	mqtt string
	ln   net.Listener
	reg  *prometheus.Registry
}

var testSecret = []byte("0123456789abcdef0123456789abcdef-test-secret")

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("ISOBAR_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name())
	}
	return slog.New(slog.DiscardHandler)
}

func startNode(t testing.TB, name string, seeds []string) *tnode {
	return startNodeWith(t, name, seeds, nil)
}

func startNodeWith(t testing.TB, name string, seeds []string, tweak func(*cluster.Config)) *tnode {
	t.Helper()
	reg := prometheus.NewRegistry()
	log := testLogger(t).With("node", name)
	cfg := cluster.Config{
		NodeName: name, Bind: "127.0.0.1:0", Seeds: seeds, Secret: testSecret,
		ProbeInterval: 200 * time.Millisecond, ProbeTimeout: 100 * time.Millisecond, SuspicionMult: 2,
		GossipInterval: 50 * time.Millisecond, ClaimTimeout: time.Second,
		Logger: log, Registerer: reg,
	}
	if tweak != nil {
		tweak(&cfg)
	}
	cn, err := cluster.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	opts := broker.DefaultOptions()
	opts.HoldTimeout = 5 * time.Second
	cn.BrokerOptions(&opts)
	opts.Store = cn.WrapStore(nil)
	srv := broker.New(opts, log, nil)
	if err := cn.Start(srv); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln, "mqtt") }()
	tn := &tnode{name: name, srv: srv, cn: cn, mqtt: ln.Addr().String(), ln: ln, reg: reg}
	t.Cleanup(tn.stop)
	return tn
}

func (tn *tnode) stop() {
	if tn.cn != nil {
		_ = tn.cn.Close()
	}
	_ = tn.srv.Shutdown(contextWithTimeout(2 * time.Second))
}

// startCluster starts n nodes, each seeded with the first, and waits
// until every node sees every other alive with a link up.
func startCluster(t testing.TB, n int) []*tnode {
	t.Helper()
	var nodes []*tnode
	for i := range n {
		var seeds []string
		if i > 0 {
			seeds = []string{nodes[0].cn.Addr()}
		}
		nodes = append(nodes, startNode(t, fmt.Sprintf("n%d", i+1), seeds))
	}
	waitLinks(t, nodes, n)
	return nodes
}

func waitLinks(t testing.TB, nodes []*tnode, want int) {
	t.Helper()
	checkFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		for _, tn := range nodes {
			st := tn.cn.Status()
			up := 1
			for _, m := range st.Members {
				if !m.Local && m.State == "alive" && m.Link == "up" {
					up++
				}
			}
			if up != want {
				return fmt.Errorf("%s sees %d nodes up, want %d: %+v", tn.name, up, want, st.Members)
			}
		}
		return nil
	})
}

// waitRoutes waits until every other node has learned at least want
// routes from node from.
func waitRoutes(t testing.TB, nodes []*tnode, from string, want int) {
	t.Helper()
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		for _, tn := range nodes {
			if tn.name == from {
				continue
			}
			for _, m := range tn.cn.Status().Members {
				if m.Name == from && m.Routes < want {
					return fmt.Errorf("%s knows %d routes of %s, want %d", tn.name, m.Routes, from, want)
				}
			}
		}
		return nil
	})
}

func checkFor(t testing.TB, total, every time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(total)
	var err error
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return
		}
		time.Sleep(every)
	}
	t.Fatalf("after %v: %v", total, err)
}

func client(t testing.TB, addr, id string, clean bool) mqtt.Client {
	t.Helper()
	o := mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).SetCleanSession(clean).
		SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(5 * time.Second).SetOrderMatters(true)
	c := mqtt.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect %s to %s: %v", id, addr, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(50) })
	return c
}

// collector records messages by topic/payload.
type collector struct {
	mu  sync.Mutex
	got []string
}

func (c *collector) handler(_ mqtt.Client, m mqtt.Message) {
	c.mu.Lock()
	c.got = append(c.got, m.Topic()+" "+string(m.Payload()))
	c.mu.Unlock()
}

func (c *collector) list() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.got...)
}

func (c *collector) wait(t testing.TB, n int) []string {
	t.Helper()
	checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if got := len(c.list()); got < n {
			return fmt.Errorf("%d of %d messages", got, n)
		}
		return nil
	})
	return c.list()
}

func subscribe(t testing.TB, c mqtt.Client, filter string, qos byte, col *collector) {
	t.Helper()
	tok := c.Subscribe(filter, qos, col.handler)
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe %s: %v", filter, tok.Error())
	}
}

func publish(t testing.TB, c mqtt.Client, topic string, qos byte, retain bool, payload string) {
	t.Helper()
	tok := c.Publish(topic, qos, retain, payload)
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publish %s: %v", topic, tok.Error())
	}
}

func TestClusterCrossNodePublish(t *testing.T) {
	nodes := startCluster(t, 3)
	var col collector
	sub := client(t, nodes[0].mqtt, "sub", true)
	subscribe(t, sub, "a/+", 1, &col)
	waitRoutes(t, nodes, "n1", 1)
	pub := client(t, nodes[2].mqtt, "pub", true)
	for i := range 100 {
		publish(t, pub, "a/b", 1, false, fmt.Sprint(i))
	}
	col.wait(t, 100)
	time.Sleep(100 * time.Millisecond)
	got := col.list()
	if len(got) != 100 {
		t.Fatalf("got %d messages, want 100 exactly", len(got))
	}
	for i, g := range got {
		if g != fmt.Sprintf("a/b %d", i) {
			t.Fatalf("message %d is %q: order lost", i, g)
		}
	}
	// Only the node with interest got them.
	for _, m := range nodes[2].cn.Status().Members {
		if m.Name == "n2" && m.Forwarded != 0 {
			t.Fatalf("n3 forwarded %d messages to n2, which has no interest", m.Forwarded)
		}
		if m.Name == "n1" && m.Forwarded != 100 {
			t.Fatalf("n3 forwarded %d messages to n1, want 100", m.Forwarded)
		}
	}
}

func TestClusterRouteWithdrawn(t *testing.T) {
	nodes := startCluster(t, 3)
	var col collector
	sub := client(t, nodes[0].mqtt, "sub", true)
	subscribe(t, sub, "w/#", 0, &col)
	waitRoutes(t, nodes, "n1", 1)
	if tok := sub.Unsubscribe("w/#"); !tok.WaitTimeout(5 * time.Second) {
		t.Fatal("unsubscribe")
	}
	checkFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		for _, m := range nodes[1].cn.Status().Members {
			if m.Name == "n1" && m.Routes != 0 {
				return fmt.Errorf("n2 still has %d routes of n1", m.Routes)
			}
		}
		return nil
	})
}

func TestClusterSharedSubscription(t *testing.T) {
	nodes := startCluster(t, 3)
	var a, b collector
	ca := client(t, nodes[0].mqtt, "ma", true)
	cb := client(t, nodes[1].mqtt, "mb", true)
	subscribe(t, ca, "$share/g/s/#", 1, &a)
	subscribe(t, cb, "$share/g/s/#", 1, &b)
	waitRoutes(t, nodes, "n1", 1)
	waitRoutes(t, nodes, "n2", 1)
	pub := client(t, nodes[2].mqtt, "pub", true)
	const total = 200
	for i := range total {
		publish(t, pub, "s/x", 1, false, fmt.Sprint(i))
	}
	checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if n := len(a.list()) + len(b.list()); n < total {
			return fmt.Errorf("%d of %d", n, total)
		}
		return nil
	})
	time.Sleep(200 * time.Millisecond)
	seen := map[string]int{}
	for _, g := range append(a.list(), b.list()...) {
		seen[g]++
	}
	if len(seen) != total {
		t.Fatalf("%d distinct messages, want %d", len(seen), total)
	}
	for g, k := range seen {
		if k != 1 {
			t.Fatalf("%q delivered %d times across the group", g, k)
		}
	}
	// A publisher on n1 prefers its local member.
	a0 := len(a.list())
	local := client(t, nodes[0].mqtt, "pub1", true)
	for i := range 20 {
		publish(t, local, "s/y", 1, false, fmt.Sprint(i))
	}
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if n := len(a.list()) - a0; n < 20 {
			return fmt.Errorf("local member got %d of 20", n)
		}
		return nil
	})
}

func TestClusterRetainedReplicated(t *testing.T) {
	nodes := startCluster(t, 3)
	pub := client(t, nodes[0].mqtt, "pub", true)
	publish(t, pub, "r/1", 1, true, "v1")
	for _, tn := range nodes {
		checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
			m, ok := tn.srv.RetainedMessage("r/1")
			if !ok || string(m.Payload) != "v1" {
				return fmt.Errorf("%s: retained r/1 not replicated", tn.name)
			}
			return nil
		})
	}
	// A later subscriber on another node gets it from its own node.
	var col collector
	sub := client(t, nodes[2].mqtt, "sub", true)
	subscribe(t, sub, "r/#", 1, &col)
	if got := col.wait(t, 1); got[0] != "r/1 v1" {
		t.Fatalf("got %v", got)
	}
	// Last writer wins: a newer value from another node replaces it
	// everywhere; a deletion removes it everywhere.
	pub2 := client(t, nodes[1].mqtt, "pub2", true)
	publish(t, pub2, "r/1", 1, true, "v2")
	for _, tn := range nodes {
		checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
			if m, ok := tn.srv.RetainedMessage("r/1"); !ok || string(m.Payload) != "v2" {
				return fmt.Errorf("%s: r/1 not v2", tn.name)
			}
			return nil
		})
	}
	publish(t, pub, "r/1", 1, true, "")
	for _, tn := range nodes {
		checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
			if _, ok := tn.srv.RetainedMessage("r/1"); ok {
				return fmt.Errorf("%s: r/1 still retained", tn.name)
			}
			return nil
		})
	}
}

func TestClusterRetainedConvergesAfterRejoin(t *testing.T) {
	nodes := startCluster(t, 2)
	pub := client(t, nodes[0].mqtt, "pub", true)
	publish(t, pub, "c/1", 1, true, "before")
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if _, ok := nodes[1].srv.RetainedMessage("c/1"); !ok {
			return fmt.Errorf("not replicated")
		}
		return nil
	})
	// A third node joining later gets every retained message.
	n3 := startNode(t, "n3", []string{nodes[0].cn.Addr()})
	waitLinks(t, append(nodes, n3), 3)
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if m, ok := n3.srv.RetainedMessage("c/1"); !ok || string(m.Payload) != "before" {
			return fmt.Errorf("joiner lacks c/1")
		}
		return nil
	})
}

func TestClusterTakeoverMovesSession(t *testing.T) {
	nodes := startCluster(t, 3)
	var col collector
	c1 := client(t, nodes[0].mqtt, "mover", false)
	subscribe(t, c1, "m/#", 1, &col)
	waitRoutes(t, nodes, "n1", 1)
	c1.Disconnect(100)
	// Messages queued for the offline session on n1.
	pub := client(t, nodes[2].mqtt, "pub", true)
	for i := range 10 {
		publish(t, pub, "m/q", 1, false, fmt.Sprint(i))
	}
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		for _, s := range nodes[0].srv.Sessions() {
			if s.ClientID == "mover" && s.Queued+s.Inflight >= 10 {
				return nil
			}
		}
		return fmt.Errorf("messages not queued on n1 yet")
	})
	// The client comes back on n2: session present, queued messages,
	// and n1 no longer holds the session.
	var col2 collector
	o := mqtt.NewClientOptions().AddBroker("tcp://" + nodes[1].mqtt).SetClientID("mover").SetCleanSession(false).
		SetAutoReconnect(false).SetOrderMatters(true).SetDefaultPublishHandler(col2.handler)
	c2 := mqtt.NewClient(o)
	tok := c2.Connect()
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer c2.Disconnect(50)
	if !tok.(*mqtt.ConnectToken).SessionPresent() {
		t.Fatal("session not present on the new node")
	}
	got := col2.wait(t, 10)
	for i := range 10 {
		if got[i] != fmt.Sprintf("m/q %d", i) {
			t.Fatalf("message %d: %q", i, got[i])
		}
	}
	for _, id := range nodes[0].srv.SessionIDs() {
		if id == "mover" {
			t.Fatal("n1 still holds the session")
		}
	}
	// And new messages follow it to n2, exactly once.
	waitRoutes(t, nodes, "n2", 1)
	publish(t, pub, "m/q", 1, false, "after")
	col2.wait(t, 11)
	time.Sleep(300 * time.Millisecond)
	if n := len(col2.list()); n != 11 {
		t.Fatalf("%d messages after the move, want 11: %v", n, col2.list())
	}
}

func TestClusterTakeoverOnlineClient(t *testing.T) {
	nodes := startCluster(t, 2)
	lost := make(chan struct{})
	o := mqtt.NewClientOptions().AddBroker("tcp://" + nodes[0].mqtt).SetClientID("dup").SetCleanSession(true).
		SetAutoReconnect(false).SetConnectionLostHandler(func(mqtt.Client, error) { close(lost) })
	c1 := mqtt.NewClient(o)
	if tok := c1.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	_ = client(t, nodes[1].mqtt, "dup", true)
	select {
	case <-lost:
	case <-time.After(5 * time.Second):
		t.Fatal("the first connection was not taken over")
	}
	if nodes[0].srv.ClientCount() != 0 || nodes[1].srv.ClientCount() != 1 {
		t.Fatalf("clients: n1 %d, n2 %d", nodes[0].srv.ClientCount(), nodes[1].srv.ClientCount())
	}
}

func TestClusterNodeLossReleasesPublishers(t *testing.T) {
	nodes := startCluster(t, 3)
	var col collector
	sub := client(t, nodes[2].mqtt, "sub3", true)
	subscribe(t, sub, "l/#", 1, &col)
	waitRoutes(t, nodes, "n3", 1)
	nodes[2].stop() // abrupt: no leave
	pub := client(t, nodes[0].mqtt, "pub", true)
	start := time.Now()
	publish(t, pub, "l/x", 1, false, "x") // acknowledged once n3 is declared dead
	if d := time.Since(start); d > 8*time.Second {
		t.Fatalf("publish took %v", d)
	}
	waitLinks(t, nodes[:2], 2)
}

func TestClusterFiveNodes(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	nodes := startCluster(t, 5)
	cols := make([]*collector, 5)
	for i, tn := range nodes {
		cols[i] = &collector{}
		c := client(t, tn.mqtt, fmt.Sprintf("s%d", i), true)
		subscribe(t, c, "five/#", 1, cols[i])
	}
	for _, tn := range nodes {
		waitRoutes(t, nodes, tn.name, 1)
	}
	for i, tn := range nodes {
		p := client(t, tn.mqtt, fmt.Sprintf("p%d", i), true)
		publish(t, p, "five/x", 1, false, tn.name)
	}
	for i := range nodes {
		got := cols[i].wait(t, 5)
		time.Sleep(50 * time.Millisecond)
		if len(cols[i].list()) != 5 {
			t.Fatalf("subscriber %d got %v", i, got)
		}
	}
}

func contextWithTimeout(d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	_ = cancel // released when it expires
	return ctx
}

// Concurrent connects of one client identifier on two nodes end with
// exactly one winner.
func TestClusterConcurrentConnectOneWinner(t *testing.T) {
	concurrentConnects(t, startCluster(t, 3))
}

// The same when claims time out (a slow or overloaded node): both
// connects go through, and the late claim settles it afterwards.
func TestClusterConcurrentConnectClaimTimeout(t *testing.T) {
	var nodes []*tnode
	for i := range 3 {
		var seeds []string
		if i > 0 {
			seeds = []string{nodes[0].cn.Addr()}
		}
		nodes = append(nodes, startNodeWith(t, fmt.Sprintf("n%d", i+1), seeds, func(c *cluster.Config) { c.ClaimTimeout = time.Microsecond }))
	}
	waitLinks(t, nodes, 3)
	concurrentConnects(t, nodes)
}

func concurrentConnects(t *testing.T, nodes []*tnode) {
	for round := range 5 {
		id := fmt.Sprintf("twin-%d", round)
		var wg sync.WaitGroup
		clients := make([]mqtt.Client, 2)
		for i := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				o := mqtt.NewClientOptions().AddBroker("tcp://" + nodes[i].mqtt).SetClientID(id).SetCleanSession(false).
					SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(5 * time.Second)
				c := mqtt.NewClient(o)
				if tok := c.Connect(); tok.WaitTimeout(10*time.Second) && tok.Error() == nil {
					clients[i] = c
				}
			}()
		}
		wg.Wait()
		// Whatever the interleaving, one connection remains.
		checkFor(t, 5*time.Second, 20*time.Millisecond, func() error {
			online := 0
			for _, tn := range nodes {
				for _, s := range tn.srv.Sessions() {
					if s.ClientID == id && s.Online {
						online++
					}
				}
			}
			held := 0
			for _, tn := range nodes {
				for _, sid := range tn.srv.SessionIDs() {
					if sid == id {
						held++
					}
				}
			}
			if online != 1 || held != 1 {
				return fmt.Errorf("round %d: %d online, %d nodes hold the session", round, online, held)
			}
			return nil
		})
		for _, c := range clients {
			if c != nil {
				c.Disconnect(10)
			}
		}
	}
}
