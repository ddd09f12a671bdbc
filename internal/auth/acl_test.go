package auth

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// op is the kind of ACL check in a table case.
type op byte

const (
	pub op = 'P'
	sub op = 'S'
	rcv op = 'R'
)

type aclCase struct {
	user, cid string
	op        op
	topic     string
	want      bool
}

func (c aclCase) String() string {
	return fmt.Sprintf("%c user=%q cid=%q %q", c.op, c.user, c.cid, c.topic)
}

func runACLCases(t *testing.T, acl *ACL, cases []aclCase) {
	t.Helper()
	for _, c := range cases {
		var got bool
		switch c.op {
		case pub:
			got = acl.CanPublish(c.user, c.cid, c.topic)
		case sub:
			got = acl.CanSubscribe(c.user, c.cid, c.topic)
		case rcv:
			got = acl.CanReceive(c.user, c.cid, c.topic)
		}
		if got != c.want {
			t.Errorf("%v = %v, want %v", c, got, c.want)
		}
	}
}

func loadACLText(t *testing.T, text string) *ACL {
	t.Helper()
	p := writeFile(t, t.TempDir(), "acl", text)
	acl, err := LoadACLFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return acl
}

// mosquittoACL is modelled on Mosquitto's example aclfile and the cases its
// documentation describes.
const mosquittoACL = `# Anonymous clients (no username): lines before the first "user".
topic read anon/#
topic anon/rw

# alice
user alice
topic readwrite alice/#
topic deny alice/secret/#
topic read $SYS/broker/uptime
topic write shared/in

# bob has "#" but that never reaches $SYS
user bob
topic read #
topic write bob/out

# a second section for alice merges with the first
user alice
topic read news/+

# Patterns apply to every client.
pattern write devices/%c/#
pattern read devices/%c/cmd/+
pattern deny devices/%c/locked
pattern readwrite users/%u/#
pattern read inbox/u-%u-data
`

func TestACLMosquittoSemantics(t *testing.T) {
	acl := loadACLText(t, mosquittoACL)
	runACLCases(t, acl, []aclCase{
		// Anonymous section.
		{"", "c1", rcv, "anon/x", true},
		{"", "c1", rcv, "anon/x/y", true},
		{"", "c1", pub, "anon/x", false}, // read only
		{"", "c1", pub, "anon/rw", true}, // access omitted = readwrite
		{"", "c1", rcv, "anon/rw", true},
		{"", "c1", rcv, "alice/x", false},
		// Anonymous rules do not apply to authenticated users.
		{"alice", "c1", rcv, "anon/x", false},
		{"carol", "c1", rcv, "anon/x", false},
		// alice's section.
		{"alice", "c1", pub, "alice/a", true},
		{"alice", "c1", rcv, "alice/a/b", true},
		{"alice", "c1", pub, "alice", true},         // "alice/#" matches the parent level
		{"alice", "c1", pub, "alice/secret", false}, // "alice/secret/#" matches its parent
		{"alice", "c1", pub, "alice/secretive", true},
		{"alice", "c1", pub, "alice/secret/x", false}, // deny wins
		{"alice", "c1", rcv, "alice/secret/x", false},
		{"alice", "c1", rcv, "$SYS/broker/uptime", true},
		{"alice", "c1", rcv, "$SYS/broker/load", false},
		{"alice", "c1", pub, "shared/in", true},
		{"alice", "c1", rcv, "shared/in", false}, // write only
		{"alice", "c1", rcv, "news/today", true}, // merged section
		{"alice", "c1", rcv, "news/today/more", false},
		// Another user's rules do not apply.
		{"bob", "c1", pub, "alice/a", false},
		{"alice", "c1", pub, "bob/out", false},
		// bob: "#" reads everything except $ topics.
		{"bob", "c1", rcv, "anything/at/all", true},
		{"bob", "c1", rcv, "$SYS/broker/uptime", false},
		{"bob", "c1", rcv, "$other", false},
		{"bob", "c1", pub, "anything", false},
		{"bob", "c1", pub, "bob/out", true},
		// Unknown users get only patterns.
		{"carol", "c9", rcv, "anything", false},
		// %c patterns, also for anonymous clients.
		{"carol", "dev1", pub, "devices/dev1/temp", true},
		{"carol", "dev1", pub, "devices/dev1", true},
		{"carol", "dev1", pub, "devices/dev2/temp", false},
		{"carol", "dev1", rcv, "devices/dev1/temp", false}, // write only
		{"carol", "dev1", rcv, "devices/dev1/cmd/reboot", true},
		{"carol", "dev1", pub, "devices/dev1/locked", false}, // deny pattern
		{"carol", "dev1", pub, "devices/dev1/locked/x", true},
		{"", "dev1", pub, "devices/dev1/temp", true},
		{"", "dev1", rcv, "devices/dev1/cmd/x", true},
		// %u patterns never apply to anonymous clients.
		{"carol", "c1", pub, "users/carol/x", true},
		{"carol", "c1", rcv, "users/carol", true},
		{"carol", "c1", pub, "users/dave/x", false},
		{"", "c1", pub, "users//x", false},
		{"", "c1", pub, "users/%u/x", false},
		// Substitution inside a level.
		{"carol", "c1", rcv, "inbox/u-carol-data", true},
		{"carol", "c1", rcv, "inbox/u-carolx-data", false},
		{"carol", "c1", rcv, "inbox/u-dave-data", false},
		// Topic names with wildcards are never valid for publish/receive.
		{"bob", "c1", rcv, "a/+", false},
		{"alice", "c1", pub, "alice/#", false},
		{"alice", "c1", pub, "", false},
	})
}

