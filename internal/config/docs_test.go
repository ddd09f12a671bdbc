package config

import (
	"os"
	"reflect"
	"strings"
	"testing"
	"time"
)

// TestEveryKeyDocumented walks the configuration's YAML keys and checks
// that docs/configuration.md names each one (as `key` in a table or text).
func TestEveryKeyDocumented(t *testing.T) {
	doc, err := os.ReadFile("../../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(doc)
	var missing []string
	var walk func(typ reflect.Type, path string)
	walk = func(typ reflect.Type, path string) {
		for typ.Kind() == reflect.Pointer || typ.Kind() == reflect.Slice {
			typ = typ.Elem()
		}
		if typ.Kind() != reflect.Struct || typ == reflect.TypeOf(time.Time{}) {
			return
		}
		for i := 0; i < typ.NumField(); i++ {
			f := typ.Field(i)
			tag := strings.Split(f.Tag.Get("yaml"), ",")[0]
			if tag == "" || tag == "-" {
				continue
			}
			key := tag
			if path != "" {
				key = path + "." + tag
			}
			// A key is documented when its last element appears as `name`,
			// or its dotted path does.
			// A section is documented through its keys (`log.level`).
			if !strings.Contains(text, "`"+tag+"`") && !strings.Contains(text, "`"+key+"`") &&
				!strings.Contains(text, "`"+tag+".") && !strings.Contains(text, "."+tag+"`") {
				missing = append(missing, key)
			}
			walk(f.Type, key)
		}
	}
	walk(reflect.TypeOf(Config{}), "")
	if len(missing) > 0 {
		t.Fatalf("keys not documented in docs/configuration.md: %v", missing)
	}
}
