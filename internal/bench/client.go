package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/isobar-mq/isobar/internal/mqtt/packet"
)

// maxIncoming bounds the packets the generator accepts from a broker.
const maxIncoming = 64 << 20

type role uint8

const (
	roleIdle role = iota
	rolePub
	roleSub
)

// client is one MQTT connection of the generator. The reader goroutine owns
// the read side and the decode scratch; writes go through bw under wmu.
type client struct {
	r       *runner
	idx     int // connection index, for %i in the client identifier
	role    role
	id      string
	addr    string // broker host:port; "" = Config.Addr
	version byte
	nc      net.Conn
	br      *bufio.Reader
	scratch []byte

	wmu   sync.Mutex
	bw    *bufio.Writer
	wbuf  []byte
	wrote bool // a packet was written since the last keep-alive tick

	// Publisher side.
	pubIdx   uint32
	topic    string
	window   chan struct{} // one token per unacknowledged QoS 1/2 PUBLISH
	ids      []atomic.Uint64
	nextID   uint16
	sent     atomic.Int64
	sentWin  atomic.Int64 // sent inside the measurement window
	acked    atomic.Int64
	refused  atomic.Int64 // v5 PUBACK/PUBREC with a failure reason code
	badAcks  atomic.Int64 // acknowledgements for packet identifiers not in flight
	recvMax  int          // the broker's Receive Maximum (v5), 0 = not given
	maxQoS   byte
	subTopic string // subscriber's filter

	// Subscriber side (reader goroutine only, read after it exits).
	sink     *sink
	shard    *histShard
	received atomic.Int64 // PUBLISH packets received (duplicates included)
	recvWin  atomic.Int64 // received inside the measurement window
	noHeader atomic.Int64
	// Shared-group members check order on their own part of the stream
	// (the group's tracker sees the members' streams interleaved).
	order []uint64 // per publisher: highest sequence number seen + 1
	ooo   atomic.Int64

	pub packet.Publish
	ack packet.Ack

	closing atomic.Bool
	dead    chan struct{} // closed when the reader exits
	err     error         // why the reader exited (valid after dead)
}

// sink is a receiving unit for the accounting: one subscriber, or one shared
// subscription group whose members share the tracker.
type sink struct {
	shared bool
	mu     sync.Mutex // shared groups only: members' readers share tr
	tr     *Tracker
	uniq   atomic.Int64 // tr.Unique, readable while the readers run
}

func (s *sink) observe(pub uint32, seq uint64) bool {
	var isNew bool
	if s.shared {
		s.mu.Lock()
		isNew = s.tr.Observe(pub, seq)
		s.mu.Unlock()
	} else {
		isNew = s.tr.Observe(pub, seq)
	}
	if isNew {
		s.uniq.Add(1)
	}
	return isNew
}

// errRefused marks a broker's refusal (CONNACK or SUBACK failure).
var errRefused = errors.New("refused")

