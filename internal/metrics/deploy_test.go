package metrics_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.yaml.in/yaml/v3"

	"github.com/isobar-mq/isobar/internal/broker"
	"github.com/isobar-mq/isobar/internal/cluster"
	"github.com/isobar-mq/isobar/internal/metrics"
	"github.com/isobar-mq/isobar/internal/testutil/peer"
)

const deployDir = "../../deploy"

// recorder is a Registerer that notes the name of every metric registered
// through it (vectors with no series yet included).
type recorder struct {
	prometheus.Registerer
	t     *testing.T
	names map[string]bool
}

func (r *recorder) Register(c prometheus.Collector) error {
	ch := make(chan *prometheus.Desc, 64)
	go func() { c.Describe(ch); close(ch) }()
	fq := regexp.MustCompile(`fqName: "([^"]+)"`)
	for d := range ch {
		if m := fq.FindStringSubmatch(d.String()); m != nil {
			r.names[m[1]] = true
		}
	}
	return r.Registerer.Register(c)
}

func (r *recorder) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}

// clusterNames adds the metrics of a clustered node (its own registry).
func clusterNames(t *testing.T, names map[string]bool) {
	t.Helper()
	rec := &recorder{Registerer: prometheus.NewRegistry(), t: t, names: names}
	cn, err := cluster.New(cluster.Config{NodeName: "names", Bind: "127.0.0.1:0", Secret: []byte(strings.Repeat("k", 32)), Replicas: 1, Registerer: rec})
	if err != nil {
		t.Fatal(err)
	}
	var opts broker.Options
	cn.BrokerOptions(&opts)
	srv := broker.New(opts, nil, nil)
	if err := cn.Start(srv); err != nil {
		t.Fatal(err)
	}
	_ = cn.Close()
	_ = srv.Shutdown(context.Background())
}

// exportedNames returns every metric name a node's registry can expose:
// the isobar collector's (from Describe, so series that are only present
// after some event count too, histograms with their _bucket, _sum and
// _count) and the Go and process collectors' (from a scrape).
func exportedNames(t *testing.T) map[string]bool {
	t.Helper()
	_, col, addr := startBroker(t, broker.Options{})
	c := connect(t, addr, "names", nil)
	wait(t, c.Publish("x", 0, false, "x"))
	names := map[string]bool{}
	ch := make(chan *prometheus.Desc, 100)
	col.Describe(ch)
	close(ch)
	fq := regexp.MustCompile(`fqName: "([^"]+)"`)
	for d := range ch {
		m := fq.FindStringSubmatch(d.String())
		if m == nil {
			t.Fatalf("cannot read the name of %s", d)
		}
		names[m[1]] = true
		if m[1] == "isobar_delivery_latency_seconds" {
			for _, s := range []string{"_bucket", "_sum", "_count"} {
				names[m[1]+s] = true
			}
		}
	}
	clusterNames(t, names)
	mfs, err := metrics.NewRegistry(col).Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		names[mf.GetName()] = true
		if mf.GetType().String() == "HISTOGRAM" || mf.GetType().String() == "SUMMARY" {
			names[mf.GetName()+"_sum"] = true
			names[mf.GetName()+"_count"] = true
			names[mf.GetName()+"_bucket"] = true
		}
	}
	return names
}

var metricRef = regexp.MustCompile(`\b((?:isobar|go|process)_[a-z0-9_]+)\b`)

func usedNames(t *testing.T, exprs []string) []string {
	set := map[string]bool{}
	for _, e := range exprs {
		for _, m := range metricRef.FindAllStringSubmatch(e, -1) {
			set[m[1]] = true
		}
	}
	var out []string
	for n := range set {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// TestDeployAssetsUseExportedMetrics checks that every metric name in the
// Grafana dashboards and the alerting rules exists in /metrics.
func TestDeployAssetsUseExportedMetrics(t *testing.T) {
	names := exportedNames(t)

	var exprs []string
	dashboards, _ := filepath.Glob(filepath.Join(deployDir, "grafana", "*.json"))
	if len(dashboards) == 0 {
		t.Fatal("no Grafana dashboard in deploy/grafana")
	}
	for _, f := range dashboards {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var d struct {
			Panels []struct {
				Title   string `json:"title"`
				Targets []struct {
					Expr string `json:"expr"`
				} `json:"targets"`
			} `json:"panels"`
			Templating struct {
				List []struct {
					Query any `json:"query"`
				} `json:"list"`
			} `json:"templating"`
		}
		if err := json.Unmarshal(raw, &d); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		n := 0
		for _, p := range d.Panels {
			for _, tg := range p.Targets {
				exprs = append(exprs, tg.Expr)
				n++
			}
		}
		for _, v := range d.Templating.List {
			if s, ok := v.Query.(string); ok {
				exprs = append(exprs, s)
			}
		}
		if n < 10 {
			t.Errorf("%s: only %d queries", f, n)
		}
	}

	raw, err := os.ReadFile(filepath.Join(deployDir, "prometheus", "alerts.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert string `yaml:"alert"`
				Expr  string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(raw, &rules); err != nil {
		t.Fatal(err)
	}
	alerts := map[string]bool{}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			exprs = append(exprs, r.Expr)
			alerts[r.Alert] = true
		}
	}
	for _, a := range []string{"IsobarDown", "IsobarConnectionsNearLimit", "IsobarMessagesDropped", "IsobarSlowConsumers"} {
		if !alerts[a] {
			t.Errorf("alerts.yml lacks %s", a)
		}
	}

	used := usedNames(t, exprs)
	if len(used) < 15 {
		t.Errorf("only %d metric names found in the assets: %v", len(used), used)
	}
	for _, n := range used {
		if !names[n] {
			t.Errorf("deploy assets use %s, which the broker does not export", n)
		}
	}
}

// TestDeployAssetsPromtool validates the Prometheus files with promtool
// (Debian package "prometheus"; skipped without it, failed in CI).
func TestDeployAssetsPromtool(t *testing.T) {
	promtool := peer.NeedBinary(t, "promtool", "prometheus")
	for _, args := range [][]string{
		{"check", "rules", filepath.Join(deployDir, "prometheus", "alerts.yml")},
		{"check", "config", filepath.Join(deployDir, "prometheus", "prometheus.yml")},
	} {
		out, err := exec.Command(promtool, args...).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "SUCCESS") {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}
