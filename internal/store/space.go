package store

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// A full disk.
//
// Pebble cannot survive a write that fails with ENOSPC: an error writing
// the write-ahead log sticks in its log writer, so the waiting commit ends
// in Logger.Fatalf ("fatal commit error", db.go) and every later commit in
// a panic (commitWrite, or the WAL rotation in rotateMemtable); a failed
// MANIFEST write after a flush or compaction ends in Fatalf (logAndApply);
// and a failed flush is retried in a tight loop, which is how a restart on
// a full disk used to hang in Open writing megabytes of the same line.
//
// So the store keeps Pebble from ever seeing ENOSPC while it runs:
//
//   - A background goroutine reads the file system's free space every
//     checkInterval. Below Options.MinFreeBytes the store is degraded:
//     Writable and every commit fail with an error wrapping ErrNoSpace,
//     before the disk is actually full, and without calling into Pebble.
//     It recovers by itself once the free space is back above the floor
//     (plus a small hysteresis).
//   - If the disk fills anyway (another process, a floor of 0), a write
//     or file creation that fails with ENOSPC or EDQUOT degrades the store
//     the same way and is retried every retryInterval until it succeeds,
//     instead of failing: Pebble's writer waits (the commits already in
//     flight wait with it; new ones are refused at once), and carries on
//     when space returns. Only Close (and Open, which must not hang) makes
//     such a write give up and return the error.
//   - What still reaches Logger.Fatalf, or panics in a commit, is logged
//     once with what to do and ends the process (Options.OnFatal).
//
// Failing fsyncs are never retried (a retried fsync may report success
// for data the kernel has dropped); they reach Pebble, which is fatal.

// ErrNoSpace is wrapped by the errors of Writable and of commits while the
// data directory's file system has less free space than the floor
// (Options.MinFreeBytes) or is full. The store recovers by itself when
// space returns.
var ErrNoSpace = errors.New("store: not enough free disk space for durable writes")

// ErrDegraded is wrapped by the errors of Writable and of commits after a
// write failure other than a full disk (an I/O error, a file system
// remounted read-only, an unrecoverable Pebble fault). It lasts until the
// store is reopened.
var ErrDegraded = errors.New("store: durable writes failed")

// DefaultMinFreeBytes is the free-space floor when Options.MinFreeBytes is
// 0: enough for Pebble to flush a full memtable (memTableSize) and write
// its MANIFEST and a new log with room to spare.
const DefaultMinFreeBytes = 64 << 20

// ExitFatal is the exit status of the default Options.OnFatal (EX_IOERR
// of sysexits.h).
const ExitFatal = 74

const (
	defaultCheckInterval = 250 * time.Millisecond
	defaultRetryInterval = time.Second
)

// health is the store's writability: the floor monitor's verdict, the
// writes waiting for space, and a permanent fault. Writable reads the
// current error with one atomic load.
type health struct {
	dir   string
	floor uint64 // 0 = none
	log   *slog.Logger

	state atomic.Pointer[error] // nil = writable
	free  atomic.Uint64         // last free space seen, bytes
	// stuck is closed while writes wait for space or after a fault: a
	// synced commit in flight then stops waiting (pebbleBatch.commit).
	stuck atomic.Pointer[chan struct{}]

	mu       sync.Mutex
	floorLow bool
	blocked  int   // writes waiting for space
	blockErr error // the ENOSPC of the first of them
	fault    error // permanent
	kind     int   // of the current state, to log changes only
	quiet    bool  // closed, or the fault was logged: log no transitions
}

// Kinds of state, in increasing severity.
const (
	kindWritable = iota
	kindFloor
	kindFull
	kindFault
)

// stuckChan returns the channel closed while writes are stuck.
func (h *health) stuckChan() chan struct{} {
	if p := h.stuck.Load(); p != nil {
		return *p
	}
	fresh := make(chan struct{})
	if h.stuck.CompareAndSwap(nil, &fresh) {
		return fresh
	}
	return *h.stuck.Load()
}

func (h *health) writable() error {
	if p := h.state.Load(); p != nil {
		return *p
	}
	return nil
}

