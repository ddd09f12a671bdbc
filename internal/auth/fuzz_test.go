package auth

import (
	"strings"
	"testing"
)

// FuzzParseACL checks that arbitrary acl_file content never panics, and
// that compiled ACLs answer checks without panicking.
func FuzzParseACL(f *testing.F) {
	f.Add(mosquittoACL, "alice", "dev1", "alice/x")
	f.Add("topic read\nuser  x y \npattern %u/%c/#\n", "x y", "c", "x y/c")
	f.Add("pattern readwrite %c%u/+/#\ntopic deny #\n", "", "$", "$/a/b")
	f.Fuzz(func(t *testing.T, text, user, cid, topic string) {
		rules, _, _, err := parseACL(strings.NewReader(text), "fuzz")
		if err != nil {
			return
		}
		acl, err := NewACL(rules)
		if err != nil {
			t.Fatalf("parsed rules do not compile: %v", err)
		}
		pub := acl.CanPublish(user, cid, topic)
		rcv := acl.CanReceive(user, cid, topic)
		acl.CanSubscribe(user, cid, topic)
		if !plainTopic(topic) && (pub || rcv) {
			t.Fatalf("wildcard topic %q allowed", topic)
		}
	})
}

// FuzzParseHash checks the hash parser never panics and that whatever it
// accepts can be verified and re-encoded to an equivalent hash.
func FuzzParseHash(f *testing.F) {
	f.Add("$7$101$Ry9aW3EEJJrbBERb$gitvNDjV01MAsB6sAoMaG9s7Z6OXAxfaoM86TvEQtAZ0n292rCXU2f6zNcOTiJW7/2XCrNMmYRkggGV9+yvXng==")
	f.Add("$6$eFvvygqh5Nw+9k+z$P/dyFo2lMuhCyCiy3a66Vl6+mWQkxB1IQzDMEF0f9YnW0WwIToCdVztL8ZmhE8uX7Wk9RWUHFExUWBjjOCeWbw==")
	f.Add("$argon2id$v=19$m=64,t=1,p=1$c29tZXNhbHRzb21lc2FsdA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
	f.Fuzz(func(t *testing.T, s string) {
		h, err := parseHash(s)
		if err != nil {
			return
		}
		if h.memory > 4096 || h.iterations > 10000 || h.time > 4 {
			return // too slow for fuzzing; bounds are tested elsewhere
		}
		h2, err := parseHash(h.encode())
		if err != nil || h2.costKey() != h.costKey() || string(h2.salt) != string(h.salt) || string(h2.key) != string(h.key) {
			t.Fatalf("re-encoding %q gave %q (%v)", s, h.encode(), err)
		}
		h.verify([]byte("pw"))
	})
}

// FuzzCovers cross-checks coversLevels against matchLevels on fuzzed
// filters and a topic.
func FuzzCovers(f *testing.F) {
	f.Add("a/#", "a/+", "a/b")
	f.Add("+/+", "#", "$x/y")
	f.Fuzz(func(t *testing.T, aclFilter, sub, topic string) {
		if validFilter(aclFilter) != nil || validFilter(sub) != nil || !plainTopic(topic) || validFilter(topic) != nil {
			return
		}
		al, sl := strings.Split(aclFilter, "/"), strings.Split(sub, "/")
		if coversLevels(al, sub) && matchLevels(sl, topic) && !matchLevels(al, topic) {
			t.Fatalf("%q covers %q, but %q matches only the latter", aclFilter, sub, topic)
		}
		if aclFilter == sub && !coversLevels(al, sub) {
			t.Fatalf("%q does not cover itself", sub)
		}
	})
}
