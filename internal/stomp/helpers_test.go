package stomp_test

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"runtime/pprof"
	"strings"
	"testing"
	"time"

	"github.com/isobar-mq/isobar/internal/node"
	"github.com/isobar-mq/isobar/internal/stomp"
	"github.com/isobar-mq/isobar/internal/testutil"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// Pebble's and the metrics' background goroutines outlive nothing
		// of ours, but some start lazily once per process.
		goleak.IgnoreTopFunction("github.com/cockroachdb/pebble/v2/internal/cache.(*cleanupManager).mainLoop"),
		goleak.IgnoreAnyFunction("github.com/cockroachdb/pebble/v2/vfs/disk.(*Monitor).monitorLoop"),
	)
}

const baseYAML = `listeners:
  - {name: mqtt, protocol: mqtt, address: "127.0.0.1:0"}
  - {name: stomp, protocol: stomp, address: "127.0.0.1:0"}
`

// runNode starts a node with an MQTT and a STOMP listener (extra is
// appended to the configuration) and returns it with the STOMP address.
func runNode(t *testing.T, extra string) (*node.Node, string) {
	t.Helper()
	n := testutil.RunNode(t, baseYAML+extra)
	return n, stompAddr(t, n)
}

func stompAddr(t *testing.T, n *node.Node) string {
	t.Helper()
	for _, l := range n.Listeners {
		if l.Config().Protocol == "stomp" {
			return l.Addr().String()
		}
	}
	t.Fatal("no stomp listener")
	return ""
}

// client is a raw STOMP client for tests.
type client struct {
	t       *testing.T
	nc      net.Conn
	dec     *stomp.Decoder
	version string
	held    []*stomp.Frame // MESSAGE frames read while waiting for a RECEIPT
}

func dial(t *testing.T, addr string) *client {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nc.Close() })
	c := &client{t: t, nc: nc, version: stomp.V12}
	c.dec = stomp.NewDecoder(bufio.NewReader(nc), stomp.Limits{MaxFrameSize: 16 << 20})
	return c
}

// connect dials and connects with the given version ("" = 1.0, no
// accept-version) and extra headers "name:value".
func connect(t *testing.T, addr, version string, hdrs ...string) *client {
	t.Helper()
	c := dial(t, addr)
	f := &stomp.Frame{Command: "CONNECT"}
	if version != "" {
		f.Add("accept-version", version)
		f.Add("host", "isobar")
	}
	for _, h := range hdrs {
		k, v, _ := strings.Cut(h, ":")
		f.Add(k, v)
	}
	c.send(f)
	r := c.read()
	if r.Command != "CONNECTED" {
		t.Fatalf("CONNECT: got %s %v %q", r.Command, r.Headers, r.Body)
	}
	c.version = r.Value("version")
	if c.version == "" {
		c.version = stomp.V10
	}
	c.dec.Version = c.version
	return c
}

func (c *client) send(f *stomp.Frame) {
	c.t.Helper()
	c.raw(string(stomp.AppendFrame(nil, f, c.version)))
}

func (c *client) raw(s string) {
	c.t.Helper()
	_ = c.nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c.nc, s); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// frame builds a frame from a command and "name:value" headers.
func frame(cmd string, hdrs ...string) *stomp.Frame {
	f := &stomp.Frame{Command: cmd}
	for _, h := range hdrs {
		k, v, _ := strings.Cut(h, ":")
		f.Add(k, v)
	}
	return f
}

func (c *client) readWithin(d time.Duration) (*stomp.Frame, error) {
	_ = c.nc.SetReadDeadline(time.Now().Add(d))
	return c.dec.Decode()
}

func (c *client) read() *stomp.Frame {
	c.t.Helper()
	if len(c.held) > 0 {
		f := c.held[0]
		c.held = c.held[1:]
		return f
	}
	f, err := c.readWithin(5 * time.Second)
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	return f
}

