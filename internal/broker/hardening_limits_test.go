package broker_test

// Regression tests for the size limits of the broker-core hardening: a
// PUBLISH at the protocol maximum re-encoded for an MQTT 5 subscriber, the
// CONNECT cap before authentication, and the default limits (packet size,
// topic levels, filters per SUBSCRIBE, subscriptions per client).
//
// The tests measuring memory or sending hundreds of megabytes do not run
// in parallel: heap figures are then the scenario's own, and only one big
// buffer exists at a time.

import (
	"fmt"
	"net"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/isobar-mq/isobar/internal/broker"
	"github.com/isobar-mq/isobar/internal/mqtt/packet"
)

// Item 4, end to end: with max_packet_size at the protocol maximum, a
// 3.1.1 PUBLISH with the largest possible remaining length, delivered to
// an MQTT 5 subscriber whose subscription has an identifier (the 5.0
// re-encoding needs a few more bytes than the protocol allows), is dropped
// for that subscriber and counted in DroppedTooLarge; the server does not
// panic, the publisher stays connected and the subscriber gets what
// follows.
func TestHardeningHugeV3PublishToV5Subscriber(t *testing.T) {
	if testing.Short() {
		t.Skip("sends a 256 MiB PUBLISH")
	}
	srv, addr := hdServer(t, broker.Options{MaxPacketSize: packet.MaxRemainingLength + 5}, nil)
	sub := dialP(t, addr, packet.V5)
	sub.connectID("huge-sub")
	var props packet.Properties
	props.SubscriptionIdentifiers = []uint32{268435455}
	props.Set(packet.PropSubscriptionIdentifier)
	if sa := sub.subscribe(1, props, packet.Subscription{Filter: "big/#"}); sa.ReasonCodes[0] != 0 {
		t.Fatalf("SUBACK 0x%02X", sa.ReasonCodes[0])
	}
	pub := dialP(t, addr, packet.V311)
	pub.connectID("huge-pub")

	// 2 + len("big/x") + payload = MaxRemainingLength. The payload is never
	// written to by this process (zero pages); the server holds its copies.
	p := packet.Publish{Topic: "big/x", Payload: make([]byte, packet.MaxRemainingLength-7)}
	before := srv.Stats().Snapshot().DroppedTooLarge
	start := time.Now()
	_ = pub.c.SetWriteDeadline(time.Now().Add(2 * time.Minute))
	if _, err := pub.c.Write(p.AppendHeader(nil, packet.V311)); err != nil {
		t.Fatal(err)
	}
	if _, err := pub.c.Write(p.Payload); err != nil {
		t.Fatalf("writing the 256 MiB payload: %v", err)
	}
	p.Payload = nil
	pub.hdPubQ("big/small", 1, 1, "after")
	t.Logf("256 MiB PUBLISH handled in %v", time.Since(start).Round(time.Millisecond))
	if m := sub.nextPublish(); m.Topic != "big/small" {
		t.Fatalf("subscriber got %s, want big/small (the huge one dropped)", describe(m))
	}
	if d := srv.Stats().Snapshot().DroppedTooLarge - before; d != 1 {
		t.Fatalf("DroppedTooLarge grew by %d, want 1", d)
	}
}

// hdCountingAuth allows everything and counts Authenticate calls.
type hdCountingAuth struct{ n atomic.Int64 }

func (a *hdCountingAuth) Authenticate(broker.AuthRequest) broker.AuthResponse {
	a.n.Add(1)
	return broker.AuthResponse{Result: broker.AuthOK}
}
func (*hdCountingAuth) CanPublish(broker.ClientInfo, string) bool   { return true }
func (*hdCountingAuth) CanSubscribe(broker.ClientInfo, string) bool { return true }
func (*hdCountingAuth) CanReceive(broker.ClientInfo, string) bool   { return true }

