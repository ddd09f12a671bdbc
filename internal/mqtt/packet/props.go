package packet

// propCtx identifies the packet (or the will of a CONNECT) that a property
// block belongs to; it decides which properties are allowed.
type propCtx uint8

const (
	ctxConnect propCtx = iota
	ctxWill
	ctxConnack
	ctxPublish
	ctxAck
	ctxSubscribe
	ctxSuback
	ctxUnsubscribe
	ctxUnsuback
	ctxDisconnect
	ctxAuth
)

func (c propCtx) String() string {
	switch c {
	case ctxConnect:
		return "CONNECT"
	case ctxWill:
		return "will"
	case ctxConnack:
		return "CONNACK"
	case ctxPublish:
		return "PUBLISH"
	case ctxAck:
		return "acknowledgement"
	case ctxSubscribe:
		return "SUBSCRIBE"
	case ctxSuback:
		return "SUBACK"
	case ctxUnsubscribe:
		return "UNSUBSCRIBE"
	case ctxUnsuback:
		return "UNSUBACK"
	case ctxDisconnect:
		return "DISCONNECT"
	default:
		return "AUTH"
	}
}

// Properties allowed per packet (MQTT 5.0 section 2.2.2.2), as bit masks over
// property identifiers.
const (
	allowMessage = 1<<PropPayloadFormatIndicator | 1<<PropMessageExpiryInterval | 1<<PropContentType |
		1<<PropResponseTopic | 1<<PropCorrelationData | 1<<PropUserProperty
	allowConnect = 1<<PropSessionExpiryInterval | 1<<PropAuthenticationMethod | 1<<PropAuthenticationData |
		1<<PropRequestProblemInformation | 1<<PropRequestResponseInformation | 1<<PropReceiveMaximum |
		1<<PropTopicAliasMaximum | 1<<PropUserProperty | 1<<PropMaximumPacketSize
	allowWill    = allowMessage | 1<<PropWillDelayInterval
	allowPublish = allowMessage | 1<<PropSubscriptionIdentifier | 1<<PropTopicAlias
	allowConnack = 1<<PropSessionExpiryInterval | 1<<PropAssignedClientIdentifier | 1<<PropServerKeepAlive |
		1<<PropAuthenticationMethod | 1<<PropAuthenticationData | 1<<PropResponseInformation |
		1<<PropServerReference | 1<<PropReasonString | 1<<PropReceiveMaximum | 1<<PropTopicAliasMaximum |
		1<<PropMaximumQoS | 1<<PropRetainAvailable | 1<<PropUserProperty | 1<<PropMaximumPacketSize |
		1<<PropWildcardSubscriptionAvailable | 1<<PropSubscriptionIdentifierAvailable |
		1<<PropSharedSubscriptionAvailable
	allowReasonUser  = 1<<PropReasonString | 1<<PropUserProperty // PUBACK..PUBCOMP, SUBACK, UNSUBACK
	allowSubscribe   = 1<<PropSubscriptionIdentifier | 1<<PropUserProperty
	allowUnsubscribe = 1 << PropUserProperty
	allowDisconnect  = 1<<PropSessionExpiryInterval | 1<<PropServerReference | 1<<PropReasonString |
		1<<PropUserProperty
	allowAuth = 1<<PropAuthenticationMethod | 1<<PropAuthenticationData | 1<<PropReasonString |
		1<<PropUserProperty
)

func (c propCtx) allowed() uint64 {
	switch c {
	case ctxConnect:
		return allowConnect
	case ctxWill:
		return allowWill
	case ctxConnack:
		return allowConnack
	case ctxPublish:
		return allowPublish
	case ctxAck, ctxSuback, ctxUnsuback:
		return allowReasonUser
	case ctxSubscribe:
		return allowSubscribe
	case ctxUnsubscribe:
		return allowUnsubscribe
	case ctxDisconnect:
		return allowDisconnect
	default:
		return allowAuth
	}
}

// Property value types (MQTT 5.0 section 2.2.2.2).
const (
	kindUnknown = iota
	kindByte
	kindU16
	kindU32
	kindVarint
	kindString
	kindBinary
	kindPair
)