func TestACLSubscribe(t *testing.T) {
	acl := loadACLText(t, mosquittoACL)
	runACLCases(t, acl, []aclCase{
		// The filter must be covered by one read rule.
		{"alice", "c1", sub, "alice/#", true},
		{"alice", "c1", sub, "alice/+", true},
		{"alice", "c1", sub, "alice/a/+/b", true},
		{"alice", "c1", sub, "alice", true},
		{"alice", "c1", sub, "#", false},
		{"alice", "c1", sub, "+/a", false},
		{"alice", "c1", sub, "news/+", true},
		{"alice", "c1", sub, "news/x", true},
		{"alice", "c1", sub, "news/#", false}, // "news/+" does not cover "news/#"
		{"alice", "c1", sub, "shared/in", false},
		// A filter entirely inside a deny rule is refused; one that only
		// overlaps it is allowed (CanReceive filters the deliveries).
		{"alice", "c1", sub, "alice/secret/#", false},
		{"alice", "c1", sub, "alice/secret/x", false},
		{"alice", "c1", rcv, "alice/secret/x", false},
		{"alice", "c1", sub, "alice/secret", false},
		{"alice", "c1", sub, "alice/+/x", true}, // overlaps alice/secret/x only
		// $SYS needs an explicit rule.
		{"alice", "c1", sub, "$SYS/broker/uptime", true},
		{"alice", "c1", sub, "$SYS/#", false},
		{"bob", "c1", sub, "#", true},
		{"bob", "c1", sub, "$SYS/#", false},
		{"bob", "c1", sub, "$SYS/broker/uptime", false},
		// Shared subscriptions are checked on the inner filter.
		{"alice", "c1", sub, "$share/g/alice/#", true},
		{"alice", "c1", sub, "$share/g/#", false},
		{"alice", "c1", sub, "$share//alice/#", false},
		{"alice", "c1", sub, "$share/g", false},
		// Malformed filters.
		{"bob", "c1", sub, "a/#/b", false},
		{"bob", "c1", sub, "a+", false},
		{"bob", "c1", sub, "", false},
		// Patterns.
		{"carol", "dev1", sub, "devices/dev1/cmd/+", true},
		{"carol", "dev1", sub, "devices/dev1/cmd/reboot", true},
		{"carol", "dev1", sub, "devices/dev1/cmd/#", false},
		{"carol", "dev1", sub, "devices/+/cmd/x", false},
		{"carol", "dev1", sub, "users/carol/#", true},
		{"carol", "dev1", sub, "users/+/#", false},
		{"", "dev1", sub, "users/carol/#", false},
	})
}

