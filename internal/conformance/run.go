package conformance

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/isobar-mq/isobar/internal/testutil/wire"
)

// DefaultTimeout is the connect and read timeout of the upstream runner.
const DefaultTimeout = 2 * time.Second

// grace is how long a failing comparison keeps reading to show what else the
// broker sent (it stops earlier when the broker closes the connection).
const grace = 200 * time.Millisecond

// Options configures Case.Run and RunAll.
type Options struct {
	// Addr is the broker's TCP address, e.g. "127.0.0.1:1883". The helper
	// publisher connects to the same address.
	Addr string
	// Timeout bounds each recv step, each write, and the end-of-test check
	// (0 = DefaultTimeout, 2 s as upstream). The TCP connect gets at least
	// DefaultTimeout whatever Timeout is, so that one lost SYN (retransmitted
	// after 1 s, which happens on loopback when a 4-tuple is still in
	// TIME_WAIT) does not fail a case.
	Timeout time.Duration
	// DefaultConnack overrides, per protocol level (3, 4, 5), the exact
	// bytes expected in answer to the default CONNECT. Levels absent from the
	// map (or a nil map) use the README's Mosquitto bytes: 20 02 00 00 for 3
	// and 4, and 20 09 00 00 06 22 00 0A 21 00 14 for 5 (Topic Alias Maximum
	// 10, Receive Maximum 20). It also applies to the helper publisher's
	// 3.1.1 CONNACK.
	DefaultConnack map[int][]byte
	// SemanticConnack relaxes the check of the answer to the default CONNECT
	// (and the helper's): instead of exact bytes, the runner reads one whole
	// CONNACK packet and accepts it if it is a well-formed success with
	// session present 0 — for levels 3 and 4 exactly 20 02 00 00, for level
	// 5 flags 00, reason code 00 and a properties section whose length
	// matches the remaining length, with any properties in it. Use it for a
	// broker whose v5 CONNACK carries properties other than Mosquitto's two.
	// It takes precedence over DefaultConnack. The recv steps of cases are
	// always compared byte for byte.
	SemanticConnack bool
}

func (o Options) timeout() time.Duration {
	if o.Timeout > 0 {
		return o.Timeout
	}
	return DefaultTimeout
}

func (o Options) dialTimeout() time.Duration { return max(o.timeout(), DefaultTimeout) }

// mosquittoConnack holds the README's default CONNACK per protocol level.
var mosquittoConnack = map[int][]byte{
	3: {0x20, 0x02, 0x00, 0x00},
	4: {0x20, 0x02, 0x00, 0x00},
	5: {0x20, 0x09, 0x00, 0x00, 0x06, 0x22, 0x00, 0x0A, 0x21, 0x00, 0x14},
}

func (o Options) connack(ver int) []byte {
	if b, ok := o.DefaultConnack[ver]; ok {
		return b
	}
	return mosquittoConnack[ver]
}

// defaultConnect builds the runner's CONNECT: clean session/start, keepalive
// 60, the given client id; for level 5 with the property Receive Maximum 20.
func defaultConnect(ver int, clientID string) []byte {
	var vh []byte
	switch ver {
	case 3:
		vh = append(vh, 0x00, 0x06, 'M', 'Q', 'I', 's', 'd', 'p', 0x03)
	case 4:
		vh = append(vh, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x04)
	case 5:
		vh = append(vh, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x05)
	}
	vh = append(vh, 0x02, 0x00, 0x3C) // clean session, keepalive 60
	if ver == 5 {
		vh = append(vh, 0x03, 0x21, 0x00, 0x14) // Receive Maximum 20
	}
	vh = append(vh, byte(len(clientID)>>8), byte(len(clientID)))
	vh = append(vh, clientID...)
	return packet(0x10, vh)
}

// packet prepends a fixed header (first byte, remaining length) to body.
func packet(first byte, body []byte) []byte {
	out := []byte{first}
	n := len(body)
	for {
		b := byte(n % 128)
		n /= 128
		if n > 0 {
			b |= 0x80
		}
		out = append(out, b)
		if n == 0 {
			break
		}
	}
	return append(out, body...)
}

