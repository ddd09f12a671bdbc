// Package node assembles a running Isobar node from a configuration: the
// broker, its listeners and its security. The CLI and the tests use it.
package node

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"time"

	"github.com/isobar-mq/isobar/internal/bridge"
	"github.com/isobar-mq/isobar/internal/broker"
	"github.com/isobar-mq/isobar/internal/cluster"
	"github.com/isobar-mq/isobar/internal/config"
	"github.com/isobar-mq/isobar/internal/listener"
	"github.com/isobar-mq/isobar/internal/metrics"
	"github.com/isobar-mq/isobar/internal/stomp"
	"github.com/isobar-mq/isobar/internal/stomp/queue"
	"github.com/isobar-mq/isobar/internal/store"
	"github.com/isobar-mq/isobar/internal/sys"
	"github.com/isobar-mq/isobar/internal/web"
	"github.com/isobar-mq/isobar/internal/wis2/dedup"
	"github.com/isobar-mq/isobar/internal/wis2/relay"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Node is a running broker with its listeners.
type Node struct {
	Server    *broker.Server
	Listeners []listener.Listener
	Auth      *Security
	Store     *store.PebbleStore // nil in memory mode
	log       *slog.Logger
	done      chan struct{}
	doneOnce  sync.Once
	stopOnce  sync.Once
	stopErr   error

	// Metrics is the node's Prometheus collector; HTTP serves it with the
	// console and API (nil when http is disabled or its default port was
	// taken). Components add /readyz conditions with HTTP.AddReadyCheck.
	Metrics *metrics.Collector
	HTTP    *web.Server
	sys     *sys.Publisher

	// Cluster is this node's cluster member (nil for a single node).
	Cluster *cluster.Node
	reg     *prometheus.Registry

	// Stomp is the STOMP gateway serving the stomp and stomp-ws
	// listeners (nil when there are none).
	Stomp *stomp.Gateway

	// WIS2 is the WIS2 Global Broker relay (nil without a wis2 section),
	// wis2Store its de-duplication store.
	WIS2      *relay.Relay
	wis2Store dedup.Store
	name      string

	// Bridges runs the bridges: section's links (nil without one);
	// bridgeRoutes stops feeding it the cluster's routes.
	Bridges      *bridge.Engine
	bridgeRoutes func()
}

