package bench

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/isobar-mq/isobar/internal/stomptest"
)

// isobar-bench stomp runs the same STOMP load against a private ActiveMQ
// 5.17 (the Debian package, started by the benchmark) and Isobar's STOMP
// listener, and the same pattern over Isobar's MQTT listener, one broker
// at a time, and prints the figures side by side with their ratios.

// StompLoad is one STOMP load: Pubs publishers sending to Dest, Subs
// subscribers on it.
type StompLoad struct {
	Addr, Login, Passcode string
	Dest                  string  // /topic/... or /queue/...
	Pubs, Subs            int     // publishers, subscribers
	Size                  int     // payload bytes (at least HeaderSize)
	Rate                  float64 // total msg/s over all publishers; 0 = as fast as the receipts allow
	// Window is how many SENDs a publisher writes between receipts when
	// publishing as fast as possible: it waits for the previous receipt
	// before asking for the next, so at most 2*Window are unconfirmed
	// (STOMP has no other flow control; without it a publisher only
	// measures how fast the broker can drop).
	Window                  int
	Duration, Warmup, Drain time.Duration
}

// StompResult is what a StompLoad measured. Only messages sent in the
// measurement window (after Warmup, for Duration) count, wherever they
// arrive up to the end of Drain.
type StompResult struct {
	Sent     int64    `json:"sent"`
	Received int64    `json:"received"`
	Expected int64    `json:"expected"`
	SendRate float64  `json:"send_rate"`
	RecvRate float64  `json:"recv_rate"`
	Latency  Latency  `json:"latency"`
	Errors   []string `json:"errors,omitempty"`
}

// RunStomp runs one load.
func RunStomp(ctx context.Context, l StompLoad) (*StompResult, error) {
	if l.Size < HeaderSize {
		l.Size = HeaderSize
	}
	if l.Window <= 0 {
		l.Window = 100
	}
	res := &StompResult{}
	var mu sync.Mutex
	addErr := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		if len(res.Errors) < 20 {
			res.Errors = append(res.Errors, fmt.Sprintf(format, args...))
		}
	}
	start := time.Now().Add(500 * time.Millisecond) // after every connection is up
	winStart := start.Add(l.Warmup)
	winEnd := winStart.Add(l.Duration)
	inWindow := func(sent int64) bool { return sent >= winStart.UnixNano() && sent < winEnd.UnixNano() }

	var conns []*stompConn
	defer func() {
		for _, c := range conns {
			c.close()
		}
	}()
	shards := newHistShards(max(1, min(l.Subs, 8)))
	var received atomic.Int64
	var wg sync.WaitGroup
	for i := range l.Subs {
		c, err := dialStomp(ctx, l.Addr, l.Login, l.Passcode, 10*time.Second)
		if err != nil {
			return nil, fmt.Errorf("subscriber %d: %w", i, err)
		}
		conns = append(conns, c)
		if err := c.send("SUBSCRIBE", nil, "id", "0", "destination", l.Dest, "ack", "auto", "receipt", "sub"); err != nil {
			return nil, err
		}
		if f, err := c.readFrame(); err != nil || f.command != "RECEIPT" {
			return nil, fmt.Errorf("subscriber %d: SUBSCRIBE: %v %v", i, f, err)
		}
		shard := shards[i%len(shards)]
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				f, err := c.readFrame()
				if err != nil {
					return
				}
				if f.command != "MESSAGE" {
					addErr("subscriber %d: %s %s", i, f.command, f.headers["message"])
					continue
				}
				now := time.Now().UnixNano()
				sent, _, _, ok := DecodeHeader(f.body)
				if ok && inWindow(sent) {
					received.Add(1)
					shard.record(now - sent)
				}
			}
		}()
	}
	var sent atomic.Int64
	var pwg sync.WaitGroup
	for i := range l.Pubs {
		c, err := dialStomp(ctx, l.Addr, l.Login, l.Passcode, 10*time.Second)
		if err != nil {
			return nil, fmt.Errorf("publisher %d: %w", i, err)
		}
		conns = append(conns, c)
		receipts := make(chan struct{}, 4)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				f, err := c.readFrame()
				if err != nil {
					close(receipts)
					return
				}
				if f.command == "RECEIPT" {
					receipts <- struct{}{}
				} else {
					addErr("publisher %d: %s %s", i, f.command, f.headers["message"])
				}
			}
		}()
		pwg.Add(1)
		go func() {
			defer pwg.Done()
			payload := NewPayload(l.Size)
			var interval time.Duration
			if l.Rate > 0 {
				interval = time.Duration(float64(time.Second) * float64(l.Pubs) / l.Rate)
			}
			// Publishers start spread over one interval.
			next := start.Add(time.Duration(i) * interval / time.Duration(max(1, l.Pubs)))
			outstanding := false
			for seq := uint64(0); ; seq++ {
				if interval > 0 {
					if d := time.Until(next); d > 0 {
						time.Sleep(d)
					}
					next = next.Add(interval)
				} else if seq == 0 {
					time.Sleep(time.Until(start))
				}
				now := time.Now()
				if !now.Before(winEnd) || ctx.Err() != nil {
					return
				}
				EncodeHeader(payload, now.UnixNano(), seq, uint32(i))
				h := []string{"destination", l.Dest}
				askReceipt := interval == 0 && seq%uint64(l.Window) == uint64(l.Window-1)
				if askReceipt {
					if outstanding {
						if _, ok := <-receipts; !ok {
							return
						}
					}
					h = append(h, "receipt", "r")
					outstanding = true
				}
				if err := c.send("SEND", payload, h...); err != nil {
					addErr("publisher %d: %v", i, err)
					return
				}
				if inWindow(now.UnixNano()) {
					sent.Add(1)
				}
			}
		}()
	}
	pwg.Wait()
	// Drain: wait until everything expected arrived, or Drain passed.
	per := int64(1)
	if strings.HasPrefix(l.Dest, "/topic/") {
		per = int64(l.Subs)
	}
	res.Sent = sent.Load()
	res.Expected = res.Sent * per
	deadline := time.Now().Add(l.Drain)
	for received.Load() < res.Expected && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	res.Received = received.Load()
	for _, c := range conns {
		c.close()
	}
	conns = nil
	wg.Wait()
	secs := l.Duration.Seconds()
	res.SendRate = round1(float64(res.Sent) / secs)
	res.RecvRate = round1(float64(res.Received) / secs)
	res.Latency = summarize(mergeShards(shards))
	return res, nil
}

