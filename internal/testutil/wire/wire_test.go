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