func propKind(id byte) int {
	switch id {
	case PropPayloadFormatIndicator, PropRequestProblemInformation, PropRequestResponseInformation,
		PropMaximumQoS, PropRetainAvailable, PropWildcardSubscriptionAvailable,
		PropSubscriptionIdentifierAvailable, PropSharedSubscriptionAvailable:
		return kindByte
	case PropServerKeepAlive, PropReceiveMaximum, PropTopicAliasMaximum, PropTopicAlias:
		return kindU16
	case PropMessageExpiryInterval, PropSessionExpiryInterval, PropWillDelayInterval, PropMaximumPacketSize:
		return kindU32
	case PropSubscriptionIdentifier:
		return kindVarint
	case PropContentType, PropResponseTopic, PropAssignedClientIdentifier, PropAuthenticationMethod,
		PropResponseInformation, PropServerReference, PropReasonString:
		return kindString
	case PropCorrelationData, PropAuthenticationData:
		return kindBinary
	case PropUserProperty:
		return kindPair
	}
	return kindUnknown
}

// propName returns the property name followed by " property", for messages.
func propName(id byte) string {
	switch id {
	case PropPayloadFormatIndicator:
		return "payload format indicator property"
	case PropMessageExpiryInterval:
		return "message expiry interval property"
	case PropContentType:
		return "content type property"
	case PropResponseTopic:
		return "response topic property"
	case PropCorrelationData:
		return "correlation data property"
	case PropSubscriptionIdentifier:
		return "subscription identifier property"
	case PropSessionExpiryInterval:
		return "session expiry interval property"
	case PropAssignedClientIdentifier:
		return "assigned client identifier property"
	case PropServerKeepAlive:
		return "server keep alive property"
	case PropAuthenticationMethod:
		return "authentication method property"
	case PropAuthenticationData:
		return "authentication data property"
	case PropRequestProblemInformation:
		return "request problem information property"
	case PropWillDelayInterval:
		return "will delay interval property"
	case PropRequestResponseInformation:
		return "request response information property"
	case PropResponseInformation:
		return "response information property"
	case PropServerReference:
		return "server reference property"
	case PropReasonString:
		return "reason string property"
	case PropReceiveMaximum:
		return "receive maximum property"
	case PropTopicAliasMaximum:
		return "topic alias maximum property"
	case PropTopicAlias:
		return "topic alias property"
	case PropMaximumQoS:
		return "maximum QoS property"
	case PropRetainAvailable:
		return "retain available property"
	case PropUserProperty:
		return "user property"
	case PropMaximumPacketSize:
		return "maximum packet size property"
	case PropWildcardSubscriptionAvailable:
		return "wildcard subscription available property"
	case PropSubscriptionIdentifierAvailable:
		return "subscription identifier available property"
	case PropSharedSubscriptionAvailable:
		return "shared subscription available property"
	}
	return "unknown property"
}

// reset clears p for reuse, keeping the capacity of its slices.
func (p *Properties) reset() {
	user, ids := p.User[:0], p.SubscriptionIdentifiers[:0]
	*p = Properties{User: user, SubscriptionIdentifiers: ids}
}

