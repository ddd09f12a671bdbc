package node_test

import (
	"fmt"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/isobar-mq/isobar/internal/testutil"
)

func connectV3(t *testing.T, addr, id string, clean bool, onMsg mqtt.MessageHandler) mqtt.Client {
	t.Helper()
	o := mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).SetCleanSession(clean).
		SetAutoReconnect(false).SetDefaultPublishHandler(onMsg)
	c := mqtt.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("connect %s: %v", id, tok.Error())
	}
	return c
}

// TestRestartKeepsSessionsAndRetained stops a node with a Pebble store and
// starts another on the same data directory: the persistent session, the
// messages queued for it and the retained message are all there.
func TestRestartKeepsSessionsAndRetained(t *testing.T) {
	dir := t.TempDir()
	cfg := fmt.Sprintf("listeners:\n  - {name: mqtt, protocol: mqtt, address: \"127.0.0.1:0\"}\nstore: {mode: pebble, data_dir: %q, sync: always}\n", dir)

	first := testutil.RunNode(t, cfg)
	addr := testutil.Addr(t, first, "")
	sub := connectV3(t, addr, "durable-sub", false, nil)
	if tok := sub.Subscribe("d/#", 1, nil); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	sub.Disconnect(100)
	pub := connectV3(t, addr, "pub", true, nil)
	for i := 0; i < 5; i++ {
		if tok := pub.Publish("d/x", 1, false, fmt.Sprintf("m%d", i)); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatal(tok.Error())
		}
	}
	if tok := pub.Publish("d/retained", 1, true, "kept"); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	pub.Disconnect(100)
	if err := first.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}

	second := testutil.RunNode(t, cfg)
	addr = testutil.Addr(t, second, "")
	got := make(chan mqtt.Message, 20)
	sub = connectV3(t, addr, "durable-sub", false, func(_ mqtt.Client, m mqtt.Message) { got <- m })
	defer sub.Disconnect(100)
	var payloads []string
	deadline := time.After(5 * time.Second)
	for len(payloads) < 6 {
		select {
		case m := <-got:
			payloads = append(payloads, string(m.Payload()))
		case <-deadline:
			t.Fatalf("after restart got %v, want m0..m4 and the retained message", payloads)
		}
	}
	want := []string{"m0", "m1", "m2", "m3", "m4", "kept"}
	for i, w := range want {
		if payloads[i] != w {
			t.Fatalf("after restart got %v, want %v in order", payloads, want)
		}
	}
	// The retained message is also there for a new subscriber.
	rc := make(chan mqtt.Message, 1)
	other := connectV3(t, addr, "other", true, nil)
	defer other.Disconnect(100)
	other.Subscribe("d/retained", 0, func(_ mqtt.Client, m mqtt.Message) { rc <- m })
	select {
	case m := <-rc:
		if string(m.Payload()) != "kept" || !m.Retained() {
			t.Fatalf("retained after restart: %q retained=%v", m.Payload(), m.Retained())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("retained message lost across restart")
	}
}
