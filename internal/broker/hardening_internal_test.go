package broker

// White-box regression tests of the broker-core hardening: the guard in
// client.sendPublish that never builds a PUBLISH the protocol cannot carry
// (item 4 of the hardening issue).

import (
	"bytes"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/isobar-mq/isobar/internal/mqtt/packet"
	"github.com/isobar-mq/isobar/internal/topic"
)

// hdCaptureConn is a net.Conn that keeps what is written to it; reads
// block until it is closed.
type hdCaptureConn struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	closed chan struct{}
	once   sync.Once
}

func newHdCaptureConn() *hdCaptureConn { return &hdCaptureConn{closed: make(chan struct{})} }

func (c *hdCaptureConn) Read([]byte) (int, error) { <-c.closed; return 0, io.EOF }
func (c *hdCaptureConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.Write(b)
}
func (c *hdCaptureConn) Close() error        { c.once.Do(func() { close(c.closed) }); return nil }
func (c *hdCaptureConn) LocalAddr() net.Addr { return &net.TCPAddr{} }
func (c *hdCaptureConn) RemoteAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}
}
func (c *hdCaptureConn) SetDeadline(time.Time) error      { return nil }
func (c *hdCaptureConn) SetReadDeadline(time.Time) error  { return nil }
func (c *hdCaptureConn) SetWriteDeadline(time.Time) error { return nil }

// written returns the packets written so far (waiting for the flusher).
func (c *hdCaptureConn) written(t *testing.T, cl *client, version byte) []any {
	t.Helper()
	cl.omu.Lock()
	cl.waitFlushedLocked()
	cl.omu.Unlock()
	c.mu.Lock()
	data := append([]byte(nil), c.buf.Bytes()...)
	c.mu.Unlock()
	var out []any
	r := bytes.NewReader(data)
	for r.Len() > 0 {
		p, err := packet.ReadPacket(r, version, 0)
		if err != nil {
			t.Fatalf("decoding what was written: %v", err)
		}
		out = append(out, p)
	}
	return out
}

// hdBigPayload is shared by the cases: a buffer of the protocol's maximum
// remaining length that is never written to (the guard must drop the
// packets before encoding them), so its pages are never touched.
var hdBigPayload = sync.OnceValue(func() []byte { return make([]byte, packet.MaxRemainingLength) })

// Item 4, white-box: sendPublish drops (and counts) a delivery whose
// re-encoding for this client exceeds the protocol's maximum packet size,
// instead of panicking in the encoder, and leaves the client's state (its
// output, its outbound topic aliases) as if nothing had been tried. The
// cases are the ways the re-encoding grows: a 3.1.1 message at the
// maximum re-encoded as 5.0 with a subscription identifier (the size as
// it arrived is known, or not), and a message that arrived through a
// topic alias, so without its (65,535-byte) topic name, delivered with
// two subscription identifiers.
func TestHardeningSendPublishProtocolLimit(t *testing.T) {
	s := New(Options{}, nil, nil)
	defer func() { _ = s.Shutdown(t.Context()) }()
	const mrl = packet.MaxRemainingLength
	longTopic := strings.Repeat("t", 65535)
	for _, tc := range []struct {
		name    string
		topic   string
		payload int    // bytes
		size    uint32 // Message.size: as it arrived (0 = unknown)
		subIDs  []uint32
		alias   uint16 // client's Topic Alias Maximum
	}{
		// A 3.1.1 PUBLISH with remaining length mrl: 2 + 5 + payload.
		{"3.1.1 at the maximum, with a subscription identifier", "big/x", mrl - 7, mrl + 5, []uint32{268435455}, 0},
		{"size unknown", "big/x", mrl - 7, 0, []uint32{268435455}, 0},
		{"3.1.1 at the maximum, no subscription identifier", "big/x", mrl - 7, mrl + 5, nil, 0},
		{"with an outbound topic alias", "big/x", mrl - 7, mrl + 5, []uint32{1}, 10},
		// A 5.0 PUBLISH with an empty topic name and a Topic Alias: 2 +
		// 1 + 3 + payload = mrl - 65541, so size = mrl - 65536.
		{"arrived through a topic alias", longTopic, mrl - 65547, mrl - 65536, []uint32{268435455, 268435454}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn := newHdCaptureConn()
			c := newClient(s, conn, "hd")
			defer func() { _ = conn.Close() }()
			c.id, c.version, c.aliasOutMax = "hd-sub", packet.V5, tc.alias
			m := &Message{Topic: tc.topic, Payload: hdBigPayload()[:tc.payload], Received: time.Now().UnixNano(), size: tc.size}
			d := &Delivery{Msg: m, SubIDs: tc.subIDs}
			before := s.stats.droppedTooLarge.Load()
			var got int
			func() {
				defer func() {
					if r := recover(); r != nil {
						t.Fatalf("sendPublish panicked: %v", r)
					}
				}()
				got = c.sendPublish(d, 0, false, time.Now().UnixNano())
			}()
			if got != sendTooBig {
				t.Fatalf("sendPublish = %d, want sendTooBig", got)
			}
			if n := s.stats.droppedTooLarge.Load() - before; n != 1 {
				t.Errorf("DroppedTooLarge grew by %d, want 1", n)
			}
			c.omu.Lock()
			pending, aliases := c.pending, len(c.aliasOut)
			c.omu.Unlock()
			if pending != 0 || aliases != 0 {
				t.Errorf("after the drop: %d bytes pending, %d outbound aliases; want none", pending, aliases)
			}
			// The next, small message on that topic goes out whole: its
			// topic name with a new alias if the client takes aliases.
			small := &Message{Topic: tc.topic, Payload: []byte("small"), Received: time.Now().UnixNano(), size: 64}
			if got := c.sendPublish(&Delivery{Msg: small, SubIDs: tc.subIDs}, 0, false, time.Now().UnixNano()); got != sendOK {
				t.Fatalf("small message: sendPublish = %d", got)
			}
			pkts := conn.written(t, c, packet.V5)
			if len(pkts) != 1 {
				t.Fatalf("%d packets written, want the small PUBLISH only", len(pkts))
			}
			p, ok := pkts[0].(*packet.Publish)
			if !ok || p.Topic != tc.topic || string(p.Payload) != "small" {
				t.Fatalf("written: %T %+v", pkts[0], pkts[0])
			}
			if tc.alias > 0 && (!p.Props.Has(packet.PropTopicAlias) || p.Props.TopicAlias != 1) {
				t.Errorf("small message: topic alias %v %d, want alias 1 with the topic name", p.Props.Has(packet.PropTopicAlias), p.Props.TopicAlias)
			}
		})
	}
}

