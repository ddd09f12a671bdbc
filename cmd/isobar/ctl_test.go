package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/isobar-mq/isobar/internal/auth"
	"github.com/isobar-mq/isobar/internal/broker"
	"github.com/isobar-mq/isobar/internal/cluster"
	"github.com/isobar-mq/isobar/internal/web"
)

const (
	ctlAdminKey  = "isb_ctl_admin_0123456789abcdefghijklmnopq"
	ctlReaderKey = "isb_ctl_reader_0123456789abcdefghijklmnop"
	ctlUser      = "ops"
	ctlPassword  = "ctl test password"
)

// ctlCluster is a fake cluster of two nodes. Drain moves the node to
// "draining", then to "left" after delay, or fails with fail.
type ctlCluster struct {
	mu     sync.Mutex
	st     cluster.Status
	delay  time.Duration
	fail   error
	drains int
}

func newCtlCluster() *ctlCluster {
	return &ctlCluster{delay: 300 * time.Millisecond, st: cluster.Status{Node: "alpha", State: "running", LocalRoutes: 5, Members: []cluster.MemberStatus{
		{Name: "alpha", Addr: "127.0.0.1:7946", State: "alive", Local: true, Routes: 5},
		// A hostile peer name: terminal escapes must not reach the screen.
		{Name: "beta\x1b[2J", Addr: "127.0.0.2:7946", State: "alive", Link: "up", Routes: 9, QueuedBytes: 512,
			Inflight: 2, Forwarded: 31337, Received: 4242, Dropped: 7},
	}}}
}

func (f *ctlCluster) ClusterStatus() cluster.Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := f.st
	st.Members = append([]cluster.MemberStatus(nil), f.st.Members...)
	return st
}

func (f *ctlCluster) Drain(ctx context.Context) error {
	f.mu.Lock()
	f.drains++
	f.st.State = "draining"
	delay, fail := f.delay, f.fail
	f.mu.Unlock()
	select {
	case <-time.After(delay):
	case <-ctx.Done():
		return ctx.Err()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if fail != nil {
		f.st.State = "running"
		return fail
	}
	f.st.State = "left"
	return nil
}

func sha(k string) string {
	s := sha256.Sum256([]byte(k))
	return "sha256:" + hex.EncodeToString(s[:])
}

var ctlHash = sync.OnceValue(func() string {
	h, err := auth.HashPassword(auth.SchemeArgon2id, []byte(ctlPassword))
	if err != nil {
		panic(err)
	}
	return h
})

// startAPI serves the real HTTP API of a node without MQTT listeners,
// clustered with fc (nil: not clustered); it returns its base URL.
func startAPI(t *testing.T, fc web.ClusterSource) string {
	t.Helper()
	b := broker.New(broker.Options{}, nil, nil)
	h, err := web.Start(web.Options{Broker: b, Config: web.Config{Enabled: true, Address: "127.0.0.1:0",
		Users: []web.User{{Username: ctlUser, PasswordHash: ctlHash()}},
		APIKeys: []web.APIKey{{Name: "admin", Hash: sha(ctlAdminKey)},
			{Name: "reader", Hash: sha(ctlReaderKey), Role: "read"}}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = h.Close(ctx)
		_ = b.Shutdown(ctx)
	})
	if fc != nil {
		h.SetCluster(fc)
	}
	return "http://" + h.Addr().String()
}

func runCtl(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	t.Setenv("ISOBAR_API_KEY", "")
	t.Setenv("ISOBAR_PASSWORD", "")
	var o, e bytes.Buffer
	code = run(append([]string{"ctl"}, args...), strings.NewReader(""), &o, &e)
	return code, o.String(), e.String()
}

// TestCtlClusterStatus: the table shows this node's summary and one row
// per member with its counters, whatever the flag order and whether an
// API key or a user's password is given; --json prints the API's answer.
// Names from the network are printed without their control characters.
func TestCtlClusterStatus(t *testing.T) {
	url := startAPI(t, newCtlCluster())
	for _, args := range [][]string{
		{"--url", url, "--api-key", ctlReaderKey, "cluster", "status"},
		{"cluster", "status", "--url", url + "/", "--user", ctlUser, "--password", ctlPassword},
		{"cluster", "--api-key", ctlAdminKey, "status", "--url=" + url},
	} {
		code, out, errOut := runCtl(t, args...)
		if code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, errOut)
		}
		for _, want := range []string{"node:     alpha (running)", "members:  2 alive of 2; links up: 1 of 1", "routes:   5 local",
			"NAME", "FORWARDED", "alpha (this node)", "beta?[2J", "127.0.0.2:7946", "up", "512", "31337", "4242"} {
			if !strings.Contains(out, want) {
				t.Errorf("%v: output lacks %q:\n%s", args, want, out)
			}
		}
		if strings.Contains(out, "\x1b") {
			t.Errorf("%v: an escape character reached the output", args)
		}
	}
	code, out, errOut := runCtl(t, "--url", url, "--api-key", ctlReaderKey, "--json", "cluster", "status")
	if code != 0 {
		t.Fatalf("--json: exit %d: %s", code, errOut)
	}
	var st cluster.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil || st.Node != "alpha" || len(st.Members) != 2 || st.Members[1].Forwarded != 31337 {
		t.Errorf("--json: %v %+v from %s", err, st, out)
	}
	// Not clustered: 1, and the node's answer says why.
	plain := startAPI(t, nil)
	if code, _, errOut := runCtl(t, "--url", plain, "--api-key", ctlAdminKey, "cluster", "status"); code != 1 || !strings.Contains(errOut, "not clustered") {
		t.Errorf("unclustered node: exit %d: %s", code, errOut)
	}
}

