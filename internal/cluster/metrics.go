package cluster

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics of the cluster core. Per-peer values are read from the peers at
// scrape time (no series to register or forget as nodes come and go).
type metrics struct {
	n               *Node
	memberEvents    *prometheus.CounterVec
	claims          *prometheus.CounterVec
	retainedApplied prometheus.Counter

	routes, inflight, forwarded, received, dropped *prometheus.Desc
	localRoutes, tombstones                        *prometheus.Desc
	replicaCopies, replicated, underReplicated     *prometheus.Desc
	promoted, replOps                              *prometheus.Desc
	replLag, replMsgs                              *prometheus.Desc
}

func newMetrics(n *Node, reg prometheus.Registerer) *metrics {
	m := &metrics{
		n: n,
		memberEvents: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "isobar_cluster_peer_events_total", Help: "Peer membership events seen by the cluster core, by kind.",
		}, []string{"kind"}),
		claims: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "isobar_cluster_claims_total", Help: "Client identifier claims made by this node's CONNECTs and session hand-overs, by result.",
		}, []string{"result"}),
		retainedApplied: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "isobar_cluster_retained_applied_total", Help: "Retained-message versions from other nodes applied here.",
		}),
		routes:        prometheus.NewDesc("isobar_cluster_routes", "Filters a node advertised to this one.", []string{"peer"}, nil),
		inflight:      prometheus.NewDesc("isobar_cluster_inflight", "QoS 1/2 messages forwarded to a node and not yet acknowledged.", []string{"peer"}, nil),
		forwarded:     prometheus.NewDesc("isobar_cluster_forwarded_total", "Messages forwarded to a node.", []string{"peer"}, nil),
		received:      prometheus.NewDesc("isobar_cluster_received_total", "Messages received from a node.", []string{"peer"}, nil),
		dropped:       prometheus.NewDesc("isobar_cluster_forward_dropped_total", "Messages not forwarded to a node (link down or buffer full).", []string{"peer"}, nil),
		localRoutes:   prometheus.NewDesc("isobar_cluster_local_routes", "Distinct filters this node's own subscribers hold (advertised to the others).", nil, nil),
		tombstones:    prometheus.NewDesc("isobar_cluster_retained_tombstones", "Retained-message deletions remembered.", nil, nil),
		replicaCopies: prometheus.NewDesc("isobar_cluster_replica_sessions", "Copies of sessions owned by other nodes held here.", nil, nil),
		replicated:    prometheus.NewDesc("isobar_cluster_replicated_sessions", "Persistent sessions owned here with replicas placed.", nil, nil),
		underReplicated: prometheus.NewDesc("isobar_cluster_sessions_under_replicated",
			"Persistent sessions owned here with fewer replicas than cluster.replicas (too few other nodes up).", nil, nil),
		promoted: prometheus.NewDesc("isobar_cluster_sessions_promoted_total", "Session copies taken over here because their owner was gone.", nil, nil),
		replOps:  prometheus.NewDesc("isobar_cluster_replication_ops_total", "Session operations shipped to replicas.", nil, nil),
		replLag: prometheus.NewDesc("isobar_cluster_replication_lag_seconds",
			"Replication lag seen here as a replica: how old the latest session change applied here was when it arrived.", nil, nil),
		replMsgs: prometheus.NewDesc("isobar_cluster_replica_messages", "QoS 1/2 messages held in the session copies kept here.", nil, nil),
	}
	if reg != nil {
		reg.MustRegister(m.memberEvents, m.claims, m.retainedApplied, m)
	}
	return m
}

func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{m.routes, m.inflight, m.forwarded, m.received, m.dropped, m.localRoutes, m.tombstones,
		m.replicaCopies, m.replicated, m.underReplicated, m.promoted, m.replOps, m.replLag, m.replMsgs} {
		ch <- d
	}
}

func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	n := m.n
	for _, p := range n.livePeers() {
		var ms MemberStatus
		p.fill(&ms)
		ch <- prometheus.MustNewConstMetric(m.routes, prometheus.GaugeValue, float64(ms.Routes), p.name)
		ch <- prometheus.MustNewConstMetric(m.inflight, prometheus.GaugeValue, float64(ms.Inflight), p.name)
		ch <- prometheus.MustNewConstMetric(m.forwarded, prometheus.CounterValue, float64(ms.Forwarded), p.name)
		ch <- prometheus.MustNewConstMetric(m.received, prometheus.CounterValue, float64(ms.Received), p.name)
		ch <- prometheus.MustNewConstMetric(m.dropped, prometheus.CounterValue, float64(ms.Dropped), p.name)
	}
	if n.srv != nil {
		ch <- prometheus.MustNewConstMetric(m.localRoutes, prometheus.GaugeValue, float64(n.srv.InterestCount()))
	}
	n.tombMu.Lock()
	t := len(n.tombstones)
	n.tombMu.Unlock()
	ch <- prometheus.MustNewConstMetric(m.tombstones, prometheus.GaugeValue, float64(t))
	if r := n.repl; r != nil {
		held, placed := r.counts()
		ch <- prometheus.MustNewConstMetric(m.replicaCopies, prometheus.GaugeValue, float64(held))
		ch <- prometheus.MustNewConstMetric(m.replicated, prometheus.GaugeValue, float64(placed))
		ch <- prometheus.MustNewConstMetric(m.underReplicated, prometheus.GaugeValue, float64(r.underRepl.Load()))
		ch <- prometheus.MustNewConstMetric(m.promoted, prometheus.CounterValue, float64(r.promoted.Load()))
		ch <- prometheus.MustNewConstMetric(m.replOps, prometheus.CounterValue, float64(r.shipped.Load()))
		ch <- prometheus.MustNewConstMetric(m.replLag, prometheus.GaugeValue, float64(r.lagNs.Load())/1e9)
		ch <- prometheus.MustNewConstMetric(m.replMsgs, prometheus.GaugeValue, float64(r.heldMessages()))
	}
}
