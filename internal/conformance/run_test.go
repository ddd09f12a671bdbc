package conformance

import (
	"bytes"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/isobar-mq/isobar/internal/testutil/wire"
)

// fakeBroker serves a scripted conversation: the i-th accepted connection
// is handed to handlers[i]. Handlers report problems with t.Errorf.
func fakeBroker(t *testing.T, handlers ...func(c net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for _, h := range handlers {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				h(c)
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		wg.Wait()
	})
	return ln.Addr().String()
}

func hx(t *testing.T, s string) []byte {
	t.Helper()
	b, err := wire.DecodeHex(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// want reads len(b) bytes and reports a difference.
func want(t *testing.T, c net.Conn, b []byte) bool {
	t.Helper()
	got, err := wire.ReadFull(c, len(b), time.Now().Add(2*time.Second))
	if err != nil || !bytes.Equal(got, b) {
		t.Errorf("fake broker: %s (%v)", wire.Mismatch(b, got), err)
		return false
	}
	return true
}

// waitEOF waits for the client to close its end.
func waitEOF(t *testing.T, c net.Conn) {
	t.Helper()
	got, err := wire.ReadFull(c, 1, time.Now().Add(2*time.Second))
	if len(got) != 0 || !wire.IsClosed(err) {
		t.Errorf("fake broker: expected the client to close, got %s, %v", wire.Hex(got), err)
	}
}

func write(c net.Conn, b []byte) { _, _ = c.Write(b) }

// connected answers the default CONNECT of a case and returns false if it
// was not the expected one.
func connected(t *testing.T, c net.Conn, ver int, clientID string) bool {
	t.Helper()
	if !want(t, c, defaultConnect(ver, clientID)) {
		return false
	}
	write(c, mosquittoConnack[ver])
	return true
}

func TestDefaultConnect(t *testing.T) {
	for ver, w := range map[int]string{
		3: "10 11 0006 4D5149736470 03 02 003C 0003 612062",
		4: "10 0F 0004 4D515454 04 02 003C 0003 612062",
		5: "10 13 0004 4D515454 05 02 003C 03 210014 0003 612062",
	} {
		if got := defaultConnect(ver, "a b"); !bytes.Equal(got, hx(t, w)) {
			t.Errorf("ver %d: got %s, want %s", ver, wire.Hex(got), w)
		}
	}
	// A client id long enough for a two-byte remaining length.
	long := strings.Repeat("x", 200)
	got := defaultConnect(4, long)
	if !bytes.Equal(got[:3], []byte{0x10, 0xD4, 0x01}) || len(got) != 3+212 {
		t.Errorf("long id: header %s, length %d", wire.Hex(got[:3]), len(got))
	}
	if got := helperPublish("p", 2, []byte("message")); !bytes.Equal(got, hx(t, "34 0C 0001 70 0001 6d657373616765")) {
		t.Errorf("helper QoS 2 PUBLISH %s", wire.Hex(got))
	}
	if got := helperPublish("p", 0, []byte("m")); !bytes.Equal(got, hx(t, "30 04 0001 70 6d")) {
		t.Errorf("helper QoS 0 PUBLISH %s", wire.Hex(got))
	}
}

func TestRunPass(t *testing.T) {
	c := Case{File: "F.json", Group: "v5.0   G", Name: "keep", Ver: 5, Connect: true, Steps: []Step{
		{Type: StepSend, Payload: hx(t, "82 06 1234 0001 70 01")},
		{Type: StepRecv, Payload: hx(t, "90 04 1234 00 01")},
	}}
	addr := fakeBroker(t, func(conn net.Conn) {
		if !connected(t, conn, 5, "v5.0   G keep") || !want(t, conn, hx(t, "82 06 1234 0001 70 01")) {
			return
		}
		// Answer in two writes: the runner must loop over short reads.
		write(conn, hx(t, "90 04"))
		time.Sleep(10 * time.Millisecond)
		write(conn, hx(t, "1234 00 01"))
		if want(t, conn, hx(t, "C0 00")) {
			write(conn, hx(t, "D0 00"))
			waitEOF(t, conn)
		}
	})
	if err := c.Run(Options{Addr: addr}); err != nil {
		t.Fatal(err)
	}
}

func TestRunRecvMismatch(t *testing.T) {
	c := Case{File: "F.json", Group: "v3.1.1 G", Name: "m", Ver: 4, Connect: true, ExpectDisconnect: true, Steps: []Step{
		{Type: StepSend, Payload: hx(t, "82 06 1234 0001 70 01")},
		{Type: StepRecv, Payload: hx(t, "90 03 1234 01"), Comment: "SUBACK"},
		{Type: StepSend, Payload: hx(t, "C0 00")},
	}}
	addr := fakeBroker(t, func(conn net.Conn) {
		if connected(t, conn, 4, "v3.1.1 G m") && want(t, conn, hx(t, "82 06 1234 0001 70 01")) {
			write(conn, hx(t, "90 03 1234 80 E0 00"))
		}
	})
	err := c.Run(Options{Addr: addr})
	var f *Failure
	if !errors.As(err, &f) {
		t.Fatalf("got %v, want *Failure", err)
	}
	if f.Case != "F.json:v3.1.1 G m" || f.Step != "step 2/3 recv (SUBACK)" {
		t.Errorf("case %q step %q", f.Case, f.Step)
	}
	for _, s := range []string{
		"step 2/3 recv (SUBACK): expected 90 03 12 34 01 [SUBACK], got 90 03 12 34 80 (first difference at byte 4); " +
			"in total received 90 03 12 34 80 E0 00 [SUBACK, DISCONNECT], then connection closed by peer (EOF)",
		"client -> 10 16 00 04 4D 51 54 54 04 02 00 3C 00 0A 76 33 2E 31 2E 31 20 47 20 6D [CONNECT]",
		"client <- 20 02 00 00 [CONNACK session present 0, v3 return code 0 accepted]",
		"client -> 82 06 12 34 00 01 70 01 [SUBSCRIBE]",
		"client <- 90 03 12 34 80 E0 00 [SUBACK, DISCONNECT]",
	} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error lacks %q:\n%v", s, err)
		}
	}
}

