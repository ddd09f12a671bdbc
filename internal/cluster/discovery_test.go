package cluster

import (
	"context"
	"errors"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// mbResolver answers from maps and counts lookups.
type mbResolver struct {
	mu    sync.Mutex
	hosts map[string][]string
	srv   map[string][]*net.SRV
	calls int
}

func (f *mbResolver) LookupHost(_ context.Context, host string) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if a, ok := f.hosts[host]; ok {
		return a, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

func (f *mbResolver) LookupSRV(_ context.Context, service, proto, name string) (string, []*net.SRV, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	key := "_" + service + "._" + proto + "." + name
	if r, ok := f.srv[key]; ok {
		return key, r, nil
	}
	return "", nil, &net.DNSError{Err: "no such host", Name: key, IsNotFound: true}
}

func TestSeedResolveForms(t *testing.T) {
	r := &mbResolver{
		hosts: map[string][]string{
			"seed.example":   {"127.0.0.3", "127.0.0.2", "::1"},
			"a.example":      {"127.0.1.1"},
			"b.example":      {"127.0.1.2", "127.0.0.2"},
			"mapped.example": {"::ffff:127.0.0.9"},
		},
		srv: map[string][]*net.SRV{
			"_isobar._tcp.example.org": {
				{Target: "b.example.", Port: 7001, Priority: 10, Weight: 5},
				{Target: "a.example.", Port: 7000, Priority: 10, Weight: 50},
				{Target: "127.0.2.1", Port: 7002, Priority: 5},
				{Target: ".", Port: 7003},
			},
		},
	}
	got, err := ResolveSeeds(context.Background(), r, []string{
		"127.0.0.1:7946",
		"seed.example:7946",
		"_isobar._tcp.example.org",
		"127.0.0.1:7946", // duplicate
		"[::1]:7946",     // duplicate of a name's address
		"mapped.example:1",
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"127.0.0.1:7946",
		"127.0.0.2:7946", "127.0.0.3:7946", "[::1]:7946", // sorted
		"127.0.2.1:7002",                   // priority 5 first
		"127.0.1.1:7000",                   // then the heavier weight
		"127.0.0.2:7001", "127.0.1.2:7001", // then the lighter
		"127.0.0.9:1",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("got  %v\nwant %v", got, want)
	}
	again, _ := ResolveSeeds(context.Background(), r, []string{"_isobar._tcp.example.org", "seed.example:7946"})
	again2, _ := ResolveSeeds(context.Background(), r, []string{"_isobar._tcp.example.org", "seed.example:7946"})
	if !slices.Equal(again, again2) {
		t.Fatalf("not deterministic: %v vs %v", again, again2)
	}
}

// One failing seed does not fail the others; an error only when nothing
// resolved.
func TestSeedResolveFailures(t *testing.T) {
	r := &mbResolver{hosts: map[string][]string{"ok.example": {"127.0.0.5"}}}
	got, err := ResolveSeeds(context.Background(), r, []string{"missing.example:1", "ok.example:2", "noport", "x:0", "_bad"})
	if err != nil || !slices.Equal(got, []string{"127.0.0.5:2"}) {
		t.Fatalf("got %v, %v", got, err)
	}
	for _, seeds := range [][]string{
		{"missing.example:1"},
		{"noport"},
		{"127.0.0.1:99999"},
		{"_isobar._tcp.nowhere.example"},
		{"_isobar"},
		{""},
	} {
		got, err := ResolveSeeds(context.Background(), r, seeds)
		if err == nil || len(got) != 0 {
			t.Errorf("%q: got %v, %v; want an error", seeds, got, err)
		} else if !strings.Contains(err.Error(), "seed") {
			t.Errorf("%q: error %v does not name the seed", seeds, err)
		}
	}
	if got, err := ResolveSeeds(context.Background(), r, nil); err != nil || len(got) != 0 {
		t.Errorf("no seeds: %v, %v", got, err)
	}
}

// mbDNS serves A, AAAA and SRV records on 127.0.0.1 (UDP) and returns a
// resolver that asks only it.
func mbDNS(t *testing.T, records map[string][]dns.RR) *net.Resolver {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux := dns.NewServeMux()
	mux.HandleFunc(".", func(w dns.ResponseWriter, req *dns.Msg) {
		resp := new(dns.Msg)
		resp.SetReply(req)
		resp.Authoritative = true
		found := false
		for _, q := range req.Question {
			for _, rr := range records[strings.ToLower(q.Name)] {
				found = true
				if rr.Header().Rrtype == q.Qtype {
					resp.Answer = append(resp.Answer, rr)
				}
			}
		}
		if !found {
			resp.Rcode = dns.RcodeNameError
		}
		_ = w.WriteMsg(resp)
	})
	started := make(chan struct{})
	srv := &dns.Server{PacketConn: pc, Handler: mux, NotifyStartedFunc: func() { close(started) }}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.ActivateAndServe() }()
	<-started
	t.Cleanup(func() { _ = srv.Shutdown(); <-done })
	addr := pc.LocalAddr().String()
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "udp", addr)
	}}
}

