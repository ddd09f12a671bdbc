package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/prometheus/client_golang/prometheus"
)

// Membership timing defaults (memberlist.DefaultLANConfig values, stated
// here because the failure-detection time in docs/configuration.md follows
// from them): members are probed in turn every ProbeInterval; one that
// fails a probe (direct and indirect) is suspected, and declared dead when
// the suspicion timeout ends: SuspicionMult * max(1, log10(N)) *
// ProbeInterval, up to 6 times that when the others do not confirm. With
// 1 s / 500 ms / 4 and three nodes, a stopped node is dead after 5-6 s.
const (
	DefaultProbeInterval  = time.Second
	DefaultProbeTimeout   = 500 * time.Millisecond
	DefaultSuspicionMult  = 4
	DefaultGossipInterval = 200 * time.Millisecond
	DefaultRejoinInterval = 2 * time.Second

	// deadNodeReclaimTime lets a node that was declared dead come back
	// under the same name from another address (a restart on a new
	// port or IP) this long after it was declared dead.
	deadNodeReclaimTime = 10 * time.Second
	// startupJoinWindow: for this long after start the seeds are joined
	// on every rejoin tick even when other members are visible, because a
	// restarted node (new address) is only accepted by the others once its
	// previous incarnation has been dead for deadNodeReclaimTime, while it
	// sees them at once.
	startupJoinWindow = 3 * deadNodeReclaimTime
	// seedResolveTimeout bounds one resolution of the seed list.
	seedResolveTimeout = 5 * time.Second
	// goneRetention is how long a dead or departed member stays listed.
	goneRetention = time.Hour
	// maxLeaveIntents bounds the remembered leave announcements.
	maxLeaveIntents = 1024
	// metaVersion is the "v" of the node metadata.
	metaVersion = 1
)

// MemberState is a member's state as this node sees it.
type MemberState uint8

const (
	MemberAlive MemberState = iota
	// MemberSuspect is defined for the status API; memberlist v0.7.0 does
	// not report suspicion to its delegates, so members are listed as
	// alive until they are declared dead.
	MemberSuspect
	MemberDead
	// MemberDeparted is the state of a member that left gracefully
	// ("left"; not MemberLeft, which is the event kind).
	MemberDeparted
)

func (s MemberState) String() string {
	switch s {
	case MemberAlive:
		return "alive"
	case MemberSuspect:
		return "suspect"
	case MemberDead:
		return "dead"
	case MemberDeparted:
		return "left"
	}
	return fmt.Sprintf("MemberState(%d)", uint8(s))
}

// Member is one node of the cluster.
type Member struct {
	Name string
	// Addr is the node's advertised host:port (gossip and links).
	Addr string
	// Start is the node's incarnation: the unix time in nanoseconds its
	// process started the membership. A restarted node has a new one.
	Start int64
	State MemberState
}

// MemberEventKind says what happened to a member.
type MemberEventKind uint8

const (
	// MemberJoined: a node (or a new incarnation of a known name) is alive.
	MemberJoined MemberEventKind = iota
	// MemberUpdated: an alive member changed its address or metadata,
	// same incarnation.
	MemberUpdated
	// MemberFailed: a member was declared dead, or was replaced by a new
	// incarnation (then MemberJoined for the new one follows).
	MemberFailed
	// MemberLeft: a member left gracefully (Leave).
	MemberLeft
)

func (k MemberEventKind) String() string {
	switch k {
	case MemberJoined:
		return "joined"
	case MemberUpdated:
		return "updated"
	case MemberFailed:
		return "failed"
	case MemberLeft:
		return "left"
	}
	return fmt.Sprintf("MemberEventKind(%d)", uint8(k))
}

// MemberEvent is one change of another node (never of the local one).
type MemberEvent struct {
	Kind   MemberEventKind
	Member Member
}

