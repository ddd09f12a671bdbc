package sectest

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/isobar-mq/isobar/internal/mqtt/packet"
)

// passwordFile writes a Mosquitto password file with mosquitto_passwd, one
// user:password pair at a time, and returns its path.
func passwordFile(t *testing.T, dir string, users ...string) string {
	t.Helper()
	bin := need(t, "mosquitto_passwd", "mosquitto")
	path := filepath.Join(dir, "passwd")
	for i, up := range users {
		user, pass, _ := strings.Cut(up, ":")
		args := []string{"-b", path, user, pass}
		if i == 0 {
			args = append([]string{"-c"}, args...)
		}
		mustRun(t, bin, args...)
	}
	return path
}

// aclFile is a Mosquitto ACL file exercising user, topic (read, write,
// readwrite, deny) and pattern (%u, %c) rules.
const aclFile = `# Isobar sectest: a Mosquitto ACL file used unchanged.
# Anonymous clients (refused by this broker anyway) could read public/#.
topic read public/#

user alice
topic readwrite alice/#
topic write public/#

user bob
topic read alice/#
topic deny alice/secret
topic read public/#

user carol
topic read public/#

# Every client owns clients/<client id>/# and may write users/<user>/out.
pattern readwrite clients/%c/#
pattern write users/%u/out
`

// v5 and v3 CONNACK codes, MQTT 5 first.
var (
	badCredentials = map[byte]byte{packet.V5: 0x86, packet.V311: 4}
	notAuthorized  = map[byte]byte{packet.V5: 0x87, packet.V311: 5}
	subRefused     = map[byte]byte{packet.V5: 0x87, packet.V311: 0x80}
)

func versionName(v byte) string { return map[byte]string{packet.V311: "v3.1.1", packet.V5: "v5"}[v] }

