// Package testutil holds small helpers shared by Isobar's tests: polling with
// a deadline (CheckFor), a raw MQTT connection (RawConn) that writes and
// expects exact bytes, and in-process nodes (RunNode). What a test does
// when a peer program, data or capability is missing (skip on a developer's
// machine, fail in CI) is decided by the subpackage peer, which depends on
// the standard library only so that every package's tests can use it.
//
// The package has no dependencies outside the standard library and the
// project's own packages (the MQTT codec for RawConn.ReadPacket, config and
// node for RunNode).
package testutil

import (
	"testing"
	"time"

	"github.com/isobar-mq/isobar/internal/testutil/wire"
)

// CheckFor calls f until it returns nil or total has elapsed, sleeping
// interval between attempts. If f never succeeds, the test fails with the
// last error. f is always called at least once, and once more after the
// deadline has passed if the previous attempt started before it.
func CheckFor(t testing.TB, total, interval time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(total)
	for {
		err := f()
		if err == nil {
			return
		}
		if !time.Now().Before(deadline) {
			t.Fatalf("CheckFor: condition not met after %v: %v", total, err)
			return
		}
		wait := interval
		if left := time.Until(deadline); left < wait {
			wait = left
		}
		time.Sleep(wait)
	}
}

// DecodeHex decodes a string of hex digit pairs in which space characters
// may appear anywhere (they are ignored), e.g. "82 06 1234 0001 70 01".
func DecodeHex(s string) ([]byte, error) { return wire.DecodeHex(s) }

// MustHex is DecodeHex that fails the test on a malformed string.
func MustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := wire.DecodeHex(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Hex formats b as space-separated upper-case hex pairs ("E0 01 82"), the
// notation used in failure messages. An empty slice is shown as "(none)".
func Hex(b []byte) string { return wire.Hex(b) }