// MembershipConfig configures StartMembership.
type MembershipConfig struct {
	NodeName string
	// Bind is the ip:port of the cluster port (UDP gossip, TCP gossip
	// streams and node links). Port 0 picks a free port.
	Bind string
	// Advertise is the ip:port the other nodes use ("" = the bound
	// address; required when Bind is 0.0.0.0 or [::]; port 0 = the
	// bound port).
	Advertise string
	// Seeds are joined at start and re-resolved and rejoined while this
	// node sees no other member (see ResolveSeeds for the forms).
	Seeds []string
	// Secret is the cluster secret (LoadSecret), at least MinSecretLen
	// bytes; the gossip key is derived from it.
	Secret []byte
	// Start is this incarnation (unix ns); 0 = now.
	Start int64
	// Failure detector and gossip timings; 0 = the Default* values.
	ProbeInterval, ProbeTimeout, GossipInterval time.Duration
	SuspicionMult                               int
	// RejoinInterval is the seed retry period; 0 = 2s.
	RejoinInterval time.Duration
	// Resolver resolves seed names; nil = net.DefaultResolver.
	Resolver   Resolver
	Logger     *slog.Logger
	Registerer prometheus.Registerer

	// peekTimeout overrides defaultPeekTimeout (tests).
	peekTimeout time.Duration
}

// Membership is this node's view of the cluster, kept by memberlist (SWIM
// gossip, encrypted with a key derived from the cluster secret) over the
// node's cluster port, which it also shares with the node links.
type Membership struct {
	cfg     MembershipConfig
	log     *slog.Logger
	tr      *muxTransport
	ml      *memberlist.Memberlist
	bq      *memberlist.TransmitLimitedQueue
	metrics *membershipMetrics
	onEvent func(MemberEvent)
	local   string // this node's name

	mu           sync.Mutex
	members      map[string]*memberRec
	leaveIntents map[string]int64 // name -> Start announced as leaving

	qmu    sync.Mutex
	queue  []rawEvent
	qready chan struct{}

	stop     chan struct{}
	stopCtx  context.Context
	stopFn   context.CancelFunc
	wg       sync.WaitGroup // event loop, rejoin loop
	sendWG   sync.WaitGroup // leave announcements
	leaving  atomic.Bool
	shutdown atomic.Bool
	// lifeMu serialises Leave and Shutdown (memberlist panics on a leave
	// after its shutdown).
	lifeMu sync.Mutex
}

type memberRec struct {
	Member
	since time.Time
}

type rawEventKind uint8

const (
	rawJoin rawEventKind = iota
	rawUpdate
	rawLeave
)

type rawEvent struct {
	kind rawEventKind
	name string
	addr string
	meta []byte
}

// nodeMeta is memberlist's per-node metadata.
type nodeMeta struct {
	V     int   `json:"v"`
	Start int64 `json:"start"`
}

func parseMeta(b []byte) (nodeMeta, error) {
	var m nodeMeta
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("bad node metadata: %w", err)
	}
	if m.V != metaVersion {
		return m, fmt.Errorf("node metadata version %d, this node speaks %d", m.V, metaVersion)
	}
	return m, nil
}

// leaveIntent is the user message a leaving node sends to every member
// before memberlist's leave, so that they report MemberLeft rather than
// MemberFailed (memberlist does not tell its delegates which it was).
type leaveIntent struct {
	Leave string `json:"leave"`
	Start int64  `json:"start"`
}

