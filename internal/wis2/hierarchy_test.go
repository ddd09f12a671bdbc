package wis2

import (
	"archive/zip"
	"bytes"
	"encoding/csv"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestEmbeddedMatchesShared regenerates the compact form from ../shared/wis2/wth and compares
// it with the embedded file, so that a change of either side is caught.
func TestEmbeddedMatchesShared(t *testing.T) {
	dir := sharedDir(t)
	h, err := LoadHierarchy(filepath.Join(dir, "wth"))
	if err != nil {
		t.Fatal(err)
	}
	emb := EmbeddedHierarchy()
	got, err := h.WithSource(emb.Source()).MarshalText()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, wthCompact) {
		t.Fatal("wth.txt differs from ../shared/wis2/wth: run go generate in internal/wis2")
	}
	if !strings.Contains(emb.Source(), "ee83c9a328ac937a80460317dd0c0bb945d089bd") {
		t.Fatalf("embedded source %q does not name the WTH commit", emb.Source())
	}
	notice := string(readFile(t, "NOTICE"))
	if !strings.Contains(notice, "ee83c9a328ac937a80460317dd0c0bb945d089bd") || !strings.Contains(notice, "Apache License") {
		t.Fatal("NOTICE must name the WTH commit and the licence")
	}
	if s, ok := emb.Centre("de-dwd-gts-to-wis2"); !ok || s != "Operational" {
		t.Fatalf("Centre(de-dwd-gts-to-wis2) = %q, %v", s, ok)
	}
	if s, _ := emb.Centre("at-geosphere"); s != "Pre-operational" {
		t.Fatalf("Centre(at-geosphere) = %q", s)
	}
}

// hideFS hides one file, to read the tree form of a directory that also has the flat list.
type hideFS struct {
	fs.FS
	hide string
}

func (h hideFS) Open(name string) (fs.File, error) {
	if name == h.hide {
		return nil, fs.ErrNotExist
	}
	return h.FS.Open(name)
}

func (h hideFS) ReadDir(name string) ([]fs.DirEntry, error) {
	ents, err := fs.ReadDir(h.FS, name)
	return slices.DeleteFunc(ents, func(e fs.DirEntry) bool { return filepath.ToSlash(filepath.Join(name, e.Name())) == h.hide }), err
}