// TestMosquittoPasswordAndACLFiles runs a password file written by
// mosquitto_passwd and a Mosquitto ACL file, both unchanged, and checks
// every outcome with the reason codes MQTT 3.1.1 and 5.0 clients get.
func TestMosquittoPasswordAndACLFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	pw := passwordFile(t, dir, "alice:secret-a", "bob:secret-b", "carol:secret-c")
	acl := writeFile(t, dir, "acl", []byte(aclFile))
	n := startNode(t, fmt.Sprintf(`listeners:
  - {name: mqtt, protocol: mqtt, address: "127.0.0.1:0"}
auth:
  allow_anonymous: false
  password_file: %q
  acl_file: %q
  throttle: {disabled: true}
`, pw, acl))
	a := addr(t, n, "mqtt")
	user := func(id string, v byte, u string) connOpts {
		return connOpts{id: id, v: v}.withUser(u, "secret-"+u[:1])
	}

	t.Run("credentials", func(t *testing.T) {
		for _, v := range []byte{packet.V311, packet.V5} {
			connectTCP(t, a, user("alice-ok", v, "alice")).disconnect()
			for _, tc := range []struct {
				name string
				o    connOpts
				want byte
			}{
				{"wrong password", connOpts{id: "x", v: v}.withUser("alice", "secret-b"), badCredentials[v]},
				{"empty password", connOpts{id: "x", v: v}.withUser("alice", ""), badCredentials[v]},
				{"unknown user", connOpts{id: "x", v: v}.withUser("mallory", "secret-m"), badCredentials[v]},
				{"user name without password", connOpts{id: "x", v: v, user: "alice", hasUser: true}, badCredentials[v]},
				{"anonymous", connOpts{id: "x", v: v}, notAuthorized[v]},
			} {
				if got := refusedCode(t, a, tc.o); got != tc.want {
					t.Errorf("%s %s: CONNACK 0x%02X, want 0x%02X", versionName(v), tc.name, got, tc.want)
				}
			}
		}
		// The mosquitto clients too.
		pub := need(t, "mosquitto_pub", "mosquitto-clients")
		for _, v := range []string{"mqttv311", "mqttv5"} {
			base := []string{"-h", "127.0.0.1", "-p", port(t, n, "mqtt"), "-V", v, "-t", "alice/cli", "-m", "x", "-q", "1"}
			mustRun(t, pub, append(base, "-u", "alice", "-P", "secret-a")...)
			for _, bad := range [][]string{{"-u", "alice", "-P", "wrong"}, {"-u", "nobody", "-P", "x"}, {}} {
				out, code := run(t, pub, append(base, bad...)...)
				if code == 0 {
					t.Errorf("mosquitto_pub %s %v accepted:\n%s", v, bad, out)
				}
				t.Logf("mosquitto_pub %s %v: exit %d: %s", v, bad, code, strings.TrimSpace(out))
			}
		}
	})

	t.Run("publish", func(t *testing.T) {
		bob := connectTCP(t, a, user("bob-sub", packet.V5, "bob"))
		bob.mustSubscribe("alice/#")
		alice := connectTCP(t, a, user("alice-pub", packet.V5, "alice"))
		alice.mustPublish("alice/x", "1")
		bob.expectMsg("alice/x", "1")

		bob5 := connectTCP(t, a, user("bob-pub5", packet.V5, "bob"))
		if code := bob5.publish("alice/x", "forged", 1, false); code != 0x87 {
			t.Fatalf("v5 publish without write access: PUBACK 0x%02X, want 0x87", code)
		}
		// MQTT 3.1.1 has no failure code: the publish is acknowledged
		// and dropped.
		bob3 := connectTCP(t, a, user("bob-pub3", packet.V311, "bob"))
		if code := bob3.publish("alice/x", "forged", 1, false); code != 0 {
			t.Fatalf("v3 PUBACK code %d", code)
		}
		bob3.publish("alice/x", "forged", 0, false)
		bob3.ping()
		// The deny rule: bob may read alice/# except alice/secret.
		alice.mustPublish("alice/secret", "s")
		alice.mustPublish("alice/marker", "2")
		bob.expectMsg("alice/marker", "2")

		// Patterns: %c is the client identifier, %u the user name.
		for _, tc := range []struct {
			topic string
			want  byte
		}{
			{"clients/alice-pub/state", 0}, {"clients/bob-sub/state", 0x87},
			{"users/alice/out", 0}, {"users/bob/out", 0x87}, {"public/news", 0}, {"carol/x", 0x87},
		} {
			if code := alice.publish(tc.topic, "p", 1, false); code != tc.want && !(tc.want == 0 && code == 0x10) {
				t.Errorf("alice (client alice-pub) publishing to %s: PUBACK 0x%02X, want 0x%02X", tc.topic, code, tc.want)
			}
		}
		if code := bob5.publish("clients/bob-pub5/state", "p", 1, false); code >= 0x80 {
			t.Errorf("bob publishing to his own clients/%%c topic: 0x%02X", code)
		}
	})

	t.Run("subscribe", func(t *testing.T) {
		for _, v := range []byte{packet.V311, packet.V5} {
			carol := connectTCP(t, a, user("carol-dev", v, "carol"))
			codes := carol.subscribe("public/#", "alice/#", "#", "clients/carol-dev/#", "clients/other/#", "users/carol/out")
			want := []byte{1, subRefused[v], subRefused[v], 1, subRefused[v], subRefused[v]}
			if string(codes) != string(want) {
				t.Errorf("%s carol's SUBACK codes % X, want % X", versionName(v), codes, want)
			}
			carol.disconnect()
		}
	})

	t.Run("retained", func(t *testing.T) {
		alice := connectTCP(t, a, user("alice-ret", packet.V5, "alice"))
		if code := alice.publish("alice/retained", "by alice", 1, true); code >= 0x80 {
			t.Fatalf("retained publish: 0x%02X", code)
		}
		if code := alice.publish("alice/secret", "retained secret", 1, true); code >= 0x80 {
			t.Fatalf("retained publish: 0x%02X", code)
		}
		bob := connectTCP(t, a, user("bob-ret", packet.V5, "bob"))
		if code := bob.publish("alice/retained", "by bob", 1, true); code != 0x87 {
			t.Fatalf("bob replacing alice's retained message: PUBACK 0x%02X, want 0x87", code)
		}
		bob.mustSubscribe("alice/#")
		bob.expectMsg("alice/retained", "by alice") // not "by bob", and not alice/secret
		alice.mustPublish("alice/marker", "m")
		bob.expectMsg("alice/marker", "m")
		// Carol may not subscribe, so she never sees them.
		carol := connectTCP(t, a, user("carol-ret", packet.V5, "carol"))
		if codes := carol.subscribe("alice/retained"); codes[0] != 0x87 {
			t.Fatalf("carol: SUBACK 0x%02X", codes[0])
		}
		// Clear them.
		alice.publish("alice/retained", "", 1, true)
		alice.publish("alice/secret", "", 1, true)
	})

	t.Run("will", func(t *testing.T) {
		for _, v := range []byte{packet.V311, packet.V5} {
			o := user("bob-will", v, "bob")
			o.will = &packet.Publish{Topic: "alice/will", Payload: []byte("forged"), QoS: 1}
			if got := refusedCode(t, a, o); got != notAuthorized[v] {
				t.Errorf("%s will on a topic bob may not write: CONNACK 0x%02X, want 0x%02X", versionName(v), got, notAuthorized[v])
			}
		}
		bob := connectTCP(t, a, user("bob-watch", packet.V5, "bob"))
		bob.mustSubscribe("alice/#")
		for _, topic := range []string{"alice/secret", "alice/will"} {
			o := user("alice-will-"+topic[6:], packet.V311, "alice")
			o.will = &packet.Publish{Topic: topic, Payload: []byte("gone"), QoS: 1}
			c := connectTCP(t, a, o)
			_ = c.conn.Close() // no DISCONNECT: the will is published
			waitGone(t, n, o.id)
		}
		// The will on alice/secret was published but not delivered to bob
		// (deny rule).
		bob.expectMsg("alice/will", "gone")
	})
}

