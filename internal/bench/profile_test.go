package bench

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/isobar-mq/isobar/internal/testutil"
)

// TestProfileBroker runs the generator against an in-process Isobar (the
// limits of scripts/bench-compare) and writes CPU, allocation and mutex
// profiles. The broker has no profiling flag; running it inside the test
// binary gives runtime/pprof everything. The generator runs in the same
// process: its functions are in package bench, the broker's in broker,
// topic, listener and packet.
//
//	ISOBAR_BENCH_PROFILE=/tmp/prof go test -run TestProfileBroker -v ./internal/bench
//	ISOBAR_BENCH_PROFILE_ARGS="fanin --qos 1 --pubs 100 --rate 50000" ...
//	ISOBAR_BENCH_PROFILE_SYNC=always ISOBAR_BENCH_PROFILE_ARGS="p2p --qos 1 --clean=false" ...
//	go tool pprof -top -nodecount 40 /tmp/prof/cpu.pprof
//
// Skipped unless ISOBAR_BENCH_PROFILE names the output directory.
func TestProfileBroker(t *testing.T) {
	dir := os.Getenv("ISOBAR_BENCH_PROFILE")
	if dir == "" {
		t.Skip("set ISOBAR_BENCH_PROFILE=DIR to profile the broker")
	}
	args := os.Getenv("ISOBAR_BENCH_PROFILE_ARGS")
	if args == "" {
		args = "fanout --qos 1 --subs 100 --duration 10s --warmup 1s"
	}
	cfg, _, err := ParseArgs(strings.Fields(args), os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	lim := DefaultCompareLimits
	conf := "listeners:\n  - {name: mqtt, protocol: mqtt, address: \"127.0.0.1:0\"}\nhttp: {enabled: false}\n" +
		"mqtt: {max_inflight: " + strconv.Itoa(lim.Inflight) + ", receive_maximum: " + strconv.Itoa(lim.ReceiveMax) +
		", max_queued_messages: " + strconv.Itoa(lim.Queued) + "}\n"
	// ISOBAR_BENCH_PROFILE_SYNC=always|interval: a Pebble store in a
	// temporary directory with that sync policy (default: memory). Only
	// persistent sessions are stored: add --clean=false to the arguments.
	if sync := os.Getenv("ISOBAR_BENCH_PROFILE_SYNC"); sync != "" {
		conf += "store: {mode: pebble, data_dir: \"" + filepath.Join(t.TempDir(), "data") + "\", sync: " + sync + "}\n"
	}
	n := testutil.RunNode(t, conf)
	cfg.Addr = testutil.Addr(t, n, "mqtt")
	if cfg.Inflight == 20 {
		cfg.Inflight = lim.ReceiveMax
	}
	cfg.BrokerPID = os.Getpid()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	runtime.SetMutexProfileFraction(100)
	defer runtime.SetMutexProfileFraction(0)
	// A heap profile in the middle of the run, connections open.
	midDone := make(chan struct{})
	cfg.OnStart = func() {
		go func() {
			defer close(midDone)
			time.Sleep(cfg.Warmup + cfg.Duration/2)
			runtime.GC()
			if f, err := os.Create(filepath.Join(dir, "heap-mid.pprof")); err == nil {
				_ = pprof.Lookup("heap").WriteTo(f, 0)
				_ = f.Close()
			}
		}()
	}
	cpu, err := os.Create(filepath.Join(dir, "cpu.pprof"))
	if err != nil {
		t.Fatal(err)
	}
	if err := pprof.StartCPUProfile(cpu); err != nil {
		t.Fatal(err)
	}
	res, err := Run(context.Background(), cfg, nil)
	pprof.StopCPUProfile()
	<-midDone
	_ = cpu.Close()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"allocs", "mutex", "heap"} {
		f, err := os.Create(filepath.Join(dir, p+".pprof"))
		if err != nil {
			t.Fatal(err)
		}
		if err := pprof.Lookup(p).WriteTo(f, 0); err != nil {
			t.Fatal(err)
		}
		_ = f.Close()
	}
	var b strings.Builder
	WriteTable(&b, res)
	t.Logf("profiles in %s\n%s", dir, b.String())
}
