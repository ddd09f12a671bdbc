package cluster

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"strconv"
)

// FrameType is the first byte of a node-link frame. The values are the wire
// format: never renumber them, append new types at the end. A receiver
// hands types it does not know to its handler, which ignores them, so a
// newer node may send a new type to an older one.
type FrameType uint8

// Frame types. The link layer handles Ping and Pong itself; the cluster core
// encodes and decodes the bodies of the others.
const (
	FramePing FrameType = iota + 1
	FramePong
	FrameRouteSnapshot
	FrameRouteAdd
	FrameRouteDel
	FramePublish
	FrameAck
	FrameRetain
	FrameRetainDigest
	FrameClaim
	FrameClaimReply
	FrameSessionDeliver
	FrameSessionDigest
	FrameSessionMerge
	FrameHandoff
	FrameHandoffReply
	FrameReplOps
	FrameReplSnapshot
	FrameReplDrop
	FrameRouteDigest
	FrameRouteResync
	FrameService
	FrameReplResync
)

var frameTypeNames = [...]string{
	FramePing:           "Ping",
	FramePong:           "Pong",
	FrameRouteSnapshot:  "RouteSnapshot",
	FrameRouteAdd:       "RouteAdd",
	FrameRouteDel:       "RouteDel",
	FramePublish:        "Publish",
	FrameAck:            "Ack",
	FrameRetain:         "Retain",
	FrameRetainDigest:   "RetainDigest",
	FrameClaim:          "Claim",
	FrameClaimReply:     "ClaimReply",
	FrameSessionDeliver: "SessionDeliver",
	FrameSessionDigest:  "SessionDigest",
	FrameSessionMerge:   "SessionMerge",
	FrameHandoff:        "Handoff",
	FrameHandoffReply:   "HandoffReply",
	FrameReplOps:        "ReplOps",
	FrameReplSnapshot:   "ReplSnapshot",
	FrameReplDrop:       "ReplDrop",
	FrameRouteDigest:    "RouteDigest",
	FrameRouteResync:    "RouteResync",
	FrameService:        "Service",
	FrameReplResync:     "ReplResync",
}

// String returns the type's name, or FrameType(N) for an unknown type.
func (t FrameType) String() string {
	if int(t) < len(frameTypeNames) && frameTypeNames[t] != "" {
		return frameTypeNames[t]
	}
	return "FrameType(" + strconv.Itoa(int(t)) + ")"
}

// FrameHeaderLen is the size of a frame header: u8 type | u32 big-endian
// body length.
const FrameHeaderLen = 5

// DefaultMaxFrame is the default bound of a frame body (64 MiB).
const DefaultMaxFrame = 64 << 20

// Errors of the framing layer.
var (
	// ErrFrameTooLarge: a frame's declared body length is above the bound.
	// The stream cannot be resynchronised: close the connection.
	ErrFrameTooLarge = errors.New("cluster link: frame too large")
	// ErrShortBody: a Dec getter ran past the end of the body.
	ErrShortBody = errors.New("cluster link: frame body too short")
	// ErrBadVarint: a Dec varint is longer than 64 bits.
	ErrBadVarint = errors.New("cluster link: malformed varint in frame body")
)

// AppendFrame appends the frame t with body to dst and returns the result.
// It does not check the length against a bound (the receiver does); bodies
// of 4 GiB or more cannot be framed and panic.
func AppendFrame(dst []byte, t FrameType, body []byte) []byte {
	if uint64(len(body)) > math.MaxUint32 {
		panic("cluster: frame body too large to encode")
	}
	dst = append(dst, byte(t))
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(body)))
	return append(dst, body...)
}

// readGrowStep bounds how much ReadFrame allocates ahead of the data that
// has actually arrived, so a declared length costs memory only as the
// bytes come in.
const readGrowStep = 1 << 20

