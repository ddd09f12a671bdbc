package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"
)

// The cluster comparison (isobar-bench cluster, driven by
// scripts/bench-cluster) runs the same scenarios against one Isobar node and
// against a cluster of --nodes Isobar processes on loopback, one topology at
// a time (never both at once), and prints each topology's figures with the
// ratio cluster/single. On the cluster the clients are placed so that every
// message crosses a node link: publishers on n1, subscribers on the other
// nodes; on the single node every client is on it.

// Topology names (keys of the runs and figures).
const (
	topoSingle  = "single"
	topoCluster = "cluster"
)

// clusterVariant is one broker configuration of a comparison: a single node
// or a cluster, with its store and replication settings. Its Name keys the
// runs and figures.
type clusterVariant struct {
	Name  string `json:"name"`
	Label string `json:"label"` // column header
	Short string `json:"short"` // in ratio headers
	Nodes int    `json:"nodes"` // 1: a single node, no cluster section
	Store string `json:"store"` // memory or pebble (sync: always)
	// Replicas is cluster.replicas (nil: not set, the default 1).
	Replicas *int `json:"replicas,omitempty"`
	// Ack is cluster.ack ("": not set, the default replicated).
	Ack string `json:"ack,omitempty"`
}

// defaultVariants are the two topologies of the default comparison: one
// node and a cluster of --nodes, every node on --store.
func defaultVariants(o clusterOpts) []clusterVariant {
	return []clusterVariant{
		{Name: topoSingle, Label: "single node", Short: "single", Nodes: 1, Store: o.store},
		{Name: topoCluster, Label: fmt.Sprintf("%d-node cluster", o.nodes), Short: "cluster", Nodes: o.nodes, Store: o.store},
	}
}

// clusterSet is what one run of isobar-bench cluster compares: scenarios
// on variants, the ratio columns (numerator, denominator variant names) and
// the goals checked under the table.
type clusterSet struct {
	name      string
	scenarios []clusterScenario
	variants  []clusterVariant
	ratios    [][2]string
	goals     []clusterGoal
}

// clusterScenario is one row group of the cluster comparison.
type clusterScenario struct {
	Name  string
	Label string
	// Placement says where the clients are on the cluster.
	Placement string
	config    func(quick bool) Config
	// place sets the publishers' and subscribers' addresses given the
	// topology's nodes (one for the single node).
	place   func(cfg *Config, nodes []string)
	metrics []metricDef
}

var (
	mP999 = metricDef{Name: "latency p99.9", Unit: "µs", get: func(r *Result) (float64, bool) {
		return float64(r.Latency.P999), r.Latency.Count > 0
	}}
	mSendRate = metricDef{Name: "sent", Unit: "msg/s", HigherBetter: true, get: func(r *Result) (float64, bool) { return r.SendRate, r.SendRate > 0 }}
)

// crossNode puts the publishers on the first node and the subscribers on the
// second (the same node when there is one).
func crossNode(cfg *Config, nodes []string) {
	cfg.PubAddrs = nodes[:1]
	cfg.SubAddrs = []string{nodes[1%len(nodes)]}
}

// sameNode puts every client on the first node: on the cluster nothing
// crosses a link, which shows what clustering costs local traffic.
func sameNode(cfg *Config, nodes []string) {
	cfg.PubAddrs, cfg.SubAddrs = nodes[:1], nodes[:1]
}

// spreadSubs puts the publishers on the first node and spreads the
// subscribers round robin over the others (all on it when there is one).
func spreadSubs(cfg *Config, nodes []string) {
	cfg.PubAddrs = nodes[:1]
	if len(nodes) == 1 {
		cfg.SubAddrs = nodes
	} else {
		cfg.SubAddrs = nodes[1:]
	}
}

// clusterScenarios lists the scenarios. Each has topics of its own, so that
// the routes a previous scenario's subscribers left behind (withdrawn
// asynchronously) never count as this one's.
func clusterScenarios() []clusterScenario {
	run := func(quick bool, sc, name string, qos int) Config {
		c := Config{
			Scenario: sc,
			QoS:      qos,
			// --quick keeps the smoke test (both topologies, every
			// scenario) well under 30 s.
			Duration: pick(quick, 10*time.Second, 600*time.Millisecond),
			Warmup:   pick(quick, 2*time.Second, 150*time.Millisecond),
			Drain:    pick(quick, 5*time.Second, time.Second),
			Topic:    "bench/" + name,
		}
		if sc == ScenarioP2P {
			c.Topic += "/%i"
		}
		return c
	}
	return []clusterScenario{
		{Name: "p2p-qos1", Label: "p2p QoS 1, 10 pairs, max rate", Placement: "publishers on n1, subscribers on n2",
			config: func(q bool) Config {
				c := run(q, ScenarioP2P, "p2p-qos1", 1)
				c.Pubs = pick(q, 10, 4)
				return c
			}, place: crossNode, metrics: []metricDef{mRecvRate, mCPUMsg, mP99, mLost}},
		{Name: "p2p-qos1-local", Label: "p2p QoS 1, 10 pairs, max rate, all clients on one node", Placement: "every client on n1 (nothing crosses a node link)",
			config: func(q bool) Config {
				c := run(q, ScenarioP2P, "p2p-qos1-local", 1)
				c.Pubs = pick(q, 10, 4)
				return c
			}, place: sameNode, metrics: []metricDef{mRecvRate, mCPUMsg, mP99, mLost}},
		{Name: "fanout100-qos1", Label: "fan-out QoS 1, 1 pub → 100 subs, max rate", Placement: "publisher on n1, subscribers spread over the other nodes",
			config: func(q bool) Config {
				c := run(q, ScenarioFanOut, "fanout100-qos1", 1)
				c.Subs = pick(q, 100, 20)
				return c
			}, place: spreadSubs, metrics: []metricDef{mRecvRate, mCPUMsg, mLost}},
		{Name: "fanout100-qos0", Label: "fan-out QoS 0, 1 pub → 100 subs, max rate", Placement: "publisher on n1, subscribers spread over the other nodes",
			config: func(q bool) Config {
				c := run(q, ScenarioFanOut, "fanout100-qos0", 0)
				c.Subs = pick(q, 100, 20)
				return c
			}, place: spreadSubs, metrics: []metricDef{mRecvRate, mCPUMsg, mLost}},
		{Name: "latency-5k", Label: "p2p QoS 1, 10 pairs, fixed 5k msg/s", Placement: "publishers on n1, subscribers on n2",
			config: func(q bool) Config {
				c := run(q, ScenarioP2P, "latency-5k", 1)
				c.Pubs = pick(q, 10, 4)
				c.Rate = pick(q, 5000.0, 1000.0)
				return c
			}, place: crossNode, metrics: []metricDef{mSendRate, mP50, mP99, mP999, mCPU, mLost}},
	}
}

