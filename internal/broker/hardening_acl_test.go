package broker_test

// Regression tests for the authorization part of the broker-core
// hardening, through a node with the auth package's real password file and
// ACLs: the read ACL of shared subscriptions (and of their re-dispatch),
// client identifier ownership and the re-check of resumed sessions, '$'
// topics, and the read-only role of a session restored after a restart.

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/isobar-mq/isobar/internal/broker"
	"github.com/isobar-mq/isobar/internal/mqtt/packet"
	"github.com/isobar-mq/isobar/internal/node"
	"github.com/isobar-mq/isobar/internal/testutil"
)

// hdSharedACL: alice may read a/# except a/+/secret; carol and dave may
// read all of a/#; pub may write a/#.
const hdSharedACL = `
  acl:
    - {user: alice, topic: "a/#", access: read}
    - {user: alice, topic: "a/+/secret", access: deny}
    - {user: carol, topic: "a/#", access: read}
    - {user: dave, topic: "a/#", access: read}
    - {user: pub, topic: "a/#", access: write}
`

func hdAuthYAML(pw string) string {
	return fmt.Sprintf("auth:\n  allow_anonymous: false\n  password_file: %q\n  throttle: {disabled: true}\n", pw)
}

// Item 1. A shared subscription is no way around the read ACL: alice, who
// may read a/# but not a/+/secret, subscribes to $share/g/a/s/# (granted:
// the deny rule covers only part of the filter, so it is enforced per
// message) and must never receive a/s/secret, alone in her group or
// together with carol, who then gets every a/s/secret.
func TestHardeningSharedSubscriptionReadACL(t *testing.T) {
	t.Parallel()
	pw := hdPasswordFile(t, t.TempDir(), "alice", "carol", "pub")
	_, addr := startNode(t, hdAuthYAML(pw)+hdSharedACL)
	pub := dialP(t, addr, packet.V5)
	pub.connect(hdLogin("sh-pub", "pub", true, 0))

	// Alone in her group.
	{
		alice := dialP(t, addr, packet.V5)
		alice.connect(hdLogin("sh-alice-1", "alice", true, 0))
		alice.sub("$share/g1/a/s/#", 1)
		pub.hdPubQ("a/s/secret", 1, 1, "no")
		pub.hdPubQ("a/s/open", 1, 2, "yes")
		got := alice.hdUntil("a/s/open")
		if len(got) != 0 {
			t.Fatalf("alice received %v through $share/g1/a/s/#", got)
		}
	}

	// With carol in the group.
	{
		alice := dialP(t, addr, packet.V5)
		alice.connect(hdLogin("sh-alice-2", "alice", true, 0))
		carol := dialP(t, addr, packet.V5)
		carol.connect(hdLogin("sh-carol-2", "carol", true, 0))
		for _, c := range []*pconn{alice, carol} {
			c.sub("$share/g2/a/s/#", 1)
		}
		alice.sub("a/b/alice", 0)
		carol.sub("a/b/carol", 0)
		const n = 6
		for i := 0; i < n; i++ {
			pub.hdPubQ("a/s/secret", 1, uint16(10+2*i), fmt.Sprint(i))
			pub.hdPubQ("a/s/open", 1, uint16(11+2*i), fmt.Sprint(i))
		}
		pub.publish(packet.Publish{Topic: "a/b/alice"})
		pub.publish(packet.Publish{Topic: "a/b/carol"})
		ga, gc := alice.hdUntil("a/b/alice"), carol.hdUntil("a/b/carol")
		secret := 0
		for _, m := range ga {
			if strings.HasPrefix(m, "a/s/secret:") {
				t.Errorf("alice received %s through the shared group", m)
			}
		}
		for _, m := range gc {
			if strings.HasPrefix(m, "a/s/secret:") {
				secret++
			}
		}
		if secret != n || len(ga)+len(gc) != 2*n {
			t.Fatalf("alice got %v, carol got %v: want every a/s/secret at carol and each message once", ga, gc)
		}
	}
}

