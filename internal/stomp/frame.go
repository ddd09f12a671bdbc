package stomp

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// STOMP protocol versions.
const (
	V10 = "1.0"
	V11 = "1.1"
	V12 = "1.2"
)

// Default codec limits (see Limits).
const (
	DefaultMaxFrameSize  = 1 << 20
	DefaultMaxHeaders    = 64
	DefaultMaxHeaderLine = 8 << 10
)

// Header is one frame header, as it appears on the wire (decoded).
type Header struct{ Name, Value string }

// Frame is one STOMP frame. Headers keep their order and repetitions: the
// first occurrence of a name is the one that counts (STOMP 1.2 "Repeated
// Header Entries"), which Get implements.
type Frame struct {
	Command string
	Headers []Header
	Body    []byte
}

// Get returns the first header named name.
func (f *Frame) Get(name string) (string, bool) {
	for _, h := range f.Headers {
		if h.Name == name {
			return h.Value, true
		}
	}
	return "", false
}

// Value returns the first header named name, or "".
func (f *Frame) Value(name string) string {
	v, _ := f.Get(name)
	return v
}

// Add appends a header.
func (f *Frame) Add(name, value string) { f.Headers = append(f.Headers, Header{name, value}) }

// Limits bound what the decoder accepts from a peer. Zero fields take the
// defaults.
type Limits struct {
	// MaxFrameSize bounds a whole frame: command, headers and body.
	MaxFrameSize int
	// MaxHeaders bounds the number of header lines.
	MaxHeaders int
	// MaxHeaderLine bounds one command or header line (without its EOL).
	MaxHeaderLine int
}

func (l Limits) withDefaults() Limits {
	if l.MaxFrameSize <= 0 {
		l.MaxFrameSize = DefaultMaxFrameSize
	}
	if l.MaxHeaders <= 0 {
		l.MaxHeaders = DefaultMaxHeaders
	}
	if l.MaxHeaderLine <= 0 {
		l.MaxHeaderLine = DefaultMaxHeaderLine
	}
	return l
}

// ProtocolError is a frame the decoder refuses: the connection answers
// with an ERROR frame carrying Msg and closes. Reason is a short stable
// label for metrics.
type ProtocolError struct {
	Reason string
	Msg    string
}

func (e *ProtocolError) Error() string { return "stomp: " + e.Msg }

func protoErr(reason, format string, args ...any) *ProtocolError {
	return &ProtocolError{Reason: reason, Msg: fmt.Sprintf(format, args...)}
}

// Decoder reads frames from a buffered stream. It is not safe for
// concurrent use.
type Decoder struct {
	r   *bufio.Reader
	lim Limits
	// Version selects the header escaping of the frames that follow
	// (1.0 when empty). CONNECT, STOMP and CONNECTED frames are never
	// unescaped, whatever the version [STOMP 1.2 "Value Encoding"].
	Version string
	line    []byte
}

// NewDecoder returns a decoder over r with the given limits.
func NewDecoder(r *bufio.Reader, lim Limits) *Decoder {
	return &Decoder{r: r, lim: lim.withDefaults()}
}

