package selector

import (
	"errors"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"
)

// kind is the dynamic type of a value.
type kind uint8

const (
	kNull kind = iota // NULL, also the unknown truth value
	kBool
	kInt
	kFloat
	kStr
)

// value is the result of evaluating an expression. hdr marks a string
// read from a header, which converts to a number or a boolean when
// compared with one.
type value struct {
	k   kind
	hdr bool
	b   bool
	i   int64
	f   float64
	s   string
}

var (
	vNull  = value{}
	vTrue  = value{k: kBool, b: true}
	vFalse = value{k: kBool}
)

func boolValue(b bool) value {
	if b {
		return vTrue
	}
	return vFalse
}

// tv is a three-valued truth value.
type tv uint8

const (
	tvFalse tv = iota
	tvTrue
	tvUnknown
)

// truth is v used as a condition.
func truth(v value) tv {
	switch v.k {
	case kBool:
		if v.b {
			return tvTrue
		}
		return tvFalse
	case kStr:
		if b, ok := headerBool(v); ok {
			if b {
				return tvTrue
			}
			return tvFalse
		}
	}
	return tvUnknown
}

func tvValue(t tv) value {
	switch t {
	case tvTrue:
		return vTrue
	case tvFalse:
		return vFalse
	}
	return vNull
}

// headerBool converts a header value "true" or "false" (any case).
func headerBool(v value) (bool, bool) {
	if v.k != kStr || !v.hdr {
		return false, false
	}
	switch {
	case strings.EqualFold(v.s, "true"):
		return true, true
	case strings.EqualFold(v.s, "false"):
		return false, true
	}
	return false, false
}

// toNumber returns v as a number: a number itself, or a header string
// that parses as one.
func toNumber(v value) (value, bool) {
	switch v.k {
	case kInt, kFloat:
		return v, true
	case kStr:
		if v.hdr {
			return parseNumber(v.s)
		}
	}
	return vNull, false
}

// parseNumber parses a header value as a decimal integer or a decimal
// number with an optional exponent (no hex, no Inf or NaN, no blanks).
func parseNumber(s string) (value, bool) {
	i := 0
	if i < len(s) && (s[i] == '+' || s[i] == '-') {
		i++
	}
	d := i
	for i < len(s) && isDigit(s[i]) {
		i++
	}
	digits := i - d
	if i == len(s) {
		if digits == 0 {
			return vNull, false
		}
		if n, err := strconv.ParseInt(s, 10, 64); err == nil {
			return value{k: kInt, i: n}, true
		}
		f, err := strconv.ParseFloat(s, 64)
		return value{k: kFloat, f: f}, err == nil
	}
	if s[i] == '.' {
		i++
		for i < len(s) && isDigit(s[i]) {
			i++
			digits++
		}
	}
	if digits == 0 {
		return vNull, false
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		e := i
		for i < len(s) && isDigit(s[i]) {
			i++
		}
		if e == i {
			return vNull, false
		}
	}
	if i != len(s) {
		return vNull, false
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return vNull, false
	}
	return value{k: kFloat, f: f}, true
}

func asFloat(v value) float64 {
	if v.k == kInt {
		return float64(v.i)
	}
	return v.f
}

type getter = func(name string) (string, bool)

// node is a compiled expression.
type node interface {
	eval(get getter) value
}

type litNode struct{ v value }

func (n litNode) eval(getter) value { return n.v }

// identKind says how an identifier reads its header.
type identKind uint8

const (
	idPlain identKind = iota
	idPriority
	idDeliveryMode
)

type identNode struct {
	name string // the STOMP header read
	kind identKind
}

// jmsHeaders maps JMS header names to the STOMP headers carrying them.
var jmsHeaders = map[string]string{
	"JMSPriority":      "priority",
	"JMSTimestamp":     "timestamp",
	"JMSExpiration":    "expires",
	"JMSMessageID":     "message-id",
	"JMSCorrelationID": "correlation-id",
	"JMSType":          "type",
	"JMSDeliveryMode":  "persistent",
}

func newIdent(name string) identNode {
	h, ok := jmsHeaders[name]
	if !ok {
		return identNode{name: name}
	}
	switch name {
	case "JMSPriority":
		return identNode{name: h, kind: idPriority}
	case "JMSDeliveryMode":
		return identNode{name: h, kind: idDeliveryMode}
	}
	return identNode{name: h}
}

func (n identNode) eval(get getter) value {
	v, ok := get(n.name)
	switch n.kind {
	case idPriority:
		// Every JMS message has a priority; STOMP's default is 4.
		if !ok {
			return value{k: kInt, i: 4}
		}
	case idDeliveryMode:
		// Every JMS message has a delivery mode; a STOMP message is
		// persistent only with persistent:true.
		if ok && strings.EqualFold(v, "true") {
			return value{k: kStr, s: "PERSISTENT"}
		}
		return value{k: kStr, s: "NON_PERSISTENT"}
	}
	if !ok {
		return vNull
	}
	return value{k: kStr, hdr: true, s: v}
}

