package broker_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if any goroutine (the broker's or a client
// library's) outlives the tests.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
