package web_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/isobar-mq/isobar/internal/broker"
	"github.com/isobar-mq/isobar/internal/cluster"
	"github.com/isobar-mq/isobar/internal/testutil"
	"github.com/isobar-mq/isobar/internal/web"
)

// fakeCluster is a ClusterSource of three nodes. Drain moves the local
// node to "draining" and waits for release (then "left") or for its
// context (then back to "running", returning the context's error).
type fakeCluster struct {
	mu       sync.Mutex
	st       cluster.Status
	drains   int
	ctxErr   error // the error of the last Drain's context when it ended
	release  chan struct{}
	returned chan struct{} // one value per Drain return
}

func newFakeCluster() *fakeCluster {
	start := time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)
	return &fakeCluster{
		release:  make(chan struct{}),
		returned: make(chan struct{}, 8),
		st: cluster.Status{
			Node: "node-a", State: "running", LocalRoutes: 7, RetainedTombstones: 2,
			Members: []cluster.MemberStatus{
				{Name: "node-a", Addr: "127.0.0.1:7946", State: "alive", Local: true, Start: start, Routes: 7},
				{Name: "node-b", Addr: "127.0.0.2:7946", State: "alive", Start: start, Link: "up", LinkSince: start.Add(time.Minute),
					Routes: 12, QueuedBytes: 2048, Inflight: 3, Forwarded: 1500, Received: 1200, Dropped: 4},
				{Name: "node-c", Addr: "127.0.0.3:7946", State: "suspect", Start: start, Link: "connecting", Routes: 0, Dropped: 9},
			},
		},
	}
}

func (f *fakeCluster) ClusterStatus() cluster.Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := f.st
	st.Members = append([]cluster.MemberStatus(nil), f.st.Members...)
	return st
}

func (f *fakeCluster) setState(s string) {
	f.mu.Lock()
	f.st.State = s
	if s == "left" {
		f.st.Members[0].State = "left"
	}
	f.mu.Unlock()
}

func (f *fakeCluster) Drain(ctx context.Context) error {
	f.mu.Lock()
	f.drains++
	f.st.State = "draining"
	f.mu.Unlock()
	defer func() { f.returned <- struct{}{} }()
	select {
	case <-f.release:
		f.setState("left")
		return nil
	case <-ctx.Done():
		f.mu.Lock()
		f.ctxErr = ctx.Err()
		f.mu.Unlock()
		f.setState("running")
		return fmt.Errorf("drain interrupted: %w", ctx.Err())
	}
}

func (f *fakeCluster) drainCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.drains
}

// clusterBody is GET /api/v1/cluster decoded.
type clusterBody struct {
	cluster.Status
	Drain *struct {
		Running        bool       `json:"running"`
		RequestedBy    string     `json:"requested_by"`
		StartedAt      time.Time  `json:"started_at"`
		FinishedAt     *time.Time `json:"finished_at"`
		TimeoutSeconds float64    `json:"timeout_seconds"`
		Error          string     `json:"error"`
	} `json:"drain"`
}

func (e *env) clusterStatus() clusterBody {
	e.t.Helper()
	var b clusterBody
	e.get("/api/v1/cluster", &b)
	return b
}

// TestClusterNotClustered: without a cluster source the endpoints answer
// 404 with a JSON error saying so, and SetCluster on a nil Server (HTTP
// disabled) is a no-op.
func TestClusterNotClustered(t *testing.T) {
	e := start(t, "")
	for _, m := range []string{"GET", "POST"} {
		path := "/api/v1/cluster"
		if m == "POST" {
			path += "/drain"
		}
		r := e.do(req{method: m, path: path, basic: true})
		if r.code != http.StatusNotFound || !strings.Contains(r.errorMessage(t), "not clustered") {
			t.Errorf("%s %s: %d %s", m, path, r.code, r.body)
		}
	}
	// Unauthenticated: 401 before anything is revealed.
	if r := e.do(req{method: "GET", path: "/api/v1/cluster"}); r.code != http.StatusUnauthorized {
		t.Errorf("unauthenticated GET: %d", r.code)
	}
	var none *web.Server
	none.SetCluster(newFakeCluster()) // must not panic

	// Set, then removed again.
	e.n.HTTP.SetCluster(newFakeCluster())
	if b := e.clusterStatus(); b.Node != "node-a" {
		t.Errorf("node %q", b.Node)
	}
	e.n.HTTP.SetCluster(nil)
	if r := e.do(req{method: "GET", path: "/api/v1/cluster", basic: true}); r.code != http.StatusNotFound {
		t.Errorf("after SetCluster(nil): %d %s", r.code, r.body)
	}
	if r := e.do(req{method: "GET", path: "/readyz"}); strings.Contains(string(r.body), `"cluster"`) {
		t.Errorf("readyz of an unclustered node names the cluster: %s", r.body)
	}
}

