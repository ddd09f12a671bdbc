package relay

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/isobar-mq/isobar/internal/broker"
	"github.com/isobar-mq/isobar/internal/topic"
	"github.com/prometheus/client_golang/prometheus"
	ptu "github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeSource is driven by the test: push hands it a message; acks counts
// the acknowledgements.
type fakeSource struct {
	cfg   SourceConfig
	h     SourceHooks
	acks  atomic.Int64
	start chan struct{}
}

func (f *fakeSource) Start()       { f.h.Up(); close(f.start) }
func (f *fakeSource) Close() error { f.h.Down(nil); return nil }
func (f *fakeSource) push(topic, payload string) {
	<-f.start
	f.h.Message(Inbound{Topic: topic, Payload: []byte(payload), Ack: func() { f.acks.Add(1) }})
}

type sources struct {
	mu sync.Mutex
	by map[string]*fakeSource
}

func (s *sources) factory(sc SourceConfig, h SourceHooks) (Source, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := &fakeSource{cfg: sc, h: h, start: make(chan struct{})}
	s.by[sc.CentreID] = f
	return f, nil
}

func (s *sources) get(id string) *fakeSource {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.by[id]
}

// memDedup is the lease semantics in a map; fail makes calls fail,
// hold makes an id look leased by someone else.
type memDedup struct {
	mu   sync.Mutex
	m    map[string]string // id -> token or "published"
	n    int
	fail atomic.Int64 // calls to fail
}

func (d *memDedup) Claim(_ context.Context, id string, _ time.Duration) (ClaimResult, string, error) {
	if d.fail.Load() > 0 {
		d.fail.Add(-1)
		return 0, "", errors.New("store down")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	switch v := d.m[id]; {
	case v == "published":
		return Published, "", nil
	case v != "":
		return Leased, "", nil
	}
	d.n++
	tok := fmt.Sprint(d.n)
	d.m[id] = tok
	return Claimed, tok, nil
}

func (d *memDedup) Confirm(_ context.Context, id, tok string, _ time.Duration) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.m[id] == tok {
		d.m[id] = "published"
	}
	return nil
}

func (d *memDedup) Release(_ context.Context, id, tok string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.m[id] == tok {
		delete(d.m, id)
	}
	return nil
}

type topics struct{}

func (topics) CheckTopic(t string) (string, bool, error) {
	if strings.Contains(t, "bad") {
		return topicCentre(t), false, errors.New("not in the WIS2 Topic Hierarchy")
	}
	return topicCentre(t), strings.HasSuffix(t, "/metadata"), nil
}

type format struct{}

func (format) CheckFormat(p []byte) (string, string, error) {
	id := minimalID(p)
	if id == "" {
		return "", "", errors.New("no id")
	}
	if strings.Contains(string(p), "invalid") {
		return id, "", errors.New("schema: invalid")
	}
	return id, "", nil
}

type rig struct {
	r    *Relay
	srcs *sources
	dd   *memDedup
	reg  *prometheus.Registry
	sub  *broker.LocalSubscriber
	mon  *broker.LocalSubscriber
}

func newRig(t *testing.T, mode Mode, srcIDs ...string) *rig {
	t.Helper()
	srv := broker.New(broker.Options{}, nil, nil)
	t.Cleanup(func() { _ = srv.Shutdown(context.Background()) })
	g := &rig{srcs: &sources{by: map[string]*fakeSource{}}, dd: &memDedup{m: map[string]string{}}, reg: prometheus.NewRegistry()}
	var scs []SourceConfig
	for _, id := range srcIDs {
		scs = append(scs, SourceConfig{CentreID: id})
	}
	r, err := New(Config{CentreID: "xx-test-global-broker", Sources: scs, TopicMode: mode, FormatMode: mode, MetadataMode: Off,
		DedupLease: 400 * time.Millisecond, Workers: 4, Registerer: g.reg},
		Deps{Broker: srv, Sources: g.srcs.factory, Topics: topics{}, Format: format{}, Dedup: g.dd,
			EncodeWME: func(rb string, e Event) (string, []byte, error) {
				return "monitor/a/wis2/" + rb, []byte(e.Reason + " " + e.ID), nil
			}})
	if err != nil {
		t.Fatal(err)
	}
	g.r = r
	g.sub = srv.NewSubscriber(broker.SubscriberOptions{Client: broker.ClientInfo{ClientID: "t"}, Trusted: true})
	if err := g.sub.Subscribe("origin/#", topic.Options{QoS: 1}); err != nil {
		t.Fatal(err)
	}
	g.mon = srv.NewSubscriber(broker.SubscriberOptions{Client: broker.ClientInfo{ClientID: "m"}, Trusted: true})
	if err := g.mon.Subscribe("monitor/#", topic.Options{QoS: 1}); err != nil {
		t.Fatal(err)
	}
	if err := r.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return g
}

func (g *rig) count(name, centre string) float64 {
	mfs, _ := g.reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "centre_id" && l.GetValue() == centre {
					if m.Counter != nil {
						return m.Counter.GetValue()
					}
					return m.Gauge.GetValue()
				}
			}
		}
	}
	return 0
}

func receive(t *testing.T, s *broker.LocalSubscriber, d time.Duration) (broker.Delivery, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	m, err := s.Receive(ctx)
	return m, err == nil
}

