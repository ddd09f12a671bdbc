package stomp_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/isobar-mq/isobar/internal/node"
	"github.com/isobar-mq/isobar/internal/stomp"
	"github.com/isobar-mq/isobar/internal/testutil"
)

// cnode is one node of an in-process cluster with a STOMP listener.
type cnode struct {
	name  string
	n     *node.Node
	stomp string
}

// startStompCluster starts count nodes (n1, n2...) in one process, each
// seeded with the first, and waits until every gateway places queues
// over all of them.
func startStompCluster(t *testing.T, count int) []*cnode {
	t.Helper()
	secret := filepath.Join(t.TempDir(), "cluster.key")
	if err := os.WriteFile(secret, []byte("0123456789abcdef0123456789abcdef-stomp-test\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	secretFiles.Store(t.Name(), secret)
	var nodes []*cnode
	for i := range count {
		seeds := "[]"
		if i > 0 {
			seeds = fmt.Sprintf("[%q]", nodes[0].n.Cluster.Addr())
		}
		nodes = append(nodes, startStompNode(t, fmt.Sprintf("n%d", i+1), secret, seeds))
	}
	waitQueueNodes(t, nodes, count)
	return nodes
}

func startStompNode(t *testing.T, name, secret, seeds string) *cnode {
	t.Helper()
	y := baseYAML + fmt.Sprintf(`node_name: %s
cluster:
  shutdown: leave
  bind: "127.0.0.1:0"
  seeds: %s
  secret_file: %q
  probe_interval: 200ms
  probe_timeout: 100ms
  suspicion_mult: 2
  gossip_interval: 50ms
`, name, seeds, secret)
	n := testutil.RunNode(t, y)
	return &cnode{name: name, n: n, stomp: stompAddr(t, n)}
}

// waitQueueNodes waits until every node's gateway places queues over
// want nodes.
func waitQueueNodes(t *testing.T, nodes []*cnode, want int) {
	t.Helper()
	testutil.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		for _, cn := range nodes {
			if got := cn.n.Stomp.QueueNodes(); len(got) != want {
				return fmt.Errorf("%s places queues over %v, want %d nodes", cn.name, got, want)
			}
		}
		return nil
	})
}

// queueOwnedBy returns a queue name that node owner owns among nodes.
func queueOwnedBy(t *testing.T, on *cnode, prefix, owner string, nodes []string) string {
	t.Helper()
	for i := range 1000 {
		q := fmt.Sprintf("%s.%d", prefix, i)
		if on.n.Cluster.Rank(q, nodes)[0] == owner {
			return q
		}
	}
	t.Fatal("no queue name found")
	return ""
}

// collector reads MESSAGE frames of a client in the background.
type collector struct {
	mu     sync.Mutex
	bodies []string
	frames []*stomp.Frame
}

func collect(c *client, ack bool) *collector {
	col := &collector{}
	ch := c.pump()
	go func() {
		for f := range ch {
			if f.Command != "MESSAGE" {
				continue
			}
			col.mu.Lock()
			col.bodies = append(col.bodies, string(f.Body))
			col.frames = append(col.frames, f)
			col.mu.Unlock()
			if ack {
				_, _ = c.nc.Write(stomp.AppendFrame(nil, frame("ACK", "id:"+f.Value("ack")), c.version))
			}
		}
	}()
	return col
}

func (col *collector) got() []string {
	col.mu.Lock()
	defer col.mu.Unlock()
	return slices.Clone(col.bodies)
}

func waitTotal(t *testing.T, want int, cols ...*collector) {
	t.Helper()
	testutil.CheckFor(t, 15*time.Second, 20*time.Millisecond, func() error {
		n := 0
		for _, c := range cols {
			n += len(c.got())
		}
		if n < want {
			return fmt.Errorf("%d messages received, want %d", n, want)
		}
		return nil
	})
}

// exactlyOnce checks that the collectors together hold each body of want
// exactly once.
func exactlyOnce(t *testing.T, want []string, cols ...*collector) {
	t.Helper()
	seen := map[string]int{}
	for _, c := range cols {
		for _, b := range c.got() {
			seen[b]++
		}
	}
	for _, w := range want {
		if seen[w] != 1 {
			t.Errorf("message %q received %d times", w, seen[w])
		}
	}
	if len(seen) != len(want) {
		t.Errorf("received %d distinct messages, want %d", len(seen), len(want))
	}
}