// ReadFrame reads one frame from r. The body is read into buf when it fits
// in cap(buf) (so the returned body may alias buf; pass it back as buf to
// reuse the memory), else into new memory that grows with the data
// received, never far ahead of it. maxBody bounds the body length (<= 0 means
// DefaultMaxFrame); a longer frame returns its type and ErrFrameTooLarge
// without reading the body. Types this package does not know are returned
// like the others: the caller ignores them.
//
// A clean end of stream before a frame returns io.EOF; an end inside a
// frame, io.ErrUnexpectedEOF.
func ReadFrame(r *bufio.Reader, maxBody int, buf []byte) (FrameType, []byte, error) {
	if maxBody <= 0 {
		maxBody = DefaultMaxFrame
	}
	hdr, err := r.Peek(FrameHeaderLen)
	if err != nil {
		if err == io.EOF && len(hdr) > 0 {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, err
	}
	t := FrameType(hdr[0])
	n := binary.BigEndian.Uint32(hdr[1:])
	if _, err := r.Discard(FrameHeaderLen); err != nil {
		return 0, nil, err
	}
	if uint64(n) > uint64(maxBody) {
		return t, nil, ErrFrameTooLarge
	}
	size := int(n)
	if size <= cap(buf) || size <= readGrowStep {
		var body []byte
		if size <= cap(buf) {
			body = buf[:size]
		} else {
			body = make([]byte, size)
		}
		if _, err := io.ReadFull(r, body); err != nil {
			return t, nil, unexpected(err)
		}
		return t, body, nil
	}
	body := buf[:0]
	for len(body) < size {
		step := min(size-len(body), max(len(body), readGrowStep))
		if cap(body)-len(body) < step {
			grown := make([]byte, len(body), len(body)+step)
			copy(grown, body)
			body = grown
		}
		m, err := io.ReadFull(r, body[len(body):len(body)+step])
		body = body[:len(body)+m]
		if err != nil {
			return t, nil, unexpected(err)
		}
	}
	return t, body, nil
}

func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// Enc appends the fields of a frame body to B. The integers are big-endian;
// Bytes and String are a uvarint length then the bytes.
type Enc struct{ B []byte }

// U8 appends one byte.
func (e *Enc) U8(v uint8) { e.B = append(e.B, v) }

// Bool appends 1 for true, 0 for false.
func (e *Enc) Bool(v bool) {
	if v {
		e.B = append(e.B, 1)
	} else {
		e.B = append(e.B, 0)
	}
}

// U16 appends v big-endian.
func (e *Enc) U16(v uint16) { e.B = binary.BigEndian.AppendUint16(e.B, v) }

// U32 appends v big-endian.
func (e *Enc) U32(v uint32) { e.B = binary.BigEndian.AppendUint32(e.B, v) }

// U64 appends v big-endian.
func (e *Enc) U64(v uint64) { e.B = binary.BigEndian.AppendUint64(e.B, v) }

// Uvarint appends v as an unsigned varint (encoding/binary).
func (e *Enc) Uvarint(v uint64) { e.B = binary.AppendUvarint(e.B, v) }

// Varint appends v as a signed (zig-zag) varint (encoding/binary).
func (e *Enc) Varint(v int64) { e.B = binary.AppendVarint(e.B, v) }

// Bytes appends len(b) as a uvarint, then b.
func (e *Enc) Bytes(b []byte) {
	e.B = binary.AppendUvarint(e.B, uint64(len(b)))
	e.B = append(e.B, b...)
}

// String appends len(s) as a uvarint, then s.
func (e *Enc) String(s string) {
	e.B = binary.AppendUvarint(e.B, uint64(len(s)))
	e.B = append(e.B, s...)
}

// Dec reads the fields Enc wrote, from the front of B. The first getter
// that runs past the end (or meets a malformed varint) sets Err; from then
// on every getter returns the zero value. Dec never panics, whatever B
// holds: decode every field, then check Err once.
type Dec struct {
	B   []byte
	Err error
}

func (d *Dec) take(n int) []byte {
	if d.Err != nil {
		return nil
	}
	if n > len(d.B) {
		d.Err = ErrShortBody
		d.B = nil
		return nil
	}
	b := d.B[:n:n]
	d.B = d.B[n:]
	return b
}

// Len returns the number of bytes not yet read.
func (d *Dec) Len() int { return len(d.B) }

// U8 reads one byte.
func (d *Dec) U8() uint8 {
	if b := d.take(1); b != nil {
		return b[0]
	}
	return 0
}

// Bool reads one byte: anything but 0 is true.
func (d *Dec) Bool() bool { return d.U8() != 0 }

// U16 reads a big-endian uint16.
func (d *Dec) U16() uint16 {
	if b := d.take(2); b != nil {
		return binary.BigEndian.Uint16(b)
	}
	return 0
}

// U32 reads a big-endian uint32.
func (d *Dec) U32() uint32 {
	if b := d.take(4); b != nil {
		return binary.BigEndian.Uint32(b)
	}
	return 0
}

// U64 reads a big-endian uint64.
func (d *Dec) U64() uint64 {
	if b := d.take(8); b != nil {
		return binary.BigEndian.Uint64(b)
	}
	return 0
}

// Uvarint reads an unsigned varint.
func (d *Dec) Uvarint() uint64 {
	if d.Err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.B)
	return d.varint(v, n)
}

// Varint reads a signed (zig-zag) varint.
func (d *Dec) Varint() int64 {
	if d.Err != nil {
		return 0
	}
	v, n := binary.Varint(d.B)
	return int64(d.varint(uint64(v), n))
}

func (d *Dec) varint(v uint64, n int) uint64 {
	switch {
	case n == 0:
		d.Err, d.B = ErrShortBody, nil
		return 0
	case n < 0:
		d.Err, d.B = ErrBadVarint, nil
		return 0
	}
	d.B = d.B[n:]
	return v
}

// Bytes reads a uvarint length and that many bytes. The result aliases B
// (the frame body, valid only during the handler call): copy what must be
// kept.
func (d *Dec) Bytes() []byte {
	n := d.Uvarint()
	if d.Err != nil {
		return nil
	}
	if n > uint64(len(d.B)) {
		d.Err, d.B = ErrShortBody, nil
		return nil
	}
	return d.take(int(n))
}

// String reads a uvarint length and that many bytes, as a new string.
func (d *Dec) String() string {
	return string(d.Bytes())
}