// Decode returns the next frame, skipping the EOLs that separate frames
// (heart-beats). It returns io.EOF when the stream ends cleanly between
// frames, io.ErrUnexpectedEOF inside one, a *ProtocolError for a frame it
// refuses, and the reader's error otherwise.
func (d *Decoder) Decode() (*Frame, error) {
	if err := d.skipEOLs(); err != nil {
		return nil, err
	}
	size := 0
	cmd, err := d.readLine(&size)
	if err != nil {
		return nil, err
	}
	if len(cmd) == 0 {
		return nil, protoErr("bad_frame", "empty command")
	}
	if bytes.IndexByte(cmd, 0) >= 0 {
		return nil, protoErr("bad_frame", "NUL byte in the command line")
	}
	f := &Frame{Command: string(cmd)}
	unescape := f.Command != "CONNECT" && f.Command != "STOMP" && f.Command != "CONNECTED"
	for {
		line, err := d.readLine(&size)
		if err != nil {
			return nil, err
		}
		if len(line) == 0 {
			break
		}
		if len(f.Headers) >= d.lim.MaxHeaders {
			return nil, protoErr("too_many_headers", "more than %d headers", d.lim.MaxHeaders)
		}
		if bytes.IndexByte(line, 0) >= 0 {
			return nil, protoErr("bad_header", "NUL byte in a header")
		}
		i := bytes.IndexByte(line, ':')
		if i < 0 {
			return nil, protoErr("bad_header", "header line without ':'")
		}
		if i == 0 {
			return nil, protoErr("bad_header", "header with an empty name")
		}
		name, value := string(line[:i]), string(line[i+1:])
		if unescape {
			if name, err = unescapeHeader(name, d.Version); err != nil {
				return nil, err
			}
			if value, err = unescapeHeader(value, d.Version); err != nil {
				return nil, err
			}
		}
		f.Headers = append(f.Headers, Header{name, value})
	}
	room := d.lim.MaxFrameSize - size
	if cl, ok := f.Get("content-length"); ok {
		n, err := strconv.ParseUint(strings.TrimSpace(cl), 10, 31)
		if err != nil {
			return nil, protoErr("bad_header", "content-length %q is not a number", cl)
		}
		if int(n) > room {
			return nil, protoErr("frame_too_large", "frame larger than %d bytes", d.lim.MaxFrameSize)
		}
		f.Body = make([]byte, int(n))
		if _, err := io.ReadFull(d.r, f.Body); err != nil {
			return nil, unexpected(err)
		}
		b, err := d.r.ReadByte()
		if err != nil {
			return nil, unexpected(err)
		}
		if b != 0 {
			return nil, protoErr("bad_frame", "frame body not terminated by NUL after content-length bytes")
		}
		return f, nil
	}
	var body []byte
	for {
		s, err := d.r.ReadSlice(0)
		n := len(s)
		if err == nil {
			n-- // the NUL
		}
		if len(body)+n > room {
			return nil, protoErr("frame_too_large", "frame larger than %d bytes", d.lim.MaxFrameSize)
		}
		body = append(body, s[:n]...)
		if err == nil {
			break
		}
		if err != bufio.ErrBufferFull {
			return nil, unexpected(err)
		}
	}
	if len(body) > 0 {
		f.Body = body
	}
	return f, nil
}

func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// skipEOLs consumes the EOLs before a frame. A lone CR not followed by LF
// starts a command, where it is refused.
func (d *Decoder) skipEOLs() error {
	for {
		b, err := d.r.Peek(1)
		if err != nil {
			return err
		}
		switch b[0] {
		case '\n':
			_, _ = d.r.Discard(1)
		case '\r':
			b, err = d.r.Peek(2)
			if err != nil {
				if err == io.EOF {
					return io.ErrUnexpectedEOF
				}
				return err
			}
			if b[1] != '\n' {
				return protoErr("bad_frame", "CR not followed by LF")
			}
			_, _ = d.r.Discard(2)
		default:
			return nil
		}
	}
}