// Item 10. The CONNECT packet, read before authentication, is capped
// (default 64 KiB): a socket announcing a 200 MiB CONNECT and streaming it
// is closed without the server reading more than the cap (its received
// byte count) or growing its heap by anything like 200 MiB, and without
// authentication being attempted; a CONNECT announcing just over the cap
// is closed too, and a 60 KiB CONNECT works (3.1.1 and 5.0).
func TestHardeningConnectCappedBeforeAuth(t *testing.T) {
	a := &hdCountingAuth{}
	srv, addr := hdServer(t, broker.Options{}, a)

	stream := func(announced int) (sent int64, closed bool) {
		t.Helper()
		conn, err := net.DialTimeout("tcp", addr, waitT)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = conn.Close() }()
		hdr := packet.EncodeVarint([]byte{0x10}, announced)
		total := int64(len(hdr) + announced)
		// A believable start: protocol name and level, then filler.
		hdr = append(hdr, 0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 60, 0xFF, 0xFF)
		chunk := make([]byte, 64<<10)
		deadline := time.Now().Add(20 * time.Second)
		_ = conn.SetWriteDeadline(deadline)
		n, err := conn.Write(hdr)
		sent = int64(n)
		for err == nil && sent < total && time.Now().Before(deadline) {
			n, err = conn.Write(chunk[:min(int64(len(chunk)), total-sent)])
			sent += int64(n)
		}
		return sent, err != nil || hdDrain(conn, waitT)
	}

	before, heap := srv.Stats().Snapshot().BytesReceived, hdAlloc()
	sent, closed := stream(200 << 20)
	got, grew := srv.Stats().Snapshot().BytesReceived-before, hdAlloc()-heap
	t.Logf("200 MiB CONNECT: client wrote %d bytes before the connection ended, server read %d, heap allocations %d KiB", sent, got, grew>>10)
	if !closed || sent >= 200<<20 {
		t.Errorf("the connection took the whole 200 MiB (%d bytes written, closed %v)", sent, closed)
	}
	if got > 64<<10 {
		t.Errorf("the server read %d bytes of a CONNECT, more than the 64 KiB cap", got)
	}
	if grew > 16<<20 {
		t.Errorf("the server allocated %d MiB for a refused CONNECT", grew>>20)
	}

	before = srv.Stats().Snapshot().BytesReceived
	if _, closed := stream(64<<10 + 1); !closed {
		t.Error("a CONNECT announcing 64 KiB + 1 byte was not refused")
	}
	if got := srv.Stats().Snapshot().BytesReceived - before; got > 64<<10 {
		t.Errorf("the server read %d bytes of a CONNECT over the cap", got)
	}
	if n := a.n.Load(); n != 0 {
		t.Fatalf("Authenticate called %d times for CONNECTs over the cap", n)
	}

	for _, v := range []byte{packet.V311, packet.V5} {
		c := dialP(t, addr, v)
		cp := packet.Connect{ClientID: fmt.Sprint("big-connect-", v), CleanStart: true, KeepAlive: 60,
			WillFlag: true, WillTopic: "w", WillPayload: make([]byte, 60<<10)}
		if ack := c.connectAck(cp); ack.ReasonCode != 0 {
			t.Fatalf("v%d 60 KiB CONNECT: CONNACK 0x%02X", v, ack.ReasonCode)
		}
	}
}

// hdLevels returns a topic of n levels "first/a/.../a".
func hdLevels(first string, n int) string {
	return first + strings.Repeat("/a", n-1)
}

// hdFilters returns n distinct filters prefix/0 ... prefix/n-1.
func hdFilters(prefix string, n int) []packet.Subscription {
	out := make([]packet.Subscription, n)
	for i := range out {
		out[i] = packet.Subscription{Filter: fmt.Sprintf("%s/%d", prefix, i)}
	}
	return out
}