// stompRow is one broker's figures in one scenario.
type stompRow struct {
	Broker   string   `json:"broker"`
	Protocol string   `json:"protocol"`
	SendRate float64  `json:"send_rate"`
	RecvRate float64  `json:"recv_rate"`
	LostPct  float64  `json:"lost_pct"`
	Latency  Latency  `json:"latency"`
	Errors   []string `json:"errors,omitempty"`
}

type stompScenario struct {
	Name        string     `json:"name"`
	Description string     `json:"description"`
	Rows        []stompRow `json:"rows"`
}

type stompOpts struct {
	isobar      string
	activemq    bool
	pubs, subs  int
	size        int
	rate        float64
	duration    time.Duration
	warmup      time.Duration
	jsonOut     string
	markdownOut string
	quick       bool
}

func stompMain(args []string, stdout, stderr io.Writer) int {
	var o stompOpts
	fs := flag.NewFlagSet("isobar-bench stomp", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.isobar, "isobar", "", "isobar binary (required)")
	fs.BoolVar(&o.activemq, "activemq", true, "also run ActiveMQ 5.17 from the Debian package activemq")
	fs.IntVar(&o.pubs, "pubs", 4, "publishers of the throughput scenarios")
	fs.IntVar(&o.subs, "subs", 4, "subscribers (topic) or consumers (queue) of the throughput scenarios")
	fs.IntVar(&o.size, "size", 64, "payload bytes")
	fs.Float64Var(&o.rate, "rate", 1000, "msg/s of the latency scenario")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "measurement window per run")
	fs.DurationVar(&o.warmup, "warmup", 2*time.Second, "publishing before the window")
	fs.StringVar(&o.jsonOut, "json-out", "", "write the results as JSON to this file")
	fs.StringVar(&o.markdownOut, "markdown-out", "", "write the table as Markdown to this file")
	fs.BoolVar(&o.quick, "quick", false, "1 s runs (smoke test)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if o.isobar == "" {
		fmt.Fprintln(stderr, "stomp: --isobar is required")
		return 2
	}
	if o.quick {
		o.duration, o.warmup = time.Second, 500*time.Millisecond
	}
	ctx, stop := signalContext()
	defer stop()
	scenarios, err := runStompBench(ctx, o, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "stomp:", err)
		return 2
	}
	writeStompTable(stdout, scenarios, false)
	if o.markdownOut != "" {
		f, err := os.Create(o.markdownOut)
		if err == nil {
			writeStompTable(f, scenarios, true)
			err = f.Close()
		}
		if err != nil {
			fmt.Fprintln(stderr, "stomp:", err)
			return 2
		}
	}
	if o.jsonOut != "" {
		b, err := json.MarshalIndent(scenarios, "", "  ")
		if err == nil {
			err = os.WriteFile(o.jsonOut, append(b, '\n'), 0o644)
		}
		if err != nil {
			fmt.Fprintln(stderr, "stomp:", err)
			return 2
		}
	}
	return 0
}

