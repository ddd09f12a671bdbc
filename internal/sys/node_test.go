package sys_test

import (
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/isobar-mq/isobar/internal/testutil"
)

// TestNodePublishesSys checks the wiring: sys_interval from the
// configuration starts $SYS publishing on a node.
func TestNodePublishesSys(t *testing.T) {
	n := testutil.RunNode(t, `listeners:
  - {name: mqtt, protocol: mqtt, address: "127.0.0.1:0"}
store: {mode: memory}
http: {enabled: false}
sys_interval: 50ms
`)
	addr := testutil.Addr(t, n, "mqtt")
	var mu sync.Mutex
	vals := map[string]string{}
	const clients, msgs = 3, 5
	var cs []mqtt.Client
	for i := range clients {
		o := mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(fmt.Sprintf("n%d", i)).SetAutoReconnect(false)
		c := mqtt.NewClient(o)
		if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatal(tok.Error())
		}
		defer c.Disconnect(50)
		cs = append(cs, c)
	}
	tok := cs[0].Subscribe("$SYS/broker/#", 0, func(_ mqtt.Client, m mqtt.Message) {
		mu.Lock()
		vals[m.Topic()] = string(m.Payload())
		mu.Unlock()
	})
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	for i := range msgs {
		if tok := cs[1].Publish("x", 1, false, strconv.Itoa(i)); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatal(tok.Error())
		}
	}
	testutil.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		mu.Lock()
		defer mu.Unlock()
		if v := vals["$SYS/broker/clients/connected"]; v != strconv.Itoa(clients) {
			return fmt.Errorf("clients/connected %q", v)
		}
		if v := vals["$SYS/broker/messages/received"]; v != strconv.Itoa(msgs) {
			return fmt.Errorf("messages/received %q", v)
		}
		if vals["$SYS/broker/version"] == "" {
			return fmt.Errorf("no version")
		}
		return nil
	})
}