// TestReadOnlyRole: the WIS2 convention, public credentials everyone /
// everyone that may subscribe to the listed filters only and never publish.
func TestReadOnlyRole(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	pw := passwordFile(t, dir, "gb:secret-g")
	n := startNode(t, fmt.Sprintf(`listeners:
  - {name: mqtt, protocol: mqtt, address: "127.0.0.1:0"}
auth:
  allow_anonymous: false
  password_file: %q
  acl:
    - {user: gb, access: readwrite, topic: "origin/#"}
    - {user: gb, access: readwrite, topic: "cache/#"}
  read_only:
    users: [{user: everyone, password: everyone}]
    topics: ["origin/a/wis2/#", "cache/a/wis2/#"]
`, pw))
	a := addr(t, n, "mqtt")
	gb := connectTCP(t, a, connOpts{id: "gb", v: packet.V5}.withUser("gb", "secret-g"))
	for _, v := range []byte{packet.V311, packet.V5} {
		ev := connectTCP(t, a, connOpts{id: "everyone-" + versionName(v), v: v}.withUser("everyone", "everyone"))
		codes := ev.subscribe("origin/a/wis2/#", "cache/a/wis2/+/data/core/#", "origin/b/wis2/#", "origin/#", "#", "$SYS/#")
		r := subRefused[v]
		if want := []byte{1, 1, r, r, r, r}; string(codes) != string(want) {
			t.Errorf("%s read-only SUBACK codes % X, want % X", versionName(v), codes, want)
		}
		pubWant := byte(0x87)
		if v == packet.V311 {
			pubWant = 0
		}
		for _, topic := range []string{"origin/a/wis2/x/data", "cache/a/wis2/x/data", "elsewhere"} {
			if code := ev.publish(topic, "forged", 1, false); code != pubWant {
				t.Errorf("%s read-only publish to %s: PUBACK 0x%02X, want 0x%02X", versionName(v), topic, code, pubWant)
			}
		}
		gb.mustPublish("origin/b/wis2/x/data", "not for everyone")
		gb.mustPublish("origin/a/wis2/ca-centre/data/core/1", "n1")
		ev.expectMsg("origin/a/wis2/ca-centre/data/core/1", "n1") // first: nothing forged, nothing from origin/b
		gb.mustPublish("cache/a/wis2/ca-centre/data/core/2", "n2")
		ev.expectMsg("cache/a/wis2/ca-centre/data/core/2", "n2")
		if got := refusedCode(t, a, connOpts{id: "ev-bad", v: v}.withUser("everyone", "guess")); got != badCredentials[v] {
			t.Errorf("%s everyone with a wrong password: CONNACK 0x%02X", versionName(v), got)
		}
		ev.disconnect()
	}

	// The mosquitto clients with the public credentials.
	sub := need(t, "mosquitto_sub", "mosquitto-clients")
	pub := need(t, "mosquitto_pub", "mosquitto-clients")
	base := []string{"-h", "127.0.0.1", "-p", port(t, n, "mqtt"), "-u", "everyone", "-P", "everyone", "-V", "mqttv5"}
	s := start(t, nil, sub, append(base, "-i", "ev-cli", "-t", "origin/a/wis2/#", "-C", "1", "-W", "10", "-v")...)
	waitSubscribed(t, n, "ev-cli", 1)
	out, code := run(t, pub, append(base, "-i", "ev-pub", "-t", "origin/a/wis2/x", "-m", "forged", "-q", "1")...)
	t.Logf("mosquitto_pub as everyone: exit %d: %s", code, strings.TrimSpace(out))
	gb.mustPublish("origin/a/wis2/x", "real")
	s.waitLine(t, func(l string) bool { return l == "origin/a/wis2/x real" })
	if code := s.wait(t); code != 0 {
		t.Fatalf("mosquitto_sub: exit %d\n%s", code, s.output())
	}
	if !strings.Contains(out, "ot authori") {
		t.Errorf("mosquitto_pub v5 as everyone should report the refused publish, got: %s", out)
	}
}

