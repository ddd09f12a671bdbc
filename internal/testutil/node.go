package testutil

import (
	"context"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/isobar-mq/isobar/internal/config"
	"github.com/isobar-mq/isobar/internal/node"
)

// RunNode starts an in-process node from a YAML configuration (empty =
// defaults with one MQTT listener on 127.0.0.1:0) and stops it when the
// test ends. Set ISOBAR_TEST_LOG=debug to see the node's log.
func RunNode(t testing.TB, yamlConfig string) *node.Node {
	t.Helper()
	if yamlConfig == "" {
		yamlConfig = "listeners:\n  - {name: mqtt, protocol: mqtt, address: \"127.0.0.1:0\"}\n"
	}
	cfg, err := config.Parse([]byte(yamlConfig))
	if err != nil {
		t.Fatalf("RunNode: config: %v", err)
	}
	if !strings.Contains(yamlConfig, "store:") {
		// Tests run in memory unless they configure a store.
		cfg.Store.Mode = "memory"
	}
	if !strings.Contains(yamlConfig, "http:") {
		// No console/API unless the test asks for it (the default
		// address is a fixed port).
		cfg.HTTP.Enabled = false
	}
	var w io.Writer = io.Discard
	level := slog.LevelInfo
	if l := os.Getenv("ISOBAR_TEST_LOG"); l != "" {
		w = os.Stderr
		_ = level.UnmarshalText([]byte(l))
	}
	log := slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
	n, err := node.Start(cfg, log)
	if err != nil {
		t.Fatalf("RunNode: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := n.Stop(ctx); err != nil {
			t.Errorf("node stop: %v", err)
		}
	})
	return n
}

// Addr returns the address of the node's listener with the given name
// ("" = the first listener).
func Addr(t testing.TB, n *node.Node, name string) string {
	t.Helper()
	for _, l := range n.Listeners {
		if name == "" || l.Config().Name == name {
			return l.Addr().String()
		}
	}
	t.Fatalf("no listener %q", name)
	return ""
}
