package conformance

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func writeFiles(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestLoadFormat(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		"b.json": `[
			{"group": "v5.0   G", "ver": 5, "connect": false, "expect_disconnect": false, "comment": "x", "tests": [
				{"name": "inherits", "msgs": []},
				{"name": "overrides", "ver": 3, "connect": true, "expect_disconnect": true, "comment": "c", "comment2": "d", "FIXME": "e",
				 "msgs": [{"type": "send", "payload": "c0 00", "comment": "ping"}]}
			]},
			{"group": "off", "disable": true, "tests": [{"name": "never", "msgs": [{"type": "bogus"}]}]},
			{"group": "v3.1.1 H", "tests": [
				{"name": "defaults", "msgs": [
					{"type": "recv", "payload": "90 03 1234 01"},
					{"type": "publish", "topic": "a/b", "qos": 2, "payload": "héllo 00"}
				]}
			]}
		]`,
		"a.json":    `[{"group": "A", "tests": [{"name": "first", "msgs": []}]}]`,
		"notes.txt": "ignored",
	})
	cases, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := []Case{
		{File: "a.json", Group: "A", Name: "first", Ver: 4, Connect: true, ExpectDisconnect: true},
		{File: "b.json", Group: "v5.0   G", Name: "inherits", Ver: 5},
		{File: "b.json", Group: "v5.0   G", Name: "overrides", Ver: 3, Connect: true, ExpectDisconnect: true,
			Steps: []Step{{Type: StepSend, Payload: []byte{0xC0, 0x00}, Comment: "ping"}}},
		{File: "b.json", Group: "v3.1.1 H", Name: "defaults", Ver: 4, Connect: true, ExpectDisconnect: true,
			Steps: []Step{
				{Type: StepRecv, Payload: []byte{0x90, 0x03, 0x12, 0x34, 0x01}},
				{Type: StepPublish, Topic: "a/b", QoS: 2, Payload: []byte("héllo 00")},
			}},
	}
	if !reflect.DeepEqual(cases, want) {
		t.Fatalf("Load:\n got %+v\nwant %+v", cases, want)
	}
	if got := cases[1].FullName(); got != "v5.0   G inherits" {
		t.Errorf("FullName = %q", got)
	}
	if got := cases[1].Key(); got != "b.json:v5.0   G inherits" {
		t.Errorf("Key = %q", got)
	}
}

func TestLoadErrors(t *testing.T) {
	for name, body := range map[string]string{
		"unknown group key":  `[{"group": "g", "tests": [], "extra": 1}]`,
		"unknown test key":   `[{"group": "g", "tests": [{"name": "n", "msgs": [], "disable": true}]}]`,
		"unknown step key":   `[{"group": "g", "tests": [{"name": "n", "msgs": [{"type": "send", "payload": "00", "x": 1}]}]}]`,
		"missing group":      `[{"tests": []}]`,
		"missing tests":      `[{"group": "g"}]`,
		"missing name":       `[{"group": "g", "tests": [{"msgs": []}]}]`,
		"missing msgs":       `[{"group": "g", "tests": [{"name": "n"}]}]`,
		"missing payload":    `[{"group": "g", "tests": [{"name": "n", "msgs": [{"type": "send"}]}]}]`,
		"odd hex":            `[{"group": "g", "tests": [{"name": "n", "msgs": [{"type": "send", "payload": "C0 0"}]}]}]`,
		"tab in hex":         `[{"group": "g", "tests": [{"name": "n", "msgs": [{"type": "recv", "payload": "C0\t00"}]}]}]`,
		"bad type":           `[{"group": "g", "tests": [{"name": "n", "msgs": [{"type": "wait", "payload": ""}]}]}]`,
		"bad ver":            `[{"group": "g", "ver": 6, "tests": [{"name": "n", "msgs": []}]}]`,
		"bad qos":            `[{"group": "g", "tests": [{"name": "n", "msgs": [{"type": "publish", "topic": "t", "qos": 3, "payload": ""}]}]}]`,
		"publish no topic":   `[{"group": "g", "tests": [{"name": "n", "msgs": [{"type": "publish", "qos": 0, "payload": ""}]}]}]`,
		"send with qos":      `[{"group": "g", "tests": [{"name": "n", "msgs": [{"type": "send", "qos": 0, "payload": ""}]}]}]`,
		"not an array":       `{"group": "g"}`,
		"trailing data":      `[] []`,
		"null":               `null`,
		"wrong type for ver": `[{"group": "g", "ver": "5", "tests": []}]`,
	} {
		t.Run(name, func(t *testing.T) {
			dir := writeFiles(t, map[string]string{"X.json": body})
			if cases, err := Load(dir); err == nil {
				t.Fatalf("accepted: %+v", cases)
			} else if !strings.Contains(err.Error(), "X.json") {
				t.Errorf("error %q does not name the file", err)
			}
		})
	}
	if _, err := Load(t.TempDir()); err == nil {
		t.Error("empty directory accepted")
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("missing directory accepted")
	}
}

