// Package crashtest checks Isobar's durability promise with real broker
// processes: what was acknowledged survives SIGKILL and restarts.
//
// The helpers here build the isobar binary once per test run, run it on a
// configuration in a temporary directory, kill or stop it, and talk MQTT to
// it with a minimal client on internal/mqtt/packet that gives the tests
// exact control over acknowledgements and packet identifiers.
package crashtest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/isobar-mq/isobar/internal/config"
	"github.com/isobar-mq/isobar/internal/mqtt/packet"
	"github.com/isobar-mq/isobar/internal/node"
	"github.com/isobar-mq/isobar/internal/testutil/peer"
)

func TestMain(m *testing.M) {
	code := m.Run()
	binary.cleanup()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// builtBinary is the isobar executable, built once per test run.
type builtBinary struct {
	once sync.Once
	dir  string
	path string
	skip string // why the tests cannot build it (no go tool)
	err  error
}

var binary builtBinary

func (b *builtBinary) cleanup() {
	if b.dir != "" {
		_ = os.RemoveAll(b.dir)
	}
}

// isobarBinary returns the path of the isobar binary built from this
// module, building it on first use. The test is skipped when the go tool
// is not available (failed in CI, see package peer).
func isobarBinary(t testing.TB) string {
	t.Helper()
	binary.once.Do(func() {
		gobin, err := exec.LookPath("go")
		if err != nil {
			binary.skip = "go tool not found: " + err.Error()
			return
		}
		out, err := exec.Command(gobin, "env", "GOMOD").Output()
		gomod := strings.TrimSpace(string(out))
		if err != nil || gomod == "" || gomod == os.DevNull {
			binary.err = fmt.Errorf("go env GOMOD: %q, %v", gomod, err)
			return
		}
		dir, err := os.MkdirTemp("", "isobar-crashtest-")
		if err != nil {
			binary.err = err
			return
		}
		binary.dir = dir
		path := filepath.Join(dir, "isobar")
		start := time.Now()
		cmd := exec.Command(gobin, "build", "-o", path, "./cmd/isobar")
		cmd.Dir = filepath.Dir(gomod)
		if out, err := cmd.CombinedOutput(); err != nil {
			binary.err = fmt.Errorf("go build ./cmd/isobar: %v\n%s", err, out)
			return
		}
		binary.path = path
		fmt.Fprintf(os.Stderr, "crashtest: built %s in %v\n", path, time.Since(start).Round(time.Millisecond))
	})
	if binary.skip != "" {
		peer.Missing(t, "%s", binary.skip)
	}
	if binary.err != nil {
		t.Fatal(binary.err)
	}
	return binary.path
}

// brokerProc is an isobar process on a data directory that outlives it.
type brokerProc struct {
	t       testing.TB
	bin     string
	dir     string // config files and logs
	dataDir string
	extra   string // YAML appended to the configuration
	// storeExtra is appended inside the store mapping (", key: value").
	storeExtra string
	logLvl     string
	port       int
	runs       int

	cmd     *exec.Cmd
	exited  chan struct{}
	waitErr error
	logPath string
}

// newBroker prepares (without starting) a broker whose data directory is a
// fresh temporary directory. extra is YAML added to the configuration
// (top-level keys other than listeners, store, log and http).
func newBroker(t testing.TB, extra string) *brokerProc {
	t.Helper()
	b := &brokerProc{t: t, bin: isobarBinary(t), dir: t.TempDir(), dataDir: t.TempDir(), extra: extra, logLvl: "info"}
	t.Cleanup(func() {
		if b.running() {
			_ = b.cmd.Process.Kill()
			<-b.exited
		}
		if t.Failed() && b.logPath != "" {
			t.Logf("last broker log (%s):\n%s", b.logPath, tailFile(b.logPath, 40))
		}
	})
	return b
}

func (b *brokerProc) running() bool {
	if b.cmd == nil {
		return false
	}
	select {
	case <-b.exited:
		return false
	default:
		return true
	}
}

func (b *brokerProc) addr() string { return fmt.Sprintf("127.0.0.1:%d", b.port) }

func (b *brokerProc) config(sync string) string {
	return fmt.Sprintf(`log: {level: %s}
listeners:
  - {name: mqtt, protocol: mqtt, address: "127.0.0.1:%d"}
store: {mode: pebble, data_dir: %q, sync: %s, sync_interval: 1s%s}
http: {enabled: false}
%s`, b.logLvl, b.port, b.dataDir, sync, b.storeExtra, b.extra)
}

// freePort returns a port that was free a moment ago (the binary cannot
// report an OS-assigned port, so the caller retries on a bind failure).
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	return port
}