// TestCtlDrain: drain asks the node to drain and waits until it has left
// (exit 0); a failed drain, a second drain and a read-only key exit 1 with
// the reason; --timeout bounds the wait.
func TestCtlDrain(t *testing.T) {
	fc := newCtlCluster()
	url := startAPI(t, fc)
	code, out, errOut := runCtl(t, "--url", url, "--api-key", ctlAdminKey, "drain")
	if code != 0 || !strings.Contains(out, "drain of node alpha started") || !strings.Contains(out, "node alpha has left the cluster") {
		t.Fatalf("drain: exit %d\nstdout %s\nstderr %s", code, out, errOut)
	}
	fc.mu.Lock()
	drains := fc.drains
	fc.mu.Unlock()
	if drains != 1 {
		t.Errorf("%d drains", drains)
	}
	// The node has left: a second drain is refused (409).
	code, _, errOut = runCtl(t, "--url", url, "--api-key", ctlAdminKey, "cluster", "drain")
	if code != 1 || !strings.Contains(errOut, "409") || !strings.Contains(errOut, "already left") {
		t.Errorf("second drain: exit %d: %s", code, errOut)
	}

	// A drain that fails: 1, with the node's reason.
	fc2 := newCtlCluster()
	fc2.fail = errors.New("peer beta unreachable")
	url2 := startAPI(t, fc2)
	code, _, errOut = runCtl(t, "--url", url2, "--api-key", ctlAdminKey, "drain")
	if code != 1 || !strings.Contains(errOut, "drain of node alpha failed: peer beta unreachable") {
		t.Errorf("failing drain: exit %d: %s", code, errOut)
	}
	// The read-only key may not drain.
	code, _, errOut = runCtl(t, "--url", url2, "--api-key", ctlReaderKey, "drain")
	if code != 1 || !strings.Contains(errOut, "403") || !strings.Contains(errOut, "admin role") {
		t.Errorf("reader drain: exit %d: %s", code, errOut)
	}
	// A slow drain outlasts --timeout: 1, saying so.
	fc3 := newCtlCluster()
	fc3.delay = 10 * time.Second
	url3 := startAPI(t, fc3)
	began := time.Now()
	code, _, errOut = runCtl(t, "--url", url3, "--api-key", ctlAdminKey, "drain", "--timeout", "700ms")
	if code != 1 || !strings.Contains(errOut, "has not left the cluster after 700ms") {
		t.Errorf("slow drain: exit %d: %s", code, errOut)
	}
	if d := time.Since(began); d > 5*time.Second {
		t.Errorf("--timeout 700ms took %v", d)
	}
	// --timeout 0: start and return.
	fc4 := newCtlCluster()
	fc4.delay = 10 * time.Second
	url4 := startAPI(t, fc4)
	if code, out, errOut := runCtl(t, "--url", url4, "--api-key", ctlAdminKey, "drain", "--timeout", "0"); code != 0 || !strings.Contains(out, "started") {
		t.Errorf("--timeout 0: exit %d: %s %s", code, out, errOut)
	}
}

