package queue

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// The database of a Manager with Options.Dir: its own Pebble database
// (not the broker's store), keys
//
//	'm'                          meta: the format version
//	'n'                          the highest message ID assigned (written every tick and at Close)
//	'q' name 0x00 ID(8, BE)      a persistent message of queue name
//
// A Send of a persistent message commits its key with Sync before the
// message becomes visible; Pebble's commit pipeline makes concurrent
// synced commits share one fsync of the write-ahead log (group commit).
// Acknowledgements, expiry and dead-letter moves commit without Sync;
// they become durable with the next synced commit or the tick's sync, so
// a crash can at worst bring back a message acknowledged in the last
// tick (at-least-once).
//
// A full disk. Pebble cannot survive a failed write of its log (it ends
// in Logger.Fatalf or a panic), so Send refuses persistent messages, with
// an error wrapping ErrNoSpace, while the file system's free space is
// below a floor (read every tick), and the database keeps a ballast file:
// if a write hits ENOSPC anyway, the ballast is deleted so that the write
// succeeds when retried, and Send refuses until space is back above the
// floor (then the ballast is made again). A write error of any other kind
// degrades the database until the Manager is reopened: Send returns an
// error wrapping ErrStore.

// ErrNoSpace is wrapped by the error of Send for a persistent message
// while the disk is (nearly) full. It clears when space is freed.
var ErrNoSpace = errors.New("queue: not enough free disk space for persistent messages")

// ErrStore is wrapped by the error of Send for a persistent message after
// the database failed a write; it lasts until the Manager is reopened.
var ErrStore = errors.New("queue: the message database failed")

const (
	formatVersion  = 1
	defaultMinFree = 64 << 20
	defaultBallast = 16 << 20
	ballastName    = "isobar-queue-ballast"
	pebbleFormat   = pebble.FormatValueSeparation
)

var (
	metaKey = []byte{'m'}
	highKey = []byte{'n'}
)

type durable struct {
	db      *pebble.DB
	dir     string
	log     *slog.Logger
	highID  uint64 // after load: the highest ID seen
	nextID  func() uint64
	written atomic.Uint64 // the high-water mark last written

	mu     sync.RWMutex // commits shared, close exclusive
	closed bool

	fault    atomic.Pointer[error] // permanent
	full     atomic.Bool           // below the floor or ENOSPC met
	fullErr  atomic.Pointer[error]
	dirty    atomic.Bool // unsynced commits
	diskFree func(string) (uint64, error)
	minFree  uint64
	ballast  int64
}

func openDurable(o Options, log *slog.Logger) (*durable, error) {
	log = log.With("dir", o.Dir)
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("queue: %w", err)
	}
	d := &durable{dir: o.Dir, log: log, diskFree: o.diskFree}
	switch {
	case o.minFree == 0:
		d.minFree = defaultMinFree
	case o.minFree > 0:
		d.minFree = uint64(o.minFree)
	}
	d.ballast = o.ballastSize
	if d.ballast == 0 {
		d.ballast = defaultBallast
	}
	if d.diskFree == nil {
		d.diskFree = func(dir string) (uint64, error) {
			u, err := vfs.Default.GetDiskUsage(dir)
			return u.AvailBytes, err
		}
	}
	if err := checkDir(o.Dir); err != nil {
		return nil, err
	}
	if free, err := d.diskFree(o.Dir); err == nil && d.minFree > 0 && free < d.minFree {
		return nil, fmt.Errorf("%w: %s: %d bytes free, below the floor of %d", ErrNoSpace, o.Dir, free, d.minFree)
	}
	fs := vfs.OnDiskFull(vfs.Default, d.onDiskFull)
	db, err := pebble.Open(o.Dir, &pebble.Options{
		FS:                 fs,
		Logger:             &pebbleLogger{d: d},
		FormatMajorVersion: pebbleFormat,
	})
	if err != nil {
		return nil, fmt.Errorf("queue: opening the message database %s: %w", o.Dir, err)
	}
	d.db = db
	if err := d.checkMeta(); err != nil {
		_ = db.Close()
		return nil, err
	}
	d.makeBallast()
	return d, nil
}

// checkDir refuses a directory holding files that are not a Pebble
// database.
func checkDir(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("queue: %w", err)
	}
	empty := true
	for _, e := range entries {
		if e.Name() != "LOCK" && e.Name() != ballastName {
			empty = false
			break
		}
	}
	if empty {
		return nil
	}
	desc, err := pebble.Peek(dir, vfs.Default)
	if err != nil {
		return fmt.Errorf("queue: %s: inspecting the message database: %w; refusing to use it", dir, err)
	}
	if !desc.Exists {
		return fmt.Errorf("queue: %s holds files but no message database; refusing to use it", dir)
	}
	return nil
}

