package clustertest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Options configure StartCluster. The zero value is a plain cluster (or,
// with n = 1, a single node without a cluster section).
type Options struct {
	// Clustered writes a cluster: section even for a single node; with
	// more than one node it is always written.
	Clustered bool
	// Standalone starts n independent nodes without a cluster: section
	// (harness checks, comparisons).
	Standalone bool
	// ProxyListener adds, on every node, a listener "proxied" that
	// requires the PROXY protocol (for HAProxy in front of the nodes).
	ProxyListener bool
	// ExtraConfig is YAML appended to every node's configuration (keys
	// the harness does not write itself, e.g. "mqtt:\n  max_inflight: 50\n").
	ExtraConfig string
	// StartTimeout bounds the wait for a node (and the cluster) to be
	// ready. Default 60 s.
	StartTimeout time.Duration
	// LogLevel is the brokers' log.level (default info).
	LogLevel string
}

// LogsEnv, when set, prints the brokers' logs at the end of every test,
// not only of failed ones.
const LogsEnv = "ISOBAR_CLUSTERTEST_LOGS"

// Node states as the harness knows them.
const (
	stateDown = iota
	stateRunning
	statePaused
)

// Node is one broker process (and what survives its restarts: name,
// addresses, data directory).
type Node struct {
	Name    string
	Index   int
	IP      string // its own loopback address, 127.0.0.(10+Index+1)
	MQTT    string // host:port of the plain MQTT listener
	Proxied string // host:port of the PROXY protocol listener ("" unless Options.ProxyListener)
	HTTP    string // host:port of the HTTP API
	Bind    string // cluster.bind host:port ("" when not clustered)
	DataDir string
	Config  string // path of its configuration file
	LogFile string // stdout and stderr of every run, appended

	cmd   *exec.Cmd
	done  chan struct{} // closed when the current process has been reaped
	err   error         // its exit status
	state int
	runs  int
}

// Cluster is a set of broker processes started by StartCluster. Its
// methods are called from the test goroutine (the checker's goroutines
// only read addresses).
type Cluster struct {
	t         testing.TB
	bin       string
	opts      Options
	clustered bool
	dir       string
	secret    string
	apiKey    string
	Nodes     []*Node

	mu       sync.Mutex
	split    *splitState // nil when no nft table is installed
	noStatus bool        // /api/v1/cluster answered 404: the API helper has not landed
}

// N is the number of nodes.
func (c *Cluster) N() int { return len(c.Nodes) }

// Addr is node i's MQTT host:port (i from 0).
func (c *Cluster) Addr(i int) string { return c.Nodes[i].MQTT }

// ProxiedAddr is node i's PROXY protocol listener.
func (c *Cluster) ProxiedAddr(i int) string { return c.Nodes[i].Proxied }

// HTTPAddr is node i's HTTP host:port.
func (c *Cluster) HTTPAddr(i int) string { return c.Nodes[i].HTTP }

// ClusterAddr is node i's cluster.bind host:port.
func (c *Cluster) ClusterAddr(i int) string { return c.Nodes[i].Bind }

// APIKey is a bearer token with the admin role on every node's API.
func (c *Cluster) APIKey() string { return c.apiKey }

// Running reports whether node i's process is running (not paused).
func (c *Cluster) Running(i int) bool { return c.Nodes[i].state == stateRunning }

// Logs returns everything node i wrote so far, all runs.
func (c *Cluster) Logs(i int) string {
	b, _ := os.ReadFile(c.Nodes[i].LogFile)
	return string(b)
}

// StartCluster starts n broker processes, node i (0-based) named
// "n<i+1>" on 127.0.0.(11+i), and waits until each accepts MQTT
// connections and, when clustered, reports every node alive in
// /api/v1/cluster (when that endpoint exists). Everything is killed at the
// end of the test; logs are printed if the test failed.
func StartCluster(t testing.TB, n int, opts Options) *Cluster {
	t.Helper()
	if n < 1 || n > 200 {
		t.Fatalf("StartCluster: %d nodes", n)
	}
	if opts.StartTimeout <= 0 {
		opts.StartTimeout = 60 * time.Second
	}
	if opts.LogLevel == "" {
		opts.LogLevel = "info"
	}
	c := &Cluster{t: t, bin: BuildIsobar(t), opts: opts, clustered: opts.Clustered || (n > 1 && !opts.Standalone), dir: t.TempDir()}
	c.secret = randomToken(32)
	c.apiKey = randomToken(32)
	if c.clustered {
		if err := os.WriteFile(filepath.Join(c.dir, "cluster.key"), []byte(c.secret+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		nd := &Node{Name: fmt.Sprintf("n%d", i+1), Index: i, IP: fmt.Sprintf("127.0.0.%d", 11+i)}
		nd.MQTT = freeAddr(t, nd.IP, false)
		if opts.ProxyListener {
			nd.Proxied = freeAddr(t, nd.IP, false)
		}
		nd.HTTP = freeAddr(t, nd.IP, false)
		if c.clustered {
			nd.Bind = freeAddr(t, nd.IP, true)
		}
		nd.DataDir = filepath.Join(c.dir, nd.Name, "data")
		nd.Config = filepath.Join(c.dir, nd.Name, "isobar.yaml")
		nd.LogFile = filepath.Join(c.dir, nd.Name+".log")
		if err := os.MkdirAll(nd.DataDir, 0o700); err != nil {
			t.Fatal(err)
		}
		c.Nodes = append(c.Nodes, nd)
	}
	for _, nd := range c.Nodes {
		if err := os.WriteFile(nd.Config, []byte(c.config(nd)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(c.cleanup)
	for _, nd := range c.Nodes {
		c.spawn(nd)
	}
	for i := range c.Nodes {
		c.waitPort(i, opts.StartTimeout)
	}
	c.WaitConverged(opts.StartTimeout)
	return c
}

// config renders node nd's configuration file.
func (c *Cluster) config(nd *Node) string {
	var b strings.Builder
	sum := sha256.Sum256([]byte(c.apiKey))
	fmt.Fprintf(&b, "node_name: %s\n", nd.Name)
	fmt.Fprintf(&b, "log: {level: %s, format: text}\n", c.opts.LogLevel)
	b.WriteString("shutdown_timeout: 5s\n")
	b.WriteString("listeners:\n")
	fmt.Fprintf(&b, "  - {name: mqtt, protocol: mqtt, address: %q}\n", nd.MQTT)
	if nd.Proxied != "" {
		fmt.Fprintf(&b, "  - {name: proxied, protocol: mqtt, address: %q, proxy_protocol: true}\n", nd.Proxied)
	}
	b.WriteString("auth: {allow_anonymous: true}\n")
	fmt.Fprintf(&b, "http:\n  address: %q\n  api_keys:\n    - {name: harness, hash: \"sha256:%s\"}\n", nd.HTTP, hex.EncodeToString(sum[:]))
	fmt.Fprintf(&b, "store: {mode: pebble, data_dir: %q}\n", nd.DataDir)
	if c.clustered {
		b.WriteString("cluster:\n")
		fmt.Fprintf(&b, "  bind: %q\n", nd.Bind)
		b.WriteString("  seeds:")
		seeds := 0
		for _, o := range c.Nodes {
			if o != nd {
				fmt.Fprintf(&b, "\n    - %q", o.Bind)
				seeds++
			}
		}
		if seeds == 0 {
			b.WriteString(" []")
		}
		fmt.Fprintf(&b, "\n  secret_file: %q\n", filepath.Join(c.dir, "cluster.key"))
	}
	b.WriteString(c.opts.ExtraConfig)
	return b.String()
}

func (c *Cluster) spawn(nd *Node) {
	t := c.t
	t.Helper()
	logf, err := os.OpenFile(nd.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	nd.runs++
	fmt.Fprintf(logf, "===== clustertest: %s run %d at %s =====\n", nd.Name, nd.runs, time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(c.bin, "serve", "--config", nd.Config)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = filepath.Dir(nd.Config)
	// Die with the test binary, whatever happens to it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		_ = logf.Close()
		t.Fatalf("starting %s: %v", nd.Name, err)
	}
	nd.cmd, nd.state, nd.err = cmd, stateRunning, nil
	done := make(chan struct{})
	nd.done = done
	go func() {
		err := cmd.Wait()
		_ = logf.Close()
		nd.err = err
		close(done)
	}()
}

// exited reports whether node nd's current process has exited.
func (nd *Node) exited() bool {
	if nd.done == nil {
		return true
	}
	select {
	case <-nd.done:
		return true
	default:
		return false
	}
}

// waitPort waits until node i accepts TCP connections on its MQTT port.
func (c *Cluster) waitPort(i int, total time.Duration) {
	c.t.Helper()
	nd := c.Nodes[i]
	deadline := time.Now().Add(total)
	for {
		if nd.exited() {
			c.t.Fatalf("%s exited while starting (%v); log:\n%s", nd.Name, nd.err, tail(c.Logs(i), 8000))
		}
		conn, err := net.DialTimeout("tcp", nd.MQTT, time.Second)
		if err == nil {
			_ = conn.Close()
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("%s: MQTT port %s not accepting after %v: %v; log:\n%s", nd.Name, nd.MQTT, total, err, tail(c.Logs(i), 8000))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Status is the part of /api/v1/cluster the harness reads.
type Status struct {
	Node    string `json:"node"`
	State   string `json:"state"`
	Members []struct {
		Name  string `json:"name"`
		Addr  string `json:"addr"`
		State string `json:"state"`
		Link  string `json:"link"`
	} `json:"members"`
}

// errNoStatus: the node has no /api/v1/cluster (404).
var errNoStatus = errors.New("no /api/v1/cluster endpoint (404)")

// ClusterStatus fetches node i's /api/v1/cluster.
func (c *Cluster) ClusterStatus(i int) (*Status, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+c.Nodes[i].HTTP+"/api/v1/cluster", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.apiKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode == http.StatusNotFound {
		return nil, errNoStatus
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /api/v1/cluster on %s: %s: %s", c.Nodes[i].Name, resp.Status, bytes.TrimSpace(body))
	}
	var st Status
	if err := json.Unmarshal(body, &st); err != nil {
		return nil, fmt.Errorf("GET /api/v1/cluster on %s: %v: %s", c.Nodes[i].Name, err, body)
	}
	return &st, nil
}

// Alive returns the names node i sees alive.
func (c *Cluster) Alive(i int) (map[string]bool, error) {
	st, err := c.ClusterStatus(i)
	if err != nil {
		return nil, err
	}
	alive := map[string]bool{}
	for _, m := range st.Members {
		if m.State == "alive" {
			alive[m.Name] = true
		}
	}
	return alive, nil
}

// WaitConverged waits (at most total) until every running node sees
// every running node alive. Without a cluster, or while the nodes have no
// /api/v1/cluster endpoint yet, it returns at once.
func (c *Cluster) WaitConverged(total time.Duration) {
	c.t.Helper()
	if err := c.waitView(total, nil); err != nil {
		c.t.Fatal(err)
	}
}

// WaitView waits until every running node in groups sees exactly the
// running nodes of its own group alive (groups nil: one group of all).
func (c *Cluster) waitView(total time.Duration, groups [][]int) error {
	if !c.clustered || c.noStatus {
		return nil
	}
	if groups == nil {
		all := make([]int, c.N())
		for i := range all {
			all[i] = i
		}
		groups = [][]int{all}
	}
	deadline := time.Now().Add(total)
	var last error
	for {
		last = nil
		for _, g := range groups {
			for _, i := range g {
				if !c.Running(i) {
					continue
				}
				alive, err := c.Alive(i)
				if errors.Is(err, errNoStatus) {
					c.noStatus = true
					c.t.Logf("clustertest: %s has no /api/v1/cluster yet: not waiting for membership", c.Nodes[i].Name)
					return nil
				}
				if err != nil {
					last = err
					continue
				}
				inGroup := map[int]bool{}
				for _, j := range g {
					inGroup[j] = true
					if c.Running(j) && !alive[c.Nodes[j].Name] {
						last = fmt.Errorf("%s does not see %s alive (alive: %v)", c.Nodes[i].Name, c.Nodes[j].Name, keys(alive))
					}
				}
				if len(groups) > 1 {
					for j, nd := range c.Nodes {
						if !inGroup[j] && alive[nd.Name] {
							last = fmt.Errorf("%s still sees %s, across the split, alive (alive: %v)", c.Nodes[i].Name, nd.Name, keys(alive))
						}
					}
				}
			}
		}
		if last == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cluster view not converged after %v: %v", total, last)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// WaitView waits until every running node sees exactly its group's
// running nodes alive (what a split should converge to).
//
// Without /api/v1/cluster it just waits for the documented failure
// detection time (8 s, bounded by total).
func (c *Cluster) WaitView(total time.Duration, groups ...[]int) {
	c.t.Helper()
	if c.clustered && c.noStatus {
		time.Sleep(min(total, 8*time.Second))
		return
	}
	if err := c.waitView(total, groups); err != nil {
		c.t.Fatal(err)
	}
}

// Kill sends SIGKILL to node i and waits for the process to be gone.
func (c *Cluster) Kill(i int) {
	c.t.Helper()
	nd := c.Nodes[i]
	if nd.exited() {
		c.t.Fatalf("Kill(%d): %s is not running", i, nd.Name)
	}
	_ = nd.cmd.Process.Signal(syscall.SIGKILL)
	c.reap(nd, 10*time.Second)
}

// Stop sends SIGTERM to node i (resuming it first if paused) and waits for
// a graceful exit (SIGKILL after 20 s, failing the test).
func (c *Cluster) Stop(i int) {
	c.t.Helper()
	nd := c.Nodes[i]
	if nd.exited() {
		c.t.Fatalf("Stop(%d): %s is not running", i, nd.Name)
	}
	_ = nd.cmd.Process.Signal(syscall.SIGTERM)
	if nd.state == statePaused {
		_ = nd.cmd.Process.Signal(syscall.SIGCONT)
	}
	select {
	case <-nd.done:
		nd.state = stateDown
	case <-time.After(20 * time.Second):
		c.t.Errorf("%s did not exit within 20 s of SIGTERM; killing it", nd.Name)
		_ = nd.cmd.Process.Signal(syscall.SIGKILL)
		c.reap(nd, 10*time.Second)
	}
}

func (c *Cluster) reap(nd *Node, total time.Duration) {
	c.t.Helper()
	select {
	case <-nd.done:
	case <-time.After(total):
		c.t.Fatalf("%s (pid %d) not reaped %v after SIGKILL", nd.Name, nd.cmd.Process.Pid, total)
	}
	nd.state = stateDown
}

// Pause stops node i with SIGSTOP (it keeps its sockets, answers nothing).
func (c *Cluster) Pause(i int) {
	c.t.Helper()
	nd := c.Nodes[i]
	if nd.state != stateRunning {
		c.t.Fatalf("Pause(%d): %s is not running", i, nd.Name)
	}
	if err := nd.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		c.t.Fatalf("SIGSTOP %s: %v", nd.Name, err)
	}
	nd.state = statePaused
}

// Resume continues node i after Pause.
func (c *Cluster) Resume(i int) {
	c.t.Helper()
	nd := c.Nodes[i]
	if nd.state != statePaused {
		c.t.Fatalf("Resume(%d): %s is not paused", i, nd.Name)
	}
	if err := nd.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		c.t.Fatalf("SIGCONT %s: %v", nd.Name, err)
	}
	nd.state = stateRunning
}

// Restart starts node i again with the same name, addresses and data
// directory (stopping it first with SIGTERM if it runs), waits for its
// MQTT port and, unless a split is installed, for the cluster to converge.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	nd := c.Nodes[i]
	if !nd.exited() {
		c.Stop(i)
	}
	c.spawn(nd)
	c.waitPort(i, c.opts.StartTimeout)
	c.mu.Lock()
	split := c.split != nil
	c.mu.Unlock()
	if !split {
		c.WaitConverged(c.opts.StartTimeout)
	}
}

// cleanup kills every process left, checks that none survives, and prints
// the logs when the test failed.
func (c *Cluster) cleanup() {
	for _, nd := range c.Nodes {
		if nd.exited() {
			continue
		}
		_ = nd.cmd.Process.Signal(syscall.SIGKILL)
		select {
		case <-nd.done:
		case <-time.After(10 * time.Second):
			c.t.Errorf("%s (pid %d) survived SIGKILL for 10 s", nd.Name, nd.cmd.Process.Pid)
		}
		nd.state = stateDown
	}
	for _, nd := range c.Nodes {
		if nd.cmd == nil {
			continue
		}
		// Reaped: the pid is gone (or reused by an unrelated process,
		// which cannot be our child).
		if err := syscall.Kill(nd.cmd.Process.Pid, 0); err == nil {
			if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", nd.cmd.Process.Pid)); bytes.Contains(b, []byte(nd.Config)) {
				c.t.Errorf("%s (pid %d) still exists after cleanup", nd.Name, nd.cmd.Process.Pid)
			}
		}
	}
	c.mu.Lock()
	split := c.split != nil
	c.mu.Unlock()
	if split {
		if err := c.heal(); err != nil {
			c.t.Errorf("removing the nft table: %v", err)
		}
	}
	if c.t.Failed() || os.Getenv(LogsEnv) != "" {
		for i, nd := range c.Nodes {
			c.t.Logf("----- %s log (%s) -----\n%s", nd.Name, nd.LogFile, tail(c.Logs(i), 64<<10))
		}
	}
}

// freeAddr returns ip:port with a port that was free a moment ago (for
// TCP, and for UDP too when udp is set: cluster.bind uses both).
func freeAddr(t testing.TB, ip string, udp bool) string {
	t.Helper()
	for range 50 {
		l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
		if err != nil {
			t.Fatalf("cannot listen on %s (the harness needs 127.0.0.0/8 on lo): %v", ip, err)
		}
		addr := l.Addr().String()
		if !handedOut.claim(addr) {
			// The kernel gave back a port already handed to a node of
			// this test process (it was closed again): two listeners of
			// one node on one port fail to start.
			_ = l.Close()
			continue
		}
		if !udp {
			_ = l.Close()
			return addr
		}
		u, err := net.ListenPacket("udp", addr)
		_ = l.Close()
		if err == nil {
			_ = u.Close()
			return addr
		}
	}
	t.Fatalf("no free TCP+UDP port on %s", ip)
	return ""
}

// handedOut remembers the addresses freeAddr returned in this test
// process, so that none is returned twice.
var handedOut = &addrSet{m: map[string]bool{}}

type addrSet struct {
	mu sync.Mutex
	m  map[string]bool
}

// claim records addr and reports whether it was new.
func (s *addrSet) claim(addr string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m[addr] {
		return false
	}
	s.m[addr] = true
	return true
}

func randomToken(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "...(" + strconv.Itoa(len(s)-n) + " bytes cut)...\n" + s[len(s)-n:]
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// HasClient reports whether client id is connected to node i (its
// /api/v1/clients/{id} answers 200).
func (c *Cluster) HasClient(i int, id string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+c.Nodes[i].HTTP+"/api/v1/clients/"+id, nil)
	if err != nil {
		return false
	}
	req.Header.Set("Authorization", "Bearer "+c.apiKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	_ = resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}