// clusterGoal is a target of the clustering issue for one figure's ratio
// Num/Den (variant names; empty: cluster/single).
type clusterGoal struct {
	Scenario string  `json:"scenario"`
	Metric   string  `json:"metric"`
	AtLeast  bool    `json:"at_least"` // ratio >= Ratio (else <=)
	Ratio    float64 `json:"ratio"`
	Num      string  `json:"num,omitempty"`
	Den      string  `json:"den,omitempty"`
}

// ratioKey names the ratio num/den in ClusterMetric.Ratios.
func ratioKey(num, den string) string { return num + "/" + den }

// clusterGoals: cross-node throughput at least half a single node's, p99 at
// a fixed rate at most twice.
var clusterGoals = []clusterGoal{
	{Scenario: "p2p-qos1", Metric: mRecvRate.Name, AtLeast: true, Ratio: 0.5},
	{Scenario: "latency-5k", Metric: mP99.Name, Ratio: 2},
}

// ClusterReport is the JSON document the cluster comparison writes.
type ClusterReport struct {
	Date    string            `json:"date"`
	Machine map[string]string `json:"machine"`
	// Set is the scenario set: "" for the default one, "repl" for
	// replicated durable sessions (cluster_repl.go).
	Set      string           `json:"set,omitempty"`
	Variants []clusterVariant `json:"variants"`
	// Ratios are the ratio columns, numerator and denominator variant
	// names.
	Ratios    [][2]string      `json:"ratios"`
	Nodes     int              `json:"nodes"`
	Store     string           `json:"store"`
	Limits    CompareLimits    `json:"limits"`
	Quick     bool             `json:"quick"`
	Repeat    int              `json:"repeat"`
	Scenarios []ClusterOutcome `json:"scenarios"`
	Goals     []ClusterGoalRes `json:"goals"`
	// Starts are the topology starts, in order (formation times, errors).
	Starts []ClusterStart `json:"starts"`
}

// ClusterStart is one start of a topology.
type ClusterStart struct {
	Topology string `json:"topology"`
	Repeat   int    `json:"repeat"`
	// FormedS is the time from starting the processes until every node
	// saw every other alive with its links up (single node: listening).
	FormedS float64 `json:"formed_s"`
	Error   string  `json:"error,omitempty"`
}

// ClusterGoalRes is a goal with the ratio measured.
type ClusterGoalRes struct {
	clusterGoal
	Want     string  `json:"want"`
	Measured float64 `json:"measured"` // 0: not measured
	Met      bool    `json:"met"`
}

// ClusterOutcome is one scenario's runs on both topologies and the
// medians.
type ClusterOutcome struct {
	Name      string                   `json:"name"`
	Label     string                   `json:"label"`
	Placement string                   `json:"placement"`
	Runs      map[string][]*ClusterRun `json:"runs"`
	Errors    map[string][]string      `json:"errors,omitempty"`
	Metrics   []ClusterMetric          `json:"metrics"`
}

// ClusterRun is one run of a scenario on one topology.
type ClusterRun struct {
	Result *Result `json:"result"`
	// RoutesS is how long the publishers' node took, after the
	// subscribers' SUBACKs, to know their filters (the cluster only).
	RoutesS float64 `json:"routes_s,omitempty"`
	// RoutesNote says when the routes were not all seen in time.
	RoutesNote string `json:"routes_note,omitempty"`
	// NodeCPU is each node's CPU seconds in the measurement window.
	NodeCPU map[string]float64 `json:"node_cpu_s"`
	// NodeCounters are each node's forwarding and drop counters after
	// the run (cumulative since the topology started).
	NodeCounters map[string]map[string]float64 `json:"node_counters,omitempty"`
}

// ClusterMetric is one figure on both topologies.
type ClusterMetric struct {
	metricDef
	Values map[string]float64 `json:"values"`
	Ratio  float64            `json:"ratio"` // cluster / single, 0 when either is missing or 0
	// Ratios are the set's ratio columns by ratioKey (0 or absent when
	// either figure is missing or 0).
	Ratios map[string]float64 `json:"ratios,omitempty"`
}