// helperPublish builds the helper's PUBLISH: not retained, packet id 1 for
// QoS > 0.
func helperPublish(topic string, qos byte, payload []byte) []byte {
	body := []byte{byte(len(topic) >> 8), byte(len(topic))}
	body = append(body, topic...)
	if qos > 0 {
		body = append(body, 0x00, 0x01)
	}
	body = append(body, payload...)
	return packet(0x30|qos<<1, body)
}

// Run executes the case on a new TCP connection to opts.Addr and returns nil
// if the broker behaved exactly as the case requires. The error names the
// failing step and shows the expected and received bytes (with what else
// arrived within a short grace period) followed by the conversation so far.
//
// Run follows the README's runner semantics with one robustness rule: when a
// send step fails because the broker has already closed the connection, the
// case expects a disconnect and only send steps remain, the case passes (the
// broker closed the connection, which is the only observable outcome; a real
// client might equally have written the remaining bytes into the socket
// before the reset arrived).
func (c Case) Run(opts Options) error {
	if opts.Addr == "" {
		return errors.New("conformance: Options.Addr is empty")
	}
	r := &runner{c: c, opts: opts, timeout: opts.timeout()}
	err := r.run()
	if err == nil {
		return nil
	}
	return &Failure{Case: c.Key(), Step: r.where, Detail: err.Error(), Transcript: r.transcript}
}

// Failure is the error returned by Case.Run.
type Failure struct {
	Case       string   // Case.Key()
	Step       string   // where it failed, e.g. "step 2/4 recv (SUBACK)"
	Detail     string   // what went wrong, with bytes in hex
	Transcript []string // the conversation up to the failure, one packet write or read a line
}

func (f *Failure) Error() string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "%s: %s", f.Step, f.Detail)
	if len(f.Transcript) > 0 {
		sb.WriteString("\n  conversation:")
		for _, l := range f.Transcript {
			sb.WriteString("\n    ")
			sb.WriteString(l)
		}
	}
	return sb.String()
}

type runner struct {
	c          Case
	opts       Options
	timeout    time.Duration
	conn       net.Conn
	where      string
	transcript []string
}

func (r *runner) note(prefix string, b []byte) {
	r.transcript = append(r.transcript, fmt.Sprintf("%s %s [%s]", prefix, wire.Hex(b), wire.Describe(b)))
}

func (r *runner) run() error {
	r.where = "connect"
	conn, err := net.DialTimeout("tcp", r.opts.Addr, r.opts.dialTimeout())
	if err != nil {
		return fmt.Errorf("cannot connect to %s: %w", r.opts.Addr, err)
	}
	r.conn = conn
	defer conn.Close()

	if r.c.Connect {
		r.where = fmt.Sprintf("default CONNECT (MQTT level %d)", r.c.Ver)
		if err := r.send(conn, "client ->", defaultConnect(r.c.Ver, r.c.FullName())); err != nil {
			return err
		}
		if err := r.expectConnack(conn, "client <-", r.c.Ver); err != nil {
			return err
		}
	}
	for i, s := range r.c.Steps {
		r.where = fmt.Sprintf("step %d/%d %s", i+1, len(r.c.Steps), s.Type)
		if s.Comment != "" {
			r.where += " (" + s.Comment + ")"
		}
		switch s.Type {
		case StepSend:
			err := r.send(conn, "client ->", s.Payload)
			if err != nil && wire.IsClosed(err) && r.c.ExpectDisconnect && onlySends(r.c.Steps[i+1:]) {
				r.transcript = append(r.transcript, "(broker had closed the connection; the remaining steps only send)")
				return nil
			}
			if err != nil {
				return err
			}
		case StepRecv:
			if err := r.expect(conn, "client <-", s.Payload); err != nil {
				return err
			}
		case StepPublish:
			if err := r.publish(s); err != nil {
				return err
			}
		default:
			return fmt.Errorf("unknown step type %q", s.Type)
		}
	}
	if r.c.ExpectDisconnect {
		r.where = "end check (broker must close the connection)"
		return r.expectClose()
	}
	r.where = "end check (connection must stay open: PINGREQ -> PINGRESP)"
	if err := r.send(conn, "client ->", []byte{0xC0, 0x00}); err != nil {
		return err
	}
	return r.expect(conn, "client <-", []byte{0xD0, 0x00})
}

