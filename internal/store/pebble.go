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

	fs vfs.FS // for tests; default vfs.Default
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

	commits atomic.Uint64
	dirty   atomic.Bool // SyncInterval: a commit since the last sync

	stop chan struct{}
	done chan struct{}
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
	log := o.Logger.With("dir", o.Dir)

	if err := os.MkdirAll(o.Dir, 0o750); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	// Look before locking, so a foreign directory does not even get our
	// LOCK file.
	desc, err := inspectDir(o.Dir)
	if err != nil {
		return nil, err
	}
	lock, err := pebble.LockDirectory(o.Dir, vfs.Default)
	if err != nil {
		return nil, lockError(o.Dir, err)
	}
	s, err := open(o, log, desc, lock)
	if err != nil {
		_ = lock.Close()
		return nil, err
	}
	return s, nil
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
		// A lone LOCK file is what an interrupted first Open leaves.
		if e.Name() != "LOCK" {
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

func open(o Options, log *slog.Logger, desc *pebble.DBDesc, lock *pebble.Lock) (*PebbleStore, error) {
	format := pebbleFormat
	if desc.Exists {
		// Do not upgrade a database before knowing it is ours.
		format = desc.FormatMajorVersion
	}
	opts := &pebble.Options{
		FS:                 o.fs,
		Lock:               lock,
		Logger:             pebbleLogger{log},
		FormatMajorVersion: format,
		MemTableSize:       memTableSize,
		ErrorIfNotExists:   desc.Exists,
	}
	db, err := pebble.Open(o.Dir, opts)
	if err != nil {
		return nil, fmt.Errorf("store: opening %s: %w", o.Dir, err)
	}
	s := &PebbleStore{db: db, lock: lock, dir: o.Dir, log: log, wopts: pebble.Sync}
	if err := s.checkMeta(); err != nil {
		_ = db.Close()
		return nil, err
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
	log.Info("store opened", "sync", o.Sync)
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
			if !s.dirty.Swap(false) {
				continue
			}
			// An empty LogData record with Sync waits for an fsync of
			// the WAL covering every earlier commit.
			if err := s.db.LogData(nil, pebble.Sync); err != nil {
				s.dirty.Store(true)
				s.log.Error("syncing the write-ahead log failed", "err", err)
			}
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
	st := Stats{Commits: s.commits.Load()}
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
	if err := s.db.Compact(ctx, []byte{0x00}, []byte{0xFF}, true); err != nil {
		return fmt.Errorf("store: compact: %w", err)
	}
	return nil
}

// Close stops the background sync, closes the database (which fsyncs the
// write-ahead log) and releases the directory. Commits after Close fail
// with ErrClosed.
func (s *PebbleStore) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	s.closed = true
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
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	if err := b.b.Commit(wopts); err != nil {
		return fmt.Errorf("store: commit: %w", err)
	}
	s.commits.Add(1)
	if s.stop != nil {
		s.dirty.Store(true)
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
// (flushes, compactions) go to Debug.
type pebbleLogger struct{ l *slog.Logger }

func (p pebbleLogger) Infof(format string, args ...any) {
	p.l.Debug("pebble: " + strings.TrimSpace(fmt.Sprintf(format, args...)))
}

func (p pebbleLogger) Errorf(format string, args ...any) {
	p.l.Error("pebble: " + strings.TrimSpace(fmt.Sprintf(format, args...)))
}

// Fatalf is called by Pebble when it cannot continue (an unrecoverable
// disk or corruption fault): log and panic.
func (p pebbleLogger) Fatalf(format string, args ...any) {
	msg := "pebble: " + strings.TrimSpace(fmt.Sprintf(format, args...))
	p.l.Error(msg)
	panic(msg)
}
