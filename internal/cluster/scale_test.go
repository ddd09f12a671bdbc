package cluster_test

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/isobar-mq/isobar/internal/broker"
	"github.com/isobar-mq/isobar/internal/cluster"
	"github.com/isobar-mq/isobar/internal/topic"
	"github.com/prometheus/client_golang/prometheus"
)

// scaleLongFlag selects TestClusterScale's long mode (1M routes), as does
// ISOBAR_SCALE=long.
var scaleLongFlag = flag.Bool("scale.long", false, "TestClusterScale: 9 nodes holding 1M routes in all (also ISOBAR_SCALE=long)")

// scaleSummary is the one-line JSON TestClusterScale prints after "SCALE: ".
type scaleSummary struct {
	Mode          string `json:"mode"`
	Nodes         int    `json:"nodes"`
	RoutesPerNode int    `json:"routes_per_node"`
	RoutesTotal   int    `json:"routes_total"`
	// Heap: GC'd HeapAlloc before the routes and after every node learned
	// every other node's routes. Each route lives on all nine nodes (the
	// owner's subscription plus eight remote mirrors), so per index entry
	// is per route divided by the node count.
	HeapBeforeBytes      uint64  `json:"heap_before_bytes"`
	HeapAfterBytes       uint64  `json:"heap_after_bytes"`
	HeapBytesPerRoute    float64 `json:"heap_bytes_per_route"`
	HeapBytesPerEntry    float64 `json:"heap_bytes_per_index_entry"`
	InstallSeconds       float64 `json:"install_s"`
	ConvergeSeconds      float64 `json:"converge_s"`
	PropagateLinkBytes   float64 `json:"propagate_link_bytes"`
	PropagateGossipBytes float64 `json:"propagate_gossip_bytes"`
	PublishMessages      int     `json:"publish_msgs"`
	PublishSeconds       float64 `json:"publish_s"`
	MessagesPerSecond    float64 `json:"msgs_per_s"`
	// StatusSeconds and GatherSeconds: one Status() call and one scrape
	// of a node's registry with every route in place.
	StatusSeconds float64 `json:"status_s"`
	GatherSeconds float64 `json:"gather_s"`
	// AntiEntropyLinkBytes: what one round of the periodic route
	// snapshots (every 30 s) sends on the links of the idle cluster (long
	// mode only).
	AntiEntropyLinkBytes float64 `json:"anti_entropy_link_bytes,omitempty"`
	// InstallTicks and JoinTicks count the nodes' anti-entropy rounds
	// that fell in those windows (their traffic and work is then in the
	// numbers too).
	InstallTicks        int     `json:"install_anti_entropy_ticks"`
	JoinTicks           int     `json:"join_anti_entropy_ticks"`
	JoinConvergeSeconds float64 `json:"join_converge_s"`
	// JoinLinkBytes: everything sent on all links while the tenth node
	// joined; JoinPeerLinkBytes only what went to or came from it.
	JoinLinkBytes     float64 `json:"join_link_bytes"`
	JoinPeerLinkBytes float64 `json:"join_peer_link_bytes"`
	JoinGossipBytes   float64 `json:"join_gossip_bytes"`
	LinkReconnects    float64 `json:"link_reconnects"`
	MemberFailures    float64 `json:"member_failures"`
}

