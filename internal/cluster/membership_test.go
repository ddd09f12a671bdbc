package cluster

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/prometheus/client_golang/prometheus"
)

var mbSecret = []byte("0123456789abcdef0123456789abcdef-test")

// fast timings for tests that are not about the documented defaults.
type mbTiming struct {
	probe, timeout, gossip time.Duration
	rejoin                 time.Duration
}

var mbFast = mbTiming{probe: 200 * time.Millisecond, timeout: 100 * time.Millisecond, gossip: 50 * time.Millisecond, rejoin: 300 * time.Millisecond}

// mbRecorder keeps the events one node saw.
type mbRecorder struct {
	mu     sync.Mutex
	events []MemberEvent
}

func (r *mbRecorder) add(e MemberEvent) {
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
}

func (r *mbRecorder) find(kind MemberEventKind, name string) (MemberEvent, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.events {
		if e.Kind == kind && e.Member.Name == name {
			return e, true
		}
	}
	return MemberEvent{}, false
}

type mbNode struct {
	*Membership
	rec *mbRecorder
	reg *prometheus.Registry
}

type mbOpt func(*MembershipConfig)

func mbLogger(t *testing.T, name string) *slog.Logger {
	if os.Getenv("CLUSTER_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name(), "n", name)
	}
	return slog.New(slog.DiscardHandler)
}

func mbStart(t *testing.T, name, bind string, seeds []string, tm *mbTiming, opts ...mbOpt) *mbNode {
	t.Helper()
	rec := &mbRecorder{}
	reg := prometheus.NewRegistry()
	cfg := MembershipConfig{
		NodeName:   name,
		Bind:       bind,
		Seeds:      seeds,
		Secret:     mbSecret,
		Logger:     mbLogger(t, name),
		Registerer: reg,
	}
	if tm != nil {
		cfg.ProbeInterval, cfg.ProbeTimeout, cfg.GossipInterval, cfg.RejoinInterval = tm.probe, tm.timeout, tm.gossip, tm.rejoin
	}
	for _, o := range opts {
		o(&cfg)
	}
	m, err := StartMembership(cfg, rec.add)
	if err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	t.Cleanup(func() { _ = m.Shutdown() })
	return &mbNode{Membership: m, rec: rec, reg: reg}
}

// mbWaitFor polls cond every 20ms until it holds or d passes.
func mbWaitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// mbMember returns name as seen by n.
func mbMember(n *mbNode, name string) (Member, bool) {
	for _, m := range n.Members() {
		if m.Name == name {
			return m, true
		}
	}
	return Member{}, false
}

// mbAllAlive: every node lists every other as alive, with its Addr and
// Start.
func mbAllAlive(nodes []*mbNode) bool {
	for _, a := range nodes {
		if a.NumAlive() != len(nodes) {
			return false
		}
		for _, b := range nodes {
			m, ok := mbMember(a, b.Local().Name)
			if !ok || m.State != MemberAlive || m.Addr != b.Local().Addr || m.Start != b.Local().Start {
				return false
			}
		}
	}
	return true
}

func mbCluster(t *testing.T, n int, tm *mbTiming) []*mbNode {
	t.Helper()
	first := mbStart(t, "n1", "127.0.0.1:0", nil, tm)
	nodes := []*mbNode{first}
	for i := 2; i <= n; i++ {
		nodes = append(nodes, mbStart(t, fmt.Sprintf("n%d", i), "127.0.0.1:0", []string{first.Local().Addr}, tm))
	}
	mbWaitFor(t, 15*time.Second, fmt.Sprintf("%d members to see each other alive", n), func() bool { return mbAllAlive(nodes) })
	return nodes
}

func TestMembershipJoinThree(t *testing.T) {
	nodes := mbCluster(t, 3, &mbFast)
	ms := nodes[0].Members()
	if len(ms) != 3 || ms[0].Name != "n1" || ms[1].Name != "n2" || ms[2].Name != "n3" {
		t.Fatalf("members not sorted by name: %+v", ms)
	}
	// Events: each node saw the other two join, never itself.
	for _, n := range nodes {
		for _, o := range nodes {
			_, ok := n.rec.find(MemberJoined, o.Local().Name)
			if want := n != o; ok != want {
				t.Errorf("%s: joined event for %s = %v, want %v", n.Local().Name, o.Local().Name, ok, want)
			}
		}
	}
	reg := nodes[0].reg
	if v := mbMetric(t, reg, "isobar_cluster_members", "state", "alive"); v != 3 {
		t.Errorf("isobar_cluster_members{state=alive} = %v, want 3", v)
	}
	if v := mbMetric(t, reg, "isobar_cluster_member_events_total", "kind", "joined"); v != 2 {
		t.Errorf("isobar_cluster_member_events_total{kind=joined} = %v, want 2", v)
	}
	if mbMetric(t, reg, "isobar_cluster_gossip_bytes_total", "direction", "in") == 0 ||
		mbMetric(t, reg, "isobar_cluster_gossip_bytes_total", "direction", "out") == 0 {
		t.Error("gossip byte counters did not move")
	}
}

