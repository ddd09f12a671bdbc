package auth

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"unicode/utf8"
)

// ParseError reports a problem at a line of a password or ACL file.
type ParseError struct {
	File string // path, or a name such as "<input>"
	Line int    // 1-based; 0 if the error is not tied to a line
	Msg  string
}

func (e *ParseError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	}
	return e.File + ": " + e.Msg
}

// maxLineLen bounds a single password or ACL file line. MQTT usernames and
// passwords are at most 65535 bytes; anything beyond that is not a
// credential.
const maxLineLen = 256 * 1024

// pwLine is one line of a password file: either an entry (user != "") or a
// comment/blank line kept verbatim so that Save preserves it.
type pwLine struct {
	user  string
	hash  string // encoded hash (or plain-text password while upgrading)
	raw   string // comment or blank line text
	entry bool
}

type pwEntry struct {
	line int // index into PasswordFile.lines
	hash *passwordHash
}

// PasswordFile is a Mosquitto-compatible password file: one "username:hash"
// per line, '#' comments and blank lines ignored (and preserved by Save).
// Hashes may be argon2id (Isobar's default), Mosquitto's $7$
// (PBKDF2-HMAC-SHA512) or Mosquitto's legacy $6$ (salted SHA-512).
//
// A PasswordFile is safe for concurrent use.
type PasswordFile struct {
	mu      sync.RWMutex
	lines   []pwLine
	entries map[string]pwEntry
	// dummy is verified when the user is unknown so that unknown users
	// cost as much as the slowest known one. It has the scheme and cost
	// parameters of the strongest hash in the file (argon2id defaults for
	// an empty file).
	dummy *passwordHash
	// weaker counts the entries much cheaper to verify than dummy.
	weaker int
}

// NewPasswordFile returns an empty password file.
func NewPasswordFile() *PasswordFile {
	pf := &PasswordFile{entries: make(map[string]pwEntry)}
	pf.dummy = defaultArgon2Params().sameCost()
	return pf
}

// LoadPasswordFile reads and parses the password file at path. Errors name
// the file and the offending line; a hash that is not in a supported format
// (for example a plain-text password) is an error.
func LoadPasswordFile(path string) (*PasswordFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return parsePasswordFile(f, path, false)
}

// ParsePasswordFile parses password file content from r; name is used in
// error messages.
func ParsePasswordFile(r io.Reader, name string) (*PasswordFile, error) {
	return parsePasswordFile(r, name, false)
}

// parsePasswordFile parses r. With allowPlain, values that are not a
// recognised hash are kept verbatim (for upgrading plain-text files) instead
// of being rejected.
func parsePasswordFile(r io.Reader, name string, allowPlain bool) (*PasswordFile, error) {
	pf := &PasswordFile{entries: make(map[string]pwEntry)}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), maxLineLen)
	lineNo := 0
	for sc.Scan() {
		lineNo++
		text := strings.TrimRight(sc.Text(), " \t\r\n\v\f")
		perr := func(format string, args ...any) error {
			return &ParseError{File: name, Line: lineNo, Msg: fmt.Sprintf(format, args...)}
		}
		trimmed := strings.TrimLeft(text, " \t")
		if trimmed == "" || trimmed[0] == '#' {
			pf.lines = append(pf.lines, pwLine{raw: text})
			continue
		}
		if !utf8.ValidString(text) {
			return nil, perr("line is not valid UTF-8")
		}
		user, value, ok := strings.Cut(trimmed, ":")
		if !ok {
			return nil, perr("missing ':' (want username:hash)")
		}
		user = strings.TrimRight(user, " \t")
		value = strings.TrimSpace(value)
		if err := validUsername(user); err != nil {
			return nil, perr("%v", err)
		}
		if value == "" {
			return nil, perr("empty password hash for user %q", user)
		}
		if _, dup := pf.entries[user]; dup {
			return nil, perr("duplicate user %q (first defined at line %d)", user, pf.lineNumberOf(user))
		}
		h, err := parseHash(value)
		switch {
		case errors.Is(err, errNotHash) && allowPlain:
			h = nil
		case errors.Is(err, errNotHash):
			// Never echo the value: it may be a plain-text password.
			return nil, perr("unsupported password hash for user %q (plain-text password? convert the file with 'isobar passwd -U')", user)
		case err != nil:
			return nil, perr("invalid password hash for user %q: %v", user, err)
		}
		pf.entries[user] = pwEntry{line: len(pf.lines), hash: h}
		pf.lines = append(pf.lines, pwLine{user: user, hash: value, entry: true})
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, &ParseError{File: name, Line: lineNo + 1, Msg: fmt.Sprintf("line longer than %d bytes", maxLineLen)}
		}
		return nil, &ParseError{File: name, Msg: err.Error()}
	}
	pf.updateDummy()
	return pf, nil
}

