package web_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/isobar-mq/isobar/internal/config"
	"github.com/isobar-mq/isobar/internal/node"
	"github.com/isobar-mq/isobar/internal/testutil"
)

// protected lists every authenticated endpoint with a method it answers.
var protected = []struct{ method, path string }{
	{"GET", "/api/v1/session"},
	{"GET", "/api/v1/broker"},
	{"GET", "/api/v1/stats"},
	{"GET", "/api/v1/stats/history"},
	{"GET", "/api/v1/listeners"},
	{"GET", "/api/v1/clients"},
	{"GET", "/api/v1/clients/x"},
	{"DELETE", "/api/v1/clients/x"},
	{"GET", "/api/v1/sessions"},
	{"GET", "/api/v1/sessions/x"},
	{"GET", "/api/v1/subscriptions"},
	{"GET", "/api/v1/retained"},
	{"GET", "/api/v1/retained/message?topic=a"},
	{"DELETE", "/api/v1/retained/message?topic=a"},
	{"POST", "/api/v1/publish"},
	{"GET", "/api/v1/config"},
}

func TestUnauthenticatedRefused(t *testing.T) {
	e := start(t, "")
	for i, p := range protected {
		r := e.do(req{method: p.method, path: p.path})
		if r.code != http.StatusUnauthorized {
			t.Errorf("%s %s without credentials: %d, want 401", p.method, p.path, r.code)
			continue
		}
		r.errorMessage(t)
		if !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Basic ") {
			t.Errorf("%s %s: WWW-Authenticate %q", p.method, p.path, r.header.Get("WWW-Authenticate"))
		}
		// Wrong credentials of each kind, on a few endpoints (they share the
		// code, and failures from one address are throttled after 10).
		if i >= 4 {
			continue
		}
		for _, q := range []req{
			{method: p.method, path: p.path, bearer: "wrong"},
			{method: p.method, path: p.path, header: map[string]string{"Authorization": "Basic " + base64.StdEncoding.EncodeToString([]byte("admin:wrong"))}},
			{method: p.method, path: p.path, header: map[string]string{"Cookie": "isobar_session=forged"}},
			{method: p.method, path: p.path, header: map[string]string{"Authorization": "Digest x"}},
		} {
			if r := e.do(q); r.code != http.StatusUnauthorized {
				t.Errorf("%s %s with bad credentials %v: %d", p.method, p.path, q.header, r.code)
			}
		}
	}
	// The console's requests do not trigger the browser's Basic dialog.
	r := e.do(req{method: "GET", path: "/api/v1/stats", header: map[string]string{"X-Requested-With": "XMLHttpRequest"}})
	if r.code != 401 || r.header.Get("WWW-Authenticate") != "" {
		t.Errorf("console 401: %d %q", r.code, r.header.Get("WWW-Authenticate"))
	}
}

func TestBasicBearerAndErrors(t *testing.T) {
	e := start(t, "")
	var who struct {
		Username string `json:"username"`
		Method   string `json:"auth_method"`
	}
	e.get("/api/v1/session", &who)
	if who.Username != adminUser || who.Method != "basic" {
		t.Errorf("basic whoami %+v", who)
	}
	r := e.do(req{method: "GET", path: "/api/v1/session", bearer: apiKey})
	r.json(t, &who)
	if r.code != 200 || who.Username != "apikey:ci" || who.Method != "bearer" {
		t.Errorf("bearer whoami %d %+v", r.code, who)
	}
	// Unknown endpoint, wrong method.
	r = e.do(req{method: "GET", path: "/api/v1/nope", basic: true})
	if r.code != 404 {
		t.Errorf("unknown endpoint %d", r.code)
	}
	r.errorMessage(t)
	r = e.do(req{method: "PUT", path: "/api/v1/clients", basic: true})
	if r.code != 405 || r.header.Get("Allow") != "GET, HEAD" {
		t.Errorf("PUT clients: %d Allow %q", r.code, r.header.Get("Allow"))
	}
	r.errorMessage(t)
	r = e.do(req{method: "GET", path: "/api/v1/publish", basic: true})
	if r.code != 405 || r.header.Get("Allow") != "POST" {
		t.Errorf("GET publish: %d Allow %q", r.code, r.header.Get("Allow"))
	}
	// Paging parameters.
	for _, q := range []string{"limit=0", "limit=1001", "limit=x", "offset=-1", "offset=y"} {
		r := e.do(req{method: "GET", path: "/api/v1/clients?" + q, basic: true})
		if r.code != 400 {
			t.Errorf("clients?%s: %d", q, r.code)
		}
		r.errorMessage(t)
	}
}

