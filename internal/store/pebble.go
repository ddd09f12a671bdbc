package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	dto "github.com/prometheus/client_model/go"
)

// Options configure Open.
type Options struct {
	Dir          string        // data directory (created if missing)
	Sync         SyncPolicy    // default SyncAlways
	SyncInterval time.Duration // for SyncInterval, default 1s
	Logger       *slog.Logger  // default: discard
	// MinFreeBytes is the free-space floor of the data directory's file
	// system: below it commits fail with ErrNoSpace before the disk is
	// actually full, and Open refuses to start. 0 means
	// DefaultMinFreeBytes; negative means no floor (a full disk still
	// makes commits fail with ErrNoSpace rather than crash the process).
	MinFreeBytes int64
	// OnFatal is called, after the store has logged it once, when Pebble
	// reports a fault it cannot continue from (Logger.Fatalf, a panic in
	// a commit). The default exits the process with status ExitFatal. If
	// it returns, the Pebble goroutine that reported the fault panics.
	OnFatal func(error)

	// For tests.
	fs            vfs.FS                           // default vfs.Default
	checkInterval time.Duration                    // free-space check period, default 250ms
	retryInterval time.Duration                    // retry period of a write waiting for space, default 1s
	logEvery      time.Duration                    // repeated Pebble log lines: one per this, default 10s
	diskFree      func(dir string) (uint64, error) // default from fs.GetDiskUsage
}

// ErrClosed is returned by operations on a closed store.
var ErrClosed = errors.New("store: closed")

// pebbleFormat is the Pebble format major version of new stores. Existing
// stores of an older format are upgraded to it on open. It is pinned rather
// than pebble.FormatNewest so a Pebble upgrade does not silently make a
// data directory unreadable by the previous Isobar release.
const pebbleFormat = pebble.FormatValueSeparation

// memTableSize is Pebble's memtable size (Pebble's default is 4 MiB). A
// message put and deleted while its memtable is live reaches an sstable as
// a tombstone only, so a larger memtable means less data written for
// short-lived queued messages.
const memTableSize = 16 << 20

// PebbleStore is the Pebble-backed Store. Its methods are safe for
// concurrent use; each Batch is used by one goroutine at a time.
type PebbleStore struct {
	db    *pebble.DB
	lock  *pebble.Lock
	dir   string
	log   *slog.Logger
	wopts *pebble.WriteOptions
	fsync interface{ Write(*dto.Metric) error } // Pebble's WAL fsync latency histogram (ns)

	// mu guards closed: operations hold it shared, Close exclusively, so
	// Close waits for commits and loads in progress and no Pebble call
	// happens after the database is closed.
	mu     sync.RWMutex
	closed bool

	commits  atomic.Uint64
	dirty    atomic.Bool // SyncInterval: a commit since the last sync
	isClosed atomic.Bool // closed, for Writable without the lock

	stop chan struct{}
	done chan struct{}

	// Writability (space.go): the free-space monitor, the FS wrapper
	// making writes wait for space, and the fatal-fault handler.
	h        *health
	guard    *guardFS
	fatal    *fataler
	watch    *corruptionWatch
	monStop  chan struct{}
	monDone  chan struct{}
	diskFree func(string) (uint64, error)
	interval time.Duration
}

var _ Store = (*PebbleStore)(nil)

