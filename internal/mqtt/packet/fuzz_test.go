package packet

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"testing"
	"unicode/utf8"
)

var fuzzVersions = [3]byte{V31, V311, V5}

// fuzzVersionByte is the inverse of the version selection in FuzzDecode.
func fuzzVersionByte(v byte, fromServer bool) byte {
	b := v - V31
	if fromServer {
		b |= 0x80
	}
	return b
}

// decodeSeed turns a wire packet into a FuzzDecode input: first byte,
// version/direction byte, body.
func decodeSeed(tb testing.TB, raw []byte, version byte, fromServer bool) []byte {
	h, n, err := ParseFixedHeader(raw)
	if err != nil || n == 0 {
		return append([]byte{raw[0], fuzzVersionByte(version, fromServer)}, raw[min(len(raw), 2):]...)
	}
	end := min(len(raw), n+h.Remaining)
	return append([]byte{raw[0], fuzzVersionByte(version, fromServer)}, raw[n:end]...)
}

// richPackets are fully populated packets decoded into a struct before the
// fuzz input, to catch state that survives a decoder's reset.
var richPackets = map[Type]string{
	CONNECT: "10 33 0004 4D515454 05 46 003C 0F 1100000078 210014 2600016B000176 0001 63 0B 0101 03000161 1800000005 0001 74 0001 78 0002 7077",
	CONNACK: "20 3E 01 00 3B 1100000001 220004 12000161 130002 1A000172 1C000173 1F000178 210003 2401 2500 2700000005 2801 2900 2A01 26000161000162 26000161000163",
	PUBLISH: "3D 28 0003 612F62 0007 1E 0101 020000003C 08000172 09000163 0B01 0BAC02 230003 2600016B000176 6869",
	PUBACK:  "40 08 0001 80 04 1F000170", PUBREC: "50 08 0001 80 04 1F000170",
	PUBREL: "62 09 0001 92 05 26 0000 0000", PUBCOMP: "70 08 0001 92 04 1F000170",
	SUBSCRIBE:   "82 0D 1234 02 0B05 0001 70 2D 0001 2B 00",
	SUBACK:      "90 09 1234 04 1F000170 00 02",
	UNSUBSCRIBE: "A2 0D 0001 07 26000170000171 0001 70",
	UNSUBACK:    "B0 09 1234 04 1F000170 00 11",
	DISCONNECT:  "E0 0C 04 0A 1100000000 1F00027879",
	AUTH:        "F0 0D 19 0B 150003616263 1600020102",
}

// decodeInto runs the public decoder matching p's type.
func decodeInto(p any, h FixedHeader, body []byte, version byte) error {
	switch p := p.(type) {
	case *Connect:
		return DecodeConnect(p, h.Flags, body)
	case *Connack:
		return DecodeConnack(p, h.Flags, body, version)
	case *Publish:
		return DecodePublish(p, h.Flags, body, version)
	case *Ack:
		return DecodeAck(p, h.Type, h.Flags, body, version)
	case *Subscribe:
		return DecodeSubscribe(p, h.Flags, body, version)
	case *Suback:
		return DecodeSuback(p, h.Flags, body, version)
	case *Unsubscribe:
		return DecodeUnsubscribe(p, h.Flags, body, version)
	case *Unsuback:
		return DecodeUnsuback(p, h.Flags, body, version)
	case *Disconnect:
		return DecodeDisconnect(p, h.Flags, body, version)
	case *Auth:
		return DecodeAuth(p, h.Flags, body, version)
	}
	return errors.New("no decoder")
}

func addDecodeSeeds(f *testing.F) {
	for _, tc := range encodeCases {
		f.Add(decodeSeed(f, hexb(f, tc.hex), tc.version, tc.server))
	}
	for _, tc := range decodeCases {
		f.Add(decodeSeed(f, hexb(f, tc.hex), tc.version, false))
	}
}

