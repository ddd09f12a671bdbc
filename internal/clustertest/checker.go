package clustertest

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/eclipse/paho.golang/paho/session/state"
	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// Flags of test binaries that import this package.
var (
	seedFlag  = flag.Uint64("seed", 0, "clustertest: seed of the checker and fault schedule (0: $ISOBAR_SEED or random)")
	chaosLong = flag.Bool("chaos.long", false, "clustertest: run the long fault schedule (also ISOBAR_CHAOS=long)")
)

// SeedEnv and ChaosEnv are the environment equivalents of -seed and
// -chaos.long (ISOBAR_CHAOS=long).
const (
	SeedEnv  = "ISOBAR_SEED"
	ChaosEnv = "ISOBAR_CHAOS"
)

// ChaosLong reports whether the long fault schedule was asked for.
func ChaosLong() bool { return *chaosLong || os.Getenv(ChaosEnv) == "long" }

// Seed returns the seed asked for with -seed or $ISOBAR_SEED, or a random
// one.
func Seed() uint64 {
	if *seedFlag != 0 {
		return *seedFlag
	}
	if s := os.Getenv(SeedEnv); s != "" {
		if v, err := strconv.ParseUint(s, 10, 64); err == nil && v != 0 {
			return v
		}
	}
	return rand.Uint64()>>1 | 1
}

// PublisherSpec describes one publisher: it publishes sequence numbers
// 1, 2, 3... to Topic, one at a time, and counts a message acknowledged
// only when its PUBACK (QoS 1) or PUBCOMP (QoS 2) arrived. On a failure it
// reconnects (clean session) to the next node of Nodes.
type PublisherSpec struct {
	ID       string        // client identifier; payloads carry it
	Nodes    []int         // nodes to connect to, in order (default: node 0)
	Version  int           // 5 (paho.golang) or 4 (paho.mqtt.golang, MQTT 3.1.1); default 5
	QoS      byte          // 1 or 2 (default 1)
	Topic    string        // default "chk/<ID>"
	Interval time.Duration // pause between publishes (default 20 ms)
}

// SubscriberSpec describes one subscriber with a persistent session
// (clean start false, session expiry 1 h): it reconnects, a bounded number
// of times, to the next of its Nodes (or Addrs) when its connection fails,
// and records every message it receives.
type SubscriberSpec struct {
	ID      string
	Nodes   []int  // nodes to connect to, in order (default: node 0)
	Version int    // 5 or 4, as for PublisherSpec
	QoS     byte   // subscription QoS, 1 or 2 (default 1)
	Filter  string // default "chk/#"
	// Addrs, when set, are dialled instead of the nodes' MQTT listeners
	// (a load balancer); such a subscriber's node is unknown, so every
	// fault window excuses its losses.
	Addrs []string
	// TLS, when set, is used on every connection.
	TLS *tls.Config
	// NoResubscribe: after a reconnection that found no session, do not
	// subscribe again, so that receipts prove the persistent session
	// itself survived (failover tests). An MQTT 3.1.1 subscriber with
	// NoResubscribe (or Flap) manages its own reconnections, one client
	// per connection, and reads session present from each CONNACK
	// (SessionLost counts it, as for MQTT 5).
	NoResubscribe bool
	// Flap, when set, takes the subscriber offline now and then: after
	// being connected for a random time in [Flap/2, 3*Flap/2) it
	// disconnects normally (DISCONNECT, the session kept), stays offline
	// for a random time in [FlapOffline/2, 3*FlapOffline/2) (default
	// FlapOffline: Flap/2), and reconnects to the same node. The draws
	// come from the checker's seed. Not with Addrs.
	Flap, FlapOffline time.Duration
}

// Checker runs publishers and subscribers against a Cluster and reports
// what was lost, duplicated or reordered. Create it with NewChecker, add
// clients, Start, inject faults (RunFaults or Fault), then Stop and Check.
type Checker struct {
	t    testing.TB
	c    *Cluster
	Seed uint64
	Rand *rand.Rand // seeded by Seed; for the test goroutine only

	// Grace widens every fault window on both sides: a message sent or
	// acknowledged that close to a fault may be lost without blame.
	Grace time.Duration

	mu         sync.Mutex
	pubs       []*publisher
	subs       []*subscriber
	windows    []window
	events     []string
	started    bool
	routesUp   chan struct{} // closed when every subscriber saw a probe of every publisher
	stopPub    chan struct{}
	stopSub    chan struct{}
	pubWG      sync.WaitGroup
	subWG      sync.WaitGroup
	stopped    bool
	routesOnce sync.Once
}

// window is a fault: between from and to, a message from a publisher on
// node p to a subscriber on node s may be lost when affects(p, s).
type window struct {
	what     string
	from, to time.Time
	affects  func(p, s int) bool
}

type pubRecord struct {
	node   int // node index it was sent to (-1: unknown)
	sent   time.Time
	acked  time.Time // zero: not acknowledged
	failed bool
}

type publisher struct {
	spec PublisherSpec
	recs []pubRecord // index seq-1
}

type stream struct {
	count    map[uint64]int
	maxSeq   uint64
	reorders int
	dup      [3]int // duplicates by the QoS they arrived with
	dupV3    int    // QoS 2 duplicates a paho.mqtt.golang subscriber was handed
	first    []uint64
}

