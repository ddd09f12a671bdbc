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
// value encodings are versioned and documented in encoding.go.
package store

import "github.com/isobar-mq/isobar/internal/mqtt/packet"

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

// MessageRecord is an application message, plus, when it belongs to a
// session, how it is delivered to that session.
type MessageRecord struct {
	Topic    string
	Payload  []byte
	QoS      byte // as published
	Retain   bool // as published
	Props    packet.Properties
	Received int64 // unix nanoseconds (wall clock)
	Expiry   int64 // unix nanoseconds, 0 = never
	From     string

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
	// is empty and reusable afterwards.
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
}

// Store is the durable state of one node.
type Store interface {
	NewBatch() Batch
	// LoadSessions calls fn for every stored session, in client id order.
	LoadSessions(fn func(*LoadedSession) error) error
	// LoadRetained calls fn for every retained message.
	LoadRetained(fn func(*MessageRecord) error) error
	Stats() Stats
	Close() error
}