// TestClusterAPI: every role reads the status; only admins drain, a
// console session only with its CSRF token; a drain answers 202 at once,
// shows in the status and /readyz, a second one is refused with 409 while
// it runs and after the node left.
func TestClusterAPI(t *testing.T) {
	e := startRoles(t)
	fc := newFakeCluster()
	e.n.HTTP.SetCluster(fc)

	// Status: the fake's fields, under the documented JSON names.
	r := e.do(req{method: "GET", path: "/api/v1/cluster", basic: true})
	if r.code != 200 {
		t.Fatalf("GET: %d %s", r.code, r.body)
	}
	for _, want := range []string{`"node":"node-a"`, `"state":"running"`, `"local_routes":7`, `"retained_tombstones":2`,
		`"name":"node-b"`, `"addr":"127.0.0.2:7946"`, `"link":"up"`, `"queued_bytes":2048`, `"inflight":3`,
		`"forwarded":1500`, `"received":1200`, `"dropped":4`, `"local":true`} {
		if !strings.Contains(string(r.body), want) {
			t.Errorf("status lacks %s: %s", want, r.body)
		}
	}
	if strings.Contains(string(r.body), `"drain"`) {
		t.Errorf("drain info before any drain: %s", r.body)
	}
	var b clusterBody
	r.json(t, &b)
	if len(b.Members) != 3 || b.Members[2].State != "suspect" || b.Members[0].Link != "" {
		t.Errorf("members %+v", b.Members)
	}
	// Every role may read.
	for _, h := range []map[string]string{basicAs("reader"), {"Authorization": "Bearer " + readerKey}, basicAs("pub")} {
		if r := e.do(req{method: "GET", path: "/api/v1/cluster", header: h}); r.code != 200 {
			t.Errorf("GET as %v: %d %s", h, r.code, r.body)
		}
	}
	// Not an admin: 403, and no drain started.
	for _, h := range []map[string]string{basicAs("reader"), {"Authorization": "Bearer " + readerKey}, basicAs("pub"), {"Authorization": "Bearer " + publisherKey}} {
		r := e.do(req{method: "POST", path: "/api/v1/cluster/drain", header: h})
		if r.code != http.StatusForbidden || !strings.Contains(r.errorMessage(t), "admin role") {
			t.Errorf("drain as %v: %d %s", h, r.code, r.body)
		}
	}
	// A console session without the CSRF header: 403.
	c, csrf := e.login()
	if r := e.do(req{method: "POST", path: "/api/v1/cluster/drain", client: c}); r.code != http.StatusForbidden {
		t.Errorf("drain without CSRF: %d %s", r.code, r.body)
	}
	// Wrong methods.
	if r := e.do(req{method: "GET", path: "/api/v1/cluster/drain", basic: true}); r.code != http.StatusMethodNotAllowed || r.header.Get("Allow") != "POST" {
		t.Errorf("GET drain: %d Allow %q", r.code, r.header.Get("Allow"))
	}
	if r := e.do(req{method: "DELETE", path: "/api/v1/cluster", basic: true}); r.code != http.StatusMethodNotAllowed {
		t.Errorf("DELETE cluster: %d", r.code)
	}
	if n := fc.drainCount(); n != 0 {
		t.Fatalf("%d drains started by refused requests", n)
	}

	// The admin's console session, with its CSRF token: 202 at once.
	r = e.do(req{method: "POST", path: "/api/v1/cluster/drain", client: c, header: map[string]string{"X-Isobar-CSRF": csrf}})
	if r.code != http.StatusAccepted || r.header.Get("Location") != "/api/v1/cluster" ||
		!strings.Contains(string(r.body), `"status":"draining"`) || !strings.Contains(string(r.body), `"timeout_seconds":120`) {
		t.Fatalf("drain: %d Location %q %s", r.code, r.header.Get("Location"), r.body)
	}
	testutil.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		b := e.clusterStatus()
		if b.State != "draining" || b.Drain == nil || !b.Drain.Running || b.Drain.RequestedBy != adminUser {
			return fmt.Errorf("state %q drain %+v", b.State, b.Drain)
		}
		return nil
	})
	rz := e.do(req{method: "GET", path: "/readyz"})
	if rz.code != http.StatusServiceUnavailable || !strings.Contains(string(rz.body), "draining") {
		t.Errorf("readyz while draining: %d %s", rz.code, rz.body)
	}
	// A second drain while the first runs: 409, by any admin.
	for _, q := range []req{{basic: true}, {bearer: apiKey}} {
		q.method, q.path = "POST", "/api/v1/cluster/drain"
		if r := e.do(q); r.code != http.StatusConflict || !strings.Contains(r.errorMessage(t), "already in progress") {
			t.Errorf("second drain: %d %s", r.code, r.body)
		}
	}
	close(fc.release)
	testutil.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		b := e.clusterStatus()
		if b.State != "left" || b.Drain == nil || b.Drain.Running || b.Drain.FinishedAt == nil || b.Drain.Error != "" {
			return fmt.Errorf("state %q drain %+v", b.State, b.Drain)
		}
		return nil
	})
	// After leaving: 409 again, and still not ready.
	if r := e.do(req{method: "POST", path: "/api/v1/cluster/drain", bearer: apiKey}); r.code != http.StatusConflict || !strings.Contains(r.errorMessage(t), "already left") {
		t.Errorf("drain after leaving: %d %s", r.code, r.body)
	}
	if rz := e.do(req{method: "GET", path: "/readyz"}); rz.code != http.StatusServiceUnavailable || !strings.Contains(string(rz.body), "left") {
		t.Errorf("readyz after leaving: %d %s", rz.code, rz.body)
	}
	if n := fc.drainCount(); n != 1 {
		t.Errorf("%d drains, want 1", n)
	}
}