// FuzzDecode feeds every decoder. Input: first byte of the packet (type and
// flags), a byte selecting the version (low bits, modulo 3: 3.1, 3.1.1, 5.0)
// and the direction (0x80: decode as sent by the server), then the body.
// Decoding must not panic, must not modify the body, must fail only with
// *Error, and a decoded packet must re-encode (with a matching Len) to bytes
// that decode to an equal packet. Decoding into a struct that held a rich
// packet before must give the same result as decoding into a fresh one.
func FuzzDecode(f *testing.F) {
	addDecodeSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < 2 || data[0]>>4 == 0 {
			return
		}
		h := FixedHeader{Type: Type(data[0] >> 4), Flags: data[0] & 0x0F}
		version := fuzzVersions[int(data[1]&0x7F)%3]
		fromServer := data[1]&0x80 != 0
		body := data[2:]
		h.Remaining = len(body)
		orig := bytes.Clone(body)

		pkt, err := decodePacket(h, body, version, fromServer)
		if !bytes.Equal(body, orig) {
			t.Fatalf("decoder modified its input")
		}
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || e.Code < UnspecifiedError {
				t.Fatalf("error %v (%T) is not an *Error with a failure code", err, err)
			}
		}

		// Reuse: decode a rich packet of the same type first.
		if rich, ok := richPackets[h.Type]; ok && !fromServer {
			reused := newPacket(h.Type)
			rraw := hexb(t, rich)
			rh, rn, _ := ParseFixedHeader(rraw)
			_ = decodeInto(reused, rh, rraw[rn:], version)
			rerr := decodeInto(reused, h, body, version)
			if codeOf(rerr) != codeOf(err) {
				t.Fatalf("decode into reused struct: %v, into fresh: %v", rerr, err)
			}
			if err == nil && !equalIgnoringEmptySlices(reused, pkt) {
				t.Fatalf("decode into reused struct:\n%#v\nfresh:\n%#v", reused, pkt)
			}
		}
		if err != nil {
			return
		}

		v := version
		if c, ok := pkt.(*Connect); ok {
			v = c.ProtocolVersion
		}
		enc := appendPacket(nil, pkt, v)
		if n := packetLen(pkt, v); n != len(enc) {
			t.Fatalf("Len %d, encoded %d bytes: % X", n, len(enc), enc)
		}
		h2, n, err := ParseFixedHeader(enc)
		if err != nil || n == 0 || n+h2.Remaining != len(enc) {
			t.Fatalf("re-encoded packet % X does not frame: %v", enc, err)
		}
		again, err := decodePacket(h2, enc[n:], v, fromServer)
		if err != nil {
			t.Fatalf("re-encoded % X does not decode: %v\npacket %#v", enc, err, pkt)
		}
		if !reflect.DeepEqual(again, pkt) {
			t.Fatalf("round trip differs:\n got %#v\nwant %#v", again, pkt)
		}
	})
}

func newPacket(t Type) any {
	switch t {
	case CONNECT:
		return new(Connect)
	case CONNACK:
		return new(Connack)
	case PUBLISH:
		return new(Publish)
	case PUBACK, PUBREC, PUBREL, PUBCOMP:
		return new(Ack)
	case SUBSCRIBE:
		return new(Subscribe)
	case SUBACK:
		return new(Suback)
	case UNSUBSCRIBE:
		return new(Unsubscribe)
	case UNSUBACK:
		return new(Unsuback)
	case DISCONNECT:
		return new(Disconnect)
	case AUTH:
		return new(Auth)
	}
	return nil
}