type subscriber struct {
	spec  SubscriberSpec
	rng   *rand.Rand // flapping draws; its own goroutine only
	flaps int
	// Control by the test goroutine (under ch.mu): see Park, Unpark,
	// Drop and SubscriberAt.
	parked      chan struct{} // non-nil while parked; Unpark closes it
	next        int           // node to dial next (-1: follow Nodes)
	at          int           // node of the current or last connection (-1: none yet)
	online      bool
	cut         func() // drops the current connection (nil when offline)
	ready       chan struct{}
	readyOnce   sync.Once
	streams     map[string]*stream // by publisher ID
	probes      map[string]bool
	received    int
	connects    int
	sessionLost int
	unknown     int
}

// NewChecker returns a checker for cluster c (c may be nil if every
// subscriber and publisher is given Addrs... publishers need c). It logs
// its seed now and again if the test fails.
func NewChecker(t testing.TB, c *Cluster) *Checker {
	t.Helper()
	seed := Seed()
	ch := &Checker{
		t: t, c: c, Seed: seed, Rand: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		Grace:    2 * time.Second,
		routesUp: make(chan struct{}), stopPub: make(chan struct{}), stopSub: make(chan struct{}),
	}
	t.Logf("clustertest: seed %d (rerun with -seed=%d or %s=%d)", seed, seed, SeedEnv, seed)
	t.Cleanup(func() {
		ch.shutdown()
		if t.Failed() {
			ch.mu.Lock()
			ev := ch.events
			if len(ev) > 300 {
				ev = ev[len(ev)-300:]
			}
			ch.mu.Unlock()
			t.Logf("clustertest: checker events (last %d):\n%s", len(ev), strings.Join(ev, "\n"))
			t.Logf("clustertest: seed was %d (rerun with -seed=%d or %s=%d)", seed, seed, SeedEnv, seed)
		}
	})
	return ch
}

func (ch *Checker) event(format string, args ...any) {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if len(ch.events) > 5000 {
		ch.events = ch.events[1000:]
	}
	ch.events = append(ch.events, time.Now().Format("15:04:05.000")+" "+fmt.Sprintf(format, args...))
}

// AddPublisher registers a publisher (before Start).
func (ch *Checker) AddPublisher(s PublisherSpec) {
	if s.Version == 0 {
		s.Version = 5
	}
	if s.QoS == 0 {
		s.QoS = 1
	}
	if s.Topic == "" {
		s.Topic = "chk/" + s.ID
	}
	if s.Interval <= 0 {
		s.Interval = 20 * time.Millisecond
	}
	if len(s.Nodes) == 0 {
		s.Nodes = []int{0}
	}
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if ch.started {
		ch.t.Fatal("AddPublisher after Start")
	}
	ch.pubs = append(ch.pubs, &publisher{spec: s})
}

// AddSubscriber registers a subscriber (before Start).
func (ch *Checker) AddSubscriber(s SubscriberSpec) {
	if s.Version == 0 {
		s.Version = 5
	}
	if s.QoS == 0 {
		s.QoS = 1
	}
	if s.Filter == "" {
		s.Filter = "chk/#"
	}
	if len(s.Nodes) == 0 && len(s.Addrs) == 0 {
		s.Nodes = []int{0}
	}
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if ch.started {
		ch.t.Fatal("AddSubscriber after Start")
	}
	if s.Flap > 0 && s.FlapOffline <= 0 {
		s.FlapOffline = s.Flap / 2
	}
	k := uint64(len(ch.subs) + 1)
	ch.subs = append(ch.subs, &subscriber{spec: s, ready: make(chan struct{}), streams: map[string]*stream{}, probes: map[string]bool{},
		rng: rand.New(rand.NewPCG(ch.Seed^k, k*0x9e3779b97f4a7c15)), next: -1, at: -1})
}

// Start connects the subscribers (waiting for their subscriptions), then
// the publishers, which publish probe messages until every subscriber has
// received one from every publisher (routes have propagated), and then
// their counted sequence. It fails the test if that takes longer than
// total.
func (ch *Checker) Start(total time.Duration) {
	ch.t.Helper()
	ch.mu.Lock()
	ch.started = true
	subs, pubs := ch.subs, ch.pubs
	ch.mu.Unlock()
	deadline := time.Now().Add(total)
	for _, s := range subs {
		ch.subWG.Add(1)
		go ch.runSubscriber(s)
	}
	for _, s := range subs {
		select {
		case <-s.ready:
		case <-time.After(time.Until(deadline)):
			ch.t.Fatalf("subscriber %s: not subscribed after %v", s.spec.ID, total)
		}
	}
	for _, p := range pubs {
		ch.pubWG.Add(1)
		go ch.runPublisher(p)
	}
	if len(subs) == 0 || len(pubs) == 0 {
		ch.routesOnce.Do(func() { close(ch.routesUp) })
	}
	select {
	case <-ch.routesUp:
		ch.event("routes up: every subscriber received a probe from every publisher")
	case <-time.After(time.Until(deadline)):
		ch.mu.Lock()
		var missing []string
		for _, s := range ch.subs {
			for _, p := range ch.pubs {
				if !s.probes[p.spec.ID] {
					missing = append(missing, s.spec.ID+"<-"+p.spec.ID)
				}
			}
		}
		ch.mu.Unlock()
		ch.t.Fatalf("routes not up after %v: no probe for %v", total, missing)
	}
}