func onlySends(steps []Step) bool {
	for _, s := range steps {
		if s.Type != StepSend {
			return false
		}
	}
	return true
}

// sendError wraps a write error so that Run can recognise a closed
// connection with errors.Is.
type sendError struct {
	msg string
	err error
}

func (e *sendError) Error() string { return e.msg }
func (e *sendError) Unwrap() error { return e.err }

func (r *runner) send(conn net.Conn, prefix string, b []byte) error {
	r.note(prefix, b)
	if err := conn.SetWriteDeadline(time.Now().Add(r.timeout)); err != nil {
		return err
	}
	if _, err := conn.Write(b); err != nil {
		return &sendError{msg: fmt.Sprintf("writing %s failed: %s", wire.Hex(b), wire.DescribeErr(err)), err: err}
	}
	return nil
}

// expect reads exactly len(want) bytes and compares them.
func (r *runner) expect(conn net.Conn, prefix string, want []byte) error {
	got, err := wire.ReadFull(conn, len(want), time.Now().Add(r.timeout))
	if err != nil {
		if len(got) > 0 {
			r.note(prefix, got)
		}
		r.transcript = append(r.transcript, prefix+" "+r.errText(err))
		return r.shortRead(want, got, err)
	}
	if !bytes.Equal(got, want) {
		extra, derr := wire.Drain(conn, grace)
		r.note(prefix, append(got[:len(got):len(got)], extra...))
		return errors.New(wire.MismatchAfter(want, got, extra, derr))
	}
	r.note(prefix, got)
	return nil
}

// errText describes a read error, with the timeout for a deadline expiry.
func (r *runner) errText(err error) string {
	if wire.IsTimeout(err) {
		return fmt.Sprintf("timed out after %v", r.timeout)
	}
	return wire.DescribeErr(err)
}

func (r *runner) shortRead(want, got []byte, err error) error {
	what := r.errText(err)
	if len(got) == 0 {
		return fmt.Errorf("expected %s [%s], received nothing: %s", wire.Hex(want), wire.Describe(want), what)
	}
	return fmt.Errorf("expected %s [%s], received only %d of %d bytes %s [%s], then %s", wire.Hex(want),
		wire.Describe(want), len(got), len(want), wire.Hex(got), wire.Describe(got), what)
}

// expectConnack checks the answer to the default CONNECT (or the helper's).
func (r *runner) expectConnack(conn net.Conn, prefix string, ver int) error {
	if !r.opts.SemanticConnack {
		return r.expect(conn, prefix, r.opts.connack(ver))
	}
	deadline := time.Now().Add(r.timeout)
	// Fixed header: type byte and up to four remaining-length bytes.
	hdr, err := wire.ReadFull(conn, 2, deadline)
	if err != nil {
		if len(hdr) > 0 {
			r.note(prefix, hdr)
		}
		return fmt.Errorf("expected a successful CONNACK, %s", r.readFailure(hdr, err))
	}
	rl, mult := int(hdr[1]&0x7F), 128
	for hdr[len(hdr)-1]&0x80 != 0 {
		if len(hdr) == 5 {
			r.note(prefix, hdr)
			return fmt.Errorf("expected a successful CONNACK, got %s: invalid remaining length", wire.Hex(hdr))
		}
		b, err := wire.ReadFull(conn, 1, deadline)
		hdr = append(hdr, b...)
		if err != nil {
			r.note(prefix, hdr)
			return fmt.Errorf("expected a successful CONNACK, %s", r.readFailure(hdr, err))
		}
		rl += int(b[0]&0x7F) * mult
		mult *= 128
	}
	if hdr[0] != 0x20 {
		extra, derr := wire.Drain(conn, grace)
		all := append(hdr, extra...)
		r.note(prefix, all)
		return fmt.Errorf("expected a successful CONNACK, got %s [%s], then %s", wire.Hex(all), wire.Describe(all),
			wire.StateAfter(derr))
	}
	body, err := wire.ReadFull(conn, rl, deadline)
	pkt := append(hdr, body...)
	r.note(prefix, pkt)
	if err != nil {
		return fmt.Errorf("expected a successful CONNACK, %s", r.readFailure(pkt, err))
	}
	bad := func(why string) error {
		return fmt.Errorf("expected a successful CONNACK with session present 0, got %s [%s]: %s", wire.Hex(pkt),
			wire.Describe(pkt), why)
	}
	if ver != 5 {
		if !bytes.Equal(pkt, []byte{0x20, 0x02, 0x00, 0x00}) {
			return bad("MQTT 3.1/3.1.1 success is exactly 20 02 00 00")
		}
		return nil
	}
	if rl < 3 {
		return bad("an MQTT 5 CONNACK has at least 3 bytes after the fixed header")
	}
	if body[0] != 0 {
		return bad("acknowledge flags must be 00")
	}
	if body[1] != 0 {
		return bad("reason code is not 00 (success)")
	}
	plen, n, ok := varint(body[2:])
	if !ok || 2+n+plen != rl {
		return bad("property length does not match the remaining length")
	}
	return nil
}