// start runs the broker with sync "always" and waits until it serves.
func (b *brokerProc) start() time.Duration { return b.startSync("always") }

// startSync runs the broker with the given store.sync policy and waits
// until it logs that it started (after restoring the store and binding its
// listener). It keeps the previous port when it can, so reconnecting
// clients find the broker at the same address; on a bind failure it picks
// another. It returns how long the start took.
func (b *brokerProc) startSync(sync string) time.Duration {
	b.t.Helper()
	if b.running() {
		b.t.Fatal("broker already running")
	}
	for attempt := 0; attempt < 8; attempt++ {
		if b.port == 0 || attempt > 0 {
			b.port = freePort(b.t)
		}
		if d, ok := b.launch(sync); ok {
			return d
		}
	}
	b.t.Fatal("isobar could not bind a port in 8 attempts")
	return 0
}

// launch runs one attempt of startSync; ok is false on a bind failure.
func (b *brokerProc) launch(sync string) (time.Duration, bool) {
	b.t.Helper()
	b.runs++
	cfgPath := filepath.Join(b.dir, fmt.Sprintf("isobar-%d.yaml", b.runs))
	if err := os.WriteFile(cfgPath, []byte(b.config(sync)), 0o600); err != nil {
		b.t.Fatal(err)
	}
	b.logPath = filepath.Join(b.dir, fmt.Sprintf("broker-%d.log", b.runs))
	logf, err := os.Create(b.logPath)
	if err != nil {
		b.t.Fatal(err)
	}
	cmd := exec.Command(b.bin, "serve", "--config", cfgPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	began := time.Now()
	if err := cmd.Start(); err != nil {
		_ = logf.Close()
		b.t.Fatalf("starting isobar: %v", err)
	}
	exited := make(chan struct{})
	b.cmd, b.exited = cmd, exited
	go func() {
		err := cmd.Wait()
		_ = logf.Close()
		b.waitErr = err // published by close(exited)
		close(exited)
	}()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			log := readFile(b.logPath)
			if strings.Contains(log, "address already in use") {
				return 0, false
			}
			b.t.Fatalf("isobar exited during start (%v):\n%s", b.waitErr, log)
		case <-time.After(10 * time.Millisecond):
		}
		if strings.Contains(readFile(b.logPath), `msg="isobar started"`) {
			return time.Since(began), true
		}
	}
	b.t.Fatalf("isobar did not start within 60s:\n%s", tailFile(b.logPath, 40))
	return 0, false
}

// kill sends SIGKILL and waits for the process to be gone.
func (b *brokerProc) kill() {
	b.t.Helper()
	if !b.running() {
		b.t.Fatal("kill: broker not running")
	}
	_ = b.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-b.exited:
	case <-time.After(10 * time.Second):
		b.t.Fatal("isobar still running 10s after SIGKILL")
	}
}

// stop sends SIGTERM and waits for a clean exit.
func (b *brokerProc) stop() {
	b.t.Helper()
	if !b.running() {
		b.t.Fatal("stop: broker not running")
	}
	_ = b.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-b.exited:
		if b.waitErr != nil {
			b.t.Fatalf("isobar exited with %v after SIGTERM:\n%s", b.waitErr, tailFile(b.logPath, 40))
		}
	case <-time.After(20 * time.Second):
		b.t.Fatalf("isobar still running 20s after SIGTERM:\n%s", tailFile(b.logPath, 40))
	}
}