func TestHealthAndReady(t *testing.T) {
	e := start(t, "")
	r := e.do(req{method: "GET", path: "/healthz"})
	if r.code != 200 || !strings.Contains(string(r.body), `"ok"`) {
		t.Fatalf("healthz %d %s", r.code, r.body)
	}
	testutil.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		r := e.do(req{method: "GET", path: "/readyz"})
		if r.code != 200 {
			return fmt.Errorf("readyz %d %s", r.code, r.body)
		}
		return nil
	})
	r = e.do(req{method: "HEAD", path: "/readyz"})
	if r.code != 200 || len(r.body) != 0 {
		t.Errorf("HEAD readyz %d %q", r.code, r.body)
	}
	fail := true
	var mu sync.Mutex
	e.n.HTTP.AddReadyCheck("store", func() error {
		mu.Lock()
		defer mu.Unlock()
		if fail {
			return fmt.Errorf("store not open")
		}
		return nil
	})
	r = e.do(req{method: "GET", path: "/readyz"})
	if r.code != 503 || !strings.Contains(string(r.body), "store not open") {
		t.Errorf("readyz with failing check: %d %s", r.code, r.body)
	}
	mu.Lock()
	fail = false
	mu.Unlock()
	if r := e.do(req{method: "GET", path: "/readyz"}); r.code != 200 {
		t.Errorf("readyz after recovery %d %s", r.code, r.body)
	}
	// Closing an MQTT listener makes the node unready.
	_ = e.n.Listeners[1].Close()
	testutil.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		r := e.do(req{method: "GET", path: "/readyz"})
		if r.code != 503 || !strings.Contains(string(r.body), "ws (closed)") {
			return fmt.Errorf("readyz after closing ws: %d %s", r.code, r.body)
		}
		return nil
	})
}

func TestLoginSessionCSRF(t *testing.T) {
	e := start(t, "")
	c, csrf := e.login()
	u, _ := url.Parse(e.base)
	cookies := c.Jar.Cookies(u)
	if len(cookies) != 1 || cookies[0].Name != "isobar_session" {
		t.Fatalf("cookies %v", cookies)
	}
	// Cookie attributes as sent.
	r := e.do(req{method: "POST", path: "/api/v1/login", body: map[string]string{"username": adminUser, "password": adminPass}})
	sc := r.header.Get("Set-Cookie")
	for _, want := range []string{"HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=28800"} {
		if !strings.Contains(sc, want) {
			t.Errorf("Set-Cookie %q lacks %s", sc, want)
		}
	}
	if r := e.do(req{method: "GET", path: "/api/v1/stats", client: c}); r.code != 200 {
		t.Fatalf("cookie GET %d %s", r.code, r.body)
	}
	kicked := make(chan struct{}, 1)
	mqttClient(t, e.mqtt, "victim", "", true, func() { kicked <- struct{}{} })
	// State change with the cookie but without the CSRF header: refused.
	r = e.do(req{method: "DELETE", path: "/api/v1/clients/victim", client: c})
	if r.code != http.StatusForbidden {
		t.Fatalf("DELETE without CSRF: %d", r.code)
	}
	r.errorMessage(t)
	r = e.do(req{method: "DELETE", path: "/api/v1/clients/victim", client: c, header: map[string]string{"X-Isobar-CSRF": "wrong"}})
	if r.code != http.StatusForbidden {
		t.Fatalf("DELETE with wrong CSRF: %d", r.code)
	}
	select {
	case <-kicked:
		t.Fatal("client kicked without a valid CSRF token")
	default:
	}
	r = e.do(req{method: "DELETE", path: "/api/v1/clients/victim", client: c, header: map[string]string{"X-Isobar-CSRF": csrf}})
	if r.code != http.StatusNoContent {
		t.Fatalf("DELETE with CSRF: %d %s", r.code, r.body)
	}
	select {
	case <-kicked:
	case <-time.After(5 * time.Second):
		t.Fatal("client not disconnected")
	}
	// Logout needs the token too, then the cookie is dead.
	if r := e.do(req{method: "POST", path: "/api/v1/logout", client: c}); r.code != 403 {
		t.Errorf("logout without CSRF %d", r.code)
	}
	if r := e.do(req{method: "POST", path: "/api/v1/logout", client: c, header: map[string]string{"X-Isobar-CSRF": csrf}}); r.code != 204 {
		t.Errorf("logout %d", r.code)
	}
	old := cookies[0].Value
	r = e.do(req{method: "GET", path: "/api/v1/stats", header: map[string]string{"Cookie": "isobar_session=" + old}})
	if r.code != 401 {
		t.Errorf("after logout: %d", r.code)
	}
}