// TestTreeMatchesFlat checks that the earth-system-discipline/ tree (index.csv and
// index-flat.csv) gives the same paths as the bundle's flat list.
func TestTreeMatchesFlat(t *testing.T) {
	dir := filepath.Join(sharedDir(t), "wth")
	tree, err := loadFS(hideFS{os.DirFS(dir), "earth-system-discipline.csv"})
	if err != nil {
		t.Fatal(err)
	}
	flat, err := LoadHierarchy(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(tree.Paths(), flat.Paths()) {
		t.Fatalf("tree has %d paths, flat list %d", len(tree.Paths()), len(flat.Paths()))
	}
	// The upstream flat list has 1309 rows with one duplicate.
	if n := len(flat.Paths()); n != 1308 {
		t.Fatalf("got %d paths, want 1308", n)
	}
	for _, p := range []string{"weather/space-based-observations/sentinel-2b/msi", "space-weather/space-based-observations/xmm-newton/epic", "weather/experimental"} {
		if leaf, ok := flat.paths[p]; !ok || !leaf {
			t.Errorf("%s: present %v, leaf %v", p, ok, leaf)
		}
	}
	if leaf := flat.paths["weather/prediction"]; leaf {
		t.Error("weather/prediction is not a leaf")
	}
}

var bundleFiles = []string{"channel.csv", "version.csv", "system.csv", "centre-id.csv", "notification-type.csv", "data-policy.csv", "earth-system-discipline.csv"}

func writeZip(t *testing.T, path, prefix string, files map[string][]byte) {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, name := range slices.Sorted(func(yield func(string) bool) {
		for k := range files {
			if !yield(k) {
				return
			}
		}
	}) {
		w, err := zw.Create(prefix + name)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(files[name]); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestLoadHierarchyZipAndDir(t *testing.T) {
	dir := filepath.Join(sharedDir(t), "wth")
	files := map[string][]byte{}
	for _, f := range bundleFiles {
		files[f] = readFile(t, filepath.Join(dir, f))
	}
	want := EmbeddedHierarchy()
	tmp := t.TempDir()
	for _, prefix := range []string{"", "wth-bundle/"} {
		zp := filepath.Join(tmp, "b"+strings.TrimSuffix(prefix, "/")+".zip")
		writeZip(t, zp, prefix, files)
		h, err := LoadHierarchy(zp)
		if err != nil {
			t.Fatalf("prefix %q: %v", prefix, err)
		}
		a, _ := h.WithSource("x").MarshalText()
		b, _ := want.WithSource("x").MarshalText()
		if !bytes.Equal(a, b) {
			t.Fatalf("zip with prefix %q differs from the embedded hierarchy", prefix)
		}
		if h.Source() != zp {
			t.Fatalf("Source = %q", h.Source())
		}
	}
	// The repository layout: topic-hierarchy/ holding the CSVs and the tree, no flat list.
	repo := filepath.Join(tmp, "repo")
	if err := os.CopyFS(filepath.Join(repo, "topic-hierarchy"), hideFS{os.DirFS(dir), "earth-system-discipline.csv"}); err != nil {
		t.Fatal(err)
	}
	h, err := LoadHierarchy(repo)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(h.Paths(), want.Paths()) {
		t.Fatal("repository layout gives other paths")
	}

	// Damaged inputs are refused with an error, not a panic.
	bad := map[string]map[string][]byte{
		"no-channel": func() map[string][]byte { m := clone(files); delete(m, "channel.csv"); return m }(),
		"no-column":  func() map[string][]byte { m := clone(files); m["system.csv"] = []byte("Foo\nwis2\n"); return m }(),
		"empty":      func() map[string][]byte { m := clone(files); m["version.csv"] = []byte("Name\n"); return m }(),
		"orphan": func() map[string][]byte {
			m := clone(files)
			m["earth-system-discipline.csv"] = []byte("Name\nweather\nweather/a/b\n")
			return m
		}(),
		"bad-value": func() map[string][]byte {
			m := clone(files)
			m["data-policy.csv"] = []byte("Name\ncore\nre+c\n")
			return m
		}(),
		"no-paths": func() map[string][]byte { m := clone(files); delete(m, "earth-system-discipline.csv"); return m }(),
	}
	for name, fs := range bad {
		zp := filepath.Join(tmp, name+".zip")
		writeZip(t, zp, "", fs)
		if _, err := LoadHierarchy(zp); err == nil {
			t.Errorf("%s: loaded", name)
		}
	}
	if _, err := LoadHierarchy(filepath.Join(tmp, "missing")); err == nil {
		t.Error("missing path loaded")
	}
	if err := os.WriteFile(filepath.Join(tmp, "notzip"), []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadHierarchy(filepath.Join(tmp, "notzip")); err == nil {
		t.Error("a non-zip file loaded")
	}
}

func clone(m map[string][]byte) map[string][]byte {
	c := make(map[string][]byte, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

type topicRow struct {
	topic, source, gst, reason, publisher, wth string
}

func readTopics(t *testing.T, path string) []topicRow {
	t.Helper()
	r := csv.NewReader(bytes.NewReader(readFile(t, path)))
	recs, err := r.ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	var out []topicRow
	for _, rec := range recs[1:] {
		out = append(out, topicRow{rec[0], rec[1], rec[2], rec[3], rec[4], rec[5]})
	}
	return out
}

var testCentres = CentrePolicy{Registry: true, Allow: []string{"io-wis2dev-*-test"}}

// TestTopicFixtures runs every topic of examples/valid/topics.csv and examples/invalid/topics.csv
// through both profiles. "current" must agree with the README's check against today's WTH;
// "2024" with what the acceptance tests expect, except where the README explains why the test
// list itself is wrong (ship-hourly is not in the WTH) or the topic is fine and the check is
// the relay's (not_own_centreid).
func TestTopicFixtures(t *testing.T) {
	dir := sharedDir(t)
	h := EmbeddedHierarchy()
	var rows []topicRow
	rows = append(rows, readTopics(t, filepath.Join(dir, "examples", "valid", "topics.csv"))...)
	rows = append(rows, readTopics(t, filepath.Join(dir, "examples", "invalid", "topics.csv"))...)
	if len(rows) < 50 {
		t.Fatalf("only %d topics", len(rows))
	}
	for _, row := range rows {
		wantCurrent := strings.HasPrefix(row.wth, "valid")
		want2024 := strings.HasPrefix(row.gst, "valid")
		switch {
		case row.reason == "not_own_centreid":
			want2024 = true
		case strings.Contains(row.wth, "not in WTH"):
			want2024 = false
		}
		for _, tc := range []struct {
			p    Profile
			want bool
		}{{ProfileCurrent, wantCurrent}, {Profile2024, want2024}, {"", wantCurrent}} {
			info, err := h.Check(row.topic, TopicCheck{Profile: tc.p, Centres: testCentres})
			if (err == nil) != tc.want {
				t.Errorf("%s profile %q: err %v, want valid=%v (%s)", row.topic, tc.p, err, tc.want, row.wth)
				continue
			}
			if err != nil {
				if KindOf(err) != KindTopic || !errors.Is(err, ErrInvalidTopic) || errors.Is(err, ErrInvalidFormat) {
					t.Errorf("%s: error %v has kind %v", row.topic, err, KindOf(err))
				}
				continue
			}
			levels := strings.Split(row.topic, "/")
			if info.CentreID != levels[3] || info.Channel != levels[0] || !slices.Equal(info.Levels, levels) {
				t.Errorf("%s: info %+v", row.topic, info)
			}
			if row.publisher != "" && row.reason == "not_own_centreid" && info.CentreID == row.publisher {
				t.Errorf("%s: the relay needs CentreID %q to differ from the publisher", row.topic, info.CentreID)
			}
		}
		// The test centres are not in the WTH: with the registry alone every topic is refused.
		if _, err := h.Check(row.topic, TopicCheck{Centres: CentrePolicy{Registry: true}}); err == nil {
			t.Errorf("%s accepted with the registry alone", row.topic)
		}
	}
}

func TestTopicRules(t *testing.T) {
	h := EmbeddedHierarchy()
	gts := TopicCheck{GTSGateway: true, Centres: CentrePolicy{Registry: true}}
	reg := TopicCheck{Centres: CentrePolicy{Registry: true}}
	cases := []struct {
		topic string
		c     TopicCheck
		ok    bool
		want  string // substring of the error, or of a check on info
	}{
		{"origin/a/wis2/de-dwd/data/core/weather/surface-based-observations/synop", reg, true, ""},
		{"cache/a/wis2/de-dwd/data/recommended/weather/surface-based-observations/synop", reg, true, ""},
		{"origin/a/wis2/de-dwd/metadata", reg, true, ""},
		{"cache/a/wis2/de-dwd/metadata", reg, true, ""},
		{"origin/a/wis2/de-dwd/metadata/core", reg, false, "REQ publishing C"},
		{"origin/a/wis2/de-dwd/metadata/core/weather/surface-based-observations/synop", TopicCheck{Profile: Profile2024, Centres: reg.Centres}, true, ""},
		{"origin/a/wis2/de-dwd/metadata/core/weather/surface-based-observations", TopicCheck{Profile: Profile2024, Centres: reg.Centres}, false, "leaf"},
		{"origin/a/wis2/de-dwd/data/core/weather/prediction", reg, true, ""},
		{"origin/a/wis2/de-dwd/data/core/weather/prediction", TopicCheck{Profile: Profile2024}, false, "not a leaf"},
		{"origin/a/wis2/de-dwd/data/core/weather/experimental/x/y/z", TopicCheck{Profile: Profile2024}, true, ""},
		{"origin/a/wis2/de-dwd/data/core/weather/experimentalx", reg, false, "not in the WTH"},
		{"origin/a/wis2/de-dwd/data/core/weather", reg, false, "REQ publishing B"},
		{"origin/a/wis2/de-dwd/data/core", reg, false, "REQ publishing B"},
		{"origin/a/wis2/de-dwd/data", reg, false, "data-policy level missing"},
		{"origin/a/wis2/de-dwd/data/open/weather/surface-based-observations/synop", reg, false, "data-policy \"open\""},
		{"origin/a/wis2/de-dwd", reg, false, "at least 5 levels"},
		{"origin/b/wis2/de-dwd/metadata", reg, false, "version"},
		{"monitor/a/wis2/de-dwd/metadata", reg, false, "channel"},
		{"origin/a/wis2/xx-nobody/metadata", reg, false, "not in the WTH centre-id list"},
		{"origin/a/wis2/au-bom/metadata", reg, false, "retired"},
		{"origin/a/wis2/xx-nobody/metadata", TopicCheck{}, true, ""},
		{"origin/a/wis2/XX-Upper/metadata", TopicCheck{}, false, "well-formed"},
		{"origin/a/wis2/xx-nobody/metadata", TopicCheck{Centres: CentrePolicy{Allow: []string{"io-*"}}}, false, "not allowed"},
		{"origin/a/wis2/io-wis2dev-11-test/metadata", TopicCheck{Centres: CentrePolicy{Allow: []string{"io-wis2dev-*-test"}}}, true, ""},
		{"origin/a/wis2/+/metadata", reg, false, "wildcards"},
		{"origin/a/wis2/de-dwd/data/#", reg, false, "wildcards"},
		{"origin//wis2/de-dwd/metadata", reg, false, "empty topic level"},
		{"origin/a/wis2/de-dwd/metadata/", reg, false, "empty topic level"},
		{"", reg, false, "empty topic"},
		{"origin/a/wis2/de-dwd/metadata", TopicCheck{Profile: "2023"}, false, "unknown profile"},
		{"origin/a/wis2/de-dwd-gts-to-wis2/data/core/I/S/A/I/01/sbbr", gts, true, "GTS"},
		{"cache/a/wis2/de-dwd-gts-to-wis2/data/recommended/U/A/N/T/99/KDDL", gts, true, "GTS"},
		{"origin/a/wis2/de-dwd-gts-to-wis2/data/core/I/S/A/I/01/sbbr", reg, false, "not in the WTH"},
		{"origin/a/wis2/de-dwd/data/core/I/S/A/I/01/sbbr", gts, false, "not in the WTH"},
		{"origin/a/wis2/de-dwd-gts-to-wis2/data/core/I/S/A/I/1/sbbr", gts, false, "not in the WTH"},
		{"origin/a/wis2/de-dwd-gts-to-wis2/data/core/weather/surface-based-observations/synop", gts, true, ""},
	}
	for _, c := range cases {
		info, err := h.Check(c.topic, c.c)
		if (err == nil) != c.ok {
			t.Errorf("%q: err %v, want ok=%v", c.topic, err, c.ok)
			continue
		}
		if err != nil && !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: error %q does not say %q", c.topic, err, c.want)
		}
		if err == nil && c.want == "GTS" && !info.GTS {
			t.Errorf("%q: info.GTS not set", c.topic)
		}
	}
	info, err := h.Check("origin/a/wis2/de-dwd/data/recommended/hydrology/experimental/a", reg)
	if err != nil || !info.Experimental || info.DataPolicy != "recommended" || info.Discipline != "hydrology/experimental/a" || info.Metadata {
		t.Fatalf("info %+v, err %v", info, err)
	}
	info, err = h.Check("origin/a/wis2/de-dwd/metadata", reg)
	if err != nil || !info.Metadata || info.NotificationType != "metadata" || info.DataPolicy != "" {
		t.Fatalf("info %+v, err %v", info, err)
	}
}

func FuzzTopicCheck(f *testing.F) {
	for _, s := range []string{
		"origin/a/wis2/de-dwd/data/core/weather/surface-based-observations/synop",
		"origin/a/wis2/io-wis2dev-14-test/data/core/cryosphere/experimental/graviton/lambda",
		"cache/a/wis2/de-dwd-gts-to-wis2/data/recommended/U/A/N/T/99/KDDL",
		"origin/a/wis2/de-dwd/metadata", "origin/a/wis2/de-dwd/metadata/core/weather",
		"", "/", "//////////", "origin/a/wis2/+/#", "origin/a/wis2/de-dwd/data/core/weather/prediction",
	} {
		f.Add(s, false)
		f.Add(s, true)
	}
	h := EmbeddedHierarchy()
	f.Fuzz(func(t *testing.T, topic string, p2024 bool) {
		c := TopicCheck{Profile: ProfileCurrent, GTSGateway: true, Centres: CentrePolicy{Allow: []string{"io-*-test"}, Registry: true}}
		if p2024 {
			c.Profile = Profile2024
		}
		info, err := h.Check(topic, c)
		if err != nil {
			if KindOf(err) != KindTopic || err.Error() == "" {
				t.Fatalf("error %v of kind %v", err, KindOf(err))
			}
			return
		}
		levels := strings.Split(topic, "/")
		if len(levels) < 5 || info.CentreID != levels[3] || strings.ContainsAny(topic, "+#") {
			t.Fatalf("accepted %q with %+v", topic, info)
		}
		if !info.Metadata && len(levels) < 8 && !info.GTS {
			t.Fatalf("accepted a data topic above level 8: %q", topic)
		}
		// The current profile accepts everything the 2024 one does except deeper metadata.
		if p2024 && !(info.Metadata && len(levels) > 5) {
			if _, err := h.Check(topic, TopicCheck{GTSGateway: true, Centres: c.Centres}); err != nil {
				t.Fatalf("%q valid in 2024, not in current: %v", topic, err)
			}
		}
	})
}

func TestTopicCheckValidate(t *testing.T) {
	for _, ok := range []TopicCheck{{}, {Profile: Profile2024}, {Profile: ProfileCurrent, Centres: CentrePolicy{Allow: []string{"io-wis2dev-*-test", "de-dwd"}}}} {
		if err := ok.Validate(); err != nil {
			t.Errorf("%+v: %v", ok, err)
		}
	}
	for _, bad := range []TopicCheck{{Profile: "2023"}, {Centres: CentrePolicy{Allow: []string{"io-["}}}, {Centres: CentrePolicy{Allow: []string{""}}}, {Centres: CentrePolicy{Allow: []string{"a/b"}}}} {
		if err := bad.Validate(); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}
