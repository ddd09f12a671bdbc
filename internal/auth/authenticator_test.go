package auth

import (
	"bytes"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

var testIP = netip.MustParseAddr("203.0.113.5")

type authCase struct {
	name        string
	user        string
	hasUser     bool
	password    string
	hasPassword bool
	wantRes     Result
	wantID      Identity
}

func runAuthCases(t *testing.T, a *Authenticator, cases []authCase) {
	t.Helper()
	for _, c := range cases {
		var pw []byte
		if c.hasPassword {
			pw = []byte(c.password)
		}
		id, res := a.Authenticate(c.user, c.hasUser, pw, c.hasPassword, testIP)
		if res != c.wantRes || id != c.wantID {
			t.Errorf("%s: got %+v %v, want %+v %v", c.name, id, res, c.wantID, c.wantRes)
		}
	}
}

type authFixture struct {
	dir, pwFile, aclFile string
	logs                 *bytes.Buffer
}

func newAuthFixture(t *testing.T) *authFixture {
	t.Helper()
	dir := t.TempDir()
	f := &authFixture{dir: dir, logs: &bytes.Buffer{}}
	f.pwFile = writeFile(t, dir, "pw", "alice:"+cheapArgon2(t, "alicepw")+"\nbob:"+cheapArgon2(t, "bobpw")+"\n")
	f.aclFile = writeFile(t, dir, "acl", "topic read public/#\nuser alice\ntopic readwrite alice/#\nuser bob\ntopic read alice/#\npattern write dev/%c/#\n")
	return f
}

func (f *authFixture) new(t *testing.T, cfg Config) *Authenticator {
	t.Helper()
	if cfg.PasswordFile == "-" {
		cfg.PasswordFile = ""
	} else if cfg.PasswordFile == "" {
		cfg.PasswordFile = f.pwFile
	}
	if cfg.ACL.File == "" && len(cfg.ACL.Rules) == 0 {
		cfg.ACL.File = f.aclFile
	}
	logger := slog.New(slog.NewTextHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	a, err := NewAuthenticator(cfg, logger)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestAuthenticatePasswordFile(t *testing.T) {
	f := newAuthFixture(t)
	for _, anon := range []bool{false, true} {
		a := f.new(t, Config{AllowAnonymous: anon})
		anonRes, anonID := ResultNotAuthorized, Identity{}
		if anon {
			anonRes, anonID = ResultOK, Identity{Anonymous: true}
		}
		runAuthCases(t, a, []authCase{
			{"good", "alice", true, "alicepw", true, ResultOK, Identity{User: "alice"}},
			{"good bob", "bob", true, "bobpw", true, ResultOK, Identity{User: "bob"}},
			{"wrong password", "alice", true, "bobpw", true, ResultBadCredentials, Identity{}},
			{"unknown user", "mallory", true, "alicepw", true, ResultBadCredentials, Identity{}},
			{"no password", "alice", true, "", false, ResultBadCredentials, Identity{}},
			{"empty password", "alice", true, "", true, ResultBadCredentials, Identity{}},
			{"empty username", "", true, "alicepw", true, ResultBadCredentials, Identity{}},
			{"anonymous", "", false, "", false, anonRes, anonID},
			{"password without username", "", false, "alicepw", true, anonRes, anonID},
		})
		st := a.Stats()
		wantOK := uint64(2)
		wantNA := uint64(2)
		if anon {
			wantOK, wantNA = 4, 0
		}
		if st.Success.Load() != wantOK || st.BadCredentials.Load() != 5 || st.NotAuthorized.Load() != wantNA {
			t.Errorf("anon=%v stats: ok %d bad %d na %d", anon, st.Success.Load(), st.BadCredentials.Load(), st.NotAuthorized.Load())
		}
	}
	if strings.Contains(f.logs.String(), "alicepw") || strings.Contains(f.logs.String(), "bobpw") {
		t.Fatalf("a password was logged:\n%s", f.logs)
	}
	if !strings.Contains(f.logs.String(), "authentication failed") {
		t.Fatalf("failures not logged at debug level:\n%s", f.logs)
	}
}

func TestAuthenticateWithoutPasswordFile(t *testing.T) {
	f := newAuthFixture(t)
	// Usernames cannot be verified without a password file, so they grant
	// nothing beyond anonymous access.
	a := f.new(t, Config{PasswordFile: "-", AllowAnonymous: true})
	runAuthCases(t, a, []authCase{
		{"claimed user", "alice", true, "whatever", true, ResultOK, Identity{Anonymous: true}},
		{"anonymous", "", false, "", false, ResultOK, Identity{Anonymous: true}},
	})
	id, _ := a.Authenticate("alice", true, []byte("x"), true, testIP)
	if a.CanPublish(id, "c", "alice/x") || !a.CanReceive(id, "c", "public/x") {
		t.Error("a claimed username got that user's ACL")
	}
	a = f.new(t, Config{PasswordFile: "-"})
	runAuthCases(t, a, []authCase{
		{"claimed user", "alice", true, "whatever", true, ResultNotAuthorized, Identity{}},
		{"anonymous", "", false, "", false, ResultNotAuthorized, Identity{}},
	})
}

func TestAuthenticatorACL(t *testing.T) {
	f := newAuthFixture(t)
	a := f.new(t, Config{AllowAnonymous: true})
	alice, _ := a.Authenticate("alice", true, []byte("alicepw"), true, testIP)
	bob, _ := a.Authenticate("bob", true, []byte("bobpw"), true, testIP)
	anon, _ := a.Authenticate("", false, nil, false, testIP)
	checks := []struct {
		name string
		got  bool
		want bool
	}{
		{"alice pub own", a.CanPublish(alice, "c1", "alice/x"), true},
		{"alice no public (anonymous rules)", a.CanReceive(alice, "c1", "public/x"), false},
		{"bob reads alice", a.CanReceive(bob, "c2", "alice/x"), true},
		{"bob cannot write alice", a.CanPublish(bob, "c2", "alice/x"), false},
		{"bob subscribes alice/#", a.CanSubscribe(bob, "c2", "alice/#"), true},
		{"bob cannot subscribe #", a.CanSubscribe(bob, "c2", "#"), false},
		{"anon reads public", a.CanReceive(anon, "c3", "public/x"), true},
		{"anon pattern", a.CanPublish(anon, "c3", "dev/c3/t"), true},
		{"anon not alice", a.CanReceive(anon, "c3", "alice/x"), false},
		// An inconsistent Identity is treated as anonymous.
		{"anonymous flag wins", a.CanPublish(Identity{User: "alice", Anonymous: true}, "c", "alice/x"), false},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
	// No ACL configured: allow everything.
	b, err := NewAuthenticator(Config{AllowAnonymous: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	id, res := b.Authenticate("", false, nil, false, testIP)
	if res != ResultOK || !b.CanPublish(id, "c", "any/thing") || !b.CanSubscribe(id, "c", "#") || !b.CanReceive(id, "c", "$SYS/x") || b.ACL() != nil {
		t.Error("no ACL should allow everything")
	}
	// Reserved $ topics are never writable, ACL or not (Mosquitto's
	// acl__check_dollar), except the bridge state topic.
	f2 := newAuthFixture(t)
	c := f2.new(t, Config{ACL: ACLConfig{Rules: []Rule{{Topic: "#"}, {Topic: "$SYS/#"}, {Topic: "$share/#"}, {Topic: "$SYSTEM/#"}, {Topic: "$other/#"}}}, AllowAnonymous: true})
	for _, auth := range []*Authenticator{b, c} {
		for topic, want := range map[string]bool{
			"$SYS/broker/uptime":                 false,
			"$SYS":                               false,
			"$SYSTEM/x":                          false,
			"$share/g/x":                         false,
			"$SYS/broker/connection/br1/state":   true,
			"$SYS/broker/connection/br1/state/x": false,
			"$other/x":                           true,
			"plain/topic":                        true,
		} {
			if got := auth.CanPublish(id, "c", topic); got != want {
				t.Errorf("CanPublish(%q) = %v, want %v", topic, got, want)
			}
		}
		if !auth.CanReceive(id, "c", "$SYS/broker/uptime") {
			t.Error("$SYS read refused")
		}
	}
}

func TestReadOnlyRole(t *testing.T) {
	f := newAuthFixture(t)
	role := WIS2ReadOnlyRole()
	a := f.new(t, Config{ReadOnly: &role})
	runAuthCases(t, a, []authCase{
		{"everyone", "everyone", true, "everyone", true, ResultOK, Identity{User: "everyone", ReadOnly: true}},
		{"everyone wrong password", "everyone", true, "Everyone", true, ResultBadCredentials, Identity{}},
		{"everyone no password", "everyone", true, "", false, ResultBadCredentials, Identity{}},
		{"password file still works", "alice", true, "alicepw", true, ResultOK, Identity{User: "alice"}},
		{"anonymous refused", "", false, "", false, ResultNotAuthorized, Identity{}},
	})
	ro, _ := a.Authenticate("everyone", true, []byte("everyone"), true, testIP)
	for _, c := range []struct {
		name      string
		got, want bool
	}{
		{"sub origin", a.CanSubscribe(ro, "c", "origin/a/wis2/#"), true},
		{"sub cache narrower", a.CanSubscribe(ro, "c", "cache/a/wis2/+/data/core/#"), true},
		{"sub shared", a.CanSubscribe(ro, "c", "$share/g/origin/a/wis2/#"), true},
		{"sub wider", a.CanSubscribe(ro, "c", "origin/a/#"), false},
		{"sub all", a.CanSubscribe(ro, "c", "#"), false},
		{"sub sys", a.CanSubscribe(ro, "c", "$SYS/#"), false},
		{"sub malformed", a.CanSubscribe(ro, "c", "origin/a/wis2/#/x"), false},
		{"recv origin", a.CanReceive(ro, "c", "origin/a/wis2/de-dwd/data/core/x"), true},
		{"recv other", a.CanReceive(ro, "c", "origin/b/wis2/x"), false},
		{"recv ACL topic", a.CanReceive(ro, "c", "public/x"), false},
		{"pub origin", a.CanPublish(ro, "c", "origin/a/wis2/x"), false},
		{"pub anything", a.CanPublish(ro, "c", "public/x"), false},
	} {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
	// Anonymous clients in the role.
	role.Anonymous = true
	a = f.new(t, Config{ReadOnly: &role, AllowAnonymous: true})
	runAuthCases(t, a, []authCase{
		{"anonymous read-only", "", false, "", false, ResultOK, Identity{Anonymous: true, ReadOnly: true}},
	})
	anon, _ := a.Authenticate("", false, nil, false, testIP)
	if a.CanPublish(anon, "c", "dev/c/x") || !a.CanReceive(anon, "c", "cache/a/wis2/x") || a.CanReceive(anon, "c", "public/x") {
		t.Error("anonymous read-only client has the wrong access")
	}
}

func TestReadOnlyRoleValidate(t *testing.T) {
	for _, r := range []ReadOnlyRole{
		{Users: []Credential{{"u", "p"}}},
		{Users: []Credential{{"u", "p"}}, Topics: []string{"a/#/b"}},
		{Users: []Credential{{"", "p"}}, Topics: []string{"a"}},
		{Users: []Credential{{"u:x", "p"}}, Topics: []string{"a"}},
		{Users: []Credential{{"u", ""}}, Topics: []string{"a"}},
		{Users: []Credential{{"u", "p"}, {"u", "q"}}, Topics: []string{"a"}},
		{Users: []Credential{{"u", "p"}}, Topics: []string{"$share/g/a"}},
	} {
		if err := r.Validate(); err == nil {
			t.Errorf("%+v accepted", r)
		}
		if _, err := NewAuthenticator(Config{ReadOnly: &r}, nil); err == nil {
			t.Errorf("NewAuthenticator accepted %+v", r)
		}
	}
	wis2 := WIS2ReadOnlyRole()
	if err := wis2.Validate(); err != nil {
		t.Fatal(err)
	}
	var decoded struct {
		ReadOnly ReadOnlyRole `yaml:"read_only"`
	}
	doc := "read_only:\n  users: [{user: everyone, password: everyone}]\n  topics: [origin/a/wis2/#, cache/a/wis2/#]\n"
	if err := yaml.Unmarshal([]byte(doc), &decoded); err != nil {
		t.Fatal(err)
	}
	if decoded.ReadOnly.Users[0] != wis2.Users[0] || len(decoded.ReadOnly.Topics) != 2 || decoded.ReadOnly.Topics[1] != "cache/a/wis2/#" {
		t.Fatalf("yaml decoded %+v", decoded.ReadOnly)
	}
}

func TestAuthenticatorThrottle(t *testing.T) {
	f := newAuthFixture(t)
	a := f.new(t, Config{Throttle: ThrottleConfig{Threshold: 3, BaseDelay: time.Minute}})
	other := netip.MustParseAddr("198.51.100.9")
	for i := range 3 {
		if d := a.Delay(testIP); d != 0 {
			t.Fatalf("attempt %d delayed by %v", i+1, d)
		}
		if _, res := a.Authenticate("alice", true, []byte("guess"), true, testIP); res != ResultBadCredentials {
			t.Fatal(res)
		}
	}
	if d := a.Delay(testIP); d <= 0 || d > time.Minute {
		t.Fatalf("Delay after 3 failures = %v", d)
	}
	if a.Delay(other) != 0 {
		t.Fatal("unrelated source delayed")
	}
	if a.Stats().Throttled.Load() != 1 {
		t.Errorf("Throttled = %d", a.Stats().Throttled.Load())
	}
	// Successes and anonymous refusals are not failures.
	for range 5 {
		a.Authenticate("alice", true, []byte("alicepw"), true, other)
		a.Authenticate("", false, nil, false, other)
	}
	if a.Delay(other) != 0 || a.Throttle().Failures(other) != 0 {
		t.Fatal("non-credential outcomes were counted as failures")
	}
	if !strings.Contains(f.logs.String(), "throttling") {
		t.Errorf("crossing the threshold was not logged:\n%s", f.logs)
	}
	// Disabled throttle.
	b := f.new(t, Config{Throttle: ThrottleConfig{Disabled: true}})
	for range 10 {
		b.Authenticate("alice", true, []byte("guess"), true, testIP)
	}
	if b.Delay(testIP) != 0 || b.Throttle() != nil {
		t.Fatal("disabled throttle delays")
	}
}

func TestAuthenticatorReload(t *testing.T) {
	f := newAuthFixture(t)
	a := f.new(t, Config{})
	alice := Identity{User: "alice"}
	if !a.CanPublish(alice, "c", "alice/x") || a.CanPublish(alice, "c", "new/x") {
		t.Fatal("initial ACL")
	}
	// Change both files; Reload picks both up.
	writeFile(t, f.dir, "pw", "alice:"+cheapArgon2(t, "rotated")+"\ncarol:"+cheapArgon2(t, "carolpw")+"\n")
	writeFile(t, f.dir, "acl", "user alice\ntopic write new/#\n")
	if err := a.Reload(); err != nil {
		t.Fatal(err)
	}
	runAuthCases(t, a, []authCase{
		{"old password", "alice", true, "alicepw", true, ResultBadCredentials, Identity{}},
		{"new password", "alice", true, "rotated", true, ResultOK, alice},
		{"new user", "carol", true, "carolpw", true, ResultOK, Identity{User: "carol"}},
		{"removed user", "bob", true, "bobpw", true, ResultBadCredentials, Identity{}},
	})
	if a.CanPublish(alice, "c", "alice/x") || !a.CanPublish(alice, "c", "new/x") {
		t.Fatal("ACL not reloaded")
	}
	// A broken ACL file keeps both old files in force.
	writeFile(t, f.dir, "pw", "alice:"+cheapArgon2(t, "third")+"\n")
	writeFile(t, f.dir, "acl", "user alice\ntopic write new/#\ntopic bogus x\n")
	err := a.Reload()
	if err == nil || !strings.Contains(err.Error(), f.aclFile+":3:") {
		t.Fatalf("Reload error = %v", err)
	}
	if _, res := a.Authenticate("alice", true, []byte("rotated"), true, testIP); res != ResultOK {
		t.Fatal("password file changed although the reload failed")
	}
	if !a.CanPublish(alice, "c", "new/x") {
		t.Fatal("ACL changed although the reload failed")
	}
	// A broken password file likewise.
	writeFile(t, f.dir, "acl", "user alice\ntopic write third/#\n")
	writeFile(t, f.dir, "pw", "alice:plaintext\n")
	if err := a.Reload(); err == nil || !strings.Contains(err.Error(), f.pwFile+":1:") {
		t.Fatalf("Reload error = %v", err)
	}
	if a.CanPublish(alice, "c", "third/x") {
		t.Fatal("ACL changed although the password file failed")
	}
	st := a.Stats()
	if st.Reloads.Load() != 1 || st.ReloadErrors.Load() != 2 {
		t.Errorf("reload stats %d/%d", st.Reloads.Load(), st.ReloadErrors.Load())
	}
	if !strings.Contains(f.logs.String(), "keeping previous rules") {
		t.Error("failed reload not logged")
	}
	// Missing files at construction are errors.
	if _, err := NewAuthenticator(Config{PasswordFile: f.dir + "/nope"}, nil); err == nil {
		t.Error("missing password file accepted")
	}
	if _, err := NewAuthenticator(Config{ACL: ACLConfig{File: f.dir + "/nope"}}, nil); err == nil {
		t.Error("missing ACL file accepted")
	}
}

// TestAuthenticatorConcurrentReload runs checks and authentications while
// reloading, for the race detector, and checks every result is consistent
// with one of the two rule sets.
func TestAuthenticatorConcurrentReload(t *testing.T) {
	f := newAuthFixture(t)
	a := f.new(t, Config{MaxConcurrentHashes: 1})
	aclA := "user alice\ntopic readwrite alice/#\n"
	aclB := "user alice\ntopic readwrite alice/#\ntopic readwrite extra/#\n"
	var stop atomic.Bool
	var wg sync.WaitGroup
	alice := Identity{User: "alice"}
	for range 4 {
		wg.Go(func() {
			for !stop.Load() {
				if !a.CanPublish(alice, "c", "alice/x") {
					t.Error("rule present in both versions denied")
					return
				}
				a.CanReceive(alice, "c", "extra/x")
				a.CanSubscribe(alice, "c", "extra/#")
				if _, res := a.Authenticate("alice", true, []byte("alicepw"), true, testIP); res != ResultOK {
					t.Error("valid login refused during reload")
					return
				}
			}
		})
	}
	for i := range 20 {
		acl := aclA
		if i%2 == 1 {
			acl = aclB
		}
		if err := os.WriteFile(f.aclFile+".new", []byte(acl), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(f.aclFile+".new", f.aclFile); err != nil {
			t.Fatal(err)
		}
		if err := a.Reload(); err != nil {
			t.Fatal(err)
		}
	}
	stop.Store(true)
	wg.Wait()
	if !a.CanReceive(alice, "c", "extra/x") {
		t.Error("last reload (aclB) not in force")
	}
}

func TestResultString(t *testing.T) {
	for r, s := range map[Result]string{ResultOK: "ok", ResultBadCredentials: "bad credentials", ResultNotAuthorized: "not authorized", 9: "Result(9)"} {
		if r.String() != s {
			t.Errorf("%d: %q", r, r.String())
		}
	}
	for a, s := range map[Access]string{AccessDeny: "deny", AccessRead: "read", AccessWrite: "write", AccessReadWrite: "readwrite", 7: "Access(7)"} {
		if a.String() != s {
			t.Errorf("%d: %q", a, a.String())
		}
	}
}

func TestConfigYAML(t *testing.T) {
	doc := `
allow_anonymous: false
password_file: /etc/isobar/passwd
acl:
  file: /etc/isobar/acl
  rules:
    - {user: alice, topic: "a/#", access: read}
read_only:
  users: [{user: everyone, password: everyone}]
  topics: ["origin/a/wis2/#"]
throttle:
  threshold: 10
  base_delay: 2s
  max_delay: 1m
max_concurrent_hashes: 4
`
	var c Config
	if err := yaml.Unmarshal([]byte(doc), &c); err != nil {
		t.Fatal(err)
	}
	if c.PasswordFile != "/etc/isobar/passwd" || c.ACL.File != "/etc/isobar/acl" || len(c.ACL.Rules) != 1 ||
		c.ACL.Rules[0] != (Rule{User: "alice", Topic: "a/#", Access: "read"}) || c.ReadOnly == nil ||
		c.Throttle.Threshold != 10 || c.Throttle.BaseDelay != 2*time.Second || c.Throttle.MaxDelay != time.Minute ||
		c.MaxConcurrentHashes != 4 {
		t.Fatalf("decoded %+v", c)
	}
}
