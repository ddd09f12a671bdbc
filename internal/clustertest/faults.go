package clustertest

import (
	"fmt"
	"math/rand/v2"
	"time"
)

// FaultKind is one kind of injected fault.
type FaultKind int

// Fault kinds. Each is undone before the next fault starts.
const (
	// KillRestart: SIGKILL a node, hold, restart it (same data directory).
	KillRestart FaultKind = iota
	// StopRestart: SIGTERM (graceful), hold, restart.
	StopRestart
	// PauseResume: SIGSTOP, hold, SIGCONT (a node that stops answering).
	PauseResume
	// Split: partition the nodes into Groups, hold, heal.
	Split
)

// Fault is one step of a schedule.
type Fault struct {
	Kind   FaultKind
	Node   int     // KillRestart, StopRestart, PauseResume
	Groups [][]int // Split
	Hold   time.Duration
}

func (f Fault) String() string {
	switch f.Kind {
	case KillRestart:
		return fmt.Sprintf("kill n%d for %v, restart", f.Node+1, f.Hold)
	case StopRestart:
		return fmt.Sprintf("stop n%d for %v, restart", f.Node+1, f.Hold)
	case PauseResume:
		return fmt.Sprintf("pause n%d for %v, resume", f.Node+1, f.Hold)
	case Split:
		return fmt.Sprintf("split %v for %v, heal", f.Groups, f.Hold)
	}
	return fmt.Sprintf("fault(%d)", int(f.Kind))
}

// RandomFaults draws count faults for a cluster of n nodes from rng, each
// held between 1 s and maxHold. Splits need n >= 2.
func RandomFaults(rng *rand.Rand, n, count int, maxHold time.Duration) []Fault {
	if maxHold < time.Second {
		maxHold = time.Second
	}
	kinds := []FaultKind{KillRestart, StopRestart, PauseResume}
	if n >= 2 {
		kinds = append(kinds, Split, Split)
	}
	out := make([]Fault, 0, count)
	for range count {
		f := Fault{Kind: kinds[rng.IntN(len(kinds))], Node: rng.IntN(n),
			Hold: time.Second + time.Duration(rng.Int64N(int64(maxHold-time.Second)+1))}
		if f.Kind == Split {
			perm := rng.Perm(n)
			cut := 1 + rng.IntN(n-1)
			f.Groups = [][]int{perm[:cut], perm[cut:]}
		}
		out = append(out, f)
	}
	return out
}

// FaultOptions tune RunFaults.
type FaultOptions struct {
	// Settle is waited after each fault is undone and the cluster has
	// converged, before the fault window closes (default 2 s).
	Settle time.Duration
	// Converge bounds the wait for the cluster to converge after each
	// fault (default 45 s); a cluster that does not fails the test.
	Converge time.Duration
}

// RunFaults applies faults one after the other on the checker's cluster,
// under the checker's load, recording a fault window for each (from just
// before the fault to the end of the settle time after it was undone and
// the cluster converged). Call it from the test goroutine.
func (ch *Checker) RunFaults(faults []Fault, o FaultOptions) {
	ch.t.Helper()
	if o.Settle <= 0 {
		o.Settle = 2 * time.Second
	}
	if o.Converge <= 0 {
		o.Converge = 45 * time.Second
	}
	c := ch.c
	for k, f := range faults {
		ch.t.Logf("clustertest: fault %d/%d: %v", k+1, len(faults), f)
		ch.event("fault %d/%d: %v", k+1, len(faults), f)
		from := time.Now()
		var affects func(p, s int) bool
		switch f.Kind {
		case KillRestart, StopRestart, PauseResume:
			i := f.Node
			affects = func(p, s int) bool { return p == i || s == i }
			switch f.Kind {
			case KillRestart:
				c.Kill(i)
			case StopRestart:
				c.Stop(i)
			default:
				c.Pause(i)
			}
			time.Sleep(f.Hold)
			if f.Kind == PauseResume {
				c.Resume(i)
			} else {
				c.spawn(c.Nodes[i])
				c.waitPort(i, c.opts.StartTimeout)
			}
		case Split:
			group := map[int]int{}
			for g, nodes := range f.Groups {
				for _, i := range nodes {
					group[i] = g
				}
			}
			affects = func(p, s int) bool { return group[p] != group[s] }
			c.Partition(f.Groups...)
			time.Sleep(f.Hold)
			c.Heal()
		}
		c.WaitConverged(o.Converge)
		time.Sleep(o.Settle)
		ch.Fault(f.String(), from, time.Now(), affects)
	}
}
