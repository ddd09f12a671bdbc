package web

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/isobar-mq/isobar/internal/cluster"
)

// The cluster endpoints. A node that is part of a cluster hands its
// cluster to the Server with SetCluster; until then (and on a single
// node) GET /api/v1/cluster answers 404 "not clustered".
//
//   - GET /api/v1/cluster: the cluster as this node sees it (any role);
//   - POST /api/v1/cluster/drain: leave the cluster gracefully (admin).
//     The drain runs in the background, bounded by Options.DrainTimeout;
//     the answer is 202 at once, and the progress shows in GET
//     /api/v1/cluster (the node's state goes running -> draining -> left,
//     and "drain" tells how the request went). A second request while a
//     drain runs, or after the node has left, gets 409.

// DefaultDrainTimeout bounds a drain requested through the API when
// Options.DrainTimeout is zero.
const DefaultDrainTimeout = 2 * time.Minute

// ClusterSource is what the API needs from the node's cluster.
type ClusterSource interface {
	// ClusterStatus is a point-in-time view of the cluster; it must be
	// quick (it is called on every GET /api/v1/cluster and /readyz).
	ClusterStatus() cluster.Status
	// Drain leaves the cluster gracefully: returns when done or when ctx
	// ends.
	Drain(ctx context.Context) error
}

// clusterState is the Server's cluster source and the state of a drain
// requested through the API.
type clusterState struct {
	mu     sync.Mutex
	src    ClusterSource
	drain  *drainInfo // the last drain requested through the API; nil = none
	ctx    context.Context
	cancel context.CancelFunc // ends a running drain (Close)
	wg     sync.WaitGroup     // the running drain
	closed bool
}

// drainInfo is how the last drain requested through the API went.
type drainInfo struct {
	Running        bool       `json:"running"`
	RequestedBy    string     `json:"requested_by"`
	StartedAt      time.Time  `json:"started_at"`
	FinishedAt     *time.Time `json:"finished_at,omitempty"`
	TimeoutSeconds float64    `json:"timeout_seconds"`
	// Error is why the drain failed (its timeout included); empty when
	// it is running or succeeded.
	Error string `json:"error,omitempty"`
}

// clusterView is the body of GET /api/v1/cluster.
type clusterView struct {
	cluster.Status
	Drain *drainInfo `json:"drain,omitempty"`
}

// SetCluster makes the cluster endpoints, the console's Cluster page and
// a /readyz check available, answering from c; nil removes them again. It
// is safe on a nil Server (HTTP disabled) and at any time.
func (s *Server) SetCluster(c ClusterSource) {
	if s == nil {
		return
	}
	s.cl.mu.Lock()
	s.cl.src = c
	s.cl.mu.Unlock()
}

// clusterSource returns the cluster source, or nil.
func (s *Server) clusterSource() ClusterSource {
	s.cl.mu.Lock()
	defer s.cl.mu.Unlock()
	return s.cl.src
}

func (s *Server) drainTimeout() time.Duration {
	if s.opts.DrainTimeout > 0 {
		return s.opts.DrainTimeout
	}
	return DefaultDrainTimeout
}

func notClustered(w http.ResponseWriter) {
	writeError(w, http.StatusNotFound, "not clustered: this node is not part of a cluster")
}

func (s *Server) clusterStatus(w http.ResponseWriter, r *http.Request) {
	src := s.clusterSource()
	if src == nil {
		notClustered(w)
		return
	}
	v := clusterView{Status: src.ClusterStatus()}
	if v.Members == nil {
		v.Members = []cluster.MemberStatus{}
	}
	s.cl.mu.Lock()
	if s.cl.drain != nil {
		d := *s.cl.drain
		v.Drain = &d
	}
	s.cl.mu.Unlock()
	writeJSON(w, http.StatusOK, v)
}

// RouteSource is what a cluster source may also offer: the filters a
// node advertised (ok false for an unknown node), this node's own with
// its name.
type RouteSource interface {
	ClusterRoutes(node string) (filters []string, ok bool)
}

