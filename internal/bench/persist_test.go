package bench

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/isobar-mq/isobar/internal/mqtt/packet"
	"github.com/isobar-mq/isobar/internal/testutil"
	"github.com/isobar-mq/isobar/internal/testutil/peer"
)

// sessionPresent connects with clientID and clean session 0 (Clean Start
// 0 and a session expiry for MQTT 5) and returns the CONNACK's Session
// Present flag.
func sessionPresent(t *testing.T, addr, clientID string, version byte) bool {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
	cp := packet.Connect{ProtocolVersion: version, KeepAlive: 30, ClientID: clientID}
	if version == packet.V5 {
		cp.Props.SessionExpiryInterval = 60
		cp.Props.Set(packet.PropSessionExpiryInterval)
	}
	if _, err := nc.Write(cp.Append(nil)); err != nil {
		t.Fatal(err)
	}
	p, err := packet.ReadPacket(nc, version, 1<<20)
	if err != nil {
		t.Fatalf("CONNACK for %s: %v", clientID, err)
	}
	ack, ok := p.(*packet.Connack)
	if !ok || ack.ReasonCode != 0 {
		t.Fatalf("CONNACK for %s: %#v", clientID, p)
	}
	return ack.SessionPresent
}

// TestPersistentSubscriberSessions checks that --clean=false leaves the
// subscribers' sessions (and only theirs) in the broker after the run, for
// MQTT 3.1.1 and 5, and that the default leaves none.
func TestPersistentSubscriberSessions(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a broker")
	}
	n := testutil.RunNode(t, benchNodeConfig)
	addr := testutil.Addr(t, n, "mqtt")
	for _, tc := range []struct {
		name       string
		version    byte
		persistent bool
	}{{"v311", packet.V311, true}, {"v5", packet.V5, true}, {"v311-clean", packet.V311, false}} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := quick(addr, ScenarioP2P)
			cfg.Pubs, cfg.QoS, cfg.MQTTVersion, cfg.PersistentSubs = 2, 1, tc.version, tc.persistent
			cfg.Duration = 300 * time.Millisecond
			cfg.ClientID = "persist-" + tc.name + "-%i"
			exact(t, run(t, cfg), 1)
			var present []int
			for i := range 4 {
				if sessionPresent(t, addr, fmt.Sprintf("persist-%s-%d", tc.name, i), tc.version) {
					present = append(present, i)
				}
			}
			want := 0
			if tc.persistent {
				want = 2 // the subscribers; publishers stay clean
			}
			if len(present) != want {
				t.Fatalf("sessions present for connections %v, want %d of 4", present, want)
			}
		})
	}
}

func TestPersistentFlags(t *testing.T) {
	cfg, _, err := ParseArgs([]string{"p2p", "--clean=false", "--mqtt", "5", "--session-expiry", "90s"}, &bytes.Buffer{})
	if err != nil || !cfg.PersistentSubs || cfg.SessionExpiry != 90*time.Second {
		t.Fatalf("--clean=false --session-expiry 90s: %+v %v", cfg, err)
	}
	cfg, _, err = ParseArgs([]string{"p2p", "--clean=false"}, &bytes.Buffer{})
	if err != nil || !cfg.PersistentSubs {
		t.Fatalf("--clean=false: %v", err)
	}
	cfg.SetDefaults()
	if cfg.SessionExpiry != 5*time.Minute || cfg.Validate() != nil {
		t.Fatalf("default session expiry %v, %v", cfg.SessionExpiry, cfg.Validate())
	}
	cfg, _, _ = ParseArgs([]string{"p2p", "--session-expiry", "1m"}, &bytes.Buffer{})
	cfg.SetDefaults()
	if cfg.Validate() == nil {
		t.Fatal("a session expiry without --clean=false was accepted")
	}
	cfg, _, _ = ParseArgs([]string{"p2p"}, &bytes.Buffer{})
	if cfg.PersistentSubs {
		t.Fatal("persistent sessions by default")
	}
}

func TestSplitPersistScenarios(t *testing.T) {
	names := func(scs []compareScenario) (out []string) {
		for _, sc := range scs {
			out = append(out, sc.Name)
		}
		return out
	}
	p, rest := splitPersistScenarios("")
	if p != nil || rest != "" {
		t.Fatalf("default selection: %v %q (durable-state scenarios are opt-in)", names(p), rest)
	}
	p, rest = splitPersistScenarios("p2p-qos1,p2p-qos1-persistent")
	if !slices.Equal(names(p), []string{"p2p-qos1-persistent"}) || rest != "p2p-qos1" {
		t.Fatalf("got %v %q", names(p), rest)
	}
	p, rest = splitPersistScenarios("persistent")
	if len(p) != len(persistScenarios()) || rest != "" {
		t.Fatalf("group: %v %q", names(p), rest)
	}
	for _, sc := range persistScenarios() {
		for _, q := range []bool{false, true} {
			c := sc.config(q)
			if !c.PersistentSubs || c.QoS != 1 || c.Scenario != ScenarioP2P {
				t.Errorf("%s (quick %v): %+v", sc.Name, q, c)
			}
		}
	}
}

