package crashtest

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/isobar-mq/isobar/internal/config"
	"github.com/isobar-mq/isobar/internal/mqtt/packet"
	"github.com/isobar-mq/isobar/internal/node"
	"github.com/isobar-mq/isobar/internal/store"
)

// syncBuffer is a log sink safe for concurrent writers.
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

// startLoggedNode runs an in-process node whose log goes to a buffer.
func startLoggedNode(t testing.TB, yaml string) (*node.Node, string, *syncBuffer) {
	t.Helper()
	cfg, err := config.Parse([]byte(yaml))
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	logs := &syncBuffer{}
	n, err := node.Start(cfg, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo})))
	if err != nil {
		t.Fatalf("node.Start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_ = n.Stop(ctx)
	})
	return n, n.Listeners[0].Addr().String(), logs
}

// parallel runs fn(i) for i in [0, n) on workers goroutines and returns
// the first error.
func parallel(n, workers int, fn func(i int) error) error {
	var next atomic.Int64
	var first atomic.Pointer[error]
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || first.Load() != nil {
					return
				}
				if err := fn(i); err != nil {
					first.CompareAndSwap(nil, &err)
					return
				}
			}
		})
	}
	wg.Wait()
	if e := first.Load(); e != nil {
		return *e
	}
	return nil
}

// publishPipelined publishes msgs on c with up to window flows open at
// once, completing QoS 2 flows, and fails on any refusal.
func publishPipelined(c *mconn, msgs []packet.Publish, window int) error {
	for len(msgs) > 0 {
		chunk := msgs[:min(window, len(msgs))]
		msgs = msgs[len(chunk):]
		var buf []byte
		open := map[uint16]byte{}
		for i := range chunk {
			p := chunk[i]
			p.PacketID = uint16(i + 1)
			open[p.PacketID] = p.QoS
			buf = p.Append(buf, c.v)
		}
		if err := c.write(buf); err != nil {
			return err
		}
		for len(open) > 0 {
			pkt, err := c.read(10 * time.Second)
			if err != nil {
				return fmt.Errorf("%d flows open: %w", len(open), err)
			}
			a, ok := pkt.(*packet.Ack)
			if !ok {
				return fmt.Errorf("unexpected %#v", pkt)
			}
			if a.ReasonCode >= 0x80 {
				return fmt.Errorf("%s %d: reason 0x%02X", a.Type, a.PacketID, a.ReasonCode)
			}
			switch {
			case a.Type == packet.PUBACK && open[a.PacketID] == 1,
				a.Type == packet.PUBCOMP && open[a.PacketID] == 2:
				delete(open, a.PacketID)
			case a.Type == packet.PUBREC && open[a.PacketID] == 2:
				if err := c.ack(packet.PUBREL, a.PacketID); err != nil {
					return err
				}
			default:
				return fmt.Errorf("unexpected %s %d", a.Type, a.PacketID)
			}
		}
	}
	return nil
}

// settle reads until every QoS 2 flow towards this receiver is released.
func (c *mconn) settle(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for len(c.qos2) > 0 {
		if time.Now().After(deadline) {
			return fmt.Errorf("%d QoS 2 flows not released within %v", len(c.qos2), timeout)
		}
		p, err := c.pump(time.Until(deadline))
		if err != nil {
			return err
		}
		if p != nil {
			return fmt.Errorf("unexpected message %s %q while settling", p.Topic, p.Payload)
		}
	}
	return nil
}

