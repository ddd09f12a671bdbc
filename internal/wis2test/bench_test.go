package wis2test

import (
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/isobar-mq/isobar/internal/testutil"
	"github.com/isobar-mq/isobar/internal/testutil/redistest"
)

// TestRelayThroughput measures validated, de-duplicated republications per
// second through one node: 4 publishers put N unique notifications (each
// sent twice, through two sources) into two mosquitto brokers; the time is
// from the first publish to the last republication seen by a subscriber
// on Isobar. Run with ISOBAR_WIS2_BENCH=1 (memory and Redis backends).
func TestRelayThroughput(t *testing.T) {
	if os.Getenv("ISOBAR_WIS2_BENCH") == "" {
		t.Skip("set ISOBAR_WIS2_BENCH=1 to measure relay throughput")
	}
	r := redistest.Start(t, redistest.Options{})
	for _, backend := range []string{"{backend: memory}", fmt.Sprintf("{backend: redis, addrs: [%q]}", r.Addr)} {
		t.Run(backend, func(t *testing.T) {
			const n = 20000
			dir := shared(t)
			a, b := startMosquitto(t), startMosquitto(t)
			const ida, idb = "io-wis2dev-41-test", "io-wis2dev-42-test-global-cache"
			node := relayNode(t, backend, "current", source(ida, a.addr, ""), source(idb, b.addr, `, topics: ["origin/a/wis2/#"]`))
			waitFor(t, 10*time.Second, "sources connected", func() bool {
				m := metrics(t, node.HTTP.Addr().String())
				return gb(m, "wmo_wis2_gb_connected_flag", ida, reportBy) == 1 && gb(m, "wmo_wis2_gb_connected_flag", idb, reportBy) == 1
			})
			var got atomic.Int64
			done := make(chan struct{})
			o := mqtt.NewClientOptions().AddBroker("tcp://" + testutil.Addr(t, node, "mqtt")).SetClientID("bench-sink")
			sink := mqtt.NewClient(o)
			if tok := sink.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
				t.Fatal(tok.Error())
			}
			defer sink.Disconnect(100)
			sink.Subscribe("origin/#", 0, func(mqtt.Client, mqtt.Message) {
				if got.Add(1) == n {
					close(done)
				}
			}).Wait()
			msgs := make([][]byte, n)
			for i := range msgs {
				msgs[i] = withID(t, dir, uuid4())
			}
			topic := "origin/a/wis2/" + ida + "/data/core/weather/surface-based-observations/synop"
			time.Sleep(500 * time.Millisecond)
			start := time.Now()
			var wg sync.WaitGroup
			for p := range 4 {
				wg.Go(func() {
					ca, cb := publisher(t, a.addr, fmt.Sprintf("ba%d", p)), publisher(t, b.addr, fmt.Sprintf("bb%d", p))
					for i := p; i < n; i += 4 {
						ca.Publish(topic, 0, false, msgs[i])
						cb.Publish(topic, 0, false, msgs[i])
					}
				})
			}
			wg.Wait()
			select {
			case <-done:
			case <-time.After(60 * time.Second):
			}
			el := time.Since(start)
			t.Logf("%s: %d of %d unique notifications (%d copies) republished in %v: %.0f msg/s", backend, got.Load(), n, 2*n, el.Round(time.Millisecond), float64(got.Load())/el.Seconds())
		})
	}
}
