package packet

import (
	"encoding/binary"
	"fmt"
	"unsafe"
)

// EncodeVarint appends v as an MQTT Variable Byte Integer (MQTT 5.0 section
// 1.5.5) using the minimum number of bytes. v must be in
// 0..MaxRemainingLength; anything else is a programming error and panics,
// because no valid packet can carry it.
func EncodeVarint(dst []byte, v int) []byte {
	if v < 0 || v > MaxRemainingLength {
		panic(fmt.Sprintf("packet: variable byte integer %d out of range", v))
	}
	for v >= 0x80 {
		dst = append(dst, byte(v)|0x80)
		v >>= 7
	}
	return append(dst, byte(v))
}

// VarintLen returns the number of bytes EncodeVarint uses for v
// (0 <= v <= MaxRemainingLength).
func VarintLen(v int) int {
	switch {
	case v < 1<<7:
		return 1
	case v < 1<<14:
		return 2
	case v < 1<<21:
		return 3
	default:
		return 4
	}
}

// uvarint decodes a Variable Byte Integer at the start of b. It returns the
// value and the number of bytes used. n == 0 means b ends inside the integer;
// n < 0 means the encoding is malformed: longer than four bytes, or not the
// minimal encoding of its value [MQTT-1.5.5-1] (a final byte of 0 after a
// continuation byte).
func uvarint(b []byte) (v, n int) {
	for i := 0; i < 4; i++ {
		if i >= len(b) {
			return 0, 0
		}
		c := b[i]
		v |= int(c&0x7F) << (7 * i)
		if c < 0x80 {
			if c == 0 && i > 0 {
				return 0, -1
			}
			return v, i + 1
		}
	}
	return 0, -1
}

// appendString appends an MQTT length-prefixed string or binary field. A
// value longer than 65535 bytes cannot be encoded; that is a programming error
// and panics rather than writing a corrupt packet.
func appendString[T string | []byte](dst []byte, s T) []byte {
	if len(s) > 0xFFFF {
		panic(fmt.Sprintf("packet: string or binary field of %d bytes exceeds 65535", len(s)))
	}
	dst = append(dst, byte(len(s)>>8), byte(len(s)))
	return append(dst, s...)
}

func appendUint16(dst []byte, v uint16) []byte { return append(dst, byte(v>>8), byte(v)) }

func appendUint32(dst []byte, v uint32) []byte {
	return append(dst, byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
}

// reader walks a packet body. Strings and byte slices it returns alias the
// body; byte slices are capped so that appending to them never writes into
// the body.
type reader struct {
	b   []byte
	off int
}

func (r *reader) left() int { return len(r.b) - r.off }

// rest returns the unread bytes (nil if none) and consumes them.
func (r *reader) rest() []byte {
	if r.off >= len(r.b) {
		return nil
	}
	v := r.b[r.off:len(r.b):len(r.b)]
	r.off = len(r.b)
	return v
}

func truncated(what string) *Error {
	return Errorf(MalformedPacket, "%s: truncated", what)
}

func (r *reader) u8(what string) (byte, *Error) {
	if r.off >= len(r.b) {
		return 0, truncated(what)
	}
	v := r.b[r.off]
	r.off++
	return v, nil
}

func (r *reader) u16(what string) (uint16, *Error) {
	if r.left() < 2 {
		return 0, truncated(what)
	}
	v := binary.BigEndian.Uint16(r.b[r.off:])
	r.off += 2
	return v, nil
}

func (r *reader) u32(what string) (uint32, *Error) {
	if r.left() < 4 {
		return 0, truncated(what)
	}
	v := binary.BigEndian.Uint32(r.b[r.off:])
	r.off += 4
	return v, nil
}

func (r *reader) varint(what string) (int, *Error) {
	v, n := uvarint(r.b[r.off:])
	if n == 0 {
		return 0, truncated(what)
	}
	if n < 0 {
		return 0, Errorf(MalformedPacket, "%s: invalid variable byte integer", what)
	}
	r.off += n
	return v, nil
}

// binary reads a length-prefixed byte field; a zero-length field is nil.
func (r *reader) binary(what string) ([]byte, *Error) {
	if r.left() < 2 {
		return nil, truncated(what)
	}
	n := int(binary.BigEndian.Uint16(r.b[r.off:]))
	r.off += 2
	if r.left() < n {
		return nil, truncated(what)
	}
	if n == 0 {
		return nil, nil
	}
	v := r.b[r.off : r.off+n : r.off+n]
	r.off += n
	return v, nil
}

// rawString reads a length-prefixed string without validating it.
func (r *reader) rawString(what string) (string, *Error) {
	b, err := r.binary(what)
	if err != nil {
		return "", err
	}
	return unsafe.String(unsafe.SliceData(b), len(b)), nil
}

// string reads a length-prefixed UTF-8 string and checks it with ValidString.
func (r *reader) string(what string) (string, *Error) {
	s, err := r.rawString(what)
	if err != nil {
		return "", err
	}
	if !ValidString(s) {
		return "", Errorf(MalformedPacket, "%s: invalid UTF-8 string", what)
	}
	return s, nil
}

// end reports trailing bytes after a fully decoded packet.
func (r *reader) end(what string) *Error {
	if r.off != len(r.b) {
		return Errorf(MalformedPacket, "%s: %d unexpected trailing bytes", what, len(r.b)-r.off)
	}
	return nil
}

// checkFlags validates the reserved fixed-header flags of a packet other
// than PUBLISH [MQTT-2.1.3-1]. MQTT 3.1 gave those bits no meaning outside
// PUBLISH and real 3.1 clients set them freely, so, like Mosquitto, they are
// not checked for V31.
func checkFlags(t Type, flags, want, version byte) *Error {
	if flags != want && version != V31 {
		return Errorf(MalformedPacket, "%s: reserved fixed header flags 0x%X, want 0x%X", t, flags, want)
	}
	return nil
}

// asError converts a possibly nil *Error to error without producing a
// non-nil interface holding a nil pointer.
func asError(e *Error) error {
	if e == nil {
		return nil
	}
	return e
}
