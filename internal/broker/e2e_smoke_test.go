package broker_test

import (
	"context"
	"net/url"
	"testing"
	"time"

	autopaho "github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/isobar-mq/isobar/internal/testutil"
)

func v3Client(t *testing.T, addr, id string, clean bool) mqtt.Client {
	t.Helper()
	o := mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).SetCleanSession(clean).
		SetAutoReconnect(false).SetConnectTimeout(5 * time.Second)
	c := mqtt.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("v3 connect %s: %v", id, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return c
}

// TestSmokeV3 is a first round trip with paho.mqtt.golang (3.1.1), QoS 0-2.
func TestSmokeV3(t *testing.T) {
	n := testutil.RunNode(t, "")
	addr := testutil.Addr(t, n, "")
	sub := v3Client(t, addr, "sub", true)
	got := make(chan mqtt.Message, 10)
	tok := sub.Subscribe("a/+", 2, func(_ mqtt.Client, m mqtt.Message) { got <- m })
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	pub := v3Client(t, addr, "pub", true)
	for qos := byte(0); qos <= 2; qos++ {
		tok := pub.Publish("a/b", qos, false, []byte{'m', '0' + qos})
		if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatal(tok.Error())
		}
		select {
		case m := <-got:
			if string(m.Payload()) != string([]byte{'m', '0' + qos}) || m.Qos() != qos || m.Topic() != "a/b" {
				t.Fatalf("got %q qos %d on %s", m.Payload(), m.Qos(), m.Topic())
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("QoS %d message not received", qos)
		}
	}
}

// TestSmokeV5 is a first round trip with paho.golang (5.0).
func TestSmokeV5(t *testing.T) {
	n := testutil.RunNode(t, "")
	addr := testutil.Addr(t, n, "")
	u, _ := url.Parse("mqtt://" + addr)
	got := make(chan *paho.Publish, 10)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cm, err := autopaho.NewConnection(ctx, autopaho.ClientConfig{
		ServerUrls: []*url.URL{u}, KeepAlive: 30, CleanStartOnInitialConnection: true,
		ClientConfig: paho.ClientConfig{ClientID: "v5sub", OnPublishReceived: []func(paho.PublishReceived) (bool, error){
			func(pr paho.PublishReceived) (bool, error) { got <- pr.Packet; return true, nil }}},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cm.Disconnect(context.Background()) }()
	if err := cm.AwaitConnection(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := cm.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "x/#", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	_, err = cm.Publish(ctx, &paho.Publish{Topic: "x/y", QoS: 1, Payload: []byte("hello"),
		Properties: &paho.PublishProperties{ContentType: "text/plain", User: paho.UserProperties{{Key: "k", Value: "v"}}}})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-got:
		if string(p.Payload) != "hello" || p.Properties.ContentType != "text/plain" || p.Properties.User.Get("k") != "v" {
			t.Fatalf("got %+v", p)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("not received")
	}
}