// waitLog polls the current run's log for a line containing every one of
// parts.
func (b *brokerProc) waitLog(timeout time.Duration, parts ...string) {
	b.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		for _, line := range strings.Split(readFile(b.logPath), "\n") {
			ok := true
			for _, p := range parts {
				if !strings.Contains(line, p) {
					ok = false
					break
				}
			}
			if ok {
				return
			}
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("no log line with %q within %v:\n%s", parts, timeout, tailFile(b.logPath, 40))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func readFile(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

func tailFile(path string, n int) string {
	lines := strings.Split(strings.TrimRight(readFile(path), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// dirSize is the total size of the regular files under dir.
func dirSize(t testing.TB, dir string) int64 {
	t.Helper()
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			n += fi.Size()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// dirListing describes the files under dir with their sizes.
func dirListing(dir string) string {
	var sb strings.Builder
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				rel, _ := filepath.Rel(dir, p)
				fmt.Fprintf(&sb, "  %-24s %10d\n", rel, fi.Size())
			}
		}
		return nil
	})
	return sb.String()
}

// startNode runs an in-process node (for the tests that need the store
// handle or precise start timings) and returns it with its MQTT address.
func startNode(t testing.TB, yaml string) (*node.Node, string) {
	t.Helper()
	cfg, err := config.Parse([]byte(yaml))
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	n, err := node.Start(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("node.Start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_ = n.Stop(ctx)
	})
	return n, n.Listeners[0].Addr().String()
}

func nodeConfig(dataDir, extra string) string {
	return fmt.Sprintf(`listeners:
  - {name: mqtt, protocol: mqtt, address: "127.0.0.1:0"}
store: {mode: pebble, data_dir: %q, sync: always}
http: {enabled: false}
sys_interval: 0s
%s`, dataDir, extra)
}

// ---- a minimal MQTT client ----

// mconn is one MQTT connection. Writes are serialized by wmu; reads belong
// to one goroutine at a time.
type mconn struct {
	nc  net.Conn
	br  *bufio.Reader
	v   byte
	wmu sync.Mutex

	// Receiver state for the synchronous helpers (recv): QoS 2 packet
	// identifiers received and not yet released [MQTT-4.3.3, method B].
	qos2 map[uint16]bool
}

// clientOpts describes a CONNECT.
type clientOpts struct {
	id        string
	v         byte // packet.V311 or packet.V5
	clean     bool
	expiry    uint32 // v5 Session Expiry Interval
	will      *packet.Publish
	willDelay uint32
	recvMax   uint16 // v5 Receive Maximum (0: not sent)
}

var errRefused = errors.New("connection refused by CONNACK")

// dialMQTT connects and returns the connection and its CONNACK.
func dialMQTT(addr string, o clientOpts) (*mconn, *packet.Connack, error) {
	nc, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return nil, nil, err
	}
	c := &mconn{nc: nc, br: bufio.NewReaderSize(nc, 32<<10), v: o.v, qos2: map[uint16]bool{}}
	cp := packet.Connect{ProtocolVersion: o.v, CleanStart: o.clean, ClientID: o.id}
	if o.v == packet.V5 && o.expiry > 0 {
		cp.Props.SessionExpiryInterval = o.expiry
		cp.Props.Set(packet.PropSessionExpiryInterval)
	}
	if o.v == packet.V5 && o.recvMax > 0 {
		cp.Props.ReceiveMaximum = o.recvMax
		cp.Props.Set(packet.PropReceiveMaximum)
	}
	if o.will != nil {
		cp.WillFlag = true
		cp.WillTopic = o.will.Topic
		cp.WillPayload = o.will.Payload
		cp.WillQoS = o.will.QoS
		cp.WillRetain = o.will.Retain
		if o.v == packet.V5 && o.willDelay > 0 {
			cp.WillProps.WillDelayInterval = o.willDelay
			cp.WillProps.Set(packet.PropWillDelayInterval)
		}
	}
	if err := c.write(cp.Append(nil)); err != nil {
		_ = nc.Close()
		return nil, nil, err
	}
	p, err := c.read(5 * time.Second)
	if err != nil {
		_ = nc.Close()
		return nil, nil, fmt.Errorf("reading CONNACK: %w", err)
	}
	ack, ok := p.(*packet.Connack)
	if !ok {
		_ = nc.Close()
		return nil, nil, fmt.Errorf("expected CONNACK, got %T", p)
	}
	if ack.ReasonCode != 0 {
		_ = nc.Close()
		return nil, ack, fmt.Errorf("%w: 0x%02X", errRefused, ack.ReasonCode)
	}
	return c, ack, nil
}

func (c *mconn) write(b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err := c.nc.Write(b)
	return err
}

// read reads one packet; timeout 0 means no deadline.
func (c *mconn) read(timeout time.Duration) (any, error) {
	if timeout > 0 {
		_ = c.nc.SetReadDeadline(time.Now().Add(timeout))
	} else {
		_ = c.nc.SetReadDeadline(time.Time{})
	}
	return packet.ReadPacket(c.br, c.v, 0)
}

func (c *mconn) ack(t packet.Type, id uint16) error {
	a := packet.Ack{Type: t, PacketID: id}
	return c.write(a.Append(nil, c.v))
}

func (c *mconn) close() { _ = c.nc.Close() }

// disconnect sends a normal DISCONNECT and closes.
func (c *mconn) disconnect() {
	d := packet.Disconnect{}
	_ = c.write(d.Append(nil, c.v))
	_ = c.nc.Close()
}

// subscribeSync subscribes and returns the SUBACK reason codes. No
// PUBLISH may arrive before the SUBACK.
func (c *mconn) subscribeSync(id uint16, subs ...packet.Subscription) ([]byte, error) {
	sp := packet.Subscribe{PacketID: id, Subs: subs}
	if err := c.write(sp.Append(nil, c.v)); err != nil {
		return nil, err
	}
	p, err := c.read(5 * time.Second)
	if err != nil {
		return nil, fmt.Errorf("reading SUBACK: %w", err)
	}
	sa, ok := p.(*packet.Suback)
	if !ok || sa.PacketID != id {
		return nil, fmt.Errorf("expected SUBACK %d, got %#v", id, p)
	}
	return sa.ReasonCodes, nil
}

// publishSync publishes and completes the QoS flow; it returns the reason
// code of the PUBACK or PUBREC. Only acknowledgements may arrive meanwhile.
func (c *mconn) publishSync(id uint16, topic string, payload []byte, qos byte, retain bool) (byte, error) {
	p := packet.Publish{QoS: qos, Retain: retain, Topic: topic, Payload: payload}
	if qos > 0 {
		p.PacketID = id
	}
	if err := c.write(p.Append(nil, c.v)); err != nil {
		return 0, err
	}
	if qos == 0 {
		return 0, nil
	}
	want := packet.PUBACK
	if qos == 2 {
		want = packet.PUBREC
	}
	a, err := c.expectAck(want, id)
	if err != nil || qos == 1 || a.ReasonCode >= 0x80 {
		return a.ReasonCode, err
	}
	if err := c.ack(packet.PUBREL, id); err != nil {
		return 0, err
	}
	if _, err := c.expectAck(packet.PUBCOMP, id); err != nil {
		return 0, err
	}
	return a.ReasonCode, nil
}

func (c *mconn) expectAck(t packet.Type, id uint16) (*packet.Ack, error) {
	p, err := c.read(5 * time.Second)
	if err != nil {
		return &packet.Ack{}, fmt.Errorf("waiting for %s %d: %w", t, id, err)
	}
	a, ok := p.(*packet.Ack)
	if !ok || a.Type != t || a.PacketID != id {
		return &packet.Ack{}, fmt.Errorf("expected %s %d, got %#v", t, id, p)
	}
	return a, nil
}

// recv returns the next application message within timeout, acknowledging
// as a compliant receiver: PUBACK for QoS 1; for QoS 2 PUBREC, delivering
// a packet identifier only once until its PUBREL (answered with PUBCOMP).
// It returns nil, nil when the timeout passes without a message.
func (c *mconn) recv(timeout time.Duration) (*packet.Publish, error) {
	deadline := time.Now().Add(timeout)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return nil, nil
		}
		p, err := c.pump(left)
		if p != nil || err != nil {
			return p, err
		}
	}
}

