package broker

// Tests of shared-subscription dispatch (router.go pickShared and
// dispatchShared, session.takeSharedLocked).

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/isobar-mq/isobar/internal/mqtt/packet"
	"github.com/isobar-mq/isobar/internal/topic"
)

// seamStub is a minimal Subscriber that records what it is given.
type seamStub struct {
	name    string
	offline bool
	deny    bool
	mu      sync.Mutex
	got     []Delivery
}

func (s *seamStub) SubscriberID() string   { return s.name }
func (s *seamStub) MayReceive(string) bool { return !s.deny }
func (s *seamStub) Online() bool           { return !s.offline }
func (s *seamStub) Deliver(d Delivery, _ *Txn, _ int64) {
	s.mu.Lock()
	s.got = append(s.got, d)
	s.mu.Unlock()
}

func (s *seamStub) deliveries() []Delivery {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Delivery(nil), s.got...)
}

func seamMembers(subs ...*seamStub) []topic.Entry[Subscriber] {
	out := make([]topic.Entry[Subscriber], len(subs))
	for i, s := range subs {
		out[i] = topic.Entry[Subscriber]{Key: s, Filter: "t"}
	}
	return out
}

func seamPicked(e *topic.Entry[Subscriber]) string {
	if e == nil {
		return "none"
	}
	return e.Key.(*seamStub).name
}

// pickShared: round robin from next, online members preferred, members
// refused by MayReceive skipped, the excluded member never chosen, an
// offline member only when no online one may have the message.
func TestSeamPickShared(t *testing.T) {
	a, b, c := &seamStub{name: "a"}, &seamStub{name: "b"}, &seamStub{name: "c"}
	m := seamMembers(a, b, c)
	var rr []string
	for next := range uint64(6) {
		rr = append(rr, seamPicked(pickShared(m, next, nil, "t", false)))
	}
	if got := strings.Join(rr, ","); got != "a,b,c,a,b,c" {
		t.Fatalf("round robin %s", got)
	}
	if got := seamPicked(pickShared(m, 1, b, "t", false)); got != "c" {
		t.Fatalf("excluding b: %s", got)
	}
	if got := seamPicked(pickShared(nil, 0, nil, "t", false)); got != "none" {
		t.Fatalf("no members: %s", got)
	}

	b.offline = true
	if got := seamPicked(pickShared(m, 1, nil, "t", false)); got != "c" {
		t.Fatalf("b offline, next b: %s, want c (online preferred)", got)
	}
	a.offline, c.offline = true, true
	if got := seamPicked(pickShared(m, 1, nil, "t", false)); got != "b" {
		t.Fatalf("all offline, next b: %s, want b", got)
	}
	a.offline, b.offline, c.offline = false, false, false

	a.deny = true
	if got := seamPicked(pickShared(m, 0, nil, "t", false)); got != "b" {
		t.Fatalf("a not allowed: %s", got)
	}
	b.deny, c.deny = true, true
	if got := seamPicked(pickShared(m, 0, nil, "t", false)); got != "none" {
		t.Fatalf("nobody allowed: %s", got)
	}

	// a offline and refused, b offline and allowed, c online but refused:
	// b, the only one allowed, although offline.
	a.offline, a.deny = true, true
	b.offline, b.deny = true, false
	c.offline, c.deny = false, true
	if got := seamPicked(pickShared(m, 0, nil, "t", false)); got != "b" {
		t.Fatalf("only an offline member allowed: %s", got)
	}
}

