package topic

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
)

func TestRefMatchAgreesWithCases(t *testing.T) {
	for _, c := range matchCases {
		if got := refMatch(c.filter, c.topic); got != c.want {
			t.Errorf("refMatch(%q, %q) = %v, want %v", c.filter, c.topic, got, c.want)
		}
	}
}

func TestIndexMatchCases(t *testing.T) {
	var r Result[int]
	for _, c := range matchCases {
		if err := ValidateFilter(c.filter, 0, 0); err != nil {
			t.Fatalf("case filter invalid: %v", err)
		}
		x := NewIndex[int]()
		x.Subscribe(1, c.filter, Options{QoS: 1})
		x.Subscribe(2, "$share/g/"+c.filter, Options{})
		x.Match(c.topic, &r)
		got := len(r.Subs) == 1
		if got != c.want || len(r.Subs) > 1 {
			t.Errorf("filter %q topic %q: %d subs, want match=%v", c.filter, c.topic, len(r.Subs), c.want)
		}
		if got && (r.Subs[0] != Entry[int]{Key: 1, Filter: c.filter, Opts: Options{QoS: 1}}) {
			t.Errorf("filter %q topic %q: entry %+v", c.filter, c.topic, r.Subs[0])
		}
		gotShared := len(r.Shared) == 1
		if gotShared != c.want || len(r.Shared) > 1 {
			t.Errorf("shared filter %q topic %q: %d groups, want match=%v", c.filter, c.topic, len(r.Shared), c.want)
		}
	}
}

// TestIndexMatchCasesTogether puts every case filter into one index and
// checks each topic against all of them at once.
func TestIndexMatchCasesTogether(t *testing.T) {
	x := NewIndex[string]()
	filters := map[string]bool{}
	topics := map[string]bool{}
	for _, c := range matchCases {
		filters[c.filter] = true
		if c.topic != "" {
			topics[c.topic] = true
		}
	}
	for f := range filters {
		if x.Subscribe(f, f, Options{}) {
			t.Fatalf("Subscribe(%q) reported existing", f)
		}
	}
	if x.Len() != len(filters) {
		t.Fatalf("Len = %d, want %d", x.Len(), len(filters))
	}
	var r Result[string]
	for topic := range topics {
		var want []string
		for f := range filters {
			if refMatch(f, topic) {
				want = append(want, f)
			}
		}
		x.Match(topic, &r)
		var got []string
		for _, e := range r.Subs {
			if e.Key != e.Filter {
				t.Errorf("entry key %q has filter %q", e.Key, e.Filter)
			}
			got = append(got, e.Key)
		}
		sort.Strings(want)
		sort.Strings(got)
		if !slices.Equal(got, want) {
			t.Errorf("Match(%q) = %q, want %q", topic, got, want)
		}
	}
}