// Item 1, with subscribe_check none (every well-formed SUBSCRIBE is
// granted, deliveries alone are checked, as in Mosquitto): bob, who may
// read only bob/#, subscribes to $share/x/# and receives nothing else.
func TestHardeningSharedSubscriptionSubscribeCheckNone(t *testing.T) {
	t.Parallel()
	pw := hdPasswordFile(t, t.TempDir(), "bob", "pub")
	_, addr := startNode(t, hdAuthYAML(pw)+`  subscribe_check: none
  acl:
    - {user: bob, topic: "bob/#", access: read}
    - {user: pub, topic: "#", access: write}
`)
	bob := dialP(t, addr, packet.V5)
	bob.connect(hdLogin("none-bob", "bob", true, 0))
	bob.sub("$share/x/#", 1)
	pub := dialP(t, addr, packet.V5)
	pub.connect(hdLogin("none-pub", "pub", true, 0))
	for i, tp := range []string{"a/x", "alice/secret", "bob/y", "c"} {
		pub.hdPubQ(tp, 1, uint16(i+1), "m")
	}
	pub.hdPubQ("bob/barrier", 1, 9, "end")
	if got := bob.hdUntil("bob/barrier"); !slices.Equal(got, []string{"bob/y:m"}) {
		t.Fatalf("bob received %v through $share/x/#, want only bob/y", got)
	}
}

// Item 1, re-dispatch: when a member of a shared group goes away with a
// QoS 1 message unacknowledged, the message goes to another member only if
// that one may read it. carol (persistent session) holds a/r/secret and
// drops her connection while alice, who may not read it, is the only other
// member online: the message goes back to carol's session, not to alice.
// With dave (allowed) online too, it goes to dave.
func TestHardeningSharedRedispatchReadACL(t *testing.T) {
	t.Parallel()
	pw := hdPasswordFile(t, t.TempDir(), "alice", "carol", "dave", "pub")
	n, addr := startNode(t, hdAuthYAML(pw)+hdSharedACL)
	pub := dialP(t, addr, packet.V5)
	pub.connect(hdLogin("rd-pub", "pub", true, 0))
	carol := dialP(t, addr, packet.V5)
	carol.connect(hdLogin("rd-carol", "carol", true, 300))
	carol.sub("$share/g3/a/r/#", 1)
	alice := dialP(t, addr, packet.V5)
	alice.connect(hdLogin("rd-alice", "alice", true, 0))
	alice.sub("$share/g3/a/r/#", 1)
	alice.sub("a/b/alice", 0)

	// carol receives a/r/secret (alice may not: pickShared skips her) and
	// does not acknowledge it.
	held := func(payload string) {
		t.Helper()
		pub.hdPubQ("a/r/secret", 1, 1, payload)
		m := carol.nextPublish()
		if m.Topic != "a/r/secret" || string(m.Payload) != payload {
			t.Fatalf("carol got %s, want a/r/secret %q", describe(m), payload)
		}
	}
	held("one")
	_ = carol.c.Close()
	waitClients(t, n, 2)
	pub.publish(packet.Publish{Topic: "a/b/alice"})
	if got := alice.hdUntil("a/b/alice"); len(got) != 0 {
		t.Fatalf("alice received %v when carol left", got)
	}
	// Back to carol's session.
	carol = dialP(t, addr, packet.V5)
	if ack := carol.connect(hdLogin("rd-carol", "carol", false, 300)); !ack.SessionPresent {
		t.Fatal("carol's session not present")
	}
	m := carol.nextPublish()
	if m.Topic != "a/r/secret" || string(m.Payload) != "one" {
		t.Fatalf("carol got %s after reconnecting, want a/r/secret one", describe(m))
	}
	carol.ack(packet.PUBACK, m.PacketID)

	// carol holds another one; dave joins; carol leaves: dave gets it.
	held("two")
	dave := dialP(t, addr, packet.V5)
	dave.connect(hdLogin("rd-dave", "dave", true, 0))
	dave.sub("$share/g3/a/r/#", 1)
	before := n.Server.Stats().Snapshot().SharedRedispatched
	_ = carol.c.Close()
	m = dave.nextPublish()
	if m.Topic != "a/r/secret" || string(m.Payload) != "two" {
		t.Fatalf("dave got %s, want the re-dispatched a/r/secret two", describe(m))
	}
	if d := n.Server.Stats().Snapshot().SharedRedispatched - before; d != 1 {
		t.Errorf("SharedRedispatched grew by %d, want 1", d)
	}
	pub.publish(packet.Publish{Topic: "a/b/alice"})
	if got := alice.hdUntil("a/b/alice"); len(got) != 0 {
		t.Fatalf("alice received %v when carol left again", got)
	}
}