// updateDummy picks the dummy hash verified for unknown users: the
// strongest (slowest to verify) hash in the file, however few users have
// it, so that no known user takes longer to refuse than an unknown one.
// (The most common hash would let a single argon2id user among $6$ ones
// be told apart from unknown users.) Users with a much cheaper hash are
// still refused faster than unknown ones; they are counted in weaker.
// Call with pf.mu held for writing, or before pf is shared.
func (pf *PasswordFile) updateDummy() {
	var best *passwordHash
	for _, e := range pf.entries {
		if e.hash != nil && (best == nil || e.hash.cost() > best.cost()) {
			best = e.hash
		}
	}
	if best == nil {
		best = defaultArgon2Params()
	}
	pf.dummy = best.sameCost()
	pf.weaker = 0
	for _, e := range pf.entries {
		if e.hash != nil && 2*e.hash.cost() < best.cost() {
			pf.weaker++
		}
	}
}

// WeakerHashes returns how many users have a hash much cheaper (less than
// half the cost) to verify than the strongest in the file. A wrong
// password for them is refused faster than for an unknown user, which
// tells an observer they exist; re-hashing them with argon2id ("isobar
// passwd") removes the difference.
func (pf *PasswordFile) WeakerHashes() int {
	pf.mu.RLock()
	defer pf.mu.RUnlock()
	return pf.weaker
}

// lineNumberOf returns the 1-based line number of user's entry as parsed
// (only meaningful during parsing, before any modification).
func (pf *PasswordFile) lineNumberOf(user string) int {
	return pf.entries[user].line + 1
}

// validUsername checks a username for use in a password file.
func validUsername(user string) error {
	switch {
	case user == "":
		return errors.New("empty username")
	case len(user) > 65535:
		return errors.New("username longer than 65535 bytes")
	case strings.ContainsRune(user, ':'):
		return errors.New("username must not contain ':'")
	case !utf8.ValidString(user):
		return errors.New("username is not valid UTF-8")
	case strings.ContainsFunc(user, func(r rune) bool { return r < 0x20 || r == 0x7f }):
		return errors.New("username must not contain control characters")
	case user[0] == '#' || user != strings.TrimSpace(user):
		return errors.New("username must not start with '#' or start or end with white space")
	}
	return nil
}

// Verify reports whether password is correct for user. The comparison is
// constant-time and an unknown user costs as much as the slowest known
// one: a dummy hash with the scheme and cost parameters of the strongest
// hash in the file is verified instead (see WeakerHashes).
func (pf *PasswordFile) Verify(user string, password []byte) bool {
	pf.mu.RLock()
	e, ok := pf.entries[user]
	h := e.hash
	if !ok || h == nil {
		h = pf.dummy
	}
	pf.mu.RUnlock()
	match := h.verify(password)
	return ok && e.hash != nil && match
}

// Has reports whether user has an entry.
func (pf *PasswordFile) Has(user string) bool {
	pf.mu.RLock()
	defer pf.mu.RUnlock()
	_, ok := pf.entries[user]
	return ok
}

// Set adds user or replaces its password, hashing it with argon2id and
// Isobar's default parameters.
func (pf *PasswordFile) Set(user, password string) error {
	return pf.SetWithScheme(user, []byte(password), SchemeArgon2id)
}

// SetWithScheme adds user or replaces its password, hashing with scheme
// (for example SchemePBKDF2SHA512 to keep a file readable by Mosquitto).
func (pf *PasswordFile) SetWithScheme(user string, password []byte, scheme HashScheme) error {
	if err := validUsername(user); err != nil {
		return err
	}
	if len(password) > 65535 {
		return errors.New("password longer than 65535 bytes")
	}
	enc, err := HashPassword(scheme, password)
	if err != nil {
		return err
	}
	return pf.SetHash(user, enc)
}

// SetHash adds user or replaces its password with an already encoded hash.
func (pf *PasswordFile) SetHash(user, encoded string) error {
	if err := validUsername(user); err != nil {
		return err
	}
	h, err := parseHash(encoded)
	if err != nil {
		return fmt.Errorf("user %q: %w", user, err)
	}
	pf.mu.Lock()
	defer pf.mu.Unlock()
	if e, ok := pf.entries[user]; ok {
		pf.lines[e.line].hash = encoded
		e.hash = h
		pf.entries[user] = e
	} else {
		pf.entries[user] = pwEntry{line: len(pf.lines), hash: h}
		pf.lines = append(pf.lines, pwLine{user: user, hash: encoded, entry: true})
	}
	pf.updateDummy()
	return nil
}