func mbRR(t *testing.T, s string) dns.RR {
	rr, err := dns.NewRR(s)
	if err != nil {
		t.Fatal(err)
	}
	return rr
}

// Seeds resolve through a real DNS server (the Go resolver talking to a
// server on 127.0.0.1): names to all their A/AAAA addresses, SRV names to
// their targets' addresses with the records' ports.
func TestSeedResolveRealDNS(t *testing.T) {
	recs := map[string][]dns.RR{}
	for _, s := range []string{
		"seeds.isobar.test. 5 IN A 127.0.0.7",
		"seeds.isobar.test. 5 IN A 127.0.0.6",
		"seeds.isobar.test. 5 IN AAAA ::1",
		"_isobar._tcp.isobar.test. 5 IN SRV 10 1 7101 n1.isobar.test.",
		"_isobar._tcp.isobar.test. 5 IN SRV 10 1 7102 n2.isobar.test.",
		"n1.isobar.test. 5 IN A 127.0.3.1",
		"n2.isobar.test. 5 IN A 127.0.3.2",
	} {
		rr := mbRR(t, s)
		name := strings.ToLower(rr.Header().Name)
		recs[name] = append(recs[name], rr)
	}
	r := mbDNS(t, recs)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	got, err := ResolveSeeds(ctx, r, []string{"seeds.isobar.test:7946", "_isobar._tcp.isobar.test", "missing.isobar.test:1"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"127.0.0.6:7946", "127.0.0.7:7946", "[::1]:7946", "127.0.3.1:7101", "127.0.3.2:7102"}
	if !slices.Equal(got, want) {
		t.Fatalf("got  %v\nwant %v", got, want)
	}
	_, err = ResolveSeeds(ctx, r, []string{"missing.isobar.test:1"})
	var de *net.DNSError
	if !errors.As(err, &de) || !de.IsNotFound {
		t.Fatalf("missing name: %v", err)
	}
}

// The rejoin loop re-resolves the seeds on each attempt: a node whose seed
// name resolves to nothing at first joins once the name appears.
func TestSeedReResolvedOnRejoin(t *testing.T) {
	a := mbStart(t, "a", "127.0.0.1:0", nil, &mbFast)
	r := &mbResolver{hosts: map[string][]string{}}
	_, port, _ := net.SplitHostPort(a.Local().Addr)
	b := mbStart(t, "b", "127.0.0.1:0", []string{"seed.example:" + port}, &mbFast, func(c *MembershipConfig) { c.Resolver = r })
	time.Sleep(3 * mbFast.rejoin)
	if b.NumAlive() != 1 {
		t.Fatalf("b sees %d alive before its seed resolves", b.NumAlive())
	}
	r.mu.Lock()
	r.hosts["seed.example"] = []string{"127.0.0.1"}
	r.mu.Unlock()
	mbWaitFor(t, 10*time.Second, "b to join once the seed resolves", func() bool { return mbAllAlive([]*mbNode{a, b}) })
}
