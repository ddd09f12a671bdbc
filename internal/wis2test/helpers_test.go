package wis2test

import (
	"bufio"
	"crypto/rand"
	"encoding/csv"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/isobar-mq/isobar/internal/testutil/peer"
)

// shared is the fixtures directory next to the repository.
func shared(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs("../../../shared/wis2")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "README.md")); err != nil {
		peer.Missing(t, "the WIS2 fixtures in ../shared/wis2 (%v)", err)
	}
	return dir
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// mosquittoBroker is a private mosquitto on a loopback port.
type mosquittoBroker struct {
	addr string
	cmd  *exec.Cmd
}

func startMosquitto(t *testing.T) *mosquittoBroker {
	t.Helper()
	bin := peer.NeedBinary(t, "mosquitto", "mosquitto")
	dir := t.TempDir()
	port := freePort(t)
	conf := filepath.Join(dir, "mosquitto.conf")
	if err := os.WriteFile(conf, fmt.Appendf(nil, "listener %d 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 100000\n", port), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-c", conf)
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	m := &mosquittoBroker{addr: fmt.Sprintf("127.0.0.1:%d", port), cmd: cmd}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", m.addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return m
		}
		if time.Now().After(deadline) {
			t.Fatalf("mosquitto on %s did not start: %v", m.addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// publisher is a paho client publishing at QoS 1 to a broker.
func publisher(t *testing.T, addr, id string) mqtt.Client {
	t.Helper()
	o := mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).SetAutoReconnect(true).SetConnectRetry(true)
	c := mqtt.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("connect %s: %v", addr, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return c
}

func publish(t *testing.T, c mqtt.Client, topic string, payload []byte) {
	t.Helper()
	tok := c.Publish(topic, 1, false, payload)
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("publish %s: %v", topic, tok.Error())
	}
}

// collector subscribes on Isobar and keeps every message by topic.
type collector struct {
	mu   sync.Mutex
	msgs []mqtt.Message
}

func collect(t *testing.T, addr string, filters ...string) *collector {
	t.Helper()
	col := &collector{}
	o := mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID("collector").SetOrderMatters(false)
	c := mqtt.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("connect %s: %v", addr, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })
	subs := map[string]byte{}
	for _, f := range filters {
		subs[f] = 1
	}
	tok := c.SubscribeMultiple(subs, func(_ mqtt.Client, m mqtt.Message) {
		col.mu.Lock()
		col.msgs = append(col.msgs, m)
		col.mu.Unlock()
	})
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	return col
}

func (c *collector) matching(prefix string) []mqtt.Message {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []mqtt.Message
	for _, m := range c.msgs {
		if strings.HasPrefix(m.Topic(), prefix) {
			out = append(out, m)
		}
	}
	return out
}

// metrics reads one node's /metrics: series (name with labels) -> value.
func metrics(t *testing.T, httpAddr string) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + httpAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		out[line[:i]] = v
	}
	return out
}

// gb returns the value of a wmo_wis2_gb_* series for a source.
func gb(m map[string]float64, name, centre, reportBy string) float64 {
	return m[fmt.Sprintf(`%s{centre_id=%q,report_by=%q}`, name, centre, reportBy)]
}

// waitFor polls cond every 50 ms until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func uuid4() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// withID returns the minimal acceptance-test notification with a fresh id.
func withID(t *testing.T, dir, id string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "examples/valid/gst-minimal-wnm.json"))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	i := strings.Index(s, `"id"`)
	if i < 0 {
		t.Fatal("gst-minimal-wnm.json has no id")
	}
	j := strings.Index(s[i+4:], `"`)
	k := strings.Index(s[i+4+j+1:], `"`)
	return []byte(s[:i+4+j+1] + id + s[i+4+j+1+k:])
}

// topicRows reads a topics.csv of the fixtures: (topic, gst_expectation,
// publisher_centre_id).
func topicRows(t *testing.T, path string) [][3]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := csv.NewReader(f)
	r.FieldsPerRecord = -1
	recs, err := r.ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	var out [][3]string
	for _, rec := range recs[1:] {
		out = append(out, [3]string{rec[0], rec[2], rec[4]})
	}
	return out
}
