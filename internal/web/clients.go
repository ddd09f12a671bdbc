package web

import (
	"net/http"
	"strings"

	"github.com/isobar-mq/isobar/internal/broker"
)

func (s *Server) clients(w http.ResponseWriter, r *http.Request) {
	limit, offset, ok := page(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	user, lis, prefix := q.Get("username"), q.Get("listener"), q.Get("prefix")
	search := strings.ToLower(q.Get("search"))
	all := s.opts.Broker.Clients()
	items := all[:0]
	for _, c := range all {
		if (q.Has("username") && c.Username != user) || (lis != "" && c.Listener != lis) ||
			!strings.HasPrefix(c.ClientID, prefix) {
			continue
		}
		if search != "" && !strings.Contains(strings.ToLower(c.ClientID), search) &&
			!strings.Contains(strings.ToLower(c.Username), search) && !strings.Contains(c.Remote, search) {
			continue
		}
		items = append(items, c)
	}
	writeJSON(w, http.StatusOK, paged(items, limit, offset))
}

func (s *Server) client(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	c, ok := s.opts.Broker.Client(id)
	if !ok {
		writeError(w, http.StatusNotFound, "client %q is not connected", id)
		return
	}
	_, subs, _ := s.opts.Broker.Session(id)
	if subs == nil {
		subs = []broker.SubscriptionView{}
	}
	writeJSON(w, http.StatusOK, struct {
		broker.ClientInfoView
		SubscriptionList []broker.SubscriptionView `json:"subscription_list"`
	}{c, subs})
}

func (s *Server) kick(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !s.opts.Broker.DisconnectClient(id) {
		writeError(w, http.StatusNotFound, "client %q is not connected", id)
		return
	}
	s.log.Info("client disconnected by administrator", "client", id, "by", principalFrom(r.Context()).name)
	w.WriteHeader(http.StatusNoContent)
}
