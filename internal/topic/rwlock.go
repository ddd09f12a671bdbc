package topic

import (
	"runtime"
	"sync"
	"sync/atomic"
	"unsafe"
)

// shardedRWMutex is a reader/writer lock whose read side scales with the
// number of CPUs. A plain sync.RWMutex makes every reader write the same
// cache line (the reader count), which on a multi-core machine costs
// more than a whole Match. Here each reader locks one of several
// RWMutexes, each on its own cache lines, chosen by a hint the reader
// keeps (Result keeps one per goroutine); a writer locks all of them, in
// order.
type shardedRWMutex struct {
	shards []paddedRWMutex
	mask   uint32
	hints  atomic.Uint32 // hands out reader hints round-robin
}

const cacheLine = 128 // covers adjacent-line prefetch on x86

type paddedRWMutex struct {
	sync.RWMutex
	_ [cacheLine - unsafe.Sizeof(sync.RWMutex{})%cacheLine]byte
}

func newShardedRWMutex() *shardedRWMutex {
	n := 2
	for n < 4*runtime.GOMAXPROCS(0) && n < 64 {
		n *= 2
	}
	return &shardedRWMutex{shards: make([]paddedRWMutex, n), mask: uint32(n - 1)}
}

// hint returns a new reader hint, never 0 (0 means "not assigned yet").
func (l *shardedRWMutex) hint() uint32 {
	for {
		if h := l.hints.Add(1); h != 0 {
			return h
		}
	}
}

// rlock read-locks the shard for hint and returns it for runlock.
func (l *shardedRWMutex) rlock(hint uint32) *sync.RWMutex {
	m := &l.shards[hint&l.mask].RWMutex
	m.RLock()
	return m
}

func (l *shardedRWMutex) lock() {
	for i := range l.shards {
		l.shards[i].Lock()
	}
}

func (l *shardedRWMutex) unlock() {
	for i := len(l.shards) - 1; i >= 0; i-- {
		l.shards[i].Unlock()
	}
}
