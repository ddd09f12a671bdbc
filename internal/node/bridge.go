package node

import (
	"crypto/tls"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/isobar-mq/isobar/internal/bridge"
	"github.com/isobar-mq/isobar/internal/broker"
	"github.com/isobar-mq/isobar/internal/cluster"
	"github.com/isobar-mq/isobar/internal/config"
	"github.com/isobar-mq/isobar/internal/mqtt/client"
)

// bridgeInterest stands between the broker's interest observer seam and
// both the cluster (when there is one) and the bridge engine, which is
// built after the broker: until it is attached, changes only go to the
// cluster, and the engine then starts from the broker's snapshot.
type bridgeInterest struct {
	next broker.InterestObserver // the cluster's, or nil
	mu   sync.Mutex
	eng  *bridge.Engine
}

func (b *bridgeInterest) InterestChanged(filter string, added bool) {
	if b.next != nil {
		b.next.InterestChanged(filter, added)
	}
	b.mu.Lock()
	e := b.eng
	b.mu.Unlock()
	if e != nil {
		e.InterestChanged(filter, added)
	}
}

// wrapBridgeInterest installs the bridge interest relay in opts when the
// configuration has bridges (after the cluster set its observer).
func wrapBridgeInterest(cfg *config.Config, opts *broker.Options) *bridgeInterest {
	if len(cfg.Bridges) == 0 {
		return nil
	}
	bi := &bridgeInterest{next: opts.Interest}
	opts.Interest = bi
	return bi
}

// clusterPlacement runs each bridge on the member that ranks first for its
// name (rendezvous hashing, as session placement) among the members the
// membership reports alive or suspect: every node that sees the same
// members agrees, and when the owner dies or leaves the survivors move the
// bridge as soon as membership reports it. The membership's view is taken
// rather than Members() alone, which also lists nodes whose late link
// arrived after they left.
type clusterPlacement struct{ c *cluster.Node }

func (p clusterPlacement) Self() string      { return p.c.Name() }
func (p clusterPlacement) OnChange(f func()) { p.c.OnMembersChanged(f) }

func (p clusterPlacement) Owner(name string) string {
	live := map[string]bool{}
	for _, m := range p.c.Status().Members {
		if m.State != "dead" && m.State != "left" {
			live[m.Name] = true
		}
	}
	nodes := []string{p.c.Name()}
	for _, m := range p.c.Members() {
		if m != p.c.Name() && live[m] {
			nodes = append(nodes, m)
		}
	}
	return p.c.Rank("bridge/"+name, nodes)[0]
}

// startBridges starts the bridges: section's links.
func (n *Node) startBridges(cfg *config.Config, bi *bridgeInterest) error {
	if len(cfg.Bridges) == 0 {
		return nil
	}
	var links []bridge.LinkConfig
	for _, b := range cfg.Bridges {
		lc, err := bridgeLink(b)
		if err != nil {
			return fmt.Errorf("bridges.%s: %w", b.Name, err)
		}
		links = append(links, lc)
	}
	self := cfg.NodeName
	if self == "" {
		self = "isobar"
	}
	o := bridge.Options{Server: n.Server, Self: self, Links: links, SysInterval: cfg.SysInterval,
		Log: n.log, Registerer: n.reg}
	if n.Cluster != nil {
		o.Placement = clusterPlacement{n.Cluster}
	}
	e, err := bridge.New(o)
	if err != nil {
		return err
	}
	if bi != nil {
		// Attached under the broker's interest lock: no change between
		// the snapshot and the attachment is missed.
		n.Server.InterestSnapshot(func(filters []string) {
			e.SetInterest(filters)
			bi.mu.Lock()
			bi.eng = e
			bi.mu.Unlock()
		})
	}
	if err := e.Start(); err != nil {
		return err
	}
	if n.Cluster != nil && slices.ContainsFunc(links, func(l bridge.LinkConfig) bool { return l.Demand }) {
		n.bridgeRoutes = startClusterInterest(n.Cluster, e)
	}
	n.Bridges = e
	n.HTTP.SetBridges(func() any { return e.Status() })
	n.log.Info("bridges started", "bridges", len(links))
	return nil
}

// stopBridges stops the links (before the broker they publish into).
func (n *Node) stopBridges() error {
	if n.Bridges == nil {
		return nil
	}
	if n.bridgeRoutes != nil {
		n.bridgeRoutes()
	}
	return n.Bridges.Close()
}

// clusterInterestEvery is how often demand links look at the routes the
// other nodes advertise.
const clusterInterestEvery = time.Second

// startClusterInterest reports the other nodes' routes to the engine as
// interest (a demand link on this node then also pulls for subscribers
// on the other nodes), polling them every clusterInterestEvery; the
// returned function stops it.
func startClusterInterest(c *cluster.Node, e *bridge.Engine) (stop func()) {
	quit := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		known := map[string]bool{}
		t := time.NewTicker(clusterInterestEvery)
		defer t.Stop()
		for {
			now := map[string]bool{}
			for _, m := range c.Members() {
				if m == c.Name() {
					continue
				}
				routes, _ := c.ClusterRoutes(m)
				for _, f := range routes {
					now[f] = true
				}
			}
			for f := range now {
				if !known[f] {
					e.InterestChanged(f, true)
				}
			}
			for f := range known {
				if !now[f] {
					e.InterestChanged(f, false)
				}
			}
			known = now
			select {
			case <-quit:
				return
			case <-t.C:
			}
		}
	}()
	return func() { close(quit); <-done }
}

// bridgeLink maps one configured bridge onto the engine's link.
func bridgeLink(b config.Bridge) (bridge.LinkConfig, error) {
	var tlsc *tls.Config
	if b.CAFile != "" || b.CertFile != "" || b.Insecure {
		var err error
		if tlsc, err = clientTLS(b.CAFile, b.CertFile, b.KeyFile, b.Insecure); err != nil {
			return bridge.LinkConfig{}, err
		}
	}
	cc := client.Config{
		URL: b.URL, Version: byte(b.Version), ClientID: b.ClientID, CleanStart: b.CleanStart,
		SessionExpiry: uint32(b.SessionExpiry / time.Second), KeepAlive: b.KeepAlive,
		Username: b.Username, Password: b.Password, TLS: tlsc, Bridge: *b.TryPrivate,
		MinBackoff: b.MinBackoff, MaxBackoff: b.MaxBackoff,
	}
	lc := bridge.LinkConfig{Name: b.Name, Client: cc, MaxHops: b.MaxHops, BufferMessages: b.Buffer.MaxMessages,
		BufferBytes: int64(b.Buffer.MaxBytes), Demand: b.Demand}
	for _, t := range b.Topics {
		d, err := bridge.ParseDirection(t.Direction)
		if err != nil {
			return lc, err
		}
		lc.Rules = append(lc.Rules, bridge.Rule{Pattern: t.Pattern, Direction: d, QoS: byte(*t.QoS),
			LocalPrefix: t.LocalPrefix, RemotePrefix: t.RemotePrefix})
	}
	return lc, nil
}