// TestCtlAuthFailure: a wrong key, a wrong password or none at all exit 1
// with the node's 401 and a hint; nothing is printed on stdout.
func TestCtlAuthFailure(t *testing.T) {
	url := startAPI(t, newCtlCluster())
	for _, args := range [][]string{
		{"--api-key", "isb_wrong_0123456789abcdefghijklmnopqrstu"},
		{"--user", ctlUser, "--password", "wrong"},
		{},
	} {
		code, out, errOut := runCtl(t, append(append([]string{"--url", url}, args...), "cluster", "status")...)
		if code != 1 || !strings.Contains(errOut, "401") || !strings.Contains(errOut, "--api-key") || out != "" {
			t.Errorf("%v: exit %d stdout %q stderr %s", args, code, out, errOut)
		}
	}
	// The key from the environment.
	t.Setenv("ISOBAR_API_KEY", ctlReaderKey)
	var o, e bytes.Buffer
	if code := run([]string{"ctl", "--url", url, "cluster", "status"}, strings.NewReader(""), &o, &e); code != 0 {
		t.Errorf("key from $ISOBAR_API_KEY: exit %d: %s", code, e.String())
	}
}

// TestCtlUsage: bad command lines exit 2 with the usage; an unreachable
// node or something that is not Isobar's API exits 1.
func TestCtlUsage(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"cluster"},
		{"cluster", "nodes"},
		{"--bogus", "cluster", "status"},
		{"--url", "ftp://127.0.0.1/", "cluster", "status"},
		{"--url", "127.0.0.1:18083", "cluster", "status"},
		{"--api-key", "k", "--user", "u", "--password", "p", "cluster", "status"},
		{"--user", "u", "cluster", "status"},
		{"--password", "p", "cluster", "status"},
		{"--timeout", "-1s", "drain"},
	} {
		code, _, errOut := runCtl(t, args...)
		if code != 2 || !strings.Contains(errOut, "Usage:") {
			t.Errorf("%q: exit %d: %s", args, code, errOut)
		}
	}
	if code, out, _ := runCtl(t, "-h"); code != 0 || !strings.Contains(out, "cluster status") {
		t.Errorf("-h: exit %d: %s", code, out)
	}
	// Nothing listens there.
	l := httptest.NewServer(http.NotFoundHandler())
	dead := l.URL
	l.Close()
	if code, _, errOut := runCtl(t, "--url", dead, "--api-key", ctlAdminKey, "cluster", "status"); code != 1 || !strings.Contains(errOut, "cannot reach") {
		t.Errorf("unreachable: exit %d: %s", code, errOut)
	}
	// Not Isobar: a plain-text 404.
	other := httptest.NewServer(http.NotFoundHandler())
	defer other.Close()
	if code, _, errOut := runCtl(t, "--url", other.URL, "--api-key", ctlAdminKey, "cluster", "status"); code != 1 || !strings.Contains(errOut, "is --url right?") {
		t.Errorf("not isobar: exit %d: %s", code, errOut)
	}
}
