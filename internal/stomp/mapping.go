package stomp

import (
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/isobar-mq/isobar/internal/broker"
	"github.com/isobar-mq/isobar/internal/mqtt/packet"
	"github.com/isobar-mq/isobar/internal/stomp/queue"
)

// transportHeaders are the headers of a SEND frame that steer the
// gateway and are never copied into a message as application headers
// (MQTT user properties, queue message headers).
var transportHeaders = map[string]bool{
	"destination": true, "content-length": true, "receipt": true, "transaction": true,
	"message-id": true, "subscription": true, "ack": true, "persistent": true, "expires": true,
	"content-type": true, "correlation-id": true, "reply-to": true, "timestamp": true,
	"redelivered": true,
}

// reservedOut are the headers a MESSAGE frame gets from the gateway; an
// MQTT user property or queue header of the same name is not repeated.
var reservedOut = map[string]bool{
	"destination": true, "content-length": true, "message-id": true, "subscription": true, "ack": true,
	"persistent": true, "expires": true, "content-type": true, "correlation-id": true, "reply-to": true,
	"timestamp": true, "redelivered": true, "priority": true, "receipt": true, "receipt-id": true,
}

// DefaultPriority is the JMS default priority, sent when a message has none.
const DefaultPriority = 4

// parseExpires reads an expires header (absolute unix milliseconds, 0 or
// absent = never).
func parseExpires(f *Frame) (int64, bool) {
	v, ok := f.Get("expires")
	if !ok || strings.TrimSpace(v) == "" {
		return 0, true
	}
	n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
	if err != nil || n < 0 {
		return 0, false
	}
	return n, true
}

// parsePriority reads a priority header (0..9, default 4).
func parsePriority(f *Frame) (uint8, bool) {
	v, ok := f.Get("priority")
	if !ok || strings.TrimSpace(v) == "" {
		return DefaultPriority, true
	}
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || n < 0 || n > 9 {
		return 0, false
	}
	return uint8(n), true
}

func isTrue(f *Frame, name string) bool {
	v, _ := f.Get(name)
	return strings.EqualFold(strings.TrimSpace(v), "true")
}

// toMQTT builds the MQTT message of a SEND to a topic. replyTo is the
// reply-to header after temporary names were rewritten. now is unix ms.
// It returns nil when the message has already expired.
func (c *conn) toMQTT(f *Frame, topic, replyTo string, nowMS int64) (*broker.Message, error) {
	m := &broker.Message{Topic: topic, Payload: f.Body, Origin: broker.Origin{Kind: broker.OriginGateway, Name: c.listener}}
	if len(m.Payload) == 0 {
		m.Payload = nil
	}
	if isTrue(f, "persistent") && c.g.maxQoS > 0 {
		m.QoS = 1 // (a broker limited to QoS 0 takes it as QoS 0)
	}
	exp, ok := parseExpires(f)
	if !ok {
		return nil, protoErr("bad_header", "expires must be unix milliseconds")
	}
	if exp > 0 {
		left := exp - nowMS
		if left <= 0 {
			return nil, nil
		}
		secs := (left + 999) / 1000
		if secs > 0xFFFFFFFF {
			secs = 0xFFFFFFFF
		}
		m.Props.MessageExpiryInterval = uint32(secs)
		m.Props.Set(packet.PropMessageExpiryInterval)
	}
	p := &m.Props
	if v, ok := f.Get("content-type"); ok {
		p.ContentType = v
		p.Set(packet.PropContentType)
		if strings.HasPrefix(v, "text/") && utf8.Valid(f.Body) {
			p.PayloadFormatIndicator = 1
			p.Set(packet.PropPayloadFormatIndicator)
		}
	}
	if v, ok := f.Get("correlation-id"); ok {
		p.CorrelationData = []byte(v)
		p.Set(packet.PropCorrelationData)
	}
	if replyTo != "" {
		if d, err := parseDest(replyTo, c.sid, false); err == nil && (d.kind == destTopic || d.kind == destTempTopic) {
			p.ResponseTopic = d.mqtt
			p.Set(packet.PropResponseTopic)
		} else {
			// A queue has no MQTT form: the header rides along.
			p.User = append(p.User, packet.UserProperty{Key: "reply-to", Value: replyTo})
		}
	}
	seen := map[string]bool{}
	var escaped []string
	for _, h := range f.Headers {
		if transportHeaders[h.Name] || seen[h.Name] {
			continue
		}
		seen[h.Name] = true // first wins, as in STOMP
		k, v := h.Name, h.Value
		if !packet.ValidString(k) || !packet.ValidString(v) {
			// MQTT strings cannot hold control characters (STOMP 1.1+
			// headers can, escaped): carried escaped, and listed so that
			// the way back restores them.
			escaped = append(escaped, strconv.Itoa(len(p.User)))
			k, v = escapeProp(k), escapeProp(v)
		}
		p.User = append(p.User, packet.UserProperty{Key: k, Value: v})
	}
	if escaped != nil {
		p.User = append(p.User, packet.UserProperty{Key: escapedProp, Value: strings.Join(escaped, ",")})
	}
	if len(p.User) > 0 {
		p.Set(packet.PropUserProperty)
	}
	return m, nil
}

// escapedProp is the MQTT user property listing (by index) the user
// properties whose key and value were escaped by escapeProp.
const escapedProp = "stomp-escaped"

