package main

import (
	"bytes"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/isobar-mq/isobar/internal/cluster"
)

func TestKeygenStdout(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"keygen"}, nil, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	line := out.String()
	if !strings.HasSuffix(line, "\n") || len(line) != 44 {
		t.Fatalf("output %q: want 43 characters and a newline", line)
	}
	if raw, err := base64.RawURLEncoding.DecodeString(strings.TrimSpace(line)); err != nil || len(raw) != 32 {
		t.Fatalf("%q is not 32 bytes of base64url: %v", line, err)
	}
	var again bytes.Buffer
	run([]string{"keygen"}, nil, &again, &errb)
	if again.String() == line {
		t.Fatal("two runs gave the same secret")
	}
}

func TestKeygenFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "cluster.secret")
	var out, errb bytes.Buffer
	if code := run([]string{"keygen", "-o", path}, nil, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if out.Len() != 0 {
		t.Fatalf("the secret went to stdout too: %q", out.String())
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want 0600", fi.Mode().Perm())
	}
	first, _ := os.ReadFile(path)
	if s, err := cluster.LoadSecret(path); err != nil || len(s) != 43 {
		t.Fatalf("LoadSecret: %q %v", s, err)
	}

	// No overwrite without -f.
	errb.Reset()
	if code := run([]string{"keygen", "-o", path}, nil, &out, &errb); code != 1 || !strings.Contains(errb.String(), "already exists") {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if now, _ := os.ReadFile(path); !bytes.Equal(now, first) {
		t.Fatal("the existing secret was changed")
	}

	// -f replaces it, and a loose mode does not survive.
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if code := run([]string{"keygen", "-o", path, "-f"}, nil, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	second, _ := os.ReadFile(path)
	fi, _ = os.Stat(path)
	if bytes.Equal(second, first) || fi.Mode().Perm() != 0o600 {
		t.Fatalf("after -f: same=%v mode=%v", bytes.Equal(second, first), fi.Mode().Perm())
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("left files behind: %v", entries)
	}
}

func TestKeygenUsage(t *testing.T) {
	for _, args := range [][]string{{"keygen", "extra"}, {"keygen", "-f"}, {"keygen", "-x"}} {
		var out, errb bytes.Buffer
		if code := run(args, nil, &out, &errb); code != 2 {
			t.Errorf("%q: exit %d, want 2", args, code)
		}
	}
	var out, errb bytes.Buffer
	if code := run([]string{"keygen", "-o", filepath.Join(t.TempDir(), "no", "such", "dir")}, nil, &out, &errb); code != 1 {
		t.Errorf("unwritable path: exit %d", code)
	}
}
