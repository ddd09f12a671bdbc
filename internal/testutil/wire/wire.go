// Package wire holds the byte-level plumbing shared by the raw MQTT test
// connection (package testutil) and the packet-sequence conformance runner:
// hex decoding and formatting, exact reads with a deadline, classification of
// read errors, and a short human-readable description of raw MQTT bytes for
// failure messages. It depends on the standard library only, so the
// conformance runner keeps working while the project's codec is being edited.
package wire

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"time"
)

// DecodeHex decodes a string of hex digit pairs (upper or lower case) in
// which space characters may appear anywhere and are ignored, e.g.
// "82 06 1234 0001 70 01". Any other character, or an odd number of digits,
// is an error.
func DecodeHex(s string) ([]byte, error) {
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		return nil, fmt.Errorf("bad hex %q: %w", s, err)
	}
	return b, nil
}

// Hex formats b as space-separated upper-case hex pairs ("E0 01 82").
// An empty slice is shown as "(none)".
func Hex(b []byte) string {
	if len(b) == 0 {
		return "(none)"
	}
	const digits = "0123456789ABCDEF"
	out := make([]byte, 0, len(b)*3)
	for i, c := range b {
		if i > 0 {
			out = append(out, ' ')
		}
		out = append(out, digits[c>>4], digits[c&0x0F])
	}
	return string(out)
}

// ReadFull reads exactly n bytes from conn, looping over short reads until
// it has them or deadline passes. It returns the bytes read so far together
// with the error that stopped it (io.EOF when the peer closed, a timeout
// error when the deadline passed). The read deadline of conn is left set.
func ReadFull(conn net.Conn, n int, deadline time.Time) ([]byte, error) {
	buf := make([]byte, n)
	if err := conn.SetReadDeadline(deadline); err != nil {
		return nil, err
	}
	got, err := io.ReadFull(conn, buf)
	if err == io.ErrUnexpectedEOF {
		err = io.EOF
	}
	return buf[:got], err
}

// Drain reads whatever arrives on conn within grace, stopping early when the
// peer closes the connection or an error occurs. It is used after a failed
// comparison to show what else the peer sent. The returned error is the one
// that ended the read: a timeout error when grace elapsed with the
// connection still open, io.EOF or a reset when the peer closed it.
func Drain(conn net.Conn, grace time.Duration) ([]byte, error) {
	if err := conn.SetReadDeadline(time.Now().Add(grace)); err != nil {
		return nil, err
	}
	var out []byte
	buf := make([]byte, 4096)
	for {
		n, err := conn.Read(buf)
		out = append(out, buf[:n]...)
		if err != nil {
			return out, err
		}
		if len(out) > 1<<20 {
			return out, errors.New("more than 1 MiB, stopped reading")
		}
	}
}

// IsClosed reports whether err means the peer closed the connection: EOF,
// connection reset, or broken pipe (on write).
func IsClosed(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNABORTED)
}