func TestIndexSharedGroups(t *testing.T) {
	x := NewIndex[string]()
	x.Subscribe("a", "$share/g1/s/+", Options{QoS: 1})
	x.Subscribe("b", "$share/g1/s/+", Options{QoS: 2})
	x.Subscribe("c", "$share/g1/s/+", Options{})
	x.Subscribe("d", "$share/g2/s/+", Options{})
	x.Subscribe("e", "$share/g1/s/#", Options{})
	x.Subscribe("f", "s/+", Options{})
	x.Subscribe("a", "s/+", Options{}) // a is also a plain subscriber
	x.Subscribe("z", "$share/g1/t/+", Options{})
	if x.Len() != 8 {
		t.Fatalf("Len = %d, want 8", x.Len())
	}

	var r Result[string]
	x.Match("s/x", &r)
	plain := keys(r.Subs)
	if !slices.Equal(plain, []string{"a", "f"}) {
		t.Errorf("plain subs = %v, want [a f]", plain)
	}
	got := sharedSummary(r.Shared)
	want := []string{"g1 s/# [e] next=0", "g1 s/+ [a b c] next=0", "g2 s/+ [d] next=0"}
	if !slices.Equal(got, want) {
		t.Errorf("shared = %q, want %q", got, want)
	}
	for _, sm := range r.Shared {
		if sm.Group == "g1" && sm.Filter == "s/+" {
			for _, m := range sm.Members {
				if m.Filter != "s/+" {
					t.Errorf("member filter = %q", m.Filter)
				}
				if m.Key == "b" && m.Opts.QoS != 2 {
					t.Errorf("member b QoS = %d", m.Opts.QoS)
				}
			}
		}
	}

	// Next counts per group, across topics that hit the group.
	x.Match("s/y", &r)
	x.Match("s/z", &r)
	got = sharedSummary(r.Shared)
	want = []string{"g1 s/# [e] next=2", "g1 s/+ [a b c] next=2", "g2 s/+ [d] next=2"}
	if !slices.Equal(got, want) {
		t.Errorf("shared = %q, want %q", got, want)
	}
	x.Match("s", &r) // only s/# matches
	got = sharedSummary(r.Shared)
	if want := []string{"g1 s/# [e] next=3"}; !slices.Equal(got, want) {
		t.Errorf("shared = %q, want %q", got, want)
	}

	// Members is a copy: later changes to the index or to the slice do
	// not interfere.
	x.Match("s/x", &r)
	var members []Entry[string]
	for _, sm := range r.Shared {
		if sm.Group == "g1" && sm.Filter == "s/+" {
			members = sm.Members
		}
	}
	x.Unsubscribe("b", "$share/g1/s/+")
	if len(members) != 3 {
		t.Fatalf("members changed after Unsubscribe: %v", members)
	}
	members[0].Key = "mutated"
	var r2 Result[string]
	x.Match("s/x", &r2)
	got = sharedSummary(r2.Shared)
	want = []string{"g1 s/# [e] next=5", "g1 s/+ [a c] next=4", "g2 s/+ [d] next=4"}
	if !slices.Equal(got, want) {
		t.Errorf("after unsubscribe: shared = %q, want %q", got, want)
	}

	// Removing the last member removes the group.
	x.Unsubscribe("d", "$share/g2/s/+")
	x.Match("s/x", &r)
	got = sharedSummary(r.Shared)
	want = []string{"g1 s/# [e] next=6", "g1 s/+ [a c] next=5"}
	if !slices.Equal(got, want) {
		t.Errorf("after removing g2: shared = %q, want %q", got, want)
	}
	// A re-created group starts counting from 0 again.
	x.Subscribe("d", "$share/g2/s/+", Options{})
	x.Match("s/x", &r)
	got = sharedSummary(r.Shared)
	want = []string{"g1 s/# [e] next=7", "g1 s/+ [a c] next=6", "g2 s/+ [d] next=0"}
	if !slices.Equal(got, want) {
		t.Errorf("after re-creating g2: shared = %q, want %q", got, want)
	}
}

func keys[K comparable](es []Entry[K]) []string {
	var out []string
	for _, e := range es {
		out = append(out, fmt.Sprint(e.Key))
	}
	sort.Strings(out)
	return out
}

func sharedSummary[K comparable](sms []SharedMatch[K]) []string {
	var out []string
	for _, sm := range sms {
		out = append(out, fmt.Sprintf("%s %s %v next=%d", sm.Group, sm.Filter, keys(sm.Members), sm.Next))
	}
	sort.Strings(out)
	return out
}

func TestIndexSubscribeReplaces(t *testing.T) {
	x := NewIndex[int]()
	if x.Subscribe(1, "a/+", Options{QoS: 0}) {
		t.Fatal("first Subscribe reported existed")
	}
	if !x.Subscribe(1, "a/+", Options{QoS: 2, NoLocal: true, RetainAsPublished: true, RetainHandling: 2, ID: 7}) {
		t.Fatal("second Subscribe did not report existed")
	}
	if x.Subscribe(2, "a/+", Options{}) {
		t.Fatal("other key reported existed")
	}
	if x.Subscribe(1, "$share/g/a/+", Options{QoS: 1}) {
		t.Fatal("shared subscription to the same inner filter reported existed")
	}
	if !x.Subscribe(1, "$share/g/a/+", Options{QoS: 2}) {
		t.Fatal("second shared Subscribe did not report existed")
	}
	if x.Subscribe(1, "$share/h/a/+", Options{QoS: 1}) {
		t.Fatal("other group reported existed")
	}
	if x.Len() != 4 {
		t.Fatalf("Len = %d, want 4", x.Len())
	}
	var r Result[int]
	x.Match("a/b", &r)
	if len(r.Subs) != 2 {
		t.Fatalf("subs = %+v", r.Subs)
	}
	for _, e := range r.Subs {
		if e.Key == 1 && e.Opts != (Options{QoS: 2, NoLocal: true, RetainAsPublished: true, RetainHandling: 2, ID: 7}) {
			t.Errorf("options not replaced: %+v", e.Opts)
		}
	}
	if got := sharedSummary(r.Shared); !slices.Equal(got, []string{"g a/+ [1] next=0", "h a/+ [1] next=0"}) {
		t.Errorf("shared = %q", got)
	}
	for _, sm := range r.Shared {
		if sm.Group == "g" && sm.Members[0].Opts.QoS != 2 {
			t.Errorf("shared options not replaced: %+v", sm.Members[0].Opts)
		}
	}
}

