package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/isobar-mq/isobar/internal/testutil"
)

// TestClusterQuick builds isobar and runs `isobar-bench cluster --quick`:
// a single node, then a 3-node cluster, every scenario on both, and checks
// that the table and the JSON report have every scenario with non-zero
// figures on both topologies.
func TestClusterQuick(t *testing.T) {
	if testing.Short() {
		t.Skip("builds isobar and starts a single node and a 3-node cluster")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "isobar")
	build := exec.Command("go", "build", "-o", bin, "github.com/isobar-mq/isobar/cmd/isobar")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/isobar: %v\n%s", err, out)
	}
	outDir := filepath.Join(dir, "out")
	var out, errb bytes.Buffer
	start := time.Now()
	code := Main([]string{"cluster", "--isobar", bin, "--quick", "--repeat", "1", "--nodes", "3", "--out", outDir}, &out, &errb)
	t.Logf("exit %d after %s\n%s\n%s", code, time.Since(start).Round(time.Millisecond), out.String(), errb.String())
	b, err := os.ReadFile(filepath.Join(outDir, "results.json"))
	if err != nil {
		t.Fatal(err)
	}
	var rep ClusterReport
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	for _, st := range rep.Starts {
		if st.Error != "" {
			t.Fatalf("%s did not start: %s", st.Topology, st.Error)
		}
	}
	// Exit status 1 means faults the notes list (the cluster code is
	// new); the figures must be there either way.
	if code != 0 && code != 1 {
		t.Fatalf("exit %d", code)
	}
	scs := clusterScenarios()
	if len(rep.Scenarios) != len(scs) || rep.Nodes != 3 || len(rep.Goals) != len(clusterGoals) {
		t.Fatalf("report: %d scenarios (want %d), %d nodes, %d goals", len(rep.Scenarios), len(scs), rep.Nodes, len(rep.Goals))
	}
	table := out.String()
	for _, h := range []string{"single node", "3-node cluster", "cluster/single"} {
		if !strings.Contains(table, h) {
			t.Errorf("table has no column %q", h)
		}
	}
	for i, sc := range rep.Scenarios {
		if sc.Name != scs[i].Name || !strings.Contains(table, sc.Label) {
			t.Errorf("scenario %d: %q (want %q), label %q in the table: %v", i, sc.Name, scs[i].Name, sc.Label, strings.Contains(table, sc.Label))
		}
		for _, topo := range []string{topoSingle, topoCluster} {
			if len(sc.Runs[topo]) != 1 {
				t.Fatalf("%s: %d runs on %s, errors %v", sc.Name, len(sc.Runs[topo]), topo, sc.Errors[topo])
			}
			r := sc.Runs[topo][0]
			if r.Result.Received == 0 || r.Result.RecvRate <= 0 || r.Result.Latency.Count == 0 {
				t.Errorf("%s on %s: received %d (%.0f msg/s), %d latency samples", sc.Name, topo, r.Result.Received, r.Result.RecvRate, r.Result.Latency.Count)
			}
			if len(r.NodeCPU) != map[string]int{topoSingle: 1, topoCluster: 3}[topo] {
				t.Errorf("%s on %s: CPU of %d nodes", sc.Name, topo, len(r.NodeCPU))
			}
		}
		for _, m := range sc.Metrics {
			// /proc counts CPU in 10 ms ticks: a node at 1,000 msg/s
			// for 0.6 s may show none.
			if m.Name == mLost.Name || (m.Name == mCPU.Name && sc.Name == "latency-5k") {
				continue
			}
			if m.Values[topoSingle] <= 0 || m.Values[topoCluster] <= 0 || m.Ratio <= 0 {
				t.Errorf("%s %s: single %v, cluster %v, ratio %v", sc.Name, m.Name, m.Values[topoSingle], m.Values[topoCluster], m.Ratio)
			}
		}
		// On the cluster the messages crossed node links (the counters
		// are cumulative: the local scenario runs after p2p-qos1).
		if sc.Name == "p2p-qos1-local" {
			continue
		}
		fwd := 0.0
		for _, c := range sc.Runs[topoCluster][0].NodeCounters {
			fwd += sumMetric(c, "isobar_cluster_forwarded_total")
		}
		if fwd == 0 {
			t.Errorf("%s: no message forwarded between the nodes: %v", sc.Name, sc.Runs[topoCluster][0].NodeCounters)
		}
	}
	md, err := os.ReadFile(filepath.Join(outDir, "results.md"))
	if err != nil || !strings.Contains(string(md), "| scenario | figure | single node | 3-node cluster | cluster/single |") {
		t.Errorf("results.md: %v\n%s", err, md)
	}
}