// TestReloadPasswordAndACL: Reload (SIGHUP) applies a rewritten password
// file and ACL to new and connected clients without disconnecting anyone;
// a broken file keeps the old rules.
func TestReloadPasswordAndACL(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	pw := passwordFile(t, dir, "alice:secret-a")
	acl := writeFile(t, dir, "acl", []byte("user alice\ntopic readwrite a/#\n"))
	n := startNode(t, fmt.Sprintf(`listeners:
  - {name: mqtt, protocol: mqtt, address: "127.0.0.1:0"}
auth:
  allow_anonymous: false
  password_file: %q
  acl_file: %q
  throttle: {disabled: true}
`, pw, acl))
	a := addr(t, n, "mqtt")
	alice := connectTCP(t, a, connOpts{id: "alice", v: packet.V5}.withUser("alice", "secret-a"))
	alice.mustSubscribe("a/#")
	if code := alice.publish("b/x", "1", 1, false); code != 0x87 {
		t.Fatalf("before reload: PUBACK 0x%02X, want 0x87", code)
	}
	if got := refusedCode(t, a, connOpts{id: "dave", v: packet.V5}.withUser("dave", "secret-d")); got != 0x86 {
		t.Fatalf("dave before reload: 0x%02X", got)
	}

	// New user, new rules, alice's password changed.
	mosquittoPasswd := need(t, "mosquitto_passwd", "mosquitto")
	mustRun(t, mosquittoPasswd, "-b", pw, "dave", "secret-d")
	mustRun(t, mosquittoPasswd, "-b", pw, "alice", "new-secret")
	replaceFile(t, acl, []byte("user alice\ntopic readwrite a/#\ntopic readwrite b/#\n\nuser dave\ntopic read b/#\n"))
	n.Reload()
	if got := n.Auth.Stats().Reloads.Load(); got != 1 {
		t.Fatalf("reloads %d", got)
	}
	alice.ping() // still connected
	if code := alice.publish("b/x", "1", 1, false); code >= 0x80 {
		t.Fatalf("connected client after reload: PUBACK 0x%02X, want 0", code)
	}
	alice.mustSubscribe("b/#")
	dave := connectTCP(t, a, connOpts{id: "dave", v: packet.V5}.withUser("dave", "secret-d"))
	dave.mustSubscribe("b/#")
	if got := refusedCode(t, a, connOpts{id: "alice2", v: packet.V5}.withUser("alice", "secret-a")); got != 0x86 {
		t.Fatalf("alice's old password after reload: 0x%02X, want 0x86", got)
	}
	connectTCP(t, a, connOpts{id: "alice2", v: packet.V5}.withUser("alice", "new-secret")).disconnect()

	// Broken files: the old rules stay, for connected and new clients.
	good, err := os.ReadFile(pw)
	if err != nil {
		t.Fatal(err)
	}
	replaceFile(t, acl, []byte("user alice\ntopic readwrite c/#\nfrobnicate everything\n"))
	n.Reload()
	replaceFile(t, acl, []byte("user alice\ntopic readwrite c/#\n"))
	replaceFile(t, pw, append(append([]byte(nil), good...), "eve:plain-text-password\n"...))
	n.Reload()
	if got := n.Auth.Stats().ReloadErrors.Load(); got != 2 {
		t.Fatalf("reload errors %d, want 2", got)
	}
	if code := alice.publish("c/x", "1", 1, false); code != 0x87 {
		t.Fatalf("after a broken reload: publish to c/x PUBACK 0x%02X, want 0x87 (old rules)", code)
	}
	alice.mustPublish("b/y", "2")
	alice.expectMsg("b/y", "2")
	dave.expectMsg("b/y", "2")
	if got := refusedCode(t, a, connOpts{id: "eve", v: packet.V5}.withUser("eve", "plain-text-password")); got != 0x86 {
		t.Fatalf("eve from the broken file: 0x%02X, want 0x86", got)
	}
	connectTCP(t, a, connOpts{id: "dave2", v: packet.V5}.withUser("dave", "secret-d")).disconnect()

	// Fixed files load again.
	replaceFile(t, pw, good)
	n.Reload()
	if code := alice.publish("c/x", "1", 1, false); code >= 0x80 {
		t.Fatalf("after the fix: publish to c/x PUBACK 0x%02X, want 0", code)
	}
	waitGone(t, n, "dave2")
	if _, ok := clientView(n, "dave"); !ok || len(n.Server.Clients()) != 2 {
		t.Fatalf("clients %+v, want alice and dave still connected", n.Server.Clients())
	}
}

