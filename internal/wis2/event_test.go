package wis2

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// wmeSchema compiles ../shared's WME schema with the two workarounds its README describes: the
// nested $id/$schema keywords are removed (so that "#/definitions/..." resolves against the
// root), and the PCRE-only, double-escaped resolution pattern is dropped.
func wmeSchema(t *testing.T) *jsonschema.Schema {
	t.Helper()
	raw := readFile(t, filepath.Join(sharedDir(t), "schemas", "wis2-event-message-bundled.json"))
	var s map[string]any
	if err := json.Unmarshal(raw, &s); err != nil {
		t.Fatal(err)
	}
	dig := func(v any, path ...any) map[string]any {
		for _, p := range path {
			switch p := p.(type) {
			case string:
				v = v.(map[string]any)[p]
			case int:
				v = v.([]any)[p]
			}
		}
		return v.(map[string]any)
	}
	data := dig(s, "allOf", 1, "properties", "data", "properties")
	items := dig(data, "links", "items")
	delete(items, "$id")
	delete(items, "$schema")
	delete(dig(s, "definitions", "Cloudevents-v1_0_2"), "$schema")
	delete(dig(data, "time", "oneOf", 1, "properties", "resolution"), "pattern")
	b, _ := json.Marshal(s)
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	if err := c.AddResource("wme.json", doc); err != nil {
		t.Fatal(err)
	}
	sch, err := c.Compile("wme.json")
	if err != nil {
		t.Fatal(err)
	}
	return sch
}

func validateWME(t *testing.T, s *jsonschema.Schema, b []byte) {
	t.Helper()
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Validate(doc); err != nil {
		t.Fatalf("event does not validate: %v\n%s", err, b)
	}
}

func keys(m map[string]any) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

func TestEventAgainstSchemaAndExample(t *testing.T) {
	dir := sharedDir(t)
	sch := wmeSchema(t)
	example := readFile(t, filepath.Join(dir, "examples", "monitoring", "wmem-gb-wnm-report.json"))
	validateWME(t, sch, example) // the workarounds keep the official example valid
	var ex map[string]any
	if err := json.Unmarshal(example, &ex); err != nil {
		t.Fatal(err)
	}

	v, err := NewValidator(nil)
	if err != nil {
		t.Fatal(err)
	}
	topic := "cache/a/wis2/de-dwd-gts-to-wis2/data/recommended/U/A/N/T/99/KDDL"
	for _, f := range jsonFiles(t, filepath.Join(dir, "examples", "invalid")) {
		payload := readFile(t, f)
		n, cerr := v.Check(payload)
		ev := NewDiscardEvent("io-wis2dev-global-broker", topic, payload, n, cerr)
		b, err := ev.JSON()
		if err != nil {
			t.Fatal(err)
		}
		validateWME(t, sch, b)
		if len(b) > MaxEventSize {
			t.Fatalf("%d bytes", len(b))
		}
		if ev.Topic() != "monitor/a/wis2/de-dwd-gts-to-wis2" {
			t.Fatalf("topic %q", ev.Topic())
		}
		var got map[string]any
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatal(err)
		}
		// Same shape as the upstream example.
		if !slices.Equal(keys(got), keys(ex)) {
			t.Fatalf("top-level keys %v, example %v", keys(got), keys(ex))
		}
		gd, ed := got["data"].(map[string]any), ex["data"].(map[string]any)
		if !slices.Equal(keys(gd), keys(ed)) {
			t.Fatalf("data keys %v, example %v", keys(gd), keys(ed))
		}
		gc, ec := gd["content"].(map[string]any), ed["content"].(map[string]any)
		if !slices.Equal(keys(gc), keys(ec)) {
			t.Fatalf("content keys %v, example %v", keys(gc), keys(ec))
		}
		if !slices.Equal(keys(gc["exception"].(map[string]any)), []string{"code", "description", "errors"}) {
			t.Fatalf("exception %v", gc["exception"])
		}
		for _, k := range []string{"specversion", "type", "datacontenttype", "dataschema"} {
			if got[k] != ex[k] {
				t.Errorf("%s = %v, example %v", k, got[k], ex[k])
			}
		}
		if got["subject"] != "de-dwd-gts-to-wis2" || got["source"] != "io-wis2dev-global-broker" || gd["subtype"] != "wnm-report" || gd["severity"] != "ERROR" {
			t.Errorf("event %s", b)
		}
		if gc["exception"].(map[string]any)["code"] != ReasonInvalidSchema {
			t.Errorf("code %v", gc["exception"])
		}
		wnm, _ := json.Marshal(gc["wnm"])
		var orig any
		_ = json.Unmarshal(payload, &orig)
		origJSON, _ := json.Marshal(orig)
		if !bytes.Equal(wnm, origJSON) {
			t.Errorf("%s: embedded wnm differs", filepath.Base(f))
		}
	}
}