func TestIndexUnsubscribe(t *testing.T) {
	x := NewIndex[int]()
	x.Subscribe(1, "a/b", Options{})
	x.Subscribe(1, "$share/g/a/b", Options{})
	for _, tc := range []struct {
		key    int
		filter string
	}{
		{1, "a"},
		{1, "a/b/c"},
		{1, "a/+"},
		{1, "#"},
		{2, "a/b"},
		{2, "$share/g/a/b"},
		{1, "$share/h/a/b"},
		{1, "$share/g/a"},
		{1, "$share/g/a/b/c"},
		{1, "x/y/z"},
	} {
		if x.Unsubscribe(tc.key, tc.filter) {
			t.Errorf("Unsubscribe(%d, %q) = true for an unknown subscription", tc.key, tc.filter)
		}
	}
	if x.Len() != 2 {
		t.Fatalf("Len = %d, want 2", x.Len())
	}
	if !x.Unsubscribe(1, "a/b") {
		t.Fatal("Unsubscribe(1, a/b) = false")
	}
	if x.Unsubscribe(1, "a/b") {
		t.Fatal("second Unsubscribe(1, a/b) = true")
	}
	var r Result[int]
	x.Match("a/b", &r)
	if len(r.Subs) != 0 || len(r.Shared) != 1 {
		t.Fatalf("after unsubscribing the plain filter: %+v", r)
	}
	if !x.Unsubscribe(1, "$share/g/a/b") {
		t.Fatal("Unsubscribe shared = false")
	}
	x.Match("a/b", &r)
	if len(r.Subs) != 0 || len(r.Shared) != 0 || x.Len() != 0 {
		t.Fatalf("after unsubscribing everything: %+v, Len %d", r, x.Len())
	}
	if !x.root.empty() {
		t.Fatal("root not empty after removing everything")
	}
}

// countNodes returns the number of trie nodes below (and including) n.
func countNodes[K comparable](n *node[K]) int {
	c := 1
	for _, ch := range n.lits {
		if ch.parent != n {
			panic("bad parent link")
		}
		c += countNodes(ch)
	}
	if n.plus != nil {
		c += countNodes(n.plus)
	}
	if n.hash != nil {
		c += countNodes(n.hash)
	}
	return c
}

func TestIndexPrune(t *testing.T) {
	x := NewIndex[int]()
	x.Subscribe(1, "a/b/c/d", Options{})
	x.Subscribe(1, "a/b", Options{})
	x.Subscribe(1, "a/+/#", Options{})
	if n := countNodes(x.root); n != 7 { // root a b c d + #
		t.Fatalf("nodes = %d, want 7", n)
	}
	x.Unsubscribe(1, "a/b/c/d")
	if n := countNodes(x.root); n != 5 {
		t.Fatalf("after removing a/b/c/d: nodes = %d, want 5", n)
	}
	x.Unsubscribe(1, "a/+/#")
	if n := countNodes(x.root); n != 3 {
		t.Fatalf("after removing a/+/#: nodes = %d, want 3", n)
	}
	// b is an interior node with a subscription: removing a child below
	// it must not remove it.
	x.Subscribe(1, "a/b/x", Options{})
	x.Unsubscribe(1, "a/b/x")
	var r Result[int]
	x.Match("a/b", &r)
	if len(r.Subs) != 1 {
		t.Fatalf("a/b lost: %+v", r.Subs)
	}
	x.Unsubscribe(1, "a/b")
	if n := countNodes(x.root); n != 1 || !x.root.empty() {
		t.Fatalf("nodes = %d, want only the root", n)
	}
}

