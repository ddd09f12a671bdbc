package bench

import (
	"bufio"
	"io"
	"sync/atomic"
	"testing"
	"time"

	"github.com/isobar-mq/isobar/internal/mqtt/packet"
)

// loopReader serves the same bytes forever.
type loopReader struct {
	b   []byte
	off int
}

func (l *loopReader) Read(p []byte) (int, error) {
	n := copy(p, l.b[l.off:])
	l.off = (l.off + n) % len(l.b)
	return n, nil
}

// steadyClient is a client wired to an endless stream of PUBLISH packets
// (QoS qos, one publisher) and a writer that discards.
func steadyClient(t *testing.T, qos byte, version byte) *client {
	t.Helper()
	r := &runner{cfg: &Config{PayloadSize: 64}, shards: newHistShards(1)}
	now := time.Now().UnixNano()
	r.winStart, r.winEnd = now-int64(time.Hour), now+int64(time.Hour)
	var stream []byte
	payload := NewPayload(64)
	for i := range 64 {
		EncodeHeader(payload, now, uint64(i), 0)
		p := packet.Publish{QoS: qos, Topic: "bench/p2p/0", Payload: payload, PacketID: uint16(i + 1)}
		stream = p.Append(stream, version)
	}
	c := &client{r: r, role: roleSub, version: version, shard: r.shards[0]}
	c.sink = &sink{tr: NewTracker(0, 1)}
	c.br = bufio.NewReaderSize(&loopReader{b: stream}, 16<<10)
	c.bw = bufio.NewWriterSize(io.Discard, 4096)
	return c
}

func TestReceivePathDoesNotAllocate(t *testing.T) {
	for _, tc := range []struct {
		qos, version byte
	}{{0, packet.V311}, {1, packet.V311}, {2, packet.V5}} {
		c := steadyClient(t, tc.qos, tc.version)
		step := func() {
			h, body, n, err := c.next()
			if err == nil {
				err = c.handle(h, body)
				c.consume(n)
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		for range 200 { // warm up: tracker window, histogram, buffers
			step()
		}
		if a := testing.AllocsPerRun(2000, step); a != 0 {
			t.Errorf("QoS %d v%d: %.2f allocations per received message", tc.qos, tc.version, a)
		}
		if c.received.Load() == 0 || c.sink.uniq.Load() == 0 {
			t.Fatalf("QoS %d: nothing accounted", tc.qos)
		}
	}
}

func TestPublishPathDoesNotAllocate(t *testing.T) {
	for _, qos := range []byte{0, 1} {
		r := &runner{cfg: &Config{PayloadSize: 64}}
		c := &client{r: r, role: rolePub, version: packet.V311, topic: "bench/p2p/0"}
		c.bw = bufio.NewWriterSize(io.Discard, 64<<10)
		if qos > 0 {
			c.window = make(chan struct{}, 10)
			c.ids = make([]atomic.Uint64, 65536/64)
		}
		p := packet.Publish{QoS: qos, Topic: c.topic, Payload: NewPayload(64)}
		var seq uint64
		step := func() {
			if qos > 0 {
				c.window <- struct{}{}
				p.PacketID = c.allocID()
			}
			if err := c.writePublish(&p, seq); err != nil {
				t.Fatal(err)
			}
			seq++
			if qos > 0 {
				c.release(p.PacketID, 0)
			}
		}
		for range 100 {
			step()
		}
		if a := testing.AllocsPerRun(5000, step); a != 0 {
			t.Errorf("QoS %d: %.2f allocations per published message", qos, a)
		}
		if qos > 0 && (c.acked.Load() != c.sent.Load() || c.badAcks.Load() != 0) {
			t.Fatalf("acked %d of %d, bad %d", c.acked.Load(), c.sent.Load(), c.badAcks.Load())
		}
	}
}
