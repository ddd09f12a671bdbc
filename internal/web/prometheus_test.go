package web_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/isobar-mq/isobar/internal/testutil"
	"github.com/isobar-mq/isobar/internal/testutil/peer"
)

// freePort picks a TCP port that was free a moment ago. Prometheus cannot
// listen on port 0, so the caller retries if it is taken in between.
func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

type promServer struct {
	base string
	cmd  *exec.Cmd
	log  *bytes.Buffer
}

// startPrometheus runs the real Prometheus scraping target every 500 ms.
func startPrometheus(t *testing.T, bin, target string) *promServer {
	t.Helper()
	dir := t.TempDir()
	cfg := fmt.Sprintf("global:\n  scrape_interval: 500ms\n  scrape_timeout: 400ms\nscrape_configs:\n  - job_name: isobar\n    static_configs:\n      - targets: [%q]\n", target)
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	for attempt := 0; attempt < 5; attempt++ {
		port := freePort(t)
		var logBuf bytes.Buffer
		cmd := exec.Command(bin, "--config.file="+cfgPath,
			"--storage.tsdb.path="+filepath.Join(dir, fmt.Sprintf("data%d", attempt)),
			"--web.listen-address=127.0.0.1:"+strconv.Itoa(port), "--log.level=warn")
		cmd.Stdout, cmd.Stderr = &logBuf, &logBuf
		if err := cmd.Start(); err != nil {
			t.Fatalf("starting prometheus: %v", err)
		}
		exited := make(chan struct{})
		go func() { _ = cmd.Wait(); close(exited) }()
		p := &promServer{base: "http://127.0.0.1:" + strconv.Itoa(port), cmd: cmd, log: &logBuf}
		deadline := time.Now().Add(20 * time.Second)
		for time.Now().Before(deadline) {
			select {
			case <-exited:
				deadline = time.Time{} // port taken or other failure: retry
				continue
			default:
			}
			res, err := http.Get(p.base + "/-/ready")
			if err == nil {
				res.Body.Close()
				if res.StatusCode == 200 {
					t.Cleanup(func() {
						_ = cmd.Process.Kill()
						<-exited
					})
					return p
				}
			}
			time.Sleep(50 * time.Millisecond)
		}
		_ = cmd.Process.Kill()
		<-exited
		t.Logf("prometheus attempt %d failed:\n%s", attempt, logBuf.String())
	}
	t.Fatal("prometheus did not start")
	return nil
}

// query runs an instant PromQL query (at ts when non-zero) and returns the
// vector's samples as label-set string -> value.
func (p *promServer) query(t *testing.T, q string, ts float64) map[string]float64 {
	t.Helper()
	v := url.Values{"query": {q}}
	if ts != 0 {
		v.Set("time", strconv.FormatFloat(ts, 'f', 3, 64))
	}
	res, err := http.Get(p.base + "/api/v1/query?" + v.Encode())
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	var r struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			Result []struct {
				Metric map[string]string `json:"metric"`
				Value  [2]any            `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &r); err != nil || r.Status != "success" {
		t.Fatalf("query %q: %v %s", q, err, body)
	}
	out := map[string]float64{}
	for _, s := range r.Data.Result {
		f, _ := strconv.ParseFloat(s.Value[1].(string), 64)
		out[fmt.Sprint(s.Metric)] = f
	}
	return out
}

func single(m map[string]float64) (float64, bool) {
	for _, v := range m {
		if len(m) == 1 {
			return v, true
		}
	}
	return 0, false
}

// TestPrometheusScrapes runs the real Prometheus against an in-process
// node: it scrapes /metrics, and PromQL over the scraped data sees exactly
// the messages published.
func TestPrometheusScrapes(t *testing.T) {
	bin := peer.NeedBinary(t, "prometheus", "prometheus")
	e := start(t, "")
	p := startPrometheus(t, bin, e.n.HTTP.Addr().String())

	// The target is up and the counter is scraped at 0 at least twice.
	testutil.CheckFor(t, 20*time.Second, 100*time.Millisecond, func() error {
		if v, ok := single(p.query(t, `up{job="isobar"}`, 0)); !ok || v != 1 {
			return fmt.Errorf("target not up yet")
		}
		if v, ok := single(p.query(t, `count_over_time(isobar_messages_received_total{qos="1"}[1m])`, 0)); !ok || v < 2 {
			return fmt.Errorf("not enough samples yet")
		}
		return nil
	})

	const n = 25
	c := mqttClient(t, e.mqtt, "prom-pub", "", true, nil)
	for i := range n {
		waitTok(t, c.Publish("prom/test", 1, false, strconv.Itoa(i)))
	}
	testutil.CheckFor(t, 20*time.Second, 100*time.Millisecond, func() error {
		if v, ok := single(p.query(t, `sum(isobar_messages_received_total{job="isobar"})`, 0)); !ok || v != n {
			return fmt.Errorf("scraped total %v", v)
		}
		return nil
	})
	// increase() evaluated at the last sample: no extrapolation at the end,
	// and none at the start because the series starts at 0 inside the
	// window, so the result is exact.
	last, ok := single(p.query(t, `max(timestamp(isobar_messages_received_total{qos="1"}))`, 0))
	if !ok {
		t.Fatal("no timestamp")
	}
	inc, ok := single(p.query(t, `sum(increase(isobar_messages_received_total[5m]))`, last))
	if !ok || inc < n-0.001 || inc > n+0.001 {
		t.Errorf("increase(isobar_messages_received_total[5m]) = %v, want %d", inc, n)
	}
	byQoS := p.query(t, `sum by (qos) (increase(isobar_messages_received_total[5m]))`, last)
	if byQoS["map[qos:1]"] < n-0.001 || byQoS["map[qos:0]"] != 0 {
		t.Errorf("by qos: %v", byQoS)
	}
	if v, ok := single(p.query(t, `sum(rate(isobar_messages_received_total[5m]))`, last)); !ok || v <= 0 {
		t.Errorf("rate = %v", v)
	}
	if v, ok := single(p.query(t, `sum(isobar_connections{listener="mqtt"})`, 0)); !ok || v != 1 {
		t.Errorf("isobar_connections = %v", v)
	}
}