// clusterRoutes answers GET /api/v1/cluster/routes?node=NAME (default:
// this node) with the filters the node advertised, sorted, at most limit
// (default 1000, max 100000).
func (s *Server) clusterRoutes(w http.ResponseWriter, r *http.Request) {
	src := s.clusterSource()
	if src == nil {
		notClustered(w)
		return
	}
	rs, ok := src.(RouteSource)
	if !ok {
		writeError(w, http.StatusNotImplemented, "routes are not available from this node")
		return
	}
	node := r.URL.Query().Get("node")
	if node == "" {
		node = src.ClusterStatus().Node
	}
	limit := 1000
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 100000 {
			writeError(w, http.StatusBadRequest, "limit: an integer from 1 to 100000")
			return
		}
		limit = n
	}
	filters, found := rs.ClusterRoutes(node)
	if !found {
		writeError(w, http.StatusNotFound, "no such node")
		return
	}
	total := len(filters)
	if len(filters) > limit {
		filters = filters[:limit]
	}
	if filters == nil {
		filters = []string{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"node": node, "total": total, "routes": filters})
}

func (s *Server) clusterDrain(w http.ResponseWriter, r *http.Request) {
	src := s.clusterSource()
	if src == nil {
		notClustered(w)
		return
	}
	st := src.ClusterStatus()
	by := principalFrom(r.Context()).name
	timeout := s.drainTimeout()

	s.cl.mu.Lock()
	switch {
	case s.cl.closed:
		s.cl.mu.Unlock()
		writeError(w, http.StatusServiceUnavailable, "the HTTP listener is shutting down")
		return
	case s.cl.drain != nil && s.cl.drain.Running:
		prev := *s.cl.drain
		s.cl.mu.Unlock()
		writeError(w, http.StatusConflict, "a drain of node %s is already in progress (requested by %s at %s)",
			st.Node, prev.RequestedBy, prev.StartedAt.Format(time.RFC3339))
		return
	case st.State == "draining":
		s.cl.mu.Unlock()
		writeError(w, http.StatusConflict, "node %s is already draining", st.Node)
		return
	case st.State == "left":
		s.cl.mu.Unlock()
		writeError(w, http.StatusConflict, "node %s has already left the cluster", st.Node)
		return
	}
	if s.cl.ctx == nil {
		s.cl.ctx, s.cl.cancel = context.WithCancel(context.Background())
	}
	ctx, cancel := context.WithTimeout(s.cl.ctx, timeout)
	d := &drainInfo{Running: true, RequestedBy: by, StartedAt: time.Now().UTC(), TimeoutSeconds: timeout.Seconds()}
	s.cl.drain = d
	s.cl.wg.Add(1)
	s.cl.mu.Unlock()

	s.log.Info("cluster drain requested", "node", st.Node, "by", by, "timeout", timeout)
	go func() {
		defer s.cl.wg.Done()
		defer cancel()
		err := src.Drain(ctx)
		if err == nil && ctx.Err() != nil {
			err = ctx.Err() // a Drain that gave up without saying so
		}
		end := time.Now().UTC()
		s.cl.mu.Lock()
		d.Running, d.FinishedAt = false, &end
		if err != nil {
			d.Error = err.Error()
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				d.Error = "drain did not finish within " + timeout.String() + ": " + err.Error()
			}
		}
		s.cl.mu.Unlock()
		if err != nil {
			s.log.Warn("cluster drain failed", "node", st.Node, "by", by, "err", err)
		} else {
			s.log.Info("cluster drain done: this node left the cluster", "node", st.Node, "by", by, "took", end.Sub(d.StartedAt))
		}
	}()
	w.Header().Set("Location", "/api/v1/cluster")
	writeJSON(w, http.StatusAccepted, map[string]any{
		"status":          "draining",
		"node":            st.Node,
		"timeout_seconds": timeout.Seconds(),
	})
}

// stopDrain cancels a drain requested through the API and waits for it
// to return, at most until ctx ends; later requests get 503.
func (s *Server) stopDrain(ctx context.Context) {
	s.cl.mu.Lock()
	s.cl.closed = true
	if s.cl.cancel != nil {
		s.cl.cancel()
	}
	s.cl.mu.Unlock()
	done := make(chan struct{})
	go func() {
		s.cl.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		s.log.Warn("a cluster drain requested through the API did not stop in time")
	}
}

// clusterReady is the /readyz check of a clustered node: not ready while
// it drains or after it left, so load balancers move clients elsewhere.
// It returns "" when there is no cluster.
func (s *Server) clusterReady() (name, problem string) {
	src := s.clusterSource()
	if src == nil {
		return "", ""
	}
	switch st := src.ClusterStatus(); st.State {
	case "draining":
		return "cluster", "draining: this node is leaving the cluster"
	case "left":
		return "cluster", "left: this node has left the cluster"
	}
	return "cluster", ""
}
