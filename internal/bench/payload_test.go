package bench

import (
	"bytes"
	"testing"
)

func TestHeaderRoundTrip(t *testing.T) {
	p := NewPayload(64)
	pad := append([]byte(nil), p[HeaderSize:]...)
	EncodeHeader(p, 1_700_000_000_123_456_789, 1<<40+7, 0xdeadbeef)
	ts, seq, pub, ok := DecodeHeader(p)
	if !ok || ts != 1_700_000_000_123_456_789 || seq != 1<<40+7 || pub != 0xdeadbeef {
		t.Fatalf("DecodeHeader = %d %d %#x %v", ts, seq, pub, ok)
	}
	if !bytes.Equal(p[HeaderSize:], pad) {
		t.Fatal("EncodeHeader touched the padding")
	}
	want := []byte{0x17, 0x97, 0x9c, 0xfe, 0x3d, 0x85, 0xcd, 0x15, 0, 0, 1, 0, 0, 0, 0, 7, 0xde, 0xad, 0xbe, 0xef}
	if !bytes.Equal(p[:HeaderSize], want) {
		t.Fatalf("header bytes % x, want % x", p[:HeaderSize], want)
	}
	if _, _, _, ok := DecodeHeader(p[:HeaderSize-1]); ok {
		t.Fatal("short payload decoded")
	}
}

func TestNewPayloadSize(t *testing.T) {
	if n := len(NewPayload(3)); n != HeaderSize {
		t.Fatalf("NewPayload(3) has %d bytes, want %d", n, HeaderSize)
	}
	if n := len(NewPayload(1000)); n != 1000 {
		t.Fatalf("NewPayload(1000) has %d bytes", n)
	}
}
