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
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/isobar-mq/isobar/internal/mqtt/packet"
)

const usage = `isobar-bench: MQTT load generator.

Usage:
  isobar-bench SCENARIO [flags]

Scenarios:
  conn     open --conns connections (at --connect-rate) and hold them for --duration
  pub      --pubs publishers, no subscribers (publish rate, acknowledgements)
  sub      --subs subscribers on --filter (messages from another generator)
  p2p      --pubs publisher/subscriber pairs, one topic per pair
  fanin    --pubs publishers, --subs (1) subscriber on a wildcard filter
  fanout   --pubs (1) publisher, --subs subscribers on its topic
  shared   --pubs (1) publisher(s), --subs subscribers in one $share group

  compare  run the comparison against Mosquitto and mochi-mqtt
           (see scripts/bench-compare and isobar-bench compare --help)
  cluster  the same scenarios on one node and on a 3-node Isobar cluster
           (see scripts/bench-cluster and isobar-bench cluster --help)
  stomp    STOMP throughput and latency on ActiveMQ 5.17 and Isobar, and
           Isobar's MQTT path for the same pattern (isobar-bench stomp --help)

Counts cover the whole run, rates and latency the measurement window
(after --warmup, for --duration). Exit status: 0 clean run, 1 faults seen
(failed or dropped connections; at QoS > 0 lost, duplicated or reordered
messages), 2 usage or setup error.

Flags:
`

// Main is the command line entry point (isobar-bench, isobar bench). args
// are the arguments after the command name.
func Main(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fs, _ := newFlagSet(stderr)
		w := stderr
		if len(args) > 0 {
			w = stdout
		}
		fmt.Fprint(w, usage)
		fs.SetOutput(w)
		fs.PrintDefaults()
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	if args[0] == "compare" {
		return compareMain(args[1:], stdout, stderr)
	}
	if args[0] == "cluster" {
		return clusterMain(args[1:], stdout, stderr)
	}
	if args[0] == "stomp" {
		return stompMain(args[1:], stdout, stderr)
	}
	cfg, opts, err := ParseArgs(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		if !errors.Is(err, errReported) {
			fmt.Fprintln(stderr, "isobar-bench:", err)
		}
		return 2
	}
	if !opts.quiet {
		cfg.Progress = stderr
	}
	level := slog.LevelWarn
	if opts.quiet {
		level = slog.LevelError
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	ctx, stop := signalContext()
	defer stop()
	res, err := Run(ctx, cfg, log)
	if err != nil {
		fmt.Fprintln(stderr, "isobar-bench:", err)
		return 2
	}
	if opts.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(res); err != nil {
			fmt.Fprintln(stderr, "isobar-bench:", err)
			return 2
		}
	} else {
		WriteTable(stdout, res)
	}
	if res.Failed() {
		return 1
	}
	return 0
}

func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

// errReported is a usage error the flag package already printed.
var errReported = errors.New("usage error")

// ParseArgs turns command line arguments (scenario first, then flags) into
// a Config. Flag errors are printed to stderr.
func ParseArgs(args []string, stderr io.Writer) (Config, *cliOpts, error) {
	if len(args) == 0 {
		return Config{}, nil, errors.New("no scenario")
	}
	fs, opts := newFlagSet(stderr)
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return Config{}, nil, err
		}
		return Config{}, nil, errReported
	}
	if fs.NArg() > 0 {
		return Config{}, nil, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	cfg := opts.cfg
	cfg.Scenario = args[0]
	switch opts.mqtt {
	case "3.1.1", "311", "4":
		cfg.MQTTVersion = packet.V311
	case "5", "5.0", "50":
		cfg.MQTTVersion = packet.V5
	default:
		return Config{}, nil, fmt.Errorf("--mqtt %q: want 3.1.1 or 5", opts.mqtt)
	}
	if opts.localAddrs != "" {
		cfg.LocalAddrs = strings.Split(opts.localAddrs, ",")
	}
	if opts.pubAddrs != "" {
		cfg.PubAddrs = strings.Split(opts.pubAddrs, ",")
	}
	if opts.subAddrs != "" {
		cfg.SubAddrs = strings.Split(opts.subAddrs, ",")
	}
	return cfg, opts, nil
}

