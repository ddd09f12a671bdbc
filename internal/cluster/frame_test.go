package cluster

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"runtime"
	"testing"
)

func TestFrameRoundTrip(t *testing.T) {
	sizes := []int{0, 1, 4, 100, 4096, 64<<10 - 5, 64 << 10, 200 << 10, 3<<20 + 7}
	var stream []byte
	for i, n := range sizes {
		body := bytes.Repeat([]byte{byte(i + 1)}, n)
		stream = AppendFrame(stream, FrameType(i+1), body)
	}
	// An unknown type is returned too.
	stream = AppendFrame(stream, FrameType(200), []byte("future"))
	r := bufio.NewReaderSize(bytes.NewReader(stream), 64<<10)
	buf := make([]byte, 0, 1024)
	for i, n := range sizes {
		ft, body, err := ReadFrame(r, DefaultMaxFrame, buf)
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if ft != FrameType(i+1) || len(body) != n || (n > 0 && (body[0] != byte(i+1) || body[n-1] != byte(i+1))) {
			t.Fatalf("frame %d: type %v len %d", i, ft, len(body))
		}
		if n <= cap(buf) && n > 0 && &body[0] != &buf[:1][0] {
			t.Fatalf("frame %d: a body that fits is not read into buf", i)
		}
	}
	ft, body, err := ReadFrame(r, 0, buf)
	if err != nil || ft != 200 || string(body) != "future" || ft.String() != "FrameType(200)" {
		t.Fatalf("unknown type: %v %q %v", ft, body, err)
	}
	if _, _, err := ReadFrame(r, 0, buf); err != io.EOF {
		t.Fatalf("end of stream: %v, want io.EOF", err)
	}
}

func TestFrameErrors(t *testing.T) {
	full := AppendFrame(nil, FramePublish, []byte("hello"))
	for cut := 1; cut < len(full); cut++ {
		r := bufio.NewReader(bytes.NewReader(full[:cut]))
		if _, _, err := ReadFrame(r, 100, nil); err != io.ErrUnexpectedEOF {
			t.Fatalf("cut at %d: %v, want io.ErrUnexpectedEOF", cut, err)
		}
	}
	r := bufio.NewReader(bytes.NewReader(full))
	ft, _, err := ReadFrame(r, 4, nil)
	if !errors.Is(err, ErrFrameTooLarge) || ft != FramePublish {
		t.Fatalf("over the bound: %v %v, want Publish and ErrFrameTooLarge", ft, err)
	}
	r = bufio.NewReader(bytes.NewReader(full))
	if _, body, err := ReadFrame(r, 5, nil); err != nil || string(body) != "hello" {
		t.Fatalf("at the bound: %q %v", body, err)
	}
}

// A frame that declares a large length costs memory only as its bytes
// arrive: a peer (or a fuzzer) cannot make ReadFrame allocate 60 MiB with
// a 5-byte header.
func TestFrameDeclaredLengthDoesNotAllocateAhead(t *testing.T) {
	hdr := []byte{byte(FramePublish), 0, 0, 0, 0}
	binary.BigEndian.PutUint32(hdr[1:], 60<<20)
	in := append(hdr, make([]byte, 10)...)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	r := bufio.NewReader(bytes.NewReader(in))
	if _, _, err := ReadFrame(r, DefaultMaxFrame, nil); err != io.ErrUnexpectedEOF {
		t.Fatalf("err %v, want io.ErrUnexpectedEOF", err)
	}
	runtime.ReadMemStats(&after)
	if d := after.TotalAlloc - before.TotalAlloc; d > 4<<20 {
		t.Fatalf("allocated %d bytes for a truncated frame", d)
	}
}

func TestFrameTypeString(t *testing.T) {
	want := []string{"Ping", "Pong", "RouteSnapshot", "RouteAdd", "RouteDel", "Publish", "Ack", "Retain",
		"RetainDigest", "Claim", "ClaimReply", "SessionDeliver", "SessionDigest", "SessionMerge", "Handoff", "HandoffReply",
		"ReplOps", "ReplSnapshot", "ReplDrop", "RouteDigest", "RouteResync", "Service", "ReplResync"}
	for i, w := range want {
		if got := FrameType(i + 1).String(); got != w {
			t.Errorf("FrameType(%d) = %q, want %q", i+1, got, w)
		}
	}
	if FramePing != 1 || FrameHandoffReply != 16 || FrameReplDrop != 19 {
		t.Fatal("frame type values moved: they are the wire format")
	}
	if FrameType(0).String() != "FrameType(0)" || FrameType(24).String() != "FrameType(24)" {
		t.Fatal("unknown types")
	}
}

