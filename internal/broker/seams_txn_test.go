package broker

// Unit tests of Txn (txn.go): ordering of deferred actions, rounds of
// actions that record more changes, lazy commits, failed commits and holds.

import (
	"errors"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/isobar-mq/isobar/internal/store"
)

// Without a store and without holds, actions run at once.
func TestSeamTxnNoStoreRunsAtOnce(t *testing.T) {
	s := seamNewServer(t, Options{}, nil)
	tx := s.newTxn()
	var got []string
	tx.then(func() { got = append(got, "then") })
	tx.thenOr(func() { got = append(got, "ok") }, func() { got = append(got, "fail") })
	tx.always(func() { got = append(got, "always") })
	tx.Then(func(err error) { got = append(got, "Then:"+errText(err)) })
	if want := []string{"then", "ok", "always", "Then:nil"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("ran %v, want %v", got, want)
	}
	if tx.pending() || tx.Durable() {
		t.Fatal("a store-less Txn reports pending or durable")
	}
	if err := tx.commit(s); err != nil {
		t.Fatal(err)
	}
}

func errText(err error) string {
	if err == nil {
		return "nil"
	}
	return "err"
}

// With a store, actions wait for the commit and run after it, in the
// order they were deferred; one synced commit covers them.
func TestSeamTxnOrdering(t *testing.T) {
	st := &seamStore{}
	s := seamNewServer(t, Options{Store: st}, nil)
	tx := s.newTxn()
	var got []string
	committed := func() bool { c, _, _ := st.counts(); return c > 0 }
	tx.batch.PutRetained(&store.MessageRecord{Topic: "a"})
	tx.then(func() { got = append(got, "then:"+boolText(committed())) })
	tx.thenOr(func() { got = append(got, "ok") }, func() { got = append(got, "fail") })
	tx.always(func() { got = append(got, "always") })
	tx.Then(func(err error) { got = append(got, "Then:"+errText(err)) })
	if len(got) != 0 {
		t.Fatalf("actions ran before the commit: %v", got)
	}
	if !tx.pending() {
		t.Fatal("not pending")
	}
	if err := tx.commit(s); err != nil {
		t.Fatal(err)
	}
	if want := []string{"then:true", "ok", "always", "Then:nil"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("ran %v, want %v", got, want)
	}
	if c, n, f := st.counts(); c != 1 || n != 0 || f != 0 {
		t.Fatalf("commits %d nosync %d failed %d, want 1 0 0", c, n, f)
	}
	if tx.pending() {
		t.Fatal("still pending after commit")
	}
	// Only actions, no changes: no store commit, the actions run.
	ran := false
	tx.then(func() { ran = true })
	if err := tx.commit(s); err != nil || !ran {
		t.Fatalf("action-only commit: err %v ran %v", err, ran)
	}
	if c, _, _ := st.counts(); c != 1 {
		t.Fatalf("an empty batch was committed (%d commits)", c)
	}
}

func boolText(b bool) string {
	if b {
		return "true"
	}
	return "false"
}

// Actions may record more changes and defer more actions: those are
// committed by a further round of the same commit call, and run after it.
func TestSeamTxnRounds(t *testing.T) {
	st := &seamStore{}
	s := seamNewServer(t, Options{Store: st}, nil)
	tx := s.newTxn()
	var got []string
	tx.batch.PutSession(&store.SessionRecord{ClientID: "a"})
	tx.then(func() {
		got = append(got, "round1")
		tx.batch.PutSession(&store.SessionRecord{ClientID: "b"})
		tx.then(func() {
			c, _, _ := st.counts()
			got = append(got, "round2 after commit "+string(rune('0'+c)))
			tx.then(func() { got = append(got, "round3") }) // no change: runs after an empty round
		})
	})
	tx.then(func() { got = append(got, "round1b") })
	if err := tx.commit(s); err != nil {
		t.Fatal(err)
	}
	want := []string{"round1", "round1b", "round2 after commit 2", "round3"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("ran %v, want %v", got, want)
	}
	if c, _, _ := st.counts(); c != 2 {
		t.Fatalf("%d commits, want 2", c)
	}
	if ops := st.ops(); !reflect.DeepEqual(ops, []string{"PutSession a", "PutSession b"}) {
		t.Fatalf("ops %v", ops)
	}
}