type negNode struct{ x node }

func (n negNode) eval(get getter) value {
	v, ok := toNumber(n.x.eval(get))
	if !ok {
		return vNull
	}
	if v.k == kInt {
		if v.i == math.MinInt64 {
			return value{k: kFloat, f: -float64(v.i)}
		}
		return value{k: kInt, i: -v.i}
	}
	return value{k: kFloat, f: -v.f}
}

type arithNode struct {
	op   tokKind
	l, r node
}

func (n arithNode) eval(get getter) value {
	a, ok := toNumber(n.l.eval(get))
	if !ok {
		return vNull
	}
	b, ok := toNumber(n.r.eval(get))
	if !ok {
		return vNull
	}
	if a.k == kInt && b.k == kInt {
		x, y := a.i, b.i
		switch n.op {
		case tPlus:
			if s := x + y; (s > x) == (y > 0) {
				return value{k: kInt, i: s}
			}
		case tMinus:
			if s := x - y; (s < x) == (y > 0) {
				return value{k: kInt, i: s}
			}
		case tStar:
			if x == 0 || y == 0 {
				return value{k: kInt}
			}
			if p := x * y; p/y == x && !(x == -1 && y == math.MinInt64) && !(y == -1 && x == math.MinInt64) {
				return value{k: kInt, i: p}
			}
		case tSlash:
			// Integer division, as for Java longs; by zero is unknown.
			if y == 0 {
				return vNull
			}
			if !(x == math.MinInt64 && y == -1) {
				return value{k: kInt, i: x / y}
			}
		case tPercent:
			if y == 0 {
				return vNull
			}
			if y == -1 {
				return value{k: kInt}
			}
			return value{k: kInt, i: x % y}
		}
		// Overflow: carry on in floating point.
	}
	x, y := asFloat(a), asFloat(b)
	var f float64
	switch n.op {
	case tPlus:
		f = x + y
	case tMinus:
		f = x - y
	case tStar:
		f = x * y
	case tSlash:
		if y == 0 {
			return vNull
		}
		f = x / y
	case tPercent:
		if y == 0 {
			return vNull
		}
		f = math.Mod(x, y)
	}
	if math.IsNaN(f) {
		return vNull
	}
	return value{k: kFloat, f: f}
}

type cmpNode struct {
	op   tokKind
	l, r node
}

func (n cmpNode) eval(get getter) value {
	return compare(n.op, n.l.eval(get), n.r.eval(get))
}

// compare applies a comparison operator with the typing rules of the
// package comment.
func compare(op tokKind, a, b value) value {
	if a.k == kNull || b.k == kNull {
		return vNull
	}
	an, bn := a.k == kInt || a.k == kFloat, b.k == kInt || b.k == kFloat
	switch {
	case an || bn:
		x, ok1 := toNumber(a)
		y, ok2 := toNumber(b)
		if !ok1 || !ok2 {
			return vFalse
		}
		return boolValue(ordered(op, cmpNumbers(x, y)))
	case a.k == kBool || b.k == kBool:
		x, ok1 := a.b, a.k == kBool
		if !ok1 {
			x, ok1 = headerBool(a)
		}
		y, ok2 := b.b, b.k == kBool
		if !ok2 {
			y, ok2 = headerBool(b)
		}
		if !ok1 || !ok2 {
			return vFalse
		}
		switch op {
		case tEq:
			return boolValue(x == y)
		case tNe:
			return boolValue(x != y)
		}
		return vFalse
	}
	// Two strings.
	switch op {
	case tEq:
		return boolValue(a.s == b.s)
	case tNe:
		return boolValue(a.s != b.s)
	}
	if a.hdr && b.hdr {
		if x, ok := parseNumber(a.s); ok {
			if y, ok := parseNumber(b.s); ok {
				return boolValue(ordered(op, cmpNumbers(x, y)))
			}
		}
	}
	return boolValue(ordered(op, strings.Compare(a.s, b.s)))
}

// cmpNumbers returns -1, 0 or 1; 2 when unordered (NaN).
func cmpNumbers(a, b value) int {
	if a.k == kInt && b.k == kInt {
		switch {
		case a.i < b.i:
			return -1
		case a.i > b.i:
			return 1
		}
		return 0
	}
	x, y := asFloat(a), asFloat(b)
	switch {
	case x < y:
		return -1
	case x > y:
		return 1
	case x == y:
		return 0
	}
	return 2
}

func ordered(op tokKind, c int) bool {
	if c == 2 {
		return op == tNe
	}
	switch op {
	case tEq:
		return c == 0
	case tNe:
		return c != 0
	case tLt:
		return c < 0
	case tLe:
		return c <= 0
	case tGt:
		return c > 0
	case tGe:
		return c >= 0
	}
	return false
}