// stompBroker is a running broker of the comparison.
type stompBroker struct {
	name            string
	stompAddr, mqtt string
	stop            func()
}

func startIsobarStomp(ctx context.Context, bin, dir string) (*stompBroker, error) {
	ports, err := freePorts(2)
	if err != nil {
		return nil, err
	}
	conf := fmt.Sprintf(`# generated by isobar-bench stomp
listeners:
  - {name: mqtt, protocol: mqtt, address: "127.0.0.1:%d"}
  - {name: stomp, protocol: stomp, address: "127.0.0.1:%d"}
log: {level: warn}
store: {mode: memory}
http: {enabled: false}
`, ports[0], ports[1])
	path := filepath.Join(dir, "isobar.yaml")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(dir, "isobar.log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "serve", "--config", path)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); logf.Close(); close(exited) }()
	b := &stompBroker{name: "isobar", mqtt: fmt.Sprintf("127.0.0.1:%d", ports[0]),
		stompAddr: fmt.Sprintf("127.0.0.1:%d", ports[1])}
	b.stop = func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}
	for _, a := range []string{b.mqtt, b.stompAddr} {
		if err := waitListening(ctx, a, exited, &waitErr); err != nil {
			b.stop()
			return nil, fmt.Errorf("isobar: %w", err)
		}
	}
	return b, nil
}