type clusterOpts struct {
	isobar      string
	nodes       int
	quick       bool
	repeat      int
	out         string
	store       string
	only        string
	limits      CompareLimits
	machine     []string
	formTimeout time.Duration
}

const clusterUsage = `isobar-bench cluster: the same scenarios on one Isobar node and on a
cluster of --nodes Isobar processes on loopback (one topology at a time),
with the ratio cluster/single. See scripts/bench-cluster and
docs/benchmarks.md.

Flags:
`

func clusterMain(args []string, stdout, stderr io.Writer) int {
	o := clusterOpts{limits: DefaultCompareLimits}
	fs := flag.NewFlagSet("isobar-bench cluster", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), clusterUsage)
		fs.PrintDefaults()
	}
	fs.StringVar(&o.isobar, "isobar", "", "isobar binary (default: isobar next to this program, else on PATH)")
	fs.IntVar(&o.nodes, "nodes", 3, "nodes of the cluster (at least 2)")
	fs.BoolVar(&o.quick, "quick", false, "short runs with small counts (smoke test)")
	fs.IntVar(&o.repeat, "repeat", 3, "runs per scenario and topology; the median of each figure is reported")
	fs.StringVar(&o.out, "out", "", "directory for results.json, results.md, node configurations and logs (default: a temporary one, removed)")
	fs.StringVar(&o.store, "store", "memory", "store of every node: memory or pebble (sync: always, on an empty data directory); the repl set sets its own")
	fs.StringVar(&o.only, "scenarios", "", "comma-separated scenario names (default all: p2p-qos1, p2p-qos1-local, fanout100-qos1, fanout100-qos0, latency-5k), or \"repl\" for replicated durable sessions (p2p-qos1-persistent, latency-5k-persistent on five configurations)")
	fs.DurationVar(&o.formTimeout, "form-timeout", 30*time.Second, "how long to wait for the cluster to form")
	fs.IntVar(&o.limits.Inflight, "max-inflight", o.limits.Inflight, "broker in-flight window per subscriber")
	fs.IntVar(&o.limits.Queued, "max-queued", o.limits.Queued, "broker queue per subscriber beyond the window")
	fs.IntVar(&o.limits.ReceiveMax, "receive-maximum", o.limits.ReceiveMax, "broker inbound window per publisher (also the generator's window)")
	var info multiFlag
	fs.Var(&info, "machine", "`key=value` recorded with the results (repeatable)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	o.machine = info
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "cluster: unexpected arguments: %s\n", strings.Join(fs.Args(), " "))
		return 2
	}
	switch {
	case o.nodes < 2 || o.nodes > 16:
		fmt.Fprintln(stderr, "cluster: --nodes must be in 2..16")
		return 2
	case o.repeat < 1:
		fmt.Fprintln(stderr, "cluster: --repeat must be at least 1")
		return 2
	case o.store != "memory" && o.store != "pebble":
		fmt.Fprintf(stderr, "cluster: --store %q: want memory or pebble\n", o.store)
		return 2
	}
	if o.isobar == "" {
		o.isobar = findIsobar()
		if o.isobar == "" {
			fmt.Fprintln(stderr, "cluster: no isobar binary next to this program or on PATH; pass --isobar")
			return 2
		}
	}
	ctx, stop := signalContext()
	defer stop()
	rep, err := runClusterCompare(ctx, o, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "cluster:", err)
		return 2
	}
	writeClusterTable(stdout, rep)
	if o.out != "" {
		b, err := json.MarshalIndent(rep, "", "  ")
		if err == nil {
			err = os.WriteFile(filepath.Join(o.out, "results.json"), append(b, '\n'), 0o644)
		}
		if err == nil {
			var f *os.File
			if f, err = os.Create(filepath.Join(o.out, "results.md")); err == nil {
				writeClusterMarkdown(f, rep)
				err = f.Close()
			}
		}
		if err != nil {
			fmt.Fprintln(stderr, "cluster:", err)
			return 2
		}
	}
	for _, sc := range rep.Scenarios {
		if len(sc.Errors) > 0 {
			return 1
		}
	}
	return 0
}

// findIsobar looks for the isobar binary next to this program, then on PATH.
func findIsobar() string {
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), "isobar")
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p
		}
	}
	if p, err := exec.LookPath("isobar"); err == nil {
		return p
	}
	return ""
}

// selectClusterSet picks the scenario set and the scenarios --scenarios
// names: the default set, or the replicated-sessions one ("repl", or only
// its scenarios' names); the two do not mix, their configurations differ.
func selectClusterSet(o clusterOpts) (clusterSet, error) {
	set := clusterSet{scenarios: clusterScenarios(), variants: defaultVariants(o),
		ratios: [][2]string{{topoCluster, topoSingle}}, goals: clusterGoals}
	names := strings.Split(o.only, ",")
	if o.only == "" {
		return set, nil
	}
	repl := replSet(o)
	isRepl := func(n string) bool {
		return n == replScenarioGroup || slices.ContainsFunc(repl.scenarios, func(sc clusterScenario) bool { return sc.Name == n })
	}
	nRepl := 0
	for _, n := range names {
		if isRepl(n) {
			nRepl++
		}
	}
	switch {
	case nRepl == len(names):
		set = repl
	case nRepl > 0:
		return set, fmt.Errorf("--scenarios %q: the %s scenarios run on their own configurations and cannot be mixed with the others", o.only, replScenarioGroup)
	}
	var scs []clusterScenario
	for _, sc := range set.scenarios {
		if slices.Contains(names, sc.Name) || (set.name != "" && slices.Contains(names, set.name)) {
			scs = append(scs, sc)
		}
	}
	if len(scs) == 0 {
		return set, fmt.Errorf("no scenario matches %q", o.only)
	}
	set.scenarios = scs
	return set, nil
}

