package e2e

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/isobar-mq/isobar/internal/testutil/peer"
)

const python = "/usr/bin/python3"

// pahoScript connects with Python paho once per protocol version,
// subscribes at QoS 1, publishes to itself at QoS 1 (with a user property
// in 5.0), waits for the message and the PUBACK, and prints one JSON line
// per version. It works with paho-mqtt 1.x and 2.x (2.x needs the callback
// API version; VERSION1 keeps the 1.x callback signatures).
const pahoScript = `
import json, sys, threading
import paho.mqtt
import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes

host, port = sys.argv[1], int(sys.argv[2])

def new_client(client_id, protocol):
    if hasattr(mqtt, "CallbackAPIVersion"):  # paho-mqtt 2.x
        return mqtt.Client(mqtt.CallbackAPIVersion.VERSION1, client_id=client_id, protocol=protocol)
    return mqtt.Client(client_id=client_id, protocol=protocol)

def round_trip(name, protocol):
    v5 = protocol == mqtt.MQTTv5
    topic = "py/" + name + "/t"
    res = {"version": name}
    connected, subscribed, got, acked = (threading.Event() for _ in range(4))
    c = new_client("py-" + name, protocol)

    def on_connect(client, userdata, flags, rc, properties=None):
        res["connack"] = int(rc.value if hasattr(rc, "value") else rc)
        connected.set()
    def on_subscribe(client, userdata, mid, granted, properties=None):
        res["granted"] = [int(getattr(g, "value", g)) for g in granted]
        subscribed.set()
    def on_message(client, userdata, msg):
        res["topic"] = msg.topic
        res["payload"] = msg.payload.decode()
        res["qos"] = msg.qos
        res["retain"] = bool(msg.retain)
        props = getattr(msg, "properties", None)
        res["user"] = [list(p) for p in getattr(props, "UserProperty", [])] if props is not None else []
        got.set()
    def on_publish(client, userdata, mid, *rest):
        acked.set()

    c.on_connect, c.on_subscribe, c.on_message, c.on_publish = on_connect, on_subscribe, on_message, on_publish
    if v5:
        c.connect(host, port, keepalive=30, clean_start=True)
    else:
        c.connect(host, port, keepalive=30)
    c.loop_start()
    try:
        if not connected.wait(10):
            raise SystemExit(name + ": no CONNACK")
        c.subscribe(topic, qos=1)
        if not subscribed.wait(10):
            raise SystemExit(name + ": no SUBACK")
        props = None
        if v5:
            props = Properties(PacketTypes.PUBLISH)
            props.UserProperty = [("lang", "python"), ("ver", name)]
        c.publish(topic, "hello from python " + name, qos=1, properties=props)
        if not got.wait(10):
            raise SystemExit(name + ": message not received")
        if not acked.wait(10):
            raise SystemExit(name + ": no PUBACK")
        res["puback"] = True
    finally:
        c.disconnect()
        c.loop_stop()
    print(json.dumps(res), flush=True)

print(json.dumps({"paho": paho.mqtt.__version__}), flush=True)
round_trip("3.1.1", mqtt.MQTTv311)
round_trip("5", mqtt.MQTTv5)
`

// Python paho (3.1.1 and 5.0) against Isobar: CONNACK accepted, SUBACK
// grants QoS 1, its own QoS 1 message comes back at QoS 1, not retained
// [MQTT-3.3.1-9] (5.0: [MQTT-3.3.1-12]), PUBACK received, and the 5.0 user
// properties arrive in order [MQTT-3.3.2-17] [MQTT-3.3.2-18].
func TestPythonPaho(t *testing.T) {
	if _, err := os.Stat(python); err != nil {
		peer.Missing(t, "%s not found (Debian package python3): %v", python, err)
	}
	if out, err := exec.Command(python, "-c", "import paho.mqtt.client").CombinedOutput(); err != nil {
		peer.Missing(t, "Python paho not installed (Debian package python3-paho-mqtt; scripts/test installs it): %v: %s", err, out)
	}
	_, host, port := startNode(t)
	script := filepath.Join(t.TempDir(), "roundtrip.py")
	if err := os.WriteFile(script, []byte(pahoScript), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, python, script, host, port).CombinedOutput()
	if err != nil {
		t.Fatalf("python: %v\n%s", err, out)
	}
	type result struct {
		Paho    string     `json:"paho"`
		Version string     `json:"version"`
		Connack int        `json:"connack"`
		Granted []int      `json:"granted"`
		Topic   string     `json:"topic"`
		Payload string     `json:"payload"`
		QoS     int        `json:"qos"`
		Retain  bool       `json:"retain"`
		User    [][]string `json:"user"`
		Puback  bool       `json:"puback"`
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 3 {
		t.Fatalf("python printed %d lines, want 3:\n%s", len(lines), out)
	}
	var head result
	if err := json.Unmarshal([]byte(lines[0]), &head); err != nil {
		t.Fatalf("%v: %s", err, lines[0])
	}
	t.Logf("Python paho-mqtt %s", head.Paho)
	for i, want := range []struct {
		version string
		user    [][]string
	}{{"3.1.1", nil}, {"5", [][]string{{"lang", "python"}, {"ver", "5"}}}} {
		var r result
		if err := json.Unmarshal([]byte(lines[i+1]), &r); err != nil {
			t.Fatalf("%v: %s", err, lines[i+1])
		}
		topic := "py/" + want.version + "/t"
		if r.Version != want.version || r.Connack != 0 || len(r.Granted) != 1 || r.Granted[0] != 1 || r.Topic != topic ||
			r.Payload != "hello from python "+want.version || r.QoS != 1 || r.Retain || !r.Puback {
			t.Errorf("%s: %+v", want.version, r)
		}
		if len(r.User) != len(want.user) {
			t.Errorf("%s: user properties %v, want %v", want.version, r.User, want.user)
			continue
		}
		for j := range r.User {
			if strings.Join(r.User[j], "=") != strings.Join(want.user[j], "=") {
				t.Errorf("%s: user properties %v, want %v", want.version, r.User, want.user)
			}
		}
	}
}
