package cluster

import (
	"time"

	"github.com/isobar-mq/isobar/internal/broker"
	"github.com/isobar-mq/isobar/internal/store"
)

// Retained messages are replicated to every node. Each version carries a
// hybrid logical clock stamp and the id of the node that made it; the
// higher (stamp, node) wins everywhere (broker.RetainedNewer). Deletions
// are versions too, remembered as tombstones for Config.TombstoneTTL so
// that a node which missed one (down, or on the other side of a split)
// cannot bring the message back. Changes are pushed to every peer as they
// happen; when a link comes up both sides exchange digests (topic, stamp,
// node of every version they hold) and each sends the other what it has
// newer or the other lacks.

type tombstone struct {
	stamp, node uint64
	at          time.Time
}

type retainObserver Node

// RetainedChanged implements broker.RetainObserver.
func (o *retainObserver) RetainedChanged(m *broker.Message) {
	n := (*Node)(o)
	n.tombMu.Lock()
	if len(m.Payload) == 0 {
		n.tombstones[m.Topic] = tombstone{stamp: m.Stamp, node: m.ID.Node, at: time.Now()}
	} else {
		delete(n.tombstones, m.Topic)
	}
	n.tombMu.Unlock()
	body := encodeRetained(m)
	for _, p := range n.livePeers() {
		if l := p.link(); l != nil {
			l.Send(FrameRetain, body, true)
		}
	}
}

func encodeRetained(m *broker.Message) []byte {
	r := broker.MessageToRecord(m)
	r.Retain = true
	var e Enc
	e.Bytes(store.AppendMessage(nil, r))
	return e.B
}

// applyRetainFrame applies a peer's retained version if it wins.
func (n *Node) applyRetainFrame(body []byte) error {
	d := Dec{B: body}
	b := d.Bytes()
	if d.Err != nil {
		return d.Err
	}
	var r store.MessageRecord
	if err := store.DecodeMessage(b, &r); err != nil {
		return err
	}
	n.applyRetained(broker.MessageFromRecord(&r))
	return nil
}

func (n *Node) applyRetained(m *broker.Message) {
	n.clock.Update(m.Stamp)
	n.tombMu.Lock()
	if t, ok := n.tombstones[m.Topic]; ok && !broker.RetainedNewer(m.Stamp, m.ID.Node, t.stamp, t.node) {
		n.tombMu.Unlock()
		return // deleted later than this version was made
	}
	if len(m.Payload) == 0 {
		n.tombstones[m.Topic] = tombstone{stamp: m.Stamp, node: m.ID.Node, at: time.Now()}
	} else {
		delete(n.tombstones, m.Topic)
	}
	n.tombMu.Unlock()
	if n.srv.ApplyRetained(m) {
		n.met.retainedApplied.Inc()
	}
}

func (n *Node) pruneTombstones() {
	cut := time.Now().Add(-n.cfg.TombstoneTTL)
	n.tombMu.Lock()
	for t, ts := range n.tombstones {
		if ts.at.Before(cut) {
			delete(n.tombstones, t)
		}
	}
	n.tombMu.Unlock()
}

// version is one entry of a digest.
type version struct {
	stamp, node uint64
	deleted     bool
}

// retainedVersions lists every version held here: messages and
// tombstones.
func (n *Node) retainedVersions() map[string]version {
	out := make(map[string]version)
	n.srv.RetainedSnapshot(func(m *broker.Message) bool {
		out[m.Topic] = version{stamp: m.Stamp, node: m.ID.Node}
		return true
	})
	n.tombMu.Lock()
	for t, ts := range n.tombstones {
		if v, ok := out[t]; !ok || broker.RetainedNewer(ts.stamp, ts.node, v.stamp, v.node) {
			out[t] = version{stamp: ts.stamp, node: ts.node, deleted: true}
		}
	}
	n.tombMu.Unlock()
	return out
}

const digestChunk = 4096

// sendRetainedDigest sends our versions on a link, in chunks; the last
// chunk is flagged.
func (n *Node) sendRetainedDigest(l *Link) {
	vs := n.retainedVersions()
	var e Enc
	cnt := 0
	flush := func(last bool) {
		var h Enc
		h.Bool(last)
		h.Uvarint(uint64(cnt))
		h.B = append(h.B, e.B...)
		l.Send(FrameRetainDigest, h.B, true)
		e.B, cnt = e.B[:0], 0
	}
	for t, v := range vs {
		e.String(t)
		e.U64(v.stamp)
		e.U64(v.node)
		e.Bool(v.deleted)
		cnt++
		if cnt == digestChunk {
			flush(false)
		}
	}
	flush(true)
}

// answerRetainedDigest collects a peer's digest; at its last chunk, sends
// the peer every version we hold that wins over its own or that it lacks,
// back on the link the digest came on (whatever the state of our own link
// to the peer).
func (n *Node) answerRetainedDigest(l *Link, p *peer, body []byte) error {
	d := Dec{B: body}
	last := d.Bool()
	cnt := d.Uvarint()
	if cnt > digestChunk {
		return ErrShortBody
	}
	p.mu.Lock()
	if p.digest == nil {
		p.digest = make(map[string]version)
	}
	acc := p.digest
	p.mu.Unlock()
	for range cnt {
		t := d.String()
		v := version{stamp: d.U64(), node: d.U64(), deleted: d.Bool()}
		if d.Err != nil {
			return d.Err
		}
		acc[t] = v
		n.clock.Update(v.stamp)
	}
	if !last {
		return nil
	}
	p.mu.Lock()
	p.digest = nil
	p.mu.Unlock()
	mine := n.retainedVersions()
	sent := 0
	for t, v := range mine {
		theirs, ok := acc[t]
		if ok && !broker.RetainedNewer(v.stamp, v.node, theirs.stamp, theirs.node) {
			continue
		}
		if !ok && v.deleted {
			continue // it never had it
		}
		var m *broker.Message
		if v.deleted {
			m = &broker.Message{Topic: t, Retain: true, Stamp: v.stamp, ID: broker.MessageID{Node: v.node}}
		} else if rm, ok := n.srv.RetainedMessage(t); ok {
			m = rm
		} else {
			continue
		}
		l.Send(FrameRetain, encodeRetained(m), true)
		sent++
	}
	if sent > 0 {
		n.log.Info("cluster: retained messages sent to converge", "node", p.name, "count", sent)
	}
	return nil
}
