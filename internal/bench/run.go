package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/isobar-mq/isobar/internal/mqtt/packet"
)

// Scenarios.
const (
	ScenarioConn   = "conn"
	ScenarioPub    = "pub"
	ScenarioSub    = "sub"
	ScenarioP2P    = "p2p"
	ScenarioFanIn  = "fanin"
	ScenarioFanOut = "fanout"
	ScenarioShared = "shared"
)

// Scenarios lists the scenario names in the order the help shows them.
var scenarioNames = []string{ScenarioConn, ScenarioPub, ScenarioSub, ScenarioP2P, ScenarioFanIn, ScenarioFanOut, ScenarioShared}

// Config describes one run. Zero values get the defaults documented on each
// field by SetDefaults.
type Config struct {
	Scenario string

	Addr        string   // broker host:port (127.0.0.1:1883)
	Transport   string   // tcp (default), tls, ws, wss
	WSPath      string   // WebSocket path (/mqtt)
	Insecure    bool     // TLS: skip certificate verification
	CAFile      string   // TLS: CA bundle to verify the broker
	AllowRemote bool     // permit a broker address outside 127.0.0.0/8 and ::1
	LocalAddrs  []string // source addresses used round robin (e.g. 127.0.0.2...)
	// PubAddrs and SubAddrs, when set, replace Addr for publishers and
	// subscribers: client i of the role connects to element i modulo the
	// length (the nodes of a cluster, say: isobar-bench cluster).
	PubAddrs, SubAddrs []string

	MQTTVersion byte // packet.V311 or packet.V5 (V311)
	QoS         int
	Retain      bool
	PayloadSize int           // bytes, at least HeaderSize (64)
	Rate        float64       // total messages per second over all publishers; 0 = as fast as possible
	Inflight    int           // QoS 1/2 window per publisher (20); lowered to the broker's Receive Maximum
	Duration    time.Duration // measured publishing time (10s); conn: how long to hold the connections
	Warmup      time.Duration // publishing before the measurement starts (1s)
	Drain       time.Duration // grace period after publishing for the last messages (5s)

	Conns      int    // conn: connections (1000)
	Pubs       int    // publishers (pub 10, p2p = Subs = pairs 10, fanin 100, fanout 1, shared 1)
	Subs       int    // subscribers (sub 10, fanin 1, fanout 100, shared 10)
	Topic      string // publish topic template, %i = publisher index
	Filter     string // subscription filter template, %i = subscriber index
	ShareGroup string // shared: group name (bench)
	ClientID   string // client identifier template, %i = connection index

	Username, Password string

	ConnectRate        float64       // new connections per second (0 = unlimited)
	ConnectConcurrency int           // connection attempts in parallel (64)
	ConnectTimeout     time.Duration // per connection, up to CONNACK/SUBACK (10s)
	KeepAlive          time.Duration // MQTT keep-alive (60s)

	// PersistentSubs gives subscribers persistent sessions (MQTT 3.1.1
	// clean session 0; MQTT 5 Session Expiry Interval SessionExpiry, 5m),
	// the sessions a broker with a durable store keeps on disk.
	PersistentSubs bool
	SessionExpiry  time.Duration

	BrokerPID int // if set, the broker's CPU and memory are sampled from /proc

	// OnStart, if set, is called once every connection is established,
	// just before publishing (conn: holding) starts.
	OnStart func()

	Progress         io.Writer     // per-interval progress lines (nil: none)
	ProgressInterval time.Duration // (1s)
}