func (d *durable) checkMeta() error {
	v, closer, err := d.db.Get(metaKey)
	switch {
	case err == nil:
		ok := len(v) == 1 && v[0] >= 1 && v[0] <= formatVersion
		ver := -1
		if len(v) == 1 {
			ver = int(v[0])
		}
		_ = closer.Close()
		if !ok {
			return fmt.Errorf("queue: %s: message database format %d, this build supports up to %d", d.dir, ver, formatVersion)
		}
		return nil
	case errors.Is(err, pebble.ErrNotFound):
	default:
		return fmt.Errorf("queue: %s: reading the meta record: %w", d.dir, err)
	}
	it, err := d.db.NewIter(nil)
	if err != nil {
		return fmt.Errorf("queue: %s: %w", d.dir, err)
	}
	nonEmpty := it.First()
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		return fmt.Errorf("queue: %s: %w", d.dir, err)
	}
	if nonEmpty {
		return fmt.Errorf("queue: %s holds a Pebble database that is not a message database (no meta record); refusing to use it", d.dir)
	}
	if err := d.db.Set(metaKey, []byte{formatVersion}, pebble.Sync); err != nil {
		return fmt.Errorf("queue: %s: writing the meta record: %w", d.dir, err)
	}
	return nil
}

// load calls fn for every stored message, by queue and ID.
func (d *durable) load(fn func(name string, msg *Message)) error {
	if v, closer, err := d.db.Get(highKey); err == nil {
		if len(v) == 8 {
			d.highID = binary.BigEndian.Uint64(v)
		}
		_ = closer.Close()
	}
	it, err := d.db.NewIter(&pebble.IterOptions{LowerBound: []byte{'q'}, UpperBound: []byte{'r'}})
	if err != nil {
		return fmt.Errorf("queue: %s: %w", d.dir, err)
	}
	defer it.Close()
	bad := 0
	for it.First(); it.Valid(); it.Next() {
		k := it.Key()
		name, id, ok := splitKey(k)
		v, err := it.ValueAndErr()
		if err != nil {
			return fmt.Errorf("queue: %s: reading %q: %w", d.dir, k, err)
		}
		msg, derr := decodeMessage(v)
		if !ok || derr != nil || !validName(name) {
			// Keep the record (it may be read by a later version) but
			// do not let one bad record stop every queue.
			if bad == 0 {
				d.log.Error("malformed queued message record skipped", "key", fmt.Sprintf("%q", k), "err", derr)
			}
			bad++
			continue
		}
		msg.ID = id
		msg.Persistent = true
		d.highID = max(d.highID, id)
		fn(name, msg)
	}
	if bad > 1 {
		d.log.Error("malformed queued message records skipped", "count", bad)
	}
	if err := it.Error(); err != nil {
		return fmt.Errorf("queue: %s: %w", d.dir, err)
	}
	d.written.Store(d.highID)
	return nil
}

func appendKey(b []byte, name string, id uint64) []byte {
	b = append(b, 'q')
	b = append(b, name...)
	b = append(b, 0)
	return binary.BigEndian.AppendUint64(b, id)
}

func splitKey(k []byte) (string, uint64, bool) {
	if len(k) < 1+1+8 || k[0] != 'q' || k[len(k)-9] != 0 {
		return "", 0, false
	}
	name := k[1 : len(k)-9]
	if bytes.IndexByte(name, 0) >= 0 {
		return "", 0, false
	}
	return string(name), binary.BigEndian.Uint64(k[len(k)-8:]), true
}

func appendMessage(b []byte, m *Message) []byte {
	b = append(b, 1)
	b = binary.AppendVarint(b, m.Timestamp)
	b = binary.AppendVarint(b, m.Expires)
	b = append(b, m.Priority)
	redelivered := byte(0)
	if m.Redelivered {
		redelivered = 1
	}
	b = append(b, redelivered)
	b = binary.AppendUvarint(b, uint64(len(m.Headers)))
	for _, h := range m.Headers {
		b = binary.AppendUvarint(b, uint64(len(h.Name)))
		b = append(b, h.Name...)
		b = binary.AppendUvarint(b, uint64(len(h.Value)))
		b = append(b, h.Value...)
	}
	b = binary.AppendUvarint(b, uint64(len(m.Body)))
	return append(b, m.Body...)
}