// connect dials, sends CONNECT and waits for CONNACK; subscribers also
// subscribe and wait for SUBACK. On success the reader goroutine runs.
func (c *client) connect(ctx context.Context) error {
	cfg := c.r.cfg
	nc, err := c.r.dialer.dial(ctx, c.idx, c.addr)
	if err != nil {
		return err
	}
	c.nc = nc
	rsize, wsize := 512, 256
	switch c.role {
	case rolePub:
		rsize, wsize = 4096, 64<<10
	case roleSub:
		rsize, wsize = min(max(16<<10, 2*(cfg.PayloadSize+len(c.subTopic)+64)), 1<<20), 4096
	}
	c.br = bufio.NewReaderSize(nc, rsize)
	c.bw = bufio.NewWriterSize(nc, wsize)
	deadline := time.Now().Add(cfg.ConnectTimeout)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	_ = nc.SetDeadline(deadline)
	fail := func(err error) error {
		_ = nc.Close()
		return err
	}

	cp := packet.Connect{
		ProtocolVersion: c.version,
		CleanStart:      true,
		KeepAlive:       uint16(cfg.KeepAlive / time.Second),
		ClientID:        c.id,
	}
	if cfg.Username != "" {
		cp.UsernameFlag, cp.Username = true, cfg.Username
		if cfg.Password != "" {
			cp.PasswordFlag, cp.Password = true, []byte(cfg.Password)
		}
	}
	if c.version == packet.V5 {
		// Let the broker's own in-flight limit be the only window
		// towards subscribers.
		cp.Props.ReceiveMaximum = 65535
		cp.Props.Set(packet.PropReceiveMaximum)
	}
	if c.role == roleSub && cfg.PersistentSubs {
		// A persistent session: MQTT 3.1.1 clean session 0 (the client
		// identifier is fresh, so there is nothing to resume), MQTT 5 a
		// new session that outlives the connection by SessionExpiry.
		if c.version == packet.V5 {
			cp.Props.SessionExpiryInterval = uint32(cfg.SessionExpiry / time.Second)
			cp.Props.Set(packet.PropSessionExpiryInterval)
		} else {
			cp.CleanStart = false
		}
	}
	c.wbuf = cp.Append(c.wbuf[:0])
	if _, err := c.bw.Write(c.wbuf); err != nil {
		return fail(err)
	}
	if err := c.bw.Flush(); err != nil {
		return fail(err)
	}
	var ack packet.Connack
	if err := c.await(packet.CONNACK, func(h packet.FixedHeader, body []byte) error {
		if err := packet.DecodeConnack(&ack, h.Flags, body, c.version); err != nil {
			return err
		}
		if ack.ReasonCode != 0 {
			return fmt.Errorf("%w: CONNACK code %#02x", errRefused, ack.ReasonCode)
		}
		if ack.Props.Has(packet.PropReceiveMaximum) {
			c.recvMax = int(ack.Props.ReceiveMaximum)
		}
		c.maxQoS = 2
		if ack.Props.Has(packet.PropMaximumQoS) {
			c.maxQoS = ack.Props.MaximumQoS
		}
		return nil
	}); err != nil {
		return fail(err)
	}
	if byte(cfg.QoS) > c.maxQoS && c.role != roleIdle {
		return fail(fmt.Errorf("%w: broker supports QoS %d at most", errRefused, c.maxQoS))
	}
	if c.role == roleSub {
		sp := packet.Subscribe{PacketID: 1, Subs: []packet.Subscription{{Filter: c.subTopic, QoS: byte(cfg.QoS)}}}
		c.wbuf = sp.Append(c.wbuf[:0], c.version)
		if _, err := c.bw.Write(c.wbuf); err != nil {
			return fail(err)
		}
		if err := c.bw.Flush(); err != nil {
			return fail(err)
		}
		var sa packet.Suback
		if err := c.await(packet.SUBACK, func(h packet.FixedHeader, body []byte) error {
			if err := packet.DecodeSuback(&sa, h.Flags, body, c.version); err != nil {
				return err
			}
			if sa.PacketID != 1 || len(sa.ReasonCodes) != 1 {
				return fmt.Errorf("unexpected SUBACK (packet id %d, %d codes)", sa.PacketID, len(sa.ReasonCodes))
			}
			if sa.ReasonCodes[0] >= 0x80 {
				return fmt.Errorf("%w: SUBACK code %#02x for %q", errRefused, sa.ReasonCodes[0], c.subTopic)
			}
			return nil
		}); err != nil {
			return fail(err)
		}
	}
	if c.role == rolePub && cfg.QoS > 0 {
		w := cfg.Inflight
		if c.recvMax > 0 && c.recvMax < w {
			w = c.recvMax
		}
		c.window = make(chan struct{}, w)
		c.ids = make([]atomic.Uint64, 65536/64)
	}
	_ = nc.SetDeadline(time.Time{})
	c.dead = make(chan struct{})
	go c.readLoop()
	return nil
}

// await reads packets until one of type want arrives and hands it to fn.
// Anything else that may legitimately come first (retained PUBLISH packets
// after SUBSCRIBE) is handled as in the steady state.
func (c *client) await(want packet.Type, fn func(packet.FixedHeader, []byte) error) error {
	for {
		h, body, n, err := c.next()
		if err != nil {
			return err
		}
		if h.Type == want {
			err = fn(h, body)
			c.consume(n)
			return err
		}
		if h.Type == packet.DISCONNECT {
			c.consume(n)
			return fmt.Errorf("%w: DISCONNECT while waiting for %v", errRefused, want)
		}
		err = c.handle(h, body)
		c.consume(n)
		if err != nil {
			return err
		}
	}
}

// next returns the next packet. body aliases the reader's buffer until
// consume(n) is called (n is 0 when the body was copied to scratch).
func (c *client) next() (h packet.FixedHeader, body []byte, n int, err error) {
	b, err := c.br.Peek(2)
	if err != nil {
		return h, nil, 0, err
	}
	var hl int
	for {
		h, hl, err = packet.ParseFixedHeader(b)
		if err != nil {
			return h, nil, 0, err
		}
		if hl > 0 {
			break
		}
		if b, err = c.br.Peek(len(b) + 1); err != nil {
			return h, nil, 0, err
		}
	}
	if h.Remaining > maxIncoming {
		return h, nil, 0, fmt.Errorf("%v of %d bytes from the broker is over the generator's limit", h.Type, h.Remaining)
	}
	total := hl + h.Remaining
	if total <= c.br.Size() {
		if b, err = c.br.Peek(total); err != nil {
			return h, nil, 0, err
		}
		return h, b[hl:total], total, nil
	}
	if _, err = c.br.Discard(hl); err != nil {
		return h, nil, 0, err
	}
	if cap(c.scratch) < h.Remaining {
		c.scratch = make([]byte, h.Remaining)
	}
	body = c.scratch[:h.Remaining]
	_, err = io.ReadFull(c.br, body)
	return h, body, 0, err
}

