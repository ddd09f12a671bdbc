package auth

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"golang.org/x/term"
)

const passwdUsage = `isobar passwd manages Isobar (and Mosquitto-compatible) password files.

Usage: isobar passwd [-H scheme] [-c | -D] passwordfile username
       isobar passwd [-H scheme] [-c] -b passwordfile username password
       isobar passwd [-H scheme] -U passwordfile
 -b : batch mode: take the password from the command line.
 -c : create a new password file, overwriting an existing one.
 -D : delete the username instead of adding or updating it.
 -H : hashing scheme for new passwords: argon2id (default),
      sha512-pbkdf2 (Mosquitto 2.x "$7$") or sha512 (Mosquitto 1.x "$6$");
      the last two are weak (a warning says so): use them only for files
      Mosquitto must read.
 -U : convert a file of plain-text "username:password" lines to hashes.
      Lines that already hold a supported hash are left unchanged.

Without -b the password is read twice, without echo, when standard input
is a terminal, and as one line otherwise. The file is replaced atomically;
a new file gets mode 0600, an existing one keeps its mode and owner.
`

// RunPasswd implements the "isobar passwd" command, modelled on
// mosquitto_passwd. args excludes the program and sub-command names. It
// returns the process exit status: 0 on success, 1 on any error (usage
// errors included). Passwords are never written to stdout or stderr.
func RunPasswd(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	opts, err := parsePasswdArgs(args)
	if err != nil {
		if !errors.Is(err, errUsage) {
			fmt.Fprintf(stderr, "Error: %v\n\n", err)
		}
		fmt.Fprint(stderr, passwdUsage)
		return 1
	}
	if err := runPasswd(opts, stdin, stdout, stderr); err != nil {
		fmt.Fprintf(stderr, "Error: %v\n", err)
		return 1
	}
	return 0
}

var errUsage = errors.New("usage")

type passwdOpts struct {
	create, batch, del, upgrade bool
	scheme                      HashScheme
	file, user, password        string
}

func parsePasswdArgs(args []string) (*passwdOpts, error) {
	o := &passwdOpts{scheme: SchemeArgon2id}
	var pos []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			pos = append(pos, args[i+1:]...)
			break
		}
		if len(pos) > 0 || len(a) < 2 || a[0] != '-' {
			pos = append(pos, a)
			continue
		}
		for j := 1; j < len(a); j++ {
			switch a[j] {
			case 'b':
				o.batch = true
			case 'c':
				o.create = true
			case 'D':
				o.del = true
			case 'U':
				o.upgrade = true
			case 'H':
				var v string
				if j+1 < len(a) {
					v = a[j+1:]
				} else if i+1 < len(args) {
					i++
					v = args[i]
				} else {
					return nil, errors.New("-H requires a scheme")
				}
				switch s := HashScheme(v); s {
				case SchemeArgon2id, SchemePBKDF2SHA512, SchemeSHA512:
					o.scheme = s
				default:
					return nil, fmt.Errorf("unknown hash scheme %q", v)
				}
				j = len(a)
			case 'h':
				return nil, errUsage
			default:
				return nil, fmt.Errorf("unknown option -%c", a[j])
			}
		}
	}
	switch {
	case o.upgrade:
		if o.create || o.batch || o.del {
			return nil, errors.New("-U cannot be combined with -b, -c or -D")
		}
		if len(pos) != 1 {
			return nil, errUsage
		}
		o.file = pos[0]
	case o.create && o.del:
		return nil, errors.New("-c and -D cannot be used together")
	case o.del:
		if o.batch {
			return nil, errors.New("-b and -D cannot be used together")
		}
		if len(pos) != 2 {
			return nil, errUsage
		}
		o.file, o.user = pos[0], pos[1]
	case o.batch:
		if len(pos) != 3 {
			return nil, errUsage
		}
		o.file, o.user, o.password = pos[0], pos[1], pos[2]
	default:
		if len(pos) != 2 {
			return nil, errUsage
		}
		o.file, o.user = pos[0], pos[1]
	}
	if o.user != "" || !o.upgrade {
		if err := validUsername(o.user); err != nil {
			return nil, err
		}
	}
	return o, nil
}

