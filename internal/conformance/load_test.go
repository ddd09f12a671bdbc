package conformance

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/isobar-mq/isobar/internal/testutil/peer"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// loadSuite returns the cases of a suite. Without ../shared the test is
// skipped (failed in CI); a ../shared that is there but misread (wrong
// layout, a file that does not parse, no case at all) always fails it.
func loadSuite(t *testing.T, suite string) []Case {
	t.Helper()
	dir, err := FindSuite(suite)
	if errors.Is(err, ErrNoData) {
		peer.Missing(t, "Mosquitto packet tests not available (../shared is absent): %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	cases, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(cases) == 0 {
		t.Fatalf("%s: no case loaded (every group disabled or empty?)", dir)
	}
	return cases
}

// counts is one row of the README's tables.
type counts struct {
	total, v31, v311, v5, raw, keep, endDisconnect, endConnack, endSilent, helper int
}

func countCases(t *testing.T, cases []Case) map[string]counts {
	t.Helper()
	out := map[string]counts{}
	for _, c := range cases {
		n := out[c.File]
		n.total++
		switch {
		case strings.HasPrefix(c.Group, "v3.1.1"):
			n.v311++
		case strings.HasPrefix(c.Group, "v3.1"):
			n.v31++
		case strings.HasPrefix(c.Group, "v5.0"):
			n.v5++
		case c.Group == "REGRESSIONS" || c.Group == "BROKER CHECK":
			n.v311++
		default:
			t.Errorf("%s: unexpected group prefix", c.Key())
		}
		if !c.Connect {
			n.raw++
		}
		for _, s := range c.Steps {
			if s.Type == StepPublish {
				n.helper++
				break
			}
		}
		if !c.ExpectDisconnect {
			n.keep++
			out[c.File] = n
			continue
		}
		var last Step
		if len(c.Steps) > 0 {
			last = c.Steps[len(c.Steps)-1]
		}
		switch {
		case last.Type == StepSend:
			n.endSilent++
		case last.Type == StepRecv && last.Payload[0] == 0xE0:
			n.endDisconnect++
		case last.Type == StepRecv && last.Payload[0] == 0x20 && len(last.Payload) >= 4 && last.Payload[3] != 0:
			n.endConnack++
		default:
			t.Errorf("%s: expect_disconnect case with unclassified last step %+v", c.Key(), last)
		}
		out[c.File] = n
	}
	return out
}

// The tables of shared/conformance/mosquitto-packet-tests/README.md.
var readmeCounts = map[string]map[string]counts{
	"develop": {
		"AUTH.json":            {12, 0, 6, 6, 2, 0, 5, 0, 7, 0},
		"CONNACK.json":         {144, 0, 19, 125, 2, 0, 124, 0, 20, 0},
		"CONNECT.json":         {282, 6, 54, 222, 281, 38, 0, 182, 62, 0},
		"DISCONNECT.json":      {138, 0, 7, 131, 3, 0, 86, 0, 52, 0},
		"FLOW.json":            {26, 0, 9, 17, 0, 16, 5, 0, 5, 16},
		"FORBIDDEN.json":       {22, 0, 11, 11, 10, 0, 6, 0, 16, 0},
		"PINGREQ.json":         {14, 0, 7, 7, 2, 2, 4, 0, 8, 0},
		"PINGRESP.json":        {14, 0, 7, 7, 2, 0, 5, 0, 9, 0},
		"PUBACK.json":          {111, 0, 10, 101, 3, 13, 87, 0, 11, 0},
		"PUBCOMP.json":         {117, 0, 10, 107, 2, 12, 95, 0, 10, 0},
		"PUBLISH.json":         {155, 0, 24, 131, 3, 39, 99, 0, 17, 0},
		"PUBREC.json":          {110, 0, 10, 100, 3, 13, 86, 0, 11, 0},
		"PUBREL.json":          {110, 0, 10, 100, 3, 13, 86, 0, 11, 0},
		"REGRESSION.json":      {5, 0, 5, 0, 0, 5, 0, 0, 0, 0},
		"SUBACK.json":          {116, 0, 10, 106, 2, 0, 105, 0, 11, 0},
		"SUBSCRIBE.json":       {150, 0, 36, 114, 2, 28, 89, 0, 33, 0},
		"UNSUBACK.json":        {107, 0, 9, 98, 2, 0, 97, 0, 10, 0},
		"UNSUBSCRIBE.json":     {104, 0, 24, 80, 2, 11, 71, 0, 22, 0},
		"ZZ-broker-check.json": {1, 0, 1, 0, 0, 1, 0, 0, 0, 0},
	},
	"v2.0.20": {
		"AUTH.json":            {12, 0, 6, 6, 2, 0, 5, 0, 7, 0},
		"CONNACK.json":         {139, 0, 19, 120, 2, 0, 119, 0, 20, 0},
		"CONNECT.json":         {82, 6, 54, 22, 80, 11, 0, 7, 64, 0},
		"DISCONNECT.json":      {133, 0, 7, 126, 3, 0, 86, 0, 47, 0},
		"FLOW.json":            {26, 0, 9, 17, 0, 16, 5, 0, 5, 16},
		"FORBIDDEN.json":       {22, 0, 11, 11, 10, 0, 6, 0, 16, 0},
		"PINGREQ.json":         {14, 0, 7, 7, 2, 2, 4, 0, 8, 0},
		"PINGRESP.json":        {14, 0, 7, 7, 2, 0, 5, 0, 9, 0},
		"PUBACK.json":          {106, 0, 10, 96, 3, 9, 86, 0, 11, 0},
		"PUBCOMP.json":         {113, 0, 10, 103, 2, 8, 95, 0, 10, 0},
		"PUBLISH.json":         {149, 0, 24, 125, 3, 35, 97, 0, 17, 0},
		"PUBREC.json":          {106, 0, 10, 96, 3, 9, 86, 0, 11, 0},
		"PUBREL.json":          {106, 0, 10, 96, 3, 9, 86, 0, 11, 0},
		"REGRESSION.json":      {5, 0, 5, 0, 0, 5, 0, 0, 0, 0},
		"SUBACK.json":          {113, 0, 10, 103, 2, 0, 102, 0, 11, 0},
		"SUBSCRIBE.json":       {141, 0, 35, 106, 2, 25, 84, 0, 32, 0},
		"UNSUBACK.json":        {104, 0, 9, 95, 2, 0, 94, 0, 10, 0},
		"UNSUBSCRIBE.json":     {97, 0, 23, 74, 2, 8, 68, 0, 21, 0},
		"ZZ-broker-check.json": {1, 0, 1, 0, 0, 1, 0, 0, 0, 0},
	},
}

func TestLoadMatchesREADME(t *testing.T) {
	for _, tc := range []struct {
		suite              string
		total, v5Connected int
	}{
		{"develop", 1738, 1217},
		{"v2.0.20", 1483, -1},
	} {
		t.Run(tc.suite, func(t *testing.T) {
			cases := loadSuite(t, tc.suite)
			if len(cases) != tc.total {
				t.Errorf("%d cases, README says %d", len(cases), tc.total)
			}
			got := countCases(t, cases)
			want := readmeCounts[tc.suite]
			for file, w := range want {
				if got[file] != w {
					t.Errorf("%s: got %+v\n\twant %+v", file, got[file], w)
				}
			}
			if len(got) != len(want) {
				t.Errorf("files: got %d, want %d", len(got), len(want))
			}
			// Execution order: files sorted, the broker check last.
			for i := 1; i < len(cases); i++ {
				if cases[i].File < cases[i-1].File {
					t.Fatalf("case %d (%s) after %s: files not in sorted order", i, cases[i].File, cases[i-1].File)
				}
			}
			if last := cases[len(cases)-1]; last.Key() != "ZZ-broker-check.json:BROKER CHECK END OF TEST" ||
				last.Connect != true || last.ExpectDisconnect || len(last.Steps) != 0 {
				t.Errorf("last case is %+v, want the broker check", last)
			}
			v5 := 0
			for _, c := range cases {
				if c.Connect && c.Ver == 5 {
					v5++
				}
				if c.Connect && len(c.FullName()) > 65535 {
					t.Errorf("%s: client id too long", c.Key())
				}
			}
			if tc.v5Connected >= 0 && v5 != tc.v5Connected {
				t.Errorf("%d v5 cases with the default CONNECT, README says %d", v5, tc.v5Connected)
			}
			// Spot checks of parsing: order within a file, hex with
			// spaces, a helper step.
			retainSet, retainCleared := -1, -1
			for i, c := range cases {
				switch c.Key() {
				case "PUBLISH.json:v3.1.1 PUBLISH 31 retain 1":
					retainSet = i
				case "PUBLISH.json:v3.1.1 PUBLISH 31 retain 1 zero length":
					retainCleared = i
				case "FLOW.json:v3.1.1 FLOW QoS 1 receive ok":
					want := []Step{
						{Type: StepSend, Payload: []byte{0x82, 0x06, 0x12, 0x34, 0x00, 0x01, 0x70, 0x01}, Comment: "SUBSCRIBE, 'p' qos1"},
						{Type: StepRecv, Payload: []byte{0x90, 0x03, 0x12, 0x34, 0x01}, Comment: "SUBACK"},
						{Type: StepPublish, Topic: "p", QoS: 1, Payload: []byte("message"), Comment: "helper"},
						{Type: StepRecv, Payload: []byte{0x32, 0x0C, 0x00, 0x01, 0x70, 0x00, 0x01, 'm', 'e', 's', 's', 'a', 'g', 'e'}, Comment: "PUBLISH receive"},
						{Type: StepSend, Payload: []byte{0x40, 0x02, 0x00, 0x01}, Comment: "PUBACK"},
					}
					if !reflect.DeepEqual(c.Steps, want) || c.Ver != 4 || !c.Connect || c.ExpectDisconnect {
						t.Errorf("%s parsed as %+v", c.Key(), c)
					}
				}
			}
			if retainSet < 0 || retainCleared <= retainSet {
				t.Errorf("retain cases at %d and %d, want set before clear", retainSet, retainCleared)
			}
		})
	}
}
