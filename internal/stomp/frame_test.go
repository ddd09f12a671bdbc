package stomp

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
)

func decodeAll(t *testing.T, wire, version string, lim Limits) ([]*Frame, error) {
	t.Helper()
	d := NewDecoder(bufio.NewReaderSize(strings.NewReader(wire), 16), lim)
	d.Version = version
	var out []*Frame
	for {
		f, err := d.Decode()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, f)
	}
}

func decodeOne(t *testing.T, wire, version string) *Frame {
	t.Helper()
	fs, err := decodeAll(t, wire, version, Limits{})
	if err != nil {
		t.Fatalf("decode %q: %v", wire, err)
	}
	if len(fs) != 1 {
		t.Fatalf("decode %q: %d frames", wire, len(fs))
	}
	return fs[0]
}

func TestDecodeBasics(t *testing.T) {
	f := decodeOne(t, "\n\r\n\nSEND\r\ndestination:/topic/a\r\nfoo:bar:baz\r\n\r\nhello\x00\n\n", V12)
	want := &Frame{Command: "SEND", Headers: []Header{{"destination", "/topic/a"}, {"foo", "bar:baz"}}, Body: []byte("hello")}
	if !reflect.DeepEqual(f, want) {
		t.Fatalf("got %+v, want %+v", f, want)
	}
	// Repeated headers: the first one wins.
	f = decodeOne(t, "SEND\nfoo:1\nfoo:2\n\n\x00", V12)
	if v, _ := f.Get("foo"); v != "1" || len(f.Headers) != 2 {
		t.Fatalf("repeated header: %q %v", v, f.Headers)
	}
	// No body, no headers.
	f = decodeOne(t, "DISCONNECT\n\n\x00", V12)
	if f.Command != "DISCONNECT" || f.Body != nil || len(f.Headers) != 0 {
		t.Fatalf("got %+v", f)
	}
	// Several frames and heart-beats.
	fs, err := decodeAll(t, "\nA\n\n\x00\n\nB\nx:y\n\nb\x00\r\n", V11, Limits{})
	if err != nil || len(fs) != 2 || fs[1].Value("x") != "y" || string(fs[1].Body) != "b" {
		t.Fatalf("got %v %v", fs, err)
	}
}

func TestDecodeContentLength(t *testing.T) {
	body := "a\x00b\x00\x00c"
	f := decodeOne(t, "SEND\ncontent-length:6\n\n"+body+"\x00", V12)
	if string(f.Body) != body {
		t.Fatalf("body %q", f.Body)
	}
	// A zero content-length.
	f = decodeOne(t, "SEND\ncontent-length:0\n\n\x00", V12)
	if len(f.Body) != 0 {
		t.Fatalf("body %q", f.Body)
	}
	for _, bad := range []string{
		"SEND\ncontent-length:3\n\nabcd\x00", // no NUL after the bytes
		"SEND\ncontent-length:x\n\nabc\x00",  // not a number
		"SEND\ncontent-length:-1\n\nabc\x00", // negative
		"SEND\ncontent-length:10\n\nabc\x00", // truncated
	} {
		if _, err := decodeAll(t, bad, V12, Limits{}); err == nil {
			t.Errorf("%q: accepted", bad)
		}
	}
}