func runClusterCompare(ctx context.Context, o clusterOpts, progress io.Writer) (*ClusterReport, error) {
	raiseFileLimit()
	set, err := selectClusterSet(o)
	if err != nil {
		return nil, err
	}
	scenarios := set.scenarios
	dir := o.out
	if dir == "" {
		d, err := os.MkdirTemp("", "isobar-bench-cluster-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(d)
		dir = d
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	secret := filepath.Join(dir, "cluster.secret")
	_ = os.Remove(secret) // keygen does not overwrite
	if out, err := exec.CommandContext(ctx, o.isobar, "keygen", "-o", secret).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("isobar keygen: %v: %s", err, strings.TrimSpace(string(out)))
	}
	rep := &ClusterReport{
		Date:     time.Now().UTC().Format(time.RFC3339),
		Machine:  machineInfo(o.machine),
		Set:      set.name,
		Variants: set.variants,
		Ratios:   set.ratios,
		Nodes:    o.nodes,
		Store:    o.store,
		Limits:   o.limits,
		Quick:    o.quick,
		Repeat:   o.repeat,
	}
	if set.name != "" {
		rep.Store = "per configuration"
	}
	outs := make([]ClusterOutcome, len(scenarios))
	for i, sc := range scenarios {
		outs[i] = ClusterOutcome{Name: sc.Name, Label: sc.Label, Placement: sc.Placement,
			Runs: map[string][]*ClusterRun{}, Errors: map[string][]string{}}
	}
	topos := set.variants
	total, n := o.repeat*len(topos)*len(scenarios), 0
	for rep0 := range o.repeat {
		// Rotate which topology runs first.
		for k := range topos {
			v := topos[(k+rep0)%len(topos)]
			topo, count := v.Name, v.Nodes
			t0 := time.Now()
			fmt.Fprintf(progress, "cluster: starting %s (%d node(s)), repeat %d\n", topo, count, rep0+1)
			tp, err := startTopology(ctx, o, v, dir, secret, fmt.Sprintf("%s-r%d", topo, rep0+1))
			st := ClusterStart{Topology: topo, Repeat: rep0 + 1, FormedS: round3(time.Since(t0).Seconds())}
			if err != nil {
				st.Error = err.Error()
				rep.Starts = append(rep.Starts, st)
				fmt.Fprintf(progress, "cluster: %s did not start: %v\n", topo, err)
				for i := range outs {
					outs[i].Errors[topo] = append(outs[i].Errors[topo], fmt.Sprintf("repeat %d: %v", rep0+1, err))
					n++
				}
				if ctx.Err() != nil {
					return nil, ctx.Err()
				}
				continue
			}
			rep.Starts = append(rep.Starts, st)
			fmt.Fprintf(progress, "cluster: %s ready after %.1fs\n", topo, st.FormedS)
			for i, sc := range scenarios {
				n++
				if ctx.Err() != nil {
					tp.stop()
					return nil, ctx.Err()
				}
				cfg := sc.config(o.quick)
				cfg.Inflight = o.limits.ReceiveMax
				run, err := tp.run(ctx, sc, v, cfg)
				if err != nil {
					outs[i].Errors[topo] = append(outs[i].Errors[topo], fmt.Sprintf("repeat %d: %v", rep0+1, err))
					fmt.Fprintf(progress, "[%d/%d] %-15s %-8s error: %v\n", n, total, sc.Name, topo, err)
					continue
				}
				outs[i].Runs[topo] = append(outs[i].Runs[topo], run)
				res := run.Result
				// At full speed a broker drops QoS 1 messages beyond a
				// subscriber's queue (the lost figure shows it); at a
				// fixed rate nothing may be lost.
				if hasFault(res) || (res.QoS > 0 && res.Lost > 0 && cfg.Rate > 0) {
					outs[i].Errors[topo] = append(outs[i].Errors[topo], fmt.Sprintf("repeat %d: %s", rep0+1, clusterFaults(res)))
				}
				note := ""
				if run.RoutesNote != "" {
					note = " (" + run.RoutesNote + ")"
				}
				fmt.Fprintf(progress, "[%d/%d] %-15s %-8s %s%s\n", n, total, sc.Name, topo, oneLineCluster(res), note)
			}
			tp.stop()
		}
	}
	for i, sc := range scenarios {
		if len(outs[i].Errors) == 0 {
			outs[i].Errors = nil
		}
		outs[i].Metrics = summarizeCluster(sc.metrics, outs[i].Runs, set.ratios)
	}
	rep.Scenarios = outs
	rep.Goals = evalGoals(rep, set.goals)
	return rep, nil
}

func oneLineCluster(r *Result) string {
	return fmt.Sprintf("sent %.0f msg/s, received %.0f msg/s, lost %d/%d, p50 %s p99 %s p99.9 %s, CPU %.0f%% %.2f µs/msg",
		r.SendRate, r.RecvRate, r.Lost, r.Expected, us(r.Latency.P50), us(r.Latency.P99), us(r.Latency.P999),
		bp(r).CPUPercent, bp(r).CPUPerMsgUs)
}

// clusterFaults is faultSummary with QoS 1/2 loss included (at a fixed rate
// below the brokers' capacity nothing acknowledged may be lost).
func clusterFaults(r *Result) string {
	s := faultSummary(r)
	if r.QoS > 0 && r.Lost > 0 {
		l := fmt.Sprintf("%d of %d QoS %d messages lost", r.Lost, r.Expected, r.QoS)
		if s == "" {
			return l
		}
		return l + "; " + s
	}
	return s
}

// summarizeCluster takes the median of every figure per topology and the
// ratio cluster/single.
func summarizeCluster(defs []metricDef, runs map[string][]*ClusterRun, ratios [][2]string) []ClusterMetric {
	var out []ClusterMetric
	for _, d := range defs {
		m := ClusterMetric{metricDef: d, Values: map[string]float64{}}
		for topo, rs := range runs {
			var vals []float64
			for _, r := range rs {
				if v, ok := d.get(r.Result); ok {
					vals = append(vals, v)
				} else if d.Name == mLost.Name {
					vals = append(vals, 0)
				}
			}
			if len(vals) > 0 {
				m.Values[topo] = median(vals)
			}
		}
		if s, c := m.Values[topoSingle], m.Values[topoCluster]; s != 0 && c != 0 {
			m.Ratio = c / s
		}
		for _, r := range ratios {
			if a, b := m.Values[r[0]], m.Values[r[1]]; a != 0 && b != 0 {
				if m.Ratios == nil {
					m.Ratios = map[string]float64{}
				}
				m.Ratios[ratioKey(r[0], r[1])] = a / b
			}
		}
		out = append(out, m)
	}
	return out
}

func evalGoals(rep *ClusterReport, goals []clusterGoal) []ClusterGoalRes {
	var out []ClusterGoalRes
	for _, g := range goals {
		r := ClusterGoalRes{clusterGoal: g}
		num, den := g.Num, g.Den
		if num == "" {
			num, den = topoCluster, topoSingle
		}
		of := "single"
		if g.Num != "" {
			of = variantShort(rep.Variants, g.Den) + " (" + variantShort(rep.Variants, g.Num) + ")"
		}
		if g.AtLeast {
			r.Want = fmt.Sprintf("≥ %.2g× %s", g.Ratio, of)
		} else {
			r.Want = fmt.Sprintf("≤ %.2g× %s", g.Ratio, of)
		}
		for _, sc := range rep.Scenarios {
			if sc.Name != g.Scenario {
				continue
			}
			for _, m := range sc.Metrics {
				if ratio := m.Ratios[ratioKey(num, den)]; m.Name == g.Metric && ratio > 0 {
					r.Measured = ratio
					r.Met = (g.AtLeast && ratio >= g.Ratio) || (!g.AtLeast && ratio <= g.Ratio)
				}
			}
		}
		if r.Measured > 0 || slices.ContainsFunc(rep.Scenarios, func(s ClusterOutcome) bool { return s.Name == g.Scenario }) {
			out = append(out, r)
		}
	}
	return out
}

// variantShort is the short name of the variant called name (name itself
// when there is none).
func variantShort(vs []clusterVariant, name string) string {
	for _, v := range vs {
		if v.Name == name && v.Short != "" {
			return v.Short
		}
	}
	return name
}

// topology is a running single node or cluster.
type topology struct {
	name  string
	nodes []*benchNode
	dir   string
}

// benchNode is one isobar process.
type benchNode struct {
	name     string
	mqtt     string // host:port
	http     string // host:port
	logPath  string
	cmd      *exec.Cmd
	exited   chan struct{}
	waitErr  error
	stopOnce sync.Once
}

func (n *benchNode) alive() error {
	select {
	case <-n.exited:
		err := n.waitErr
		if err == nil {
			err = errors.New("exit status 0")
		}
		return fmt.Errorf("node %s exited: %v (log: %s)", n.name, err, tail(n.logPath))
	default:
		return nil
	}
}

func (n *benchNode) stop() {
	n.stopOnce.Do(func() {
		select {
		case <-n.exited:
			return
		default:
		}
		_ = n.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-n.exited:
		case <-time.After(15 * time.Second):
			_ = n.cmd.Process.Kill()
			<-n.exited
		}
	})
}