type andNode []node

func (n andNode) eval(get getter) value {
	r := tvTrue
	for _, x := range n {
		switch truth(x.eval(get)) {
		case tvFalse:
			return vFalse
		case tvUnknown:
			r = tvUnknown
		}
	}
	return tvValue(r)
}

type orNode []node

func (n orNode) eval(get getter) value {
	r := tvFalse
	for _, x := range n {
		switch truth(x.eval(get)) {
		case tvTrue:
			return vTrue
		case tvUnknown:
			r = tvUnknown
		}
	}
	return tvValue(r)
}

type notNode struct{ x node }

func (n notNode) eval(get getter) value {
	switch truth(n.x.eval(get)) {
	case tvTrue:
		return vFalse
	case tvFalse:
		return vTrue
	}
	return vNull
}

// negate applies NOT to a truth value (unknown stays unknown).
func negate(v value, not bool) value {
	if !not || v.k != kBool {
		return v
	}
	return boolValue(!v.b)
}

type betweenNode struct {
	x, lo, hi node
	not       bool
}

func (n betweenNode) eval(get getter) value {
	x := n.x.eval(get)
	ge := truth(compare(tGe, x, n.lo.eval(get)))
	le := truth(compare(tLe, x, n.hi.eval(get)))
	var r value
	switch {
	case ge == tvFalse || le == tvFalse:
		r = vFalse
	case ge == tvUnknown || le == tvUnknown:
		r = vNull
	default:
		r = vTrue
	}
	return negate(r, n.not)
}

type inNode struct {
	x   node
	set map[string]struct{}
	not bool
}

func (n inNode) eval(get getter) value {
	v := n.x.eval(get)
	if v.k == kNull {
		return vNull
	}
	if v.k != kStr {
		return vFalse
	}
	_, ok := n.set[v.s]
	return negate(boolValue(ok), n.not)
}

type isNullNode struct {
	x   node
	not bool
}

func (n isNullNode) eval(get getter) value {
	return boolValue((n.x.eval(get).k == kNull) != n.not)
}

type likeNode struct {
	x   node
	pat []likeTok
	not bool
}

func (n likeNode) eval(get getter) value {
	v := n.x.eval(get)
	if v.k == kNull {
		return vNull
	}
	if v.k != kStr {
		return vFalse
	}
	return negate(boolValue(likeMatch(n.pat, v.s)), n.not)
}

// likeTok is one element of a compiled LIKE pattern.
type likeTok struct {
	kind uint8 // likeLit, likeOne, likeAny
	lit  string
}

const (
	likeLit = iota
	likeOne // _
	likeAny // %
)

// compileLike compiles a LIKE pattern; esc is the escape character or
// -1.
func compileLike(p string, esc rune) ([]likeTok, error) {
	var toks []likeTok
	var lit strings.Builder
	flush := func() {
		if lit.Len() > 0 {
			toks = append(toks, likeTok{kind: likeLit, lit: lit.String()})
			lit.Reset()
		}
	}
	for i := 0; i < len(p); {
		r, w := utf8.DecodeRuneInString(p[i:])
		i += w
		switch {
		case r == esc:
			if i >= len(p) {
				return nil, errors.New("the LIKE pattern ends with its escape character")
			}
			r, w = utf8.DecodeRuneInString(p[i:])
			i += w
			lit.WriteRune(r)
		case r == '%':
			flush()
			// Consecutive % are one.
			if len(toks) == 0 || toks[len(toks)-1].kind != likeAny {
				toks = append(toks, likeTok{kind: likeAny})
			}
		case r == '_':
			flush()
			toks = append(toks, likeTok{kind: likeOne})
		default:
			lit.WriteRune(r)
		}
	}
	flush()
	return toks, nil
}

// likeMatch matches s against a compiled pattern. It backtracks only to
// the last %, so it takes at most len(pattern)*len(s) steps.
func likeMatch(p []likeTok, s string) bool {
	pi, si := 0, 0
	starP, starS := -1, 0
	for {
		if pi < len(p) {
			t := p[pi]
			switch t.kind {
			case likeAny:
				starP, starS = pi, si
				pi++
				continue
			case likeOne:
				if si < len(s) {
					_, w := utf8.DecodeRuneInString(s[si:])
					si += w
					pi++
					continue
				}
			default:
				if strings.HasPrefix(s[si:], t.lit) {
					si += len(t.lit)
					pi++
					continue
				}
			}
		} else if si == len(s) {
			return true
		}
		// Mismatch: let the last % take one more character.
		if starP < 0 || starS >= len(s) {
			return false
		}
		_, w := utf8.DecodeRuneInString(s[starS:])
		starS += w
		si, pi = starS, starP+1
	}
}
