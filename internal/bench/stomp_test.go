package bench

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/isobar-mq/isobar/internal/testutil"
)

// TestRunStomp drives the STOMP load generator against an in-process node
// (topic and queue) and checks its accounting and the table.
func TestRunStomp(t *testing.T) {
	n := testutil.RunNode(t, "listeners:\n  - {name: stomp, protocol: stomp, address: \"127.0.0.1:0\"}\n")
	addr := testutil.Addr(t, n, "stomp")
	sc := &stompScenario{Name: "topic"}
	for _, dest := range []string{"/topic/bench.t", "/queue/bench.q"} {
		r, err := RunStomp(context.Background(), StompLoad{Addr: addr, Dest: dest, Pubs: 2, Subs: 2, Size: 64,
			Duration: 500 * time.Millisecond, Warmup: 200 * time.Millisecond, Drain: 3 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %+v", dest, r)
		if r.Sent == 0 || r.Received != r.Expected || len(r.Errors) > 0 {
			t.Errorf("%s: sent %d, received %d of %d, errors %v", dest, r.Sent, r.Received, r.Expected, r.Errors)
		}
		if strings.HasPrefix(dest, "/topic/") && r.Expected != 2*r.Sent {
			t.Errorf("topic: expected %d for %d sent to 2 subscribers", r.Expected, r.Sent)
		}
		sc.Rows = append(sc.Rows, stompRow{Broker: "isobar", Protocol: "STOMP", SendRate: r.SendRate, RecvRate: r.RecvRate, Latency: r.Latency})
	}
	var b bytes.Buffer
	writeStompTable(&b, []*stompScenario{sc}, true)
	if !strings.Contains(b.String(), "| topic | isobar | STOMP |") {
		t.Errorf("table:\n%s", b.String())
	}
}
