package store

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if a closed store leaves goroutines behind
// (the SyncInterval loop, Pebble's background work).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
