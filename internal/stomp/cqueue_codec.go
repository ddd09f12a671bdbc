package stomp

import (
	"encoding/binary"
	"errors"

	"github.com/isobar-mq/isobar/internal/stomp/queue"
)

// The bodies of the queue service's messages: big-endian integers,
// varint-prefixed strings and byte strings.

var errShort = errors.New("stomp cluster queues: message too short")

type enc struct{ b []byte }

func (e *enc) u8(v uint8)       { e.b = append(e.b, v) }
func (e *enc) u64(v uint64)     { e.b = binary.BigEndian.AppendUint64(e.b, v) }
func (e *enc) uvarint(v uint64) { e.b = binary.AppendUvarint(e.b, v) }
func (e *enc) varint(v int64)   { e.b = binary.AppendVarint(e.b, v) }
func (e *enc) str(s string) {
	e.uvarint(uint64(len(s)))
	e.b = append(e.b, s...)
}
func (e *enc) bytes(b []byte) {
	e.uvarint(uint64(len(b)))
	e.b = append(e.b, b...)
}
func (e *enc) bool(v bool) {
	if v {
		e.u8(1)
	} else {
		e.u8(0)
	}
}

// msg encodes a queue message with what the manager set (id, timestamp,
// delivery count), which a delivery carries to the consumer.
func (e *enc) msg(m *queue.Message) {
	e.uvarint(uint64(len(m.Headers)))
	for _, h := range m.Headers {
		e.str(h.Name)
		e.str(h.Value)
	}
	e.bytes(m.Body)
	e.varint(m.Expires)
	e.u8(m.Priority)
	e.bool(m.Persistent)
	e.u64(m.ID)
	e.varint(m.Timestamp)
	e.bool(m.Redelivered)
	e.uvarint(uint64(max(m.Deliveries, 0)))
}

// dec reads what enc wrote; the first error sticks and every later read
// returns zero values.
type dec struct {
	b   []byte
	err error
}

func (d *dec) take(n uint64) []byte {
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.err = errShort
		return nil
	}
	out := d.b[:n:n]
	d.b = d.b[n:]
	return out
}

func (d *dec) u8() uint8 {
	b := d.take(1)
	if b == nil {
		return 0
	}
	return b[0]
}

func (d *dec) u64() uint64 {
	b := d.take(8)
	if b == nil {
		return 0
	}
	return binary.BigEndian.Uint64(b)
}

func (d *dec) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = errShort
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *dec) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.err = errShort
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *dec) str() string   { return string(d.take(d.uvarint())) }
func (d *dec) bool() bool    { return d.u8() != 0 }
func (d *dec) bytes() []byte { return append([]byte(nil), d.take(d.uvarint())...) }

func (d *dec) msg() *queue.Message {
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.err = errShort
		return nil
	}
	m := &queue.Message{}
	if n > 0 {
		m.Headers = make([]queue.Header, 0, n)
	}
	for range n {
		m.Headers = append(m.Headers, queue.Header{Name: d.str(), Value: d.str()})
	}
	m.Body = d.bytes()
	m.Expires = d.varint()
	m.Priority = d.u8()
	m.Persistent = d.bool()
	m.ID = d.u64()
	m.Timestamp = d.varint()
	m.Redelivered = d.bool()
	m.Deliveries = int(min(d.uvarint(), 1<<30))
	if d.err != nil {
		return nil
	}
	return m
}
