package wire

import (
	"io"
	"os"
	"syscall"
	"testing"
)

func TestDescribe(t *testing.T) {
	for _, tc := range []struct{ hex, want string }{
		{"", "nothing"},
		{"20 02 00 00", "CONNACK session present 0, v3 return code 0 accepted"},
		{"20 02 01 05", "CONNACK session present 1, v3 return code 5 not authorized"},
		{"20 03 00 84 00", "CONNACK session present 0, reason 0x84 unsupported protocol version"},
		{"20 09 00 00 06 22 00 0A 21 00 14", "CONNACK session present 0, reason 0x00 success, 6 bytes of properties"},
		{"E0 01 81", "DISCONNECT reason 0x81 malformed packet"},
		{"E0 00", "DISCONNECT"},
		{"32 0C 0001 70 0001 6d657373616765 D0 00", "PUBLISH qos 1, PINGRESP"},
		{"62 02 00 01", "PUBREL"},
		{"60 02 00 01", "PUBREL flags 0"},
		{"D1 00", "PINGRESP flags 1"},
		{"3B 05 0001 70 0001", "PUBLISH qos 1, retain, dup"},
		{"90 05 12", "SUBACK (truncated: remaining length 5, 1 bytes present)"},
		{"30", "PUBLISH (truncated fixed header)"},
		{"30 FF FF FF FF 01", "PUBLISH (invalid remaining length)"},
		{"00 00", "RESERVED(0)"},
	} {
		b, err := DecodeHex(tc.hex)
		if err != nil {
			t.Fatal(err)
		}
		got := Describe(b)
		if got != tc.want {
			t.Errorf("Describe(%s) = %q, want %q", tc.hex, got, tc.want)
		}
	}
}

func TestMismatch(t *testing.T) {
	got := Mismatch([]byte{0xD0, 0x00}, []byte{0xE0, 0x00})
	want := "expected D0 00 [PINGRESP], got E0 00 [DISCONNECT] (first difference at byte 0)"
	if got != want {
		t.Errorf("Mismatch = %q, want %q", got, want)
	}
}

func TestMismatchAfter(t *testing.T) {
	got := MismatchAfter([]byte{0xE0, 0x01, 0x82}, []byte{0x40, 0x03, 0x12}, []byte{0x34, 0x10}, os.ErrDeadlineExceeded)
	want := "expected E0 01 82 [DISCONNECT reason 0x82 protocol error], got 40 03 12 (first difference at byte 0); " +
		"in total received 40 03 12 34 10 [PUBACK], then connection still open"
	if got != want {
		t.Errorf("MismatchAfter = %q\nwant %q", got, want)
	}
	got = MismatchAfter([]byte{0xD0, 0x00}, []byte{0xD0, 0x01}, nil, io.EOF)
	want = "expected D0 00 [PINGRESP], got D0 01 [PINGRESP (truncated: remaining length 1, 0 bytes present)] (first difference at byte 1); " +
		"nothing more received, then connection closed by peer (EOF)"
	if got != want {
		t.Errorf("MismatchAfter = %q\nwant %q", got, want)
	}
}

func TestClassify(t *testing.T) {
	if !IsClosed(io.EOF) || !IsClosed(&os.SyscallError{Syscall: "read", Err: syscall.ECONNRESET}) || IsClosed(os.ErrDeadlineExceeded) {
		t.Error("IsClosed misclassifies")
	}
	if !IsTimeout(os.ErrDeadlineExceeded) || IsTimeout(io.EOF) {
		t.Error("IsTimeout misclassifies")
	}
	if StateAfter(os.ErrDeadlineExceeded) != "connection still open" || StateAfter(io.EOF) != "connection closed by peer (EOF)" {
		t.Error("StateAfter wrong")
	}
}