func TestLoginErrors(t *testing.T) {
	e := start(t, "  max_body_size: 4096\n")
	cases := []struct {
		name string
		q    req
		code int
	}{
		{"not json", req{body: "username=admin", contentType: "application/x-www-form-urlencoded"}, 415},
		{"no content type", req{body: `{"username":"admin","password":"x"}`}, 415},
		{"bad json", req{body: `{"username":`, contentType: "application/json"}, 400},
		{"empty", req{body: ``, contentType: "application/json"}, 400},
		{"unknown field", req{body: map[string]string{"username": "admin", "password": "x", "role": "root"}}, 400},
		{"trailing data", req{body: `{"username":"a","password":"b"} {}`, contentType: "application/json"}, 400},
		{"missing password", req{body: map[string]string{"username": "admin"}}, 400},
		{"too large", req{body: `{"username":"` + strings.Repeat("a", 5000) + `","password":"x"}`, contentType: "application/json"}, 413},
		{"wrong password", req{body: map[string]string{"username": "admin", "password": "nope"}}, 401},
		{"unknown user", req{body: map[string]string{"username": "root", "password": "nope"}}, 401},
	}
	for _, c := range cases {
		c.q.method, c.q.path = "POST", "/api/v1/login"
		r := e.do(c.q)
		if r.code != c.code {
			t.Errorf("%s: %d, want %d (%s)", c.name, r.code, c.code, r.body)
			continue
		}
		r.errorMessage(t)
	}
}

func TestFailedAttemptsThrottled(t *testing.T) {
	e := start(t, "")
	var last resp
	for range 12 {
		last = e.do(req{method: "POST", path: "/api/v1/login", body: map[string]string{"username": "admin", "password": "guess"}})
		if last.code == http.StatusTooManyRequests {
			break
		}
	}
	if last.code != http.StatusTooManyRequests || last.header.Get("Retry-After") == "" {
		t.Fatalf("after repeated failures: %d Retry-After %q", last.code, last.header.Get("Retry-After"))
	}
	// Even the right password is refused from that address for a while.
	r := e.do(req{method: "GET", path: "/api/v1/stats", basic: true})
	if r.code != http.StatusTooManyRequests {
		t.Errorf("basic auth while throttled: %d", r.code)
	}
}

func TestInfoStatsListeners(t *testing.T) {
	e := start(t, "")
	sub := mqttClient(t, e.mqtt, "s1", "alice", true, nil)
	waitTok(t, sub.Subscribe("a/#", 1, nil))
	waitTok(t, sub.Publish("a/b", 1, false, "hello"))
	var info struct {
		Node    string `json:"node"`
		Version string `json:"version"`
		Limits  struct {
			MaxQoS int `json:"max_qos"`
		} `json:"limits"`
	}
	e.get("/api/v1/broker", &info)
	if info.Version == "" || info.Limits.MaxQoS != 2 || info.Node == "" {
		t.Errorf("broker info %+v", info)
	}
	testutil.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		var st struct {
			Connections      int            `json:"connections"`
			MessagesReceived uint64         `json:"messages_received"`
			MessagesSent     uint64         `json:"messages_sent"`
			Subscriptions    int            `json:"subscriptions"`
			ByListener       map[string]int `json:"connections_by_listener"`
			Latency          struct {
				Count uint64 `json:"count"`
			} `json:"delivery_latency"`
		}
		e.get("/api/v1/stats", &st)
		if st.Connections != 1 || st.MessagesReceived != 1 || st.MessagesSent != 1 || st.Subscriptions != 1 ||
			st.ByListener["mqtt"] != 1 || st.Latency.Count != 1 {
			return fmt.Errorf("stats %+v", st)
		}
		return nil
	})
	var ls struct {
		Items []struct {
			Name        string `json:"name"`
			Protocol    string `json:"protocol"`
			Address     string `json:"address"`
			Connections int    `json:"connections"`
			Accepted    uint64 `json:"connections_accepted"`
			WSPath      string `json:"ws_path"`
		} `json:"items"`
	}
	e.get("/api/v1/listeners", &ls)
	if len(ls.Items) != 2 || ls.Items[0].Name != "mqtt" || ls.Items[0].Address != e.mqtt || ls.Items[0].Connections != 1 ||
		ls.Items[0].Accepted != 1 || ls.Items[1].Protocol != "ws" || ls.Items[1].WSPath != "/mqtt" {
		t.Errorf("listeners %+v", ls)
	}
	var h struct {
		Interval float64          `json:"interval_seconds"`
		Samples  []map[string]any `json:"samples"`
	}
	e.get("/api/v1/stats/history", &h)
	if h.Interval <= 0 {
		t.Errorf("history %+v", h)
	}
	if r := e.do(req{method: "GET", path: "/api/v1/stats/history?since=yesterday", basic: true}); r.code != 400 {
		t.Errorf("history bad since: %d", r.code)
	}
}

