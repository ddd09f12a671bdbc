// Package bench is Isobar's MQTT load generator: the engine behind
// cmd/isobar-bench (and, later, `isobar bench`) and the benchmarks recorded
// in docs/benchmarks.md.
//
// Scenarios follow emqtt-bench and EMQ's open MQTT benchmark: conn (open N
// connections and hold them), pub, sub, p2p (publisher/subscriber pairs, one
// topic each), fanin (many publishers, one wildcard subscriber), fanout (one
// publisher, many subscribers) and shared (publishers feeding a $share group).
//
// The client is written directly on Isobar's codec (internal/mqtt/packet):
// one reader goroutine per connection, writes batched in a buffered writer
// that is flushed when the sender has nothing more to send, and no
// allocation per message in steady state, so that on a small machine the
// generator is not the bottleneck.
//
// Every payload starts with a 20-byte header (see EncodeHeader): the send
// time in Unix nanoseconds, the publisher's sequence number and the
// publisher's index. Receivers use it for end-to-end latency (an HDR
// histogram) and for exact accounting per subscriber: lost, duplicated and
// out-of-order messages (see Tracker).
//
// Two drivers start brokers and run scenarios against them: compare
// (Isobar against Mosquitto and mochi-mqtt, compare.go) and cluster (one
// Isobar node against an Isobar cluster, publishers and subscribers on
// different nodes through Config.PubAddrs and SubAddrs, cluster.go).
package bench
