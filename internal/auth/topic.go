package auth

import (
	"errors"
	"strings"
	"unicode/utf8"
)

// validFilter checks an MQTT topic filter: non-empty, valid UTF-8 without
// NUL, '#' only as the whole last level, '+' only as a whole level.
func validFilter(f string) error {
	if f == "" {
		return errors.New("empty topic")
	}
	if len(f) > 65535 {
		return errors.New("topic longer than 65535 bytes")
	}
	if !utf8.ValidString(f) || strings.IndexByte(f, 0) >= 0 {
		return errors.New("topic is not valid UTF-8 or contains NUL")
	}
	for i := 0; i < len(f); i++ {
		switch f[i] {
		case '+':
			if (i > 0 && f[i-1] != '/') || (i+1 < len(f) && f[i+1] != '/') {
				return errors.New("'+' must occupy a whole topic level")
			}
		case '#':
			if (i > 0 && f[i-1] != '/') || i != len(f)-1 {
				return errors.New("'#' must be the whole last topic level")
			}
		}
	}
	return nil
}

// nextLevel returns the topic level of s starting at pos and the position
// of the following level. When the last level has been consumed the
// returned position is len(s)+1, so "pos > len(s)" means "no more levels".
func nextLevel(s string, pos int) (level string, next int) {
	if i := strings.IndexByte(s[pos:], '/'); i >= 0 {
		return s[pos : pos+i], pos + i + 1
	}
	return s[pos:], len(s) + 1
}

// matchLevels reports whether the filter split into levels matches the
// topic name topic, applying the MQTT rule that wildcards in the first
// level never match topics starting with '$'.
func matchLevels(levels []string, topic string) bool {
	if topic == "" {
		return false
	}
	if topic[0] == '$' && (levels[0] == "+" || levels[0] == "#") {
		return false
	}
	pos := 0
	for _, lv := range levels {
		if lv == "#" {
			return true
		}
		if pos > len(topic) {
			return false
		}
		seg, next := nextLevel(topic, pos)
		if lv != "+" && lv != seg {
			return false
		}
		pos = next
	}
	return pos > len(topic)
}

// coversLevels reports whether every topic matched by the filter sub is
// also matched by the filter split into levels, i.e. whether a
// subscription to sub can only ever be sent messages the ACL filter
// matches. Examples: "a/#" covers "a/#", "a/+" , "a" and "a/b/c"; "a/+"
// covers "a/b" and "a/+" but not "a/#"; "a/b" covers only "a/b".
func coversLevels(levels []string, sub string) bool {
	if sub == "" {
		return false
	}
	if sub[0] == '$' && (levels[0] == "+" || levels[0] == "#") {
		return false
	}
	pos := 0
	for _, lv := range levels {
		if lv == "#" {
			return true
		}
		if pos > len(sub) {
			return false
		}
		seg, next := nextLevel(sub, pos)
		switch {
		case seg == "#":
			return false
		case lv == "+":
		case seg != lv: // also rejects seg == "+" against a literal level
			return false
		}
		pos = next
	}
	return pos > len(sub)
}

// splitShared strips a "$share/<group>/" prefix from a subscription filter.
// ok is false for a malformed shared subscription.
func splitShared(filter string) (rest string, ok bool) {
	if !strings.HasPrefix(filter, "$share/") {
		return filter, true
	}
	group, rest, found := strings.Cut(filter[len("$share/"):], "/")
	if !found || group == "" || strings.ContainsAny(group, "+#") || rest == "" {
		return "", false
	}
	return rest, true
}