// decodeProps reads a property block (length and properties) into p, which
// it resets first.
//
// Reason codes follow the Mosquitto conformance data:
//   - a structural fault (truncated value, length beyond the packet, unknown
//     identifier, invalid variable byte integer or UTF-8) is MalformedPacket
//     and is reported at once;
//   - a semantic fault (property not allowed in this packet, duplicate,
//     out-of-range value, Authentication Data without Authentication Method)
//     is ProtocolError, reported only after the whole block parsed cleanly.
//     In SUBSCRIBE and UNSUBSCRIBE the not-allowed and out-of-range faults
//     are MalformedPacket instead (section 2.2.2.2 calls a property that is
//     not valid for the packet type a Malformed Packet; Mosquitto applies
//     that there and Protocol Error elsewhere), duplicates stay ProtocolError.
func decodeProps(r *reader, p *Properties, ctx propCtx) *Error {
	p.reset()
	n, err := r.varint("property length")
	if err != nil {
		return err
	}
	if n > r.left() {
		return Errorf(MalformedPacket, "%s: property length %d exceeds the %d bytes left", ctx, n, r.left())
	}
	pr := reader{b: r.b[:r.off+n], off: r.off}
	r.off += n

	var semantic *Error
	for pr.left() > 0 {
		// Identifiers are variable byte integers, but every defined one is
		// below 0x80, so any other first byte is an unknown identifier.
		id := pr.b[pr.off]
		pr.off++
		var (
			b8  byte
			u16 uint16
			u32 uint32
			s   string
			bin []byte
			k   string
		)
		what := propName(id)
		switch propKind(id) {
		case kindByte:
			b8, err = pr.u8(what)
		case kindU16:
			u16, err = pr.u16(what)
		case kindU32:
			u32, err = pr.u32(what)
		case kindVarint:
			var v int
			v, err = pr.varint(what)
			u32 = uint32(v)
		case kindString:
			s, err = pr.string(what)
		case kindBinary:
			bin, err = pr.binary(what)
		case kindPair:
			if k, err = pr.string(what); err == nil {
				s, err = pr.string(what)
			}
		default:
			return Errorf(MalformedPacket, "%s: unknown property identifier 0x%02X", ctx, id)
		}
		if err != nil {
			return err
		}
		if semantic == nil {
			semantic = checkProp(ctx, id, b8, u16, u32, s, p.Present)
		}
		p.Present |= 1 << id
		switch id {
		case PropPayloadFormatIndicator:
			p.PayloadFormatIndicator = b8
		case PropMessageExpiryInterval:
			p.MessageExpiryInterval = u32
		case PropContentType:
			p.ContentType = s
		case PropResponseTopic:
			p.ResponseTopic = s
		case PropCorrelationData:
			p.CorrelationData = bin
		case PropSubscriptionIdentifier:
			p.SubscriptionIdentifiers = append(p.SubscriptionIdentifiers, u32)
		case PropSessionExpiryInterval:
			p.SessionExpiryInterval = u32
		case PropAssignedClientIdentifier:
			p.AssignedClientIdentifier = s
		case PropServerKeepAlive:
			p.ServerKeepAlive = u16
		case PropAuthenticationMethod:
			p.AuthenticationMethod = s
		case PropAuthenticationData:
			p.AuthenticationData = bin
		case PropRequestProblemInformation:
			p.RequestProblemInformation = b8
		case PropWillDelayInterval:
			p.WillDelayInterval = u32
		case PropRequestResponseInformation:
			p.RequestResponseInformation = b8
		case PropResponseInformation:
			p.ResponseInformation = s
		case PropServerReference:
			p.ServerReference = s
		case PropReasonString:
			p.ReasonString = s
		case PropReceiveMaximum:
			p.ReceiveMaximum = u16
		case PropTopicAliasMaximum:
			p.TopicAliasMaximum = u16
		case PropTopicAlias:
			p.TopicAlias = u16
		case PropMaximumQoS:
			p.MaximumQoS = b8
		case PropRetainAvailable:
			p.RetainAvailable = b8
		case PropUserProperty:
			p.User = append(p.User, UserProperty{Key: k, Value: s})
		case PropMaximumPacketSize:
			p.MaximumPacketSize = u32
		case PropWildcardSubscriptionAvailable:
			p.WildcardSubscriptionAvailable = b8
		case PropSubscriptionIdentifierAvailable:
			p.SubscriptionIdentifierAvailable = b8
		case PropSharedSubscriptionAvailable:
			p.SharedSubscriptionAvailable = b8
		}
	}
	if semantic != nil {
		return semantic
	}
	if p.Has(PropAuthenticationData) && !p.Has(PropAuthenticationMethod) {
		return Errorf(ProtocolError, "%s: authentication data without authentication method", ctx)
	}
	return nil
}

