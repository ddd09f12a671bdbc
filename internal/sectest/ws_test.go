package sectest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/isobar-mq/isobar/internal/mqtt/packet"
	"github.com/isobar-mq/isobar/internal/testutil/peer"
)

var (
	mqttjsOnce sync.Once
	mqttjsErr  error
	mqttjsOut  string
)

// mqttjs returns the node binary and the directory of the MQTT.js client
// (testdata/mqttjs), installing its locked dependencies with npm ci when
// node_modules is missing or stale. Without node or npm, or when npm cannot reach
// its registry, the test is skipped (failed in CI, see package peer).
func mqttjs(t *testing.T) (nodeBin, dir string) {
	t.Helper()
	nodeBin = need(t, "node", "nodejs")
	npm := need(t, "npm", "npm")
	dir, err := filepath.Abs(filepath.Join("testdata", "mqttjs"))
	if err != nil {
		t.Fatal(err)
	}
	mqttjsOnce.Do(func() {
		// npm records what it installed in node_modules/.package-lock.json:
		// reinstall when that is missing or older than the lock file.
		installed, err1 := os.Stat(filepath.Join(dir, "node_modules", ".package-lock.json"))
		lock, err2 := os.Stat(filepath.Join(dir, "package-lock.json"))
		if err1 == nil && err2 == nil && !installed.ModTime().Before(lock.ModTime()) {
			return
		}
		cmd := exec.Command(npm, "ci", "--no-audit", "--no-fund")
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		mqttjsOut, mqttjsErr = string(out), err
	})
	if mqttjsErr != nil {
		peer.Missing(t, "npm ci in %s failed (%v), cannot run MQTT.js:\n%s", dir, mqttjsErr, mqttjsOut)
	}
	return nodeBin, dir
}

// TestMQTTJSWebSocket: MQTT.js in Node, the way browsers use MQTT, over
// ws:// and wss:// (certificate verified against the CA, and unverified
// with rejectUnauthorized false), MQTT 3.1.1 and 5.0, exchanging messages
// with a Go client over WebSocket (gobwas/ws) and one over TCP.
func TestMQTTJSWebSocket(t *testing.T) {
	t.Parallel()
	nodeBin, dir := mqttjs(t)
	p := newPKI(t)
	n := startNode(t, fmt.Sprintf(`listeners:
  - {name: mqtt, protocol: mqtt, address: "127.0.0.1:0"}
  - {name: ws, protocol: ws, address: "127.0.0.1:0"}
  - name: wss
    protocol: ws
    address: "127.0.0.1:0"
    tls: {cert_file: %q, key_file: %q}
`, p.ServerCert, p.ServerKey))
	for _, tc := range []struct {
		name, listener, scheme string
		v                      int
		ca                     bool
	}{
		{"ws-v4", "ws", "ws", 4, false},
		{"wss-v5-verified", "wss", "wss", 5, true},
		{"wss-v4-unverified", "wss", "wss", 4, false},
	} {
		url := fmt.Sprintf("%s://%s/mqtt", tc.scheme, addr(t, n, tc.listener))
		// A Go peer over the same kind of WebSocket, one over TCP.
		var wsPeer net.Conn
		if tc.scheme == "wss" {
			wsPeer = mustDialWS(t, url, p.clientTLS())
		} else {
			wsPeer = mustDialWS(t, url, nil)
		}
		goWS := connect(t, wsPeer, connOpts{id: "go-ws-" + tc.name, v: packet.V5}, 0)
		goWS.mustSubscribe("js/" + tc.name + "/out")
		goTCP := connectTCP(t, addr(t, n, "mqtt"), connOpts{id: "go-tcp-" + tc.name})
		goTCP.mustSubscribe("js/" + tc.name + "/out")

		args := []string{filepath.Join(dir, "client.js"), url, "--v", fmt.Sprint(tc.v), "--id", "js-" + tc.name,
			"--sub", "js/" + tc.name + "/in", "--pub", "js/" + tc.name + "/out=from mqtt.js", "--expect", "1"}
		if tc.ca {
			args = append(args, "--ca", p.CAFile)
		}
		js := start(t, nil, nodeBin, args...)
		js.waitLine(t, func(l string) bool { return l == "subscribed" })
		if c, ok := clientView(n, "js-"+tc.name); !ok || c.Listener != tc.listener {
			t.Fatalf("%s: MQTT.js client view %+v (connected %v), want listener %s", tc.name, c, ok, tc.listener)
		} else if want := map[int]string{4: "3.1.1", 5: "5.0"}[tc.v]; c.Protocol != want {
			t.Fatalf("%s: MQTT.js client protocol %s, want %s", tc.name, c.Protocol, want)
		}
		goWS.expectMsg("js/"+tc.name+"/out", "from mqtt.js")
		goTCP.expectMsg("js/"+tc.name+"/out", "from mqtt.js")
		goWS.mustPublish("js/"+tc.name+"/in", "from go")
		js.waitLine(t, func(l string) bool { return l == "message js/"+tc.name+"/in from go" })
		if code := js.wait(t); code != 0 {
			t.Fatalf("%s: MQTT.js exit %d:\n%s", tc.name, code, js.output())
		}
		goWS.disconnect()
		goTCP.disconnect()
	}
}