// Routing: one delivery per matching group per message, round robin over
// its members, next to each plain subscription; the Delivery names its
// group; a group where nobody may receive the message drops it (counted).
func TestSeamSharedRouting(t *testing.T) {
	s := seamNewServer(t, Options{}, nil)
	a, b, c := &seamStub{name: "a"}, &seamStub{name: "b"}, &seamStub{name: "c"}
	h := &seamStub{name: "h"}
	denied := &seamStub{name: "denied", deny: true}
	for _, m := range []*seamStub{a, b, c} {
		seamSubscribe(s, m, "$share/g/t/#", topic.Options{QoS: 1})
	}
	seamSubscribe(s, h, "$share/h/t/+", topic.Options{QoS: 0})
	seamSubscribe(s, a, "t/#", topic.Options{QoS: 2, ID: 4})
	seamSubscribe(s, denied, "$share/z/t/x", topic.Options{QoS: 1})

	p := s.NewPublisher(PublisherOptions{Trusted: true})
	var routed []int
	for i := range 6 {
		if err := p.Publish(&Message{Topic: "t/x", Payload: []byte(fmt.Sprint(i)), QoS: 2}, func(r PublishResult) { routed = append(routed, r.Routed) }); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(routed, []int{3, 3, 3, 3, 3, 3}) {
		t.Fatalf("routed %v, want 3 each (plain a, group g, group h)", routed)
	}
	count := func(st *seamStub, group string) (n int, payloads []string) {
		for _, d := range st.deliveries() {
			if d.Group == group {
				n++
				payloads = append(payloads, string(d.Msg.Payload))
			}
		}
		return n, payloads
	}
	var all []string
	for _, m := range []*seamStub{a, b, c} {
		n, pl := count(m, "g/t/#")
		if n != 2 {
			t.Fatalf("%s got %d of group g, want 2 (round robin)", m.name, n)
		}
		all = append(all, pl...)
	}
	sort.Strings(all)
	if strings.Join(all, "") != "012345" {
		t.Fatalf("group g deliveries %v: each message exactly once", all)
	}
	if n, _ := count(h, "h/t/+"); n != 6 {
		t.Fatalf("h got %d, want 6", n)
	}
	if n, _ := count(a, ""); n != 6 {
		t.Fatalf("a's plain subscription got %d, want 6", n)
	}
	for _, d := range h.deliveries() {
		if d.QoS != 0 {
			t.Fatalf("group h delivered at QoS %d, granted 0", d.QoS)
		}
	}
	for _, d := range a.deliveries() {
		if d.Group == "" && (d.QoS != 2 || !slices.Equal(d.SubIDs, []uint32{4})) {
			t.Fatalf("plain delivery %+v", d)
		}
	}
	if len(denied.deliveries()) != 0 {
		t.Fatal("a member refused by MayReceive got a message")
	}
	if n := s.stats.droppedNotAuthorized.Load(); n != 6 {
		t.Fatalf("droppedNotAuthorized %d, want 6", n)
	}
}

// seamShared subscribes a session to a shared filter.
func seamShared(s *Server, sess *session, filter string, qos byte) {
	sess.mu.Lock()
	opts := topic.Options{QoS: qos}
	sess.subs[filter] = subscription{filter: filter, opts: opts}
	s.index.Subscribe(sess, filter, opts)
	sess.mu.Unlock()
}

// seamGroupDeliver hands m to sess as a delivery of group g/x/#.
func seamGroupDeliver(s *Server, sess *session, payload string, qos byte) {
	m := seamMsg("x/1", payload, qos)
	sess.Deliver(Delivery{Msg: m, QoS: qos, Group: "g/x/#"}, s.newTxn(), time.Now().UnixNano())
}

// When a member disconnects, its shared messages move to another online
// member: the queued ones, and QoS 1 ones sent but unacknowledged
// [MQTT-4.8.2-3]; QoS 2 messages already sent stay, and complete with the
// member when it comes back [MQTT-4.8.2-4/5].
func TestSeamSharedRedispatchOnDisconnect(t *testing.T) {
	s := seamNewServer(t, Options{}, nil)
	a := seamAttach(t, s, "a", packet.V5, true, 60, 3, 0)
	b := seamAttach(t, s, "b", packet.V5, true, 60, 10, 0)
	seamShared(s, a.sess(), "$share/g/x/#", 2)
	seamShared(s, b.sess(), "$share/g/x/#", 2)

	seamGroupDeliver(s, a.sess(), "q1-flight", 1)
	seamGroupDeliver(s, a.sess(), "q2-flight", 2)
	seamGroupDeliver(s, a.sess(), "q2-released", 2)
	seamGroupDeliver(s, a.sess(), "q2-queued", 2)
	seamGroupDeliver(s, a.sess(), "q1-queued", 1)
	seamWantPubs(t, a.publishes(), "1:q1-flight 2:q2-flight 3:q2-released")
	a.ack(packet.PUBREC, 3, 0)
	_ = a.packets() // PUBREL 3

	a.detach()
	var moved []string
	for _, p := range b.publishes() {
		if p.Dup {
			t.Fatalf("redispatched message sent with DUP to another member: %s", seamDescribe(p))
		}
		moved = append(moved, string(p.Payload))
		b.ack(map[byte]packet.Type{1: packet.PUBACK, 2: packet.PUBREC}[p.QoS], p.PacketID, 0)
		if p.QoS == 2 {
			b.ack(packet.PUBCOMP, p.PacketID, 0)
		}
	}
	sort.Strings(moved)
	if got := strings.Join(moved, " "); got != "q1-flight q1-queued q2-queued" {
		t.Fatalf("moved to b: %s", got)
	}
	if n := s.stats.sharedRedispatched.Load(); n != 3 {
		t.Fatalf("sharedRedispatched %d, want 3", n)
	}
	_ = b.packets()
	seamCheckIdleSession(t, b.sess())

	a = seamAttach(t, s, "a", packet.V5, false, 60, 3, 0)
	got := a.packets()
	var desc []string
	for _, p := range got {
		desc = append(desc, seamDescribe(p))
	}
	want := []string{"PUBREL{id 3 reason 0x00}", `PUBLISH{topic "x/1" qos 2 retain false dup true id 2 payload "q2-flight" subids []}`}
	if !slices.Equal(desc, want) {
		t.Fatalf("a resumed with\n%s\nwant\n%s", strings.Join(desc, "\n"), strings.Join(want, "\n"))
	}
	a.ack(packet.PUBCOMP, 3, 0)
	a.ack(packet.PUBREC, 2, 0)
	a.ack(packet.PUBCOMP, 2, 0)
	seamCheckIdle(t, s, a.sess())
}

// seamCheckIdleSession is seamCheckIdle for one session only.
func seamCheckIdleSession(t testing.TB, sess *session) {
	t.Helper()
	sess.mu.Lock()
	defer sess.mu.Unlock()
	if sess.bytes != 0 || len(sess.queue) != 0 || len(sess.msgs) != 0 || sess.sent != 0 {
		t.Fatalf("session %s not idle: bytes %d queue %d msgs %d sent %d", sess.id, sess.bytes, len(sess.queue), len(sess.msgs), sess.sent)
	}
}

// When no other member may take them (the others are offline, or not
// allowed to receive the topic), the messages go back to the disconnected
// member's session and are delivered when it resumes; a clean session's
// are dropped with it.
func TestSeamSharedRedeliverWhenNoOtherMember(t *testing.T) {
	auth := &seamAuth{recv: func(c ClientInfo, t string) bool { return !(c.ClientID == "c" && t == "x/1") }}
	s := seamNewServer(t, Options{}, auth)
	a := seamAttach(t, s, "a", packet.V5, true, 60, 1, 0)
	b := seamAttach(t, s, "b", packet.V5, true, 60, 10, 0)
	c := seamAttach(t, s, "c", packet.V5, true, 60, 10, 0) // online, but may not receive x/1
	for _, sc := range []*seamClient{a, b, c} {
		seamShared(s, sc.sess(), "$share/g/x/#", 1)
	}
	b.detach() // offline member: not given redispatched messages

	seamGroupDeliver(s, a.sess(), "m1", 1)
	seamGroupDeliver(s, a.sess(), "m2", 1)
	seamWantPubs(t, a.publishes(), "1:m1")
	a.detach()
	if got := c.packets(); len(got) != 0 {
		t.Fatalf("a member not allowed to receive the topic got %v", got)
	}
	if n := s.stats.sharedRedispatched.Load(); n != 0 {
		t.Fatalf("sharedRedispatched %d", n)
	}

	a = seamAttach(t, s, "a", packet.V5, false, 60, 1, 0)
	pubs := a.publishes()
	if len(pubs) != 1 {
		t.Fatalf("resumed a got %s", seamPubs(pubs))
	}
	a.ack(packet.PUBACK, pubs[0].PacketID, 0)
	pubs = append(pubs, a.publishes()...)
	if len(pubs) != 2 {
		t.Fatalf("resumed a got %s", seamPubs(pubs))
	}
	a.ack(packet.PUBACK, pubs[1].PacketID, 0)
	var got []string
	for _, p := range pubs {
		got = append(got, string(p.Payload))
	}
	sort.Strings(got)
	if strings.Join(got, " ") != "m1 m2" {
		t.Fatalf("a got back %v", got)
	}
	seamCheckIdleSession(t, a.sess())

	// A clean session's shared messages are dropped when nobody can take
	// them, and their bytes released.
	d := seamAttach(t, s, "d", packet.V5, true, 0, 1, 0)
	seamShared(s, d.sess(), "$share/g/x/#", 1)
	a.detach()
	seamGroupDeliver(s, d.sess(), "m3", 1)
	seamGroupDeliver(s, d.sess(), "m4", 1)
	d.detach()
	// a (offline) got nothing: redispatch only goes to online members.
	sess := a.sess()
	sess.mu.Lock()
	n := len(sess.msgs)
	sess.mu.Unlock()
	if n != 0 {
		t.Fatalf("offline member got %d messages", n)
	}
	if q := s.QueuedBytes(); q != 0 {
		t.Fatalf("queuedBytes %d after the clean member left", q)
	}
}
