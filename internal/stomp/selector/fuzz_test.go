package selector

import (
	"errors"
	"testing"
)

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"mc_identity = 'node1'", "a BETWEEN 1 AND 2", "a NOT IN ('x','y')", "a LIKE '%x_' ESCAPE '\\'",
		"NOT (a IS NULL) OR b > -1.5e3", "a + b * c / d % 2 <> 0x1F", "JMSPriority >= 5", "((a))", "'a''b' = a",
		"a = TRUE AND NOT b", "010L = 8", "-9223372036854775808 < a",
	} {
		f.Add(s, "1")
	}
	f.Fuzz(func(t *testing.T, sel, val string) {
		s, err := Parse(sel)
		if err != nil {
			var se *SyntaxError
			if !errors.As(err, &se) {
				t.Fatalf("error %v is not a SyntaxError", err)
			}
			if se.Pos < 0 || se.Pos > len(sel)+1 {
				t.Fatalf("position %d out of range", se.Pos)
			}
			return
		}
		get := func(name string) (string, bool) {
			if len(name)%2 == 0 {
				return val, true
			}
			return "", false
		}
		_ = s.Match(get)
		if s != nil && s.String() != sel {
			t.Fatal("String differs from the source")
		}
	})
}