// hdOwnerACL is the ACL file of the ownership tests (before any reload).
const hdOwnerACL = `user alice
topic readwrite a/#
topic read b/#
user bob
topic readwrite bob/#
user pub
topic write a/#
topic write b/#
`

// hdOwnerNode runs a node with users alice, bob and pub, the ACL file
// hdOwnerACL (its path is returned, for reloads) and a connected publisher.
func hdOwnerNode(t *testing.T) (n *node.Node, addr, acl string, pub *pconn) {
	t.Helper()
	dir := t.TempDir()
	pw := hdPasswordFile(t, dir, "alice", "bob", "pub")
	acl = filepath.Join(dir, "acl")
	if err := os.WriteFile(acl, []byte(hdOwnerACL), 0o600); err != nil {
		t.Fatal(err)
	}
	n, addr = startNode(t, hdAuthYAML(pw)+fmt.Sprintf("  acl_file: %q\n", acl))
	pub = dialP(t, addr, packet.V5)
	pub.connect(hdLogin("own-pub", "pub", true, 0))
	return n, addr, acl, pub
}

// hdIntruder connects as bob with client id "owned" and requires the
// refusal: CONNACK v5 0x87 / 3.1.1 return code 5, then the end of the
// connection with nothing else sent (no queued message of the owner).
func hdIntruder(t *testing.T, addr string, v byte, clean bool) {
	t.Helper()
	b := dialP(t, addr, v)
	ack := b.connectAck(hdLogin("owned", "bob", clean, 3600))
	want := map[byte]byte{packet.V5: packet.NotAuthorized, packet.V311: packet.ConnRefusedNotAuthorized}[v]
	if ack.ReasonCode != want || ack.SessionPresent {
		t.Errorf("bob (v%d, clean %v) with alice's client id: CONNACK 0x%02X present %v, want 0x%02X", v, clean, ack.ReasonCode, ack.SessionPresent, want)
		return
	}
	b.hdExpectClosedQuietly()
}

// Item 2. A session belongs to the user who created it: bob, another
// authenticated user, cannot take alice's live connection over, whatever
// his protocol version and clean start flag; alice's connection carries
// on. alice herself can (0x8E to her old connection).
func TestHardeningForeignTakeoverRefused(t *testing.T) {
	t.Parallel()
	n, addr, _, pub := hdOwnerNode(t)
	alice := dialP(t, addr, packet.V5)
	alice.connect(hdLogin("owned", "alice", false, 3600))
	alice.sub("a/#", 1)
	before := n.Server.Stats().Snapshot().Takeovers
	hdIntruder(t, addr, packet.V5, false)
	hdIntruder(t, addr, packet.V5, true)
	hdIntruder(t, addr, packet.V311, false)
	hdIntruder(t, addr, packet.V311, true)
	if d := n.Server.Stats().Snapshot().Takeovers - before; d != 0 {
		t.Errorf("%d takeovers counted", d)
	}
	pub.hdPubQ("a/live", 1, 1, "still here")
	m := alice.nextPublish()
	if m.Topic != "a/live" {
		t.Fatalf("alice got %s", describe(m))
	}
	alice.ack(packet.PUBACK, m.PacketID)

	second := dialP(t, addr, packet.V5)
	if ack := second.connect(hdLogin("owned", "alice", false, 3600)); !ack.SessionPresent {
		t.Fatal("session not present for its owner")
	}
	alice.expectDisconnect(packet.SessionTakenOver)
}

