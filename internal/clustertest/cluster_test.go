package clustertest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/csv"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/isobar-mq/isobar/internal/testutil/peer"
)

// These tests need clustering (internal/cluster wired into the node):
// until it lands they fail at StartCluster (the nodes reject the cluster:
// section or never see each other).

// ---- a small MQTT 5 client for the scripted tests --------------------------

type v5 struct {
	cli  *paho.Client
	conn net.Conn
	msgs chan *paho.Publish
}

func dialV5(addr, id string, clean bool) (*v5, error) {
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return nil, err
	}
	c := &v5{conn: conn, msgs: make(chan *paho.Publish, 1024)}
	c.cli = paho.NewClient(paho.ClientConfig{Conn: conn, OnPublishReceived: []func(paho.PublishReceived) (bool, error){
		func(pr paho.PublishReceived) (bool, error) {
			select {
			case c.msgs <- pr.Packet:
			default:
			}
			return true, nil
		}}})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	expiry := uint32(0)
	if !clean {
		expiry = 3600
	}
	if _, err := c.cli.Connect(ctx, &paho.Connect{ClientID: id, CleanStart: clean, KeepAlive: 10,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}}); err != nil {
		_ = conn.Close()
		return nil, err
	}
	return c, nil
}

func connectV5(t *testing.T, addr, id string) *v5 {
	t.Helper()
	c, err := dialV5(addr, id, true)
	if err != nil {
		t.Fatalf("connect %s to %s: %v", id, addr, err)
	}
	t.Cleanup(c.close)
	return c
}

func (c *v5) close() {
	_ = c.cli.Disconnect(&paho.Disconnect{})
	_ = c.conn.Close()
}

func (c *v5) sub(t *testing.T, filter string, qos byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.cli.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: qos}}}); err != nil {
		t.Fatalf("subscribe %s: %v", filter, err)
	}
}

func (c *v5) pub(topic, payload string, qos byte, retain bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := c.cli.Publish(ctx, &paho.Publish{Topic: topic, QoS: qos, Retain: retain, Payload: []byte(payload)})
	if err == nil && r != nil && r.ReasonCode >= 0x80 {
		err = fmt.Errorf("reason code %#x", r.ReasonCode)
	}
	return err
}

// wait returns the first message with payload want, or nil after timeout.
func (c *v5) wait(want string, timeout time.Duration) *paho.Publish {
	deadline := time.After(timeout)
	for {
		select {
		case m := <-c.msgs:
			if string(m.Payload) == want {
				return m
			}
		case <-deadline:
			return nil
		}
	}
}

// deliverAcross publishes on from (retrying, as routes propagate
// asynchronously) until sub receives it; it fails the test after total.
func deliverAcross(t *testing.T, from, sub *v5, topic string, total time.Duration) {
	t.Helper()
	deadline := time.Now().Add(total)
	for k := 0; time.Now().Before(deadline); k++ {
		payload := fmt.Sprintf("%s-%d", topic, k)
		if err := from.pub(topic, payload, 1, false); err != nil {
			t.Logf("publish %s: %v", payload, err)
		}
		if sub.wait(payload, 500*time.Millisecond) != nil {
			return
		}
	}
	t.Fatalf("nothing published to %s arrived within %v", topic, total)
}

// retained returns node i's retained message for topic ("" if none within
// 1.5 s).
func retained(c *Cluster, i int, topic string) (string, error) {
	cl, err := dialV5(c.Addr(i), fmt.Sprintf("ret-probe-%d-%d", i, time.Now().UnixNano()), true)
	if err != nil {
		return "", err
	}
	defer cl.close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if _, err := cl.cli.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: topic, QoS: 1}}}); err != nil {
		return "", err
	}
	select {
	case m := <-cl.msgs:
		return string(m.Payload), nil
	case <-time.After(1500 * time.Millisecond):
		return "", nil
	}
}

// ---- the tests -------------------------------------------------------------

