package bench

import "testing"

type trackerCounts struct{ unique, dups, ooo, late, unexpected, lost int64 }

func countsOf(t *Tracker, sent []int64) trackerCounts {
	return trackerCounts{t.Unique, t.Duplicates, t.OutOfOrder, t.Late, t.Unexpected, t.Lost(sent)}
}

func TestTrackerInOrder(t *testing.T) {
	tr := NewTracker(0, 2)
	for s := uint64(0); s < 100_000; s++ {
		tr.Observe(0, s)
		if s%2 == 0 {
			tr.Observe(1, s/2)
		}
	}
	got := countsOf(tr, []int64{100_000, 50_000})
	if got != (trackerCounts{unique: 150_000}) {
		t.Fatalf("got %+v", got)
	}
}

func TestTrackerLossDuplicatesReorder(t *testing.T) {
	tr := NewTracker(0, 1)
	seqs := []uint64{0, 1, 2, 5, 6, 4, 6, 0, 9}
	// 3, 7, 8 never arrive; 4 arrives after 6 (out of order);
	// the second 6 and the second 0 are duplicates.
	newFlags := []bool{true, true, true, true, true, true, false, false, true}
	for i, s := range seqs {
		if got := tr.Observe(0, s); got != newFlags[i] {
			t.Fatalf("Observe(%d) = %v, want %v", s, got, newFlags[i])
		}
	}
	got := countsOf(tr, []int64{10})
	want := trackerCounts{unique: 7, dups: 2, ooo: 1, lost: 3}
	if got != want {
		t.Fatalf("got %+v, want %+v", got, want)
	}
}

func TestTrackerGapClearsRing(t *testing.T) {
	// After a gap shorter than the window, the sequence numbers skipped
	// must not look seen because an older number shared their ring slot.
	tr := NewTracker(0, 1)
	for s := uint64(0); s < WindowSize; s++ {
		tr.Observe(0, s)
	}
	tr.Observe(0, WindowSize+100) // skips WindowSize..WindowSize+99
	if !tr.Observe(0, WindowSize+50) {
		t.Fatal("late message in the skipped range taken for a duplicate")
	}
	if tr.OutOfOrder != 1 || tr.Duplicates != 0 {
		t.Fatalf("ooo=%d dups=%d", tr.OutOfOrder, tr.Duplicates)
	}
	if tr.Observe(0, WindowSize+50) {
		t.Fatal("second copy not taken for a duplicate")
	}
	// A gap of more than the window clears everything.
	tr.Observe(0, 10*WindowSize)
	if !tr.Observe(0, 10*WindowSize-5) {
		t.Fatal("message skipped by a long gap taken for a duplicate")
	}
}

func TestTrackerLateBeyondWindow(t *testing.T) {
	tr := NewTracker(0, 1)
	tr.Observe(0, 0)
	tr.Observe(0, 2*WindowSize)
	if !tr.Observe(0, 1) {
		t.Fatal("late message rejected")
	}
	if tr.Late != 1 || tr.OutOfOrder != 1 || tr.Unique != 3 {
		t.Fatalf("late=%d ooo=%d unique=%d", tr.Late, tr.OutOfOrder, tr.Unique)
	}
}

func TestTrackerRange(t *testing.T) {
	tr := NewTracker(5, 2)
	tr.Observe(4, 0)
	tr.Observe(7, 0)
	tr.Observe(5, 0)
	tr.Observe(6, 0)
	tr.Observe(6, 1)
	sent := []int64{9, 9, 9, 9, 9, 1, 3, 9}
	if tr.Unexpected != 2 || tr.Unique != 3 {
		t.Fatalf("unexpected=%d unique=%d", tr.Unexpected, tr.Unique)
	}
	if exp, lost := tr.Expected(sent), tr.Lost(sent); exp != 4 || lost != 1 {
		t.Fatalf("expected=%d lost=%d, want 4 and 1", exp, lost)
	}
}

func BenchmarkTrackerObserve(b *testing.B) {
	tr := NewTracker(0, 1)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		tr.Observe(0, uint64(i))
	}
}
