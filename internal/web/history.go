package web

import (
	"sync"
	"time"

	"github.com/isobar-mq/isobar/internal/broker"
)

// The console's charts start filled: the server samples the counters every
// historyInterval and keeps the last historyLen points (10 minutes).
const (
	historyInterval = 2 * time.Second
	historyLen      = 300
)

// Sample is one point of GET /api/v1/stats/history: rates are per second
// over the interval that ends at Time.
type Sample struct {
	Time             time.Time `json:"time"`
	MessagesIn       float64   `json:"messages_received_per_second"`
	MessagesOut      float64   `json:"messages_sent_per_second"`
	BytesIn          float64   `json:"bytes_received_per_second"`
	BytesOut         float64   `json:"bytes_sent_per_second"`
	Dropped          float64   `json:"messages_dropped_per_second"`
	Connections      int       `json:"connections"`
	Sessions         int       `json:"sessions"`
	Subscriptions    int       `json:"subscriptions"`
	RetainedMessages int       `json:"retained_messages"`
}

type history struct {
	srv  *broker.Server
	quit chan struct{}
	done chan struct{}

	mu     sync.Mutex
	ring   []Sample
	next   int
	full   bool
	prev   broker.Snapshot
	prevAt time.Time
}

func startHistory(srv *broker.Server, every time.Duration, n int) *history {
	h := &history{srv: srv, quit: make(chan struct{}), done: make(chan struct{}), ring: make([]Sample, n)}
	h.prev = srv.Stats().Snapshot()
	h.prevAt = time.Now()
	go h.run(every)
	return h
}

func (h *history) run(every time.Duration) {
	defer close(h.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-h.quit:
			return
		case now := <-t.C:
			h.sample(now)
		}
	}
}

func (h *history) stop() {
	close(h.quit)
	<-h.done
}

func dropped(s *broker.Snapshot) uint64 {
	return s.DroppedQueueFull + s.DroppedExpired + s.DroppedSlowConsumer + s.DroppedNotAuthorized +
		s.DroppedTooLarge + s.DroppedOffline + s.DroppedSessionEnd
}

func (h *history) sample(now time.Time) {
	sn := h.srv.Stats().Snapshot()
	h.mu.Lock()
	defer h.mu.Unlock()
	dt := now.Sub(h.prevAt).Seconds()
	if dt <= 0 {
		return
	}
	rate := func(a, b uint64) float64 { return float64(a-b) / dt }
	h.ring[h.next] = Sample{
		Time:             now.UTC().Truncate(time.Millisecond),
		MessagesIn:       rate(sn.MessagesReceived, h.prev.MessagesReceived),
		MessagesOut:      rate(sn.MessagesSent, h.prev.MessagesSent),
		BytesIn:          rate(sn.BytesReceived, h.prev.BytesReceived),
		BytesOut:         rate(sn.BytesSent, h.prev.BytesSent),
		Dropped:          rate(dropped(&sn), dropped(&h.prev)),
		Connections:      h.srv.ClientCount(),
		Sessions:         h.srv.SessionCount(),
		Subscriptions:    h.srv.SubscriptionCount(),
		RetainedMessages: h.srv.RetainedCount(),
	}
	h.next++
	if h.next == len(h.ring) {
		h.next, h.full = 0, true
	}
	h.prev, h.prevAt = sn, now
}

// samples returns the stored points, oldest first, newer than since.
func (h *history) samples(since time.Time) []Sample {
	h.mu.Lock()
	defer h.mu.Unlock()
	var all []Sample
	if h.full {
		all = append(all, h.ring[h.next:]...)
	}
	all = append(all, h.ring[:h.next]...)
	out := all[:0]
	for _, s := range all {
		if s.Time.After(since) {
			out = append(out, s)
		}
	}
	return out
}