func runStompBench(ctx context.Context, o stompOpts, progress io.Writer) ([]*stompScenario, error) {
	dir, err := os.MkdirTemp("", "isobar-bench-stomp-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	drain := 5 * time.Second
	topic := &stompScenario{Name: "topic", Description: fmt.Sprintf("%d publishers -> %d subscribers on one topic, as fast as possible, %d B", o.pubs, o.subs, o.size)}
	queue := &stompScenario{Name: "queue", Description: fmt.Sprintf("%d publishers -> %d consumers of one queue (MQTT: a shared subscription, QoS 1), as fast as possible, %d B", o.pubs, o.subs, o.size)}
	lat := &stompScenario{Name: "latency", Description: fmt.Sprintf("1 publisher -> 1 subscriber on a topic at %.0f msg/s, %d B", o.rate, o.size)}
	all := []*stompScenario{topic, queue, lat}
	load := func(addr, dest string, pubs, subs int, rate float64) StompLoad {
		return StompLoad{Addr: addr, Dest: dest, Pubs: pubs, Subs: subs, Size: o.size, Rate: rate,
			Duration: o.duration, Warmup: o.warmup, Drain: drain}
	}
	runStompRows := func(name, addr string) {
		for _, sc := range []struct {
			s *stompScenario
			l StompLoad
		}{
			{topic, load(addr, "/topic/bench.topic", o.pubs, o.subs, 0)},
			{queue, load(addr, "/queue/bench.queue", o.pubs, o.subs, 0)},
			{lat, load(addr, "/topic/bench.latency", 1, 1, o.rate)},
		} {
			fmt.Fprintf(progress, "stomp: %s %s STOMP...\n", sc.s.Name, name)
			r, err := RunStomp(ctx, sc.l)
			row := stompRow{Broker: name, Protocol: "STOMP"}
			if err != nil {
				row.Errors = []string{err.Error()}
			} else {
				row.SendRate, row.RecvRate, row.Latency, row.Errors = r.SendRate, r.RecvRate, r.Latency, r.Errors
				if r.Expected > 0 {
					row.LostPct = round3(100 * float64(r.Expected-min(r.Received, r.Expected)) / float64(r.Expected))
				}
			}
			sc.s.Rows = append(sc.s.Rows, row)
		}
	}
	if o.activemq {
		if err := stomptest.ActiveMQAvailable(); err != nil {
			fmt.Fprintf(progress, "stomp: ActiveMQ skipped: %v\n", err)
		} else {
			amqDir := filepath.Join(dir, "activemq")
			if err := os.Mkdir(amqDir, 0o755); err != nil {
				return nil, err
			}
			fmt.Fprintln(progress, "stomp: starting ActiveMQ...")
			a, err := stomptest.StartActiveMQ(ctx, amqDir, stomptest.ActiveMQConfig{HeapMB: 512, MaxFrameSize: 4 << 20})
			if err != nil {
				return nil, err
			}
			runStompRows("activemq", a.StompAddr)
			a.Stop()
		}
	}
	b, err := startIsobarStomp(ctx, o.isobar, dir)
	if err != nil {
		return nil, err
	}
	defer b.stop()
	runStompRows("isobar", b.stompAddr)
	log := slog.New(slog.NewTextHandler(progress, &slog.HandlerOptions{Level: slog.LevelError}))
	for _, sc := range []struct {
		s   *stompScenario
		cfg Config
	}{
		{topic, Config{Scenario: ScenarioFanOut, Pubs: o.pubs, Subs: o.subs, QoS: 0, Topic: "bench/topic", Filter: "bench/topic"}},
		{queue, Config{Scenario: ScenarioShared, Pubs: o.pubs, Subs: o.subs, QoS: 1, Topic: "bench/queue", Filter: "bench/queue"}},
		{lat, Config{Scenario: ScenarioP2P, Pubs: 1, Subs: 1, QoS: 0, Rate: o.rate, Topic: "bench/latency"}},
	} {
		fmt.Fprintf(progress, "stomp: %s isobar MQTT...\n", sc.s.Name)
		c := sc.cfg
		c.Addr, c.PayloadSize, c.Duration, c.Warmup, c.Drain = b.mqtt, max(o.size, HeaderSize), o.duration, o.warmup, drain
		r, err := Run(ctx, c, log)
		row := stompRow{Broker: "isobar", Protocol: "MQTT"}
		if err != nil {
			row.Errors = []string{err.Error()}
		} else {
			row.SendRate, row.RecvRate, row.Latency, row.Errors = r.SendRate, r.RecvRate, r.Latency, r.Errors
			row.LostPct = round3(lostPct(r))
		}
		sc.s.Rows = append(sc.s.Rows, row)
	}
	return all, nil
}

// writeStompTable prints each scenario's rows and the ratios Isobar
// STOMP / ActiveMQ and Isobar MQTT / Isobar STOMP (received msg/s; for
// latency p50 and p99, lower is better).
func writeStompTable(w io.Writer, scenarios []*stompScenario, markdown bool) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	sep := "\t"
	if markdown {
		fmt.Fprintln(w, "| scenario | broker | protocol | sent msg/s | received msg/s | lost % | p50 | p99 |")
		fmt.Fprintln(w, "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |")
	} else {
		fmt.Fprintln(tw, strings.Join([]string{"scenario", "broker", "protocol", "sent msg/s", "received msg/s", "lost %", "p50", "p99"}, sep))
	}
	var ratios []string
	for _, s := range scenarios {
		var amq, ist, imq *stompRow
		for i := range s.Rows {
			r := &s.Rows[i]
			cells := []string{s.Name, r.Broker, r.Protocol, fmt.Sprintf("%.0f", r.SendRate), fmt.Sprintf("%.0f", r.RecvRate),
				fmt.Sprintf("%.2f", r.LostPct), us(r.Latency.P50), us(r.Latency.P99)}
			if len(r.Errors) > 0 {
				cells[len(cells)-1] += " (" + r.Errors[0] + ")"
			}
			if markdown {
				fmt.Fprintf(w, "| %s |\n", strings.Join(cells, " | "))
			} else {
				fmt.Fprintln(tw, strings.Join(cells, sep))
			}
			switch {
			case r.Broker == "activemq":
				amq = r
			case r.Protocol == "STOMP":
				ist = r
			default:
				imq = r
			}
		}
		ratio := func(label string, a, b *stompRow) {
			if a == nil || b == nil || b.RecvRate == 0 {
				return
			}
			if s.Name == "latency" && b.Latency.P50 > 0 && b.Latency.P99 > 0 {
				ratios = append(ratios, fmt.Sprintf("%s %s: p50 x%.3g, p99 x%.3g", s.Name, label,
					float64(a.Latency.P50)/float64(b.Latency.P50), float64(a.Latency.P99)/float64(b.Latency.P99)))
				return
			}
			ratios = append(ratios, fmt.Sprintf("%s %s: received x%.3g", s.Name, label, a.RecvRate/b.RecvRate))
		}
		ratio("Isobar STOMP / ActiveMQ", ist, amq)
		ratio("Isobar MQTT / Isobar STOMP", imq, ist)
	}
	_ = tw.Flush()
	if markdown {
		fmt.Fprintln(w)
	}
	for _, r := range ratios {
		if markdown {
			fmt.Fprintf(w, "- %s\n", r)
		} else {
			fmt.Fprintln(w, r)
		}
	}
}
