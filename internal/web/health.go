package web

import "net/http"

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	checks := map[string]string{}
	ready := true
	for _, c := range s.readyChecks() {
		if err := c.Check(); err != nil {
			checks[c.Name] = err.Error()
			ready = false
		} else {
			checks[c.Name] = "ok"
		}
	}
	if name, problem := s.clusterReady(); name != "" {
		if problem != "" {
			checks[name] = problem
			ready = false
		} else {
			checks[name] = "ok"
		}
	}
	// A store that refuses writes (disk full, free space below the floor,
	// write errors): QoS 0 and reads still work, but what needs durability
	// is refused, so a load balancer should prefer other nodes.
	if s.opts.Broker.StoreDegraded() {
		checks["store_writable"] = "no: QoS 1/2 publishes and persistent sessions are refused until the store recovers"
		ready = false
	} else {
		checks["store_writable"] = "ok"
	}
	if s.opts.Broker.ShuttingDown() {
		checks["broker"] = "shutting down"
		ready = false
	} else {
		checks["broker"] = "ok"
	}
	status, code := "ready", http.StatusOK
	if !ready {
		status, code = "not ready", http.StatusServiceUnavailable
	}
	writeJSON(w, code, map[string]any{"status": status, "checks": checks})
}