// readLine reads one line without its EOL (LF or CR LF), within the
// line limit, and adds its wire size to *size (within the frame limit).
func (d *Decoder) readLine(size *int) ([]byte, error) {
	d.line = d.line[:0]
	for {
		s, err := d.r.ReadSlice('\n')
		if len(d.line)+len(s) > d.lim.MaxHeaderLine+2 {
			return nil, protoErr("header_too_long", "header line longer than %d bytes", d.lim.MaxHeaderLine)
		}
		d.line = append(d.line, s...)
		if err == nil {
			break
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		return nil, unexpected(err)
	}
	*size += len(d.line)
	if *size > d.lim.MaxFrameSize {
		return nil, protoErr("frame_too_large", "frame larger than %d bytes", d.lim.MaxFrameSize)
	}
	l := d.line[:len(d.line)-1]
	if n := len(l); n > 0 && l[n-1] == '\r' {
		l = l[:n-1]
	}
	if len(l) > d.lim.MaxHeaderLine {
		return nil, protoErr("header_too_long", "header line longer than %d bytes", d.lim.MaxHeaderLine)
	}
	return l, nil
}

// unescapeHeader decodes the escapes of STOMP 1.1 (\n \c \\) and 1.2 (also
// \r). 1.0 has none: its bytes are taken verbatim. Any other escape is a
// protocol error.
func unescapeHeader(s, version string) (string, error) {
	if version == V10 || version == "" || strings.IndexByte(s, '\\') < 0 {
		return s, nil
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '\\' {
			b.WriteByte(c)
			continue
		}
		if i+1 == len(s) {
			return "", protoErr("bad_escape", "header ends with a lone backslash")
		}
		i++
		switch s[i] {
		case 'n':
			b.WriteByte('\n')
		case 'c':
			b.WriteByte(':')
		case '\\':
			b.WriteByte('\\')
		case 'r':
			if version == V11 {
				return "", protoErr("bad_escape", "undefined escape \\r in STOMP 1.1")
			}
			b.WriteByte('\r')
		default:
			return "", protoErr("bad_escape", "undefined escape \\%c", s[i])
		}
	}
	return b.String(), nil
}

// AppendFrame appends the wire form of f in the given version's escaping
// to dst. Characters a version cannot carry in a header (any LF, a
// trailing CR or a NUL in 1.0 and in CONNECT/CONNECTED frames; a trailing
// CR or a NUL in 1.1; a NUL in 1.2) are replaced by a space, and in
// unescaped frames a ':' in a header name by '_', so the frame always
// decodes to what was meant as closely as the version allows. A
// content-length header is added when the body holds a NUL and f has
// none.
func AppendFrame(dst []byte, f *Frame, version string) []byte {
	dst = append(dst, f.Command...)
	dst = append(dst, '\n')
	raw := version == V10 || version == "" || f.Command == "CONNECT" || f.Command == "STOMP" || f.Command == "CONNECTED"
	hasCL := false
	for _, h := range f.Headers {
		if h.Name == "" {
			continue
		}
		if h.Name == "content-length" {
			hasCL = true
		}
		dst = appendHeaderText(dst, h.Name, version, raw, true)
		dst = append(dst, ':')
		dst = appendHeaderText(dst, h.Value, version, raw, false)
		dst = append(dst, '\n')
	}
	if !hasCL && bytes.IndexByte(f.Body, 0) >= 0 {
		dst = append(dst, "content-length:"...)
		dst = strconv.AppendInt(dst, int64(len(f.Body)), 10)
		dst = append(dst, '\n')
	}
	dst = append(dst, '\n')
	dst = append(dst, f.Body...)
	return append(dst, 0)
}

func appendHeaderText(dst []byte, s, version string, raw, name bool) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		last := i == len(s)-1
		switch {
		case c == 0:
			dst = append(dst, ' ')
		case raw:
			switch {
			case c == '\n', c == '\r' && last:
				dst = append(dst, ' ')
			case c == ':' && name:
				dst = append(dst, '_')
			default:
				dst = append(dst, c)
			}
		case c == '\\':
			dst = append(dst, '\\', '\\')
		case c == '\n':
			dst = append(dst, '\\', 'n')
		case c == ':':
			dst = append(dst, '\\', 'c')
		case c == '\r':
			switch {
			case version == V12:
				dst = append(dst, '\\', 'r')
			case last:
				dst = append(dst, ' ')
			default:
				dst = append(dst, c)
			}
		default:
			dst = append(dst, c)
		}
	}
	return dst
}
