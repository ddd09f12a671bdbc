// Package store is Isobar's durable state: sessions, their subscriptions,
// queued and in-flight messages, inbound QoS 2 packet identifiers awaiting
// PUBREL, will messages with a pending delay, and retained messages.
//
// The broker mutates state in memory and records every change in a Batch;
// a Batch is committed atomically, and Commit returns once the changes are
// as durable as the sync policy promises. Acknowledgements that depend on
// the changes are sent only after Commit returns.
//
// The Pebble implementation (Open) is the production store; the key and
// value encodings are versioned and documented in encoding.go. It refuses
// writes rather than crash when the disk is (nearly) full, and recovers
// when space returns (space.go); damaged files are errors naming them
// (corrupt.go, with Check and Reset behind `isobar store`). Faulty injects
// failures for tests of the store's users.
package store

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/isobar-mq/isobar/internal/mqtt/packet"
)

// SyncPolicy says when a commit is durable.
type SyncPolicy string

// Sync policies.
const (
	// SyncAlways fsyncs the write-ahead log before Commit returns.
	// Concurrent commits share one fsync (group commit).
	SyncAlways SyncPolicy = "always"
	// SyncInterval returns from Commit once the change is in the store's
	// in-memory log buffer, which is written and fsynced every
	// Options.SyncInterval (or when a log block fills): a crash of the
	// process or the machine may lose up to that window of acknowledged
	// changes.
	SyncInterval SyncPolicy = "interval"
)

// Message states of a MessageRecord.
const (
	StateQueued    byte = 0 // waiting: not yet sent to the client
	StatePublished byte = 1 // PUBLISH sent with PacketID, waiting for PUBACK/PUBREC
	StateReleased  byte = 2 // QoS 2: PUBREC received, PUBREL sent, waiting for PUBCOMP
)

// Origin kinds of a MessageRecord (OriginKind). The store does not
// interpret them: any byte round-trips.
const (
	OriginClient  uint8 = 0 // an MQTT client (From is its client identifier)
	OriginServer  uint8 = 1 // the server itself (REST API, $SYS)
	OriginBridge  uint8 = 2 // a bridge to another broker
	OriginGateway uint8 = 3 // a protocol gateway (STOMP)
	OriginCluster uint8 = 4 // another node of the cluster
)

// MessageRecord is an application message, plus, when it belongs to a
// session, how it is delivered to that session.
type MessageRecord struct {
	Topic    string
	Payload  []byte
	QoS      byte // as published
	Retain   bool // as published
	Props    packet.Properties
	Received int64  // unix nanoseconds (wall clock)
	Expiry   int64  // unix nanoseconds, 0 = never
	From     string // client identifier of the publisher ("" if none)

	// Identity and origin, for de-duplication across cluster nodes and
	// loop prevention across bridges. The store keeps them as given.
	IDNode     uint64 // hash of the name of the node that first accepted the message
	IDSeq      uint64 // sequence on that node; (IDNode, IDSeq) is unique in a cluster
	Hops       uint8  // broker-to-broker links (bridge, cluster) the message has crossed
	OriginKind uint8  // one of the Origin constants
	OriginName string // listener, bridge or gateway name ("" if none)
	// Stamp orders versions of a retained message across cluster nodes
	// (a hybrid logical clock timestamp; 0 = none).
	Stamp uint64

	// Delivery to a session (zero for retained and will messages).
	DeliverQoS    byte
	DeliverRetain bool
	SubIDs        []uint32
	Group         string // shared subscription "group/filter", "" if none
	State         byte
	PacketID      uint16
}

// SessionRecord is a persistent session's own state.
type SessionRecord struct {
	ClientID       string
	ExpiryInterval uint32 // seconds; 0xFFFFFFFF = never
	// DisconnectedAt is when the client went offline (unix nanoseconds),
	// 0 while it is connected. Expiry after a restart counts from it.
	DisconnectedAt int64
	Username       string
	// Role is the client's authorization role as the auth package numbers
	// it (0 = ordinary ACL-governed client), so a restored session is
	// authorized as what it was. The store does not interpret it.
	Role uint8
	// Will is the will of the current connection (while online: a crash
	// ends that connection abnormally, so the will is due after a
	// restart), or of the last one while its publication is pending
	// (delayed); nil otherwise. WillAt is when to publish it (unix
	// nanoseconds; 0 = not scheduled yet), WillDelay its Will Delay
	// Interval in seconds.
	Will      *MessageRecord
	WillAt    int64
	WillDelay uint32
	// NextPacketID is the last outbound packet identifier used.
	NextPacketID uint16
}

// SubscriptionRecord is one subscription of a session.
type SubscriptionRecord struct {
	Filter            string // full filter, including any $share/group/ prefix
	QoS               byte
	NoLocal           bool
	RetainAsPublished bool
	RetainHandling    byte
	ID                uint32
}

