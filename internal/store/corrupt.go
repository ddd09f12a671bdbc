package store

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/record"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// ErrCorrupt is wrapped by the errors of Open, LoadSessions, LoadRetained
// and Check when the data directory's content is damaged: a Pebble file
// that fails its checksum or does not parse, or a record value the strict
// decoders reject. The error names what is damaged and what to do.
var ErrCorrupt = errors.New("store: data is corrupt")

// corruptionWatch records the first corruption Pebble reports. Pebble's
// default reaction (Logger.Fatalf from a read path) is replaced: the read
// that found it fails with an error instead, and a running store stops
// accepting writes.
type corruptionWatch struct {
	first atomic.Pointer[pebble.DataCorruptionInfo]
}

func (c *corruptionWatch) listener(h *health, log *slog.Logger, opening *atomic.Bool) *pebble.EventListener {
	return &pebble.EventListener{
		DataCorruption: func(info pebble.DataCorruptionInfo) {
			if !c.first.CompareAndSwap(nil, &info) {
				return
			}
			if opening.Load() {
				return // Open returns the error
			}
			log.Error("store: corrupt data file found; refusing durable writes", "file", info.Path, "err", detailsOf(info),
				"what_to_do", corruptAdvice(h.dir))
			h.setFault(fmt.Errorf("data file %s is corrupt", filepath.Base(info.Path)))
		},
	}
}

func detailsOf(info pebble.DataCorruptionInfo) string {
	if info.Details == nil {
		return "corrupt"
	}
	return info.Details.Error()
}

func corruptAdvice(dir string) string {
	return fmt.Sprintf("with the broker stopped, run `isobar store check --data-dir %s` to see what is damaged, "+
		"then restore the directory from a backup, or run `isobar store reset --data-dir %s` to move it aside "+
		"(it is kept) so the next start is empty", dir, dir)
}

// corruption turns err, found reading dir, into an error wrapping
// ErrCorrupt that says which file (or record) is damaged and what to do,
// if it is one: a corruption Pebble reported (checksum or format failure
// of a file), an unreadable log record, or (isRecord) a record value the
// decoders reject. Other errors are returned as they are.
func corruption(dir string, c *corruptionWatch, err error, isRecord bool) error {
	if err == nil || errors.Is(err, ErrCorrupt) {
		return err
	}
	var what string
	switch {
	case c != nil && c.first.Load() != nil:
		info := c.first.Load()
		what = fmt.Sprintf("data file %s is corrupt (%s)", filepath.Base(info.Path), detailsOf(*info))
	case errors.Is(err, record.ErrInvalidChunk), errors.Is(err, record.ErrZeroedChunk), errors.Is(err, record.ErrUnexpectedEOF):
		if strings.Contains(strings.ToLower(err.Error()), "manifest") {
			what = fmt.Sprintf("the MANIFEST (the list of data files) is corrupt (%v)", err)
		} else {
			what = fmt.Sprintf("a write-ahead log file (*.log) is corrupt before its end (%v)", err)
		}
	case pebble.IsCorruptionError(err) && strings.Contains(strings.ToLower(err.Error()), "manifest"):
		what = fmt.Sprintf("the MANIFEST (the list of data files) is corrupt (%v)", err)
	case pebble.IsCorruptionError(err):
		what = fmt.Sprintf("a data file is corrupt (%v)", err)
	case isRecord:
		what = fmt.Sprintf("a stored record does not decode (%v)", err)
	default:
		return err
	}
	return fmt.Errorf("%w: %s: %s. %s", ErrCorrupt, dir, what, strings.ToUpper(corruptAdvice(dir)[:1])+corruptAdvice(dir)[1:])
}

// CheckReport is what Check found.
type CheckReport struct {
	Sessions, Subscriptions, Messages, Inbound, Retained int
	// Orphans are records of a client without a session record; loading
	// skips them. They are not corruption.
	Orphans int
	// Problems are the first damaged records or files (at most
	// maxProblems), Corrupt whether there was any.
	Problems []string
	Corrupt  bool
	// ProblemCount counts all problems, including those not listed.
	ProblemCount int
}

const maxProblems = 20

