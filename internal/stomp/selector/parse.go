// Package selector compiles and evaluates JMS message selectors (the
// SQL-92 conditional expression subset of JMS 1.1, as ActiveMQ accepts
// it) against the headers of a STOMP message.
//
// Language: identifiers (header names, case-sensitive; the JMS header
// names JMSPriority, JMSTimestamp, JMSExpiration, JMSMessageID,
// JMSCorrelationID, JMSType and JMSDeliveryMode read the STOMP headers
// priority, timestamp, expires, message-id, correlation-id, type and
// persistent), string literals in single quotes (a doubled quote stands for one), numeric
// literals (decimal, octal with a leading 0 and hex with 0x integers with
// an optional L, decimals with an optional exponent), TRUE, FALSE and
// NULL; the operators = <> < <= > >= + - * / % (unary + and - too), AND,
// OR, NOT, [NOT] BETWEEN x AND y, [NOT] IN ('a', ...), [NOT] LIKE 'pat'
// [ESCAPE 'c'] (% any sequence, _ one character), IS [NOT] NULL, and
// parentheses. Keywords are case-insensitive.
//
// Logic is three-valued as in JMS: a missing header is NULL, any
// comparison or arithmetic with NULL is unknown, NOT unknown is unknown,
// and a selector that evaluates to unknown does not match.
//
// Typing: STOMP header values are strings. A header compared with (or
// used in arithmetic with) a number is converted to a number when its
// value parses as one (as ActiveMQ converts string properties);
// otherwise the comparison is false, as JMS defines comparisons of unlike
// types. Two headers compared with < <= > >= are compared as numbers when
// both parse as numbers, else as strings (lexicographically by bytes);
// = and <> between strings are always exact string comparisons, so
// mc_identity = 'node1' matches exactly "node1". A header compared with
// TRUE or FALSE is converted when it is "true" or "false" (any case), and
// a header used alone as a condition is true for "true" and false for
// "false" (any case), unknown otherwise.
package selector

import (
	"strings"
	"unicode/utf8"
)

// MaxLength is the longest selector Parse accepts, in bytes.
const MaxLength = 4096

// MaxDepth is the deepest nesting (parentheses, NOT, unary signs) Parse
// accepts.
const MaxDepth = 64

// Selector is a compiled message selector. It is immutable and safe for
// concurrent use.
type Selector struct {
	src  string
	root node
}

// Parse compiles a JMS/ActiveMQ message selector. "" or an all-blank
// selector returns (nil, nil): no selector, every message matches. Errors
// are *SyntaxError values naming the position and the reason.
func Parse(s string) (*Selector, error) {
	if len(s) > MaxLength {
		return nil, &SyntaxError{Msg: "selector longer than 4096 bytes"}
	}
	if strings.TrimLeft(s, " \t\r\n\f") == "" {
		return nil, nil
	}
	toks, err := lex(s)
	if err != nil {
		return nil, err
	}
	p := &parser{toks: toks}
	root, typ, err := p.parseOr()
	if err != nil {
		return nil, err
	}
	if t := p.peek(); t.kind != tEOF {
		return nil, errAt(t.pos, "unexpected %s after the end of the expression", t.kind)
	}
	if typ != sBool && typ != sAny {
		return nil, errAt(0, "the selector is a %s, not a condition", typ)
	}
	return &Selector{src: s, root: root}, nil
}

// Match evaluates the selector against a message's headers: get returns a
// header's value and whether the message has it. A nil Selector matches
// everything; an unknown (NULL) result does not match.
func (s *Selector) Match(get func(name string) (string, bool)) bool {
	if s == nil {
		return true
	}
	v := s.root.eval(get)
	return truth(v) == tvTrue
}

// String returns the selector's source text ("" for nil).
func (s *Selector) String() string {
	if s == nil {
		return ""
	}
	return s.src
}

// styp is the static type of an expression, checked at parse time so
// that nonsense such as 'a' AND 1 is a clear error rather than a selector
// that never matches.
type styp uint8