// StartMembership binds the cluster port, starts memberlist and the seed
// join loop. onEvent (may be nil) receives the other nodes' changes, one at
// a time and in order, from one goroutine, never with a lock of the
// Membership held; it must not call Shutdown or Leave (it would wait for
// itself). It is not called after Shutdown returns.
func StartMembership(cfg MembershipConfig, onEvent func(MemberEvent)) (*Membership, error) {
	if cfg.NodeName == "" {
		return nil, errors.New("cluster: a node name is required")
	}
	if len(cfg.Secret) < MinSecretLen {
		return nil, fmt.Errorf("cluster: the secret must be at least %d bytes", MinSecretLen)
	}
	if cfg.Start == 0 {
		cfg.Start = time.Now().UnixNano()
	}
	if cfg.ProbeInterval <= 0 {
		cfg.ProbeInterval = DefaultProbeInterval
	}
	if cfg.ProbeTimeout <= 0 {
		cfg.ProbeTimeout = DefaultProbeTimeout
	}
	if cfg.GossipInterval <= 0 {
		cfg.GossipInterval = DefaultGossipInterval
	}
	if cfg.SuspicionMult <= 0 {
		cfg.SuspicionMult = DefaultSuspicionMult
	}
	if cfg.RejoinInterval <= 0 {
		cfg.RejoinInterval = DefaultRejoinInterval
	}
	if cfg.Resolver == nil {
		cfg.Resolver = net.DefaultResolver
	}
	lg := cfg.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	lg = lg.With("component", "cluster")
	cfg.Seeds = slices.Clone(cfg.Seeds)
	m := &Membership{
		cfg:          cfg,
		log:          lg,
		onEvent:      onEvent,
		local:        cfg.NodeName,
		members:      map[string]*memberRec{},
		leaveIntents: map[string]int64{},
		qready:       make(chan struct{}, 1),
		stop:         make(chan struct{}),
	}
	m.stopCtx, m.stopFn = context.WithCancel(context.Background())
	met, err := newMembershipMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	m.metrics = met
	tr, err := newMuxTransport(cfg.Bind, cfg.Advertise, cfg.peekTimeout, lg, transportMetrics{
		gossipIn:  func(n int) { met.gossipIn.Add(float64(n)) },
		gossipOut: func(n int) { met.gossipOut.Add(float64(n)) },
		dropped:   func(reason string) { met.dropped.WithLabelValues(reason).Inc() },
	})
	if err != nil {
		met.unregister()
		return nil, err
	}
	m.tr = tr

	mc := memberlist.DefaultLANConfig()
	mc.Name = cfg.NodeName
	mc.Transport = tr
	mc.SecretKey = DeriveKey(cfg.Secret, GossipKeyLabel)
	mc.GossipVerifyIncoming = true
	mc.GossipVerifyOutgoing = true
	mc.ProbeInterval = cfg.ProbeInterval
	mc.ProbeTimeout = cfg.ProbeTimeout
	mc.SuspicionMult = cfg.SuspicionMult
	mc.GossipInterval = cfg.GossipInterval
	mc.DeadNodeReclaimTime = deadNodeReclaimTime
	// Bounds a push/pull (and a join attempt at an unreachable address,
	// e.g. across a split) at 3 s instead of 10: nodes are on one LAN.
	mc.TCPTimeout = 3 * time.Second
	mc.Events = (*eventDelegate)(m)
	mc.Delegate = (*dataDelegate)(m)
	mc.Alive = (*aliveDelegate)(m)
	mc.Logger = log.New(&memberlistLogWriter{log: lg}, "", 0)
	adv := tr.advertise
	mc.AdvertiseAddr = adv.Addr().String()
	mc.AdvertisePort = int(adv.Port())
	mc.BindAddr = tr.boundAddr().IP.String()
	mc.BindPort = tr.boundAddr().Port

	// Ready before memberlist starts gossiping (it asks for broadcasts).
	m.bq = &memberlist.TransmitLimitedQueue{NumNodes: m.NumAlive, RetransmitMult: mc.RetransmitMult}
	m.mu.Lock()
	m.members[m.local] = &memberRec{Member: Member{Name: m.local, Addr: adv.String(), Start: cfg.Start, State: MemberAlive}, since: time.Now()}
	m.mu.Unlock()
	m.updateGauges()

	ml, err := memberlist.Create(mc)
	if err != nil {
		_ = tr.Shutdown()
		met.unregister()
		return nil, fmt.Errorf("cluster: starting membership: %w", err)
	}
	m.ml = ml
	m.wg.Add(2)
	go m.eventLoop()
	go m.rejoinLoop()
	lg.Info("cluster membership started", "node", m.local, "bind", tr.boundAddr().String(), "advertise", adv.String(), "seeds", len(cfg.Seeds))
	return m, nil
}

// Local is this node.
func (m *Membership) Local() Member {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.members[m.local].Member
}

// Members lists every known member, this node included, sorted by name.
// Dead and departed members stay listed for an hour (or until a new
// incarnation replaces them).
func (m *Membership) Members() []Member {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Member, 0, len(m.members))
	for _, r := range m.members {
		out = append(out, r.Member)
	}
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// deadAddrs lists the addresses of members that failed (not those that
// left) less than goneRetention ago.
func (m *Membership) deadAddrs() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for _, r := range m.members {
		if r.State == MemberDead && r.Addr != "" && time.Since(r.since) < goneRetention {
			out = append(out, r.Addr)
		}
	}
	slices.Sort(out)
	return out
}