// TestClusterCrossNode: mosquitto_sub on n1, mosquitto_pub (QoS 1) on n3,
// the message arrives.
func TestClusterCrossNode(t *testing.T) {
	subBin := peer.NeedBinary(t, "mosquitto_sub", "mosquitto-clients")
	pubBin := peer.NeedBinary(t, "mosquitto_pub", "mosquitto-clients")
	c := StartCluster(t, 3, Options{})
	h1, p1, _ := net.SplitHostPort(c.Addr(0))
	h3, p3, _ := net.SplitHostPort(c.Addr(2))
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	sub := exec.CommandContext(ctx, subBin, "-h", h1, "-p", p1, "-q", "1", "-t", "cross/t", "-C", "1", "-W", "35", "-i", "cross-sub", "-d")
	var out bytes.Buffer
	var mu sync.Mutex
	pr, pw := io.Pipe()
	sub.Stdout, sub.Stderr = pw, pw
	if err := sub.Start(); err != nil {
		t.Fatal(err)
	}
	// mosquitto_sub's output is block-buffered on a pipe: its SUBACK
	// cannot be waited for; the publishes below are retried instead.
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			mu.Lock()
			out.WriteString(sc.Text() + "\n")
			mu.Unlock()
		}
	}()
	done := make(chan error, 1)
	go func() { done <- sub.Wait(); _ = pw.Close() }()
	for k := 0; k < 30; k++ {
		msg := fmt.Sprintf("hello-%d", k)
		if o, err := exec.CommandContext(ctx, pubBin, "-h", h3, "-p", p3, "-q", "1", "-t", "cross/t", "-m", msg, "-i", "cross-pub").CombinedOutput(); err != nil {
			t.Logf("mosquitto_pub: %v: %s", err, o)
		}
		select {
		case err := <-done:
			mu.Lock()
			got := out.String()
			mu.Unlock()
			if err != nil || !strings.Contains(got, "hello-") {
				t.Fatalf("mosquitto_sub: %v\n%s", err, got)
			}
			return
		case <-time.After(500 * time.Millisecond):
		}
	}
	mu.Lock()
	defer mu.Unlock()
	t.Fatalf("no message from n3 reached the subscriber on n1 in 30 tries\n%s", out.String())
}

// TestClusterKillUnderLoad: publishers and persistent subscribers on n1
// and n2, n3 killed with SIGKILL under load: nothing acknowledged may be
// lost for them, no QoS 2 message duplicated, and the publishers keep
// being acknowledged after the kill.
func TestClusterKillUnderLoad(t *testing.T) {
	c := StartCluster(t, 3, Options{})
	ch := NewChecker(t, c)
	ch.AddPublisher(PublisherSpec{ID: "p1a", Nodes: []int{0}, Version: 5, QoS: 1})
	ch.AddPublisher(PublisherSpec{ID: "p1b", Nodes: []int{0}, Version: 5, QoS: 2})
	ch.AddPublisher(PublisherSpec{ID: "p2a", Nodes: []int{1}, Version: 4, QoS: 1})
	ch.AddPublisher(PublisherSpec{ID: "p2b", Nodes: []int{1}, Version: 4, QoS: 2})
	ch.AddSubscriber(SubscriberSpec{ID: "s1a", Nodes: []int{0}, Version: 5, QoS: 2})
	ch.AddSubscriber(SubscriberSpec{ID: "s1b", Nodes: []int{0}, Version: 4, QoS: 1})
	ch.AddSubscriber(SubscriberSpec{ID: "s2a", Nodes: []int{1}, Version: 5, QoS: 1})
	ch.AddSubscriber(SubscriberSpec{ID: "s2b", Nodes: []int{1}, Version: 4, QoS: 2})
	ch.Start(45 * time.Second)
	time.Sleep(3 * time.Second)
	before := map[string]int{}
	for _, p := range []string{"p1a", "p1b", "p2a", "p2b"} {
		before[p] = ch.Acked(p)
	}
	c.Kill(2)
	// Long enough for the survivors to declare n3 dead (~5-6 s).
	time.Sleep(8 * time.Second)
	if !c.noStatus {
		CheckView(t, c, 10*time.Second, 0, "n3", false)
	}
	ch.Stop(20 * time.Second)
	r := ch.Check(nil)
	t.Log(r)
	for p, n := range before {
		if ch.Acked(p) < n+50 {
			t.Errorf("publisher %s: %d acknowledged before the kill, %d at the end: it stalled", p, n, ch.Acked(p))
		}
	}
	if r.Lost() != 0 || r.DupQoS2() != 0 {
		t.Errorf("lost %d acknowledged messages, %d QoS 2 duplicates; want none", r.Lost(), r.DupQoS2())
	}
}

