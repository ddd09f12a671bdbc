package node_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/isobar-mq/isobar/internal/config"
	"github.com/isobar-mq/isobar/internal/node"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestStartLogsEachThingOnce: the start-up log used to say both "store
// opened" and "durable store open", and "listening" twice per listener.
func TestStartLogsEachThingOnce(t *testing.T) {
	yaml := fmt.Sprintf("listeners:\n  - {name: one, protocol: mqtt, address: \"127.0.0.1:0\"}\n  - {name: two, protocol: mqtt, address: \"127.0.0.1:0\"}\n"+
		"http: {enabled: false}\nstore: {mode: pebble, data_dir: %q}\n", t.TempDir())
	cfg, err := config.Parse([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	n, err := node.Start(cfg, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	out := logs.String()
	for what, want := range map[string]int{
		`msg="store opened"`: 1, `durable store open`: 0, `msg=listening`: 2,
		`msg=listening listener=one`: 1, `msg=listening listener=two`: 1,
	} {
		if got := strings.Count(out, what); got != want {
			t.Errorf("%q logged %d times, want %d", what, got, want)
		}
	}
	if t.Failed() {
		t.Logf("log:\n%s", out)
	}
}