// SetDefaults fills in zero fields.
func (c *Config) SetDefaults() {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	if c.Addr == "" {
		c.Addr = "127.0.0.1:1883"
	}
	if c.Transport == "" {
		c.Transport = TransportTCP
	}
	if c.MQTTVersion == 0 {
		c.MQTTVersion = packet.V311
	}
	def(&c.PayloadSize, 64)
	def(&c.Inflight, 20)
	if c.Duration == 0 {
		c.Duration = 10 * time.Second
	}
	if c.Drain == 0 {
		c.Drain = 5 * time.Second
	}
	def(&c.ConnectConcurrency, 64)
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = 10 * time.Second
	}
	if c.KeepAlive == 0 {
		c.KeepAlive = 60 * time.Second
	}
	if c.PersistentSubs && c.SessionExpiry == 0 {
		c.SessionExpiry = 5 * time.Minute
	}
	if c.ProgressInterval == 0 {
		c.ProgressInterval = time.Second
	}
	if c.ShareGroup == "" {
		c.ShareGroup = "bench"
	}
	if c.ClientID == "" {
		var b [4]byte
		_, _ = rand.Read(b[:])
		c.ClientID = "bench-" + hex.EncodeToString(b[:]) + "-%i"
	}
	switch c.Scenario {
	case ScenarioConn:
		def(&c.Conns, 1000)
	case ScenarioPub:
		def(&c.Pubs, 10)
		if c.Topic == "" {
			c.Topic = "bench/pub/%i"
		}
	case ScenarioSub:
		def(&c.Subs, 10)
		if c.Filter == "" {
			c.Filter = "bench/#"
		}
	case ScenarioP2P:
		if c.Pubs == 0 {
			c.Pubs = c.Subs
		}
		def(&c.Pubs, 10)
		c.Subs = c.Pubs
		if c.Topic == "" {
			c.Topic = "bench/p2p/%i"
		}
	case ScenarioFanIn:
		def(&c.Pubs, 100)
		def(&c.Subs, 1)
		if c.Topic == "" {
			c.Topic = "bench/fanin/%i"
		}
	case ScenarioFanOut:
		def(&c.Pubs, 1)
		def(&c.Subs, 100)
		if c.Topic == "" {
			c.Topic = "bench/fanout"
		}
	case ScenarioShared:
		def(&c.Pubs, 1)
		def(&c.Subs, 10)
		if c.Topic == "" {
			c.Topic = "bench/shared"
		}
	}
	if c.Filter == "" && c.Scenario != ScenarioP2P {
		c.Filter = strings.ReplaceAll(c.Topic, "%i", "+")
	}
}

// Validate checks a configuration after SetDefaults.
func (c *Config) Validate() error {
	known := false
	for _, s := range scenarioNames {
		known = known || s == c.Scenario
	}
	switch {
	case !known:
		return fmt.Errorf("unknown scenario %q (want one of %s)", c.Scenario, strings.Join(scenarioNames, ", "))
	case c.MQTTVersion != packet.V311 && c.MQTTVersion != packet.V5:
		return fmt.Errorf("MQTT version must be 3.1.1 or 5")
	case c.QoS < 0 || c.QoS > 2:
		return fmt.Errorf("QoS must be 0, 1 or 2")
	case c.PayloadSize < HeaderSize:
		return fmt.Errorf("payload size must be at least %d bytes (the timestamp/sequence header)", HeaderSize)
	case c.PayloadSize > 256<<20:
		return fmt.Errorf("payload size above 256 MiB")
	case c.Rate < 0:
		return fmt.Errorf("rate must not be negative")
	case c.Inflight < 1 || c.Inflight > 65535:
		return fmt.Errorf("inflight must be in 1..65535")
	case c.Duration <= 0 || c.Warmup < 0 || c.Drain < 0:
		return fmt.Errorf("duration must be positive, warm-up and drain not negative")
	case c.Conns < 0 || c.Pubs < 0 || c.Subs < 0:
		return fmt.Errorf("connection counts must not be negative")
	case c.ConnectConcurrency < 1:
		return fmt.Errorf("connect concurrency must be at least 1")
	case c.KeepAlive < 0 || c.KeepAlive > 65535*time.Second:
		return fmt.Errorf("keep-alive must be in 0..65535s")
	case c.SessionExpiry < 0 || c.SessionExpiry > 0xFFFFFFFF*time.Second:
		return fmt.Errorf("session expiry must be in 0..4294967295s")
	case c.SessionExpiry > 0 && !c.PersistentSubs:
		return fmt.Errorf("a session expiry needs persistent subscriber sessions (--clean=false)")
	case strings.ContainsAny(c.Topic, "+#"):
		return fmt.Errorf("publish topic %q contains a wildcard", c.Topic)
	}
	return nil
}