func bodies(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%d", prefix, i)
	}
	return out
}

// TestClusterQueueOneConsumer: a producer on n1 and consumers on n2 and
// n3 of one queue: every message reaches exactly one of them, and both get
// some. Messages sent while nobody consumes wait for the first consumer,
// on any node.
func TestClusterQueueOneConsumer(t *testing.T) {
	nodes := startStompCluster(t, 3)
	prod := connect(t, nodes[0].stomp, "1.2")
	for _, owner := range []string{"n1", "n2", "n3"} {
		q := "/queue/" + queueOwnedBy(t, nodes[0], "lb", owner, []string{"n1", "n2", "n3"})
		c2 := connect(t, nodes[1].stomp, "1.2")
		c3 := connect(t, nodes[2].stomp, "1.2")
		c2.subscribe("s", q, "ack:client-individual", "activemq.prefetchSize:5")
		c3.subscribe("s", q, "ack:client-individual", "activemq.prefetchSize:5")
		col2, col3 := collect(c2, true), collect(c3, true)
		want := bodies("lb-"+owner, 40)
		for _, b := range want {
			prod.sendMsg(q, b)
		}
		waitTotal(t, len(want), col2, col3)
		time.Sleep(200 * time.Millisecond) // a duplicate would show now
		exactlyOnce(t, want, col2, col3)
		if len(col2.got()) == 0 || len(col3.got()) == 0 {
			t.Errorf("owner %s: not balanced: n2 got %d, n3 got %d", owner, len(col2.got()), len(col3.got()))
		}
		_ = c2.nc.Close()
		_ = c3.nc.Close()
	}

	// Nobody consumes: the messages wait, then go to the first consumer.
	q := "/queue/" + queueOwnedBy(t, nodes[0], "wait", "n2", []string{"n1", "n2", "n3"})
	want := bodies("wait", 10)
	for _, b := range want {
		prod.sendMsg(q, b, "persistent:true")
	}
	c3 := connect(t, nodes[2].stomp, "1.2")
	c3.subscribe("s", q)
	col := collect(c3, false)
	waitTotal(t, len(want), col)
	if got := col.got(); !slices.Equal(got, want) {
		t.Fatalf("waiting messages: got %v, want %v (in order)", got, want)
	}
}

// TestClusterQueueSelectors: the MCollective pattern. Each node's daemon
// consumes /queue/mcollective.nodes with a selector on its identity; the
// requests sent on one node reach only the daemon they name.
func TestClusterQueueSelectors(t *testing.T) {
	nodes := startStompCluster(t, 3)
	const q = "/queue/mcollective.nodes"
	var cols []*collector
	for _, cn := range nodes {
		c := connect(t, cn.stomp, "1.1")
		c.subscribe("s", q, "selector:mc_identity = '"+cn.name+"'")
		cols = append(cols, collect(c, false))
	}
	prod := connect(t, nodes[0].stomp, "1.1")
	for i := range 5 {
		for _, cn := range nodes {
			prod.sendMsg(q, fmt.Sprintf("%s-%d", cn.name, i), "mc_identity:"+cn.name)
		}
	}
	waitTotal(t, 15, cols...)
	time.Sleep(200 * time.Millisecond)
	for i, cn := range nodes {
		got := cols[i].got()
		if len(got) != 5 {
			t.Errorf("%s got %d messages: %v", cn.name, len(got), got)
		}
		for _, b := range got {
			if !strings.HasPrefix(b, cn.name+"-") {
				t.Errorf("%s got %q", cn.name, b)
			}
		}
	}
}

