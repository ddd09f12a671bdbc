package web_test

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/isobar-mq/isobar/internal/config"
	"github.com/isobar-mq/isobar/internal/testutil"
)

const (
	readerKey    = "isb_reader_0123456789abcdefghijklmnopqrst"
	publisherKey = "isb_publisher_0123456789abcdefghijklmnopq"
)

// rolesConfig adds users and keys of every role to the http section.
func rolesConfig() string {
	return fmt.Sprintf(`    - {username: reader, password_hash: "%[1]s", role: read}
    - {username: pub, password_hash: "%[1]s", role: publish}
    - {username: lab, password_hash: "%[1]s", role: publish, topics: ["lab/#", "shared/+/x"]}
    - {username: boss, password_hash: "%[1]s", role: admin}
  api_keys:
    - {name: ci, hash: "%[4]s"}
    - {name: ro, hash: "%[2]s", role: read}
    - {name: bot, hash: "%[3]s", role: publish, topics: ["bots/#"]}
`, adminHash(), keyHash(readerKey), keyHash(publisherKey), keyHash(apiKey))
}

func startRoles(t *testing.T) *env {
	t.Helper()
	// nodeConfig ends with the users list and the ci key; the extra users
	// must go into the users list, so build the section here.
	cfg := fmt.Sprintf(`listeners:
  - {name: mqtt, protocol: mqtt, address: "127.0.0.1:0"}
store: {mode: memory}
sys_interval: 0s
http:
  address: "127.0.0.1:0"
  users:
    - {username: %s, password_hash: "%s"}
%s`, adminUser, adminHash(), rolesConfig())
	n := testutil.RunNode(t, cfg)
	return &env{t: t, n: n, base: "http://" + n.HTTP.Addr().String(), mqtt: testutil.Addr(t, n, "mqtt")}
}

func basicAs(user string) map[string]string {
	return map[string]string{"Authorization": "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+adminPass))}
}

// TestRoles: read may only GET, publish may also publish (retained
// included), admin may do everything; users configured without a role are
// admins. Refusals are 403 with a JSON error.
func TestRoles(t *testing.T) {
	e := startRoles(t)
	mqttClient(t, e.mqtt, "victim", "", true, nil)
	pubBody := func(topic string) map[string]any {
		return map[string]any{"topic": topic, "payload": "x", "retain": true}
	}
	type call struct {
		method, path string
		body         any
	}
	gets := []call{{"GET", "/api/v1/stats", nil}, {"GET", "/api/v1/clients", nil}, {"GET", "/api/v1/config", nil},
		{"GET", "/api/v1/retained", nil}, {"GET", "/api/v1/session", nil}}
	publish := call{"POST", "/api/v1/publish", pubBody("lab/a")}
	deleteRetained := call{"DELETE", "/api/v1/retained/message?topic=lab/a", nil}
	kick := call{"DELETE", "/api/v1/clients/nobody", nil}
	type who struct {
		name   string
		header map[string]string
	}
	for _, c := range []struct {
		who
		allowed, refused []call
	}{
		{who{"reader", basicAs("reader")}, gets, []call{publish, deleteRetained, kick}},
		{who{"ro key", map[string]string{"Authorization": "Bearer " + readerKey}}, gets, []call{publish, deleteRetained, kick}},
		{who{"pub", basicAs("pub")}, append(gets, publish), []call{deleteRetained, kick}},
		{who{"boss", basicAs("boss")}, append(gets, publish, deleteRetained), nil},
		{who{"admin (no role)", basicAs(adminUser)}, append(gets, publish), nil},
		{who{"ci key (no role)", map[string]string{"Authorization": "Bearer " + apiKey}}, gets, nil},
	} {
		for _, q := range c.allowed {
			r := e.do(req{method: q.method, path: q.path, body: q.body, header: c.header})
			if r.code >= 300 {
				t.Errorf("%s: %s %s: %d %s", c.name, q.method, q.path, r.code, r.body)
			}
		}
		for _, q := range c.refused {
			r := e.do(req{method: q.method, path: q.path, body: q.body, header: c.header})
			if r.code != http.StatusForbidden {
				t.Errorf("%s: %s %s: %d, want 403", c.name, q.method, q.path, r.code)
				continue
			}
			if msg := r.errorMessage(t); !strings.Contains(msg, "role") {
				t.Errorf("%s: 403 message %q", c.name, msg)
			}
		}
	}
	// The admin kicks (404 for an unknown client: past the role check);
	// a reader's kick did not disconnect anyone.
	if r := e.do(req{method: "DELETE", path: "/api/v1/clients/victim", header: basicAs("boss")}); r.code != 204 {
		t.Errorf("admin kick: %d %s", r.code, r.body)
	}
	// GET /api/v1/session says the role.
	var me struct {
		Role string `json:"role"`
	}
	e.do(req{method: "GET", path: "/api/v1/session", header: map[string]string{"Authorization": "Bearer " + readerKey}}).json(t, &me)
	if me.Role != "read" {
		t.Errorf("session of the ro key: role %q", me.Role)
	}
	// A reader's console session cannot publish either.
	c, csrf := e.loginAs("reader")
	r := e.do(req{method: "POST", path: "/api/v1/publish", body: pubBody("t"), client: c, header: map[string]string{"X-Isobar-CSRF": csrf}})
	if r.code != http.StatusForbidden {
		t.Errorf("reader session publishing: %d", r.code)
	}
}

// TestTopicAllowList: a user with topics may publish, see and change only
// retained messages of matching topics.
func TestTopicAllowList(t *testing.T) {
	e := startRoles(t)
	for _, tp := range []string{"lab/1", "shared/a/x", "other/1", "bots/1"} {
		if r := e.do(req{method: "POST", path: "/api/v1/publish", basic: true, body: map[string]any{"topic": tp, "payload": "v", "retain": true}}); r.code != 200 {
			t.Fatalf("admin publish %s: %d %s", tp, r.code, r.body)
		}
	}
	lab, bot := basicAs("lab"), map[string]string{"Authorization": "Bearer " + publisherKey}
	for _, c := range []struct {
		header map[string]string
		topic  string
		code   int
	}{
		{lab, "lab/2", 200}, {lab, "lab", 200}, {lab, "shared/b/x", 200}, {lab, "shared/b/y", 403}, {lab, "other/1", 403},
		{lab, "labs/1", 403}, {bot, "bots/7/cmd", 200}, {bot, "lab/1", 403},
	} {
		r := e.do(req{method: "POST", path: "/api/v1/publish", header: c.header, body: map[string]any{"topic": c.topic, "payload": "v"}})
		if r.code != c.code {
			t.Errorf("publish to %s: %d, want %d (%s)", c.topic, r.code, c.code, r.body)
		}
		if r.code == 403 {
			if msg := r.errorMessage(t); !strings.Contains(msg, "topics") {
				t.Errorf("403 message %q", msg)
			}
		}
	}
	if r := e.do(req{method: "GET", path: "/api/v1/retained/message?topic=other/1", header: lab}); r.code != 403 {
		t.Errorf("lab reads other/1: %d", r.code)
	}
	if r := e.do(req{method: "GET", path: "/api/v1/retained/message?topic=lab/1", header: lab}); r.code != 200 {
		t.Errorf("lab reads lab/1: %d", r.code)
	}
	var l struct {
		Total int `json:"total"`
		Items []struct {
			Topic string `json:"topic"`
		} `json:"items"`
	}
	testutil.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		r := e.do(req{method: "GET", path: "/api/v1/retained", header: lab})
		r.json(t, &l)
		if r.code != 200 || l.Total != 2 || len(l.Items) != 2 || l.Items[0].Topic != "lab/1" || l.Items[1].Topic != "shared/a/x" {
			return fmt.Errorf("lab's retained list: %d %s", r.code, r.body)
		}
		return nil
	})
}

