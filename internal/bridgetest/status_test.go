package bridgetest

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/isobar-mq/isobar/internal/testutil"
)

// TestStatus: a bridge's state shows in /metrics, GET /api/v1/bridges
// and $SYS, before and after its remote goes away.
func TestStatus(t *testing.T) {
	m := startMosquitto(t)
	const token = "bridgetest-token-0123456789"
	sum := sha256.Sum256([]byte(token))
	n := testutil.RunNode(t, fmt.Sprintf(`node_name: a
sys_interval: 100ms
listeners:
  - {name: mqtt, protocol: mqtt, address: "127.0.0.1:0"}
http:
  address: "127.0.0.1:0"
  generated_password_file: %q
  api_keys: [{name: test, hash: "sha256:%s", role: read}]
bridges:
  - name: to-m
    url: %s
    min_backoff: 50ms
    max_backoff: 200ms
    topics:
      - {pattern: "data/#", direction: out, qos: 1}
`, filepath.Join(t.TempDir(), "pw"), hex.EncodeToString(sum[:]), m.url()))
	waitConnected(t, n, "to-m")
	base := "http://" + n.HTTP.Addr().String()
	get := func(path string) string {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, base+path, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %d %s", path, resp.StatusCode, b)
		}
		return string(b)
	}
	url := "mqtt://" + testutil.Addr(t, n, "mqtt")
	sys := subscribe(t, url, "sys", "$SYS/broker/connection/+/state", "$SYS/broker/bridges/+/status")
	publish(t, publisher(t, url, "p"), "data/x", "1", 1)

	testutil.CheckFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		body := get("/metrics")
		for _, want := range []string{`isobar_bridge_connected{bridge="to-m"} 1`, `isobar_bridge_messages_out_total{bridge="to-m"} 1`,
			`isobar_bridge_running{bridge="to-m"} 1`, `isobar_bridge_dropped_total{bridge="to-m",reason="buffer_full"} 0`} {
			if !strings.Contains(body, want) {
				return fmt.Errorf("/metrics has no %s", want)
			}
		}
		return nil
	})
	var list []struct {
		Name      string `json:"name"`
		Connected bool   `json:"connected"`
		Out       uint64 `json:"messages_out"`
		Running   bool   `json:"running"`
		LastError string `json:"last_error"`
		Buffered  int    `json:"buffered"`
	}
	if err := json.Unmarshal([]byte(get("/api/v1/bridges")), &list); err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].Name != "to-m" || !list[0].Connected || !list[0].Running || list[0].Out != 1 {
		t.Fatalf("GET /api/v1/bridges: %+v", list)
	}
	testutil.CheckFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		if got := sys.topic("$SYS/broker/connection/to-m/state"); len(got) == 0 || got[len(got)-1] != "1" {
			return fmt.Errorf("$SYS state %v", got)
		}
		if got := sys.topic("$SYS/broker/bridges/to-m/status"); len(got) == 0 || !strings.Contains(got[len(got)-1], `"connected":true`) {
			return fmt.Errorf("$SYS status %v", got)
		}
		return nil
	})

	m.stop()
	publish(t, publisher(t, url, "p2"), "data/x", "2", 1)
	testutil.CheckFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		if err := json.Unmarshal([]byte(get("/api/v1/bridges")), &list); err != nil {
			return err
		}
		if list[0].Connected || list[0].LastError == "" || list[0].Buffered != 1 {
			return fmt.Errorf("after the remote stopped: %+v", list[0])
		}
		if !strings.Contains(get("/metrics"), `isobar_bridge_buffered_messages{bridge="to-m"} 1`) {
			return fmt.Errorf("metrics: buffered not 1")
		}
		if got := sys.topic("$SYS/broker/connection/to-m/state"); got[len(got)-1] != "0" {
			return fmt.Errorf("$SYS state %v", got)
		}
		return nil
	})
}
