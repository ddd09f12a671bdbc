package bridge

import (
	"context"
	"encoding/json"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/isobar-mq/isobar/internal/broker"
)

// collector exports the links' status at scrape time.
type collector struct{ e *Engine }

var (
	descConnected = prometheus.NewDesc("isobar_bridge_connected", "1 when the bridge is connected to its remote broker (on the node that runs it).", []string{"bridge"}, nil)
	descRunning   = prometheus.NewDesc("isobar_bridge_running", "1 when the bridge runs on this node.", []string{"bridge"}, nil)
	descSince     = prometheus.NewDesc("isobar_bridge_state_since_seconds", "Unix time of the bridge's last connection or loss.", []string{"bridge"}, nil)
	descIn        = prometheus.NewDesc("isobar_bridge_messages_in_total", "Messages received from the remote broker and published locally.", []string{"bridge"}, nil)
	descOut       = prometheus.NewDesc("isobar_bridge_messages_out_total", "Messages published to the remote broker (QoS 1/2: acknowledged).", []string{"bridge"}, nil)
	descBuffered  = prometheus.NewDesc("isobar_bridge_buffered_messages", "Outgoing messages waiting for the remote broker.", []string{"bridge"}, nil)
	descBufBytes  = prometheus.NewDesc("isobar_bridge_buffered_bytes", "Approximate size of the outgoing buffer.", []string{"bridge"}, nil)
	descDropped   = prometheus.NewDesc("isobar_bridge_dropped_total", "Messages not forwarded, by reason: buffer_full, loop, max_hops, duplicate, refused.", []string{"bridge", "reason"}, nil)
	descReconn    = prometheus.NewDesc("isobar_bridge_reconnects_total", "Successful connections after the first.", []string{"bridge"}, nil)
	descPushed    = prometheus.NewDesc("isobar_bridge_pushed_dropped_total", "Messages other brokers' links published here that loop prevention dropped, by reason: loop, max_hops, duplicate.", []string{"reason"}, nil)
	descDemand    = prometheus.NewDesc("isobar_bridge_demand_subscriptions", "Remote subscriptions made for local interest (demand links).", []string{"bridge"}, nil)
)

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descConnected, descRunning, descSince, descIn, descOut, descBuffered, descBufBytes, descDropped, descReconn, descDemand, descPushed} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	b2f := func(b bool) float64 {
		if b {
			return 1
		}
		return 0
	}
	for reason, v := range map[string]uint64{"loop": c.e.pushedLoop.Load(), "max_hops": c.e.pushedHops.Load(), "duplicate": c.e.pushedDup.Load()} {
		ch <- prometheus.MustNewConstMetric(descPushed, prometheus.CounterValue, float64(v), reason)
	}
	for _, s := range c.e.Status() {
		g := func(d *prometheus.Desc, v float64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, s.Name)
		}
		cnt := func(d *prometheus.Desc, v uint64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), s.Name)
		}
		g(descConnected, b2f(s.Connected))
		g(descRunning, b2f(s.Running))
		if !s.Since.IsZero() {
			g(descSince, float64(s.Since.UnixNano())/1e9)
		}
		cnt(descIn, s.In)
		cnt(descOut, s.Out)
		g(descBuffered, float64(s.Buffered))
		g(descBufBytes, float64(s.BufferedBytes))
		cnt(descReconn, s.Reconnects)
		g(descDemand, float64(len(s.Demand)))
		for reason, v := range map[string]uint64{"buffer_full": s.DroppedFull, "loop": s.DroppedLoop, "max_hops": s.DroppedHops,
			"duplicate": s.DroppedDup, "refused": s.DroppedRefused} {
			ch <- prometheus.MustNewConstMetric(descDropped, prometheus.CounterValue, float64(v), s.Name, reason)
		}
	}
}

// sysLoop publishes each running link's state to $SYS: mosquitto's
// $SYS/broker/connection/<name>/state ("1" connected, "0" not, retained)
// and $SYS/broker/bridges/<name>/status (the Status as JSON, retained).
func (e *Engine) sysLoop() {
	defer e.wg.Done()
	t := time.NewTicker(e.sysIv)
	defer t.Stop()
	for {
		e.publishSys()
		select {
		case <-e.quit:
			return
		case <-t.C:
		}
	}
}

func (e *Engine) publishSys() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, s := range e.Status() {
		if !s.Running || ctx.Err() != nil {
			continue
		}
		state := "0"
		if s.Connected {
			state = "1"
		}
		body, _ := json.Marshal(s)
		for topic, payload := range map[string][]byte{
			"$SYS/broker/connection/" + s.Name + "/state": []byte(state),
			"$SYS/broker/bridges/" + s.Name + "/status":   body,
		} {
			if err := e.srv.Publish(&broker.Message{Topic: topic, Payload: payload, Retain: true}); err != nil {
				e.log.Debug("bridge $SYS update failed", "topic", topic, "err", err)
			}
		}
	}
}
