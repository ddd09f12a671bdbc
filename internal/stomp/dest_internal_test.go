package stomp

import (
	"testing"

	"github.com/isobar-mq/isobar/internal/mqtt/packet"
)

func TestTopicMapping(t *testing.T) {
	for _, c := range []struct{ stomp, mqtt string }{
		{"a.b.c", "a/b/c"},
		{"sensors.room%2E1.temp", "sensors/room.1/temp"},
		{"a%25b.c%2Ad.e%3Ef", "a%b/c*d/e>f"},
		{"a..b", "a//b"},
		{".a", "/a"},
		{"a.", "a/"},
		{"$SYS.broker", "$SYS/broker"},
	} {
		got, err := topicToMQTT(c.stomp, false)
		if err != nil || got != c.mqtt {
			t.Errorf("%q -> %q %v, want %q", c.stomp, got, err, c.mqtt)
		}
		if back := topicFromMQTT(c.mqtt); back != c.stomp {
			t.Errorf("%q <- %q, want %q", back, c.mqtt, c.stomp)
		}
	}
	// Filters.
	for _, c := range []struct{ stomp, mqtt string }{
		{"a.*.c", "a/+/c"}, {"a.>", "a/#"}, {">", "#"}, {"*", "+"}, {"a.*b", "a/*b"},
	} {
		got, err := topicToMQTT(c.stomp, true)
		if err != nil || got != c.mqtt {
			t.Errorf("filter %q -> %q %v, want %q", c.stomp, got, err, c.mqtt)
		}
	}
	// Input conveniences and literals.
	for _, c := range []struct{ stomp, mqtt string }{
		{"a/b", "a/b"}, {"a%zz", "a%zz"}, {"a%2", "a%2"}, {"a*", "a*"}, {"a.>", "a/>"},
	} {
		if got, err := topicToMQTT(c.stomp, false); err != nil || got != c.mqtt {
			t.Errorf("%q -> %q %v, want %q", c.stomp, got, err, c.mqtt)
		}
	}
	for _, bad := range []string{"", "a.+", "a#", "a%2Fb", "a\x00"} {
		if got, err := topicToMQTT(bad, false); err == nil {
			t.Errorf("%q accepted as %q", bad, got)
		}
	}
	if got, err := topicToMQTT("a.>.b", true); err == nil {
		t.Errorf("'>' inside a filter accepted as %q", got)
	}
	// Every MQTT topic maps to STOMP and back.
	for _, m := range []string{"a.b/c", "x/%41/*/>/..", "/", "//", "a/b c/ü"} {
		s := topicFromMQTT(m)
		back, err := topicToMQTT(s, false)
		if err != nil || back != m {
			t.Errorf("%q -> %q -> %q %v", m, s, back, err)
		}
	}
}

func TestDestinations(t *testing.T) {
	d, err := parseDest("/temp-queue/r", "S1", false)
	if err != nil || d.kind != destTempQueue || d.queue != "temp-queue.S1.r" || d.replyName() != "/remote-temp-queue/S1.r" {
		t.Fatalf("%+v %v", d, err)
	}
	r, err := parseDest(d.replyName(), "S2", false)
	if err != nil || r.queue != d.queue || r.owner != "S1" {
		t.Fatalf("%+v %v", r, err)
	}
	d, err = parseDest("/temp-topic/a.b", "S1", false)
	if err != nil || d.mqtt != "$stomp/temp/S1/a/b" || destFromMQTT(d.mqtt) != "/remote-temp-topic/S1.a.b" {
		t.Fatalf("%+v %v", d, err)
	}
	r, err = parseDest(destFromMQTT(d.mqtt), "S2", false)
	if err != nil || r.mqtt != d.mqtt {
		t.Fatalf("%+v %v", r, err)
	}
	if d, err := parseDest("/topic/ActiveMQ.Advisory.Consumer.Queue.x", "S", true); err != nil || d.kind != destAdvisory {
		t.Fatalf("%+v %v", d, err)
	}
	for _, bad := range []string{"/queue/", "/queue/a*", "/nope/x", "topic/a", "/remote-temp-queue/nodot"} {
		if _, err := parseDest(bad, "S", true); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestPropEscaping(t *testing.T) {
	for _, s := range []string{"", "plain", "a\nb\rc\\d", "\x00\x01\x7f", "bad\xffutf8", "ü\\x41", `\`, `\x`} {
		e := escapeProp(s)
		if !packet.ValidString(e) {
			t.Errorf("%q escaped to %q: not a valid MQTT string", s, e)
		}
		if u := unescapeProp(e); u != s {
			t.Errorf("%q -> %q -> %q", s, e, u)
		}
	}
}
