package broker

import (
	"github.com/isobar-mq/isobar/internal/store"
)

// txn collects the durable changes made while handling packets, and the
// packets whose sending depends on them. With a store, the changes are
// committed as one batch (group commit across clients happens in the
// store) and the deferred actions run afterwards, in order: a PUBACK,
// PUBREC, PUBCOMP, PUBREL, SUBACK or CONNACK is never sent before what it
// acknowledges is durable. Without a store, actions run at once.
//
// A client's read loop owns one txn and commits it whenever it has no
// complete packet left in its read buffer, so one fsync covers every
// packet that arrived together. Other callers (timers, the API) use a
// short-lived txn.
type txn struct {
	batch store.Batch // nil without a store
	after []func()
	// lazyN counts the recorded changes whose loss in a crash is harmless
	// (see deleteAcked). A batch made only of those, with no action
	// waiting for it, is committed without waiting for an fsync.
	lazyN int
}

// deleteAcked records the removal of a message the client acknowledged.
// Nothing waits for it: if a crash forgets it, the message is resent after
// the restart (a duplicate QoS 1 delivery, which QoS 1 allows; for QoS 2 a
// PUBREL, which the client completes with PUBCOMP), and on a packet
// identifier clash the newer record wins at restore.
func (t *txn) deleteAcked(clientID string, seq uint64) {
	t.batch.DeleteMessage(clientID, seq)
	t.lazyN++
}

func (s *Server) newTxn() *txn {
	t := &txn{}
	if s.store != nil {
		t.batch = s.store.NewBatch()
	}
	return t
}

// durable reports whether changes must be recorded.
func (t *txn) durable() bool { return t != nil && t.batch != nil }

// then runs fn after the next commit (at once without a store).
func (t *txn) then(fn func()) {
	if !t.durable() {
		fn()
		return
	}
	t.after = append(t.after, fn)
}

// pending reports whether anything waits for a commit.
func (t *txn) pending() bool {
	return t.durable() && (t.batch.Len() > 0 || len(t.after) > 0)
}

// commit makes the recorded changes durable and runs the deferred actions.
// A commit error is fatal to the caller's connection: nothing that depends
// on it is sent.
func (t *txn) commit(s *Server) error {
	for t.pending() {
		if t.batch.Len() > 0 {
			commit := t.batch.Commit
			if t.batch.Len() == t.lazyN && len(t.after) == 0 {
				commit = t.batch.CommitNoSync
			}
			t.lazyN = 0
			if err := commit(); err != nil {
				s.stats.storeErrors.Add(1)
				s.log.Error("store commit failed", "err", err)
				clear(t.after)
				t.after = t.after[:0]
				return err
			}
		}
		// Actions may record more changes or defer more actions: they are
		// handled by the next round.
		after := t.after
		t.after = nil
		for _, fn := range after {
			fn()
		}
		if t.after == nil {
			clear(after)
			t.after = after[:0]
		}
	}
	return nil
}
