// Package conformance runs Eclipse Mosquitto's packet-sequence broker tests
// ("msg_sequence" JSON files, copied under
// shared/conformance/mosquitto-packet-tests/) against any MQTT broker
// listening on TCP.
//
// Each case is one TCP conversation: an optional default CONNECT/CONNACK,
// then steps that send raw bytes, expect exact bytes, or publish a message
// from a helper connection, then an end check (the broker must have closed
// the connection, or must still answer PINGREQ with exactly PINGRESP). The
// format and the runner semantics follow the README next to the data;
// Load parses the files, Case.Run executes one case, and RunAll runs a suite
// as Go subtests with an allow-list of documented deviations.
//
// Cases must run sequentially against one broker instance in the order Load
// returns them: state such as retained messages carries over between cases.
package conformance

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/isobar-mq/isobar/internal/testutil/wire"
)

// StepType is the kind of a step of a case.
type StepType string

// Step types.
const (
	// StepSend writes Payload to the connection as it is.
	StepSend StepType = "send"
	// StepRecv reads exactly len(Payload) bytes and requires them to equal
	// Payload.
	StepRecv StepType = "recv"
	// StepPublish publishes Payload on Topic with QoS from a separate helper
	// connection (client id "helper", MQTT 3.1.1).
	StepPublish StepType = "publish"
)

// Step is one element of a case's "msgs" array.
type Step struct {
	Type StepType
	// Payload is the decoded wire bytes for send and recv, and the
	// application message (the JSON string's UTF-8 bytes, not hex) for
	// publish.
	Payload []byte
	Topic   string // publish only
	QoS     byte   // publish only: 0, 1 or 2
	Comment string
}

// Case is one test case.
type Case struct {
	File  string // base name of the JSON file, e.g. "PUBLISH.json"
	Group string // group name including its padding, e.g. "v5.0   PUBLISH"
	Name  string // test name, e.g. "C0 [MQTT-3.1.0-1]"
	// Ver is the protocol level of the default CONNECT: 3 (MQTT 3.1),
	// 4 (3.1.1) or 5 (5.0). Unused when Connect is false.
	Ver int
	// Connect: send the default CONNECT and expect the default CONNACK
	// before the steps.
	Connect bool
	// ExpectDisconnect: after the steps the broker must have closed the
	// connection; otherwise it must answer PINGREQ with exactly PINGRESP.
	ExpectDisconnect bool
	Steps            []Step
}

// FullName is group + " " + name. It is also the client id of the default
// CONNECT. Full names are not unique (a few cases share one).
func (c Case) FullName() string { return c.Group + " " + c.Name }

// Key identifies the case in a deviations list: file + ":" + full name,
// e.g. "PUBLISH.json:v5.0   PUBLISH 30 topic alias > max topic alias".
func (c Case) Key() string { return c.File + ":" + c.FullName() }

// TestName is the subtest name RunAll uses for the case: the full name with
// every character other than ASCII letters, digits, '.' and '-' replaced by
// '_' (runs collapsed), so that it can be selected with go test -run
// without regular-expression escaping. Go appends #01, #02 ... to duplicates.
func (c Case) TestName() string { return sanitize(c.FullName()) }

func sanitize(s string) string {
	var sb strings.Builder
	underscore := false
	for _, r := range s {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-'
		if ok {
			sb.WriteRune(r)
			underscore = false
			continue
		}
		if !underscore && sb.Len() > 0 {
			sb.WriteByte('_')
			underscore = true
		}
	}
	return strings.TrimSuffix(sb.String(), "_")
}

// JSON shapes. Unknown keys are rejected so that a format change in a new
// copy of the data is noticed instead of silently ignored.
type jsonGroup struct {
	Group            *string     `json:"group"`
	Tests            *[]jsonTest `json:"tests"`
	Ver              *int        `json:"ver"`
	Connect          *bool       `json:"connect"`
	ExpectDisconnect *bool       `json:"expect_disconnect"`
	Disable          bool        `json:"disable"`
	Comment          string      `json:"comment"`
}

type jsonTest struct {
	Name             *string     `json:"name"`
	Ver              *int        `json:"ver"`
	Connect          *bool       `json:"connect"`
	ExpectDisconnect *bool       `json:"expect_disconnect"`
	Msgs             *[]jsonStep `json:"msgs"`
	Comment          string      `json:"comment"`
	Comment2         string      `json:"comment2"`
	FIXME            string      `json:"FIXME"`
}

type jsonStep struct {
	Type    string  `json:"type"`
	Payload *string `json:"payload"`
	Topic   *string `json:"topic"`
	QoS     *int    `json:"qos"`
	Comment string  `json:"comment"`
}

