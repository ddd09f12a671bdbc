package client_test

import (
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/isobar-mq/isobar/internal/auth"
	"github.com/isobar-mq/isobar/internal/mqtt/client"
	"github.com/isobar-mq/isobar/internal/testutil"
)

func TestIsobar(t *testing.T) {
	cert, key, pool := testCerts(t)
	n := testutil.RunNode(t, fmt.Sprintf(`listeners:
  - {name: mqtt, protocol: mqtt, address: "127.0.0.1:0"}
  - {name: tls, protocol: mqtt, address: "127.0.0.1:0", tls: {cert_file: %q, key_file: %q}}
  - {name: ws, protocol: ws, address: "127.0.0.1:0"}
  - {name: wss, protocol: ws, address: "127.0.0.1:0", tls: {cert_file: %q, key_file: %q}}
`, cert, key, cert, key))
	tcp := "mqtt://" + testutil.Addr(t, n, "mqtt")
	tlsConf := &tls.Config{RootCAs: pool}
	for _, ver := range versions {
		t.Run(ver.name+"/tcp", func(t *testing.T) { roundTrip(t, tcp, tcp, ver.v, nil, false) })
		t.Run(ver.name+"/tls", func(t *testing.T) {
			roundTrip(t, "mqtts://"+testutil.Addr(t, n, "tls"), tcp, ver.v, tlsConf, false)
		})
		t.Run(ver.name+"/ws", func(t *testing.T) {
			roundTrip(t, "ws://"+testutil.Addr(t, n, "ws")+"/mqtt", tcp, ver.v, nil, false)
		})
		t.Run(ver.name+"/wss", func(t *testing.T) {
			roundTrip(t, "wss://"+testutil.Addr(t, n, "wss")+"/mqtt", "ws://"+testutil.Addr(t, n, "ws")+"/mqtt", ver.v, tlsConf, false)
		})
	}
}

// countWriter counts "cannot connect" log records.
type countWriter struct {
	n atomic.Int32
	t *testing.T
}

func (w *countWriter) Write(p []byte) (int, error) {
	if strings.Contains(string(p), "cannot connect") {
		w.n.Add(1)
	}
	return tWriter{w.t}.Write(p)
}

// TestIsobarBadPassword: a refused user gets a clear error and the client
// keeps trying with backoff.
func TestIsobarBadPassword(t *testing.T) {
	hash, err := auth.HashPassword(auth.SchemeSHA512, []byte("right"))
	if err != nil {
		t.Fatal(err)
	}
	pw := filepath.Join(t.TempDir(), "passwords")
	if err := os.WriteFile(pw, []byte("alice:"+hash+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	n := testutil.RunNode(t, fmt.Sprintf("listeners:\n  - {name: mqtt, protocol: mqtt, address: \"127.0.0.1:0\"}\nauth: {allow_anonymous: false, password_file: %q}\n", pw))
	url := "mqtt://" + testutil.Addr(t, n, "mqtt")
	for _, ver := range versions {
		t.Run(ver.name, func(t *testing.T) {
			w := &countWriter{t: t}
			c := mustNew(t, client.Config{URL: url, Version: ver.v, ClientID: "alice", Username: "alice", Password: "wrong",
				MinBackoff: 20 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, Log: slogTo(w)})
			c.Start()
			testutil.CheckFor(t, 5*time.Second, 20*time.Millisecond, func() error {
				if w.n.Load() < 3 {
					return fmt.Errorf("%d attempts", w.n.Load())
				}
				return nil
			})
			if s := c.Stats(); !strings.Contains(s.LastError, "bad user name or password") {
				t.Fatalf("LastError %q", s.LastError)
			}
			good := mustNew(t, client.Config{URL: url, Version: ver.v, ClientID: "alice2", Username: "alice", Password: "right"})
			good.Start()
			waitConnected(t, good, 5*time.Second)
		})
	}
}

func slogTo(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}