// Open opens the store in o.Dir, creating it if the directory is missing
// or empty. It refuses a directory that holds anything but an Isobar
// store (another program's files, a Pebble database without Isobar's
// meta record), a store of a newer format version, and a directory
// another process has open; it never deletes anything it refuses.
//
// With SyncInterval a commit is written with pebble.NoSync: Commit
// returns once the batch is in Pebble's write-ahead log buffer, which
// Pebble's log flusher hands to the OS right away (asynchronously, within
// microseconds), and the background loop fsyncs every o.SyncInterval. So a
// process crash can lose commits of that last instant, a machine crash
// those of the last interval.
func Open(o Options) (*PebbleStore, error) {
	if o.Dir == "" {
		return nil, errors.New("store: no data directory")
	}
	switch o.Sync {
	case "":
		o.Sync = SyncAlways
	case SyncAlways, SyncInterval:
	default:
		return nil, fmt.Errorf("store: unknown sync policy %q", o.Sync)
	}
	if o.SyncInterval < 0 {
		return nil, fmt.Errorf("store: negative sync interval %v", o.SyncInterval)
	}
	if o.SyncInterval == 0 {
		o.SyncInterval = time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.fs == nil {
		o.fs = vfs.Default
	}
	if o.checkInterval <= 0 {
		o.checkInterval = defaultCheckInterval
	}
	if o.retryInterval <= 0 {
		o.retryInterval = defaultRetryInterval
	}
	if o.logEvery <= 0 {
		o.logEvery = defaultLogEvery
	}
	if o.diskFree == nil {
		inner := o.fs
		o.diskFree = func(dir string) (uint64, error) {
			u, err := inner.GetDiskUsage(dir)
			return u.AvailBytes, err
		}
	}
	var floor uint64
	switch {
	case o.MinFreeBytes == 0:
		floor = DefaultMinFreeBytes
	case o.MinFreeBytes > 0:
		floor = uint64(o.MinFreeBytes)
	}
	log := o.Logger.With("dir", o.Dir)

	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	if fi, err := os.Stat(o.Dir); err == nil && fi.Mode().Perm()&0o007 != 0 {
		log.Warn("data directory is accessible to all users (it holds messages and user names); chmod 700 it", "mode", fi.Mode().Perm().String())
	}
	h := &health{dir: o.Dir, floor: floor, log: log}
	// A store below its floor does not start: opening writes (a new log,
	// a MANIFEST, the flush of the recovered log) and must not hang.
	if free, err := o.diskFree(o.Dir); err != nil {
		log.Warn("cannot read the free space of the data directory's file system", "err", err)
	} else {
		h.free.Store(free)
		if floor > 0 && free < floor {
			return nil, fmt.Errorf("%w: %s: only %s free on its file system, below the floor of %s (store.min_free_bytes): free some space (or lower the floor) and start again",
				ErrNoSpace, o.Dir, formatBytes(free), formatBytes(floor))
		}
	}
	onFatal := o.OnFatal
	if onFatal == nil {
		onFatal = func(error) { os.Exit(ExitFatal) }
	}
	f := &fataler{log: log, dir: o.Dir, h: h, onFatal: onFatal}
	g := newGuardFS(o.fs, h, o.retryInterval)
	g.fatal = f.fatal
	g.noWait.Store(true)
	o.fs = g

	// Look before locking, so a foreign directory does not even get our
	// LOCK file.
	desc, err := inspectDir(o.Dir)
	if err != nil {
		return nil, err
	}
	lock, err := pebble.LockDirectory(o.Dir, g)
	if err != nil {
		return nil, lockError(o.Dir, err)
	}
	s, err := open(o, log, desc, lock, f, g)
	if err != nil {
		_ = lock.Close()
		return nil, err
	}
	g.noWait.Store(false)
	s.diskFree, s.interval = o.diskFree, o.checkInterval
	s.monStop, s.monDone = make(chan struct{}), make(chan struct{})
	go s.monitor()
	return s, nil
}

// monitor reads the free space every interval and applies the floor.
func (s *PebbleStore) monitor() {
	defer close(s.monDone)
	t := time.NewTicker(s.interval)
	defer t.Stop()
	failed := false
	for {
		select {
		case <-s.monStop:
			return
		case <-t.C:
		}
		free, err := s.diskFree(s.dir)
		if err != nil {
			if !failed {
				s.log.Warn("cannot read the free space of the data directory's file system", "err", err)
				failed = true
			}
			continue
		}
		failed = false
		s.h.setFree(free)
	}
}

// Writable reports whether durable writes are possible: nil, or an error
// wrapping ErrNoSpace (the free space is below the floor, or the disk is
// full; this clears by itself when space returns), ErrDegraded (a write
// failed otherwise; until reopened) or ErrClosed. Commits fail with the
// same error.
func (s *PebbleStore) Writable() error {
	if s.isClosed.Load() {
		return ErrClosed
	}
	return s.h.writable()
}

// inspectDir returns the description of the Pebble database in dir, or an
// error if dir holds files that are not one.
func inspectDir(dir string) (*pebble.DBDesc, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	empty := true
	for _, e := range entries {
		// A lone LOCK file is what an interrupted first Open leaves; the
		// node keeps its generated HTTP admin password beside the store
		// (also in memory mode, so a later durable start must accept it),
		// and the STOMP gateway its queues' database (stomp-queues), which
		// may be created before the first durable start.
		if e.Name() != "LOCK" && e.Name() != "http-admin-password" && e.Name() != "stomp-queues" {
			empty = false
			break
		}
	}
	desc, err := pebble.Peek(dir, vfs.Default)
	if err != nil {
		if empty {
			return &pebble.DBDesc{}, nil
		}
		return nil, fmt.Errorf("store: %s: inspecting the database: %w; refusing to use it", dir, err)
	}
	if !desc.Exists && !empty {
		return nil, fmt.Errorf("store: %s is not an isobar data directory: it holds files but no database; refusing to use it", dir)
	}
	return desc, nil
}

func lockError(dir string, err error) error {
	switch {
	case errors.Is(err, syscall.EAGAIN), errors.Is(err, syscall.EACCES):
		return fmt.Errorf("store: data directory %s in use by another process: %w", dir, err)
	case strings.Contains(err.Error(), "held by current process"):
		return fmt.Errorf("store: data directory %s already open in this process: %w", dir, err)
	}
	return fmt.Errorf("store: locking data directory %s: %w", dir, err)
}

func open(o Options, log *slog.Logger, desc *pebble.DBDesc, lock *pebble.Lock, f *fataler, g *guardFS) (*PebbleStore, error) {
	format := pebbleFormat
	if desc.Exists {
		// Do not upgrade a database before knowing it is ours.
		format = desc.FormatMajorVersion
	}
	opts := &pebble.Options{
		FS:                 o.fs,
		Lock:               lock,
		Logger:             &pebbleLogger{l: log, rl: newRateLimiter(o.logEvery), f: f},
		FormatMajorVersion: format,
		MemTableSize:       memTableSize,
		ErrorIfNotExists:   desc.Exists,
	}
	watch := new(corruptionWatch)
	opts.EventListener = watch.listener(f.h, log, &g.noWait)
	db, err := pebble.Open(o.Dir, opts)
	if err != nil {
		if c := corruption(o.Dir, watch, err, false); errors.Is(c, ErrCorrupt) {
			return nil, c
		}
		return nil, fmt.Errorf("store: opening %s: %w", o.Dir, err)
	}
	s := &PebbleStore{db: db, lock: lock, dir: o.Dir, log: log, wopts: pebble.Sync, h: f.h, guard: g, fatal: f, watch: watch}
	if err := s.checkMeta(); err != nil {
		_ = db.Close()
		return nil, corruption(o.Dir, watch, err, false)
	}
	if db.FormatMajorVersion() < pebbleFormat {
		if err := db.RatchetFormatMajorVersion(pebbleFormat); err != nil {
			_ = db.Close()
			return nil, fmt.Errorf("store: upgrading %s to Pebble format %v: %w", o.Dir, pebbleFormat, err)
		}
	}
	if h := db.Metrics().LogWriter.FsyncLatency; h != nil {
		s.fsync = h
	}
	if o.Sync == SyncInterval {
		s.wopts = pebble.NoSync
		s.stop, s.done = make(chan struct{}), make(chan struct{})
		go s.syncLoop(o.SyncInterval)
	}
	attrs := []any{"sync", o.Sync}
	if o.Sync == SyncInterval {
		attrs = append(attrs, "sync_interval", o.SyncInterval)
	}
	log.Info("store opened", attrs...)
	return s, nil
}

// checkMeta verifies the meta record, or writes it into an empty database.
func (s *PebbleStore) checkMeta() error {
	v, closer, err := s.db.Get(metaKey())
	switch {
	case err == nil:
		version, created, derr := decodeMeta(v)
		_ = closer.Close()
		if derr != nil {
			return fmt.Errorf("store: %s: %w; refusing to use it", s.dir, derr)
		}
		if version > formatVersion || version == 0 {
			return fmt.Errorf("store: %s has format version %d, this build supports up to %d", s.dir, version, formatVersion)
		}
		s.log.Debug("store format", "version", version, "created", time.Unix(0, created).UTC())
		return nil
	case errors.Is(err, pebble.ErrNotFound):
	default:
		return fmt.Errorf("store: %s: reading meta record: %w", s.dir, err)
	}
	it, err := s.db.NewIter(nil)
	if err != nil {
		return fmt.Errorf("store: %s: %w", s.dir, err)
	}
	nonEmpty := it.First()
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		return fmt.Errorf("store: %s: %w", s.dir, err)
	}
	if nonEmpty {
		return fmt.Errorf("store: %s holds a Pebble database that is not an isobar store (no meta record); refusing to use it", s.dir)
	}
	meta := appendMeta(nil, formatVersion, time.Now().UnixNano())
	if err := s.db.Set(metaKey(), meta, pebble.Sync); err != nil {
		return fmt.Errorf("store: %s: writing meta record: %w", s.dir, err)
	}
	return nil
}