// TestIndexChurnNoGrowth subscribes and unsubscribes many distinct
// filters repeatedly and checks the trie returns to its base size.
func TestIndexChurnNoGrowth(t *testing.T) {
	x := NewIndex[int]()
	x.Subscribe(0, "base/+/x", Options{})
	base := countNodes(x.root)
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 20 {
		var subs []string
		for i := range 500 {
			f := randFilter(rng)
			if rng.IntN(4) == 0 {
				f = fmt.Sprintf("client/%d/%d/cmd", round, i)
			}
			subs = append(subs, f)
			x.Subscribe(i%7+1, f, Options{})
		}
		for i, f := range subs {
			x.Unsubscribe(i%7+1, f)
		}
		if n := countNodes(x.root); n != base {
			t.Fatalf("round %d: %d nodes, want %d", round, n, base)
		}
		if x.Len() != 1 {
			t.Fatalf("round %d: Len = %d, want 1", round, x.Len())
		}
	}
}

// TestIndexLargeSet exercises the keyed index used for nodes with many
// subscribers.
func TestIndexLargeSet(t *testing.T) {
	x := NewIndex[int]()
	want := map[int]bool{}
	rng := rand.New(rand.NewPCG(3, 4))
	var r Result[int]
	check := func() {
		t.Helper()
		x.Match("fan/out", &r)
		got := map[int]bool{}
		for _, e := range r.Subs {
			if got[e.Key] {
				t.Fatalf("key %d twice", e.Key)
			}
			got[e.Key] = true
		}
		if len(r.Shared) != 1 && len(want) > 0 {
			t.Fatalf("shared groups = %d", len(r.Shared))
		}
		for _, sm := range r.Shared {
			if len(sm.Members) != len(want) {
				t.Fatalf("shared members = %d, want %d", len(sm.Members), len(want))
			}
		}
		if len(got) != len(want) {
			t.Fatalf("got %d keys, want %d", len(got), len(want))
		}
		for k := range want {
			if !got[k] {
				t.Fatalf("key %d missing", k)
			}
		}
	}
	for range 3000 {
		k := rng.IntN(200)
		if rng.IntN(2) == 0 {
			existed := x.Subscribe(k, "fan/out", Options{QoS: byte(k % 3)})
			x.Subscribe(k, "$share/g/fan/out", Options{})
			if existed != want[k] {
				t.Fatalf("Subscribe(%d) existed = %v", k, existed)
			}
			want[k] = true
		} else {
			existed := x.Unsubscribe(k, "fan/out")
			x.Unsubscribe(k, "$share/g/fan/out")
			if existed != want[k] {
				t.Fatalf("Unsubscribe(%d) existed = %v", k, existed)
			}
			delete(want, k)
		}
		check()
	}
}

var randLevels = []string{"a", "b", "c", "", "$x", "+", "#"}

func randFilter(rng *rand.Rand) string {
	n := 1 + rng.IntN(4)
	var parts []string
	for i := range n {
		l := randLevels[rng.IntN(len(randLevels))]
		if l == "#" && i != n-1 {
			l = "+"
		}
		if l == "$x" && i != 0 && rng.IntN(2) == 0 {
			l = "a"
		}
		parts = append(parts, l)
	}
	if n == 1 && parts[0] == "" {
		return "a"
	}
	return strings.Join(parts, "/")
}

func randTopic(rng *rand.Rand) string {
	n := 1 + rng.IntN(5)
	parts := make([]string, n)
	for i := range parts {
		parts[i] = randLevels[rng.IntN(5)]
	}
	return strings.Join(parts, "/")
}

