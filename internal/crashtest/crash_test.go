package crashtest

import (
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/isobar-mq/isobar/internal/mqtt/packet"
)

// TestSIGKILLDurability runs publishers and persistent-session subscribers
// against a real isobar process and kills it with SIGKILL at random points,
// several times, restarting it on the same data directory. Publishers
// resend what was not acknowledged, with DUP and the same packet
// identifier; subscribers resume their sessions. At the end every message
// acknowledged to a publisher (PUBACK, or PUBREC for QoS 2) must have
// reached every subscriber it was routed to, QoS 2 deliveries exactly once
// (as a compliant receiver counts them: once per packet identifier until
// PUBREL), and the first deliveries of each publisher's messages in order.
//
// ISOBAR_CRASHTEST_SEED replays a run (the seed is logged).
func TestSIGKILLDurability(t *testing.T) {
	for _, tc := range []struct {
		sync   string
		cycles int
	}{{"always", 5}, {"interval", 3}} {
		t.Run("sync="+tc.sync, func(t *testing.T) {
			if tc.sync == "interval" && !knownBugs() {
				// Not a bug: sync: interval may lose up to sync_interval of
				// acknowledged messages in a crash, by design (see
				// docs/configuration.md), so this zero-loss scenario does
				// not apply; ISOBAR_CRASHTEST_KNOWN_BUGS=1 shows the loss.
				t.Skip("sync: interval trades a bounded loss window for throughput (documented); zero-loss checks apply to sync: always")
			}
			runCrashScenario(t, tc.sync, tc.cycles)
		})
	}
}

type msgKey struct{ pub, seq int }

func (k msgKey) String() string { return fmt.Sprintf("p%d#%d", k.pub, k.seq) }

// ---- publishers ----

type outPub struct {
	seq      int
	id       uint16
	released bool // PUBREC received, PUBREL sent
}

type publisher struct {
	idx    int
	name   string
	topic  string
	v, qos byte
	window int
	pace   time.Duration

	mu        sync.Mutex
	next      int // next sequence number
	inflight  map[uint16]*outPub
	ackedIn   []int // per sequence number: cycle of its PUBACK/PUBREC + 1, 0 = not yet
	nextID    uint16
	connected bool // a CONNACK was received before (the session exists)
	cycle     int
	resent    int
	sessions  int
	errs      []string
	room      chan struct{}
}

func newPublisher(idx int, v, qos byte) *publisher {
	name := fmt.Sprintf("crash-pub%d-v%d-q%d", idx, v, qos)
	return &publisher{
		idx: idx, name: name, topic: fmt.Sprintf("ct/q%d/p%d", qos, idx), v: v, qos: qos,
		window: 10, pace: 3 * time.Millisecond,
		inflight: map[uint16]*outPub{}, room: make(chan struct{}, 1),
	}
}

func (p *publisher) failLocked(format string, args ...any) {
	if len(p.errs) < 50 {
		p.errs = append(p.errs, fmt.Sprintf("cycle %d: ", p.cycle)+fmt.Sprintf(format, args...))
	}
}

func (p *publisher) signal() {
	select {
	case p.room <- struct{}{}:
	default:
	}
}

func (p *publisher) payload(seq int) []byte {
	return fmt.Appendf(nil, "%d/%d/%s", p.idx, seq, strings.Repeat("x", 48))
}

func (p *publisher) opts() clientOpts {
	o := clientOpts{id: p.name, v: p.v}
	if p.v == packet.V5 {
		o.expiry = 3600
	}
	return o
}