func TestMembershipJoinFive(t *testing.T) {
	mbCluster(t, 5, &mbFast)
}

// A node with another secret, or a plain memberlist without encryption,
// cannot join: the cluster never lists it, and it sees nobody.
func TestMembershipOtherSecretCannotJoin(t *testing.T) {
	nodes := mbCluster(t, 2, &mbFast)
	seed := nodes[0].Local().Addr
	intruder := mbStart(t, "intruder", "127.0.0.1:0", []string{seed}, &mbFast, func(c *MembershipConfig) {
		c.Secret = []byte("another secret, thirty-two bytes or more")
	})

	// A memberlist with no key at all.
	mc := memberlist.DefaultLocalConfig()
	mc.Name = "nokey"
	mc.BindAddr = "127.0.0.1"
	mc.BindPort = 0
	mc.AdvertiseAddr = "127.0.0.1"
	mc.LogOutput = io.Discard
	plain, err := memberlist.Create(mc)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = plain.Shutdown() }()
	if n, err := plain.Join([]string{seed}); err == nil {
		t.Errorf("unencrypted memberlist joined %d nodes", n)
	}

	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		for _, n := range nodes {
			for _, m := range n.Members() {
				if m.Name == "intruder" || m.Name == "nokey" {
					t.Fatalf("%s lists %s", n.Local().Name, m.Name)
				}
			}
		}
		if intruder.NumAlive() != 1 || len(intruder.Members()) != 1 {
			t.Fatalf("intruder sees %+v", intruder.Members())
		}
		if plain.NumMembers() != 1 {
			t.Fatalf("unencrypted node sees %d members", plain.NumMembers())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// With the default timings, a member that stops without leaving is
// reported failed within the documented detection time (about 5-6 s for
// three nodes; the bound leaves room for a loaded machine); one that
// leaves is reported left, quickly.
func TestMembershipFailureAndLeave(t *testing.T) {
	nodes := mbCluster(t, 3, nil)
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]

	stopped := time.Now()
	if err := n3.Shutdown(); err != nil {
		t.Fatal(err)
	}
	if err := n3.Shutdown(); err != nil { // idempotent
		t.Fatal(err)
	}
	mbWaitFor(t, 15*time.Second, "n3 to be reported failed", func() bool {
		_, a := n1.rec.find(MemberFailed, "n3")
		_, b := n2.rec.find(MemberFailed, "n3")
		return a && b
	})
	t.Logf("failure detected after %v", time.Since(stopped).Round(100*time.Millisecond))
	if m, _ := mbMember(n1, "n3"); m.State != MemberDead {
		t.Errorf("n1 lists n3 as %v, want dead", m.State)
	}
	if _, ok := n1.rec.find(MemberLeft, "n3"); ok {
		t.Error("a crashed node was reported as left")
	}

	left := time.Now()
	if err := n2.Leave(3 * time.Second); err != nil {
		t.Fatal(err)
	}
	mbWaitFor(t, 3*time.Second, "n2 to be reported left", func() bool {
		_, ok := n1.rec.find(MemberLeft, "n2")
		return ok
	})
	t.Logf("leave seen after %v", time.Since(left).Round(10*time.Millisecond))
	if _, ok := n1.rec.find(MemberFailed, "n2"); ok {
		t.Error("a node that left was reported failed")
	}
	if m, _ := mbMember(n1, "n2"); m.State != MemberDeparted || m.State.String() != "left" {
		t.Errorf("n1 lists n2 as %v, want left", m.State)
	}
	if n2.Local().State != MemberDeparted {
		t.Errorf("n2 sees itself as %v after Leave", n2.Local().State)
	}
	if n1.NumAlive() != 1 {
		t.Errorf("n1 counts %d alive", n1.NumAlive())
	}
	if err := n2.Leave(time.Second); err != nil {
		t.Errorf("second Leave: %v", err)
	}
}