// Start builds and starts a node from a configuration.
func Start(cfg *config.Config, log *slog.Logger) (*Node, error) {
	sec, err := NewSecurity(cfg, log)
	if err != nil {
		return nil, err
	}
	var a broker.Auth
	if sec != nil {
		a = sec
	}
	opts := cfg.BrokerOptions()
	var st *store.PebbleStore
	if cfg.Store.Mode == "pebble" {
		minFree := cfg.Store.MinFreeBytes
		if minFree == 0 {
			minFree = -1 // store.min_free_bytes: 0 disables the floor
		}
		st, err = store.Open(store.Options{
			Dir: cfg.Store.DataDir, Sync: store.SyncPolicy(cfg.Store.Sync),
			SyncInterval: cfg.Store.SyncInterval, MinFreeBytes: minFree, Logger: log,
		})
		if err != nil {
			return nil, err
		}
		opts.Store = st // the store logs "store opened" with its directory and sync policy
	} else {
		log.Warn("store mode is memory: sessions, queued and retained messages do not survive a restart")
	}
	reg := prometheus.NewRegistry()
	var cn *cluster.Node
	if cfg.Cluster != nil {
		cn, err = newCluster(cfg, log, reg)
		if err != nil {
			if st != nil {
				_ = st.Close()
			}
			return nil, err
		}
		cn.BrokerOptions(&opts)
		// Session changes also go to the replicas (a memory-only node
		// replicates too: the wrapper then keeps nothing itself).
		var inner store.Store
		if st != nil {
			inner = st
		}
		opts.Store = cn.WrapStore(inner)
	}
	bi := wrapBridgeInterest(cfg, &opts)
	srv := broker.New(opts, log, a)
	if err := srv.Restore(); err != nil {
		_ = srv.Shutdown(context.Background())
		if st != nil {
			_ = st.Close()
		}
		return nil, fmt.Errorf("restoring state: %w", err)
	}
	n := &Node{Server: srv, Auth: sec, Store: st, log: log, done: make(chan struct{}), Cluster: cn, reg: reg}
	if cn != nil {
		if err := cn.Start(srv); err != nil {
			_ = srv.Shutdown(context.Background())
			if st != nil {
				_ = st.Close()
			}
			return nil, fmt.Errorf("cluster: %w", err)
		}
		log.Info("cluster member started", "node", cfg.NodeName, "addr", cn.Addr(), "seeds", cfg.Cluster.Seeds)
	}
	for _, lc := range cfg.Listeners {
		l, err := listener.New(lc, log)
		if err != nil {
			for _, prev := range n.Listeners {
				_ = prev.Close()
			}
			_ = srv.Shutdown(context.Background())
			if st != nil {
				_ = st.Close()
			}
			return nil, fmt.Errorf("listener %s: %w", lc.Name, err)
		}
		n.Listeners = append(n.Listeners, l) // listener.New logs "listening"
	}
	n.Metrics = metrics.New(srv, sys.BuildVersion())
	reg.MustRegister(n.Metrics, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	n.Metrics.Listeners = n.Listeners
	if sec != nil {
		n.Metrics.AuthStats = sec.Stats
	}
	if err := n.startStomp(cfg); err != nil {
		for _, l := range n.Listeners {
			_ = l.Close() // none is served yet
		}
		_ = n.Stop(context.Background())
		return nil, err
	}
	for _, l := range n.Listeners {
		if listener.IsStomp(l.Config().Protocol) {
			continue // served by the STOMP gateway (startStomp)
		}
		go func(l listener.Listener) {
			if err := srv.Serve(n.Metrics.WrapListener(netListener{l}, l.Config().Name), l.Config().Name); err != nil && !errors.Is(err, net.ErrClosed) {
				log.Debug("listener stopped", "listener", l.Config().Name, "err", err)
			}
		}(l)
	}
	if err := n.startManagement(cfg); err != nil {
		_ = n.Stop(context.Background())
		return nil, err
	}
	if cfg.WIS2 != nil {
		n.name = cfg.NodeName
		if err := n.startWIS2(cfg); err != nil {
			_ = n.Stop(context.Background())
			return nil, fmt.Errorf("wis2: %w", err)
		}
	}
	if err := n.startBridges(cfg, bi); err != nil {
		_ = n.Stop(context.Background())
		return nil, fmt.Errorf("bridges: %w", err)
	}
	return n, nil
}

// startManagement starts $SYS publishing and the HTTP listener.
func (n *Node) startManagement(cfg *config.Config) error {
	n.sys = sys.Start(n.Server, sys.Options{Interval: cfg.SysInterval, Version: sys.BuildVersion(), Log: n.log})
	h, err := web.Start(web.Options{
		Config: cfg.HTTP, Broker: n.Server, Metrics: n.Metrics, Registry: n.reg, Listeners: n.Listeners,
		Version: sys.BuildVersion(), Settings: cfg, Log: n.log,
		// Without http.users, the generated admin password is written here
		// (unless http.generated_password_file says elsewhere).
		PasswordFile: filepath.Join(cfg.Store.DataDir, "http-admin-password"),
	})
	if err != nil {
		return err
	}
	n.HTTP = h
	if h != nil {
		h.AddReadyCheck("listeners", n.Metrics.ListenersUp)
	}
	if n.Cluster != nil {
		h.SetCluster(clusterSource{n})
		n.sys.SetCluster(n.Cluster)
	}
	return nil
}

// clusterSource is what the API sees of the cluster: a drain first stops
// the listeners (no new connections), then hands the sessions over and
// leaves; the node then stops.
type clusterSource struct{ n *Node }

func (c clusterSource) ClusterStatus() cluster.Status { return c.n.Cluster.Status() }

func (c clusterSource) Drain(ctx context.Context) error { return c.n.Drain(ctx) }

func (c clusterSource) ClusterRoutes(node string) ([]string, bool) {
	return c.n.Cluster.ClusterRoutes(node)
}

// Drain leaves the cluster gracefully: listeners close, clients are
// disconnected and their sessions handed to the other nodes, the node
// leaves the membership, then stops (the process exits).
func (n *Node) Drain(ctx context.Context) error {
	if n.Cluster == nil {
		return errors.New("not clustered")
	}
	for _, l := range n.Listeners {
		_ = l.Close()
	}
	err := n.Cluster.Drain(ctx)
	go func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = n.Stop(sctx)
		n.closeDone()
	}()
	return err
}