// TestIndexRandomized runs random subscribe/unsubscribe/match sequences
// and compares every Match against a naive model.
func TestIndexRandomized(t *testing.T) {
	type sub struct {
		key    int
		filter string // full filter
	}
	rng := rand.New(rand.NewPCG(5, 6))
	x := NewIndex[int]()
	model := map[sub]Options{}
	var r Result[int]
	for op := range 20000 {
		switch rng.IntN(3) {
		case 0:
			f := randFilter(rng)
			if err := ValidateFilter(f, 0, 0); err != nil {
				t.Fatalf("randFilter produced invalid %q: %v", f, err)
			}
			if rng.IntN(3) == 0 {
				f = fmt.Sprintf("$share/g%d/%s", rng.IntN(2), f)
			}
			s := sub{rng.IntN(5), f}
			o := Options{QoS: byte(rng.IntN(3)), ID: uint32(op)}
			_, had := model[s]
			if got := x.Subscribe(s.key, s.filter, o); got != had {
				t.Fatalf("Subscribe(%v) = %v, want %v", s, got, had)
			}
			model[s] = o
		case 1:
			var s sub
			if len(model) > 0 && rng.IntN(4) != 0 {
				for s = range model {
					break
				}
			} else {
				s = sub{rng.IntN(5), randFilter(rng)}
			}
			_, had := model[s]
			if got := x.Unsubscribe(s.key, s.filter); got != had {
				t.Fatalf("Unsubscribe(%v) = %v, want %v", s, got, had)
			}
			delete(model, s)
		case 2:
			topic := randTopic(rng)
			x.Match(topic, &r)
			var want, got []string
			wantShared := map[string][]string{}
			for s, o := range model {
				g, inner, shared := ParseShared(s.filter)
				if !refMatch(inner, topic) {
					continue
				}
				e := fmt.Sprintf("%d %s %+v", s.key, inner, o)
				if shared {
					k := g + " " + inner
					wantShared[k] = append(wantShared[k], e)
				} else {
					want = append(want, e)
				}
			}
			for _, e := range r.Subs {
				got = append(got, fmt.Sprintf("%d %s %+v", e.Key, e.Filter, e.Opts))
			}
			sort.Strings(want)
			sort.Strings(got)
			if !slices.Equal(got, want) {
				t.Fatalf("op %d: Match(%q) subs\n got %q\nwant %q", op, topic, got, want)
			}
			if len(r.Shared) != len(wantShared) {
				t.Fatalf("op %d: Match(%q) %d shared groups, want %d", op, topic, len(r.Shared), len(wantShared))
			}
			for _, sm := range r.Shared {
				var gotM []string
				for _, e := range sm.Members {
					gotM = append(gotM, fmt.Sprintf("%d %s %+v", e.Key, e.Filter, e.Opts))
				}
				wantM := wantShared[sm.Group+" "+sm.Filter]
				sort.Strings(gotM)
				sort.Strings(wantM)
				if !slices.Equal(gotM, wantM) {
					t.Fatalf("op %d: Match(%q) group %s %s\n got %q\nwant %q", op, topic, sm.Group, sm.Filter, gotM, wantM)
				}
			}
		}
		if x.Len() != len(model) {
			t.Fatalf("op %d: Len = %d, want %d", op, x.Len(), len(model))
		}
	}
	for s := range model {
		if !x.Unsubscribe(s.key, s.filter) {
			t.Fatalf("final Unsubscribe(%v) = false", s)
		}
	}
	if x.Len() != 0 || countNodes(x.root) != 1 {
		t.Fatalf("after removing everything: Len %d, nodes %d", x.Len(), countNodes(x.root))
	}
}

func TestIndexWalk(t *testing.T) {
	x := NewIndex[int]()
	subs := map[string]bool{}
	add := func(k int, f string) {
		x.Subscribe(k, f, Options{QoS: byte(k)})
		subs[fmt.Sprintf("%d %s", k, f)] = true
	}
	add(1, "a/b")
	add(2, "a/b")
	add(1, "#")
	add(2, "+/x")
	add(1, "$share/g/a/b")
	add(2, "$share/g/a/b")
	add(2, "$share/h/#")
	add(1, "$SYS/+")
	got := map[string]bool{}
	x.Walk(func(filter string, e Entry[int]) bool {
		_, inner, _ := ParseShared(filter)
		if e.Filter != inner {
			t.Errorf("Walk: filter %q but entry filter %q", filter, e.Filter)
		}
		if e.Opts.QoS != byte(e.Key) {
			t.Errorf("Walk: options %+v for key %d", e.Opts, e.Key)
		}
		got[fmt.Sprintf("%d %s", e.Key, filter)] = true
		return true
	})
	if len(got) != len(subs) {
		t.Errorf("Walk visited %d subscriptions, want %d: %v", len(got), len(subs), got)
	}
	for s := range subs {
		if !got[s] {
			t.Errorf("Walk missed %s", s)
		}
	}
	// Stops early; fn may modify the index without deadlocking.
	n := 0
	x.Walk(func(filter string, e Entry[int]) bool {
		x.Unsubscribe(e.Key, filter)
		n++
		return n < 3
	})
	if n != 3 || x.Len() != len(subs)-3 {
		t.Errorf("early stop: %d calls, Len %d", n, x.Len())
	}
}

