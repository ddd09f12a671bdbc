package packet

import (
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// hexb decodes a hex string; spaces are ignored.
func hexb(tb testing.TB, s string) []byte {
	tb.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		tb.Fatalf("bad hex %q: %v", s, err)
	}
	return b
}

// decodeRaw decodes one complete wire packet (fixed header included); the
// packet must fill raw exactly unless allowTrailing.
func decodeRaw(raw []byte, version byte, fromServer bool) (any, error) {
	h, n, err := ParseFixedHeader(raw)
	if err != nil {
		return nil, err
	}
	if n == 0 {
		return nil, fmt.Errorf("incomplete fixed header")
	}
	if len(raw)-n < h.Remaining {
		return nil, fmt.Errorf("incomplete packet: remaining length %d, %d bytes", h.Remaining, len(raw)-n)
	}
	return decodePacket(h, raw[n:n+h.Remaining], version, fromServer)
}

// appendPacket encodes any decoded packet.
func appendPacket(dst []byte, pkt any, version byte) []byte {
	switch p := pkt.(type) {
	case *Connect:
		return p.Append(dst)
	case *Connack:
		return p.Append(dst, version)
	case *Publish:
		return p.Append(dst, version)
	case *Ack:
		return p.Append(dst, version)
	case *Subscribe:
		return p.Append(dst, version)
	case *Suback:
		return p.Append(dst, version)
	case *Unsubscribe:
		return p.Append(dst, version)
	case *Unsuback:
		return p.Append(dst, version)
	case *Disconnect:
		return p.Append(dst, version)
	case *Auth:
		return p.Append(dst)
	case Type:
		if p == PINGREQ {
			return AppendPingreq(dst)
		}
		return AppendPingresp(dst)
	}
	panic(fmt.Sprintf("unknown packet %T", pkt))
}

// packetLen returns the Len of a packet, or -1 if the type has none.
func packetLen(pkt any, version byte) int {
	switch p := pkt.(type) {
	case *Connect:
		return p.Len()
	case *Connack:
		return p.Len(version)
	case *Publish:
		return p.Len(version)
	case *Ack:
		return p.Len(version)
	case *Subscribe:
		return p.Len(version)
	case *Suback:
		return p.Len(version)
	case *Unsubscribe:
		return p.Len(version)
	case *Unsuback:
		return p.Len(version)
	case *Disconnect:
		return p.Len(version)
	case *Auth:
		return p.Len()
	case Type:
		return 2
	}
	return -1
}

// codeOf returns the reason code of an *Error, or -1 for nil and -2 for
// another error.
func codeOf(err error) int {
	if err == nil {
		return -1
	}
	var e *Error
	if errors.As(err, &e) {
		return int(e.Code)
	}
	return -2
}

func versionName(v byte) string {
	switch v {
	case V31:
		return "3.1"
	case V311:
		return "3.1.1"
	case V5:
		return "5.0"
	}
	return fmt.Sprintf("v%d", v)
}