// A member that crashes and restarts with the same name on a new port is
// accepted again (once memberlist lets the name be reclaimed), with its new
// address and incarnation; the others see it fail and then join.
func TestMembershipRestartSameName(t *testing.T) {
	nodes := mbCluster(t, 3, &mbFast)
	old := nodes[2].Local()
	if err := nodes[2].Shutdown(); err != nil {
		t.Fatal(err)
	}
	// Hold the old port so the new incarnation surely gets another one.
	hold, err := net.ListenTCP("tcp", mbTCPAddr(t, old.Addr))
	if err == nil {
		defer hold.Close()
	}
	restarted := mbStart(t, "n3", "127.0.0.1:0", []string{nodes[0].Local().Addr}, &mbFast)
	cur := restarted.Local()
	if cur.Addr == old.Addr || cur.Start == old.Start {
		t.Fatalf("restart kept %+v", cur)
	}
	all := []*mbNode{nodes[0], nodes[1], restarted}
	mbWaitFor(t, 40*time.Second, "the restarted n3 to be seen alive at its new address", func() bool { return mbAllAlive(all) })
	for _, n := range nodes[:2] {
		j, ok := n.rec.find(MemberJoined, "n3")
		if !ok {
			t.Fatalf("%s: no join event", n.Local().Name)
		}
		n.rec.mu.Lock()
		last := n.rec.events[len(n.rec.events)-1]
		n.rec.mu.Unlock()
		if last.Kind != MemberJoined || last.Member != cur {
			t.Errorf("%s: last event %+v, want joined %+v", n.Local().Name, last, cur)
		}
		if _, ok := n.rec.find(MemberFailed, "n3"); !ok {
			t.Errorf("%s: the old incarnation was never reported failed", n.Local().Name)
		}
		_ = j
	}
}

// A node that left can come back at once under its name.
func TestMembershipRejoinAfterLeave(t *testing.T) {
	nodes := mbCluster(t, 2, &mbFast)
	if err := nodes[1].Leave(2 * time.Second); err != nil {
		t.Fatal(err)
	}
	_ = nodes[1].Shutdown()
	back := mbStart(t, "n2", "127.0.0.1:0", []string{nodes[0].Local().Addr}, &mbFast)
	mbWaitFor(t, 10*time.Second, "n2 back", func() bool { return mbAllAlive([]*mbNode{nodes[0], back}) })
}

// mbMetric reads one labelled gauge or counter from reg (-1: absent).
func mbMetric(t *testing.T, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label && lp.GetValue() == value {
					if m.GetCounter() != nil {
						return m.GetCounter().GetValue()
					}
					return m.GetGauge().GetValue()
				}
			}
		}
	}
	return -1
}

