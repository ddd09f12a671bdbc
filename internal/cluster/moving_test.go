package cluster

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/isobar-mq/isobar/internal/store"
)

// A moving session keeps its de-duplication ids; a body claiming more ids
// than it carries is refused.
func TestMovingSessionCarriesSeen(t *testing.T) {
	ls := &store.LoadedSession{Session: store.SessionRecord{ClientID: "c1", ExpiryInterval: 60}}
	ls.Seen = [][2]uint64{{1, 2}, {3, 4}}
	got, err := decodeMoving(encodeMoving(ls))
	if err != nil {
		t.Fatal(err)
	}
	if got.Session.ClientID != "c1" || len(got.Seen) != 2 || got.Seen[1] != [2]uint64{3, 4} {
		t.Fatalf("decoded %+v", got)
	}
	var e Enc
	e.Bytes(store.EncodeSession(ls))
	e.Uvarint(1 << 40)
	if _, err := decodeMoving(e.B); err == nil {
		t.Fatal("a count beyond the body was accepted")
	}
	if _, err := decodeMoving(nil); err == nil {
		t.Fatal("an empty body was accepted")
	}
}

// WaitWritten returns once the frames queued before the mark were handed
// to the connection, not before; false when the link closes first.
func TestLinkWaitWritten(t *testing.T) {
	c1, c2 := net.Pipe() // synchronous: written means read by the peer
	defer c2.Close()
	l := NewLink(c1, PeerInfo{Name: "p"}, LinkConfig{PingInterval: time.Hour}, nil)
	defer l.Close(nil)
	if !l.Send(FrameAck, make([]byte, 100), true) {
		t.Fatal("Send refused")
	}
	mark := l.Mark()
	if l.WaitWritten(mark, 100*time.Millisecond) {
		t.Fatal("written before the peer read anything")
	}
	go func() { _, _ = io.Copy(io.Discard, c2) }()
	if !l.WaitWritten(mark, 5*time.Second) {
		t.Fatal("not written once the peer reads")
	}
	l.Close(nil)
	l.Send(FrameAck, nil, true)
	if l.WaitWritten(l.Mark()+1, time.Second) {
		t.Fatal("WaitWritten true after close")
	}
}
