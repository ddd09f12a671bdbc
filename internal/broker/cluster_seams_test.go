package broker

// Unit tests of the cluster seams (cluster.go): the local-interest
// observer and its snapshot, shared-group preference with remote nodes,
// the Forwarder, retained-message versions (stamps, LWW, persistence) and
// the client-identifier claims (SessionDirectory, ReleaseSession,
// AdoptSession, DeliverToSession). Every identifier here starts with
// "cluster" so that it cannot clash with the other test files.

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/isobar-mq/isobar/internal/hlc"
	"github.com/isobar-mq/isobar/internal/mqtt/packet"
	"github.com/isobar-mq/isobar/internal/store"
	"github.com/isobar-mq/isobar/internal/topic"
)

// ---------------------------------------------------------------------------
// Test doubles.

// clusterRemoteStub is a remote cluster node: a recording Subscriber with
// RemoteNode.
type clusterRemoteStub struct {
	seamStub
	node string
}

func (r *clusterRemoteStub) RemoteNode() string { return r.node }

func newClusterRemote(node string) *clusterRemoteStub {
	return &clusterRemoteStub{seamStub: seamStub{name: ""}, node: node}
}

// clusterInterestRec is an InterestObserver keeping the set it was told
// about and every event ("+f" / "-f"); errs records impossible sequences
// (an add of a filter already held, a remove of one not held).
type clusterInterestRec struct {
	mu     sync.Mutex
	set    map[string]bool
	events []string
	errs   []string
}

func (r *clusterInterestRec) InterestChanged(f string, added bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.set == nil {
		r.set = make(map[string]bool)
	}
	if added {
		if r.set[f] {
			r.errs = append(r.errs, "added twice: "+f)
		}
		r.set[f] = true
		r.events = append(r.events, "+"+f)
		return
	}
	if !r.set[f] {
		r.errs = append(r.errs, "removed while absent: "+f)
	}
	delete(r.set, f)
	r.events = append(r.events, "-"+f)
}

// take returns the events since the last call.
func (r *clusterInterestRec) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.events
	r.events = nil
	return out
}

func (r *clusterInterestRec) sortedSetLocked() []string {
	out := make([]string, 0, len(r.set))
	for f := range r.set {
		out = append(out, f)
	}
	slices.Sort(out)
	return out
}

func (r *clusterInterestRec) problems() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.errs...)
}

// expectEvents waits until the observer reported exactly want (in any
// order) since the last call, then checks nothing more arrives for a
// moment.
func (r *clusterInterestRec) expectEvents(t *testing.T, what string, want ...string) {
	t.Helper()
	var got []string
	deadline := time.Now().Add(seamWait)
	for len(got) < len(want) && time.Now().Before(deadline) {
		got = append(got, r.take()...)
		if len(got) < len(want) {
			time.Sleep(2 * time.Millisecond)
		}
	}
	if len(want) == 0 {
		time.Sleep(20 * time.Millisecond)
	}
	got = append(got, r.take()...)
	slices.Sort(got)
	want = slices.Clone(want)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("%s: interest events %q, want %q", what, got, want)
	}
	if p := r.problems(); len(p) > 0 {
		t.Fatalf("%s: inconsistent interest events: %q", what, p)
	}
}

// clusterSnapshot returns the server's interest snapshot.
func clusterSnapshot(s *Server) []string {
	var out []string
	s.InterestSnapshot(func(f []string) { out = slices.Clone(f) })
	return out
}

// clusterRetained is one RetainedChanged call as seen.
type clusterRetained struct {
	topic, payload string
	stamp, node    uint64
	retain         bool
}

type clusterRetainRec struct {
	mu  sync.Mutex
	got []clusterRetained
}

func (r *clusterRetainRec) RetainedChanged(m *Message) {
	r.mu.Lock()
	r.got = append(r.got, clusterRetained{m.Topic, string(m.Payload), m.Stamp, m.ID.Node, m.Retain})
	r.mu.Unlock()
}

func (r *clusterRetainRec) take() []clusterRetained {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.got
	r.got = nil
	return out
}

// clusterDir is a SessionDirectory recording every claim; it answers err,
// or hands over ls (once).
type clusterDir struct {
	mu       sync.Mutex
	reqs     []ClaimRequest
	err      error
	ls       *store.LoadedSession
	attached []string
}

func (d *clusterDir) Attached(clientID string, _ uint64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.attached = append(d.attached, clientID)
}

func (d *clusterDir) Claim(ctx context.Context, req ClaimRequest) (*store.LoadedSession, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.reqs = append(d.reqs, req)
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	if d.err != nil {
		return nil, d.err
	}
	ls := d.ls
	d.ls = nil
	return ls, nil
}

func (d *clusterDir) set(err error, ls *store.LoadedSession) {
	d.mu.Lock()
	d.err, d.ls = err, ls
	d.mu.Unlock()
}

func (d *clusterDir) requests() []ClaimRequest {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.reqs)
}

// clusterConnect connects a raw client and returns it with its CONNACK
// (whatever its code).
func clusterConnect(t *testing.T, addr string, ver byte, cp packet.Connect, expiry uint32) (*seamPC, *packet.Connack) {
	t.Helper()
	p := seamDial(t, addr, ver)
	if ver == packet.V5 && expiry > 0 {
		cp.Props.SessionExpiryInterval = expiry
		cp.Props.Set(packet.PropSessionExpiryInterval)
	}
	return p, p.connectAck(cp)
}

func clusterTrusted(s *Server, filters ...string) *LocalSubscriber {
	l := s.NewSubscriber(SubscriberOptions{Trusted: true})
	for _, f := range filters {
		if err := l.Subscribe(f, topic.Options{QoS: 1}); err != nil {
			panic(err)
		}
	}
	return l
}

// clusterReceive waits for one delivery to l.
func clusterReceive(t *testing.T, l *LocalSubscriber) Delivery {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), seamWait)
	defer cancel()
	d, err := l.Receive(ctx)
	if err != nil {
		t.Fatalf("no delivery: %v", err)
	}
	return d
}

func clusterPayloads(ds []Delivery) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = string(d.Msg.Payload)
	}
	return out
}

// ---------------------------------------------------------------------------
// Interest.

