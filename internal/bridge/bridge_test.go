package bridge

import (
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/isobar-mq/isobar/internal/broker"
	"github.com/isobar-mq/isobar/internal/mqtt/packet"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestMatches(t *testing.T) {
	for _, c := range []struct {
		f, t string
		want bool
	}{
		{"#", "a/b", true}, {"a/#", "a", true}, {"a/#", "a/b/c", true}, {"a/+", "a/b", true},
		{"a/+", "a/b/c", false}, {"a/+/c", "a/x/c", true}, {"a/b", "a/b", true}, {"a/b", "a/c", false},
		{"+", "a", true}, {"+", "a/b", false}, {"#", "$SYS/x", false}, {"$SYS/#", "$SYS/x", true},
		{"a/b", "a", false}, {"a", "a/b", false},
	} {
		if got := matches(c.f, c.t); got != c.want {
			t.Errorf("matches(%q, %q) = %v", c.f, c.t, got)
		}
	}
}

func TestCoversIntersect(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want bool
	}{
		{"#", "a/b", true}, {"a/#", "a/+/c", true}, {"a/+", "a/b", true}, {"a/b", "a/+", false},
		{"a/+", "a/#", false}, {"a/#", "a", true}, {"a", "a/#", false}, {"+/b", "a/b", true}, {"a/b", "a/b", true},
	} {
		if got := covers(c.a, c.b); got != c.want {
			t.Errorf("covers(%q, %q) = %v", c.a, c.b, got)
		}
	}
	if got := intersect("sensors/#", "#"); got != "sensors/#" {
		t.Errorf("intersect = %q", got)
	}
	if got := intersect("sensors/#", "sensors/room1/+"); got != "sensors/room1/+" {
		t.Errorf("intersect = %q", got)
	}
	if got := intersect("sensors/+/t", "sensors/a/#"); got != "" {
		t.Errorf("partial overlap intersect = %q, want none", got)
	}
}

func TestRuleMapping(t *testing.T) {
	r := Rule{Pattern: "sensors/#", Direction: Both, QoS: 1, LocalPrefix: "", RemotePrefix: "site-a/"}
	if err := r.validate(); err != nil {
		t.Fatal(err)
	}
	if got, ok := r.toRemote("sensors/x"); !ok || got != "site-a/sensors/x" {
		t.Errorf("toRemote = %q %v", got, ok)
	}
	if got, ok := r.toLocal("site-a/sensors/x"); !ok || got != "sensors/x" {
		t.Errorf("toLocal = %q %v", got, ok)
	}
	if _, ok := r.toLocal("sensors/x"); ok {
		t.Error("toLocal without the remote prefix matched")
	}
	for _, bad := range []Rule{
		{Pattern: "a/#", Direction: Out, LocalPrefix: "x/+/"},
		{Pattern: "$share/g/a", Direction: Out},
		{Pattern: "a/#/b", Direction: Out},
		{Pattern: "a", Direction: 0},
		{Pattern: "a", Direction: Out, QoS: 3},
	} {
		if err := bad.validate(); err == nil {
			t.Errorf("%+v: no error", bad)
		}
	}
	// Demand: local interest narrowed to the rule and mapped.
	d := Rule{Pattern: "sensors/#", Direction: In, LocalPrefix: "b/", RemotePrefix: ""}
	for f, want := range map[string]string{
		"b/sensors/room1/#":    "sensors/room1/#",
		"#":                    "sensors/#",
		"b/#":                  "sensors/#",
		"other/#":              "",
		"$SYS/#":               "",
		"$share/g/b/sensors/x": "sensors/x",
	} {
		if got := localDemandFilter(d, f); got != want {
			t.Errorf("demand %q -> %q, want %q", f, got, want)
		}
	}
}

func TestPathAndIDs(t *testing.T) {
	id := broker.MessageID{Node: 0xabc, Seq: 42}
	user := withLoopProps([]packet.UserProperty{{Key: "k", Value: "v"}, {Key: PropPath, Value: "old"}}, "a,b", id)
	props := packet.Properties{User: user}
	path, got, ok := pathOf(&props)
	if path != "a,b" || !ok || got != id || len(user) != 3 || user[0].Key != "k" {
		t.Fatalf("pathOf = %q %v %v (%v)", path, got, ok, user)
	}
	if !pathContains("a,b,c", "b") || pathContains("a,bb", "b") {
		t.Error("pathContains")
	}
	if appendPath("", "a") != "a" || appendPath("a", "a") != "a" || appendPath("a,b", "c") != "a,b,c" || appendPath("x,a", "a") != "x,a" {
		t.Error("appendPath")
	}
	if pathLen("") != 0 || pathLen("a") != 1 || pathLen("a,b,c") != 3 {
		t.Error("pathLen")
	}
	if _, ok := parseID("zz:1"); ok {
		t.Error("parseID accepted garbage")
	}
	if contentID("t", []byte("x"), false) == contentID("t", []byte("y"), false) {
		t.Error("contentID collision")
	}
}

func TestSeenIDs(t *testing.T) {
	s := newSeenIDs()
	now := time.Now()
	id := broker.MessageID{Node: 1, Seq: 1}
	if s.check(id, now) || !s.check(id, now.Add(time.Second)) {
		t.Fatal("stamped id not remembered")
	}
	if s.check(id, now.Add(idWindow+2*time.Second)) {
		t.Fatal("stamped id remembered past its window")
	}
	c := contentID("t", nil, false)
	if s.check(c, now) || !s.check(c, now.Add(time.Second)) || s.check(c, now.Add(contentWindow+2*time.Second)) {
		t.Fatal("content id window")
	}
	s.forget(id)
	if s.check(id, now) {
		t.Fatal("forgotten id still seen")
	}
}

func TestParseDirection(t *testing.T) {
	for s, want := range map[string]Direction{"": Out, "out": Out, "in": In, "both": Both} {
		if d, err := ParseDirection(s); err != nil || d != want || (s != "" && d.String() != s) {
			t.Errorf("%q: %v %v", s, d, err)
		}
	}
	if _, err := ParseDirection("sideways"); err == nil {
		t.Error("no error")
	}
}