func TestClientsAndSessions(t *testing.T) {
	e := start(t, "")
	mqttClient(t, e.mqtt, "dev/1", "alice", true, nil)
	mqttClient(t, e.mqtt, "dev-2", "bob", false, nil)
	c3 := mqttClient(t, e.mqtt, "other", "alice", true, nil)
	waitTok(t, c3.Subscribe("x/+/y", 1, nil))
	type list struct {
		Total int `json:"total"`
		Items []struct {
			ClientID      string `json:"client_id"`
			Username      string `json:"username"`
			Listener      string `json:"listener"`
			Protocol      string `json:"protocol_version"`
			Subscriptions int    `json:"subscriptions"`
		} `json:"items"`
	}
	ids := func(l list) string {
		var s []string
		for _, it := range l.Items {
			s = append(s, it.ClientID)
		}
		return strings.Join(s, ",")
	}
	cases := map[string]string{
		"":                          "dev-2,dev/1,other",
		"?username=alice":           "dev/1,other",
		"?prefix=dev":               "dev-2,dev/1",
		"?listener=mqtt&prefix=oth": "other",
		"?listener=ws":              "",
		"?limit=2":                  "dev-2,dev/1",
		"?limit=2&offset=2":         "other",
		"?offset=10":                "",
		"?search=BOB":               "dev-2",
	}
	for q, want := range cases {
		var l list
		e.get("/api/v1/clients"+q, &l)
		if got := ids(l); got != want {
			t.Errorf("clients%s = %q, want %q", q, got, want)
		}
	}
	var l list
	e.get("/api/v1/clients?limit=1", &l)
	if l.Total != 3 || len(l.Items) != 1 || l.Items[0].Protocol != "3.1.1" || l.Items[0].Listener != "mqtt" {
		t.Errorf("page %+v", l)
	}
	// Detail, with a client identifier that needs escaping.
	var d struct {
		ClientID string `json:"client_id"`
		Subs     []struct {
			Filter string `json:"filter"`
			QoS    int    `json:"qos"`
		} `json:"subscription_list"`
	}
	e.get("/api/v1/clients/"+url.PathEscape("dev/1"), &d)
	if d.ClientID != "dev/1" {
		t.Errorf("detail %+v", d)
	}
	e.get("/api/v1/clients/other", &d)
	if len(d.Subs) != 1 || d.Subs[0].Filter != "x/+/y" || d.Subs[0].QoS != 1 {
		t.Errorf("detail subs %+v", d)
	}
	r := e.do(req{method: "GET", path: "/api/v1/clients/nobody", basic: true})
	if r.code != 404 {
		t.Errorf("unknown client %d", r.code)
	}
	r.errorMessage(t)
	if r := e.do(req{method: "DELETE", path: "/api/v1/clients/nobody", basic: true}); r.code != 404 {
		t.Errorf("kick unknown %d", r.code)
	}

	// Kick the persistent client: its session stays, offline.
	if r := e.do(req{method: "DELETE", path: "/api/v1/clients/dev-2", bearer: apiKey}); r.code != 204 {
		t.Fatalf("kick %d %s", r.code, r.body)
	}
	testutil.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		var s struct {
			Total int `json:"total"`
			Items []struct {
				ClientID string `json:"client_id"`
				Online   bool   `json:"online"`
			} `json:"items"`
		}
		e.get("/api/v1/sessions?online=false", &s)
		if s.Total != 1 || s.Items[0].ClientID != "dev-2" {
			return fmt.Errorf("offline sessions %+v", s)
		}
		e.get("/api/v1/sessions?online=true&prefix=dev", &s)
		if s.Total != 1 || s.Items[0].ClientID != "dev/1" {
			return fmt.Errorf("online dev sessions %+v", s)
		}
		return nil
	})
	var sd struct {
		ClientID string `json:"client_id"`
		Online   bool   `json:"online"`
	}
	e.get("/api/v1/sessions/dev-2", &sd)
	if sd.ClientID != "dev-2" || sd.Online {
		t.Errorf("session detail %+v", sd)
	}
	if r := e.do(req{method: "GET", path: "/api/v1/sessions/nobody", basic: true}); r.code != 404 {
		t.Errorf("unknown session %d", r.code)
	}
	if r := e.do(req{method: "GET", path: "/api/v1/sessions?online=maybe", basic: true}); r.code != 400 {
		t.Errorf("online=maybe %d", r.code)
	}

	var subs struct {
		Total int `json:"total"`
		Items []struct {
			ClientID string `json:"client_id"`
			Filter   string `json:"filter"`
		} `json:"items"`
	}
	e.get("/api/v1/subscriptions", &subs)
	if subs.Total != 1 || subs.Items[0].ClientID != "other" || subs.Items[0].Filter != "x/+/y" {
		t.Errorf("subscriptions %+v", subs)
	}
	e.get("/api/v1/subscriptions?client_id=dev/1", &subs)
	if subs.Total != 0 || subs.Items == nil {
		t.Errorf("subscriptions of dev/1 %+v", subs)
	}
	e.get("/api/v1/subscriptions?filter=x/%2B/y", &subs)
	if subs.Total != 1 {
		t.Errorf("subscriptions by filter %+v", subs)
	}
}