// stop ends every node (all at once: a cluster node's graceful stop hands
// its sessions over to the others, which stop too; drain_timeout bounds it).
func (t *topology) stop() {
	var wg sync.WaitGroup
	for _, n := range t.nodes {
		wg.Add(1)
		go func() { defer wg.Done(); n.stop() }()
	}
	wg.Wait()
}

// nodeConfig is the configuration of node i (0-based) of variant v: the
// limits of the comparison (see compare.go), HTTP on its own loopback port
// for the cluster metrics, v's store, and with more than one node a cluster
// section naming every node as a seed (with v's replicas and ack when set).
func nodeConfig(o clusterOpts, v clusterVariant, dir, secret string, i int, mqtt, http string, binds []string) string {
	count := v.Nodes
	data := filepath.Join(dir, fmt.Sprintf("n%d-data", i+1))
	store := fmt.Sprintf("{mode: memory, data_dir: %q}", data)
	if v.Store == "pebble" {
		store = fmt.Sprintf("{mode: pebble, sync: always, data_dir: %q}", data)
	}
	conf := fmt.Sprintf(`# generated by isobar-bench cluster
node_name: n%d
listeners:
  - {name: mqtt, protocol: mqtt, address: %q}
log: {level: warn}
store: %s
http: {address: %q}
mqtt:
  max_inflight: %d
  receive_maximum: %d
  max_queued_messages: %d
`, i+1, mqtt, store, http, o.limits.Inflight, o.limits.ReceiveMax, o.limits.Queued)
	if count > 1 {
		var seeds []string
		for _, b := range binds {
			seeds = append(seeds, strconv.Quote(b))
		}
		// A short drain keeps the stop between topologies bounded.
		conf += fmt.Sprintf(`cluster:
  bind: %q
  seeds: [%s]
  secret_file: %q
  drain_timeout: 3s
`, binds[i], strings.Join(seeds, ", "), secret)
		if v.Replicas != nil {
			conf += fmt.Sprintf("  replicas: %d\n", *v.Replicas)
		}
		if v.Ack != "" {
			conf += fmt.Sprintf("  ack: %s\n", v.Ack)
		}
	}
	return conf
}