// Fault records a fault window: from..to (widened by Grace), messages from
// a publisher on node p to a subscriber on node s may be lost when
// affects(p, s).
func (ch *Checker) Fault(what string, from, to time.Time, affects func(p, s int) bool) {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	ch.windows = append(ch.windows, window{what: what, from: from, to: to, affects: affects})
	ch.events = append(ch.events, fmt.Sprintf("%s fault window %s: %s .. %s", time.Now().Format("15:04:05.000"), what, from.Format("15:04:05.000"), to.Format("15:04:05.000")))
}

// NodeFault records that node i was down or unreachable from..to.
func (ch *Checker) NodeFault(i int, from, to time.Time) {
	ch.Fault(fmt.Sprintf("node %d", i), from, to, func(p, s int) bool { return p == i || s == i })
}

// Stop stops the publishers, waits (at most drain) until every subscriber
// has every acknowledged message or nothing new arrived for 3 s, then
// disconnects the subscribers.
func (ch *Checker) Stop(drain time.Duration) {
	ch.mu.Lock()
	if ch.stopped {
		ch.mu.Unlock()
		return
	}
	ch.stopped = true
	ch.mu.Unlock()
	close(ch.stopPub)
	ch.pubWG.Wait()
	deadline := time.Now().Add(drain)
	lastCount, lastChange := -1, time.Now()
	for time.Now().Before(deadline) {
		missing, received := ch.pending()
		if missing == 0 {
			break
		}
		if received != lastCount {
			lastCount, lastChange = received, time.Now()
		} else if time.Since(lastChange) > 3*time.Second {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	close(ch.stopSub)
	ch.subWG.Wait()
}

func (ch *Checker) shutdown() {
	ch.mu.Lock()
	stopped := ch.stopped
	ch.stopped = true
	ch.mu.Unlock()
	if !stopped {
		close(ch.stopPub)
		ch.pubWG.Wait()
		close(ch.stopSub)
		ch.subWG.Wait()
	}
}

// pending counts acknowledged messages some subscriber has not (yet)
// received, and every receipt so far.
func (ch *Checker) pending() (missing, received int) {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	for _, s := range ch.subs {
		received += s.received
		for _, p := range ch.pubs {
			st := s.streams[p.spec.ID]
			for i, r := range p.recs {
				if !r.acked.IsZero() && (st == nil || st.count[uint64(i+1)] == 0) {
					missing++
				}
			}
		}
	}
	return missing, received
}

// Received returns the sequence numbers subscriber sub received from
// publisher pub, in arrival order (duplicates included).
func (ch *Checker) Received(sub, pub string) []uint64 {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	for _, s := range ch.subs {
		if s.spec.ID == sub {
			if st := s.streams[pub]; st != nil {
				return append([]uint64(nil), st.first...)
			}
		}
	}
	return nil
}

// Acked returns how many messages publisher pub had acknowledged.
func (ch *Checker) Acked(pub string) int {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	n := 0
	for _, p := range ch.pubs {
		if p.spec.ID == pub {
			for _, r := range p.recs {
				if !r.acked.IsZero() {
					n++
				}
			}
		}
	}
	return n
}

// Report is the checker's verdict.
type Report struct {
	Seed uint64
	Pubs []PubReport
	Subs []SubReport
}

// PubReport is one publisher's count.
type PubReport struct {
	ID                  string
	QoS                 byte
	Sent, Acked, Failed int
}

// SubReport is what one subscriber saw.
type SubReport struct {
	ID       string
	QoS      byte
	Required bool // the caller's rule: losses count for this subscriber
	Received int  // receipts, duplicates included (probes excluded)
	// Missing lists, per publisher, acknowledged messages never received
	// that no fault window excuses (truncated to 20 per publisher), and
	// MissingCount counts them all. Excused counts acknowledged
	// messages lost inside a fault window.
	Missing      map[string][]uint64
	MissingCount int
	// MissingSpan gives, per publisher, when the first and the last
	// missing message (counted in Missing) were sent.
	MissingSpan map[string][2]time.Time
	Excused     int
	// DupQoS1 and DupQoS2 count extra receipts of a message, by the QoS it
	// arrived with (QoS 1 duplicates are allowed by MQTT, QoS 2 are not).
	// DupQoS2Client counts QoS 2 duplicates of MQTT 3.1.1 subscribers
	// apart: paho.mqtt.golang delivers a re-sent QoS 2 PUBLISH again after
	// a reconnection (it has no receiver-side deduplication), so these
	// are not counted against the broker.
	DupQoS1, DupQoS2, DupQoS2Client int
	// Reordered counts first receipts of a message after a later one of
	// the same publisher; ReorderedFrom breaks it down by publisher.
	Reordered     int
	ReorderedFrom map[string]int
	Flaps         int // voluntary disconnections (SubscriberSpec.Flap)
	Connects      int
	SessionLost   int // reconnections that found no session (v5; v3 with NoResubscribe or Flap)
	Unknown       int // payloads that are not the checker's
}

// Lost is the number of acknowledged messages missing for required
// subscribers.
func (r *Report) Lost() int {
	n := 0
	for _, s := range r.Subs {
		if s.Required {
			n += s.MissingCount
		}
	}
	return n
}

// DupQoS2 counts QoS 2 duplicates over all subscribers.
func (r *Report) DupQoS2() int {
	n := 0
	for _, s := range r.Subs {
		n += s.DupQoS2
	}
	return n
}

// Reordered counts reorderings over all subscribers.
func (r *Report) Reordered() int {
	n := 0
	for _, s := range r.Subs {
		n += s.Reordered
	}
	return n
}

func (r *Report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "checker report (seed %d):\n", r.Seed)
	for _, p := range r.Pubs {
		fmt.Fprintf(&b, "  publisher %-10s qos %d: sent %d, acknowledged %d, failed %d\n", p.ID, p.QoS, p.Sent, p.Acked, p.Failed)
	}
	for _, s := range r.Subs {
		req := "required"
		if !s.Required {
			req = "not required"
		}
		fmt.Fprintf(&b, "  subscriber %-10s qos %d (%s): received %d, missing %d, excused %d, dup qos1 %d, dup qos2 %d (client-side %d), reordered %d, connects %d (flaps %d), session lost %d, unknown %d\n",
			s.ID, s.QoS, req, s.Received, s.MissingCount, s.Excused, s.DupQoS1, s.DupQoS2, s.DupQoS2Client, s.Reordered, s.Connects, s.Flaps, s.SessionLost, s.Unknown)
		if len(s.ReorderedFrom) > 0 {
			fmt.Fprintf(&b, "    reordered by publisher: %v\n", s.ReorderedFrom)
		}
		pubs := make([]string, 0, len(s.Missing))
		for p := range s.Missing {
			pubs = append(pubs, p)
		}
		sort.Strings(pubs)
		for _, p := range pubs {
			sp := s.MissingSpan[p]
			fmt.Fprintf(&b, "    missing from %s: %v (sent %s .. %s)\n", p, s.Missing[p], sp[0].Format("15:04:05.000"), sp[1].Format("15:04:05.000"))
		}
	}
	return b.String()
}

// Check builds the report. required decides, per subscriber, whether its
// losses count (nil: every subscriber); losses inside a fault window
// (see Fault) are excused either way.
func (ch *Checker) Check(required func(SubscriberSpec) bool) *Report {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	r := &Report{Seed: ch.Seed}
	for _, p := range ch.pubs {
		pr := PubReport{ID: p.spec.ID, QoS: p.spec.QoS, Sent: len(p.recs)}
		for _, rec := range p.recs {
			if !rec.acked.IsZero() {
				pr.Acked++
			}
			if rec.failed {
				pr.Failed++
			}
		}
		r.Pubs = append(r.Pubs, pr)
	}
	for _, s := range ch.subs {
		sr := SubReport{ID: s.spec.ID, QoS: s.spec.QoS, Required: required == nil || required(s.spec),
			Received: s.received, Missing: map[string][]uint64{}, Connects: s.connects, SessionLost: s.sessionLost, Unknown: s.unknown,
			ReorderedFrom: map[string]int{}, Flaps: s.flaps, MissingSpan: map[string][2]time.Time{}}
		for _, p := range ch.pubs {
			st := s.streams[p.spec.ID]
			if st != nil {
				sr.DupQoS1 += st.dup[1]
				sr.DupQoS2 += st.dup[2]
				sr.DupQoS2Client += st.dupV3
				sr.Reordered += st.reorders
				if st.reorders > 0 {
					sr.ReorderedFrom[p.spec.ID] = st.reorders
				}
			}
			for i, rec := range p.recs {
				seq := uint64(i + 1)
				if rec.acked.IsZero() || (st != nil && st.count[seq] > 0) {
					continue
				}
				if ch.excused(rec, s) {
					sr.Excused++
					continue
				}
				sr.MissingCount++
				span, ok := sr.MissingSpan[p.spec.ID]
				if !ok {
					span[0] = rec.sent
				}
				span[1] = rec.sent
				sr.MissingSpan[p.spec.ID] = span
				if len(sr.Missing[p.spec.ID]) < 20 {
					sr.Missing[p.spec.ID] = append(sr.Missing[p.spec.ID], seq)
				}
			}
		}
		r.Subs = append(r.Subs, sr)
	}
	return r
}

// excused reports whether a fault window covers message rec for s.
func (ch *Checker) excused(rec pubRecord, s *subscriber) bool {
	from, to := rec.sent.Add(-ch.Grace), rec.acked.Add(ch.Grace)
	for _, w := range ch.windows {
		if w.to.Before(from) || w.from.After(to) {
			continue
		}
		if len(s.spec.Addrs) > 0 || rec.node < 0 {
			return true
		}
		for _, n := range s.spec.Nodes {
			if w.affects(rec.node, n) {
				return true
			}
		}
	}
	return false
}

// ---- subscriber control ----------------------------------------------------

func (ch *Checker) subLocked(id string) *subscriber {
	for _, s := range ch.subs {
		if s.spec.ID == id {
			return s
		}
	}
	ch.t.Fatalf("clustertest: no subscriber %q", id)
	return nil
}

// Park makes subscriber id open no new connection until Unpark (its
// current connection, if any, stays): a client told to hold off, e.g.
// until its node is declared dead.
func (ch *Checker) Park(id string) {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	s := ch.subLocked(id)
	if s.parked == nil {
		s.parked = make(chan struct{})
	}
	ch.events = append(ch.events, time.Now().Format("15:04:05.000")+" sub "+id+": parked")
}

// Unpark lets subscriber id connect again, first to node (one of its
// Nodes; node < 0: where it would have gone).
func (ch *Checker) Unpark(id string, node int) {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	s := ch.subLocked(id)
	if node >= 0 {
		s.next = node
	}
	if s.parked != nil {
		close(s.parked)
		s.parked = nil
	}
	ch.events = append(ch.events, fmt.Sprintf("%s sub %s: unparked (next node %d)", time.Now().Format("15:04:05.000"), id, node))
}

// Drop closes subscriber id's current connection without a DISCONNECT
// (MQTT 5; an MQTT 3.1.1 client sends one, the session is kept either
// way), as a client whose keep-alive expired would. It then reconnects as
// after any loss (unless parked).
func (ch *Checker) Drop(id string) {
	ch.mu.Lock()
	s := ch.subLocked(id)
	cut := s.cut
	ch.mu.Unlock()
	if cut != nil {
		cut()
	}
}

// SubscriberAt returns the node of subscriber id's current (online) or
// last connection (-1: none yet, or Addrs).
func (ch *Checker) SubscriberAt(id string) (node int, online bool) {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	s := ch.subLocked(id)
	return s.at, s.online
}

// waitUnparked blocks while s is parked; false when the checker stops.
func (ch *Checker) waitUnparked(s *subscriber) bool {
	for {
		ch.mu.Lock()
		p := s.parked
		ch.mu.Unlock()
		if p == nil {
			return true
		}
		select {
		case <-p:
		case <-ch.stopSub:
			return false
		}
	}
}

// nextIdx applies an Unpark node to idx (an index into nodes).
func (ch *Checker) nextIdx(s *subscriber, nodes []int, idx int) int {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if s.next < 0 {
		return idx
	}
	n := s.next
	s.next = -1
	for k, v := range nodes {
		if v == n {
			return k
		}
	}
	ch.events = append(ch.events, fmt.Sprintf("%s sub %s: node %d is not in its Nodes %v", time.Now().Format("15:04:05.000"), s.spec.ID, n, nodes))
	return idx
}

// online records s's connection state (node -1: offline).
func (ch *Checker) setOnline(s *subscriber, node int, cut func()) {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if node >= 0 {
		s.at, s.online, s.cut = node, true, cut
	} else {
		s.online, s.cut = false, nil
	}
}

// flapTimer fires when s should flap next; never once the publishers
// were stopped (Stop drains what the subscribers have yet to receive).
func (ch *Checker) flapTimer(s *subscriber) <-chan time.Time {
	if s.spec.Flap <= 0 {
		return nil
	}
	out := make(chan time.Time, 1)
	tm := time.NewTimer(s.jitter(s.spec.Flap))
	go func() {
		defer tm.Stop()
		select {
		case now := <-tm.C:
			select {
			case <-ch.stopPub:
			default:
				out <- now
			}
		case <-ch.stopPub:
		}
	}()
	return out
}

// jitter draws a duration in [d/2, 3d/2) from s's generator.
func (s *subscriber) jitter(d time.Duration) time.Duration {
	return d/2 + time.Duration(s.rng.Int64N(int64(d)+1))
}

// ---- receipts --------------------------------------------------------------

func (ch *Checker) receive(s *subscriber, payload []byte, qos byte) {
	f := strings.Fields(string(payload))
	ch.mu.Lock()
	defer ch.mu.Unlock()
	switch {
	case len(f) == 3 && f[0] == "probe":
		s.probes[f[1]] = true
		ch.checkRoutesLocked()
		return
	case len(f) == 2:
		seq, err := strconv.ParseUint(f[1], 10, 64)
		if err != nil || seq == 0 {
			break
		}
		st := s.streams[f[0]]
		if st == nil {
			st = &stream{count: map[uint64]int{}}
			s.streams[f[0]] = st
		}
		s.received++
		st.count[seq]++
		if st.count[seq] > 1 {
			if qos == 2 && s.spec.Version == 4 {
				// paho.mqtt.golang hands a re-sent QoS 2 PUBLISH
				// (DUP=1, after a reconnection) to the application
				// again: it keeps no receiver-side state. The broker
				// must re-send when it saw no PUBREC, so such a
				// duplicate is the client's.
				st.dupV3++
				return
			}
			st.dup[min(qos, 2)]++
			if len(ch.events) <= 5000 {
				ch.events = append(ch.events, fmt.Sprintf("%s sub %s: duplicate %s seq %d (qos %d, copy %d)",
					time.Now().Format("15:04:05.000"), s.spec.ID, f[0], seq, qos, st.count[seq]))
			}
			return
		}
		st.first = append(st.first, seq)
		if seq < st.maxSeq {
			st.reorders++
		} else {
			st.maxSeq = seq
		}
		return
	}
	s.unknown++
}

func (ch *Checker) checkRoutesLocked() {
	for _, s := range ch.subs {
		for _, p := range ch.pubs {
			if !s.probes[p.spec.ID] {
				return
			}
		}
	}
	ch.routesOnce.Do(func() { close(ch.routesUp) })
}

func (ch *Checker) routesReady() bool {
	select {
	case <-ch.routesUp:
		return true
	default:
		return false
	}
}

// ---- clients ---------------------------------------------------------------

// addrs returns where a client dials, and the node index of each (-1:
// unknown).
func (ch *Checker) addrs(nodes []int, override []string) ([]string, []int) {
	if len(override) > 0 {
		idx := make([]int, len(override))
		for i := range idx {
			idx[i] = -1
		}
		return override, idx
	}
	out := make([]string, len(nodes))
	for i, n := range nodes {
		out[i] = ch.c.Addr(n)
	}
	return out, nodes
}

func dial(ctx context.Context, addr string, tc *tls.Config) (net.Conn, error) {
	d := net.Dialer{Timeout: 3 * time.Second}
	if tc != nil {
		td := tls.Dialer{NetDialer: &d, Config: tc}
		return td.DialContext(ctx, "tcp", addr)
	}
	return d.DialContext(ctx, "tcp", addr)
}

// sleepOr sleeps d or until stop is closed; it reports whether stop closed.
func sleepOr(stop <-chan struct{}, d time.Duration) bool {
	select {
	case <-stop:
		return true
	case <-time.After(d):
		return false
	}
}

const maxReconnects = 500

func (ch *Checker) runSubscriber(s *subscriber) {
	defer ch.subWG.Done()
	if s.spec.Version == 4 {
		ch.runSubscriberV3(s)
		return
	}
	addrs, nodes := ch.addrs(s.spec.Nodes, s.spec.Addrs)
	sess := state.NewInMemory()
	defer sess.Close()
	expiry := uint32(3600)
	first := true
	idx := 0 // addrs[idx%len] is tried next: the same one after a loss, the next after a failure
	for attempt := 0; attempt < maxReconnects; attempt++ {
		if attempt > 0 && sleepOr(ch.stopSub, 200*time.Millisecond) {
			return
		}
		if !ch.waitUnparked(s) {
			return
		}
		idx = ch.nextIdx(s, nodes, idx)
		addr := addrs[idx%len(addrs)]
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		conn, err := dial(ctx, addr, s.spec.TLS)
		if err != nil {
			cancel()
			ch.event("sub %s: dial %s: %v", s.spec.ID, addr, err)
			idx++
			continue
		}
		lost := make(chan struct{})
		var lostOnce sync.Once
		markLost := func() { lostOnce.Do(func() { close(lost) }) }
		cli := paho.NewClient(paho.ClientConfig{
			Conn:    conn,
			Session: sess,
			OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
				ch.receive(s, pr.Packet.Payload, pr.Packet.QoS)
				return true, nil
			}},
			OnClientError: func(err error) { ch.event("sub %s: client error: %v", s.spec.ID, err); markLost() },
			OnServerDisconnect: func(d *paho.Disconnect) {
				ch.event("sub %s: server DISCONNECT %#x", s.spec.ID, d.ReasonCode)
				markLost()
			},
		})
		ca, err := cli.Connect(ctx, &paho.Connect{ClientID: s.spec.ID, CleanStart: first, KeepAlive: 5,
			Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}})
		if err != nil {
			cancel()
			ch.event("sub %s: connect %s: %v", s.spec.ID, addr, err)
			_ = conn.Close()
			idx++
			continue
		}
		ch.mu.Lock()
		s.connects++
		if !first && !ca.SessionPresent {
			s.sessionLost++
		}
		ch.mu.Unlock()
		ch.event("sub %s: connected to %s (session present %v)", s.spec.ID, addr, ca.SessionPresent)
		if !ca.SessionPresent && (first || !s.spec.NoResubscribe) {
			if _, err := cli.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: s.spec.Filter, QoS: s.spec.QoS}}}); err != nil {
				cancel()
				ch.event("sub %s: subscribe: %v", s.spec.ID, err)
				_ = cli.Disconnect(&paho.Disconnect{})
				_ = conn.Close()
				<-cli.Done()
				continue
			}
		}
		cancel()
		first = false
		s.readyOnce.Do(func() { close(s.ready) })
		dropped := make(chan struct{})
		var dropOnce sync.Once
		ch.setOnline(s, nodes[idx%len(nodes)], func() { dropOnce.Do(func() { close(dropped) }) })
		flap := ch.flapTimer(s)
		select {
		case <-ch.stopSub:
			ch.setOnline(s, -1, nil)
			_ = cli.Disconnect(&paho.Disconnect{})
			_ = conn.Close()
			<-cli.Done()
			return
		case <-lost:
		case <-cli.Done():
		case <-dropped:
			ch.event("sub %s: connection to %s dropped (no DISCONNECT)", s.spec.ID, addr)
		case <-flap:
			ch.setOnline(s, -1, nil)
			ch.event("sub %s: flap: DISCONNECT from %s", s.spec.ID, addr)
			_ = cli.Disconnect(&paho.Disconnect{})
			_ = conn.Close()
			<-cli.Done()
			ch.mu.Lock()
			s.flaps++
			ch.mu.Unlock()
			attempt-- // a flap is not a failure
			if sleepOr(ch.stopSub, s.jitter(s.spec.FlapOffline)) {
				return
			}
			continue
		}
		ch.setOnline(s, -1, nil)
		_ = conn.Close()
		<-cli.Done()
	}
	ch.event("sub %s: gave up after %d connection attempts", s.spec.ID, maxReconnects)
}