// NumAlive counts the alive members, this node included (unless it left).
func (m *Membership) NumAlive() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for _, r := range m.members {
		if r.State == MemberAlive || r.State == MemberSuspect {
			n++
		}
	}
	return n
}

// Links delivers accepted TCP connections that start like a node link,
// with that first byte still to be read. It is closed by Shutdown.
func (m *Membership) Links() <-chan net.Conn { return m.tr.Links() }

// DialLink opens a plain TCP connection to a node's cluster address from
// this node's bind address (same family and source IP when bound to one).
func (m *Membership) DialLink(ctx context.Context, addr string) (net.Conn, error) {
	if m.shutdown.Load() {
		return nil, net.ErrClosed
	}
	return m.tr.dialLink(ctx, addr)
}

// Leave announces a graceful departure: the others report MemberLeft (not
// MemberFailed). It waits at most timeout (half for the direct
// announcements, the rest for memberlist's leave broadcast). Membership
// keeps running until Shutdown. Calling it again does nothing.
func (m *Membership) Leave(timeout time.Duration) error {
	m.lifeMu.Lock()
	defer m.lifeMu.Unlock()
	if m.shutdown.Load() {
		return errors.New("cluster: leave after shutdown")
	}
	if m.leaving.Swap(true) {
		return nil
	}
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	deadline := time.Now().Add(timeout)
	self := m.Local()
	msg, _ := json.Marshal(leaveIntent{Leave: self.Name, Start: self.Start})
	m.bq.QueueBroadcast(leaveBroadcast{name: self.Name, msg: msg})

	// Tell every alive member directly (reliable, over TCP) first, so that
	// it knows before memberlist's dead message reaches it.
	var peers []*memberlist.Node
	for _, mem := range m.Members() {
		if mem.Name == m.local || (mem.State != MemberAlive && mem.State != MemberSuspect) {
			continue
		}
		ap, err := netip.ParseAddrPort(mem.Addr)
		if err != nil {
			continue
		}
		peers = append(peers, &memberlist.Node{Name: mem.Name, Addr: net.IP(ap.Addr().AsSlice()), Port: ap.Port()})
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	for _, p := range peers {
		wg.Add(1)
		m.sendWG.Add(1)
		go func() {
			defer m.sendWG.Done()
			defer wg.Done()
			if err := m.ml.SendReliable(p, msg); err != nil {
				m.log.Debug("cluster: could not announce leaving", "to", p.Name, "err", err)
			}
		}()
	}
	m.sendWG.Add(1)
	go func() { defer m.sendWG.Done(); wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(timeout / 2):
	}
	err := m.ml.Leave(max(time.Until(deadline), time.Millisecond))
	m.mu.Lock()
	if r := m.members[m.local]; r != nil {
		r.State, r.since = MemberDeparted, time.Now()
	}
	m.mu.Unlock()
	m.updateGauges()
	if err != nil {
		return fmt.Errorf("cluster: leave: %w", err)
	}
	m.log.Info("left the cluster", "node", m.local)
	return nil
}

// Shutdown stops memberlist, the transport (closing Links()) and the
// loops. Without Leave first, the others detect this node as failed.
// A Leave in progress finishes first (it is bounded by its timeout).
// Idempotent.
func (m *Membership) Shutdown() error {
	m.lifeMu.Lock()
	defer m.lifeMu.Unlock()
	if m.shutdown.Swap(true) {
		return nil
	}
	m.stopFn()
	close(m.stop)
	err := m.ml.Shutdown()
	_ = m.tr.Shutdown()
	m.wg.Wait()
	m.sendWG.Wait()
	m.metrics.unregister()
	if err != nil {
		return fmt.Errorf("cluster: shutdown: %w", err)
	}
	return nil
}

// enqueue is called by memberlist with its node lock held: it only copies.
func (m *Membership) enqueue(kind rawEventKind, n *memberlist.Node) {
	ev := rawEvent{kind: kind, name: n.Name, addr: n.Address(), meta: bytes.Clone(n.Meta)}
	m.qmu.Lock()
	m.queue = append(m.queue, ev)
	m.qmu.Unlock()
	select {
	case m.qready <- struct{}{}:
	default:
	}
}

func (m *Membership) eventLoop() {
	defer m.wg.Done()
	prune := time.NewTicker(time.Minute)
	defer prune.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-prune.C:
			m.pruneGone()
			continue
		case <-m.qready:
		}
		for {
			m.qmu.Lock()
			if len(m.queue) == 0 {
				m.queue = nil
				m.qmu.Unlock()
				break
			}
			ev := m.queue[0]
			m.queue[0] = rawEvent{}
			m.queue = m.queue[1:]
			m.qmu.Unlock()
			for _, out := range m.apply(ev) {
				select {
				case <-m.stop:
					return
				default:
				}
				m.metrics.events.WithLabelValues(out.Kind.String()).Inc()
				if m.onEvent != nil {
					m.onEvent(out)
				}
			}
		}
	}
}