func TestFrameEncDecRoundTrip(t *testing.T) {
	var e Enc
	e.U8(7)
	e.Bool(true)
	e.Bool(false)
	e.U16(0xBEEF)
	e.U32(0xDEADBEEF)
	e.U64(math.MaxUint64 - 1)
	e.Uvarint(300)
	e.Varint(-12345)
	e.Bytes([]byte{1, 2, 3})
	e.Bytes(nil)
	e.String("sensors/#")
	d := Dec{B: e.B}
	if d.U8() != 7 || !d.Bool() || d.Bool() || d.U16() != 0xBEEF || d.U32() != 0xDEADBEEF ||
		d.U64() != math.MaxUint64-1 || d.Uvarint() != 300 || d.Varint() != -12345 ||
		!bytes.Equal(d.Bytes(), []byte{1, 2, 3}) || len(d.Bytes()) != 0 || d.String() != "sensors/#" {
		t.Fatal("round trip mismatch")
	}
	if d.Err != nil || d.Len() != 0 {
		t.Fatalf("err %v, %d left", d.Err, d.Len())
	}
	// Every truncation sets Err (never panics) and zero values follow.
	for cut := 0; cut < len(e.B); cut++ {
		d := Dec{B: e.B[:cut]}
		d.U8()
		d.Bool()
		d.Bool()
		d.U16()
		d.U32()
		d.U64()
		d.Uvarint()
		d.Varint()
		d.Bytes()
		d.Bytes()
		_ = d.String()
		if !errors.Is(d.Err, ErrShortBody) {
			t.Fatalf("cut at %d: err %v", cut, d.Err)
		}
		if d.U64() != 0 || d.String() != "" || d.Bytes() != nil {
			t.Fatalf("cut at %d: non-zero value after an error", cut)
		}
	}
}

func TestFrameDecMalformed(t *testing.T) {
	// A varint longer than 64 bits.
	d := Dec{B: bytes.Repeat([]byte{0xff}, 11)}
	if d.Uvarint() != 0 || !errors.Is(d.Err, ErrBadVarint) {
		t.Fatalf("overlong varint: %v", d.Err)
	}
	// A length far beyond the body (and beyond int on any platform).
	var e Enc
	e.Uvarint(math.MaxUint64)
	d = Dec{B: append(e.B, 1, 2, 3)}
	if d.Bytes() != nil || !errors.Is(d.Err, ErrShortBody) {
		t.Fatalf("huge length: %v", d.Err)
	}
	// Bytes aliases the body without letting an append overwrite it.
	e = Enc{}
	e.Bytes([]byte("ab"))
	e.U8(9)
	d = Dec{B: e.B}
	b := d.Bytes()
	_ = append(b, 'x')
	if d.U8() != 9 {
		t.Fatal("append to a decoded field overwrote the next field")
	}
}

func FuzzReadFrame(f *testing.F) {
	f.Add(AppendFrame(nil, FramePing, nil))
	f.Add(AppendFrame(AppendFrame(nil, FramePublish, []byte("body")), FrameAck, []byte{1, 2}))
	f.Add([]byte{1, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{2, 0, 0, 1})
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bufio.NewReaderSize(bytes.NewReader(in), 16)
		var buf []byte
		total := 0
		for i := 0; i < len(in)+1; i++ {
			ft, body, err := ReadFrame(r, 1<<10, buf)
			if err != nil {
				if err != io.EOF && err != io.ErrUnexpectedEOF && !errors.Is(err, ErrFrameTooLarge) {
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			if len(body) > 1<<10 {
				t.Fatalf("body of %d bytes over the bound", len(body))
			}
			// What was read re-encodes to the same bytes.
			re := AppendFrame(nil, ft, body)
			if !bytes.Equal(re, in[total:total+len(re)]) {
				t.Fatalf("frame %d does not re-encode", i)
			}
			total += len(re)
			buf = body[:0]
		}
	})
}

func FuzzFrameDec(f *testing.F) {
	var e Enc
	e.U8(1)
	e.U64(42)
	e.String("a/b")
	e.Bytes([]byte{0})
	e.Varint(-1)
	f.Add(e.B)
	f.Add([]byte{0x80, 0x80})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) == 0 {
			return
		}
		d := Dec{B: in}
		for i := 0; i < 64 && d.Err == nil; i++ {
			switch in[i%len(in)] % 8 {
			case 0:
				d.U8()
			case 1:
				d.U16()
			case 2:
				d.U32()
			case 3:
				d.U64()
			case 4:
				d.Uvarint()
			case 5:
				d.Varint()
			case 6:
				b := d.Bytes()
				if len(b) > len(in) {
					t.Fatal("field longer than the input")
				}
			case 7:
				_ = d.String()
			}
		}
		if d.Err != nil && !errors.Is(d.Err, ErrShortBody) && !errors.Is(d.Err, ErrBadVarint) {
			t.Fatalf("unexpected error %v", d.Err)
		}
		if d.Len() > len(in) {
			t.Fatal("more left than given")
		}
	})
}