// update recomputes the state; h.mu is held.
func (h *health) update() {
	var err error
	kind := kindWritable
	switch {
	case h.fault != nil:
		err, kind = h.fault, kindFault
	case h.blocked > 0:
		err, kind = fmt.Errorf("%w: %s: the disk is full (%v); writes resume when space is freed", ErrNoSpace, h.dir, h.blockErr), kindFull
	case h.floorLow:
		err, kind = fmt.Errorf("%w: %s: %s free, below the floor of %s (store.min_free_bytes); writes resume when space is freed",
			ErrNoSpace, h.dir, formatBytes(h.free.Load()), formatBytes(h.floor)), kindFloor
	}
	if err == nil {
		h.state.Store(nil)
	} else {
		h.state.Store(&err)
	}
	ch := h.stuckChan()
	select {
	case <-ch:
		if kind < kindFull {
			fresh := make(chan struct{})
			h.stuck.Store(&fresh)
		}
	default:
		if kind >= kindFull {
			close(ch)
		}
	}
	// Log changes of kind, not every new figure.
	if kind == h.kind {
		return
	}
	h.kind = kind
	if h.quiet {
		return
	}
	if err == nil {
		h.log.Info("store writable again", "free", formatBytes(h.free.Load()))
	} else {
		h.log.Error("store refusing durable writes", "err", err)
	}
}

// setFree records a free-space reading and applies the floor: the store
// degrades below it and recovers above it plus 1/8 (at least 1 MiB), so a
// level hovering at the floor does not flap.
func (h *health) setFree(free uint64) {
	h.free.Store(free)
	if h.floor == 0 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	low := free < h.floor
	if h.floorLow && !low {
		low = free < h.floor+max(h.floor/8, 1<<20)
	}
	if low != h.floorLow {
		h.floorLow = low
		h.update()
	}
}

func (h *health) block(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.blocked == 0 {
		h.blockErr = err
	}
	h.blocked++
	h.update()
}

func (h *health) unblock() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.blocked--
	h.update()
}

// setFault degrades the store for good.
func (h *health) setFault(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.fault == nil {
		h.fault = fmt.Errorf("%w: %s: %v; restart once the cause is fixed", ErrDegraded, h.dir, err)
		h.update()
	}
}

// silence stops logging transitions (the store is closing, or a fatal
// fault logs its own line).
func (h *health) silence() {
	h.mu.Lock()
	h.quiet = true
	h.mu.Unlock()
}

// formatBytes renders a size for people, with the exact count when
// rounded (so a figure just below a floor does not print as the floor).
func formatBytes(n uint64) string {
	if n >= 1<<10 {
		return fmt.Sprintf("%s (%d bytes)", roundBytes(n), n)
	}
	return roundBytes(n)
}