// Item 4, white-box, QoS 1 through a session: a message too large for the
// client once re-encoded is dropped when the session sends it, and the
// session lets go of it (packet identifier, held bytes), as if delivered
// [MQTT-3.1.2-25].
func TestHardeningSessionDropsUnencodable(t *testing.T) {
	s := New(Options{MaxQueuedBytes: -1}, nil, nil)
	defer func() { _ = s.Shutdown(t.Context()) }()
	conn := newHdCaptureConn()
	defer func() { _ = conn.Close() }()
	c := newClient(s, conn, "hd")
	c.id, c.version, c.sendQuota = "hd-sess", packet.V5, 20
	c.tx = s.newTxn()
	var ack packet.Connack
	if !s.attach(c, true, 0, nil, 0, &ack, c.tx) {
		t.Fatal("attach refused")
	}
	sess := c.sess
	const mrl = packet.MaxRemainingLength
	m := &Message{Topic: "big/x", QoS: 1, Payload: hdBigPayload()[:mrl-7], Received: time.Now().UnixNano(), size: mrl + 5}
	before := s.stats.droppedTooLarge.Load()
	sess.Deliver(Delivery{Msg: m, QoS: 1, SubIDs: []uint32{7}}, c.tx, time.Now().UnixNano())
	if n := s.stats.droppedTooLarge.Load() - before; n != 1 {
		t.Errorf("DroppedTooLarge grew by %d, want 1", n)
	}
	sess.mu.Lock()
	msgs, queue, sent, held := len(sess.msgs), len(sess.queue), sess.sent, sess.bytes
	sess.mu.Unlock()
	if msgs != 0 || queue != 0 || sent != 0 || held != 0 || s.QueuedBytes() != 0 {
		t.Fatalf("after the drop: %d messages, %d queued, %d in flight, %d bytes held (%d in total); want none", msgs, queue, sent, held, s.QueuedBytes())
	}
	sess.Deliver(Delivery{Msg: &Message{Topic: "big/x", QoS: 1, Payload: []byte("small"), Received: time.Now().UnixNano(), size: 64}, QoS: 1}, c.tx, time.Now().UnixNano())
	pkts := conn.written(t, c, packet.V5)
	if len(pkts) != 2 {
		t.Fatalf("written %d packets, want CONNACK and the small PUBLISH", len(pkts))
	}
	if p, ok := pkts[1].(*packet.Publish); !ok || string(p.Payload) != "small" || p.QoS != 1 {
		t.Fatalf("written: %T %+v", pkts[1], pkts[1])
	}
}

// hdGrowHook rewrites every message it sees the way a hook naturally
// would, from a copy of the original, here with a much larger payload.
type hdGrowHook struct{ payload []byte }

func (hdGrowHook) HookName() string { return "test-grow" }

func (h hdGrowHook) OnPublish(_ ClientInfo, m *Message) (*Message, byte) {
	n := *m
	n.Payload = h.payload
	return &n, 0
}

// Item 4, white-box, rewritten messages: a publish hook that returns a
// modified copy of the message does not carry over the size the original
// arrived with (the guard would trust it and build a packet the protocol
// cannot carry): the rewritten message is measured again and dropped for
// the subscriber it cannot reach.
func TestHardeningRewrittenMessageMeasured(t *testing.T) {
	const mrl = packet.MaxRemainingLength
	s := New(Options{}, nil, nil)
	defer func() { _ = s.Shutdown(t.Context()) }()
	s.AddHook(hdGrowHook{payload: hdBigPayload()[:mrl-7]})
	conn := newHdCaptureConn()
	defer func() { _ = conn.Close() }()
	c := newClient(s, conn, "hd")
	c.id, c.version, c.sendQuota = "hd-rw", packet.V5, 20
	c.tx = s.newTxn()
	var ack packet.Connack
	if !s.attach(c, true, 0, nil, 0, &ack, c.tx) {
		t.Fatal("attach refused")
	}
	s.index.Subscribe(c.sess, "big/#", topic.Options{ID: 9})

	// As handlePublish builds it: small, with the size it arrived with.
	m := &Message{Topic: "big/x", Payload: []byte("small"), Received: time.Now().UnixNano(), size: 64}
	routed, code := s.runPublishHooks(ClientInfo{ClientID: "hd-pub"}, m)
	if routed == nil || code != 0 {
		t.Fatalf("hook: %v 0x%02X", routed, code)
	}
	before := s.stats.droppedTooLarge.Load()
	var sc routeScratch
	func() {
		defer func() {
			if r := recover(); r != nil {
				t.Fatalf("routing the rewritten message panicked: %v", r)
			}
		}()
		s.publish(routed, &sc, c.tx)
	}()
	if n := s.stats.droppedTooLarge.Load() - before; n != 1 {
		t.Errorf("DroppedTooLarge grew by %d, want 1", n)
	}
}
