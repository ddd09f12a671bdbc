package auth

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// Access is the access a rule grants. AccessDeny (zero) denies everything
// the rule's topic matches.
type Access uint8

// Access values. A SUBSCRIBE needs AccessRead, as does delivering a message
// to a subscriber; a PUBLISH (including a will) needs AccessWrite.
const (
	AccessDeny      Access = 0
	AccessRead      Access = 1
	AccessWrite     Access = 2
	AccessReadWrite Access = AccessRead | AccessWrite
)

func (a Access) String() string {
	switch a {
	case AccessDeny:
		return "deny"
	case AccessRead:
		return "read"
	case AccessWrite:
		return "write"
	case AccessReadWrite:
		return "readwrite"
	}
	return fmt.Sprintf("Access(%d)", uint8(a))
}

// ParseAccess parses an access keyword of the Mosquitto ACL syntax. The
// empty string means readwrite, as when the keyword is omitted in a file.
func ParseAccess(s string) (Access, error) {
	switch s {
	case "", "readwrite":
		return AccessReadWrite, nil
	case "read":
		return AccessRead, nil
	case "write":
		return AccessWrite, nil
	case "deny":
		return AccessDeny, nil
	}
	return 0, fmt.Errorf("invalid access type %q (want read, write, readwrite or deny)", s)
}

// Rule is one access rule, the YAML form of a Mosquitto acl_file line.
//
//	acl:
//	  rules:
//	    - {topic: "public/#", access: read}           # anonymous clients
//	    - {user: alice, topic: "alice/#"}              # readwrite
//	    - {user: alice, topic: "alice/secret", access: deny}
//	    - {pattern: true, topic: "devices/%c/#", access: write}
//
// User selects whose rule it is, like a "user" line in acl_file: the empty
// string means anonymous clients (the rules before the first "user" line
// of a file); a named user's rules apply only to clients authenticated as
// that user. Pattern rules apply to every client and must not name a user;
// %u and %c in their topic are replaced by the username and client id.
// Access is read, write, readwrite (the default when empty) or deny.
type Rule struct {
	User    string `yaml:"user,omitempty"`
	Pattern bool   `yaml:"pattern,omitempty"`
	Access  string `yaml:"access,omitempty"`
	Topic   string `yaml:"topic"`
}

// String renders r as an acl_file line (without the user line).
func (r Rule) String() string {
	kw := "topic"
	if r.Pattern {
		kw = "pattern"
	}
	a := r.Access
	if a == "" {
		a = "readwrite"
	}
	s := kw + " " + a + " " + r.Topic
	if r.User != "" && !r.Pattern {
		s = "user " + r.User + ": " + s
	}
	return s
}

// Subscribe check modes of ACLConfig.SubscribeCheck.
const (
	// SubscribeCheckFilter (the default) grants a SUBSCRIBE only when a
	// single read rule matches every topic the filter can match: an ACL
	// "a/#" allows subscribing to "a/#", "a/+/c" or "a/b", an ACL "a/b"
	// does not allow "a/#". Each delivered message is checked again.
	SubscribeCheckFilter = "filter"
	// SubscribeCheckNone grants every well-formed SUBSCRIBE and relies
	// solely on the per-message CanReceive check, which is what Mosquitto
	// 1.3.5 and later do. Use it when existing clients subscribe to
	// filters wider than their ACLs.
	SubscribeCheckNone = "none"
)

// ACLConfig is the YAML configuration of access control. ACLs are enabled
// when File is set or Rules is non-empty; the rules of the file come first,
// then Rules (the result does not depend on the order). Once enabled,
// anything not granted is denied. Without ACLs every authenticated client
// may publish and subscribe to anything.
type ACLConfig struct {
	// File is a Mosquitto acl_file.
	File string `yaml:"file,omitempty"`
	// Rules are additional rules in YAML form.
	Rules []Rule `yaml:"rules,omitempty"`
	// SubscribeCheck is SubscribeCheckFilter (default, "") or
	// SubscribeCheckNone.
	SubscribeCheck string `yaml:"subscribe_check,omitempty"`
	// Default is what happens when no rule matches: "deny" (default,
	// Mosquitto's behaviour) or "allow" (only deny rules restrict; useful
	// to refuse a few topics on an otherwise open broker).
	Default string `yaml:"default,omitempty"`
}