func TestRunShortAndSilent(t *testing.T) {
	c := Case{File: "F.json", Group: "g", Name: "n", Ver: 4, ExpectDisconnect: true, Steps: []Step{
		{Type: StepSend, Payload: hx(t, "10 00")},
		{Type: StepRecv, Payload: hx(t, "E0 01 82")},
	}}
	addr := fakeBroker(t, func(conn net.Conn) {
		if want(t, conn, hx(t, "10 00")) {
			write(conn, hx(t, "E0 01"))
		}
	})
	err := c.Run(Options{Addr: addr})
	if err == nil || !strings.Contains(err.Error(), "expected E0 01 82 [DISCONNECT reason 0x82 protocol error], "+
		"received only 2 of 3 bytes E0 01 [DISCONNECT (truncated: remaining length 1, 0 bytes present)], "+
		"then connection closed by peer (EOF)") {
		t.Errorf("short read: %v", err)
	}

	stop := make(chan struct{})
	addr = fakeBroker(t, func(conn net.Conn) {
		want(t, conn, hx(t, "10 00"))
		<-stop
	})
	err = c.Run(Options{Addr: addr, Timeout: 50 * time.Millisecond})
	close(stop)
	if err == nil || !strings.Contains(err.Error(), "received nothing: timed out after 50ms") {
		t.Errorf("silent broker: %v", err)
	}

	addr = fakeBroker(t, func(conn net.Conn) { want(t, conn, hx(t, "10 00")) })
	err = c.Run(Options{Addr: addr})
	if err == nil || !strings.Contains(err.Error(), "received nothing: connection closed by peer (EOF)") {
		t.Errorf("closing broker: %v", err)
	}
}

