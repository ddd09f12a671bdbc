package auth

import "testing"

// With Default "allow", only deny rules restrict; unmatched topics,
// including $-topics that "#" never matches, stay open.
func TestACLDefaultAllow(t *testing.T) {
	acl, err := LoadACL(ACLConfig{Default: "allow", Rules: []Rule{
		{Pattern: true, Access: "deny", Topic: "test/nosubscribe"},
		{User: "bob", Access: "deny", Topic: "secret/#"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		user, topic string
		sub, pub    bool
	}{
		{"", "test/nosubscribe", false, false},
		{"", "test/other", true, true},
		{"", "$TopicA/B", true, true},
		{"bob", "secret/x", false, false},
		{"bob", "public/x", true, true},
		{"alice", "secret/x", true, true},
	}
	for _, c := range cases {
		if got := acl.CanSubscribe(c.user, "cid", c.topic); got != c.sub {
			t.Errorf("CanSubscribe(%q, %q) = %v, want %v", c.user, c.topic, got, c.sub)
		}
		if got := acl.CanPublish(c.user, "cid", c.topic); got != c.pub {
			t.Errorf("CanPublish(%q, %q) = %v, want %v", c.user, c.topic, got, c.pub)
		}
	}
	if _, err := LoadACL(ACLConfig{Default: "maybe", Rules: []Rule{{Topic: "a"}}}); err == nil {
		t.Error("invalid default accepted")
	}
	// The default stays deny.
	strict, _ := LoadACL(ACLConfig{Rules: []Rule{{Pattern: true, Access: "deny", Topic: "x"}}})
	if strict.CanPublish("", "cid", "y") {
		t.Error("default deny: unmatched topic allowed")
	}
}
