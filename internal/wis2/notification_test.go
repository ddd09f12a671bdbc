package wis2

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// validators returns the built-in rules and the official schema from ../shared.
func validators(t testing.TB) (builtin, official *Validator) {
	t.Helper()
	dir := sharedDir(t)
	b, err := NewValidator(nil)
	if err != nil {
		t.Fatal(err)
	}
	o, err := NewValidator(readFile(t, filepath.Join(dir, "schemas", "wis2-notification-message-bundled.json")))
	if err != nil {
		t.Fatal(err)
	}
	return b, o
}

func jsonFiles(t testing.TB, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil || len(m) == 0 {
		t.Fatalf("no fixtures in %s: %v", dir, err)
	}
	sort.Strings(m)
	return m
}

func stringID(payload []byte) string {
	var m map[string]any
	_ = json.Unmarshal(payload, &m)
	s, _ := m["id"].(string)
	return s
}

func TestNotificationFixtures(t *testing.T) {
	dir := sharedDir(t)
	builtin, official := validators(t)
	for name, v := range map[string]*Validator{"builtin": builtin, "official": official} {
		for _, f := range jsonFiles(t, filepath.Join(dir, "examples", "valid")) {
			payload := readFile(t, f)
			n, err := v.Check(payload)
			if err != nil {
				t.Errorf("%s %s: %v", name, filepath.Base(f), err)
			}
			if n.ID == "" || n.ID != stringID(payload) || n.PubTime == "" || n.DataID == "" || n.Size != len(payload) || len(n.Links) == 0 {
				t.Errorf("%s %s: notification %+v", name, filepath.Base(f), n)
			}
			if _, ok := n.DataLink(); !ok {
				t.Errorf("%s %s: no single canonical/update/deletion link", name, filepath.Base(f))
			}
		}
		count := 0
		for _, f := range jsonFiles(t, filepath.Join(dir, "examples", "invalid")) {
			count++
			payload := readFile(t, f)
			n, err := v.Check(payload)
			if err == nil {
				t.Errorf("%s %s: accepted", name, filepath.Base(f))
				continue
			}
			if KindOf(err) != KindFormat || !errors.Is(err, ErrInvalidFormat) {
				t.Errorf("%s %s: error %v has kind %v", name, filepath.Base(f), err, KindOf(err))
			}
			if n.ID != stringID(payload) {
				t.Errorf("%s %s: ID %q", name, filepath.Base(f), n.ID)
			}
		}
		if count != 16 {
			t.Errorf("%d invalid fixtures, want 16", count)
		}
	}
	// Specific reasons from the README's table (built-in rules).
	for file, want := range map[string]string{
		"id_not_uuid.json":         "/id",
		"datetime_notRFC3339.json": "/properties/datetime",
		"conformsTo_invalid.json":  "/conformsTo",
		"no_href.json":             "/links/0",
		"type_not_feature.json":    "/type",
		"all_datetime.json":        "oneOf",
		"no_id.json":               `"id"`,
	} {
		_, err := builtin.Check(readFile(t, filepath.Join(dir, "examples", "invalid", file)))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v does not mention %s", file, err, want)
		}
	}
}

// applyPatch applies a GST scenario's configuration.wnm object as the README describes: false
// removes a key, objects merge recursively, a links array patches links[0], conformsTo [false]
// removes conformsTo.
func applyPatch(doc map[string]any, patch map[string]any) {
	for k, pv := range patch {
		switch pv := pv.(type) {
		case bool:
			if !pv {
				delete(doc, k)
				continue
			}
			doc[k] = pv
		case map[string]any:
			sub, ok := doc[k].(map[string]any)
			if !ok {
				sub = map[string]any{}
				doc[k] = sub
			}
			applyPatch(sub, pv)
		case []any:
			if k == "conformsTo" && len(pv) == 1 && pv[0] == false {
				delete(doc, k)
				continue
			}
			if k == "links" && len(pv) > 0 {
				links, _ := doc["links"].([]any)
				if p0, ok := pv[0].(map[string]any); ok && len(links) > 0 {
					if l0, ok := links[0].(map[string]any); ok {
						applyPatch(l0, p0)
						continue
					}
				}
			}
			doc[k] = pv
		default:
			doc[k] = pv
		}
	}
}

