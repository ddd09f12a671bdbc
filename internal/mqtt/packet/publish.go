package packet

import "unicode/utf8"

// DecodePublish decodes a PUBLISH into p (reset first; slice capacity is
// reused). flags are the fixed-header flags (DUP, QoS, RETAIN). Topic,
// payload and properties alias body; Payload is nil when empty.
//
// Errors: QoS 3 or DUP on QoS 0, truncation, an invalid or empty topic
// (empty is allowed only in V5 with a Topic Alias property), wildcards in the
// topic: MalformedPacket (Mosquitto's answer); packet identifier 0 on QoS > 0:
// ProtocolError; Payload Format Indicator 1 with a payload that is not UTF-8:
// PayloadFormatInvalid; property faults as in the package
// documentation.
// Several Subscription Identifiers are accepted, as a server may send them;
// a server must reject Subscription Identifiers from clients itself. On
// PayloadFormatInvalid p is complete, so a server may answer with a PUBACK
// or PUBREC carrying that reason code instead of disconnecting.
func DecodePublish(p *Publish, flags byte, body []byte, version byte) error {
	p.Dup = flags&0x08 != 0
	p.QoS = flags >> 1 & 3
	p.Retain = flags&0x01 != 0
	p.Topic, p.PacketID, p.Payload = "", 0, nil
	p.Props.reset()
	return asError(p.decode(body, version))
}

func (p *Publish) decode(body []byte, version byte) *Error {
	if p.QoS == 3 {
		return Errorf(MalformedPacket, "PUBLISH: QoS 3 [MQTT-3.3.1-4]")
	}
	if p.Dup && p.QoS == 0 {
		return Errorf(MalformedPacket, "PUBLISH: DUP set on QoS 0 [MQTT-3.3.1-2]")
	}
	r := reader{b: body}
	var err *Error
	if p.Topic, err = r.string("PUBLISH topic"); err != nil {
		return err
	}
	if hasWildcard(p.Topic) {
		return Errorf(MalformedPacket, "PUBLISH: wildcard in topic name [MQTT-3.3.2-2]")
	}
	if p.QoS > 0 {
		if p.PacketID, err = r.u16("PUBLISH packet identifier"); err != nil {
			return err
		}
		if p.PacketID == 0 {
			return Errorf(ProtocolError, "PUBLISH: packet identifier 0 [MQTT-2.2.1-3]")
		}
	}
	if version == V5 {
		if err := decodeProps(&r, &p.Props, ctxPublish); err != nil {
			return err
		}
	}
	if p.Topic == "" && !p.Props.Has(PropTopicAlias) {
		return Errorf(MalformedPacket, "PUBLISH: empty topic without topic alias")
	}
	p.Payload = r.rest()
	if p.Props.PayloadFormatIndicator == 1 && p.Props.Has(PropPayloadFormatIndicator) && !utf8.Valid(p.Payload) {
		return Errorf(PayloadFormatInvalid, "PUBLISH: payload is not UTF-8 but its format indicator says so")
	}
	return nil
}

func (p *Publish) remaining(version byte) int {
	n := 2 + len(p.Topic) + len(p.Payload)
	if p.QoS > 0 {
		n += 2
	}
	if version == V5 {
		n += p.Props.Len()
	}
	return n
}

// Len returns the encoded size of the packet, fixed header included.
func (p *Publish) Len(version byte) int {
	n := p.remaining(version)
	return 1 + VarintLen(n) + n
}

// AppendHeader appends everything of the PUBLISH except the payload. The
// remaining length accounts for len(p.Payload), so the header followed by
// the payload is the complete packet (for vectored writes).
func (p *Publish) AppendHeader(dst []byte, version byte) []byte {
	b0 := byte(PUBLISH)<<4 | p.QoS&3<<1
	if p.Dup {
		b0 |= 0x08
	}
	if p.Retain {
		b0 |= 0x01
	}
	dst = append(dst, b0)
	dst = EncodeVarint(dst, p.remaining(version))
	dst = appendString(dst, p.Topic)
	if p.QoS > 0 {
		dst = appendUint16(dst, p.PacketID)
	}
	if version == V5 {
		dst = p.Props.Append(dst)
	}
	return dst
}

// Append appends the encoded PUBLISH to dst. The packet identifier is
// written only for QoS > 0 and properties only for V5.
func (p *Publish) Append(dst []byte, version byte) []byte {
	return append(p.AppendHeader(dst, version), p.Payload...)
}