// syncLoop fsyncs the WAL every interval when something was committed.
func (s *PebbleStore) syncLoop(interval time.Duration) {
	defer close(s.done)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			// While writes wait for space, a sync would wait with them.
			if s.h.writable() != nil || !s.dirty.Swap(false) {
				continue
			}
			// An empty LogData record with Sync waits for an fsync of
			// the WAL covering every earlier commit. Applied without
			// waiting, so a failed fsync is an error here rather than
			// Pebble's fatal commit error.
			b := s.db.NewBatch()
			_ = b.LogData(nil, nil)
			err := s.db.ApplyNoSyncWait(b, pebble.Sync)
			if err == nil {
				err = b.SyncWait()
			}
			if err != nil {
				s.dirty.Store(true)
				s.h.setFault(fmt.Errorf("syncing the write-ahead log: %w", err))
				continue
			}
			_ = b.Close()
		}
	}
}

// NewBatch returns an empty batch.
func (s *PebbleStore) NewBatch() Batch {
	return &pebbleBatch{s: s, b: s.db.NewBatch()}
}

// Stats returns counters for metrics. Syncs and SyncSecondsSum count the
// write-ahead log fsyncs Pebble made (concurrent SyncAlways commits share
// one).
func (s *PebbleStore) Stats() Stats {
	st := Stats{Commits: s.commits.Load(), FreeBytes: s.h.free.Load(), Degraded: s.h.writable() != nil}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return st
	}
	st.DiskBytes = s.db.Metrics().DiskSpaceUsage()
	if s.fsync != nil {
		var m dto.Metric
		if s.fsync.Write(&m) == nil && m.Histogram != nil {
			st.Syncs = m.Histogram.GetSampleCount()
			st.SyncSecondsSum = m.Histogram.GetSampleSum() / float64(time.Second)
		}
	}
	return st
}