// newCluster builds the cluster member from the configuration.
func newCluster(cfg *config.Config, log *slog.Logger, reg prometheus.Registerer) (*cluster.Node, error) {
	cc := cfg.Cluster
	secret, err := cluster.LoadSecret(cc.SecretFile)
	if err != nil {
		return nil, fmt.Errorf("cluster.secret_file: %w", err)
	}
	var tlsCfg *tls.Config
	if cc.TLS.Enabled() {
		if tlsCfg, err = cluster.NewLinkTLS(cc.TLS.CertFile, cc.TLS.KeyFile, cc.TLS.CAFile); err != nil {
			return nil, fmt.Errorf("cluster.tls: %w", err)
		}
	}
	return cluster.New(cluster.Config{
		NodeName: cfg.NodeName, Bind: cc.Bind, Advertise: cc.Advertise, Seeds: cc.Seeds, Secret: secret, TLS: tlsCfg,
		ProbeInterval: cc.ProbeInterval, ProbeTimeout: cc.ProbeTimeout, SuspicionMult: cc.SuspicionMult,
		GossipInterval: cc.GossipInterval, LinkQueueBytes: int(cc.LinkQueueBytes), MaxFrame: int(cc.MaxFrameSize),
		ClaimTimeout: cc.ClaimTimeout, DrainTimeout: cc.DrainTimeout,
		Replicas: cc.ReplicaCount(), AckLocal: cc.Ack == "local",
		Logger: log, Registerer: reg,
	})
}

// Reload re-reads certificates, password and ACL files (SIGHUP).
func (n *Node) Reload() {
	for _, l := range n.Listeners {
		if r, ok := l.(listener.Reloader); ok {
			if err := r.Reload(); err != nil {
				n.log.Error("certificate reload failed; keeping the old one", "listener", l.Config().Name, "err", err)
			}
		}
	}
	if n.Auth != nil {
		if err := n.Auth.Reload(); err != nil {
			n.log.Error("auth reload failed; keeping the old rules", "err", err)
		} else {
			n.log.Info("password and ACL files reloaded")
		}
	}
}

// Done is closed when the node stopped by itself (after a drain).
func (n *Node) Done() <-chan struct{} { return n.done }

func (n *Node) closeDone() {
	n.doneOnce.Do(func() { close(n.done) })
}

// Stop shuts the node down gracefully.
// Calling it again returns the first result.
func (n *Node) Stop(ctx context.Context) error {
	n.stopOnce.Do(func() {
		n.sys.Stop()
		if n.Cluster != nil {
			// Peers see this node leave (not fail); sessions stay in the
			// store for its restart (a drain hands them over instead).
			_ = n.Cluster.Leave(2 * time.Second)
		}
		// The relay and the STOMP gateway go before the broker they
		// publish into.
		if err := n.stopWIS2(); err != nil {
			n.stopErr = err
		}
		if err := n.stopBridges(); err != nil {
			n.stopErr = err
		}
		if n.Stomp != nil {
			if err := n.Stomp.Close(); err != nil {
				n.stopErr = err
			}
		}
		// The broker stops first: meanwhile /readyz answers 503, so load
		// balancers drain the node.
		if err := n.Server.Shutdown(ctx); err != nil || n.stopErr == nil {
			n.stopErr = err
		}
		if err := n.HTTP.Close(ctx); err != nil && n.stopErr == nil {
			n.stopErr = err
		}
		if n.Store != nil {
			if err := n.Store.Close(); err != nil && n.stopErr == nil {
				n.stopErr = err
			}
		}
	})
	return n.stopErr
}