func (c *client) consume(n int) {
	if n > 0 {
		_, _ = c.br.Discard(n)
	}
}

func (c *client) readLoop() {
	defer close(c.dead)
	for {
		h, body, n, err := c.next()
		if err == nil {
			err = c.handle(h, body)
			c.consume(n)
		}
		if err != nil {
			c.err = err
			return
		}
		if c.br.Buffered() == 0 {
			c.wmu.Lock()
			if c.bw.Buffered() > 0 {
				err = c.bw.Flush()
			}
			c.wmu.Unlock()
			if err != nil {
				c.err = err
				return
			}
		}
	}
}

// errServerDisconnect wraps a DISCONNECT from the broker.
var errServerDisconnect = errors.New("DISCONNECT from broker")

// handle processes one incoming packet in the steady state.
func (c *client) handle(h packet.FixedHeader, body []byte) error {
	switch h.Type {
	case packet.PUBLISH:
		if err := packet.DecodePublish(&c.pub, h.Flags, body, c.version); err != nil {
			return err
		}
		c.onPublish(&c.pub)
		switch c.pub.QoS {
		case 1:
			c.writeAck(packet.PUBACK, c.pub.PacketID)
		case 2:
			c.writeAck(packet.PUBREC, c.pub.PacketID)
		}
	case packet.PUBACK, packet.PUBREC, packet.PUBREL, packet.PUBCOMP:
		if err := packet.DecodeAck(&c.ack, h.Type, h.Flags, body, c.version); err != nil {
			return err
		}
		switch h.Type {
		case packet.PUBACK:
			c.release(c.ack.PacketID, c.ack.ReasonCode)
		case packet.PUBREC:
			if c.ack.ReasonCode >= 0x80 {
				c.release(c.ack.PacketID, c.ack.ReasonCode)
			} else {
				c.writeAck(packet.PUBREL, c.ack.PacketID)
			}
		case packet.PUBCOMP:
			c.release(c.ack.PacketID, c.ack.ReasonCode)
		case packet.PUBREL:
			c.writeAck(packet.PUBCOMP, c.ack.PacketID)
		}
	case packet.PINGRESP, packet.SUBACK, packet.UNSUBACK:
	case packet.DISCONNECT:
		var d packet.Disconnect
		if len(body) > 0 {
			if err := packet.DecodeDisconnect(&d, h.Flags, body, c.version); err != nil {
				return err
			}
		}
		return fmt.Errorf("%w (reason %#02x)", errServerDisconnect, d.ReasonCode)
	default:
		return fmt.Errorf("unexpected %v from broker", h.Type)
	}
	return nil
}

// onPublish accounts for a received message.
func (c *client) onPublish(p *packet.Publish) {
	now := time.Now().UnixNano()
	c.received.Add(1)
	r := c.r
	if now >= r.winStart && now < r.winEnd {
		c.recvWin.Add(1)
	}
	ts, seq, pub, ok := DecodeHeader(p.Payload)
	if !ok {
		c.noHeader.Add(1)
		return
	}
	if c.sink != nil {
		if c.sink.observe(pub, seq) && c.order != nil && int(pub) < len(c.order) {
			if seq < c.order[pub] {
				c.ooo.Add(1)
			} else {
				c.order[pub] = seq + 1
			}
		}
	}
	if ts >= r.winStart && ts < r.winEnd {
		c.shard.record(now - ts)
	}
}

// writeAck queues an acknowledgement; the reader flushes when idle.
func (c *client) writeAck(t packet.Type, id uint16) {
	a := packet.Ack{Type: t, PacketID: id}
	c.wmu.Lock()
	c.wbuf = a.Append(c.wbuf[:0], c.version)
	_, _ = c.bw.Write(c.wbuf)
	c.wrote = true
	c.wmu.Unlock()
}

// release frees the window slot and packet identifier of an acknowledged
// PUBLISH.
func (c *client) release(id uint16, code byte) {
	if c.ids == nil {
		c.badAcks.Add(1)
		return
	}
	w, b := &c.ids[id/64], uint64(1)<<(id%64)
	if w.And(^b)&b == 0 {
		c.badAcks.Add(1)
		return
	}
	if code >= 0x80 {
		c.refused.Add(1)
	}
	c.acked.Add(1)
	select {
	case <-c.window:
	default:
	}
}

