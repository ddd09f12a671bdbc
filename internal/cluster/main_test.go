package cluster

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any goroutine outlives them
// (memberlist loops, transport accept/peek goroutines, link readers...).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
