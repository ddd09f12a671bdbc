package node_test

import (
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/isobar-mq/isobar/internal/testutil"
)

// TestConformanceSuiteConfig runs the configuration the README gives for
// the black-box conformance suite: subscriptions to test/nosubscribe are
// refused, everything else (including $-topics) stays open, and the
// keep-alive is capped at 60 s.
func TestConformanceSuiteConfig(t *testing.T) {
	n := testutil.RunNode(t, `listeners:
  - {name: mqtt, protocol: mqtt, address: "127.0.0.1:0"}
mqtt:
  max_keepalive: 60
  max_packet_size: 0
auth:
  allow_anonymous: true
  acl_default: allow
  acl:
    - {pattern: true, access: deny, topic: test/nosubscribe}
store:
  mode: memory
`)
	addr := testutil.Addr(t, n, "")
	o := mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID("conf").SetAutoReconnect(false)
	c := mqtt.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer c.Disconnect(100)
	tok := c.SubscribeMultiple(map[string]byte{"test/nosubscribe": 1, "test/other": 1, "$dollar/x": 1}, nil)
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	res := tok.(*mqtt.SubscribeToken).Result()
	if res["test/nosubscribe"] != 0x80 || res["test/other"] != 1 || res["$dollar/x"] != 1 {
		t.Fatalf("SUBACK codes %v: want 0x80 for test/nosubscribe, 1 for the others", res)
	}

	// A v5 client asking for 120 s is told the cap: Server Keep Alive 60.
	raw := testutil.DialRaw(t, addr)
	raw.SendHex("10 10 0004 4D515454 05 02 0078 00 0003 6B6131") // v5, keepalive 120, id "ka1"
	raw.ExpectHex("20 0C 00 00 09 22 000A 13 003C 21 0014")      // Topic Alias Max, Server Keep Alive 60, Receive Max
}