// checkLoopback refuses targets and source addresses outside the loopback
// range unless allowRemote.
func checkLoopback(ctx context.Context, cfg *Config) error {
	if cfg.AllowRemote {
		return nil
	}
	for _, a := range append(append([]string{cfg.Addr}, cfg.PubAddrs...), cfg.SubAddrs...) {
		if err := checkLoopbackAddr(ctx, a); err != nil {
			return err
		}
	}
	for _, s := range cfg.LocalAddrs {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return fmt.Errorf("source address %q: %w", s, err)
		}
		if !a.Unmap().IsLoopback() {
			return fmt.Errorf("source address %s is not a loopback address; pass --allow-remote", s)
		}
	}
	return nil
}

// checkLoopbackAddr refuses a broker address outside the loopback range.
func checkLoopbackAddr(ctx context.Context, addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("broker address %q: %w", addr, err)
	}
	var addrs []netip.Addr
	if a, err := netip.ParseAddr(host); err == nil {
		addrs = []netip.Addr{a}
	} else {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if addrs, err = net.DefaultResolver.LookupNetIP(ctx, "ip", host); err != nil {
			return fmt.Errorf("resolve %s: %w", host, err)
		}
	}
	for _, a := range addrs {
		if !a.Unmap().IsLoopback() {
			return fmt.Errorf("broker address %s (%s) is not a loopback address; pass --allow-remote to load a remote broker", addr, a)
		}
	}
	return nil
}

func expand(template string, i int) string {
	if !strings.Contains(template, "%i") {
		return template
	}
	return strings.ReplaceAll(template, "%i", strconv.Itoa(i))
}

// Result is the outcome of one run. Message counts cover the whole run
// (warm-up and drain included); rates and latency cover the measurement
// window only.
type Result struct {
	Scenario    string  `json:"scenario"`
	Broker      string  `json:"broker"`
	Transport   string  `json:"transport"`
	TLS         string  `json:"tls,omitempty"` // negotiated version and cipher suite, e.g. "TLS 1.3 TLS_AES_128_GCM_SHA256"
	MQTT        string  `json:"mqtt"`
	QoS         int     `json:"qos"`
	PayloadSize int     `json:"payload_size"`
	TargetRate  float64 `json:"target_rate"` // msg/s, 0 = as fast as possible
	Inflight    int     `json:"inflight,omitempty"`
	DurationS   float64 `json:"duration_s"`
	WarmupS     float64 `json:"warmup_s"`
	Publishers  int     `json:"publishers"`
	Subscribers int     `json:"subscribers"`

	Connect ConnectStats `json:"connect"`

	Sent       int64   `json:"sent"`
	Acked      int64   `json:"acked"`
	Refused    int64   `json:"refused"`
	Received   int64   `json:"received"`
	Expected   int64   `json:"expected"`
	Lost       int64   `json:"lost"`
	Duplicates int64   `json:"duplicates"`
	OutOfOrder int64   `json:"out_of_order"`
	Late       int64   `json:"late"`
	Unexpected int64   `json:"unexpected"`
	BadAcks    int64   `json:"bad_acks"`
	SendRate   float64 `json:"send_rate"` // msg/s sent in the window
	RecvRate   float64 `json:"recv_rate"` // msg/s received in the window
	Latency    Latency `json:"latency"`

	Disconnected int      `json:"disconnected"` // connections lost during the run
	Errors       []string `json:"errors,omitempty"`
	Interrupted  bool     `json:"interrupted,omitempty"`

	BrokerProc *ProcStats `json:"broker_process,omitempty"`
	Generator  ProcStats  `json:"generator_process"`
}

// ConnectStats describes the connection phase.
type ConnectStats struct {
	Attempted   int     `json:"attempted"`
	Established int     `json:"established"`
	Failed      int     `json:"failed"`
	Rate        float64 `json:"rate"` // established per second
	Latency     Latency `json:"latency"`
}

