package config

import (
	"strings"
	"testing"
	"time"
)

func TestDefaults(t *testing.T) {
	cfg, err := Parse(nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Listeners) != 1 || cfg.Listeners[0].Address != "127.0.0.1:1883" || cfg.Listeners[0].Protocol != "mqtt" {
		t.Fatalf("default listener %+v", cfg.Listeners)
	}
	if !cfg.Auth.AllowAnonymous || cfg.MQTT.ReceiveMaximum != 20 || cfg.MQTT.TopicAliasMaximum != 10 ||
		cfg.Store.Mode != "pebble" || cfg.Store.DataDir != "./data" || cfg.Store.Sync != "always" {
		t.Fatalf("defaults changed: %+v", cfg)
	}
	o := cfg.BrokerOptions()
	if o.MaxQoS != 2 || o.TopicAliasMaximum != 10 || o.DisableRetain || o.WriteTimeout != 10*time.Second {
		t.Fatalf("broker options %+v", o)
	}
}

// Unknown keys are errors naming the key and its line.
func TestUnknownKeyNamesLine(t *testing.T) {
	_, err := Parse([]byte("mqtt:\n  max_inflight: 5\n  max_infligth: 6\n"))
	if err == nil || !strings.Contains(err.Error(), "line 3") || !strings.Contains(err.Error(), "max_infligth") {
		t.Fatalf("got %v, want an error naming max_infligth on line 3", err)
	}
	_, err = Parse([]byte("listeners:\n  - name: a\n    protocol: mqtt\n    address: 127.0.0.1:0\n    tsl: {}\n"))
	if err == nil || !strings.Contains(err.Error(), "line 5") || !strings.Contains(err.Error(), "tsl") {
		t.Fatalf("got %v", err)
	}
}

func TestValidation(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"log: {level: loud}", "log.level"},
		{"mqtt: {max_qos: 3}", "mqtt.max_qos"},
		{"mqtt: {max_inflight: 0}", "mqtt.max_inflight"},
		{"mqtt: {max_queued_messages: 65530, max_inflight: 20}", "at most 65535"},
		{"store: {mode: disk}", "store.mode"},
		{"store: {sync: sometimes}", "store.sync"},
		{"auth: {acl: [{topic: a, access: all}]}", "auth.acl[0]"},
		{"listeners: [{name: a, protocol: mqtt, address: x}]", "address"},
		{"listeners: [{name: a, protocol: mqtt, address: '127.0.0.1:0'}, {name: a, protocol: ws, address: '127.0.0.1:0'}]", "duplicate"},
		{"mqtt: {max_inflight: nope}", "line 1"},
		{"node_name: x\n---\nnode_name: y\n", "one YAML document"},
	} {
		_, err := Parse([]byte(tc.yaml))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want an error mentioning %q", tc.yaml, err, tc.want)
		}
	}
}

func TestMappings(t *testing.T) {
	cfg, err := Parse([]byte(`
listeners:
  - {name: in, protocol: mqtt, address: "127.0.0.1:0", max_connections: 7}
mqtt:
  max_qos: 0
  topic_alias_maximum: 0
  retain_available: false
  publish_rate: 5
store: {mode: memory}
`))
	if err != nil {
		t.Fatal(err)
	}
	o := cfg.BrokerOptions()
	if o.MaxQoS != -1 || o.TopicAliasMaximum != -1 || !o.DisableRetain || o.PublishRate != 5 || o.Listeners["in"].MaxConnections != 7 {
		t.Fatalf("mapped options %+v", o)
	}
}
