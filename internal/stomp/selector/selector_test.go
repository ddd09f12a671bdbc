package selector

import (
	"errors"
	"strings"
	"testing"
)

func headers(kv ...string) func(string) (string, bool) {
	m := make(map[string]string)
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(name string) (string, bool) {
		v, ok := m[name]
		return v, ok
	}
}

func TestMatch(t *testing.T) {
	h := []string{
		"mc_identity", "node1", "color", "red", "size", "12", "price", "2.5", "flag", "true", "off", "FALSE",
		"name", "O'Brien", "path", "a_b%c", "empty", "", "priority", "7", "persistent", "true",
		"correlation-id", "abc-123", "type", "order", "timestamp", "1700000000000", "message-id", "ID:1",
		"expires", "0", "big", "9223372036854775807", "word", "abc", "nine", "9", "ten", "10", "neg", "-3",
		"unicode", "héllo", "mc.identity", "dotted", "num1", "1e3",
	}
	get := headers(h...)
	cases := []struct {
		sel  string
		want bool
	}{
		// MCollective.
		{"mc_identity = 'node1'", true},
		{"mc_identity = 'node2'", false},
		{"mc_identity='node1' OR mc_identity='node2'", true},
		{"mc_identity = 'Node1'", false},
		{"mc_identity <> 'node1'", false},
		// Keywords are case-insensitive, identifiers are not.
		{"color = 'red' and SIZE is null", true},
		{"color = 'red' AnD size = 12", true},
		{"Color = 'red'", false},
		{"Color IS NULL", true},
		// Strings.
		{"name = 'O''Brien'", true},
		{"empty = ''", true},
		{"color IN ('blue', 'red')", true},
		{"color NOT IN ('blue', 'red')", false},
		{"color in ('blue')", false},
		{"missing IN ('a')", false},
		{"NOT (missing IN ('a'))", false},
		{"missing NOT IN ('a')", false},
		{"color LIKE 'r%'", true},
		{"color LIKE 're_'", true},
		{"color LIKE 'r_'", false},
		{"color LIKE '%e%'", true},
		{"color LIKE '%'", true},
		{"color NOT LIKE 'b%'", true},
		{"empty LIKE '%'", true},
		{"empty LIKE '_'", false},
		{"path LIKE 'a\\_b\\%c' ESCAPE '\\'", true},
		{"path LIKE 'a!_b!%c' ESCAPE '!'", true},
		{"word LIKE 'a!_c' ESCAPE '!'", false},
		{"path LIKE 'a_b_c'", true},
		{"unicode LIKE 'h_llo'", true},
		{"unicode LIKE 'h%o'", true},
		{"word LIKE 'a%b%c'", true},
		{"word LIKE 'a%%'", true},
		{"word LIKE '%c%b'", false},
		{"missing LIKE '%'", false},
		{"missing NOT LIKE '%'", false},
		{"word < 'abd'", true},
		{"word > 'abd'", false},
		// Numbers: a numeric header compares as a number.
		{"size = 12", true},
		{"size = 12.0", true},
		{"size > 9", true},
		{"size < 100", true},
		{"size >= 12 AND size <= 12", true},
		{"size <> 12", false},
		{"size = '12'", true},
		{"size = '12.0'", false},
		{"price > 2", true},
		{"price = 2.5", true},
		{"price = 25E-1", true},
		{"price BETWEEN 2 AND 3", true},
		{"price NOT BETWEEN 2 AND 3", false},
		{"size BETWEEN 13 AND 20", false},
		{"size NOT BETWEEN 13 AND 20", true},
		{"missing BETWEEN 1 AND 2", false},
		{"missing NOT BETWEEN 1 AND 2", false},
		{"size + 1 = 13", true},
		{"size - 2 * 3 = 6", true},
		{"(size - 2) * 3 = 30", true},
		{"size / 5 = 2", true},
		{"size / 5.0 = 2.4", true},
		{"size % 5 = 2", true},
		{"-size = -12", true},
		{"- -size = 12", true},
		{"+size = 12", true},
		{"neg < 0", true},
		{"size / 0 = 1", false},
		{"NOT (size / 0 = 1)", false},
		{"big * 2 > big", true},
		{"big = 9223372036854775807", true},
		{"-9223372036854775808 < 0", true},
		{"0x10 = 16", true},
		{"010 = 8", true},
		{"12L = size", true},
		{".5 < 1", true},
		{"num1 = 1000", true},
		{"num1 = '1e3'", true},
		// Unlike types: false, not unknown.
		{"word = 1", false},
		{"word <> 1", false},
		{"NOT (word = 1)", true},
		{"word > 1", false},
		// Two headers: numeric order when both are numbers.
		{"nine < ten", true},
		{"word < color", true},
		{"nine = '9'", true},
		// Booleans.
		{"flag = TRUE", true},
		{"flag", true},
		{"NOT flag", false},
		{"off", false},
		{"NOT off", true},
		{"off = FALSE", true},
		{"word", false},
		{"NOT word", false},
		{"TRUE", true},
		{"FALSE", false},
		{"NOT FALSE", true},
		{"TRUE = TRUE", true},
		{"(size = 12) = TRUE", true},
		// Three-valued logic.
		{"missing = 'x'", false},
		{"missing <> 'x'", false},
		{"NOT (missing = 'x')", false},
		{"missing = 'x' OR color = 'red'", true},
		{"missing = 'x' AND color = 'red'", false},
		{"NOT (missing = 'x' AND color = 'blue')", true},
		{"NOT (missing = 'x' OR color = 'blue')", false},
		{"missing IS NULL", true},
		{"missing IS NOT NULL", false},
		{"color IS NOT NULL", true},
		{"empty IS NULL", false},
		{"missing + 1 IS NULL", true},
		{"missing = NULL", false},
		{"NULL IS NULL", true},
		// JMS header names.
		{"JMSPriority = 7", true},
		{"JMSPriority > 4", true},
		{"JMSDeliveryMode = 'PERSISTENT'", true},
		{"JMSCorrelationID = 'abc-123'", true},
		{"JMSType = 'order'", true},
		{"JMSTimestamp > 1600000000000", true},
		{"JMSMessageID = 'ID:1'", true},
		{"JMSExpiration = 0", true},
		// Identifiers with '.' and '$'.
		{"mc.identity = 'dotted'", true},
		{"$x IS NULL", true},
		// Blanks.
		{"\tcolor\n=\r'red' ", true},
	}
	for _, c := range cases {
		s, err := Parse(c.sel)
		if err != nil {
			t.Errorf("Parse(%q): %v", c.sel, err)
			continue
		}
		if got := s.Match(get); got != c.want {
			t.Errorf("%q: got %v, want %v", c.sel, got, c.want)
		}
		if s.String() != c.sel {
			t.Errorf("String() = %q, want %q", s.String(), c.sel)
		}
	}
}