// TestPubSubAddrs: publishers and subscribers connect to the addresses of
// their role. Two unconnected nodes: the publishers' messages reach no
// subscriber of the other node, and with both roles on one node they do.
func TestPubSubAddrs(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two brokers")
	}
	a := testutil.Addr(t, testutil.RunNode(t, benchNodeConfig), "mqtt")
	b := testutil.Addr(t, testutil.RunNode(t, benchNodeConfig), "mqtt")
	cfg := quick(a, ScenarioP2P)
	cfg.Pubs, cfg.QoS, cfg.Rate, cfg.Drain = 2, 1, 1000, 300*time.Millisecond
	cfg.PubAddrs, cfg.SubAddrs = []string{a}, []string{b}
	res, err := Run(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Connect.Established != 4 || res.Sent == 0 || res.Acked != res.Sent || res.Received != 0 {
		t.Fatalf("publishers on %s, subscribers on %s: %+v, sent %d, acked %d, received %d", a, b, res.Connect, res.Sent, res.Acked, res.Received)
	}
	if want := "publishers " + a + ", subscribers " + b; res.Broker != want {
		t.Errorf("result names broker %q, want %q", res.Broker, want)
	}
	cfg.SubAddrs = []string{a}
	res = run(t, cfg)
	exact(t, res, 1)
}

func TestPubSubAddrsLoopbackOnly(t *testing.T) {
	for _, cfg := range []Config{
		{Scenario: ScenarioP2P, Addr: "127.0.0.1:1", SubAddrs: []string{"192.0.2.1:1883"}},
		{Scenario: ScenarioP2P, Addr: "127.0.0.1:1", PubAddrs: []string{"127.0.0.1:2", "[2001:db8::1]:1883"}},
	} {
		if _, err := Run(context.Background(), cfg, nil); err == nil || !strings.Contains(err.Error(), "allow-remote") {
			t.Errorf("Run(pubs %v, subs %v) = %v, want a refusal naming --allow-remote", cfg.PubAddrs, cfg.SubAddrs, err)
		}
	}
}

func TestClusterPlacement(t *testing.T) {
	nodes := []string{"n1", "n2", "n3"}
	for _, sc := range clusterScenarios() {
		cfg := sc.config(false)
		sc.place(&cfg, nodes)
		if len(cfg.PubAddrs) != 1 || cfg.PubAddrs[0] != "n1" {
			t.Errorf("%s: publishers on %v", sc.Name, cfg.PubAddrs)
		}
		for _, a := range cfg.SubAddrs {
			if (a == "n1") != strings.HasSuffix(sc.Name, "-local") {
				t.Errorf("%s: subscribers on %v", sc.Name, cfg.SubAddrs)
			}
		}
		single := sc.config(false)
		sc.place(&single, nodes[:1])
		if !equalStrings(single.PubAddrs, []string{"n1"}) || !equalStrings(single.SubAddrs, []string{"n1"}) {
			t.Errorf("%s on one node: publishers %v, subscribers %v", sc.Name, single.PubAddrs, single.SubAddrs)
		}
	}
	// The routes the publishers' node must know before publishing.
	p2p := Config{Scenario: ScenarioP2P, Pubs: 10, Topic: "bench/x/%i", PubAddrs: []string{"n1"}, SubAddrs: []string{"n2"}}
	if w := wantRoutes(p2p); len(w) != 1 || w["n2"] != 10 {
		t.Errorf("p2p routes %v, want n2: 10", w)
	}
	fan := Config{Scenario: ScenarioFanOut, Subs: 100, Topic: "bench/f", PubAddrs: []string{"n1"}, SubAddrs: []string{"n2", "n3"}}
	if w := wantRoutes(fan); len(w) != 2 || w["n2"] != 1 || w["n3"] != 1 {
		t.Errorf("fan-out routes %v, want n2: 1, n3: 1", w)
	}
	fan.SubAddrs = []string{"n1"}
	if w := wantRoutes(fan); len(w) != 0 {
		t.Errorf("single-node routes %v, want none", w)
	}
}

