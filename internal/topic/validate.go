package topic

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors. Every error returned by ValidateName wraps
// ErrInvalidName and every error returned by ValidateFilter wraps
// ErrInvalidFilter, so callers can map them to reason codes with errors.Is
// (0x90 Topic Name invalid, 0x8F Topic Filter invalid).
var (
	ErrInvalidName   = errors.New("invalid topic name")
	ErrInvalidFilter = errors.New("invalid topic filter")
)

const (
	// SharePrefix is the first level of a shared subscription filter.
	SharePrefix      = "$share"
	sharePrefixSlash = SharePrefix + "/"
)

// quoteMax bounds how much of an offending topic is echoed in an error.
const quoteMax = 64

func quote(s string) string {
	if len(s) <= quoteMax {
		return fmt.Sprintf("%q", s)
	}
	// Cut on a rune boundary where possible so %q does not print a
	// split multi-byte sequence as an escape.
	cut := quoteMax
	for cut > quoteMax-4 && cut > 0 && s[cut]&0xC0 == 0x80 {
		cut--
	}
	return fmt.Sprintf("%q...(%d bytes)", s[:cut], len(s))
}

func nameErr(name, format string, args ...any) error {
	return fmt.Errorf("%w %s: %s", ErrInvalidName, quote(name), fmt.Sprintf(format, args...))
}

func filterErr(filter, format string, args ...any) error {
	return fmt.Errorf("%w %s: %s", ErrInvalidFilter, quote(filter), fmt.Sprintf(format, args...))
}

// ValidateName checks a topic name as carried in a PUBLISH packet (or a
// Will Topic): it must be non-empty, must not contain the wildcard
// characters '+' or '#' [MQTT-3.3.2-2], must not contain the null
// character [MQTT-4.7.3-2], and must not exceed maxLen bytes or maxLevels
// levels (a limit of 0 means unlimited). UTF-8 well-formedness is the
// codec's job and is not checked here.
func ValidateName(name string, maxLen, maxLevels int) error {
	if name == "" {
		return nameErr(name, "must be at least one character long [MQTT-4.7.3-1]")
	}
	if maxLen > 0 && len(name) > maxLen {
		return nameErr(name, "is %d bytes long, the limit is %d", len(name), maxLen)
	}
	levels := 1
	for i := 0; i < len(name); i++ {
		switch name[i] {
		case '/':
			levels++
		case '+', '#':
			return nameErr(name, "wildcard character %q at byte %d is not allowed in a topic name [MQTT-3.3.2-2]", name[i], i)
		case 0:
			return nameErr(name, "null character at byte %d [MQTT-4.7.3-2]", i)
		}
	}
	if maxLevels > 0 && levels > maxLevels {
		return nameErr(name, "has %d levels, the limit is %d", levels, maxLevels)
	}
	return nil
}

// ValidateFilter checks a topic filter as carried in a SUBSCRIBE or
// UNSUBSCRIBE packet. It must be non-empty, '#' may only appear as the
// whole last level [MQTT-4.7.1-1], '+' only as a whole level
// [MQTT-4.7.1-2], and it must not contain the null character.
//
// A filter whose first level is "$share" is a shared subscription filter
// "$share/{ShareName}/{filter}": ShareName must be at least one character
// and must not contain '/', '+' or '#' [MQTT-4.8.2-1, MQTT-4.8.2-2], and
// the inner filter must be non-empty and valid itself.
//
// maxLen limits the length of the whole filter in bytes; maxLevels limits
// the number of levels of the (inner) filter that is matched against topic
// names. A limit of 0 means unlimited.
func ValidateFilter(filter string, maxLen, maxLevels int) error {
	if filter == "" {
		return filterErr(filter, "must be at least one character long [MQTT-4.7.3-1]")
	}
	if maxLen > 0 && len(filter) > maxLen {
		return filterErr(filter, "is %d bytes long, the limit is %d", len(filter), maxLen)
	}
	if strings.IndexByte(filter, 0) >= 0 {
		return filterErr(filter, "null character at byte %d [MQTT-4.7.3-2]", strings.IndexByte(filter, 0))
	}
	inner := filter
	if isShareLevel(filter) {
		if len(filter) == len(SharePrefix) {
			return filterErr(filter, "shared subscription has no ShareName and no topic filter [MQTT-4.8.2-1]")
		}
		rest := filter[len(sharePrefixSlash):]
		i := strings.IndexByte(rest, '/')
		group := rest
		if i >= 0 {
			group = rest[:i]
		}
		if group == "" {
			return filterErr(filter, "shared subscription ShareName must be at least one character long [MQTT-4.8.2-1]")
		}
		if j := strings.IndexAny(group, "+#"); j >= 0 {
			return filterErr(filter, "shared subscription ShareName %s contains %q [MQTT-4.8.2-2]", quote(group), group[j])
		}
		if i < 0 {
			return filterErr(filter, "shared subscription has no topic filter after the ShareName [MQTT-4.8.2-1]")
		}
		inner = rest[i+1:]
		if inner == "" {
			return filterErr(filter, "shared subscription topic filter must be at least one character long [MQTT-4.8.2-1]")
		}
	}
	levels := 1
	start := 0 // start of the current level within inner
	for i := 0; i < len(inner); i++ {
		switch inner[i] {
		case '/':
			levels++
			start = i + 1
		case '+':
			if i != start || (i+1 < len(inner) && inner[i+1] != '/') {
				return filterErr(filter, "'+' at byte %d must occupy an entire level [MQTT-4.7.1-2]", len(filter)-len(inner)+i)
			}
		case '#':
			if i != start || i+1 != len(inner) {
				return filterErr(filter, "'#' at byte %d must be the last character and occupy an entire level [MQTT-4.7.1-1]", len(filter)-len(inner)+i)
			}
		}
	}
	if maxLevels > 0 && levels > maxLevels {
		return filterErr(filter, "has %d levels, the limit is %d", levels, maxLevels)
	}
	return nil
}

// isShareLevel reports whether the first level of filter is "$share".
func isShareLevel(filter string) bool {
	return strings.HasPrefix(filter, SharePrefix) &&
		(len(filter) == len(SharePrefix) || filter[len(SharePrefix)] == '/')
}

// ParseShared splits a shared subscription filter "$share/{group}/{inner}".
// shared is true when the first level of filter is "$share"; group and
// inner are then whatever follows (either may be empty if filter is
// malformed — ValidateFilter rejects those). For any other filter it
// returns ("", filter, false).
func ParseShared(filter string) (group, inner string, shared bool) {
	if !isShareLevel(filter) {
		return "", filter, false
	}
	if len(filter) == len(SharePrefix) {
		return "", "", true
	}
	rest := filter[len(sharePrefixSlash):]
	i := strings.IndexByte(rest, '/')
	if i < 0 {
		return rest, "", true
	}
	return rest[:i], rest[i+1:], true
}