// apply updates the member table with one memberlist notification and
// returns the events it means.
func (m *Membership) apply(ev rawEvent) []MemberEvent {
	if ev.name == m.local {
		return nil
	}
	meta, _ := parseMeta(ev.meta) // the alive delegate refused bad metadata
	now := time.Now()
	var out []MemberEvent
	m.mu.Lock()
	old := m.members[ev.name]
	oldAlive := old != nil && (old.State == MemberAlive || old.State == MemberSuspect)
	cur := Member{Name: ev.name, Addr: ev.addr, Start: meta.Start, State: MemberAlive}
	switch ev.kind {
	case rawJoin, rawUpdate:
		switch {
		case oldAlive && old.Start != meta.Start:
			// A new incarnation replaced one we had not seen die.
			gone := old.Member
			gone.State = MemberDead
			out = append(out, MemberEvent{Kind: MemberFailed, Member: gone}, MemberEvent{Kind: MemberJoined, Member: cur})
		case oldAlive:
			if old.Addr != cur.Addr || ev.kind == rawUpdate {
				out = append(out, MemberEvent{Kind: MemberUpdated, Member: cur})
			}
		default:
			out = append(out, MemberEvent{Kind: MemberJoined, Member: cur})
		}
		if old == nil || old.State != MemberAlive || old.Start != cur.Start {
			m.members[ev.name] = &memberRec{Member: cur, since: now}
		} else {
			old.Member = cur
		}
		if m.leaveIntents[ev.name] != cur.Start {
			delete(m.leaveIntents, ev.name)
		}
	case rawLeave:
		if old != nil && !oldAlive && old.Start == meta.Start {
			break // already reported
		}
		kind, state := MemberFailed, MemberDead
		if s, ok := m.leaveIntents[ev.name]; ok && s == meta.Start {
			kind, state = MemberLeft, MemberDeparted
			delete(m.leaveIntents, ev.name)
		}
		cur.State = state
		m.members[ev.name] = &memberRec{Member: cur, since: now}
		out = append(out, MemberEvent{Kind: kind, Member: cur})
	}
	m.mu.Unlock()
	if len(out) > 0 {
		m.updateGauges()
	}
	return out
}

func (m *Membership) pruneGone() {
	m.mu.Lock()
	for name, r := range m.members {
		if name != m.local && (r.State == MemberDead || r.State == MemberDeparted) && time.Since(r.since) > goneRetention {
			delete(m.members, name)
		}
	}
	m.mu.Unlock()
	m.updateGauges()
}

func (m *Membership) updateGauges() {
	var n [4]int
	m.mu.Lock()
	for _, r := range m.members {
		if int(r.State) < len(n) {
			n[r.State]++
		}
	}
	m.mu.Unlock()
	for s := range n {
		m.metrics.members.WithLabelValues(MemberState(s).String()).Set(float64(n[s]))
	}
}

// noteLeaveIntent records a member's announcement that it is leaving.
func (m *Membership) noteLeaveIntent(msg []byte) {
	var li leaveIntent
	if err := json.Unmarshal(msg, &li); err != nil || li.Leave == "" || li.Leave == m.local {
		return
	}
	m.mu.Lock()
	if len(m.leaveIntents) >= maxLeaveIntents {
		clear(m.leaveIntents)
	}
	m.leaveIntents[li.Leave] = li.Start
	m.mu.Unlock()
}