func (ch *Checker) runSubscriberV3(s *subscriber) {
	if s.spec.NoResubscribe || s.spec.Flap > 0 {
		ch.runSubscriberV3Manual(s)
		return
	}
	addrs, _ := ch.addrs(s.spec.Nodes, s.spec.Addrs)
	o := mqtt.NewClientOptions()
	scheme := "tcp://"
	if s.spec.TLS != nil {
		scheme = "ssl://"
		o.SetTLSConfig(s.spec.TLS)
	}
	for _, a := range addrs {
		o.AddBroker(scheme + a)
	}
	o.SetClientID(s.spec.ID).SetCleanSession(false).SetAutoReconnect(true).SetConnectRetry(true).
		SetConnectRetryInterval(300 * time.Millisecond).SetMaxReconnectInterval(500 * time.Millisecond).
		SetKeepAlive(5 * time.Second).SetPingTimeout(3 * time.Second).SetConnectTimeout(3 * time.Second).
		SetOrderMatters(true).SetResumeSubs(false)
	o.SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) { ch.receive(s, m.Payload(), m.Qos()) })
	o.SetConnectionLostHandler(func(_ mqtt.Client, err error) { ch.event("sub %s: connection lost: %v", s.spec.ID, err) })
	o.SetOnConnectHandler(func(cl mqtt.Client) {
		ch.mu.Lock()
		s.connects++
		ch.mu.Unlock()
		r := cl.OptionsReader()
		ch.event("sub %s: connected (v3.1.1, servers %v)", s.spec.ID, r.Servers())
		// Subscribing again is harmless with a session (it replaces the
		// subscription; queued messages stay) and needed without one.
		tok := cl.Subscribe(s.spec.Filter, s.spec.QoS, nil)
		if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			ch.event("sub %s: subscribe: %v", s.spec.ID, tok.Error())
			return
		}
		s.readyOnce.Do(func() { close(s.ready) })
	})
	cl := mqtt.NewClient(o)
	tok := cl.Connect()
	select {
	case <-tok.Done():
	case <-ch.stopSub:
	}
	<-ch.stopSub
	cl.Disconnect(250)
}