// TestAuthModes: per-listener anonymous access, subscribe_check none
// (Mosquitto's behaviour: wide subscriptions granted, each message filtered
// on delivery) and acl_default allow, with the same Mosquitto files.
func TestAuthModes(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	pw := passwordFile(t, dir, "alice:secret-a", "bob:secret-b", "carol:secret-c")
	acl := writeFile(t, dir, "acl", []byte(aclFile))
	n := startNode(t, fmt.Sprintf(`listeners:
  - {name: public, protocol: mqtt, address: "127.0.0.1:0"}
  - {name: internal, protocol: mqtt, address: "127.0.0.1:0", allow_anonymous: true}
auth:
  allow_anonymous: false
  password_file: %q
  acl_file: %q
  subscribe_check: none
`, pw, acl))
	pub, internal := addr(t, n, "public"), addr(t, n, "internal")

	// Anonymous: refused on the public listener, admitted on the internal
	// one with the anonymous rules of the ACL file (read public/#).
	for _, v := range []byte{packet.V311, packet.V5} {
		if got := refusedCode(t, pub, connOpts{id: "anon", v: v}); got != notAuthorized[v] {
			t.Errorf("%s anonymous on the public listener: 0x%02X", versionName(v), got)
		}
	}
	anon := connectTCP(t, internal, connOpts{id: "anon", v: packet.V5})
	carol := connectTCP(t, pub, connOpts{id: "carol", v: packet.V5}.withUser("carol", "secret-c"))
	// subscribe_check none: "#" is granted to both, delivery is filtered.
	anon.mustSubscribe("#")
	carol.mustSubscribe("#")
	if code := anon.publish("public/x", "anon", 1, false); code != 0x87 {
		t.Errorf("anonymous publish: PUBACK 0x%02X, want 0x87 (read-only rules)", code)
	}
	alice := connectTCP(t, pub, connOpts{id: "alice", v: packet.V5}.withUser("alice", "secret-a"))
	alice.mustPublish("alice/private", "no")
	alice.mustPublish("public/news", "yes")
	anon.expectMsg("public/news", "yes")
	carol.expectMsg("public/news", "yes")
	// A user name is still checked on the anonymous-friendly listener.
	if got := refusedCode(t, internal, connOpts{id: "x", v: packet.V5}.withUser("alice", "wrong")); got != 0x86 {
		t.Errorf("wrong password on the internal listener: 0x%02X, want 0x86", got)
	}

	// acl_default allow: only deny rules restrict.
	n2 := startNode(t, fmt.Sprintf(`listeners:
  - {name: mqtt, protocol: mqtt, address: "127.0.0.1:0"}
auth:
  allow_anonymous: false
  password_file: %q
  acl_default: allow
  acl:
    - {user: bob, access: deny, topic: "alice/secret"}
    - {pattern: true, access: deny, topic: "private/#"}
`, pw))
	bob := connectTCP(t, addr(t, n2, "mqtt"), connOpts{id: "bob", v: packet.V5}.withUser("bob", "secret-b"))
	for topic, want := range map[string]byte{"anything/at/all": 0, "alice/x": 0, "alice/secret": 0x87, "private/a": 0x87} {
		if code := bob.publish(topic, "b", 1, false); code != want && !(want == 0 && code == 0x10) {
			t.Errorf("acl_default allow: bob publishing to %s: PUBACK 0x%02X, want 0x%02X", topic, code, want)
		}
	}
	if codes := bob.subscribe("anything/#", "private/#"); codes[0] != 1 || codes[1] != 0x87 {
		t.Errorf("acl_default allow: SUBACK % X, want 01 87", codes)
	}
}
