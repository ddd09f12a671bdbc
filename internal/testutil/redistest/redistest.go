// Package redistest starts real Redis servers for tests: a standalone
// redis-server (Start) or a Redis Cluster of several masters, each with its
// replicas (StartCluster), on free loopback ports, in the test's temporary
// directory, without persistence. Every process is killed when the test
// ends. When redis-server (or, for a cluster, redis-cli) is not installed
// the test is skipped on a developer's machine and fails in CI (see package
// peer).
//
// It talks to the servers with a minimal RESP2 client of its own (Do), so
// that it depends on the standard library and package peer only and any
// package's tests can use it whatever Redis client they test.
package redistest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/isobar-mq/isobar/internal/testutil/peer"
)

// Options configure a server started by Start or the nodes of StartCluster.
type Options struct {
	// Password, when set, is required from every client (requirepass; the
	// cluster nodes also use it between themselves, masterauth).
	Password string
	// Args are extra configuration lines ("maxmemory 10mb").
	Args []string
	// TLSCertFile and TLSKeyFile (PEM), when set, make a standalone server
	// also listen with TLS on Server.TLSAddr (clients are not asked for a
	// certificate). The plain port stays open for Do.
	TLSCertFile, TLSKeyFile string
}

// Server is one redis-server process.
type Server struct {
	Addr string // 127.0.0.1:port
	Port int
	// BusPort is the cluster bus port (0 for a standalone server).
	BusPort int
	// TLSAddr is the TLS address when Options.TLSCertFile is set.
	TLSAddr string
	Dir     string

	t        testing.TB
	password string
	bin      string
	conf     string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// Start starts a standalone redis-server on a free 127.0.0.1 port and
// waits until it answers PING.
func Start(t testing.TB, o Options) *Server {
	t.Helper()
	bin := peer.NeedBinary(t, "redis-server", "redis-server")
	s := newServer(t, bin, o, false)
	s.start()
	t.Cleanup(s.Kill)
	s.waitReady(10 * time.Second)
	return s
}

// freePort returns a TCP port free on 127.0.0.1 at the time of the call.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("redistest: free port: %v", err)
	}
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port
}

func newServer(t testing.TB, bin string, o Options, cluster bool) *Server {
	t.Helper()
	port := freePort(t)
	dir, err := os.MkdirTemp(t.TempDir(), fmt.Sprintf("redis-%d-", port))
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), Port: port, Dir: dir, t: t, password: o.Password, bin: bin}
	lines := []string{
		"bind 127.0.0.1",
		"port " + strconv.Itoa(port),
		"dir " + dir,
		`save ""`,
		"appendonly no",
		"daemonize no",
		"protected-mode no",
		"logfile " + filepath.Join(dir, "redis.log"),
	}
	if cluster {
		// The bus port is set explicitly (Redis 7 cluster-port): the default,
		// port+10000, is often past 65535 for an ephemeral port, or taken.
		s.BusPort = freePort(t)
		lines = append(lines,
			"cluster-enabled yes",
			"cluster-config-file "+filepath.Join(dir, "nodes.conf"),
			"cluster-port "+strconv.Itoa(s.BusPort),
			// A short node timeout makes a killed master fail over in about
			// two seconds instead of fifteen.
			"cluster-node-timeout 1000",
			"cluster-replica-validity-factor 0",
		)
	}
	if o.TLSCertFile != "" && !cluster {
		tp := freePort(t)
		s.TLSAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(tp))
		lines = append(lines, "tls-port "+strconv.Itoa(tp), "tls-cert-file "+o.TLSCertFile,
			"tls-key-file "+o.TLSKeyFile, "tls-auth-clients no")
	}
	if o.Password != "" {
		lines = append(lines, "requirepass "+o.Password, "masterauth "+o.Password)
	}
	lines = append(lines, o.Args...)
	s.conf = filepath.Join(dir, "redis.conf")
	if err := os.WriteFile(s.conf, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return s
}