func TestACLDangerousIdentities(t *testing.T) {
	acl := loadACLText(t, mosquittoACL+"pattern read %c/#\n")
	runACLCases(t, acl, []aclCase{
		// Mosquitto: '+' or '#' in username or client id denies everything
		// patterns could grant...
		{"carol", "dev+", pub, "devices/dev+/x", false},
		{"carol", "#", pub, "devices/#/x", false},
		{"carol", "dev1", pub, "devices/dev1/x", true},
		{"car#l", "dev1", pub, "devices/dev1/x", false},
		{"car+l", "dev1", rcv, "users/car+l/x", false},
		// ...but the user's own section is checked first and still applies.
		{"alice", "x#", pub, "alice/a", true},
		{"alice", "x#", pub, "devices/x#/a", false},
		// Isobar: '/' in a substituted value must not reach into another
		// client's hierarchy.
		{"carol", "dev1/sub", pub, "devices/dev1/sub/x", false},
		{"carol", "dev1/sub", rcv, "dev1/sub/x", false},
		// A deny pattern that cannot be evaluated safely denies.
		{"carol", "dev1/sub", rcv, "users/carol/x", false},
		// A '/' in the username disables only the patterns using %u (no
		// deny pattern uses %u here), so %c patterns keep working.
		{"ca/rol", "dev1", rcv, "users/ca/rol/x", false},
		{"ca/rol", "dev1", pub, "devices/dev1/x", true}, // %c rules unaffected
		// A client id starting with '$' must not turn "%c/#" into a $ rule.
		{"carol", "$SYS", rcv, "$SYS/broker/uptime", false},
		{"carol", "$SYS", sub, "$SYS/#", false},
		{"carol", "dev1", rcv, "dev1/anything", true},
		// No client id: patterns do not apply.
		{"carol", "", pub, "devices//x", false},
		{"carol", "", rcv, "users/carol/x", false},
	})
}

func TestACLDenyPrecedence(t *testing.T) {
	for _, order := range []string{
		"topic read a/#\ntopic deny a/b\n",
		"topic deny a/b\ntopic read a/#\n",
	} {
		acl := loadACLText(t, "user u\n"+order)
		runACLCases(t, acl, []aclCase{
			{"u", "c", rcv, "a/b", false},
			{"u", "c", pub, "a/b", false},
			{"u", "c", rcv, "a/c", true},
			{"u", "c", sub, "a/#", true},
			{"u", "c", sub, "a/b", false},
		})
	}
	// Mosquitto checks the user's own list before patterns, so a pattern
	// deny does not override a user grant...
	acl := loadACLText(t, "user u\ntopic readwrite u/#\npattern deny %u/private\n")
	runACLCases(t, acl, []aclCase{
		{"u", "c", pub, "u/private", true},
		{"v", "c", pub, "v/private", false},
	})
	// ...while a user deny is final even if a pattern would grant.
	acl = loadACLText(t, "user u\ntopic deny u/private\npattern readwrite %u/#\n")
	runACLCases(t, acl, []aclCase{
		{"u", "c", pub, "u/private", false},
		{"u", "c", pub, "u/public", true},
	})
}

func TestACLDefaults(t *testing.T) {
	var none *ACL
	runACLCases(t, none, []aclCase{
		{"", "c", pub, "a/b", true},
		{"x", "c", rcv, "$SYS/x", true},
		{"x", "c", sub, "#", true},
		{"x", "c", sub, "a/#/b", false},
	})
	empty := loadACLText(t, "# nothing allowed\n")
	runACLCases(t, empty, []aclCase{
		{"", "c", pub, "a", false},
		{"x", "c", rcv, "a", false},
		{"x", "c", sub, "a", false},
	})
	if a, err := LoadACL(ACLConfig{}); a != nil || err != nil {
		t.Fatalf("LoadACL(empty config) = %v, %v; want nil, nil", a, err)
	}
}

func TestACLSubscribeCheckNone(t *testing.T) {
	acl, err := LoadACL(ACLConfig{Rules: []Rule{{User: "u", Topic: "a/#", Access: "read"}}, SubscribeCheck: SubscribeCheckNone})
	if err != nil {
		t.Fatal(err)
	}
	runACLCases(t, acl, []aclCase{
		{"u", "c", sub, "#", true},
		{"u", "c", sub, "a/#/x", false},
		{"u", "c", rcv, "b/x", false},
		{"u", "c", rcv, "a/x", true},
	})
	if _, err := LoadACL(ACLConfig{Rules: []Rule{{Topic: "a"}}, SubscribeCheck: "bogus"}); err == nil {
		t.Fatal("bad subscribe_check accepted")
	}
}

func TestACLParseErrors(t *testing.T) {
	cases := []struct {
		text string
		line int
		want string
	}{
		{"topic read a\ntopic sometimes a/b\n", 2, `invalid topic access type "sometimes"`},
		{"\n\ntopic read a/#/b\n", 3, "invalid ACL topic"},
		{"pattern write a/+b\n", 1, "invalid ACL topic"},
		{"topic\n", 1, "empty topic"},
		{"# c\nuser\n", 2, "missing username"},
		{"user a\nfrobnicate x\n", 2, "invalid line"},
		{"topic read " + strings.Repeat("x", maxLineLen+10) + "\n", 1, "longer than"},
	}
	for _, c := range cases {
		p := writeFile(t, t.TempDir(), "acl", c.text)
		_, err := LoadACLFile(p)
		var pe *ParseError
		if !errors.As(err, &pe) || pe.Line != c.line || pe.File != p || !strings.Contains(pe.Msg, c.want) {
			t.Errorf("%q: error %v, want %s:%d containing %q", truncate(c.text, 40), err, p, c.line, c.want)
		}
	}
	if _, err := LoadACLFile(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("missing file accepted")
	}
}

