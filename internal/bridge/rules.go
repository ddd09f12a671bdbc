package bridge

import (
	"fmt"
	"strings"

	"github.com/isobar-mq/isobar/internal/topic"
)

// Direction says which way a rule forwards.
type Direction uint8

// Directions, as in mosquitto's topic lines.
const (
	Out  Direction = 1 << iota // local to remote
	In                         // remote to local
	Both = Out | In
)

// ParseDirection parses "in", "out" or "both" ("" = out, as mosquitto).
func ParseDirection(s string) (Direction, error) {
	switch s {
	case "", "out":
		return Out, nil
	case "in":
		return In, nil
	case "both":
		return Both, nil
	}
	return 0, fmt.Errorf("direction %q is not in, out or both", s)
}

func (d Direction) String() string {
	switch d {
	case Out:
		return "out"
	case In:
		return "in"
	case Both:
		return "both"
	}
	return "none"
}

// Rule is one topic line: Pattern is a topic filter without the prefixes;
// locally it is LocalPrefix+Pattern, remotely RemotePrefix+Pattern, and a
// message's topic keeps its part after the prefix across the link
// (mosquitto's "topic pattern [[[out|in|both] qos] local-prefix
// remote-prefix]").
type Rule struct {
	Pattern      string
	Direction    Direction
	QoS          byte
	LocalPrefix  string
	RemotePrefix string
}

// LocalFilter is the filter the rule covers on this broker.
func (r Rule) LocalFilter() string { return r.LocalPrefix + r.Pattern }

// RemoteFilter is the filter the rule covers on the remote broker.
func (r Rule) RemoteFilter() string { return r.RemotePrefix + r.Pattern }

// validate checks the rule's filters.
func (r Rule) validate() error {
	if r.Direction == 0 || r.Direction > Both {
		return fmt.Errorf("topic %q: no direction", r.Pattern)
	}
	if r.QoS > 2 {
		return fmt.Errorf("topic %q: qos %d", r.Pattern, r.QoS)
	}
	if strings.ContainsAny(r.LocalPrefix, "+#") || strings.ContainsAny(r.RemotePrefix, "+#") {
		return fmt.Errorf("topic %q: a prefix must not contain wildcards", r.Pattern)
	}
	if _, _, shared := topic.ParseShared(r.Pattern); shared {
		return fmt.Errorf("topic %q: shared subscriptions cannot be bridged", r.Pattern)
	}
	for _, f := range []string{r.LocalFilter(), r.RemoteFilter()} {
		if err := topic.ValidateFilter(f, 0, 0); err != nil {
			return fmt.Errorf("topic %q: %q: %v", r.Pattern, f, err)
		}
	}
	return nil
}

// toRemote maps a local topic to the remote topic (ok false if the rule
// does not cover it).
func (r Rule) toRemote(t string) (string, bool) {
	return mapTopic(t, r.LocalPrefix, r.RemotePrefix, r.Pattern)
}

// toLocal maps a remote topic to the local topic.
func (r Rule) toLocal(t string) (string, bool) {
	return mapTopic(t, r.RemotePrefix, r.LocalPrefix, r.Pattern)
}

func mapTopic(t, from, to, pattern string) (string, bool) {
	rest, ok := strings.CutPrefix(t, from)
	if !ok || !matches(pattern, rest) {
		return "", false
	}
	return to + rest, true
}

// matches reports whether topic name t matches filter f (MQTT rules; a
// '$' topic matches no leading wildcard).
func matches(f, t string) bool {
	if t != "" && t[0] == '$' && f != "" && (f[0] == '+' || f[0] == '#') {
		return false
	}
	for {
		fl, frest, fmore := strings.Cut(f, "/")
		if fl == "#" {
			return true
		}
		tl, trest, tmore := strings.Cut(t, "/")
		if fl != "+" && fl != tl {
			return false
		}
		if !fmore {
			return !tmore
		}
		if !tmore {
			// "a/#" matches "a" too.
			return frest == "#"
		}
		f, t = frest, trest
	}
}

// covers reports whether every topic matching filter b also matches
// filter a.
func covers(a, b string) bool {
	for {
		al, arest, amore := strings.Cut(a, "/")
		if al == "#" {
			return true
		}
		bl, brest, bmore := strings.Cut(b, "/")
		switch {
		case bl == "#":
			return false
		case al == "+":
		case al != bl || bl == "+":
			return false
		}
		if !amore || !bmore {
			if !amore && !bmore {
				return true
			}
			// "x/#" covers "x"; nothing else ends one side early.
			return amore && !bmore && arest == "#"
		}
		a, b = arest, brest
	}
}

// intersect returns the narrower of two filters when one covers the
// other ("" when they overlap only partly or not at all: demand is then
// left to the rule's own filter or ignored).
func intersect(a, b string) string {
	switch {
	case covers(a, b):
		return b
	case covers(b, a):
		return a
	}
	return ""
}
