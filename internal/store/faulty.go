package store

import (
	"sync"
	"sync/atomic"
)

// Faulty is a Store that injects failures into another one, for tests of
// the code that uses a store (the broker's reaction to a full disk, for
// example). Commits fail as programmed with FailNext, FailAll and
// Degrade; a commit that fails is not applied (unless programmed with
// FailNextApplied, for the "may have been applied" outcome). Everything
// else goes to the inner store. Its methods are safe for concurrent use.
type Faulty struct {
	inner Store

	mu          sync.Mutex
	failNext    int
	nextErr     error
	nextApplied bool // failNext commits are applied before failing
	allErr      error
	writableErr error

	commits atomic.Int64 // non-empty commits attempted
	failed  atomic.Int64 // of those, failed by injection
}

var _ Store = (*Faulty)(nil)

// NewFaulty wraps inner, injecting nothing until told to.
func NewFaulty(inner Store) *Faulty { return &Faulty{inner: inner} }

// FailNext makes the next n commits (Commit or CommitNoSync of a
// non-empty batch) fail with err without applying anything. It replaces
// an earlier FailNext still pending.
func (f *Faulty) FailNext(n int, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failNext, f.nextErr, f.nextApplied = n, err, false
}

// FailNextApplied is FailNext for commits that are applied and then
// report err, as a commit whose outcome is unknown (a timeout, a sync
// abandoned on a full disk).
func (f *Faulty) FailNextApplied(n int, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failNext, f.nextErr, f.nextApplied = n, err, true
}

// FailAll makes every commit from now on fail with err, without applying
// anything (after any FailNext commits are used up); nil stops it.
func (f *Faulty) FailAll(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.allErr = err
}

// SetWritable makes Writable report err (nil: the inner store's).
func (f *Faulty) SetWritable(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.writableErr = err
}

// Degrade makes the store behave as a real one that is not writable:
// Writable reports err and every commit fails with it (for example an
// error wrapping ErrNoSpace).
func (f *Faulty) Degrade(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.allErr, f.writableErr = err, err
}

// Heal removes every injected fault.
func (f *Faulty) Heal() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failNext, f.nextErr, f.allErr, f.writableErr = 0, nil, nil, nil
}

// Commits is the number of non-empty commits attempted, Failed the number
// of those that failed by injection.
func (f *Faulty) Commits() int { return int(f.commits.Load()) }

// Failed is the number of commits that failed by injection.
func (f *Faulty) Failed() int { return int(f.failed.Load()) }

// fault decides the outcome of a commit: the error to return, and
// whether to apply it anyway.
func (f *Faulty) fault() (error, bool) {
	f.commits.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failNext > 0 {
		f.failNext--
		f.failed.Add(1)
		return f.nextErr, f.nextApplied
	}
	if f.allErr != nil {
		f.failed.Add(1)
		return f.allErr, false
	}
	return nil, true
}

// NewBatch returns a batch of the inner store whose commits are subject
// to the injected faults.
func (f *Faulty) NewBatch() Batch { return &faultyBatch{Batch: f.inner.NewBatch(), f: f} }

// LoadSessions is the inner store's.
func (f *Faulty) LoadSessions(fn func(*LoadedSession) error) error { return f.inner.LoadSessions(fn) }

// LoadRetained is the inner store's.
func (f *Faulty) LoadRetained(fn func(*MessageRecord) error) error { return f.inner.LoadRetained(fn) }

// Stats are the inner store's, Degraded when Writable reports an error.
func (f *Faulty) Stats() Stats {
	st := f.inner.Stats()
	st.Degraded = f.Writable() != nil
	return st
}

// Writable reports the error set by SetWritable or Degrade, else the
// inner store's.
func (f *Faulty) Writable() error {
	f.mu.Lock()
	err := f.writableErr
	f.mu.Unlock()
	if err != nil {
		return err
	}
	return f.inner.Writable()
}

// Close closes the inner store.
func (f *Faulty) Close() error { return f.inner.Close() }

type faultyBatch struct {
	Batch
	f *Faulty
}

func (b *faultyBatch) Commit() error { return b.commit(b.Batch.Commit) }

func (b *faultyBatch) CommitNoSync() error { return b.commit(b.Batch.CommitNoSync) }

func (b *faultyBatch) commit(inner func() error) error {
	if b.Len() == 0 {
		return inner()
	}
	err, apply := b.f.fault()
	if err == nil {
		return inner()
	}
	if apply {
		if ierr := inner(); ierr != nil {
			return ierr
		}
		return err
	}
	// Not applied: drop the mutations with the batch, leaving an empty
	// one, as a failed Commit does.
	b.Batch = b.f.inner.NewBatch()
	return err
}
