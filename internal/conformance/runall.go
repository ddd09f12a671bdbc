package conformance

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// RunAll runs cases sequentially, in the given order, as subtests of t named
// "<file without .json>/<Case.TestName()>". A failing case fails its subtest
// with the Failure text, unless its Key() is in deviations (value = the spec
// statement that allows the broker's different answer): then the failure is
// only logged. A listed case that passes is logged too, so that the list can
// be kept minimal. Entries of deviations that match no case are logged.
// At the end RunAll logs
//
//	conformance: N passed, N failed, N deviations (of which N passed)
//
// where passed/failed count the cases not listed as deviations. Subtests
// filtered out with -run are not counted.
func RunAll(t *testing.T, cases []Case, opts Options, deviations map[string]string) {
	t.Helper()
	var passed, failed, devs, devsPassed int
	seen := make(map[string]bool)
	for start := 0; start < len(cases); {
		end := start + 1
		for end < len(cases) && cases[end].File == cases[start].File {
			end++
		}
		fileCases := cases[start:end]
		start = end
		t.Run(strings.TrimSuffix(fileCases[0].File, ".json"), func(t *testing.T) {
			for _, c := range fileCases {
				key := c.Key()
				seen[key] = true
				reason, isDev := deviations[key]
				t.Run(c.TestName(), func(t *testing.T) {
					err := c.Run(opts)
					switch {
					case isDev && err != nil:
						devs++
						t.Logf("known deviation (%s) — %s\n%v", reason, key, err)
					case isDev:
						devs++
						devsPassed++
						t.Logf("listed as a deviation but PASSED; remove %q from the deviations list", key)
					case err != nil:
						failed++
						t.Errorf("%s\n%v", key, err)
					default:
						passed++
					}
				})
			}
		})
	}
	var unused []string
	for k := range deviations {
		if !seen[k] {
			unused = append(unused, k)
		}
	}
	sort.Strings(unused)
	for _, k := range unused {
		t.Logf("deviation entry matches no case of this run: %q", k)
	}
	t.Logf("conformance: %d passed, %d failed, %d deviations (of which %d passed)", passed, failed, devs, devsPassed)
}

// deviationEntry is one element of a deviations file.
type deviationEntry struct {
	Case   string `yaml:"case"`
	Reason string `yaml:"reason"`
}

// LoadDeviations reads a YAML list of deviations such as
//
//	# deviations.yaml
//	- case: "PUBLISH.json:v5.0   PUBLISH 30 topic alias > max topic alias"
//	  reason: "[MQTT-x.y.z-n] <the spec statement that allows our answer>"
//
// and returns it as a map from case key (Case.Key) to reason. Decoding is
// strict: unknown keys, an empty case or reason, a case key without
// "FILE.json:", and duplicate cases are errors. A file that holds only
// comments, or an empty list, gives an empty map.
func LoadDeviations(path string) (map[string]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var entries []deviationEntry
	if err := dec.Decode(&entries); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("conformance: %s: %w", path, err)
	}
	var extra any
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("conformance: %s: more than one YAML document", path)
	}
	out := make(map[string]string, len(entries))
	for i, e := range entries {
		file, name, ok := strings.Cut(e.Case, ":")
		if !ok || !strings.HasSuffix(file, ".json") || strings.Contains(file, "/") || name == "" {
			return nil, fmt.Errorf("conformance: %s: entry %d: case %q is not \"FILE.json:full test name\"", path, i+1, e.Case)
		}
		if strings.TrimSpace(e.Reason) == "" {
			return nil, fmt.Errorf("conformance: %s: entry %d (%q): empty reason; cite the spec statement", path, i+1, e.Case)
		}
		if _, dup := out[e.Case]; dup {
			return nil, fmt.Errorf("conformance: %s: entry %d: case %q listed twice", path, i+1, e.Case)
		}
		out[e.Case] = e.Reason
	}
	return out, nil
}
