package stomp_test

import (
	"context"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/isobar-mq/isobar/internal/testutil"
	"github.com/isobar-mq/isobar/internal/testutil/peer"
)

// pahoClient connects an MQTT 5 client that forwards its messages to ch.
func pahoClient(t *testing.T, addr, id string, ch chan *paho.Publish) *paho.Client {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c := paho.NewClient(paho.ClientConfig{
		Conn: nc, ClientID: id,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){
			func(pr paho.PublishReceived) (bool, error) { ch <- pr.Packet; return true, nil },
		},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.Connect(ctx, &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
	return c
}

func TestMQTTInterop(t *testing.T) {
	t.Parallel()
	n, addr := runNode(t, "")
	mqttAddr := testutil.Addr(t, n, "mqtt")
	ch := make(chan *paho.Publish, 10)
	mc := pahoClient(t, mqttAddr, "paho-1", ch)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := mc.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "sensors/#", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	s := connect(t, addr, "1.2")
	s.subscribe("m", "/topic/sensors.>")

	// STOMP -> MQTT: the mapping of headers to properties.
	s.sendMsg("/topic/sensors.room%2E1.temp", "21.5", "persistent:true", "content-type:text/plain",
		"correlation-id:c-1", "reply-to:/topic/answers.here", "x-unit:celsius", "expires:"+
			itoa(time.Now().Add(time.Hour).UnixMilli()))
	select {
	case p := <-ch:
		if p.Topic != "sensors/room.1/temp" || string(p.Payload) != "21.5" || p.QoS != 1 {
			t.Fatalf("PUBLISH %s %q qos %d", p.Topic, p.Payload, p.QoS)
		}
		pr := p.Properties
		if pr.ContentType != "text/plain" || string(pr.CorrelationData) != "c-1" || pr.ResponseTopic != "answers/here" ||
			pr.User.Get("x-unit") != "celsius" || pr.MessageExpiry == nil || *pr.MessageExpiry < 3500 {
			t.Fatalf("properties %+v", pr)
		}
		for _, u := range pr.User {
			if u.Key == "destination" || u.Key == "receipt" || u.Key == "content-length" {
				t.Errorf("transport header %s copied", u.Key)
			}
		}
	case <-ctx.Done():
		t.Fatal("no PUBLISH")
	}
	// The STOMP subscriber got its own message too, under the escaped name.
	if f := s.expect("MESSAGE"); f.Value("destination") != "/topic/sensors.room%2E1.temp" {
		t.Fatalf("MESSAGE %v", f.Headers)
	}

	// MQTT -> STOMP.
	up := paho.UserProperties{}
	up.Add("x-unit", "kelvin")
	exp := uint32(600)
	if _, err := mc.Publish(ctx, &paho.Publish{Topic: "sensors/a.b/x*y", QoS: 1, Payload: []byte("294"),
		Properties: &paho.PublishProperties{ContentType: "application/json", CorrelationData: []byte("corr"),
			ResponseTopic: "replies/1", User: up, MessageExpiry: &exp}}); err != nil {
		t.Fatal(err)
	}
	f := s.expect("MESSAGE")
	want := map[string]string{
		"destination": "/topic/sensors.a%2Eb.x%2Ay", "content-type": "application/json", "correlation-id": "corr",
		"reply-to": "/topic/replies.1", "x-unit": "kelvin", "persistent": "true", "content-length": "3", "priority": "4",
	}
	for k, v := range want {
		if f.Value(k) != v {
			t.Errorf("header %s = %q, want %q (%v)", k, f.Value(k), v, f.Headers)
		}
	}
	if e := f.Value("expires"); e == "" || e < itoa(time.Now().UnixMilli()) {
		t.Errorf("expires %q", e)
	}
	<-ch // paho's own copy

	// Retained MQTT messages are not delivered to new STOMP subscribers.
	if _, err := mc.Publish(ctx, &paho.Publish{Topic: "ret/x", QoS: 1, Retain: true, Payload: []byte("old")}); err != nil {
		t.Fatal(err)
	}
	s.subscribe("r", "/topic/ret.x")
	s.expectNothing(200 * time.Millisecond)
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func TestMosquittoClientsInterop(t *testing.T) {
	t.Parallel()
	pub := peer.NeedBinary(t, "mosquitto_pub", "mosquitto-clients")
	subBin := peer.NeedBinary(t, "mosquitto_sub", "mosquitto-clients")
	n, addr := runNode(t, "")
	_, port, _ := net.SplitHostPort(testutil.Addr(t, n, "mqtt"))
	s := connect(t, addr, "1.2")
	s.subscribe("m", "/topic/cli.*")
	out, err := exec.Command(pub, "-h", "127.0.0.1", "-p", port, "-V", "mqttv5", "-q", "1", "-t", "cli/one",
		"-m", "from-mosquitto", "-D", "publish", "user-property", "k", "v", "-D", "publish", "content-type", "text/x").CombinedOutput()
	if err != nil {
		t.Fatalf("mosquitto_pub: %v\n%s", err, out)
	}
	f := s.expect("MESSAGE")
	if string(f.Body) != "from-mosquitto" || f.Value("k") != "v" || f.Value("content-type") != "text/x" {
		t.Fatalf("MESSAGE %v %q", f.Headers, f.Body)
	}
	// STOMP -> mosquitto_sub (v5, printing properties).
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, subBin, "-h", "127.0.0.1", "-p", port, "-V", "mqttv5", "-t", "cli/two", "-C", "1", "-F", "%t %p %P")
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Wait until the subscription is in place, then publish until seen.
	buf := make([]byte, 256)
	done := make(chan string, 1)
	go func() {
		var all []byte
		for {
			k, err := stdout.Read(buf)
			all = append(all, buf[:k]...)
			if err != nil {
				done <- string(all)
				return
			}
		}
	}()
	var got string
loop:
	for {
		s.sendMsg("/topic/cli.two", "from-stomp", "x-prop:y")
		select {
		case got = <-done:
			break loop
		case <-time.After(200 * time.Millisecond):
		case <-ctx.Done():
			t.Fatal("mosquitto_sub got nothing")
		}
	}
	_ = cmd.Wait()
	if !strings.Contains(got, "cli/two from-stomp") || !strings.Contains(got, "x-prop:y") {
		t.Fatalf("mosquitto_sub printed %q", got)
	}
}