// LoadedSession is a session as read back at startup.
type LoadedSession struct {
	Session       SessionRecord
	Subscriptions []SubscriptionRecord
	// Messages in their original order (by sequence number).
	Messages []SeqMessage
	// Inbound holds QoS 2 packet identifiers received but not released.
	Inbound []uint16
	// Seen lists message ids (node, sequence) the session held or
	// completed lately, for its de-duplication after a move between
	// nodes. Never stored and not part of EncodeSession.
	Seen [][2]uint64
}

// SeqMessage is a session's message with its sequence number.
type SeqMessage struct {
	Seq uint64
	Msg MessageRecord
}

// Batch collects mutations applied atomically by Commit. A Batch is used
// by one goroutine at a time.
type Batch interface {
	PutSession(s *SessionRecord)
	// DeleteSession removes a session and everything stored under it
	// (subscriptions, messages, inbound identifiers).
	DeleteSession(clientID string)
	PutSubscription(clientID string, s *SubscriptionRecord)
	DeleteSubscription(clientID, filter string)
	PutMessage(clientID string, seq uint64, m *MessageRecord)
	DeleteMessage(clientID string, seq uint64)
	PutInbound(clientID string, packetID uint16)
	DeleteInbound(clientID string, packetID uint16)
	PutRetained(m *MessageRecord)
	DeleteRetained(topic string)
	// Len is the number of mutations recorded.
	Len() int
	// Commit applies the batch and waits per the sync policy. The batch
	// is empty and reusable afterwards. While the store is not writable
	// it fails at once with the error of Store.Writable (wrapping
	// ErrNoSpace or ErrDegraded) and applies nothing.
	Commit() error
	// CommitNoSync applies the batch without waiting for durability (it
	// becomes durable with the next synced commit). For changes whose loss
	// in a crash is harmless, such as removing acknowledged messages.
	CommitNoSync() error
}

// Stats describe the store for metrics.
type Stats struct {
	DiskBytes      uint64
	Commits        uint64
	Syncs          uint64
	SyncSecondsSum float64
	// Degraded is true while Writable reports an error.
	Degraded bool
	// FreeBytes is the free space of the data directory's file system
	// at the last check (0 if unknown).
	FreeBytes uint64
}

// Store is the durable state of one node.
type Store interface {
	NewBatch() Batch
	// LoadSessions calls fn for every stored session, in client id order.
	LoadSessions(fn func(*LoadedSession) error) error
	// LoadRetained calls fn for every retained message.
	LoadRetained(fn func(*MessageRecord) error) error
	Stats() Stats
	// Writable is nil when durable writes are possible, otherwise an
	// error wrapping ErrNoSpace (not enough free disk space; clears by
	// itself when space returns), ErrDegraded (writes failed otherwise)
	// or ErrClosed. It is cheap enough to call for every readiness probe.
	Writable() error
	Close() error
}

// snapshotMagic starts every EncodeSession value; snapshotV1 follows it.
const (
	snapshotMagic = "isobar-session"
	snapshotV1    = 1
)

// EncodeSession returns a self-contained, versioned snapshot of a whole
// session (its record, subscriptions, messages with their sequence
// numbers, inbound QoS 2 ids), for moving a session between nodes. The
// format is documented in encoding.go. The snapshot is canonical:
// subscriptions are written in filter order, messages in sequence order,
// inbound ids in increasing order, whatever the order in ls (ls is not
// modified). ls must be a valid session as LoadSessions returns one:
// filters, sequence numbers and inbound ids unique, no U+0000 in the client
// id; DecodeSession rejects a snapshot of anything else.
func EncodeSession(ls *LoadedSession) []byte {
	subs := ls.Subscriptions
	if !slices.IsSortedFunc(subs, cmpSub) {
		subs = slices.SortedStableFunc(slices.Values(subs), cmpSub)
	}
	msgs := ls.Messages
	if !slices.IsSortedFunc(msgs, cmpSeq) {
		msgs = slices.SortedStableFunc(slices.Values(msgs), cmpSeq)
	}
	inb := ls.Inbound
	if !slices.IsSorted(inb) {
		inb = slices.Sorted(slices.Values(inb))
	}

	dst := append(make([]byte, 0, 256), snapshotMagic...)
	dst = append(dst, snapshotV1)
	dst = appendStr(dst, ls.Session.ClientID)
	var scratch []byte
	scratch = appendSession(scratch[:0], &ls.Session)
	dst = appendBytes(dst, scratch)
	dst = binary.AppendUvarint(dst, uint64(len(subs)))
	for i := range subs {
		dst = appendStr(dst, subs[i].Filter)
		scratch = appendSubscription(scratch[:0], &subs[i])
		dst = appendBytes(dst, scratch)
	}
	dst = binary.AppendUvarint(dst, uint64(len(msgs)))
	for i := range msgs {
		m := &msgs[i].Msg
		dst = binary.AppendUvarint(dst, msgs[i].Seq)
		h := messageHeadLen(m)
		dst = binary.AppendUvarint(dst, uint64(1+uvarintLen(uint64(h))+h+len(m.Payload)))
		dst = appendMessageHead(dst, m, h)
	}
	dst = binary.AppendUvarint(dst, uint64(len(inb)))
	for _, id := range inb {
		dst = binary.AppendUvarint(dst, uint64(id))
	}
	return dst
}