func (r *runner) readFailure(got []byte, err error) string {
	what := r.errText(err)
	if len(got) == 0 {
		return "received nothing: " + what
	}
	return fmt.Sprintf("received only %s [%s], then %s", wire.Hex(got), wire.Describe(got), what)
}

func varint(b []byte) (value, n int, ok bool) {
	mult := 1
	for i := 0; i < 4 && i < len(b); i++ {
		value += int(b[i]&0x7F) * mult
		if b[i]&0x80 == 0 {
			return value, i + 1, true
		}
		mult *= 128
	}
	return 0, 0, false
}

// expectClose reads one byte: EOF or a reset passes; data or a timeout fails.
func (r *runner) expectClose() error {
	got, err := wire.ReadFull(r.conn, 1, time.Now().Add(r.timeout))
	switch {
	case len(got) > 0:
		extra, derr := wire.Drain(r.conn, grace)
		all := append(got, extra...)
		r.note("client <-", all)
		return fmt.Errorf("still connected: the broker sent %s [%s] instead of closing the connection, then %s",
			wire.Hex(all), wire.Describe(all), wire.StateAfter(derr))
	case wire.IsClosed(err):
		r.transcript = append(r.transcript, "client <- "+wire.DescribeErr(err))
		return nil
	case wire.IsTimeout(err):
		return fmt.Errorf("still connected: the broker neither closed the connection nor sent anything within %v",
			r.timeout)
	default:
		return fmt.Errorf("reading: %v", err)
	}
}

// publish runs the helper publisher on its own connection.
func (r *runner) publish(s Step) error {
	conn, err := net.DialTimeout("tcp", r.opts.Addr, r.opts.dialTimeout())
	if err != nil {
		return fmt.Errorf("helper publisher cannot connect to %s: %w", r.opts.Addr, err)
	}
	defer conn.Close()
	const h = "helper ->"
	const hr = "helper <-"
	fail := func(err error) error { return fmt.Errorf("helper publisher: %w", err) }
	if err := r.send(conn, h, defaultConnect(4, "helper")); err != nil {
		return fail(err)
	}
	if err := r.expectConnack(conn, hr, 4); err != nil {
		return fail(err)
	}
	if err := r.send(conn, h, helperPublish(s.Topic, s.QoS, s.Payload)); err != nil {
		return fail(err)
	}
	switch s.QoS {
	case 1:
		if err := r.expect(conn, hr, []byte{0x40, 0x02, 0x00, 0x01}); err != nil {
			return fail(err)
		}
	case 2:
		if err := r.expect(conn, hr, []byte{0x50, 0x02, 0x00, 0x01}); err != nil {
			return fail(err)
		}
		if err := r.send(conn, h, []byte{0x62, 0x02, 0x00, 0x01}); err != nil {
			return fail(err)
		}
		if err := r.expect(conn, hr, []byte{0x70, 0x02, 0x00, 0x01}); err != nil {
			return fail(err)
		}
	}
	r.transcript = append(r.transcript, "helper closes its connection (no DISCONNECT)")
	return nil
}
