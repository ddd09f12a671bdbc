package sectest

import (
	"encoding/csv"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/isobar-mq/isobar/internal/mqtt/packet"
	"github.com/isobar-mq/isobar/internal/node"
	"github.com/isobar-mq/isobar/internal/testutil"
)

// haproxyConfig is the documented example, run unchanged.
var haproxyConfig = filepath.Join("..", "..", "deploy", "haproxy", "haproxy.cfg")

// freePort returns a port that was free a moment ago (HAProxy cannot be
// given port 0; a lost race is retried by the caller).
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

type haproxy struct {
	proc        *proc
	front, stat string
}

// startHAProxy runs HAProxy on deploy/haproxy/haproxy.cfg in front of the
// two nodes' "proxied" listeners, retrying with other ports when one was
// taken in between.
func startHAProxy(t *testing.T, bin string, p *pki, n1, n2 *node.Node) *haproxy {
	t.Helper()
	cfg, err := filepath.Abs(haproxyConfig)
	if err != nil {
		t.Fatal(err)
	}
	for attempt := 1; ; attempt++ {
		h := &haproxy{front: freePort(t), stat: freePort(t)}
		env := []string{
			"ISOBAR_MQTTS_BIND=" + h.front, "ISOBAR_STATS_BIND=" + h.stat, "ISOBAR_TLS_PEM=" + p.ServerPEM,
			"ISOBAR_NODE1=" + addr(t, n1, "proxied"), "ISOBAR_NODE2=" + addr(t, n2, "proxied"),
			"ISOBAR_CHECK_INTER=100ms",
		}
		h.proc = start(t, env, bin, "-db", "-f", cfg)
		up := false
		deadline := time.Now().Add(timeout)
		for time.Now().Before(deadline) && !up {
			select {
			case <-h.proc.done:
				deadline = time.Now()
			default:
				if c, err := net.DialTimeout("tcp", h.front, time.Second); err == nil {
					_ = c.Close()
					up = true
				} else {
					time.Sleep(20 * time.Millisecond)
				}
			}
		}
		if up {
			return h
		}
		h.proc.stop()
		out := h.proc.output()
		if attempt < 5 && (strings.Contains(out, "cannot bind") || strings.Contains(out, "Address already in use")) {
			t.Logf("HAProxy could not bind (attempt %d), retrying with other ports", attempt)
			continue
		}
		t.Fatalf("HAProxy did not start:\n%s", out)
	}
}

// servers returns HAProxy's view of the backend servers: name -> status
// and check status, from the stats page in CSV.
func (h *haproxy) servers(t *testing.T) (map[string][2]string, error) {
	t.Helper()
	c := http.Client{Timeout: timeout}
	resp, err := c.Get("http://" + h.stat + "/stats;csv")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	r := csv.NewReader(strings.NewReader(strings.TrimPrefix(string(body), "# ")))
	r.FieldsPerRecord = -1
	rows, err := r.ReadAll()
	if err != nil || len(rows) < 2 {
		return nil, fmt.Errorf("stats CSV: %v\n%s", err, body)
	}
	col := map[string]int{}
	for i, name := range rows[0] {
		col[name] = i
	}
	out := map[string][2]string{}
	for _, row := range rows[1:] {
		if row[col["pxname"]] == "isobar" && strings.HasPrefix(row[col["svname"]], "isobar") {
			out[row[col["svname"]]] = [2]string{row[col["status"]], row[col["check_status"]]}
		}
	}
	return out, nil
}

// waitServers waits until every backend server has the given status and
// check status (e.g. "UP", "L7OK").
func (h *haproxy) waitServers(t *testing.T, want map[string][2]string) {
	t.Helper()
	testutil.CheckFor(t, timeout, 50*time.Millisecond, func() error {
		got, err := h.servers(t)
		if err != nil {
			return err
		}
		for name, w := range want {
			if got[name] != w {
				return fmt.Errorf("server %s: %v, want %v (all: %v)", name, got[name], w, got)
			}
		}
		return nil
	})
}

