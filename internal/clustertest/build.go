package clustertest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// builder builds cmd/isobar once per test process. It is the package's one
// piece of process-wide state: a test binary builds the broker once, not
// once per test.
var builder struct {
	once sync.Once
	dir  string
	bin  string
	err  error
}

// BinEnv names a prebuilt isobar binary to use instead of building one.
const BinEnv = "ISOBAR_CLUSTERTEST_BIN"

// BuildIsobar returns the path of an isobar binary built from this
// module's cmd/isobar, building it on the first call of the process (into a
// temporary directory that Main removes at exit). $ISOBAR_CLUSTERTEST_BIN,
// when set, names a binary to use instead.
func BuildIsobar(t testing.TB) string {
	t.Helper()
	builder.once.Do(func() {
		if p := os.Getenv(BinEnv); p != "" {
			builder.bin, builder.err = filepath.Abs(p)
			return
		}
		builder.bin, builder.err = buildIsobar()
	})
	if builder.err != nil {
		t.Fatalf("building cmd/isobar: %v", builder.err)
	}
	return builder.bin
}

func buildIsobar() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %v", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", fmt.Errorf("not inside the module (go env GOMOD = %q)", gomod)
	}
	dir, err := os.MkdirTemp("", "isobar-clustertest-")
	if err != nil {
		return "", err
	}
	builder.dir = dir
	bin := filepath.Join(dir, "isobar")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/isobar")
	cmd.Dir = filepath.Dir(gomod)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/isobar: %v\n%s", err, out)
	}
	return bin, nil
}

func removeBuilds() {
	if builder.dir != "" {
		_ = os.RemoveAll(builder.dir)
	}
}
