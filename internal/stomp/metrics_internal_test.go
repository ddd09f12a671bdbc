package stomp

import (
	"bufio"
	"context"
	"net"
	"testing"
	"time"

	"github.com/isobar-mq/isobar/internal/broker"
	"github.com/prometheus/client_golang/prometheus"
)

// TestMetricsAndClose runs a gateway on a bare broker with its own
// registry: the metrics are registered, count frames and errors, and
// Close ends the connections, the listener and unregisters them.
func TestMetricsAndClose(t *testing.T) {
	srv := broker.New(broker.Options{}, nil, nil)
	defer func() { _ = srv.Shutdown(context.Background()) }()
	reg := prometheus.NewRegistry()
	g, err := New(Options{Server: srv, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- g.Serve(ln, "stomp") }()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = nc.Close() }()
	dec := NewDecoder(bufio.NewReader(nc), Limits{})
	_, _ = nc.Write([]byte("CONNECT\naccept-version:1.2\n\n\x00SUBSCRIBE\nid:1\ndestination:/topic/m\n\n\x00SEND\ndestination:/topic/m\n\nhi\x00"))
	_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	for _, want := range []string{"CONNECTED", "MESSAGE"} {
		f, err := dec.Decode()
		if err != nil || f.Command != want {
			t.Fatalf("got %v %v, want %s", f, err, want)
		}
	}
	// A second connection makes a protocol error.
	bad, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = bad.Close() }()
	_, _ = bad.Write([]byte("NOPE\n\n\x00"))
	_ = bad.SetReadDeadline(time.Now().Add(5 * time.Second))
	if f, err := NewDecoder(bufio.NewReader(bad), Limits{}).Decode(); err != nil || f.Command != "ERROR" {
		t.Fatalf("got %v %v", f, err)
	}
	want := map[string]bool{
		"isobar_stomp_connections": false, "isobar_stomp_connections_total": false,
		"isobar_stomp_frames_received_total": false, "isobar_stomp_frames_sent_total": false,
		"isobar_stomp_messages_received_total": false, "isobar_stomp_messages_sent_total": false,
		"isobar_stomp_errors_total": false,
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if _, ok := want[mf.GetName()]; ok {
				want[mf.GetName()] = true
			}
		}
		missing := false
		for _, ok := range want {
			missing = missing || !ok
		}
		if !missing {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics missing: %v", want)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-served; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	// The open connection was told and closed.
	if f, err := dec.Decode(); err != nil || f.Command != "ERROR" || f.Value("message") != "server shutting down" {
		t.Fatalf("after Close: %v %v", f, err)
	}
	if mfs, _ := reg.Gather(); len(mfs) != 0 {
		t.Fatalf("%d metric families still registered", len(mfs))
	}
}
