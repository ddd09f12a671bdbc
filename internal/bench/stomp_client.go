package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"
)

// A minimal STOMP 1.2 client for the benchmark: CONNECT, SEND (with
// content-length, as payloads are binary), SUBSCRIBE, ACK and RECEIPT. It
// is independent of the gateway's codec on purpose: the benchmark measures
// the broker with a client of its own, like the MQTT one in client.go.

// stompFrame is a received frame. Header values are not unescaped: the
// benchmark only reads receipt-id, ack, message and content-length, whose
// values never need escaping.
type stompFrame struct {
	command string
	headers map[string]string
	body    []byte
}

// stompConn is one STOMP connection. Writes are serialised by mu; reading
// is left to one goroutine (readFrame).
type stompConn struct {
	c  net.Conn
	r  *bufio.Reader
	mu sync.Mutex
	w  *bufio.Writer
}

// dialStomp connects and completes CONNECT/CONNECTED within timeout.
func dialStomp(ctx context.Context, addr, login, passcode string, timeout time.Duration) (*stompConn, error) {
	d := net.Dialer{Timeout: timeout}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	s := &stompConn{c: c, r: bufio.NewReaderSize(c, 64<<10), w: bufio.NewWriterSize(c, 64<<10)}
	h := []string{"accept-version", "1.2", "host", "localhost", "heart-beat", "0,0"}
	if login != "" {
		h = append(h, "login", login, "passcode", passcode)
	}
	_ = c.SetDeadline(time.Now().Add(timeout))
	if err := s.send("CONNECT", nil, h...); err != nil {
		c.Close()
		return nil, err
	}
	f, err := s.readFrame()
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("CONNECT: %w", err)
	}
	if f.command != "CONNECTED" {
		c.Close()
		return nil, fmt.Errorf("CONNECT: %s %s", f.command, f.headers["message"])
	}
	_ = c.SetDeadline(time.Time{})
	return s, nil
}

// send writes one frame and flushes it. headers are name, value pairs.
func (s *stompConn) send(command string, body []byte, headers ...string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.writeFrame(command, body, headers...)
	return s.w.Flush()
}

// writeFrame buffers a frame without flushing; the caller holds mu.
func (s *stompConn) writeFrame(command string, body []byte, headers ...string) {
	s.w.WriteString(command)
	s.w.WriteByte('\n')
	for i := 0; i+1 < len(headers); i += 2 {
		s.w.WriteString(headers[i])
		s.w.WriteByte(':')
		s.w.WriteString(headers[i+1])
		s.w.WriteByte('\n')
	}
	if body != nil {
		s.w.WriteString("content-length:")
		s.w.WriteString(strconv.Itoa(len(body)))
		s.w.WriteByte('\n')
	}
	s.w.WriteByte('\n')
	s.w.Write(body)
	s.w.WriteByte(0)
}

// readFrame reads the next frame, skipping heart-beat EOLs.
func (s *stompConn) readFrame() (*stompFrame, error) {
	var line string
	for {
		l, err := s.r.ReadString('\n')
		if err != nil {
			return nil, err
		}
		if l = strings.TrimRight(l, "\r\n"); l != "" {
			line = l
			break
		}
	}
	f := &stompFrame{command: line, headers: make(map[string]string, 8)}
	for {
		l, err := s.r.ReadString('\n')
		if err != nil {
			return nil, err
		}
		l = strings.TrimRight(l, "\r\n")
		if l == "" {
			break
		}
		k, v, _ := strings.Cut(l, ":")
		if _, dup := f.headers[k]; !dup {
			f.headers[k] = v
		}
	}
	if cl, ok := f.headers["content-length"]; ok {
		n, err := strconv.Atoi(cl)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("bad content-length %q", cl)
		}
		f.body = make([]byte, n+1)
		if _, err := io.ReadFull(s.r, f.body); err != nil {
			return nil, err
		}
		if f.body[n] != 0 {
			return nil, errors.New("no NUL after the body")
		}
		f.body = f.body[:n]
		return f, nil
	}
	b, err := s.r.ReadBytes(0)
	if err != nil {
		return nil, err
	}
	f.body = b[:len(b)-1]
	return f, nil
}

func (s *stompConn) close() {
	_ = s.c.SetWriteDeadline(time.Now().Add(time.Second))
	_ = s.send("DISCONNECT", nil)
	_ = s.c.Close()
}