func TestACLParseDetails(t *testing.T) {
	p := writeFile(t, t.TempDir(), "acl", "  # indented comment\r\n"+
		"topic\tread\tspaced topic/x  \r\n"+ // tabs, CRLF, topic with a space
		"topic read\n"+ // Mosquitto quirk: topic "read", readwrite
		"user  john doe \n"+ // usernames may contain spaces
		"topic write j/#\n"+
		"pattern read static/topic\n") // warning: no %u/%c
	rules, err := ReadACLFile(p)
	if err != nil {
		t.Fatal(err)
	}
	want := []Rule{
		{Access: "read", Topic: "spaced topic/x"},
		{Topic: "read"},
		{User: "john doe", Access: "write", Topic: "j/#"},
		{Pattern: true, Access: "read", Topic: "static/topic"},
	}
	if fmt.Sprint(rules) != fmt.Sprint(want) {
		t.Fatalf("rules\n%v\nwant\n%v", rules, want)
	}
	acl, err := LoadACLFile(p)
	if err != nil {
		t.Fatal(err)
	}
	w := strings.Join(acl.Warnings(), "\n")
	if !strings.Contains(w, p+":3:") || !strings.Contains(w, "does not contain %c or %u") {
		t.Errorf("warnings: %s", w)
	}
	runACLCases(t, acl, []aclCase{
		{"", "c", rcv, "spaced topic/x", true},
		{"", "c", pub, "read", true},
		{"john doe", "c", pub, "j/x", true},
		{"john", "c", pub, "j/x", false},
		{"anyone", "c", rcv, "static/topic", true},
	})
}

func TestNewACLErrors(t *testing.T) {
	for _, c := range []struct {
		rules []Rule
		want  string
	}{
		{[]Rule{{Topic: "a"}, {Topic: "a/#/b"}}, "acl rule 2: invalid ACL topic"},
		{[]Rule{{Topic: ""}}, "acl rule 1: invalid ACL topic"},
		{[]Rule{{Topic: "a", Access: "rw"}}, "acl rule 1: invalid access type"},
		{[]Rule{{Topic: "a/%u", Pattern: true, User: "x"}}, "cannot name a user"},
	} {
		if _, err := NewACL(c.rules); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("NewACL(%v) error %v, want %q", c.rules, err, c.want)
		}
	}
}

