package stomptest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/isobar-mq/isobar/internal/auth"
	"github.com/isobar-mq/isobar/internal/testutil"
	"github.com/isobar-mq/isobar/internal/testutil/peer"
)

// TargetEnv chooses the broker every case runs against: "isobar" (the
// default, an in-process node per test) or "activemq" (one private
// ActiveMQ 5.17 for the whole test binary).
const TargetEnv = "ISOBAR_STOMPTEST_TARGET"

// activeMQ is the broker of the activemq target, started once by TestMain
// (a JVM start costs seconds), or the reason it could not be started.
var (
	activeMQ    *ActiveMQ
	activeMQErr error
)

func targetName() string {
	if v := os.Getenv(TargetEnv); v != "" {
		return v
	}
	return "isobar"
}

func TestMain(m *testing.M) {
	code := func() int {
		if targetName() == "activemq" {
			dir, err := os.MkdirTemp("", "stomptest-activemq-")
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 2
			}
			defer os.RemoveAll(dir)
			activeMQ, activeMQErr = StartActiveMQ(context.Background(), dir, activeMQFixture())
			if activeMQ != nil {
				defer activeMQ.Stop()
			}
		}
		return m.Run()
	}()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// fixtureUser is a user of both targets.
type fixtureUser struct {
	name, password string
	groups         []string // ActiveMQ groups
	acl            []string // Isobar ACL lines ("topic readwrite alice/#")
}

// The users and permissions every case relies on, written once for both
// brokers: admin may do everything; alice may use alice.> and only read
// ro.> and only write wo.> topics; mcollective is an MCollective user of
// the main collective "mcollective" and the sub-collective "sub1", mcmain
// of the main collective only.
//
// Isobar's ACL names topics in MQTT form (/topic/a.b -> a/b) and queues as
// $queue/<name with dots as levels> (docs/stomp.md); ActiveMQ's entries are
// unions over every matching pattern, hence the catch-all ">" for admins.
var fixtureUsers = []fixtureUser{
	{"admin", "adminpw", []string{"admins", "everyone"}, []string{"topic readwrite #", "topic readwrite $queue/#"}},
	{"alice", "alicepw", []string{"alice", "everyone"}, []string{
		"topic readwrite alice/#", "topic readwrite $queue/alice/#", "topic read ro/#", "topic write wo/#"}},
	{"mcollective", "mcpw", []string{"mcollective", "sub1", "everyone"}, []string{
		"topic readwrite mcollective/#", "topic readwrite $queue/mcollective/#",
		"topic readwrite sub1/#", "topic readwrite $queue/sub1/#"}},
	{"mcmain", "mcmainpw", []string{"mcollective", "everyone"}, []string{
		"topic readwrite mcollective/#", "topic readwrite $queue/mcollective/#"}},
}

func activeMQFixture() ActiveMQConfig {
	var c ActiveMQConfig
	for _, u := range fixtureUsers {
		c.Users = append(c.Users, ActiveMQUser{Name: u.name, Password: u.password, Groups: u.groups})
	}
	// "admin" rights create a destination on first use: whoever may read
	// or write a destination gets them too.
	c.Entries = []ActiveMQEntry{
		{Queue: ">", Read: "admins", Write: "admins", Admin: "admins"},
		{Topic: ">", Read: "admins", Write: "admins", Admin: "admins"},
		{Queue: "alice.>", Read: "alice", Write: "alice", Admin: "alice"},
		{Topic: "alice.>", Read: "alice", Write: "alice", Admin: "alice"},
		{Topic: "ro.>", Read: "alice", Write: "admins", Admin: "alice"},
		{Topic: "wo.>", Read: "admins", Write: "alice", Admin: "alice"},
		{Queue: "mcollective.>", Read: "mcollective", Write: "mcollective", Admin: "mcollective"},
		{Topic: "mcollective.>", Read: "mcollective", Write: "mcollective", Admin: "mcollective"},
		{Queue: "sub1.>", Read: "sub1", Write: "sub1", Admin: "sub1"},
		{Topic: "sub1.>", Read: "sub1", Write: "sub1", Admin: "sub1"},
		{Topic: "ActiveMQ.Advisory.>", Read: "everyone", Write: "everyone", Admin: "everyone"},
	}
	c.TempGroups = "everyone"
	c.HeapMB = 256
	return c
}

// target is the broker under test.
type target struct {
	name  string // "isobar" or "activemq"
	stomp string // STOMP host:port
	mqtt  string // MQTT host:port (isobar only)
}

func (tg *target) isobar() bool { return tg.name == "isobar" }

// isobarConfig is the node of the isobar target: a STOMP and an MQTT
// listener, the fixture's users in a Mosquitto password file and ACL file.
func isobarConfig(t testing.TB, extra string) string {
	dir := t.TempDir()
	var pw, acl strings.Builder
	for _, u := range fixtureUsers {
		// SHA-512 (Mosquitto's $6$) keeps logins fast; the tests are
		// about STOMP, not password hashing.
		h, err := auth.HashPassword(auth.SchemeSHA512, []byte(u.password))
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&pw, "%s:%s\n", u.name, h)
		fmt.Fprintf(&acl, "user %s\n%s\n\n", u.name, strings.Join(u.acl, "\n"))
	}
	pwPath := filepath.Join(dir, "passwords")
	aclPath := filepath.Join(dir, "acl")
	if err := os.WriteFile(pwPath, []byte(pw.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(aclPath, []byte(acl.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf(`listeners:
  - {name: stomp, protocol: stomp, address: "127.0.0.1:0"}
  - {name: mqtt, protocol: mqtt, address: "127.0.0.1:0"}
auth:
  allow_anonymous: false
  password_file: %q
  acl_file: %q
  throttle: {disabled: true}
%s`, pwPath, aclPath, extra)
}

// newTarget returns the broker for one test: a fresh Isobar node, or the
// shared ActiveMQ. extra is appended to the Isobar configuration.
func newTarget(t testing.TB, extra string) *target {
	t.Helper()
	switch name := targetName(); name {
	case "activemq":
		if activeMQErr != nil {
			peer.Missing(t, "activemq target: %v", activeMQErr)
		}
		return &target{name: name, stomp: activeMQ.StompAddr}
	case "isobar":
		n := testutil.RunNode(t, isobarConfig(t, extra))
		tg := &target{name: name}
		for _, l := range n.Listeners {
			switch l.Config().Protocol {
			case "stomp":
				tg.stomp = l.Addr().String()
			case "mqtt":
				tg.mqtt = l.Addr().String()
			}
		}
		if tg.stomp == "" {
			t.Fatal("the node has no stomp listener")
		}
		return tg
	default:
		t.Fatalf("%s=%q: want isobar or activemq", TargetEnv, name)
		return nil
	}
}