func TestJMSDefaults(t *testing.T) {
	// Without the STOMP headers: priority 4, non-persistent.
	get := headers()
	for sel, want := range map[string]bool{
		"JMSPriority = 4":                    true,
		"JMSDeliveryMode = 'NON_PERSISTENT'": true,
		"JMSDeliveryMode = 'PERSISTENT'":     false,
		"JMSCorrelationID IS NULL":           true,
	} {
		s, err := Parse(sel)
		if err != nil {
			t.Fatal(err)
		}
		if got := s.Match(get); got != want {
			t.Errorf("%q: got %v", sel, got)
		}
	}
}

func TestEmpty(t *testing.T) {
	for _, s := range []string{"", "  ", "\t\n"} {
		sel, err := Parse(s)
		if sel != nil || err != nil {
			t.Errorf("Parse(%q) = %v, %v", s, sel, err)
		}
	}
	var sel *Selector
	if !sel.Match(headers()) || sel.String() != "" {
		t.Error("nil selector")
	}
}

func TestParseErrors(t *testing.T) {
	cases := []struct {
		sel string
		pos int    // 1-based, 0 = whole selector
		msg string // substring
	}{
		{"color = ", 9, "unexpected end"},
		{"color = 'red", 9, "unterminated string"},
		{"color == 'red'", 8, "unexpected '='"},
		{"color != 'red'", 7, "use '<>'"},
		{"color = \"red\"", 9, "single quotes"},
		{"(color = 'red'", 15, "expected ')'"},
		{"color = 'red')", 14, "unexpected ')'"},
		{"color IN ()", 11, "expected string literal"},
		{"color IN ('a' 'b')", 15, "expected ')'"},
		{"color IN (1)", 11, "expected string literal"},
		{"color LIKE x", 12, "expected string literal"},
		{"color LIKE 'a' ESCAPE 'ab'", 23, "exactly one character"},
		{"color LIKE 'a!' ESCAPE '!'", 12, "ends with its escape"},
		{"color IS 'x'", 10, "expected NULL"},
		{"color NOT 'x'", 11, "BETWEEN, IN or LIKE"},
		{"size BETWEEN 1", 15, "expected AND"},
		{"'abc'", 1, "not a condition"},
		{"1 + 2", 1, "not a condition"},
		{"'a' AND b", 1, "AND needs conditions"},
		{"a OR 1", 6, "OR needs conditions"},
		{"NOT 5", 5, "NOT needs conditions"},
		{"'a' + 1 = 2", 1, "needs numbers"},
		{"TRUE < FALSE", 6, "cannot order"},
		{"1 IN ('a')", 1, "IN needs a string"},
		{"1 LIKE 'a'", 1, "LIKE needs a string"},
		{"12abc = 1", 1, "malformed number"},
		{"1e = 1", 1, "malformed exponent"},
		{"09 = 1", 1, "octal"},
		{"99999999999999999999 = 1", 1, "out of range"},
		{"0x = 1", 1, "hexadecimal"},
		{"9223372036854775808 = 1", 1, "out of range"},
		{"color # 1", 7, "unexpected character"},
		{"AND", 1, "unexpected AND"},
		{strings.Repeat("(", 65) + "a" + strings.Repeat(")", 65), 65, "deeper than 64"},
		{strings.Repeat("NOT ", 65) + "a", 257, "deeper than 64"},
		{strings.Repeat("-", 65) + "1 = 1", 65, "deeper than 64"},
		{"a = '" + strings.Repeat("x", 4100) + "'", 0, "longer than 4096"},
	}
	for _, c := range cases {
		_, err := Parse(c.sel)
		var se *SyntaxError
		if !errors.As(err, &se) {
			t.Errorf("Parse(%.40q): error %v, want a SyntaxError", c.sel, err)
			continue
		}
		if se.Pos != c.pos || !strings.Contains(se.Msg, c.msg) {
			t.Errorf("Parse(%.40q) = %v (pos %d), want pos %d and %q", c.sel, err, se.Pos, c.pos, c.msg)
		}
	}
	// 64 levels are fine.
	if _, err := Parse(strings.Repeat("(", 64) + "a" + strings.Repeat(")", 64)); err != nil {
		t.Error(err)
	}
}

func TestLikeLong(t *testing.T) {
	// Many % against a long mismatching value stays quick (no exponential
	// backtracking).
	s, err := Parse("v LIKE '" + strings.Repeat("%a", 500) + "b'")
	if err != nil {
		t.Fatal(err)
	}
	if s.Match(headers("v", strings.Repeat("a", 5000))) {
		t.Error("matched")
	}
}

func BenchmarkMatch(b *testing.B) {
	s, err := Parse("mc_identity = 'node1' AND (size > 10 OR color LIKE 'r%')")
	if err != nil {
		b.Fatal(err)
	}
	get := headers("mc_identity", "node1", "size", "5", "color", "red")
	for b.Loop() {
		if !s.Match(get) {
			b.Fatal("no match")
		}
	}
}