// TestHAProxy puts a real HAProxy, configured as deploy/haproxy/haproxy.cfg
// documents, in front of two Isobar nodes: TLS terminated at HAProxy, only
// valid MQTT CONNECTs forwarded, stickiness on the client identifier, MQTT
// health checks, PROXY protocol v2 carrying the client's real address.
func TestHAProxy(t *testing.T) {
	t.Parallel()
	bin := need(t, "haproxy", "haproxy")
	p := newPKI(t)
	conf := `listeners:
  - {name: proxied, protocol: mqtt, address: "127.0.0.1:0", proxy_protocol: true}
`
	nodes := []*node.Node{startNode(t, conf), startNode(t, conf)}
	h := startHAProxy(t, bin, p, nodes[0], nodes[1])
	defer func() {
		if t.Failed() {
			t.Logf("HAProxy output:\n%s", h.proc.output())
		}
	}()
	// The MQTT health checks (through the PROXY protocol) pass.
	h.waitServers(t, map[string][2]string{"isobar1": {"UP", "L7OK"}, "isobar2": {"UP", "L7OK"}})

	// where waits for client id on one of the nodes and returns its index
	// and the address the broker sees.
	where := func(id string) (int, string) {
		t.Helper()
		var idx int
		var remote string
		testutil.CheckFor(t, timeout, 10*time.Millisecond, func() error {
			for i, n := range nodes {
				if v, ok := clientView(n, id); ok {
					idx, remote = i, v.Remote
					return nil
				}
			}
			return fmt.Errorf("client %q on no node", id)
		})
		return idx, remote
	}

	// Clients through HAProxy: the broker sees each one's own address
	// (127.0.0.1:<its port>), not HAProxy's connection to the broker.
	ids := []string{"hp-a", "hp-b", "hp-c", "hp-d", "hp-e"}
	home := map[string]int{}
	var held []*mc
	for i, id := range ids {
		v := packet.V5
		if i%2 == 1 {
			v = packet.V311
		}
		conn := mustDialTLS(t, h.front, p.clientTLS())
		held = append(held, connect(t, conn, connOpts{id: id, v: v}, 0))
		var remote string
		home[id], remote = where(id)
		if remote != conn.LocalAddr().String() {
			t.Fatalf("client %s: the broker sees %s, the client is %s", id, remote, conn.LocalAddr())
		}
	}
	if counts := [2]int{len(nodes[0].Server.Clients()), len(nodes[1].Server.Clients())}; counts[0] == 0 || counts[1] == 0 {
		t.Fatalf("clients per node %v: leastconn should use both", counts)
	}
	for _, c := range held {
		c.disconnect()
	}

	// Stickiness: the same client identifier lands on the same node.
	for round := range 2 {
		for _, id := range ids {
			c := connect(t, mustDialTLS(t, h.front, p.clientTLS()), connOpts{id: id}, 0)
			if got, _ := where(id); got != home[id] {
				t.Fatalf("round %d: client %s on node %d, first on node %d", round, id, got, home[id])
			}
			c.disconnect()
			waitGone(t, nodes[home[id]], id)
		}
	}

	// mosquitto_sub and mosquitto_pub through HAProxy, over TLS verified
	// against the CA, with identifiers that stick to the same node.
	sub := need(t, "mosquitto_sub", "mosquitto-clients")
	pub := need(t, "mosquitto_pub", "mosquitto-clients")
	var subID, pubID string
	for i, a := range ids {
		for _, b := range ids[i+1:] {
			if subID == "" && home[a] == home[b] {
				subID, pubID = a, b
			}
		}
	}
	_, hport, _ := net.SplitHostPort(h.front)
	for _, v := range []string{"mqttv311", "mqttv5"} {
		args := []string{"-h", "127.0.0.1", "-p", hport, "--cafile", p.CAFile, "-V", v, "-q", "1", "-t", "through/haproxy"}
		s := start(t, nil, sub, append(args, "-i", subID, "-C", "1", "-W", "10")...)
		waitSubscribed(t, nodes[home[subID]], subID, 1)
		mustRun(t, pub, append(args, "-i", pubID, "-m", "hello via haproxy "+v)...)
		s.waitLine(t, func(l string) bool { return l == "hello via haproxy "+v })
		if code := s.wait(t); code != 0 {
			t.Fatalf("mosquitto_sub %s: exit %d\n%s", v, code, s.output())
		}
		waitGone(t, nodes[home[subID]], subID)
		waitGone(t, nodes[home[pubID]], pubID)
	}

	// Not MQTT: HAProxy refuses it, nothing reaches the brokers.
	if before := len(nodes[0].Server.Clients()) + len(nodes[1].Server.Clients()); before != 0 {
		t.Fatalf("%d clients still connected", before)
	}
	for name, data := range map[string]string{
		"HTTP request":             "GET /mqtt HTTP/1.1\r\nHost: x\r\n\r\n",
		"SUBSCRIBE before CONNECT": "\x82\x08\x00\x01\x00\x03a/b\x00",
	} {
		c := mustDialTLS(t, h.front, p.clientTLS())
		if _, err := io.WriteString(c, data); err != nil {
			t.Fatal(err)
		}
		expectDropped(t, c, name+" through HAProxy")
	}
	// HAProxy's log shows them refused by the frontend (no server chosen,
	// "PR": the proxy rejected the request).
	testutil.CheckFor(t, timeout, 20*time.Millisecond, func() error {
		if got := strings.Count(h.proc.output(), "mqtts/<NOSRV> -1/-1/"); got != 2 {
			return fmt.Errorf("%d connections rejected by the frontend in HAProxy's log, want 2", got)
		}
		return nil
	})
	if after := len(nodes[0].Server.Clients()) + len(nodes[1].Server.Clients()); after != 0 {
		t.Fatalf("%d clients connected after invalid connections", after)
	}

	// Failover: a node going down fails its health check; its clients'
	// identifiers are sent to the other node.
	down, other := home[subID], 1-home[subID]
	if err := nodes[down].Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	names := [2]string{"isobar1", "isobar2"}
	testutil.CheckFor(t, timeout, 50*time.Millisecond, func() error {
		got, err := h.servers(t)
		if err != nil {
			return err
		}
		if !strings.HasPrefix(got[names[down]][0], "DOWN") || got[names[other]][0] != "UP" {
			return fmt.Errorf("servers %v, want %s down", got, names[down])
		}
		return nil
	})
	connect(t, mustDialTLS(t, h.front, p.clientTLS()), connOpts{id: subID, v: packet.V5}, 0)
	if got, _ := where(subID); got != other {
		t.Fatalf("after failover client %s on node %d, want %d", subID, got, other)
	}
}