// receipt reads frames up to the RECEIPT with the given id, holding the
// MESSAGE frames that come first for read.
func (c *client) receipt(id string) *stomp.Frame {
	c.t.Helper()
	for {
		f, err := c.readWithin(5 * time.Second)
		if err != nil {
			if os.Getenv("STOMP_DUMP") != "" {
				// Debugging a hang: where is every goroutine?
				_ = pprof.Lookup("goroutine").WriteTo(os.Stderr, 1)
			}
			c.t.Fatalf("waiting for RECEIPT %s: %v", id, err)
		}
		switch {
		case f.Command == "MESSAGE":
			c.held = append(c.held, f)
		case f.Command == "RECEIPT" && f.Value("receipt-id") == id:
			return f
		default:
			c.t.Fatalf("waiting for RECEIPT %s: got %s %v %q", id, f.Command, f.Headers, f.Body)
		}
	}
}

// expect reads a frame and checks its command.
func (c *client) expect(cmd string) *stomp.Frame {
	c.t.Helper()
	f := c.read()
	if f.Command != cmd {
		c.t.Fatalf("got %s %v %q, want %s", f.Command, f.Headers, f.Body, cmd)
	}
	return f
}

// expectNothing checks that no frame arrives within d.
func (c *client) expectNothing(d time.Duration) {
	c.t.Helper()
	if len(c.held) > 0 {
		c.t.Fatalf("unexpected %s %v %q", c.held[0].Command, c.held[0].Headers, c.held[0].Body)
	}
	f, err := c.readWithin(d)
	if err == nil {
		c.t.Fatalf("unexpected %s %v %q", f.Command, f.Headers, f.Body)
	}
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		c.t.Fatalf("read: %v", err)
	}
	// The decoder may hold a partial frame after a timeout: start over.
	c.dec = stomp.NewDecoder(bufio.NewReader(c.nc), stomp.Limits{MaxFrameSize: 16 << 20})
	c.dec.Version = c.version
}

// expectErrorClose reads an ERROR whose message contains want, then the
// end of the stream.
func (c *client) expectErrorClose(want string) *stomp.Frame {
	c.t.Helper()
	f := c.expect("ERROR")
	if !strings.Contains(f.Value("message"), want) {
		c.t.Fatalf("ERROR message %q, want %q", f.Value("message"), want)
	}
	if g, err := c.readWithin(5 * time.Second); err == nil {
		c.t.Fatalf("frame after ERROR: %s %v", g.Command, g.Headers)
	} else if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !isReset(err) {
		c.t.Fatalf("after ERROR: %v, want the connection closed", err)
	}
	return f
}

func isReset(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe) && !oe.Timeout()
}

func (c *client) subscribe(id, dest string, hdrs ...string) {
	c.t.Helper()
	f := frame("SUBSCRIBE", append([]string{"id:" + id, "destination:" + dest, "receipt:sub-" + id}, hdrs...)...)
	c.send(f)
	c.receipt("sub-" + id)
}

// sendMsg sends a message with a receipt and waits for it.
func (c *client) sendMsg(dest, body string, hdrs ...string) {
	c.t.Helper()
	f := frame("SEND", append([]string{"destination:" + dest, "receipt:r"}, hdrs...)...)
	f.Body = []byte(body)
	c.send(f)
	c.receipt("r")
}

// pump reads every further frame in a goroutine of its own and sends it
// on the channel, closed when the connection ends (the test cleanup
// closes it). The client must not be read directly afterwards.
func (c *client) pump() <-chan *stomp.Frame {
	ch := make(chan *stomp.Frame, 64)
	held := c.held
	c.held = nil
	go func() {
		defer close(ch)
		for _, f := range held {
			ch <- f
		}
		_ = c.nc.SetReadDeadline(time.Time{})
		for {
			f, err := c.dec.Decode()
			if err != nil {
				return
			}
			ch <- f
		}
	}()
	return ch
}

func (c *client) disconnect() {
	c.t.Helper()
	c.send(frame("DISCONNECT", "receipt:bye"))
	c.receipt("bye")
	if _, err := c.readWithin(5 * time.Second); err == nil {
		c.t.Fatal("frame after the DISCONNECT receipt")
	}
}
