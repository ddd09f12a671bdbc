package wis2

import (
	"fmt"
	"path"
	"strings"
)

// Profile selects which reading of the topic rules applies.
type Profile string

const (
	// ProfileCurrent is today's WTH: data topics at level 8 or deeper that the WTH defines, leaf
	// or not (PER publishing B, FT2025-2), <discipline>/experimental/** (PER publishing A), and
	// metadata at exactly .../metadata (REQ publishing C). The zero Profile means this one.
	ProfileCurrent Profile = "current"
	// Profile2024 is the rule set of the 2024 WMO Global Services acceptance tests: data only on
	// leaf topics (plus <discipline>/experimental/**), and metadata topics deeper than
	// .../metadata checked like data topics.
	Profile2024 Profile = "2024"
)

// CentrePolicy says which centre-ids (level 4) are accepted.
type CentrePolicy struct {
	// Registry accepts the centre-ids of the WTH code list (centre-id.csv) whose Status is not
	// Retired.
	Registry bool
	// Allow lists more centre-ids; "*" matches any run of characters within the level, e.g.
	// "io-wis2dev-*-test" for the acceptance-test centres. With Registry false and Allow empty,
	// any well-formed centre-id is accepted.
	Allow []string
}

// TopicCheck is the configuration of Hierarchy.Check.
type TopicCheck struct {
	Profile Profile
	Centres CentrePolicy
	// GTSGateway accepts, for centre-ids ending in "-gts-to-wis2", data topics whose levels 7 to
	// 12 are the GTS abbreviated heading T1/T2/A1/A2/ii/CCCC (e.g.
	// .../de-dwd-gts-to-wis2/data/core/I/S/A/I/01/sbbr). Those topics are outside the WTH but
	// the GTS-to-WIS2 gateways publish them operationally.
	GTSGateway bool
}

// Validate reports a configuration error: an unknown profile or a malformed Allow pattern.
// Check refuses every topic with such a configuration, so call this at startup.
func (c TopicCheck) Validate() error {
	switch c.Profile {
	case "", ProfileCurrent, Profile2024:
	default:
		return fmt.Errorf("wis2: unknown topic profile %q (want %q or %q)", c.Profile, ProfileCurrent, Profile2024)
	}
	for _, pat := range c.Centres.Allow {
		if _, err := path.Match(pat, ""); err != nil || pat == "" || strings.Contains(pat, "/") {
			return fmt.Errorf("wis2: malformed centre-id pattern %q", pat)
		}
	}
	return nil
}

// TopicInfo is what a valid topic says.
type TopicInfo struct {
	Channel          string // level 1: origin or cache
	CentreID         string // level 4 (the relay checks that a WIS2 Node publishes only under its own)
	NotificationType string // level 5: data or metadata
	DataPolicy       string // level 6: core or recommended ("" for a metadata topic at level 5)
	Metadata         bool
	Levels           []string // all levels of the topic
	Discipline       string   // levels 7 and below joined by "/" ("" if none)
	Experimental     bool     // under <discipline>/experimental (PER publishing A)
	GTS              bool     // accepted as a GTS-to-WIS2 gateway topic
}

