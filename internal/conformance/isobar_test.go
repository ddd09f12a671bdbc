package conformance_test

import (
	"errors"
	"testing"

	"github.com/isobar-mq/isobar/internal/conformance"
	"github.com/isobar-mq/isobar/internal/testutil"
	"github.com/isobar-mq/isobar/internal/testutil/peer"
)

// TestIsobarDevelop runs every packet-sequence case of Mosquitto's develop
// suite against an in-process Isobar on its default configuration. Every
// case must pass unless deviations.yaml lists it with the spec statement
// that allows our answer.
func TestIsobarDevelop(t *testing.T) { runSuite(t, "develop") }

// TestIsobarV2020 runs the v2.0.20 suite (the released Mosquitto that WIS2
// nodes use).
func TestIsobarV2020(t *testing.T) { runSuite(t, "v2.0.20") }

// runSuite skips without ../shared (fails in CI, see package peer) and
// always fails when ../shared is there but the suite is misread: wrong
// layout, a file that does not parse, or no case loaded.
func runSuite(t *testing.T, suite string) {
	dir, err := conformance.FindSuite(suite)
	if errors.Is(err, conformance.ErrNoData) {
		peer.Missing(t, "conformance data not available (expected ../shared next to the repository): %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	cases, err := conformance.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(cases) == 0 {
		t.Fatalf("%s: no case loaded (every group disabled or empty?)", dir)
	}
	// One deviations file per suite: the suites share case names but not
	// always the expected bytes.
	devs, err := conformance.LoadDeviations("deviations-" + suite + ".yaml")
	if err != nil {
		t.Fatal(err)
	}
	// Mosquitto's defaults, which the cases' expected bytes follow: no
	// Maximum Packet Size in CONNACK (Isobar's default is 1 MiB, advertised).
	// The README's configuration for the black-box suite says the same.
	n := testutil.RunNode(t, "mqtt:\n  max_packet_size: 0\n")
	conformance.RunAll(t, cases, conformance.Options{Addr: testutil.Addr(t, n, "")}, devs)
}