// A batch made only of lazy changes (acknowledged message removals), with
// nothing waiting for it, is committed without a sync; anything else, or
// anything waiting, gets a synced commit.
func TestSeamTxnLazyCommitNoSync(t *testing.T) {
	st := &seamStore{}
	s := seamNewServer(t, Options{Store: st}, nil)
	tx := s.newTxn()

	tx.deleteAcked("c", 1)
	tx.deleteAcked("c", 2)
	if err := tx.commit(s); err != nil {
		t.Fatal(err)
	}
	if c, n, _ := st.counts(); c != 0 || n != 1 {
		t.Fatalf("lazy only: commits %d nosync %d, want 0 1", c, n)
	}

	tx.deleteAcked("c", 3)
	tx.batch.PutInbound("c", 9)
	if err := tx.commit(s); err != nil {
		t.Fatal(err)
	}
	if c, n, _ := st.counts(); c != 1 || n != 1 {
		t.Fatalf("lazy + durable change: commits %d nosync %d, want 1 1", c, n)
	}

	tx.deleteAcked("c", 4)
	tx.then(func() {})
	if err := tx.commit(s); err != nil {
		t.Fatal(err)
	}
	if c, n, _ := st.counts(); c != 2 || n != 1 {
		t.Fatalf("lazy + waiting action: commits %d nosync %d, want 2 1", c, n)
	}

	// The lazy count does not leak into the next batch.
	tx.batch.PutInbound("c", 10)
	if err := tx.commit(s); err != nil {
		t.Fatal(err)
	}
	if c, n, _ := st.counts(); c != 3 || n != 1 {
		t.Fatalf("durable only: commits %d nosync %d, want 3 1", c, n)
	}
}

// A failed commit runs the fail side of the actions (not the success
// side), returns the error, counts it, and the next commit starts from an
// empty batch.
func TestSeamTxnCommitFailure(t *testing.T) {
	st := &seamStore{}
	s := seamNewServer(t, Options{Store: st}, nil)
	st.setFail(errSeamDisk)
	tx := s.newTxn()
	var got []string
	tx.batch.PutSession(&store.SessionRecord{ClientID: "a"})
	tx.then(func() { got = append(got, "then") })
	tx.thenOr(func() { got = append(got, "ok") }, func() { got = append(got, "fail") })
	tx.always(func() { got = append(got, "always") })
	tx.Then(func(err error) { got = append(got, "Then:"+errText(err)) })
	err := tx.commit(s)
	if !errors.Is(err, errSeamDisk) {
		t.Fatalf("commit error %v, want %v", err, errSeamDisk)
	}
	if want := []string{"fail", "always", "Then:err"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("ran %v, want %v", got, want)
	}
	if n := s.stats.storeErrors.Load(); n != 1 {
		t.Fatalf("storeErrors %d, want 1", n)
	}

	st.setFail(nil)
	got = nil
	tx.batch.PutSession(&store.SessionRecord{ClientID: "b"})
	tx.then(func() { got = append(got, "then") })
	if err := tx.commit(s); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, []string{"then"}) {
		t.Fatalf("ran %v", got)
	}
	if ops := st.ops(); !reflect.DeepEqual(ops, []string{"PutSession b"}) {
		t.Fatalf("ops %v: the failed batch was applied later", ops)
	}
}

