package bench

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// The replicated-sessions set of the cluster comparison (isobar-bench
// cluster --scenarios repl): QoS 1 to subscribers with persistent sessions,
// publishers on n1 and subscribers on n2, on five configurations run one
// after the other — a single node in memory, a single node on Pebble (sync:
// always), and a cluster on Pebble with cluster.replicas 1 and ack
// replicated (the default), the same with ack local, and the same with
// replicas 0 (no replication). The ratios compare the clusters with the
// single durable node; the goal of the replication issue is replicated at
// least half the single durable node's throughput.

// replScenarioGroup selects the set.
const replScenarioGroup = "repl"

// Names of the set's configurations.
const (
	replMemory    = "single-memory"
	replPebble    = "single-pebble"
	replR1Repl    = "cluster-r1-replicated"
	replR1Local   = "cluster-r1-local"
	replR0        = "cluster-r0"
	replAckRepl   = "replicated"
	replAckLocal  = "local"
	replStoreDisk = "pebble"
)

func intp(v int) *int { return &v }

// replSet is the replicated-sessions set for o (o.nodes nodes in each
// cluster; --store does not apply, every configuration names its own).
func replSet(o clusterOpts) clusterSet {
	cl := func(name, short, what string, replicas int, ack string) clusterVariant {
		return clusterVariant{Name: name, Short: short, Label: fmt.Sprintf("%d nodes, %s", o.nodes, what),
			Nodes: o.nodes, Store: replStoreDisk, Replicas: intp(replicas), Ack: ack}
	}
	run := func(quick bool, name string) Config {
		return Config{
			Scenario:       ScenarioP2P,
			QoS:            1,
			Pubs:           pick(quick, 10, 4),
			PersistentSubs: true,
			Duration:       pick(quick, 10*time.Second, 600*time.Millisecond),
			Warmup:         pick(quick, 2*time.Second, 150*time.Millisecond),
			Drain:          pick(quick, 5*time.Second, time.Second),
			Topic:          "bench/" + name + "/%i",
		}
	}
	return clusterSet{
		name: replScenarioGroup,
		scenarios: []clusterScenario{
			{Name: "p2p-qos1-persistent", Label: "p2p QoS 1, persistent sessions, 10 pairs, max rate",
				Placement: "publishers on n1, subscribers (persistent sessions) on n2",
				config:    func(q bool) Config { return run(q, "p2p-qos1-persistent") },
				place:     crossNode, metrics: []metricDef{mRecvRate, mCPUMsg, mP50, mP99, mLost}},
			{Name: "latency-5k-persistent", Label: "p2p QoS 1, persistent sessions, 10 pairs, fixed 5k msg/s",
				Placement: "publishers on n1, subscribers (persistent sessions) on n2",
				config: func(q bool) Config {
					c := run(q, "latency-5k-persistent")
					c.Rate = pick(q, 5000.0, 1000.0)
					return c
				}, place: crossNode, metrics: []metricDef{mSendRate, mP50, mP99, mP999, mCPU, mLost}},
		},
		variants: []clusterVariant{
			{Name: replMemory, Short: "memory", Label: "single node, memory", Nodes: 1, Store: "memory"},
			{Name: replPebble, Short: "pebble", Label: "single node, pebble", Nodes: 1, Store: replStoreDisk},
			cl(replR1Repl, "r1-repl", "replicas 1, ack replicated", 1, replAckRepl),
			cl(replR1Local, "r1-local", "replicas 1, ack local", 1, replAckLocal),
			cl(replR0, "r0", "replicas 0", 0, ""),
		},
		ratios: [][2]string{
			{replR1Repl, replPebble}, {replR1Local, replPebble}, {replR0, replPebble},
			{replR1Repl, replR0}, {replPebble, replMemory},
		},
		goals: []clusterGoal{
			{Scenario: "p2p-qos1-persistent", Metric: mRecvRate.Name, AtLeast: true, Ratio: 0.5, Num: replR1Repl, Den: replPebble},
		},
	}
}

// describeVariant is a variant's configuration in words (the notes under
// the table).
func describeVariant(v clusterVariant) string {
	store := "store memory"
	if v.Store == replStoreDisk {
		store = "store pebble, sync always"
	}
	if v.Nodes == 1 {
		return "one node, " + store
	}
	s := fmt.Sprintf("%d nodes, %s", v.Nodes, store)
	if v.Replicas != nil {
		s += fmt.Sprintf(", cluster.replicas %d", *v.Replicas)
	}
	if v.Ack != "" {
		s += ", cluster.ack " + v.Ack
	}
	return s
}

