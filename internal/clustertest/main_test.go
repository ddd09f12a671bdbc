package clustertest

import "testing"

// TestMain runs the tests in a network namespace of their own when root
// (see Main).
func TestMain(m *testing.M) { Main(m) }