func TestRetained(t *testing.T) {
	e := start(t, "")
	c := mqttClient(t, e.mqtt, "p", "", true, nil)
	waitTok(t, c.Publish("home/kitchen/temp", 1, true, "21.5"))
	waitTok(t, c.Publish("home/hall/temp", 0, true, "19"))
	waitTok(t, c.Publish("bin", 0, true, []byte{0xff, 0x00, 0xfe}))
	waitTok(t, c.Publish("big", 0, true, strings.Repeat("é", 2000)))
	type item struct {
		Topic    string `json:"topic"`
		QoS      int    `json:"qos"`
		Payload  string `json:"payload"`
		Encoding string `json:"payload_encoding"`
		Size     int    `json:"payload_size"`
		Trunc    bool   `json:"truncated"`
		From     string `json:"from_client_id"`
	}
	var l struct {
		Total int    `json:"total"`
		Items []item `json:"items"`
	}
	testutil.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		e.get("/api/v1/retained", &l)
		if l.Total != 4 {
			return fmt.Errorf("retained %+v", l)
		}
		return nil
	})
	if l.Items[0].Topic != "big" || !l.Items[0].Trunc || l.Items[0].Size != 4000 || len(l.Items[0].Payload) != 1024 {
		t.Errorf("big: %+v", l.Items[0].Topic)
	}
	if l.Items[1].Topic != "bin" || l.Items[1].Encoding != "base64" || l.Items[1].Payload != "/wD+" {
		t.Errorf("bin: %+v", l.Items[1])
	}
	e.get("/api/v1/retained?filter=home/%2B/temp", &l)
	if l.Total != 2 || l.Items[0].Topic != "home/hall/temp" || l.Items[1].Payload != "21.5" || l.Items[1].QoS != 1 || l.Items[1].From != "p" {
		t.Errorf("filtered %+v", l)
	}
	e.get("/api/v1/retained?filter=home/%23&limit=1&offset=1", &l)
	if l.Total != 2 || len(l.Items) != 1 || l.Items[0].Topic != "home/kitchen/temp" {
		t.Errorf("paged %+v", l)
	}
	var one item
	e.get("/api/v1/retained/message?topic=big", &one)
	if one.Trunc || len(one.Payload) != 4000 || one.Encoding != "text" {
		t.Errorf("single message truncated: %d", len(one.Payload))
	}
	for _, q := range []string{"/api/v1/retained?filter=a/%23/b", "/api/v1/retained?filter=a%2B", "/api/v1/retained/message",
		"/api/v1/retained/message?topic=a/%2B", "/api/v1/retained/message?topic=a/%23"} {
		r := e.do(req{method: "GET", path: q, basic: true})
		if r.code != 400 {
			t.Errorf("%s: %d", q, r.code)
			continue
		}
		r.errorMessage(t)
	}
	if r := e.do(req{method: "GET", path: "/api/v1/retained/message?topic=none", basic: true}); r.code != 404 {
		t.Errorf("missing %d", r.code)
	}
	if r := e.do(req{method: "DELETE", path: "/api/v1/retained/message?topic=home/hall/temp", basic: true}); r.code != 204 {
		t.Errorf("delete %d %s", r.code, r.body)
	}
	if r := e.do(req{method: "DELETE", path: "/api/v1/retained/message?topic=home/hall/temp", basic: true}); r.code != 404 {
		t.Errorf("delete again %d", r.code)
	}
	e.get("/api/v1/retained", &l)
	if l.Total != 3 {
		t.Errorf("after delete %d", l.Total)
	}
}