const (
	sAny styp = iota // an identifier or NULL: known only at evaluation
	sBool
	sNum
	sStr
)

func (t styp) String() string {
	switch t {
	case sBool:
		return "condition"
	case sNum:
		return "number"
	case sStr:
		return "string"
	}
	return "value"
}

type parser struct {
	toks  []token
	i     int
	depth int
}

func (p *parser) peek() token { return p.toks[p.i] }

func (p *parser) next() token {
	t := p.toks[p.i]
	if t.kind != tEOF {
		p.i++
	}
	return t
}

func (p *parser) accept(k tokKind) bool {
	if p.toks[p.i].kind == k {
		p.i++
		return true
	}
	return false
}

func (p *parser) expect(k tokKind, what string) (token, error) {
	t := p.peek()
	if t.kind != k {
		return t, errAt(t.pos, "expected %s %s, found %s", k, what, describe(t))
	}
	p.i++
	return t, nil
}

func describe(t token) string {
	switch t.kind {
	case tIdent:
		return "identifier " + t.text
	case tInt, tFloat:
		return "number " + t.text
	case tString:
		return "string literal"
	}
	return t.kind.String()
}

// enter counts one level of nesting.
func (p *parser) enter(pos int) error {
	p.depth++
	if p.depth > MaxDepth {
		return errAt(pos, "expression nested deeper than %d levels", MaxDepth)
	}
	return nil
}

func (p *parser) leave() { p.depth-- }

func needBool(t token, op string, typ styp) error {
	if typ != sBool && typ != sAny {
		return errAt(t.pos, "%s needs conditions, not a %s", op, typ)
	}
	return nil
}

func needNum(pos int, op string, typ styp) error {
	if typ != sNum && typ != sAny {
		return errAt(pos, "%s needs numbers, not a %s", op, typ)
	}
	return nil
}

// parseOr: and (OR and)*
func (p *parser) parseOr() (node, styp, error) {
	first := p.peek()
	x, typ, err := p.parseAnd()
	if err != nil {
		return nil, 0, err
	}
	if p.peek().kind != tOr {
		return x, typ, nil
	}
	if err := needBool(first, "OR", typ); err != nil {
		return nil, 0, err
	}
	xs := []node{x}
	for p.accept(tOr) {
		t := p.peek()
		y, typ, err := p.parseAnd()
		if err != nil {
			return nil, 0, err
		}
		if err := needBool(t, "OR", typ); err != nil {
			return nil, 0, err
		}
		xs = append(xs, y)
	}
	return orNode(xs), sBool, nil
}

// parseAnd: not (AND not)*
func (p *parser) parseAnd() (node, styp, error) {
	first := p.peek()
	x, typ, err := p.parseNot()
	if err != nil {
		return nil, 0, err
	}
	if p.peek().kind != tAnd {
		return x, typ, nil
	}
	if err := needBool(first, "AND", typ); err != nil {
		return nil, 0, err
	}
	xs := []node{x}
	for p.accept(tAnd) {
		t := p.peek()
		y, typ, err := p.parseNot()
		if err != nil {
			return nil, 0, err
		}
		if err := needBool(t, "AND", typ); err != nil {
			return nil, 0, err
		}
		xs = append(xs, y)
	}
	return andNode(xs), sBool, nil
}

// parseNot: NOT not | predicate
func (p *parser) parseNot() (node, styp, error) {
	t := p.peek()
	if t.kind != tNot {
		return p.parsePredicate()
	}
	p.next()
	if err := p.enter(t.pos); err != nil {
		return nil, 0, err
	}
	defer p.leave()
	arg := p.peek()
	x, typ, err := p.parseNot()
	if err != nil {
		return nil, 0, err
	}
	if err := needBool(arg, "NOT", typ); err != nil {
		return nil, 0, err
	}
	return notNode{x}, sBool, nil
}

