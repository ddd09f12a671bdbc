package web_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/isobar-mq/isobar/internal/broker"
	"github.com/isobar-mq/isobar/internal/store"
	"github.com/isobar-mq/isobar/internal/testutil"
	"github.com/isobar-mq/isobar/internal/web"
)

// /readyz reports a store that refuses writes (full disk, free space below
// the floor) as not ready, naming the store, and ready again once it
// recovers: without a restart.
func TestReadyzStoreDegraded(t *testing.T) {
	ps, err := store.Open(store.Options{Dir: filepath.Join(t.TempDir(), "data")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ps.Close() })
	fs := store.NewFaulty(ps)
	b := broker.New(broker.Options{Store: fs}, nil, nil)
	t.Cleanup(func() { _ = b.Shutdown(context.Background()) })
	cfg := web.DefaultConfig()
	cfg.Address = "127.0.0.1:0"
	srv, err := web.Start(web.Options{Config: cfg, Broker: b, PasswordFile: filepath.Join(t.TempDir(), "pw")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close(context.Background()) })
	url := "http://" + srv.Addr().String() + "/readyz"
	ready := func() (int, map[string]string) {
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body struct {
			Checks map[string]string `json:"checks"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&body)
		return resp.StatusCode, body.Checks
	}
	if code, _ := ready(); code != http.StatusOK {
		t.Fatalf("readyz %d before the fault", code)
	}
	fs.SetWritable(errors.Join(store.ErrNoSpace, errors.New("test: disk full")))
	testutil.CheckFor(t, 5*time.Second, 50*time.Millisecond, func() error {
		if code, checks := ready(); code != http.StatusServiceUnavailable || checks["store_writable"] == "ok" {
			return errors.New("readyz does not report the degraded store yet")
		}
		return nil
	})
	if !b.StoreDegraded() {
		t.Fatal("broker does not report the store degraded")
	}
	fs.SetWritable(nil)
	testutil.CheckFor(t, 5*time.Second, 50*time.Millisecond, func() error {
		if code, _ := ready(); code != http.StatusOK {
			return errors.New("readyz still not ready after the store recovered")
		}
		return nil
	})
}
