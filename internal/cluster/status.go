package cluster

import "time"

// Status is a point-in-time view of the cluster from one node, for the
// REST API, the dashboard, $SYS and `isobar ctl`.
type Status struct {
	// Node is this node's name.
	Node string `json:"node"`
	// State is this node's own state: "running", "draining" or "left".
	State string `json:"state"`
	// Members lists every known node, this one included, sorted by name.
	Members []MemberStatus `json:"members"`
	// LocalRoutes is the number of distinct filters this node's own
	// subscribers hold (what it advertises to the others).
	LocalRoutes int `json:"local_routes"`
	// RetainedTombstones counts remembered retained-message deletions.
	RetainedTombstones int `json:"retained_tombstones"`
	// Replication (zero when off): the configured copies per session,
	// persistent sessions owned here with replicas placed, those with
	// fewer replicas than configured, and copies held here for sessions
	// other nodes own.
	Replicas        int `json:"replicas"`
	Replicated      int `json:"replicated_sessions"`
	UnderReplicated int `json:"under_replicated_sessions"`
	ReplicaCopies   int `json:"replica_sessions"`
	// ReplicaMessages counts the messages in those copies; ReplicationLag
	// is how old the latest change applied here was when it arrived.
	ReplicaMessages int           `json:"replica_messages"`
	ReplicationLag  time.Duration `json:"replication_lag_ns"`
}

// MemberStatus is one node as seen from this one.
type MemberStatus struct {
	Name string `json:"name"`
	Addr string `json:"addr"`
	// State is the membership state: "alive", "suspect", "dead" or "left".
	State string `json:"state"`
	// Local is true for the node answering.
	Local bool `json:"local"`
	// Start is the node's incarnation (its start time).
	Start time.Time `json:"start"`
	// Link is the state of this node's outbound link to it: "up",
	// "connecting" or "down" ("" for the local node).
	Link      string    `json:"link,omitempty"`
	LinkSince time.Time `json:"link_since,omitzero"`
	// Routes is the number of filters the node advertised to this one.
	Routes int `json:"routes"`
	// QueuedBytes is what waits in the outbound link's buffer.
	QueuedBytes int `json:"queued_bytes"`
	// Inflight is the number of forwarded QoS 1/2 messages not yet
	// acknowledged by the node.
	Inflight int `json:"inflight"`
	// Forwarded, Received and Dropped count messages on the links.
	Forwarded uint64 `json:"forwarded"`
	Received  uint64 `json:"received"`
	Dropped   uint64 `json:"dropped"`
}