// TestACLYAMLEquivalence checks that the YAML form decodes into rules that
// behave exactly like the acl_file form, and that file and rules combine.
func TestACLYAMLEquivalence(t *testing.T) {
	const doc = `
acl:
  subscribe_check: filter
  rules:
    - {topic: "anon/#", access: read}
    - {topic: anon/rw}
    - {user: alice, topic: "alice/#", access: readwrite}
    - {user: alice, topic: "alice/secret/#", access: deny}
    - {user: alice, topic: "$SYS/broker/uptime", access: read}
    - {user: alice, topic: shared/in, access: write}
    - {user: bob, topic: "#", access: read}
    - {user: bob, topic: bob/out, access: write}
    - {user: alice, topic: news/+, access: read}
    - {pattern: true, topic: "devices/%c/#", access: write}
    - {pattern: true, topic: "devices/%c/cmd/+", access: read}
    - {pattern: true, topic: "devices/%c/locked", access: deny}
    - {pattern: true, topic: "users/%u/#"}
    - {pattern: true, topic: "inbox/u-%u-data", access: read}
`
	var cfg struct {
		ACL ACLConfig `yaml:"acl"`
	}
	if err := yaml.Unmarshal([]byte(doc), &cfg); err != nil {
		t.Fatal(err)
	}
	fromYAML, err := LoadACL(cfg.ACL)
	if err != nil {
		t.Fatal(err)
	}
	fromFile := loadACLText(t, mosquittoACL)
	fileRules, _ := ReadACLFile(writeFile(t, t.TempDir(), "acl", mosquittoACL))
	users := []string{"", "alice", "bob", "carol", "car+l", "a/b"}
	cids := []string{"c1", "dev1", "dev2", "x#", "d/e", "$SYS", ""}
	topics := []string{"anon/x", "anon/rw", "alice", "alice/a", "alice/secret/x", "$SYS/broker/uptime",
		"shared/in", "news/a", "bob/out", "x/y", "devices/dev1/t", "devices/dev1/locked", "devices/dev1/cmd/go",
		"users/carol/x", "users/alice", "inbox/u-carol-data", "devices/d/e/x", "d/e/x"}
	filters := append([]string{"#", "+/+", "alice/#", "news/#", "devices/dev1/cmd/#", "$share/g/alice/+", "$SYS/#"}, topics...)
	n := 0
	for _, u := range users {
		for _, c := range cids {
			for _, tp := range topics {
				if a, b := fromYAML.CanPublish(u, c, tp), fromFile.CanPublish(u, c, tp); a != b {
					t.Errorf("CanPublish(%q,%q,%q): yaml %v file %v", u, c, tp, a, b)
				}
				if a, b := fromYAML.CanReceive(u, c, tp), fromFile.CanReceive(u, c, tp); a != b {
					t.Errorf("CanReceive(%q,%q,%q): yaml %v file %v", u, c, tp, a, b)
				}
				n += 2
			}
			for _, f := range filters {
				if a, b := fromYAML.CanSubscribe(u, c, f), fromFile.CanSubscribe(u, c, f); a != b {
					t.Errorf("CanSubscribe(%q,%q,%q): yaml %v file %v", u, c, f, a, b)
				}
				n++
			}
		}
	}
	t.Logf("%d equivalent checks; file parsed into %d rules", n, len(fileRules))
	// File plus extra YAML rules: both apply.
	p := writeFile(t, t.TempDir(), "acl", "user alice\ntopic read a/#\n")
	both, err := LoadACL(ACLConfig{File: p, Rules: []Rule{{User: "alice", Topic: "b/#", Access: "write"}}})
	if err != nil {
		t.Fatal(err)
	}
	runACLCases(t, both, []aclCase{
		{"alice", "c", rcv, "a/x", true},
		{"alice", "c", pub, "b/x", true},
		{"alice", "c", pub, "a/x", false},
	})
	// Errors in the YAML rules of a combined config are numbered by rule.
	if _, err := LoadACL(ACLConfig{File: p, Rules: []Rule{{Topic: "ok"}, {Topic: "#/x"}}}); err == nil || !strings.Contains(err.Error(), "acl rule 2") {
		t.Fatalf("error %v", err)
	}
}

// TestMatchAndCover exercises the topic matching helpers directly against
// MQTT's wildcard rules.
func TestMatchAndCover(t *testing.T) {
	match := []struct {
		filter, topic string
		want          bool
	}{
		{"#", "a", true}, {"#", "a/b/c", true}, {"#", "/", true}, {"#", "$SYS/x", false},
		{"+", "a", true}, {"+", "a/b", false}, {"+", "/a", false}, {"+", "$x", false},
		{"+/+", "/a", true}, {"/+", "/a", true}, {"a/+", "a/", true}, {"a/+", "a", false},
		{"a/#", "a", true}, {"a/#", "a/", true}, {"a/#", "ab", false}, {"a/b", "a/b/", false},
		{"$SYS/#", "$SYS", true}, {"$SYS/+", "$SYS/x", true}, {"a/+/c", "a/b/c", true}, {"a/+/c", "a/b/d", false},
	}
	for _, m := range match {
		if got := matchLevels(strings.Split(m.filter, "/"), m.topic); got != m.want {
			t.Errorf("matchLevels(%q, %q) = %v", m.filter, m.topic, got)
		}
	}
	cover := []struct {
		acl, sub string
		want     bool
	}{
		{"#", "#", true}, {"#", "a/+/#", true}, {"#", "$SYS/#", false}, {"$SYS/#", "$SYS/+", true},
		{"a/#", "a/#", true}, {"a/#", "a", true}, {"a/#", "a/+", true}, {"a/#", "#", false}, {"a/#", "+/b", false},
		{"a/+", "a/b", true}, {"a/+", "a/+", true}, {"a/+", "a/#", false}, {"a/+", "a", false}, {"a/+", "a/b/c", false},
		{"a/b", "a/#", false}, {"a/b", "a/+", false}, {"a/b", "a/b", true}, {"+/b", "a/b", true}, {"+", "$x", false},
	}
	for _, c := range cover {
		if got := coversLevels(strings.Split(c.acl, "/"), c.sub); got != c.want {
			t.Errorf("coversLevels(%q, %q) = %v", c.acl, c.sub, got)
		}
	}
}