// Two local subscribers of one filter make one add; the first to leave
// makes nothing, the second one remove. A replaced subscription (same
// filter, new options) changes nothing. Shared subscriptions are reported
// in their "$share/group/filter" form; remote nodes are never reported.
func TestClusterSeamInterestTransitions(t *testing.T) {
	rec := &clusterInterestRec{}
	s := seamNewServer(t, Options{Interest: rec}, nil)

	l1 := s.NewSubscriber(SubscriberOptions{Trusted: true})
	l2 := s.NewSubscriber(SubscriberOptions{Trusted: true})
	if err := l1.Subscribe("a/b", topic.Options{QoS: 0}); err != nil {
		t.Fatal(err)
	}
	rec.expectEvents(t, "first subscriber", "+a/b")
	if err := l2.Subscribe("a/b", topic.Options{QoS: 1}); err != nil {
		t.Fatal(err)
	}
	if err := l1.Subscribe("a/b", topic.Options{QoS: 2}); err != nil { // replaced
		t.Fatal(err)
	}
	rec.expectEvents(t, "second subscriber and a replacement")
	if !l1.Unsubscribe("a/b") {
		t.Fatal("l1 unsubscribe: not subscribed")
	}
	rec.expectEvents(t, "first unsubscribe")
	if l1.Unsubscribe("a/b") {
		t.Fatal("second unsubscribe of l1 reported a subscription")
	}
	rec.expectEvents(t, "repeated unsubscribe")
	l2.Unsubscribe("a/b")
	rec.expectEvents(t, "last unsubscribe", "-a/b")

	// Shared: the full form, counted per group.
	if err := l1.Subscribe("$share/g/a/b", topic.Options{QoS: 1}); err != nil {
		t.Fatal(err)
	}
	if err := l2.Subscribe("$share/g/a/b", topic.Options{QoS: 1}); err != nil {
		t.Fatal(err)
	}
	if err := l2.Subscribe("$share/h/a/b", topic.Options{QoS: 1}); err != nil {
		t.Fatal(err)
	}
	rec.expectEvents(t, "shared", "+$share/g/a/b", "+$share/h/a/b")
	if got, want := clusterSnapshot(s), []string{"$share/g/a/b", "$share/h/a/b"}; !slices.Equal(got, want) {
		t.Fatalf("snapshot %q, want %q", got, want)
	}

	// Remote nodes: never local interest, not even on a filter no local
	// subscriber holds, nor when they leave one a local subscriber holds.
	r := newClusterRemote("B")
	s.SubscribeRemote(r, "r/#", topic.Options{QoS: 1})
	s.SubscribeRemote(r, "$share/g/a/b", topic.Options{QoS: 1})
	s.SubscribeRemote(r, "$share/x/y", topic.Options{QoS: 1})
	rec.expectEvents(t, "remote subscriptions")
	if !s.UnsubscribeRemote(r, "r/#") || !s.UnsubscribeRemote(r, "$share/g/a/b") {
		t.Fatal("remote unsubscribe: not subscribed")
	}
	rec.expectEvents(t, "remote unsubscriptions")
	if s.UnsubscribeRemote(r, "r/#") {
		t.Fatal("remote unsubscribe twice reported a subscription")
	}

	// Close removes every filter it held, only the last holder counting.
	l1.Close()
	rec.expectEvents(t, "l1 closed")
	l2.Close()
	rec.expectEvents(t, "l2 closed", "-$share/g/a/b", "-$share/h/a/b")
	if got := clusterSnapshot(s); len(got) != 0 {
		t.Fatalf("snapshot after every local subscriber left: %q", got)
	}
}

// MQTT sessions: subscribe and unsubscribe, a clean disconnect ending a
// session (expiry 0) and a clean start ending a persistent one.
func TestClusterSeamInterestSessions(t *testing.T) {
	rec := &clusterInterestRec{}
	s := seamNewServer(t, Options{Interest: rec}, nil)
	addr := seamListen(t, s)

	c1 := seamV5(t, addr, "c1")
	c2 := seamV5(t, addr, "c2")
	c1.sub("s/1", 1)
	c2.sub("s/1", 0)
	c2.sub("$share/g/s/2", 1)
	rec.expectEvents(t, "sessions subscribed", "+s/1", "+$share/g/s/2")

	c1.disconnect() // expiry 0: the session ends with the connection
	rec.expectEvents(t, "c1 session ended")

	up := packet.Unsubscribe{PacketID: 7, Filters: []string{"$share/g/s/2"}}
	c2.write(up.Append(nil, packet.V5))
	if pkt := c2.next(); pkt == nil {
		t.Fatal("no UNSUBACK")
	}
	rec.expectEvents(t, "c2 unsubscribed the shared filter", "-$share/g/s/2")
	c2.disconnect()
	rec.expectEvents(t, "c2 session ended", "-s/1")

	// A persistent session keeps its interest while offline; a clean
	// start ends it.
	p, ack := clusterConnect(t, addr, packet.V5, packet.Connect{ClientID: "p", CleanStart: true}, 300)
	if ack.ReasonCode != 0 {
		t.Fatalf("CONNACK 0x%02X", ack.ReasonCode)
	}
	p.sub("p/1", 1)
	rec.expectEvents(t, "persistent session subscribed", "+p/1")
	p.disconnect()
	rec.expectEvents(t, "persistent session offline")
	if got := clusterSnapshot(s); !slices.Equal(got, []string{"p/1"}) {
		t.Fatalf("snapshot with an offline persistent session: %q", got)
	}
	p2, ack := clusterConnect(t, addr, packet.V5, packet.Connect{ClientID: "p", CleanStart: true}, 0)
	if ack.ReasonCode != 0 || ack.SessionPresent {
		t.Fatalf("clean start: %s", seamDescribe(ack))
	}
	rec.expectEvents(t, "clean start ended the old session", "-p/1")
	p2.disconnect()
	rec.expectEvents(t, "clean session ended")
}

// Sessions installed by ImportSession and by Restore report their
// filters; a refused import (the identifier exists) reports nothing net;
// ReleaseSession moving a session away reports its removal.
func TestClusterSeamInterestImportRestore(t *testing.T) {
	now := time.Now().UnixNano()
	mk := func(id string, filters ...string) *store.LoadedSession {
		ls := &store.LoadedSession{Session: store.SessionRecord{ClientID: id, ExpiryInterval: 300, DisconnectedAt: now}}
		for _, f := range filters {
			ls.Subscriptions = append(ls.Subscriptions, store.SubscriptionRecord{Filter: f, QoS: 1})
		}
		return ls
	}

	t.Run("import", func(t *testing.T) {
		rec := &clusterInterestRec{}
		s := seamNewServer(t, Options{Interest: rec}, nil)
		if err := s.ImportSession(mk("i1", "i/1", "$share/g/i/2")); err != nil {
			t.Fatal(err)
		}
		rec.expectEvents(t, "import", "+i/1", "+$share/g/i/2")
		if err := s.ImportSession(mk("i2", "i/1")); err != nil {
			t.Fatal(err)
		}
		rec.expectEvents(t, "second import of a held filter")
		if err := s.ImportSession(mk("i1", "i/9")); !errors.Is(err, ErrSessionExists) {
			t.Fatalf("import over an existing session: %v", err)
		}
		rec.expectEvents(t, "refused import")
		if got := clusterSnapshot(s); !slices.Equal(got, []string{"$share/g/i/2", "i/1"}) {
			t.Fatalf("snapshot %q", got)
		}
		// An expired session is not installed: no interest.
		old := mk("gone", "gone/1")
		old.Session.ExpiryInterval = 1
		old.Session.DisconnectedAt = now - int64(time.Hour)
		if err := s.ImportSession(old); err != nil {
			t.Fatal(err)
		}
		rec.expectEvents(t, "expired import")

		if _, out := s.ReleaseSession(ClaimRequest{ClientID: "i1", Stamp: 1}); out != ReleaseMoved {
			t.Fatalf("release: %v", out)
		}
		rec.expectEvents(t, "i1 moved away", "-$share/g/i/2")
		if _, out := s.ReleaseSession(ClaimRequest{ClientID: "i2", Clean: true, Stamp: 1}); out != ReleaseEnded {
			t.Fatalf("release clean: %v", out)
		}
		rec.expectEvents(t, "i2 ended", "-i/1")
	})

	t.Run("restore", func(t *testing.T) {
		dir := t.TempDir()
		st1, err := store.Open(store.Options{Dir: dir, Sync: store.SyncAlways})
		if err != nil {
			t.Fatal(err)
		}
		s1 := New(Options{Store: st1}, nil, nil)
		if err := s1.ImportSession(mk("r1", "r/1", "$share/g/r/2")); err != nil {
			t.Fatal(err)
		}
		if err := s1.ImportSession(mk("r2", "r/1")); err != nil {
			t.Fatal(err)
		}
		clusterStop(t, s1, st1)

		st2 := seamPebble(t, dir)
		rec := &clusterInterestRec{}
		s2 := seamNewServer(t, Options{Store: st2, Interest: rec}, nil)
		if err := s2.Restore(); err != nil {
			t.Fatal(err)
		}
		rec.expectEvents(t, "restore", "+r/1", "+$share/g/r/2")
	})
}

// clusterStop shuts a server down and closes its store.
func clusterStop(t *testing.T, s *Server, st store.Store) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), seamWait)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if err := st.Close(); err != nil {
		t.Fatalf("close store: %v", err)
	}
}