// runSubscriberV3Manual is an MQTT 3.1.1 subscriber (clean session 0)
// that reconnects by itself, a new paho.mqtt.golang client per
// connection, so that it sees each CONNACK's session present flag, can be
// parked, dropped and redirected, and flaps.
func (ch *Checker) runSubscriberV3Manual(s *subscriber) {
	addrs, nodes := ch.addrs(s.spec.Nodes, s.spec.Addrs)
	scheme := "tcp://"
	if s.spec.TLS != nil {
		scheme = "ssl://"
	}
	first := true
	idx := 0
	for attempt := 0; attempt < maxReconnects; attempt++ {
		if attempt > 0 && sleepOr(ch.stopSub, 200*time.Millisecond) {
			return
		}
		if !ch.waitUnparked(s) {
			return
		}
		idx = ch.nextIdx(s, nodes, idx)
		addr := addrs[idx%len(addrs)]
		lost := make(chan struct{})
		var lostOnce sync.Once
		o := mqtt.NewClientOptions().AddBroker(scheme + addr).SetClientID(s.spec.ID).SetCleanSession(false).
			SetAutoReconnect(false).SetConnectRetry(false).SetKeepAlive(5 * time.Second).SetPingTimeout(3 * time.Second).
			SetConnectTimeout(3 * time.Second).SetOrderMatters(true).SetResumeSubs(false)
		if s.spec.TLS != nil {
			o.SetTLSConfig(s.spec.TLS)
		}
		o.SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) { ch.receive(s, m.Payload(), m.Qos()) })
		o.SetConnectionLostHandler(func(_ mqtt.Client, err error) {
			ch.event("sub %s: connection to %s lost: %v", s.spec.ID, addr, err)
			lostOnce.Do(func() { close(lost) })
		})
		cl := mqtt.NewClient(o)
		tok := cl.Connect()
		if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			ch.event("sub %s: connect %s (v3.1.1): %v", s.spec.ID, addr, tok.Error())
			cl.Disconnect(0)
			idx++
			continue
		}
		present := false
		if ct, ok := tok.(*mqtt.ConnectToken); ok {
			present = ct.SessionPresent()
		}
		ch.mu.Lock()
		s.connects++
		if !first && !present {
			s.sessionLost++
		}
		ch.mu.Unlock()
		ch.event("sub %s: connected to %s (v3.1.1, session present %v)", s.spec.ID, addr, present)
		if !present && (first || !s.spec.NoResubscribe) {
			st := cl.Subscribe(s.spec.Filter, s.spec.QoS, nil)
			if !st.WaitTimeout(5*time.Second) || st.Error() != nil {
				ch.event("sub %s: subscribe: %v", s.spec.ID, st.Error())
				cl.Disconnect(0)
				continue
			}
		}
		first = false
		s.readyOnce.Do(func() { close(s.ready) })
		dropped := make(chan struct{})
		var dropOnce sync.Once
		ch.setOnline(s, nodes[idx%len(nodes)], func() { dropOnce.Do(func() { close(dropped) }) })
		flap := ch.flapTimer(s)
		select {
		case <-ch.stopSub:
			ch.setOnline(s, -1, nil)
			cl.Disconnect(250)
			return
		case <-lost:
		case <-dropped:
			ch.event("sub %s: connection to %s dropped", s.spec.ID, addr)
		case <-flap:
			ch.setOnline(s, -1, nil)
			ch.event("sub %s: flap: DISCONNECT from %s", s.spec.ID, addr)
			cl.Disconnect(100)
			ch.mu.Lock()
			s.flaps++
			ch.mu.Unlock()
			attempt--
			if sleepOr(ch.stopSub, s.jitter(s.spec.FlapOffline)) {
				return
			}
			continue
		}
		ch.setOnline(s, -1, nil)
		cl.Disconnect(0)
	}
	ch.event("sub %s: gave up after %d connection attempts", s.spec.ID, maxReconnects)
}

