package bench

import (
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// Latencies are recorded in microseconds from 1 µs to 10 minutes with three
// significant digits.
const (
	histMin     = 1
	histMax     = int64(10 * time.Minute / time.Microsecond)
	histSigFigs = 3
)

// histShard is one of a few histograms the receivers record into; a
// receiver always uses the same shard, so contention stays low and memory
// does not grow with the number of subscribers.
type histShard struct {
	mu sync.Mutex
	h  *hdrhistogram.Histogram
	_  [40]byte // keep shards on separate cache lines
}

func newHistShards(n int) []*histShard {
	s := make([]*histShard, n)
	for i := range s {
		s[i] = &histShard{h: hdrhistogram.New(histMin, histMax, histSigFigs)}
	}
	return s
}

func (s *histShard) record(ns int64) {
	us := ns / 1000
	if us < histMin {
		us = histMin
	} else if us > histMax {
		us = histMax
	}
	s.mu.Lock()
	_ = s.h.RecordValue(us)
	s.mu.Unlock()
}

func mergeShards(shards []*histShard) *hdrhistogram.Histogram {
	h := hdrhistogram.New(histMin, histMax, histSigFigs)
	for _, s := range shards {
		s.mu.Lock()
		h.Merge(s.h)
		s.mu.Unlock()
	}
	return h
}

// Latency summarises a histogram, in microseconds.
type Latency struct {
	Count int64   `json:"count"`
	Mean  float64 `json:"mean_us"`
	P50   int64   `json:"p50_us"`
	P90   int64   `json:"p90_us"`
	P99   int64   `json:"p99_us"`
	P999  int64   `json:"p999_us"`
	Max   int64   `json:"max_us"`
}

func summarize(h *hdrhistogram.Histogram) Latency {
	if h.TotalCount() == 0 {
		return Latency{}
	}
	return Latency{
		Count: h.TotalCount(),
		Mean:  float64(int64(h.Mean()*10)) / 10,
		P50:   h.ValueAtQuantile(50),
		P90:   h.ValueAtQuantile(90),
		P99:   h.ValueAtQuantile(99),
		P999:  h.ValueAtQuantile(99.9),
		Max:   h.Max(),
	}
}

// procSample is a reading of a process's resource use from /proc.
type procSample struct {
	at      time.Time
	cpu     time.Duration // user + system
	rss     int64         // bytes
	hwm     int64         // peak RSS, bytes
	threads int
}

// clockTick is USER_HZ, the unit of utime/stime in /proc/PID/stat; it is
// 100 on every Linux architecture Go supports.
const clockTick = 100

// readProc samples /proc/<pid> ("self" for this process).
func readProc(pid string) (procSample, error) {
	s := procSample{at: time.Now()}
	stat, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return s, err
	}
	// The command name (field 2) may contain spaces; fields resume after ')'.
	str := string(stat)
	if i := strings.LastIndexByte(str, ')'); i >= 0 {
		str = str[i+1:]
	}
	f := strings.Fields(str)
	// f[0] is field 3 (state): utime is field 14, stime 15.
	if len(f) > 13 {
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		s.cpu = time.Duration(ut+st) * time.Second / clockTick
	}
	status, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		return s, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		switch k {
		case "VmRSS", "VmHWM":
			n, _ := strconv.ParseInt(strings.TrimSuffix(v, " kB"), 10, 64)
			if k == "VmRSS" {
				s.rss = n << 10
			} else {
				s.hwm = n << 10
			}
		case "Threads":
			s.threads, _ = strconv.Atoi(v)
		}
	}
	return s, nil
}