// runCycle publishes (reconnecting after failures) until stop is closed.
func (p *publisher) runCycle(addr string, stop <-chan struct{}) {
	for {
		p.session(addr, stop, true)
		select {
		case <-stop:
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// finish reconnects and completes every flow in flight without starting
// new ones; it reports whether it got there before stop.
func (p *publisher) finish(addr string, stop <-chan struct{}) bool {
	for {
		if p.session(addr, stop, false) {
			return true
		}
		select {
		case <-stop:
			return false
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// session runs one connection. With produce it publishes new messages
// until the connection fails or stop; without, it returns true once
// nothing is in flight (after a normal DISCONNECT).
func (p *publisher) session(addr string, stop <-chan struct{}, produce bool) bool {
	c, ack, err := dialMQTT(addr, p.opts())
	if err != nil {
		return false
	}
	p.mu.Lock()
	p.sessions++
	if p.connected && !ack.SessionPresent {
		p.failLocked("CONNACK with session present 0: the publisher's persistent session was lost")
	}
	p.connected = true
	// Resend what is in flight, in order [MQTT-4.4.0-1].
	list := make([]*outPub, 0, len(p.inflight))
	for _, m := range p.inflight {
		list = append(list, m)
	}
	slices.SortFunc(list, func(a, b *outPub) int { return a.seq - b.seq })
	var buf []byte
	for _, m := range list {
		if m.released {
			a := packet.Ack{Type: packet.PUBREL, PacketID: m.id}
			buf = a.Append(buf, p.v)
		} else {
			pp := packet.Publish{Dup: true, QoS: p.qos, Topic: p.topic, PacketID: m.id, Payload: p.payload(m.seq)}
			buf = pp.Append(buf, p.v)
		}
		p.resent++
	}
	p.mu.Unlock()
	if len(buf) > 0 && c.write(buf) != nil {
		c.close()
		return false
	}

	dead := make(chan struct{})
	go func() {
		defer close(dead)
		for {
			pkt, err := c.read(0)
			if err != nil {
				return
			}
			if !p.handle(c, pkt) {
				return
			}
		}
	}()
	go func() {
		select {
		case <-stop:
			c.close()
		case <-dead:
			c.close()
		}
	}()

	var tick <-chan time.Time
	if produce {
		tk := time.NewTicker(p.pace)
		defer tk.Stop()
		tick = tk.C
	}
	for {
		p.mu.Lock()
		n := len(p.inflight)
		p.mu.Unlock()
		if !produce && n == 0 {
			c.disconnect()
			<-dead
			return true
		}
		if !produce || n >= p.window {
			select {
			case <-p.room:
			case <-dead:
				return false
			case <-stop:
				<-dead
				return false
			}
			continue
		}
		select {
		case <-tick:
		case <-dead:
			return false
		case <-stop:
			<-dead
			return false
		}
		p.mu.Lock()
		seq := p.next
		p.next++
		p.ackedIn = append(p.ackedIn, 0)
		id := p.allocIDLocked()
		p.inflight[id] = &outPub{seq: seq, id: id}
		p.mu.Unlock()
		pp := packet.Publish{QoS: p.qos, Topic: p.topic, PacketID: id, Payload: p.payload(seq)}
		if c.write(pp.Append(nil, p.v)) != nil {
			<-dead
			return false
		}
	}
}

func (p *publisher) allocIDLocked() uint16 {
	for {
		p.nextID++
		if p.nextID == 0 {
			p.nextID = 1
		}
		if _, used := p.inflight[p.nextID]; !used {
			return p.nextID
		}
	}
}

// handle processes one packet from the broker; false ends the connection.
func (p *publisher) handle(c *mconn, pkt any) bool {
	a, ok := pkt.(*packet.Ack)
	if !ok {
		if _, ok := pkt.(*packet.Disconnect); ok {
			return false
		}
		p.mu.Lock()
		p.failLocked("unexpected packet %#v", pkt)
		p.mu.Unlock()
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	m := p.inflight[a.PacketID]
	switch {
	case a.Type == packet.PUBACK && p.qos == 1 && m != nil:
		if a.ReasonCode >= 0x80 || a.ReasonCode == packet.NoMatchingSubscribers {
			p.failLocked("PUBACK 0x%02X for seq %d", a.ReasonCode, m.seq)
		}
		p.ackedIn[m.seq] = p.cycle + 1
		delete(p.inflight, a.PacketID)
		p.signal()
	case a.Type == packet.PUBREC && p.qos == 2 && m != nil:
		if a.ReasonCode >= 0x80 {
			p.failLocked("PUBREC 0x%02X for seq %d", a.ReasonCode, m.seq)
			delete(p.inflight, a.PacketID)
			p.signal()
			return true
		}
		if !m.released {
			m.released = true
			p.ackedIn[m.seq] = p.cycle + 1
		}
		r := packet.Ack{Type: packet.PUBREL, PacketID: a.PacketID}
		_ = c.write(r.Append(nil, p.v))
	case a.Type == packet.PUBCOMP && p.qos == 2 && m != nil && m.released:
		delete(p.inflight, a.PacketID)
		p.signal()
	default:
		what := "unknown identifier"
		if m != nil {
			what = fmt.Sprintf("seq %d (released=%v)", m.seq, m.released)
		}
		p.failLocked("unexpected %s %d (reason 0x%02X) for %s", a.Type, a.PacketID, a.ReasonCode, what)
	}
	return true
}

// ---- subscribers ----

const (
	modeOnline  = iota // connected during every cycle
	modeFlaky          // connects and drops (abruptly or with DISCONNECT) repeatedly
	modeOffline        // subscribed at the start, back only at the end
)

var modeNames = []string{"online", "flaky", "offline"}

type subscriber struct {
	name   string
	v, qos byte
	mode   int
	filter string
	rng    *rand.Rand

	mu         sync.Mutex
	subscribed bool
	qos2       map[uint16]msgKey // receiver state: QoS 2 ids awaiting PUBREL
	got        map[msgKey]int    // application deliveries
	firstIn    map[msgKey]int    // cycle of the first delivery
	lastFirst  map[int]int       // per publisher: highest sequence delivered so far
	orderErrs  []string
	errs       []string
	sessions   int
	cycle      int
	publishes  int
	dupPublish int
}

func newSubscriber(idx int, v, qos byte, mode int, filter string, seed uint64) *subscriber {
	return &subscriber{
		name: fmt.Sprintf("crash-sub%d-v%d-q%d-%s", idx, v, qos, modeNames[mode]),
		v:    v, qos: qos, mode: mode, filter: filter,
		rng:  rand.New(rand.NewPCG(seed, uint64(idx))),
		qos2: map[uint16]msgKey{}, got: map[msgKey]int{}, firstIn: map[msgKey]int{}, lastFirst: map[int]int{},
	}
}

func (s *subscriber) failLocked(format string, args ...any) {
	if len(s.errs) < 50 {
		s.errs = append(s.errs, fmt.Sprintf("cycle %d: ", s.cycle)+fmt.Sprintf(format, args...))
	}
}

func (s *subscriber) opts() clientOpts {
	o := clientOpts{id: s.name, v: s.v}
	if s.v == packet.V5 {
		o.expiry = 3600
		if s.qos == 2 {
			// Never expires; and a small Receive Maximum keeps most of
			// its messages queued rather than in flight.
			o.expiry = 0xFFFFFFFF
			o.recvMax = 3
		}
	}
	return o
}

// setup creates the session and its subscription; offline and flaky
// subscribers leave afterwards.
func (s *subscriber) setup(t *testing.T, addr string) {
	t.Helper()
	c, ack, err := dialMQTT(addr, s.opts())
	if err != nil {
		t.Fatalf("%s: %v", s.name, err)
	}
	defer c.close()
	if ack.SessionPresent {
		t.Fatalf("%s: session present on first connect", s.name)
	}
	codes, err := c.subscribeSync(1, packet.Subscription{Filter: s.filter, QoS: s.qos})
	if err != nil || len(codes) != 1 || codes[0] != s.qos {
		t.Fatalf("%s: subscribe: %v %v", s.name, codes, err)
	}
	s.subscribed = true
	c.disconnect()
}

// runCycle keeps the subscriber connected (or flapping) until stop.
func (s *subscriber) runCycle(addr string, stop <-chan struct{}) {
	for {
		var life time.Duration
		if s.mode == modeFlaky {
			life = time.Duration(100+s.rng.IntN(400)) * time.Millisecond
		}
		s.session(addr, stop, life)
		pause := 20 * time.Millisecond
		if s.mode == modeFlaky {
			pause = time.Duration(50+s.rng.IntN(250)) * time.Millisecond
		}
		select {
		case <-stop:
			return
		case <-time.After(pause):
		}
	}
}

// session runs one connection until it fails, stop is closed, or life
// passes (0: no limit); at the end of its life the connection is dropped
// abruptly or with a normal DISCONNECT, at random.
func (s *subscriber) session(addr string, stop <-chan struct{}, life time.Duration) {
	c, ack, err := dialMQTT(addr, s.opts())
	if err != nil {
		return
	}
	s.mu.Lock()
	s.sessions++
	resubscribe := !s.subscribed
	if s.subscribed && !ack.SessionPresent {
		s.failLocked("CONNACK with session present 0: the subscriber's persistent session was lost")
		resubscribe = true
	}
	s.mu.Unlock()
	if resubscribe {
		sp := packet.Subscribe{PacketID: 1, Subs: []packet.Subscription{{Filter: s.filter, QoS: s.qos}}}
		if c.write(sp.Append(nil, s.v)) != nil {
			c.close()
			return
		}
	}
	dead := make(chan struct{})
	var timer <-chan time.Time
	if life > 0 {
		timer = time.After(life)
	}
	graceful := s.rng.IntN(2) == 0
	go func() {
		select {
		case <-stop:
		case <-timer:
			if graceful {
				c.disconnect()
			}
		case <-dead:
		}
		c.close()
	}()
	defer close(dead)
	for {
		pkt, err := c.read(0)
		if err != nil {
			return
		}
		if !s.handle(c, pkt) {
			return
		}
	}
}

func parsePayload(b []byte) (msgKey, bool) {
	parts := strings.SplitN(string(b), "/", 3)
	if len(parts) != 3 {
		return msgKey{}, false
	}
	pub, err1 := strconv.Atoi(parts[0])
	seq, err2 := strconv.Atoi(parts[1])
	return msgKey{pub, seq}, err1 == nil && err2 == nil
}

func (s *subscriber) handle(c *mconn, pkt any) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch p := pkt.(type) {
	case *packet.Publish:
		s.publishes++
		key, ok := parsePayload(p.Payload)
		if !ok {
			s.failLocked("unparsable payload %q on %s", p.Payload, p.Topic)
			return false
		}
		if want := min(topicQoS(p.Topic), s.qos); p.QoS != want {
			s.failLocked("%v delivered at QoS %d, want %d", key, p.QoS, want)
		}
		switch p.QoS {
		case 1:
			s.deliverLocked(key)
			_ = c.ack(packet.PUBACK, p.PacketID)
		case 2:
			if prev, inFlight := s.qos2[p.PacketID]; inFlight {
				s.dupPublish++
				if prev != key {
					s.failLocked("PUBLISH id %d carries %v while the QoS 2 flow of %v with that id is incomplete: a compliant receiver discards it", p.PacketID, key, prev)
				}
				if !p.Dup {
					s.failLocked("PUBLISH id %d (%v) resent without DUP", p.PacketID, key)
				}
			} else {
				s.qos2[p.PacketID] = key
				s.deliverLocked(key)
			}
			_ = c.ack(packet.PUBREC, p.PacketID)
		default:
			s.failLocked("QoS 0 delivery of %v", key)
		}
	case *packet.Ack:
		if p.Type != packet.PUBREL {
			s.failLocked("unexpected %s %d", p.Type, p.PacketID)
			return false
		}
		delete(s.qos2, p.PacketID)
		_ = c.ack(packet.PUBCOMP, p.PacketID)
	case *packet.Suback:
		if len(p.ReasonCodes) != 1 || p.ReasonCodes[0] != s.qos {
			s.failLocked("SUBACK %v", p.ReasonCodes)
		}
		s.subscribed = true
	case *packet.Disconnect:
		return false
	default:
		s.failLocked("unexpected packet %#v", pkt)
		return false
	}
	return true
}

func (s *subscriber) deliverLocked(k msgKey) {
	s.got[k]++
	if s.got[k] > 1 {
		return
	}
	s.firstIn[k] = s.cycle
	last, seen := s.lastFirst[k.pub]
	if seen && k.seq < last {
		if len(s.orderErrs) < 20 {
			s.orderErrs = append(s.orderErrs, fmt.Sprintf("cycle %d: %v first delivered after p%d#%d", s.cycle, k, k.pub, last))
		}
		return
	}
	s.lastFirst[k.pub] = k.seq
}

// topicQoS is the QoS a publisher uses on its topic (ct/q<qos>/p<idx>).
func topicQoS(topic string) byte {
	if len(topic) > 4 && strings.HasPrefix(topic, "ct/q") {
		return topic[4] - '0'
	}
	return 0
}

// matches reports whether an MQTT topic filter matches a topic name.
func matches(filter, topic string) bool {
	f := strings.Split(filter, "/")
	n := strings.Split(topic, "/")
	for i, lvl := range f {
		if lvl == "#" {
			return true
		}
		if i >= len(n) || (lvl != "+" && lvl != n[i]) {
			return false
		}
	}
	return len(f) == len(n)
}

// ---- the scenario ----

func runCrashScenario(t *testing.T, syncMode string, cycles int) {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("ISOBAR_CRASHTEST_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		seed = v
	}
	t.Logf("seed %d (ISOBAR_CRASHTEST_SEED replays the random choices)", seed)
	rng := rand.New(rand.NewPCG(seed, 1))

	// A small in-flight window: most messages of online subscribers wait
	// in the session queue, some are in flight, at any kill point.
	b := newBroker(t, "mqtt:\n  max_queued_messages: 60000\n  max_inflight: 8\nsys_interval: 0s\n")
	startDur := b.startSync(syncMode)
	t.Logf("broker started in %v", startDur.Round(time.Millisecond))

	pubs := []*publisher{
		newPublisher(0, packet.V311, 1),
		newPublisher(1, packet.V5, 1),
		newPublisher(2, packet.V311, 2),
		newPublisher(3, packet.V5, 2),
	}
	var subs []*subscriber
	filters := []string{"ct/#", "ct/+/+", "ct/q2/#"}
	i := 0
	for _, mode := range []int{modeOnline, modeFlaky, modeOffline} {
		for _, v := range []byte{packet.V311, packet.V5} {
			for _, qos := range []byte{1, 2} {
				subs = append(subs, newSubscriber(i, v, qos, mode, filters[i%len(filters)], seed))
				i++
			}
		}
	}
	for _, s := range subs {
		s.setup(t, b.addr())
	}

	start := time.Now()
	for cycle := 0; cycle < cycles; cycle++ {
		if cycle > 0 {
			d := b.startSync(syncMode)
			t.Logf("cycle %d: broker restarted in %v", cycle, d.Round(time.Millisecond))
		}
		setCycle(pubs, subs, cycle)
		stop := make(chan struct{})
		var wg sync.WaitGroup
		addr := b.addr()
		for _, p := range pubs {
			wg.Go(func() { p.runCycle(addr, stop) })
		}
		for _, s := range subs {
			if s.mode != modeOffline {
				wg.Go(func() { s.runCycle(addr, stop) })
			}
		}
		// The kill point is random: this is the traffic time of the cycle.
		traffic := time.Duration(500+rng.IntN(1500)) * time.Millisecond
		time.Sleep(traffic)
		b.kill()
		close(stop)
		wg.Wait()
		sent, acked, inflight := pubTotals(pubs)
		t.Logf("cycle %d: SIGKILL after %v of traffic; %d published, %d acknowledged, %d in flight", cycle, traffic, sent, acked, inflight)
	}

	// Final round: everybody comes back, publishers complete their flows.
	d := b.startSync(syncMode)
	t.Logf("final: broker restarted in %v", d.Round(time.Millisecond))
	setCycle(pubs, subs, cycles)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	addr := b.addr()
	for _, p := range pubs {
		wg.Go(func() { p.finish(addr, stop) })
	}
	for _, s := range subs {
		wg.Go(func() {
			for {
				s.session(addr, stop, 0)
				select {
				case <-stop:
					return
				case <-time.After(20 * time.Millisecond):
				}
			}
		})
	}
	expected := expectedDeliveries(pubs, subs)
	deadline := time.Now().Add(30 * time.Second)
	for !complete(subs, expected) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	b.stop()
	t.Logf("traffic and checks took %v", time.Since(start).Round(time.Millisecond))

	report(t, pubs, subs, expected)
}

func setCycle(pubs []*publisher, subs []*subscriber, cycle int) {
	for _, p := range pubs {
		p.mu.Lock()
		p.cycle = cycle
		p.mu.Unlock()
	}
	for _, s := range subs {
		s.mu.Lock()
		s.cycle = cycle
		s.mu.Unlock()
	}
}

func pubTotals(pubs []*publisher) (sent, acked, inflight int) {
	for _, p := range pubs {
		p.mu.Lock()
		sent += p.next
		for _, c := range p.ackedIn {
			if c > 0 {
				acked++
			}
		}
		inflight += len(p.inflight)
		p.mu.Unlock()
	}
	return
}

// expectedDeliveries lists, per subscriber, the publishers routed to it
// and their message counts.
func expectedDeliveries(pubs []*publisher, subs []*subscriber) map[*subscriber][]*publisher {
	out := map[*subscriber][]*publisher{}
	for _, s := range subs {
		for _, p := range pubs {
			if matches(s.filter, p.topic) {
				out[s] = append(out[s], p)
			}
		}
	}
	return out
}

// complete reports whether every subscriber got every message published so
// far and has no QoS 2 flow left open, and every publisher is done.
func complete(subs []*subscriber, expected map[*subscriber][]*publisher) bool {
	for _, s := range subs {
		for _, p := range expected[s] {
			p.mu.Lock()
			n, open := p.next, len(p.inflight)
			p.mu.Unlock()
			if open > 0 {
				return false
			}
			s.mu.Lock()
			for seq := 0; seq < n; seq++ {
				if s.got[msgKey{p.idx, seq}] == 0 {
					s.mu.Unlock()
					return false
				}
			}
			s.mu.Unlock()
		}
		s.mu.Lock()
		open := len(s.qos2)
		s.mu.Unlock()
		if open > 0 {
			return false
		}
	}
	return true
}

func report(t *testing.T, pubs []*publisher, subs []*subscriber, expected map[*subscriber][]*publisher) {
	t.Helper()
	for _, p := range pubs {
		p.mu.Lock()
		notAcked := 0
		for _, c := range p.ackedIn {
			if c == 0 {
				notAcked++
			}
		}
		t.Logf("%s: %d messages, %d resent after reconnects, %d sessions, %d never acknowledged, %d still in flight",
			p.name, p.next, p.resent, p.sessions, notAcked, len(p.inflight))
		for _, e := range p.errs {
			t.Errorf("%s: %s", p.name, e)
		}
		if len(p.inflight) > 0 {
			t.Errorf("%s: %d flows still open at the end", p.name, len(p.inflight))
		}
		p.mu.Unlock()
	}
	for _, s := range subs {
		s.mu.Lock()
		var missing, dups []string
		nMissing, nDups, nUnexpected, total := 0, 0, 0, 0
		for _, p := range expected[s] {
			p.mu.Lock()
			for seq := 0; seq < p.next; seq++ {
				k := msgKey{p.idx, seq}
				n := s.got[k]
				total++
				if n == 0 && p.ackedIn[seq] > 0 {
					nMissing++
					if len(missing) < 10 {
						missing = append(missing, fmt.Sprintf("%v (acknowledged in cycle %d)", k, p.ackedIn[seq]-1))
					}
				}
				if n > 1 && p.qos == 2 && s.qos == 2 {
					nDups++
					if len(dups) < 10 {
						dups = append(dups, fmt.Sprintf("%v x%d (first in cycle %d, acknowledged in cycle %d)", k, n, s.firstIn[k], p.ackedIn[seq]-1))
					}
				}
			}
			p.mu.Unlock()
		}
		for k := range s.got {
			routed := false
			for _, p := range expected[s] {
				if p.idx == k.pub {
					p.mu.Lock()
					routed = k.seq < p.next
					p.mu.Unlock()
				}
			}
			if !routed {
				nUnexpected++
			}
		}
		t.Logf("%s (%s): %d expected, %d PUBLISH packets, %d QoS 2 resends absorbed, %d sessions",
			s.name, s.filter, total, s.publishes, s.dupPublish, s.sessions)
		for _, e := range s.errs {
			t.Errorf("%s: %s", s.name, e)
		}
		if nMissing > 0 {
			t.Errorf("%s: LOST %d acknowledged messages, e.g. %s", s.name, nMissing, strings.Join(missing, ", "))
		}
		if nDups > 0 {
			t.Errorf("%s: %d QoS 2 messages delivered more than once, e.g. %s", s.name, nDups, strings.Join(dups, ", "))
		}
		if nUnexpected > 0 {
			t.Errorf("%s: %d messages not routed to it", s.name, nUnexpected)
		}
		for _, e := range s.orderErrs {
			t.Errorf("%s: order: %s", s.name, e)
		}
		if len(s.qos2) > 0 {
			t.Errorf("%s: %d QoS 2 flows never released", s.name, len(s.qos2))
		}
		s.mu.Unlock()
	}
}
