package broker

// Tests of the internal API (internal.go): Publisher and LocalSubscriber.

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/isobar-mq/isobar/internal/mqtt/packet"
	"github.com/isobar-mq/isobar/internal/topic"
)

// Messages published between two Flush calls share one store commit, and
// each one's done callback runs after it with the number of subscribers
// it went to; MaxBatch flushes automatically.
func TestSeamPublisherBatching(t *testing.T) {
	st := &seamStore{}
	s := seamNewServer(t, Options{Store: st}, nil)
	l1 := s.NewSubscriber(SubscriberOptions{Trusted: true})
	l2 := s.NewSubscriber(SubscriberOptions{Trusted: true})
	for _, l := range []*LocalSubscriber{l1, l2} {
		if err := l.Subscribe("b/#", topic.Options{QoS: 1}); err != nil {
			t.Fatal(err)
		}
	}
	p := s.NewPublisher(PublisherOptions{Trusted: true, MaxBatch: 100})
	var results []PublishResult
	committedAtDone := -1
	for i := range 10 {
		m := &Message{Topic: "b/" + string(rune('a'+i)), Payload: []byte("x"), QoS: 1, Retain: true}
		err := p.Publish(m, func(r PublishResult) {
			results = append(results, r)
			c, _, _ := st.counts()
			committedAtDone = c
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if c, _, _ := st.counts(); c != 0 || len(results) != 0 {
		t.Fatalf("before Flush: %d commits, %d done callbacks", c, len(results))
	}
	if err := p.Flush(); err != nil {
		t.Fatal(err)
	}
	if c, _, _ := st.counts(); c != 1 {
		t.Fatalf("10 publishes made %d commits, want 1", c)
	}
	if len(st.ops()) != 10 || committedAtDone != 1 {
		t.Fatalf("ops %d, commits seen by done %d", len(st.ops()), committedAtDone)
	}
	if len(results) != 10 {
		t.Fatalf("%d done callbacks", len(results))
	}
	for _, r := range results {
		if r.Routed != 2 || r.Err != nil {
			t.Fatalf("result %+v, want Routed 2", r)
		}
	}

	// MaxBatch 4: 10 publishes commit at 4 and 8, Close commits the rest.
	p = s.NewPublisher(PublisherOptions{Trusted: true, MaxBatch: 4})
	done := 0
	for i := range 10 {
		if err := p.Publish(&Message{Topic: "b/" + string(rune('a'+i)), Payload: []byte("y"), Retain: true}, func(PublishResult) { done++ }); err != nil {
			t.Fatal(err)
		}
		if want := (i + 1) / 4 * 4; done != want {
			t.Fatalf("after %d publishes %d done, want %d", i+1, done, want)
		}
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if c, _, _ := st.counts(); c != 4 || done != 10 {
		t.Fatalf("%d commits (want 1+3), %d done", c, done)
	}
	if err := p.Publish(&Message{Topic: "b/z"}, nil); !errors.Is(err, ErrPublisherClose) {
		t.Fatalf("publish after Close: %v", err)
	}
	l1.Close()
	l2.Close()

	// A failed commit reaches every done callback of the batch.
	st.setFail(errSeamDisk)
	p = s.NewPublisher(PublisherOptions{Trusted: true})
	var errs []error
	for range 2 {
		if err := p.Publish(&Message{Topic: "b/f", Payload: []byte("z"), Retain: true}, func(r PublishResult) { errs = append(errs, r.Err) }); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Flush(); err == nil {
		t.Fatal("Flush did not report the failed commit")
	}
	if len(errs) != 2 || !errors.Is(errs[0], errSeamDisk) || !errors.Is(errs[1], errSeamDisk) {
		t.Fatalf("done errors %v, want the store's error", errs)
	}
}

// A Publisher's messages taken by an asynchronous subscriber (a remote
// node): done runs once the subscriber released its hold, with the error
// it released with, or ErrHoldTimeout.
func TestSeamPublisherRemoteHold(t *testing.T) {
	s := seamNewServer(t, Options{HoldTimeout: 200 * time.Millisecond}, nil)
	const delay = 50 * time.Millisecond
	ok := newSeamRemote(t, delay, nil)
	errPeer := errors.New("peer refused")
	bad := newSeamRemote(t, 0, errPeer)
	slow := newSeamRemote(t, time.Second, nil)
	seamSubscribe(s, ok, "ok", topic.Options{QoS: 1})
	seamSubscribe(s, bad, "bad", topic.Options{QoS: 1})
	seamSubscribe(s, slow, "slow", topic.Options{QoS: 1})
	for _, c := range []struct {
		topic string
		want  error
	}{{"ok", nil}, {"bad", errPeer}, {"slow", ErrHoldTimeout}} {
		p := s.NewPublisher(PublisherOptions{Trusted: true})
		var res []PublishResult
		var doneAt time.Time
		start := time.Now()
		if err := p.Publish(&Message{Topic: c.topic, QoS: 1, Payload: []byte("x")}, func(r PublishResult) {
			res = append(res, r)
			doneAt = time.Now()
		}); err != nil {
			t.Fatal(err)
		}
		if len(res) != 0 {
			t.Fatalf("%s: done before Flush", c.topic)
		}
		err := p.Close()
		if len(res) != 1 || res[0].Routed != 1 || !errors.Is(res[0].Err, c.want) || !errors.Is(err, c.want) {
			t.Fatalf("%s: results %+v, Close %v, want error %v", c.topic, res, err, c.want)
		}
		if c.topic == "ok" && doneAt.Sub(start) < delay {
			t.Fatalf("done after %v, before the subscriber released (%v)", doneAt.Sub(start), delay)
		}
	}
}

// The caller's Message is never modified: identity, times, origin and
// publisher are stamped on the broker's copy.
func TestSeamPublisherDoesNotModifyMessage(t *testing.T) {
	s := seamNewServer(t, Options{}, nil)
	l := s.NewSubscriber(SubscriberOptions{Trusted: true})
	if err := l.Subscribe("m/#", topic.Options{QoS: 1}); err != nil {
		t.Fatal(err)
	}
	m := &Message{Topic: "m/1", Payload: []byte("p"), QoS: 1}
	m.Props.MessageExpiryInterval = 60
	m.Props.Set(packet.PropMessageExpiryInterval)
	m.Props.TopicAlias = 3 // per-delivery property: not kept by the broker
	m.Props.Set(packet.PropTopicAlias)
	before := *m
	p := s.NewPublisher(PublisherOptions{Client: ClientInfo{ClientID: "bridge-1"}, Trusted: true, Origin: Origin{Kind: OriginBridge, Name: "b1"}})
	if err := p.Publish(m, nil); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(*m, before) {
		t.Fatalf("message modified:\n%+v\nwas\n%+v", *m, before)
	}
	ctx, cancel := context.WithTimeout(context.Background(), seamWait)
	defer cancel()
	d, err := l.Receive(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := d.Msg
	if got == m || got.ID.IsZero() || got.Received == 0 || got.Expiry != got.Received+60*int64(time.Second) ||
		got.From != "bridge-1" || got.Origin != (Origin{Kind: OriginBridge, Name: "b1"}) || got.Props.Has(packet.PropTopicAlias) {
		t.Fatalf("routed message %+v", got)
	}
	// Server.Publish does not modify its argument either.
	m2 := &Message{Topic: "m/2", Payload: []byte("q")}
	before2 := *m2
	if err := s.Publish(m2); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(*m2, before2) {
		t.Fatalf("Server.Publish modified its message: %+v", *m2)
	}
	l.Close()
}

// The ACL applies unless the publisher is Trusted; '$' topics are only for
// trusted publishers; a publish hook's refusal is an error; refusals call
// no done callback.
func TestSeamPublisherAuthorization(t *testing.T) {
	auth := &seamAuth{pub: func(c ClientInfo, t string) bool { return !strings.HasPrefix(t, "deny/") }}
	s := seamNewServer(t, Options{}, auth)
	called := false
	done := func(PublishResult) { called = true }
	p := s.NewPublisher(PublisherOptions{Client: ClientInfo{ClientID: "gw", Username: "u"}})
	if err := p.Publish(&Message{Topic: "deny/x"}, done); !errors.Is(err, ErrNotAuthorized) {
		t.Fatalf("ACL: %v", err)
	}
	if err := p.Publish(&Message{Topic: "$SYS/x"}, done); !errors.Is(err, ErrNotAuthorized) {
		t.Fatalf("'$' topic: %v", err)
	}
	if err := p.Publish(&Message{Topic: "$share/x"}, done); !errors.Is(err, ErrNotAuthorized) {
		t.Fatalf("'$' topic: %v", err)
	}
	if err := p.Publish(&Message{Topic: "ok/x"}, nil); err != nil {
		t.Fatalf("allowed topic: %v", err)
	}
	if n := s.stats.droppedNotAuthorized.Load(); n != 3 {
		t.Fatalf("droppedNotAuthorized %d, want 3", n)
	}

	tp := s.NewPublisher(PublisherOptions{Client: ClientInfo{ClientID: "gw", Username: "u"}, Trusted: true})
	for _, topicName := range []string{"deny/x", "$SYS/x", "$internal/y"} {
		if err := tp.Publish(&Message{Topic: topicName}, nil); err != nil {
			t.Fatalf("trusted publish to %s: %v", topicName, err)
		}
	}

	s.AddHook(&seamPublishHook{fn: func(_ ClientInfo, m *Message) (*Message, byte) {
		if m.Topic == "refuse" {
			return nil, packet.PayloadFormatInvalid
		}
		return m, 0
	}})
	if err := tp.Publish(&Message{Topic: "refuse"}, done); !errors.Is(err, ErrRefusedByHook) {
		t.Fatalf("hook refusal: %v", err)
	}
	if err := tp.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if called {
		t.Fatal("done called for a refused publish")
	}
}

// ValidateMessage (and Publish) refuse what MQTT cannot carry.
func TestSeamValidateMessage(t *testing.T) {
	s := seamNewServer(t, Options{MaxPacketSize: 4096, MaxTopicLevels: 4}, nil)
	long := strings.Repeat("x", 70000)
	withProps := func(f func(p *packet.Properties)) *Message {
		m := &Message{Topic: "v/1"}
		f(&m.Props)
		return m
	}
	bad := map[string]*Message{
		"empty topic":           {Topic: ""},
		"wildcard +":            {Topic: "v/+/x"},
		"wildcard #":            {Topic: "v/#"},
		"NUL in topic":          {Topic: "v/\x00"},
		"invalid UTF-8 topic":   {Topic: "v/\xff"},
		"surrogate in topic":    {Topic: "v/\xed\xa0\x80"},
		"control char in topic": {Topic: "v/\x01"},
		"too many levels":       {Topic: "a/b/c/d/e"},
		"QoS 3":                 {Topic: "v/1", QoS: 3},
		"payload beyond packet": {Topic: "v/1", Payload: make([]byte, 4096)},
		"content type > 64 KiB": withProps(func(p *packet.Properties) { p.ContentType = long; p.Set(packet.PropContentType) }),
		"correlation > 64 KiB":  withProps(func(p *packet.Properties) { p.CorrelationData = []byte(long); p.Set(packet.PropCorrelationData) }),
		"user property > 64 KiB": withProps(func(p *packet.Properties) {
			p.User = []packet.UserProperty{{Key: "k", Value: long}}
			p.Set(packet.PropUserProperty)
		}),
		"user property UTF-8": withProps(func(p *packet.Properties) {
			p.User = []packet.UserProperty{{Key: "\xff", Value: "v"}}
			p.Set(packet.PropUserProperty)
		}),
		"response topic #":     withProps(func(p *packet.Properties) { p.ResponseTopic = "r/#"; p.Set(packet.PropResponseTopic) }),
		"response topic UTF-8": withProps(func(p *packet.Properties) { p.ResponseTopic = "r/\xff"; p.Set(packet.PropResponseTopic) }),
		"content type UTF-8":   withProps(func(p *packet.Properties) { p.ContentType = "\xff"; p.Set(packet.PropContentType) }),
	}
	p := s.NewPublisher(PublisherOptions{Trusted: true})
	defer func() { _ = p.Close() }()
	for name, m := range bad {
		if err := s.ValidateMessage(m); err == nil {
			t.Errorf("%s: accepted", name)
		}
		if err := p.Publish(m, func(PublishResult) { t.Errorf("%s: done called", name) }); err == nil {
			t.Errorf("%s: published", name)
		}
	}
	good := &Message{Topic: "v/1", Payload: make([]byte, 3000), QoS: 2, Retain: true}
	good.Props.ContentType = "text/plain"
	good.Props.Set(packet.PropContentType)
	if err := s.ValidateMessage(good); err != nil {
		t.Fatalf("valid message refused: %v", err)
	}
	if err := seamNewServer(t, Options{MaxQoS: 1}, nil).ValidateMessage(&Message{Topic: "q", QoS: 2}); err == nil {
		t.Fatal("QoS above the server's maximum accepted")
	}
}

// seamPublishHook is a PublishHook from a function.
type seamPublishHook struct {
	fn func(ClientInfo, *Message) (*Message, byte)
}

func (h *seamPublishHook) HookName() string { return "seam-publish" }
func (h *seamPublishHook) OnPublish(c ClientInfo, m *Message) (*Message, byte) {
	return h.fn(c, m)
}

// A LocalSubscriber gets the retained messages matching a new subscription
// first (per Retain Handling), then live ones; Unsubscribe stops them.
func TestSeamLocalSubscriberRetainedAndUnsubscribe(t *testing.T) {
	s := seamNewServer(t, Options{}, nil)
	for _, tp := range []string{"r/1", "r/2"} {
		if err := s.Publish(&Message{Topic: tp, Payload: []byte(tp), QoS: 1, Retain: true}); err != nil {
			t.Fatal(err)
		}
	}
	l := s.NewSubscriber(SubscriberOptions{Client: ClientInfo{ClientID: "local"}})
	defer l.Close()
	if err := l.Subscribe("r/#", topic.Options{QoS: 1, ID: 7}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), seamWait)
	defer cancel()
	var got []string
	for range 2 {
		d, err := l.Receive(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !d.Retain || d.QoS != 1 || !reflect.DeepEqual(d.SubIDs, []uint32{7}) {
			t.Fatalf("retained delivery %+v", d)
		}
		got = append(got, string(d.Msg.Payload))
	}
	if strings.Join(got, ",") != "r/1,r/2" && strings.Join(got, ",") != "r/2,r/1" {
		t.Fatalf("retained %v", got)
	}
	// Retain Handling 1 on an existing subscription, and 2: none sent.
	if err := l.Subscribe("r/#", topic.Options{QoS: 1, RetainHandling: 1}); err != nil {
		t.Fatal(err)
	}
	if err := l.Subscribe("r/1", topic.Options{QoS: 1, RetainHandling: 2}); err != nil {
		t.Fatal(err)
	}
	if n := l.Pending(); n != 0 {
		t.Fatalf("%d retained deliveries despite Retain Handling", n)
	}
	if !l.Unsubscribe("r/1") || l.Unsubscribe("r/1") {
		t.Fatal("Unsubscribe results")
	}
	if err := s.Publish(&Message{Topic: "r/3", Payload: []byte("live")}); err != nil {
		t.Fatal(err)
	}
	d, err := l.Receive(ctx)
	if err != nil || string(d.Msg.Payload) != "live" || d.Retain {
		t.Fatalf("live delivery %+v %v", d, err)
	}
	if !l.Unsubscribe("r/#") {
		t.Fatal("Unsubscribe r/#")
	}
	if err := s.Publish(&Message{Topic: "r/4", Payload: []byte("after")}); err != nil {
		t.Fatal(err)
	}
	if n := l.Pending(); n != 0 || s.SubscriptionCount() != 0 {
		t.Fatalf("after Unsubscribe: %d pending, %d subscriptions", n, s.SubscriptionCount())
	}
}

// The queue is bounded: what does not fit is dropped and counted, never
// blocking the router.
func TestSeamLocalSubscriberBoundedQueue(t *testing.T) {
	s := seamNewServer(t, Options{}, nil)
	l := s.NewSubscriber(SubscriberOptions{Trusted: true, QueueSize: 2})
	defer l.Close()
	if err := l.Subscribe("q", topic.Options{QoS: 1}); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		if err := s.Publish(&Message{Topic: "q", Payload: []byte("x"), QoS: 1}); err != nil {
			t.Fatal(err)
		}
	}
	if l.Pending() != 2 || l.Dropped() != 3 || s.stats.droppedQueueFull.Load() != 3 {
		t.Fatalf("pending %d dropped %d counted %d, want 2 3 3", l.Pending(), l.Dropped(), s.stats.droppedQueueFull.Load())
	}
	ctx, cancel := context.WithTimeout(context.Background(), seamWait)
	defer cancel()
	for range 2 {
		if _, err := l.Receive(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Publish(&Message{Topic: "q", Payload: []byte("room again")}); err != nil {
		t.Fatal(err)
	}
	if l.Pending() != 1 {
		t.Fatalf("pending %d after draining", l.Pending())
	}
}

// Receive waits for a delivery, returns the context's error when it ends
// first, and ErrPublisherClose once the subscriber is closed (also when it
// was waiting); Close removes the subscriptions.
func TestSeamLocalSubscriberReceiveAndClose(t *testing.T) {
	auth := &seamAuth{
		sub:  func(c ClientInfo, f string) bool { return f != "secret/#" },
		recv: func(c ClientInfo, t string) bool { return t != "w/hidden" },
	}
	s := seamNewServer(t, Options{}, auth)
	l := s.NewSubscriber(SubscriberOptions{Client: ClientInfo{ClientID: "l", Username: "u"}})
	if err := l.Subscribe("secret/#", topic.Options{}); !errors.Is(err, ErrNotAuthorized) {
		t.Fatalf("unauthorized subscribe: %v", err)
	}
	if err := l.Subscribe("w/+/#", topic.Options{}); err != nil {
		t.Fatal(err)
	}
	if err := l.Subscribe("w/#", topic.Options{}); err != nil {
		t.Fatal(err)
	}
	if err := l.Subscribe("bad/#/x", topic.Options{}); err == nil {
		t.Fatal("invalid filter accepted")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	_, err := l.Receive(ctx)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Receive with nothing to receive: %v", err)
	}

	// A waiting Receive wakes up for a delivery from another goroutine.
	got := make(chan Delivery, 1)
	errc := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), seamWait)
		defer cancel()
		d, err := l.Receive(ctx)
		got <- d
		errc <- err
	}()
	time.Sleep(10 * time.Millisecond)
	if err := s.Publish(&Message{Topic: "w/hidden", Payload: []byte("no")}); err != nil {
		t.Fatal(err)
	}
	if err := s.Publish(&Message{Topic: "w/x/y", Payload: []byte("yes")}); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if d := <-got; string(d.Msg.Payload) != "yes" {
		t.Fatalf("received %q: the read ACL was not applied (or an overlap was delivered twice)", d.Msg.Payload)
	}
	if n := l.Pending(); n != 0 {
		t.Fatalf("%d pending: overlapping subscriptions delivered twice", n)
	}

	// A waiting Receive returns when the subscriber is closed.
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), seamWait)
		defer cancel()
		_, err := l.Receive(ctx)
		errc <- err
	}()
	time.Sleep(10 * time.Millisecond)
	l.Close()
	if err := <-errc; !errors.Is(err, ErrPublisherClose) {
		t.Fatalf("Receive after Close: %v", err)
	}
	if s.SubscriptionCount() != 0 {
		t.Fatalf("%d subscriptions left after Close", s.SubscriptionCount())
	}
	if err := l.Subscribe("w/#", topic.Options{}); err == nil {
		t.Fatal("Subscribe after Close accepted")
	}
	l.Close() // idempotent
}