// startBare starts a web.Server on its own (no node) with opts, an
// administrator and the ci API key. stop closes it (once; again at the
// end of the test).
func startBare(t *testing.T, opts web.Options) (h *web.Server, e *env, stop func(context.Context)) {
	t.Helper()
	srv := broker.New(broker.Options{}, nil, nil)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
	opts.Broker = srv
	opts.Config = web.Config{Enabled: true, Address: "127.0.0.1:0",
		Users:   []web.User{{Username: adminUser, PasswordHash: adminHash()}},
		APIKeys: []web.APIKey{{Name: "ci", Hash: keyHash(apiKey)}}}
	h, err := web.Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stop = func(ctx context.Context) { once.Do(func() { _ = h.Close(ctx) }) }
	t.Cleanup(func() { stop(context.Background()) })
	return h, &env{t: t, base: "http://" + h.Addr().String()}, stop
}

// TestClusterDrainTimeout: a drain that does not finish within
// Options.DrainTimeout is cancelled, reported as failed in the status, and
// may be requested again.
func TestClusterDrainTimeout(t *testing.T) {
	h, e, _ := startBare(t, web.Options{DrainTimeout: 200 * time.Millisecond})
	fc := newFakeCluster()
	h.SetCluster(fc)
	r := e.do(req{method: "POST", path: "/api/v1/cluster/drain", bearer: apiKey})
	if r.code != http.StatusAccepted || !strings.Contains(string(r.body), `"timeout_seconds":0.2`) {
		t.Fatalf("drain: %d %s", r.code, r.body)
	}
	select {
	case <-fc.returned:
	case <-time.After(5 * time.Second):
		t.Fatal("Drain not cancelled after its timeout")
	}
	testutil.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		b := e.clusterStatus()
		if b.State != "running" || b.Drain == nil || b.Drain.Running || !strings.Contains(b.Drain.Error, "did not finish within 200ms") {
			return fmt.Errorf("state %q drain %+v", b.State, b.Drain)
		}
		return nil
	})
	fc.mu.Lock()
	ctxErr := fc.ctxErr
	fc.mu.Unlock()
	if ctxErr != context.DeadlineExceeded {
		t.Errorf("Drain's context ended with %v", ctxErr)
	}
	// A failed drain may be retried.
	if r := e.do(req{method: "POST", path: "/api/v1/cluster/drain", bearer: apiKey}); r.code != http.StatusAccepted {
		t.Errorf("retry: %d %s", r.code, r.body)
	}
	// The retried drain runs in the background: wait for it to start.
	testutil.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if n := fc.drainCount(); n != 2 {
			return fmt.Errorf("%d drains, want 2", n)
		}
		return nil
	})
}

