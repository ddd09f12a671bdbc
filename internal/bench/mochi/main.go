// Command mochi runs mochi-mqtt (github.com/mochi-mqtt/server/v2), the Go
// MQTT broker scripts/bench-compare measures Isobar against, with limits
// matching the Isobar and Mosquitto configurations of the comparison.
//
// It lives in its own module so that the comparison's dependency on
// mochi-mqtt stays out of Isobar's go.mod: `go build ./...` and `go mod
// tidy` in the main module never see it. Build it from this directory:
//
//	go build -o /tmp/mochi-bench . && /tmp/mochi-bench --addr 127.0.0.1:1884
package main

import (
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:1883", "TCP listener address")
	receiveMax := flag.Int("receive-maximum", 1000, "QoS 1/2 messages a client may have unacknowledged towards the broker")
	stored := flag.Int("max-stored", 65000, "QoS 1/2 messages stored per client, in flight and queued (at most 65535)")
	pending := flag.Int("max-pending-writes", 65536, "outbound packets buffered per client")
	flag.Parse()

	caps := mqtt.NewDefaultServerCapabilities()
	caps.ReceiveMaximum = uint16(*receiveMax)
	caps.MaximumInflight = uint16(min(*stored, 65535))
	caps.MaximumClientWritesPending = int32(*pending)
	srv := mqtt.New(&mqtt.Options{
		Capabilities:           caps,
		Logger:                 slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})),
		SysTopicResendInterval: 3600,
	})
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		fail(err)
	}
	if err := srv.AddListener(listeners.NewTCP(listeners.Config{ID: "tcp", Address: *addr})); err != nil {
		fail(err)
	}
	if err := srv.Serve(); err != nil {
		fail(err)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	_ = srv.Close()
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "mochi:", err)
	os.Exit(1)
}
