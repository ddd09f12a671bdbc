package metrics_test

import (
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/isobar-mq/isobar/internal/broker"
	"github.com/isobar-mq/isobar/internal/metrics"
	"github.com/isobar-mq/isobar/internal/testutil"
)

// mqttString encodes a length-prefixed MQTT string.
func mqttString(s string) []byte { return append([]byte{byte(len(s) >> 8), byte(len(s))}, s...) }

func frame(typ byte, body []byte) []byte {
	out := []byte{typ}
	n := len(body)
	for {
		b := byte(n % 128)
		n /= 128
		if n > 0 {
			b |= 0x80
		}
		out = append(out, b)
		if n == 0 {
			break
		}
	}
	return append(out, body...)
}

// loadBroker connects n raw v3.1.1 clients, each with one subscription and
// one retained message, and returns the collector.
func loadBroker(b *testing.B, n int) (*broker.Server, *metrics.Collector) {
	srv, col, addr := startBroker(b, broker.Options{})
	for i := range n {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = c.Close() })
		id := fmt.Sprintf("c%05d", i)
		connect := append(append(mqttString("MQTT"), 4, 2, 0, 60), mqttString(id)...)
		sub := append(append([]byte{0, 1}, mqttString("load/"+id+"/#")...), 1)
		pub := append(mqttString("load/"+id), "retained payload"...)
		msg := append(frame(0x10, connect), frame(0x82, sub)...)
		msg = append(msg, frame(0x31, pub)...)
		if _, err := c.Write(msg); err != nil {
			b.Fatal(err)
		}
		go func() { _, _ = io.Copy(io.Discard, c) }()
	}
	testutil.CheckFor(b, 30*time.Second, 10*time.Millisecond, func() error {
		if srv.ClientCount() != n || srv.SubscriptionCount() != n || srv.RetainedCount() != n {
			return fmt.Errorf("clients %d subs %d retained %d", srv.ClientCount(), srv.SubscriptionCount(), srv.RetainedCount())
		}
		return nil
	})
	return srv, col
}

// BenchmarkScrape measures one full scrape (Collect + Gather, Go and
// process collectors included) of a broker with 2,000 connected clients,
// 2,000 subscriptions and 2,000 retained messages. The collector reads
// atomics and walks sessions and clients once; the message hot path pays
// nothing for metrics beyond the broker's own atomic counters.
func BenchmarkScrape(b *testing.B) {
	_, col := loadBroker(b, 2000)
	reg := metrics.NewRegistry(col)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := reg.Gather(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCollectOnly measures the isobar collector alone.
func BenchmarkCollectOnly(b *testing.B) {
	_, col := loadBroker(b, 2000)
	reg := prometheus.NewRegistry()
	reg.MustRegister(col)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := reg.Gather(); err != nil {
			b.Fatal(err)
		}
	}
}
