package broker

// Tests of session export and import (sessionio.go) between two servers,
// each with its own Pebble store.

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/isobar-mq/isobar/internal/mqtt/packet"
	"github.com/isobar-mq/isobar/internal/store"
)

// seamStoredServer is a server with a Pebble store in a temporary
// directory, restored and listening on loopback.
func seamStoredServer(t *testing.T) (*Server, *store.PebbleStore, string) {
	t.Helper()
	st := seamPebble(t, t.TempDir())
	s := seamNewServer(t, Options{Store: st}, nil)
	if err := s.Restore(); err != nil {
		t.Fatal(err)
	}
	return s, st, seamListen(t, s)
}

func seamPersistent(id string, clean bool, receiveMax uint16) packet.Connect {
	cp := packet.Connect{ClientID: id, CleanStart: clean}
	cp.Props.SessionExpiryInterval = 3600
	cp.Props.Set(packet.PropSessionExpiryInterval)
	cp.Props.ReceiveMaximum = receiveMax
	cp.Props.Set(packet.PropReceiveMaximum)
	return cp
}

// seamStored returns what st holds for clientID.
func seamStored(t *testing.T, st *store.PebbleStore, clientID string) *store.LoadedSession {
	t.Helper()
	var out *store.LoadedSession
	err := st.LoadSessions(func(ls *store.LoadedSession) error {
		if ls.Session.ClientID == clientID {
			c := *ls
			out = &c
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// A persistent session with subscriptions, queued and in-flight QoS 1/2
// messages (one released) and an inbound QoS 2 identifier moves from one
// server to another through EncodeSession/DecodeSession: the client
// resuming on the second server finds its session, gets PUBREL for the
// released message and every message with its packet identifier (DUP for
// those in flight), a duplicate of its inbound QoS 2 message is not routed
// again, and nothing arrives twice.
func TestSeamSessionExportImport(t *testing.T) {
	a, _, addrA := seamStoredServer(t)
	b, stB, addrB := seamStoredServer(t)

	sub := seamDial(t, addrA, packet.V5)
	sub.connect(seamPersistent("s", true, 3))
	if sa := sub.subscribe(1, 5, packet.Subscription{Filter: "x/#", QoS: 2}); sa.ReasonCodes[0] != 2 {
		t.Fatalf("SUBACK %v", sa.ReasonCodes)
	}
	sub.sub("y", 1)
	pub := seamV5(t, addrA, "pub")

	seamPub2(pub, "x/1", "m1", 1)
	m1 := sub.nextPublish()
	sub.ack(packet.PUBREC, m1.PacketID)
	sub.expectAck(packet.PUBREL, m1.PacketID) // released; PUBCOMP never sent
	pub.publish(packet.Publish{Topic: "y", QoS: 1, PacketID: 2, Payload: []byte("m2")})
	pub.expectAck(packet.PUBACK, 2)
	m2 := sub.nextPublish() // never acknowledged
	seamPub2(pub, "x/3", "m3", 3)
	m3 := sub.nextPublish()                  // never acknowledged
	for i, p := range []string{"m4", "m5"} { // beyond the window: queued
		id := uint16(4 + i)
		pub.publish(packet.Publish{Topic: "y", QoS: 1, PacketID: id, Payload: []byte(p)})
		pub.expectAck(packet.PUBACK, id)
	}
	sub.publish(packet.Publish{Topic: "z/in", QoS: 2, PacketID: 77, Payload: []byte("inbound")})
	sub.expectAck(packet.PUBREC, 77) // PUBREL never sent
	sub.expectNothing(seamQuiet)
	if got := fmt.Sprint(m1.PacketID, m2.PacketID, m3.PacketID); got != "1 2 3" {
		t.Fatalf("packet ids %s", got)
	}
	_ = sub.c.Close()
	seamWaitClients(t, a, 1)

	ls, ok := a.ExportSession("s")
	if !ok {
		t.Fatal("no session to export")
	}
	var states []string
	for _, m := range ls.Messages {
		states = append(states, fmt.Sprintf("%d:%s:%d", m.Msg.PacketID, m.Msg.Payload, m.Msg.State))
	}
	if want := []string{"1:m1:2", "2:m2:1", "3:m3:1", "4:m4:0", "5:m5:0"}; !slices.Equal(states, want) {
		t.Fatalf("exported messages %v, want %v", states, want)
	}
	if len(ls.Subscriptions) != 2 || !slices.Equal(ls.Inbound, []uint16{77}) || ls.Session.ExpiryInterval != 3600 || ls.Session.DisconnectedAt == 0 {
		t.Fatalf("exported %+v", ls)
	}
	wire := store.EncodeSession(ls)
	ls2, err := store.DecodeSession(wire)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(store.EncodeSession(ls2), wire) {
		t.Fatal("the decoded snapshot encodes differently")
	}
	if err := a.ImportSession(ls2); !errors.Is(err, ErrSessionExists) {
		t.Fatalf("import over an existing session: %v", err)
	}
	if err := b.ImportSession(ls2); err != nil {
		t.Fatal(err)
	}
	if err := b.ImportSession(ls2); !errors.Is(err, ErrSessionExists) {
		t.Fatalf("second import: %v", err)
	}
	if stored := seamStored(t, stB, "s"); stored == nil || len(stored.Messages) != 5 || len(stored.Subscriptions) != 2 || !slices.Equal(stored.Inbound, []uint16{77}) {
		t.Fatalf("second server's store holds %+v", stored)
	}

	// The imported subscriptions route on the second server: m6 is queued
	// with the next free identifier.
	pubB := seamV5(t, addrB, "pubB")
	pubB.publish(packet.Publish{Topic: "y", QoS: 1, PacketID: 1, Payload: []byte("m6")})
	if a := pubB.expectAck(packet.PUBACK, 1); a.ReasonCode != 0 {
		t.Fatalf("PUBACK 0x%02X: the imported subscriptions do not route", a.ReasonCode)
	}
	watch := seamV5(t, addrB, "watch")
	watch.sub("z/#", 2)

	sub = seamDial(t, addrB, packet.V5)
	if ack := sub.connect(seamPersistent("s", false, 3)); !ack.SessionPresent {
		t.Fatal("session not present on the second server")
	}
	expectPub := func(id uint16, payload string, qos byte, dup bool) *packet.Publish {
		t.Helper()
		p := sub.nextPublish()
		if p.PacketID != id || string(p.Payload) != payload || p.QoS != qos || (dup && !p.Dup) {
			t.Fatalf("got %s, want id %d %q QoS %d dup %v", seamDescribe(p), id, payload, qos, dup)
		}
		return p
	}
	sub.expectAck(packet.PUBREL, 1)
	expectPub(2, "m2", 1, true)
	if p := expectPub(3, "m3", 2, true); !slices.Equal(p.Props.SubscriptionIdentifiers, []uint32{5}) {
		t.Fatalf("m3 lost its subscription identifier: %v", p.Props.SubscriptionIdentifiers)
	}
	sub.expectNothing(seamQuiet) // the window (3) is full
	sub.ack(packet.PUBCOMP, 1)
	expectPub(4, "m4", 1, false)
	sub.ack(packet.PUBACK, 2)
	expectPub(5, "m5", 1, false)
	sub.ack(packet.PUBREC, 3)
	sub.expectAck(packet.PUBREL, 3)
	sub.ack(packet.PUBCOMP, 3)
	if p := expectPub(6, "m6", 1, false); p.Dup {
		t.Fatal("m6, never sent before, has DUP")
	}
	for _, id := range []uint16{4, 5, 6} {
		sub.ack(packet.PUBACK, id)
	}
	// The inbound QoS 2 message resent before PUBREL is a duplicate.
	sub.publish(packet.Publish{Topic: "z/in", QoS: 2, PacketID: 77, Dup: true, Payload: []byte("inbound")})
	sub.expectAck(packet.PUBREC, 77)
	sub.ack(packet.PUBREL, 77)
	sub.expectAck(packet.PUBCOMP, 77)
	sub.expectNothing(seamQuiet)
	watch.expectNothing(seamQuiet)

	sub.ping()
	if q := b.QueuedBytes(); q != 0 {
		t.Fatalf("second server holds %d bytes after everything was acknowledged", q)
	}
	stored := seamStored(t, stB, "s")
	if stored == nil || len(stored.Messages) != 0 || len(stored.Inbound) != 0 {
		t.Fatalf("second server's store still holds %+v", stored)
	}
}

// A snapshot of a session that was online (DisconnectedAt 0) is imported as
// offline since now, and the will of that connection is published; a
// snapshot whose session has expired is not installed, and its will is
// published.
func TestSeamImportSessionWillsAndExpiry(t *testing.T) {
	a, _, addrA := seamStoredServer(t)
	b, _, addrB := seamStoredServer(t)
	watch := seamV5(t, addrB, "watch")
	watch.sub("will/#", 0)

	c := seamDial(t, addrA, packet.V5)
	cp := seamPersistent("w", true, 10)
	cp.WillFlag, cp.WillTopic, cp.WillPayload = true, "will/w", []byte("w gone")
	c.connect(cp)
	ls, ok := a.ExportSession("w")
	if !ok || ls.Session.DisconnectedAt != 0 || ls.Session.Will == nil {
		t.Fatalf("export of an online session: %v %+v", ok, ls)
	}
	if err := b.ImportSession(ls); err != nil {
		t.Fatal(err)
	}
	if m := watch.nextPublish(); m.Topic != "will/w" || string(m.Payload) != "w gone" {
		t.Fatalf("watcher got %s", seamDescribe(m))
	}
	if b.SessionCount() != 2 {
		t.Fatalf("%d sessions", b.SessionCount())
	}

	old := &store.LoadedSession{Session: store.SessionRecord{
		ClientID: "old", ExpiryInterval: 1, DisconnectedAt: time.Now().Add(-time.Minute).UnixNano(),
		Will: &store.MessageRecord{Topic: "will/old", Payload: []byte("old gone")},
	}}
	if err := b.ImportSession(old); err != nil {
		t.Fatal(err)
	}
	if m := watch.nextPublish(); m.Topic != "will/old" {
		t.Fatalf("watcher got %s", seamDescribe(m))
	}
	if _, ok := b.ExportSession("old"); ok {
		t.Fatal("an expired session was installed")
	}
	if _, ok := b.ExportSession("nobody"); ok {
		t.Fatal("exported a session that does not exist")
	}
}

// Concurrent imports of one client identifier: exactly one wins, the
// others get ErrSessionExists, and the losers leave nothing behind (no
// subscriptions, no queued bytes).
func TestSeamImportSessionConcurrent(t *testing.T) {
	s := seamNewServer(t, Options{}, nil)
	for round := range 50 {
		id := fmt.Sprint("c", round)
		snap := &store.LoadedSession{
			Session:       store.SessionRecord{ClientID: id, ExpiryInterval: 3600, DisconnectedAt: time.Now().UnixNano()},
			Subscriptions: []store.SubscriptionRecord{{Filter: "t/" + id, QoS: 1}},
			Messages: []store.SeqMessage{{Seq: 1, Msg: store.MessageRecord{
				Topic: "t/" + id, Payload: make([]byte, 100), QoS: 1, DeliverQoS: 1, PacketID: 1, State: store.StateQueued,
			}}},
		}
		wire := store.EncodeSession(snap)
		const n = 8
		var wg sync.WaitGroup
		errs := make([]error, n)
		start := make(chan struct{})
		for i := range n {
			ls, err := store.DecodeSession(wire)
			if err != nil {
				t.Fatal(err)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				errs[i] = s.ImportSession(ls)
			}()
		}
		close(start)
		wg.Wait()
		won := 0
		for _, err := range errs {
			switch {
			case err == nil:
				won++
			case !errors.Is(err, ErrSessionExists):
				t.Fatalf("import: %v", err)
			}
		}
		if won != 1 {
			t.Fatalf("round %d: %d imports won", round, won)
		}
	}
	if n := s.SubscriptionCount(); n != 50 {
		t.Fatalf("%d subscriptions, want 50", n)
	}
	var want int64
	s.mu.Lock()
	for _, sess := range s.sessions {
		sess.mu.Lock()
		want += sess.reserved
		sess.mu.Unlock()
	}
	s.mu.Unlock()
	if got := s.queuedBytes.Load(); got != want {
		t.Fatalf("queuedBytes %d, but the sessions reserved %d: a losing import leaked", got, want)
	}
}