// Check validates a topic on which a notification was received. The error is an *Error of kind
// KindTopic that names the level and the rule broken.
func (h *Hierarchy) Check(topic string, c TopicCheck) (TopicInfo, error) {
	var info TopicInfo
	switch c.Profile {
	case "", ProfileCurrent, Profile2024:
	default:
		return info, topicError("", "", fmt.Sprintf("unknown profile %q", c.Profile))
	}
	if topic == "" {
		return info, topicError("", "", "empty topic")
	}
	if strings.ContainsAny(topic, "+#\x00") {
		return info, topicError("", "", "a topic name must not contain wildcards or NUL")
	}
	levels := strings.Split(topic, "/")
	info.Levels = levels
	for i, l := range levels {
		if l == "" {
			return info, topicError("", levelName(i), "empty topic level")
		}
	}
	if len(levels) < 5 {
		return info, topicError("WTH REQ publishing A", "", "a topic has at least 5 levels (channel/version/system/centre-id/notification-type)")
	}
	if !h.channels[levels[0]] {
		return info, topicError("WTH REQ publishing A", levelName(0), fmt.Sprintf("channel %q is not in the WTH", levels[0]))
	}
	if !h.versions[levels[1]] {
		return info, topicError("WTH REQ publishing A", levelName(1), fmt.Sprintf("version %q is not in the WTH", levels[1]))
	}
	if !h.systems[levels[2]] {
		return info, topicError("WTH REQ publishing A", levelName(2), fmt.Sprintf("system %q is not in the WTH", levels[2]))
	}
	info.Channel = levels[0]
	info.CentreID = levels[3]
	if err := h.checkCentre(levels[3], c.Centres); err != nil {
		return info, err
	}
	if !h.types[levels[4]] {
		return info, topicError("WTH REQ publishing A", levelName(4), fmt.Sprintf("notification-type %q is not in the WTH", levels[4]))
	}
	info.NotificationType = levels[4]
	info.Metadata = levels[4] == "metadata"
	if info.Metadata {
		if len(levels) == 5 {
			return info, nil
		}
		if c.Profile != Profile2024 {
			return info, topicError("WTH REQ publishing C", levelName(5), "metadata must be published at exactly the notification-type level (.../metadata)")
		}
	}
	if len(levels) < 6 {
		return info, topicError("WTH REQ publishing B", levelName(5), "data-policy level missing")
	}
	if !h.policies[levels[5]] {
		return info, topicError("WTH REQ publishing A", levelName(5), fmt.Sprintf("data-policy %q is not in the WTH", levels[5]))
	}
	info.DataPolicy = levels[5]
	if len(levels) > 6 {
		info.Discipline = strings.Join(levels[6:], "/")
	}
	if c.GTSGateway && !info.Metadata && strings.HasSuffix(info.CentreID, "-gts-to-wis2") && gtsHeading(levels[6:]) {
		info.GTS = true
		return info, nil
	}
	if len(levels) < 7 {
		return info, topicError("WTH REQ publishing B", levelName(6), "data must be published at level 8 or deeper (earth-system-discipline level missing)")
	}
	if _, ok := h.paths[levels[6]]; !ok {
		return info, topicError("WTH REQ publishing A", levelName(6), fmt.Sprintf("earth-system-discipline %q is not in the WTH", levels[6]))
	}
	if len(levels) < 8 {
		return info, topicError("WTH REQ publishing B", levelName(7), "data must be published at the sub-discipline level (level 8) or deeper")
	}
	if levels[7] == "experimental" {
		if _, ok := h.paths[levels[6]+"/experimental"]; ok {
			info.Experimental = true
			return info, nil
		}
	}
	leaf, ok := h.paths[info.Discipline]
	if !ok {
		known := levels[6]
		n := 7
		for ; n < len(levels); n++ {
			next := known + "/" + levels[n]
			if _, ok := h.paths[next]; !ok {
				break
			}
			known = next
		}
		return info, topicError("WTH REQ publishing A", levelName(n), fmt.Sprintf("%q is not in the WTH (deepest known topic %q)", info.Discipline, known))
	}
	if !leaf && c.Profile == Profile2024 {
		return info, topicError("2024 acceptance tests: leaf topics only", levelName(len(levels)-1), fmt.Sprintf("%q is not a leaf topic", info.Discipline))
	}
	return info, nil
}

func levelName(i int) string { return fmt.Sprintf("level %d", i+1) }

func (h *Hierarchy) checkCentre(id string, p CentrePolicy) error {
	if !validCentreID(id) {
		return topicError("WTH REQ publishing A", levelName(3), fmt.Sprintf("centre-id %q is not well-formed (lower-case letters, digits and '-')", id))
	}
	for _, pat := range p.Allow {
		if ok, _ := path.Match(pat, id); ok {
			return nil
		}
	}
	if p.Registry {
		status, ok := h.centres[id]
		if !ok {
			return topicError("WTH REQ publishing A", levelName(3), fmt.Sprintf("centre-id %q is not in the WTH centre-id list", id))
		}
		if strings.EqualFold(status, "Retired") {
			return topicError("WTH REQ publishing A", levelName(3), fmt.Sprintf("centre-id %q is retired", id))
		}
		return nil
	}
	if len(p.Allow) > 0 {
		return topicError("centre policy", levelName(3), fmt.Sprintf("centre-id %q is not allowed", id))
	}
	return nil
}

// validCentreID accepts the shape the WTH centre-ids have (e.g. "de-dwd-gts-to-wis2").
func validCentreID(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// gtsHeading reports whether levels are T1/T2/A1/A2/ii/CCCC of a GTS abbreviated heading.
func gtsHeading(levels []string) bool {
	if len(levels) != 6 {
		return false
	}
	for _, l := range levels[:4] {
		if len(l) != 1 || !isAlpha(l[0]) {
			return false
		}
	}
	if len(levels[4]) != 2 || !isDigit(levels[4][0]) || !isDigit(levels[4][1]) {
		return false
	}
	if len(levels[5]) != 4 {
		return false
	}
	for i := 0; i < 4; i++ {
		if c := levels[5][i]; !isAlpha(c) && !isDigit(c) {
			return false
		}
	}
	return true
}

func isAlpha(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
func isDigit(c byte) bool { return c >= '0' && c <= '9' }