// TestMQTTJSRejectsUntrustedCertificate: with the CA check on (the
// browser's behaviour) MQTT.js refuses a server certificate from another CA.
func TestMQTTJSRejectsUntrustedCertificate(t *testing.T) {
	t.Parallel()
	nodeBin, dir := mqttjs(t)
	p, other := newPKI(t), newPKI(t)
	n := startNode(t, fmt.Sprintf(`listeners:
  - name: wss
    protocol: ws
    address: "127.0.0.1:0"
    tls: {cert_file: %q, key_file: %q}
`, p.ServerCert, p.ServerKey))
	js := start(t, nil, nodeBin, filepath.Join(dir, "client.js"), "wss://"+addr(t, n, "wss")+"/mqtt",
		"--ca", other.CAFile, "--id", "js-untrusted", "--expect", "0")
	if code := js.wait(t); code != 1 || !strings.Contains(js.output(), "error") {
		t.Fatalf("MQTT.js with the wrong CA: exit %d, want 1:\n%s", code, js.output())
	}
	if len(n.Server.Clients()) != 0 {
		t.Fatalf("clients %+v", n.Server.Clients())
	}
}

// TestWebSocketForwardedFor: X-Forwarded-For is believed only from
// trusted_proxies; the client address it gives is the one the broker uses.
func TestWebSocketForwardedFor(t *testing.T) {
	t.Parallel()
	n := startNode(t, `listeners:
  - {name: behind-proxy, protocol: ws, address: "127.0.0.1:0", trusted_proxies: ["127.0.0.0/8"]}
  - {name: direct, protocol: ws, address: "127.0.0.1:0"}
`)
	for _, tc := range []struct{ listener, wantHost string }{{"behind-proxy", "203.0.113.7"}, {"direct", "127.0.0.1"}} {
		conn, err := dialWS(t, "ws://"+addr(t, n, tc.listener)+"/mqtt", []string{"mqtt"},
			map[string]string{"X-Forwarded-For": "203.0.113.7, 127.0.0.2"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		c := connect(t, conn, connOpts{id: "xff-" + tc.listener}, 0)
		v, _ := clientView(n, "xff-"+tc.listener)
		host, _, err := net.SplitHostPort(v.Remote)
		if err != nil || host != tc.wantHost {
			t.Fatalf("%s: broker sees remote %q, want host %s", tc.listener, v.Remote, tc.wantHost)
		}
		if tc.listener == "direct" && v.Remote != conn.LocalAddr().String() {
			t.Fatalf("direct: remote %q, want the client's %s", v.Remote, conn.LocalAddr())
		}
		c.disconnect()
	}
}