// TestClusterDrainStoppedByClose: closing the HTTP server cancels a drain
// it started and waits for it (no goroutine outlives Close; TestMain
// checks for leaks).
func TestClusterDrainStoppedByClose(t *testing.T) {
	h, e, stop := startBare(t, web.Options{DrainTimeout: time.Hour})
	fc := newFakeCluster()
	h.SetCluster(fc)
	if r := e.do(req{method: "POST", path: "/api/v1/cluster/drain", bearer: apiKey}); r.code != http.StatusAccepted {
		t.Fatalf("drain: %d %s", r.code, r.body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	began := time.Now()
	stop(ctx)
	if d := time.Since(began); d > 4*time.Second {
		t.Errorf("Close took %v", d)
	}
	select {
	case <-fc.returned:
	default:
		t.Fatal("Close returned before the drain it started")
	}
	fc.mu.Lock()
	defer fc.mu.Unlock()
	if fc.ctxErr != context.Canceled {
		t.Errorf("Drain's context ended with %v", fc.ctxErr)
	}
}

// routeFake adds routes to the fake cluster.
type routeFake struct{ *fakeCluster }

func (r routeFake) ClusterRoutes(node string) ([]string, bool) {
	switch node {
	case "node-a":
		return []string{"a/#", "b/+"}, true
	case "node-b":
		return []string{"$share/g/x", "c/1", "d/2"}, true
	}
	return nil, false
}

// TestClusterRoutesAPI: a node's advertised filters, this node's by
// default; unknown node 404; limit bounded; a source without routes 501.
func TestClusterRoutesAPI(t *testing.T) {
	e := start(t, "")
	e.n.HTTP.SetCluster(newFakeCluster())
	if r := e.do(req{method: "GET", path: "/api/v1/cluster/routes", basic: true}); r.code != http.StatusNotImplemented {
		t.Errorf("without routes: %d %s", r.code, r.body)
	}
	e.n.HTTP.SetCluster(routeFake{newFakeCluster()})
	var b struct {
		Node   string   `json:"node"`
		Total  int      `json:"total"`
		Routes []string `json:"routes"`
	}
	r := e.do(req{method: "GET", path: "/api/v1/cluster/routes", basic: true})
	r.json(t, &b)
	if r.code != 200 || b.Node != "node-a" || b.Total != 2 || len(b.Routes) != 2 {
		t.Errorf("own routes: %d %s", r.code, r.body)
	}
	r = e.do(req{method: "GET", path: "/api/v1/cluster/routes?node=node-b&limit=2", basic: true})
	r.json(t, &b)
	if r.code != 200 || b.Total != 3 || len(b.Routes) != 2 || b.Routes[0] != "$share/g/x" {
		t.Errorf("node-b limited: %d %s", r.code, r.body)
	}
	for _, q := range []string{"?node=nope", "?limit=0", "?limit=x", "?limit=100001"} {
		r := e.do(req{method: "GET", path: "/api/v1/cluster/routes" + q, basic: true})
		if r.code != http.StatusNotFound && r.code != http.StatusBadRequest {
			t.Errorf("%s: %d %s", q, r.code, r.body)
		}
	}
	if r := e.do(req{method: "GET", path: "/api/v1/cluster/routes"}); r.code != http.StatusUnauthorized {
		t.Errorf("unauthenticated: %d", r.code)
	}
}