func (ch *Checker) runPublisher(p *publisher) {
	defer ch.pubWG.Done()
	addrs, nodes := ch.addrs(p.spec.Nodes, nil)
	var pub func(topic string, payload []byte, qos byte) error
	var closeFn func()
	connected := -1
	connect := func(k int) error {
		addr := addrs[k%len(addrs)]
		if p.spec.Version == 4 {
			o := mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(p.spec.ID).SetCleanSession(true).
				SetAutoReconnect(false).SetConnectTimeout(3 * time.Second).SetKeepAlive(5 * time.Second).SetPingTimeout(3 * time.Second)
			cl := mqtt.NewClient(o)
			tok := cl.Connect()
			if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
				cl.Disconnect(0)
				return fmt.Errorf("connect %s: %v", addr, tok.Error())
			}
			pub = func(topic string, payload []byte, qos byte) error {
				tok := cl.Publish(topic, qos, false, payload)
				if !tok.WaitTimeout(10 * time.Second) {
					return fmt.Errorf("no acknowledgement within 10 s")
				}
				return tok.Error()
			}
			closeFn = func() { cl.Disconnect(100) }
			return nil
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		conn, err := dial(ctx, addr, nil)
		if err != nil {
			return err
		}
		// A lost connection must fail the publish in flight at once
		// (paho would otherwise wait for its context to expire).
		connCtx, connCancel := context.WithCancel(context.Background())
		cli := paho.NewClient(paho.ClientConfig{Conn: conn, PacketTimeout: 10 * time.Second,
			OnClientError: func(err error) { ch.event("pub %s: client error: %v", p.spec.ID, err); connCancel() },
			OnServerDisconnect: func(d *paho.Disconnect) {
				ch.event("pub %s: server DISCONNECT %#x", p.spec.ID, d.ReasonCode)
				connCancel()
			}})
		if _, err := cli.Connect(ctx, &paho.Connect{ClientID: p.spec.ID, CleanStart: true, KeepAlive: 5}); err != nil {
			_ = conn.Close()
			connCancel()
			return fmt.Errorf("connect %s: %v", addr, err)
		}
		pub = func(topic string, payload []byte, qos byte) error {
			ctx, cancel := context.WithTimeout(connCtx, 10*time.Second)
			defer cancel()
			r, err := cli.Publish(ctx, &paho.Publish{Topic: topic, QoS: qos, Payload: payload})
			if err != nil {
				return err
			}
			if r != nil && r.ReasonCode >= 0x80 {
				return fmt.Errorf("reason code %#x", r.ReasonCode)
			}
			return nil
		}
		closeFn = func() {
			connCancel()
			_ = cli.Disconnect(&paho.Disconnect{})
			_ = conn.Close()
		}
		return nil
	}
	defer func() {
		if closeFn != nil {
			closeFn()
		}
	}()
	k, probe := 0, 0
	for attempts := 0; attempts < maxReconnects; {
		select {
		case <-ch.stopPub:
			return
		default:
		}
		if connected < 0 {
			if err := connect(k); err != nil {
				ch.event("pub %s: %v", p.spec.ID, err)
				attempts++
				k++
				if sleepOr(ch.stopPub, 200*time.Millisecond) {
					return
				}
				continue
			}
			connected = k % len(addrs)
			ch.event("pub %s: connected to %s", p.spec.ID, addrs[connected])
		}
		if !ch.routesReady() {
			probe++
			if err := pub(p.spec.Topic, fmt.Appendf(nil, "probe %s %d", p.spec.ID, probe), 1); err != nil {
				ch.event("pub %s: probe: %v", p.spec.ID, err)
				closeFn()
				closeFn, connected = nil, -1
				attempts++
				if sleepOr(ch.stopPub, 200*time.Millisecond) {
					return
				}
				continue
			}
			sleepOr(ch.stopPub, 100*time.Millisecond)
			continue
		}
		ch.mu.Lock()
		p.recs = append(p.recs, pubRecord{node: nodes[connected], sent: time.Now()})
		seq := len(p.recs)
		ch.mu.Unlock()
		err := pub(p.spec.Topic, fmt.Appendf(nil, "%s %d", p.spec.ID, seq), p.spec.QoS)
		ch.mu.Lock()
		if err == nil {
			p.recs[seq-1].acked = time.Now()
		} else {
			p.recs[seq-1].failed = true
		}
		ch.mu.Unlock()
		if err != nil {
			ch.event("pub %s: seq %d on %s: %v", p.spec.ID, seq, addrs[connected], err)
			closeFn()
			closeFn, connected = nil, -1
			attempts++
			continue
		}
		if sleepOr(ch.stopPub, p.spec.Interval) {
			return
		}
	}
}