func compactStore(t testing.TB, st *store.PebbleStore) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := st.Compact(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestChurnReclaimsSpace creates 2000 persistent sessions (3.1.1 and 5),
// queues messages for them while they are offline (QoS 1 and 2), has each
// one come back, receive and acknowledge them, and then ends every session
// (clean start, Session Expiry 0 at DISCONNECT, or expiry after 1 s),
// some of them with messages still queued. After a compaction the data
// directory must be back near its empty-store size, and a restart must
// find no session and no orphaned record.
func TestChurnReclaimsSpace(t *testing.T) {
	const (
		sessions   = 2000
		perSession = 5
		workers    = 24
	)
	dataDir := t.TempDir()
	yaml := nodeConfig(dataDir, "")
	n, addr, logs := startLoggedNode(t, yaml)
	compactStore(t, n.Store)
	baseline := dirSize(t, dataDir)
	baseStats := n.Store.Stats().DiskBytes
	started := time.Now()

	id := func(i int) string { return fmt.Sprintf("churn-%04d", i) }
	opts := func(i int, clean bool, expiry uint32) clientOpts {
		if i%2 == 0 {
			return clientOpts{id: id(i), v: packet.V311, clean: clean}
		}
		return clientOpts{id: id(i), v: packet.V5, clean: clean, expiry: expiry}
	}
	subQoS := func(i int) byte { return byte(1 + i%2) }

	phase := time.Now()
	lap := func(what string) {
		t.Logf("%s: %v", what, time.Since(phase).Round(time.Millisecond))
		phase = time.Now()
	}
	// Sessions and subscriptions.
	err := parallel(sessions, workers, func(i int) error {
		c, _, err := dialMQTT(addr, opts(i, false, 3600))
		if err != nil {
			return err
		}
		defer c.close()
		if _, err := c.subscribeSync(1, packet.Subscription{Filter: "churn/" + id(i), QoS: subQoS(i)}); err != nil {
			return fmt.Errorf("%s: %w", id(i), err)
		}
		c.disconnect()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	// Messages queued while they are offline: QoS 1 and 2, 256 bytes.
	publishRound := func(count int, filter func(i int) bool) {
		t.Helper()
		var msgs []packet.Publish
		payload := bytes.Repeat([]byte("p"), 256)
		for i := 0; i < sessions; i++ {
			if !filter(i) {
				continue
			}
			for k := 0; k < count; k++ {
				msgs = append(msgs, packet.Publish{QoS: byte(1 + k%2), Topic: "churn/" + id(i), Payload: payload})
			}
		}
		const pubs = 4
		err := parallel(pubs, pubs, func(w int) error {
			c, _, err := dialMQTT(addr, clientOpts{id: fmt.Sprintf("churn-pub%d", w), v: packet.V5, clean: true})
			if err != nil {
				return err
			}
			defer c.close()
			lo, hi := w*len(msgs)/pubs, (w+1)*len(msgs)/pubs
			if err := publishPipelined(c, msgs[lo:hi], 20); err != nil {
				return err
			}
			c.disconnect()
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	lap("sessions created")
	publishRound(perSession, func(int) bool { return true })
	lap("messages queued")
	peak := dirSize(t, dataDir)
	peakStats := n.Store.Stats().DiskBytes

	// Every session comes back, receives and acknowledges its messages.
	// Then it ends: three ways, and a quarter of them with messages
	// queued again first.
	err = parallel(sessions, workers, func(i int) error {
		c, ack, err := dialMQTT(addr, opts(i, false, 3600))
		if err != nil {
			return err
		}
		defer c.close()
		if !ack.SessionPresent {
			return fmt.Errorf("%s: session lost", id(i))
		}
		for k := 0; k < perSession; k++ {
			p, err := c.recv(10 * time.Second)
			if err != nil || p == nil {
				return fmt.Errorf("%s: message %d: %v %v", id(i), k, p, err)
			}
		}
		if err := c.settle(10 * time.Second); err != nil {
			return fmt.Errorf("%s: %w", id(i), err)
		}
		if i%3 == 1 && c.v == packet.V5 {
			// Session Expiry 0 on DISCONNECT ends the session now.
			d := packet.Disconnect{}
			d.Props.SessionExpiryInterval = 0
			d.Props.Set(packet.PropSessionExpiryInterval)
			if err := c.write(d.Append(nil, c.v)); err != nil {
				return err
			}
			c.close()
			return nil
		}
		if i%3 == 2 && c.v == packet.V5 {
			d := packet.Disconnect{}
			d.Props.SessionExpiryInterval = 1 // expires a second later
			d.Props.Set(packet.PropSessionExpiryInterval)
			if err := c.write(d.Append(nil, c.v)); err != nil {
				return err
			}
			c.close()
			return nil
		}
		c.disconnect()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	lap("messages received")
	publishRound(2, func(i int) bool { return i%4 == 0 })
	lap("more messages queued")
	// Sessions still there end with a clean-start connection.
	err = parallel(sessions, workers, func(i int) error {
		if i%2 == 1 && i%3 != 0 {
			return nil // ended at DISCONNECT (now or after 1 s)
		}
		c, _, err := dialMQTT(addr, opts(i, true, 0))
		if err != nil {
			return err
		}
		c.disconnect()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	lap("clean starts")
	deadline := time.Now().Add(15 * time.Second)
	for n.Server.SessionCount() > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if c := n.Server.SessionCount(); c != 0 {
		t.Fatalf("%d sessions left after the churn", c)
	}
	lap("expiry")
	churnTime := time.Since(started)
	beforeCompact := dirSize(t, dataDir)

	// Compact returns before the space is back: Pebble deletes obsolete
	// tables in the background and drops tables left holding only
	// tombstones with its own elision compactions, so poll.
	const slack = 64 << 10 // MANIFEST, OPTIONS, the meta record's table
	tables := func() int64 { return dirSize(t, dataDir) - walSize(t, dataDir) }
	compactStart := time.Now()
	compactStore(t, n.Store)
	compactDur := time.Since(compactStart)
	reclaimed := waitUntil(15*time.Second, func() bool { return tables() <= baseline+slack })
	reclaimDur := time.Since(compactStart)
	after, afterWAL, afterStats := dirSize(t, dataDir), walSize(t, dataDir), n.Store.Stats().DiskBytes
	if !reclaimed {
		t.Errorf("tables not reclaimed %v after compaction: baseline %d bytes, now %d without WAL files\n%s",
			reclaimDur.Round(time.Millisecond), baseline, after-afterWAL, dirListing(dataDir))
	}
	// The WAL files Pebble keeps for recycling (MemTableStopWritesThreshold
	// + 1 = 3 old logs besides the current one, each at most a 16 MiB
	// memtable) are its fixed overhead in a running store.
	if afterWAL > 4*16<<20 {
		t.Errorf("WAL files after compaction: %d bytes, more than 4 memtables\n%s", afterWAL, dirListing(dataDir))
	}

	// A restart finds nothing: no session, no orphaned record, and only
	// the fixed overhead on disk.
	if err := n.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	n2, _, logs2 := startLoggedNode(t, yaml)
	if c := n2.Server.SessionCount(); c != 0 {
		t.Errorf("%d sessions restored after they all ended", c)
	}
	for _, l := range []string{logs.String(), logs2.String()} {
		if strings.Contains(l, "records without a session") || strings.Contains(l, "level=ERROR") {
			t.Errorf("store problems in the log:\n%s", l)
		}
	}
	compactStore(t, n2.Store)
	if !waitUntil(15*time.Second, func() bool { return dirSize(t, dataDir) <= baseline+slack }) {
		t.Errorf("data directory not back to its baseline after reopening: baseline %d bytes, now %d\n%s",
			baseline, dirSize(t, dataDir), dirListing(dataDir))
	}
	reopened := dirSize(t, dataDir)

	t.Logf("churn of %d sessions x %d messages took %v", sessions, perSession, churnTime.Round(time.Millisecond))
	t.Logf("data dir bytes: baseline %d (DiskSpaceUsage %d), peak %d (%d), after churn %d; compaction %v, tables back to baseline after %v: %d bytes (DiskSpaceUsage %d), of which recycled WAL files %d; reopened %d",
		baseline, baseStats, peak, peakStats, beforeCompact, compactDur.Round(time.Millisecond), reclaimDur.Round(time.Millisecond),
		after, afterStats, afterWAL, reopened)
}

// waitUntil polls cond every 50 ms until it holds or timeout passes.
func waitUntil(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
	return true
}

// walSize is the size of the Pebble WAL files (*.log) in dir.
func walSize(t testing.TB, dir string) int64 {
	t.Helper()
	matches, err := filepath.Glob(filepath.Join(dir, "*.log"))
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, m := range matches {
		if fi, err := os.Stat(m); err == nil {
			n += fi.Size()
		}
	}
	return n
}

// TestCleanSessionsDoNotWrite: clients without a persistent session (3.1.1
// clean session, MQTT 5 Session Expiry 0) have nothing in the store, so
// their connections, subscriptions and disconnections must not cost a
// store commit (an fsync each with sync: always) nor leave tombstones.
func TestCleanSessionsDoNotWrite(t *testing.T) {
	n, addr, _ := startLoggedNode(t, nodeConfig(t.TempDir(), ""))
	before := n.Store.Stats().Commits
	const rounds = 20
	for i := 0; i < rounds; i++ {
		for _, o := range []clientOpts{{id: "clean3", v: packet.V311, clean: true}, {id: "clean5", v: packet.V5, clean: true}} {
			c, _ := mustDial(t, addr, o)
			if _, err := c.subscribeSync(1, packet.Subscription{Filter: "clean/" + o.id, QoS: 1}); err != nil {
				t.Fatal(err)
			}
			if _, err := c.publishSync(0, "clean/x", []byte("q0"), 0, false); err != nil {
				t.Fatal(err)
			}
			c.disconnect()
		}
	}
	if !waitUntil(5*time.Second, func() bool { return n.Server.SessionCount() == 0 }) {
		t.Fatalf("%d sessions left", n.Server.SessionCount())
	}
	if d := n.Store.Stats().Commits - before; d != 0 {
		t.Errorf("%d store commits for %d clean-session connections that stored nothing", d, 2*rounds)
	}
}
