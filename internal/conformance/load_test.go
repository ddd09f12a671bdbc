package conformance

import (
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// suiteDir returns the directory of a suite or skips the test.
func suiteDir(t *testing.T, suite string) string {
	t.Helper()
	dir, err := FindSuite(suite)
	if err != nil {
		t.Skipf("Mosquitto packet tests not available (../shared is absent?): %v", err)
	}
	return dir
}