// checkProp applies the per-property semantic rules, in Mosquitto's order:
// value range, placement, duplicates.
func checkProp(ctx propCtx, id, b8 byte, u16 uint16, u32 uint32, s string, present uint64) *Error {
	code := ProtocolError
	if ctx == ctxSubscribe || ctx == ctxUnsubscribe {
		code = MalformedPacket
	}
	switch id {
	case PropPayloadFormatIndicator, PropRequestProblemInformation, PropRequestResponseInformation,
		PropMaximumQoS, PropRetainAvailable, PropWildcardSubscriptionAvailable,
		PropSubscriptionIdentifierAvailable, PropSharedSubscriptionAvailable:
		if b8 > 1 {
			return Errorf(code, "%s: %s value %d is not 0 or 1", ctx, propName(id), b8)
		}
	case PropReceiveMaximum:
		if u16 == 0 {
			return Errorf(code, "%s: %s is 0", ctx, propName(id))
		}
	case PropTopicAlias:
		// [MQTT-3.3.2-8]: a Topic Alias of 0 is not permitted; 0x94 (Topic
		// Alias invalid) names the fault exactly.
		if u16 == 0 && ctx.allowed()&(1<<id) != 0 {
			return Errorf(TopicAliasInvalid, "%s: %s is 0", ctx, propName(id))
		}
	case PropMaximumPacketSize, PropSubscriptionIdentifier:
		if u32 == 0 {
			return Errorf(code, "%s: %s is 0", ctx, propName(id))
		}
	case PropResponseTopic:
		// The Response Topic is a Topic Name [MQTT-3.3.2-14]: at least one
		// character, no wildcards.
		if s == "" || hasWildcard(s) {
			return Errorf(code, "%s: %s is not a valid topic name", ctx, propName(id))
		}
	}
	if ctx.allowed()&(1<<id) == 0 {
		return Errorf(code, "%s: %s not allowed", ctx, propName(id))
	}
	if present&(1<<id) != 0 && id != PropUserProperty && (id != PropSubscriptionIdentifier || ctx != ctxPublish) {
		return Errorf(ProtocolError, "%s: duplicate %s", ctx, propName(id))
	}
	return nil
}

// contentLen is the encoded size of the properties without the length prefix.
func (p *Properties) contentLen() int {
	n := 0
	for _, id := range p.SubscriptionIdentifiers {
		n += 1 + VarintLen(int(id))
	}
	for i := range p.User {
		n += 5 + len(p.User[i].Key) + len(p.User[i].Value)
	}
	if p.Present == 0 {
		return n
	}
	if p.Has(PropPayloadFormatIndicator) {
		n += 2
	}
	if p.Has(PropMessageExpiryInterval) {
		n += 5
	}
	if p.Has(PropContentType) {
		n += 3 + len(p.ContentType)
	}
	if p.Has(PropResponseTopic) {
		n += 3 + len(p.ResponseTopic)
	}
	if p.Has(PropCorrelationData) {
		n += 3 + len(p.CorrelationData)
	}
	if p.Has(PropSessionExpiryInterval) {
		n += 5
	}
	if p.Has(PropTopicAliasMaximum) {
		n += 3
	}
	if p.Has(PropAssignedClientIdentifier) {
		n += 3 + len(p.AssignedClientIdentifier)
	}
	if p.Has(PropServerKeepAlive) {
		n += 3
	}
	if p.Has(PropAuthenticationMethod) {
		n += 3 + len(p.AuthenticationMethod)
	}
	if p.Has(PropAuthenticationData) {
		n += 3 + len(p.AuthenticationData)
	}
	if p.Has(PropRequestProblemInformation) {
		n += 2
	}
	if p.Has(PropWillDelayInterval) {
		n += 5
	}
	if p.Has(PropRequestResponseInformation) {
		n += 2
	}
	if p.Has(PropResponseInformation) {
		n += 3 + len(p.ResponseInformation)
	}
	if p.Has(PropServerReference) {
		n += 3 + len(p.ServerReference)
	}
	if p.Has(PropReasonString) {
		n += 3 + len(p.ReasonString)
	}
	if p.Has(PropReceiveMaximum) {
		n += 3
	}
	if p.Has(PropTopicAlias) {
		n += 3
	}
	if p.Has(PropMaximumQoS) {
		n += 2
	}
	if p.Has(PropRetainAvailable) {
		n += 2
	}
	if p.Has(PropMaximumPacketSize) {
		n += 5
	}
	if p.Has(PropWildcardSubscriptionAvailable) {
		n += 2
	}
	if p.Has(PropSubscriptionIdentifierAvailable) {
		n += 2
	}
	if p.Has(PropSharedSubscriptionAvailable) {
		n += 2
	}
	return n
}

// Len returns the encoded size of the property block, including its length
// prefix (1 for no properties).
func (p *Properties) Len() int {
	n := p.contentLen()
	return VarintLen(n) + n
}