// Compact compacts the whole key space, dropping deleted data and
// tombstones. Pebble compacts in the background on its own; this is for
// reclaiming space at once (after deleting many sessions, for example).
func (s *PebbleStore) Compact(ctx context.Context) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	if err := s.h.writable(); err != nil {
		return err
	}
	if err := s.db.Compact(ctx, []byte{0x00}, []byte{0xFF}, true); err != nil {
		return fmt.Errorf("store: compact: %w", err)
	}
	return nil
}

// Close stops the background sync, closes the database (which fsyncs the
// write-ahead log) and releases the directory. Commits after Close fail
// with ErrClosed.
//
// Writes waiting for disk space give up first, so Close does not wait
// for space to return: a synced commit still waiting fails, an unsynced
// one is lost, Close reports the write error, and Pebble work it cannot
// abandon (recording a finished flush in the MANIFEST) is fatal
// (Options.OnFatal).
func (s *PebbleStore) Close() error {
	s.h.silence()
	s.guard.close()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	s.closed = true
	s.isClosed.Store(true)
	close(s.monStop)
	<-s.monDone
	if s.stop != nil {
		close(s.stop)
		<-s.done
	}
	err := s.db.Close()
	err = errors.Join(err, s.lock.Close())
	if err != nil {
		return fmt.Errorf("store: close: %w", err)
	}
	s.log.Info("store closed")
	return nil
}

// LoadSessions calls fn for every stored session in client id order, with
// its subscriptions (in filter order), messages (in sequence order) and
// inbound identifiers. It reads a consistent snapshot in one forward pass
// over each key range, holding one session at a time; fn may keep the
// LoadedSession. Subscriptions, messages or inbound ids without a session
// are skipped and logged.
func (s *PebbleStore) LoadSessions(fn func(*LoadedSession) error) error {
	var cbErr error
	err := s.loadSessions(func(ls *LoadedSession) error {
		cbErr = fn(ls)
		return cbErr
	})
	if err != nil && err != cbErr && !errors.Is(err, ErrClosed) {
		return corruption(s.dir, s.watch, err, true)
	}
	return err
}