// Concurrent subscribers (local and remote) subscribing and unsubscribing
// a few filters: the observer never sees two adds or a remove of an
// absent filter, every snapshot is sorted and equals what the observer
// was told up to then, and the final snapshot is the union of what the
// local subscribers hold.
func TestClusterSeamInterestSnapshotStress(t *testing.T) {
	rec := &clusterInterestRec{}
	s := seamNewServer(t, Options{Interest: rec}, nil)
	filters := []string{"a", "a/+", "a/#", "b/c", "$share/g/a", "$share/h/a/#"}
	const workers, ops = 4, 2000

	subs := make([]*LocalSubscriber, workers)
	held := make([]map[string]bool, workers)
	var wg sync.WaitGroup
	for w := range workers {
		subs[w] = s.NewSubscriber(SubscriberOptions{Trusted: true})
		held[w] = make(map[string]bool)
		wg.Add(1)
		go func() {
			defer wg.Done()
			rnd := rand.New(rand.NewPCG(uint64(w), 7))
			for range ops {
				f := filters[rnd.IntN(len(filters))]
				if held[w][f] {
					subs[w].Unsubscribe(f)
					delete(held[w], f)
				} else {
					_ = subs[w].Subscribe(f, topic.Options{QoS: byte(rnd.IntN(3))})
					held[w][f] = true
				}
			}
		}()
	}
	// A remote node churning the same filters: never reported.
	wg.Add(1)
	go func() {
		defer wg.Done()
		r := newClusterRemote("B")
		for i := range ops {
			f := filters[i%len(filters)]
			s.SubscribeRemote(r, f, topic.Options{QoS: 1})
			if i%2 == 0 {
				s.UnsubscribeRemote(r, f)
			}
		}
	}()
	stop := make(chan struct{})
	snapErr := make(chan string, 1)
	var snaps int
	go func() {
		defer close(snapErr)
		for i := 0; i < 100000; i++ {
			select {
			case <-stop:
				return
			default:
			}
			var bad string
			s.InterestSnapshot(func(got []string) {
				rec.mu.Lock()
				want := rec.sortedSetLocked()
				rec.mu.Unlock()
				if !slices.IsSorted(got) {
					bad = fmt.Sprintf("snapshot not sorted: %q", got)
				} else if !slices.Equal(got, want) {
					bad = fmt.Sprintf("snapshot %q, observer told %q", got, want)
				}
			})
			snaps++
			if bad != "" {
				snapErr <- bad
				return
			}
			runtime.Gosched()
		}
	}()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("workers did not finish")
	}
	close(stop)
	if bad := <-snapErr; bad != "" {
		t.Fatal(bad)
	}
	if p := rec.problems(); len(p) > 0 {
		t.Fatalf("inconsistent events: %q", p)
	}
	union := map[string]bool{}
	for _, h := range held {
		for f := range h {
			union[f] = true
		}
	}
	var want []string
	for f := range union {
		want = append(want, f)
	}
	slices.Sort(want)
	if got := clusterSnapshot(s); !slices.Equal(got, want) {
		t.Fatalf("final snapshot %q, subscribers hold %q", got, want)
	}
	// And the index agrees: its distinct filters held by local subscribers.
	inIndex := map[string]bool{}
	s.index.Walk(func(f string, e topic.Entry[Subscriber]) bool {
		if !isRemote(e.Key) {
			inIndex[f] = true
		}
		return true
	})
	if len(inIndex) != len(want) {
		t.Fatalf("index holds local filters %v, snapshot %q", inIndex, want)
	}
	for _, l := range subs {
		l.Close()
	}
	if got := clusterSnapshot(s); len(got) != 0 {
		t.Fatalf("snapshot after every subscriber closed: %q", got)
	}
	rec.mu.Lock()
	left := rec.sortedSetLocked()
	rec.mu.Unlock()
	if len(left) != 0 || len(rec.problems()) != 0 {
		t.Fatalf("observer left with %q, problems %q", left, rec.problems())
	}
	t.Logf("%d snapshots checked", snaps)
}

// ---------------------------------------------------------------------------
// Shared groups with remote members.

// pickShared prefers online local members, then online remote nodes, then
// offline local members, then offline remote nodes; localOnly leaves
// remote nodes out; the read ACL and exclude still apply.
func TestClusterSeamPickSharedPreference(t *testing.T) {
	lOn := &seamStub{name: "lOn"}
	lOn2 := &seamStub{name: "lOn2"}
	lOff := &seamStub{name: "lOff", offline: true}
	rOn := newClusterRemote("B")
	rOn.name = "rOn"
	rOff := newClusterRemote("C")
	rOff.name, rOff.offline = "rOff", true
	lDeny := &seamStub{name: "lDeny", deny: true}

	mem := func(subs ...Subscriber) []topic.Entry[Subscriber] {
		out := make([]topic.Entry[Subscriber], len(subs))
		for i, s := range subs {
			out[i] = topic.Entry[Subscriber]{Key: s, Filter: "t"}
		}
		return out
	}
	name := func(e *topic.Entry[Subscriber]) string {
		switch k := e.Key.(type) {
		case *seamStub:
			return k.name
		case *clusterRemoteStub:
			return k.name
		}
		return "?"
	}
	for _, tc := range []struct {
		what      string
		members   []topic.Entry[Subscriber]
		next      uint64
		exclude   Subscriber
		localOnly bool
		want      string
	}{
		{"online local first", mem(rOff, lOff, rOn, lOn), 0, nil, false, "lOn"},
		{"online local first, any start", mem(rOff, lOff, rOn, lOn), 2, nil, false, "lOn"},
		{"then online remote", mem(rOff, lOff, rOn), 0, nil, false, "rOn"},
		{"then offline local", mem(rOff, lOff), 0, nil, false, "lOff"},
		{"then offline remote", mem(rOff), 0, nil, false, "rOff"},
		{"round robin among online locals", mem(lOn, rOn, lOn2), 2, nil, false, "lOn2"},
		{"round robin wraps", mem(lOn, rOn, lOn2), 1, nil, false, "lOn2"},
		{"round robin from 0", mem(lOn, rOn, lOn2), 0, nil, false, "lOn"},
		{"read ACL", mem(lDeny, rOn), 0, nil, false, "rOn"},
		{"exclude", mem(lOn, rOn), 0, lOn, false, "rOn"},
		{"localOnly skips an online remote", mem(rOn, lOff), 0, nil, true, "lOff"},
		{"localOnly with only remotes", mem(rOn, rOff), 0, nil, true, "none"},
		{"denied and excluded", mem(lDeny, lOn), 0, lOn, false, "none"},
	} {
		e := pickShared(tc.members, tc.next, tc.exclude, "t", tc.localOnly)
		got := "none"
		if e != nil {
			got = name(e)
		}
		if got != tc.want {
			t.Errorf("%s: picked %s, want %s", tc.what, got, tc.want)
		}
	}
}

// ---------------------------------------------------------------------------
// Forwarder.

