package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/isobar-mq/isobar/internal/cluster"
)

// keygenCommand is `isobar keygen [-o FILE [-f]]`: a new cluster secret on
// stdout, or in FILE (mode 0600, never overwriting one without -f).
func keygenCommand(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("keygen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("o", "", "write the secret to this file (mode 0600) instead of stdout")
	force := fs.Bool("f", false, "with -o: replace an existing file")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: isobar keygen [-o FILE [-f]]\n\nGenerates a cluster secret (32 random bytes, base64url) for cluster.secret_file.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 0 {
		fs.Usage()
		return 2
	}
	if *force && *out == "" {
		fmt.Fprintln(stderr, "isobar keygen: -f needs -o FILE")
		return 2
	}
	secret, err := cluster.GenerateSecret()
	if err != nil {
		fmt.Fprintln(stderr, "isobar keygen:", err)
		return 1
	}
	if *out == "" {
		fmt.Fprintln(stdout, secret)
		return 0
	}
	if err := writeSecretFile(*out, secret+"\n", *force); err != nil {
		fmt.Fprintln(stderr, "isobar keygen:", err)
		return 1
	}
	fmt.Fprintf(stderr, "wrote a new cluster secret to %s (mode 0600); copy it to every node\n", *out)
	return 0
}

// writeSecretFile writes content to path with mode 0600. Without force an
// existing file is an error; with force it is replaced atomically (a new
// file renamed over it, so its old mode does not carry over).
func writeSecretFile(path, content string, force bool) error {
	if !force {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%s already exists (use -f to replace it)", path)
		}
		if err != nil {
			return err
		}
		if _, err := io.WriteString(f, content); err != nil {
			f.Close()
			os.Remove(path)
			return err
		}
		if err := f.Sync(); err != nil {
			f.Close()
			os.Remove(path)
			return err
		}
		return f.Close()
	}
	if fi, err := os.Stat(path); err == nil && !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", path)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after a successful rename: nothing to remove
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := io.WriteString(tmp, content); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
