// Package cluster makes several Isobar nodes act as one broker.
//
// Membership and failure detection are hashicorp/memberlist's (SWIM);
// this package adds node-to-node links (one authenticated TCP connection
// per direction per pair, on the gossip port), interest propagation
// (each node is the only writer of its own routes), forwarding with
// acknowledgements (a remote node is a broker.Subscriber that holds the
// publisher's transaction until the node took the message), retained
// message replication (last writer wins on a hybrid logical clock) and
// cluster-wide client identifiers (claims). docs/cluster.md has the
// design and the failure table.
package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/isobar-mq/isobar/internal/broker"
	"github.com/isobar-mq/isobar/internal/hlc"
	"github.com/prometheus/client_golang/prometheus"
)

// Config configures a cluster node.
type Config struct {
	NodeName  string
	Bind      string
	Advertise string
	Seeds     []string
	Secret    []byte
	// TLS, when set, is the mutual TLS configuration of node links.
	TLS *tls.Config

	ProbeInterval, ProbeTimeout, GossipInterval time.Duration
	SuspicionMult                               int

	// LinkQueueBytes bounds each peer's outbound buffer and the bytes of
	// QoS 1/2 messages waiting for its acknowledgement. Default 64 MiB.
	LinkQueueBytes int
	// MaxFrame bounds one frame. Default 64 MiB.
	MaxFrame int
	// ClaimTimeout bounds how long a CONNECT waits for the other nodes'
	// answers about its client identifier. Default 2 s.
	ClaimTimeout time.Duration
	// DrainTimeout bounds a graceful leave. Default 30 s.
	DrainTimeout time.Duration
	// TombstoneTTL is how long a retained-message deletion is remembered
	// (so a node that missed it cannot bring the message back). Default
	// 24 h.
	TombstoneTTL time.Duration
	// Resolver resolves DNS seeds (nil = the system's).
	Resolver Resolver
	// Replicas is how many other nodes hold a copy of each persistent
	// session (0 = no replication).
	Replicas int
	// AckLocal: a QoS 1/2 publish for a replicated session is acknowledged
	// once the owner has it; replicas get it through the owner's change
	// stream afterwards (what the owner acknowledged and had not shipped
	// when it died is lost). Default: replicated, the replicas take it
	// before the acknowledgement.
	AckLocal bool

	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

func (c *Config) setDefaults() {
	if c.LinkQueueBytes <= 0 {
		c.LinkQueueBytes = 64 << 20
	}
	if c.MaxFrame <= 0 {
		c.MaxFrame = DefaultMaxFrame
	}
	if c.ClaimTimeout <= 0 {
		c.ClaimTimeout = 2 * time.Second
	}
	if c.DrainTimeout <= 0 {
		c.DrainTimeout = 30 * time.Second
	}
	if c.TombstoneTTL <= 0 {
		c.TombstoneTTL = 24 * time.Hour
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Node is this process's member of a cluster.
type Node struct {
	cfg   Config
	log   *slog.Logger
	clock *hlc.Clock
	start int64
	srv   *broker.Server
	ml    *Membership
	lm    *LinkMetrics
	hs    HandshakeConfig
	met   *metrics

	mu       sync.Mutex
	peers    map[string]*peer // by node name
	inbound  map[string]*Link // latest accepted link per peer name
	state    string
	closed   bool
	claims   map[string]*localClaim // CONNECTs in progress here, by client id
	nextReq  uint64
	requests map[uint64]chan reply // outstanding requests to peers
	inSeqs   map[string]uint64     // committed sequence of departed peer objects, by name/start

	repl *replicator // nil without replication
	svc  serviceRegistry

	ihMu   sync.Mutex
	ihash  uint64 // digest of our interest (sum of routeHash)
	icount int

	tombMu     sync.Mutex
	tombstones map[string]tombstone

	claimSem chan struct{} // bounds concurrent claim handlers
	quit     chan struct{}
	wg       sync.WaitGroup
}

// New prepares a cluster node; Start joins it once the broker exists.
// Pass the node to the broker through BrokerOptions first.
func New(cfg Config) (*Node, error) {
	cfg.setDefaults()
	if cfg.NodeName == "" {
		return nil, errors.New("cluster: node name required")
	}
	if len(cfg.Secret) < 32 {
		return nil, errors.New("cluster: secret must be at least 32 bytes")
	}
	n := &Node{
		cfg:        cfg,
		log:        cfg.Logger.With("component", "cluster"),
		clock:      new(hlc.Clock),
		start:      time.Now().UnixNano(),
		peers:      make(map[string]*peer),
		inbound:    make(map[string]*Link),
		claims:     make(map[string]*localClaim),
		requests:   make(map[uint64]chan reply),
		inSeqs:     make(map[string]uint64),
		tombstones: make(map[string]tombstone),
		state:      "starting",
		claimSem:   make(chan struct{}, 256),
		quit:       make(chan struct{}),
	}
	if cfg.Replicas > 0 {
		n.repl = newReplicator(n, cfg.Replicas, !cfg.AckLocal)
	}
	n.hs = HandshakeConfig{LocalName: cfg.NodeName, LocalStart: n.start, Key: DeriveKey(cfg.Secret, LinkKeyLabel), TLS: cfg.TLS}
	n.lm = NewLinkMetrics(cfg.Registerer)
	n.hs.Metrics, n.hs.Logger = n.lm, n.log
	n.met = newMetrics(n, cfg.Registerer)
	return n, nil
}

// BrokerOptions plugs the node into the broker's cluster seams.
func (n *Node) BrokerOptions(o *broker.Options) {
	o.NodeName = n.cfg.NodeName
	o.Interest = (*interestObserver)(n)
	o.Retained = (*retainObserver)(n)
	o.Directory = (*directory)(n)
	o.Clock = n.clock
}

// Start joins the cluster: membership, then links to every member.
func (n *Node) Start(srv *broker.Server) error {
	n.srv = srv
	ml, err := StartMembership(MembershipConfig{
		NodeName: n.cfg.NodeName, Bind: n.cfg.Bind, Advertise: n.cfg.Advertise,
		Seeds: n.cfg.Seeds, Secret: n.cfg.Secret, Start: n.start,
		ProbeInterval: n.cfg.ProbeInterval, ProbeTimeout: n.cfg.ProbeTimeout,
		GossipInterval: n.cfg.GossipInterval, SuspicionMult: n.cfg.SuspicionMult,
		Resolver: n.cfg.Resolver, Logger: n.cfg.Logger, Registerer: n.cfg.Registerer,
	}, n.memberEvent)
	if err != nil {
		return err
	}
	n.mu.Lock()
	n.ml = ml
	n.state = "running"
	n.mu.Unlock()
	n.wg.Add(2)
	go n.acceptLoop()
	go n.housekeeping()
	// Members already known when we joined (the events may have raced
	// the assignment of n.ml).
	for _, m := range ml.Members() {
		if m.Name != n.cfg.NodeName && m.State == MemberAlive {
			n.memberEvent(MemberEvent{Kind: MemberJoined, Member: m})
		}
	}
	return nil
}

// Name is this node's name.
func (n *Node) Name() string { return n.cfg.NodeName }

// Addr is the address the node's gossip and links listen on.
func (n *Node) Addr() string {
	if n.ml == nil {
		return ""
	}
	return n.ml.Local().Addr
}

// memberEvent follows membership: a link to every alive member, and a
// dead or departed member's routes and in-flight messages dealt with.
func (n *Node) memberEvent(ev MemberEvent) {
	m := ev.Member
	if m.Name == n.cfg.NodeName {
		return
	}
	n.met.memberEvents.WithLabelValues(ev.Kind.String()).Inc()
	switch ev.Kind {
	case MemberJoined, MemberUpdated:
		n.mu.Lock()
		if n.closed || n.ml == nil {
			n.mu.Unlock()
			return
		}
		p := n.peers[m.Name]
		if p != nil && p.start != m.Start && m.Start != 0 {
			// Restarted with the same name: the old incarnation is gone.
			delete(n.peers, m.Name)
			n.mu.Unlock()
			p.gone()
			n.mu.Lock()
			p = nil
		}
		if p == nil {
			p = n.newPeerLocked(m)
			n.peers[m.Name] = p
			n.mu.Unlock()
			p.startDialer()
			n.log.Info("cluster member joined", "node", m.Name, "addr", m.Addr)
			n.servicesChanged()
			return
		}
		p.setAddr(m.Addr)
		n.mu.Unlock()
	case MemberFailed, MemberLeft:
		n.mu.Lock()
		p := n.peers[m.Name]
		if p != nil && (m.Start == 0 || p.start == m.Start) {
			delete(n.peers, m.Name)
		} else {
			p = nil
		}
		var in *Link
		if p != nil {
			in = n.inbound[m.Name]
			// Kept for a flap (declared dead, same incarnation back): what
			// was committed from it is not taken twice on the new link.
			if len(n.inSeqs) > 4096 {
				clear(n.inSeqs)
			}
			n.inSeqs[inSeqKey(p.name, p.start)] = p.inSeq.Load()
		}
		n.mu.Unlock()
		if in != nil {
			// Its frames went to the peer object being dropped: the link
			// must start over (snapshots) with the new one.
			in.Close(errors.New("member gone"))
		}
		if p != nil {
			n.log.Warn("cluster member gone", "node", m.Name, "how", ev.Kind.String())
			p.gone()
			n.servicesPeerDown(m.Name)
			if n.repl != nil {
				n.wg.Add(1)
				go func() {
					defer n.wg.Done()
					n.repl.ownerGone(m.Name)
					n.repl.rebalance("")
				}()
			}
		}
	}
}

// acceptLoop authenticates the links other nodes open to this one.
func (n *Node) acceptLoop() {
	defer n.wg.Done()
	sem := make(chan struct{}, 64)
	for conn := range n.ml.Links() {
		select {
		case sem <- struct{}{}:
		default:
			_ = conn.Close()
			continue
		}
		n.wg.Add(1)
		go func(conn net.Conn) {
			defer n.wg.Done()
			defer func() { <-sem }()
			c, info, err := ServerHandshake(conn, n.hs)
			if err != nil {
				return // counted and logged (rate-limited) by the handshake; conn closed
			}
			n.acceptLink(c, info)
		}(conn)
	}
}

// acceptLink runs an inbound link: the peer's frames to us, our replies.
func (n *Node) acceptLink(conn net.Conn, info PeerInfo) {
	in := newInbound(n, info)
	if in.p = n.peerFor(info); in.p == nil {
		_ = conn.Close() // a stale incarnation, or shutting down
		return
	}
	// The previous link from this peer ends first, and its workers commit
	// what they took before this one starts (so resends are recognised).
	n.mu.Lock()
	old := n.inbound[info.Name]
	n.mu.Unlock()
	if old != nil {
		old.Close(errors.New("replaced by a newer link"))
	}
	in.p.inMu.Lock()
	defer in.p.inMu.Unlock()
	in.start()
	defer in.stop()
	ready := make(chan struct{})
	l := NewLink(conn, info, n.linkConfig(), func(l *Link, t FrameType, b []byte) {
		<-ready
		in.handle(l, t, b)
	})
	in.link = l
	close(ready)
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		l.Close(errors.New("shutting down"))
		return
	}
	if cur := n.inbound[info.Name]; cur != nil && cur != old {
		cur.Close(errors.New("replaced by a newer link"))
	}
	n.inbound[info.Name] = l
	n.mu.Unlock()
	<-l.Done()
	n.mu.Lock()
	if n.inbound[info.Name] == l {
		delete(n.inbound, info.Name)
	}
	n.mu.Unlock()
	// Before the next link from this peer is processed (it waits for
	// inMu), so services see the loss before that link's messages.
	n.servicesPeerDown(info.Name)
}

func (n *Node) linkConfig() LinkConfig {
	return LinkConfig{QueueBytes: n.cfg.LinkQueueBytes, MaxFrame: n.cfg.MaxFrame, Logger: n.log, Metrics: n.lm}
}

func inSeqKey(name string, start int64) string { return fmt.Sprintf("%s/%d", name, start) }

// newPeerLocked makes a peer object, resuming the committed sequence of a
// previous object for the same incarnation. Requires n.mu.
func (n *Node) newPeerLocked(m Member) *peer {
	p := newPeer(n, m)
	if v, ok := n.inSeqs[inSeqKey(m.Name, m.Start)]; ok {
		p.inSeq.Store(v)
		delete(n.inSeqs, inSeqKey(m.Name, m.Start))
	}
	return p
}

// peer returns a live peer by name.
func (n *Node) peer(name string) *peer {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.peers[name]
}

// livePeers returns the peers, sorted by name.
func (n *Node) livePeers() []*peer {
	n.mu.Lock()
	out := make([]*peer, 0, len(n.peers))
	for _, p := range n.peers {
		out = append(out, p)
	}
	n.mu.Unlock()
	slices.SortFunc(out, func(a, b *peer) int {
		if a.name < b.name {
			return -1
		}
		if a.name > b.name {
			return 1
		}
		return 0
	})
	return out
}

// housekeeping prunes tombstones and re-sends route snapshots now and then
// (anti-entropy against a lost update).
func (n *Node) housekeeping() {
	defer n.wg.Done()
	t := time.NewTicker(30 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-n.quit:
			return
		case <-t.C:
			n.pruneTombstones()
			if n.repl != nil {
				n.repl.prune()
				n.repl.rebalance("")
			}
			// Anti-entropy: a digest of our routes; a peer whose view
			// differs asks for the whole set (RouteResync).
			n.ihMu.Lock()
			var e Enc
			e.Uvarint(uint64(n.icount))
			e.U64(n.ihash)
			n.ihMu.Unlock()
			for _, p := range n.livePeers() {
				if l := p.link(); l != nil {
					l.Send(FrameRouteDigest, e.B, true)
				}
			}
		}
	}
}

// Status reports the cluster as this node sees it.
func (n *Node) Status() Status {
	st := Status{Node: n.cfg.NodeName}
	n.mu.Lock()
	st.State = n.state
	ml := n.ml
	n.mu.Unlock()
	st.LocalRoutes = n.srv.InterestCount()
	n.tombMu.Lock()
	st.RetainedTombstones = len(n.tombstones)
	n.tombMu.Unlock()
	if r := n.repl; r != nil {
		st.Replicas = r.k
		st.ReplicaCopies, st.Replicated = r.counts()
		st.UnderReplicated = int(r.underRepl.Load())
		st.ReplicaMessages = r.heldMessages()
		st.ReplicationLag = time.Duration(r.lagNs.Load())
	}
	if ml == nil {
		return st
	}
	for _, m := range ml.Members() {
		ms := MemberStatus{Name: m.Name, Addr: m.Addr, State: m.State.String(), Start: time.Unix(0, m.Start)}
		if m.Name == n.cfg.NodeName {
			ms.Local = true
		} else if p := n.peer(m.Name); p != nil {
			p.fill(&ms)
		} else {
			ms.Link = "down"
		}
		st.Members = append(st.Members, ms)
	}
	return st
}

// ClusterStatus is Status (for the web API's ClusterSource).
func (n *Node) ClusterStatus() Status { return n.Status() }

// Close leaves abruptly (no drain): links and membership stop. Peers
// detect the departure as a failure unless Leave ran first.
func (n *Node) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	ml := n.ml
	peers := n.peers
	n.peers = map[string]*peer{}
	inbound := n.inbound
	n.inbound = map[string]*Link{}
	n.mu.Unlock()
	close(n.quit)
	for _, p := range peers {
		p.stop()
	}
	for _, l := range inbound {
		l.Close(errors.New("shutting down"))
	}
	var err error
	if ml != nil {
		err = ml.Shutdown()
	}
	n.wg.Wait()
	return err
}