// rejoinLoop joins the seeds at start, then every RejoinInterval while this
// node sees no other alive member (and, during startupJoinWindow, always),
// re-resolving them each time. It stops on Shutdown.
func (m *Membership) rejoinLoop() {
	defer m.wg.Done()
	if len(m.cfg.Seeds) == 0 {
		return
	}
	window := time.Now().Add(startupJoinWindow)
	timer := time.NewTimer(0)
	defer timer.Stop()
	failing := false
	var lastDeadTry time.Time
	for {
		select {
		case <-m.stop:
			return
		case <-timer.C:
		}
		// Members that failed (not departed) are tried too, every few
		// ticks: after a split heals, each side still sees members of its
		// own, and memberlist stops gossiping to the dead after
		// GossipToTheDeadTime, so nothing else would bring the sides back
		// together.
		var extra []string
		if dead := m.deadAddrs(); len(dead) > 0 && time.Since(lastDeadTry) >= 3*m.cfg.RejoinInterval {
			lastDeadTry = time.Now()
			extra = dead
		}
		if !m.leaving.Load() && (time.Now().Before(window) || m.ml.NumMembers() <= 1 || len(extra) > 0) {
			err := m.joinSeeds(extra...)
			switch {
			case errors.Is(err, errOnlySelf):
				// A first node whose seed list names only itself.
			case err != nil && !failing && m.stopCtx.Err() == nil:
				m.log.Warn("cluster: cannot join any seed yet, retrying", "every", m.cfg.RejoinInterval, "err", err)
				failing = true
			case err != nil:
				m.log.Debug("cluster: joining the seeds failed", "err", err)
			case failing:
				m.log.Info("cluster: joined the seeds")
				failing = false
			}
		}
		timer.Reset(m.cfg.RejoinInterval)
	}
}

var errOnlySelf = errors.New("the seeds name only this node")

func (m *Membership) joinSeeds(extra ...string) error {
	ctx, cancel := context.WithTimeout(m.stopCtx, seedResolveTimeout)
	addrs, err := ResolveSeeds(ctx, m.cfg.Resolver, m.cfg.Seeds)
	cancel()
	for _, a := range extra {
		if !slices.Contains(addrs, a) {
			addrs = append(addrs, a)
		}
	}
	self := map[string]bool{m.tr.advertise.String(): true, m.tr.boundAddr().String(): true}
	addrs = slices.DeleteFunc(addrs, func(a string) bool { return self[a] })
	if len(addrs) == 0 {
		if err == nil {
			err = errOnlySelf
		}
		return err
	}
	if _, jerr := m.ml.Join(addrs); jerr != nil {
		return jerr
	}
	return nil
}

// eventDelegate, dataDelegate and aliveDelegate are Membership's faces
// towards memberlist.
type (
	eventDelegate Membership
	dataDelegate  Membership
	aliveDelegate Membership
)

func (d *eventDelegate) NotifyJoin(n *memberlist.Node) { (*Membership)(d).enqueue(rawJoin, n) }
func (d *eventDelegate) NotifyLeave(n *memberlist.Node) {
	(*Membership)(d).enqueue(rawLeave, n)
}
func (d *eventDelegate) NotifyUpdate(n *memberlist.Node) { (*Membership)(d).enqueue(rawUpdate, n) }

func (d *dataDelegate) NodeMeta(limit int) []byte {
	b, _ := json.Marshal(nodeMeta{V: metaVersion, Start: d.cfg.Start})
	if len(b) > limit {
		return nil
	}
	return b
}

func (d *dataDelegate) NotifyMsg(b []byte) { (*Membership)(d).noteLeaveIntent(b) }

func (d *dataDelegate) GetBroadcasts(overhead, limit int) [][]byte {
	return d.bq.GetBroadcasts(overhead, limit)
}

func (d *dataDelegate) LocalState(bool) []byte              { return nil }
func (d *dataDelegate) MergeRemoteState(buf []byte, _ bool) {}

// NotifyAlive refuses nodes whose metadata this version does not
// understand (another protocol version, or not an Isobar node).
func (d *aliveDelegate) NotifyAlive(n *memberlist.Node) error {
	if _, err := parseMeta(n.Meta); err != nil {
		return err
	}
	return nil
}

type leaveBroadcast struct {
	name string
	msg  []byte
}

func (b leaveBroadcast) Invalidates(other memberlist.Broadcast) bool {
	o, ok := other.(leaveBroadcast)
	return ok && o.name == b.name
}
func (b leaveBroadcast) Message() []byte { return b.msg }
func (b leaveBroadcast) Finished()       {}

