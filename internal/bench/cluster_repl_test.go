package bench

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/isobar-mq/isobar/internal/config"
)

// TestSelectClusterSet: --scenarios picks the default set, the repl set
// (by its group name or its scenarios' names), and refuses a mix or an
// unknown name.
func TestSelectClusterSet(t *testing.T) {
	o := clusterOpts{nodes: 3, store: "memory"}
	for _, tc := range []struct {
		only      string
		set       string
		scenarios int
		variants  int
		err       bool
	}{
		{"", "", len(clusterScenarios()), 2, false},
		{"p2p-qos1,latency-5k", "", 2, 2, false},
		{"repl", replScenarioGroup, 2, 5, false},
		{"latency-5k-persistent", replScenarioGroup, 1, 5, false},
		{"p2p-qos1,repl", "", 0, 0, true},
		{"p2p-qos1-persistent,latency-5k", "", 0, 0, true},
		{"nope", "", 0, 0, true},
	} {
		o.only = tc.only
		set, err := selectClusterSet(o)
		if tc.err {
			if err == nil {
				t.Errorf("%q: no error", tc.only)
			}
			continue
		}
		if err != nil || set.name != tc.set || len(set.scenarios) != tc.scenarios || len(set.variants) != tc.variants {
			t.Errorf("%q: set %q, %d scenarios, %d variants, err %v; want %q, %d, %d", tc.only, set.name, len(set.scenarios), len(set.variants), err, tc.set, tc.scenarios, tc.variants)
		}
	}
}

// TestReplNodeConfigs: every node configuration of the repl set is valid
// for isobar (config.Parse, strict) and has the store, replicas and ack of
// its variant.
func TestReplNodeConfigs(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "cluster.secret")
	if err := os.WriteFile(secret, bytes.Repeat([]byte("k"), 64), 0o600); err != nil {
		t.Fatal(err)
	}
	o := clusterOpts{nodes: 3, limits: DefaultCompareLimits}
	binds := []string{"127.0.0.1:17001", "127.0.0.1:17002", "127.0.0.1:17003"}
	for _, v := range replSet(o).variants {
		for i := range v.Nodes {
			text := nodeConfig(o, v, dir, secret, i, "127.0.0.1:18001", "127.0.0.1:18002", binds)
			cfg, err := config.Parse([]byte(text))
			if err != nil {
				t.Fatalf("%s n%d: %v\n%s", v.Name, i+1, err, text)
			}
			if cfg.Store.Mode != v.Store || (v.Store == "pebble" && cfg.Store.Sync != "always") {
				t.Errorf("%s: store %s sync %s", v.Name, cfg.Store.Mode, cfg.Store.Sync)
			}
			if v.Nodes == 1 {
				if cfg.Cluster != nil {
					t.Errorf("%s: a cluster section on a single node", v.Name)
				}
				continue
			}
			if cfg.Cluster == nil {
				t.Fatalf("%s: no cluster section\n%s", v.Name, text)
			}
			wantAck := v.Ack
			if wantAck == "" {
				wantAck = replAckRepl
			}
			if cfg.Cluster.ReplicaCount() != *v.Replicas || cfg.Cluster.Ack != wantAck {
				t.Errorf("%s: replicas %d ack %q, want %d %q", v.Name, cfg.Cluster.ReplicaCount(), cfg.Cluster.Ack, *v.Replicas, wantAck)
			}
		}
	}
}

// TestReplWant: what a persistent p2p scenario adds per variant — copies
// on min(replicas, nodes-1) other nodes, standby subscriptions only with
// ack replicated, nothing without replication or persistent sessions.
func TestReplWant(t *testing.T) {
	cfg := Config{Scenario: ScenarioP2P, QoS: 1, Pubs: 10, PersistentSubs: true, Topic: "bench/x/%i",
		PubAddrs: []string{"a:1"}, SubAddrs: []string{"b:1"}, Addr: "a:1"}
	one, zero := intp(1), intp(0)
	for _, tc := range []struct {
		v               clusterVariant
		copies, standby int
	}{
		{clusterVariant{Nodes: 3, Replicas: one, Ack: replAckRepl}, 10, 10},
		{clusterVariant{Nodes: 3}, 10, 10}, // the defaults: replicas 1, ack replicated
		{clusterVariant{Nodes: 3, Replicas: one, Ack: replAckLocal}, 10, 0},
		{clusterVariant{Nodes: 3, Replicas: zero}, 0, 0},
		{clusterVariant{Nodes: 2, Replicas: intp(3)}, 10, 10},
		{clusterVariant{Nodes: 3, Replicas: intp(2)}, 20, 20},
	} {
		routes, copies, standby := replWant(cfg, tc.v)
		if routes["b:1"] != 10 || len(routes) != 1 || copies != tc.copies || standby != tc.standby {
			t.Errorf("%+v: routes %v copies %d standby %d, want 10 from b:1, %d, %d", tc.v, routes, copies, standby, tc.copies, tc.standby)
		}
	}
	c := cfg
	c.PersistentSubs = false
	if _, copies, standby := replWant(c, clusterVariant{Nodes: 3}); copies != 0 || standby != 0 {
		t.Errorf("clean sessions: copies %d standby %d", copies, standby)
	}
}