// TestGSTScenarios builds the message of every acceptance-test scenario from the fake node's
// minimal message and checks both validators: valid and set_pubtime pass, the others fail.
func TestGSTScenarios(t *testing.T) {
	dir := sharedDir(t)
	builtin, official := validators(t)
	base := readFile(t, filepath.Join(dir, "examples", "valid", "gst-minimal-wnm.json"))
	files := jsonFiles(t, filepath.Join(dir, "examples", "gst-scenarios"))
	if len(files) != 21 {
		t.Fatalf("%d scenarios, want 21", len(files))
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".json")
		var sc struct {
			Configuration struct {
				Setup struct {
					Topic string `json:"topic"`
				} `json:"setup"`
				WNM map[string]any `json:"wnm"`
			} `json:"configuration"`
		}
		if err := json.Unmarshal(readFile(t, f), &sc); err != nil {
			t.Fatal(err)
		}
		var doc map[string]any
		if err := json.Unmarshal(base, &doc); err != nil {
			t.Fatal(err)
		}
		applyPatch(doc, sc.Configuration.WNM)
		payload, _ := json.Marshal(doc)
		wantValid := sc.Configuration.WNM == nil || name == "set_pubtime"
		for vn, v := range map[string]*Validator{"builtin": builtin, "official": official} {
			_, err := v.Check(payload)
			if (err == nil) != wantValid {
				t.Errorf("%s %s: err %v, want valid=%v", vn, name, err, wantValid)
			}
			if err != nil && KindOf(err) != KindFormat {
				t.Errorf("%s %s: kind %v", vn, name, KindOf(err))
			}
		}
		// The materialized fixture of a message scenario must be what the patch gives.
		if fx := filepath.Join(dir, "examples", "invalid", name+".json"); !wantValid {
			if _, err := os.Stat(fx); err == nil {
				var a, b map[string]any
				_ = json.Unmarshal(readFile(t, fx), &a)
				_ = json.Unmarshal(payload, &b)
				delete(a, "id")
				delete(b, "id")
				if fmt.Sprint(a) != fmt.Sprint(b) {
					t.Errorf("%s: patched message differs from the fixture:\n%v\n%v", name, a, b)
				}
			}
		}
		if sc.Configuration.Setup.Topic != "" {
			if _, err := EmbeddedHierarchy().Check(sc.Configuration.Setup.Topic, TopicCheck{Profile: Profile2024, Centres: testCentres}); err == nil && name != "not_own_centreid" {
				t.Errorf("%s: topic %s accepted by the 2024 profile", name, sc.Configuration.Setup.Topic)
			}
		}
	}
}

