package web_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"go.uber.org/goleak"

	"github.com/isobar-mq/isobar/internal/auth"
	"github.com/isobar-mq/isobar/internal/node"
	"github.com/isobar-mq/isobar/internal/testutil"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const (
	adminUser = "admin"
	adminPass = "correct horse battery staple"
	apiKey    = "isb_test_0123456789abcdefghijklmnopqrstuv"
)

// adminHash is computed once: argon2id takes tens of milliseconds.
var adminHash = sync.OnceValue(func() string {
	h, err := auth.HashPassword(auth.SchemeArgon2id, []byte(adminPass))
	if err != nil {
		panic(err)
	}
	return h
})

func keyHash(k string) string {
	s := sha256.Sum256([]byte(k))
	return "sha256:" + hex.EncodeToString(s[:])
}

// nodeConfig is a node with an MQTT listener, an HTTP listener on a free
// port, one administrator and one API key. extra is appended to the http
// section.
func nodeConfig(extraHTTP string) string {
	return fmt.Sprintf(`listeners:
  - {name: mqtt, protocol: mqtt, address: "127.0.0.1:0"}
  - {name: ws, protocol: ws, address: "127.0.0.1:0"}
store: {mode: memory}
sys_interval: 0s
http:
  address: "127.0.0.1:0"
  users:
    - {username: %s, password_hash: "%s"}
  api_keys:
    - {name: ci, hash: "%s"}
%s`, adminUser, adminHash(), keyHash(apiKey), extraHTTP)
}

type env struct {
	t    *testing.T
	n    *node.Node
	base string // http://127.0.0.1:port
	mqtt string // MQTT address
}

func start(t *testing.T, extraHTTP string) *env {
	t.Helper()
	return startWith(t, "", extraHTTP)
}

// startWith is start with top-level configuration (e.g. an mqtt: section)
// appended too.
func startWith(t *testing.T, topLevel, extraHTTP string) *env {
	t.Helper()
	n := testutil.RunNode(t, nodeConfig(extraHTTP)+topLevel)
	if n.HTTP == nil {
		t.Fatal("HTTP listener not started")
	}
	return &env{t: t, n: n, base: "http://" + n.HTTP.Addr().String(), mqtt: testutil.Addr(t, n, "mqtt")}
}

// req describes one HTTP request.
type req struct {
	method, path string
	body         any // string (sent as is) or value (JSON)
	contentType  string
	basic        bool // admin Basic auth
	bearer       string
	header       map[string]string
	host         string // Host header, when not the listener's address
	client       *http.Client
}

type resp struct {
	code   int
	header http.Header
	body   []byte
}

func (r resp) json(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decoding %s: %v", r.body, err)
	}
}

// errorMessage returns the "error" field of a JSON error body, failing
// the test when the body is not one.
func (r resp) errorMessage(t *testing.T) string {
	t.Helper()
	var e struct {
		Error string `json:"error"`
	}
	if err := json.Unmarshal(r.body, &e); err != nil || e.Error == "" {
		t.Fatalf("not a JSON error body (%d): %q", r.code, r.body)
	}
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("error Content-Type %q", ct)
	}
	return e.Error
}

func (e *env) do(q req) resp {
	e.t.Helper()
	var body io.Reader
	ct := q.contentType
	switch b := q.body.(type) {
	case nil:
	case string:
		body = strings.NewReader(b)
	case []byte:
		body = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			e.t.Fatal(err)
		}
		body = bytes.NewReader(j)
		if ct == "" {
			ct = "application/json"
		}
	}
	r, err := http.NewRequest(q.method, e.base+q.path, body)
	if err != nil {
		e.t.Fatal(err)
	}
	if ct != "" {
		r.Header.Set("Content-Type", ct)
	}
	if q.basic {
		r.SetBasicAuth(adminUser, adminPass)
	}
	if q.bearer != "" {
		r.Header.Set("Authorization", "Bearer "+q.bearer)
	}
	for k, v := range q.header {
		r.Header[k] = []string{v} // as spelt: servers must not care
	}
	if q.host != "" {
		r.Host = q.host
	}
	c := q.client
	if c == nil {
		c = &http.Client{Timeout: 10 * time.Second}
	}
	res, err := c.Do(r)
	if err != nil {
		e.t.Fatalf("%s %s: %v", q.method, q.path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp{code: res.StatusCode, header: res.Header, body: b}
}

// get is an authenticated (Basic) GET decoding the JSON answer into v.
func (e *env) get(path string, v any) resp {
	e.t.Helper()
	r := e.do(req{method: "GET", path: path, basic: true})
	if r.code != http.StatusOK {
		e.t.Fatalf("GET %s: %d %s", path, r.code, r.body)
	}
	if v != nil {
		r.json(e.t, v)
	}
	return r
}

// login returns a client holding the session cookie, and the CSRF token.
func (e *env) login() (*http.Client, string) {
	e.t.Helper()
	return e.loginAs(adminUser)
}

// loginAs signs in as user (whose password is adminPass).
func (e *env) loginAs(user string) (*http.Client, string) {
	e.t.Helper()
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, Timeout: 10 * time.Second}
	r := e.do(req{method: "POST", path: "/api/v1/login", body: map[string]string{"username": user, "password": adminPass}, client: c})
	if r.code != http.StatusOK {
		e.t.Fatalf("login: %d %s", r.code, r.body)
	}
	var s struct {
		CSRF string `json:"csrf_token"`
	}
	r.json(e.t, &s)
	if s.CSRF == "" {
		e.t.Fatal("no csrf_token")
	}
	return c, s.CSRF
}

func mqttClient(t *testing.T, addr, id, user string, clean bool, onLost func()) mqtt.Client {
	t.Helper()
	o := mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).SetCleanSession(clean).
		SetAutoReconnect(false).SetProtocolVersion(4).SetUsername(user).
		SetConnectionLostHandler(func(mqtt.Client, error) {
			if onLost != nil {
				onLost()
			}
		})
	c := mqtt.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("connect %s: %v", id, tok.Error())
	}
	t.Cleanup(func() {
		if c.IsConnected() {
			c.Disconnect(50)
		}
	})
	return c
}

func waitTok(t *testing.T, tok mqtt.Token) {
	t.Helper()
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("mqtt: %v", tok.Error())
	}
}

// clientFrom is an HTTP client whose connections come from the loopback
// address ip (e.g. "127.0.0.2"): another source, as far as the throttle
// can tell.
func clientFrom(t *testing.T, ip string) *http.Client {
	t.Helper()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	tr := &http.Transport{DialContext: d.DialContext, MaxIdleConnsPerHost: 64}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 20 * time.Second}
}
