package wis2

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
)

// MetadataPair says that discovery metadata record MetadataID announces data on Topic.
type MetadataPair struct {
	MetadataID string `json:"metadata_id"`
	Topic      string `json:"topic"`
}

// MetadataRegistry is the set of (metadata_id, topic) pairs the Global Broker knows from the
// Global Discovery Catalogue; a notification whose pair is unknown counts in
// wmo_wis2_gb_messages_no_metadata_total. It is immutable, so a reload builds a new one and any
// number of goroutines may read it.
type MetadataRegistry struct {
	exact   map[string]map[string]bool // metadata_id -> topic without level 1 -> true
	filters map[string][]string        // metadata_id -> MQTT filters (with + or #) without level 1
}

// NewMetadataRegistry builds a registry from pairs. A topic may be an MQTT filter (+ and #).
func NewMetadataRegistry(pairs []MetadataPair) *MetadataRegistry {
	r := &MetadataRegistry{exact: map[string]map[string]bool{}, filters: map[string][]string{}}
	for _, p := range pairs {
		if p.MetadataID == "" || p.Topic == "" {
			continue
		}
		t := withoutChannel(p.Topic)
		if strings.ContainsAny(t, "+#") {
			r.filters[p.MetadataID] = append(r.filters[p.MetadataID], t)
			continue
		}
		m := r.exact[p.MetadataID]
		if m == nil {
			m = map[string]bool{}
			r.exact[p.MetadataID] = m
		}
		m[t] = true
	}
	return r
}

// LoadMetadataRegistry reads pairs from a file: a JSON array of {"metadata_id", "topic"}
// objects, or CSV with the columns metadata_id,topic (a header line naming them is optional;
// lines starting with # are comments).
func LoadMetadataRegistry(path string) (*MetadataRegistry, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("wis2: metadata registry: %w", err)
	}
	trimmed := bytes.TrimSpace(data)
	var pairs []MetadataPair
	if len(trimmed) > 0 && trimmed[0] == '[' {
		if err := json.Unmarshal(trimmed, &pairs); err != nil {
			return nil, fmt.Errorf("wis2: metadata registry %s: %w", path, err)
		}
		return NewMetadataRegistry(pairs), nil
	}
	cr := csv.NewReader(bytes.NewReader(data))
	cr.Comment = '#'
	cr.FieldsPerRecord = -1
	for line := 1; ; line++ {
		rec, err := cr.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("wis2: metadata registry %s: %w", path, err)
		}
		if len(rec) != 2 {
			return nil, fmt.Errorf("wis2: metadata registry %s: record %d: want 2 fields (metadata_id,topic), got %d", path, line, len(rec))
		}
		id, topic := strings.TrimSpace(rec[0]), strings.TrimSpace(rec[1])
		if line == 1 && id == "metadata_id" && topic == "topic" {
			continue
		}
		pairs = append(pairs, MetadataPair{MetadataID: id, Topic: topic})
	}
	return NewMetadataRegistry(pairs), nil
}

// Known reports whether metadataID is registered for topic. Level 1 (origin or cache) is not
// compared: a Global Cache republishes under cache/ what the record announces under origin/.
func (r *MetadataRegistry) Known(metadataID, topic string) bool {
	if r == nil || metadataID == "" {
		return false
	}
	t := withoutChannel(topic)
	if r.exact[metadataID][t] {
		return true
	}
	for _, f := range r.filters[metadataID] {
		if filterMatch(f, t) {
			return true
		}
	}
	return false
}

// Len returns the number of metadata ids.
func (r *MetadataRegistry) Len() int {
	if r == nil {
		return 0
	}
	n := len(r.exact)
	for id := range r.filters {
		if _, ok := r.exact[id]; !ok {
			n++
		}
	}
	return n
}

func withoutChannel(topic string) string {
	if i := strings.IndexByte(topic, '/'); i >= 0 {
		switch topic[:i] {
		case "origin", "cache", "+":
			return topic[i+1:]
		}
	}
	return topic
}

// filterMatch matches an MQTT topic filter against a topic name.
func filterMatch(filter, topic string) bool {
	fl := strings.Split(filter, "/")
	tl := strings.Split(topic, "/")
	for i, f := range fl {
		if f == "#" {
			return true
		}
		if i >= len(tl) {
			return false
		}
		if f != "+" && f != tl[i] {
			return false
		}
	}
	return len(fl) == len(tl)
}