func TestNotificationEdgeCases(t *testing.T) {
	dir := sharedDir(t)
	builtin, official := validators(t)
	base := readFile(t, filepath.Join(dir, "examples", "valid", "gst-minimal-wnm.json"))
	mod := func(f func(m map[string]any)) []byte {
		var m map[string]any
		if err := json.Unmarshal(base, &m); err != nil {
			t.Fatal(err)
		}
		f(m)
		b, _ := json.Marshal(m)
		return b
	}
	props := func(m map[string]any) map[string]any { return m["properties"].(map[string]any) }
	cases := []struct {
		name    string
		payload []byte
		kind    Kind // 0 = valid
		id      string
	}{
		{"lower-case t and z", mod(func(m map[string]any) {
			props(m)["pubtime"] = "2024-07-20t19:12:29z"
			props(m)["datetime"] = "2024-07-20t19:12:29.5+02:00"
		}), 0, "071154d6-0180-4b3a-beda-09cc2007a9c1"},
		{"null datetime", mod(func(m map[string]any) { props(m)["datetime"] = nil }), 0, "071154d6-0180-4b3a-beda-09cc2007a9c1"},
		{"leap second", mod(func(m map[string]any) { props(m)["datetime"] = "2016-12-31T23:59:60Z" }), 0, "071154d6-0180-4b3a-beda-09cc2007a9c1"},
		{"bad leap second", mod(func(m map[string]any) { props(m)["datetime"] = "2016-12-31T12:59:60Z" }), KindFormat, "071154d6-0180-4b3a-beda-09cc2007a9c1"},
		{"february 30", mod(func(m map[string]any) { props(m)["datetime"] = "2024-02-30T00:00:00Z" }), KindFormat, "071154d6-0180-4b3a-beda-09cc2007a9c1"},
		{"no offset", mod(func(m map[string]any) { props(m)["pubtime"] = "2024-07-20T19:12:29" }), KindFormat, "071154d6-0180-4b3a-beda-09cc2007a9c1"},
		{"upper-case uuid", mod(func(m map[string]any) { m["id"] = "071154D6-0180-4B3A-BEDA-09CC2007A9C1" }), 0, "071154D6-0180-4B3A-BEDA-09CC2007A9C1"},
		{"numeric id", mod(func(m map[string]any) { m["id"] = 12 }), KindFormat, ""},
		{"no id", mod(func(m map[string]any) { delete(m, "id") }), KindFormat, ""},
		{"version form", mod(func(m map[string]any) { delete(m, "conformsTo"); m["version"] = "v04" }), 0, "071154d6-0180-4b3a-beda-09cc2007a9c1"},
		{"version and conformsTo", mod(func(m map[string]any) { m["version"] = "v04" }), KindFormat, "071154d6-0180-4b3a-beda-09cc2007a9c1"},
		{"empty links", mod(func(m map[string]any) { m["links"] = []any{} }), KindFormat, "071154d6-0180-4b3a-beda-09cc2007a9c1"},
		{"point", mod(func(m map[string]any) {
			m["geometry"] = map[string]any{"type": "Point", "coordinates": []any{1, 2.5, 3}}
		}), 0, "071154d6-0180-4b3a-beda-09cc2007a9c1"},
		{"point with one coordinate", mod(func(m map[string]any) { m["geometry"] = map[string]any{"type": "Point", "coordinates": []any{1}} }), KindFormat, "071154d6-0180-4b3a-beda-09cc2007a9c1"},
		{"line string", mod(func(m map[string]any) { m["geometry"] = map[string]any{"type": "LineString", "coordinates": []any{}} }), KindFormat, "071154d6-0180-4b3a-beda-09cc2007a9c1"},
		{"inline content too large", mod(func(m map[string]any) {
			props(m)["content"] = map[string]any{"encoding": "utf-8", "size": 5000, "value": "x"}
		}), KindSize, "071154d6-0180-4b3a-beda-09cc2007a9c1"},
		{"inline value too long", mod(func(m map[string]any) {
			props(m)["content"] = map[string]any{"encoding": "utf-8", "size": 10, "value": strings.Repeat("é", 4097)}
		}), KindSize, "071154d6-0180-4b3a-beda-09cc2007a9c1"},
		{"inline content at the limit", mod(func(m map[string]any) {
			props(m)["content"] = map[string]any{"encoding": "utf-8", "size": 4096.0, "value": strings.Repeat("x", 4096)}
		}), 0, "071154d6-0180-4b3a-beda-09cc2007a9c1"},
		{"message too large", mod(func(m map[string]any) { m["padding"] = strings.Repeat("x", 8200) }), KindSize, "071154d6-0180-4b3a-beda-09cc2007a9c1"},
		{"unparsable", []byte(`{"id": "071154d6-0180-4b3a-beda-09cc2007a9c1",`), KindFormat, ""},
		{"trailing data", append(append([]byte{}, base...), []byte(` {}`)...), KindFormat, ""},
		{"array", []byte(`[1,2]`), KindFormat, ""},
		{"null", []byte(`null`), KindFormat, ""},
		{"number", []byte(`1e400`), KindFormat, ""},
		{"empty", nil, KindFormat, ""},
		{"huge unparsable", []byte(strings.Repeat("[", 2<<20)), KindSize, ""},
	}
	for _, c := range cases {
		for vn, v := range map[string]*Validator{"builtin": builtin, "official": official} {
			n, err := v.Check(c.payload)
			if KindOf(err) != c.kind || (err == nil) != (c.kind == 0) {
				t.Errorf("%s %s: err %v (kind %v), want kind %v", vn, c.name, err, KindOf(err), c.kind)
			}
			if n.ID != c.id {
				t.Errorf("%s %s: ID %q, want %q", vn, c.name, n.ID, c.id)
			}
		}
	}
	if _, err := NewValidator([]byte(`{"type": 12}`)); err == nil {
		t.Error("a broken schema compiled")
	}
	if _, err := NewValidator([]byte(`not json`)); err == nil {
		t.Error("a non-JSON schema compiled")
	}
}

// mutations returns variants of doc: each member (recursively) removed or replaced by values
// of other types and by near-miss values.
func mutations(doc any) []any {
	var out []any
	replacements := []any{nil, json.Number("1"), json.Number("1.5"), "x", "", true, []any{}, map[string]any{},
		"2024-07-20T12:44:28Z", "071154d6-0180-4b3a-beda-09cc2007a9c1", "Feature", "Point", "canonical", "http", "bearer"}
	var walk func(v any, set func(any), del func())
	walk = func(v any, set func(any), del func()) {
		if del != nil {
			del()
			out = append(out, deepCopy(doc))
			set(v)
		}
		for _, r := range replacements {
			set(r)
			out = append(out, deepCopy(doc))
		}
		set(v)
		switch v := v.(type) {
		case map[string]any:
			for _, k := range sortedAnyKeys(v) {
				child := v[k]
				walk(child, func(x any) { v[k] = x }, func() { delete(v, k) })
			}
		case []any:
			for i := range v {
				child := v[i]
				walk(child, func(x any) { v[i] = x }, nil)
			}
		}
	}
	walk(doc, func(any) {}, nil)
	return out
}