// ProcStats is a process's resource use during the run, from /proc.
type ProcStats struct {
	PID         int     `json:"pid"`
	CPUSeconds  float64 `json:"cpu_s"`             // user+system during the measurement window
	CPUPercent  float64 `json:"cpu_percent"`       // of one core
	CPUPerMsgUs float64 `json:"cpu_per_msg_us"`    // CPU µs per message received in the window
	RSSBefore   int64   `json:"rss_before"`        // bytes, before connecting
	RSSAfter    int64   `json:"rss_after"`         // bytes, at the end, still connected
	RSSPeak     int64   `json:"rss_peak"`          // VmHWM
	RSSMid      int64   `json:"rss_mid,omitempty"` // conn: bytes, with half the connections open
	RSSPerConn  int64   `json:"rss_per_conn"`      // conn: (after-mid)/(connections opened after mid)
	Threads     int     `json:"threads,omitempty"` // at the end
	SampleError string  `json:"sample_error,omitempty"`
}

// runner holds the state of one run.
type runner struct {
	cfg    *Config
	log    *slog.Logger
	dialer *dialer

	clients []*client
	pubs    []*client
	subs    []*client
	sinks   []*sink
	shards  []*histShard

	pubStart, pubEnd time.Time
	winStart, winEnd int64 // unix nanos; set before publishing starts
	pubStop          chan struct{}

	errMu  sync.Mutex
	errors []string
}

const maxErrors = 10

func (r *runner) addError(format string, args ...any) {
	r.errMu.Lock()
	defer r.errMu.Unlock()
	if len(r.errors) < maxErrors {
		r.errors = append(r.errors, fmt.Sprintf(format, args...))
	} else if len(r.errors) == maxErrors {
		r.errors = append(r.errors, "(more errors not shown)")
	}
}

// Run executes one scenario. It returns when the run is over (duration,
// warm-up and drain elapsed, or ctx cancelled) with every connection closed.
// An error means the run could not take place; problems during the run
// (failed connections, losses) are in the Result.
func Run(ctx context.Context, cfg Config, log *slog.Logger) (*Result, error) {
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := checkLoopback(ctx, &cfg); err != nil {
		return nil, err
	}
	d, err := newDialer(&cfg)
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &runner{cfg: &cfg, log: log, dialer: d, pubStop: make(chan struct{})}
	r.winStart, r.winEnd = 1<<62, 1<<62
	r.plan()
	res := r.newResult()
	r.run(ctx, res)
	r.checkDisconnected(res)
	r.closeAll()
	if st := d.tlsState.Load(); st != nil {
		res.TLS = *st
	}
	return r.finish(res), nil
}

