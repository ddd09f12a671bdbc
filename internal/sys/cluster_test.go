package sys

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/isobar-mq/isobar/internal/cluster"
)

// fakeCluster is a ClusterSource whose status the test changes.
type fakeCluster struct {
	mu sync.Mutex
	st cluster.Status
}

func (f *fakeCluster) ClusterStatus() cluster.Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := f.st
	st.Members = append([]cluster.MemberStatus(nil), f.st.Members...)
	return st
}

func (f *fakeCluster) set(st cluster.Status) {
	f.mu.Lock()
	f.st = st
	f.mu.Unlock()
}

// TestClusterTopics: with a cluster source, $SYS/broker/cluster/... say
// this node's name, how many nodes it knows and sees alive, and how many
// of its links are up; they follow changes at the next update, retained
// (a late subscriber gets them at once). Without one, none is published.
func TestClusterTopics(t *testing.T) {
	srv, addr := startBroker(t)
	p := Start(srv, Options{Interval: 20 * time.Millisecond})
	defer p.Stop()
	vals := watch(t, client(t, addr, "watcher", true))
	checkFor(t, 5*time.Second, func() error {
		if vals.get("uptime") == "" {
			return fmt.Errorf("no update yet")
		}
		return nil
	})
	for _, topic := range []string{"cluster/node", "cluster/nodes", "cluster/nodes/alive", "cluster/links/up"} {
		if v := vals.get(topic); v != "" {
			t.Errorf("unclustered node published %s = %q", topic, v)
		}
	}

	fc := &fakeCluster{st: cluster.Status{Node: "n1", State: "running", Members: []cluster.MemberStatus{
		{Name: "n1", State: "alive", Local: true},
		{Name: "n2", State: "alive", Link: "up"},
		{Name: "n3", State: "suspect", Link: "connecting"},
		{Name: "n4", State: "dead", Link: "down"},
	}}}
	p.SetCluster(fc)
	want := func(node, nodes, alive, links string) func() error {
		return func() error {
			for topic, w := range map[string]string{"cluster/node": node, "cluster/nodes": nodes,
				"cluster/nodes/alive": alive, "cluster/links/up": links} {
				if g := vals.get(topic); g != w {
					return fmt.Errorf("%s = %q, want %q", topic, g, w)
				}
			}
			return nil
		}
	}
	checkFor(t, 5*time.Second, want("n1", "4", "2", "1"))

	// n3 recovers and its link comes up; n4 is forgotten.
	fc.set(cluster.Status{Node: "n1", State: "running", Members: []cluster.MemberStatus{
		{Name: "n1", State: "alive", Local: true},
		{Name: "n2", State: "alive", Link: "up"},
		{Name: "n3", State: "alive", Link: "up"},
	}})
	checkFor(t, 5*time.Second, want("n1", "3", "3", "2"))

	late := watch(t, client(t, addr, "late", true))
	checkFor(t, 2*time.Second, func() error {
		if g := late.get("cluster/nodes/alive"); g != "3" {
			return fmt.Errorf("late subscriber: cluster/nodes/alive %q", g)
		}
		return nil
	})

	var none *Publisher
	none.SetCluster(fc) // $SYS disabled: a no-op
}