func TestPublish(t *testing.T) {
	e := start(t, "")
	got := make(chan mqtt.Message, 10)
	sub := mqttClient(t, e.mqtt, "sub", "", true, nil)
	waitTok(t, sub.Subscribe("t/#", 2, func(_ mqtt.Client, m mqtt.Message) { got <- m }))

	recv := func() mqtt.Message {
		t.Helper()
		select {
		case m := <-got:
			return m
		case <-time.After(5 * time.Second):
			t.Fatal("message not received")
			return nil
		}
	}
	r := e.do(req{method: "POST", path: "/api/v1/publish", basic: true, body: map[string]any{"topic": "t/a", "payload": "hi", "qos": 1}})
	if r.code != 200 {
		t.Fatalf("publish %d %s", r.code, r.body)
	}
	if m := recv(); m.Topic() != "t/a" || string(m.Payload()) != "hi" || m.Qos() != 1 || m.Retained() {
		t.Errorf("got %s %q qos %d", m.Topic(), m.Payload(), m.Qos())
	}
	r = e.do(req{method: "POST", path: "/api/v1/publish", bearer: apiKey, body: map[string]any{
		"topic": "t/b", "payload": base64.StdEncoding.EncodeToString([]byte{0, 1, 2}), "payload_encoding": "base64", "qos": 2, "retain": true}})
	if r.code != 200 {
		t.Fatalf("publish base64 %d %s", r.code, r.body)
	}
	if m := recv(); !bytes.Equal(m.Payload(), []byte{0, 1, 2}) || m.Qos() != 2 {
		t.Errorf("base64 got %q qos %d", m.Payload(), m.Qos())
	}
	if _, ok := e.n.Server.RetainedMessage("t/b"); !ok {
		t.Error("retain flag ignored")
	}

	bad := []struct {
		body any
		ct   string
		code int
		msg  string
	}{
		{map[string]any{"payload": "x"}, "", 400, "topic"},
		{map[string]any{"topic": "t/+", "payload": "x"}, "", 400, "topic"},
		{map[string]any{"topic": "t/#", "payload": "x"}, "", 400, "topic"},
		{map[string]any{"topic": "$SYS/x", "payload": "x"}, "", 400, "reserved"},
		{map[string]any{"topic": "t", "qos": 3}, "", 400, "qos"},
		{map[string]any{"topic": "t", "qos": -1}, "", 400, "qos"},
		{map[string]any{"topic": "t", "payload": "%%%", "payload_encoding": "base64"}, "", 400, "base64"},
		{map[string]any{"topic": "t", "payload_encoding": "hex"}, "", 400, "payload_encoding"},
		{map[string]any{"topic": "t", "qos": "1"}, "", 400, "invalid JSON"},
		{map[string]any{"topic": "t", "colour": "red"}, "", 400, "unknown field"},
		{map[string]any{"topic": "t", "user_properties": []map[string]string{{"key": "a\u0000", "value": "b"}}}, "", 400, "U+0000"},
		{map[string]any{"topic": "t", "response_topic": "r/#"}, "", 400, "response_topic"},
		{`topic=t`, "text/plain", 415, "Content-Type"},
	}
	for _, b := range bad {
		r := e.do(req{method: "POST", path: "/api/v1/publish", basic: true, body: b.body, contentType: b.ct})
		if r.code != b.code {
			t.Errorf("%v: %d, want %d (%s)", b.body, r.code, b.code, r.body)
			continue
		}
		if msg := r.errorMessage(t); !strings.Contains(msg, b.msg) {
			t.Errorf("%v: error %q lacks %q", b.body, msg, b.msg)
		}
	}
	big := map[string]any{"topic": "t", "payload": strings.Repeat("x", 2<<20)}
	if r := e.do(req{method: "POST", path: "/api/v1/publish", basic: true, body: big}); r.code != 413 {
		t.Errorf("2 MiB body: %d", r.code)
	}
	select {
	case m := <-got:
		t.Errorf("a refused publish was delivered: %s", m.Topic())
	default:
	}
}