// run connects, publishes and drains; the connections stay open.
func (r *runner) run(ctx context.Context, res *Result) {
	cfg := r.cfg
	var err error

	brokerPID := ""
	if cfg.BrokerPID > 0 {
		brokerPID = strconv.Itoa(cfg.BrokerPID)
		res.BrokerProc = &ProcStats{PID: cfg.BrokerPID}
	}
	var brokerBefore procSample
	if brokerPID != "" {
		if brokerBefore, err = readProc(brokerPID); err != nil {
			res.BrokerProc.SampleError = err.Error()
			brokerPID = ""
		}
	}

	// conn: the memory per connection is the slope between half and all
	// of the connections, so that heap a broker freed after starting (and
	// still holds) does not hide the first connections' cost.
	var brokerMid procSample
	var midConns int
	var mid func(established int)
	if brokerPID != "" && cfg.Scenario == ScenarioConn {
		mid = func(established int) {
			time.Sleep(500 * time.Millisecond) // let the broker finish the last handshakes
			brokerMid, _ = readProc(brokerPID)
			midConns = established
		}
	}
	r.connectAll(ctx, res, mid)
	if ctx.Err() != nil {
		res.Interrupted = true
		return
	}

	keepDone := make(chan struct{})
	defer close(keepDone)
	if cfg.KeepAlive > 0 {
		go r.keepAlive(keepDone)
	}

	if cfg.OnStart != nil {
		cfg.OnStart()
	}
	// Timeline.
	now := time.Now()
	r.pubStart = now.Add(5 * time.Millisecond)
	r.winStart = r.pubStart.Add(cfg.Warmup).UnixNano()
	r.pubEnd = r.pubStart.Add(cfg.Warmup + cfg.Duration)
	r.winEnd = r.pubEnd.UnixNano()

	var sampleMu sync.Mutex
	var brokerWin, selfWin procSample
	winTimer := time.AfterFunc(time.Until(time.Unix(0, r.winStart)), func() {
		sampleMu.Lock()
		defer sampleMu.Unlock()
		selfWin, _ = readProc("self")
		if brokerPID != "" {
			brokerWin, _ = readProc(brokerPID)
		}
	})
	defer winTimer.Stop()

	var pubWG sync.WaitGroup
	if len(r.pubs) > 0 {
		perPub := cfg.Rate / float64(len(r.pubs))
		for i, c := range r.pubs {
			var phase time.Duration
			if perPub > 0 {
				phase = time.Duration(float64(time.Second) / perPub * float64(i) / float64(len(r.pubs)))
			}
			pubWG.Add(1)
			go func() {
				defer pubWG.Done()
				c.publishLoop(perPub, phase)
			}()
		}
	}
	progDone := make(chan struct{})
	var progWG sync.WaitGroup
	if cfg.Progress != nil {
		progWG.Add(1)
		go func() {
			defer progWG.Done()
			r.progress(progDone)
		}()
	}

	select {
	case <-time.After(time.Until(r.pubEnd)):
	case <-ctx.Done():
		res.Interrupted = true
	}
	close(r.pubStop)
	pubWG.Wait()
	sampleMu.Lock()
	selfEnd, _ := readProc("self")
	var brokerEnd procSample
	if brokerPID != "" {
		brokerEnd, _ = readProc(brokerPID)
	}
	sampleMu.Unlock()
	if !res.Interrupted {
		r.drain(ctx)
	}
	close(progDone)
	progWG.Wait()

	// Resource use over the window (or the hold, for conn).
	winDur := time.Duration(r.winEnd - r.winStart)
	recvWin := int64(0)
	for _, c := range r.subs {
		recvWin += c.recvWin.Load()
	}
	procStats := func(ps *ProcStats, start, end procSample) {
		if start.at.IsZero() || end.at.IsZero() {
			return
		}
		cpu := end.cpu - start.cpu
		ps.CPUSeconds = round3(cpu.Seconds())
		ps.CPUPercent = round1(100 * cpu.Seconds() / winDur.Seconds())
		if recvWin > 0 {
			ps.CPUPerMsgUs = round3(float64(cpu.Microseconds()) / float64(recvWin))
		}
	}
	procStats(&res.Generator, selfWin, selfEnd)
	if brokerPID != "" {
		bp := res.BrokerProc
		procStats(bp, brokerWin, brokerEnd)
		bp.RSSBefore = brokerBefore.rss
		if s, err := readProc(brokerPID); err == nil {
			bp.RSSAfter, bp.RSSPeak, bp.Threads = s.rss, s.hwm, s.threads
			if n := res.Connect.Established - midConns; n > 0 && !brokerMid.at.IsZero() {
				bp.RSSMid = brokerMid.rss
				bp.RSSPerConn = (s.rss - brokerMid.rss) / int64(n)
			}
		}
	}
}

func round1(f float64) float64 { return float64(int64(f*10+0.5)) / 10 }
func round3(f float64) float64 { return float64(int64(f*1000+0.5)) / 1000 }