// Load reads every *.json file of dir in sorted file-name order and returns
// their cases in execution order: files sorted by name, groups and tests in
// array order. Group defaults (ver, connect, expect_disconnect; defaults 4,
// true, true) apply to tests that do not set the key themselves; groups with
// "disable": true are skipped.
func Load(dir string) ([]Case, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range entries {
		if !e.IsDir() && strings.HasSuffix(e.Name(), ".json") {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	if len(names) == 0 {
		return nil, fmt.Errorf("conformance: no .json files in %s", dir)
	}
	var cases []Case
	for _, name := range names {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return nil, err
		}
		fc, err := parseFile(name, data)
		if err != nil {
			return nil, fmt.Errorf("conformance: %s: %w", filepath.Join(dir, name), err)
		}
		cases = append(cases, fc...)
	}
	return cases, nil
}

func parseFile(file string, data []byte) ([]Case, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var groups []jsonGroup
	if err := dec.Decode(&groups); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("trailing data after the top-level array")
	}
	if groups == nil {
		return nil, errors.New("top level is not an array of groups")
	}
	var cases []Case
	for gi, g := range groups {
		if g.Group == nil {
			return nil, fmt.Errorf("group %d: missing \"group\"", gi)
		}
		if g.Tests == nil {
			return nil, fmt.Errorf("group %q: missing \"tests\"", *g.Group)
		}
		if g.Disable {
			continue
		}
		gver := 4
		if g.Ver != nil {
			gver = *g.Ver
		}
		gconnect, gexpect := boolOr(g.Connect, true), boolOr(g.ExpectDisconnect, true)
		for ti, jt := range *g.Tests {
			c, err := buildCase(file, *g.Group, gver, gconnect, gexpect, jt)
			if err != nil {
				return nil, fmt.Errorf("group %q test %d: %w", *g.Group, ti, err)
			}
			cases = append(cases, c)
		}
	}
	return cases, nil
}

func buildCase(file, group string, gver int, gconnect, gexpect bool, jt jsonTest) (Case, error) {
	if jt.Name == nil {
		return Case{}, errors.New("missing \"name\"")
	}
	if jt.Msgs == nil {
		return Case{}, fmt.Errorf("%q: missing \"msgs\"", *jt.Name)
	}
	c := Case{
		File:             file,
		Group:            group,
		Name:             *jt.Name,
		Ver:              gver,
		Connect:          boolOr(jt.Connect, gconnect),
		ExpectDisconnect: boolOr(jt.ExpectDisconnect, gexpect),
	}
	if jt.Ver != nil {
		c.Ver = *jt.Ver
	}
	if c.Ver < 3 || c.Ver > 5 {
		return Case{}, fmt.Errorf("%q: ver %d is not 3, 4 or 5", c.Name, c.Ver)
	}
	for si, js := range *jt.Msgs {
		s, err := buildStep(js)
		if err != nil {
			return Case{}, fmt.Errorf("%q step %d: %w", c.Name, si, err)
		}
		c.Steps = append(c.Steps, s)
	}
	return c, nil
}

func buildStep(js jsonStep) (Step, error) {
	s := Step{Type: StepType(js.Type), Comment: js.Comment}
	if js.Payload == nil {
		return Step{}, errors.New("missing \"payload\"")
	}
	switch s.Type {
	case StepSend, StepRecv:
		if js.Topic != nil || js.QoS != nil {
			return Step{}, fmt.Errorf("%s step with topic/qos", s.Type)
		}
		b, err := wire.DecodeHex(*js.Payload)
		if err != nil {
			return Step{}, err
		}
		s.Payload = b
	case StepPublish:
		if js.Topic == nil || *js.Topic == "" {
			return Step{}, errors.New("publish step without topic")
		}
		if js.QoS == nil || *js.QoS < 0 || *js.QoS > 2 {
			return Step{}, errors.New("publish step needs qos 0, 1 or 2")
		}
		s.Topic, s.QoS, s.Payload = *js.Topic, byte(*js.QoS), []byte(*js.Payload)
	default:
		return Step{}, fmt.Errorf("unknown step type %q", js.Type)
	}
	return s, nil
}

func boolOr(p *bool, def bool) bool {
	if p == nil {
		return def
	}
	return *p
}

// DataEnv names an environment variable that, when set, is the directory
// holding the suites (the folder with develop/ and v2.0.20/).
const DataEnv = "ISOBAR_CONFORMANCE_DATA"

// ErrNoData is wrapped by FindSuite's error when the data is simply not
// there: $ISOBAR_CONFORMANCE_DATA is unset and neither the working
// directory nor any parent has a shared/ directory. Tests skip on it (and
// fail in CI); any other FindSuite error means the data is present but not
// where or what it should be, and must fail the test.
var ErrNoData = errors.New("conformance data not available")

// FindSuite returns the directory of a suite ("develop" or "v2.0.20"): under
// $ISOBAR_CONFORMANCE_DATA if set, otherwise under
// shared/conformance/mosquitto-packet-tests/ in the nearest of the working
// directory and its parents that has a shared/ directory (the data lives
// next to the repository, at ../shared relative to its root). The error
// wraps ErrNoData only when there is no such directory and no
// $ISOBAR_CONFORMANCE_DATA; a shared/ directory or a
// $ISOBAR_CONFORMANCE_DATA without the suite is a wrong layout.
func FindSuite(suite string) (string, error) {
	if d := os.Getenv(DataEnv); d != "" {
		dir := filepath.Join(d, suite)
		if st, err := os.Stat(dir); err != nil || !st.IsDir() {
			return "", fmt.Errorf("conformance: $%s=%s has no directory %s", DataEnv, d, suite)
		}
		return dir, nil
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	rel := filepath.Join("conformance", "mosquitto-packet-tests", suite)
	for d := wd; ; d = filepath.Dir(d) {
		shared := filepath.Join(d, "shared")
		if st, err := os.Stat(shared); err == nil && st.IsDir() {
			dir := filepath.Join(shared, rel)
			if st, err := os.Stat(dir); err != nil || !st.IsDir() {
				return "", fmt.Errorf("conformance: %s exists but has no directory %s (wrong layout?)", shared, rel)
			}
			return dir, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("conformance: no shared/ directory in %s or any parent (set $%s): %w", wd, DataEnv, ErrNoData)
		}
	}
}
