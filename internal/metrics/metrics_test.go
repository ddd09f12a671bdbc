package metrics_test

import (
	"context"
	"fmt"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"

	"github.com/isobar-mq/isobar/internal/broker"
	"github.com/isobar-mq/isobar/internal/metrics"
	"github.com/isobar-mq/isobar/internal/testutil"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// startBroker runs a broker with one listener named "mqtt" wrapped by the
// collector, and returns its address.
func startBroker(t testing.TB, opts broker.Options) (*broker.Server, *metrics.Collector, string) {
	t.Helper()
	srv := broker.New(opts, nil, nil)
	col := metrics.New(srv, "test")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(col.WrapListener(l, "mqtt"), "mqtt")
	}()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		<-done
	})
	return srv, col, l.Addr().String()
}

func connect(t testing.TB, addr, id string, onLost func()) mqtt.Client {
	t.Helper()
	o := mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).
		SetAutoReconnect(false).SetConnectRetry(false).SetProtocolVersion(4).
		SetConnectionLostHandler(func(mqtt.Client, error) {
			if onLost != nil {
				onLost()
			}
		})
	c := mqtt.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("connect %s: %v", id, tok.Error())
	}
	t.Cleanup(func() {
		if c.IsConnected() {
			c.Disconnect(50)
		}
	})
	return c
}

func wait(t testing.TB, tok mqtt.Token) {
	t.Helper()
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("mqtt: %v", tok.Error())
	}
}

// gather returns metric family name -> "label=value,..." -> value.
func gather(t testing.TB, reg prometheus.Gatherer) map[string]map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string]float64{}
	for _, mf := range mfs {
		m := map[string]float64{}
		for _, x := range mf.GetMetric() {
			var ls []string
			for _, lp := range x.GetLabel() {
				ls = append(ls, lp.GetName()+"="+lp.GetValue())
			}
			key := strings.Join(ls, ",")
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				m[key] = x.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				m[key] = x.GetGauge().GetValue()
			case dto.MetricType_HISTOGRAM:
				m[key] = float64(x.GetHistogram().GetSampleCount())
			default:
				m[key] = x.GetUntyped().GetValue()
			}
		}
		out[mf.GetName()] = m
	}
	return out
}

func TestCollectorReflectsTraffic(t *testing.T) {
	srv, col, addr := startBroker(t, broker.Options{MaxConnections: 100})
	reg := metrics.NewRegistry(col)

	got := make(chan mqtt.Message, 100)
	sub := connect(t, addr, "sub", nil)
	wait(t, sub.Subscribe("m/#", 1, func(_ mqtt.Client, m mqtt.Message) { got <- m }))
	pub := connect(t, addr, "pub", nil)
	for i := range 5 {
		wait(t, pub.Publish("m/a", 0, false, fmt.Sprint(i)))
	}
	for i := range 3 {
		wait(t, pub.Publish("m/b", 1, i == 0, fmt.Sprint(i)))
	}
	for range 8 {
		select {
		case <-got:
		case <-time.After(5 * time.Second):
			t.Fatal("message not delivered")
		}
	}

	var g map[string]map[string]float64
	testutil.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		g = gather(t, reg)
		// A QoS 1 PUBACK from the subscriber completes asynchronously.
		if v := g["isobar_inflight_messages"][""]; v != 0 {
			return fmt.Errorf("inflight %v", v)
		}
		return nil
	})
	want := map[string]map[string]float64{
		"isobar_messages_received_total": {"qos=0": 5, "qos=1": 3, "qos=2": 0},
		"isobar_messages_sent_total":     {"qos=0": 5, "qos=1": 3, "qos=2": 0},
		"isobar_connections": {
			"listener=mqtt,protocol_version=3.1.1": 2,
			"listener=mqtt,protocol_version=5.0":   0,
			"listener=mqtt,protocol_version=3.1":   0,
		},
		"isobar_connections_accepted_total": {"listener=mqtt": 2},
		"isobar_connects_total":             {"": 2},
		"isobar_connections_max":            {"": 100},
		"isobar_subscriptions":              {"": 1},
		"isobar_retained_messages":          {"": 1},
		"isobar_sessions":                   {"state=online": 2, "state=offline": 0},
		"isobar_delivery_latency_seconds":   {"": 8},
		"isobar_queued_messages":            {"": 0},
		"isobar_build_info":                 {"goversion=" + runtime.Version() + ",node=isobar,version=test": 1},
	}
	for name, series := range want {
		for labels, v := range series {
			if gv, ok := g[name][labels]; !ok || gv != v {
				t.Errorf("%s{%s} = %v (present %v), want %v; all: %v", name, labels, gv, ok, v, g[name])
			}
		}
	}
	if g["isobar_received_bytes_total"][""] <= 0 || g["isobar_sent_bytes_total"][""] <= 0 {
		t.Errorf("byte counters not moving: %v %v", g["isobar_received_bytes_total"], g["isobar_sent_bytes_total"])
	}
	for _, c := range metrics.DropCauses {
		if _, ok := g["isobar_messages_dropped_total"]["cause="+c]; !ok {
			t.Errorf("no dropped series for cause %s", c)
		}
	}
	if _, ok := g["go_goroutines"]; !ok {
		t.Error("Go runtime collector missing")
	}
	if _, ok := g["process_cpu_seconds_total"]; !ok {
		t.Error("process collector missing")
	}

	// Disconnects by reason: a normal DISCONNECT and an administrative kick.
	lost := make(chan struct{}, 1)
	connect(t, addr, "kicked", func() { lost <- struct{}{} })
	pub.Disconnect(50)
	if !srv.DisconnectClient("kicked") {
		t.Fatal("kicked not connected")
	}
	select {
	case <-lost:
	case <-time.After(5 * time.Second):
		t.Fatal("kicked client did not see the disconnect")
	}
	testutil.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		g = gather(t, reg)
		d := g["isobar_disconnects_total"]
		if d["reason=normal"] != 1 || d["reason=administrative_action"] != 1 {
			return fmt.Errorf("disconnects %v", d)
		}
		if c := g["isobar_connections"]["listener=mqtt,protocol_version=3.1.1"]; c != 1 {
			return fmt.Errorf("connections %v", c)
		}
		return nil
	})
}

