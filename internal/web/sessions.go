package web

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/isobar-mq/isobar/internal/broker"
)

func (s *Server) sessions(w http.ResponseWriter, r *http.Request) {
	limit, offset, ok := page(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	prefix := q.Get("prefix")
	var online *bool
	if v := q.Get("online"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			writeError(w, http.StatusBadRequest, "online: want true or false")
			return
		}
		online = &b
	}
	all := s.opts.Broker.Sessions()
	items := all[:0]
	for _, ss := range all {
		if !strings.HasPrefix(ss.ClientID, prefix) || (online != nil && ss.Online != *online) {
			continue
		}
		items = append(items, ss)
	}
	writeJSON(w, http.StatusOK, paged(items, limit, offset))
}

func (s *Server) session(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	v, subs, ok := s.opts.Broker.Session(id)
	if !ok {
		writeError(w, http.StatusNotFound, "no session for client %q", id)
		return
	}
	writeJSON(w, http.StatusOK, struct {
		broker.SessionView
		SubscriptionList []broker.SubscriptionView `json:"subscription_list"`
	}{v, subs})
}
