package web

import (
	"net/http"
	"strings"

	"github.com/isobar-mq/isobar/internal/broker"
)

func (s *Server) subscriptions(w http.ResponseWriter, r *http.Request) {
	limit, offset, ok := page(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	cid, filter, prefix := q.Get("client_id"), q.Get("filter"), q.Get("prefix")
	all := s.opts.Broker.Subscriptions()
	items := all[:0]
	for _, sub := range all {
		if (cid != "" && sub.ClientID != cid) || (filter != "" && sub.Filter != filter) || !strings.HasPrefix(sub.Filter, prefix) {
			continue
		}
		items = append(items, sub)
	}
	if items == nil {
		items = []broker.SubscriptionView{}
	}
	writeJSON(w, http.StatusOK, paged(items, limit, offset))
}