// escapeProp makes s a valid MQTT string: backslash, CR and LF become
// \\, \r, \n; any other byte MQTT refuses (control characters, invalid
// UTF-8) becomes \xHH.
func escapeProp(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == '\\':
			b.WriteString(`\\`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case !packet.ValidString(s[i : i+size]):
			for _, c := range []byte(s[i : i+size]) {
				b.WriteString(`\x`)
				b.WriteByte("0123456789ABCDEF"[c>>4])
				b.WriteByte("0123456789ABCDEF"[c&15])
			}
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

// unescapeProp reverses escapeProp (unknown escapes are kept verbatim).
func unescapeProp(s string) string {
	if strings.IndexByte(s, '\\') < 0 {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '\\' || i+1 == len(s) {
			b.WriteByte(c)
			continue
		}
		switch s[i+1] {
		case '\\':
			b.WriteByte('\\')
			i++
		case 'n':
			b.WriteByte('\n')
			i++
		case 'r':
			b.WriteByte('\r')
			i++
		case 'x':
			if i+3 < len(s) {
				if v, err := strconv.ParseUint(s[i+2:i+4], 16, 8); err == nil {
					b.WriteByte(byte(v))
					i += 3
					continue
				}
			}
			b.WriteByte(c)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// toQueue builds the queue message of a SEND to a queue.
func toQueue(f *Frame, replyTo string) (*queue.Message, error) {
	exp, ok := parseExpires(f)
	if !ok {
		return nil, protoErr("bad_header", "expires must be unix milliseconds")
	}
	prio, ok := parsePriority(f)
	if !ok {
		return nil, protoErr("bad_header", "priority must be 0..9")
	}
	m := &queue.Message{Body: f.Body, Expires: exp, Priority: prio, Persistent: isTrue(f, "persistent")}
	seen := map[string]bool{}
	for _, h := range f.Headers {
		switch h.Name {
		case "destination", "content-length", "receipt", "transaction", "message-id", "subscription", "ack",
			"expires", "priority", "persistent", "timestamp", "redelivered":
			continue
		}
		if seen[h.Name] {
			continue
		}
		seen[h.Name] = true
		v := h.Value
		if h.Name == "reply-to" {
			v = replyTo
		}
		m.Headers = append(m.Headers, queue.Header{Name: h.Name, Value: v})
	}
	return m, nil
}

// fromMQTT is the headers of the MESSAGE frame for an MQTT message
// (without message-id, subscription and ack, which the delivery adds).
func fromMQTT(m *broker.Message) []Header {
	hs := make([]Header, 0, 8+len(m.Props.User))
	hs = append(hs, Header{"destination", destFromMQTT(m.Topic)})
	p := &m.Props
	if p.Has(packet.PropContentType) {
		hs = append(hs, Header{"content-type", p.ContentType})
	}
	hs = append(hs, Header{"content-length", strconv.Itoa(len(m.Payload))})
	if m.QoS > 0 {
		hs = append(hs, Header{"persistent", "true"})
	}
	// expires:0 (never), as ActiveMQ sends it.
	hs = append(hs, Header{"expires", strconv.FormatInt(m.Expiry/int64(time.Millisecond), 10)})
	prio := strconv.Itoa(DefaultPriority)
	for _, u := range p.User {
		if u.Key == "priority" {
			if n, err := strconv.Atoi(u.Value); err == nil && n >= 0 && n <= 9 {
				prio = u.Value
			}
			break
		}
	}
	hs = append(hs, Header{"priority", prio})
	if m.Received != 0 {
		hs = append(hs, Header{"timestamp", strconv.FormatInt(m.Received/int64(time.Millisecond), 10)})
	}
	if p.Has(packet.PropCorrelationData) {
		hs = append(hs, Header{"correlation-id", string(p.CorrelationData)})
	}
	replyTo := ""
	if p.Has(packet.PropResponseTopic) {
		replyTo = destFromMQTT(p.ResponseTopic)
		hs = append(hs, Header{"reply-to", replyTo})
	}
	var escaped map[int]bool
	for _, u := range p.User {
		if u.Key == escapedProp {
			for _, v := range strings.Split(u.Value, ",") {
				if n, err := strconv.Atoi(v); err == nil {
					if escaped == nil {
						escaped = map[int]bool{}
					}
					escaped[n] = true
				}
			}
			break
		}
	}
	seen := map[string]bool{}
	for i, u := range p.User {
		if escaped[i] {
			u.Key, u.Value = unescapeProp(u.Key), unescapeProp(u.Value)
		}
		if u.Key == "" || u.Key == escapedProp || seen[u.Key] {
			continue
		}
		seen[u.Key] = true
		if u.Key == "reply-to" && replyTo == "" {
			// A reply-to queue sent by a STOMP client.
			hs = append(hs, Header{"reply-to", u.Value})
			replyTo = u.Value
			continue
		}
		if !reservedOut[u.Key] {
			hs = append(hs, Header{u.Key, u.Value})
		}
	}
	return hs
}

// fromQueue is the headers of the MESSAGE frame for a queue message.
func fromQueue(dest string, m *queue.Message) []Header {
	hs := make([]Header, 0, 8+len(m.Headers))
	hs = append(hs, Header{"destination", dest}, Header{"content-length", strconv.Itoa(len(m.Body))})
	if m.Persistent {
		hs = append(hs, Header{"persistent", "true"})
	}
	hs = append(hs, Header{"expires", strconv.FormatInt(m.Expires, 10)})
	hs = append(hs, Header{"priority", strconv.Itoa(int(m.Priority))})
	if m.Timestamp != 0 {
		hs = append(hs, Header{"timestamp", strconv.FormatInt(m.Timestamp, 10)})
	}
	if m.Redelivered {
		hs = append(hs, Header{"redelivered", "true"})
	}
	for _, h := range m.Headers {
		if h.Name == "" || (reservedOut[h.Name] && h.Name != "content-type" && h.Name != "correlation-id" && h.Name != "reply-to") {
			continue
		}
		hs = append(hs, Header{h.Name, h.Value})
	}
	return hs
}
