package stomp_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"github.com/isobar-mq/isobar/internal/stomp"
	"github.com/isobar-mq/isobar/internal/testutil"
)

func TestStompOverWebSocket(t *testing.T) {
	t.Parallel()
	n := testutil.RunNode(t, baseYAML+"  - {name: stompws, protocol: stomp-ws, address: \"127.0.0.1:0\"}\n")
	wsAddr := testutil.Addr(t, n, "stompws")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, tc := range []struct {
		offer []string
		want  string
	}{{[]string{"v10.stomp", "v11.stomp", "v12.stomp"}, "v12.stomp"}, {[]string{"v11.stomp"}, "v11.stomp"}, {nil, ""}} {
		d := ws.Dialer{Protocols: tc.offer}
		conn, _, hs, err := d.Dial(ctx, "ws://"+wsAddr+"/stomp")
		if err != nil {
			t.Fatalf("dial %v: %v", tc.offer, err)
		}
		if hs.Protocol != tc.want {
			t.Errorf("offered %v: subprotocol %q, want %q", tc.offer, hs.Protocol, tc.want)
		}
		// stomp.js sends text frames; one frame may hold several STOMP
		// frames.
		wire := string(stomp.AppendFrame(nil, frame("CONNECT", "accept-version:1.2", "host:x"), stomp.V12)) +
			string(stomp.AppendFrame(nil, frame("SUBSCRIBE", "id:1", "destination:/topic/ws"), stomp.V12))
		if err := wsutil.WriteClientText(conn, []byte(wire)); err != nil {
			t.Fatal(err)
		}
		send := stomp.AppendFrame(nil, &stomp.Frame{Command: "SEND", Headers: []stomp.Header{{Name: "destination", Value: "/topic/ws"}}, Body: []byte("over ws")}, stomp.V12)
		if err := wsutil.WriteClientBinary(conn, send); err != nil {
			t.Fatal(err)
		}
		var got string
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		for !strings.Contains(got, "over ws") {
			b, err := wsutil.ReadServerBinary(conn)
			if err != nil {
				t.Fatalf("read: %v (so far %q)", err, got)
			}
			got += string(b)
		}
		if !strings.HasPrefix(got, "CONNECTED\n") || !strings.Contains(got, "MESSAGE\n") {
			t.Fatalf("got %q", got)
		}
		_ = conn.Close()
	}
}

func TestSlowConsumer(t *testing.T) {
	t.Parallel()
	n, addr := runNode(t, "stomp: {max_pending_bytes: 65536, write_timeout: 300ms}\n")
	slow := connect(t, addr, "1.2")
	slow.subscribe("s", "/topic/flood")
	// The slow client never reads again. A fast one keeps up.
	fast := connect(t, addr, "1.2")
	fast.subscribe("f", "/topic/flood")
	pub := connect(t, addr, "1.2")
	body := strings.Repeat("x", 32<<10)
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; n.Stomp.Connections() == 3 && time.Now().Before(deadline); i++ {
		pub.sendMsg("/topic/flood", body)
		fast.expect("MESSAGE")
	}
	if c := n.Stomp.Connections(); c != 2 {
		t.Fatalf("%d connections: the slow consumer was not disconnected", c)
	}
	if n.Stomp.Dropped() == 0 {
		t.Fatal("no message dropped for the slow consumer")
	}
	pub.sendMsg("/topic/flood", "still fine")
	if f := fast.expect("MESSAGE"); string(f.Body) != "still fine" {
		t.Fatalf("got %d bytes", len(f.Body))
	}
}
