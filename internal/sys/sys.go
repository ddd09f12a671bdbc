// Package sys publishes the broker's status under $SYS/broker/..., in the
// layout Mosquitto uses, so that existing dashboards and scripts work
// unchanged.
//
// Every interval the Publisher reads the broker's counters and publishes,
// retained at QoS 0 through Server.Publish, each topic whose value changed
// since the last update (uptime changes every time). $SYS/broker/version is
// published once, at start. The load averages are Mosquitto's: per-minute
// rates smoothed exponentially over 1, 5 and 15 minutes.
//
// Differences from Mosquitto, all documented in docs/configuration.md:
// "messages" counters count PUBLISH packets (Mosquitto counts every MQTT
// packet there, and PUBLISH only under publish/...); store/messages/count
// is retained + queued + in-flight messages and store/messages/bytes the
// payload bytes of retained messages; publish/bytes/* and
// shared_subscriptions/count are not published.
package sys

import (
	"fmt"
	"github.com/isobar-mq/isobar/internal/version"
	"log/slog"
	"math"
	"runtime/metrics"
	"strconv"
	"sync"
	"time"

	"github.com/isobar-mq/isobar/internal/broker"
	"github.com/isobar-mq/isobar/internal/cluster"
)

// Prefix is the root of every topic published.
const Prefix = "$SYS/broker/"

// Options configures a Publisher.
type Options struct {
	// Interval between updates; <= 0 disables the publisher.
	Interval time.Duration
	// Version is published as "isobar version <Version>".
	Version string
	Log     *slog.Logger
}

// ClusterSource is what the publisher needs from the node's cluster. Its
// ClusterStatus must be quick: it is called at every update.
type ClusterSource interface {
	ClusterStatus() cluster.Status
}

// Publisher periodically publishes $SYS topics. Stop it with Stop.
type Publisher struct {
	srv  *broker.Server
	opts Options
	log  *slog.Logger

	clMu sync.Mutex
	cl   ClusterSource

	start time.Time
	quit  chan struct{}
	done  chan struct{}
	once  sync.Once

	// State of the previous update, owned by the publishing goroutine.
	last       map[string]string
	lastUpdate time.Time
	prev       counters
	loads      map[string]float64
	maxClients int
	maxHeap    uint64
	heapSample []metrics.Sample
}

// counters are the cumulative values the load averages are computed from.
type counters struct {
	msgsReceived, msgsSent, dropped, bytesReceived, bytesSent, sockets, connects uint64
}

// BuildVersion returns the version of this build (see package version).
func BuildVersion() string { return version.String() }

// Start publishes the version and a first update at once, then updates
// every opts.Interval. It returns nil when opts.Interval <= 0.
func Start(srv *broker.Server, opts Options) *Publisher {
	if opts.Interval <= 0 {
		return nil
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.Version == "" {
		opts.Version = BuildVersion()
	}
	p := &Publisher{
		srv: srv, opts: opts, log: opts.Log, start: time.Now(),
		quit: make(chan struct{}), done: make(chan struct{}),
		last: make(map[string]string), loads: make(map[string]float64),
		heapSample: []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}},
	}
	p.publish("version", "isobar version "+opts.Version)
	p.update(time.Now())
	go p.run()
	return p
}

// Stop ends the publisher and waits for it. Safe on nil and more than once.
func (p *Publisher) Stop() {
	if p == nil {
		return
	}
	p.once.Do(func() { close(p.quit) })
	<-p.done
}

// SetCluster adds the cluster/... topics, read from c from the next
// update on; nil stops updating them (the last values stay retained). Safe
// on a nil Publisher ($SYS disabled) and at any time.
func (p *Publisher) SetCluster(c ClusterSource) {
	if p == nil {
		return
	}
	p.clMu.Lock()
	p.cl = c
	p.clMu.Unlock()
}

func (p *Publisher) clusterSource() ClusterSource {
	p.clMu.Lock()
	defer p.clMu.Unlock()
	return p.cl
}

func (p *Publisher) run() {
	defer close(p.done)
	t := time.NewTicker(p.opts.Interval)
	defer t.Stop()
	for {
		select {
		case <-p.quit:
			return
		case now := <-t.C:
			if p.srv.ShuttingDown() {
				return
			}
			p.update(now)
		}
	}
}

// publish sends one retained QoS 0 message under Prefix.
func (p *Publisher) publish(topic, value string) {
	if err := p.srv.Publish(&broker.Message{Topic: Prefix + topic, Payload: []byte(value), Retain: true}); err != nil {
		p.log.Warn("$SYS publish failed", "topic", Prefix+topic, "err", err)
	}
}

// set publishes topic if its value changed since the last update.
func (p *Publisher) set(topic, value string) {
	if old, ok := p.last[topic]; ok && old == value {
		return
	}
	p.last[topic] = value
	p.publish(topic, value)
}

func (p *Publisher) setInt(topic string, v int64) { p.set(topic, strconv.FormatInt(v, 10)) }
func (p *Publisher) setU(topic string, v uint64)  { p.set(topic, strconv.FormatUint(v, 10)) }

