package dedup

import (
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Operation and result label values.
const (
	opClaim   = "claim"
	opConfirm = "confirm"
	opRelease = "release"

	resOK        = "ok"
	resNotHolder = "not_holder"
	resError     = "error"
)

// metrics of one store. A nil *metrics (no Registerer) records nothing.
// The backend const label keeps a Memory and a Redis store registered on
// the same registry apart.
type metrics struct {
	reg        prometheus.Registerer
	collectors []prometheus.Collector

	requests  *prometheus.CounterVec
	errors    *prometheus.CounterVec
	latency   *prometheus.HistogramVec
	evictions prometheus.Counter // memory only
}

func newMetrics(reg prometheus.Registerer, backend string) (*metrics, error) {
	if reg == nil {
		return nil, nil
	}
	cl := prometheus.Labels{"backend": backend}
	m := &metrics{
		reg: reg,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name:        "isobar_wis2_dedup_requests_total",
			Help:        "WIS2 de-duplication calls, by operation (claim, confirm, release) and result (claimed, published, leased; ok, not_holder; error).",
			ConstLabels: cl,
		}, []string{"op", "result"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name:        "isobar_wis2_dedup_errors_total",
			Help:        "WIS2 de-duplication calls that failed (store unreachable, timeout, closed), by operation.",
			ConstLabels: cl,
		}, []string{"op"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:        "isobar_wis2_dedup_latency_seconds",
			Help:        "Duration of WIS2 de-duplication calls, by operation.",
			ConstLabels: cl,
			Buckets:     []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"op"}),
	}
	m.collectors = []prometheus.Collector{m.requests, m.errors, m.latency}
	if backend == "memory" {
		m.evictions = prometheus.NewCounter(prometheus.CounterOpts{
			Name:        "isobar_wis2_dedup_evictions_total",
			Help:        "Entries dropped before they expired because the memory store was full (a later copy of the id may be published again).",
			ConstLabels: cl,
		})
		m.collectors = append(m.collectors, m.evictions)
	}
	// Create the series up front so that dashboards see zeros, not gaps.
	for _, r := range []Result{Claimed, Published, Leased} {
		m.requests.WithLabelValues(opClaim, r.String())
	}
	for _, op := range []string{opClaim, opConfirm, opRelease} {
		m.errors.WithLabelValues(op)
		m.latency.WithLabelValues(op)
		m.requests.WithLabelValues(op, resError)
		if op != opClaim {
			m.requests.WithLabelValues(op, resOK)
			m.requests.WithLabelValues(op, resNotHolder)
		}
	}
	for i, c := range m.collectors {
		if err := reg.Register(c); err != nil {
			for _, p := range m.collectors[:i] {
				reg.Unregister(p)
			}
			return nil, fmt.Errorf("dedup: registering metrics: %w", err)
		}
	}
	return m, nil
}

func (m *metrics) unregister() {
	if m == nil {
		return
	}
	for _, c := range m.collectors {
		m.reg.Unregister(c)
	}
}

// done records one call that started at start and ended with result
// (resError counts an error too).
func (m *metrics) done(op, result string, start time.Time) {
	if m == nil {
		return
	}
	if result == resError {
		m.errors.WithLabelValues(op).Inc()
	}
	m.requests.WithLabelValues(op, result).Inc()
	m.latency.WithLabelValues(op).Observe(time.Since(start).Seconds())
}

// claimDone records a claim.
func (m *metrics) claimDone(r Result, err error, start time.Time) {
	if m == nil {
		return
	}
	res := r.String()
	if err != nil {
		res = resError
	}
	m.done(opClaim, res, start)
}

func (m *metrics) evicted() {
	if m != nil {
		m.evictions.Inc()
	}
}

// resultOf is the result label of a confirm or release.
func resultOf(err error) string {
	switch {
	case err == nil:
		return resOK
	case errors.Is(err, ErrNotHolder):
		return resNotHolder
	}
	return resError
}
