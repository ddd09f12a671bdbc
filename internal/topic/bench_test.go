package topic

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// benchIndex builds an index with about n subscriptions: 70% exact
// filters, 20% with '+', 10% with '#', spread over sites and devices,
// plus a few shared groups. It returns the index and topics that are
// published to (each matching a handful of subscriptions).
func benchIndex(n int) (*Index[*int], []string) {
	x := NewIndex[*int]()
	const sites = 50
	devs := n / sites
	key := func(i int) *int { v := i; return &v }
	for i := range n {
		s, d := i%sites, (i/sites)%devs
		var f string
		switch r := i % 10; {
		case r < 7:
			f = fmt.Sprintf("site/%d/dev/%d/%s", s, d, []string{"temp", "hum", "state", "cmd", "cfg", "log", "fw"}[r])
		case r < 9:
			f = fmt.Sprintf("site/+/dev/%d/%s", d, []string{"temp", "alarm"}[r-7])
		default:
			f = fmt.Sprintf("site/%d/dev/%d/#", s, d)
		}
		x.Subscribe(key(i), f, Options{QoS: 1})
	}
	for g := range 5 {
		for m := range 4 {
			x.Subscribe(key(m), fmt.Sprintf("$share/g%d/site/%d/+/+/temp", g, g), Options{})
		}
	}
	rng := rand.New(rand.NewPCG(1, 1))
	topics := make([]string, 1024)
	for i := range topics {
		topics[i] = fmt.Sprintf("site/%d/dev/%d/%s", rng.IntN(sites), rng.IntN(devs), []string{"temp", "hum", "alarm", "other"}[rng.IntN(4)])
	}
	return x, topics
}

func BenchmarkMatch(b *testing.B) {
	x, topics := benchIndex(10000)
	var r Result[*int]
	total := 0
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		x.Match(topics[i&1023], &r)
		total += len(r.Subs) + len(r.Shared)
	}
	b.ReportMetric(float64(total)/float64(b.N), "matches/op")
}

func BenchmarkMatchParallel(b *testing.B) {
	x, topics := benchIndex(10000)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		var r Result[*int]
		i := rand.IntN(1024)
		for pb.Next() {
			x.Match(topics[i&1023], &r)
			i++
		}
	})
}

// BenchmarkMatchParallelChurn matches while one goroutine keeps
// subscribing and unsubscribing.
func BenchmarkMatchParallelChurn(b *testing.B) {
	x, topics := benchIndex(10000)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		k := new(int)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			f := fmt.Sprintf("site/%d/dev/+/temp", i%100)
			x.Subscribe(k, f, Options{})
			x.Unsubscribe(k, f)
		}
	}()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		var r Result[*int]
		i := rand.IntN(1024)
		for pb.Next() {
			x.Match(topics[i&1023], &r)
			i++
		}
	})
	b.StopTimer()
	close(stop)
	<-done
}

// BenchmarkMatchFanout matches a topic with 1000 subscribers.
func BenchmarkMatchFanout(b *testing.B) {
	x, _ := benchIndex(10000)
	for i := range 1000 {
		v := i
		x.Subscribe(&v, "fan/out", Options{})
	}
	var r Result[*int]
	b.ReportAllocs()
	for b.Loop() {
		x.Match("fan/out", &r)
	}
}

func BenchmarkSubscribe(b *testing.B) {
	x, _ := benchIndex(10000)
	filters := make([]string, 4096)
	for i := range filters {
		switch i % 3 {
		case 0:
			filters[i] = fmt.Sprintf("client/%d/inbox", i)
		case 1:
			filters[i] = fmt.Sprintf("site/%d/+/%d/temp", i%50, i)
		default:
			filters[i] = fmt.Sprintf("site/%d/dev/%d/#", i%50, i)
		}
	}
	k := new(int)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		// Subscribe then unsubscribe so the index size stays constant.
		f := filters[i&4095]
		x.Subscribe(k, f, Options{})
		x.Unsubscribe(k, f)
	}
}

// BenchmarkSubscribeExisting replaces the options of existing
// subscriptions (e.g. reconnecting sessions re-subscribing).
func BenchmarkSubscribeExisting(b *testing.B) {
	x, _ := benchIndex(10000)
	k := new(int)
	filters := make([]string, 1024)
	for i := range filters {
		filters[i] = fmt.Sprintf("site/%d/dev/%d/temp", i%50, i)
		x.Subscribe(k, filters[i], Options{})
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		x.Subscribe(k, filters[i&1023], Options{QoS: byte(i % 3)})
	}
}

func benchRetained() *Retained[int] {
	r := NewRetained[int]()
	// 100k topics: a/{0..999}/c/{0..49}, a/{0..999}/c (1000), and the
	// rest spread under other roots.
	n := 0
	for i := range 1000 {
		r.Set(fmt.Sprintf("a/%d/c", i), n)
		n++
		for j := range 49 {
			r.Set(fmt.Sprintf("a/%d/c/%d", i, j), n)
			n++
		}
	}
	for i := 0; n < 100000; i++ {
		r.Set(fmt.Sprintf("b/%d/x/%d", i%500, i), n)
		n++
	}
	r.Set("$SYS/broker/uptime", n)
	return r
}

func BenchmarkRetainedMatch(b *testing.B) {
	r := benchRetained()
	if r.Len() != 100001 {
		b.Fatalf("Len = %d", r.Len())
	}
	for _, f := range []string{"a/+/c", "#", "a/7/c/+", "a/7/c/42"} {
		b.Run(f, func(b *testing.B) {
			b.ReportAllocs()
			count := 0
			for b.Loop() {
				count = 0
				r.Match(f, func(string, int) bool { count++; return true })
			}
			b.ReportMetric(float64(count), "topics")
		})
	}
}

func BenchmarkRetainedSet(b *testing.B) {
	r := benchRetained()
	topics := make([]string, 4096)
	for i := range topics {
		topics[i] = fmt.Sprintf("a/%d/c/%d", i%1000, i%60)
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		r.Set(topics[i&4095], i)
	}
}
