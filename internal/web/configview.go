package web

import (
	"net/http"
	"strings"

	"go.yaml.in/yaml/v3"
)

// redactKey reports whether a configuration key's value is never shown.
func redactKey(k string) bool {
	k = strings.ToLower(k)
	return k == "hash" || strings.Contains(k, "password") || strings.Contains(k, "secret") ||
		strings.Contains(k, "token") || strings.Contains(k, "private")
}

const redacted = "[redacted]"

func redact(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			if redactKey(k) {
				if e != nil && e != "" {
					x[k] = redacted
				}
				continue
			}
			x[k] = redact(e)
		}
		return x
	case []any:
		for i := range x {
			x[i] = redact(x[i])
		}
		return x
	}
	return v
}

func (s *Server) config(w http.ResponseWriter, r *http.Request) {
	if s.opts.Settings == nil {
		writeError(w, http.StatusNotFound, "configuration not available")
		return
	}
	raw, err := yaml.Marshal(s.opts.Settings)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "rendering configuration: %v", err)
		return
	}
	var tree any
	if err := yaml.Unmarshal(raw, &tree); err != nil {
		writeError(w, http.StatusInternalServerError, "rendering configuration: %v", err)
		return
	}
	writeJSON(w, http.StatusOK, redact(tree))
}
