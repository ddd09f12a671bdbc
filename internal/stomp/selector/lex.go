package selector

import (
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// tokKind is the kind of a lexical token.
type tokKind uint8

const (
	tEOF tokKind = iota
	tIdent
	tString
	tInt
	tFloat
	// Keywords (case-insensitive).
	tAnd
	tOr
	tNot
	tBetween
	tLike
	tEscape
	tIn
	tIs
	tNull
	tTrue
	tFalse
	// Operators and punctuation.
	tEq
	tNe
	tLt
	tLe
	tGt
	tGe
	tPlus
	tMinus
	tStar
	tSlash
	tPercent
	tLParen
	tRParen
	tComma
)

var keywords = map[string]tokKind{
	"AND": tAnd, "OR": tOr, "NOT": tNot, "BETWEEN": tBetween, "LIKE": tLike,
	"ESCAPE": tEscape, "IN": tIn, "IS": tIs, "NULL": tNull, "TRUE": tTrue, "FALSE": tFalse,
}

var tokNames = [...]string{
	tEOF: "end of selector", tIdent: "identifier", tString: "string literal", tInt: "number", tFloat: "number",
	tAnd: "AND", tOr: "OR", tNot: "NOT", tBetween: "BETWEEN", tLike: "LIKE", tEscape: "ESCAPE", tIn: "IN",
	tIs: "IS", tNull: "NULL", tTrue: "TRUE", tFalse: "FALSE",
	tEq: "'='", tNe: "'<>'", tLt: "'<'", tLe: "'<='", tGt: "'>'", tGe: "'>='", tPlus: "'+'", tMinus: "'-'",
	tStar: "'*'", tSlash: "'/'", tPercent: "'%'", tLParen: "'('", tRParen: "')'", tComma: "','",
}

func (k tokKind) String() string { return tokNames[k] }

// token is one lexical token. pos is its byte offset in the selector.
type token struct {
	kind tokKind
	pos  int
	text string  // identifier name, string literal value (unescaped), source of a number
	i    int64   // tInt
	f    float64 // tFloat
}

// SyntaxError is the error of Parse for a selector it cannot compile.
// Pos is the 1-based byte offset of the offending token (0 for errors
// about the whole selector, such as its length).
type SyntaxError struct {
	Pos int
	Msg string
}

func (e *SyntaxError) Error() string {
	if e.Pos == 0 {
		return "selector: " + e.Msg
	}
	return fmt.Sprintf("selector: at position %d: %s", e.Pos, e.Msg)
}

func errAt(pos int, format string, args ...any) *SyntaxError {
	return &SyntaxError{Pos: pos + 1, Msg: fmt.Sprintf(format, args...)}
}

// lex splits the selector into tokens, ending with tEOF.
func lex(s string) ([]token, error) {
	var toks []token
	i := 0
	for {
		for i < len(s) && isSpace(s[i]) {
			i++
		}
		if i >= len(s) {
			toks = append(toks, token{kind: tEOF, pos: i})
			return toks, nil
		}
		start := i
		c := s[i]
		switch {
		case c == '\'':
			v, n, err := lexString(s, i)
			if err != nil {
				return nil, err
			}
			toks = append(toks, token{kind: tString, pos: start, text: v})
			i = n
		case c >= '0' && c <= '9' || c == '.' && i+1 < len(s) && s[i+1] >= '0' && s[i+1] <= '9':
			t, n, err := lexNumber(s, i)
			if err != nil {
				return nil, err
			}
			toks = append(toks, t)
			i = n
		case isIdentStart(s, i):
			n := i
			for n < len(s) && isIdentPart(s, n) {
				_, w := utf8.DecodeRuneInString(s[n:])
				n += w
			}
			word := s[i:n]
			if k, ok := keywords[strings.ToUpper(word)]; ok {
				toks = append(toks, token{kind: k, pos: start, text: word})
			} else {
				toks = append(toks, token{kind: tIdent, pos: start, text: word})
			}
			i = n
		default:
			k, w := tEOF, 1
			switch c {
			case '=':
				k = tEq
			case '<':
				switch {
				case i+1 < len(s) && s[i+1] == '>':
					k, w = tNe, 2
				case i+1 < len(s) && s[i+1] == '=':
					k, w = tLe, 2
				default:
					k = tLt
				}
			case '>':
				if i+1 < len(s) && s[i+1] == '=' {
					k, w = tGe, 2
				} else {
					k = tGt
				}
			case '+':
				k = tPlus
			case '-':
				k = tMinus
			case '*':
				k = tStar
			case '/':
				k = tSlash
			case '%':
				k = tPercent
			case '(':
				k = tLParen
			case ')':
				k = tRParen
			case ',':
				k = tComma
			case '!':
				if i+1 < len(s) && s[i+1] == '=' {
					return nil, errAt(i, "'!=' is not a selector operator; use '<>'")
				}
			case '"':
				return nil, errAt(i, "double quotes are not allowed; string literals use single quotes")
			}
			if k == tEOF {
				r, _ := utf8.DecodeRuneInString(s[i:])
				return nil, errAt(i, "unexpected character %q", r)
			}
			toks = append(toks, token{kind: k, pos: start})
			i += w
		}
	}
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' }

// isIdentStart reports whether s[i:] starts an identifier: a Java
// identifier start (a letter, '_' or '$').
func isIdentStart(s string, i int) bool {
	r, _ := utf8.DecodeRuneInString(s[i:])
	return r == '_' || r == '$' || unicode.IsLetter(r)
}

// isIdentPart reports whether s[i:] continues an identifier. Like
// ActiveMQ, a '.' is allowed inside an identifier (property names such as
// "mc.identity").
func isIdentPart(s string, i int) bool {
	r, _ := utf8.DecodeRuneInString(s[i:])
	return r == '_' || r == '$' || r == '.' || unicode.IsLetter(r) || unicode.IsDigit(r)
}

// lexString reads the string literal starting at the quote s[i]; a
// doubled quote stands for one quote.
func lexString(s string, i int) (string, int, error) {
	start := i
	i++
	var b strings.Builder
	for {
		j := strings.IndexByte(s[i:], '\'')
		if j < 0 {
			return "", 0, errAt(start, "unterminated string literal")
		}
		b.WriteString(s[i : i+j])
		i += j + 1
		if i < len(s) && s[i] == '\'' {
			b.WriteByte('\'')
			i++
			continue
		}
		return b.String(), i, nil
	}
}

// lexNumber reads a numeric literal: decimal, octal (leading 0) or hex
// (0x) integers with an optional L suffix, as in Java and ActiveMQ, and
// decimals with an optional exponent.
func lexNumber(s string, i int) (token, int, error) {
	start := i
	if s[i] == '0' && i+1 < len(s) && (s[i+1] == 'x' || s[i+1] == 'X') {
		n := i + 2
		for n < len(s) && isHex(s[n]) {
			n++
		}
		if n == i+2 {
			return token{}, 0, errAt(start, "malformed hexadecimal literal")
		}
		v, err := strconv.ParseUint(s[i+2:n], 16, 64)
		if err != nil || v > 1<<63-1 {
			return token{}, 0, errAt(start, "integer literal %s out of range", s[start:n])
		}
		n = skipLong(s, n)
		if err := numberEnd(s, start, n); err != nil {
			return token{}, 0, err
		}
		return token{kind: tInt, pos: start, text: s[start:n], i: int64(v)}, n, nil
	}
	n := i
	for n < len(s) && isDigit(s[n]) {
		n++
	}
	float := false
	if n < len(s) && s[n] == '.' {
		float = true
		n++
		for n < len(s) && isDigit(s[n]) {
			n++
		}
	}
	if n < len(s) && (s[n] == 'e' || s[n] == 'E') {
		float = true
		n++
		if n < len(s) && (s[n] == '+' || s[n] == '-') {
			n++
		}
		d := n
		for n < len(s) && isDigit(s[n]) {
			n++
		}
		if d == n {
			return token{}, 0, errAt(start, "malformed exponent in number %s", s[start:n])
		}
	}
	if float {
		if err := numberEnd(s, start, n); err != nil {
			return token{}, 0, err
		}
		v, err := strconv.ParseFloat(s[start:n], 64)
		if err != nil {
			return token{}, 0, errAt(start, "number %s out of range", s[start:n])
		}
		return token{kind: tFloat, pos: start, text: s[start:n], f: v}, n, nil
	}
	digits := s[start:n]
	base := 10
	if len(digits) > 1 && digits[0] == '0' {
		// A leading zero makes an octal literal, as in Java.
		base = 8
	}
	v, err := strconv.ParseInt(digits, base, 64)
	if err != nil && digits == minLongDigits {
		// Only valid after a unary minus; the parser checks.
		err, v = nil, 0
	}
	if err != nil {
		if base == 8 && strings.ContainsAny(digits, "89") {
			return token{}, 0, errAt(start, "malformed octal literal %s (a leading 0 makes a number octal)", digits)
		}
		return token{}, 0, errAt(start, "integer literal %s out of range", digits)
	}
	n = skipLong(s, n)
	if err := numberEnd(s, start, n); err != nil {
		return token{}, 0, err
	}
	return token{kind: tInt, pos: start, text: s[start:n], i: v}, n, nil
}

// minLongDigits is the magnitude of the smallest long, which only a
// negated literal can write.
const minLongDigits = "9223372036854775808"

func skipLong(s string, n int) int {
	if n < len(s) && (s[n] == 'l' || s[n] == 'L') {
		return n + 1
	}
	return n
}

// numberEnd rejects a number running into an identifier ("12abc").
func numberEnd(s string, start, n int) error {
	if n < len(s) && (isIdentPart(s, n)) {
		return errAt(start, "malformed number %q", s[start:n+1])
	}
	return nil
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func isHex(c byte) bool { return isDigit(c) || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' }