// pump reads and handles one packet (see recv). It returns the message if
// the packet delivered one, and nil, nil on a timeout.
func (c *mconn) pump(timeout time.Duration) (*packet.Publish, error) {
	p, err := c.read(timeout)
	if err != nil {
		if isTimeout(err) {
			return nil, nil
		}
		return nil, err
	}
	switch p := p.(type) {
	case *packet.Publish:
		switch p.QoS {
		case 1:
			if err := c.ack(packet.PUBACK, p.PacketID); err != nil {
				return nil, err
			}
		case 2:
			if err := c.ack(packet.PUBREC, p.PacketID); err != nil {
				return nil, err
			}
			if c.qos2[p.PacketID] {
				return nil, nil // already delivered
			}
			c.qos2[p.PacketID] = true
		}
		return p, nil
	case *packet.Ack:
		if p.Type != packet.PUBREL {
			return nil, fmt.Errorf("unexpected %s %d", p.Type, p.PacketID)
		}
		delete(c.qos2, p.PacketID)
		return nil, c.ack(packet.PUBCOMP, p.PacketID)
	default:
		return nil, fmt.Errorf("unexpected packet %#v", p)
	}
}

// recvN receives exactly n messages (failing on an error or a timeout of
// total) and then checks that nothing else arrives within quiet.
func (c *mconn) recvN(t testing.TB, n int, total, quiet time.Duration) []*packet.Publish {
	t.Helper()
	var got []*packet.Publish
	deadline := time.Now().Add(total)
	for len(got) < n {
		p, err := c.recv(time.Until(deadline))
		if err != nil {
			t.Fatalf("after %d of %d messages: %v", len(got), n, err)
		}
		if p == nil {
			t.Fatalf("got %d of %d messages within %v: %s", len(got), n, total, payloads(got))
		}
		got = append(got, p)
	}
	if quiet > 0 {
		p, err := c.recv(quiet)
		if err != nil {
			t.Fatalf("after %d messages: %v", n, err)
		}
		if p != nil {
			t.Fatalf("after the %d expected messages (%s), another one: %s %q", n, payloads(got), p.Topic, p.Payload)
		}
	}
	return got
}

func payloads(ps []*packet.Publish) string {
	var parts []string
	for _, p := range ps {
		parts = append(parts, string(p.Payload))
	}
	return "[" + strings.Join(parts, " ") + "]"
}

// mustDial connects or fails the test.
func mustDial(t testing.TB, addr string, o clientOpts) (*mconn, *packet.Connack) {
	t.Helper()
	c, ack, err := dialMQTT(addr, o)
	if err != nil {
		t.Fatalf("connect %s: %v", o.id, err)
	}
	t.Cleanup(c.close)
	return c, ack
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// knownBugs reports whether tests for reported, unfixed bugs should run
// (ISOBAR_CRASHTEST_KNOWN_BUGS=1) instead of being skipped.
func knownBugs() bool { return os.Getenv("ISOBAR_CRASHTEST_KNOWN_BUGS") == "1" }
