package store

import (
	"errors"
	"fmt"
	"sync"
	"testing"
)

func TestFaulty(t *testing.T) {
	inner := openT(t, Options{})
	f := NewFaulty(inner)
	var st Store = f
	put := func(id string) Batch {
		b := st.NewBatch()
		b.PutSession(&SessionRecord{ClientID: id})
		return b
	}
	ids := func() []string {
		var out []string
		for _, ls := range loadAll(t, f) {
			out = append(out, ls.Session.ClientID)
		}
		return out
	}

	if err := put("a").Commit(); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	f.FailNext(2, boom)
	b := put("b")
	if err := b.Commit(); err != boom {
		t.Fatalf("first injected: %v", err)
	}
	if b.Len() != 0 {
		t.Fatalf("batch holds %d mutations after a failed commit", b.Len())
	}
	// The batch is reusable, and the failed mutation was not applied.
	b.PutSession(&SessionRecord{ClientID: "c"})
	if err := b.CommitNoSync(); err != boom {
		t.Fatalf("second injected: %v", err)
	}
	b.PutSession(&SessionRecord{ClientID: "d"})
	if err := b.Commit(); err != nil {
		t.Fatalf("after the injected ones: %v", err)
	}
	if got := fmt.Sprint(ids()); got != "[a d]" {
		t.Fatalf("sessions %s", got)
	}
	// Empty commits are neither counted nor failed.
	f.FailNext(1, boom)
	if err := st.NewBatch().Commit(); err != nil {
		t.Fatal(err)
	}
	if err := put("e").Commit(); err != boom {
		t.Fatal(err)
	}

	// Applied, then failed.
	f.FailNextApplied(1, boom)
	if err := put("f").Commit(); err != boom {
		t.Fatal(err)
	}
	if got := fmt.Sprint(ids()); got != "[a d f]" {
		t.Fatalf("sessions %s", got)
	}

	// Degrade: Writable and every commit, until Heal.
	full := fmt.Errorf("%w: test", ErrNoSpace)
	f.Degrade(full)
	if err := f.Writable(); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("Writable: %v", err)
	}
	if !f.Stats().Degraded {
		t.Fatal("Stats not degraded")
	}
	for i := range 3 {
		if err := put(fmt.Sprint("g", i)).Commit(); !errors.Is(err, ErrNoSpace) {
			t.Fatalf("degraded commit: %v", err)
		}
	}
	f.Heal()
	if err := f.Writable(); err != nil {
		t.Fatal(err)
	}
	if err := put("h").Commit(); err != nil {
		t.Fatal(err)
	}
	// FailAll, and SetWritable on its own.
	f.FailAll(boom)
	if err := put("i").Commit(); err != boom || f.Writable() != nil {
		t.Fatalf("FailAll: %v %v", err, f.Writable())
	}
	f.FailAll(nil)
	f.SetWritable(boom)
	if err := put("j").Commit(); err != nil || f.Writable() != boom {
		t.Fatalf("SetWritable: %v %v", err, f.Writable())
	}
	f.SetWritable(nil)
	if got := fmt.Sprint(ids()); got != "[a d f h j]" {
		t.Fatalf("sessions %s", got)
	}
	// a b c d e f g0 g1 g2 h i j: 12 non-empty commits, 8 failed.
	if f.Commits() != 12 || f.Failed() != 8 {
		t.Fatalf("commits %d failed %d", f.Commits(), f.Failed())
	}
}

func TestFaultyConcurrent(t *testing.T) {
	f := NewFaulty(openT(t, Options{Sync: SyncInterval}))
	f.FailNext(50, errors.New("x"))
	var wg sync.WaitGroup
	var mu sync.Mutex
	failed := 0
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b := f.NewBatch()
			for i := range 50 {
				b.PutSession(&SessionRecord{ClientID: fmt.Sprint(w, "-", i)})
				if b.Commit() != nil {
					mu.Lock()
					failed++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if failed != 50 || f.Failed() != 50 || f.Commits() != 200 {
		t.Fatalf("failed %d, Failed %d, Commits %d", failed, f.Failed(), f.Commits())
	}
	if n := len(loadAll(t, f)); n != 150 {
		t.Fatalf("%d sessions", n)
	}
}
