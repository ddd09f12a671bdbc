package broker_test

// Regression test for a message lost when a shared subscription's member
// reconnects while a message it left unacknowledged is being re-dispatched.

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/isobar-mq/isobar/internal/broker"
	"github.com/isobar-mq/isobar/internal/mqtt/packet"
)

// hdGateAuth lets everyone connect and do anything, except that alice
// may not read r/secret; once armed, the next time the broker asks about
// that it waits until the test releases it (to hold the broker at that
// exact point).
type hdGateAuth struct {
	armed   atomic.Bool
	entered chan struct{}
	release chan struct{}
}

func (*hdGateAuth) Authenticate(broker.AuthRequest) broker.AuthResponse {
	return broker.AuthResponse{Result: broker.AuthOK}
}
func (*hdGateAuth) CanPublish(broker.ClientInfo, string) bool   { return true }
func (*hdGateAuth) CanSubscribe(broker.ClientInfo, string) bool { return true }
func (a *hdGateAuth) CanReceive(c broker.ClientInfo, t string) bool {
	if c.Username != "alice" || t != "r/secret" {
		return true
	}
	if a.armed.CompareAndSwap(true, false) {
		a.entered <- struct{}{}
		<-a.release
	}
	return false
}

// Item 1, re-dispatch race: carol (persistent session) leaves with a
// shared message unacknowledged and no other member may have it, so it
// goes back to her session; if she reconnected in the meantime (the
// re-dispatch runs after her session is released, while the other
// members are asked), it is delivered on her new connection, not lost.
func TestHardeningSharedRedispatchToReconnected(t *testing.T) {
	t.Parallel()
	a := &hdGateAuth{entered: make(chan struct{}), release: make(chan struct{})}
	_, addr := hdServer(t, broker.Options{}, a)
	carol := dialP(t, addr, packet.V5)
	carol.connect(hdLogin("race-carol", "carol", true, 300))
	carol.sub("$share/g/r/#", 1)
	alice := dialP(t, addr, packet.V5)
	alice.connect(hdLogin("race-alice", "alice", true, 0))
	alice.sub("$share/g/r/#", 1)
	pub := dialP(t, addr, packet.V5)
	pub.connectID("race-pub")
	pub.hdPubQ("r/secret", 1, 1, "keep me")
	if m := carol.nextPublish(); m.Topic != "r/secret" {
		t.Fatalf("carol got %s", describe(m))
	}

	a.armed.Store(true)
	_ = carol.c.Close()
	select {
	case <-a.entered: // the broker is re-dispatching, asking about alice
	case <-time.After(waitT):
		t.Fatal("no re-dispatch")
	}
	carol = dialP(t, addr, packet.V5)
	ack := carol.connect(hdLogin("race-carol", "carol", false, 300))
	close(a.release)
	if !ack.SessionPresent {
		t.Fatal("carol's session not present")
	}
	m := carol.nextPublish()
	if m.Topic != "r/secret" || string(m.Payload) != "keep me" {
		t.Fatalf("carol got %s, want the re-dispatched r/secret", describe(m))
	}
	carol.ack(packet.PUBACK, m.PacketID)
}