// Item 2, offline: bob can neither resume alice's offline session (her
// queued messages are not delivered to him) nor discard it with a clean
// start; alice then resumes it with everything queued.
func TestHardeningForeignResumeRefused(t *testing.T) {
	t.Parallel()
	n, addr, _, pub := hdOwnerNode(t)
	alice := dialP(t, addr, packet.V5)
	alice.connect(hdLogin("owned", "alice", true, 3600))
	alice.sub("a/#", 1)
	alice.write((&packet.Disconnect{}).Append(nil, packet.V5))
	alice.expectClosed(waitT)
	waitClients(t, n, 1)
	pub.hdPubQ("a/q", 1, 2, "1")
	pub.hdPubQ("a/q", 1, 3, "2")
	hdIntruder(t, addr, packet.V5, false)
	hdIntruder(t, addr, packet.V311, false)
	hdIntruder(t, addr, packet.V5, true)
	hdIntruder(t, addr, packet.V311, true)
	alice = dialP(t, addr, packet.V5)
	if ack := alice.connect(hdLogin("owned", "alice", false, 3600)); !ack.SessionPresent {
		t.Fatal("alice's session is gone")
	}
	for _, want := range []string{"1", "2"} {
		m := alice.nextPublish()
		if m.Topic != "a/q" || string(m.Payload) != want || m.Dup {
			t.Fatalf("alice got %s, want a/q %s, first delivery", describe(m), want)
		}
		alice.ack(packet.PUBACK, m.PacketID)
	}
}