// Check opens the store in dir read-only (it must not be in use) and
// walks every record with the strict decoders. It returns an error only
// when the store cannot be examined at all; damage it can describe is in
// the report (Corrupt), and an Open error wrapping ErrCorrupt is reported
// as a problem too.
func Check(dir string) (*CheckReport, error) {
	rep := &CheckReport{}
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("store: %s is not a directory", dir)
	}
	desc, err := pebble.Peek(dir, vfs.Default)
	if err != nil {
		rep.problem("%v", corruptionOrPlain(dir, err))
		return rep, nil
	}
	if !desc.Exists {
		return nil, fmt.Errorf("store: %s holds no isobar store", dir)
	}
	lock, err := pebble.LockDirectory(dir, vfs.Default)
	if err != nil {
		return nil, lockError(dir, err)
	}
	defer lock.Close()
	var watch corruptionWatch
	var opening atomic.Bool
	opening.Store(true)
	discard := slog.New(slog.DiscardHandler)
	h := &health{dir: dir, log: discard}
	f := &fataler{log: discard, dir: dir, h: h, onFatal: func(error) {}}
	db, err := pebble.Open(dir, &pebble.Options{
		FS: vfs.Default, Lock: lock, ReadOnly: true, ErrorIfNotExists: true,
		Logger:        &pebbleLogger{l: discard, rl: newRateLimiter(time.Minute), f: f},
		EventListener: watch.listener(h, discard, &opening),
	})
	if err != nil {
		if c := corruption(dir, &watch, err, false); errors.Is(c, ErrCorrupt) {
			rep.problem("%v", c)
			return rep, nil
		}
		return nil, fmt.Errorf("store: opening %s: %w", dir, err)
	}
	defer db.Close()
	rep.walk(db, dir, &watch)
	return rep, nil
}

func corruptionOrPlain(dir string, err error) error {
	if c := corruption(dir, nil, err, false); errors.Is(c, ErrCorrupt) {
		return c
	}
	return fmt.Errorf("store: %s: %w", dir, err)
}

func (r *CheckReport) problem(format string, args ...any) {
	r.Corrupt = true
	r.ProblemCount++
	if len(r.Problems) < maxProblems {
		r.Problems = append(r.Problems, fmt.Sprintf(format, args...))
	}
}

// walk reads every key and value in key order.
func (r *CheckReport) walk(db *pebble.DB, dir string, watch *corruptionWatch) {
	v, closer, err := db.Get(metaKey())
	switch {
	case err == nil:
		version, _, derr := decodeMeta(v)
		_ = closer.Close()
		if derr != nil {
			r.problem("meta record: %v", derr)
		} else if version > formatVersion || version == 0 {
			r.problem("meta record: format version %d, this build supports up to %d", version, formatVersion)
		}
	case errors.Is(err, pebble.ErrNotFound):
		r.problem("no meta record: not an isobar store, or its first write was lost")
	default:
		r.problem("reading the meta record: %v", corruption(dir, watch, err, false))
	}
	it, err := db.NewIter(nil)
	if err != nil {
		r.problem("%v", corruption(dir, watch, err, false))
		return
	}
	defer it.Close()
	// Orphans are counted against the set of session ids, collected
	// first (the session tag sorts between the others).
	sessions := map[string]bool{}
	for ok := it.SeekGE([]byte{tagSession}); ok && it.Key()[0] == tagSession; ok = it.Next() {
		sessions[string(it.Key()[1:])] = true
	}
	if err := it.Error(); err != nil {
		r.problem("reading sessions: %v", corruption(dir, watch, err, false))
		return
	}
	for ok := it.First(); ok; ok = it.Next() {
		k := it.Key()
		val, err := it.ValueAndErr()
		if err != nil {
			r.problem("key %s: %v", keyString(k), corruption(dir, watch, err, false))
			continue
		}
		if err := r.checkRecord(k, val, sessions); err != nil {
			r.problem("key %s: %v", keyString(k), err)
		}
	}
	if err := it.Error(); err != nil {
		r.problem("%v", corruption(dir, watch, err, false))
	}
}