// allocID returns a free packet identifier (the window guarantees one).
func (c *client) allocID() uint16 {
	for {
		c.nextID++
		if c.nextID == 0 {
			c.nextID = 1
		}
		id := c.nextID
		w, b := &c.ids[id/64], uint64(1)<<(id%64)
		if w.Or(b)&b == 0 {
			return id
		}
	}
}

// inflight returns how many PUBLISH packets await acknowledgement.
func (c *client) inflight() int {
	if c.window == nil {
		return 0
	}
	return len(c.window)
}

func (c *client) flush() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.bw.Buffered() == 0 {
		return nil
	}
	return c.bw.Flush()
}

// publishLoop sends messages until the run's publishing phase ends.
// rate is this publisher's share in messages per second (0 = as fast as the
// window allows); phase offsets its schedule so publishers do not burst in
// step.
func (c *client) publishLoop(rate float64, phase time.Duration) {
	r := c.r
	cfg := r.cfg
	payload := NewPayload(cfg.PayloadSize)
	p := packet.Publish{QoS: byte(cfg.QoS), Retain: cfg.Retain, Topic: c.topic, Payload: payload}
	start := r.pubStart.Add(phase)
	var seq uint64
	var interval time.Duration
	if rate > 0 {
		interval = time.Duration(float64(time.Second) / rate)
		if d := time.Until(start); d > 0 {
			if !sleepUntil(start, r.pubStop, c.dead) {
				return
			}
		}
	}
	defer func() { _ = c.flush() }()
	for {
		now := time.Now()
		if !now.Before(r.pubEnd) {
			return
		}
		batch := int64(256)
		if rate > 0 {
			due := int64(now.Sub(start)/interval) + 1 - int64(seq)
			if due <= 0 {
				if c.flush() != nil {
					return
				}
				if !sleepUntil(start.Add(time.Duration(seq)*interval), r.pubStop, c.dead) {
					return
				}
				continue
			}
			batch = min(batch, due)
		}
		for range batch {
			if p.QoS > 0 {
				select {
				case c.window <- struct{}{}:
				default:
					if c.flush() != nil {
						return
					}
					select {
					case c.window <- struct{}{}:
					case <-r.pubStop:
						return
					case <-c.dead:
						return
					}
				}
				p.PacketID = c.allocID()
			}
			if c.writePublish(&p, seq) != nil {
				return
			}
			seq++
		}
		if rate > 0 && c.flush() != nil {
			return
		}
	}
}

// writePublish stamps p's payload with the send time, seq and the
// publisher's index and queues the packet (p.PacketID already set).
func (c *client) writePublish(p *packet.Publish, seq uint64) error {
	ts := time.Now().UnixNano()
	EncodeHeader(p.Payload, ts, seq, c.pubIdx)
	c.wmu.Lock()
	c.wbuf = p.AppendHeader(c.wbuf[:0], c.version)
	_, err := c.bw.Write(c.wbuf)
	if err == nil {
		_, err = c.bw.Write(p.Payload)
	}
	c.wrote = true
	c.wmu.Unlock()
	if err != nil {
		return err
	}
	c.sent.Add(1)
	if ts >= c.r.winStart && ts < c.r.winEnd {
		c.sentWin.Add(1)
	}
	return nil
}

// sleepUntil waits until t; false when stop or dead closed first.
func sleepUntil(t time.Time, stop, dead <-chan struct{}) bool {
	d := time.Until(t)
	if d <= 0 {
		return true
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return true
	case <-stop:
		return false
	case <-dead:
		return false
	}
}

// ping sends PINGREQ when nothing was written since the previous tick.
func (c *client) ping() {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.wrote {
		c.wrote = false
		return
	}
	c.wbuf = packet.AppendPingreq(c.wbuf[:0])
	if _, err := c.bw.Write(c.wbuf); err == nil {
		_ = c.bw.Flush()
	}
}

// close sends DISCONNECT (best effort, bounded) and closes the connection.
func (c *client) close() {
	if c.nc == nil || c.closing.Swap(true) {
		return
	}
	_ = c.nc.SetWriteDeadline(time.Now().Add(500 * time.Millisecond))
	c.wmu.Lock()
	d := packet.Disconnect{}
	c.wbuf = d.Append(c.wbuf[:0], c.version)
	if _, err := c.bw.Write(c.wbuf); err == nil {
		_ = c.bw.Flush()
	}
	c.wmu.Unlock()
	_ = c.nc.Close()
}