// TestPublishV5Properties checks user properties and content type reach
// an MQTT 5 subscriber.
func TestPublishV5Properties(t *testing.T) {
	e := start(t, "")
	u, _ := url.Parse("mqtt://" + e.mqtt)
	got := make(chan *paho.Publish, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cm, err := autopaho.NewConnection(ctx, autopaho.ClientConfig{
		ServerUrls: []*url.URL{u}, KeepAlive: 30, CleanStartOnInitialConnection: true,
		ClientConfig: paho.ClientConfig{ClientID: "v5", OnPublishReceived: []func(paho.PublishReceived) (bool, error){
			func(pr paho.PublishReceived) (bool, error) { got <- pr.Packet; return true, nil }}},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cm.Disconnect(context.Background()); <-cm.Done() }()
	if err := cm.AwaitConnection(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := cm.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "p/#", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	r := e.do(req{method: "POST", path: "/api/v1/publish", basic: true, body: map[string]any{
		"topic": "p/1", "payload": `{"on":true}`, "qos": 1, "content_type": "application/json",
		"user_properties":         []map[string]string{{"key": "k", "value": "v1"}, {"key": "k", "value": "v2"}},
		"message_expiry_interval": 60}})
	if r.code != 200 {
		t.Fatalf("publish %d %s", r.code, r.body)
	}
	select {
	case p := <-got:
		pp := p.Properties
		if string(p.Payload) != `{"on":true}` || pp.ContentType != "application/json" || len(pp.User) != 2 ||
			pp.User[1].Value != "v2" || pp.MessageExpiry == nil || *pp.MessageExpiry > 60 || pp.PayloadFormat == nil || *pp.PayloadFormat != 1 {
			t.Errorf("got %+v props %+v", p, pp)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("not received")
	}
}

func TestConfigRedacted(t *testing.T) {
	e := start(t, "")
	r := e.get("/api/v1/config", nil)
	body := string(r.body)
	if strings.Contains(body, adminHash()) || strings.Contains(body, keyHash(apiKey)) || strings.Contains(body, "argon2id") {
		t.Fatalf("secret in config view: %s", body)
	}
	for _, want := range []string{`"password_hash":"[redacted]"`, `"hash":"[redacted]"`, `"username":"admin"`, `"name":"ci"`, `"listeners":`} {
		if !strings.Contains(body, want) {
			t.Errorf("config view lacks %s: %s", want, body)
		}
	}
}

func TestMetricsEndpoint(t *testing.T) {
	e := start(t, "")
	mqttClient(t, e.mqtt, "m", "", true, nil)
	r := e.do(req{method: "GET", path: "/metrics"})
	if r.code != 200 || !strings.Contains(string(r.body), `isobar_connections{listener="mqtt",protocol_version="3.1.1"} 1`) ||
		!strings.Contains(string(r.body), "go_goroutines") || !strings.Contains(string(r.body), "process_") {
		t.Fatalf("metrics %d %.500s", r.code, r.body)
	}
	e2 := start(t, "  metrics_auth: true\n")
	if r := e2.do(req{method: "GET", path: "/metrics"}); r.code != 401 {
		t.Errorf("metrics_auth: unauthenticated %d", r.code)
	}
	if r := e2.do(req{method: "GET", path: "/metrics", bearer: apiKey}); r.code != 200 {
		t.Errorf("metrics_auth: bearer %d", r.code)
	}
}

func TestStaticAndHeaders(t *testing.T) {
	e := start(t, "")
	r := e.do(req{method: "GET", path: "/"})
	if r.code != 200 || !strings.Contains(string(r.body), "<html") || !strings.HasPrefix(r.header.Get("Content-Type"), "text/html") {
		t.Fatalf("index %d %q", r.code, r.header.Get("Content-Type"))
	}
	for _, h := range []string{"Content-Security-Policy", "X-Content-Type-Options", "X-Frame-Options", "Referrer-Policy"} {
		if r.header.Get(h) == "" {
			t.Errorf("missing %s", h)
		}
	}
	for _, p := range []string{"/app.js", "/app.css"} {
		if r := e.do(req{method: "GET", path: p}); r.code != 200 {
			t.Errorf("%s: %d", p, r.code)
		}
	}
	if r := e.do(req{method: "GET", path: "/nope.js"}); r.code != 404 {
		t.Errorf("missing file %d", r.code)
	}
	if r := e.do(req{method: "POST", path: "/"}); r.code != 405 {
		t.Errorf("POST / %d", r.code)
	}
}

// TestGeneratedAdminPassword: without http.users, a password is generated
// into a file only the broker's user can read, never into the log (which
// only names the file), and works.
func TestGeneratedAdminPassword(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "admin-pw")
	// A stale file with loose permissions is replaced, not reused.
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("old\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	log, n := startLogged(t, fmt.Sprintf("store: {mode: memory}\nhttp: {address: \"127.0.0.1:0\", generated_password_file: %q}\n", path))
	pw := readPasswordFile(t, path)
	if strings.Contains(log.String(), pw) {
		t.Errorf("generated password in the log:\n%s", log.String())
	}
	if !regexp.MustCompile(`generated a password.* username=admin password_file=` + regexp.QuoteMeta(path)).MatchString(log.String()) {
		t.Errorf("the log does not say where the password is:\n%s", log.String())
	}
	e := &env{t: t, n: n, base: "http://" + n.HTTP.Addr().String()}
	r := e.do(req{method: "GET", path: "/api/v1/stats", header: map[string]string{
		"Authorization": "Basic " + base64.StdEncoding.EncodeToString([]byte("admin:"+pw))}})
	if r.code != 200 {
		t.Fatalf("generated password refused: %d %s", r.code, r.body)
	}
	// An unwritable place for the password is an error at start.
	cfg, err := config.Parse([]byte("listeners:\n  - {name: mqtt, protocol: mqtt, address: \"127.0.0.1:0\"}\nstore: {mode: memory}\nsys_interval: 0s\n" +
		fmt.Sprintf("http: {address: \"127.0.0.1:0\", generated_password_file: %q}\n", filepath.Join(path, "under-a-file"))))
	if err != nil {
		t.Fatal(err)
	}
	if n, err := node.Start(cfg, slog.New(slog.DiscardHandler)); err == nil {
		_ = n.Stop(context.Background())
		t.Error("node started without a place for the generated password")
	}
}

// startLogged starts a node (one MQTT listener, no $SYS) from extra
// configuration, logging into the returned buffer; it stops with the test.
func startLogged(t *testing.T, extra string) (*syncBuffer, *node.Node) {
	t.Helper()
	cfg, err := config.Parse([]byte("listeners:\n  - {name: mqtt, protocol: mqtt, address: \"127.0.0.1:0\"}\nsys_interval: 0s\n" + extra))
	if err != nil {
		t.Fatal(err)
	}
	buf := &syncBuffer{}
	n, err := node.Start(cfg, slog.New(slog.NewTextHandler(buf, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Stop(context.Background()) })
	return buf, n
}

// TestDefaultAddressBestEffort: when the default port is taken and no
// address is configured, the node starts without HTTP; an explicit busy
// address is an error.
func TestDefaultAddressBestEffort(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:18083")
	if err != nil {
		t.Skipf("cannot hold the default port for the test: %v", err)
	}
	defer l.Close()
	base := "listeners:\n  - {name: mqtt, protocol: mqtt, address: \"127.0.0.1:0\"}\nstore: {mode: memory}\nsys_interval: 0s\n"
	cfg, err := config.Parse([]byte(base))
	if err != nil {
		t.Fatal(err)
	}
	n, err := node.Start(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("node with busy default HTTP port: %v", err)
	}
	if n.HTTP != nil {
		t.Error("HTTP started on a busy port?")
	}
	_ = n.Stop(context.Background())
	cfg, err = config.Parse([]byte(base + "http: {address: \"127.0.0.1:18083\"}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if n, err := node.Start(cfg, slog.New(slog.DiscardHandler)); err == nil {
		_ = n.Stop(context.Background())
		t.Fatal("explicit busy address accepted")
	}
}

func TestConfigValidation(t *testing.T) {
	base := "listeners:\n  - {name: mqtt, protocol: mqtt, address: \"127.0.0.1:0\"}\n"
	for _, bad := range []string{
		"http: {address: \"nohost\"}",
		"http: {users: [{username: a, password_hash: plain}]}",
		"http: {users: [{username: \"\", password_hash: x}]}",
		"http: {api_keys: [{name: k, hash: \"md5:abc\"}]}",
		"http: {api_keys: [{name: k, hash: \"sha256:abcd\"}]}",
		"http: {tls: {cert_file: a}}",
		"http: {bogus: 1}",
		"sys_interval: -1s",
	} {
		if _, err := config.Parse([]byte(base + bad + "\n")); err == nil {
			t.Errorf("accepted: %s", bad)
		}
	}
	cfg, err := config.Parse([]byte(base))
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.HTTP.Enabled || cfg.HTTP.Address != "" || cfg.SysInterval != 10*time.Second {
		t.Errorf("defaults: %+v sys %v", cfg.HTTP, cfg.SysInterval)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
