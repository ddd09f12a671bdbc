package web

import (
	"net/http"

	"github.com/isobar-mq/isobar/internal/listener"
)

// ListenerInfo is one entry of GET /api/v1/listeners.
type ListenerInfo struct {
	Name          string `json:"name"`
	Protocol      string `json:"protocol"`
	Address       string `json:"address"`
	TLS           bool   `json:"tls"`
	ClientCerts   bool   `json:"client_certificates"`
	ProxyProtocol bool   `json:"proxy_protocol"`
	WSPath        string `json:"ws_path,omitempty"`
	Connections   int    `json:"connections"`
	Accepted      uint64 `json:"connections_accepted"`
}

func (s *Server) listeners(w http.ResponseWriter, r *http.Request) {
	by := s.opts.Broker.Totals().ConnectionsByListener
	out := []ListenerInfo{}
	for _, l := range s.opts.Listeners {
		c := l.Config()
		li := ListenerInfo{Name: c.Name, Protocol: c.Protocol, Address: l.Addr().String(), TLS: c.TLS != nil,
			ProxyProtocol: c.ProxyProtocol, Connections: by[c.Name]}
		if c.TLS != nil {
			li.ClientCerts = c.TLS.ClientCAFile != ""
		}
		if listener.IsWebSocket(c.Protocol) {
			li.WSPath = c.WSPath
		}
		if s.opts.Metrics != nil {
			li.Accepted = s.opts.Metrics.Accepted(c.Name)
		}
		out = append(out, li)
	}
	writeJSON(w, http.StatusOK, map[string]any{"items": out})
}