// Enabled reports whether c configures any ACL.
func (c ACLConfig) Enabled() bool { return c.File != "" || len(c.Rules) > 0 }

// LoadACL builds the ACL c describes, reading c.File. It returns nil (allow
// everything) and no error when c is not Enabled.
func LoadACL(c ACLConfig) (*ACL, error) {
	if !c.Enabled() {
		return nil, nil
	}
	var subCheck bool
	switch c.SubscribeCheck {
	case "", SubscribeCheckFilter:
		subCheck = true
	case SubscribeCheckNone:
	default:
		return nil, fmt.Errorf("acl: invalid subscribe_check %q (want %q or %q)", c.SubscribeCheck, SubscribeCheckFilter, SubscribeCheckNone)
	}
	var defaultAllow bool
	switch c.Default {
	case "", "deny":
	case "allow":
		defaultAllow = true
	default:
		return nil, fmt.Errorf("acl: invalid default %q (want deny or allow)", c.Default)
	}
	var (
		rules []Rule
		where []source
		warn  []string
	)
	if c.File != "" {
		fr, lines, w, err := readACLFile(c.File)
		if err != nil {
			return nil, err
		}
		rules, warn = fr, w
		for _, l := range lines {
			where = append(where, source{file: c.File, line: l})
		}
	}
	for i, r := range c.Rules {
		rules = append(rules, r)
		where = append(where, source{line: i + 1})
	}
	acl, err := compileACL(rules, where)
	if err != nil {
		return nil, err
	}
	acl.warnings = append(warn, acl.warnings...)
	acl.subscribeCheck = subCheck
	acl.defaultAllow = defaultAllow
	return acl, nil
}

// source locates a rule for error messages: a file line, or the 1-based
// index into a YAML rule list.
type source struct {
	file string
	line int
}

func (s source) errorf(format string, args ...any) error {
	if s.file == "" {
		return fmt.Errorf("acl rule %d: %s", s.line, fmt.Sprintf(format, args...))
	}
	return &ParseError{File: s.file, Line: s.line, Msg: fmt.Sprintf(format, args...)}
}

func (s source) String() string {
	if s.file == "" {
		return fmt.Sprintf("acl rule %d", s.line)
	}
	return fmt.Sprintf("%s:%d", s.file, s.line)
}

// ACL is a compiled set of access rules with Mosquitto acl_file semantics:
//
//   - A client authenticated as user U is checked against the topic rules
//     of U's section (not those of other users, nor the anonymous ones);
//     an anonymous client against the rules before the first "user" line.
//     Within that list a matching deny rule denies, otherwise a matching
//     rule granting the requested access grants.
//   - If the user's list does not decide, pattern rules are checked the
//     same way (deny first) after substituting %u and %c. As in Mosquitto,
//     a client whose username or client id contains '+' or '#' is denied
//     everything patterns could grant, and a pattern using %u never
//     applies to anonymous clients.
//   - Isobar additionally refuses substitutions that would change the
//     topic structure: a username or client id containing '/' (or, at the
//     very start of the pattern, beginning with '$') makes a pattern using
//     it grant nothing, and a deny pattern using it deny the request. This
//     closes the hole where client id "bob/x" would get into "bob/#".
//   - Anything not granted is denied. Wildcards in the first level of a
//     rule never match topics beginning with '$', so $SYS/# is readable
//     only when a rule names it explicitly.
//
// A nil *ACL allows everything (no ACL configured). An ACL is immutable and
// safe for concurrent use; the per-message checks do not allocate.
type ACL struct {
	anon     ruleList
	users    map[string]*ruleList
	patterns []patternRule
	// patDeny/patGrant index into patterns.
	patDeny, patGrant []int
	subscribeCheck    bool
	defaultAllow      bool // no matching rule: allow (ACLConfig.Default)
	warnings          []string
	rules             int
}

type ruleList struct {
	deny  [][]string // levels
	grant []topicRule
}

type topicRule struct {
	access Access
	levels []string
}

type piece struct {
	lit string
	sub byte // 0: literal lit, 'u': username, 'c': client id
}