func TestClusterSeamForwarder(t *testing.T) {
	st := &seamStore{} // with a store, done callbacks wait for the commit
	s := seamNewServer(t, Options{Store: st}, nil)
	plain := clusterTrusted(s, "f/#")
	gLocal := clusterTrusted(s, "$share/g/f/#")
	hLocal := clusterTrusted(s, "$share/h/f/#")
	r := newClusterRemote("B")
	s.SubscribeRemote(r, "f/#", topic.Options{QoS: 1})
	s.SubscribeRemote(r, "$share/g/f/#", topic.Options{QoS: 1})
	s.SubscribeRemote(r, "$share/r/f/#", topic.Options{QoS: 1}) // a group with a remote member only

	// A retained message published here, to check forwarding leaves it.
	if err := s.Publish(&Message{Topic: "f/keep", Payload: []byte("orig"), QoS: 1, Retain: true}); err != nil {
		t.Fatal(err)
	}
	for _, l := range []*LocalSubscriber{plain, gLocal, hLocal} {
		for l.Pending() > 0 {
			clusterReceive(t, l)
		}
	}
	remoteBefore := len(r.deliveries())

	f := s.NewForwarder()
	var mu sync.Mutex
	var results []string
	done := func(name string) func(PublishResult) {
		return func(res PublishResult) {
			mu.Lock()
			results = append(results, fmt.Sprintf("%s:%d:%v", name, res.Routed, res.Err))
			mu.Unlock()
		}
	}
	msg := func(topicName, payload string, retain bool) *Message {
		return &Message{Topic: topicName, Payload: []byte(payload), QoS: 1, Retain: retain, ID: MessageID{Node: 42, Seq: uint64(len(payload))}}
	}

	// plain only: the plain local subscriber, no group, never the remote.
	if err := f.Forward(msg("f/1", "plain", false), true, nil, done("plain")); err != nil {
		t.Fatal(err)
	}
	// groups only, several times: always the local member of g (never the
	// remote member of g, nor h which was not listed, nor r).
	for i := range 4 {
		if err := f.Forward(msg("f/2", fmt.Sprint("group", i), false), false, []string{"g/f/#", "r/f/#"}, done(fmt.Sprint("group", i))); err != nil {
			t.Fatal(err)
		}
	}
	// both
	if err := f.Forward(msg("f/3", "both", false), true, []string{"h/f/#"}, done("both")); err != nil {
		t.Fatal(err)
	}
	// Invalid messages: refused at once, no callback.
	for _, bad := range []*Message{
		{Topic: "f/+", Payload: []byte("x")},
		{Topic: "", Payload: []byte("x")},
		{Topic: "f/#", Payload: []byte("x")},
		{Topic: "f/q", Payload: []byte("x"), QoS: 3},
	} {
		if err := f.Forward(bad, true, nil, done("bad")); !errors.Is(err, ErrInvalidForward) {
			t.Errorf("Forward(%q qos %d): %v, want ErrInvalidForward", bad.Topic, bad.QoS, err)
		}
	}
	// Retained: a forwarded message never changes the retained store
	// (retained state is replicated with ApplyRetained).
	if err := f.Forward(msg("f/keep", "forwarded", true), true, nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := f.Forward(&Message{Topic: "f/keep", Retain: true, QoS: 0}, true, nil, nil); err != nil { // an empty retained: no deletion
		t.Fatal(err)
	}
	if err := f.Forward(msg("f/new", "new", true), true, nil, nil); err != nil {
		t.Fatal(err)
	}

	mu.Lock()
	early := len(results)
	mu.Unlock()
	if early != 0 {
		t.Fatalf("%d done callbacks before Flush", early)
	}
	if err := f.Flush(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	got := slices.Clone(results)
	mu.Unlock()
	want := []string{"plain:1:<nil>", "group0:1:<nil>", "group1:1:<nil>", "group2:1:<nil>", "group3:1:<nil>", "both:2:<nil>"}
	if !slices.Equal(got, want) {
		t.Fatalf("done callbacks %q, want %q", got, want)
	}

	drain := func(l *LocalSubscriber) []Delivery {
		var out []Delivery
		for l.Pending() > 0 {
			out = append(out, clusterReceive(t, l))
		}
		return out
	}
	if got := clusterPayloads(drain(plain)); !slices.Equal(got, []string{"plain", "both", "forwarded", "", "new"}) {
		t.Errorf("plain subscriber got %q", got)
	}
	gd := drain(gLocal)
	if got := clusterPayloads(gd); !slices.Equal(got, []string{"group0", "group1", "group2", "group3"}) {
		t.Errorf("local member of g got %q", got)
	}
	for _, d := range gd {
		if d.Group != "g/f/#" {
			t.Errorf("group delivery with Group %q", d.Group)
		}
	}
	if got := clusterPayloads(drain(hLocal)); !slices.Equal(got, []string{"both"}) {
		t.Errorf("local member of h got %q", got)
	}
	if n := len(r.deliveries()); n != remoteBefore {
		t.Errorf("remote node got %d forwarded messages", n-remoteBefore)
	}
	if m, ok := s.RetainedMessage("f/keep"); !ok || string(m.Payload) != "orig" {
		t.Errorf("retained f/keep after forwarding: %v %v", ok, m)
	}
	if _, ok := s.RetainedMessage("f/new"); ok {
		t.Error("a forwarded retained message was stored")
	}
	if n := s.Stats().Snapshot().ForwardedIn; n != 9 {
		t.Errorf("ForwardedIn %d, want 9", n)
	}
}

// ---------------------------------------------------------------------------
// Retained versions.

// A local retained change is stamped (increasing stamps), stored with its
// stamp and reported; $SYS topics are not reported; a deletion (empty
// retained publish or DeleteRetained) is reported with an empty payload.
func TestClusterSeamRetainedLocal(t *testing.T) {
	obs := &clusterRetainRec{}
	s := seamNewServer(t, Options{Retained: obs, NodeName: "n1"}, nil)
	addr := seamListen(t, s)

	if err := s.Publish(&Message{Topic: "r/1", Payload: []byte("a"), QoS: 1, Retain: true}); err != nil {
		t.Fatal(err)
	}
	got := obs.take()
	if len(got) != 1 || got[0].topic != "r/1" || got[0].payload != "a" || got[0].stamp == 0 || !got[0].retain {
		t.Fatalf("reported %+v", got)
	}
	s1 := got[0].stamp
	if m, ok := s.RetainedMessage("r/1"); !ok || m.Stamp != s1 {
		t.Fatalf("stored retained stamp %v, reported %d", m, s1)
	}
	if got[0].node != NodeHash("n1") {
		t.Errorf("reported node %d, want this node's hash", got[0].node)
	}

	// A client's retained publish.
	p := seamV5(t, addr, "pub")
	p.publish(packet.Publish{Topic: "r/1", Payload: []byte("b"), QoS: 1, PacketID: 1, Retain: true})
	p.expectAck(packet.PUBACK, 1)
	got = obs.take()
	if len(got) != 1 || got[0].payload != "b" || got[0].stamp <= s1 {
		t.Fatalf("client publish reported %+v (previous stamp %d)", got, s1)
	}
	s2 := got[0].stamp

	// A non-retained publish and $SYS: not reported.
	if err := s.Publish(&Message{Topic: "r/1", Payload: []byte("c"), QoS: 1}); err != nil {
		t.Fatal(err)
	}
	if err := s.Publish(&Message{Topic: "$SYS/broker/x", Payload: []byte("1"), Retain: true}); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.RetainedMessage("$SYS/broker/x"); !ok {
		t.Fatal("$SYS retained message not held")
	}
	if got := obs.take(); len(got) != 0 {
		t.Fatalf("reported %+v", got)
	}

	// Deletions.
	if !s.DeleteRetained("r/1") {
		t.Fatal("DeleteRetained: none")
	}
	got = obs.take()
	if len(got) != 1 || got[0].topic != "r/1" || got[0].payload != "" || got[0].stamp <= s2 || got[0].node != NodeHash("n1") {
		t.Fatalf("deletion reported %+v (previous stamp %d)", got, s2)
	}
	if _, ok := s.RetainedMessage("r/1"); ok {
		t.Fatal("retained r/1 still held")
	}
	if s.DeleteRetained("r/1") {
		t.Fatal("DeleteRetained of nothing reported one")
	}
	if got := obs.take(); len(got) != 0 {
		t.Fatalf("deletion of nothing reported %+v", got)
	}
	if err := s.Publish(&Message{Topic: "r/2", Payload: []byte("x"), Retain: true}); err != nil {
		t.Fatal(err)
	}
	p.publish(packet.Publish{Topic: "r/2", QoS: 1, PacketID: 2, Retain: true}) // empty: deletion
	p.expectAck(packet.PUBACK, 2)
	got = obs.take()
	if len(got) != 2 || got[1].payload != "" || got[1].stamp <= got[0].stamp {
		t.Fatalf("empty retained publish reported %+v", got)
	}
	if s.DeleteRetained("$SYS/broker/x") && len(obs.take()) != 0 {
		t.Fatal("$SYS deletion reported")
	}
}

// ApplyRetained is last-writer-wins on (stamp, node): newer applies, an
// equal stamp goes to the higher node, older is ignored; a newer deletion
// removes; nothing applied is reported to the observer; the clock moves
// past applied stamps.
func TestClusterSeamApplyRetainedLWW(t *testing.T) {
	obs := &clusterRetainRec{}
	s := seamNewServer(t, Options{Retained: obs}, nil)
	sub := clusterTrusted(s)
	base := s.Clock().Now() + 1000<<16 // a second ahead: a peer's faster clock
	ver := func(payload string, stamp, node uint64) *Message {
		return &Message{Topic: "v/1", Payload: []byte(payload), QoS: 1, Stamp: stamp, ID: MessageID{Node: node, Seq: stamp}}
	}
	held := func() string {
		m, ok := s.RetainedMessage("v/1")
		if !ok {
			return "<none>"
		}
		return fmt.Sprintf("%s@%d/%d", m.Payload, m.Stamp-base, m.ID.Node)
	}
	for _, st := range []struct {
		m       *Message
		applied bool
		held    string
	}{
		{ver("first", base, 5), true, "first@0/5"},
		{ver("older", base-1, 9), false, "first@0/5"},
		{ver("tie-lower-node", base, 4), false, "first@0/5"},
		{ver("tie-same-node", base, 5), false, "first@0/5"},
		{ver("tie-higher-node", base, 6), true, "tie-higher-node@0/6"},
		{ver("newer", base+10, 1), true, "newer@10/1"},
		{ver("", base+5, 9), false, "newer@10/1"}, // older deletion
		{ver("", base+20, 1), true, "<none>"},     // newer deletion
		{ver("", base+30, 1), false, "<none>"},    // deletion of nothing
	} {
		if got := s.ApplyRetained(st.m); got != st.applied {
			t.Errorf("ApplyRetained(%q stamp +%d node %d) = %v, want %v", st.m.Payload, st.m.Stamp-base, st.m.ID.Node, got, st.applied)
		}
		if h := held(); h != st.held {
			t.Errorf("after %q: held %s, want %s", st.m.Payload, h, st.held)
		}
	}
	if got := obs.take(); len(got) != 0 {
		t.Fatalf("applied versions reported to the observer: %+v", got)
	}
	if sub.Pending() != 0 {
		t.Fatal("an applied version was routed")
	}
	// Refused outright: $SYS and invalid topics.
	if s.ApplyRetained(&Message{Topic: "$SYS/x", Payload: []byte("1"), Stamp: base + 100}) {
		t.Error("$SYS version applied")
	}
	if s.ApplyRetained(&Message{Topic: "v/+", Payload: []byte("1"), Stamp: base + 100}) {
		t.Error("version on a wildcard topic applied")
	}
	// A later local change wins over every applied stamp.
	if err := s.Publish(&Message{Topic: "v/2", Payload: []byte("local"), Retain: true}); err != nil {
		t.Fatal(err)
	}
	got := obs.take()
	if len(got) != 1 || got[0].stamp <= base+30 {
		t.Fatalf("local change after applied versions: %+v, want a stamp above %d", got, base+30)
	}
	// An applied version is delivered to later subscribers as retained.
	if !s.ApplyRetained(&Message{Topic: "v/3", Payload: []byte("peer"), QoS: 1, Stamp: got[0].stamp + 1, ID: MessageID{Node: 3, Seq: 1}}) {
		t.Fatal("v/3 not applied")
	}
	l := clusterTrusted(s, "v/3")
	if d := clusterReceive(t, l); string(d.Msg.Payload) != "peer" || !d.Retain {
		t.Fatalf("retained delivery of an applied version: %+v", d)
	}
}

// A deletion is a version too: a peer's version older than a deletion
// must not bring the message back (last writer wins). Regression test of
// missing tombstones.
func TestClusterSeamApplyRetainedAfterDeletion(t *testing.T) {
	obs := &clusterRetainRec{}
	s := seamNewServer(t, Options{Retained: obs}, nil)
	if err := s.Publish(&Message{Topic: "d/1", Payload: []byte("v1"), Retain: true}); err != nil {
		t.Fatal(err)
	}
	if !s.DeleteRetained("d/1") {
		t.Fatal("DeleteRetained: none")
	}
	got := obs.take()
	if len(got) != 2 {
		t.Fatalf("reported %+v", got)
	}
	set, del := got[0], got[1]
	// A peer that missed the deletion sends the version it holds (e.g. in
	// its snapshot after a partition heals).
	if s.ApplyRetained(&Message{Topic: "d/1", Payload: []byte("v1"), Stamp: set.stamp, ID: MessageID{Node: set.node, Seq: 1}}) {
		t.Error("the version the local deletion superseded was applied again")
	}
	if s.ApplyRetained(&Message{Topic: "d/1", Payload: []byte("stale"), Stamp: del.stamp - 1, ID: MessageID{Node: 1 << 62, Seq: 1}}) {
		t.Error("a version older than the local deletion was applied")
	}
	if m, ok := s.RetainedMessage("d/1"); ok {
		t.Errorf("deleted retained message resurrected: %q", m.Payload)
	}
	// An applied deletion of a topic not held here also wins over older
	// versions arriving after it.
	now := s.Clock().Now()
	if s.ApplyRetained(&Message{Topic: "d/2", Stamp: now + 10, ID: MessageID{Node: 7}}) {
		t.Log("deletion of an absent topic reported as applied")
	}
	if s.ApplyRetained(&Message{Topic: "d/2", Payload: []byte("stale"), Stamp: now + 5, ID: MessageID{Node: 7}}) {
		t.Error("a version older than an applied deletion was applied")
	}
	// A newer version after a deletion applies.
	if !s.ApplyRetained(&Message{Topic: "d/1", Payload: []byte("v2"), Stamp: del.stamp + 1, ID: MessageID{Node: 1}}) {
		t.Error("a version newer than the deletion was refused")
	}
}

// Stamps and origin nodes are stored: after a restart LWW still holds
// against the versions held before, and a local change made after the
// restart wins over them even when the wall clock went back.
func TestClusterSeamRetainedStampsRestart(t *testing.T) {
	dir := t.TempDir()
	wall := time.Now()
	st1, err := store.Open(store.Options{Dir: dir, Sync: store.SyncAlways})
	if err != nil {
		t.Fatal(err)
	}
	obs1 := &clusterRetainRec{}
	s1 := New(Options{Store: st1, Retained: obs1, Clock: &hlc.Clock{Wall: func() time.Time { return wall }}}, nil, nil)
	if err := s1.Publish(&Message{Topic: "k/1", Payload: []byte("local"), QoS: 1, Retain: true}); err != nil {
		t.Fatal(err)
	}
	got := obs1.take()
	if len(got) != 1 {
		t.Fatalf("reported %+v", got)
	}
	local := got[0].stamp
	peer := local + 5
	if !s1.ApplyRetained(&Message{Topic: "k/2", Payload: []byte("peer"), QoS: 1, Stamp: peer, ID: MessageID{Node: 77, Seq: 1}}) {
		t.Fatal("k/2 not applied")
	}
	clusterStop(t, s1, st1)

	st2 := seamPebble(t, dir)
	obs2 := &clusterRetainRec{}
	// The wall clock is ten minutes behind the one before the restart.
	s2 := seamNewServer(t, Options{Store: st2, Retained: obs2, Clock: &hlc.Clock{Wall: func() time.Time { return wall.Add(-10 * time.Minute) }}}, nil)
	if err := s2.Restore(); err != nil {
		t.Fatal(err)
	}
	if m, ok := s2.RetainedMessage("k/1"); !ok || m.Stamp != local {
		t.Fatalf("k/1 after restart: %v, want stamp %d", m, local)
	}
	if m, ok := s2.RetainedMessage("k/2"); !ok || m.Stamp != peer || m.ID.Node != 77 {
		t.Fatalf("k/2 after restart: %+v, want stamp %d node 77", m, peer)
	}
	// First (ApplyRetained moves the clock, even for a version it
	// refuses): a local change must be stamped above what is stored.
	if err := s2.Publish(&Message{Topic: "k/1", Payload: []byte("after"), QoS: 1, Retain: true}); err != nil {
		t.Fatal(err)
	}
	got = obs2.take()
	if len(got) != 1 || got[0].stamp <= peer {
		t.Errorf("local change after the restart stamped %+v, not above the stored stamps (max %d): peers would ignore it", got, peer)
	}
	if s2.ApplyRetained(&Message{Topic: "k/2", Payload: []byte("older"), Stamp: peer - 1, ID: MessageID{Node: 99}}) {
		t.Error("older version applied after a restart")
	}
	if s2.ApplyRetained(&Message{Topic: "k/2", Payload: []byte("tie"), Stamp: peer, ID: MessageID{Node: 76}}) {
		t.Error("equal stamp, lower node applied after a restart")
	}
}

// ---------------------------------------------------------------------------
// Claims.

// Claim is asked for every CONNECT with the client identifier, the clean
// flag, the user and a stamp that grows; the session keeps its claim.
func TestClusterSeamClaimRequest(t *testing.T) {
	dir := &clusterDir{}
	s := seamNewServer(t, Options{Directory: dir, NodeName: "n1"}, &seamAuth{})
	addr := seamListen(t, s)

	p, ack := clusterConnect(t, addr, packet.V5, packet.Connect{ClientID: "c1", UsernameFlag: true, Username: "u1"}, 300)
	if ack.ReasonCode != 0 {
		t.Fatalf("CONNACK 0x%02X", ack.ReasonCode)
	}
	p.disconnect()
	p3, ack := clusterConnect(t, addr, packet.V311, packet.Connect{ClientID: "c1", CleanStart: true, UsernameFlag: true, Username: "u1"}, 0)
	if ack.ReasonCode != 0 {
		t.Fatalf("v3 CONNACK %d", ack.ReasonCode)
	}
	reqs := dir.requests()
	if len(reqs) != 2 {
		t.Fatalf("%d claims, want 2", len(reqs))
	}
	r0, r1 := reqs[0], reqs[1]
	if r0.ClientID != "c1" || r0.Username != "u1" || r0.Clean || r0.Stamp == 0 || r0.Node != "n1" || r0.Force {
		t.Errorf("first claim %+v", r0)
	}
	if r1.ClientID != "c1" || r1.Username != "u1" || !r1.Clean || r1.Stamp <= r0.Stamp || r1.Node != "n1" {
		t.Errorf("second claim %+v (first stamp %d)", r1, r0.Stamp)
	}
	claims := s.SessionClaims()
	if len(claims) != 1 || claims[0] != (SessionClaim{ClientID: "c1", Stamp: r1.Stamp, Node: "n1", Online: true}) {
		t.Errorf("session claims %+v", claims)
	}
	p3.ping()
}

// A refused claim: ErrClaimLost (or any failure) is v5 0x89 Server busy /
// v3 3 Server unavailable; ErrClaimForeign is 0x87 / 5. No session is made.
func TestClusterSeamClaimRefused(t *testing.T) {
	dir := &clusterDir{}
	s := seamNewServer(t, Options{Directory: dir}, nil)
	addr := seamListen(t, s)
	for _, tc := range []struct {
		err    error
		ver    byte
		code   byte
		reason string
	}{
		{ErrClaimLost, packet.V5, packet.ServerBusy, "lost v5"},
		{fmt.Errorf("directory: %w", ErrClaimLost), packet.V311, packet.ConnRefusedServerUnavailable, "lost v3"},
		{errors.New("directory unreachable"), packet.V5, packet.ServerBusy, "failure v5"},
		{fmt.Errorf("directory: %w", ErrClaimForeign), packet.V5, packet.NotAuthorized, "foreign v5"},
		{ErrClaimForeign, packet.V311, packet.ConnRefusedNotAuthorized, "foreign v3"},
	} {
		dir.set(tc.err, nil)
		p, ack := clusterConnect(t, addr, tc.ver, packet.Connect{ClientID: "x", CleanStart: tc.ver == packet.V311}, 60)
		if ack.ReasonCode != tc.code || ack.SessionPresent {
			t.Errorf("%s: %s, want code 0x%02X", tc.reason, seamDescribe(ack), tc.code)
		}
		p.expectClosed()
		if ids := s.SessionIDs(); len(ids) != 0 {
			t.Errorf("%s: sessions %q after a refused claim", tc.reason, ids)
		}
	}
	if n := s.Stats().Snapshot().ClaimsRefused; n != 3 {
		t.Errorf("ClaimsRefused %d, want 3", n)
	}
}

// ReleaseSession on one node moves an online session (subscriptions and
// unacknowledged messages): its client gets DISCONNECT 0x8E; the export
// handed over by Claim on another node is installed: CONNACK with session
// present, the messages resent, the subscription live.
func TestClusterSeamClaimHandOver(t *testing.T) {
	b := seamNewServer(t, Options{NodeName: "B"}, nil)
	addrB := seamListen(t, b)
	old, ack := clusterConnect(t, addrB, packet.V5, packet.Connect{ClientID: "mover", CleanStart: true}, 300)
	if ack.ReasonCode != 0 {
		t.Fatalf("CONNACK 0x%02X", ack.ReasonCode)
	}
	old.sub("q/#", 1)
	for i := 1; i <= 2; i++ {
		if err := b.Publish(&Message{Topic: fmt.Sprint("q/", i), Payload: []byte(fmt.Sprint("m", i)), QoS: 1}); err != nil {
			t.Fatal(err)
		}
		if pub := old.nextPublish(); pub.Topic != fmt.Sprint("q/", i) {
			t.Fatalf("got %s", seamDescribe(pub))
		}
	} // not acknowledged: in flight

	ls, out := b.ReleaseSession(ClaimRequest{ClientID: "mover", Stamp: 1 << 60, Node: "A"})
	if out != ReleaseMoved || ls == nil {
		t.Fatalf("release: %v", out)
	}
	pkt := old.next()
	if d, ok := pkt.(*packet.Disconnect); !ok || d.ReasonCode != packet.SessionTakenOver {
		t.Fatalf("old client got %s, want DISCONNECT 0x8E", seamDescribe(pkt))
	}
	old.expectClosed()
	if len(ls.Subscriptions) != 1 || ls.Subscriptions[0].Filter != "q/#" || ls.Subscriptions[0].QoS != 1 {
		t.Errorf("exported subscriptions %+v", ls.Subscriptions)
	}
	var topics []string
	for _, m := range ls.Messages {
		topics = append(topics, m.Msg.Topic)
	}
	if !slices.Equal(topics, []string{"q/1", "q/2"}) {
		t.Errorf("exported messages %q", topics)
	}
	if ids := b.SessionIDs(); len(ids) != 0 || b.SubscriptionCount() != 0 {
		t.Errorf("B still holds sessions %q, %d subscriptions", ids, b.SubscriptionCount())
	}
	if b.QueuedBytes() != 0 {
		t.Errorf("B still counts %d queued bytes", b.QueuedBytes())
	}
	if n := b.Stats().Snapshot().SessionsMovedOut; n != 1 {
		t.Errorf("SessionsMovedOut %d", n)
	}

	dir := &clusterDir{ls: ls}
	a := seamNewServer(t, Options{Directory: dir, NodeName: "A"}, nil)
	addrA := seamListen(t, a)
	p, ack := clusterConnect(t, addrA, packet.V5, packet.Connect{ClientID: "mover"}, 300)
	if ack.ReasonCode != 0 || !ack.SessionPresent {
		t.Fatalf("CONNACK on A: %s, want session present", seamDescribe(ack))
	}
	for i := 1; i <= 2; i++ {
		pub := p.nextPublish()
		if pub.Topic != fmt.Sprint("q/", i) || string(pub.Payload) != fmt.Sprint("m", i) || !pub.Dup {
			t.Fatalf("resent %s", seamDescribe(pub))
		}
		p.ack(packet.PUBACK, pub.PacketID)
	}
	if err := a.Publish(&Message{Topic: "q/3", Payload: []byte("m3"), QoS: 1}); err != nil {
		t.Fatal(err)
	}
	if pub := p.nextPublish(); pub.Topic != "q/3" {
		t.Fatalf("got %s", seamDescribe(pub))
	}
	if n := a.Stats().Snapshot().SessionsMovedIn; n != 1 {
		t.Errorf("SessionsMovedIn %d", n)
	}

	// A clean start ignores a handed-over session.
	dir.set(nil, &store.LoadedSession{Session: store.SessionRecord{ClientID: "fresh", ExpiryInterval: 300}, Subscriptions: []store.SubscriptionRecord{{Filter: "z", QoS: 1}}})
	pc, ack := clusterConnect(t, addrA, packet.V5, packet.Connect{ClientID: "fresh", CleanStart: true}, 0)
	if ack.ReasonCode != 0 || ack.SessionPresent {
		t.Fatalf("clean start with a handed-over session: %s", seamDescribe(ack))
	}
	if _, subs, _ := a.Session("fresh"); len(subs) != 0 {
		t.Errorf("clean start inherited %+v", subs)
	}
	pc.ping()
}

// clusterWillClient connects an online v5 client with a delayed will.
func clusterWillClient(t *testing.T, addr, id string) *seamPC {
	t.Helper()
	cp := packet.Connect{ClientID: id, CleanStart: true, WillFlag: true, WillTopic: "will/" + id, WillPayload: []byte("gone " + id), WillQoS: 1}
	cp.WillProps.WillDelayInterval = 60
	cp.WillProps.Set(packet.PropWillDelayInterval)
	p, ack := clusterConnect(t, addr, packet.V5, cp, 300)
	if ack.ReasonCode != 0 {
		t.Fatalf("CONNACK 0x%02X", ack.ReasonCode)
	}
	return p
}

// A clean claim elsewhere ends the session here and publishes its pending
// will (the session ended [MQTT-3.1.3-9]); a resuming claim moves it and
// the will is not sent (a new connection opened before the delay).
func TestClusterSeamReleaseWill(t *testing.T) {
	s := seamNewServer(t, Options{}, nil)
	addr := seamListen(t, s)
	wills := clusterTrusted(s, "will/#")

	p := clusterWillClient(t, addr, "w1")
	if _, out := s.ReleaseSession(ClaimRequest{ClientID: "w1", Clean: true, Stamp: 10}); out != ReleaseEnded {
		t.Fatalf("clean release: %v", out)
	}
	if d, ok := p.next().(*packet.Disconnect); !ok || d.ReasonCode != packet.SessionTakenOver {
		t.Fatal("no DISCONNECT 0x8E")
	}
	if d := clusterReceive(t, wills); d.Msg.Topic != "will/w1" {
		t.Fatalf("got %q", d.Msg.Topic)
	}
	if ids := s.SessionIDs(); len(ids) != 0 {
		t.Fatalf("sessions %q", ids)
	}

	p2 := clusterWillClient(t, addr, "w2")
	ls, out := s.ReleaseSession(ClaimRequest{ClientID: "w2", Stamp: 10})
	if out != ReleaseMoved {
		t.Fatalf("release: %v", out)
	}
	if d, ok := p2.next().(*packet.Disconnect); !ok || d.ReasonCode != packet.SessionTakenOver {
		t.Fatal("no DISCONNECT 0x8E")
	}
	p2.expectClosed()
	if ls.Session.Will != nil {
		t.Error("the will travelled with a session a new connection resumes")
	}
	ctx, cancel := context.WithTimeout(context.Background(), seamQuiet)
	defer cancel()
	if d, err := wills.Receive(ctx); err == nil {
		t.Fatalf("will published for a moved session: %q", d.Msg.Topic)
	}
	if _, out := s.ReleaseSession(ClaimRequest{ClientID: "nobody", Stamp: 10}); out != ReleaseNone {
		t.Fatalf("release of nothing: %v", out)
	}
}

// A session whose connection holds a newer claim is kept (stamp, then
// node name); a session of another user is kept unless forced.
func TestClusterSeamReleaseNewerForeign(t *testing.T) {
	dir := &clusterDir{}
	s := seamNewServer(t, Options{Directory: dir, NodeName: "n1"}, &seamAuth{})
	addr := seamListen(t, s)

	p, ack := clusterConnect(t, addr, packet.V5, packet.Connect{ClientID: "c", CleanStart: true, UsernameFlag: true, Username: "alice"}, 300)
	if ack.ReasonCode != 0 {
		t.Fatalf("CONNACK 0x%02X", ack.ReasonCode)
	}
	stamp := dir.requests()[0].Stamp
	for _, req := range []ClaimRequest{
		{ClientID: "c", Username: "alice", Stamp: stamp - 1, Node: "zz"},
		{ClientID: "c", Username: "alice", Stamp: stamp, Node: "a"}, // "a" < "n1"
	} {
		if _, out := s.ReleaseSession(req); out != ReleaseNewer {
			t.Errorf("older claim %+v: %v, want ReleaseNewer", req, out)
		}
	}
	if _, out := s.ReleaseSession(ClaimRequest{ClientID: "c", Username: "bob", Stamp: stamp + 1, Node: "zz"}); out != ReleaseForeign {
		t.Errorf("another user's claim: %v, want ReleaseForeign", out)
	}
	if n := s.Stats().Snapshot().TakeoversRefused; n != 1 {
		t.Errorf("TakeoversRefused %d", n)
	}
	p.ping() // still connected

	if _, out := s.ReleaseSession(ClaimRequest{ClientID: "c", Username: "bob", Stamp: stamp, Node: "zz", Force: true}); out != ReleaseMoved {
		t.Errorf("forced, later claim (same stamp, higher node): %v, want ReleaseMoved", out)
	}
	if d, ok := p.next().(*packet.Disconnect); !ok || d.ReasonCode != packet.SessionTakenOver {
		t.Fatal("no DISCONNECT 0x8E")
	}
}

// AdoptSession: for the window, a message already held or delivered once
// is dropped when delivered again (routed or DeliverToSession); after the
// window it is not. A local online session is not replaced; an offline
// one is.
func TestClusterSeamAdoptDedup(t *testing.T) {
	s := seamNewServer(t, Options{}, nil)
	addr := seamListen(t, s)
	now := time.Now().UnixNano()
	held := store.MessageRecord{Topic: "d/1", Payload: []byte("held"), QoS: 1, IDNode: 9, IDSeq: 1, DeliverQoS: 1, PacketID: 1, State: store.StateQueued}
	ls := &store.LoadedSession{
		Session:       store.SessionRecord{ClientID: "d", ExpiryInterval: 300, DisconnectedAt: now, NextPacketID: 1},
		Subscriptions: []store.SubscriptionRecord{{Filter: "d/#", QoS: 1}},
		Messages:      []store.SeqMessage{{Seq: 1, Msg: held}},
	}
	// An offline local session of the same id is replaced.
	if err := s.ImportSession(&store.LoadedSession{Session: store.SessionRecord{ClientID: "d", ExpiryInterval: 300, DisconnectedAt: now}, Subscriptions: []store.SubscriptionRecord{{Filter: "old/#"}}}); err != nil {
		t.Fatal(err)
	}
	if err := s.AdoptSession(ls, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, subs, _ := s.Session("d"); len(subs) != 1 || subs[0].Filter != "d/#" {
		t.Fatalf("adopted session subscriptions %+v", subs)
	}
	msg := func(payload string, seq uint64) *Message {
		return &Message{Topic: "d/1", Payload: []byte(payload), QoS: 1, ID: MessageID{Node: 9, Seq: seq}}
	}
	if !s.DeliverToSession("d", Delivery{Msg: msg("held", 1), QoS: 1}) {
		t.Fatal("DeliverToSession: no session")
	}
	s.DeliverToSession("d", Delivery{Msg: msg("two", 2), QoS: 1})
	s.DeliverToSession("d", Delivery{Msg: msg("two", 2), QoS: 1})
	f := s.NewForwarder()
	for range 2 {
		if err := f.Forward(msg("three", 3), true, nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Flush(); err != nil {
		t.Fatal(err)
	}
	if n := s.Stats().Snapshot().DroppedDuplicate; n != 3 {
		t.Errorf("DroppedDuplicate %d, want 3", n)
	}
	p, ack := clusterConnect(t, addr, packet.V5, packet.Connect{ClientID: "d"}, 300)
	if !ack.SessionPresent {
		t.Fatal("no session present")
	}
	var got []string
	for range 3 {
		pub := p.nextPublish()
		got = append(got, string(pub.Payload))
		p.ack(packet.PUBACK, pub.PacketID)
	}
	if !slices.Equal(got, []string{"held", "two", "three"}) {
		t.Fatalf("delivered %q", got)
	}
	p.expectNothing(seamQuiet)

	// An online session is not replaced.
	if err := s.AdoptSession(&store.LoadedSession{Session: store.SessionRecord{ClientID: "d", ExpiryInterval: 300}}, time.Second); !errors.Is(err, ErrSessionExists) {
		t.Fatalf("adopt over an online session: %v", err)
	}
	p.ping()

	// After the window, the same message id is delivered again.
	ls2 := &store.LoadedSession{Session: store.SessionRecord{ClientID: "e", ExpiryInterval: 300, DisconnectedAt: now}, Messages: []store.SeqMessage{{Seq: 1, Msg: held}}}
	if err := s.AdoptSession(ls2, 20*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	time.Sleep(60 * time.Millisecond)
	s.DeliverToSession("e", Delivery{Msg: msg("held", 1), QoS: 1})
	if exp, _ := s.ExportSession("e"); len(exp.Messages) != 2 {
		t.Fatalf("after the window: %d messages, want 2", len(exp.Messages))
	}
}

// DeliverToSession passes the session's read ACL and reports whether the
// session exists.
func TestClusterSeamDeliverToSessionACL(t *testing.T) {
	auth := &seamAuth{recv: func(c ClientInfo, t string) bool { return t != "secret/1" }}
	s := seamNewServer(t, Options{}, auth)
	if err := s.ImportSession(&store.LoadedSession{Session: store.SessionRecord{ClientID: "acl", Username: "u", ExpiryInterval: 300, DisconnectedAt: time.Now().UnixNano()}}); err != nil {
		t.Fatal(err)
	}
	before := s.Stats().Snapshot().DroppedNotAuthorized
	if !s.DeliverToSession("acl", Delivery{Msg: &Message{Topic: "secret/1", Payload: []byte("x"), QoS: 1, ID: MessageID{Node: 1, Seq: 1}}, QoS: 1}) {
		t.Fatal("DeliverToSession: no session")
	}
	if !s.DeliverToSession("acl", Delivery{Msg: &Message{Topic: "open/1", Payload: []byte("y"), QoS: 1, ID: MessageID{Node: 1, Seq: 2}}, QoS: 1}) {
		t.Fatal("DeliverToSession: no session")
	}
	exp, _ := s.ExportSession("acl")
	if len(exp.Messages) != 1 || exp.Messages[0].Msg.Topic != "open/1" {
		t.Fatalf("session holds %+v", exp.Messages)
	}
	if n := s.Stats().Snapshot().DroppedNotAuthorized - before; n != 1 {
		t.Errorf("DroppedNotAuthorized +%d, want +1", n)
	}
	if s.DeliverToSession("ghost", Delivery{Msg: &Message{Topic: "open/1", QoS: 1}, QoS: 1}) {
		t.Error("DeliverToSession to no session reported one")
	}
}

// A version stamped beyond what the clock adopts (hlc.MaxSkew ahead: a
// peer with a broken clock) is refused: applied, it would beat every
// later local change, which peers would then refuse, so the nodes would
// disagree for as long as the skew.
func TestClusterSeamApplyRetainedFarFuture(t *testing.T) {
	wall := time.Now()
	obs := &clusterRetainRec{}
	s := seamNewServer(t, Options{Retained: obs, Clock: &hlc.Clock{Wall: func() time.Time { return wall }}}, nil)
	future := uint64(wall.Add(2*time.Hour).UnixMilli()) << 16
	if s.ApplyRetained(&Message{Topic: "s/1", Payload: []byte("broken clock"), Stamp: future, ID: MessageID{Node: 5}}) {
		t.Error("a version two hours ahead was applied")
	}
	if err := s.Publish(&Message{Topic: "s/1", Payload: []byte("local"), Retain: true}); err != nil {
		t.Fatal(err)
	}
	obs.take()
	if s.ApplyRetained(&Message{Topic: "s/1", Payload: []byte("broken clock"), Stamp: future, ID: MessageID{Node: 5}}) {
		t.Error("a version two hours ahead replaced a local change")
	}
	if m, ok := s.RetainedMessage("s/1"); !ok || string(m.Payload) != "local" {
		t.Errorf("held %v, want the local change", m)
	}
	// Within the skew, a peer's faster clock is followed.
	near := uint64(wall.Add(30*time.Minute).UnixMilli()) << 16
	if !s.ApplyRetained(&Message{Topic: "s/2", Payload: []byte("fast clock"), Stamp: near, ID: MessageID{Node: 5}}) {
		t.Fatal("a version thirty minutes ahead was refused")
	}
	if err := s.Publish(&Message{Topic: "s/2", Payload: []byte("local"), Retain: true}); err != nil {
		t.Fatal(err)
	}
	if got := obs.take(); len(got) != 1 || got[0].stamp <= near {
		t.Fatalf("local change after a faster peer's version: %+v", got)
	}
}

// HandOff (a drain) exports an offline session with its pending delayed
// will (still due on the node that takes it: no new connection opened),
// removes it without publishing the will here, and refuses an online one.
func TestClusterSeamHandOff(t *testing.T) {
	s := seamNewServer(t, Options{}, nil)
	addr := seamListen(t, s)
	wills := clusterTrusted(s, "will/#")

	on := clusterWillClient(t, addr, "online")
	if ls := s.HandOff("online"); ls != nil {
		t.Fatal("HandOff of an online session")
	}
	on.ping()

	p := clusterWillClient(t, addr, "h")
	p.sub("h/#", 1)
	_ = p.c.Close() // abnormal end: the delayed will is pending
	seamEventually(t, func() string {
		if v, _, ok := s.Session("h"); !ok || v.Online {
			return "session h still online"
		}
		return ""
	})
	ls := s.HandOff("h")
	if ls == nil {
		t.Fatal("HandOff: nothing")
	}
	if ls.Session.Will == nil || ls.Session.Will.Topic != "will/h" || ls.Session.WillAt == 0 {
		t.Errorf("exported will %+v at %d", ls.Session.Will, ls.Session.WillAt)
	}
	if len(ls.Subscriptions) != 1 || ls.Subscriptions[0].Filter != "h/#" {
		t.Errorf("exported subscriptions %+v", ls.Subscriptions)
	}
	if _, _, ok := s.Session("h"); ok {
		t.Error("session still here after HandOff")
	}
	ctx, cancel := context.WithTimeout(context.Background(), seamQuiet)
	defer cancel()
	if d, err := wills.Receive(ctx); err == nil {
		t.Fatalf("will published by the node handing the session off: %q", d.Msg.Topic)
	}
	if s.HandOff("h") != nil || s.HandOff("nobody") != nil {
		t.Error("HandOff of no session returned one")
	}
}