func waitAcks(t *testing.T, f *fakeSource, n int64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for f.acks.Load() < n {
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d acks, want %d", f.cfg.CentreID, f.acks.Load(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

const okMsg = `{"id":"%s","type":"Feature"}`

// Ten copies of one id from each of two centres: received +10 on each,
// published once, byte for byte on the same topic, never retained.
func TestRelayDeduplicates(t *testing.T) {
	g := newRig(t, Discard, "aa-node", "bb-node-global-cache")
	a, b := g.srcs.get("aa-node"), g.srcs.get("bb-node-global-cache")
	body := fmt.Sprintf(okMsg, "id-1")
	for range 10 {
		a.push("origin/a/wis2/aa-node/data/core/weather", body)
		b.push("origin/a/wis2/aa-node/data/core/weather", body)
	}
	waitAcks(t, a, 10)
	waitAcks(t, b, 10)
	m, ok := receive(t, g.sub, 2*time.Second)
	if !ok || string(m.Msg.Payload) != body || m.Msg.Topic != "origin/a/wis2/aa-node/data/core/weather" || m.Msg.Retain {
		t.Fatalf("republished %v %+v", ok, m)
	}
	if _, again := receive(t, g.sub, 200*time.Millisecond); again {
		t.Fatal("published twice")
	}
	if r := g.count("wmo_wis2_gb_messages_received_total", "aa-node"); r != 10 {
		t.Fatalf("received aa-node %v", r)
	}
	if r := g.count("wmo_wis2_gb_messages_received_total", "bb-node-global-cache"); r != 10 {
		t.Fatalf("received cache %v", r)
	}
	if p := g.count("wmo_wis2_gb_messages_published_total", "aa-node") + g.count("wmo_wis2_gb_messages_published_total", "bb-node-global-cache"); p != 1 {
		t.Fatalf("published %v", p)
	}
	if c := g.count("wmo_wis2_gb_connected_flag", "aa-node"); c != 1 {
		t.Fatalf("connected flag %v", c)
	}
}

// Invalid topics and formats are discarded, counted and reported; a WIS2
// Node's message under another centre-id is neither relayed nor counted.
func TestRelayDiscards(t *testing.T) {
	g := newRig(t, Discard, "aa-node")
	a := g.srcs.get("aa-node")
	a.push("origin/a/wis2/aa-node/data/core/bad", fmt.Sprintf(okMsg, "t1"))
	a.push("origin/a/wis2/aa-node/data/core/weather", `{"id":"f1","invalid":true}`)
	a.push("origin/a/wis2/aa-node/data/core/weather", `not json`)
	a.push("origin/a/wis2/zz-other/data/core/weather", fmt.Sprintf(okMsg, "x1"))
	waitAcks(t, a, 4)
	if _, got := receive(t, g.sub, 200*time.Millisecond); got {
		t.Fatal("an invalid message was published")
	}
	if v := g.count("wmo_wis2_gb_messages_invalid_topic_total", "aa-node"); v != 1 {
		t.Fatalf("invalid topic %v", v)
	}
	if v := g.count("wmo_wis2_gb_messages_invalid_format_total", "aa-node"); v != 2 {
		t.Fatalf("invalid format %v", v)
	}
	if v := g.count("wmo_wis2_gb_messages_received_total", "aa-node"); v != 3 {
		t.Fatalf("received %v (the foreign one must not count)", v)
	}
	events := 0
	for {
		m, ok := receive(t, g.mon, 300*time.Millisecond)
		if !ok {
			break
		}
		if m.Msg.Topic != "monitor/a/wis2/xx-test-global-broker" {
			t.Fatalf("event on %s", m.Msg.Topic)
		}
		events++
	}
	if events != 3 {
		t.Fatalf("%d monitoring events, want 3", events)
	}
}

// verify: counted and reported, published anyway.
func TestRelayVerifyMode(t *testing.T) {
	g := newRig(t, Verify, "aa-node")
	a := g.srcs.get("aa-node")
	a.push("origin/a/wis2/aa-node/data/core/bad", fmt.Sprintf(okMsg, "v1"))
	waitAcks(t, a, 1)
	if _, ok := receive(t, g.sub, 2*time.Second); !ok {
		t.Fatal("not published in verify mode")
	}
	if v := g.count("wmo_wis2_gb_messages_invalid_topic_total", "aa-node"); v != 1 {
		t.Fatalf("invalid topic %v", v)
	}
}

// A store error or an id held by another publisher never drops the
// message: it is retried; a holder that gives the id back lets it through.
func TestRelayRetriesNeverDrop(t *testing.T) {
	g := newRig(t, Discard, "aa-node")
	a := g.srcs.get("aa-node")
	g.dd.fail.Store(2)
	a.push("origin/a/wis2/aa-node/data/core/weather", fmt.Sprintf(okMsg, "e1"))
	if _, ok := receive(t, g.sub, 5*time.Second); !ok {
		t.Fatal("lost after store errors")
	}
	// Someone else holds "l1" and then fails: released, this copy wins.
	g.dd.mu.Lock()
	g.dd.m["l1"] = "other"
	g.dd.mu.Unlock()
	a.push("origin/a/wis2/aa-node/data/core/weather", fmt.Sprintf(okMsg, "l1"))
	time.Sleep(300 * time.Millisecond)
	if a.acks.Load() != 1 {
		t.Fatalf("acknowledged while the id is leased elsewhere (%d acks)", a.acks.Load())
	}
	_ = g.dd.Release(context.Background(), "l1", "other")
	if _, ok := receive(t, g.sub, 5*time.Second); !ok {
		t.Fatal("lost after the other holder released the id")
	}
	waitAcks(t, a, 2)
	if v := ptu.ToFloat64(g.r.met.retries); v < 3 {
		t.Fatalf("retries %v", v)
	}
}
