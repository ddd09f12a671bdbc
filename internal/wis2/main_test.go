package wis2

import (
	"os"
	"path/filepath"
	"testing"

	"go.uber.org/goleak"

	"github.com/isobar-mq/isobar/internal/testutil/peer"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// sharedDir returns ../shared/wis2 of the repository layout (the fixtures and upstream files);
// without it the test is skipped on a developer machine and fails in CI.
func sharedDir(t testing.TB) string {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("..", "..", "..", "shared", "wis2"))
	if err == nil {
		_, err = os.Stat(filepath.Join(dir, "README.md"))
	}
	peer.Need(t, err == nil, "WIS2 fixtures (../shared/wis2) not found: %v", err)
	return dir
}

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