// Delete removes user and reports whether it existed.
func (pf *PasswordFile) Delete(user string) bool {
	pf.mu.Lock()
	defer pf.mu.Unlock()
	e, ok := pf.entries[user]
	if !ok {
		return false
	}
	pf.lines = append(pf.lines[:e.line], pf.lines[e.line+1:]...)
	delete(pf.entries, user)
	for u, x := range pf.entries {
		if x.line > e.line {
			x.line--
			pf.entries[u] = x
		}
	}
	pf.updateDummy()
	return true
}

// Users returns the usernames in file order.
func (pf *PasswordFile) Users() []string {
	pf.mu.RLock()
	defer pf.mu.RUnlock()
	out := make([]string, 0, len(pf.entries))
	for _, l := range pf.lines {
		if l.entry {
			out = append(out, l.user)
		}
	}
	return out
}

// Len returns the number of users.
func (pf *PasswordFile) Len() int {
	pf.mu.RLock()
	defer pf.mu.RUnlock()
	return len(pf.entries)
}

// upgradePlain hashes every entry whose value is not a recognised hash
// (plain-text passwords) with scheme and returns how many were converted.
func (pf *PasswordFile) upgradePlain(scheme HashScheme) (int, error) {
	pf.mu.Lock()
	defer pf.mu.Unlock()
	n := 0
	for i := range pf.lines {
		l := &pf.lines[i]
		if !l.entry || pf.entries[l.user].hash != nil {
			continue
		}
		enc, err := HashPassword(scheme, []byte(l.hash))
		if err != nil {
			return n, err
		}
		h, err := parseHash(enc)
		if err != nil {
			return n, err
		}
		l.hash = enc
		pf.entries[l.user] = pwEntry{line: i, hash: h}
		n++
	}
	pf.updateDummy()
	return n, nil
}

// WriteTo writes the file content (comments and blank lines preserved).
func (pf *PasswordFile) WriteTo(w io.Writer) (int64, error) {
	pf.mu.RLock()
	var buf bytes.Buffer
	for _, l := range pf.lines {
		if l.entry {
			buf.WriteString(l.user)
			buf.WriteByte(':')
			buf.WriteString(l.hash)
		} else {
			buf.WriteString(l.raw)
		}
		buf.WriteByte('\n')
	}
	pf.mu.RUnlock()
	return buf.WriteTo(w)
}

// Save writes the file to path atomically: the content goes to a temporary
// file in the same directory, is synced, and is renamed over path. The
// file's previous content stays intact if anything fails. An existing
// file keeps its permission bits and, where the caller may set them, its
// owner and group (a broker reading the file through its group must not
// lose access because an administrator changed a password); a new file is
// created with mode 0600.
func (pf *PasswordFile) Save(path string) error {
	var buf bytes.Buffer
	if _, err := pf.WriteTo(&buf); err != nil {
		return err
	}
	return writeFileAtomic(path, buf.Bytes(), 0o600)
}

// writeFileAtomic replaces path with data; newMode applies when path does
// not exist yet, otherwise its mode and (best effort) owner are kept.
func writeFileAtomic(path string, data []byte, newMode os.FileMode) (err error) {
	// Replace the target of a symlink, not the link itself.
	if real, rerr := filepath.EvalSymlinks(path); rerr == nil {
		path = real
	}
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	tmp, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return err
	}
	name := tmp.Name()
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(name)
		}
	}()
	mode := newMode
	if st, serr := os.Stat(path); serr == nil {
		mode = st.Mode().Perm()
		// Keep the owner of an existing file (e.g. the broker's service
		// user) so that rewriting it as root does not lock the broker
		// out. Best effort: only root may give a file away, but a member
		// of the file's group may still keep the group.
		if sys, ok := st.Sys().(*syscall.Stat_t); ok {
			if tmp.Chown(int(sys.Uid), int(sys.Gid)) != nil {
				_ = tmp.Chown(-1, int(sys.Gid))
			}
		}
	}
	// After Chown, which may clear set-id bits.
	if err = tmp.Chmod(mode); err != nil {
		return err
	}
	if _, err = tmp.Write(data); err != nil {
		return err
	}
	if err = tmp.Sync(); err != nil {
		return err
	}
	if err = tmp.Close(); err != nil {
		return err
	}
	if err = os.Rename(name, path); err != nil {
		return err
	}
	// Persist the rename; failure to sync the directory is not fatal for
	// correctness of the content, so it is ignored where unsupported.
	if d, derr := os.Open(dir); derr == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}