// CheckView waits until node i sees name alive (or not alive).
func CheckView(t *testing.T, c *Cluster, total time.Duration, i int, name string, alive bool) {
	t.Helper()
	deadline := time.Now().Add(total)
	for {
		a, err := c.Alive(i)
		if err == nil && a[name] == alive {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s alive = %v wanted %v after %v (%v)", c.Nodes[i].Name, name, a[name], alive, total, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestClusterPartitionHeal: split {n1} | {n2, n3}; both sides serve their
// own clients (n1 alone; n3 to n2 across nodes of the majority side); a
// retained message set on n1, then a later one on n2, converges after the
// heal to the later one on every node; a publish on n3 reaches a
// subscriber on n1 again.
func TestClusterPartitionHeal(t *testing.T) {
	NeedNetns(t)
	c := StartCluster(t, 3, Options{})
	subA := connectV5(t, c.Addr(0), "ph-sub-a")
	subA.sub(t, "side/a", 1)
	subB := connectV5(t, c.Addr(1), "ph-sub-b")
	subB.sub(t, "side/b", 1)
	pubA := connectV5(t, c.Addr(0), "ph-pub-a")
	pubB := connectV5(t, c.Addr(2), "ph-pub-b")
	deliverAcross(t, pubB, subB, "side/b", 20*time.Second) // routes up before the split

	c.Partition([]int{0}, []int{1, 2})
	t.Log("split {n1} | {n2, n3}")
	c.WaitView(30*time.Second, []int{0}, []int{1, 2})
	deliverAcross(t, pubA, subA, "side/a", 10*time.Second)
	deliverAcross(t, pubB, subB, "side/b", 10*time.Second)

	if err := pubA.pub("ret/x", "from-n1", 1, true); err != nil {
		t.Fatalf("retained publish on n1 during the split: %v", err)
	}
	time.Sleep(100 * time.Millisecond) // a later HLC stamp
	pubN2 := connectV5(t, c.Addr(1), "ph-pub-n2")
	if err := pubN2.pub("ret/x", "from-n2", 1, true); err != nil {
		t.Fatalf("retained publish on n2 during the split: %v", err)
	}
	if got, err := retained(c, 0, "ret/x"); err != nil || got != "from-n1" {
		t.Errorf("during the split n1 has retained %q (%v), want from-n1", got, err)
	}

	c.Heal()
	t.Log("healed")
	c.WaitConverged(45 * time.Second)
	deadline := time.Now().Add(30 * time.Second)
	for {
		var got [3]string
		ok := true
		for i := range 3 {
			v, err := retained(c, i, "ret/x")
			got[i] = v
			if err != nil || v != "from-n2" {
				ok = false
			}
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("retained ret/x after the heal: n1 %q, n2 %q, n3 %q; want from-n2 (the later write) everywhere", got[0], got[1], got[2])
		}
		time.Sleep(500 * time.Millisecond)
	}
	sub := connectV5(t, c.Addr(0), "ph-after-sub")
	sub.sub(t, "after/t", 1)
	pub := connectV5(t, c.Addr(2), "ph-after-pub")
	deliverAcross(t, pub, sub, "after/t", 20*time.Second)
}

// TestClusterChaos runs a seeded random schedule of kills, graceful stops,
// pauses and splits (4 faults, or 40 with -chaos.long / ISOBAR_CHAOS=long,
// which needs go test -timeout 30m)
// under load from publishers pinned to each node, with persistent
// subscribers pinned to each node: every acknowledged message outside the
// fault windows reaches every subscriber, and no QoS 2 message twice.
func TestClusterChaos(t *testing.T) {
	NeedNetns(t)
	c := StartCluster(t, 3, Options{})
	ch := NewChecker(t, c)
	ch.AddPublisher(PublisherSpec{ID: "c1", Nodes: []int{0}, Version: 5, QoS: 1, Interval: 30 * time.Millisecond})
	ch.AddPublisher(PublisherSpec{ID: "c2", Nodes: []int{1}, Version: 4, QoS: 2, Interval: 30 * time.Millisecond})
	ch.AddPublisher(PublisherSpec{ID: "c3", Nodes: []int{2}, Version: 5, QoS: 2, Interval: 30 * time.Millisecond})
	ch.AddSubscriber(SubscriberSpec{ID: "k1", Nodes: []int{0}, Version: 5, QoS: 2})
	ch.AddSubscriber(SubscriberSpec{ID: "k2", Nodes: []int{1}, Version: 4, QoS: 1})
	ch.AddSubscriber(SubscriberSpec{ID: "k3", Nodes: []int{2}, Version: 5, QoS: 1})
	ch.AddSubscriber(SubscriberSpec{ID: "k4", Nodes: []int{1}, Version: 5, QoS: 2})
	count, hold := 4, 3*time.Second
	if ChaosLong() {
		count, hold = 40, 10*time.Second
	}
	faults := RandomFaults(ch.Rand, c.N(), count, hold)
	ch.Start(60 * time.Second)
	time.Sleep(2 * time.Second)
	ch.RunFaults(faults, FaultOptions{})
	time.Sleep(2 * time.Second)
	ch.Stop(30 * time.Second)
	r := ch.Check(nil)
	t.Log(r)
	if r.Lost() != 0 || r.DupQoS2() != 0 {
		t.Errorf("lost %d acknowledged messages outside fault windows, %d QoS 2 duplicates; want none (seed %d)", r.Lost(), r.DupQoS2(), ch.Seed)
	}
	for _, p := range r.Pubs {
		if p.Acked == 0 {
			t.Errorf("publisher %s: nothing acknowledged", p.ID)
		}
	}
}

// TestClusterHAProxy puts HAProxy, configured by deploy/haproxy/haproxy.cfg
// (a copy with a third backend server added, nothing else changed), in
// front of three nodes. A persistent subscriber (MQTT 5, clean start 0,
// session expiry 1 h) connected through HAProxy loses its node (SIGKILL):
// it reconnects through HAProxy to another node and keeps receiving what
// publishers on the other nodes send. Its session is replicated, so the
// new node must answer session present 1 and the subscriber does not
// subscribe again (NoResubscribe): what it receives proves that the
// session itself survived. When the killed node comes back, the sessions
// merge and the subscriber still receives everything.
//
// HAProxy reconnects the client before the dead node is declared dead:
// the replica is handed over as soon as the owner's link is down
// (TestClusterReplicatedReconnectBeforeDetection).
func TestClusterHAProxy(t *testing.T) {
	bin := peer.NeedBinary(t, "haproxy", "haproxy")
	c := StartCluster(t, 3, Options{ProxyListener: true})
	front, pool := startHAProxy(t, bin, c)

	ch := NewChecker(t, c)
	ch.AddSubscriber(SubscriberSpec{ID: "hp-sub", Version: 5, QoS: 1, Addrs: []string{front},
		TLS: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, NoResubscribe: true})
	ch.AddPublisher(PublisherSpec{ID: "hp-p1", Nodes: []int{0, 1}, QoS: 1})
	ch.AddPublisher(PublisherSpec{ID: "hp-p2", Nodes: []int{1, 2}, QoS: 1})
	ch.AddPublisher(PublisherSpec{ID: "hp-p3", Nodes: []int{2, 0}, QoS: 1})
	ch.Start(45 * time.Second)
	home := whereIs(t, c, "hp-sub", -1, 10*time.Second)
	time.Sleep(time.Second)
	killed := time.Now()
	c.Kill(home)
	now := whereIs(t, c, "hp-sub", home, 30*time.Second)
	moved := time.Now()
	t.Logf("hp-sub moved from %s to %s through HAProxy in %v", c.Nodes[home].Name, c.Nodes[now].Name, moved.Sub(killed).Round(time.Millisecond))
	// PUBACKs for messages that matched the dead node's interest wait
	// until it is declared dead (failure table, ~5-6 s): count from then.
	waitDead(t, c, home, 20*time.Second)
	mark := map[string]int{}
	for _, p := range []string{"hp-p1", "hp-p2", "hp-p3"} {
		mark[p] = ch.Acked(p)
	}
	time.Sleep(3 * time.Second)
	// receivedAfter reports whether hp-sub got a message that publisher
	// p (on a node other than hp-sub's) had not acknowledged at mark.
	receivedAfter := func(mark map[string]int) bool {
		for p, n := range mark {
			if p == "hp-p"+fmt.Sprint(now+1) {
				continue // on the subscriber's own node (or failing over to it)
			}
			for _, seq := range ch.Received("hp-sub", p) {
				if seq > uint64(n) {
					return true
				}
			}
		}
		return false
	}
	if !receivedAfter(mark) {
		t.Errorf("hp-sub received nothing published on another node after its failover")
	}
	c.Restart(home)
	for p := range mark {
		mark[p] = ch.Acked(p)
	}
	time.Sleep(3 * time.Second)
	ch.Stop(15 * time.Second)
	// Messages sent while the subscriber had no node (and Grace around
	// that) may be lost; the rest, across the restart and session merge
	// too, may not.
	ch.NodeFault(home, killed, moved)
	r := ch.Check(nil)
	t.Log(r)
	if r.Lost() != 0 {
		t.Errorf("lost %d acknowledged messages outside the failover", r.Lost())
	}
	if !receivedAfter(mark) {
		t.Errorf("hp-sub received nothing published on another node after %s came back", c.Nodes[home].Name)
	}
	if s := r.Subs[0]; s.SessionLost != 0 {
		t.Errorf("hp-sub found no session on %s after the failover (session present 0)", c.Nodes[now].Name)
	}
}

// startHAProxy runs HAProxy on a copy of deploy/haproxy/haproxy.cfg in
// front of c's three PROXY protocol listeners and waits for its backends to
// be UP; it returns its TLS front address and a pool trusting its
// certificate.
func startHAProxy(t *testing.T, bin string, c *Cluster) (string, *x509.CertPool) {
	t.Helper()
	dir := t.TempDir()
	pemFile, pool := selfSignedPEM(t, dir)
	cfg := haproxyConfig(t, dir)
	front, stats := freeAddr(t, ClientIP, false), freeAddr(t, ClientIP, false)
	hp := exec.Command(bin, "-db", "-f", cfg)
	hp.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	hp.Env = append(os.Environ(), "ISOBAR_MQTTS_BIND="+front, "ISOBAR_STATS_BIND="+stats, "ISOBAR_TLS_PEM="+pemFile,
		"ISOBAR_NODE1="+c.ProxiedAddr(0), "ISOBAR_NODE2="+c.ProxiedAddr(1), "ISOBAR_NODE3="+c.ProxiedAddr(2), "ISOBAR_CHECK_INTER=200ms")
	var hpOut bytes.Buffer
	var hpMu sync.Mutex
	hp.Stdout = lockedWriter{&hpMu, &hpOut}
	hp.Stderr = hp.Stdout
	if err := hp.Start(); err != nil {
		t.Fatal(err)
	}
	hpDone := make(chan struct{})
	go func() { _ = hp.Wait(); close(hpDone) }()
	t.Cleanup(func() {
		_ = hp.Process.Kill()
		<-hpDone
		if t.Failed() {
			hpMu.Lock()
			t.Logf("HAProxy output:\n%s", tail(hpOut.String(), 16000))
			hpMu.Unlock()
		}
	})
	waitHAProxyUp(t, stats, 3, 20*time.Second)

	return front, pool
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

// whereIs waits until client id is connected to a node other than not and
// returns its index.
func whereIs(t *testing.T, c *Cluster, id string, not int, total time.Duration) int {
	t.Helper()
	deadline := time.Now().Add(total)
	for {
		for i := range c.Nodes {
			if i != not && c.Running(i) && c.HasClient(i, id) {
				return i
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("client %s on no node (other than %d) after %v", id, not, total)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// haproxyConfig copies deploy/haproxy/haproxy.cfg into dir with a third
// backend server (and its presetenv default) added after the second;
// nothing else changes.
func haproxyConfig(t *testing.T, dir string) string {
	t.Helper()
	src, err := os.ReadFile(filepath.Join("..", "..", "deploy", "haproxy", "haproxy.cfg"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	env, server := false, false
	for _, line := range strings.Split(string(src), "\n") {
		out = append(out, line)
		trim := strings.TrimSpace(line)
		indent := line[:len(line)-len(strings.TrimLeft(line, " \t"))]
		if strings.HasPrefix(trim, "presetenv ISOBAR_NODE2 ") {
			out = append(out, indent+"presetenv ISOBAR_NODE3        10.0.0.13:1884")
			env = true
		}
		if trim == `server isobar2 "${ISOBAR_NODE2}"` {
			out = append(out, indent+`server isobar3 "${ISOBAR_NODE3}"`)
			server = true
		}
	}
	if !env || !server {
		t.Fatalf("deploy/haproxy/haproxy.cfg no longer has the ISOBAR_NODE2 presetenv and server lines this test extends")
	}
	p := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(p, []byte(strings.Join(out, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// waitHAProxyUp waits until n backend servers are UP on the stats page.
func waitHAProxyUp(t *testing.T, stats string, n int, total time.Duration) {
	t.Helper()
	deadline := time.Now().Add(total)
	hc := http.Client{Timeout: 2 * time.Second}
	var last string
	for time.Now().Before(deadline) {
		resp, err := hc.Get("http://" + stats + "/stats;csv")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			r := csv.NewReader(strings.NewReader(strings.TrimPrefix(string(body), "# ")))
			r.FieldsPerRecord = -1
			rows, _ := r.ReadAll()
			up := 0
			if len(rows) > 1 {
				col := map[string]int{}
				for i, name := range rows[0] {
					col[name] = i
				}
				for _, row := range rows[1:] {
					if len(row) > col["status"] && row[col["pxname"]] == "isobar" && strings.HasPrefix(row[col["svname"]], "isobar") && row[col["status"]] == "UP" {
						up++
					}
				}
			}
			if up == n {
				return
			}
			last = fmt.Sprintf("%d of %d servers UP", up, n)
		} else {
			last = err.Error()
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("HAProxy backends not up after %v: %s", total, last)
}

// selfSignedPEM writes a certificate for 127.0.0.1 and its key into one
// PEM file (HAProxy's crt) and returns it with a pool trusting it.
func selfSignedPEM(t *testing.T, dir string) (string, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "clustertest"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.ParseIP(ClientIP)}, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kd, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: der})
	_ = pem.Encode(&b, &pem.Block{Type: "PRIVATE KEY", Bytes: kd})
	p := filepath.Join(dir, "mqtt.pem")
	if err := os.WriteFile(p, b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return p, pool
}