func TestRunEndChecks(t *testing.T) {
	closing := Case{File: "F.json", Group: "g", Name: "n", Ver: 4, ExpectDisconnect: true, Steps: []Step{
		{Type: StepSend, Payload: hx(t, "C1 00")},
	}}
	t.Run("closed", func(t *testing.T) {
		addr := fakeBroker(t, func(conn net.Conn) { want(t, conn, hx(t, "C1 00")) })
		if err := closing.Run(Options{Addr: addr}); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("reset", func(t *testing.T) {
		c := closing
		c.Steps = []Step{{Type: StepSend, Payload: hx(t, "C1 00 C0 00 C0 00")}}
		addr := fakeBroker(t, func(conn net.Conn) {
			want(t, conn, hx(t, "C1"))
			_ = conn.(*net.TCPConn).SetLinger(0) // unread input + linger 0: RST
		})
		if err := c.Run(Options{Addr: addr}); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("data instead of close", func(t *testing.T) {
		addr := fakeBroker(t, func(conn net.Conn) {
			if want(t, conn, hx(t, "C1 00")) {
				write(conn, hx(t, "D0 00"))
			}
		})
		err := closing.Run(Options{Addr: addr})
		if err == nil || !strings.Contains(err.Error(), "end check (broker must close the connection): still connected: "+
			"the broker sent D0 00 [PINGRESP] instead of closing the connection, then connection closed by peer (EOF)") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("left open", func(t *testing.T) {
		stop := make(chan struct{})
		addr := fakeBroker(t, func(conn net.Conn) {
			want(t, conn, hx(t, "C1 00"))
			<-stop
		})
		err := closing.Run(Options{Addr: addr, Timeout: 50 * time.Millisecond})
		close(stop)
		if err == nil || !strings.Contains(err.Error(), "neither closed the connection nor sent anything within 50ms") {
			t.Fatalf("got %v", err)
		}
	})

	open := Case{File: "F.json", Group: "g", Name: "n", Ver: 4, Steps: []Step{{Type: StepSend, Payload: hx(t, "30 03 0001 70")}}}
	t.Run("ping ok", func(t *testing.T) {
		addr := fakeBroker(t, func(conn net.Conn) {
			if want(t, conn, hx(t, "30 03 0001 70")) && want(t, conn, hx(t, "C0 00")) {
				write(conn, hx(t, "D0 00"))
				waitEOF(t, conn)
			}
		})
		if err := open.Run(Options{Addr: addr}); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("unlisted packet before PINGRESP", func(t *testing.T) {
		addr := fakeBroker(t, func(conn net.Conn) {
			if want(t, conn, hx(t, "30 03 0001 70")) {
				write(conn, hx(t, "30 03 0001 70"))
				if want(t, conn, hx(t, "C0 00")) {
					write(conn, hx(t, "D0 00"))
				}
			}
		})
		err := open.Run(Options{Addr: addr})
		if err == nil || !strings.Contains(err.Error(), "end check (connection must stay open: PINGREQ -> PINGRESP): "+
			"expected D0 00 [PINGRESP], got 30 03 (first difference at byte 0); in total received 30 03 00 01 70 D0 00 [PUBLISH qos 0, PINGRESP]") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("closed instead of PINGRESP", func(t *testing.T) {
		addr := fakeBroker(t, func(conn net.Conn) {
			if want(t, conn, hx(t, "30 03 0001 70")) {
				want(t, conn, hx(t, "C0 00"))
			}
		})
		err := open.Run(Options{Addr: addr})
		if err == nil || !strings.Contains(err.Error(), "expected D0 00 [PINGRESP], received nothing: connection closed by peer (EOF)") {
			t.Fatalf("got %v", err)
		}
	})
}

func TestRunHelperPublisher(t *testing.T) {
	helperConnect := hx(t, "10 12 0004 4D515454 04 02 003C 0006 68656C706572")
	for _, qos := range []byte{0, 1, 2} {
		c := Case{File: "FLOW.json", Group: "v3.1.1 FLOW", Name: "h", Ver: 4, Connect: true, Steps: []Step{
			{Type: StepPublish, Topic: "p", QoS: qos, Payload: []byte("message")},
			{Type: StepRecv, Payload: hx(t, "30 0A 0001 70 6d657373616765")},
		}}
		delivered := make(chan struct{})
		addr := fakeBroker(t,
			func(conn net.Conn) { // the test's connection
				if !connected(t, conn, 4, "v3.1.1 FLOW h") {
					return
				}
				select {
				case <-delivered:
				case <-time.After(2 * time.Second):
					return
				}
				write(conn, hx(t, "30 0A 0001 70 6d657373616765"))
				if want(t, conn, hx(t, "C0 00")) {
					write(conn, hx(t, "D0 00"))
					waitEOF(t, conn)
				}
			},
			func(conn net.Conn) { // the helper
				if !want(t, conn, helperConnect) {
					return
				}
				write(conn, hx(t, "20 02 00 00"))
				if !want(t, conn, helperPublish("p", qos, []byte("message"))) {
					return
				}
				switch qos {
				case 1:
					write(conn, hx(t, "40 02 00 01"))
				case 2:
					write(conn, hx(t, "50 02 00 01"))
					if !want(t, conn, hx(t, "62 02 00 01")) {
						return
					}
					write(conn, hx(t, "70 02 00 01"))
				}
				waitEOF(t, conn) // closed without DISCONNECT
				close(delivered)
			})
		if err := c.Run(Options{Addr: addr}); err != nil {
			t.Fatalf("QoS %d: %v", qos, err)
		}
	}

	c := Case{File: "FLOW.json", Group: "v3.1.1 FLOW", Name: "h", Ver: 4, Connect: true, Steps: []Step{
		{Type: StepPublish, Topic: "p", QoS: 1, Payload: []byte("m")},
	}}
	addr := fakeBroker(t,
		func(conn net.Conn) { connected(t, conn, 4, "v3.1.1 FLOW h") },
		func(conn net.Conn) {
			if want(t, conn, helperConnect) {
				write(conn, hx(t, "20 02 00 00"))
				if want(t, conn, helperPublish("p", 1, []byte("m"))) {
					write(conn, hx(t, "40 03 00 01 10"))
				}
			}
		})
	err := c.Run(Options{Addr: addr})
	if err == nil || !strings.Contains(err.Error(), "step 1/1 publish: helper publisher: expected 40 02 00 01 [PUBACK], got 40 03 00 01") ||
		!strings.Contains(err.Error(), "helper <- 40 03 00 01 10 [PUBACK]") {
		t.Fatalf("got %v", err)
	}
}

func TestRunConnackOptions(t *testing.T) {
	c := Case{File: "F.json", Group: "g", Name: "n", Ver: 5, Connect: true}
	serve := func(connack string, accepted bool) string {
		return fakeBroker(t, func(conn net.Conn) {
			if want(t, conn, defaultConnect(5, "g n")) {
				write(conn, hx(t, connack))
				if accepted && want(t, conn, hx(t, "C0 00")) {
					write(conn, hx(t, "D0 00"))
					waitEOF(t, conn)
				}
			}
		})
	}
	other := "20 0B 00 00 08 22 00 0A 21 00 14 25 01"
	if err := c.Run(Options{Addr: serve(other, false)}); err == nil || !strings.Contains(err.Error(), "default CONNECT (MQTT level 5): expected 20 09") {
		t.Errorf("exact CONNACK check: %v", err)
	}
	if err := c.Run(Options{Addr: serve(other, true), SemanticConnack: true}); err != nil {
		t.Errorf("semantic CONNACK check: %v", err)
	}
	if err := c.Run(Options{Addr: serve("20 03 00 00 00", true), DefaultConnack: map[int][]byte{5: hx(t, "20 03 00 00 00")}}); err != nil {
		t.Errorf("DefaultConnack override: %v", err)
	}
	for connack, why := range map[string]string{
		"20 03 01 00 00":       "acknowledge flags must be 00",
		"20 03 00 80 00":       "reason code is not 00",
		"20 05 00 00 05 22 00": "property length does not match",
		"20 02 00 00":          "at least 3 bytes",
		"E0 01 82":             "expected a successful CONNACK, got E0 01 82 [DISCONNECT reason 0x82 protocol error]",
	} {
		addr := fakeBroker(t, func(conn net.Conn) {
			if want(t, conn, defaultConnect(5, "g n")) {
				write(conn, hx(t, connack))
			}
		})
		if err := c.Run(Options{Addr: addr, SemanticConnack: true}); err == nil || !strings.Contains(err.Error(), why) {
			t.Errorf("semantic check of %s: %v", connack, err)
		}
	}
	c.Ver = 4
	addr := fakeBroker(t, func(conn net.Conn) {
		if want(t, conn, defaultConnect(4, "g n")) {
			write(conn, hx(t, "20 02 01 00"))
		}
	})
	if err := c.Run(Options{Addr: addr, SemanticConnack: true}); err == nil || !strings.Contains(err.Error(), "exactly 20 02 00 00") {
		t.Errorf("semantic v4 check: %v", err)
	}
}

func TestRunConnectErrors(t *testing.T) {
	if err := (Case{}).Run(Options{}); err == nil {
		t.Error("empty address accepted")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	err = Case{Connect: true, Ver: 4}.Run(Options{Addr: addr})
	if err == nil || !strings.Contains(err.Error(), "connect: cannot connect to "+addr) {
		t.Errorf("got %v", err)
	}
}

func TestRunAllDeviations(t *testing.T) {
	pass := Case{File: "A.json", Group: "g", Name: "pass", Ver: 4, ExpectDisconnect: true,
		Steps: []Step{{Type: StepSend, Payload: hx(t, "C1 00")}}}
	fail := Case{File: "B.json", Group: "g", Name: "fail", Ver: 4, ExpectDisconnect: true,
		Steps: []Step{{Type: StepSend, Payload: hx(t, "C1 00")}, {Type: StepRecv, Payload: hx(t, "E0 01 81")}}}
	listedPass := pass
	listedPass.Name = "listed pass"
	closer := func(conn net.Conn) { want(t, conn, hx(t, "C1 00")) }
	addr := fakeBroker(t, closer, closer, closer)
	ok := t.Run("suite", func(t *testing.T) {
		RunAll(t, []Case{pass, listedPass, fail}, Options{Addr: addr}, map[string]string{
			fail.Key():       "[MQTT-4.13.1-1] the server MAY send a DISCONNECT",
			listedPass.Key(): "stale entry",
			"C.json:nothing": "matches no case",
		})
	})
	if !ok {
		t.Fatal("RunAll failed although the only failing case is a listed deviation")
	}
}