type cliOpts struct {
	cfg        Config
	mqtt       string
	localAddrs string
	pubAddrs   string
	subAddrs   string
	json       bool
	quiet      bool
}

func newFlagSet(stderr io.Writer) (*flag.FlagSet, *cliOpts) {
	o := &cliOpts{}
	c := &o.cfg
	fs := flag.NewFlagSet("isobar-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.Addr, "addr", "127.0.0.1:1883", "broker `host:port`")
	fs.StringVar(&c.Transport, "transport", "tcp", "tcp, tls, ws or wss")
	fs.StringVar(&c.WSPath, "ws-path", "/mqtt", "WebSocket path")
	fs.BoolVar(&c.Insecure, "insecure", false, "TLS: accept any broker certificate (self-signed)")
	fs.StringVar(&c.CAFile, "ca", "", "TLS: CA bundle to verify the broker `file`")
	fs.BoolVar(&c.AllowRemote, "allow-remote", false, "allow a broker (or source) address outside the loopback range")
	fs.StringVar(&o.localAddrs, "local-addrs", "", "comma-separated source `IPs` used round robin, e.g. 127.0.0.2,127.0.0.3 (more ephemeral ports)")
	fs.StringVar(&o.pubAddrs, "pub-addrs", "", "comma-separated broker `host:port` list for the publishers, round robin (default --addr), e.g. the nodes of a cluster")
	fs.StringVar(&o.subAddrs, "sub-addrs", "", "comma-separated broker `host:port` list for the subscribers, round robin (default --addr)")
	fs.StringVar(&o.mqtt, "mqtt", "3.1.1", "MQTT version: 3.1.1 or 5")
	fs.IntVar(&c.QoS, "qos", 0, "QoS of publications and subscriptions (0, 1, 2)")
	fs.BoolVar(&c.Retain, "retain", false, "publish with the retain flag")
	fs.IntVar(&c.PayloadSize, "size", 64, "payload size in bytes (at least 20: timestamp, sequence, publisher)")
	fs.Float64Var(&c.Rate, "rate", 0, "total publish rate in msg/s over all publishers (0 = as fast as possible)")
	fs.IntVar(&c.Inflight, "inflight", 20, "QoS 1/2 window per publisher when publishing as fast as possible")
	fs.DurationVar(&c.Duration, "duration", 0, "measured publishing time; conn: hold time (default 10s)")
	fs.DurationVar(&c.Warmup, "warmup", time.Second, "publishing before the measurement window")
	fs.DurationVar(&c.Drain, "drain", 0, "grace period for messages still in flight after publishing (default 5s)")
	fs.IntVar(&c.Conns, "conns", 0, "conn: number of connections (default 1000)")
	fs.IntVar(&c.Pubs, "pubs", 0, "publishers (p2p: pairs); default depends on the scenario")
	fs.IntVar(&c.Subs, "subs", 0, "subscribers; default depends on the scenario")
	fs.StringVar(&c.Topic, "topic", "", "publish topic `template` (%i = publisher index); default bench/SCENARIO[/%i]")
	fs.StringVar(&c.Filter, "filter", "", "subscription filter `template` (%i = subscriber index); default from --topic")
	fs.StringVar(&c.ShareGroup, "group", "bench", "shared: subscription group name")
	fs.StringVar(&c.ClientID, "client-id", "", "client identifier `template` (%i = connection index; default bench-RANDOM-%i)")
	fs.StringVar(&c.Username, "username", "", "user name")
	fs.StringVar(&c.Password, "password", "", "password")
	fs.Float64Var(&c.ConnectRate, "connect-rate", 0, "new connections per second (0 = unlimited)")
	fs.IntVar(&c.ConnectConcurrency, "connect-concurrency", 64, "connection attempts in parallel")
	fs.DurationVar(&c.ConnectTimeout, "connect-timeout", 0, "timeout per connection up to CONNACK/SUBACK (default 10s)")
	fs.DurationVar(&c.KeepAlive, "keepalive", 0, "MQTT keep-alive (default 60s)")
	fs.BoolFunc("clean", "false: subscribers keep persistent sessions (MQTT 3.1.1 clean session 0, MQTT 5 --session-expiry)", func(v string) error {
		b, err := strconv.ParseBool(v)
		c.PersistentSubs = !b
		return err
	})
	fs.DurationVar(&c.SessionExpiry, "session-expiry", 0, "MQTT 5 Session Expiry Interval of persistent subscriber sessions (default 5m with --clean=false)")
	fs.IntVar(&c.BrokerPID, "broker-pid", 0, "sample this local process's CPU and memory (the broker's PID)")
	fs.BoolVar(&o.json, "json", false, "print the result as JSON")
	fs.BoolVar(&o.quiet, "quiet", false, "no progress lines")
	return fs, o
}

// WriteTable prints a result for people.
func WriteTable(w io.Writer, r *Result) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k string, format string, args ...any) {
		fmt.Fprintf(tw, "%s\t"+format+"\n", append([]any{k}, args...)...)
	}
	row("scenario", "%s (%s, MQTT %s, %s)", r.Scenario, r.Broker, r.MQTT, r.Transport)
	if r.TLS != "" {
		row("tls", "%s", r.TLS)
	}
	if r.Scenario != ScenarioConn {
		rate := "max"
		if r.TargetRate > 0 {
			rate = fmt.Sprintf("%.0f msg/s", r.TargetRate)
		}
		row("load", "%d pub, %d sub, QoS %d, %d B payload, rate %s, window %.3gs after %.3gs warm-up",
			r.Publishers, r.Subscribers, r.QoS, r.PayloadSize, rate, r.DurationS, r.WarmupS)
	}
	row("connections", "%d/%d established, %d failed, %.0f/s, connect p50 %s p99 %s",
		r.Connect.Established, r.Connect.Attempted, r.Connect.Failed, r.Connect.Rate,
		us(r.Connect.Latency.P50), us(r.Connect.Latency.P99))
	if r.Scenario != ScenarioConn {
		row("sent", "%d (%.0f msg/s), acked %d", r.Sent, r.SendRate, r.Acked)
		row("received", "%d (%.0f msg/s)", r.Received, r.RecvRate)
		if r.Scenario != ScenarioSub && r.Scenario != ScenarioPub {
			row("accounting", "expected %d, lost %d, duplicated %d, out of order %d, unexpected %d",
				r.Expected, r.Lost, r.Duplicates, r.OutOfOrder, r.Unexpected)
		}
		l := r.Latency
		if l.Count > 0 {
			row("latency", "p50 %s  p90 %s  p99 %s  p99.9 %s  max %s  (%d samples)",
				us(l.P50), us(l.P90), us(l.P99), us(l.P999), us(l.Max), l.Count)
		}
	}
	if r.Disconnected > 0 {
		row("disconnected", "%d", r.Disconnected)
	}
	if b := r.BrokerProc; b != nil {
		if b.SampleError != "" {
			row("broker", "not sampled: %s", b.SampleError)
		} else {
			mem := fmt.Sprintf("RSS %s -> %s (peak %s)", mib(b.RSSBefore), mib(b.RSSAfter), mib(b.RSSPeak))
			if r.Scenario == ScenarioConn {
				row("broker", "pid %d, RSS %s, %s with half the connections, %s with all (peak %s): %s per connection",
					b.PID, mib(b.RSSBefore), mib(b.RSSMid), mib(b.RSSAfter), mib(b.RSSPeak), kib(b.RSSPerConn))
			} else {
				row("broker", "pid %d, CPU %.1f%% (%.2f µs/msg), %s", b.PID, b.CPUPercent, b.CPUPerMsgUs, mem)
			}
		}
	}
	row("generator", "CPU %.1f%%", r.Generator.CPUPercent)
	if r.Interrupted {
		row("interrupted", "yes")
	}
	for _, e := range r.Errors {
		row("error", "%s", e)
	}
	_ = tw.Flush()
}

func us(v int64) string {
	switch {
	case v >= 10_000_000:
		return fmt.Sprintf("%.0fs", float64(v)/1e6)
	case v >= 10_000:
		return fmt.Sprintf("%.1fms", float64(v)/1e3)
	default:
		return fmt.Sprintf("%dµs", v)
	}
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
func kib(b int64) string { return fmt.Sprintf("%.1f KiB", float64(b)/(1<<10)) }