func cmpSub(a, b SubscriptionRecord) int { return strings.Compare(a.Filter, b.Filter) }
func cmpSeq(a, b SeqMessage) int         { return cmp.Compare(a.Seq, b.Seq) }

// DecodeSession decodes a snapshot written by EncodeSession. It rejects a
// value that is not one (wrong magic, unknown snapshot version), any
// corrupt embedded record, records out of order or repeated, and trailing
// bytes, and never panics. The result does not alias b.
func DecodeSession(b []byte) (*LoadedSession, error) {
	ls, err := decodeSnapshot(b)
	if err != nil {
		return nil, fmt.Errorf("store: session snapshot: %w", err)
	}
	return ls, nil
}

func decodeSnapshot(b []byte) (*LoadedSession, error) {
	if len(b) < len(snapshotMagic)+1 || string(b[:len(snapshotMagic)]) != snapshotMagic {
		return nil, errors.New("not a session snapshot")
	}
	if v := b[len(snapshotMagic)]; v != snapshotV1 {
		return nil, fmt.Errorf("unknown snapshot version %d", v)
	}
	d := decoder{b: b[len(snapshotMagic)+1:]}
	ls := new(LoadedSession)
	clientID := d.str("client id")
	sv := d.bytes("session")
	if d.err != nil {
		return nil, d.err
	}
	if !validKeyString(clientID) {
		return nil, errNUL
	}
	if err := decodeSession(sv, &ls.Session); err != nil {
		return nil, err
	}
	ls.Session.ClientID = clientID

	// Every element takes at least two bytes (one for inbound ids): bound
	// counts by what is left so a corrupt count cannot allocate more than
	// the snapshot's size.
	if n := d.uvarint("subscription count", uint64(d.left()/2)); n > 0 {
		ls.Subscriptions = make([]SubscriptionRecord, n)
		for i := range ls.Subscriptions {
			sub := &ls.Subscriptions[i]
			filter := d.str("filter")
			v := d.bytes("subscription")
			if d.err != nil {
				return nil, d.err
			}
			if err := decodeSubscription(v, sub); err != nil {
				return nil, fmt.Errorf("filter %q: %w", filter, err)
			}
			sub.Filter = filter
			if i > 0 && ls.Subscriptions[i-1].Filter >= filter {
				return nil, fmt.Errorf("subscription %q out of order or repeated", filter)
			}
		}
	}
	if n := d.uvarint("message count", uint64(d.left()/2)); n > 0 {
		ls.Messages = make([]SeqMessage, n)
		for i := range ls.Messages {
			sm := &ls.Messages[i]
			sm.Seq = d.uvarint("sequence number", math.MaxUint64)
			v := d.bytes("message")
			if d.err != nil {
				return nil, d.err
			}
			if err := decodeMessage(v, &sm.Msg); err != nil {
				return nil, fmt.Errorf("message %d: %w", sm.Seq, err)
			}
			if i > 0 && ls.Messages[i-1].Seq >= sm.Seq {
				return nil, fmt.Errorf("message %d out of order or repeated", sm.Seq)
			}
		}
	}
	if n := d.uvarint("inbound count", uint64(d.left())); n > 0 {
		ls.Inbound = make([]uint16, n)
		for i := range ls.Inbound {
			ls.Inbound[i] = uint16(d.uvarint("inbound packet id", math.MaxUint16))
			if d.err == nil && i > 0 && ls.Inbound[i-1] >= ls.Inbound[i] {
				return nil, fmt.Errorf("inbound id %d out of order or repeated", ls.Inbound[i])
			}
		}
	}
	if d.err != nil {
		return nil, d.err
	}
	if d.left() != 0 {
		return nil, fmt.Errorf("%d trailing bytes", d.left())
	}
	return ls, nil
}

// AppendMessage appends the encoding of a message record (the store's own
// value encoding, documented in encoding.go), for carrying messages
// between nodes. DecodeMessage reverses it; it never panics on bad input.
func AppendMessage(dst []byte, m *MessageRecord) []byte { return appendMessage(dst, m) }

// DecodeMessage decodes what AppendMessage wrote. The record's strings and
// payload alias b.
func DecodeMessage(b []byte, m *MessageRecord) error { return decodeMessage(b, m) }