func (s *PebbleStore) loadSessions(fn func(*LoadedSession) error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	snap := s.db.NewSnapshot()
	defer snap.Close()

	var its [4]*pebble.Iterator
	defer func() {
		for _, it := range its {
			if it != nil {
				_ = it.Close()
			}
		}
	}()
	for i, tag := range [4]byte{tagSession, tagSub, tagMessage, tagInbound} {
		it, err := snap.NewIter(&pebble.IterOptions{LowerBound: []byte{tag}, UpperBound: []byte{tag + 1}})
		if err != nil {
			return fmt.Errorf("store: %w", err)
		}
		its[i] = it
		it.First()
	}
	sess, subs, msgs, inb := its[0], its[1], its[2], its[3]
	var orphans int

	// advance moves it over the keys of clientID, calling add for each,
	// after skipping (as orphans) keys of smaller client ids.
	advance := func(it *pebble.Iterator, clientID []byte, add func(k, rest, v []byte) error) error {
		for ; it.Valid(); it.Next() {
			k := it.Key()
			cid, rest, ok := splitClientKey(k)
			if !ok {
				return fmt.Errorf("store: malformed key %s", keyString(k))
			}
			c := bytes.Compare(cid, clientID)
			if c > 0 {
				break
			}
			if c < 0 {
				orphans++
				continue
			}
			v, err := it.ValueAndErr()
			if err != nil {
				return fmt.Errorf("store: key %s: %w", keyString(k), err)
			}
			if err := add(k, rest, v); err != nil {
				return fmt.Errorf("store: key %s: %w", keyString(k), err)
			}
		}
		return it.Error()
	}

	// Records are collected in scratch slices reused across sessions and
	// then copied into exactly sized slices for the LoadedSession.
	var (
		subsBuf []SubscriptionRecord
		msgsBuf []SeqMessage
		inbBuf  []uint16
	)
	for ; sess.Valid(); sess.Next() {
		k := sess.Key()
		v, err := sess.ValueAndErr()
		if err != nil {
			return fmt.Errorf("store: key %s: %w", keyString(k), err)
		}
		ls := new(LoadedSession)
		if err := decodeSession(v, &ls.Session); err != nil {
			return fmt.Errorf("store: key %s: %w", keyString(k), err)
		}
		cid := k[1:]
		ls.Session.ClientID = string(cid)
		subsBuf = subsBuf[:0]
		err = advance(subs, cid, func(_, rest, v []byte) error {
			subsBuf = append(subsBuf, SubscriptionRecord{})
			sub := &subsBuf[len(subsBuf)-1]
			if err := decodeSubscription(v, sub); err != nil {
				return err
			}
			sub.Filter = string(rest)
			return nil
		})
		if err != nil {
			return err
		}
		msgsBuf = msgsBuf[:0]
		err = advance(msgs, cid, func(_, rest, v []byte) error {
			if len(rest) != 8 {
				return errors.New("malformed message key")
			}
			msgsBuf = append(msgsBuf, SeqMessage{Seq: binary.BigEndian.Uint64(rest)})
			return decodeMessage(v, &msgsBuf[len(msgsBuf)-1].Msg)
		})
		if err != nil {
			return err
		}
		inbBuf = inbBuf[:0]
		err = advance(inb, cid, func(_, rest, v []byte) error {
			if len(rest) != 2 {
				return errors.New("malformed inbound key")
			}
			if err := decodeInbound(v); err != nil {
				return err
			}
			inbBuf = append(inbBuf, binary.BigEndian.Uint16(rest))
			return nil
		})
		if err != nil {
			return err
		}
		ls.Subscriptions = clone(subsBuf)
		ls.Messages = clone(msgsBuf)
		ls.Inbound = clone(inbBuf)
		if err := fn(ls); err != nil {
			return err
		}
		// Do not let one huge session pin a huge scratch buffer.
		if cap(msgsBuf) > 4096 {
			msgsBuf = nil
		}
		clear(msgsBuf[:cap(msgsBuf)])
		clear(subsBuf[:cap(subsBuf)])
	}
	if err := sess.Error(); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	for _, it := range its[1:] {
		for ; it.Valid(); it.Next() {
			orphans++
		}
		if err := it.Error(); err != nil {
			return fmt.Errorf("store: %w", err)
		}
	}
	if orphans > 0 {
		s.log.Warn("records without a session skipped", "count", orphans)
	}
	return nil
}