type patLevel struct {
	wild   bool    // "+" (a "#" level ends the pattern and sets patternRule.tail)
	lit    string  // literal level when pieces is nil
	pieces []piece // template level with substitutions
}

type patternRule struct {
	access       Access
	levels       []patLevel
	tail         bool // ends with "#"
	usesU, usesC bool
	leadSub      byte // substitution at the very start of the pattern, 0 if none
	src          source
}

// NewACL compiles rules (see Rule) into an ACL that checks subscriptions
// with SubscribeCheckFilter. Errors name the 1-based index of the rule.
func NewACL(rules []Rule) (*ACL, error) {
	where := make([]source, len(rules))
	for i := range where {
		where[i] = source{line: i + 1}
	}
	a, err := compileACL(rules, where)
	if err != nil {
		return nil, err
	}
	a.subscribeCheck = true
	return a, nil
}

// LoadACLFile reads and compiles a Mosquitto acl_file. Errors name the file
// and line. Subscriptions are checked with SubscribeCheckFilter.
func LoadACLFile(path string) (*ACL, error) {
	return LoadACL(ACLConfig{File: path})
}

func compileACL(rules []Rule, where []source) (*ACL, error) {
	a := &ACL{users: make(map[string]*ruleList), rules: len(rules)}
	for i, r := range rules {
		src := where[i]
		acc, err := ParseAccess(r.Access)
		if err != nil {
			return nil, src.errorf("%v", err)
		}
		if err := validFilter(r.Topic); err != nil {
			return nil, src.errorf("invalid ACL topic %q: %v", r.Topic, err)
		}
		if r.Pattern {
			if r.User != "" {
				return nil, src.errorf("a pattern rule applies to all clients and cannot name a user (%q)", r.User)
			}
			p := compilePattern(r.Topic, acc, src)
			if !p.usesU && !p.usesC {
				a.warnings = append(a.warnings, fmt.Sprintf("%s: ACL pattern %q does not contain %%c or %%u", src, r.Topic))
			}
			if acc == AccessDeny {
				a.patDeny = append(a.patDeny, len(a.patterns))
			} else {
				a.patGrant = append(a.patGrant, len(a.patterns))
			}
			a.patterns = append(a.patterns, p)
			continue
		}
		l := &a.anon
		if r.User != "" {
			if l = a.users[r.User]; l == nil {
				l = &ruleList{}
				a.users[r.User] = l
			}
		}
		levels := strings.Split(r.Topic, "/")
		if acc == AccessDeny {
			l.deny = append(l.deny, levels)
		} else {
			l.grant = append(l.grant, topicRule{access: acc, levels: levels})
		}
	}
	return a, nil
}

func compilePattern(topic string, acc Access, src source) patternRule {
	p := patternRule{access: acc, src: src}
	if len(topic) >= 2 && topic[0] == '%' && (topic[1] == 'u' || topic[1] == 'c') {
		p.leadSub = topic[1]
	}
	for _, lv := range strings.Split(topic, "/") {
		switch lv {
		case "#":
			p.tail = true
			continue
		case "+":
			p.levels = append(p.levels, patLevel{wild: true})
			continue
		}
		var pieces []piece
		var lit strings.Builder
		hasSub := false
		for i := 0; i < len(lv); i++ {
			if lv[i] == '%' && i+1 < len(lv) && (lv[i+1] == 'u' || lv[i+1] == 'c') {
				if lit.Len() > 0 {
					pieces = append(pieces, piece{lit: lit.String()})
					lit.Reset()
				}
				pieces = append(pieces, piece{sub: lv[i+1]})
				if lv[i+1] == 'u' {
					p.usesU = true
				} else {
					p.usesC = true
				}
				hasSub = true
				i++
				continue
			}
			lit.WriteByte(lv[i])
		}
		if !hasSub {
			p.levels = append(p.levels, patLevel{lit: lv})
			continue
		}
		if lit.Len() > 0 {
			pieces = append(pieces, piece{lit: lit.String()})
		}
		p.levels = append(p.levels, patLevel{pieces: pieces})
	}
	return p
}

// Warnings returns non-fatal remarks found while loading (for example a
// pattern without %u or %c), for the caller to log.
func (a *ACL) Warnings() []string {
	if a == nil {
		return nil
	}
	return append([]string(nil), a.warnings...)
}

