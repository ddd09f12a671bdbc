package config

import (
	"strings"
	"testing"
)

func TestBridgesParse(t *testing.T) {
	c, err := Parse([]byte(`node_name: a
bridges:
  - name: site-b
    url: mqtts://b.example.org:8883
    version: 4
    username: u
    password: p
    topics:
      - {pattern: "sensors/#", direction: out, qos: 1, remote_prefix: "site-a/"}
      - {pattern: "commands/#", direction: in, qos: 2}
      - {pattern: "x"}
    max_hops: 3
    buffer: {max_messages: 10, max_bytes: 64MiB}
    demand: true
  - name: plain
    address: 127.0.0.1:1884
    topics: [{pattern: "#", direction: both}]
`))
	if err != nil {
		t.Fatal(err)
	}
	b := c.Bridges[0]
	if b.Version != 4 || b.ClientID != "a.site-b" || b.MaxHops != 3 || b.Buffer.MaxMessages != 10 || b.Buffer.MaxBytes != 64<<20 ||
		!b.Demand || !*b.TryPrivate || b.SessionExpiry != DefaultBridgeSessionExpiry {
		t.Fatalf("bridge %+v", b)
	}
	if b.Topics[2].Direction != "out" || *b.Topics[2].QoS != 0 || *b.Topics[1].QoS != 2 {
		t.Fatalf("topics %+v", b.Topics)
	}
	p := c.Bridges[1]
	if p.URL != "mqtt://127.0.0.1:1884" || p.Version != 5 || p.MaxHops != DefaultBridgeMaxHops ||
		p.Buffer.MaxMessages != DefaultBridgeBufferMessages || p.Buffer.MaxBytes != DefaultBridgeBufferBytes {
		t.Fatalf("defaults %+v", p)
	}
}

func TestBridgesInvalid(t *testing.T) {
	for _, c := range []struct{ yaml, want string }{
		{`[{url: "mqtt://h", topics: [{pattern: a}]}]`, "name: required"},
		{`[{name: a, topics: [{pattern: a}]}]`, "url or address"},
		{`[{name: a, url: "mqtt://h", address: "h:1", topics: [{pattern: a}]}]`, "exclusive"},
		{`[{name: a, url: "http://h", topics: [{pattern: a}]}]`, "scheme"},
		{`[{name: a, url: "mqtt://h", version: 3, topics: [{pattern: a}]}]`, "version"},
		{`[{name: a, url: "mqtt://h"}]`, "topics"},
		{`[{name: a, url: "mqtt://h", topics: [{pattern: a, direction: up}]}]`, "direction"},
		{`[{name: a, url: "mqtt://h", topics: [{pattern: a, qos: 3}]}]`, "qos"},
		{`[{name: a, url: "mqtt://h", topics: [{pattern: a, local_prefix: "+/"}]}]`, "wildcards"},
		{`[{name: a, url: "mqtt://h", cert_file: c, topics: [{pattern: a}]}]`, "cert_file and key_file"},
		{`[{name: a, url: "mqtt://h", topics: [{pattern: a}]}, {name: a, url: "mqtt://h", topics: [{pattern: a}]}]`, "twice"},
		{`[{name: a/b, url: "mqtt://h", topics: [{pattern: a}]}]`, "must not contain"},
		{`[{name: a, url: "mqtt://h", buffer: {max_bytes: 12XB}, topics: [{pattern: a}]}]`, "byte size"},
		{`[{name: a, url: "mqtt://h", topic: [{pattern: a}]}]`, "unknown key topic"},
		{`[{name: a, url: "mqtt://h", max_hops: 300, topics: [{pattern: a}]}]`, "max_hops"},
	} {
		_, err := Parse([]byte("bridges: " + c.yaml + "\n"))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want %q", c.yaml, err, c.want)
		}
	}
}