// TestCoversImpliesMatches cross-checks coversLevels against matchLevels: if
// an ACL filter covers a subscription, every sample topic the subscription
// matches must be matched by the ACL filter.
func TestCoversImpliesMatches(t *testing.T) {
	levels := []string{"a", "b", "+", "#", "$s"}
	var filters []string
	var gen func(prefix string, depth int)
	gen = func(prefix string, depth int) {
		if depth == 0 {
			return
		}
		for _, l := range levels {
			f := l
			if prefix != "" {
				f = prefix + "/" + l
			}
			if validFilter(f) == nil {
				filters = append(filters, f)
			}
			if l != "#" {
				gen(f, depth-1)
			}
		}
	}
	gen("", 3)
	var topics []string
	for _, f := range filters {
		if plainTopic(f) {
			topics = append(topics, f)
		}
	}
	topics = append(topics, "x", "a/x", "x/b/y", "a/b/c/d", "$s/x", "$t")
	for _, acl := range filters {
		al := strings.Split(acl, "/")
		for _, sub := range filters {
			if !coversLevels(al, sub) {
				continue
			}
			sl := strings.Split(sub, "/")
			for _, tp := range topics {
				if matchLevels(sl, tp) && !matchLevels(al, tp) {
					t.Fatalf("ACL %q covers %q but %q matches only the subscription", acl, sub, tp)
				}
			}
		}
	}
}

func benchACL(b *testing.B) *ACL {
	var sb strings.Builder
	sb.WriteString("topic read public/#\n")
	for i := range 50 {
		fmt.Fprintf(&sb, "user user%d\ntopic readwrite tenants/%d/#\ntopic deny tenants/%d/admin/#\ntopic read origin/a/wis2/+/data/#\n", i, i, i)
	}
	sb.WriteString("pattern write devices/%c/out/#\npattern read devices/%c/in/+\npattern readwrite users/%u/#\n")
	p := writeFile(b, b.TempDir(), "acl", sb.String())
	acl, err := LoadACLFile(p)
	if err != nil {
		b.Fatal(err)
	}
	return acl
}

func TestACLChecksDoNotAllocate(t *testing.T) {
	acl := benchACL(&testing.B{})
	checks := []func() bool{
		func() bool { return acl.CanPublish("user7", "dev-7", "tenants/7/sensors/temp") },
		func() bool { return acl.CanReceive("user7", "dev-7", "origin/a/wis2/de-dwd/data/core/x") },
		func() bool { return acl.CanReceive("user7", "dev-7", "users/user7/inbox") },
		func() bool { return acl.CanPublish("user7", "dev-7", "devices/dev-7/out/t") },
		func() bool { return acl.CanReceive("", "dev-7", "devices/dev-7/in/cmd") },
		func() bool { return acl.CanSubscribe("user7", "dev-7", "tenants/7/+/temp") },
	}
	for i, f := range checks {
		if !f() {
			t.Fatalf("check %d unexpectedly denied", i)
		}
		if n := testing.AllocsPerRun(100, func() { f() }); n != 0 {
			t.Errorf("check %d allocates %v times", i, n)
		}
	}
}

func BenchmarkCanPublish(b *testing.B) {
	acl := benchACL(b)
	b.ReportAllocs()
	for b.Loop() {
		if !acl.CanPublish("user42", "dev-42", "tenants/42/sensors/room/temp") {
			b.Fatal("denied")
		}
	}
}

func BenchmarkCanPublishPattern(b *testing.B) {
	acl := benchACL(b)
	b.ReportAllocs()
	for b.Loop() {
		if !acl.CanPublish("user42", "dev-42", "devices/dev-42/out/temp") {
			b.Fatal("denied")
		}
	}
}

func BenchmarkCanReceive(b *testing.B) {
	acl := benchACL(b)
	b.ReportAllocs()
	for b.Loop() {
		if !acl.CanReceive("user42", "dev-42", "origin/a/wis2/de-dwd/data/core/weather/surface") {
			b.Fatal("denied")
		}
	}
}

func BenchmarkCanReceiveDenied(b *testing.B) {
	acl := benchACL(b)
	b.ReportAllocs()
	for b.Loop() {
		if acl.CanReceive("user42", "dev-42", "tenants/41/sensors/room/temp") {
			b.Fatal("allowed")
		}
	}
}
