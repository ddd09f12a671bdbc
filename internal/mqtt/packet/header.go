package packet

// FixedHeader is the decoded fixed header of a control packet.
type FixedHeader struct {
	Type      Type
	Flags     byte // low nibble of the first byte, not validated here
	Remaining int  // remaining length: the size of the body that follows
}

// ParseFixedHeader decodes the fixed header at the start of buf. n is the
// header length in bytes (2..5); n == 0 with a nil error means buf does not
// yet hold the whole header. The body is the next h.Remaining bytes.
//
// Errors: packet type 0 is reserved and forbidden (ProtocolError, which is
// what Mosquitto answers), and a remaining length longer than four bytes or
// not minimally encoded is MalformedPacket. The flags are not validated: the
// decoder of each packet type does that.
func ParseFixedHeader(buf []byte) (h FixedHeader, n int, err error) {
	if len(buf) == 0 {
		return h, 0, nil
	}
	t := Type(buf[0] >> 4)
	if t == 0 {
		return h, 0, Errorf(ProtocolError, "reserved packet type 0")
	}
	v, vn := uvarint(buf[1:])
	if vn == 0 {
		return h, 0, nil
	}
	if vn < 0 {
		return h, 0, Errorf(MalformedPacket, "%s: invalid remaining length", t)
	}
	return FixedHeader{Type: t, Flags: buf[0] & 0x0F, Remaining: v}, 1 + vn, nil
}

// AppendFixedHeader appends a fixed header: first byte (type and flags) and
// the remaining length.
func AppendFixedHeader(dst []byte, t Type, flags byte, remaining int) []byte {
	dst = append(dst, byte(t)<<4|flags&0x0F)
	return EncodeVarint(dst, remaining)
}