// parsePredicate: sum [cmp sum | [NOT] BETWEEN sum AND sum | [NOT] IN (...)
// | [NOT] LIKE 'p' [ESCAPE 'c'] | IS [NOT] NULL]
func (p *parser) parsePredicate() (node, styp, error) {
	first := p.peek()
	x, typ, err := p.parseSum()
	if err != nil {
		return nil, 0, err
	}
	t := p.peek()
	switch t.kind {
	case tEq, tNe, tLt, tLe, tGt, tGe:
		p.next()
		y, ytyp, err := p.parseSum()
		if err != nil {
			return nil, 0, err
		}
		if t.kind != tEq && t.kind != tNe && (typ == sBool || ytyp == sBool) {
			return nil, 0, errAt(t.pos, "%s cannot order conditions", t.kind)
		}
		return cmpNode{op: t.kind, l: x, r: y}, sBool, nil
	case tIs:
		p.next()
		not := p.accept(tNot)
		if _, err := p.expect(tNull, "after IS"); err != nil {
			return nil, 0, err
		}
		return isNullNode{x: x, not: not}, sBool, nil
	case tNot, tBetween, tIn, tLike:
		not := false
		if t.kind == tNot {
			p.next()
			not = true
			t = p.peek()
			if t.kind != tBetween && t.kind != tIn && t.kind != tLike {
				return nil, 0, errAt(t.pos, "expected BETWEEN, IN or LIKE after NOT, found %s", describe(t))
			}
		}
		p.next()
		switch t.kind {
		case tBetween:
			if typ == sBool {
				return nil, 0, errAt(first.pos, "BETWEEN needs a value, not a condition")
			}
			lo, _, err := p.parseSum()
			if err != nil {
				return nil, 0, err
			}
			if _, err := p.expect(tAnd, "in BETWEEN"); err != nil {
				return nil, 0, err
			}
			hi, _, err := p.parseSum()
			if err != nil {
				return nil, 0, err
			}
			return betweenNode{x: x, lo: lo, hi: hi, not: not}, sBool, nil
		case tIn:
			if typ != sStr && typ != sAny {
				return nil, 0, errAt(first.pos, "IN needs a string value, not a %s", typ)
			}
			if _, err := p.expect(tLParen, "after IN"); err != nil {
				return nil, 0, err
			}
			set := make(map[string]struct{})
			for {
				s, err := p.expect(tString, "in the IN list")
				if err != nil {
					return nil, 0, err
				}
				set[s.text] = struct{}{}
				if p.accept(tComma) {
					continue
				}
				if _, err := p.expect(tRParen, "closing the IN list"); err != nil {
					return nil, 0, err
				}
				break
			}
			return inNode{x: x, set: set, not: not}, sBool, nil
		default: // tLike
			if typ != sStr && typ != sAny {
				return nil, 0, errAt(first.pos, "LIKE needs a string value, not a %s", typ)
			}
			pt, err := p.expect(tString, "after LIKE")
			if err != nil {
				return nil, 0, err
			}
			esc := rune(-1)
			if p.accept(tEscape) {
				e, err := p.expect(tString, "after ESCAPE")
				if err != nil {
					return nil, 0, err
				}
				if utf8.RuneCountInString(e.text) != 1 {
					return nil, 0, errAt(e.pos, "the ESCAPE string must be exactly one character")
				}
				esc = []rune(e.text)[0]
			}
			pat, err := compileLike(pt.text, esc)
			if err != nil {
				return nil, 0, errAt(pt.pos, "%s", err.Error())
			}
			return likeNode{x: x, pat: pat, not: not}, sBool, nil
		}
	}
	return x, typ, nil
}

