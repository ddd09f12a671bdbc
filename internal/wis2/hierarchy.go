package wis2

import (
	"archive/zip"
	"bufio"
	"bytes"
	_ "embed"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"sort"
	"strings"
	"sync"
)

//go:generate go run gen.go -wth ../../../shared/wis2/wth -source wmo-im/wis2-topic-hierarchy@ee83c9a328ac937a80460317dd0c0bb945d089bd -o wth.txt

// wthCompact is the WIS2 Topic Hierarchy in the compact form written by Hierarchy.MarshalText
// (see gen.go and NOTICE for its source and licence).
//
//go:embed wth.txt
var wthCompact []byte

// Hierarchy is one version of the WIS2 Topic Hierarchy (WTH) code lists: levels 1 to 6 and the
// earth-system-discipline paths from level 7 down. It is immutable once built, so one value may
// be shared by any number of goroutines; a reload builds a new one.
type Hierarchy struct {
	source   string
	channels map[string]bool
	versions map[string]bool
	systems  map[string]bool
	types    map[string]bool
	policies map[string]bool
	// centres maps a centre-id to its Status column (Operational, Pre-operational, Retired).
	centres map[string]string
	// paths maps every earth-system-discipline path ("weather/surface-based-observations/synop")
	// to whether it is a leaf (has no sub-topic in the code list).
	paths map[string]bool
}

var embedded = sync.OnceValue(func() *Hierarchy {
	h, err := parseCompact(wthCompact)
	if err != nil {
		// The embedded file is generated and compared with its source by the tests, so a
		// failure here is a build defect, not an input error.
		panic("wis2: embedded topic hierarchy is corrupt: " + err.Error())
	}
	return h
})

// EmbeddedHierarchy returns the hierarchy shipped in the binary. The value is shared and immutable.
func EmbeddedHierarchy() *Hierarchy { return embedded() }

// Source describes where the hierarchy was loaded from (a path, or the upstream repository and
// commit for the embedded one).
func (h *Hierarchy) Source() string { return h.source }

// Centre returns the Status of a centre-id in the code list and whether it is listed.
func (h *Hierarchy) Centre(id string) (status string, ok bool) {
	status, ok = h.centres[id]
	return status, ok
}