// Item 2, re-check: a resumed session passes the current ACL. After a
// reload that takes b/# and a/secret away from alice, her b/#
// subscription is removed and the queued a/secret and b/y are not
// delivered; a/x is.
func TestHardeningResumeRechecksACL(t *testing.T) {
	t.Parallel()
	n, addr, acl, pub := hdOwnerNode(t)
	alice := dialP(t, addr, packet.V5)
	alice.connect(hdLogin("owned", "alice", true, 3600))
	alice.sub("a/#", 1)
	alice.sub("b/#", 1)
	alice.write((&packet.Disconnect{}).Append(nil, packet.V5))
	alice.expectClosed(waitT)
	waitClients(t, n, 1)
	for i, tp := range []string{"a/x", "a/secret", "b/y"} {
		pub.hdPubQ(tp, 1, uint16(10+i), "queued")
	}
	if v, _, _ := n.Server.Session("owned"); v.Queued != 3 {
		t.Fatalf("%d messages queued for alice, want 3", v.Queued)
	}
	newACL := "user alice\ntopic readwrite a/#\ntopic deny a/secret\nuser pub\ntopic write a/#\ntopic write b/#\n"
	if err := os.WriteFile(acl+".new", []byte(newACL), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(acl+".new", acl); err != nil {
		t.Fatal(err)
	}
	n.Reload()
	alice = dialP(t, addr, packet.V5)
	if ack := alice.connect(hdLogin("owned", "alice", false, 3600)); !ack.SessionPresent {
		t.Fatal("alice's session is gone")
	}
	pub.hdPubQ("b/z", 1, 20, "after") // b/# is no longer alice's
	pub.hdPubQ("a/barrier", 1, 21, "end")
	if got := alice.hdUntil("a/barrier"); !slices.Equal(got, []string{"a/x:queued"}) {
		t.Errorf("alice received %v after the reload, want only a/x", got)
	}
	_, subs, _ := n.Server.Session("owned")
	var filters []string
	for _, s := range subs {
		filters = append(filters, s.Filter)
	}
	if !slices.Equal(filters, []string{"a/#"}) {
		t.Errorf("alice's subscriptions after the reload: %v, want [a/#]", filters)
	}
}

// Item 3. In the default configuration (no authentication, no ACL),
// topics beginning with '$' are never writable by clients: a retained
// $SYS/broker/version from a client is neither stored nor delivered (v5
// PUBACK 0x87), $foo/bar is refused the same way, a will on $SYS/... or
// $foo/... is refused at CONNECT (v5 0x87, 3.1.1 return code 5); the
// server itself still publishes $SYS.
func TestHardeningDollarTopicsNotWritable(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, yaml string }{
		{"default", ""},
		// Even an ACL granting them does not make them writable.
		{"acl grants", "auth:\n  allow_anonymous: true\n  acl:\n    - {topic: \"#\", access: readwrite}\n    - {topic: \"$SYS/#\", access: readwrite}\n    - {topic: \"$foo/#\", access: readwrite}\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			n, addr := startNode(t, "sys_interval: 200ms\n"+tc.yaml)
			version, ok := n.Server.RetainedMessage("$SYS/broker/version")
			if !ok || !strings.HasPrefix(string(version.Payload), "isobar version") {
				t.Fatalf("no $SYS/broker/version from the server: %v", version)
			}
			sub := dialP(t, addr, packet.V5)
			sub.connectID("dollar-sub")
			sa := sub.subscribe(1, packet.Properties{}, packet.Subscription{Filter: "$SYS/broker/version"},
				packet.Subscription{Filter: "$SYS/broker/uptime"}, packet.Subscription{Filter: "$foo/#"},
				packet.Subscription{Filter: "dollar/barrier"})
			if !slices.Equal(sa.ReasonCodes, []byte{0, 0, 0, 0}) {
				t.Fatalf("SUBACK %x", sa.ReasonCodes)
			}

			// QoS 0 first: the acknowledgements of the QoS 1/2 ones that
			// follow show the read loop handled it.
			c5 := dialP(t, addr, packet.V5)
			c5.connectID("dollar-pub5")
			c5.publish(packet.Publish{Topic: "$foo/bar", Retain: true, Payload: []byte("fake")})
			for i, tp := range []string{"$SYS/broker/version", "$foo/bar", "$SYS"} {
				c5.publish(packet.Publish{Topic: tp, QoS: 1, Retain: true, PacketID: uint16(i + 1), Payload: []byte("fake")})
				if a := c5.expectAck(packet.PUBACK, uint16(i+1)); a.ReasonCode != packet.NotAuthorized {
					t.Errorf("v5 PUBLISH to %s: PUBACK 0x%02X, want 0x87", tp, a.ReasonCode)
				}
			}
			c5.publish(packet.Publish{Topic: "$SYS/broker/version", QoS: 2, Retain: true, PacketID: 9, Payload: []byte("fake")})
			if a := c5.expectAck(packet.PUBREC, 9); a.ReasonCode != packet.NotAuthorized {
				t.Errorf("v5 QoS 2 PUBLISH to $SYS: PUBREC 0x%02X, want 0x87", a.ReasonCode)
			}
			c3 := dialP(t, addr, packet.V311)
			c3.connectID("dollar-pub3")
			c3.publish(packet.Publish{Topic: "$foo/bar", Retain: true, Payload: []byte("fake")})
			c3.publish(packet.Publish{Topic: "$SYS/broker/version", QoS: 1, Retain: true, PacketID: 1, Payload: []byte("fake")})
			c3.expectAck(packet.PUBACK, 1)
			c3.publish(packet.Publish{Topic: "dollar/barrier", QoS: 1, PacketID: 2})
			c3.expectAck(packet.PUBACK, 2)

			// Nothing from the clients arrived before the barrier (only the
			// server's retained values at subscription and its updates);
			// the server's uptime still arrives after it.
			for i := 0; ; i++ {
				m := sub.nextPublish()
				if m.Topic == "dollar/barrier" {
					break
				}
				if string(m.Payload) == "fake" || !strings.HasPrefix(m.Topic, "$SYS/broker/") {
					t.Errorf("subscriber got %s", describe(m))
				}
				if i > 100 {
					t.Fatal("no barrier")
				}
			}
			for i := 0; ; i++ {
				m := sub.nextPublish()
				if m.Topic == "$SYS/broker/uptime" {
					break
				}
				if i > 100 {
					t.Fatalf("subscriber got %s, no uptime from the server", describe(m))
				}
			}
			if m, _ := n.Server.RetainedMessage("$SYS/broker/version"); string(m.Payload) != string(version.Payload) {
				t.Errorf("retained $SYS/broker/version is now %q", m.Payload)
			}
			if got := n.Server.RetainedMessages("$foo/#", 0); len(got) != 0 {
				t.Errorf("retained under $foo/#: %d", len(got))
			}

			for _, v := range []byte{packet.V5, packet.V311} {
				for _, wt := range []string{"$SYS/broker/x", "$foo/will"} {
					w := dialP(t, addr, v)
					ack := w.connectAck(packet.Connect{ClientID: "dollar-will", CleanStart: true, KeepAlive: 60,
						WillFlag: true, WillTopic: wt, WillPayload: []byte("fake")})
					want := map[byte]byte{packet.V5: packet.NotAuthorized, packet.V311: packet.ConnRefusedNotAuthorized}[v]
					if ack.ReasonCode != want {
						t.Errorf("v%d will on %s: CONNACK 0x%02X, want 0x%02X", v, wt, ack.ReasonCode, want)
						continue
					}
					w.hdExpectClosedQuietly()
				}
			}
		})
	}
}

