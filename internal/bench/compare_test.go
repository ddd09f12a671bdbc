package bench

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/isobar-mq/isobar/internal/testutil/peer"
)

func TestSummarizeMetrics(t *testing.T) {
	mk := func(rate, cpu float64, lost, expected int64) *Result {
		return &Result{RecvRate: rate, Lost: lost, Expected: expected, BrokerProc: &ProcStats{CPUPerMsgUs: cpu}}
	}
	runs := map[string][]*Result{
		"isobar":    {mk(300, 1, 0, 100), mk(100, 3, 0, 100), mk(200, 2, 0, 100)},
		"mosquitto": {mk(50, 4, 10, 100), mk(150, 4, 0, 100)},
		"mochi":     {{RecvRate: 0}}, // nothing received: no figure
	}
	got := summarizeMetrics([]metricDef{mRecvRate, mCPUMsg, mLost}, runs)
	rate, cpu, lost := got[0], got[1], got[2]
	if rate.Values["isobar"] != 200 || rate.Values["mosquitto"] != 100 {
		t.Fatalf("medians %v", rate.Values)
	}
	if _, ok := rate.Values["mochi"]; ok {
		t.Fatalf("a broker without figures got one: %v", rate.Values)
	}
	if rate.Ratios["mosquitto"] != 2 || cpu.Ratios["mosquitto"] != 0.5 {
		t.Fatalf("ratios %v %v", rate.Ratios, cpu.Ratios)
	}
	if lost.Values["mosquitto"] != 5 || lost.Values["isobar"] != 0 {
		t.Fatalf("lost %v", lost.Values)
	}
	if s := fmtRatio(rate, "mosquitto"); s != "2.00 (better)" {
		t.Fatalf("higher-is-better ratio shown as %q", s)
	}
	if s := fmtRatio(cpu, "mosquitto"); s != "0.50 (better)" {
		t.Fatalf("lower-is-better ratio shown as %q", s)
	}
	if s := fmtRatio(rate, "mochi"); s != "–" {
		t.Fatalf("missing ratio shown as %q", s)
	}

	rep := &CompareReport{Repeat: 3, Brokers: []string{"isobar", "mosquitto", "mochi"}, Scenarios: []CompareOutcome{{
		Name: "x", Label: "scenario x", Metrics: got,
		Errors: map[string][]string{"mochi": {"run 1: 3 connections failed"}},
	}}}
	var tbl, md bytes.Buffer
	writeCompareTable(&tbl, rep)
	writeCompareMarkdown(&md, rep)
	for _, want := range []string{"isobar/mosquitto", "isobar/mochi", "scenario x", "2.00 (better)", "! x, mochi: run 1: 3 connections failed", "median of 3"} {
		if !strings.Contains(tbl.String(), want) || !strings.Contains(md.String(), want) {
			t.Errorf("table or markdown lacks %q:\n%s\n%s", want, tbl.String(), md.String())
		}
	}
	if !strings.HasPrefix(md.String(), "| scenario | figure | isobar | mosquitto | mochi |") {
		t.Errorf("markdown header: %q", strings.SplitN(md.String(), "\n", 2)[0])
	}
}

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		want float64
	}{{[]float64{3}, 3}, {[]float64{5, 1, 3}, 3}, {[]float64{4, 1, 3, 2}, 2.5}} {
		if got := median(tc.in); got != tc.want {
			t.Errorf("median(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

// TestCompareQuick runs a reduced comparison against real broker processes:
// Isobar built from this tree and, when installed, Mosquitto.
func TestCompareQuick(t *testing.T) {
	if testing.Short() {
		t.Skip("builds isobar and starts brokers")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "isobar")
	build := exec.Command("go", "build", "-o", bin, "github.com/isobar-mq/isobar/cmd/isobar")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/isobar: %v\n%s", err, out)
	}
	// One TLS and one WebSocket variant next to their TCP base: the
	// brokers get all four listeners and a generated certificate.
	args := []string{"--isobar", bin, "--quick", "--repeat", "1", "--scenarios", "p2p-qos1,p2p-qos1-tls,p2p-qos1-ws,conn-idle",
		"--json-out", filepath.Join(dir, "r.json"), "--markdown-out", filepath.Join(dir, "r.md"), "--work-dir", dir}
	want := []string{"isobar"}
	_, err := os.Stat("/usr/sbin/mosquitto")
	if peer.Optional(t, err == nil, "mosquitto not installed (Debian package mosquitto): comparing Isobar alone") {
		args = append(args, "--mosquitto", "/usr/sbin/mosquitto")
		want = append(want, "mosquitto")
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
	if len(rep.Scenarios) != 4 || rep.Machine["cpus"] == "" {
		t.Fatalf("report: %d scenarios, machine %v", len(rep.Scenarios), rep.Machine)
	}
	for _, sc := range rep.Scenarios {
		for _, b := range want {
			if len(sc.Runs[b]) != 1 {
				t.Fatalf("%s: %d runs for %s, errors %v", sc.Name, len(sc.Runs[b]), b, sc.Errors[b])
			}
			if _, ok := sc.Metrics[0].Values[b]; !ok {
				t.Errorf("%s: no %s figure for %s", sc.Name, sc.Metrics[0].Name, b)
			}
			r := sc.Runs[b][0]
			if r.Transport != sc.Transport {
				t.Errorf("%s, %s: ran over %q, want %q", sc.Name, b, r.Transport, sc.Transport)
			}
			if (sc.Transport == TransportTLS) != (r.TLS != "") {
				t.Errorf("%s, %s: negotiated TLS %q", sc.Name, b, r.TLS)
			} else if r.TLS != "" {
				t.Logf("%s, %s: %s", sc.Name, b, r.TLS)
			}
		}
	}
	// Both variants against p2p-qos1, for every broker.
	if len(rep.TransportCost) != 2*len(want) {
		t.Fatalf("transport cost rows %+v", rep.TransportCost)
	}
	for _, tc := range rep.TransportCost {
		if tc.Base != "p2p-qos1" || tc.RecvRatio <= 0 || tc.CPURatio <= 0 {
			t.Errorf("transport cost %+v", tc)
		}
	}
	if !strings.Contains(out.String(), "cost of the transport relative to plain TCP") {
		t.Errorf("no transport cost table:\n%s", out.String())
	}
}

func TestTransportScenarios(t *testing.T) {
	byName := map[string]compareScenario{}
	for _, sc := range compareScenarios(10000) {
		byName[sc.Name] = sc
	}
	for _, tc := range []struct{ name, base, transport string }{
		{"p2p-qos1-tls", "p2p-qos1", TransportTLS},
		{"p2p-qos1-ws", "p2p-qos1", TransportWS},
		{"p2p-qos1-wss", "p2p-qos1", TransportWSS},
		{"fanout100-qos1-tls", "fanout100-qos1", TransportTLS},
	} {
		sc, ok := byName[tc.name]
		if !ok {
			t.Fatalf("no scenario %s", tc.name)
		}
		base := byName[tc.base]
		if sc.base != tc.base || sc.transport() != tc.transport || base.transport() != TransportTCP {
			t.Errorf("%s: base %q transport %q", tc.name, sc.base, sc.transport())
		}
		for _, quick := range []bool{false, true} {
			got, want := sc.config(quick), base.config(quick)
			want.Transport = tc.transport
			if !reflect.DeepEqual(got, want) {
				t.Errorf("%s (quick %v): %+v, want the base's shape %+v", tc.name, quick, got, want)
			}
		}
		if !strings.HasPrefix(sc.Label, base.Label+", ") {
			t.Errorf("%s: label %q", tc.name, sc.Label)
		}
	}
}

func TestTransportCosts(t *testing.T) {
	metric := func(m metricDef, vals map[string]float64) CompareMetric {
		return CompareMetric{metricDef: m, Values: vals}
	}
	rep := &CompareReport{Brokers: []string{"isobar", "mosquitto", "mochi"}, Scenarios: []CompareOutcome{
		{Name: "p2p-qos1", Transport: TransportTCP, Metrics: []CompareMetric{
			metric(mRecvRate, map[string]float64{"isobar": 400, "mosquitto": 100, "mochi": 80}),
			metric(mCPUMsg, map[string]float64{"isobar": 2, "mosquitto": 8, "mochi": 10}),
		}},
		{Name: "p2p-qos1-tls", Transport: TransportTLS, Base: "p2p-qos1", Metrics: []CompareMetric{
			metric(mRecvRate, map[string]float64{"isobar": 300, "mosquitto": 50}),
			metric(mCPUMsg, map[string]float64{"isobar": 3, "mosquitto": 12}),
		}, Skipped: map[string]string{"mochi": "listens on plain TCP only in this comparison"}},
		// Its base did not run: no row.
		{Name: "fanout100-qos1-tls", Transport: TransportTLS, Base: "fanout100-qos1", Metrics: []CompareMetric{
			metric(mRecvRate, map[string]float64{"isobar": 300}),
		}},
	}}
	rep.TransportCost = transportCosts(rep)
	want := []TransportCost{
		{Scenario: "p2p-qos1-tls", Base: "p2p-qos1", Transport: TransportTLS, Broker: "isobar",
			RecvRate: 300, BaseRecvRate: 400, RecvRatio: 0.75, CPUPerMsg: 3, BaseCPUPerMsg: 2, CPURatio: 1.5},
		{Scenario: "p2p-qos1-tls", Base: "p2p-qos1", Transport: TransportTLS, Broker: "mosquitto",
			RecvRate: 50, BaseRecvRate: 100, RecvRatio: 0.5, CPUPerMsg: 12, BaseCPUPerMsg: 8, CPURatio: 1.5},
	}
	if !reflect.DeepEqual(rep.TransportCost, want) {
		t.Fatalf("transport costs\n%+v\nwant\n%+v", rep.TransportCost, want)
	}
	var tbl, md bytes.Buffer
	writeCompareTable(&tbl, rep)
	writeCompareMarkdown(&md, rep)
	for _, out := range []string{tbl.String(), md.String()} {
		for _, w := range []string{"cost of the transport relative to plain TCP", "0.75", "1.50",
			"mochi not run in p2p-qos1-tls: listens on plain TCP only"} {
			if !strings.Contains(out, w) {
				t.Errorf("output lacks %q:\n%s", w, out)
			}
		}
	}
	if !strings.Contains(md.String(), "| p2p-qos1-tls | mosquitto | 50.0 | 0.50 | 12.0 | 1.50 |") {
		t.Errorf("markdown transport row:\n%s", md.String())
	}
}

func TestIdleConnsSpreadOverSourceAddresses(t *testing.T) {
	for _, tc := range []struct {
		idle  int
		addrs []string
	}{{10000, nil}, {25000, nil}, {50000, []string{"127.0.0.1", "127.0.0.2"}}, {60000, []string{"127.0.0.1", "127.0.0.2", "127.0.0.3"}}} {
		for _, sc := range compareScenarios(tc.idle) {
			if sc.Name != "conn-idle" {
				continue
			}
			cfg := sc.config(false)
			if cfg.Conns != tc.idle || !slices.Equal(cfg.LocalAddrs, tc.addrs) {
				t.Errorf("%d idle: conns %d, source addresses %v, want %v", tc.idle, cfg.Conns, cfg.LocalAddrs, tc.addrs)
			}
			if !strings.Contains(sc.Label, strconv.Itoa(tc.idle/1000)+"k idle") {
				t.Errorf("label %q", sc.Label)
			}
		}
	}
}
