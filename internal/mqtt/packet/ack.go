package packet

// DecodeAck decodes a PUBACK, PUBREC, PUBREL or PUBCOMP (t) into p (reset
// first). PUBREL's fixed-header flags must be 0010, the others' 0000.
//
// 3.x: the body is exactly the packet identifier. V5: a body of 2 bytes
// means Success without properties, 3 bytes a reason code without
// properties, longer bodies carry a property block.
//
// Errors: wrong flags, truncation, trailing bytes: MalformedPacket; packet
// identifier 0, or a reason code not valid for t: ProtocolError; property
// faults as in the package documentation.
func DecodeAck(p *Ack, t Type, flags byte, body []byte, version byte) error {
	props := p.Props
	*p = Ack{Type: t, Props: props}
	p.Props.reset()
	return asError(p.decode(flags, body, version))
}

func (p *Ack) decode(flags byte, body []byte, version byte) *Error {
	t := p.Type
	if t < PUBACK || t > PUBCOMP {
		return Errorf(ProtocolError, "%s is not an acknowledgement", t)
	}
	var want byte
	if t == PUBREL {
		want = 0x02
	}
	if err := checkFlags(t, flags, want, version); err != nil {
		return err
	}
	if len(body) < 2 {
		return Errorf(MalformedPacket, "%s: packet identifier truncated", t)
	}
	r := reader{b: body, off: 2}
	p.PacketID = uint16(body[0])<<8 | uint16(body[1])
	if version != V5 {
		if err := r.end(t.String()); err != nil {
			return err
		}
	}
	if p.PacketID == 0 {
		return Errorf(ProtocolError, "%s: packet identifier 0 [MQTT-2.2.1-3]", t)
	}
	if r.left() == 0 {
		return nil
	}
	p.ReasonCode = body[2]
	r.off++
	if !validAckCode(t, p.ReasonCode) {
		return Errorf(ProtocolError, "%s: invalid reason code 0x%02X", t, p.ReasonCode)
	}
	if r.left() == 0 {
		return nil
	}
	if err := decodeProps(&r, &p.Props, ctxAck); err != nil {
		return err
	}
	return r.end(t.String())
}

func (p *Ack) remaining(version byte) (rem, props int) {
	if version != V5 {
		return 2, 0
	}
	props = p.Props.contentLen()
	switch {
	case props > 0:
		return 3 + VarintLen(props) + props, props
	case p.ReasonCode != Success:
		return 3, 0
	default:
		return 2, 0
	}
}

// Len returns the encoded size of the packet, fixed header included.
func (p *Ack) Len(version byte) int {
	n, _ := p.remaining(version)
	return 1 + VarintLen(n) + n
}

// Append appends the encoded acknowledgement of type p.Type. V5 uses the
// short forms: Success without properties is 2 bytes of body (40 02 00 01),
// another reason code without properties 3 bytes (40 03 12 34 10); 3.x
// writes only the packet identifier.
func (p *Ack) Append(dst []byte, version byte) []byte {
	b0 := byte(p.Type) << 4
	if p.Type == PUBREL {
		b0 |= 0x02
	}
	rem, props := p.remaining(version)
	dst = append(dst, b0)
	dst = EncodeVarint(dst, rem)
	dst = appendUint16(dst, p.PacketID)
	if rem > 2 {
		dst = append(dst, p.ReasonCode)
	}
	if props > 0 {
		dst = p.Props.Append(dst)
	}
	return dst
}
