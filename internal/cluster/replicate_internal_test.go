package cluster

import (
	"fmt"
	"testing"
)

// Client ids that differ only in their last characters spread over the
// nodes (FNV without a finalizer put them all on one node).
func TestRankSpreads(t *testing.T) {
	nodes := []string{"n1", "n2", "n3"}
	first := map[string]int{}
	const ids = 3000
	for i := range ids {
		first[rank(fmt.Sprintf("dev-%04d", i), nodes)[0]]++
	}
	for _, n := range nodes {
		if c := first[n]; c < ids/3*7/10 || c > ids/3*13/10 {
			t.Fatalf("node %s first for %d of %d ids: %v", n, c, ids, first)
		}
	}
	// Minimal movement: removing a node changes the first choice only for
	// the ids that had it first.
	moved := 0
	for i := range ids {
		id := fmt.Sprintf("dev-%04d", i)
		a := rank(id, nodes)[0]
		b := rank(id, []string{"n1", "n2"})[0]
		if a != "n3" && a != b {
			moved++
		}
	}
	if moved != 0 {
		t.Fatalf("%d ids moved between surviving nodes", moved)
	}
}
