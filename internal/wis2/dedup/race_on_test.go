//go:build race

package dedup

// raceEnabled reports whether the tests run with the race detector, which
// slows the client several times and makes throughput checks CPU-bound.
const raceEnabled = true