var errMalformed = errors.New("malformed record")

func decodeMessage(v []byte) (*Message, error) {
	r := reader{b: v}
	if r.byte() != 1 {
		return nil, errors.New("unknown record version")
	}
	m := &Message{}
	m.Timestamp = r.varint()
	m.Expires = r.varint()
	m.Priority = min(r.byte(), 9)
	m.Redelivered = r.byte() == 1
	n := r.uvarint()
	if n > uint64(len(v)) {
		return nil, errMalformed
	}
	if n > 0 {
		m.Headers = make([]Header, n)
		for i := range m.Headers {
			m.Headers[i].Name = string(r.bytes())
			m.Headers[i].Value = string(r.bytes())
		}
	}
	if body := r.bytes(); len(body) > 0 {
		m.Body = bytes.Clone(body)
	}
	if r.bad || len(r.b) != 0 {
		return nil, errMalformed
	}
	return m, nil
}

type reader struct {
	b   []byte
	bad bool
}

func (r *reader) byte() byte {
	if len(r.b) == 0 {
		r.bad = true
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *reader) varint() int64 {
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.bad = true
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) uvarint() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.bad = true
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) bytes() []byte {
	n := r.uvarint()
	if r.bad || n > uint64(len(r.b)) {
		r.bad = true
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

// writable returns why persistent messages are refused, or nil.
func (d *durable) writable() error {
	if p := d.fault.Load(); p != nil {
		return *p
	}
	if d.full.Load() {
		if p := d.fullErr.Load(); p != nil {
			return *p
		}
		return ErrNoSpace
	}
	return nil
}

func (d *durable) setFault(err error) error {
	werr := fmt.Errorf("%w: %v; persistent messages are refused until restart", ErrStore, err)
	if d.fault.CompareAndSwap(nil, &werr) {
		d.log.Error("message database write failed", "err", err)
	}
	return *d.fault.Load()
}

func (d *durable) setFull(err error) {
	d.fullErr.Store(&err)
	if !d.full.Swap(true) {
		d.log.Error("refusing persistent queued messages", "err", err)
	}
}

// apply commits b; sync waits for the fsync.
func (d *durable) apply(b *pebble.Batch, sync bool) (err error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return ErrClosed
	}
	if err := d.writable(); err != nil {
		return err
	}
	// Pebble panics in a commit after a failed log write; it must not
	// take the process down from a Send.
	defer func() {
		if r := recover(); r != nil {
			err = d.setFault(fmt.Errorf("pebble: commit: %v", r))
		}
	}()
	opts := pebble.NoSync
	if sync {
		opts = pebble.Sync
	}
	if err := d.db.Apply(b, opts); err != nil {
		return d.setFault(err)
	}
	if !sync {
		d.dirty.Store(true)
	}
	return nil
}

// put stores msg of queue name and returns once it is durable.
func (d *durable) put(name string, msg *Message) error {
	if err := d.writable(); err != nil {
		return err
	}
	b := d.db.NewBatch()
	defer b.Close()
	key := appendKey(nil, name, msg.ID)
	if err := b.Set(key, appendMessage(nil, msg), nil); err != nil {
		return fmt.Errorf("queue: %w", err)
	}
	return d.apply(b, true)
}

// remove deletes a message (not synced: see the type comment).
func (d *durable) remove(name string, id uint64) {
	b := d.db.NewBatch()
	defer b.Close()
	_ = b.Delete(appendKey(nil, name, id), nil)
	d.applyLogged(b)
}

// applyLogged commits b without sync; a failure is logged (once, by
// setFault) and the records are found again on the next Open.
func (d *durable) applyLogged(b *pebble.Batch) {
	if err := d.apply(b, false); err != nil && !errors.Is(err, ErrClosed) && !errors.Is(err, ErrNoSpace) && !errors.Is(err, ErrStore) {
		d.log.Warn("message database update failed", "err", err)
	}
}

// move records dead-letter moves: every persistent message of dead
// leaves queue src; those of moved (the new entries) are written to dst.
func (d *durable) move(src, dst string, moved, _, dead []*entry) {
	b := d.db.NewBatch()
	defer b.Close()
	n := 0
	for _, e := range dead {
		if e.msg.Persistent {
			_ = b.Delete(appendKey(nil, src, e.msg.ID), nil)
			n++
		}
	}
	for _, e := range moved {
		if e.msg.Persistent {
			_ = b.Set(appendKey(nil, dst, e.msg.ID), appendMessage(nil, e.msg), nil)
			n++
		}
	}
	if n > 0 {
		d.applyLogged(b)
	}
}

// deleteQueue deletes every message of queue name.
func (d *durable) deleteQueue(name string) {
	b := d.db.NewBatch()
	defer b.Close()
	start := append(append([]byte{'q'}, name...), 0)
	end := append(append([]byte{'q'}, name...), 1)
	_ = b.DeleteRange(start, end, nil)
	d.applyLogged(b)
}

// tick applies the free-space floor, writes the ID high-water mark and
// syncs unsynced commits.
func (d *durable) tick() {
	if free, err := d.diskFree(d.dir); err == nil && d.minFree > 0 {
		switch {
		case free < d.minFree:
			d.setFull(fmt.Errorf("%w: %s: %d bytes free, below the floor of %d", ErrNoSpace, d.dir, free, d.minFree))
		case d.full.Load() && free >= d.minFree+max(d.minFree/8, 1<<20):
			d.makeBallast()
			d.full.Store(false)
			d.log.Info("accepting persistent queued messages again", "free", free)
		}
	} else if err == nil && d.full.Load() {
		d.makeBallast()
		d.full.Store(false)
	}
	if d.nextID != nil {
		if id := d.nextID(); id > d.written.Load() {
			b := d.db.NewBatch()
			_ = b.Set(highKey, binary.BigEndian.AppendUint64(nil, id), nil)
			if d.apply(b, false) == nil {
				d.written.Store(id)
			}
			_ = b.Close()
		}
	}
	if d.dirty.Swap(false) {
		b := d.db.NewBatch()
		_ = b.LogData(nil, nil)
		if err := d.apply(b, true); err != nil {
			d.dirty.Store(true)
		}
		_ = b.Close()
	}
}

// onDiskFull runs when a write of Pebble met ENOSPC, with writes paused:
// drop the ballast so the retried write succeeds, and refuse new
// persistent messages.
func (d *durable) onDiskFull() {
	_ = os.Remove(filepath.Join(d.dir, ballastName))
	d.setFull(fmt.Errorf("%w: %s: the disk is full", ErrNoSpace, d.dir))
}

// makeBallast creates the ballast file if it is missing.
func (d *durable) makeBallast() {
	if d.ballast <= 0 {
		return
	}
	path := filepath.Join(d.dir, ballastName)
	if fi, err := os.Stat(path); err == nil && fi.Size() >= d.ballast {
		return
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		d.log.Warn("cannot create the ballast file", "err", err)
		return
	}
	zero := make([]byte, 1<<20)
	var werr error
	for n := int64(0); n < d.ballast && werr == nil; n += int64(len(zero)) {
		_, werr = f.Write(zero[:min(int64(len(zero)), d.ballast-n)])
	}
	if werr == nil {
		werr = f.Sync()
	}
	if err := errors.Join(werr, f.Close()); err != nil {
		_ = os.Remove(path)
		d.log.Warn("cannot create the ballast file", "err", err)
	}
}

// close writes the high-water mark and closes the database.
func (d *durable) close() (err error) {
	if d.nextID != nil {
		if id := d.nextID(); id > d.written.Load() {
			b := d.db.NewBatch()
			_ = b.Set(highKey, binary.BigEndian.AppendUint64(nil, id), nil)
			_ = d.apply(b, true)
			_ = b.Close()
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil
	}
	d.closed = true
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("queue: closing the message database: %v", r)
		}
	}()
	if err := d.db.Close(); err != nil {
		return fmt.Errorf("queue: closing the message database: %w", err)
	}
	return nil
}

// pebbleLogger routes Pebble's log to slog.
type pebbleLogger struct{ d *durable }

func (p *pebbleLogger) Infof(format string, args ...any) {
	if p.d.log.Enabled(context.Background(), slog.LevelDebug) {
		p.d.log.Debug("pebble: " + strings.TrimSpace(fmt.Sprintf(format, args...)))
	}
}

func (p *pebbleLogger) Errorf(format string, args ...any) {
	p.d.log.Error("pebble: " + strings.TrimSpace(fmt.Sprintf(format, args...)))
}

// Fatalf must not return to Pebble: the database is marked failed and
// the calling goroutine panics (apply recovers it in a commit).
func (p *pebbleLogger) Fatalf(format string, args ...any) {
	msg := "pebble: " + strings.TrimSpace(fmt.Sprintf(format, args...))
	p.d.setFault(errors.New(msg))
	panic(msg)
}