// clone returns a copy of s with exactly its length, nil if empty.
func clone[T any](s []T) []T {
	if len(s) == 0 {
		return nil
	}
	return append(make([]T, 0, len(s)), s...)
}

// LoadRetained calls fn for every retained message, in topic order. fn
// may keep the message.
func (s *PebbleStore) LoadRetained(fn func(*MessageRecord) error) error {
	var cbErr error
	err := s.loadRetained(func(m *MessageRecord) error {
		cbErr = fn(m)
		return cbErr
	})
	if err != nil && err != cbErr && !errors.Is(err, ErrClosed) {
		return corruption(s.dir, s.watch, err, true)
	}
	return err
}

func (s *PebbleStore) loadRetained(fn func(*MessageRecord) error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{tagRetained}, UpperBound: []byte{tagRetained + 1}})
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	defer it.Close()
	for it.First(); it.Valid(); it.Next() {
		k := it.Key()
		v, err := it.ValueAndErr()
		if err != nil {
			return fmt.Errorf("store: key %s: %w", keyString(k), err)
		}
		m := new(MessageRecord)
		if err := decodeMessage(v, m); err != nil {
			return fmt.Errorf("store: key %s: %w", keyString(k), err)
		}
		if m.Topic != string(k[1:]) {
			return fmt.Errorf("store: key %s: retained message has topic %q", keyString(k), m.Topic)
		}
		if err := fn(m); err != nil {
			return err
		}
	}
	if err := it.Error(); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	return nil
}

// pebbleBatch is the Batch of a PebbleStore.
type pebbleBatch struct {
	s        *PebbleStore
	b        *pebble.Batch
	key, val []byte // scratch: pebble.Batch copies keys and values
	n        int
	err      error // first fault; Commit reports it and discards the batch
}

func (b *pebbleBatch) fault(err error) {
	if b.err == nil {
		b.err = err
	}
}

func (b *pebbleBatch) set(k, v []byte) {
	if err := b.b.Set(k, v, nil); err != nil {
		b.fault(fmt.Errorf("store: key %s: %w", keyString(k), err))
	}
}

func (b *pebbleBatch) del(k []byte) {
	if err := b.b.Delete(k, nil); err != nil {
		b.fault(fmt.Errorf("store: key %s: %w", keyString(k), err))
	}
}

// checkID records a fault if clientID cannot be a key component.
func (b *pebbleBatch) checkID(clientID string) bool {
	b.n++
	if !validKeyString(clientID) {
		b.fault(fmt.Errorf("store: client id %q: %w", clientID, errNUL))
		return false
	}
	return true
}

func (b *pebbleBatch) PutSession(s *SessionRecord) {
	if !b.checkID(s.ClientID) {
		return
	}
	b.key = appendSessionKey(b.key[:0], s.ClientID)
	b.val = appendSession(b.val[:0], s)
	b.set(b.key, b.val)
}

func (b *pebbleBatch) DeleteSession(clientID string) {
	if !b.checkID(clientID) {
		return
	}
	b.key = appendSessionKey(b.key[:0], clientID)
	b.del(b.key)
	for _, tag := range [3]byte{tagSub, tagMessage, tagInbound} {
		b.key = appendClientPrefix(b.key[:0], tag, clientID)
		b.val = appendClientEnd(b.val[:0], tag, clientID)
		if err := b.b.DeleteRange(b.key, b.val, nil); err != nil {
			b.fault(fmt.Errorf("store: key range %s: %w", keyString(b.key), err))
		}
	}
}

func (b *pebbleBatch) PutSubscription(clientID string, s *SubscriptionRecord) {
	if !b.checkID(clientID) {
		return
	}
	b.key = appendSubKey(b.key[:0], clientID, s.Filter)
	b.val = appendSubscription(b.val[:0], s)
	b.set(b.key, b.val)
}

func (b *pebbleBatch) DeleteSubscription(clientID, filter string) {
	if !b.checkID(clientID) {
		return
	}
	b.key = appendSubKey(b.key[:0], clientID, filter)
	b.del(b.key)
}

