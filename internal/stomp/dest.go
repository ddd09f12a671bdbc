package stomp

import (
	"errors"
	"strings"
)

// Destinations.
//
// A STOMP topic name maps to an MQTT topic level by level: '.' separates
// levels (and '/' is accepted as a separator on input, as a convenience),
// a whole level '*' is the MQTT '+' wildcard and a whole last level '>'
// is '#'. The mapping is reversible thanks to a small percent escaping of
// the characters that would otherwise be ambiguous: an MQTT level holding
// '.', '%', '*' or '>' is written with %2E, %25, %2A and %3E in STOMP, and
// such an escape in a STOMP destination is decoded back. MQTT topic names
// cannot hold '+', '#' or NUL, so STOMP destinations holding them (other
// than as the wildcards above in SUBSCRIBE) are refused.

// Destination kinds.
const (
	destTopic = iota + 1
	destQueue
	destTempTopic
	destTempQueue
	destAdvisory
)

// Destination prefixes.
const (
	prefixTopic           = "/topic/"
	prefixQueue           = "/queue/"
	prefixTempTopic       = "/temp-topic/"
	prefixTempQueue       = "/temp-queue/"
	prefixRemoteTempTopic = "/remote-temp-topic/"
	prefixRemoteTempQueue = "/remote-temp-queue/"
	advisoryPrefix        = "ActiveMQ.Advisory."

	// tempTopicRoot is the MQTT topic space of temporary topics: a '$'
	// topic, so no MQTT wildcard subscription ever sees it.
	tempTopicRoot = "$stomp/temp/"
	// tempQueuePrefix starts the queue.Manager name of a temporary queue.
	tempQueuePrefix = "temp-queue."
)

var errBadDestination = errors.New("invalid destination")

// dest is a parsed destination.
type dest struct {
	kind int
	// name is the STOMP name after the prefix.
	name string
	// mqtt is the MQTT topic (or filter) for topic kinds; queue is the
	// queue.Manager name for queue kinds.
	mqtt, queue string
	// owner is the session that owns a temporary destination.
	owner string
}

// parseDest parses a destination header for a connection with session id
// sid. filter allows the wildcards (SUBSCRIBE).
func parseDest(s, sid string, filter bool) (dest, error) {
	switch {
	case strings.HasPrefix(s, prefixTopic):
		name := s[len(prefixTopic):]
		if strings.HasPrefix(name, advisoryPrefix) {
			return dest{kind: destAdvisory, name: name}, nil
		}
		t, err := topicToMQTT(name, filter)
		if err != nil {
			return dest{}, err
		}
		return dest{kind: destTopic, name: name, mqtt: t}, nil
	case strings.HasPrefix(s, prefixQueue):
		name := s[len(prefixQueue):]
		if err := checkQueueName(name); err != nil {
			return dest{}, err
		}
		return dest{kind: destQueue, name: name, queue: name}, nil
	case strings.HasPrefix(s, prefixTempTopic):
		return tempTopic(s[len(prefixTempTopic):], sid)
	case strings.HasPrefix(s, prefixRemoteTempTopic):
		owner, name, ok := strings.Cut(s[len(prefixRemoteTempTopic):], ".")
		if !ok || owner == "" {
			return dest{}, errBadDestination
		}
		return tempTopic(name, owner)
	case strings.HasPrefix(s, prefixTempQueue):
		return tempQueue(s[len(prefixTempQueue):], sid)
	case strings.HasPrefix(s, prefixRemoteTempQueue):
		owner, name, ok := strings.Cut(s[len(prefixRemoteTempQueue):], ".")
		if !ok || owner == "" {
			return dest{}, errBadDestination
		}
		return tempQueue(name, owner)
	}
	return dest{}, errBadDestination
}

func tempTopic(name, owner string) (dest, error) {
	t, err := topicToMQTT(name, false)
	if err != nil || strings.ContainsAny(owner, "/+#") {
		return dest{}, errBadDestination
	}
	return dest{kind: destTempTopic, name: name, mqtt: tempTopicRoot + owner + "/" + t, owner: owner}, nil
}

