package web

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/isobar-mq/isobar/internal/mqtt/packet"
	"github.com/isobar-mq/isobar/internal/topic"
)

// Roles of API users and keys, ordered: each includes the ones below.
//
//   - read: every GET (and HEAD);
//   - publish: read, plus POST /api/v1/publish (including retained
//     messages, which is how they are written);
//   - admin: everything, including disconnecting clients and deleting
//     retained messages.
//
// A user or key without a role is an admin, as before roles existed.
type role int

const (
	roleRead role = iota + 1
	rolePublish
	roleAdmin
)

func (r role) String() string {
	switch r {
	case roleRead:
		return "read"
	case rolePublish:
		return "publish"
	case roleAdmin:
		return "admin"
	}
	return "none"
}

func parseRole(s string) (role, error) {
	switch s {
	case "", "admin":
		return roleAdmin, nil
	case "publish":
		return rolePublish, nil
	case "read":
		return roleRead, nil
	}
	return 0, fmt.Errorf("%q is not read, publish or admin", s)
}

// validTopicRule checks one entry of a topics allow list: an MQTT topic
// filter (not a shared subscription).
func validTopicRule(f string) error {
	if !packet.ValidString(f) {
		return errors.New("not a valid MQTT string (UTF-8 without control characters)")
	}
	if strings.HasPrefix(f, "$share/") {
		return errors.New("shared subscription filters are not topic rules")
	}
	return topic.ValidateFilter(f, 65535, 0)
}

// matchFilter reports whether topic name t matches filter f. As in MQTT, a
// wildcard in the first level does not match a topic beginning with '$'
// [MQTT-4.7.2-1].
func matchFilter(f, t string) bool {
	if strings.HasPrefix(t, "$") && (strings.HasPrefix(f, "+") || strings.HasPrefix(f, "#")) {
		return false
	}
	for {
		fl, frest, fmore := strings.Cut(f, "/")
		if fl == "#" {
			return true
		}
		tl, trest, tmore := strings.Cut(t, "/")
		if fl != "+" && fl != tl {
			return false
		}
		if !fmore || !tmore {
			// "a/#" matches "a" too [MQTT-4.7.1-2].
			return fmore == tmore || (fmore && frest == "#")
		}
		f, t = frest, trest
	}
}

// allows reports whether p may act on topic t (publish, see or change its
// retained message).
func (p *principal) allows(t string) bool {
	if p.topics == nil {
		return true
	}
	for _, f := range p.topics {
		if matchFilter(f, t) {
			return true
		}
	}
	return false
}

// forbidTopic answers 403 when p may not act on topic t.
func forbidTopic(w http.ResponseWriter, p *principal, field, t string) bool {
	if p.allows(t) {
		return false
	}
	writeError(w, http.StatusForbidden, "%s: %s may not use topic %s (not in its topics list)", field, p.name, short(t))
	return true
}
