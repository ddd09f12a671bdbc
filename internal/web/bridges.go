package web

import (
	"net/http"
	"sync"
)

// GET /api/v1/bridges (any role): the node's bridges as the bridge engine
// reports them (internal/bridge Status: connected, since, in/out counts,
// buffered, drops, last error). A node without bridges answers an empty
// list.

// bridgeState holds the Server's bridge status source.
type bridgeState struct {
	mu  sync.Mutex
	src func() any
}

// SetBridges makes GET /api/v1/bridges answer with what f returns (a
// JSON-encodable list). Safe on a nil Server (HTTP disabled).
func (s *Server) SetBridges(f func() any) {
	if s == nil {
		return
	}
	s.br.mu.Lock()
	s.br.src = f
	s.br.mu.Unlock()
}

func (s *Server) bridges(w http.ResponseWriter, _ *http.Request) {
	s.br.mu.Lock()
	f := s.br.src
	s.br.mu.Unlock()
	if f == nil {
		writeJSON(w, http.StatusOK, []any{})
		return
	}
	writeJSON(w, http.StatusOK, f())
}
