package broker

import (
	"errors"
	"time"

	"github.com/isobar-mq/isobar/internal/store"
)

// Txn collects the durable changes made while handling packets, and the
// actions whose execution depends on them. With a store, the changes are
// committed as one batch (group commit across clients happens in the
// store) and the deferred actions run afterwards, in order: a PUBACK,
// PUBREC, PUBCOMP, PUBREL, SUBACK or CONNACK is never sent before what it
// acknowledges is durable. Without a store, actions run at once.
//
// Subscribers that take responsibility for a message asynchronously (a
// remote node, a bridge) call Hold: the commit then also waits until they
// release it, so the publisher's acknowledgement follows their
// acceptance.
//
// A client's read loop owns one Txn and commits it whenever it has no
// complete packet left in its read buffer, so one fsync covers every
// packet that arrived together. Other callers (timers, the API, internal
// publishers) use their own. A Txn is used by one goroutine at a time;
// Hold's release function may be called from any goroutine.
type Txn struct {
	batch   store.Batch // nil without a store
	actions []action
	// lazyN counts the recorded changes whose loss in a crash is harmless
	// (see deleteAcked). A batch made only of those, with no action
	// waiting for it, is committed without waiting for an fsync.
	lazyN int
	holds []chan error
	// holdTimeout bounds the wait for holds.
	holdTimeout time.Duration
	// err is the failure of the commit round whose actions are running.
	err error
	// round counts completed commits (see Round).
	round uint64
}

// Round identifies the transaction's current commit round: it changes
// every time a commit completes, so a subscriber can hold a round once for
// many deliveries (one Hold per round, not per message).
func (t *Txn) Round() uint64 { return t.round }

// action runs after a commit: ok when it succeeded, fail (if set) when it
// did not.
type action struct {
	ok   func()
	fail func()
}

// ErrHoldTimeout is the commit error when a subscriber that held the
// transaction did not release it in time.
var ErrHoldTimeout = errors.New("subscriber did not take the message in time")

// deleteAcked records the removal of a message the client acknowledged.
// Nothing waits for it: if a crash forgets it, the message is resent after
// the restart (a duplicate QoS 1 delivery, which QoS 1 allows; for QoS 2 a
// PUBREL, which the client completes with PUBCOMP), and on a packet
// identifier clash the newer record wins at restore.
func (t *Txn) deleteAcked(clientID string, seq uint64) {
	t.batch.DeleteMessage(clientID, seq)
	t.lazyN++
}

func (s *Server) newTxn() *Txn {
	t := &Txn{holdTimeout: s.opts.HoldTimeout}
	if s.store != nil {
		t.batch = s.store.NewBatch()
	}
	return t
}

// Durable reports whether changes are recorded in a store batch.
func (t *Txn) Durable() bool { return t != nil && t.batch != nil }

// Batch is the store batch changes are recorded in (nil without a store).
func (t *Txn) Batch() store.Batch { return t.batch }

// then runs fn after the next successful commit (at once without a store
// or holds). If the commit fails, fn is not run.
func (t *Txn) then(fn func()) { t.thenOr(fn, nil) }

// Then is then for subscribers and internal publishers: fn runs after the
// changes are committed, with the commit's outcome (the store's error, a
// hold's release error, or ErrHoldTimeout).
func (t *Txn) Then(fn func(err error)) {
	t.thenOr(func() { fn(nil) }, func() {
		err := t.err
		if err == nil {
			err = errCommitFailed
		}
		fn(err)
	})
}

var errCommitFailed = errors.New("store commit failed")

// thenOr runs ok after a successful commit and fail after a failed one.
func (t *Txn) thenOr(ok, fail func()) {
	if !t.Durable() && len(t.holds) == 0 {
		ok()
		return
	}
	t.actions = append(t.actions, action{ok: ok, fail: fail})
}

// always runs fn after the next commit whatever its outcome: for state
// that must be released either way (a message waiting for its record).
func (t *Txn) always(fn func()) { t.thenOr(fn, fn) }

// Hold makes the next commit wait until release is called (or the hold
// timeout passes, which fails the commit). release(err) with a non-nil err
// fails the commit: the acknowledgements waiting for it are not sent as
// successes.
func (t *Txn) Hold() (release func(err error)) {
	ch := make(chan error, 1)
	t.holds = append(t.holds, ch)
	return func(err error) {
		select {
		case ch <- err:
		default:
		}
	}
}

// pending reports whether anything waits for a commit.
func (t *Txn) pending() bool {
	return len(t.holds) > 0 || len(t.actions) > 0 || (t.Durable() && t.batch.Len() > 0)
}

// waitHolds waits for every hold to be released; the first error wins.
func (t *Txn) waitHolds() error {
	if len(t.holds) == 0 {
		return nil
	}
	var first error
	timeout := t.holdTimeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for i, ch := range t.holds {
		select {
		case err := <-ch:
			if err != nil && first == nil {
				first = err
			}
		case <-timer.C:
			if first == nil {
				first = ErrHoldTimeout
			}
			// The others are not waited for any more.
			clear(t.holds[i:])
			t.holds = t.holds[:0]
			return first
		}
	}
	clear(t.holds)
	t.holds = t.holds[:0]
	return first
}

// commit makes the recorded changes durable, waits for holds and runs the
// deferred actions. On failure the actions' fail sides run (messages held
// back for their record are released for delivery; acknowledgements are
// not sent) and the error is returned: the caller decides what its client
// is told.
func (t *Txn) commit(s *Server) error {
	var firstErr error
	for t.pending() {
		var err error
		if t.Durable() && t.batch.Len() > 0 {
			commit := t.batch.Commit
			if t.batch.Len() == t.lazyN && len(t.actions) == 0 {
				commit = t.batch.CommitNoSync
			}
			t.lazyN = 0
			if err = commit(); err != nil {
				s.storeFailed(err)
			}
		}
		if herr := t.waitHolds(); herr != nil && err == nil {
			err = herr
			s.stats.holdFailures.Add(1)
		}
		if err != nil && firstErr == nil {
			firstErr = err
		}
		// Actions may record more changes or defer more actions: they are
		// handled by the next round.
		actions := t.actions
		t.actions = nil
		t.err = err
		for _, a := range actions {
			if err == nil {
				a.ok()
			} else if a.fail != nil {
				a.fail()
			}
		}
		t.err = nil
		if t.actions == nil {
			clear(actions)
			t.actions = actions[:0]
		}
	}
	t.round++
	return firstErr
}
