package listener

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"testing"
	"testing/iotest"
)

type parseOutcome struct {
	h        proxyHeader
	invalid  bool // error wraps ErrInvalidProxyHeader
	failed   bool
	consumed int
}

func parseAll(r io.Reader, total int) (parseOutcome, []byte) {
	br := bufio.NewReaderSize(r, proxyBufSize)
	h, err := readProxyHeader(br)
	if err != nil {
		return parseOutcome{failed: true, invalid: errors.Is(err, ErrInvalidProxyHeader)}, nil
	}
	rest, _ := io.ReadAll(br)
	return parseOutcome{h: h, consumed: total - len(rest)}, rest
}

// FuzzParseProxyHeader checks that the parser never panics, never reads
// past the header, gives the same answer however the input is split into
// reads, respects the v1 length limit, and that accepted v1 headers with
// addresses round-trip through the encoder.
func FuzzParseProxyHeader(f *testing.F) {
	for _, tc := range proxyCases() {
		f.Add(tc.in)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		whole, rest := parseAll(bytes.NewReader(data), len(data))
		split, _ := parseAll(iotest.OneByteReader(bytes.NewReader(data)), len(data))
		if whole != split {
			t.Fatalf("split reads changed the result: %+v vs %+v", whole, split)
		}
		if whole.failed {
			return
		}
		if whole.consumed <= 0 || whole.consumed > len(data) || !bytes.Equal(rest, data[whole.consumed:]) {
			t.Fatalf("consumed %d of %d; rest mismatch", whole.consumed, len(data))
		}
		h := whole.h
		switch h.version {
		case 1:
			if whole.consumed > proxyV1MaxLen {
				t.Fatalf("v1 header of %d bytes accepted", whole.consumed)
			}
			if h.local {
				t.Fatal("v1 header marked LOCAL")
			}
			if h.hasAddr {
				enc := encodeProxyV1(h)
				again, _ := parseAll(bytes.NewReader(enc), len(enc))
				if again.failed || again.h != h || again.consumed != len(enc) {
					t.Fatalf("round trip of %+v via %q gave %+v", h, enc, again)
				}
			}
		case 2:
			if whole.consumed < proxyV2HdrLen {
				t.Fatalf("v2 header of %d bytes", whole.consumed)
			}
			if h.local && h.hasAddr {
				t.Fatal("LOCAL header carries addresses")
			}
		default:
			t.Fatalf("version %d", h.version)
		}
		if h.hasAddr {
			if !h.src.Addr().IsValid() || !h.dst.Addr().IsValid() || h.src.Addr().Is4() != h.dst.Addr().Is4() {
				t.Fatalf("bad addresses %v %v", h.src, h.dst)
			}
		}
	})
}
