package web_test

import (
	"context"
	"encoding/base64"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"
)

// TestPublishValidation: every field of POST /api/v1/publish is checked as
// strictly as the MQTT decoder checks a PUBLISH, so that nothing the broker
// cannot encode to a subscriber gets in. The reproduced bug: a content type
// over 64 KiB, retained, crashed the broker's encoder at the next MQTT 5
// subscription.
func TestPublishValidation(t *testing.T) {
	e := start(t, "")
	e2 := startWith(t, "mqtt: {max_topic_length: 32, max_topic_levels: 3, max_packet_size: 16384, max_qos: 1}\n", "")
	long := strings.Repeat("a", 65536)
	b64 := func(n int) string { return base64.StdEncoding.EncodeToString(make([]byte, n)) }
	cases := []struct {
		e    *env
		body map[string]any
		code int
		msg  string
	}{
		{e, map[string]any{"topic": "t", "retain": true, "content_type": strings.Repeat("c", 70000)}, 400, "content_type"},
		{e, map[string]any{"topic": "t", "content_type": "text/\u0001plain"}, 400, "content_type"},
		{e, map[string]any{"topic": "t", "content_type": "a\u0000b"}, 400, "U+0000"},
		{e, map[string]any{"topic": "t", "content_type": "\ufffe"}, 400, "content_type"},
		{e, map[string]any{"topic": "t", "user_properties": []map[string]string{{"key": long, "value": "v"}}}, 400, "user_properties[0].key"},
		{e, map[string]any{"topic": "t", "user_properties": []map[string]string{{"key": "k", "value": "v"}, {"key": "k", "value": long}}}, 400, "user_properties[1].value"},
		{e, map[string]any{"topic": "t", "user_properties": []map[string]string{{"key": "k\u007f", "value": "v"}}}, 400, "user_properties[0].key"},
		{e, map[string]any{"topic": "t", "response_topic": long}, 400, "response_topic"},
		{e, map[string]any{"topic": "t", "response_topic": "r/\u0085"}, 400, "response_topic"},
		{e, map[string]any{"topic": "t", "correlation_data": b64(65536)}, 400, "correlation_data"},
		{e, map[string]any{"topic": "t", "correlation_data": "%%"}, 400, "correlation_data"},
		{e, map[string]any{"topic": long}, 400, "topic"},
		{e, map[string]any{"topic": "a/\u0001"}, 400, "topic"},
		{e, map[string]any{"topic": "a\u0000b"}, 400, "topic"},
		{e, map[string]any{"topic": "t", "message_expiry_interval": 4294967296}, 400, "message_expiry_interval"},
		{e, map[string]any{"topic": "t", "message_expiry_interval": -1}, 400, "message_expiry_interval"},
		{e, map[string]any{"topic": "t", "qos": 3}, 400, "qos"},
		{e2, map[string]any{"topic": strings.Repeat("x", 33)}, 400, "topic"},
		{e2, map[string]any{"topic": "a/b/c/d"}, 400, "topic"},
		{e2, map[string]any{"topic": "t", "qos": 2}, 400, "qos"},
		{e2, map[string]any{"topic": "t", "response_topic": strings.Repeat("r", 33)}, 400, "response_topic"},
		{e2, map[string]any{"topic": "t", "payload": strings.Repeat("p", 16385)}, 413, "payload"},
		// Every field fits, the whole message does not.
		{e2, map[string]any{"topic": "t", "payload": strings.Repeat("p", 8200), "content_type": strings.Repeat("c", 8200), "retain": true}, 413, "maximum packet size"},
	}
	for _, c := range cases {
		r := c.e.do(req{method: "POST", path: "/api/v1/publish", basic: true, body: c.body})
		if r.code != c.code {
			t.Errorf("%.120v: %d, want %d (%.200s)", c.body, r.code, c.code, r.body)
			continue
		}
		if msg := r.errorMessage(t); !strings.Contains(msg, c.msg) {
			t.Errorf("%.120v: error %.200q lacks %q", c.body, msg, c.msg)
		}
	}
	for _, en := range []*env{e, e2} {
		if m, ok := en.n.Server.RetainedMessage("t"); ok {
			t.Errorf("a refused message was retained: content type of %d bytes", len(m.Props.ContentType))
		}
	}
	// Right at the limits is fine: a 65535-byte content type, retained,
	// reaches an MQTT 5 subscriber.
	ct := strings.Repeat("c", 65535)
	if r := e.do(req{method: "POST", path: "/api/v1/publish", basic: true, body: map[string]any{"topic": "t", "retain": true, "content_type": ct,
		"correlation_data": b64(65535), "payload": "x"}}); r.code != 200 {
		t.Fatalf("publish at the limits: %d %.200s", r.code, r.body)
	}
	u, _ := url.Parse("mqtt://" + e.mqtt)
	got := make(chan *paho.Publish, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cm, err := autopaho.NewConnection(ctx, autopaho.ClientConfig{
		ServerUrls: []*url.URL{u}, KeepAlive: 30, CleanStartOnInitialConnection: true,
		ClientConfig: paho.ClientConfig{ClientID: "v5", OnPublishReceived: []func(paho.PublishReceived) (bool, error){
			func(pr paho.PublishReceived) (bool, error) { got <- pr.Packet; return true, nil }}},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cm.Disconnect(context.Background()); <-cm.Done() }()
	if err := cm.AwaitConnection(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := cm.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "t", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-got:
		if p.Properties.ContentType != ct || len(p.Properties.CorrelationData) != 65535 {
			t.Errorf("retained message: content type %d bytes, correlation data %d bytes", len(p.Properties.ContentType), len(p.Properties.CorrelationData))
		}
	case <-time.After(5 * time.Second):
		t.Fatal("retained message not received")
	}
}

// TestPublishBodyLimit: a publish body is bounded by twice the broker's
// maximum packet size (and http.max_body_size): 413 beyond, whatever the
// body holds.
func TestPublishBodyLimit(t *testing.T) {
	e := startWith(t, "mqtt: {max_packet_size: 4096}\n", "")
	body := `{"topic": "t", "payload": "small"` + strings.Repeat(" ", 20000) + `}`
	r := e.do(req{method: "POST", path: "/api/v1/publish", basic: true, body: body, contentType: "application/json"})
	if r.code != 413 {
		t.Fatalf("20 KB body with a 4 KiB packet limit: %d %s", r.code, r.body)
	}
	r.errorMessage(t)
	body = `{"topic": "t", "payload": "small"` + strings.Repeat(" ", 2000) + `}`
	if r := e.do(req{method: "POST", path: "/api/v1/publish", basic: true, body: body, contentType: "application/json"}); r.code != 200 {
		t.Fatalf("2 KB body: %d %s", r.code, r.body)
	}
}
