// Package hlc is a hybrid logical clock (Kulkarni et al., "Logical
// Physical Clocks", 2014): timestamps that follow physical time, never go
// backwards, and order every event after the events it has seen from
// other nodes, whatever their clock skew.
//
// A timestamp is one uint64: unix milliseconds in the high 48 bits, a
// logical counter in the low 16. Comparing two timestamps as integers
// orders them; ties between nodes are broken by the caller (node id).
package hlc

import (
	"sync"
	"time"
)

const logicalBits = 16

// Clock issues timestamps. The zero value is ready to use, with the
// system clock.
type Clock struct {
	mu   sync.Mutex
	last uint64
	// Now returns the physical time; nil means time.Now (tests set it).
	Wall func() time.Time
}

func (c *Clock) physical() uint64 {
	var t time.Time
	if c.Wall != nil {
		t = c.Wall()
	} else {
		t = time.Now()
	}
	ms := t.UnixMilli()
	if ms < 0 {
		ms = 0
	}
	return uint64(ms) << logicalBits
}

// Now returns a timestamp greater than every one this clock issued or
// saw before.
func (c *Clock) Now() uint64 {
	p := c.physical()
	c.mu.Lock()
	defer c.mu.Unlock()
	if p > c.last {
		c.last = p
	} else {
		c.last++
	}
	return c.last
}

// Update merges a timestamp received from another node and returns a
// new local timestamp greater than both. A remote timestamp far in the
// future (beyond MaxSkew ahead of this node's physical clock) is not
// adopted: it is ignored, so one node's broken clock cannot drag the
// others along; the result is then a plain Now.
func (c *Clock) Update(remote uint64) uint64 {
	p := c.physical()
	c.mu.Lock()
	defer c.mu.Unlock()
	if remote > p+MaxSkew {
		remote = 0
	}
	m := max(p, c.last, remote)
	if m == c.last || m == remote {
		m++
	}
	c.last = m
	return m
}

// MaxSkew is how far ahead of the local physical clock a remote
// timestamp may be and still be adopted: one hour.
const MaxSkew = uint64(time.Hour/time.Millisecond) << logicalBits

// Time returns the physical part of a timestamp.
func Time(ts uint64) time.Time { return time.UnixMilli(int64(ts >> logicalBits)) }