// TestClusterScale runs nine in-process nodes, each with R distinct routes
// (exact topics, '+' and '#' filters, $share groups) held by one internal
// subscriber, and checks that every node learns every other node's routes,
// that a tenth node joining learns all of them and they its, and that
// messages published on one node reach the routes on the others exactly
// once. It measures (and logs, and prints as "SCALE: {json}") heap per
// route, convergence times, link and gossip bytes and the forwarding rate;
// only correctness is asserted. Default: 9 x 5,000 routes. Long mode
// (-scale.long or ISOBAR_SCALE=long): 9 x 111,112 (1M) routes, about a
// minute and 6 GB. ISOBAR_SCALE_OUT=file also writes the JSON line there;
// ISOBAR_SCALE_HEAPPROFILE=file writes a heap profile once the routes are
// in place.
func TestClusterScale(t *testing.T) {
	long := *scaleLongFlag || os.Getenv("ISOBAR_SCALE") == "long"
	if testing.Short() && !long {
		t.Skip("short")
	}
	const nNodes = 9
	const msgs = 10_000
	per, mode := 5_000, "default"
	converge, poll := 60*time.Second, 50*time.Millisecond
	if long {
		per, mode = (1_000_000+nNodes-1)/nNodes, "long"
		converge, poll = 10*time.Minute, 250*time.Millisecond
	}
	if per*(nNodes-1) < msgs {
		t.Fatalf("%d routes per node cannot take %d distinct messages", per, msgs)
	}
	sum := scaleSummary{Mode: mode, Nodes: nNodes, RoutesPerNode: per, RoutesTotal: per * nNodes, PublishMessages: msgs}

	// Nine nodes, every link up, no routes yet.
	nodes := make([]*tnode, 0, nNodes)
	var started []time.Time // when each node started (its housekeeping ticker with it)
	for i := range nNodes {
		var seeds []string
		if i > 0 {
			seeds = []string{nodes[0].cn.Addr()}
		}
		tn := newScaleNode(t, fmt.Sprintf("n%d", i+1), seeds)
		started = append(started, time.Now())
		if err := tn.cn.Start(tn.srv); err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, tn)
	}
	waitLinks(t, nodes, nNodes)

	heapBefore := scaleHeap()
	linkBefore, gossipBefore := scaleTraffic(t, nodes)

	// Every node installs its routes at once.
	subs := make([]*broker.LocalSubscriber, nNodes)
	for i, tn := range nodes {
		subs[i] = scaleSubscriber(tn, msgs)
	}
	start := time.Now()
	errs := make([]error, nNodes)
	var wg sync.WaitGroup
	for i := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = scaleInstall(subs[i], i, per)
		}()
	}
	wg.Wait()
	sum.InstallSeconds = time.Since(start).Seconds()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	scaleWaitKnown(t, nodes, per, converge, poll)
	sum.ConvergeSeconds = time.Since(start).Seconds()
	sum.InstallTicks = scaleTicks(started, start, time.Now())
	t.Logf("%d routes installed in %.2fs; every node knows every other node's routes after %.2fs (%d anti-entropy ticks meanwhile)",
		per*nNodes, sum.InstallSeconds, sum.ConvergeSeconds, sum.InstallTicks)

	sum.HeapBeforeBytes = heapBefore
	sum.HeapAfterBytes = scaleHeap()
	delta := float64(sum.HeapAfterBytes) - float64(sum.HeapBeforeBytes)
	sum.HeapBytesPerRoute = delta / float64(per*nNodes)
	sum.HeapBytesPerEntry = sum.HeapBytesPerRoute / nNodes
	linkAfter, gossipAfter := scaleTraffic(t, nodes)
	sum.PropagateLinkBytes = linkAfter - linkBefore
	sum.PropagateGossipBytes = gossipAfter - gossipBefore
	if err := scaleKnown(nodes, per); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	_ = nodes[0].cn.Status()
	sum.StatusSeconds = time.Since(start).Seconds()
	start = time.Now()
	if _, err := nodes[0].reg.Gather(); err != nil {
		t.Fatal(err)
	}
	sum.GatherSeconds = time.Since(start).Seconds()
	if path := os.Getenv("ISOBAR_SCALE_HEAPPROFILE"); path != "" {
		scaleHeapProfile(t, path)
	}
	t.Logf("heap %d -> %d bytes: %.0f bytes per route, %.0f per index entry (owner + %d mirrors); links carried %.0f bytes (%.1f per route per peer), gossip %.0f",
		sum.HeapBeforeBytes, sum.HeapAfterBytes, sum.HeapBytesPerRoute, sum.HeapBytesPerEntry, nNodes-1,
		sum.PropagateLinkBytes, sum.PropagateLinkBytes/float64(per*nNodes*(nNodes-1)), sum.PropagateGossipBytes)

	// Routing: messages published on n1 to topics each matching exactly
	// one route of another node.
	pub := nodes[0].srv.NewPublisher(broker.PublisherOptions{
		Client: broker.ClientInfo{ClientID: "scale-pub"}, Trusted: true, MaxBatch: 256,
	})
	var (
		resMu  sync.Mutex
		resErr error
		acked  int
	)
	start = time.Now()
	for k := range msgs {
		target, j := 1+k%(nNodes-1), k/(nNodes-1)
		m := &broker.Message{Topic: scaleTopic(target, j), QoS: 1, Payload: []byte(strconv.Itoa(k))}
		err := pub.Publish(m, func(r broker.PublishResult) {
			resMu.Lock()
			defer resMu.Unlock()
			acked++
			switch {
			case r.Err != nil:
				resErr = errors.Join(resErr, fmt.Errorf("message %d: %w", k, r.Err))
			case r.Routed != 1:
				resErr = errors.Join(resErr, fmt.Errorf("message %d to %s routed to %d subscribers, want 1", k, m.Topic, r.Routed))
			}
		})
		if err != nil {
			t.Fatalf("publish %d: %v", k, err)
		}
	}
	if err := pub.Close(); err != nil {
		t.Fatal(err)
	}
	// Every message was acknowledged by its node, which had queued it for
	// its subscriber before acknowledging.
	sum.PublishSeconds = time.Since(start).Seconds()
	sum.MessagesPerSecond = float64(msgs) / sum.PublishSeconds
	if resErr != nil || acked != msgs {
		t.Fatalf("%d of %d publishes done: %v", acked, msgs, resErr)
	}
	scaleWait(t, 30*time.Second, 10*time.Millisecond, func() error {
		n := 0
		for _, s := range subs {
			n += s.Pending()
		}
		if n < msgs {
			return fmt.Errorf("%d of %d messages delivered", n, msgs)
		}
		return nil
	})
	scaleCheckDelivered(t, subs, msgs)
	t.Logf("%d QoS 1 messages forwarded from n1 and acknowledged in %.2fs: %.0f msg/s",
		msgs, sum.PublishSeconds, sum.MessagesPerSecond)

	if long {
		// The periodic route snapshots (anti-entropy, every 30 s): wait
		// for a round to begin and end, so that the join below is
		// measured without one.
		idle := time.Now()
		base, _ := scaleTraffic(t, nodes)
		last, quiet, begun := base, 0, false
		scaleWait(t, 90*time.Second, time.Second, func() error {
			cur, _ := scaleTraffic(t, nodes)
			switch {
			case !begun && cur-base < sum.PropagateLinkBytes/4:
				return errors.New("no anti-entropy round yet")
			case !begun:
				begun, last = true, cur
				return errors.New("anti-entropy round under way")
			case cur-last > 256<<10:
				last, quiet = cur, 0
				return errors.New("anti-entropy round under way")
			}
			if quiet++; quiet < 2 {
				return errors.New("links settling")
			}
			return nil
		})
		sum.AntiEntropyLinkBytes = last - base
		scaleWaitKnown(t, nodes, per, converge, poll)
		t.Logf("one anti-entropy round of the idle cluster sent %.0f bytes on the links (%d ticks between %.1fs and %.1fs after the first node started)",
			sum.AntiEntropyLinkBytes, scaleTicks(started, idle, time.Now()), idle.Sub(started[0]).Seconds(), time.Since(started[0]).Seconds())
	}

	// A tenth node, its routes installed before it starts, joins.
	n10 := newScaleNode(t, fmt.Sprintf("n%d", nNodes+1), []string{nodes[0].cn.Addr()})
	if err := scaleInstall(scaleSubscriber(n10, msgs), nNodes, per); err != nil {
		t.Fatal(err)
	}
	linkBefore, gossipBefore = scaleTraffic(t, nodes)
	peerBefore := scalePeerTraffic(t, nodes, n10)
	start = time.Now()
	started = append(started, start)
	if err := n10.cn.Start(n10.srv); err != nil {
		t.Fatal(err)
	}
	all := append(nodes[:nNodes:nNodes], n10)
	scaleWaitKnown(t, all, per, converge, poll)
	sum.JoinConvergeSeconds = time.Since(start).Seconds()
	sum.JoinTicks = scaleTicks(started, start, time.Now())
	linkAfter, gossipAfter = scaleTraffic(t, all)
	sum.JoinLinkBytes = linkAfter - linkBefore
	sum.JoinPeerLinkBytes = scalePeerTraffic(t, nodes, n10) - peerBefore
	sum.JoinGossipBytes = gossipAfter - gossipBefore
	if err := scaleKnown(all, per); err != nil {
		t.Fatal(err)
	}
	waitLinks(t, all, nNodes+1)
	t.Logf("n10 (%d routes) joined; it knows the other %d nodes' %d routes and they its after %.2fs; links carried %.0f bytes (%.0f to or from n10), gossip %.0f; %d anti-entropy ticks (%.1fs..%.1fs after the first node started)",
		per, nNodes, per*nNodes, sum.JoinConvergeSeconds, sum.JoinLinkBytes, sum.JoinPeerLinkBytes, sum.JoinGossipBytes,
		sum.JoinTicks, start.Sub(started[0]).Seconds(), time.Since(started[0]).Seconds())

	for _, tn := range all {
		sum.LinkReconnects += scaleMetric(t, tn.reg, "isobar_cluster_link_reconnects_total")
		sum.MemberFailures += scaleMetric(t, tn.reg, "isobar_cluster_peer_events_total", "kind", "failed")
	}
	if sum.MemberFailures > 0 || sum.LinkReconnects > 0 {
		t.Logf("note: %.0f link reconnects, %.0f member failures during the run", sum.LinkReconnects, sum.MemberFailures)
	}
	line, err := json.Marshal(sum)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("SCALE: %s", line)
	fmt.Printf("SCALE: %s\n", line)
	if path := os.Getenv("ISOBAR_SCALE_OUT"); path != "" {
		if err := os.WriteFile(path, append(line, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// newScaleNode is startNode with production failure-detector timings
// (a node must not be declared dead while the others are busy installing
// a million routes on two cores), no MQTT listener, and not started: the
// caller installs routes first if it likes, then calls tn.cn.Start(tn.srv).
func newScaleNode(t testing.TB, name string, seeds []string) *tnode {
	t.Helper()
	reg := prometheus.NewRegistry()
	log := testLogger(t).With("node", name)
	cn, err := cluster.New(cluster.Config{
		NodeName: name, Bind: "127.0.0.1:0", Seeds: seeds, Secret: testSecret,
		GossipInterval: 100 * time.Millisecond,
		Logger:         log, Registerer: reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	opts := broker.DefaultOptions()
	opts.HoldTimeout = 30 * time.Second
	cn.BrokerOptions(&opts)
	srv := broker.New(opts, log, nil)
	tn := &tnode{name: name, srv: srv, cn: cn, reg: reg}
	t.Cleanup(tn.stop)
	return tn
}

func scaleSubscriber(tn *tnode, queue int) *broker.LocalSubscriber {
	return tn.srv.NewSubscriber(broker.SubscriberOptions{
		Client: broker.ClientInfo{ClientID: "scale-" + tn.name}, Trusted: true, QueueSize: queue + 1024,
	})
}

// scaleFilter is route j of node index i: one in two an exact topic, one
// in four a '+' filter (last or middle level), one in eight a '#' filter,
// one in eight a shared subscription (32 groups per node). Every filter is
// distinct, and the topic scaleTopic(i, j) matches exactly this one of all
// the routes of all the nodes.
func scaleFilter(i, j int) string {
	switch j % 8 {
	case 0, 1, 2, 3:
		return fmt.Sprintf("sc/n%d/e/%d", i, j)
	case 4:
		return fmt.Sprintf("sc/n%d/p/%d/+", i, j)
	case 5:
		return fmt.Sprintf("sc/n%d/q/+/%d", i, j)
	case 6:
		return fmt.Sprintf("sc/n%d/h/%d/#", i, j)
	default:
		return fmt.Sprintf("$share/g%d/sc/n%d/s/%d", j%32, i, j)
	}
}

func scaleTopic(i, j int) string {
	switch j % 8 {
	case 0, 1, 2, 3:
		return fmt.Sprintf("sc/n%d/e/%d", i, j)
	case 4:
		return fmt.Sprintf("sc/n%d/p/%d/x", i, j)
	case 5:
		return fmt.Sprintf("sc/n%d/q/x/%d", i, j)
	case 6:
		return fmt.Sprintf("sc/n%d/h/%d/a/b", i, j)
	default:
		return fmt.Sprintf("sc/n%d/s/%d", i, j)
	}
}

// scaleTarget inverts scaleTopic: the node index whose route it matches.
func scaleTarget(tp string) (int, bool) {
	rest, ok := strings.CutPrefix(tp, "sc/n")
	if !ok {
		return 0, false
	}
	num, _, ok := strings.Cut(rest, "/")
	if !ok {
		return 0, false
	}
	i, err := strconv.Atoi(num)
	return i, err == nil
}

func scaleInstall(sub *broker.LocalSubscriber, i, per int) error {
	for j := range per {
		if err := sub.Subscribe(scaleFilter(i, j), topic.Options{QoS: 1}); err != nil {
			return fmt.Errorf("node %d route %d: %w", i, j, err)
		}
	}
	return nil
}

// scaleKnown reports whether every node knows per routes of every other
// node (and holds per of its own); there are len(nodes)-1 others unless
// given.
func scaleKnown(nodes []*tnode, per int, others ...int) error {
	want := len(nodes) - 1
	if len(others) > 0 {
		want = others[0]
	}
	for _, tn := range nodes {
		st := tn.cn.Status()
		if st.LocalRoutes != per {
			return fmt.Errorf("%s holds %d local routes, want %d", tn.name, st.LocalRoutes, per)
		}
		others := 0
		for _, m := range st.Members {
			if m.Local {
				continue
			}
			if m.Routes != per {
				return fmt.Errorf("%s knows %d routes of %s (%s), want %d", tn.name, m.Routes, m.Name, m.State, per)
			}
			others++
		}
		if others != want {
			return fmt.Errorf("%s sees %d other members, want %d", tn.name, others, want)
		}
	}
	return nil
}

// scaleCheckDelivered drains every subscriber and checks that each
// message arrived exactly once, at the node whose route its topic matches.
func scaleCheckDelivered(t *testing.T, subs []*broker.LocalSubscriber, msgs int) {
	t.Helper()
	seen := make([]int, msgs)
	for i, s := range subs {
		if d := s.Dropped(); d != 0 {
			t.Fatalf("n%d's subscriber dropped %d messages", i+1, d)
		}
		for n := s.Pending(); n > 0; n-- {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			d, err := s.Receive(ctx)
			cancel()
			if err != nil {
				t.Fatalf("n%d: %v", i+1, err)
			}
			k, err := strconv.Atoi(string(d.Msg.Payload))
			if err != nil || k < 0 || k >= msgs {
				t.Fatalf("n%d got an unexpected message %q on %s", i+1, d.Msg.Payload, d.Msg.Topic)
			}
			if target, ok := scaleTarget(d.Msg.Topic); !ok || target != i {
				t.Fatalf("message %d on %s delivered to n%d", k, d.Msg.Topic, i+1)
			}
			seen[k]++
		}
	}
	for k, c := range seen {
		if c != 1 {
			t.Fatalf("message %d delivered %d times", k, c)
		}
	}
}

// scaleAntiEntropyEvery is how often a node re-sends its route snapshot to
// every peer (Node.housekeeping's ticker, not configurable).
const scaleAntiEntropyEvery = 30 * time.Second

// scaleTicks counts the anti-entropy ticks of nodes started at the given
// times that fall between a and b.
func scaleTicks(started []time.Time, a, b time.Time) int {
	n := 0
	for _, s := range started {
		n += int(b.Sub(s)/scaleAntiEntropyEvery) - int(max(a.Sub(s), 0)/scaleAntiEntropyEvery)
	}
	return n
}

// scaleWaitKnown waits until every node knows every other node's per
// routes. It asks one node at a time (Status sorts the node's own
// filters, which costs tens of milliseconds at 100k routes, and polling
// ten of them would steal the CPU being measured) and moves on as soon as
// that one is complete; a final pass checks them all again.
func scaleWaitKnown(t *testing.T, nodes []*tnode, per int, total, every time.Duration) {
	t.Helper()
	begin := time.Now()
	deadline, report := begin.Add(total), begin.Add(15*time.Second)
	lastKnown, stalled := -1, 0
	for i := 0; i < len(nodes); {
		err := scaleKnown(nodes[i:i+1], per, len(nodes)-1)
		if err == nil {
			i++
			continue
		}
		if now := time.Now(); now.After(deadline) {
			desc, _ := scaleProgress(t, nodes, per)
			t.Fatalf("after %v: %v; %s", total, err, desc)
		} else if now.After(report) {
			desc, known := scaleProgress(t, nodes, per)
			t.Logf("after %.0fs: %v; %s", now.Sub(begin).Seconds(), err, desc)
			if known == lastKnown {
				// A node declared failed and back while its link to
				// us stayed up has been seen to leave its routes
				// unknown for good: fail rather than wait.
				if stalled++; stalled >= 4 {
					t.Fatalf("no progress for a minute: %v; %s", err, desc)
				}
			} else {
				lastKnown, stalled = known, 0
			}
			report = now.Add(15 * time.Second)
		}
		time.Sleep(every)
	}
	if err := scaleKnown(nodes, per); err != nil {
		t.Fatal(err)
	}
}

// scaleProgress describes how far the nodes are: routes known of the
// others (of how many), links up, reconnects and member failures seen.
func scaleProgress(t *testing.T, nodes []*tnode, per int) (desc string, known int) {
	t.Helper()
	var b strings.Builder
	var reconnects, failures float64
	for _, tn := range nodes {
		st := tn.cn.Status()
		k, up, others := 0, 0, 0
		for _, m := range st.Members {
			if m.Local {
				continue
			}
			others++
			k += m.Routes
			if m.Link == "up" {
				up++
			}
		}
		known += k
		fmt.Fprintf(&b, "%s: %d/%d routes, %d/%d links up; ", tn.name, k, others*per, up, others)
		reconnects += scaleMetric(t, tn.reg, "isobar_cluster_link_reconnects_total")
		failures += scaleMetric(t, tn.reg, "isobar_cluster_peer_events_total", "kind", "failed")
	}
	fmt.Fprintf(&b, "%.0f link reconnects, %.0f member failures", reconnects, failures)
	return b.String(), known
}

// scaleWait polls f until it succeeds, failing the test after total.
func scaleWait(t *testing.T, total, every time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(total)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %v", total, err)
		}
		time.Sleep(every)
	}
}

// scaleHeapProfile writes a heap profile (go tool pprof -sample_index=inuse_space).
func scaleHeapProfile(t *testing.T, path string) {
	t.Helper()
	runtime.GC()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		t.Fatal(err)
	}
	t.Logf("heap profile written to %s", path)
}

// scaleHeap is the live heap after a full collection.
func scaleHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// scaleTraffic sums, over the nodes, the bytes sent on node links and as
// membership gossip.
func scaleTraffic(t *testing.T, nodes []*tnode) (link, gossip float64) {
	t.Helper()
	for _, tn := range nodes {
		link += scaleMetric(t, tn.reg, "isobar_cluster_link_bytes_total", "direction", "out")
		gossip += scaleMetric(t, tn.reg, "isobar_cluster_gossip_bytes_total", "direction", "out")
	}
	return link, gossip
}

// scalePeerTraffic sums the bytes sent on the links between the nodes and
// one more node, both ways.
func scalePeerTraffic(t *testing.T, nodes []*tnode, other *tnode) float64 {
	t.Helper()
	total := scaleMetric(t, other.reg, "isobar_cluster_link_bytes_total", "direction", "out")
	for _, tn := range nodes {
		total += scaleMetric(t, tn.reg, "isobar_cluster_link_bytes_total", "direction", "out", "peer", other.name)
	}
	return total
}

// scaleMetric sums the counter's series that have every label name/value
// pair given.
func scaleMetric(t *testing.T, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	total := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			matched := 0
			for i := 0; i+1 < len(labels); i += 2 {
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						matched++
					}
				}
			}
			if matched == len(labels)/2 {
				total += m.GetCounter().GetValue()
			}
		}
	}
	return total
}