// startTopology starts v.Nodes isobar processes (1: a single node, no
// cluster section) and waits until they listen and, for a cluster, until
// every node sees every other alive with its outbound link up.
func startTopology(ctx context.Context, o clusterOpts, v clusterVariant, dir, secret, name string) (*topology, error) {
	count := v.Nodes
	ports, err := freePorts(3 * count)
	if err != nil {
		return nil, err
	}
	var binds []string
	for i := range count {
		binds = append(binds, fmt.Sprintf("127.0.0.1:%d", ports[3*i+2]))
	}
	t := &topology{name: name, dir: dir}
	for i := range count {
		n := &benchNode{
			name:    fmt.Sprintf("n%d", i+1),
			mqtt:    fmt.Sprintf("127.0.0.1:%d", ports[3*i]),
			http:    fmt.Sprintf("127.0.0.1:%d", ports[3*i+1]),
			logPath: filepath.Join(dir, fmt.Sprintf("%s-n%d.log", name, i+1)),
			exited:  make(chan struct{}),
		}
		data := filepath.Join(dir, fmt.Sprintf("n%d-data", i+1))
		if err := os.RemoveAll(data); err != nil {
			t.stop()
			return nil, err
		}
		conf := nodeConfig(o, v, dir, secret, i, n.mqtt, n.http, binds)
		path := filepath.Join(dir, fmt.Sprintf("%s-n%d.yaml", name, i+1))
		if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
			t.stop()
			return nil, err
		}
		logf, err := os.Create(n.logPath)
		if err != nil {
			t.stop()
			return nil, err
		}
		n.cmd = exec.Command(o.isobar, "serve", "--config", path)
		n.cmd.Stdout, n.cmd.Stderr = logf, logf
		if err := n.cmd.Start(); err != nil {
			logf.Close()
			t.stop()
			return nil, fmt.Errorf("start %s: %w", n.name, err)
		}
		go func() { n.waitErr = n.cmd.Wait(); logf.Close(); close(n.exited) }()
		t.nodes = append(t.nodes, n)
	}
	for _, n := range t.nodes {
		for _, a := range []string{n.mqtt, n.http} {
			if err := waitListening(ctx, a, n.exited, &n.waitErr); err != nil {
				t.stop()
				return nil, fmt.Errorf("%s did not start: %w (log: %s)", n.name, err, tail(n.logPath))
			}
		}
	}
	if count > 1 {
		if err := t.waitFormed(ctx, o.formTimeout); err != nil {
			t.stop()
			return nil, err
		}
	}
	return t, nil
}