// TestReplRows: the repl table has a column per configuration and per
// ratio, and the goal is evaluated on r1-repl/pebble.
func TestReplRows(t *testing.T) {
	set := replSet(clusterOpts{nodes: 3})
	r := func(rate float64) []*ClusterRun {
		return []*ClusterRun{{Result: &Result{RecvRate: rate, Expected: 1}}}
	}
	runs := map[string][]*ClusterRun{replMemory: r(600), replPebble: r(100), replR1Repl: r(60), replR1Local: r(80), replR0: r(75)}
	ms := summarizeCluster([]metricDef{mRecvRate}, runs, set.ratios)
	rep := &ClusterReport{Set: set.name, Variants: set.variants, Ratios: set.ratios, Nodes: 3,
		Scenarios: []ClusterOutcome{{Name: "p2p-qos1-persistent", Label: "X", Metrics: ms}}}
	rep.Goals = evalGoals(rep, set.goals)
	header, rows := clusterRows(rep)
	want := []string{"scenario", "figure", "single node, memory", "single node, pebble", "3 nodes, replicas 1, ack replicated",
		"3 nodes, replicas 1, ack local", "3 nodes, replicas 0", "r1-repl/pebble", "r1-local/pebble", "r0/pebble", "r1-repl/r0", "pebble/memory"}
	if strings.Join(header, "|") != strings.Join(want, "|") {
		t.Errorf("header %q", header)
	}
	if got := strings.Join(rows[0][7:], "|"); got != "0.60 (worse)|0.80 (worse)|0.75 (worse)|0.80 (worse)|0.17 (worse)" {
		t.Errorf("ratios %q", got)
	}
	if len(rep.Goals) != 1 || !rep.Goals[0].Met || rep.Goals[0].Measured != 0.6 || !strings.Contains(rep.Goals[0].Want, "pebble (r1-repl)") {
		t.Errorf("goals %+v", rep.Goals)
	}
	var md bytes.Buffer
	writeClusterMarkdown(&md, rep)
	for _, s := range []string{"| r1-repl/pebble |", "r1-local: 3 nodes, store pebble, sync always, cluster.replicas 1, cluster.ack local", "0.60: met"} {
		if !strings.Contains(md.String(), s) {
			t.Errorf("markdown has no %q:\n%s", s, md.String())
		}
	}
}

// TestClusterReplQuick builds isobar and runs `isobar-bench cluster
// --scenarios repl --quick`: every scenario on the five configurations,
// with figures on each, the replicas held where replication is on and none
// where it is off, and the goal evaluated.
func TestClusterReplQuick(t *testing.T) {
	if testing.Short() {
		t.Skip("builds isobar and starts two single nodes and three 3-node clusters")
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
	code := Main([]string{"cluster", "--isobar", bin, "--quick", "--repeat", "1", "--scenarios", "repl", "--out", outDir}, &out, &errb)
	t.Logf("exit %d after %s\n%s\n%s", code, time.Since(start).Round(time.Millisecond), out.String(), errb.String())
	if code != 0 && code != 1 {
		t.Fatalf("exit %d", code)
	}
	b, err := os.ReadFile(filepath.Join(outDir, "results.json"))
	if err != nil {
		t.Fatal(err)
	}
	var rep ClusterReport
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	set := replSet(clusterOpts{nodes: 3})
	if rep.Set != replScenarioGroup || len(rep.Variants) != len(set.variants) || len(rep.Scenarios) != len(set.scenarios) || len(rep.Goals) != 1 {
		t.Fatalf("report: set %q, %d variants, %d scenarios, %d goals", rep.Set, len(rep.Variants), len(rep.Scenarios), len(rep.Goals))
	}
	for _, st := range rep.Starts {
		if st.Error != "" {
			t.Fatalf("%s did not start: %s", st.Topology, st.Error)
		}
	}
	if !strings.Contains(out.String(), "r1-repl/pebble") {
		t.Errorf("table has no r1-repl/pebble column")
	}
	for _, sc := range rep.Scenarios {
		for _, v := range set.variants {
			runs := sc.Runs[v.Name]
			if len(runs) != 1 {
				t.Fatalf("%s: %d runs on %s, errors %v", sc.Name, len(runs), v.Name, sc.Errors[v.Name])
			}
			r := runs[0]
			if r.Result.Received == 0 || r.Result.Latency.Count == 0 {
				t.Errorf("%s on %s: received %d, %d latency samples", sc.Name, v.Name, r.Result.Received, r.Result.Latency.Count)
			}
			if r.RoutesNote != "" {
				t.Errorf("%s on %s: %s", sc.Name, v.Name, r.RoutesNote)
			}
			if v.Nodes == 1 {
				continue
			}
			// Replicas are kept only for persistent sessions.
			copies := 0.0
			for _, c := range r.NodeCounters {
				copies += c["isobar_cluster_replica_sessions"]
			}
			if (*v.Replicas > 0) != (copies > 0) {
				t.Errorf("%s on %s: %v replica copies", sc.Name, v.Name, copies)
			}
		}
		for _, m := range sc.Metrics {
			if m.Name == mLost.Name || m.Name == mCPU.Name {
				continue
			}
			for _, r := range set.ratios {
				if m.Ratios[ratioKey(r[0], r[1])] <= 0 {
					t.Errorf("%s %s: no ratio %s/%s: %v", sc.Name, m.Name, r[0], r[1], m.Values)
				}
			}
		}
	}
}