func TestTestName(t *testing.T) {
	for full, want := range map[string]string{
		"v5.0   PUBLISH C0 [MQTT-3.1.0-1]":        "v5.0_PUBLISH_C0_MQTT-3.1.0-1",
		"v3.1.1 SUBSCRIBE 82 topic # (wildcard)":  "v3.1.1_SUBSCRIBE_82_topic_wildcard",
		"v5.0   X 30 topic alias > max, a=b * +/": "v5.0_X_30_topic_alias_max_a_b",
	} {
		g, n, _ := strings.Cut(full, " ")
		if got := (Case{Group: g, Name: n}).TestName(); got != want {
			t.Errorf("TestName(%q) = %q, want %q", full, got, want)
		}
	}
}

func TestLoadDeviations(t *testing.T) {
	dir := t.TempDir()
	write := func(body string) string {
		p := filepath.Join(dir, "d.yaml")
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, f := range []string{"deviations-develop.yaml", "deviations-v2.0.20.yaml"} {
		if _, err := LoadDeviations(f); err != nil {
			t.Fatalf("the committed %s: %v", f, err)
		}
	}
	for _, empty := range []string{"", "# only a comment\n", "[]\n"} {
		devs, err := LoadDeviations(write(empty))
		if err != nil || len(devs) != 0 {
			t.Errorf("%q: %v, %v", empty, devs, err)
		}
	}
	devs, err := LoadDeviations(write(`# header
- case: "PUBLISH.json:v5.0   PUBLISH 30 topic alias > max topic alias"
  reason: "[MQTT-3.2.2-17] ..."
- case: "CONNECT.json:v3.1.1 CONNECT x"
  reason: >
    folded text
`))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"PUBLISH.json:v5.0   PUBLISH 30 topic alias > max topic alias": "[MQTT-3.2.2-17] ...",
		"CONNECT.json:v3.1.1 CONNECT x":                                "folded text\n",
	}
	if !reflect.DeepEqual(devs, want) {
		t.Errorf("got %q, want %q", devs, want)
	}
	for name, body := range map[string]string{
		"unknown key":   "- case: \"A.json:x\"\n  reason: r\n  note: n\n",
		"no reason":     "- case: \"A.json:x\"\n",
		"blank reason":  "- case: \"A.json:x\"\n  reason: \"  \"\n",
		"no file":       "- case: \"x\"\n  reason: r\n",
		"not json file": "- case: \"A.yaml:x\"\n  reason: r\n",
		"no name":       "- case: \"A.json:\"\n  reason: r\n",
		"path":          "- case: \"develop/A.json:x\"\n  reason: r\n",
		"duplicate":     "- case: \"A.json:x\"\n  reason: r\n- case: \"A.json:x\"\n  reason: s\n",
		"not a list":    "case: \"A.json:x\"\nreason: r\n",
		"two documents": "[]\n---\n[]\n",
	} {
		if devs, err := LoadDeviations(write(body)); err == nil {
			t.Errorf("%s: accepted: %v", name, devs)
		}
	}
	if _, err := LoadDeviations(filepath.Join(dir, "missing.yaml")); err == nil {
		t.Error("missing file accepted")
	}
}