func roundBytes(n uint64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

func isNoSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

// isWriteFault reports errors after which writes will not work again
// without intervention.
func isWriteFault(err error) bool {
	return errors.Is(err, syscall.EIO) || errors.Is(err, syscall.EROFS)
}

// guardFS is the vfs.FS Pebble uses: it creates files 0600 and
// directories 0700 (the store holds messages and user names), and makes
// writes that fail for lack of space wait for space (see above).
type guardFS struct {
	vfs.FS
	h     *health
	retry time.Duration
	// noWait makes ENOSPC fail at once (while opening), closing makes
	// waiting writes give up (Close).
	noWait  atomic.Bool
	closing chan struct{}
	closeMu sync.Once
	// fatal ends the process; an ENOSPC while opening calls it, since
	// Pebble would retry the failed flush of the recovered log forever.
	fatal func(error)
}

func newGuardFS(inner vfs.FS, h *health, retry time.Duration) *guardFS {
	return &guardFS{FS: inner, h: h, retry: retry, closing: make(chan struct{})}
}

func (g *guardFS) close() { g.closeMu.Do(func() { close(g.closing) }) }

// wait is called after an operation failed with err; it reports whether
// to retry it (after waiting for space).
func (g *guardFS) wait(err error, waited *bool) bool {
	if !isNoSpace(err) {
		if isWriteFault(err) {
			g.h.setFault(err)
		}
		return false
	}
	if g.noWait.Load() {
		g.fatal(fmt.Errorf("the disk is full while opening the store: %w", err))
		return false
	}
	if !*waited {
		*waited = true
		g.h.block(err)
	}
	t := time.NewTimer(g.retry)
	defer t.Stop()
	select {
	case <-g.closing:
		return false
	case <-t.C:
		return true
	}
}

func (g *guardFS) done(waited bool) {
	if waited {
		g.h.unblock()
	}
}

// retryOp runs op until it succeeds, fails for another reason than space,
// or waiting is over.
func (g *guardFS) retryOp(op func() error) error {
	var waited bool
	defer func() { g.done(waited) }()
	for {
		err := op()
		if err == nil || !g.wait(err, &waited) {
			return err
		}
	}
}

func (g *guardFS) Create(name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	var f vfs.File
	err := g.retryOp(func() (err error) {
		f, err = g.FS.Create(name, c)
		return err
	})
	return g.wrapNew(name, f, err)
}

func (g *guardFS) ReuseForWrite(oldname, newname string, c vfs.DiskWriteCategory) (vfs.File, error) {
	var f vfs.File
	err := g.retryOp(func() (err error) {
		f, err = g.FS.ReuseForWrite(oldname, newname, c)
		return err
	})
	return g.wrapNew(newname, f, err)
}

// wrapNew restricts a file Pebble creates (or recycles) to its owner. The
// file is still empty (or a recycled log, in an owner-only directory for
// any store this code created) when its mode changes.
func (g *guardFS) wrapNew(name string, f vfs.File, err error) (vfs.File, error) {
	if err != nil {
		return nil, err
	}
	// (Not found: a file system other than the OS's, in tests.)
	if err := os.Chmod(name, 0o600); err != nil && !errors.Is(err, os.ErrNotExist) {
		_ = f.Close()
		return nil, fmt.Errorf("restricting the permissions of a new file: %w", err)
	}
	return &guardFile{File: f, g: g}, nil
}

func (g *guardFS) OpenReadWrite(name string, c vfs.DiskWriteCategory, opts ...vfs.OpenOption) (vfs.File, error) {
	f, err := g.FS.OpenReadWrite(name, c, opts...)
	if err != nil {
		return nil, err
	}
	return &guardFile{File: f, g: g}, nil
}

func (g *guardFS) Link(oldname, newname string) error {
	return g.retryOp(func() error { return g.FS.Link(oldname, newname) })
}

func (g *guardFS) Rename(oldname, newname string) error {
	return g.retryOp(func() error { return g.FS.Rename(oldname, newname) })
}

func (g *guardFS) MkdirAll(dir string, _ os.FileMode) error {
	return g.retryOp(func() error { return g.FS.MkdirAll(dir, 0o700) })
}

// Lock locks the LOCK file, made owner-only.
func (g *guardFS) Lock(name string) (io.Closer, error) {
	l, err := g.FS.Lock(name)
	if err == nil {
		_ = os.Chmod(name, 0o600)
	}
	return l, err
}

func (g *guardFS) Unwrap() vfs.FS { return g.FS }

// guardFile makes Write and WriteAt wait for space.
type guardFile struct {
	vfs.File
	g *guardFS
}

func (f *guardFile) Write(p []byte) (int, error) {
	var n int
	err := f.g.retryOp(func() error {
		m, err := f.File.Write(p[n:])
		n += m
		return err
	})
	return n, err
}

func (f *guardFile) WriteAt(p []byte, off int64) (int, error) {
	var n int
	err := f.g.retryOp(func() error {
		m, err := f.File.WriteAt(p[n:], off+int64(n))
		n += m
		return err
	})
	return n, err
}

// Sync is not retried (see above); a failure degrades the store.
func (f *guardFile) Sync() error {
	err := f.File.Sync()
	f.noteSyncErr(err)
	return err
}

func (f *guardFile) SyncData() error {
	err := f.File.SyncData()
	f.noteSyncErr(err)
	return err
}

func (f *guardFile) SyncTo(length int64) (bool, error) {
	full, err := f.File.SyncTo(length)
	f.noteSyncErr(err)
	return full, err
}

func (f *guardFile) noteSyncErr(err error) {
	if err != nil {
		f.g.h.setFault(fmt.Errorf("fsync failed: %w", err))
	}
}