// Item 11. The default limits, of the broker (broker.Options zero value)
// and of the node configuration: Maximum Packet Size 1 MiB advertised in
// the 5.0 CONNACK and enforced (DISCONNECT 0x95); topics of 129 levels
// refused (5.0: DISCONNECT 0x90 on PUBLISH, SUBACK 0x8F; 3.1.1: closed,
// SUBACK 0x80), 128 accepted; a SUBSCRIBE's 101st filter refused with
// 0x97; 10,000 subscriptions per client, the next one refused with 0x97.
func TestHardeningDefaultLimits(t *testing.T) {
	t.Parallel()
	_, nodeAddr := startNode(t, "")
	_, brokerAddr := hdServer(t, broker.Options{}, nil)
	for _, tc := range []struct{ name, addr string }{{"broker", brokerAddr}, {"node", nodeAddr}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			addr := tc.addr
			c := dialP(t, addr, packet.V5)
			ack := c.connectID("lim-" + tc.name)
			if !ack.Props.Has(packet.PropMaximumPacketSize) || ack.Props.MaximumPacketSize != 1<<20 {
				t.Errorf("CONNACK Maximum Packet Size %v %d, want 1 MiB", ack.Props.Has(packet.PropMaximumPacketSize), ack.Props.MaximumPacketSize)
			}
			// Exactly 1 MiB is accepted.
			p := packet.Publish{Topic: "lim/x", QoS: 1, PacketID: 1, Payload: make([]byte, 1<<20)}
			p.Payload = p.Payload[:1<<20-(p.Len(packet.V5)-1<<20)]
			if n := p.Len(packet.V5); n != 1<<20 {
				t.Fatalf("test packet is %d bytes", n)
			}
			c.publish(p)
			c.expectAck(packet.PUBACK, 1)

			// Filters per SUBSCRIBE: the 101st is refused.
			sa := c.subscribe(4, packet.Properties{}, hdFilters("per", 101)...)
			want := make([]byte, 101)
			want[100] = packet.QuotaExceeded
			if !slices.Equal(sa.ReasonCodes, want) {
				t.Errorf("SUBACK for 101 filters: %x, want 100 x 00 then 97", sa.ReasonCodes)
			}

			// Subscriptions per client: 100 (above) + 99 x 100 = 10,000.
			for i := 0; i < 99; i++ {
				sa = c.subscribe(uint16(10+i), packet.Properties{}, hdFilters(fmt.Sprint("cap/", i), 100)...)
				if slices.ContainsFunc(sa.ReasonCodes, func(b byte) bool { return b >= 0x80 }) {
					t.Fatalf("subscription %d refused: %x", 100+100*i, sa.ReasonCodes)
				}
			}
			sa = c.subscribe(200, packet.Properties{}, packet.Subscription{Filter: "cap/one-more"}, packet.Subscription{Filter: "per/7", QoS: 1})
			if !slices.Equal(sa.ReasonCodes, []byte{packet.QuotaExceeded, 1}) {
				t.Errorf("SUBACK for the 10,001st subscription and a replaced one: %x, want 97 01", sa.ReasonCodes)
			}

			// Topic levels.
			c2 := dialP(t, addr, packet.V5)
			c2.connectID("lim-levels-" + tc.name)
			c2.publish(packet.Publish{Topic: hdLevels("lim", 128), QoS: 1, PacketID: 2})
			c2.expectAck(packet.PUBACK, 2)
			sa = c2.subscribe(3, packet.Properties{}, packet.Subscription{Filter: hdLevels("lim", 128)}, packet.Subscription{Filter: hdLevels("lim", 129)},
				packet.Subscription{Filter: hdLevels("+", 128) + "/#"})
			if !slices.Equal(sa.ReasonCodes, []byte{0, packet.TopicFilterInvalid, packet.TopicFilterInvalid}) {
				t.Errorf("SUBACK for 128, 129 and 129 levels: %x, want 00 8f 8f", sa.ReasonCodes)
			}
			v3 := dialP(t, addr, packet.V311)
			v3.connectID("lim3-" + tc.name)
			sa = v3.subscribe(1, packet.Properties{}, packet.Subscription{Filter: hdLevels("lim", 129)})
			if sa.ReasonCodes[0] != packet.V3SubackFailure {
				t.Errorf("3.1.1 SUBACK for 129 levels: 0x%02X, want 0x80", sa.ReasonCodes[0])
			}

			// The checks that end connections come last. Over 1 MiB:
			// DISCONNECT 0x95, as soon as the header is read.
			big := packet.Publish{Topic: "lim/x", Payload: make([]byte, 1<<20)}
			c.write(big.AppendHeader(nil, packet.V5))
			c.expectDisconnect(packet.PacketTooLarge)
			c2.publish(packet.Publish{Topic: hdLevels("lim", 129), QoS: 1, PacketID: 4})
			c2.expectDisconnect(packet.TopicNameInvalid)
			v3.publish(packet.Publish{Topic: hdLevels("lim", 129), QoS: 1, PacketID: 2})
			v3.hdExpectClosedQuietly()
		})
	}
}

// Item 11, memory: one 640 KB SUBSCRIBE of ten 32,001-level filters (each
// level would become a node of the subscription index) is refused for the
// levels and costs a few megabytes of heap at most, not the ~90 MiB it
// cost when such filters were accepted.
func TestHardeningDeepFiltersCheap(t *testing.T) {
	_, addr := hdServer(t, broker.Options{}, nil)
	c := dialP(t, addr, packet.V5)
	c.connectID("deep")
	subs := make([]packet.Subscription, 10)
	for i := range subs {
		subs[i] = packet.Subscription{Filter: hdLevels(fmt.Sprint("f", i), 32001)}
	}
	sp := packet.Subscribe{PacketID: 1, Subs: subs}
	raw := sp.Append(nil, packet.V5)
	t.Logf("SUBSCRIBE of %d bytes", len(raw))
	heap := hdAlloc()
	c.write(raw)
	pkt := c.next()
	grew := hdAlloc() - heap
	sa, ok := pkt.(*packet.Suback)
	if !ok {
		t.Fatalf("got %s, want SUBACK", describe(pkt))
	}
	t.Logf("heap allocations for the SUBSCRIBE: %d KiB", grew>>10)
	for i, code := range sa.ReasonCodes {
		if code != packet.TopicFilterInvalid {
			t.Errorf("filter %d of 32,001 levels: 0x%02X, want 0x8F", i, code)
		}
	}
	if grew > 16<<20 {
		t.Fatalf("one 640 KB SUBSCRIBE allocated %d MiB", grew>>20)
	}
}
