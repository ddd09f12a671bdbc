package broker

import (
	"time"

	"github.com/isobar-mq/isobar/internal/hlc"
	"github.com/isobar-mq/isobar/internal/mqtt/packet"
	"github.com/isobar-mq/isobar/internal/store"
)

// Options configures a Server. The zero value of every field means "use the
// default" documented on the field; DefaultOptions returns them filled in.
type Options struct {
	// NodeName identifies this server in logs and (later) in the cluster.
	NodeName string

	// MaxPacketSize is the largest packet accepted from clients, in bytes
	// (the whole packet), advertised to v5 clients. Default 1 MiB (as
	// EMQX); MaxPacketSizeUnlimited means the protocol maximum (268,435,455
	// plus header), in which case no Maximum Packet Size is advertised.
	MaxPacketSize uint32

	// ReceiveMaximum is the number of unacknowledged QoS 1/2 PUBLISH packets
	// a client may have in flight towards the server (advertised in the v5
	// CONNACK). Default 20.
	ReceiveMaximum uint16

	// MaxInflight caps unacknowledged QoS 1/2 messages sent to one client;
	// the client's own Receive Maximum lowers it further. Default 20.
	MaxInflight int

	// MaxQueued caps messages queued in a session beyond the in-flight
	// window (offline or flow-controlled). Default 1000. Messages arriving
	// to a full queue are dropped and counted.
	MaxQueued int

	// QueueQoS0 also queues QoS 0 messages for offline persistent sessions.
	QueueQoS0 bool

	// MaxClientIDLen is the longest accepted client identifier in bytes.
	// Default 65535 (no limit beyond the protocol's).
	MaxClientIDLen int

	// MaxTopicLen and MaxTopicLevels limit topic names and filters.
	// Defaults 65535 bytes and 128 levels (EMQX's; Mosquitto hard-limits
	// 200); a negative MaxTopicLevels means unlimited.
	MaxTopicLen    int
	MaxTopicLevels int

	// MaxConnections caps concurrent client connections (0 = unlimited).
	MaxConnections int

	// MaxKeepAlive caps the keep-alive a client may ask for, in seconds.
	// v5 clients asking for more (or 0) are told the cap via Server Keep
	// Alive; v3 clients are held to the cap. Default 65535 (no cap).
	MaxKeepAlive uint16

	// TopicAliasMaximum is the highest inbound topic alias accepted from v5
	// clients (advertised in CONNACK). Default 10; negative disables.
	TopicAliasMaximum int

	// MaxQoS is the highest QoS supported (0, 1 or 2). Default 2.
	MaxQoS int

	// Feature switches, all on by default (set the Disable* fields).
	DisableRetain                  bool
	DisableWildcardSubscriptions   bool
	DisableSubscriptionIdentifiers bool
	DisableSharedSubscriptions     bool

	// MaxSessionExpiry caps the v5 Session Expiry Interval in seconds; 0 =
	// no cap. Persistent v3 sessions (clean session 0) use
	// PersistentSessionExpiry (0 = never expire).
	MaxSessionExpiry        uint32
	PersistentSessionExpiry uint32

	// MaxPendingBytes bounds bytes queued for writing to one client. QoS 0
	// messages beyond it are dropped (counted); a client whose pending
	// output exceeds twice this is disconnected as a slow consumer.
	// Default 8 MiB.
	MaxPendingBytes int

	// WriteTimeout disconnects a client whose socket accepts no data for
	// this long while output is pending (slow consumer). Default 10 s.
	WriteTimeout time.Duration

	// ConnectTimeout is how long a new connection has to send CONNECT.
	// Default 10 s.
	ConnectTimeout time.Duration

	// ShutdownTimeout bounds graceful shutdown. Default 5 s.
	ShutdownTimeout time.Duration

	// MaxSubscriptionsPerClient caps subscriptions per session. Default
	// 10,000; negative = no cap.
	MaxSubscriptionsPerClient int

	// MaxFiltersPerSubscribe caps the topic filters one SUBSCRIBE may
	// carry; the ones beyond it are refused in SUBACK (0x97 / 0x80).
	// Default 100; negative = no cap.
	MaxFiltersPerSubscribe int

	// MaxConnectSize caps the CONNECT packet (the only one read before
	// authentication), in bytes. Default 64 KiB.
	MaxConnectSize uint32

	// MaxQueuedBytes caps the memory one session's held messages (queued
	// and in flight) may use; MaxQueuedBytesTotal caps it for all sessions
	// together. Messages that do not fit are dropped and counted.
	// Defaults 64 MiB and 2 GiB; negative = no cap.
	MaxQueuedBytes      int64
	MaxQueuedBytesTotal int64

	// AllowForeignTakeover lets a client authenticated as another user
	// take over (or resume, or discard) an existing session. Off by
	// default: a session belongs to the user that created it, and a
	// CONNECT from someone else with its client identifier is refused
	// (v5 0x87, v3 return code 5).
	AllowForeignTakeover bool

	// Cluster seams (internal/cluster sets them; nil for a single node).
	// Interest is told about changes of local interest; Retained about
	// local retained-message changes; Directory keeps client identifiers
	// unique across nodes; Clock stamps retained messages and connects
	// (a hybrid logical clock shared with the cluster layer).
	Interest  InterestObserver
	Retained  RetainObserver
	Directory SessionDirectory
	Clock     *hlc.Clock

	// HoldTimeout bounds how long a commit waits for subscribers that hold
	// it (remote nodes, bridges). Default 10 s.
	HoldTimeout time.Duration

	// Listeners holds per-listener limits, by listener name.
	Listeners map[string]ListenerLimits

	// ConnectionRate limits new connections per source address (per
	// second, with ConnectionBurst); 0 = no limit. A client over it is
	// refused with CONNACK 0x9F (v5) or 0x03 (v3).
	ConnectionRate  float64
	ConnectionBurst int

	// PublishRate (messages per second, burst PublishBurst) and
	// PublishByteRate (bytes per second, burst PublishByteBurst) limit what
	// one client may publish; 0 = no limit. Messages over the limit are
	// dropped and counted; MQTT 5 clients get PUBACK/PUBREC 0x97 (Quota
	// exceeded) for QoS 1/2.
	PublishRate      float64
	PublishBurst     int
	PublishByteRate  float64
	PublishByteBurst int

	// Store keeps sessions, their messages and retained messages durable
	// across restarts; nil keeps everything in memory only. Call
	// Server.Restore before serving to load what it holds.
	Store store.Store
}