// parseSum: product ((+|-) product)*
func (p *parser) parseSum() (node, styp, error) {
	first := p.peek()
	x, typ, err := p.parseProduct()
	if err != nil {
		return nil, 0, err
	}
	for {
		t := p.peek()
		if t.kind != tPlus && t.kind != tMinus {
			return x, typ, nil
		}
		if err := needNum(first.pos, t.kind.String(), typ); err != nil {
			return nil, 0, err
		}
		p.next()
		arg := p.peek()
		y, ytyp, err := p.parseProduct()
		if err != nil {
			return nil, 0, err
		}
		if err := needNum(arg.pos, t.kind.String(), ytyp); err != nil {
			return nil, 0, err
		}
		x, typ = arithNode{op: t.kind, l: x, r: y}, sNum
	}
}

// parseProduct: unary ((*|/|%) unary)*
func (p *parser) parseProduct() (node, styp, error) {
	first := p.peek()
	x, typ, err := p.parseUnary()
	if err != nil {
		return nil, 0, err
	}
	for {
		t := p.peek()
		if t.kind != tStar && t.kind != tSlash && t.kind != tPercent {
			return x, typ, nil
		}
		if err := needNum(first.pos, t.kind.String(), typ); err != nil {
			return nil, 0, err
		}
		p.next()
		arg := p.peek()
		y, ytyp, err := p.parseUnary()
		if err != nil {
			return nil, 0, err
		}
		if err := needNum(arg.pos, t.kind.String(), ytyp); err != nil {
			return nil, 0, err
		}
		x, typ = arithNode{op: t.kind, l: x, r: y}, sNum
	}
}

// parseUnary: (+|-) unary | primary
func (p *parser) parseUnary() (node, styp, error) {
	t := p.peek()
	if t.kind != tPlus && t.kind != tMinus {
		return p.parsePrimary()
	}
	p.next()
	if err := p.enter(t.pos); err != nil {
		return nil, 0, err
	}
	defer p.leave()
	// A minus directly before an integer literal folds into it, so the
	// smallest long, -9223372036854775808, can be written.
	if n := p.peek(); t.kind == tMinus && n.kind == tInt && strings.TrimRight(n.text, "lL") == minLongDigits {
		p.next()
		return litNode{value{k: kInt, i: -1 << 63}}, sNum, nil
	}
	arg := p.peek()
	x, typ, err := p.parseUnary()
	if err != nil {
		return nil, 0, err
	}
	if err := needNum(arg.pos, "unary "+t.kind.String(), typ); err != nil {
		return nil, 0, err
	}
	if t.kind == tPlus {
		return arithNode{op: tPlus, l: litNode{value{k: kInt}}, r: x}, sNum, nil
	}
	return negNode{x}, sNum, nil
}

// parsePrimary: literal | identifier | ( or )
func (p *parser) parsePrimary() (node, styp, error) {
	t := p.next()
	switch t.kind {
	case tString:
		return litNode{value{k: kStr, s: t.text}}, sStr, nil
	case tInt:
		if strings.TrimRight(t.text, "lL") == minLongDigits {
			return nil, 0, errAt(t.pos, "integer literal %s out of range", t.text)
		}
		return litNode{value{k: kInt, i: t.i}}, sNum, nil
	case tFloat:
		return litNode{value{k: kFloat, f: t.f}}, sNum, nil
	case tTrue:
		return litNode{value{k: kBool, b: true}}, sBool, nil
	case tFalse:
		return litNode{value{k: kBool}}, sBool, nil
	case tNull:
		return litNode{value{}}, sAny, nil
	case tIdent:
		return newIdent(t.text), sAny, nil
	case tLParen:
		if err := p.enter(t.pos); err != nil {
			return nil, 0, err
		}
		defer p.leave()
		x, typ, err := p.parseOr()
		if err != nil {
			return nil, 0, err
		}
		if _, err := p.expect(tRParen, "closing the parenthesis"); err != nil {
			return nil, 0, err
		}
		return x, typ, nil
	case tEOF:
		return nil, 0, errAt(t.pos, "unexpected end of selector: expected a value")
	}
	return nil, 0, errAt(t.pos, "unexpected %s: expected a value", describe(t))
}