func (s *Server) start() {
	s.t.Helper()
	cmd := exec.Command(s.bin, s.conf)
	cmd.Dir = s.Dir
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("redistest: starting %s: %v", s.bin, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	s.mu.Lock()
	s.cmd, s.done = cmd, done
	s.mu.Unlock()
}

// waitReady waits until the server answers PING (with the password, if any).
func (s *Server) waitReady(total time.Duration) {
	s.t.Helper()
	deadline := time.Now().Add(total)
	var err error
	for time.Now().Before(deadline) {
		if !s.Running() {
			s.t.Fatalf("redistest: redis-server on %s exited at start; log:\n%s", s.Addr, s.Log())
		}
		var v any
		if v, err = s.Do("PING"); err == nil && v == "PONG" {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.t.Fatalf("redistest: redis-server on %s not ready after %v: %v; log:\n%s", s.Addr, total, err, s.Log())
}

// Running reports whether the process is alive.
func (s *Server) Running() bool {
	s.mu.Lock()
	done := s.done
	s.mu.Unlock()
	if done == nil {
		return false
	}
	select {
	case <-done:
		return false
	default:
		return true
	}
}

// Kill kills the process (SIGKILL: no shutdown, as a crash) and waits for
// it to exit. It is a no-op when the process is not running.
func (s *Server) Kill() {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-done
}

// Restart starts the killed process again with the same configuration
// (and, for a cluster node, its nodes.conf) and waits until it answers.
func (s *Server) Restart() {
	s.t.Helper()
	s.Kill()
	s.start()
	s.waitReady(10 * time.Second)
}

// Log returns the server's log file (for failure messages).
func (s *Server) Log() string {
	b, err := os.ReadFile(filepath.Join(s.Dir, "redis.log"))
	if err != nil {
		return err.Error()
	}
	return string(b)
}

// Do sends one command to the server on a new connection (authenticating
// first when the server has a password) and returns the reply: a string
// for simple and bulk strings, an int64, nil, []any for arrays, or an error
// for a Redis error reply (the error is then the returned error too).
func (s *Server) Do(args ...string) (any, error) {
	return Do(s.Addr, s.password, args...)
}

// Do sends one command to addr on a new connection, authenticating with
// password when it is not empty. See Server.Do for the reply types.
func Do(addr, password string, args ...string) (any, error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return nil, err
	}
	defer func() { _ = c.Close() }()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(c)
	if password != "" {
		if _, err := roundTrip(c, r, "AUTH", password); err != nil {
			return nil, fmt.Errorf("AUTH: %w", err)
		}
	}
	return roundTrip(c, r, args...)
}

func roundTrip(w io.Writer, r *bufio.Reader, args ...string) (any, error) {
	var b bytes.Buffer
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := w.Write(b.Bytes()); err != nil {
		return nil, err
	}
	v, err := readReply(r)
	if err != nil {
		return nil, err
	}
	if e, ok := v.(error); ok {
		return nil, e
	}
	return v, nil
}

// Error is a Redis error reply.
type Error string

func (e Error) Error() string { return string(e) }

func readReply(r *bufio.Reader) (any, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return nil, err
	}
	line = strings.TrimSuffix(line, "\r\n")
	if line == "" {
		return nil, errors.New("redistest: empty reply line")
	}
	switch line[0] {
	case '+':
		return line[1:], nil
	case '-':
		return Error(line[1:]), nil
	case ':':
		return strconv.ParseInt(line[1:], 10, 64)
	case '$':
		n, err := strconv.Atoi(line[1:])
		if err != nil {
			return nil, err
		}
		if n < 0 {
			return nil, nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return nil, err
		}
		return string(buf[:n]), nil
	case '*':
		n, err := strconv.Atoi(line[1:])
		if err != nil {
			return nil, err
		}
		if n < 0 {
			return nil, nil
		}
		out := make([]any, n)
		for i := range out {
			if out[i], err = readReply(r); err != nil {
				return nil, err
			}
		}
		return out, nil
	}
	return nil, fmt.Errorf("redistest: unexpected reply %q", line)
}

// Cluster is a Redis Cluster of redis-server processes.
type Cluster struct {
	Nodes []*Server
	t     testing.TB
}

// StartCluster starts masters*(1+replicas) cluster-enabled redis-server
// processes, joins them with redis-cli --cluster create (replicas per
// master), and waits until every node reports cluster_state:ok and knows
// all the others. StartCluster(t, 3, 1, o) is the usual 6-node cluster.
func StartCluster(t testing.TB, masters, replicas int, o Options) *Cluster {
	t.Helper()
	bin := peer.NeedBinary(t, "redis-server", "redis-server")
	cli := peer.NeedBinary(t, "redis-cli", "redis-tools")
	c := &Cluster{t: t}
	n := masters * (1 + replicas)
	for range n {
		s := newServer(t, bin, o, true)
		s.start()
		t.Cleanup(s.Kill)
		c.Nodes = append(c.Nodes, s)
	}
	for _, s := range c.Nodes {
		s.waitReady(10 * time.Second)
	}
	args := []string{"--cluster", "create"}
	for _, s := range c.Nodes {
		args = append(args, s.Addr)
	}
	args = append(args, "--cluster-replicas", strconv.Itoa(replicas), "--cluster-yes")
	if o.Password != "" {
		args = append(args, "-a", o.Password, "--no-auth-warning")
	}
	out, err := exec.Command(cli, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("redistest: redis-cli %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	c.WaitOK(20 * time.Second)
	return c
}

// Addrs returns the address of every node, masters and replicas.
func (c *Cluster) Addrs() []string {
	out := make([]string, len(c.Nodes))
	for i, s := range c.Nodes {
		out[i] = s.Addr
	}
	return out
}

// WaitOK waits until every running node reports cluster_state:ok, sees as
// many nodes as the cluster has, and every slot is served by a master that
// is not marked failed. After a master is killed this waits for the
// failover to complete.
func (c *Cluster) WaitOK(total time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(total)
	var last error
	for time.Now().Before(deadline) {
		if last = c.check(); last == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.t.Fatalf("redistest: cluster not ok after %v: %v", total, last)
}

func (c *Cluster) check() error {
	for _, s := range c.Nodes {
		if !s.Running() {
			continue
		}
		v, err := s.Do("CLUSTER", "INFO")
		if err != nil {
			return fmt.Errorf("%s: %w", s.Addr, err)
		}
		info, _ := v.(string)
		if !strings.Contains(info, "cluster_state:ok") {
			return fmt.Errorf("%s: cluster_state not ok", s.Addr)
		}
		if !strings.Contains(info, "cluster_slots_ok:16384") {
			return fmt.Errorf("%s: not all slots ok", s.Addr)
		}
		if !strings.Contains(info, "cluster_known_nodes:"+strconv.Itoa(len(c.Nodes))+"\r\n") {
			return fmt.Errorf("%s: does not know all %d nodes yet", s.Addr, len(c.Nodes))
		}
		masters, err := c.mastersSeenBy(s)
		if err != nil {
			return err
		}
		for _, m := range masters {
			if !m.Running() {
				return fmt.Errorf("%s still routes slots to the dead master %s", s.Addr, m.Addr)
			}
		}
	}
	return nil
}

// Masters returns the running nodes that are masters serving slots, as
// the first running node sees them.
func (c *Cluster) Masters() []*Server {
	c.t.Helper()
	for _, s := range c.Nodes {
		if !s.Running() {
			continue
		}
		ms, err := c.mastersSeenBy(s)
		if err != nil {
			c.t.Fatalf("redistest: %v", err)
		}
		var out []*Server
		for _, m := range ms {
			if m.Running() {
				out = append(out, m)
			}
		}
		return out
	}
	return nil
}

// mastersSeenBy parses CLUSTER NODES on s: the masters that serve slots
// and are not flagged failed.
func (c *Cluster) mastersSeenBy(s *Server) ([]*Server, error) {
	v, err := s.Do("CLUSTER", "NODES")
	if err != nil {
		return nil, fmt.Errorf("%s: CLUSTER NODES: %w", s.Addr, err)
	}
	text, _ := v.(string)
	var out []*Server
	for line := range strings.SplitSeq(strings.TrimSpace(text), "\n") {
		// <id> <ip:port@cport> <flags> <master> <ping-sent> <pong-recv> <epoch> <link-state> <slot> ...
		f := strings.Fields(line)
		if len(f) < 9 {
			continue
		}
		flags := f[2]
		if !strings.Contains(flags, "master") || strings.Contains(flags, "fail") {
			continue
		}
		addr, _, _ := strings.Cut(f[1], "@")
		for _, n := range c.Nodes {
			if n.Addr == addr {
				out = append(out, n)
			}
		}
	}
	return out, nil
}
