package wis2test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/isobar-mq/isobar/internal/node"
	"github.com/isobar-mq/isobar/internal/testutil"
)

const reportBy = "xx-test-global-broker"

// relayNode starts an Isobar node relaying from the given sources.
func relayNode(t *testing.T, dedup, profile string, sources ...string) *node.Node {
	t.Helper()
	cfg := fmt.Sprintf(`listeners:
  - {name: mqtt, protocol: mqtt, address: "127.0.0.1:0"}
http: {address: "127.0.0.1:0"}
store: {mode: memory, data_dir: %q}
wis2:
  centre_id: %s
  dedup: %s
  checks: {topic: discard, format: discard, metadata: off, topic_profile: %s}
  sources:
%s`, t.TempDir(), reportBy, dedup, profile, strings.Join(sources, "\n"))
	return testutil.RunNode(t, cfg)
}

func source(centre, addr, extra string) string {
	return fmt.Sprintf("    - {centre_id: %s, url: \"mqtt://%s\"%s}", centre, addr, extra)
}

// The fixtures of ../shared/wis2 through a Global Cache source and a WIS2
// Node source: every valid notification republished once, byte for byte;
// every invalid one discarded with the right counter and a monitoring
// event; duplicates from both sources published once; a WIS2 Node's
// message under another centre-id neither relayed nor counted.
func TestRelayFixtures(t *testing.T) {
	dir := shared(t)
	cache, nodeB, other := startMosquitto(t), startMosquitto(t), startMosquitto(t)
	const cacheID, nodeID, otherID = "xx-test-global-cache", "io-wis2dev-11-test", "io-wis2dev-10-test"
	n := relayNode(t, "{backend: memory, ttl: 1h}", "2024",
		source(cacheID, cache.addr, `, topics: ["origin/a/wis2/#", "cache/a/wis2/#"]`),
		source(nodeID, nodeB.addr, ""),
		// io-wis2dev-10-test's source subscribes to everything its broker
		// has, so that its message under io-wis2dev-11-test's id reaches
		// the relay (which must drop it).
		source(otherID, other.addr, `, topics: ["origin/a/wis2/#"]`))
	httpAddr := n.HTTP.Addr().String()
	waitFor(t, 10*time.Second, "both sources connected", func() bool {
		m := metrics(t, httpAddr)
		return gb(m, "wmo_wis2_gb_connected_flag", cacheID, reportBy) == 1 && gb(m, "wmo_wis2_gb_connected_flag", nodeID, reportBy) == 1 &&
			gb(m, "wmo_wis2_gb_connected_flag", otherID, reportBy) == 1
	})
	col := collect(t, testutil.Addr(t, n, "mqtt"), "origin/#", "cache/#", "monitor/#")
	pc, pn, po := publisher(t, cache.addr, "fake-cache"), publisher(t, nodeB.addr, "fake-node"), publisher(t, other.addr, "fake-other")
	time.Sleep(300 * time.Millisecond) // the relay's subscriptions at the sources

	// Valid notifications (example1/2 and example3/4 share their ids: the
	// second of each pair is a duplicate).
	const validTopic = "origin/a/wis2/io-wis2dev-13-test/data/core/weather/surface-based-observations/synop"
	valid, _ := filepath.Glob(filepath.Join(dir, "examples/valid/*.json"))
	sent := map[string][]byte{}
	// Notifications sharing an id: the relay's workers run in parallel, so
	// either copy may be the one published.
	alt := map[string][][]byte{}
	for _, f := range valid {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var n struct{ ID string }
		if err := json.Unmarshal(b, &n); err != nil || n.ID == "" {
			t.Fatalf("%s: %v", f, err)
		}
		if _, dup := sent[n.ID]; !dup {
			sent[n.ID] = b
		}
		alt[n.ID] = append(alt[n.ID], b)
		publish(t, pc, validTopic, b)
	}
	// Ten copies of one id from each source.
	dupID := uuid4()
	dup := withID(t, dir, dupID)
	for range 10 {
		publish(t, pc, "origin/a/wis2/"+nodeID+"/data/core/weather/surface-based-observations/synop", dup)
		publish(t, pn, "origin/a/wis2/"+nodeID+"/data/core/weather/surface-based-observations/synop", dup)
	}
	sent[dupID] = dup
	// A WIS2 Node publishing under another centre-id.
	publish(t, pn, "origin/a/wis2/io-wis2dev-99-test/data/core/weather/surface-based-observations/synop", withID(t, dir, uuid4()))
	// Invalid notifications.
	invalid, _ := filepath.Glob(filepath.Join(dir, "examples/invalid/*.json"))
	for _, f := range invalid {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		publish(t, pc, validTopic, b)
	}
	// Topics: the acceptance tests' valid and invalid ones (2024 profile).
	wantTopicInvalid, wantNodeTopicInvalid := 0, 0
	for _, row := range topicRows(t, filepath.Join(dir, "examples/invalid/topics.csv")) {
		switch row[2] {
		case otherID:
			// not_own_centreid: a WIS2 Node publishing under another
			// centre's id; through the node's own source it is neither
			// relayed nor counted (not an invalid topic).
			publish(t, po, row[0], withID(t, dir, uuid4()))
		case nodeID:
			// The scenario rows: published by the WIS2 Node itself.
			publish(t, pn, row[0], withID(t, dir, uuid4()))
			wantNodeTopicInvalid++
		case "":
			publish(t, pc, row[0], withID(t, dir, uuid4()))
			if strings.HasPrefix(row[0], "origin/a/wis2/") || strings.HasPrefix(row[0], "cache/a/wis2/") {
				// Others (origin/a/wis3/..., origin/b/...) are outside what
				// a Global Broker subscribes to: they never reach it.
				wantTopicInvalid++
			}
		default:
			t.Fatalf("unexpected publisher %s in invalid/topics.csv", row[2])
		}
	}
	validTopics := topicRows(t, filepath.Join(dir, "examples/valid/topics.csv"))
	for _, row := range validTopics {
		if strings.HasSuffix(row[0], "/ship-hourly") {
			// The acceptance tests' README lists ship-hourly, which is not
			// in the WTH; their code publishes .../ship (also a row here).
			continue
		}
		id := uuid4()
		b := withID(t, dir, id)
		sent[id] = b
		publish(t, pc, row[0], b)
	}

	waitFor(t, 15*time.Second, "every valid notification republished", func() bool {
		return len(col.matching("origin/")) >= len(sent)
	})
	time.Sleep(500 * time.Millisecond) // duplicates, if any, arrive meanwhile
	got := map[string]int{}
	for _, m := range col.matching("origin/") {
		var n struct{ ID string }
		_ = json.Unmarshal(m.Payload(), &n)
		got[n.ID]++
		if want, ok := sent[n.ID]; !ok {
			t.Errorf("republished a notification that should have been discarded: %s on %s", n.ID, m.Topic())
		} else if !bytes.Equal(want, m.Payload()) && !slices.ContainsFunc(alt[n.ID], func(b []byte) bool { return bytes.Equal(b, m.Payload()) }) {
			t.Errorf("%s: republished bytes differ from what was sent", n.ID)
		}
		if m.Retained() {
			t.Errorf("%s republished retained", n.ID)
		}
	}
	for id := range sent {
		if got[id] != 1 {
			t.Errorf("notification %s republished %d times, want 1", id, got[id])
		}
	}
	m := metrics(t, httpAddr)
	if v := gb(m, "wmo_wis2_gb_messages_received_total", nodeID, reportBy); v != float64(10+wantNodeTopicInvalid) {
		t.Errorf("received from the node: %v, want %d (its foreign-centre message not counted)", v, 10+wantNodeTopicInvalid)
	}
	if v := gb(m, "wmo_wis2_gb_messages_received_total", otherID, reportBy); v != 0 {
		t.Errorf("received from %s: %v, want 0 (it only published under another centre's id)", otherID, v)
	}
	if v := gb(m, "wmo_wis2_gb_messages_invalid_topic_total", nodeID, reportBy); v != float64(wantNodeTopicInvalid) {
		t.Errorf("invalid topic from the node: %v, want %d", v, wantNodeTopicInvalid)
	}
	wantFormat := float64(len(invalid))
	if v := gb(m, "wmo_wis2_gb_messages_invalid_format_total", cacheID, reportBy); v != wantFormat {
		t.Errorf("invalid format: %v, want %v", v, wantFormat)
	}
	if v := gb(m, "wmo_wis2_gb_messages_invalid_topic_total", cacheID, reportBy); v != float64(wantTopicInvalid) {
		t.Errorf("invalid topic: %v, want %d", v, wantTopicInvalid)
	}
	pub := gb(m, "wmo_wis2_gb_messages_published_total", cacheID, reportBy) + gb(m, "wmo_wis2_gb_messages_published_total", nodeID, reportBy)
	if pub != float64(len(sent)) {
		t.Errorf("published: %v, want %d", pub, len(sent))
	}
	// One monitoring event per discarded message, on our monitor topic.
	events := col.matching("monitor/")
	if want := len(invalid) + wantTopicInvalid + wantNodeTopicInvalid; len(events) != want {
		t.Errorf("%d monitoring events, want %d", len(events), want)
	}
	for _, e := range events {
		// monitor/a/wis2/<the centre the event is about> (WME: level 4
		// is the subject's centre-id).
		if lv := strings.Split(e.Topic(), "/"); len(lv) != 4 || strings.Join(lv[:3], "/") != "monitor/a/wis2" || !strings.HasPrefix(lv[3], "io-wis2dev-") {
			t.Errorf("monitoring event on %s", e.Topic())
		}
		var ev map[string]any
		if err := json.Unmarshal(e.Payload(), &ev); err != nil {
			t.Errorf("monitoring event is not JSON: %v", err)
			continue
		}
		for _, k := range []string{"specversion", "type", "source", "id", "data"} {
			if _, ok := ev[k]; !ok {
				t.Errorf("monitoring event without %q: %s", k, e.Payload())
			}
		}
	}
}

// connected_flag drops to 0 when a source goes away and returns to 1 when
// it is back.
func TestRelayConnectedFlag(t *testing.T) {
	src := startMosquitto(t)
	const id = "io-wis2dev-21-test"
	n := relayNode(t, "{backend: memory}", "current", source(id, src.addr, ""))
	httpAddr := n.HTTP.Addr().String()
	flag := func() float64 { return gb(metrics(t, httpAddr), "wmo_wis2_gb_connected_flag", id, reportBy) }
	waitFor(t, 10*time.Second, "connected", func() bool { return flag() == 1 })
	_ = src.cmd.Process.Kill()
	_ = src.cmd.Wait()
	waitFor(t, 10*time.Second, "connected_flag 0 after the source died", func() bool { return flag() == 0 })
}
