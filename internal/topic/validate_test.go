package topic

import (
	"errors"
	"strings"
	"testing"
)

func TestValidateName(t *testing.T) {
	tests := []struct {
		name      string
		maxLen    int
		maxLevels int
		wantErr   string // substring of the error; "" = valid
	}{
		{"a", 0, 0, ""},
		{"/", 0, 0, ""},
		{"a//b", 0, 0, ""},
		{"sport/tennis/player1", 0, 0, ""},
		{"$SYS/broker/uptime", 0, 0, ""},
		{" ", 0, 0, ""},
		{"ünïcödé/tøpic", 0, 0, ""},
		{"", 0, 0, "at least one character"},
		{"a/+", 0, 0, "wildcard character '+' at byte 2"},
		{"a/#", 0, 0, "wildcard character '#' at byte 2"},
		{"a+b", 0, 0, "wildcard character '+'"},
		{"#", 0, 0, "wildcard character '#'"},
		{"a\x00b", 0, 0, "null character at byte 1"},
		{"abcd", 4, 0, ""},
		{"abcde", 4, 0, "is 5 bytes long, the limit is 4"},
		{"a/b/c", 0, 3, ""},
		{"a/b/c/", 0, 3, "has 4 levels, the limit is 3"},
		{"//", 0, 2, "has 3 levels, the limit is 2"},
	}
	for _, tt := range tests {
		err := ValidateName(tt.name, tt.maxLen, tt.maxLevels)
		if tt.wantErr == "" {
			if err != nil {
				t.Errorf("ValidateName(%q) = %v, want nil", tt.name, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("ValidateName(%q) = nil, want error containing %q", tt.name, tt.wantErr)
			continue
		}
		if !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("ValidateName(%q) = %q, want it to contain %q", tt.name, err, tt.wantErr)
		}
		if !errors.Is(err, ErrInvalidName) {
			t.Errorf("ValidateName(%q) error does not wrap ErrInvalidName", tt.name)
		}
	}
}

func TestValidateFilter(t *testing.T) {
	tests := []struct {
		filter    string
		maxLen    int
		maxLevels int
		wantErr   string
	}{
		{"a", 0, 0, ""},
		{"#", 0, 0, ""},
		{"+", 0, 0, ""},
		{"/", 0, 0, ""},
		{"+/+", 0, 0, ""},
		{"/+", 0, 0, ""},
		{"+/", 0, 0, ""},
		{"sport/#", 0, 0, ""},
		{"sport/+/player1", 0, 0, ""},
		{"sport/tennis/#", 0, 0, ""},
		{"+/tennis/#", 0, 0, ""},
		{"a//b", 0, 0, ""},
		{"$SYS/#", 0, 0, ""},
		{"$sharex/a", 0, 0, ""}, // not a shared subscription
		{"a/$share/b", 0, 0, ""},
		{"", 0, 0, "at least one character"},
		{"sport/tennis#", 0, 0, "'#' at byte 12 must be the last character"},
		{"sport/tennis/#/ranking", 0, 0, "'#' at byte 13 must be the last"},
		{"#/", 0, 0, "'#' at byte 0"},
		{"##", 0, 0, "'#' at byte 0"},
		{"sport+", 0, 0, "'+' at byte 5 must occupy an entire level"},
		{"sport/+a", 0, 0, "'+' at byte 6"},
		{"++", 0, 0, "'+' at byte 0"},
		{"a/b+/c", 0, 0, "'+' at byte 3"},
		{"a\x00", 0, 0, "null character at byte 1"},
		{"abcd", 4, 0, ""},
		{"abcde", 4, 0, "is 5 bytes long, the limit is 4"},
		{"a/+/#", 0, 3, ""},
		{"a/+/#/", 0, 3, "'#' at byte 4"},
		{"a/+/c/#", 0, 3, "has 4 levels, the limit is 3"},
		// Shared subscriptions [MQTT-4.8.2-1, MQTT-4.8.2-2].
		{"$share/g/a", 0, 0, ""},
		{"$share/g/#", 0, 0, ""},
		{"$share/g/+/b", 0, 0, ""},
		{"$share/group-1/a//b", 0, 0, ""},
		{"$share/g//", 0, 0, ""},
		{"$share/g/$SYS/x", 0, 0, ""},
		{"$share", 0, 0, "no ShareName and no topic filter"},
		{"$share/", 0, 0, "ShareName must be at least one character"},
		{"$share//a", 0, 0, "ShareName must be at least one character"},
		{"$share/g", 0, 0, "no topic filter after the ShareName"},
		{"$share/g/", 0, 0, "topic filter must be at least one character"},
		{"$share/+/a", 0, 0, `ShareName "+" contains '+'`},
		{"$share/g#/a", 0, 0, `contains '#'`},
		{"$share/a+b/x", 0, 0, `contains '+'`},
		{"$share/g/a#", 0, 0, "'#' at byte 10"},
		{"$share/g/a/#/b", 0, 0, "'#' at byte 11"},
		{"$share/g/+x", 0, 0, "'+' at byte 9"},
		// Level limit applies to the inner filter.
		{"$share/g/a/b", 0, 2, ""},
		{"$share/g/a/b/c", 0, 2, "has 3 levels, the limit is 2"},
		{"$share/g/abc", 11, 0, "is 12 bytes long, the limit is 11"},
	}
	for _, tt := range tests {
		err := ValidateFilter(tt.filter, tt.maxLen, tt.maxLevels)
		if tt.wantErr == "" {
			if err != nil {
				t.Errorf("ValidateFilter(%q) = %v, want nil", tt.filter, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("ValidateFilter(%q) = nil, want error containing %q", tt.filter, tt.wantErr)
			continue
		}
		if !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("ValidateFilter(%q) = %q, want it to contain %q", tt.filter, err, tt.wantErr)
		}
		if !errors.Is(err, ErrInvalidFilter) {
			t.Errorf("ValidateFilter(%q) error does not wrap ErrInvalidFilter", tt.filter)
		}
	}
}

func TestErrorQuotesLongTopics(t *testing.T) {
	long := strings.Repeat("é", 100) + "#"
	err := ValidateName(long, 0, 0)
	if err == nil {
		t.Fatal("want error")
	}
	msg := err.Error()
	if len(msg) > 200 {
		t.Errorf("error message is %d bytes, want the topic truncated: %s", len(msg), msg)
	}
	if !strings.Contains(msg, "(201 bytes)") {
		t.Errorf("error %q does not give the full length", msg)
	}
	if strings.Contains(msg, `\x`) {
		t.Errorf("error %q cuts a multi-byte character", msg)
	}
}

func TestParseShared(t *testing.T) {
	tests := []struct {
		filter, group, inner string
		shared               bool
	}{
		{"a/b", "", "a/b", false},
		{"#", "", "#", false},
		{"$sharex/g/a", "", "$sharex/g/a", false},
		{"$SYS/a", "", "$SYS/a", false},
		{"$share/g/a/b", "g", "a/b", true},
		{"$share/g/#", "g", "#", true},
		{"$share/g//", "g", "/", true},
		{"$share/g/$share/h/x", "g", "$share/h/x", true},
		{"$share/g", "g", "", true},
		{"$share/g/", "g", "", true},
		{"$share", "", "", true},
		{"$share/", "", "", true},
	}
	for _, tt := range tests {
		g, in, sh := ParseShared(tt.filter)
		if g != tt.group || in != tt.inner || sh != tt.shared {
			t.Errorf("ParseShared(%q) = (%q, %q, %v), want (%q, %q, %v)",
				tt.filter, g, in, sh, tt.group, tt.inner, tt.shared)
		}
	}
}

func FuzzValidateFilter(f *testing.F) {
	for _, s := range []string{"a/+/#", "$share/g/a", "#", "+", "a//b", "$share//", "a#", "+a"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		err := ValidateFilter(s, 0, 0)
		if err == nil {
			// A valid filter round-trips through the reference matcher's
			// notion of validity and can be used by the index.
			if !refValidFilter(s) {
				t.Fatalf("ValidateFilter(%q) accepted an invalid filter", s)
			}
			x := NewIndex[int]()
			x.Subscribe(1, s, Options{})
			if !x.Unsubscribe(1, s) || x.Len() != 0 || !x.root.empty() {
				t.Fatalf("subscribe/unsubscribe %q left state behind", s)
			}
		} else if refValidFilter(s) {
			t.Fatalf("ValidateFilter(%q) = %v, want nil", s, err)
		}
		if ValidateName(s, 0, 0) == nil && !isShareLevel(s) && err != nil {
			t.Fatalf("%q is a valid name but not a valid filter: %v", s, err)
		}
	})
}

// refValidFilter is an independent, simple-minded statement of the rules.
func refValidFilter(s string) bool {
	if s == "" || strings.ContainsRune(s, 0) {
		return false
	}
	levels := strings.Split(s, "/")
	if levels[0] == "$share" {
		if len(levels) < 3 || levels[1] == "" || strings.ContainsAny(levels[1], "+#") {
			return false
		}
		levels = levels[2:]
		if len(levels) == 1 && levels[0] == "" {
			return false
		}
	}
	for i, l := range levels {
		if strings.Contains(l, "#") && (l != "#" || i != len(levels)-1) {
			return false
		}
		if strings.Contains(l, "+") && l != "+" {
			return false
		}
	}
	return true
}