func equalStrings(a, b []string) bool {
	return strings.Join(a, "\x00") == strings.Join(b, "\x00")
}

func TestParseMetrics(t *testing.T) {
	text := `# HELP isobar_cluster_link_up 1 while up.
# TYPE isobar_cluster_link_up gauge
isobar_cluster_link_up{peer="n2"} 1
isobar_cluster_link_up{peer="n3"} 0
isobar_cluster_members{state="alive"} 3
isobar_cluster_routes{peer="n2"} 10
isobar_up 1e+00
garbage
`
	m, err := parseMetrics(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	if m[`isobar_cluster_members{state="alive"}`] != 3 || m[`isobar_cluster_routes{peer="n2"}`] != 10 || m["isobar_up"] != 1 {
		t.Fatalf("parsed %v", m)
	}
	if s := sumMetric(m, "isobar_cluster_link_up"); s != 1 {
		t.Fatalf("links up %v, want 1", s)
	}
	if s := sumMetric(m, "isobar_cluster_link"); s != 0 {
		t.Fatalf("a name prefix summed %v", s)
	}
}

func TestSummarizeCluster(t *testing.T) {
	r := func(rate float64, p99 int64) *ClusterRun {
		return &ClusterRun{Result: &Result{RecvRate: rate, Expected: 10, Latency: Latency{Count: 1, P99: p99}}}
	}
	runs := map[string][]*ClusterRun{
		topoSingle:  {r(100, 10), r(300, 30), r(200, 20)},
		topoCluster: {r(60, 50), r(40, 40), r(50, 60)},
	}
	ms := summarizeCluster([]metricDef{mRecvRate, mP99, mLost}, runs, [][2]string{{topoCluster, topoSingle}})
	if ms[0].Values[topoSingle] != 200 || ms[0].Values[topoCluster] != 50 || ms[0].Ratio != 0.25 {
		t.Errorf("received %+v", ms[0])
	}
	if ms[1].Ratio != 2.5 {
		t.Errorf("p99 %+v", ms[1])
	}
	if ms[2].Ratio != 0 || ms[2].Values[topoSingle] != 0 {
		t.Errorf("lost %+v", ms[2])
	}
	rep := &ClusterReport{Scenarios: []ClusterOutcome{
		{Name: "p2p-qos1", Metrics: ms},
		{Name: "latency-5k", Metrics: ms},
	}}
	g := evalGoals(rep, clusterGoals)
	if len(g) != 2 || g[0].Met || g[0].Measured != 0.25 || g[1].Met || g[1].Measured != 2.5 {
		t.Errorf("goals %+v", g)
	}
	_, rows := clusterRows(&ClusterReport{Nodes: 3, Scenarios: []ClusterOutcome{{Name: "x", Label: "X", Metrics: ms}}})
	if rows[0][4] != "0.25 (worse)" || rows[1][4] != "2.50 (worse)" || rows[2][4] != "–" {
		t.Errorf("rows %v", rows)
	}
	// A ratio that rounds to 1.00 is neither better nor worse.
	even := summarizeCluster([]metricDef{mSendRate}, map[string][]*ClusterRun{
		topoSingle:  {{Result: &Result{SendRate: 5000}}},
		topoCluster: {{Result: &Result{SendRate: 4999.9}}},
	}, nil)
	if _, rows := clusterRows(&ClusterReport{Nodes: 3, Scenarios: []ClusterOutcome{{Name: "x", Metrics: even}}}); rows[0][4] != "1.00" {
		t.Errorf("ratio %q, want 1.00", rows[0][4])
	}
}

func TestClusterFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--nodes", "1"},
		{"--repeat", "0"},
		{"--store", "disk"},
		{"extra"},
	} {
		var out, errb bytes.Buffer
		if code := clusterMain(append([]string{"--isobar", "/nonexistent"}, args...), &out, &errb); code != 2 || errb.Len() == 0 {
			t.Errorf("cluster %v: exit %d, stderr %q", args, code, errb.String())
		}
	}
}
