package config

import (
	"strings"
	"testing"
	"time"
)

func TestStompSection(t *testing.T) {
	const ls = "listeners:\n  - {name: s, protocol: stomp, address: \"127.0.0.1:0\"}\n  - {name: w, protocol: stomp-ws, address: \"127.0.0.1:0\"}\n"
	c, err := Parse([]byte(ls))
	if err != nil {
		t.Fatal(err)
	}
	if c.Stomp != DefaultStomp() {
		t.Fatalf("defaults: %+v", c.Stomp)
	}
	c, err = Parse([]byte(ls + "stomp:\n  max_frame_size: 4096\n  heart_beat_send: 0s\n  heart_beat_receive: 1s\n  queues: {dir: /tmp/q, max_redeliveries: -1, idle_timeout: 1m}\n"))
	if err != nil {
		t.Fatal(err)
	}
	s := c.Stomp
	if s.MaxFrameSize != 4096 || s.HeartBeatSend != 0 || s.HeartBeatReceive != time.Second || s.Queues.Dir != "/tmp/q" ||
		s.Queues.MaxRedeliveries != -1 || s.Queues.IdleTimeout != time.Minute || s.MaxHeaders != 64 || s.Queues.MaxMessages != 100000 {
		t.Fatalf("parsed: %+v", s)
	}
	for _, tc := range []struct{ yaml, want string }{
		{"stomp: {nope: 1}", "unknown key nope"},
		{"stomp: {queues: {nope: 1}}", "unknown key nope"},
		{"stomp: {max_frame_size: 10}", "stomp.max_frame_size"},
		{"stomp: {max_headers: 0}", "stomp.max_headers"},
		{"stomp: {max_header_length: 1}", "stomp.max_header_length"},
		{"stomp: {heart_beat_send: -1s}", "stomp.heart_beat_send"},
		{"stomp: {connect_timeout: 0s}", "stomp.connect_timeout"},
		{"stomp: {write_timeout: 0s}", "stomp.write_timeout"},
		{"stomp: {max_pending_bytes: 0}", "stomp.max_pending_bytes"},
		{"stomp: {queues: {max_messages: 0}}", "stomp.queues.max_messages"},
		{"stomp: {queues: {max_redeliveries: -2}}", "stomp.queues.max_redeliveries"},
	} {
		_, err := Parse([]byte(ls + tc.yaml + "\n"))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err %v, want %q", tc.yaml, err, tc.want)
		}
	}
}
