package client_test

import (
	"slices"
	"testing"
	"time"

	"github.com/isobar-mq/isobar/internal/mqtt/client"
	"github.com/isobar-mq/isobar/internal/mqtt/packet"
)

// TestRuntimeSubscribe: Subscribe and Unsubscribe while connected send
// SUBSCRIBE and UNSUBSCRIBE at once, and a reconnection without session
// present makes the current set of subscriptions again.
func TestRuntimeSubscribe(t *testing.T) {
	f := newFakeServer(t)
	c := mustNew(t, client.Config{URL: f.url(), ClientID: "rt", Version: packet.V5, MinBackoff: 20 * time.Millisecond,
		MaxBackoff: 50 * time.Millisecond, Subscriptions: []client.Subscription{{Filter: "base/#", QoS: 1}}})
	c.Start()
	fc, _ := f.accept(t, packet.V5)
	fc.connack(false, packet.Properties{})
	sub := fc.read().(*packet.Subscribe)
	fc.send((&packet.Suback{PacketID: sub.PacketID, ReasonCodes: []byte{1}}).Append(nil, packet.V5))
	waitConnected(t, c, 5*time.Second)

	if err := c.Subscribe(client.Subscription{Filter: "x/+", QoS: 1, NoLocal: true}); err != nil {
		t.Fatal(err)
	}
	sub = fc.read().(*packet.Subscribe)
	if len(sub.Subs) != 1 || sub.Subs[0].Filter != "x/+" || !sub.Subs[0].NoLocal || sub.Subs[0].QoS != 1 {
		t.Fatalf("SUBSCRIBE %+v", sub)
	}
	fc.send((&packet.Suback{PacketID: sub.PacketID, ReasonCodes: []byte{1}}).Append(nil, packet.V5))
	if err := c.Subscribe(client.Subscription{Filter: "x/#/bad", QoS: 3}); err == nil {
		t.Fatal("invalid subscription accepted")
	}
	if !c.Unsubscribe("base/#") || c.Unsubscribe("never") {
		t.Fatal("Unsubscribe result")
	}
	un := fc.read().(*packet.Unsubscribe)
	if !slices.Equal(un.Filters, []string{"base/#"}) {
		t.Fatalf("UNSUBSCRIBE %+v", un)
	}
	fc.send((&packet.Unsuback{PacketID: un.PacketID, ReasonCodes: []byte{0}}).Append(nil, packet.V5))
	if got := c.Subscriptions(); len(got) != 1 || got[0].Filter != "x/+" {
		t.Fatalf("Subscriptions() = %+v", got)
	}

	// The server loses the session: the client subscribes again to
	// what it has now.
	_ = fc.c.Close()
	fc, _ = f.accept(t, packet.V5)
	fc.connack(false, packet.Properties{})
	sub = fc.read().(*packet.Subscribe)
	if len(sub.Subs) != 1 || sub.Subs[0].Filter != "x/+" {
		t.Fatalf("resubscribed %+v", sub)
	}
	fc.send((&packet.Suback{PacketID: sub.PacketID, ReasonCodes: []byte{1}}).Append(nil, packet.V5))
	fc.readNothing(100 * time.Millisecond)

	// A closed client takes no more subscriptions.
	_ = c.Close()
	if err := c.Subscribe(client.Subscription{Filter: "y"}); err == nil {
		t.Fatal("Subscribe after Close accepted")
	}
}