// plan creates the clients and sinks of the scenario (not yet connected).
func (r *runner) plan() {
	cfg := r.cfg
	n := 0
	add := func(ro role) *client {
		c := &client{r: r, idx: n, role: ro, version: cfg.MQTTVersion}
		c.id = expand(cfg.ClientID, n)
		n++
		r.clients = append(r.clients, c)
		return c
	}
	nShards := max(1, min(4*runtime.GOMAXPROCS(0), 16))
	r.shards = newHistShards(nShards)

	if cfg.Scenario == ScenarioConn {
		for range cfg.Conns {
			add(roleIdle)
		}
		return
	}
	var shared *sink
	if cfg.Scenario == ScenarioShared && cfg.Subs > 0 {
		shared = &sink{shared: true, tr: NewTracker(0, cfg.Pubs)}
		r.sinks = append(r.sinks, shared)
	}
	for i := range cfg.Subs {
		c := add(roleSub)
		c.shard = r.shards[i%nShards]
		if len(cfg.SubAddrs) > 0 {
			c.addr = cfg.SubAddrs[i%len(cfg.SubAddrs)]
		}
		switch cfg.Scenario {
		case ScenarioP2P:
			c.subTopic = expand(cfg.Topic, i)
			c.sink = &sink{tr: NewTracker(uint32(i), 1)}
		case ScenarioShared:
			c.subTopic = "$share/" + cfg.ShareGroup + "/" + expand(cfg.Filter, i)
			c.sink = shared
			c.order = make([]uint64, cfg.Pubs)
		case ScenarioFanIn, ScenarioFanOut:
			c.subTopic = expand(cfg.Filter, i)
			c.sink = &sink{tr: NewTracker(0, cfg.Pubs)}
		default: // sub: no publishers of ours, no accounting
			c.subTopic = expand(cfg.Filter, i)
		}
		if c.sink != nil && !c.sink.shared {
			r.sinks = append(r.sinks, c.sink)
		}
		r.subs = append(r.subs, c)
	}
	if cfg.Scenario == ScenarioSub {
		return
	}
	for i := range cfg.Pubs {
		c := add(rolePub)
		c.pubIdx = uint32(i)
		if len(cfg.PubAddrs) > 0 {
			c.addr = cfg.PubAddrs[i%len(cfg.PubAddrs)]
		}
		c.topic = expand(cfg.Topic, i)
		r.pubs = append(r.pubs, c)
	}
}

func (r *runner) newResult() *Result {
	cfg := r.cfg
	mqtt := "3.1.1"
	if cfg.MQTTVersion == packet.V5 {
		mqtt = "5.0"
	}
	broker := cfg.Addr
	if len(cfg.PubAddrs) > 0 || len(cfg.SubAddrs) > 0 {
		list := func(a []string) string {
			if len(a) == 0 {
				return cfg.Addr
			}
			return strings.Join(a, ",")
		}
		broker = "publishers " + list(cfg.PubAddrs) + ", subscribers " + list(cfg.SubAddrs)
	}
	res := &Result{
		Scenario:    cfg.Scenario,
		Broker:      broker,
		Transport:   cfg.Transport,
		MQTT:        mqtt,
		QoS:         cfg.QoS,
		PayloadSize: cfg.PayloadSize,
		TargetRate:  cfg.Rate,
		DurationS:   cfg.Duration.Seconds(),
		WarmupS:     cfg.Warmup.Seconds(),
		Publishers:  len(r.pubs),
		Subscribers: len(r.subs),
	}
	if cfg.QoS > 0 && len(r.pubs) > 0 {
		res.Inflight = cfg.Inflight
	}
	if cfg.Scenario == ScenarioConn {
		res.QoS, res.PayloadSize = 0, 0
	}
	return res
}

