package bridge

import (
	"encoding/binary"
	"hash/fnv"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/isobar-mq/isobar/internal/broker"
	"github.com/isobar-mq/isobar/internal/mqtt/packet"
)

// Loop prevention. Messages crossing a link carry two MQTT 5 user
// properties: PropPath, the brokers the message has been through (comma
// separated, oldest first), and PropID, the message id it got when it
// first entered a broker of the network ("node:seq", hexadecimal). A
// broker drops an inbound message whose path already names it (a loop),
// whose path is longer than the link's max_hops (the network TTL), or
// whose id it has routed recently (the same message over a second path
// of a triangle or a ring). MQTT 3.1.1 links carry neither: there the
// bridge bit (mosquitto's try_private, which stops the remote from echoing
// our own messages back), the rule that a message never goes back over
// the link it came in on, and a short-lived content id are what remains.
const (
	PropPath = "isobar-path"
	PropID   = "isobar-id"
)

// contentIDNode marks ids derived from a message's content (messages that
// entered the network through a broker that does not stamp ids): they are
// remembered only for contentWindow, as two equal messages published on
// purpose a little later must both go through.
const contentIDNode = 0xC0_17E4_7000_0000

// Windows of the seen-id cache.
const (
	idWindow      = 2 * time.Minute
	contentWindow = 3 * time.Second
	maxSeenIDs    = 1 << 17
)

// pathOf returns the path and id user properties of props (zero id if
// absent or malformed).
func pathOf(props *packet.Properties) (path string, id broker.MessageID, hasID bool) {
	for _, u := range props.User {
		switch u.Key {
		case PropPath:
			path = u.Value
		case PropID:
			id, hasID = parseID(u.Value)
		}
	}
	return path, id, hasID
}

// pathContains reports whether the comma-separated path names name.
func pathContains(path, name string) bool {
	for p := range strings.SplitSeq(path, ",") {
		if p == name {
			return true
		}
	}
	return false
}

// pathLen is the number of brokers on a path.
func pathLen(path string) int {
	if path == "" {
		return 0
	}
	return strings.Count(path, ",") + 1
}

// appendPath adds name to path unless it is already its last element.
func appendPath(path, name string) string {
	switch {
	case path == "":
		return name
	case path == name || strings.HasSuffix(path, ","+name):
		return path
	}
	return path + "," + name
}

func formatID(id broker.MessageID) string {
	return strconv.FormatUint(id.Node, 16) + ":" + strconv.FormatUint(id.Seq, 16)
}

func parseID(s string) (broker.MessageID, bool) {
	n, q, ok := strings.Cut(s, ":")
	if !ok {
		return broker.MessageID{}, false
	}
	node, err1 := strconv.ParseUint(n, 16, 64)
	seq, err2 := strconv.ParseUint(q, 16, 64)
	if err1 != nil || err2 != nil || (node == 0 && seq == 0) {
		return broker.MessageID{}, false
	}
	return broker.MessageID{Node: node, Seq: seq}, true
}

// contentID derives an id from what a message says (topic after the
// link's mapping, payload, QoS, retain), for messages that arrive with
// none.
func contentID(topic string, payload []byte, retain bool) broker.MessageID {
	h := fnv.New64a()
	_, _ = h.Write([]byte(topic))
	_, _ = h.Write([]byte{0})
	_, _ = h.Write(payload)
	if retain {
		_, _ = h.Write([]byte{1})
	}
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(len(payload)))
	_, _ = h.Write(b[:])
	return broker.MessageID{Node: contentIDNode, Seq: h.Sum64()}
}

// withLoopProps returns a copy of user with the path and id properties
// replaced (the message's own slice is shared and never modified).
func withLoopProps(user []packet.UserProperty, path string, id broker.MessageID) []packet.UserProperty {
	out := make([]packet.UserProperty, 0, len(user)+2)
	for _, u := range user {
		if u.Key != PropPath && u.Key != PropID {
			out = append(out, u)
		}
	}
	return append(out, packet.UserProperty{Key: PropPath, Value: path}, packet.UserProperty{Key: PropID, Value: formatID(id)})
}

// seenIDs remembers the ids of messages routed in from links, each for its
// window, bounded in count (oldest forgotten first).
type seenIDs struct {
	mu    sync.Mutex
	until map[broker.MessageID]int64
	order []broker.MessageID
	head  int
}

func newSeenIDs() *seenIDs { return &seenIDs{until: make(map[broker.MessageID]int64)} }

// check reports whether id was seen within its window, and records it.
func (s *seenIDs) check(id broker.MessageID, now time.Time) bool {
	w := idWindow
	if id.Node == contentIDNode {
		w = contentWindow
	}
	n := now.UnixNano()
	s.mu.Lock()
	defer s.mu.Unlock()
	if u, ok := s.until[id]; ok && u >= n {
		return true
	}
	if _, ok := s.until[id]; !ok {
		if len(s.order)-s.head >= maxSeenIDs {
			delete(s.until, s.order[s.head])
			s.order[s.head] = broker.MessageID{}
			s.head++
		}
		if s.head > len(s.order)/2 && s.head > 1024 {
			s.order = append(s.order[:0], s.order[s.head:]...)
			s.head = 0
		}
		s.order = append(s.order, id)
	}
	s.until[id] = n + int64(w)
	return false
}

// forget removes id (a message that was not taken after all).
func (s *seenIDs) forget(id broker.MessageID) {
	s.mu.Lock()
	delete(s.until, id)
	s.mu.Unlock()
}
