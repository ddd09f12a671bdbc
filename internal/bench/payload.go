package bench

import "encoding/binary"

// HeaderSize is the size of the header at the start of every payload the
// generator publishes: 8 bytes of send time (Unix nanoseconds), 8 bytes of
// sequence number and 4 bytes of publisher index, all big-endian. Payloads
// are padded after it to the requested size, which therefore cannot be
// smaller than HeaderSize.
const HeaderSize = 20

// EncodeHeader writes the payload header into p, which must be at least
// HeaderSize long. The rest of p (the padding) is left alone.
func EncodeHeader(p []byte, sentUnixNano int64, seq uint64, pub uint32) {
	_ = p[HeaderSize-1]
	binary.BigEndian.PutUint64(p[0:8], uint64(sentUnixNano))
	binary.BigEndian.PutUint64(p[8:16], seq)
	binary.BigEndian.PutUint32(p[16:20], pub)
}

// DecodeHeader reads the payload header. ok is false when p is shorter than
// HeaderSize (a message the generator did not publish).
func DecodeHeader(p []byte) (sentUnixNano int64, seq uint64, pub uint32, ok bool) {
	if len(p) < HeaderSize {
		return 0, 0, 0, false
	}
	return int64(binary.BigEndian.Uint64(p[0:8])),
		binary.BigEndian.Uint64(p[8:16]),
		binary.BigEndian.Uint32(p[16:20]),
		true
}

// NewPayload returns a payload buffer of size bytes (at least HeaderSize)
// whose padding is a recognisable, compressible pattern.
func NewPayload(size int) []byte {
	if size < HeaderSize {
		size = HeaderSize
	}
	p := make([]byte, size)
	for i := HeaderSize; i < size; i++ {
		p[i] = 'a' + byte(i%26)
	}
	return p
}