// memberlistLogWriter turns memberlist's "[LEVEL] memberlist: text" lines
// into slog records. Warnings and errors are limited to memberlistLogBurst
// per memberlistLogWindow (anyone can send packets that fail to decrypt),
// and the number suppressed is logged when the next window opens.
type memberlistLogWriter struct {
	log *slog.Logger

	mu         sync.Mutex
	window     time.Time
	n          int
	suppressed int
}

const (
	memberlistLogBurst  = 20
	memberlistLogWindow = time.Minute
)

func (w *memberlistLogWriter) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(p))
	level := slog.LevelInfo
	for _, l := range []struct {
		tag string
		lvl slog.Level
	}{{"[DEBUG]", slog.LevelDebug}, {"[INFO]", slog.LevelInfo}, {"[WARN]", slog.LevelWarn}, {"[ERR]", slog.LevelError}, {"[ERROR]", slog.LevelError}, {"Err:", slog.LevelError}} {
		if rest, ok := strings.CutPrefix(line, l.tag); ok {
			level, line = l.lvl, strings.TrimSpace(rest)
			break
		}
	}
	line = strings.TrimPrefix(line, "memberlist: ")
	ctx := context.Background()
	if level >= slog.LevelWarn {
		w.mu.Lock()
		now := time.Now()
		if now.Sub(w.window) >= memberlistLogWindow {
			if w.suppressed > 0 {
				w.log.Warn("memberlist: warnings suppressed (rate limit)", "count", w.suppressed, "window", memberlistLogWindow)
			}
			w.window, w.n, w.suppressed = now, 0, 0
		}
		w.n++
		drop := w.n > memberlistLogBurst
		if drop {
			w.suppressed++
		}
		w.mu.Unlock()
		if drop {
			return len(p), nil
		}
	}
	w.log.Log(ctx, level, "memberlist: "+line)
	return len(p), nil
}

// membershipMetrics are the membership's Prometheus metrics.
type membershipMetrics struct {
	reg                 prometheus.Registerer
	members             *prometheus.GaugeVec
	events              *prometheus.CounterVec
	gossip              *prometheus.CounterVec
	gossipIn, gossipOut prometheus.Counter
	dropped             *prometheus.CounterVec
	registered          []prometheus.Collector
}

func newMembershipMetrics(reg prometheus.Registerer) (*membershipMetrics, error) {
	mm := &membershipMetrics{
		reg: reg,
		members: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "isobar_cluster_members",
			Help: "Cluster members known to this node (itself included), by state.",
		}, []string{"state"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "isobar_cluster_member_events_total",
			Help: "Membership changes of other nodes seen by this node, by kind (joined, updated, failed, left).",
		}, []string{"kind"}),
		gossip: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "isobar_cluster_gossip_bytes_total",
			Help: "Bytes of membership gossip (UDP packets and TCP push/pull streams), by direction (in, out).",
		}, []string{"direction"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "isobar_cluster_transport_dropped_conns_total",
			Help: "TCP connections to the cluster port closed before use, by reason (silent: nothing sent within 5s; pending_limit: too many unidentified connections; stream_limit: too many gossip streams open; link_backlog: the link layer was not taking new links).",
		}, []string{"reason"}),
	}
	mm.gossipIn = mm.gossip.WithLabelValues("in")
	mm.gossipOut = mm.gossip.WithLabelValues("out")
	for _, s := range []MemberState{MemberAlive, MemberSuspect, MemberDead, MemberDeparted} {
		mm.members.WithLabelValues(s.String())
	}
	for _, k := range []MemberEventKind{MemberJoined, MemberUpdated, MemberFailed, MemberLeft} {
		mm.events.WithLabelValues(k.String())
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{mm.members, mm.events, mm.gossip, mm.dropped} {
			if err := reg.Register(c); err != nil {
				mm.unregister()
				return nil, fmt.Errorf("cluster: registering metrics: %w", err)
			}
			mm.registered = append(mm.registered, c)
		}
	}
	return mm, nil
}

func (mm *membershipMetrics) unregister() {
	if mm.reg == nil {
		return
	}
	for _, c := range mm.registered {
		mm.reg.Unregister(c)
	}
	mm.registered = nil
}