// Len returns the number of rules.
func (a *ACL) Len() int {
	if a == nil {
		return 0
	}
	return a.rules
}

// CanPublish reports whether a client may publish to topic (a topic name;
// names containing wildcards are refused). user is the authenticated
// username, "" for an anonymous client; clientID is the client identifier
// in use (assigned or chosen).
func (a *ACL) CanPublish(user, clientID, topic string) bool {
	if a == nil {
		return true
	}
	if !plainTopic(topic) {
		return false
	}
	return a.check(user, clientID, AccessWrite, topic, false)
}

// CanReceive reports whether a message published to topic may be delivered
// to the client (including retained messages on subscribe). See
// CanPublish for user and clientID.
func (a *ACL) CanReceive(user, clientID, topic string) bool {
	if a == nil {
		return true
	}
	if !plainTopic(topic) {
		return false
	}
	return a.check(user, clientID, AccessRead, topic, false)
}

// CanSubscribe reports whether the client may subscribe to filter. With
// SubscribeCheckFilter a single rule granting read must match every topic
// the filter can match, and no deny rule may match them all (a deny rule
// matching only part of the filter is enforced by CanReceive on delivery).
// A "$share/<group>/" prefix is removed before checking. Malformed filters
// are refused. See CanPublish for user and clientID.
func (a *ACL) CanSubscribe(user, clientID, filter string) bool {
	f, ok := splitShared(filter)
	if !ok || validFilter(f) != nil {
		return false
	}
	if a == nil || !a.subscribeCheck {
		return true
	}
	return a.check(user, clientID, AccessRead, f, true)
}

func plainTopic(t string) bool {
	return t != "" && strings.IndexByte(t, '+') < 0 && strings.IndexByte(t, '#') < 0
}

func (a *ACL) check(user, clientID string, want Access, topic string, sub bool) bool {
	match := matchLevels
	if sub {
		match = coversLevels
	}
	l := &a.anon
	if user != "" {
		l = a.users[user]
	}
	if l != nil {
		for _, d := range l.deny {
			if match(d, topic) {
				return false
			}
		}
		for i := range l.grant {
			g := &l.grant[i]
			if g.access&want != 0 && match(g.levels, topic) {
				return true
			}
		}
	}
	if len(a.patterns) == 0 || clientID == "" {
		return a.defaultAllow
	}
	// Mosquitto denies clients whose username or client id could inject
	// wildcards into a pattern.
	if strings.ContainsAny(user, "+#") || strings.ContainsAny(clientID, "+#") {
		return false
	}
	u := subst{val: user, slash: strings.IndexByte(user, '/') >= 0, dollar: user != "" && user[0] == '$'}
	c := subst{val: clientID, slash: strings.IndexByte(clientID, '/') >= 0, dollar: clientID[0] == '$'}
	for _, i := range a.patDeny {
		p := &a.patterns[i]
		if p.usesU && user == "" {
			continue
		}
		if p.unsafe(&u, &c) || p.match(&u, &c, topic, sub) {
			return false
		}
	}
	for _, i := range a.patGrant {
		p := &a.patterns[i]
		if p.access&want == 0 || (p.usesU && user == "") || p.unsafe(&u, &c) {
			continue
		}
		if p.match(&u, &c, topic, sub) {
			return true
		}
	}
	return a.defaultAllow
}

type subst struct {
	val           string
	slash, dollar bool
}

// unsafe reports whether substituting u and c into p could change the
// pattern's level structure or make it start with '$'.
func (p *patternRule) unsafe(u, c *subst) bool {
	if (p.usesU && u.slash) || (p.usesC && c.slash) {
		return true
	}
	switch p.leadSub {
	case 'u':
		return u.dollar
	case 'c':
		return c.dollar
	}
	return false
}

func (l *patLevel) matches(seg string, u, c *subst) bool {
	if l.wild {
		return true
	}
	if l.pieces == nil {
		return l.lit == seg
	}
	for i := range l.pieces {
		pc := &l.pieces[i]
		v := pc.lit
		switch pc.sub {
		case 'u':
			v = u.val
		case 'c':
			v = c.val
		}
		if !strings.HasPrefix(seg, v) {
			return false
		}
		seg = seg[len(v):]
	}
	return seg == ""
}