// Packet size limits.
const (
	DefaultMaxPacketSize   uint32 = 1 << 20
	MaxPacketSizeUnlimited uint32 = packet.MaxRemainingLength + 5
)

// DefaultOptions returns the defaults documented on Options.
func DefaultOptions() Options {
	var o Options
	o.setDefaults()
	return o
}

func (o *Options) setDefaults() {
	if o.NodeName == "" {
		o.NodeName = "isobar"
	}
	if o.MaxPacketSize == 0 {
		o.MaxPacketSize = DefaultMaxPacketSize
	}
	if o.MaxPacketSize > MaxPacketSizeUnlimited {
		o.MaxPacketSize = MaxPacketSizeUnlimited
	}
	if o.MaxConnectSize == 0 {
		o.MaxConnectSize = 64 << 10
	}
	if o.MaxTopicLevels == 0 {
		o.MaxTopicLevels = 128
	}
	if o.MaxTopicLevels < 0 {
		o.MaxTopicLevels = 0
	}
	if o.MaxSubscriptionsPerClient == 0 {
		o.MaxSubscriptionsPerClient = 10000
	}
	if o.MaxSubscriptionsPerClient < 0 {
		o.MaxSubscriptionsPerClient = 0
	}
	if o.MaxFiltersPerSubscribe == 0 {
		o.MaxFiltersPerSubscribe = 100
	}
	if o.MaxFiltersPerSubscribe < 0 {
		o.MaxFiltersPerSubscribe = 0
	}
	if o.MaxQueuedBytes == 0 {
		o.MaxQueuedBytes = 64 << 20
	}
	if o.MaxQueuedBytes < 0 {
		o.MaxQueuedBytes = 1 << 62
	}
	if o.MaxQueuedBytesTotal == 0 {
		o.MaxQueuedBytesTotal = 2 << 30
	}
	if o.MaxQueuedBytesTotal < 0 {
		o.MaxQueuedBytesTotal = 1 << 62
	}
	if o.HoldTimeout <= 0 {
		o.HoldTimeout = 10 * time.Second
	}
	if o.ReceiveMaximum == 0 {
		o.ReceiveMaximum = 20
	}
	if o.MaxInflight <= 0 {
		o.MaxInflight = 20
	}
	if o.MaxInflight > 65535 {
		o.MaxInflight = 65535
	}
	if o.MaxQueued <= 0 {
		o.MaxQueued = 1000
	}
	// QoS 1/2 messages hold a packet identifier from the moment they enter
	// a session, so queue and window share the 16-bit identifier space.
	if o.MaxQueued > 65535-o.MaxInflight {
		o.MaxQueued = 65535 - o.MaxInflight
	}
	if o.MaxClientIDLen <= 0 {
		o.MaxClientIDLen = 65535
	}
	if o.MaxTopicLen <= 0 {
		o.MaxTopicLen = 65535
	}
	if o.MaxKeepAlive == 0 {
		o.MaxKeepAlive = 65535
	}
	if o.TopicAliasMaximum == 0 {
		o.TopicAliasMaximum = 10
	}
	if o.TopicAliasMaximum < 0 {
		o.TopicAliasMaximum = 0
	}
	if o.TopicAliasMaximum > 65535 {
		o.TopicAliasMaximum = 65535
	}
	if o.MaxQoS == 0 {
		o.MaxQoS = 2
	}
	if o.MaxQoS < 0 {
		o.MaxQoS = 0
	}
	if o.MaxPendingBytes <= 0 {
		o.MaxPendingBytes = 8 << 20
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = 10 * time.Second
	}
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = 10 * time.Second
	}
	if o.ShutdownTimeout <= 0 {
		o.ShutdownTimeout = 5 * time.Second
	}
}

// advertisedMaxPacket reports whether a Maximum Packet Size must be put in
// CONNACK (only when it is below the protocol maximum).
func (o *Options) advertisedMaxPacket() bool {
	return o.MaxPacketSize < packet.MaxRemainingLength+5
}
