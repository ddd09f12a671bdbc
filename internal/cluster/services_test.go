package cluster_test

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

// TestServices: a service's messages reach the named node in order, with
// the sender's name; Members and Owner agree on every node; a stopped
// node is reported down and leaves the members.
func TestServices(t *testing.T) {
	nodes := startCluster(t, 3)
	type got struct {
		from string
		body string
	}
	var mu sync.Mutex
	recv := map[string][]got{}
	downs := map[string][]string{}
	changed := 0
	for _, tn := range nodes {
		tn.cn.Service("echo", func(from string, body []byte) {
			mu.Lock()
			recv[tn.name] = append(recv[tn.name], got{from, string(body)})
			mu.Unlock()
		})
		tn.cn.OnPeerDown(func(node string) {
			mu.Lock()
			downs[tn.name] = append(downs[tn.name], node)
			mu.Unlock()
		})
		tn.cn.OnMembersChanged(func() {
			mu.Lock()
			changed++
			mu.Unlock()
		})
	}
	h := nodes[0].cn.Service("other", func(string, []byte) {})
	_ = h
	h1 := nodes[0].cn.Service("echo", func(from string, body []byte) {})
	if h1.Send("nobody", []byte("x")) {
		t.Fatal("Send to an unknown node succeeded")
	}
	for i := range 100 {
		if !h1.Send("n2", fmt.Appendf(nil, "m%d", i)) {
			t.Fatal("Send to n2 failed")
		}
	}
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(recv["n2"]) != 100 {
			return fmt.Errorf("n2 has %d messages", len(recv["n2"]))
		}
		return nil
	})
	mu.Lock()
	for i, g := range recv["n2"] {
		if g.from != "n1" || g.body != fmt.Sprintf("m%d", i) {
			t.Fatalf("message %d: %+v", i, g)
		}
	}
	mu.Unlock()

	want := []string{"n1", "n2", "n3"}
	for _, tn := range nodes {
		if m := tn.cn.Members(); !slices.Equal(m, want) {
			t.Fatalf("%s: members %v", tn.name, m)
		}
	}
	owners := map[string]int{}
	for i := range 60 {
		k := fmt.Sprintf("queue.%d", i)
		o := nodes[0].cn.Owner(k)
		for _, tn := range nodes[1:] {
			if tn.cn.Owner(k) != o {
				t.Fatalf("owner of %s differs", k)
			}
		}
		owners[o]++
	}
	if len(owners) != 3 {
		t.Fatalf("60 keys spread over %v", owners)
	}

	nodes[2].stop()
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if m := nodes[0].cn.Members(); !slices.Equal(m, []string{"n1", "n2"}) {
			return fmt.Errorf("members %v", m)
		}
		mu.Lock()
		defer mu.Unlock()
		if !slices.Contains(downs["n1"], "n3") {
			return fmt.Errorf("n1 was not told n3 is down: %v", downs["n1"])
		}
		return nil
	})
	mu.Lock()
	if changed == 0 {
		t.Error("OnMembersChanged never called")
	}
	mu.Unlock()
	if h1.Send("n3", []byte("x")) {
		t.Error("Send to a stopped node succeeded")
	}
}