func TestEventLimitsAndErrors(t *testing.T) {
	sch := wmeSchema(t)
	topic := "origin/a/wis2/io-wis2dev-12-test/data/core/weather/nothing/here"
	_, terr := EmbeddedHierarchy().Check(topic, TopicCheck{})
	if KindOf(terr) != KindTopic {
		t.Fatal(terr)
	}
	big := []byte(`{"id":"071154d6-0180-4b3a-beda-09cc2007a9c1","padding":"` + strings.Repeat("x", 7900) + `"}`)
	ev := NewDiscardEvent("de-dwd-global-broker", topic, big, Notification{ID: "071154d6-0180-4b3a-beda-09cc2007a9c1"}, terr)
	ev.Time = time.Date(2026, 1, 2, 3, 4, 5, 6e6, time.FixedZone("x", 3600))
	ev.ID = "6e1c7f9f-dd6c-48d9-bbc4-aef0625f1fb8"
	b, err := ev.JSON()
	if err != nil {
		t.Fatal(err)
	}
	validateWME(t, sch, b)
	var got struct {
		ID, Time string
		Data     struct {
			Content struct {
				WNM       json.RawMessage `json:"wnm"`
				WNMID     string          `json:"wnm_id"`
				Exception struct{ Code string }
			}
		}
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if got.ID != ev.ID || got.Time != "2026-01-02T02:04:05.006Z" || got.Data.Content.WNM != nil ||
		got.Data.Content.WNMID != "071154d6-0180-4b3a-beda-09cc2007a9c1" || got.Data.Content.Exception.Code != ReasonInvalidTopic {
		t.Fatalf("event %s", b)
	}
	if ev.Topic() != "monitor/a/wis2/io-wis2dev-12-test" {
		t.Fatal(ev.Topic())
	}

	// Too many errors: trimmed to fit.
	many := Event{ReportBy: "de-dwd-global-broker", About: "de-dwd", Reason: ReasonTooLarge}
	for i := 0; i < 500; i++ {
		many.Errors = append(many.Errors, Detail{Path: "/x", Message: strings.Repeat("e", 30)})
	}
	b, err = many.JSON()
	if err != nil || len(b) > MaxEventSize {
		t.Fatalf("%d bytes, %v", len(b), err)
	}
	validateWME(t, sch, b)

	// A non-JSON message is not embedded; random ids are UUIDs.
	ne := NewDiscardEvent("de-dwd-global-broker", "origin/a/wis2/de-dwd/data", []byte("{nope"), Notification{}, &Error{Kind: KindFormat})
	b, err = ne.JSON()
	if err != nil {
		t.Fatal(err)
	}
	validateWME(t, sch, b)
	if bytes.Contains(b, []byte(`"wnm"`)) {
		t.Fatalf("embedded a non-JSON message: %s", b)
	}
	for i := 0; i < 100; i++ {
		if id := newUUID(); !validUUID(id) || id[14] != '4' {
			t.Fatalf("uuid %q", id)
		}
	}
	for _, bad := range []Event{
		{ReportBy: "", About: "de-dwd"},
		{ReportBy: "de-dwd-global-broker", About: ""},
		{ReportBy: "de-dwd-global-broker", About: "de-dwd", ID: "nope"},
		{ReportBy: "de-dwd-global-broker", About: "de-dwd", Severity: "FATAL"},
		{ReportBy: "de-dwd-global-broker", About: "de-dwd", Description: strings.Repeat("d", 9000)},
	} {
		if _, err := bad.JSON(); err == nil {
			t.Errorf("%+v encoded", bad)
		}
	}
}