// TestClusterQueueConsumerNodeStops: the messages a consumer held
// unacknowledged when its node stopped go to the other consumer,
// redelivered.
func TestClusterQueueConsumerNodeStops(t *testing.T) {
	nodes := startStompCluster(t, 3)
	q := "/queue/" + queueOwnedBy(t, nodes[0], "stop", "n1", []string{"n1", "n2", "n3"})
	c2 := connect(t, nodes[1].stomp, "1.2")
	c2.subscribe("s", q, "ack:client-individual")
	col2 := collect(c2, false) // never acknowledges
	prod := connect(t, nodes[0].stomp, "1.2")
	want := bodies("held", 5)
	for _, b := range want {
		prod.sendMsg(q, b)
	}
	waitTotal(t, 5, col2)
	c3 := connect(t, nodes[2].stomp, "1.2")
	c3.subscribe("s", q, "ack:client-individual")
	col3 := collect(c3, true)
	stopNode(t, nodes[1])
	waitTotal(t, 5, col3)
	for _, f := range col3.frames {
		if f.Value("redelivered") != "true" {
			t.Errorf("message %q not marked redelivered", f.Body)
		}
	}
	more := bodies("after", 5)
	for _, b := range more {
		prod.sendMsg(q, b)
	}
	waitTotal(t, 10, col3)
	exactlyOnce(t, append(want, more...), col3)
}

// TestClusterQueueOwnerStops: when a queue's owner stops, SENDs succeed
// (the queue has a new owner) and the consumers on the other nodes get
// them (they registered at the new owner).
func TestClusterQueueOwnerStops(t *testing.T) {
	nodes := startStompCluster(t, 3)
	q := "/queue/" + queueOwnedBy(t, nodes[0], "owner", "n3", []string{"n1", "n2", "n3"})
	c1 := connect(t, nodes[0].stomp, "1.2")
	c1.subscribe("s", q, "ack:client-individual")
	col1 := collect(c1, true)
	prod := connect(t, nodes[1].stomp, "1.2")
	prod.sendMsg(q, "before")
	waitTotal(t, 1, col1)
	stopNode(t, nodes[2])
	waitQueueNodes(t, nodes[:2], 2)
	want := bodies("after", 10)
	for _, b := range want {
		prod.sendMsg(q, b)
	}
	waitTotal(t, 11, col1)
	exactlyOnce(t, append([]string{"before"}, want...), col1)
}

// TestClusterQueueMovesToNewOwner: messages stored on a node that loses
// the queue to a node joining are moved to the new owner and reach a
// consumer there.
func TestClusterQueueMovesToNewOwner(t *testing.T) {
	nodes := startStompCluster(t, 1)
	q := "/queue/" + queueOwnedBy(t, nodes[0], "move", "n2", []string{"n1", "n2"})
	prod := connect(t, nodes[0].stomp, "1.2")
	want := bodies("move", 20)
	for _, b := range want {
		prod.sendMsg(q, b)
	}
	n2 := startStompNode(t, "n2", findSecret(t), fmt.Sprintf("[%q]", nodes[0].n.Cluster.Addr()))
	nodes = append(nodes, n2)
	waitQueueNodes(t, nodes, 2)
	c := connect(t, n2.stomp, "1.2")
	c.subscribe("s", q)
	col := collect(c, false)
	waitTotal(t, 20, col)
	time.Sleep(300 * time.Millisecond)
	exactlyOnce(t, want, col)
	testutil.CheckFor(t, 5*time.Second, 50*time.Millisecond, func() error {
		for _, qi := range nodes[0].n.Stomp.Queues().Queues() {
			if "/queue/"+qi.Name == q && qi.Messages > 0 {
				return fmt.Errorf("n1 still holds %d messages", qi.Messages)
			}
		}
		return nil
	})
}

// TestClusterTempQueues: a temporary queue lives on its connection's
// node whatever the ranking says, and a reply sent to it from another node
// (request/reply through reply-to) reaches it.
func TestClusterTempQueues(t *testing.T) {
	nodes := startStompCluster(t, 2)
	for _, cn := range nodes {
		c := connect(t, cn.stomp, "1.2")
		c.subscribe("s", "/temp-queue/replies")
		c.sendMsg("/temp-queue/replies", "hello "+cn.name)
		f := c.expect("MESSAGE")
		if string(f.Body) != "hello "+cn.name {
			t.Fatalf("%s: got %q", cn.name, f.Body)
		}
	}
	svc := connect(t, nodes[1].stomp, "1.2")
	svc.subscribe("s", "/queue/service")
	req := connect(t, nodes[0].stomp, "1.2")
	req.subscribe("r", "/temp-queue/answers")
	req.sendMsg("/queue/service", "question", "reply-to:/temp-queue/answers")
	q := svc.expect("MESSAGE")
	rt := q.Value("reply-to")
	if !strings.HasPrefix(rt, "/remote-temp-queue/") {
		t.Fatalf("reply-to %q", rt)
	}
	svc.sendMsg(rt, "answer")
	a := req.expect("MESSAGE")
	if string(a.Body) != "answer" {
		t.Fatalf("reply: %q", a.Body)
	}
}