// match reports whether the substituted pattern matches topic (sub false)
// or covers the subscription filter topic (sub true); see matchLevels and
// coversLevels.
func (p *patternRule) match(u, c *subst, topic string, sub bool) bool {
	if topic == "" {
		return false
	}
	if topic[0] == '$' && (len(p.levels) == 0 || p.levels[0].wild) {
		return false
	}
	pos := 0
	for i := range p.levels {
		if pos > len(topic) {
			return false
		}
		seg, next := nextLevel(topic, pos)
		if sub {
			if seg == "#" || (seg == "+" && !p.levels[i].wild) {
				return false
			}
		}
		if !p.levels[i].matches(seg, u, c) {
			return false
		}
		pos = next
	}
	if p.tail {
		return true
	}
	return pos > len(topic)
}

// ReadACLFile parses a Mosquitto acl_file into rules (for example to
// convert it to YAML). Errors name the file and line.
func ReadACLFile(path string) ([]Rule, error) {
	rules, _, _, err := readACLFile(path)
	return rules, err
}

func readACLFile(path string) ([]Rule, []int, []string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("acl: %w", err)
	}
	defer f.Close()
	return parseACL(f, path)
}

// parseACL parses acl_file syntax, returning the rules, the line number of
// each rule and warnings. The syntax follows Mosquitto:
//
//	# comment
//	topic [read|write|readwrite|deny] <topic>   (before any user line: anonymous clients)
//	user <username>                             (following topic lines are this user's)
//	pattern [read|write|readwrite|deny] <topic> (all clients; %u, %c substituted)
//
// The topic is the rest of the line and may contain spaces. As in
// Mosquitto, "topic read" (a single word) means topic "read" with readwrite
// access; Isobar warns about it. Isobar also accepts tabs as separators and
// indented comments, which Mosquitto rejects.
func parseACL(r io.Reader, name string) ([]Rule, []int, []string, error) {
	var (
		rules []Rule
		lines []int
		warns []string
		user  string
	)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), maxLineLen)
	lineNo := 0
	for sc.Scan() {
		lineNo++
		perr := func(format string, args ...any) error {
			return &ParseError{File: name, Line: lineNo, Msg: fmt.Sprintf(format, args...)}
		}
		t := strings.TrimSpace(sc.Text())
		if t == "" || t[0] == '#' {
			continue
		}
		kw, rest := cutSpace(t)
		switch kw {
		case "topic", "pattern":
			if rest == "" {
				return nil, nil, nil, perr("empty topic in %q line", kw)
			}
			acc, topic := cutSpace(rest)
			if topic == "" {
				topic, acc = acc, ""
				if _, err := ParseAccess(topic); err == nil {
					warns = append(warns, fmt.Sprintf("%s:%d: %q has no topic; like Mosquitto, Isobar reads it as topic %q with readwrite access", name, lineNo, t, topic))
				}
			} else if _, err := ParseAccess(acc); err != nil || acc == "" {
				return nil, nil, nil, perr("invalid topic access type %q", acc)
			}
			if err := validFilter(topic); err != nil {
				return nil, nil, nil, perr("invalid ACL topic %q: %v", topic, err)
			}
			rl := Rule{Topic: topic, Access: acc, Pattern: kw == "pattern"}
			if kw == "topic" {
				rl.User = user
			}
			rules = append(rules, rl)
			lines = append(lines, lineNo)
		case "user":
			if rest == "" {
				return nil, nil, nil, perr("missing username")
			}
			user = rest
		default:
			return nil, nil, nil, perr("invalid line (want topic, pattern or user): %q", truncate(t, 80))
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, nil, nil, &ParseError{File: name, Line: lineNo + 1, Msg: fmt.Sprintf("line longer than %d bytes", maxLineLen)}
		}
		return nil, nil, nil, &ParseError{File: name, Msg: err.Error()}
	}
	return rules, lines, warns, nil
}

// cutSpace splits s at the first run of spaces or tabs, trimming both
// parts.
func cutSpace(s string) (first, rest string) {
	i := strings.IndexAny(s, " \t")
	if i < 0 {
		return s, ""
	}
	return s[:i], strings.TrimSpace(s[i+1:])
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