// replCounts are the counts a persistent scenario waits on, taken before
// its clients connect: persistent sessions of earlier scenarios stay (with
// their routes, replicas and standby subscriptions), so the wait compares
// differences.
type replCounts struct {
	routes map[string]float64 // isobar_cluster_routes on the publishers' node, by peer
	local  float64            // isobar_cluster_local_routes on the publishers' node
	copies float64            // isobar_cluster_replica_sessions, all nodes
}

func (t *topology) pubNode(cfg Config) *benchNode {
	pub := cfg.Addr
	if len(cfg.PubAddrs) > 0 {
		pub = cfg.PubAddrs[0]
	}
	for _, n := range t.nodes {
		if n.mqtt == pub {
			return n
		}
	}
	return t.nodes[0]
}

// replCounts scrapes the counts (a node that does not answer counts 0: the
// wait then names what it saw).
func (t *topology) replCounts(ctx context.Context, cfg Config) replCounts {
	c := replCounts{routes: map[string]float64{}}
	pub := t.pubNode(cfg)
	for _, n := range t.nodes {
		m, err := scrapeMetrics(ctx, n.http)
		if err != nil {
			continue
		}
		c.copies += m["isobar_cluster_replica_sessions"]
		if n != pub {
			continue
		}
		c.local = m["isobar_cluster_local_routes"]
		for _, p := range t.nodes {
			if p != pub {
				c.routes[p.name] = m[fmt.Sprintf(`isobar_cluster_routes{peer=%q}`, p.name)]
			}
		}
	}
	return c
}

// replWant is what a persistent p2p scenario adds once its sessions are in
// place: the subscribers' filters from their nodes (wantRoutes), each
// session's copies on min(replicas, nodes-1) other nodes and, with ack
// replicated, a standby subscription per copy — on the publishers' node
// (local interest) or advertised from another one. p2p filters are
// distinct per subscriber, so the counts of distinct filters add up.
func replWant(cfg Config, v clusterVariant) (routes map[string]int, copies, standby int) {
	routes = wantRoutes(cfg)
	cfg.SetDefaults()
	k := 1
	if v.Replicas != nil {
		k = *v.Replicas
	}
	k = min(k, v.Nodes-1)
	if k <= 0 || !cfg.PersistentSubs {
		return routes, 0, 0
	}
	copies = cfg.Subs * k
	if v.Ack == "" || v.Ack == replAckRepl {
		standby = copies
	}
	return routes, copies, standby
}

// waitSessions waits (at most timeout) until, compared with base, the
// publishers' node has every subscriber's filter from its node, the
// replicas of every new session are placed and, with ack replicated, every
// standby subscription is known to the publishers' node: before that a
// publish is acknowledged without waiting for the replicas.
func (t *topology) waitSessions(ctx context.Context, cfg Config, v clusterVariant, base replCounts, timeout time.Duration) (time.Duration, string) {
	start := time.Now()
	want, copies, standby := replWant(cfg, v)
	byAddr := map[string]int{}
	for a, w := range want {
		byAddr[a] = w
	}
	pub := t.pubNode(cfg)
	var state string
	for {
		now := t.replCounts(ctx, cfg)
		ok := true
		var parts []string
		extra := now.local - base.local // standbys on the publishers' node
		for _, n := range t.nodes {
			if n == pub {
				continue
			}
			got := now.routes[n.name] - base.routes[n.name]
			w := float64(byAddr[n.mqtt])
			if got < w {
				ok = false
			}
			extra += got - w
			parts = append(parts, fmt.Sprintf("%s routes +%.0f/%d", n.name, got, byAddr[n.mqtt]))
		}
		if int(extra) != standby {
			ok = false
		}
		gotCopies := now.copies - base.copies
		if int(gotCopies) != copies {
			ok = false
		}
		parts = append(parts, fmt.Sprintf("standby +%.0f/%d", extra, standby), fmt.Sprintf("replica copies +%.0f/%d", gotCopies, copies))
		state = strings.Join(parts, ", ")
		if ok {
			return time.Since(start), ""
		}
		if time.Since(start) > timeout || ctx.Err() != nil {
			return time.Since(start), fmt.Sprintf("sessions on %s after %s: %s", pub.name, timeout, state)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
