package cluster_test

import (
	"context"
	"testing"
	"time"

	"github.com/isobar-mq/isobar/internal/broker"
	"github.com/isobar-mq/isobar/internal/topic"
)

// BenchmarkClusterForwardQoS1: QoS 1 messages published on one node,
// received by an internal subscriber on another (the cluster path only:
// no MQTT clients).
func BenchmarkClusterForwardQoS1(b *testing.B) {
	nodes := startCluster(b, 2)
	sub := nodes[1].srv.NewSubscriber(broker.SubscriberOptions{QueueSize: 1 << 16})
	defer sub.Close()
	if err := sub.Subscribe("bench/#", topic.Options{QoS: 1}); err != nil {
		b.Fatal(err)
	}
	waitRoutes(b, nodes, "n2", 1)
	pub := nodes[0].srv.NewPublisher(broker.PublisherOptions{Trusted: true, MaxBatch: 64})
	payload := make([]byte, 64)
	done := make(chan struct{})
	go func() {
		defer close(done)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		for range b.N {
			if _, err := sub.Receive(ctx); err != nil {
				return
			}
		}
	}()
	b.ResetTimer()
	for range b.N {
		if err := pub.Publish(&broker.Message{Topic: "bench/x", QoS: 1, Payload: payload}, nil); err != nil {
			b.Fatal(err)
		}
	}
	_ = pub.Flush()
	<-done
}