func TestPersistTable(t *testing.T) {
	mk := func(rate, cpu float64) *Result {
		return &Result{RecvRate: rate, Expected: 10, BrokerProc: &ProcStats{CPUPerMsgUs: cpu}}
	}
	runs := map[string][]*Result{
		persistMemory:   {mk(400, 2)},
		persistInterval: {mk(300, 3)},
		persistAlways:   {mk(100, 8)},
		persistMosq:     {mk(50, 10)},
	}
	ms := persistMetrics([]metricDef{mRecvRate, mCPUMsg}, runs)
	if r := ms[0].Ratios["isobar-always/isobar-memory"]; r != 0.25 {
		t.Fatalf("always/memory throughput ratio %v", r)
	}
	if r := ms[1].Ratios["isobar-always/mosquitto"]; r != 0.8 {
		t.Fatalf("always/mosquitto CPU ratio %v", r)
	}
	cr := &CompareReport{Repeat: 1, Persistent: &PersistReport{SyncInterval: "1s",
		Brokers:   []string{persistMemory, persistInterval, persistAlways, persistMosq},
		Scenarios: []CompareOutcome{{Name: "x", Label: "scenario x", Metrics: ms}}}}
	var tbl, md bytes.Buffer
	writePersistTable(&tbl, cr)
	writePersistMarkdown(&md, cr)
	for _, want := range []string{"always/memory", "interval/mosquitto", "0.25 (worse)", "0.80 (better)", "2.00 (better)", "autosave_interval 1s"} {
		if !strings.Contains(tbl.String(), want) || !strings.Contains(md.String(), want) {
			t.Errorf("table or markdown lacks %q:\n%s\n%s", want, tbl.String(), md.String())
		}
	}
	if !strings.HasPrefix(md.String(), "| scenario | figure | isobar memory | isobar interval | isobar always | mosquitto (persistence) |") {
		t.Errorf("markdown header: %q", strings.SplitN(md.String(), "\n", 2)[0])
	}
	var none bytes.Buffer
	writePersistTable(&none, &CompareReport{})
	if none.Len() != 0 {
		t.Errorf("table without durable-state scenarios: %q", none.String())
	}
}

// TestCompareQuickPersistent runs the durable-state scenario against real
// Isobar processes (memory and both Pebble modes) and, when installed,
// Mosquitto with persistence, in quick mode.
func TestCompareQuickPersistent(t *testing.T) {
	if testing.Short() {
		t.Skip("builds isobar and starts brokers")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "isobar")
	build := exec.Command("go", "build", "-o", bin, "github.com/isobar-mq/isobar/cmd/isobar")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/isobar: %v\n%s", err, out)
	}
	args := []string{"--isobar", bin, "--quick", "--repeat", "1", "--scenarios", "p2p-qos1-persistent",
		"--json-out", filepath.Join(dir, "r.json"), "--markdown-out", filepath.Join(dir, "r.md"), "--work-dir", dir}
	want := []string{persistMemory, persistInterval, persistAlways}
	_, err := os.Stat("/usr/sbin/mosquitto")
	if peer.Optional(t, err == nil, "mosquitto not installed (Debian package mosquitto): Isobar's stores only") {
		args = append(args, "--mosquitto", "/usr/sbin/mosquitto")
		want = append(want, persistMosq)
	}
	var out, errb bytes.Buffer
	if code := compareMain(args, &out, &errb); code != 0 {
		t.Fatalf("compare exit %d\n%s\n%s", code, out.String(), errb.String())
	}
	t.Logf("\n%s", out.String())
	b, err := os.ReadFile(filepath.Join(dir, "r.json"))
	if err != nil {
		t.Fatal(err)
	}
	var rep CompareReport
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.Scenarios) != 0 || rep.Persistent == nil || len(rep.Persistent.Scenarios) != 1 {
		t.Fatalf("report: %d scenarios, persistent %+v", len(rep.Scenarios), rep.Persistent)
	}
	sc := rep.Persistent.Scenarios[0]
	for _, b := range want {
		if len(sc.Runs[b]) != 1 || len(sc.Errors[b]) > 0 {
			t.Errorf("%s: %d runs, errors %v", b, len(sc.Runs[b]), sc.Errors[b])
			continue
		}
		// Loss is not a fault here: at full speed a broker drops beyond
		// its queue limit.
		if r := sc.Runs[b][0]; r.Received == 0 || r.Latency.Count == 0 {
			t.Errorf("%s: received %d, %d latency samples", b, r.Received, r.Latency.Count)
		}
	}
	if _, ok := sc.Metrics[0].Ratios[persistAlways+"/"+persistMemory]; !ok {
		t.Errorf("no always/memory ratio: %v", sc.Metrics[0].Ratios)
	}
	// The Pebble runs used their data directories (the last run's stays).
	for _, name := range []string{persistInterval, persistAlways} {
		ents, err := os.ReadDir(filepath.Join(dir, name+"-data"))
		if err != nil || len(ents) == 0 {
			t.Errorf("%s: data directory: %v, %d entries", name, err, len(ents))
		}
	}
	if _, err := os.Stat(filepath.Join(dir, persistMemory+"-data")); !os.IsNotExist(err) {
		t.Errorf("memory store has a data directory: %v", err)
	}
	md, err := os.ReadFile(filepath.Join(dir, "r.md"))
	if err != nil || !strings.Contains(string(md), "always/memory") {
		t.Errorf("markdown: %v\n%s", err, md)
	}
}
