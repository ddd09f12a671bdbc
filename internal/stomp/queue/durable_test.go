package queue

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

func TestDurability(t *testing.T) {
	dir := t.TempDir()
	m := open(t, Options{Dir: dir})
	persist := func(m *Message) { m.Persistent = true }
	send(t, m, "q", "p1", persist, hdr("a", "1"), hdr("b", ""))
	send(t, m, "q", "n1")
	send(t, m, "q", "p2", persist, prio(7), func(m *Message) { m.Expires = time.Now().Add(time.Hour).UnixMilli() })
	send(t, m, "q", "p3", persist)
	send(t, m, "other", "p4", persist)
	c := &consumer{}
	s, _ := m.Subscribe("q", nil, 0, c)
	waitFor(t, "4 messages", func() bool { return len(c.msgs()) == 4 })
	var highest uint64
	for _, msg := range c.msgs() {
		highest = max(highest, msg.ID)
		if string(msg.Body) == "p3" {
			s.Ack(msg.ID)
		}
	}
	// p1 and p2 stay unacknowledged: they come back.
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}

	m2 := open(t, Options{Dir: dir})
	if i := info(m2, "q"); i.Messages != 2 {
		t.Fatalf("q after restart: %+v", i)
	}
	c2 := &consumer{}
	m2.Subscribe("q", nil, 0, c2)
	waitFor(t, "2 messages", func() bool { return len(c2.msgs()) == 2 })
	if got := c2.bodies(); got != "p2,p1" {
		t.Fatalf("restored %s", got)
	}
	p1 := c2.msgs()[1]
	if len(p1.Headers) != 2 || p1.Headers[0] != (Header{"a", "1"}) || p1.Headers[1] != (Header{"b", ""}) || !p1.Persistent || p1.Timestamp == 0 {
		t.Fatalf("p1 %+v", p1)
	}
	if p2 := c2.msgs()[0]; p2.Priority != 7 || p2.Expires == 0 {
		t.Fatalf("p2 %+v", p2)
	}
	send(t, m2, "q", "new")
	waitFor(t, "new", func() bool { return len(c2.msgs()) == 3 })
	if id := c2.msgs()[2].ID; id <= highest {
		t.Fatalf("new ID %d not above %d", id, highest)
	}
	if i := info(m2, "other"); i.Messages != 1 {
		t.Fatalf("other: %+v", i)
	}
	// Acknowledge everything, delete the other queue: nothing comes back,
	// and IDs still continue.
	m2.Close()
	m3 := open(t, Options{Dir: dir})
	m3.Delete("other")
	c3 := &consumer{}
	s3, _ := m3.Subscribe("q", nil, 0, c3)
	waitFor(t, "2 messages", func() bool { return len(c3.msgs()) == 2 })
	for _, msg := range c3.msgs() {
		s3.Ack(msg.ID)
	}
	m3.Close()
	m4 := open(t, Options{Dir: dir})
	if qs := m4.Queues(); len(qs) != 0 {
		t.Fatalf("queues after all acked: %+v", qs)
	}
	send(t, m4, "q", "last", persist)
	c4 := &consumer{}
	m4.Subscribe("q", nil, 0, c4)
	waitFor(t, "last", func() bool { return len(c4.msgs()) == 1 })
	if id := c4.msgs()[0].ID; id <= highest+1 {
		t.Fatalf("ID %d reused", id)
	}
}

func TestDurableDeadLetter(t *testing.T) {
	dir := t.TempDir()
	m := open(t, Options{Dir: dir, MaxRedeliveries: 1})
	c := &consumer{}
	s, _ := m.Subscribe("q", nil, 0, c)
	send(t, m, "q", "bad", func(m *Message) { m.Persistent = true })
	for n := 1; n <= 2; n++ {
		waitFor(t, "delivery", func() bool { return len(c.msgs()) == n })
		s.Nack(c.msgs()[n-1].ID)
	}
	m.Close()
	m2 := open(t, Options{Dir: dir})
	if i := info(m2, "q"); i.Messages != 0 {
		t.Fatalf("q: %+v", i)
	}
	if i := info(m2, DLQ); i.Messages != 1 {
		t.Fatalf("DLQ: %+v", i)
	}
}

func TestGroupCommit(t *testing.T) {
	// Many concurrent persistent sends complete quickly: they share
	// fsyncs rather than waiting for one each in turn.
	m := open(t, Options{Dir: t.TempDir()})
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := range 32 {
		wg.Go(func() {
			for i := range 20 {
				if err := m.Send("q", &Message{Persistent: true, Body: fmt.Appendf(nil, "%d-%d", g, i)}); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if i := info(m, "q"); i.Messages != 640 {
		t.Fatalf("%+v", i)
	}
}

func TestDiskFull(t *testing.T) {
	dir := t.TempDir()
	var mu sync.Mutex
	free := uint64(1 << 30)
	m := open(t, Options{Dir: dir, minFree: 64 << 20, ballastSize: 1 << 20, tick: time.Hour,
		diskFree: func(string) (uint64, error) {
			mu.Lock()
			defer mu.Unlock()
			return free, nil
		}})
	if fi, err := os.Stat(filepath.Join(dir, ballastName)); err != nil || fi.Size() != 1<<20 {
		t.Fatalf("ballast: %v", err)
	}
	send(t, m, "q", "ok", func(m *Message) { m.Persistent = true })
	mu.Lock()
	free = 1 << 20
	mu.Unlock()
	m.db.tick()
	err := m.Send("q", &Message{Persistent: true})
	if !errors.Is(err, ErrNoSpace) {
		t.Fatalf("Send on a full disk: %v", err)
	}
	if i := info(m, "q"); i.Messages != 1 {
		t.Fatalf("a refused message was queued: %+v", i)
	}
	// Non-persistent messages still flow.
	send(t, m, "q", "memory")
	// ENOSPC met by a write: the ballast goes.
	m.db.onDiskFull()
	if _, err := os.Stat(filepath.Join(dir, ballastName)); !os.IsNotExist(err) {
		t.Fatalf("ballast still there: %v", err)
	}
	mu.Lock()
	free = 1 << 30
	mu.Unlock()
	m.db.tick()
	send(t, m, "q", "again", func(m *Message) { m.Persistent = true })
	if _, err := os.Stat(filepath.Join(dir, ballastName)); err != nil {
		t.Fatalf("ballast not made again: %v", err)
	}
	// A failed database refuses until reopened.
	m.db.setFault(errors.New("injected"))
	if err := m.Send("q", &Message{Persistent: true}); !errors.Is(err, ErrStore) {
		t.Fatalf("after a fault: %v", err)
	}
}

func TestRefusesForeignDirectory(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(Options{Dir: dir}); err == nil {
		t.Fatal("opened a directory of other files")
	}
}

func TestDecodeMalformed(t *testing.T) {
	good := appendMessage(nil, &Message{Headers: []Header{{"a", "b"}}, Body: []byte("body"), Expires: 5, Priority: 3})
	if _, err := decodeMessage(good); err != nil {
		t.Fatal(err)
	}
	for i := range len(good) {
		if _, err := decodeMessage(good[:i]); err == nil {
			t.Errorf("truncated at %d decoded", i)
		}
	}
	if _, err := decodeMessage(append(good, 0)); err == nil {
		t.Error("trailing byte decoded")
	}
}