var secretFiles sync.Map // test name -> secret path

func findSecret(t *testing.T) string {
	t.Helper()
	v, ok := secretFiles.Load(t.Name())
	if !ok {
		t.Fatal("no cluster secret for this test")
	}
	return v.(string)
}

func stopNode(t *testing.T, cn *cnode) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := cn.n.Stop(ctx); err != nil {
		t.Fatalf("stopping %s: %v", cn.name, err)
	}
}

// TestClusterQueueManyProducers: producers on two nodes and a consumer
// on each of three nodes, all at once: every message exactly once.
func TestClusterQueueManyProducers(t *testing.T) {
	nodes := startStompCluster(t, 3)
	const q = "/queue/busy"
	var cols []*collector
	for _, cn := range nodes {
		c := connect(t, cn.stomp, "1.2")
		c.subscribe("s", q, "ack:client-individual", "activemq.prefetchSize:10")
		cols = append(cols, collect(c, true))
	}
	var want []string
	var prods []*client
	var wg sync.WaitGroup
	for _, cn := range nodes[:2] {
		p := connect(t, cn.stomp, "1.2")
		prods = append(prods, p)
		bs := bodies("from-"+cn.name, 100)
		want = append(want, bs...)
		wg.Add(1)
		go func() {
			defer wg.Done()
			var out []byte
			for i, b := range bs {
				f := frame("SEND", "destination:"+q)
				if i == len(bs)-1 {
					// The connection handles its frames in order: this
					// receipt says every SEND before it was stored.
					f.Add("receipt", "last")
				}
				f.Body = []byte(b)
				out = stomp.AppendFrame(out, f, p.version)
			}
			_, _ = p.nc.Write(out)
		}()
	}
	wg.Wait()
	for _, p := range prods {
		p.receipt("last")
	}
	waitTotal(t, len(want), cols...)
	time.Sleep(300 * time.Millisecond)
	exactlyOnce(t, want, cols...)
	for i, c := range cols {
		if len(c.got()) == 0 {
			t.Errorf("consumer on %s got nothing", nodes[i].name)
		}
	}
}

// TestClusterQueueOwnerRestarts: persistent messages of a queue whose
// owner stops wait on its disk and reach a consumer on another node once
// it is back under the same name.
func TestClusterQueueOwnerRestarts(t *testing.T) {
	nodes := startStompCluster(t, 2)
	secret := findSecret(t)
	// n3 on a fixed cluster port (a member that comes back on another
	// address is only accepted after memberlist's reclaim time).
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	_ = ln.Close()
	dir := t.TempDir()
	n3yaml := func() string {
		return baseYAML + fmt.Sprintf(`node_name: n3
store: {mode: pebble, data_dir: %q}
cluster:
  shutdown: leave
  bind: "127.0.0.1:%d"
  seeds: [%q]
  secret_file: %q
  probe_interval: 200ms
  probe_timeout: 100ms
  suspicion_mult: 2
  gossip_interval: 50ms
`, dir, port, nodes[0].n.Cluster.Addr(), secret)
	}
	n3 := testutil.RunNode(t, n3yaml())
	all := append(nodes, &cnode{name: "n3", n: n3, stomp: stompAddr(t, n3)})
	waitQueueNodes(t, all, 3)
	q := "/queue/" + queueOwnedBy(t, nodes[0], "restart", "n3", []string{"n1", "n2", "n3"})
	prod := connect(t, nodes[0].stomp, "1.2")
	want := bodies("kept", 5)
	for _, b := range want {
		prod.sendMsg(q, b, "persistent:true")
	}
	stopNode(t, all[2])
	waitQueueNodes(t, nodes, 2)
	n3 = testutil.RunNode(t, n3yaml())
	all[2] = &cnode{name: "n3", n: n3, stomp: stompAddr(t, n3)}
	waitQueueNodes(t, all, 3)
	c := connect(t, nodes[1].stomp, "1.2")
	c.subscribe("s", q)
	col := collect(c, false)
	waitTotal(t, len(want), col)
	time.Sleep(200 * time.Millisecond)
	exactlyOnce(t, want, col)
}