// load updates one exponentially-weighted per-minute rate the way
// Mosquitto does: new = rate + e^(-dt/window) * (old - rate), published
// with two decimals when it moved by 0.01 or more (always the first time).
func (p *Publisher) load(topic string, initial bool, exponent, rate float64) {
	cur := p.loads[topic]
	var v float64
	if initial {
		v = cur
	} else {
		v = rate + exponent*(cur-rate)
		if math.Abs(v-cur) < 0.01 {
			p.loads[topic] = v
			return
		}
	}
	p.loads[topic] = v
	p.last[topic] = fmt.Sprintf("%.2f", v)
	p.publish(topic, p.last[topic])
}

func (p *Publisher) update(now time.Time) {
	s := p.srv
	sn := s.Stats().Snapshot()
	tot := s.Totals()

	p.set("uptime", strconv.FormatInt(int64(now.Sub(p.start)/time.Second), 10)+" seconds")

	// Clients: total is every session (connected or persistent),
	// disconnected the persistent ones without a connection.
	total := tot.SessionsOnline + tot.SessionsOffline
	p.setInt("clients/total", int64(total))
	if total > p.maxClients || p.last["clients/maximum"] == "" {
		p.maxClients = max(p.maxClients, total)
		p.setInt("clients/maximum", int64(p.maxClients))
	}
	connected := int64(s.ClientCount())
	p.setInt("clients/connected", connected)
	p.setInt("clients/active", connected)
	p.setInt("clients/disconnected", int64(tot.SessionsOffline))
	p.setInt("clients/inactive", int64(tot.SessionsOffline))
	p.setU("clients/expired", sn.SessionsExpired)

	cur := counters{
		msgsReceived: sn.MessagesReceived, msgsSent: sn.MessagesSent,
		dropped: sn.DroppedQueueFull + sn.DroppedExpired + sn.DroppedSlowConsumer + sn.DroppedNotAuthorized +
			sn.DroppedTooLarge + sn.DroppedOffline + sn.DroppedSessionEnd,
		bytesReceived: sn.BytesReceived, bytesSent: sn.BytesSent,
		sockets: sn.ConnectionsTotal, connects: sn.ConnectsTotal,
	}
	initial := p.lastUpdate.IsZero()
	dt := now.Sub(p.lastUpdate).Seconds()
	if initial || dt <= 0 {
		dt = 1
	}
	perMin := func(now, before uint64) float64 { return float64(now-before) * 60 / dt }
	rates := []struct {
		topic string
		rate  float64
	}{
		{"load/messages/received", perMin(cur.msgsReceived, p.prev.msgsReceived)},
		{"load/messages/sent", perMin(cur.msgsSent, p.prev.msgsSent)},
		{"load/publish/dropped", perMin(cur.dropped, p.prev.dropped)},
		{"load/publish/received", perMin(cur.msgsReceived, p.prev.msgsReceived)},
		{"load/publish/sent", perMin(cur.msgsSent, p.prev.msgsSent)},
		{"load/bytes/received", perMin(cur.bytesReceived, p.prev.bytesReceived)},
		{"load/bytes/sent", perMin(cur.bytesSent, p.prev.bytesSent)},
		{"load/sockets", perMin(cur.sockets, p.prev.sockets)},
		{"load/connections", perMin(cur.connects, p.prev.connects)},
	}
	for _, w := range []struct {
		suffix  string
		minutes float64
	}{{"1min", 1}, {"5min", 5}, {"15min", 15}} {
		exponent := math.Exp(-dt / (60 * w.minutes))
		for _, r := range rates {
			p.load(r.topic+"/"+w.suffix, initial, exponent, r.rate)
		}
	}
	p.prev = cur
	p.lastUpdate = now

	retained, retainedBytes := s.RetainedPayloadBytes()
	stored := int64(retained + tot.Queued + tot.Inflight)
	p.setInt("messages/stored", stored)
	p.setInt("store/messages/count", stored)
	p.setInt("store/messages/bytes", retainedBytes)
	p.setInt("subscriptions/count", int64(s.SubscriptionCount()))
	p.setInt("retained messages/count", int64(retained))

	metrics.Read(p.heapSample)
	if v := p.heapSample[0].Value; v.Kind() == metrics.KindUint64 {
		heap := v.Uint64()
		p.setU("heap/current", heap)
		p.maxHeap = max(p.maxHeap, heap)
		p.setU("heap/maximum", p.maxHeap)
	}

	p.setU("messages/received", cur.msgsReceived)
	p.setU("messages/sent", cur.msgsSent)
	p.setU("publish/messages/dropped", cur.dropped)
	p.setU("publish/messages/received", cur.msgsReceived)
	p.setU("publish/messages/sent", cur.msgsSent)
	p.setU("bytes/received", cur.bytesReceived)
	p.setU("bytes/sent", cur.bytesSent)

	if c := p.clusterSource(); c != nil {
		p.updateCluster(c.ClusterStatus())
	}
}

// updateCluster publishes the cluster/... topics of st.
func (p *Publisher) updateCluster(st cluster.Status) {
	alive, links := 0, 0
	for _, m := range st.Members {
		if m.State == "alive" {
			alive++
		}
		if !m.Local && m.Link == "up" {
			links++
		}
	}
	p.set("cluster/node", st.Node)
	p.setInt("cluster/nodes", int64(len(st.Members)))
	p.setInt("cluster/nodes/alive", int64(alive))
	p.setInt("cluster/links/up", int64(links))
}