func tempQueue(name, owner string) (dest, error) {
	if err := checkQueueName(name); err != nil {
		return dest{}, err
	}
	return dest{kind: destTempQueue, name: name, queue: tempQueuePrefix + owner + "." + name, owner: owner}, nil
}

func checkQueueName(name string) error {
	if name == "" || len(name) > 1024 || strings.ContainsAny(name, "\x00*>") {
		return errBadDestination
	}
	return nil
}

// replyName is how a temporary destination of its owner is named in the
// reply-to header of the messages it sends: a name any connection can
// send to (ActiveMQ rewrites them the same way).
func (d dest) replyName() string {
	switch d.kind {
	case destTempTopic:
		return prefixRemoteTempTopic + d.owner + "." + d.name
	case destTempQueue:
		return prefixRemoteTempQueue + d.owner + "." + d.name
	}
	return ""
}

// topicToMQTT maps a STOMP topic name (after /topic/) to an MQTT topic,
// or with filter to an MQTT filter.
func topicToMQTT(name string, filter bool) (string, error) {
	if name == "" {
		return "", errBadDestination
	}
	var b strings.Builder
	b.Grow(len(name))
	start := 0
	for i := 0; i <= len(name); i++ {
		if i < len(name) && name[i] != '.' && name[i] != '/' {
			continue
		}
		level := name[start:i]
		last := i == len(name)
		if start > 0 {
			b.WriteByte('/')
		}
		start = i + 1
		switch {
		case level == "*" && filter:
			b.WriteByte('+')
			continue
		case level == ">" && filter && last:
			b.WriteByte('#')
			continue
		}
		for j := 0; j < len(level); j++ {
			c := level[j]
			switch c {
			case '+', '#', 0:
				return "", errBadDestination
			case '%':
				if j+3 > len(level) {
					b.WriteByte('%') // not one of ours: verbatim
					continue
				}
				switch strings.ToUpper(level[j+1 : j+3]) {
				case "2E":
					b.WriteByte('.')
				case "25":
					b.WriteByte('%')
				case "2A":
					b.WriteByte('*')
				case "3E":
					b.WriteByte('>')
				case "2F":
					return "", errBadDestination // a '/' cannot be part of an MQTT level
				default:
					b.WriteByte('%') // not one of ours: verbatim
					continue
				}
				j += 2
			case '>':
				if filter {
					return "", errBadDestination // '>' only as a whole last level
				}
				b.WriteByte(c)
			default:
				b.WriteByte(c)
			}
		}
	}
	return b.String(), nil
}

// topicFromMQTT maps an MQTT topic (or filter) to a STOMP topic name
// (without /topic/).
func topicFromMQTT(t string) string {
	var b strings.Builder
	b.Grow(len(t) + 8)
	start := 0
	for i := 0; i <= len(t); i++ {
		if i < len(t) && t[i] != '/' {
			continue
		}
		level := t[start:i]
		if start > 0 {
			b.WriteByte('.')
		}
		start = i + 1
		switch level {
		case "+":
			b.WriteByte('*')
			continue
		case "#":
			b.WriteByte('>')
			continue
		}
		for j := 0; j < len(level); j++ {
			switch c := level[j]; c {
			case '.':
				b.WriteString("%2E")
			case '%':
				b.WriteString("%25")
			case '*':
				b.WriteString("%2A")
			case '>':
				b.WriteString("%3E")
			default:
				b.WriteByte(c)
			}
		}
	}
	return b.String()
}

// destFromMQTT is the STOMP destination of a message on MQTT topic t:
// /topic/... or, for a temporary topic, its /remote-temp-topic/ name.
func destFromMQTT(t string) string {
	if rest, ok := strings.CutPrefix(t, tempTopicRoot); ok {
		if owner, name, ok := strings.Cut(rest, "/"); ok {
			return prefixRemoteTempTopic + owner + "." + topicFromMQTT(name)
		}
	}
	return prefixTopic + topicFromMQTT(t)
}