// IsTimeout reports whether err is a deadline expiry.
func IsTimeout(err error) bool {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// DescribeErr renders a read/write error for a failure message.
func DescribeErr(err error) string {
	switch {
	case err == nil:
		return "no error"
	case errors.Is(err, io.EOF):
		return "connection closed by peer (EOF)"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset by peer"
	case errors.Is(err, syscall.EPIPE):
		return "broken pipe (peer closed the connection)"
	case IsTimeout(err):
		return "timed out"
	default:
		return err.Error()
	}
}

// StateAfter describes the error that ended a Drain: "connection still
// open" for a timeout, otherwise what closed the read.
func StateAfter(err error) string {
	switch {
	case err == nil:
		return "no error"
	case IsTimeout(err):
		return "connection still open"
	default:
		return DescribeErr(err)
	}
}

// Mismatch describes a comparison failure between want and got (which are
// the same length or got is shorter): both in hex with packet descriptions,
// and the offset of the first differing byte.
func Mismatch(want, got []byte) string {
	return fmt.Sprintf("expected %s [%s], got %s [%s] (first difference at byte %d)",
		Hex(want), Describe(want), Hex(got), Describe(got), firstDiff(want, got))
}

// MismatchAfter is Mismatch followed by what Drain returned afterwards
// (extra, err). When more bytes arrived, the packets are described from the
// whole received sequence, since got usually ends inside a packet.
func MismatchAfter(want, got, extra []byte, err error) string {
	if len(extra) == 0 {
		return Mismatch(want, got) + "; nothing more received, then " + StateAfter(err)
	}
	all := append(got[:len(got):len(got)], extra...)
	return fmt.Sprintf("expected %s [%s], got %s (first difference at byte %d); in total received %s [%s], then %s",
		Hex(want), Describe(want), Hex(got), firstDiff(want, got), Hex(all), Describe(all), StateAfter(err))
}

func firstDiff(want, got []byte) int {
	i := 0
	for i < len(want) && i < len(got) && want[i] == got[i] {
		i++
	}
	return i
}

var typeNames = [16]string{"RESERVED(0)", "CONNECT", "CONNACK", "PUBLISH", "PUBACK", "PUBREC", "PUBREL", "PUBCOMP",
	"SUBSCRIBE", "SUBACK", "UNSUBSCRIBE", "UNSUBACK", "PINGREQ", "PINGRESP", "DISCONNECT", "AUTH"}

// reasonNames covers the MQTT 5 reason codes that appear in CONNACK and
// DISCONNECT answers, the packets that end most failing conversations.
var reasonNames = map[byte]string{
	0x00: "success", 0x04: "disconnect with will", 0x80: "unspecified error", 0x81: "malformed packet",
	0x82: "protocol error", 0x83: "implementation specific error", 0x84: "unsupported protocol version",
	0x85: "client identifier not valid", 0x86: "bad user name or password", 0x87: "not authorized",
	0x88: "server unavailable", 0x89: "server busy", 0x8A: "banned", 0x8B: "server shutting down",
	0x8C: "bad authentication method", 0x8D: "keep alive timeout", 0x8E: "session taken over",
	0x8F: "topic filter invalid", 0x90: "topic name invalid", 0x93: "receive maximum exceeded",
	0x94: "topic alias invalid", 0x95: "packet too large", 0x96: "message rate too high", 0x97: "quota exceeded",
	0x98: "administrative action", 0x99: "payload format invalid", 0x9A: "retain not supported",
	0x9B: "QoS not supported", 0x9C: "use another server", 0x9D: "server moved",
	0x9E: "shared subscriptions not supported", 0x9F: "connection rate exceeded", 0xA0: "maximum connect time",
	0xA1: "subscription identifiers not supported", 0xA2: "wildcard subscriptions not supported",
}

var v3ConnackNames = [...]string{"accepted", "unacceptable protocol version", "identifier rejected",
	"server unavailable", "bad user name or password", "not authorized"}

// Describe splits b into MQTT control packets using the fixed header and
// names each one, adding the reason code for CONNACK, DISCONNECT and AUTH,
// the QoS for PUBLISH, and a note for reserved flags or a truncated packet.
// It never fails: bytes that cannot be framed are reported as such.
func Describe(b []byte) string {
	if len(b) == 0 {
		return "nothing"
	}
	var parts []string
	for len(b) > 0 {
		desc, n := describeOne(b)
		parts = append(parts, desc)
		b = b[n:]
	}
	return strings.Join(parts, ", ")
}

func describeOne(b []byte) (string, int) {
	first := b[0]
	name := typeNames[first>>4]
	flags := first & 0x0F
	rl, lenBytes, ok := remainingLength(b[1:])
	if !ok {
		if lenBytes == -1 {
			return name + " (invalid remaining length)", len(b)
		}
		return name + " (truncated fixed header)", len(b)
	}
	total := 1 + lenBytes + rl
	if total > len(b) {
		return fmt.Sprintf("%s (truncated: remaining length %d, %d bytes present)", name, rl, len(b)-1-lenBytes), len(b)
	}
	body := b[1+lenBytes : total]
	var extra []string
	switch first >> 4 {
	case 3:
		qos := (flags >> 1) & 3
		extra = append(extra, fmt.Sprintf("qos %d", qos))
		if flags&1 != 0 {
			extra = append(extra, "retain")
		}
		if flags&8 != 0 {
			extra = append(extra, "dup")
		}
	case 6, 8, 10:
		if flags != 2 {
			extra = append(extra, fmt.Sprintf("flags %X", flags))
		}
	default:
		if flags != 0 {
			extra = append(extra, fmt.Sprintf("flags %X", flags))
		}
	}
	switch first >> 4 {
	case 2:
		if len(body) == 2 {
			extra = append(extra, fmt.Sprintf("session present %d", body[0]&1), "v3 return code "+v3Code(body[1]))
		} else if len(body) >= 3 {
			extra = append(extra, fmt.Sprintf("session present %d", body[0]&1), "reason "+reason(body[1]))
			if len(body) > 3 {
				extra = append(extra, fmt.Sprintf("%d bytes of properties", len(body)-3))
			}
		}
	case 14, 15:
		if len(body) >= 1 {
			extra = append(extra, "reason "+reason(body[0]))
		}
	}
	if len(extra) == 0 {
		return name, total
	}
	return name + " " + strings.Join(extra, ", "), total
}

func reason(c byte) string {
	if s, ok := reasonNames[c]; ok {
		return fmt.Sprintf("0x%02X %s", c, s)
	}
	return fmt.Sprintf("0x%02X", c)
}

func v3Code(c byte) string {
	if int(c) < len(v3ConnackNames) {
		return fmt.Sprintf("%d %s", c, v3ConnackNames[c])
	}
	return fmt.Sprintf("%d (invalid)", c)
}

// remainingLength decodes the variable byte integer at the start of b. ok is
// false when b ends inside it (n = number of bytes seen) or when it is longer
// than four bytes (n = -1).
func remainingLength(b []byte) (value, n int, ok bool) {
	mult := 1
	for i := 0; i < 4; i++ {
		if i >= len(b) {
			return 0, i, false
		}
		value += int(b[i]&0x7F) * mult
		if b[i]&0x80 == 0 {
			return value, i + 1, true
		}
		mult *= 128
	}
	return 0, -1, false
}