func runPasswd(o *passwdOpts, stdin io.Reader, stdout, stderr io.Writer) error {
	switch {
	case o.upgrade:
		f, err := os.Open(o.file)
		if err != nil {
			return err
		}
		pf, err := parsePasswordFile(f, o.file, true)
		f.Close()
		if err != nil {
			return err
		}
		n, err := pf.upgradePlain(o.scheme)
		if err != nil {
			return err
		}
		if n > 0 {
			warnScheme(stderr, o.scheme)
		}
		return save(pf, o.file, stderr)
	case o.del:
		pf, err := LoadPasswordFile(o.file)
		if err != nil {
			return err
		}
		if !pf.Delete(o.user) {
			return fmt.Errorf("user %s not found in password file", o.user)
		}
		return save(pf, o.file, stderr)
	}

	var pf *PasswordFile
	if o.create {
		pf = NewPasswordFile()
	} else {
		var err error
		if pf, err = LoadPasswordFile(o.file); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("%v (use -c to create it)", err)
			}
			return err
		}
	}
	password := []byte(o.password)
	if !o.batch {
		var err error
		if password, err = readPassword(stdin, stdout); err != nil {
			return err
		}
	}
	defer clear(password)
	if len(password) == 0 {
		return errors.New("empty password")
	}
	if err := pf.SetWithScheme(o.user, password, o.scheme); err != nil {
		return err
	}
	warnScheme(stderr, o.scheme)
	return save(pf, o.file, stderr)
}

// warnScheme warns when new hashes are written in a format weaker than
// argon2id.
func warnScheme(stderr io.Writer, scheme HashScheme) {
	switch scheme {
	case SchemeSHA512:
		fmt.Fprintln(stderr, `Warning: sha512 ("$6$", a single salted SHA-512) is a weak password hash, fast to brute-force if the file leaks; use argon2id (the default) unless Mosquitto 1.x must read this file.`)
	case SchemePBKDF2SHA512:
		fmt.Fprintf(stderr, "Warning: sha512-pbkdf2 (\"$7$\", %d PBKDF2 iterations) is much weaker than argon2id (the default); use it only if Mosquitto must read this file.\n", MosquittoPBKDF2Iterations)
	}
}

// save writes pf to path (keeping an existing file's mode and owner) and
// warns when everyone may read it.
func save(pf *PasswordFile, path string, stderr io.Writer) error {
	if err := pf.Save(path); err != nil {
		return err
	}
	if st, err := os.Stat(path); err == nil && st.Mode().Perm()&0o004 != 0 {
		fmt.Fprintf(stderr, "Warning: %s is readable by all users (mode %04o); restrict it, e.g. chmod o-rwx %s\n", path, st.Mode().Perm(), path)
	}
	return nil
}

// readPassword reads a new password: twice without echo from a terminal,
// or a single line otherwise.
func readPassword(stdin io.Reader, prompt io.Writer) ([]byte, error) {
	if f, ok := stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fd := int(f.Fd())
		fmt.Fprint(prompt, "Password: ")
		p1, err := term.ReadPassword(fd)
		fmt.Fprintln(prompt)
		if err != nil {
			return nil, fmt.Errorf("reading password: %w", err)
		}
		fmt.Fprint(prompt, "Reenter password: ")
		p2, err := term.ReadPassword(fd)
		fmt.Fprintln(prompt)
		if err != nil {
			clear(p1)
			return nil, fmt.Errorf("reading password: %w", err)
		}
		defer clear(p2)
		if !bytes.Equal(p1, p2) {
			clear(p1)
			return nil, errors.New("passwords do not match")
		}
		return p1, nil
	}
	br := bufio.NewReaderSize(stdin, 4096)
	var line []byte
	for {
		chunk, isPrefix, err := br.ReadLine()
		line = append(line, chunk...)
		if len(line) > 65535 {
			clear(line)
			return nil, errors.New("password longer than 65535 bytes")
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return nil, fmt.Errorf("reading password: %w", err)
		}
		if !isPrefix {
			break
		}
	}
	return bytes.TrimSuffix(line, []byte("\r")), nil
}