// waitFormed polls every node's /metrics until it sees count members alive
// and its outbound links to the count-1 others up.
func (t *topology) waitFormed(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last []string
	for {
		last = last[:0]
		for _, n := range t.nodes {
			if err := n.alive(); err != nil {
				return err
			}
			m, err := scrapeMetrics(ctx, n.http)
			if err != nil {
				last = append(last, fmt.Sprintf("%s: %v", n.name, err))
				continue
			}
			alive := m[`isobar_cluster_members{state="alive"}`]
			up := sumMetric(m, "isobar_cluster_link_up")
			if int(alive) != len(t.nodes) || int(up) != len(t.nodes)-1 {
				last = append(last, fmt.Sprintf("%s: %.0f alive, %.0f links up", n.name, alive, up))
			}
		}
		if len(last) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			var logs []string
			for _, n := range t.nodes {
				logs = append(logs, n.name+": "+tail(n.logPath))
			}
			return fmt.Errorf("cluster did not form within %s: %s; logs: %s", timeout, strings.Join(last, "; "), strings.Join(logs, " | "))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// scrapeMetrics reads a node's /metrics: "name{labels}" -> value.
func scrapeMetrics(ctx context.Context, addr string) (map[string]float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	return parseMetrics(io.LimitReader(resp.Body, 16<<20))
}

// parseMetrics reads the Prometheus text format (samples only).
func parseMetrics(r io.Reader) (map[string]float64, error) {
	m := map[string]float64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i <= 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		m[strings.TrimSpace(line[:i])] = v
	}
	return m, sc.Err()
}

// sumMetric adds the samples of one metric name over its labels.
func sumMetric(m map[string]float64, name string) float64 {
	var s float64
	for k, v := range m {
		if k == name || strings.HasPrefix(k, name+"{") {
			s += v
		}
	}
	return s
}

// clusterCounters are the counters kept with every cluster run.
var clusterCounters = []string{
	"isobar_cluster_forwarded_total", "isobar_cluster_received_total",
	"isobar_cluster_forward_dropped_total", "isobar_cluster_link_dropped_total",
	"isobar_cluster_link_reconnects_total", "isobar_messages_dropped_total",
	"isobar_cluster_replica_sessions", "isobar_cluster_replication_ops_total",
}

// wantRoutes is, per node address other than the publishers', the number of
// distinct filters its subscribers hold in cfg (after SetDefaults).
func wantRoutes(cfg Config) map[string]int {
	cfg.SetDefaults()
	seen := map[[2]string]bool{}
	want := map[string]int{}
	pub := cfg.Addr
	if len(cfg.PubAddrs) > 0 {
		pub = cfg.PubAddrs[0]
	}
	for i := range cfg.Subs {
		addr := cfg.Addr
		if len(cfg.SubAddrs) > 0 {
			addr = cfg.SubAddrs[i%len(cfg.SubAddrs)]
		}
		f := cfg.Filter
		if cfg.Scenario == ScenarioP2P {
			f = expand(cfg.Topic, i)
		} else {
			f = expand(f, i)
		}
		if addr == pub || seen[[2]string{addr, f}] {
			continue
		}
		seen[[2]string{addr, f}] = true
		want[addr]++
	}
	return want
}

// waitRoutes waits (at most timeout) until the publishers' node has from
// every other node exactly the filters its subscribers hold.
func (t *topology) waitRoutes(ctx context.Context, cfg Config, timeout time.Duration) (time.Duration, string) {
	start := time.Now()
	want := wantRoutes(cfg)
	if len(want) == 0 {
		return 0, ""
	}
	var pubNode *benchNode
	byAddr := map[string]string{}
	for _, n := range t.nodes {
		byAddr[n.mqtt] = n.name
		if n.mqtt == cfg.PubAddrs[0] {
			pubNode = n
		}
	}
	var state string
	for {
		m, err := scrapeMetrics(ctx, pubNode.http)
		ok := err == nil
		var parts []string
		if err != nil {
			parts = append(parts, err.Error())
		}
		for _, n := range t.nodes {
			if n == pubNode {
				continue
			}
			got := m[fmt.Sprintf(`isobar_cluster_routes{peer=%q}`, n.name)]
			if int(got) != want[n.mqtt] {
				ok = false
			}
			parts = append(parts, fmt.Sprintf("%s %.0f/%d", n.name, got, want[n.mqtt]))
		}
		state = strings.Join(parts, ", ")
		if ok {
			return time.Since(start), ""
		}
		if time.Since(start) > timeout || ctx.Err() != nil {
			return time.Since(start), fmt.Sprintf("routes on %s after %s: %s", pubNode.name, timeout, state)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// run runs one scenario on the topology: clients placed by sc.place, the
// publishing held until the publishers' node knows the subscribers' routes,
// and the CPU of every node sampled over the measurement window.
func (t *topology) run(ctx context.Context, sc clusterScenario, v clusterVariant, cfg Config) (*ClusterRun, error) {
	var addrs []string
	for _, n := range t.nodes {
		if err := n.alive(); err != nil {
			return nil, err
		}
		addrs = append(addrs, n.mqtt)
	}
	sc.place(&cfg, addrs)
	cfg.Addr = cfg.PubAddrs[0]
	out := &ClusterRun{NodeCPU: map[string]float64{}}

	var mu sync.Mutex
	startCPU := map[string]time.Duration{}
	endCPU := map[string]time.Duration{}
	sample := func(into map[string]time.Duration) {
		mu.Lock()
		defer mu.Unlock()
		for _, n := range t.nodes {
			if s, err := readProc(strconv.Itoa(n.cmd.Process.Pid)); err == nil {
				into[n.name] = s.cpu
			}
		}
	}
	// Persistent sessions outlive their scenario (and keep their routes
	// and replicas): the wait compares with the counts before this one.
	var base replCounts
	if len(t.nodes) > 1 && cfg.PersistentSubs {
		base = t.replCounts(ctx, cfg)
	}
	var timers []*time.Timer
	cfg.OnStart = func() {
		switch {
		case len(t.nodes) > 1 && cfg.PersistentSubs:
			d, note := t.waitSessions(ctx, cfg, v, base, 10*time.Second)
			out.RoutesS, out.RoutesNote = round3(d.Seconds()), note
		case len(t.nodes) > 1:
			d, note := t.waitRoutes(ctx, cfg, 10*time.Second)
			out.RoutesS, out.RoutesNote = round3(d.Seconds()), note
		}
		// Run starts publishing 5 ms after this returns; the window
		// opens after the warm-up.
		t0 := time.Now().Add(5 * time.Millisecond)
		timers = append(timers,
			time.AfterFunc(time.Until(t0.Add(cfg.Warmup)), func() { sample(startCPU) }),
			time.AfterFunc(time.Until(t0.Add(cfg.Warmup+cfg.Duration)), func() { sample(endCPU) }))
	}
	res, err := Run(ctx, cfg, nil)
	for _, tm := range timers {
		tm.Stop()
	}
	if err != nil {
		return nil, err
	}
	for _, n := range t.nodes {
		if err := n.alive(); err != nil {
			return nil, fmt.Errorf("during the run: %w", err)
		}
	}
	mu.Lock()
	var cpu time.Duration
	complete := len(startCPU) == len(t.nodes) && len(endCPU) == len(t.nodes)
	for _, n := range t.nodes {
		d := endCPU[n.name] - startCPU[n.name]
		out.NodeCPU[n.name] = round3(d.Seconds())
		cpu += d
	}
	mu.Unlock()
	if complete && res.DurationS > 0 {
		ps := &ProcStats{CPUSeconds: round3(cpu.Seconds()), CPUPercent: round1(100 * cpu.Seconds() / res.DurationS)}
		if recv := res.RecvRate * res.DurationS; recv > 0 {
			ps.CPUPerMsgUs = round3(float64(cpu.Microseconds()) / recv)
		}
		res.BrokerProc = ps
	}
	if len(t.nodes) > 1 {
		out.NodeCounters = map[string]map[string]float64{}
		for _, n := range t.nodes {
			m, err := scrapeMetrics(ctx, n.http)
			if err != nil {
				continue
			}
			c := map[string]float64{}
			for k, v := range m {
				for _, name := range clusterCounters {
					if (k == name || strings.HasPrefix(k, name+"{")) && v != 0 {
						c[k] = v
					}
				}
			}
			out.NodeCounters[n.name] = c
		}
	}
	out.Result = res
	return out, nil
}

// Tables.

// reportVariants are the report's variants and ratio columns (a report
// without them is the default comparison's).
func reportVariants(rep *ClusterReport) ([]clusterVariant, [][2]string) {
	if len(rep.Variants) > 0 {
		return rep.Variants, rep.Ratios
	}
	return defaultVariants(clusterOpts{nodes: rep.Nodes, store: rep.Store}), [][2]string{{topoCluster, topoSingle}}
}

// fmtClusterRatio is a ratio cell: "–" when not measured, else the ratio and
// whether it is better or worse.
func fmtClusterRatio(r float64, higherBetter bool) string {
	if r <= 0 {
		return "–"
	}
	mark := "worse"
	if (r > 1) == higherBetter {
		mark = "better"
	}
	s := fmt.Sprintf("%.2f", r)
	if s != "1.00" {
		s += " (" + mark + ")"
	}
	return s
}

func clusterRows(rep *ClusterReport) (header []string, rows [][]string) {
	variants, ratios := reportVariants(rep)
	header = []string{"scenario", "figure"}
	for _, v := range variants {
		header = append(header, v.Label)
	}
	for _, r := range ratios {
		header = append(header, variantShort(variants, r[0])+"/"+variantShort(variants, r[1]))
	}
	for _, sc := range rep.Scenarios {
		for i, m := range sc.Metrics {
			label := ""
			if i == 0 {
				label = sc.Label
			}
			dir := "↓"
			if m.HigherBetter {
				dir = "↑"
			}
			row := []string{label, fmt.Sprintf("%s (%s) %s", m.Name, m.Unit, dir)}
			for _, vr := range variants {
				v, ok := m.Values[vr.Name]
				cell := fmtValue(v, ok)
				if len(sc.Errors[vr.Name]) > 0 && i == 0 {
					cell += " !"
				}
				row = append(row, cell)
			}
			for _, r := range ratios {
				ratio := m.Ratios[ratioKey(r[0], r[1])]
				if m.Ratios == nil && r == [2]string{topoCluster, topoSingle} {
					ratio = m.Ratio
				}
				row = append(row, fmtClusterRatio(ratio, m.HigherBetter))
			}
			rows = append(rows, row)
		}
	}
	return header, rows
}

func writeClusterTable(w io.Writer, rep *ClusterReport) {
	header, rows := clusterRows(rep)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	_ = tw.Flush()
	writeClusterNotes(w, rep)
}

func writeClusterMarkdown(w io.Writer, rep *ClusterReport) {
	header, rows := clusterRows(rep)
	fmt.Fprintf(w, "| %s |\n|%s\n", strings.Join(header, " | "), strings.Repeat("---|", len(header)))
	for _, r := range rows {
		fmt.Fprintf(w, "| %s |\n", strings.Join(r, " | "))
	}
	fmt.Fprintln(w)
	writeClusterNotes(w, rep)
}

func writeClusterNotes(w io.Writer, rep *ClusterReport) {
	variants, _ := reportVariants(rep)
	fmt.Fprintf(w, "\nmedian of %d run(s) per topology; store %s; broker CPU = all nodes together; ↑ higher is better, ↓ lower is better; ! = faults, listed below\n", rep.Repeat, rep.Store)
	if rep.Quick {
		fmt.Fprintln(w, "--quick: counts, rates and durations scaled down; the labels give the full run's")
	}
	if rep.Set != "" {
		for _, v := range variants {
			fmt.Fprintf(w, "%s: %s\n", v.Short, describeVariant(v))
		}
	}
	for _, sc := range rep.Scenarios {
		fmt.Fprintf(w, "%s on the cluster: %s\n", sc.Name, sc.Placement)
	}
	for _, g := range rep.Goals {
		verdict := "not measured"
		if g.Measured > 0 {
			verdict = fmt.Sprintf("%.2f: missed", g.Measured)
			if g.Met {
				verdict = fmt.Sprintf("%.2f: met", g.Measured)
			}
		}
		fmt.Fprintf(w, "goal: %s %s %s: %s\n", g.Scenario, g.Metric, g.Want, verdict)
	}
	for _, st := range rep.Starts {
		if st.Error != "" {
			fmt.Fprintf(w, "! %s, repeat %d, did not start: %s\n", st.Topology, st.Repeat, st.Error)
		}
	}
	for _, sc := range rep.Scenarios {
		for _, vr := range variants {
			topo := vr.Name
			for _, e := range sc.Errors[topo] {
				fmt.Fprintf(w, "! %s, %s: %s\n", sc.Name, topo, e)
			}
			for i, r := range sc.Runs[topo] {
				if r.RoutesNote != "" {
					fmt.Fprintf(w, "! %s, %s, run %d: %s\n", sc.Name, topo, i+1, r.RoutesNote)
				}
			}
		}
	}
}