func TestIndexMatchNoAlloc(t *testing.T) {
	x := NewIndex[*int]()
	keys := make([]*int, 50)
	for i := range keys {
		keys[i] = new(int)
	}
	for i, k := range keys {
		x.Subscribe(k, fmt.Sprintf("dev/%d/temp", i%10), Options{})
		x.Subscribe(k, "dev/+/temp", Options{})
		x.Subscribe(k, "$share/g/dev/#", Options{})
		x.Subscribe(k, fmt.Sprintf("$share/g%d/dev/+/temp", i%3), Options{})
	}
	var r Result[*int]
	topics := []string{"dev/1/temp", "dev/2/temp", "dev/x", "other", "$SYS/x"}
	for _, tp := range topics { // warm up: grow r
		x.Match(tp, &r)
	}
	allocs := testing.AllocsPerRun(100, func() {
		for _, tp := range topics {
			x.Match(tp, &r)
		}
	})
	if allocs != 0 {
		t.Fatalf("Match allocates %.1f times per run, want 0", allocs)
	}
	x.Match("dev/1/temp", &r)
	if len(r.Subs) != 55 || len(r.Shared) != 4 {
		t.Fatalf("subs %d shared %d", len(r.Subs), len(r.Shared))
	}
}

// TestResultResetClearsStale checks that a reused Result does not keep
// old handles reachable beyond its length.
func TestResultResetClearsStale(t *testing.T) {
	x := NewIndex[*int]()
	a, b := new(int), new(int)
	x.Subscribe(a, "t", Options{})
	x.Subscribe(b, "t", Options{})
	x.Subscribe(a, "$share/g/t", Options{})
	x.Subscribe(b, "$share/g/t", Options{})
	var r Result[*int]
	x.Match("t", &r)
	x.Match("none", &r)
	if len(r.Subs) != 0 || len(r.Shared) != 0 {
		t.Fatal("not reset")
	}
	for _, e := range r.Subs[:cap(r.Subs)] {
		if e.Key != nil {
			t.Fatal("stale Subs entry kept")
		}
	}
	for _, sm := range r.Shared[:cap(r.Shared)] {
		for _, e := range sm.Members[:cap(sm.Members)] {
			if e.Key != nil {
				t.Fatal("stale Members entry kept")
			}
		}
	}
}

// TestIndexConcurrent runs subscribe/unsubscribe/match concurrently; run
// with -race. A set of permanent subscriptions must be seen by every
// Match throughout.
func TestIndexConcurrent(t *testing.T) {
	x := NewIndex[int]()
	x.Subscribe(-1, "#", Options{})
	x.Subscribe(-2, "+/+/+", Options{})
	x.Subscribe(-3, "$share/perm/#", Options{})
	const writers, readers, ops = 2, 4, 3000
	var wg sync.WaitGroup
	errs := make(chan string, readers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 99))
			var mine []string
			for i := range ops {
				f := randFilter(rng)
				if rng.IntN(3) == 0 {
					f = "$share/g/" + f
				}
				x.Subscribe(w*ops+i, f, Options{})
				mine = append(mine, f)
				if len(mine) > 50 {
					j := rng.IntN(len(mine))
					x.Unsubscribe(w*ops+i-len(mine)+1+j, mine[j]) // may or may not exist
					x.Unsubscribe(w*ops+i, mine[len(mine)-1])
				}
			}
		}()
	}
	for rd := range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(rd), 7))
			var r Result[int]
			for range ops {
				topic := randTopic(rng) + "/q/z"
				x.Match(topic, &r)
				var hash, plus3, perm bool
				for _, e := range r.Subs {
					hash = hash || e.Key == -1
					plus3 = plus3 || e.Key == -2
				}
				for _, sm := range r.Shared {
					perm = perm || sm.Group == "perm"
				}
				dollar := topic[0] == '$'
				if hash == dollar || perm == dollar || plus3 != (!dollar && strings.Count(topic, "/") == 2) {
					errs <- fmt.Sprintf("Match(%q): # %v, +/+/+ %v, perm %v", topic, hash, plus3, perm)
					return
				}
				_ = x.Len()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	x.Walk(func(filter string, e Entry[int]) bool {
		x.Unsubscribe(e.Key, filter)
		return true
	})
	if x.Len() != 0 || countNodes(x.root) != 1 {
		t.Fatalf("after removing everything: Len %d, nodes %d", x.Len(), countNodes(x.root))
	}
}
