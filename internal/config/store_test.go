package config

import (
	"strings"
	"testing"
)

func TestStoreMinFreeBytes(t *testing.T) {
	if got := Default().Store.MinFreeBytes; got != 64<<20 {
		t.Fatalf("default store.min_free_bytes %d", got)
	}
	c, err := Parse([]byte("store: {min_free_bytes: 1048576}\n"))
	if err != nil || c.Store.MinFreeBytes != 1<<20 {
		t.Fatalf("parse: %v %+v", err, c)
	}
	if c, err := Parse([]byte("store: {min_free_bytes: 0}\n")); err != nil || c.Store.MinFreeBytes != 0 {
		t.Fatalf("0 (no floor): %v", err)
	}
	if _, err := Parse([]byte("store: {min_free_bytes: -1}\n")); err == nil || !strings.Contains(err.Error(), "store.min_free_bytes") {
		t.Fatalf("negative: %v", err)
	}
}