// Append appends the property block (length prefix and properties) to dst.
//
// A scalar, string or binary property is written when its Present bit is
// set; SubscriptionIdentifiers and User are written whenever non-empty (their
// Present bits are informational). The order is fixed: ascending identifier,
// except that Topic Alias Maximum directly follows Session Expiry Interval
// (so a CONNACK reads 22.. 21.. exactly like Mosquitto's), every Subscription
// Identifier in slice order at its identifier's place, and all user
// properties last, in slice order. Values are not validated: encoding what
// the caller asked for is the caller's responsibility.
func (p *Properties) Append(dst []byte) []byte {
	n := p.contentLen()
	dst = EncodeVarint(dst, n)
	if n == 0 {
		return dst
	}
	if p.Present != 0 {
		if p.Has(PropPayloadFormatIndicator) {
			dst = append(dst, PropPayloadFormatIndicator, p.PayloadFormatIndicator)
		}
		if p.Has(PropMessageExpiryInterval) {
			dst = appendUint32(append(dst, PropMessageExpiryInterval), p.MessageExpiryInterval)
		}
		if p.Has(PropContentType) {
			dst = appendString(append(dst, PropContentType), p.ContentType)
		}
		if p.Has(PropResponseTopic) {
			dst = appendString(append(dst, PropResponseTopic), p.ResponseTopic)
		}
		if p.Has(PropCorrelationData) {
			dst = appendString(append(dst, PropCorrelationData), p.CorrelationData)
		}
	}
	for _, id := range p.SubscriptionIdentifiers {
		dst = EncodeVarint(append(dst, PropSubscriptionIdentifier), int(id))
	}
	if p.Present != 0 {
		if p.Has(PropSessionExpiryInterval) {
			dst = appendUint32(append(dst, PropSessionExpiryInterval), p.SessionExpiryInterval)
		}
		if p.Has(PropTopicAliasMaximum) {
			dst = appendUint16(append(dst, PropTopicAliasMaximum), p.TopicAliasMaximum)
		}
		if p.Has(PropAssignedClientIdentifier) {
			dst = appendString(append(dst, PropAssignedClientIdentifier), p.AssignedClientIdentifier)
		}
		if p.Has(PropServerKeepAlive) {
			dst = appendUint16(append(dst, PropServerKeepAlive), p.ServerKeepAlive)
		}
		if p.Has(PropAuthenticationMethod) {
			dst = appendString(append(dst, PropAuthenticationMethod), p.AuthenticationMethod)
		}
		if p.Has(PropAuthenticationData) {
			dst = appendString(append(dst, PropAuthenticationData), p.AuthenticationData)
		}
		if p.Has(PropRequestProblemInformation) {
			dst = append(dst, PropRequestProblemInformation, p.RequestProblemInformation)
		}
		if p.Has(PropWillDelayInterval) {
			dst = appendUint32(append(dst, PropWillDelayInterval), p.WillDelayInterval)
		}
		if p.Has(PropRequestResponseInformation) {
			dst = append(dst, PropRequestResponseInformation, p.RequestResponseInformation)
		}
		if p.Has(PropResponseInformation) {
			dst = appendString(append(dst, PropResponseInformation), p.ResponseInformation)
		}
		if p.Has(PropServerReference) {
			dst = appendString(append(dst, PropServerReference), p.ServerReference)
		}
		if p.Has(PropReasonString) {
			dst = appendString(append(dst, PropReasonString), p.ReasonString)
		}
		if p.Has(PropReceiveMaximum) {
			dst = appendUint16(append(dst, PropReceiveMaximum), p.ReceiveMaximum)
		}
		if p.Has(PropTopicAlias) {
			dst = appendUint16(append(dst, PropTopicAlias), p.TopicAlias)
		}
		if p.Has(PropMaximumQoS) {
			dst = append(dst, PropMaximumQoS, p.MaximumQoS)
		}
		if p.Has(PropRetainAvailable) {
			dst = append(dst, PropRetainAvailable, p.RetainAvailable)
		}
		if p.Has(PropMaximumPacketSize) {
			dst = appendUint32(append(dst, PropMaximumPacketSize), p.MaximumPacketSize)
		}
		if p.Has(PropWildcardSubscriptionAvailable) {
			dst = append(dst, PropWildcardSubscriptionAvailable, p.WildcardSubscriptionAvailable)
		}
		if p.Has(PropSubscriptionIdentifierAvailable) {
			dst = append(dst, PropSubscriptionIdentifierAvailable, p.SubscriptionIdentifierAvailable)
		}
		if p.Has(PropSharedSubscriptionAvailable) {
			dst = append(dst, PropSharedSubscriptionAvailable, p.SharedSubscriptionAvailable)
		}
	}
	for i := range p.User {
		dst = appendString(append(dst, PropUserProperty), p.User[i].Key)
		dst = appendString(dst, p.User[i].Value)
	}
	return dst
}