// connectAll opens every connection: subscribers first (each subscribed
// before any publisher starts), then publishers.
func (r *runner) connectAll(ctx context.Context, res *Result, mid func(established int)) {
	cfg := r.cfg
	lat := hdrShard()
	var established, failed atomic.Int64
	start := time.Now()
	var slot atomic.Int64
	connectOne := func(c *client) {
		if cfg.ConnectRate > 0 {
			k := slot.Add(1) - 1
			at := start.Add(time.Duration(float64(k) / cfg.ConnectRate * float64(time.Second)))
			if !sleepUntil(at, ctx.Done(), nil) {
				return
			}
		}
		t0 := time.Now()
		if err := c.connect(ctx); err != nil {
			c.nc = nil
			if ctx.Err() == nil {
				failed.Add(1)
				r.addError("connect %s: %v", c.id, err)
			}
			return
		}
		lat.record(time.Since(t0).Nanoseconds())
		established.Add(1)
	}
	run := func(list []*client) {
		work := make(chan *client)
		var wg sync.WaitGroup
		for range min(cfg.ConnectConcurrency, max(len(list), 1)) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for c := range work {
					connectOne(c)
				}
			}()
		}
	feed:
		for _, c := range list {
			select {
			case work <- c:
			case <-ctx.Done():
				break feed
			}
		}
		close(work)
		wg.Wait()
	}
	// Subscribers first, then publishers and idle connections.
	var first, rest []*client
	for _, c := range r.clients {
		if c.role == roleSub {
			first = append(first, c)
		} else {
			rest = append(rest, c)
		}
	}
	run(first)
	var paused time.Duration
	if mid != nil && len(rest) > 1 {
		h := len(rest) / 2
		run(rest[:h])
		t := time.Now()
		mid(int(established.Load()))
		paused = time.Since(t)
		start = start.Add(paused) // rate-limited slots resume where they were
		run(rest[h:])
	} else {
		run(rest)
	}
	el := time.Since(start)
	res.Connect.Attempted = len(r.clients)
	res.Connect.Established = int(established.Load())
	res.Connect.Failed = int(failed.Load())
	if el > 0 {
		res.Connect.Rate = round1(float64(established.Load()) / el.Seconds())
	}
	res.Connect.Latency = summarize(mergeShards([]*histShard{lat}))
	// Connections that failed take no part: drop failed publishers, and
	// subscribers from the accounting.
	keep := r.pubs[:0]
	for _, c := range r.pubs {
		if c.nc != nil {
			keep = append(keep, c)
		}
	}
	r.pubs = keep
	r.sinks = r.sinks[:0]
	seen := map[*sink]bool{}
	ks := r.subs[:0]
	for _, c := range r.subs {
		if c.nc == nil {
			continue
		}
		ks = append(ks, c)
		if c.sink != nil && !seen[c.sink] {
			seen[c.sink] = true
			r.sinks = append(r.sinks, c.sink)
		}
	}
	r.subs = ks
	if res.Connect.Failed > 0 {
		r.log.Warn("connections failed", "failed", res.Connect.Failed, "established", res.Connect.Established)
	}
}

func hdrShard() *histShard { return newHistShards(1)[0] }

// keepAlive pings connections that wrote nothing for half the keep-alive.
func (r *runner) keepAlive(done <-chan struct{}) {
	t := time.NewTicker(r.cfg.KeepAlive / 2)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
			for _, c := range r.clients {
				if c.nc != nil && !c.closing.Load() {
					c.ping()
				}
			}
		}
	}
}

// sentCounts returns the messages sent per publisher index.
func (r *runner) sentCounts() []int64 {
	sent := make([]int64, r.cfg.Pubs)
	for _, c := range r.pubs {
		sent[c.pubIdx] = c.sent.Load()
	}
	return sent
}

// drain waits for the messages still on their way: until every sink has
// everything its publishers sent and nothing awaits acknowledgement, or
// nothing has arrived for a second, or the grace period ends.
func (r *runner) drain(ctx context.Context) {
	deadline := time.Now().Add(r.cfg.Drain)
	sent := r.sentCounts()
	lastRecv, lastChange := int64(-1), time.Now()
	idle := min(time.Second, r.cfg.Drain)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		complete := true
		for _, s := range r.sinks {
			if s.uniq.Load() < s.tr.Expected(sent) {
				complete = false
				break
			}
		}
		inflight := 0
		for _, c := range r.pubs {
			inflight += c.inflight()
		}
		if complete && inflight == 0 {
			return
		}
		var recv int64
		for _, c := range r.subs {
			recv += c.received.Load()
		}
		for _, c := range r.pubs {
			recv += c.acked.Load()
		}
		if recv != lastRecv {
			lastRecv, lastChange = recv, time.Now()
		} else if time.Since(lastChange) >= idle {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// progress prints one line per interval.
func (r *runner) progress(done <-chan struct{}) {
	t := time.NewTicker(r.cfg.ProgressInterval)
	defer t.Stop()
	var lastSent, lastRecv int64
	last := time.Now()
	for {
		select {
		case <-done:
			return
		case now := <-t.C:
			var sent, recv int64
			for _, c := range r.pubs {
				sent += c.sent.Load()
			}
			for _, c := range r.subs {
				recv += c.received.Load()
			}
			el := now.Sub(last).Seconds()
			phase := "run"
			switch {
			case now.UnixNano() < r.winStart:
				phase = "warm-up"
			case now.UnixNano() >= r.winEnd:
				phase = "drain"
			}
			fmt.Fprintf(r.cfg.Progress, "%7s  %5.1fs  sent %10d (%9.0f/s)  received %10d (%9.0f/s)\n",
				phase, now.Sub(r.pubStart).Seconds(), sent, float64(sent-lastSent)/el, recv, float64(recv-lastRecv)/el)
			lastSent, lastRecv, last = sent, recv, now
		}
	}
}

// closeAll disconnects every client and waits (bounded) for the readers.
func (r *runner) closeAll() {
	work := make(chan *client)
	var wg sync.WaitGroup
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := range work {
				c.close()
			}
		}()
	}
	for _, c := range r.clients {
		if c.nc != nil {
			work <- c
		}
	}
	close(work)
	wg.Wait()
	deadline := time.NewTimer(2 * time.Second)
	defer deadline.Stop()
	for _, c := range r.clients {
		if c.nc == nil || c.dead == nil {
			continue
		}
		select {
		case <-c.dead:
		case <-deadline.C:
			r.log.Warn("reader goroutines still running after close")
			return
		}
	}
}