// A hold makes the commit (and the actions) wait until it is released
// from another goroutine, with or without a store.
func TestSeamTxnHoldReleasedOK(t *testing.T) {
	for _, withStore := range []bool{false, true} {
		o := Options{}
		if withStore {
			o.Store = &seamStore{}
		}
		s := seamNewServer(t, o, nil)
		tx := s.newTxn()
		release := tx.Hold()
		var mu sync.Mutex
		var releasedAt time.Time
		ranAt := time.Time{}
		tx.then(func() { ranAt = time.Now() })
		if !ranAt.IsZero() {
			t.Fatal("action ran before the hold was released")
		}
		const delay = 50 * time.Millisecond
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(delay)
			mu.Lock()
			releasedAt = time.Now()
			mu.Unlock()
			release(nil)
			release(errSeamDisk) // a second release changes nothing, never blocks
		}()
		start := time.Now()
		if err := tx.commit(s); err != nil {
			t.Fatalf("store %v: commit: %v", withStore, err)
		}
		wg.Wait()
		mu.Lock()
		rel := releasedAt
		mu.Unlock()
		if ranAt.IsZero() || ranAt.Before(rel) || time.Since(start) < delay {
			t.Fatalf("store %v: action at %v, released at %v", withStore, ranAt, rel)
		}
		if tx.pending() {
			t.Fatal("still pending")
		}
	}
}

// A hold released with an error fails the commit: the fail sides run, the
// first error is returned (also with several holds), and it is counted.
func TestSeamTxnHoldReleasedWithError(t *testing.T) {
	st := &seamStore{}
	s := seamNewServer(t, Options{Store: st}, nil)
	tx := s.newTxn()
	errFirst := errors.New("peer refused")
	r1 := tx.Hold()
	r2 := tx.Hold()
	r3 := tx.Hold()
	tx.batch.PutSession(&store.SessionRecord{ClientID: "a"})
	var got []string
	tx.thenOr(func() { got = append(got, "ok") }, func() { got = append(got, "fail") })
	tx.Then(func(err error) { got = append(got, "Then:"+errText(err)) })
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		r3(errors.New("later error"))
		time.Sleep(10 * time.Millisecond)
		r1(errFirst)
		r2(nil)
	}()
	var thenErr error
	tx.Then(func(err error) { thenErr = err })
	err := tx.commit(s)
	wg.Wait()
	if !errors.Is(err, errFirst) {
		t.Fatalf("commit error %v, want the first hold's error", err)
	}
	if want := []string{"fail", "Then:err"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("ran %v, want %v", got, want)
	}
	if !errors.Is(thenErr, errFirst) {
		t.Fatalf("Then got %v, want the hold's error", thenErr)
	}
	if n := s.stats.holdFailures.Load(); n != 1 {
		t.Fatalf("holdFailures %d, want 1", n)
	}
	// The store batch itself was committed: only the hold failed.
	if c, _, _ := st.counts(); c != 1 {
		t.Fatalf("%d commits", c)
	}
}

// A hold never released fails the commit with ErrHoldTimeout after
// HoldTimeout; a release arriving afterwards neither blocks nor affects
// the next commit.
func TestSeamTxnHoldTimeout(t *testing.T) {
	const timeout = 60 * time.Millisecond
	s := seamNewServer(t, Options{HoldTimeout: timeout}, nil)
	tx := s.newTxn()
	late := tx.Hold()
	_ = tx.Hold()
	var got []string
	tx.thenOr(func() { got = append(got, "ok") }, func() { got = append(got, "fail") })
	start := time.Now()
	err := tx.commit(s)
	took := time.Since(start)
	if !errors.Is(err, ErrHoldTimeout) {
		t.Fatalf("commit error %v, want ErrHoldTimeout", err)
	}
	if took < timeout || took > timeout+seamWait {
		t.Fatalf("commit took %v with a hold timeout of %v", took, timeout)
	}
	if !reflect.DeepEqual(got, []string{"fail"}) {
		t.Fatalf("ran %v", got)
	}
	late(nil)
	got = nil
	tx.then(func() { got = append(got, "next") })
	if !reflect.DeepEqual(got, []string{"next"}) {
		t.Fatalf("after the timeout the Txn still waits for old holds: %v", got)
	}
	if err := tx.commit(s); err != nil {
		t.Fatal(err)
	}
}