// Leave tells the others this node departs (they see it leave, not
// fail), then closes.
func (n *Node) Leave(timeout time.Duration) error {
	n.mu.Lock()
	ml := n.ml
	n.state = "left"
	n.mu.Unlock()
	if ml != nil {
		_ = ml.Leave(timeout)
	}
	return n.Close()
}

// request sends a request frame on the peer's outbound link and waits for
// its reply (matched by request id), until ctx ends.
func (n *Node) newRequest() (uint64, chan reply) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.nextReq++
	ch := make(chan reply, 1)
	n.requests[n.nextReq] = ch
	return n.nextReq, ch
}

func (n *Node) endRequest(id uint64) {
	n.mu.Lock()
	delete(n.requests, id)
	n.mu.Unlock()
}

func (n *Node) answer(id uint64, r reply) {
	n.mu.Lock()
	ch := n.requests[id]
	n.mu.Unlock()
	if ch != nil {
		select {
		case ch <- r:
		default:
		}
	}
}

// reply is a peer's answer to a request.
type reply struct {
	from string
	kind uint8
	body []byte
}

// waitCtx returns a context ending at timeout or when the node closes.
func (n *Node) waitCtx(parent context.Context, timeout time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(parent, timeout)
	go func() {
		select {
		case <-n.quit:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// ClusterRoutes lists the filters a node advertised to this one (this
// node's own interest for its own name), sorted; ok is false for a node
// it does not know.
func (n *Node) ClusterRoutes(name string) ([]string, bool) {
	if name == n.cfg.NodeName {
		var out []string
		n.srv.InterestSnapshot(func(f []string) { out = append(out, f...) })
		return out, true
	}
	p := n.peer(name)
	if p == nil {
		return nil, false
	}
	p.mu.Lock()
	out := make([]string, 0, len(p.routes))
	for f := range p.routes {
		out = append(out, f)
	}
	p.mu.Unlock()
	slices.Sort(out)
	return out, true
}