func sortedAnyKeys(m map[string]any) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func deepCopy(v any) any {
	switch v := v.(type) {
	case map[string]any:
		c := make(map[string]any, len(v))
		for k, x := range v {
			c[k] = deepCopy(x)
		}
		return c
	case []any:
		c := make([]any, len(v))
		for i, x := range v {
			c[i] = deepCopy(x)
		}
		return c
	}
	return v
}

// TestBuiltinAgreesWithSchema compares the verdicts of the built-in rules and the official
// schema on every fixture and on thousands of mutations of them (every member removed, or
// replaced by other types and near-miss values).
func TestBuiltinAgreesWithSchema(t *testing.T) {
	dir := sharedDir(t)
	builtin, official := validators(t)
	var files []string
	files = append(files, jsonFiles(t, filepath.Join(dir, "examples", "valid"))...)
	files = append(files, jsonFiles(t, filepath.Join(dir, "examples", "invalid"))...)
	// A security object with every scheme, to reach the OpenAPI definitions.
	extra := `{"id":"071154d6-0180-4b3a-beda-09cc2007a9c1","conformsTo":["http://wis.wmo.int/spec/wnm/1/conf/core"],"type":"Feature","geometry":{"type":"Polygon","coordinates":[[[1,2],[3,4],[5,6],[1,2]]]},
	"properties":{"pubtime":"2024-07-20T12:44:28Z","data_id":"d","start_datetime":"2024-07-20T12:00:00Z","end_datetime":"2024-07-20T13:00:00Z","integrity":{"method":"sha256","value":"AA=="},"content":{"encoding":"base64","size":3,"value":"AAAA"}},
	"links":[{"href":"https://a/b","rel":"canonical","length":3,"security":{"k":{"type":"apiKey","name":"n","in":"header","x-a":1},"h":{"type":"http","scheme":"bearer","bearerFormat":"JWT"},"b":{"type":"http","scheme":"basic"},
	"o":{"type":"oauth2","flows":{"implicit":{"authorizationUrl":"https://a","scopes":{"r":"read"}},"password":{"tokenUrl":"https://t"},"clientCredentials":{"tokenUrl":"/t","refreshUrl":"r"},"authorizationCode":{"authorizationUrl":"a","tokenUrl":"t"}}},
	"i":{"type":"openIdConnect","openIdConnectUrl":"https://o"},"r":{"$ref":"#/x"},"not matching!":{"anything":1}}}]}`
	docs := [][]byte{[]byte(extra)}
	for _, f := range files {
		docs = append(docs, readFile(t, f))
	}
	total, disagree := 0, 0
	for i, payload := range docs {
		doc, err := decodeJSON(payload)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range append([]any{doc}, mutations(doc)...) {
			b, err := json.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			_, e1 := builtin.Check(b)
			_, e2 := official.Check(b)
			total++
			if (e1 == nil) != (e2 == nil) || KindOf(e1) != KindOf(e2) {
				disagree++
				if disagree <= 10 {
					t.Errorf("doc %d: builtin %v, official %v on %s", i, e1, e2, b)
				}
			}
		}
	}
	if total < 2000 {
		t.Errorf("only %d cases", total)
	}
	t.Logf("%d cases, %d disagreements", total, disagree)
}

func FuzzCheck(f *testing.F) {
	dir := sharedDir(f)
	for _, sub := range []string{"valid", "invalid"} {
		for _, file := range jsonFiles(f, filepath.Join(dir, "examples", sub)) {
			f.Add(readFile(f, file))
		}
	}
	f.Add([]byte(`{"id":1}`))
	f.Add([]byte(`[`))
	builtin, official := validators(f)
	f.Fuzz(func(t *testing.T, payload []byte) {
		n1, e1 := builtin.Check(payload)
		n2, e2 := official.Check(payload)
		if e1 == nil && n1.ID == "" {
			t.Fatal("valid without an id")
		}
		if n1.ID != n2.ID {
			t.Fatalf("ids differ: %q %q", n1.ID, n2.ID)
		}
		if (e1 == nil) != (e2 == nil) || KindOf(e1) != KindOf(e2) {
			t.Fatalf("builtin %v, official %v", e1, e2)
		}
	})
}