// TestRetainedDeleteReserved: the broker's own ($) retained messages are
// not deletable through the API, not even by an admin.
func TestRetainedDeleteReserved(t *testing.T) {
	e := start(t, "")
	r := e.do(req{method: "DELETE", path: "/api/v1/retained/message?topic=%24SYS/broker/version", basic: true})
	if r.code != 400 {
		t.Fatalf("DELETE $SYS retained: %d %s", r.code, r.body)
	}
	if msg := r.errorMessage(t); !strings.Contains(msg, "reserved") {
		t.Errorf("message %q", msg)
	}
}

// TestRoleConfigValidation: roles and topic rules are checked at load.
func TestRoleConfigValidation(t *testing.T) {
	base := "listeners:\n  - {name: mqtt, protocol: mqtt, address: \"127.0.0.1:0\"}\n"
	h := adminHash()
	for _, bad := range []string{
		`http: {users: [{username: a, password_hash: "` + h + `", role: root}]}`,
		`http: {users: [{username: a, password_hash: "` + h + `", topics: ["a/#/b"]}]}`,
		`http: {users: [{username: a, password_hash: "` + h + `", topics: []}]}`,
		`http: {users: [{username: a, password_hash: "` + h + `", topics: ["$share/g/a"]}]}`,
		`http: {api_keys: [{name: k, hash: "` + keyHash("k") + `", role: write}]}`,
		`http: {api_keys: [{name: k, hash: "` + keyHash("k") + `", topics: ["a\u0001"]}]}`,
		`http: {allowed_hosts: ["http://x"]}`,
		`http: {allowed_hosts: ["x:8080"]}`,
		`http: {trusted_proxies: ["proxy.example"]}`,
		`http: {trusted_proxies: ["10.0.0.0/33"]}`,
	} {
		if _, err := config.Parse([]byte(base + bad + "\n")); err == nil {
			t.Errorf("accepted: %s", bad)
		}
	}
	good := `http: {users: [{username: a, password_hash: "` + h + `", role: read, topics: ["a/#", "+/b"]}], ` +
		`allowed_hosts: ["b.example", "*.example.org", "*", "::1", "[::1]"], trusted_proxies: [10.0.0.0/8, "fd00::1"], cookie_secure: true}`
	if _, err := config.Parse([]byte(base + good + "\n")); err != nil {
		t.Errorf("refused: %v", err)
	}
}