// checkRecord decodes one record and counts it.
func (r *CheckReport) checkRecord(k, v []byte, sessions map[string]bool) error {
	switch k[0] {
	case tagMeta:
		if !bytes.Equal(k, metaKey()) {
			return errors.New("unknown meta key")
		}
		return nil
	case tagSession:
		var s SessionRecord
		if err := decodeSession(v, &s); err != nil {
			return err
		}
		r.Sessions++
		return nil
	case tagRetained:
		var m MessageRecord
		if err := decodeMessage(v, &m); err != nil {
			return err
		}
		if m.Topic != string(k[1:]) {
			return fmt.Errorf("retained message has topic %q", m.Topic)
		}
		r.Retained++
		return nil
	case tagSub, tagMessage, tagInbound:
	default:
		return fmt.Errorf("unknown key tag 0x%02X", k[0])
	}
	cid, rest, ok := splitClientKey(k)
	if !ok {
		return errors.New("malformed key")
	}
	var err error
	switch k[0] {
	case tagSub:
		var s SubscriptionRecord
		err = decodeSubscription(v, &s)
		if err == nil {
			r.Subscriptions++
		}
	case tagMessage:
		if len(rest) != 8 {
			return errors.New("malformed message key")
		}
		var m MessageRecord
		err = decodeMessage(v, &m)
		if err == nil {
			r.Messages++
		}
	case tagInbound:
		if len(rest) != 2 {
			return errors.New("malformed inbound key")
		}
		err = decodeInbound(v)
		if err == nil {
			r.Inbound++
		}
	}
	if err == nil && !sessions[string(cid)] {
		r.Orphans++
	}
	return err
}

// WriteTo prints the report for a person.
func (r *CheckReport) WriteTo(w io.Writer) (int64, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "sessions: %d\nsubscriptions: %d\nqueued/in-flight messages: %d\ninbound QoS 2 ids: %d\nretained messages: %d\n",
		r.Sessions, r.Subscriptions, r.Messages, r.Inbound, r.Retained)
	if r.Orphans > 0 {
		fmt.Fprintf(&b, "records without a session (skipped when loading, harmless): %d\n", r.Orphans)
	}
	if !r.Corrupt {
		b.WriteString("no problems found\n")
	} else {
		fmt.Fprintf(&b, "CORRUPT: %d problem(s)", r.ProblemCount)
		if r.ProblemCount > len(r.Problems) {
			fmt.Fprintf(&b, ", the first %d:", len(r.Problems))
		}
		b.WriteString("\n")
		for _, p := range r.Problems {
			fmt.Fprintf(&b, "  %s\n", p)
		}
	}
	n, err := io.WriteString(w, b.String())
	return int64(n), err
}

// Reset moves the data directory dir aside to dir.corrupt-<UTC time> and
// returns the new name, so that the next start creates an empty store
// while the damaged one is kept for inspection or recovery. It refuses a
// directory another process has open, and one that holds no Pebble
// database (it never moves unrelated files).
func Reset(dir string, now time.Time) (string, error) {
	dir = filepath.Clean(dir)
	fi, err := os.Stat(dir)
	if err != nil {
		return "", fmt.Errorf("store: %w", err)
	}
	if !fi.IsDir() {
		return "", fmt.Errorf("store: %s is not a directory", dir)
	}
	names, err := filepath.Glob(filepath.Join(dir, "MANIFEST-*"))
	if err != nil || len(names) == 0 {
		return "", fmt.Errorf("store: %s holds no Pebble database (no MANIFEST file); not moving it", dir)
	}
	lock, err := pebble.LockDirectory(dir, vfs.Default)
	if err != nil {
		return "", lockError(dir, err)
	}
	base := dir + ".corrupt-" + now.UTC().Format("20060102T150405Z")
	target := base
	for i := 1; ; i++ {
		if _, err := os.Lstat(target); errors.Is(err, os.ErrNotExist) {
			break
		}
		if i == 100 {
			_ = lock.Close()
			return "", fmt.Errorf("store: %s.* all exist", base)
		}
		target = fmt.Sprintf("%s-%d", base, i)
	}
	// Renaming a directory with a locked file in it is fine on POSIX;
	// the lock is released (on the moved file) right after.
	err = os.Rename(dir, target)
	_ = lock.Close()
	if err != nil {
		return "", fmt.Errorf("store: moving %s aside: %w", dir, err)
	}
	return target, nil
}