func mbTCPAddr(t *testing.T, s string) *net.TCPAddr {
	a, err := net.ResolveTCPAddr("tcp", s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// mbFreeAddrs picks n loopback addresses with a port free for TCP and UDP.
func mbFreeAddrs(t *testing.T, n int) []string {
	t.Helper()
	var out []string
	for i := 0; len(out) < n && i < 50; i++ {
		ip := fmt.Sprintf("127.0.%d.%d", 90+len(out), 1+i%200)
		l, err := net.Listen("tcp", ip+":0")
		if err != nil {
			continue
		}
		addr := l.Addr().String()
		u, err := net.ListenPacket("udp", addr)
		l.Close()
		if err != nil {
			continue
		}
		u.Close()
		out = append(out, addr)
	}
	if len(out) != n {
		t.Fatalf("found only %d free addresses", len(out))
	}
	return out
}

// All nodes stop, then start again in reverse order, each with the whole
// seed list: the ones that start first find nobody and keep retrying, and
// the cluster converges.
func TestMembershipFullRestartReverseOrder(t *testing.T) {
	addrs := mbFreeAddrs(t, 3)
	start := func(i int) *mbNode {
		return mbStart(t, fmt.Sprintf("n%d", i+1), addrs[i], addrs, &mbFast)
	}
	var nodes []*mbNode
	for i := range addrs {
		nodes = append(nodes, start(i))
	}
	mbWaitFor(t, 15*time.Second, "first start converges", func() bool { return mbAllAlive(nodes) })
	for _, n := range nodes {
		if err := n.Shutdown(); err != nil {
			t.Fatal(err)
		}
	}
	restarted := make([]*mbNode, len(addrs))
	for i := len(addrs) - 1; i >= 0; i-- {
		restarted[i] = start(i)
		if i > 0 {
			// Longer than a rejoin interval: the early ones must retry.
			time.Sleep(2 * mbFast.rejoin)
		}
	}
	if strings.Join([]string{restarted[0].Local().Addr}, "") != addrs[0] {
		t.Fatalf("n1 restarted on %s, want %s", restarted[0].Local().Addr, addrs[0])
	}
	mbWaitFor(t, 20*time.Second, "the restarted cluster converges", func() bool { return mbAllAlive(restarted) })
}

func TestMembershipStartErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  MembershipConfig
		want string
	}{
		{"no name", MembershipConfig{Bind: "127.0.0.1:0", Secret: mbSecret}, "node name"},
		{"short secret", MembershipConfig{NodeName: "a", Bind: "127.0.0.1:0", Secret: []byte("short")}, "at least 32"},
		{"bad bind", MembershipConfig{NodeName: "a", Bind: "localhost:0", Secret: mbSecret}, "ip:port"},
		{"wildcard without advertise", MembershipConfig{NodeName: "a", Bind: "0.0.0.0:0", Secret: mbSecret}, "advertise"},
		{"bad advertise", MembershipConfig{NodeName: "a", Bind: "127.0.0.1:0", Advertise: "0.0.0.0:1", Secret: mbSecret}, "advertise"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := StartMembership(tc.cfg, nil)
			if err == nil {
				_ = m.Shutdown()
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error mentioning %q", err, tc.want)
			}
		})
	}
	// The port is taken: a clear error, nothing left running.
	busy := mbStart(t, "busy", "127.0.0.1:0", nil, &mbFast)
	if m, err := StartMembership(MembershipConfig{NodeName: "b", Bind: busy.tr.boundAddr().String(), Secret: mbSecret}, nil); err == nil {
		_ = m.Shutdown()
		t.Fatal("bound a port in use")
	}
}

// Advertise replaces the bound address in what the others are told; its
// port 0 means the bound port.
func TestMembershipAdvertise(t *testing.T) {
	n := mbStart(t, "a", "127.0.0.1:0", nil, &mbFast, func(c *MembershipConfig) { c.Advertise = "127.0.0.2:0" })
	want := fmt.Sprintf("127.0.0.2:%d", n.tr.boundAddr().Port)
	if n.Local().Addr != want {
		t.Fatalf("advertised %s, want %s", n.Local().Addr, want)
	}
}

type mbLogRecords struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (h *mbLogRecords) Enabled(context.Context, slog.Level) bool { return true }
func (h *mbLogRecords) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	h.recs = append(h.recs, r)
	h.mu.Unlock()
	return nil
}
func (h *mbLogRecords) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *mbLogRecords) WithGroup(string) slog.Handler      { return h }

// memberlist's log lines get slog levels, and its warnings and errors
// (which anyone can provoke with bad packets) are rate limited.
func TestMembershipLogAdapter(t *testing.T) {
	h := &mbLogRecords{}
	w := &memberlistLogWriter{log: slog.New(h)}
	l := log.New(w, "", 0)
	l.Printf("[DEBUG] memberlist: Stream connection from=1")
	l.Printf("[INFO] memberlist: Marking n2 as failed")
	l.Printf("[WARN] memberlist: Refuting")
	for i := range 3 * memberlistLogBurst {
		l.Printf("[ERR] memberlist: Decrypt packet failed: %d", i)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.recs) != 2+memberlistLogBurst {
		t.Fatalf("%d records, want %d", len(h.recs), 2+memberlistLogBurst)
	}
	want := []struct {
		lvl slog.Level
		msg string
	}{{slog.LevelDebug, "memberlist: Stream connection from=1"}, {slog.LevelInfo, "memberlist: Marking n2 as failed"},
		{slog.LevelWarn, "memberlist: Refuting"}, {slog.LevelError, "memberlist: Decrypt packet failed: 0"}}
	for i, w := range want {
		if h.recs[i].Level != w.lvl || h.recs[i].Message != w.msg {
			t.Errorf("record %d: %v %q, want %v %q", i, h.recs[i].Level, h.recs[i].Message, w.lvl, w.msg)
		}
	}
	if w.suppressed != 2*memberlistLogBurst+1 {
		t.Errorf("suppressed %d", w.suppressed)
	}
}
