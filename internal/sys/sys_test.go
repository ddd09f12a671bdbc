package sys

import (
	"context"
	"fmt"
	"math"
	"net"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"go.uber.org/goleak"

	"github.com/isobar-mq/isobar/internal/broker"
)

// checkFor polls f until it returns nil or total has elapsed. (testutil
// cannot be used here: it imports node, which imports this package.)
func checkFor(t *testing.T, total time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(total)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met after %v: %v", total, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func startBroker(t *testing.T) (*broker.Server, string) {
	t.Helper()
	srv := broker.New(broker.Options{}, nil, nil)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(l, "mqtt")
	}()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-done
	})
	return srv, l.Addr().String()
}

func client(t *testing.T, addr, id string, clean bool) mqtt.Client {
	t.Helper()
	o := mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).SetCleanSession(clean).
		SetAutoReconnect(false).SetProtocolVersion(4)
	c := mqtt.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("connect %s: %v", id, tok.Error())
	}
	t.Cleanup(func() {
		if c.IsConnected() {
			c.Disconnect(50)
		}
	})
	return c
}

// sysValues subscribes to $SYS/broker/# and keeps the latest value of each
// topic.
type sysValues struct {
	mu sync.Mutex
	m  map[string]string
}

func (v *sysValues) get(topic string) string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.m[Prefix+topic]
}

func watch(t *testing.T, c mqtt.Client) *sysValues {
	v := &sysValues{m: map[string]string{}}
	tok := c.Subscribe("$SYS/broker/#", 0, func(_ mqtt.Client, m mqtt.Message) {
		v.mu.Lock()
		v.m[m.Topic()] = string(m.Payload())
		v.mu.Unlock()
	})
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	return v
}

func TestSysTopicsReflectActivity(t *testing.T) {
	srv, addr := startBroker(t)
	p := Start(srv, Options{Interval: 20 * time.Millisecond, Version: "1.2.3"})
	defer p.Stop()

	const n, m = 4, 7
	watcher := client(t, addr, "watcher", true)
	vals := watch(t, watcher)
	var clients []mqtt.Client
	for i := 1; i < n; i++ {
		clients = append(clients, client(t, addr, fmt.Sprintf("c%d", i), i != 1))
	}
	for i := range m {
		tok := clients[1].Publish("data/x", 1, false, strconv.Itoa(i))
		if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatal(tok.Error())
		}
	}
	checkFor(t, 5*time.Second, func() error {
		want := map[string]string{
			"version":                   "isobar version 1.2.3",
			"clients/connected":         strconv.Itoa(n),
			"clients/active":            strconv.Itoa(n),
			"clients/total":             strconv.Itoa(n),
			"clients/maximum":           strconv.Itoa(n),
			"clients/disconnected":      "0",
			"messages/received":         strconv.Itoa(m),
			"publish/messages/received": strconv.Itoa(m),
			"subscriptions/count":       "1",
		}
		for topic, w := range want {
			if g := vals.get(topic); g != w {
				return fmt.Errorf("%s = %q, want %q", topic, g, w)
			}
		}
		if g := vals.get("uptime"); !regexp.MustCompile(`^\d+ seconds$`).MatchString(g) {
			return fmt.Errorf("uptime %q", g)
		}
		if l, err := strconv.ParseFloat(vals.get("load/messages/received/1min"), 64); err != nil || l <= 0 {
			return fmt.Errorf("load 1min %q", vals.get("load/messages/received/1min"))
		}
		for _, topic := range []string{"heap/current", "heap/maximum", "bytes/received", "bytes/sent",
			"retained messages/count", "store/messages/count", "load/connections/15min", "load/sockets/5min"} {
			if vals.get(topic) == "" {
				return fmt.Errorf("%s not published", topic)
			}
		}
		return nil
	})

	// The persistent client goes away: it stays as a disconnected client.
	clients[0].Disconnect(50)
	checkFor(t, 5*time.Second, func() error {
		if g := vals.get("clients/connected"); g != strconv.Itoa(n-1) {
			return fmt.Errorf("connected %q", g)
		}
		if g := vals.get("clients/disconnected"); g != "1" {
			return fmt.Errorf("disconnected %q", g)
		}
		if g := vals.get("clients/total"); g != strconv.Itoa(n) {
			return fmt.Errorf("total %q", g)
		}
		return nil
	})

	// Retained: a late subscriber gets the current values at once.
	late := client(t, addr, "late", true)
	lv := watch(t, late)
	checkFor(t, 2*time.Second, func() error {
		if lv.get("version") == "" || lv.get("messages/received") != strconv.Itoa(m) {
			return fmt.Errorf("late subscriber got version %q received %q", lv.get("version"), lv.get("messages/received"))
		}
		return nil
	})
}

// TestLoadAverage drives update with synthetic times and checks
// Mosquitto's formula: after 60 messages in one minute, the 1-minute load
// is 60 * (1 - e^-1).
func TestLoadAverage(t *testing.T) {
	srv, addr := startBroker(t)
	p := Start(srv, Options{Interval: time.Hour})
	defer p.Stop()
	if got := p.last["load/messages/received/1min"]; got != "0.00" {
		t.Fatalf("initial load %q", got)
	}
	c := client(t, addr, "pub", true)
	for range 60 {
		if tok := c.Publish("t", 1, false, "x"); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatal(tok.Error())
		}
	}
	// p.update runs only from this goroutine while the ticker (1h) is idle.
	p.update(p.lastUpdate.Add(time.Minute))
	check := func(topic string, want float64) {
		t.Helper()
		got, err := strconv.ParseFloat(p.last[topic], 64)
		if err != nil || math.Abs(got-want) > 0.006 {
			t.Errorf("%s = %q, want %.2f", topic, p.last[topic], want)
		}
	}
	check("load/messages/received/1min", 60*(1-math.Exp(-1)))
	check("load/messages/received/5min", 60*(1-math.Exp(-1.0/5)))
	check("load/messages/received/15min", 60*(1-math.Exp(-1.0/15)))
	check("load/connections/1min", 1*(1-math.Exp(-1)))
	// No traffic for another minute: the 1-minute load decays by e^-1.
	before := p.loads["load/messages/received/1min"]
	p.update(p.lastUpdate.Add(time.Minute))
	check("load/messages/received/1min", before*math.Exp(-1))
}

func TestDisabled(t *testing.T) {
	srv, _ := startBroker(t)
	if p := Start(srv, Options{Interval: 0}); p != nil {
		t.Fatal("interval 0 must disable $SYS")
	}
	var p *Publisher
	p.Stop() // nil-safe
	if srv.RetainedCount() != 0 {
		t.Fatal("disabled publisher published")
	}
}