func (b *pebbleBatch) PutMessage(clientID string, seq uint64, m *MessageRecord) {
	if !b.checkID(clientID) {
		return
	}
	b.key = appendMessageKey(b.key[:0], clientID, seq)
	b.val = appendMessage(b.val[:0], m)
	b.set(b.key, b.val)
}

func (b *pebbleBatch) DeleteMessage(clientID string, seq uint64) {
	if !b.checkID(clientID) {
		return
	}
	b.key = appendMessageKey(b.key[:0], clientID, seq)
	b.del(b.key)
}

func (b *pebbleBatch) PutInbound(clientID string, packetID uint16) {
	if !b.checkID(clientID) {
		return
	}
	b.key = appendInboundKey(b.key[:0], clientID, packetID)
	b.set(b.key, inboundValue[:])
}

func (b *pebbleBatch) DeleteInbound(clientID string, packetID uint16) {
	if !b.checkID(clientID) {
		return
	}
	b.key = appendInboundKey(b.key[:0], clientID, packetID)
	b.del(b.key)
}

func (b *pebbleBatch) PutRetained(m *MessageRecord) {
	b.n++
	b.key = appendRetainedKey(b.key[:0], m.Topic)
	b.val = appendMessage(b.val[:0], m)
	b.set(b.key, b.val)
}

func (b *pebbleBatch) DeleteRetained(topic string) {
	b.n++
	b.key = appendRetainedKey(b.key[:0], topic)
	b.del(b.key)
}

func (b *pebbleBatch) Len() int { return b.n }

// Commit applies the batch atomically. With SyncAlways it returns after
// the write-ahead log is fsynced (concurrent commits share fsyncs); with
// SyncInterval once the write is in the OS. If a mutation was invalid (a
// client id containing U+0000) nothing is applied and the fault is
// returned. The batch is empty afterwards either way.
func (b *pebbleBatch) Commit() error { return b.commit(b.s.wopts) }

// CommitNoSync applies the batch without waiting for it to be durable: it
// becomes durable with the next synced commit or sync.
func (b *pebbleBatch) CommitNoSync() error { return b.commit(pebble.NoSync) }

