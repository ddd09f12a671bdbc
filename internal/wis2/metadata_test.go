package wis2

import (
	"os"
	"path/filepath"
	"testing"
)

func TestMetadataRegistry(t *testing.T) {
	dir := t.TempDir()
	csvPath := filepath.Join(dir, "m.csv")
	if err := os.WriteFile(csvPath, []byte("metadata_id,topic\n# comment\nurn:wmo:md:de-dwd:synop,origin/a/wis2/de-dwd/data/core/weather/surface-based-observations/synop\nurn:wmo:md:de-dwd:all,origin/a/wis2/de-dwd/data/core/weather/#\nurn:wmo:md:x:y,+/a/wis2/x/data/+/ocean/surface-based-observations/sea-ice\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	jsonPath := filepath.Join(dir, "m.json")
	if err := os.WriteFile(jsonPath, []byte(`[{"metadata_id":"urn:wmo:md:de-dwd:synop","topic":"origin/a/wis2/de-dwd/data/core/weather/surface-based-observations/synop"},{"metadata_id":"urn:wmo:md:de-dwd:all","topic":"origin/a/wis2/de-dwd/data/core/weather/#"},{"metadata_id":"urn:wmo:md:x:y","topic":"+/a/wis2/x/data/+/ocean/surface-based-observations/sea-ice"}]`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{csvPath, jsonPath} {
		r, err := LoadMetadataRegistry(p)
		if err != nil {
			t.Fatal(err)
		}
		if r.Len() != 3 {
			t.Errorf("%s: Len %d", p, r.Len())
		}
		for _, c := range []struct {
			id, topic string
			want      bool
		}{
			{"urn:wmo:md:de-dwd:synop", "origin/a/wis2/de-dwd/data/core/weather/surface-based-observations/synop", true},
			{"urn:wmo:md:de-dwd:synop", "cache/a/wis2/de-dwd/data/core/weather/surface-based-observations/synop", true},
			{"urn:wmo:md:de-dwd:synop", "origin/a/wis2/de-dwd/data/core/weather/surface-based-observations/temp", false},
			{"urn:wmo:md:de-dwd:all", "cache/a/wis2/de-dwd/data/core/weather/prediction/forecast", true},
			{"urn:wmo:md:de-dwd:all", "origin/a/wis2/de-dwd/data/core/ocean/x", false},
			{"urn:wmo:md:x:y", "cache/a/wis2/x/data/recommended/ocean/surface-based-observations/sea-ice", true},
			{"urn:wmo:md:x:y", "cache/a/wis2/x/data/recommended/ocean/surface-based-observations", false},
			{"", "origin/a/wis2/de-dwd/data/core/weather/surface-based-observations/synop", false},
			{"urn:wmo:md:unknown", "origin/a/wis2/de-dwd/data/core/weather/surface-based-observations/synop", false},
		} {
			if got := r.Known(c.id, c.topic); got != c.want {
				t.Errorf("%s: Known(%q, %q) = %v", p, c.id, c.topic, got)
			}
		}
	}
	var nilReg *MetadataRegistry
	if nilReg.Known("a", "b") || nilReg.Len() != 0 {
		t.Error("nil registry knows something")
	}
	bad := filepath.Join(dir, "bad.csv")
	_ = os.WriteFile(bad, []byte("a,b,c\n"), 0o600)
	if _, err := LoadMetadataRegistry(bad); err == nil {
		t.Error("3-column CSV loaded")
	}
	_ = os.WriteFile(bad, []byte("[{"), 0o600)
	if _, err := LoadMetadataRegistry(bad); err == nil {
		t.Error("broken JSON loaded")
	}
	if _, err := LoadMetadataRegistry(filepath.Join(dir, "missing")); err == nil {
		t.Error("missing file loaded")
	}
}
