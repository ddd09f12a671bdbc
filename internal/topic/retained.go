package topic

import (
	"slices"
	"strings"
	"sync"
)

// Retained is a concurrency-safe tree of retained messages, one value per
// topic name, that can be queried with topic filters.
//
// Concurrency: Get, Match, Range and Len take a read lock; Set and Delete
// take the write lock. Match and Range collect the matching (topic, value)
// pairs under the read lock and call fn only after releasing it, so fn may
// freely call Set or Delete (the changes are not reflected in the ongoing
// iteration).
//
// Deleting a topic prunes the tree nodes left empty, so memory does not
// grow under churn.
type Retained[V any] struct {
	mu   sync.RWMutex
	root rnode[V]
	n    int
	pool sync.Pool // *[]kv[V], buffers for Match and Range
}

type rnode[V any] struct {
	parent   *rnode[V]
	token    string
	children map[string]*rnode[V]
	topic    string // set while has is true
	has      bool
	v        V
}

type kv[V any] struct {
	topic string
	v     V
}

// maxPooledBuf bounds the buffers kept for reuse by Match and Range, so a
// single huge match does not pin memory forever.
const maxPooledBuf = 4096

// NewRetained returns an empty retained-message tree.
func NewRetained[V any]() *Retained[V] {
	return &Retained[V]{}
}

// Len returns the number of retained topics.
func (r *Retained[V]) Len() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.n
}

// Set stores v as the retained value of topic, replacing any previous
// value. topic should have passed ValidateName; an empty topic is
// ignored (Get, Delete and Match never find it either).
func (r *Retained[V]) Set(topic string, v V) {
	if topic == "" {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	n := &r.root
	var owned string
	pos := 0
	for {
		end := strings.IndexByte(topic[pos:], '/')
		if end < 0 {
			end = len(topic)
		} else {
			end += pos
		}
		c := n.children[topic[pos:end]]
		if c == nil {
			if owned == "" {
				owned = strings.Clone(topic)
			}
			c = &rnode[V]{parent: n, token: owned[pos:end]}
			if n.children == nil {
				n.children = make(map[string]*rnode[V])
			}
			n.children[c.token] = c
		}
		n = c
		if end == len(topic) {
			break
		}
		pos = end + 1
	}
	if !n.has {
		r.n++
		n.has = true
		if owned == "" {
			owned = strings.Clone(topic)
		}
		n.topic = owned
	}
	n.v = v
}

func (r *Retained[V]) find(topic string) *rnode[V] {
	if topic == "" {
		return nil
	}
	n := &r.root
	pos := 0
	for {
		end := strings.IndexByte(topic[pos:], '/')
		if end < 0 {
			end = len(topic)
		} else {
			end += pos
		}
		n = n.children[topic[pos:end]]
		if n == nil || end == len(topic) {
			return n
		}
		pos = end + 1
	}
}

// Get returns the retained value of topic.
func (r *Retained[V]) Get(topic string) (V, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if n := r.find(topic); n != nil && n.has {
		return n.v, true
	}
	var zero V
	return zero, false
}

// Delete removes the retained value of topic and reports whether there
// was one.
func (r *Retained[V]) Delete(topic string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := r.find(topic)
	if n == nil || !n.has {
		return false
	}
	var zero V
	n.has, n.v, n.topic = false, zero, ""
	r.n--
	for n != &r.root && !n.has && len(n.children) == 0 {
		p := n.parent
		delete(p.children, n.token)
		if len(p.children) == 0 {
			p.children = nil
		}
		n.parent = nil
		n = p
	}
	return true
}

// Match calls fn for every retained topic matching filter, in no
// particular order, until fn returns false. Topics beginning with '$' are
// not matched by a filter whose first level is a wildcard
// [MQTT-4.7.2-1]. filter should have passed ValidateFilter; it is matched
// literally, so a "$share/..." filter must be split by the caller
// (retained messages are not sent for shared subscriptions anyway).
//
// fn is called without any lock held (see Retained).
func (r *Retained[V]) Match(filter string, fn func(topic string, v V) bool) {
	if filter == "" {
		return
	}
	if !strings.ContainsAny(filter, "+#") {
		if v, ok := r.Get(filter); ok {
			fn(filter, v)
		}
		return
	}
	buf := r.getBuf()
	r.mu.RLock()
	if filter[0] == '#' {
		*buf = slices.Grow(*buf, r.n)
	}
	rmatch(&r.root, filter, true, buf)
	r.mu.RUnlock()
	r.emit(buf, fn)
}

// Range calls fn for every retained topic, in no particular order, until
// fn returns false. fn is called without any lock held (see Retained).
func (r *Retained[V]) Range(fn func(topic string, v V) bool) {
	buf := r.getBuf()
	r.mu.RLock()
	*buf = slices.Grow(*buf, r.n)
	rall(&r.root, buf)
	r.mu.RUnlock()
	r.emit(buf, fn)
}

func (r *Retained[V]) getBuf() *[]kv[V] {
	if b, ok := r.pool.Get().(*[]kv[V]); ok {
		return b
	}
	return new([]kv[V])
}

func (r *Retained[V]) emit(buf *[]kv[V], fn func(string, V) bool) {
	for _, e := range *buf {
		if !fn(e.topic, e.v) {
			break
		}
	}
	if cap(*buf) > maxPooledBuf {
		return
	}
	clear(*buf) // do not keep values reachable from the pool
	*buf = (*buf)[:0]
	r.pool.Put(buf)
}

// rmatch collects into out the values under n matching filter, which is
// the remaining part of the filter to match against n's children.
func rmatch[V any](n *rnode[V], filter string, root bool, out *[]kv[V]) {
	for {
		i := strings.IndexByte(filter, '/')
		last := i < 0
		tok, rest := filter, ""
		if !last {
			tok, rest = filter[:i], filter[i+1:]
		}
		switch tok {
		case "#":
			// Matches the parent level ("a/#" matches "a") and all
			// descendants.
			if !root && n.has {
				*out = append(*out, kv[V]{n.topic, n.v})
			}
			for t, c := range n.children {
				if root && t != "" && t[0] == '$' {
					continue
				}
				rall(c, out)
			}
			return
		case "+":
			for t, c := range n.children {
				if root && t != "" && t[0] == '$' {
					continue
				}
				if last {
					if c.has {
						*out = append(*out, kv[V]{c.topic, c.v})
					}
				} else {
					rmatch(c, rest, false, out)
				}
			}
			return
		}
		n = n.children[tok]
		if n == nil {
			return
		}
		if last {
			if n.has {
				*out = append(*out, kv[V]{n.topic, n.v})
			}
			return
		}
		filter, root = rest, false
	}
}

// rall collects n and all its descendants.
func rall[V any](n *rnode[V], out *[]kv[V]) {
	if n.has {
		*out = append(*out, kv[V]{n.topic, n.v})
	}
	for _, c := range n.children {
		rall(c, out)
	}
}