func (b *pebbleBatch) commit(wopts *pebble.WriteOptions) error {
	defer b.reset()
	if b.err != nil {
		return b.err
	}
	if b.n == 0 {
		return nil
	}
	s := b.s
	if err := s.h.writable(); err != nil {
		return err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	// Pebble panics in a commit after a failed log write: that is fatal,
	// handled like Fatalf (logged once, OnFatal).
	defer func() {
		if r := recover(); r != nil {
			s.fatal.fatal(fmt.Errorf("pebble: commit: %v", r))
			panic(r)
		}
	}()
	var err error
	if wopts.Sync {
		err = b.commitSync()
	} else if err = b.b.Commit(wopts); err != nil {
		err = fmt.Errorf("store: commit: %w", err)
		b.b = s.db.NewBatch() // Pebble does not reuse a failed batch
	}
	if err != nil {
		return err
	}
	s.commits.Add(1)
	if s.stop != nil {
		s.dirty.Store(true)
	}
	return nil
}

// stuckGrace is how long a synced commit still waits for its fsync once
// writes are stuck, before giving up on it.
const stuckGrace = 100 * time.Millisecond

// commitSync commits with Sync and waits for the fsync, unless writes get
// stuck waiting for disk space meanwhile: then it returns the store's
// error, leaving the batch to Pebble (it may still become durable when
// space returns, like a commit whose acknowledgement is lost). A failed
// fsync degrades the store (instead of being Pebble's fatal commit error).
func (b *pebbleBatch) commitSync() error {
	s := b.s
	stuck := s.h.stuckChan()
	pb := b.b
	if err := s.db.ApplyNoSyncWait(pb, pebble.Sync); err != nil {
		b.b = s.db.NewBatch()
		return fmt.Errorf("store: commit: %w", err)
	}
	done := make(chan error, 1)
	go func() { done <- pb.SyncWait() }()
	var err error
	select {
	case err = <-done:
	case <-stuck:
		t := time.NewTimer(stuckGrace)
		select {
		case err = <-done:
			t.Stop()
		case <-t.C:
			b.b = s.db.NewBatch()
			go func() {
				if <-done == nil {
					_ = pb.Close()
				}
			}()
			werr := s.h.writable()
			if werr == nil {
				werr = ErrNoSpace
			}
			return fmt.Errorf("%w (this commit may still become durable when writes resume)", werr)
		}
	}
	if err != nil {
		b.b = s.db.NewBatch()
		s.h.setFault(fmt.Errorf("syncing the write-ahead log: %w", err))
		return s.h.writable()
	}
	return nil
}

func (b *pebbleBatch) reset() {
	b.b.Reset()
	b.n, b.err = 0, nil
	// Do not keep a huge scratch buffer alive because of one big message.
	if cap(b.val) > 1<<20 {
		b.val = nil
	}
}

// pebbleLogger routes Pebble's log to slog. Pebble's informational lines
// (flushes, compactions) go to Debug. Lines repeating the same format are
// rate-limited (a failing background job retries in a tight loop).
type pebbleLogger struct {
	l  *slog.Logger
	rl *rateLimiter
	f  *fataler
}

func (p *pebbleLogger) Infof(format string, args ...any) {
	if !p.l.Enabled(context.Background(), slog.LevelDebug) {
		return
	}
	if ok, n := p.rl.allow(format); ok {
		p.l.Debug("pebble: "+strings.TrimSpace(fmt.Sprintf(format, args...)), suppressed(n)...)
	}
}

func (p *pebbleLogger) Errorf(format string, args ...any) {
	if ok, n := p.rl.allow(format); ok {
		p.l.Error("pebble: "+strings.TrimSpace(fmt.Sprintf(format, args...)), suppressed(n)...)
	}
}

// Fatalf is called by Pebble when it cannot continue (an unrecoverable
// disk or corruption fault): log once and end the process (OnFatal). It
// must not return to Pebble: if OnFatal returns, it panics.
func (p *pebbleLogger) Fatalf(format string, args ...any) {
	msg := "pebble: " + strings.TrimSpace(fmt.Sprintf(format, args...))
	p.f.fatal(errors.New(msg))
	panic(msg)
}

func suppressed(n int) []any {
	if n == 0 {
		return nil
	}
	return []any{"suppressed_repeats", n}
}

// defaultLogEvery is how often a repeating Pebble log line is written.
const defaultLogEvery = 10 * time.Second

// rateLimiter lets one line per key through every period and counts the
// ones it drops.
type rateLimiter struct {
	every time.Duration
	mu    sync.Mutex
	m     map[string]*rlEntry
}

type rlEntry struct {
	next       time.Time
	suppressed int
}

func newRateLimiter(every time.Duration) *rateLimiter {
	return &rateLimiter{every: every, m: make(map[string]*rlEntry)}
}

// allow reports whether to log a line with this key, and how many were
// dropped since the last one logged.
func (r *rateLimiter) allow(key string) (bool, int) {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.m[key]
	if e == nil {
		// Keys are Pebble's format strings, a bounded set; bound anyway.
		if len(r.m) >= 1024 {
			clear(r.m)
		}
		r.m[key] = &rlEntry{next: now.Add(r.every)}
		return true, 0
	}
	if now.Before(e.next) {
		e.suppressed++
		return false, 0
	}
	n := e.suppressed
	e.next, e.suppressed = now.Add(r.every), 0
	return true, n
}

// fataler handles a fault Pebble cannot continue from: it degrades the
// store, logs one line saying what to do, and calls OnFatal.
type fataler struct {
	once    sync.Once
	log     *slog.Logger
	dir     string
	h       *health
	onFatal func(error)
}

func (f *fataler) fatal(err error) {
	f.once.Do(func() {
		f.h.silence()
		f.h.setFault(err)
		f.log.Error("store: unrecoverable storage fault, exiting", "err", err, "what_to_do", fatalAdvice(err, f.dir))
	})
	f.onFatal(err)
}

func fatalAdvice(err error, dir string) string {
	msg := err.Error()
	switch {
	case isNoSpace(err) || strings.Contains(msg, "no space left on device") || strings.Contains(msg, "disk quota exceeded"):
		return "the disk is full: free space on the file system of " + dir + " and start again (everything fsynced is intact)"
	case strings.Contains(msg, "corrupt") || strings.Contains(msg, "checksum") || strings.Contains(msg, "mismatch"):
		return "the data is corrupt: run `isobar store check --data-dir " + dir + "`; `isobar store reset --data-dir " + dir + "` moves it aside to start empty"
	}
	return "check the system log for disk errors, then start again"
}