func TestDecodeEscapes(t *testing.T) {
	cases := []struct {
		version, wire, name, value string
	}{
		{V12, `a\cb:x\ny\rz\\w\c`, "a:b", "x\ny\rz\\w:"},
		{V11, `a\cb:x\ny\\w\c`, "a:b", "x\ny\\w:"},
		{V10, `a\cb:x\ny\rz\\`, `a\cb`, `x\ny\rz\\`}, // 1.0: verbatim
	}
	for _, c := range cases {
		f := decodeOne(t, "SEND\n"+c.wire+"\n\n\x00", c.version)
		if len(f.Headers) != 1 || f.Headers[0].Name != c.name || f.Headers[0].Value != c.value {
			t.Errorf("%s %q: got %q", c.version, c.wire, f.Headers)
		}
	}
	// CONNECT and CONNECTED are never unescaped.
	for _, cmd := range []string{"CONNECT", "STOMP", "CONNECTED"} {
		f := decodeOne(t, cmd+"\nlogin:a\\cb\n\n\x00", V12)
		if f.Value("login") != `a\cb` {
			t.Errorf("%s: %q", cmd, f.Value("login"))
		}
	}
	// Undefined escapes.
	for _, c := range []struct{ version, wire string }{
		{V12, `a:\t`}, {V12, `a:x\`}, {V11, `a:\r`}, {V11, `a\x:b`}, {V12, `a:\C`},
	} {
		_, err := decodeAll(t, "SEND\n"+c.wire+"\n\n\x00", c.version, Limits{})
		var pe *ProtocolError
		if !errors.As(err, &pe) || pe.Reason != "bad_escape" {
			t.Errorf("%s %q: err %v", c.version, c.wire, err)
		}
	}
}

func TestDecodeLimits(t *testing.T) {
	lim := Limits{MaxFrameSize: 100, MaxHeaders: 3, MaxHeaderLine: 20}
	cases := []struct{ wire, reason string }{
		{"SEND\na:1\nb:2\nc:3\nd:4\n\n\x00", "too_many_headers"},
		{"SEND\na:" + strings.Repeat("x", 30) + "\n\n\x00", "header_too_long"},
		{strings.Repeat("S", 30) + "\n\n\x00", "header_too_long"},
		{"SEND\n\n" + strings.Repeat("x", 200) + "\x00", "frame_too_large"},
		{"SEND\ncontent-length:200\n\n" + strings.Repeat("x", 200) + "\x00", "frame_too_large"},
		{"SEND\nnocolon\n\n\x00", "bad_header"},
		{"SEND\n:empty\n\n\x00", "bad_header"},
		{"SE\x00ND\n\n\x00", "bad_frame"},
		{"\rSEND\n\n\x00", "bad_frame"},
	}
	for _, c := range cases {
		_, err := decodeAll(t, c.wire, V12, lim)
		var pe *ProtocolError
		if !errors.As(err, &pe) || pe.Reason != c.reason {
			t.Errorf("%q: err %v, want %s", c.wire, err, c.reason)
		}
	}
	// Exactly at the limits is fine.
	if _, err := decodeAll(t, "SEND\na:1\nb:2\nc:3\n\n"+strings.Repeat("x", 10)+"\x00", V12, lim); err != nil {
		t.Fatal(err)
	}
	// EOF inside a frame.
	if _, err := decodeAll(t, "SEND\na:1\n", V12, lim); err != io.ErrUnexpectedEOF {
		t.Fatalf("truncated frame: %v", err)
	}
}

func TestEncodeEscapes(t *testing.T) {
	f := &Frame{Command: "MESSAGE", Headers: []Header{{"a:b", "x\ny\rz\\w:"}}, Body: []byte("b\x00dy")}
	cases := map[string]string{
		V12: "MESSAGE\na\\cb:x\\ny\\rz\\\\w\\c\ncontent-length:4\n\nb\x00dy\x00",
		V11: "MESSAGE\na\\cb:x\\ny\rz\\\\w\\c\ncontent-length:4\n\nb\x00dy\x00",
		V10: "MESSAGE\na_b:x y\rz\\w:\ncontent-length:4\n\nb\x00dy\x00",
	}
	for v, want := range cases {
		if got := string(AppendFrame(nil, f, v)); got != want {
			t.Errorf("%s: got %q, want %q", v, got, want)
		}
	}
	// Round trip through the decoder for 1.1 and 1.2.
	for _, v := range []string{V11, V12} {
		g := decodeOne(t, string(AppendFrame(nil, f, v)), v)
		if g.Headers[0] != f.Headers[0] || !bytes.Equal(g.Body, f.Body) {
			t.Errorf("%s round trip: %+v", v, g)
		}
	}
	// CONNECTED is not escaped.
	c := &Frame{Command: "CONNECTED", Headers: []Header{{"server", `a\b:c`}}}
	if got := string(AppendFrame(nil, c, V12)); got != "CONNECTED\nserver:a\\b:c\n\n\x00" {
		t.Errorf("CONNECTED: %q", got)
	}
}

// FuzzDecode checks that the decoder never panics, and that what it
// accepts encodes into a frame that decodes back to the same thing.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		"SEND\ndestination:/topic/a\n\nhello\x00",
		"CONNECT\naccept-version:1.2\nhost:x\n\n\x00",
		"SEND\ncontent-length:3\n\na\x00b\x00\n\n",
		"MESSAGE\na\\cb:x\\ny\\r\\\\\n\n\x00",
		"\r\n\nACK\nid:1\n\n\x00",
	} {
		for _, v := range []byte{0, 1, 2} {
			f.Add(v, []byte(s))
		}
	}
	f.Fuzz(func(t *testing.T, v byte, data []byte) {
		version := []string{V10, V11, V12}[int(v)%3]
		lim := Limits{MaxFrameSize: 4096, MaxHeaders: 16, MaxHeaderLine: 512}
		d := NewDecoder(bufio.NewReaderSize(bytes.NewReader(data), 16), lim)
		d.Version = version
		for range 8 {
			fr, err := d.Decode()
			if err != nil {
				return
			}
			if !representable(fr, version) {
				continue
			}
			wire := AppendFrame(nil, fr, version)
			d2 := NewDecoder(bufio.NewReader(bytes.NewReader(wire)), Limits{MaxFrameSize: 1 << 20, MaxHeaders: 64, MaxHeaderLine: 8192})
			d2.Version = version
			g, err := d2.Decode()
			if err != nil {
				t.Fatalf("re-decode of %q: %v", wire, err)
			}
			if g.Command != fr.Command || !reflect.DeepEqual(g.Headers, fr.Headers) || !bytes.Equal(g.Body, fr.Body) {
				t.Fatalf("round trip:\n got %+v\nwant %+v", g, fr)
			}
		}
	})
}

// representable reports whether the encoder can carry f exactly in
// version: it replaces what the version cannot express (see AppendFrame).
func representable(f *Frame, version string) bool {
	raw := version == V10 || f.Command == "CONNECT" || f.Command == "STOMP" || f.Command == "CONNECTED"
	if strings.ContainsAny(f.Command, "\r\n") {
		return false
	}
	for _, h := range f.Headers {
		for _, s := range []string{h.Name, h.Value} {
			if strings.HasSuffix(s, "\r") && version != V12 {
				return false
			}
			if raw && strings.ContainsAny(s, "\n") {
				return false
			}
		}
	}
	return true
}