// FuzzReadPacket reads a stream of packets. Input: a byte selecting the
// version (low 2 bits, modulo 3) and the maximum packet size (upper bits,
// times 16; 0 is unlimited), then the stream. Every packet read must
// respect the size limit and round-trip; the first error ends the stream and
// must be io.EOF, io.ErrUnexpectedEOF or an *Error.
func FuzzReadPacket(f *testing.F) {
	for i, v := range fuzzVersions {
		var stream []byte
		for _, tc := range encodeCases {
			raw := hexb(f, tc.hex)
			if _, err := decodeRaw(raw, v, true); err == nil && (tc.version == v || raw[0] == 0xC0) {
				stream = append(stream, raw...)
			}
		}
		f.Add(append([]byte{byte(i)}, stream...))
		f.Add(append([]byte{byte(i) | 4<<2}, stream...))
	}
	f.Add([]byte{2, 0x30, 0x80})
	f.Add([]byte{1, 0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F})
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		version := fuzzVersions[int(data[0]&3)%3]
		maxSize := int(data[0]>>2) * 16
		r := bytes.NewReader(data[1:])
		for {
			before := r.Len()
			pkt, err := ReadPacket(r, version, maxSize)
			if err != nil {
				var e *Error
				if err != io.EOF && err != io.ErrUnexpectedEOF && !errors.As(err, &e) {
					t.Fatalf("unexpected error %v (%T)", err, err)
				}
				if err == io.EOF && before != 0 {
					t.Fatalf("io.EOF with %d bytes left", before)
				}
				return
			}
			size := before - r.Len()
			if maxSize > 0 && size > maxSize {
				t.Fatalf("read a %d-byte packet with maximum %d", size, maxSize)
			}
			v := version
			if c, ok := pkt.(*Connect); ok {
				v = c.ProtocolVersion
			}
			enc := appendPacket(nil, pkt, v)
			again, err := ReadPacket(bytes.NewReader(enc), v, 0)
			if err != nil || !reflect.DeepEqual(again, pkt) {
				t.Fatalf("round trip of %#v via % X: %#v, %v", pkt, enc, again, err)
			}
		}
	})
}

// FuzzFixedHeader checks ParseFixedHeader against AppendFixedHeader: a
// parsed header re-encodes to exactly the bytes it came from (so only
// minimal remaining lengths are accepted), and "need more" is reported only
// for a prefix of a header.
func FuzzFixedHeader(f *testing.F) {
	for _, s := range []string{"30 00", "30 7F", "30 80 01", "30 FF 7F", "30 80 80 01", "30 FF FF FF 7F",
		"30 80 80 80 80 01", "00 00", "30 80 00", "E0", "E0 80", "D0 FF FF FF"} {
		f.Add(hexb(f, s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		h, n, err := ParseFixedHeader(data)
		switch {
		case err != nil:
			var e *Error
			if !errors.As(err, &e) || n != 0 {
				t.Fatalf("error %v, n %d", err, n)
			}
		case n == 0:
			if len(data) >= 5 {
				t.Fatalf("need more bytes for % X", data)
			}
			for _, c := range data[min(len(data), 1):] {
				if c < 0x80 {
					t.Fatalf("need more bytes for % X", data)
				}
			}
		default:
			if enc := AppendFixedHeader(nil, h.Type, h.Flags, h.Remaining); !bytes.Equal(enc, data[:n]) {
				t.Fatalf("% X parses as %+v, which encodes as % X", data[:n], h, enc)
			}
			if VarintLen(h.Remaining) != n-1 {
				t.Fatalf("VarintLen(%d) = %d, header has %d", h.Remaining, VarintLen(h.Remaining), n-1)
			}
		}
	})
}

// FuzzValidString compares ValidString with a straightforward reference.
func FuzzValidString(f *testing.F) {
	for _, s := range []string{"", "a/b", "\x00", "\x01", "\x1F", "\x7F", "\u0080", "\u009F", "\u00A0", "\uD7FF",
		"\xED\xA0\x80", "\uFDD0", "\uFDEF", "\uFDF0", "\uFFFD", "\uFFFE", "\uFFFF", "\U0001FFFE", "\U0010FFFF",
		"\xF4\x90\x80\x80", "\xC0\xAF", "\xE0\x80\xAF", "A\U0002A6D4", "\xFF",
		"abcdefgh\x7Fijklmnop", "abcdefghijklmno\x1F", "~ ~ ~ ~ ~ ~ ~ ~ \u00e9~ ~ ~ ~ ~ ~ ~ ~\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want := utf8.ValidString(s)
		for _, r := range s {
			if r < 0x20 || (r >= 0x7F && r <= 0x9F) || (r >= 0xFDD0 && r <= 0xFDEF) || r&0xFFFE == 0xFFFE {
				want = false
			}
		}
		if got := ValidString(s); got != want {
			t.Fatalf("ValidString(%q) = %v, want %v", s, got, want)
		}
	})
}