// Paths returns the earth-system-discipline paths, sorted.
func (h *Hierarchy) Paths() []string {
	out := make([]string, 0, len(h.paths))
	for p := range h.paths {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

// LoadHierarchy reads a hierarchy from a directory laid out as the WTH bundle (channel.csv,
// version.csv, system.csv, centre-id.csv, notification-type.csv, data-policy.csv and either the
// flat earth-system-discipline.csv or the earth-system-discipline/ tree of index.csv and
// index-flat.csv files), from the repository's topic-hierarchy/ directory, or from the
// wth-bundle.zip file the WTH publishes.
func LoadHierarchy(p string) (*Hierarchy, error) {
	st, err := os.Stat(p)
	if err != nil {
		return nil, fmt.Errorf("wis2: load hierarchy: %w", err)
	}
	var fsys fs.FS
	if st.IsDir() {
		fsys = os.DirFS(p)
	} else {
		zr, err := zip.OpenReader(p)
		if err != nil {
			return nil, fmt.Errorf("wis2: load hierarchy %s: %w", p, err)
		}
		defer zr.Close()
		fsys = zr
	}
	fsys, err = findRoot(fsys)
	if err != nil {
		return nil, fmt.Errorf("wis2: load hierarchy %s: %w", p, err)
	}
	h, err := loadFS(fsys)
	if err != nil {
		return nil, fmt.Errorf("wis2: load hierarchy %s: %w", p, err)
	}
	h.source = p
	return h, nil
}

// findRoot returns the directory of fsys that holds channel.csv: the root, topic-hierarchy/
// (the repository layout), or the single top-level directory of a zip file.
func findRoot(fsys fs.FS) (fs.FS, error) {
	for _, dir := range []string{".", "topic-hierarchy"} {
		if _, err := fs.Stat(fsys, path.Join(dir, "channel.csv")); err == nil {
			return fs.Sub(fsys, dir)
		}
	}
	ents, err := fs.ReadDir(fsys, ".")
	if err != nil {
		return nil, err
	}
	for _, e := range ents {
		if e.IsDir() {
			if _, err := fs.Stat(fsys, path.Join(e.Name(), "channel.csv")); err == nil {
				return fs.Sub(fsys, e.Name())
			}
		}
	}
	return nil, errors.New("no channel.csv found")
}

func newHierarchy() *Hierarchy {
	return &Hierarchy{
		channels: map[string]bool{}, versions: map[string]bool{}, systems: map[string]bool{},
		types: map[string]bool{}, policies: map[string]bool{}, centres: map[string]string{},
		paths: map[string]bool{},
	}
}

func loadFS(fsys fs.FS) (*Hierarchy, error) {
	h := newHierarchy()
	lists := []struct {
		file string
		into map[string]bool
	}{
		{"channel.csv", h.channels}, {"version.csv", h.versions}, {"system.csv", h.systems},
		{"notification-type.csv", h.types}, {"data-policy.csv", h.policies},
	}
	for _, l := range lists {
		rows, err := readCodeList(fsys, l.file, "Name")
		if err != nil {
			return nil, err
		}
		for _, r := range rows {
			l.into[r[0]] = true
		}
	}
	rows, err := readCodeList(fsys, "centre-id.csv", "Name", "Status")
	if err != nil {
		return nil, err
	}
	for _, r := range rows {
		h.centres[r[0]] = r[1]
	}
	if _, err := fs.Stat(fsys, "earth-system-discipline.csv"); err == nil {
		rows, err := readCodeList(fsys, "earth-system-discipline.csv", "Name")
		if err != nil {
			return nil, err
		}
		for _, r := range rows {
			h.paths[r[0]] = true
		}
	} else if err := h.walkTree(fsys, "earth-system-discipline"); err != nil {
		return nil, err
	}
	if err := h.finish(); err != nil {
		return nil, err
	}
	return h, nil
}

// walkTree reads the hierarchical form: dir/index.csv lists the children of the path dir, and
// dir/index-flat.csv lists <satellite>/<instrument> pairs below it.
func (h *Hierarchy) walkTree(fsys fs.FS, root string) error {
	found := false
	err := fs.WalkDir(fsys, root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		rel := strings.TrimPrefix(strings.TrimPrefix(path.Dir(p), root), "/")
		switch d.Name() {
		case "index.csv":
			found = true
			rows, err := readCodeList(fsys, p, "Name")
			if err != nil {
				return err
			}
			for _, r := range rows {
				h.paths[path.Join(rel, r[0])] = true
			}
		case "index-flat.csv":
			found = true
			rows, err := readCodeList(fsys, p, "satellite", "instrument")
			if err != nil {
				return err
			}
			for _, r := range rows {
				h.paths[path.Join(rel, r[0])] = true
				h.paths[path.Join(rel, r[0], r[1])] = true
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if !found {
		return errors.New("neither earth-system-discipline.csv nor earth-system-discipline/index.csv found")
	}
	return nil
}

// finish checks the lists and computes which paths are leaves.
func (h *Hierarchy) finish() error {
	for name, m := range map[string]map[string]bool{
		"channel": h.channels, "version": h.versions, "system": h.systems,
		"notification-type": h.types, "data-policy": h.policies,
	} {
		if len(m) == 0 {
			return fmt.Errorf("code list %s is empty", name)
		}
		for v := range m {
			if !validLevel(v) {
				return fmt.Errorf("code list %s: invalid value %q", name, v)
			}
		}
	}
	if len(h.centres) == 0 || len(h.paths) == 0 {
		return errors.New("centre-id or earth-system-discipline list is empty")
	}
	for p := range h.paths {
		for _, l := range strings.Split(p, "/") {
			if !validLevel(l) {
				return fmt.Errorf("earth-system-discipline: invalid path %q", p)
			}
		}
	}
	// A path whose parent is missing would be unreachable for a subscriber browsing the tree;
	// the upstream lists are complete, so a gap means a damaged file.
	for p := range h.paths {
		if i := strings.LastIndexByte(p, '/'); i >= 0 {
			parent := p[:i]
			if _, ok := h.paths[parent]; !ok {
				return fmt.Errorf("earth-system-discipline: %q is listed without its parent %q", p, parent)
			}
			h.paths[parent] = false
		}
	}
	return nil
}

// validLevel reports whether s can be one MQTT topic level of the hierarchy.
func validLevel(s string) bool {
	return s != "" && !strings.ContainsAny(s, "/+#\x00 \t\r\n")
}

// readCodeList reads the named columns of a CSV code list. Rows with an empty first column are
// skipped. Rows may be ragged (one upstream file has fewer fields than header columns); a
// missing column reads as "".
func readCodeList(fsys fs.FS, name string, cols ...string) ([][]string, error) {
	data, err := fs.ReadFile(fsys, name)
	if err != nil {
		return nil, err
	}
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))
	r := csv.NewReader(bytes.NewReader(data))
	r.FieldsPerRecord = -1
	header, err := r.Read()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	idx := make([]int, len(cols))
	for i, c := range cols {
		idx[i] = slices.Index(header, c)
		if idx[i] < 0 {
			return nil, fmt.Errorf("%s: no column %q", name, c)
		}
	}
	var out [][]string
	for {
		rec, err := r.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		row := make([]string, len(cols))
		for i, j := range idx {
			if j < len(rec) {
				row[i] = strings.TrimSpace(rec[j])
			}
		}
		if row[0] == "" {
			continue
		}
		out = append(out, row)
	}
	return out, nil
}

// MarshalText writes the compact form embedded in the binary: one "<list> <value>" line per
// entry ("centre <id> <status>" for centre-ids), sorted, after a "source" line.
func (h *Hierarchy) MarshalText() ([]byte, error) {
	var b bytes.Buffer
	b.WriteString("# WIS2 Topic Hierarchy code lists, compact form. Generated by gen.go: do not edit.\n")
	fmt.Fprintf(&b, "source %s\n", h.source)
	for _, l := range []struct {
		key string
		m   map[string]bool
	}{
		{"channel", h.channels}, {"version", h.versions}, {"system", h.systems},
		{"notification-type", h.types}, {"data-policy", h.policies},
	} {
		for _, v := range sortedKeys(l.m) {
			fmt.Fprintf(&b, "%s %s\n", l.key, v)
		}
	}
	ids := make([]string, 0, len(h.centres))
	for id := range h.centres {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		fmt.Fprintf(&b, "centre %s %s\n", id, strings.ReplaceAll(h.centres[id], " ", "_"))
	}
	for _, p := range h.Paths() {
		fmt.Fprintf(&b, "path %s\n", p)
	}
	return b.Bytes(), nil
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func parseCompact(data []byte) (*Hierarchy, error) {
	h := newHierarchy()
	sc := bufio.NewScanner(bytes.NewReader(data))
	line := 0
	for sc.Scan() {
		line++
		text := sc.Text()
		if text == "" || text[0] == '#' {
			continue
		}
		key, rest, _ := strings.Cut(text, " ")
		switch key {
		case "source":
			h.source = rest
		case "channel":
			h.channels[rest] = true
		case "version":
			h.versions[rest] = true
		case "system":
			h.systems[rest] = true
		case "notification-type":
			h.types[rest] = true
		case "data-policy":
			h.policies[rest] = true
		case "centre":
			id, status, _ := strings.Cut(rest, " ")
			h.centres[id] = strings.ReplaceAll(status, "_", " ")
		case "path":
			h.paths[rest] = true
		default:
			return nil, fmt.Errorf("line %d: unknown key %q", line, key)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if err := h.finish(); err != nil {
		return nil, err
	}
	return h, nil
}

// WithSource returns a copy of h that reports s as its Source (gen.go records the upstream
// repository and commit this way).
func (h *Hierarchy) WithSource(s string) *Hierarchy {
	c := *h
	c.source = s
	return &c
}