// stompCluster adapts the cluster node to the STOMP gateway's seam.
type stompCluster struct{ *cluster.Node }

func (c stompCluster) Service(name string, h func(from string, body []byte)) func(node string, body []byte) bool {
	return c.Node.Service(name, h).Send
}

// netListener adapts listener.Listener to net.Listener.
type netListener struct{ listener.Listener }

func (l netListener) Accept() (net.Conn, error) { return l.Listener.Accept() }
func (l netListener) Close() error              { return l.Listener.Close() }
func (l netListener) Addr() net.Addr            { return l.Listener.Addr() }

// startStomp starts the STOMP gateway when a listener speaks STOMP, and
// serves those listeners with it. Its queues live in their own Pebble
// database under the data directory (memory only with store mode memory)
// unless stomp.queues.dir says otherwise.
func (n *Node) startStomp(cfg *config.Config) error {
	var stompLns []listener.Listener
	for _, l := range n.Listeners {
		if listener.IsStomp(l.Config().Protocol) {
			stompLns = append(stompLns, l)
		}
	}
	if len(stompLns) == 0 {
		return nil
	}
	sc := &cfg.Stomp
	dir := sc.Queues.Dir
	if dir == "" && cfg.Store.Mode == "pebble" {
		dir = filepath.Join(cfg.Store.DataDir, "stomp-queues")
	}
	var a broker.Auth
	if n.Auth != nil {
		a = n.Auth
	}
	hb := func(d time.Duration) time.Duration {
		if d == 0 {
			return -1 // 0 in the file disables heart-beating that way
		}
		return d
	}
	var qc stomp.Cluster // queues cluster-wide when clustered
	if n.Cluster != nil {
		qc = stompCluster{n.Cluster}
	}
	g, err := stomp.New(stomp.Options{
		Server: n.Server, Auth: a, Cluster: qc,
		Queues: queue.Options{Dir: dir, MaxMessages: sc.Queues.MaxMessages, MaxBytes: sc.Queues.MaxBytes,
			MaxRedeliveries: sc.Queues.MaxRedeliveries, IdleTimeout: sc.Queues.IdleTimeout},
		Limits:        stomp.Limits{MaxFrameSize: sc.MaxFrameSize, MaxHeaders: sc.MaxHeaders, MaxHeaderLine: sc.MaxHeaderLength},
		HeartBeatSend: hb(sc.HeartBeatSend), HeartBeatReceive: hb(sc.HeartBeatReceive),
		ConnectTimeout: sc.ConnectTimeout, WriteTimeout: sc.WriteTimeout,
		MaxPendingBytes: sc.MaxPendingBytes, MaxSubscriptions: sc.MaxSubscriptions,
		MaxTransactions: sc.MaxTransactions, MaxTxFrames: sc.MaxTransactionFrames,
		Version: sys.BuildVersion(), Log: n.log, Registerer: n.reg,
	})
	if err != nil {
		return fmt.Errorf("stomp gateway: %w", err)
	}
	n.Stomp = g
	for _, l := range stompLns {
		name := l.Config().Name
		go func() {
			if err := g.Serve(n.Metrics.WrapListener(netListener{l}, name), name); err != nil && !errors.Is(err, net.ErrClosed) {
				n.log.Debug("listener stopped", "listener", name, "err", err)
			}
		}()
	}
	return nil
}
