package broker_test

// Helpers for the regression tests of the broker-core hardening
// (hardening_*_test.go): a server built from broker.Options (for limits the
// node configuration does not set, and for an injected store or Auth), a
// password file, a store with injected faults, raw connections with
// credentials, and heap accounting.

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/isobar-mq/isobar/internal/auth"
	"github.com/isobar-mq/isobar/internal/broker"
	"github.com/isobar-mq/isobar/internal/mqtt/packet"
	"github.com/isobar-mq/isobar/internal/store"
)

// hdLog is the servers' logger: discarded unless ISOBAR_TEST_LOG is set
// (as testutil.RunNode does).
func hdLog() *slog.Logger {
	l := os.Getenv("ISOBAR_TEST_LOG")
	if l == "" {
		return slog.New(slog.DiscardHandler)
	}
	var level slog.Level
	_ = level.UnmarshalText([]byte(l))
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

// hdServer runs a broker.Server built from opts and a (nil: none) on a
// listener on 127.0.0.1:0 named "mqtt", restored from opts.Store first, and
// shuts it down when the test ends. It returns the server and the address.
func hdServer(t testing.TB, opts broker.Options, a broker.Auth) (*broker.Server, string) {
	t.Helper()
	srv := broker.New(opts, hdLog(), a)
	if err := srv.Restore(); err != nil {
		_ = srv.Shutdown(context.Background())
		t.Fatalf("restore: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		_ = srv.Shutdown(context.Background())
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln, "mqtt")
	}()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		_ = ln.Close()
		<-done
	})
	return srv, ln.Addr().String()
}

// hdPasswordFile writes a password file in dir with one entry per user,
// whose password is "pw-" + user (PBKDF2 as mosquitto_passwd writes it:
// cheap enough to verify at every CONNECT under the race detector).
func hdPasswordFile(t testing.TB, dir string, users ...string) string {
	t.Helper()
	pf := auth.NewPasswordFile()
	for _, u := range users {
		if err := pf.SetWithScheme(u, []byte("pw-"+u), auth.SchemePBKDF2SHA512); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(dir, "passwd")
	if err := pf.Save(path); err != nil {
		t.Fatal(err)
	}
	return path
}

// hdLogin is a CONNECT for client id as user ("" = none; password
// "pw-"+user), with keep-alive 60 and, for MQTT 5, a Session Expiry
// Interval (0 = none; not encoded for 3.1.1, where clean decides).
func hdLogin(id, user string, clean bool, expiry uint32) packet.Connect {
	cp := packet.Connect{ClientID: id, CleanStart: clean, KeepAlive: 60}
	if user != "" {
		cp.UsernameFlag, cp.Username = true, user
		cp.PasswordFlag, cp.Password = true, []byte("pw-"+user)
	}
	if expiry > 0 {
		cp.Props.SessionExpiryInterval = expiry
		cp.Props.Set(packet.PropSessionExpiryInterval)
	}
	return cp
}

// hdPubQ publishes at QoS 1 or 2 and returns the PUBACK or PUBREC.
func (p *pconn) hdPubQ(topic string, qos byte, id uint16, payload string) *packet.Ack {
	p.t.Helper()
	p.publish(packet.Publish{Topic: topic, QoS: qos, PacketID: id, Payload: []byte(payload)})
	t := packet.PUBACK
	if qos == 2 {
		t = packet.PUBREC
	}
	return p.expectAck(t, id)
}

// hdUntil reads packets until a PUBLISH on barrier and returns the PUBLISH
// topics before it ("topic:payload"), acknowledging QoS 1 ones.
func (p *pconn) hdUntil(barrier string) []string {
	p.t.Helper()
	var got []string
	for i := 0; i < 10000; i++ {
		pub := p.nextPublish()
		if pub.QoS == 1 {
			p.ack(packet.PUBACK, pub.PacketID)
		}
		if pub.Topic == barrier {
			return got
		}
		got = append(got, pub.Topic+":"+string(pub.Payload))
	}
	p.t.Fatalf("no PUBLISH on %s among 10000 packets", barrier)
	return nil
}

// hdExpectClosedQuietly requires the connection to end without the server
// sending anything more.
func (p *pconn) hdExpectClosedQuietly() {
	p.t.Helper()
	p.expectClosed(waitT)
}

// errInjected is the failure injected into store commits.
var errInjected = errors.New("injected commit failure")

// hdFaultyStore returns a Pebble store in a temporary directory wrapped in
// store.Faulty, closed when the test ends (after the server using it,
// whose shutdown was registered later).
func hdFaultyStore(t testing.TB) *store.Faulty {
	t.Helper()
	ps, err := store.Open(store.Options{Dir: t.TempDir(), Sync: store.SyncInterval, SyncInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ps.Close() })
	return store.NewFaulty(ps)
}

// hdAlloc returns the bytes allocated on the heap so far (cumulative), for
// "this cost at most N bytes" checks. The tests using it do not run in
// parallel, so the difference is what the scenario allocated.
func hdAlloc() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.TotalAlloc
}

// hdDrain reads and discards what the server sends until the connection
// ends, reporting whether it ended within d.
func hdDrain(c net.Conn, d time.Duration) bool {
	_ = c.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	return !(errors.As(err, &ne) && ne.Timeout())
}
