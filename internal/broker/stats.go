package broker

import "sync/atomic"

// Stats are the server's counters. They are plain atomics updated on the
// hot path; the metrics layer reads them at scrape time.
type Stats struct {
	connectionsTotal     atomic.Uint64
	connectsTotal        atomic.Uint64
	connectRefused       atomic.Uint64
	authFailures         atomic.Uint64
	protocolErrors       atomic.Uint64
	takeovers            atomic.Uint64
	msgsReceived         atomic.Uint64
	msgsSent             atomic.Uint64
	bytesReceived        atomic.Uint64
	bytesSent            atomic.Uint64
	droppedQueueFull     atomic.Uint64
	droppedExpired       atomic.Uint64
	droppedSlow          atomic.Uint64
	droppedOffline       atomic.Uint64
	droppedTooLarge      atomic.Uint64
	droppedNotAuthorized atomic.Uint64
	droppedSessionEnd    atomic.Uint64
	slowConsumers        atomic.Uint64
	sessionsExpired      atomic.Uint64
	willsPublished       atomic.Uint64
	sharedRedispatched   atomic.Uint64
}

// Snapshot is a point-in-time copy of Stats.
type Snapshot struct {
	ConnectionsTotal, ConnectsTotal, ConnectRefused, AuthFailures, ProtocolErrors, Takeovers uint64
	MessagesReceived, MessagesSent, BytesReceived, BytesSent                                 uint64
	DroppedQueueFull, DroppedExpired, DroppedSlowConsumer, DroppedOffline                    uint64
	DroppedTooLarge, DroppedNotAuthorized, DroppedSessionEnd                                 uint64
	SlowConsumers, SessionsExpired, WillsPublished, SharedRedispatched                       uint64
}

// Snapshot reads every counter.
func (s *Stats) Snapshot() Snapshot {
	return Snapshot{
		ConnectionsTotal: s.connectionsTotal.Load(), ConnectsTotal: s.connectsTotal.Load(),
		ConnectRefused: s.connectRefused.Load(), AuthFailures: s.authFailures.Load(),
		ProtocolErrors: s.protocolErrors.Load(), Takeovers: s.takeovers.Load(),
		MessagesReceived: s.msgsReceived.Load(), MessagesSent: s.msgsSent.Load(),
		BytesReceived: s.bytesReceived.Load(), BytesSent: s.bytesSent.Load(),
		DroppedQueueFull: s.droppedQueueFull.Load(), DroppedExpired: s.droppedExpired.Load(),
		DroppedSlowConsumer: s.droppedSlow.Load(), DroppedOffline: s.droppedOffline.Load(),
		DroppedTooLarge: s.droppedTooLarge.Load(), DroppedNotAuthorized: s.droppedNotAuthorized.Load(),
		DroppedSessionEnd: s.droppedSessionEnd.Load(), SlowConsumers: s.slowConsumers.Load(),
		SessionsExpired: s.sessionsExpired.Load(), WillsPublished: s.willsPublished.Load(),
		SharedRedispatched: s.sharedRedispatched.Load(),
	}
}