// checkDisconnected counts the connections the broker closed during the run.
func (r *runner) checkDisconnected(res *Result) {
	for _, c := range r.clients {
		if c.nc == nil || c.dead == nil || c.closing.Load() {
			continue
		}
		select {
		case <-c.dead:
			res.Disconnected++
			r.addError("%s disconnected: %v", c.id, c.err)
		default:
		}
	}
}

// finish gathers the counts once every connection is closed and its reader
// has exited.
func (r *runner) finish(res *Result) *Result {
	cfg := r.cfg
	sent := r.sentCounts()
	var sentWin int64
	for _, c := range r.pubs {
		res.Sent += c.sent.Load()
		sentWin += c.sentWin.Load()
		res.Acked += c.acked.Load()
		res.Refused += c.refused.Load()
		res.BadAcks += c.badAcks.Load()
	}
	var recvWin int64
	for _, c := range r.subs {
		res.Received += c.received.Load()
		recvWin += c.recvWin.Load()
		res.OutOfOrder += c.ooo.Load()
		res.Unexpected += c.noHeader.Load()
	}
	for _, s := range r.sinks {
		if s.shared {
			s.mu.Lock()
		}
		res.Expected += s.tr.Expected(sent)
		res.Lost += s.tr.Lost(sent)
		res.Duplicates += s.tr.Duplicates
		if !s.shared {
			res.OutOfOrder += s.tr.OutOfOrder
		}
		res.Late += s.tr.Late
		res.Unexpected += s.tr.Unexpected
		if s.shared {
			s.mu.Unlock()
		}
	}
	if win := time.Duration(r.winEnd - r.winStart); win > 0 && r.winEnd < 1<<62 {
		res.SendRate = round1(float64(sentWin) / win.Seconds())
		res.RecvRate = round1(float64(recvWin) / win.Seconds())
	}
	res.Latency = summarize(mergeShards(r.shards))
	if res.BadAcks > 0 {
		r.addError("%d acknowledgements for packet identifiers not in flight", res.BadAcks)
	}
	if cfg.Scenario == ScenarioConn {
		res.Publishers, res.Subscribers = 0, 0
	}
	r.errMu.Lock()
	res.Errors = append([]string(nil), r.errors...)
	r.errMu.Unlock()
	return res
}

// Failed reports whether the run shows a fault: failed or dropped
// connections, refused or unknown acknowledgements, or (QoS > 0) messages
// lost, duplicated or out of order.
func (res *Result) Failed() bool {
	if res.Connect.Failed > 0 || res.Disconnected > 0 || res.BadAcks > 0 || res.Refused > 0 || res.Interrupted {
		return true
	}
	return res.QoS > 0 && (res.Lost > 0 || res.OutOfOrder > 0 || (res.QoS == 2 && res.Duplicates > 0))
}
