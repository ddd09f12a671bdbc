package conformance

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestFindSuiteLayout: FindSuite reports "no data" (ErrNoData, on which
// tests skip) only when there is no shared/ directory at all; a shared/
// directory or $ISOBAR_CONFORMANCE_DATA without the suite is a wrong layout,
// on which tests fail.
func TestFindSuiteLayout(t *testing.T) {
	mkdir := func(p string) {
		t.Helper()
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	root := t.TempDir()
	repo := filepath.Join(root, "repo", "internal", "conformance")
	mkdir(repo)
	t.Chdir(repo)

	// $ISOBAR_CONFORMANCE_DATA wins, and must hold the suite.
	data := filepath.Join(root, "data")
	mkdir(filepath.Join(data, "develop"))
	t.Setenv(DataEnv, data)
	if dir, err := FindSuite("develop"); err != nil || dir != filepath.Join(data, "develop") {
		t.Errorf("$%s with the suite: %q, %v", DataEnv, dir, err)
	}
	if _, err := FindSuite("v2.0.20"); err == nil || errors.Is(err, ErrNoData) {
		t.Errorf("$%s without the suite: %v, want a layout error", DataEnv, err)
	}
	t.Setenv(DataEnv, "")

	// No shared/ anywhere up the tree: ErrNoData (only checkable when no
	// ancestor of the temporary directory has one).
	hasShared := false
	for d := root; ; d = filepath.Dir(d) {
		if st, err := os.Stat(filepath.Join(d, "shared")); err == nil && st.IsDir() {
			hasShared = true
		}
		if filepath.Dir(d) == d {
			break
		}
	}
	if _, err := FindSuite("develop"); !hasShared && !errors.Is(err, ErrNoData) {
		t.Errorf("no shared/: %v, want ErrNoData", err)
	}

	// ../shared next to the repository but without the suite: wrong layout.
	shared := filepath.Join(root, "shared")
	mkdir(shared)
	if _, err := FindSuite("develop"); err == nil || errors.Is(err, ErrNoData) {
		t.Errorf("empty shared/: %v, want a layout error", err)
	}
	mkdir(filepath.Join(shared, "conformance", "mosquitto-packet-tests", "develop"))
	if dir, err := FindSuite("develop"); err != nil || dir != filepath.Join(shared, "conformance", "mosquitto-packet-tests", "develop") {
		t.Errorf("shared/ with the suite: %q, %v", dir, err)
	}
	if _, err := FindSuite("v2.0.20"); err == nil || errors.Is(err, ErrNoData) {
		t.Errorf("shared/ without this suite: %v, want a layout error", err)
	}
}