// Item 8. The role is stored with the session: a session of the
// read-only role restored from the Pebble store after a restart is still
// governed by the role, not by the ACL of its user name (which grants the
// user "everyone" nothing here). A message on a role topic published while
// it is offline is queued for it; its restored identity may not publish;
// and the reconnected client cannot publish either.
func TestHardeningReadOnlyRoleSurvivesRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	pw := hdPasswordFile(t, dir, "pub")
	cfg := fmt.Sprintf(`listeners:
  - {name: mqtt, protocol: mqtt, address: "127.0.0.1:0"}
store: {mode: pebble, data_dir: %q, sync: always}
auth:
  allow_anonymous: false
  password_file: %q
  throttle: {disabled: true}
  read_only:
    users: [{user: everyone, password: everyone}]
    topics: ["open/#"]
  acl:
    - {user: pub, topic: "#", access: write}
`, filepath.Join(dir, "data"), pw)
	ro := packet.Connect{ClientID: "ro-sess", KeepAlive: 60, UsernameFlag: true, Username: "everyone", PasswordFlag: true, Password: []byte("everyone")}
	ro.Props.SessionExpiryInterval = 3600
	ro.Props.Set(packet.PropSessionExpiryInterval)

	first := testutil.RunNode(t, cfg)
	c := dialP(t, testutil.Addr(t, first, ""), packet.V5)
	ro.CleanStart = true
	c.connect(ro)
	c.sub("open/#", 1)
	if a := c.hdPubQ("open/x", 1, 1, "no"); a.ReasonCode != packet.NotAuthorized {
		t.Fatalf("read-only PUBLISH: PUBACK 0x%02X, want 0x87", a.ReasonCode)
	}
	c.write((&packet.Disconnect{}).Append(nil, packet.V5))
	c.expectClosed(waitT)
	if err := first.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}

	second := testutil.RunNode(t, cfg)
	addr := testutil.Addr(t, second, "")
	p := dialP(t, addr, packet.V5)
	p.connect(hdLogin("ro-pub", "pub", true, 0))
	p.hdPubQ("open/news", 1, 1, "for the role")
	if v, _, ok := second.Server.Session("ro-sess"); !ok || v.Queued != 1 {
		t.Fatalf("restored read-only session: present %v, %d queued; want the message on open/news queued", ok, v.Queued)
	}
	ls, ok := second.Server.ExportSession("ro-sess")
	if !ok {
		t.Fatal("no session to export")
	}
	owner := broker.ClientInfo{ClientID: ls.Session.ClientID, Username: ls.Session.Username, Role: ls.Session.Role}
	if second.Auth.CanPublish(owner, "open/x") || !second.Auth.CanReceive(owner, "open/x") {
		t.Fatalf("restored identity %+v: may publish %v, may receive %v; want read-only", owner,
			second.Auth.CanPublish(owner, "open/x"), second.Auth.CanReceive(owner, "open/x"))
	}

	c = dialP(t, addr, packet.V5)
	ro.CleanStart = false
	if ack := c.connect(ro); !ack.SessionPresent {
		t.Fatal("session not restored")
	}
	m := c.nextPublish()
	if m.Topic != "open/news" {
		t.Fatalf("got %s, want open/news", describe(m))
	}
	c.ack(packet.PUBACK, m.PacketID)
	if a := c.hdPubQ("open/x", 1, 2, "no"); a.ReasonCode != packet.NotAuthorized {
		t.Fatalf("restored read-only PUBLISH: PUBACK 0x%02X, want 0x87", a.ReasonCode)
	}
}