// TestMalformedPacketLabel checks the malformed-packet series uses packet
// type names.
func TestMalformedPacketLabel(t *testing.T) {
	_, col, addr := startBroker(t, broker.Options{})
	reg := metrics.NewRegistry(col)
	rc := testutil.DialRaw(t, addr)
	// CONNECT v3.1.1, then a SUBSCRIBE with reserved flags 0 (must be 2):
	// malformed.
	rc.SendHex("10 0F 0004 4D515454 04 02 003C 0003 616263")
	rc.ExpectHex("20 02 00 00")
	rc.SendHex("80 06 0001 0001 61 00")
	rc.ExpectClosed(5 * time.Second)
	testutil.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		g := gather(t, reg)
		if v := g["isobar_malformed_packets_total"]["packet_type=subscribe"]; v != 1 {
			return fmt.Errorf("malformed: %v", g["isobar_malformed_packets_total"])
		}
		if v := g["isobar_disconnects_total"]["reason=malformed_packet"]; v != 1 {
			return fmt.Errorf("disconnects: %v", g["isobar_disconnects_total"])
		}
		return nil
	})
}

// TestLint runs the Prometheus naming linter over everything the
// collector exports.
func TestLint(t *testing.T) {
	_, col, addr := startBroker(t, broker.Options{})
	c := connect(t, addr, "x", nil)
	wait(t, c.Publish("a", 0, false, "x"))
	reg := prometheus.NewRegistry()
	reg.MustRegister(col)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

// TestBoundedLabels checks that only the documented label names occur.
func TestBoundedLabels(t *testing.T) {
	_, col, addr := startBroker(t, broker.Options{})
	c := connect(t, addr, "client-with-unique-id", nil)
	wait(t, c.Subscribe("some/unique/topic", 0, nil))
	wait(t, c.Publish("some/unique/topic", 0, true, "x"))
	reg := prometheus.NewRegistry()
	reg.MustRegister(col)
	allowed := map[string]bool{"listener": true, "protocol_version": true, "qos": true, "cause": true,
		"reason": true, "packet_type": true, "state": true, "version": true, "node": true, "goversion": true, "le": true}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if !allowed[lp.GetName()] {
					t.Errorf("%s has label %s", mf.GetName(), lp.GetName())
				}
				if strings.Contains(lp.GetValue(), "unique") {
					t.Errorf("%s label %s carries a client id or topic: %q", mf.GetName(), lp.GetName(), lp.GetValue())
				}
			}
		}
	}
}

func TestReasonNames(t *testing.T) {
	if metrics.ReasonName(0) != "normal" || metrics.ReasonName(0x98) != "administrative_action" ||
		metrics.ReasonName(0x8E) != "session_taken_over" || metrics.ReasonName(0x01) != "other" {
		t.Error("reason table")
	}
	seen := map[string]bool{}
	for _, n := range metrics.ReasonNames() {
		if seen[n] {
			t.Errorf("duplicate reason name %s", n)
		}
		seen[n] = true
	}
	if metrics.PacketTypeName(3) != "publish" || metrics.PacketTypeName(0) != "unknown" || metrics.PacketTypeName(99) != "unknown" {
		t.Error("packet type names")
	}
}
