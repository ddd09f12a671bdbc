package web

import (
	"errors"
	"fmt"
	"strings"

	"github.com/isobar-mq/isobar/internal/mqtt/packet"
)

// Input validation. What the API hands to the broker must be exactly what
// the MQTT decoder would have accepted from a client: strings are MQTT
// UTF-8 strings (packet.ValidString: well-formed, no U+0000, no control
// characters or non-characters) of at most 65535 bytes, binary fields at
// most 65535 bytes, topic names pass the broker's own ValidTopicName
// (wildcards, mqtt.max_topic_length, mqtt.max_topic_levels), and the whole
// PUBLISH fits mqtt.max_packet_size. Anything else could not be encoded
// to subscribers.

// maxField is the largest MQTT string or binary field (a two-byte length).
const maxField = 65535

// short quotes s for an error message, cut to a readable length.
func short(s string) string {
	const n = 64
	if len(s) <= n {
		return fmt.Sprintf("%q", s)
	}
	cut := n
	for cut > n-4 && s[cut]&0xC0 == 0x80 {
		cut--
	}
	return fmt.Sprintf("%q...(%d bytes)", s[:cut], len(s))
}

// checkString checks an MQTT UTF-8 string field.
func checkString(v string) error {
	if len(v) > maxField {
		return fmt.Errorf("%d bytes; an MQTT string holds at most %d", len(v), maxField)
	}
	if !packet.ValidString(v) {
		if strings.IndexByte(v, 0) >= 0 {
			return errors.New("U+0000 is not allowed in MQTT strings")
		}
		return errors.New("not a valid MQTT string: it must be UTF-8 without control characters or non-characters")
	}
	return nil
}

// checkTopic checks a topic name as the decoder and the broker would.
func (s *Server) checkTopic(t string) error {
	if t == "" {
		return errors.New("required")
	}
	if err := checkString(t); err != nil {
		return err
	}
	return s.opts.Broker.ValidTopicName(t)
}

// checkFilter checks a topic filter (GET /api/v1/retained?filter=).
func checkFilter(f string) error {
	if f == "" {
		return errors.New("empty topic filter")
	}
	if err := checkString(f); err != nil {
		return err
	}
	levels := strings.Split(f, "/")
	for i, l := range levels {
		if strings.Contains(l, "#") && (l != "#" || i != len(levels)-1) {
			return errors.New("'#' must be alone in the last level")
		}
		if strings.Contains(l, "+") && l != "+" {
			return errors.New("'+' must occupy a whole level")
		}
	}
	return nil
}
