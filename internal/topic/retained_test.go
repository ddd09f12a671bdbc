package topic

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"sync"
	"testing"
)

func retainedMatch[V any](r *Retained[V], filter string) []string {
	var out []string
	r.Match(filter, func(topic string, _ V) bool {
		out = append(out, topic)
		return true
	})
	sort.Strings(out)
	return out
}

func TestRetainedMatchCases(t *testing.T) {
	for _, c := range matchCases {
		r := NewRetained[int]()
		r.Set(c.topic, 1)
		got := retainedMatch(r, c.filter)
		if want := c.want && c.topic != ""; (len(got) == 1) != want || len(got) > 1 {
			t.Errorf("filter %q topic %q: got %q, want match=%v", c.filter, c.topic, got, want)
		}
	}
}

func TestRetainedMatchAll(t *testing.T) {
	r := NewRetained[string]()
	topics := map[string]bool{}
	filters := map[string]bool{}
	for _, c := range matchCases {
		if c.topic != "" {
			topics[c.topic] = true
		}
		filters[c.filter] = true
	}
	rng := rand.New(rand.NewPCG(8, 9))
	for range 300 {
		topics[randTopic(rng)] = true
		filters[randFilter(rng)] = true
	}
	delete(topics, "")
	for tp := range topics {
		r.Set(tp, "v:"+tp)
	}
	if r.Len() != len(topics) {
		t.Fatalf("Len = %d, want %d", r.Len(), len(topics))
	}
	for f := range filters {
		var want []string
		for tp := range topics {
			if refMatch(f, tp) {
				want = append(want, tp)
			}
		}
		sort.Strings(want)
		var got []string
		r.Match(f, func(topic, v string) bool {
			if v != "v:"+topic {
				t.Errorf("Match(%q): topic %q has value %q", f, topic, v)
			}
			got = append(got, topic)
			return true
		})
		sort.Strings(got)
		if !slices.Equal(got, want) {
			t.Errorf("Match(%q)\n got %q\nwant %q", f, got, want)
		}
	}
	var all []string
	r.Range(func(topic, v string) bool {
		all = append(all, topic)
		return true
	})
	if len(all) != len(topics) {
		t.Fatalf("Range visited %d topics, want %d", len(all), len(topics))
	}
}

func TestRetainedSetGetDelete(t *testing.T) {
	r := NewRetained[int]()
	if _, ok := r.Get("a"); ok {
		t.Fatal("Get on empty tree")
	}
	r.Set("a/b/c", 1)
	r.Set("a/b/c", 2) // replace
	r.Set("a", 3)
	if r.Len() != 2 {
		t.Fatalf("Len = %d, want 2", r.Len())
	}
	if v, ok := r.Get("a/b/c"); !ok || v != 2 {
		t.Fatalf("Get(a/b/c) = %d, %v", v, ok)
	}
	if _, ok := r.Get("a/b"); ok {
		t.Fatal("Get of an interior node without value succeeded")
	}
	if r.Delete("a/b") || r.Delete("x") || r.Delete("a/b/c/d") {
		t.Fatal("Delete of a topic without value returned true")
	}
	if got := retainedMatch(r, "a/#"); !slices.Equal(got, []string{"a", "a/b/c"}) {
		t.Fatalf("Match(a/#) = %q", got)
	}
	if !r.Delete("a/b/c") || r.Delete("a/b/c") {
		t.Fatal("Delete(a/b/c) results wrong")
	}
	// The now empty b and c nodes are pruned; a stays (it has a value).
	if len(r.root.children) != 1 || len(r.root.children["a"].children) != 0 {
		t.Fatalf("not pruned: %v", r.root.children["a"].children)
	}
	if !r.Delete("a") || r.Len() != 0 || r.root.children != nil {
		t.Fatalf("after deleting everything: Len %d, root children %v", r.Len(), r.root.children)
	}
	// Empty topics are never stored.
	r.Set("", 9)
	if _, ok := r.Get(""); ok || r.Len() != 0 || r.Delete("") || retainedMatch(r, "+") != nil {
		t.Fatal("empty topic was stored")
	}
	// Exact filters.
	r.Set("x/y", 5)
	if got := retainedMatch(r, "x/y"); !slices.Equal(got, []string{"x/y"}) {
		t.Fatalf("Match(x/y) = %q", got)
	}
	if got := retainedMatch(r, "x"); got != nil {
		t.Fatalf("Match(x) = %q", got)
	}
}

func TestRetainedChurnNoGrowth(t *testing.T) {
	r := NewRetained[int]()
	rng := rand.New(rand.NewPCG(10, 11))
	for round := range 10 {
		var ts []string
		for i := range 1000 {
			tp := fmt.Sprintf("%s/%d/%d", randTopic(rng), round, i)
			ts = append(ts, tp)
			r.Set(tp, i)
		}
		for _, tp := range ts {
			r.Delete(tp)
		}
		if r.Len() != 0 || r.root.children != nil {
			t.Fatalf("round %d: Len %d, %d root children left", round, r.Len(), len(r.root.children))
		}
	}
}

func TestRetainedCallbackMayModify(t *testing.T) {
	r := NewRetained[int]()
	for i := range 100 {
		r.Set(fmt.Sprintf("t/%d", i), i)
	}
	n := 0
	r.Match("t/+", func(topic string, v int) bool {
		r.Delete(topic) // would deadlock if Match held the lock
		r.Set("other/"+topic, v)
		n++
		return n < 10
	})
	if n != 10 {
		t.Fatalf("fn called %d times, want 10 (stop on false)", n)
	}
	if r.Len() != 100 {
		t.Fatalf("Len = %d, want 100", r.Len())
	}
	n = 0
	r.Range(func(topic string, v int) bool {
		r.Delete(topic)
		n++
		return true
	})
	if n != 100 || r.Len() != 0 {
		t.Fatalf("Range: %d calls, Len %d", n, r.Len())
	}
	n = 0
	r.Set("exact", 1)
	r.Match("exact", func(topic string, v int) bool {
		r.Delete(topic)
		n++
		return true
	})
	if n != 1 || r.Len() != 0 {
		t.Fatalf("exact Match: %d calls, Len %d", n, r.Len())
	}
}

func TestRetainedConcurrent(t *testing.T) {
	r := NewRetained[int]()
	r.Set("perm/a", -1)
	var wg sync.WaitGroup
	errs := make(chan string, 4)
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 12))
			for i := range 3000 {
				tp := fmt.Sprintf("w%d/%s", w, randTopic(rng))
				r.Set(tp, i)
				if rng.IntN(2) == 0 {
					r.Delete(tp)
				}
			}
		}()
	}
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 300 {
				found := false
				r.Match("+/a", func(topic string, v int) bool {
					found = found || topic == "perm/a" && v == -1
					return true
				})
				if !found {
					errs <- "perm/a not matched by +/a"
					return
				}
				r.Match("w0/#", func(string, int) bool { return true })
				r.Get("perm/a")
				r.Len()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	r.Range(func(topic string, _ int) bool {
		r.Delete(topic)
		return true
	})
	if r.Len() != 0 || r.root.children != nil {
		t.Fatalf("after deleting everything: Len %d", r.Len())
	}
}
