package packet

// Subscription option bits (MQTT 5.0 section 3.8.3.1).
const (
	subOptQoS               = 0x03
	subOptNoLocal           = 0x04
	subOptRetainAsPublished = 0x08
	subOptRetainHandling    = 0x30
	subOptReservedV5        = 0xC0
	subOptReservedV3        = 0xFC
)

// Options returns the subscription options byte of s for the given version
// (only the QoS bits for 3.x).
func (s *Subscription) Options(version byte) byte {
	o := s.QoS & subOptQoS
	if version == V5 {
		if s.NoLocal {
			o |= subOptNoLocal
		}
		if s.RetainAsPublished {
			o |= subOptRetainAsPublished
		}
		o |= s.RetainHandling & 3 << 4
	}
	return o
}

// DecodeSubscribe decodes a SUBSCRIBE into p (reset first; the capacity of
// p.Subs is reused). Filters alias body.
//
// Only the encoding is validated: filter syntax (wildcard placement,
// $share/...) is the broker's business, because MQTT 5 lets it refuse a
// single filter with SUBACK 0x8F instead of dropping the connection.
//
// Errors (MalformedPacket unless noted, matching Mosquitto): flags other than
// 0010, packet identifier 0, no topic filter, an empty or invalid filter,
// reserved option bits, QoS 3, Retain Handling 3, truncation; property
// faults as in the package documentation.
func DecodeSubscribe(p *Subscribe, flags byte, body []byte, version byte) error {
	subs, props := p.Subs[:0], p.Props
	*p = Subscribe{Subs: subs, Props: props}
	p.Props.reset()
	return asError(p.decode(flags, body, version))
}

func (p *Subscribe) decode(flags byte, body []byte, version byte) *Error {
	if err := checkFlags(SUBSCRIBE, flags, 0x02, version); err != nil {
		return err
	}
	r := reader{b: body}
	var err *Error
	if p.PacketID, err = r.u16("SUBSCRIBE packet identifier"); err != nil {
		return err
	}
	if p.PacketID == 0 {
		return Errorf(MalformedPacket, "SUBSCRIBE: packet identifier 0 [MQTT-2.2.1-3]")
	}
	if version == V5 {
		if err := decodeProps(&r, &p.Props, ctxSubscribe); err != nil {
			return err
		}
	}
	if r.left() == 0 {
		return Errorf(MalformedPacket, "SUBSCRIBE: no topic filter [MQTT-3.8.3-2]")
	}
	for r.left() > 0 {
		f, err := r.string("SUBSCRIBE topic filter")
		if err != nil {
			return err
		}
		if f == "" {
			return Errorf(MalformedPacket, "SUBSCRIBE: empty topic filter [MQTT-4.7.3-1]")
		}
		o, err := r.u8("SUBSCRIBE subscription options")
		if err != nil {
			return err
		}
		s := Subscription{Filter: f, QoS: o & subOptQoS}
		if version == V5 {
			if o&subOptReservedV5 != 0 {
				return Errorf(MalformedPacket, "SUBSCRIBE: reserved subscription option bits 0x%02X [MQTT-3.8.3-5]", o)
			}
			s.NoLocal = o&subOptNoLocal != 0
			s.RetainAsPublished = o&subOptRetainAsPublished != 0
			s.RetainHandling = o >> 4 & 3
			if s.RetainHandling == 3 {
				return Errorf(MalformedPacket, "SUBSCRIBE: retain handling 3")
			}
		} else if o&subOptReservedV3 != 0 {
			return Errorf(MalformedPacket, "SUBSCRIBE: reserved subscription option bits 0x%02X [MQTT-3-8.3-4]", o)
		}
		if s.QoS == 3 {
			return Errorf(MalformedPacket, "SUBSCRIBE: QoS 3 [MQTT-3-8.3-4]")
		}
		p.Subs = append(p.Subs, s)
	}
	return nil
}

func (p *Subscribe) remaining(version byte) int {
	n := 2
	if version == V5 {
		n += p.Props.Len()
	}
	for i := range p.Subs {
		n += 3 + len(p.Subs[i].Filter)
	}
	return n
}

// Len returns the encoded size of the packet, fixed header included.
func (p *Subscribe) Len(version byte) int {
	n := p.remaining(version)
	return 1 + VarintLen(n) + n
}

// Append appends the encoded SUBSCRIBE (first byte 0x82).
func (p *Subscribe) Append(dst []byte, version byte) []byte {
	dst = AppendFixedHeader(dst, SUBSCRIBE, 0x02, p.remaining(version))
	dst = appendUint16(dst, p.PacketID)
	if version == V5 {
		dst = p.Props.Append(dst)
	}
	for i := range p.Subs {
		dst = appendString(dst, p.Subs[i].Filter)
		dst = append(dst, p.Subs[i].Options(version))
	}
	return dst
}

// DecodeSuback decodes a SUBACK (client side) into p (reset first).
// ReasonCodes aliases body. Errors: wrong flags, truncation, no reason code:
// MalformedPacket; packet identifier 0 or an invalid reason code:
// ProtocolError.
func DecodeSuback(p *Suback, flags byte, body []byte, version byte) error {
	props := p.Props
	*p = Suback{Props: props}
	p.Props.reset()
	return asError(p.decode(flags, body, version))
}

func (p *Suback) decode(flags byte, body []byte, version byte) *Error {
	if err := checkFlags(SUBACK, flags, 0, version); err != nil {
		return err
	}
	r := reader{b: body}
	var err *Error
	if p.PacketID, err = r.u16("SUBACK packet identifier"); err != nil {
		return err
	}
	if p.PacketID == 0 {
		return Errorf(ProtocolError, "SUBACK: packet identifier 0 [MQTT-2.2.1-3]")
	}
	if version == V5 {
		if err := decodeProps(&r, &p.Props, ctxSuback); err != nil {
			return err
		}
	}
	p.ReasonCodes = r.rest()
	if len(p.ReasonCodes) == 0 {
		return Errorf(MalformedPacket, "SUBACK: no reason code")
	}
	for _, rc := range p.ReasonCodes {
		if !validSubackCode(rc, version) {
			return Errorf(ProtocolError, "SUBACK: invalid reason code 0x%02X", rc)
		}
	}
	return nil
}

func (p *Suback) remaining(version byte) int {
	n := 2 + len(p.ReasonCodes)
	if version == V5 {
		n += p.Props.Len()
	}
	return n
}

// Len returns the encoded size of the packet, fixed header included.
func (p *Suback) Len(version byte) int {
	n := p.remaining(version)
	return 1 + VarintLen(n) + n
}

// Append appends the encoded SUBACK.
func (p *Suback) Append(dst []byte, version byte) []byte {
	dst = AppendFixedHeader(dst, SUBACK, 0, p.remaining(version))
	dst = appendUint16(dst, p.PacketID)
	if version == V5 {
		dst = p.Props.Append(dst)
	}
	return append(dst, p.ReasonCodes...)
}

// DecodeUnsubscribe decodes an UNSUBSCRIBE into p (reset first; the capacity
// of p.Filters is reused). Filters alias body. Errors (MalformedPacket,
// matching Mosquitto): flags other than 0010, packet identifier 0, no
// filter, an empty or invalid filter, truncation; property faults as
// in the package documentation.
func DecodeUnsubscribe(p *Unsubscribe, flags byte, body []byte, version byte) error {
	filters, props := p.Filters[:0], p.Props
	*p = Unsubscribe{Filters: filters, Props: props}
	p.Props.reset()
	return asError(p.decode(flags, body, version))
}

func (p *Unsubscribe) decode(flags byte, body []byte, version byte) *Error {
	if err := checkFlags(UNSUBSCRIBE, flags, 0x02, version); err != nil {
		return err
	}
	r := reader{b: body}
	var err *Error
	if p.PacketID, err = r.u16("UNSUBSCRIBE packet identifier"); err != nil {
		return err
	}
	if p.PacketID == 0 {
		return Errorf(MalformedPacket, "UNSUBSCRIBE: packet identifier 0 [MQTT-2.2.1-3]")
	}
	if version == V5 {
		if err := decodeProps(&r, &p.Props, ctxUnsubscribe); err != nil {
			return err
		}
	}
	if r.left() == 0 {
		return Errorf(MalformedPacket, "UNSUBSCRIBE: no topic filter [MQTT-3.10.3-2]")
	}
	for r.left() > 0 {
		f, err := r.string("UNSUBSCRIBE topic filter")
		if err != nil {
			return err
		}
		if f == "" {
			return Errorf(MalformedPacket, "UNSUBSCRIBE: empty topic filter [MQTT-4.7.3-1]")
		}
		p.Filters = append(p.Filters, f)
	}
	return nil
}

func (p *Unsubscribe) remaining(version byte) int {
	n := 2
	if version == V5 {
		n += p.Props.Len()
	}
	for _, f := range p.Filters {
		n += 2 + len(f)
	}
	return n
}

// Len returns the encoded size of the packet, fixed header included.
func (p *Unsubscribe) Len(version byte) int {
	n := p.remaining(version)
	return 1 + VarintLen(n) + n
}

// Append appends the encoded UNSUBSCRIBE (first byte 0xA2).
func (p *Unsubscribe) Append(dst []byte, version byte) []byte {
	dst = AppendFixedHeader(dst, UNSUBSCRIBE, 0x02, p.remaining(version))
	dst = appendUint16(dst, p.PacketID)
	if version == V5 {
		dst = p.Props.Append(dst)
	}
	for _, f := range p.Filters {
		dst = appendString(dst, f)
	}
	return dst
}

// DecodeUnsuback decodes an UNSUBACK (client side) into p (reset first).
// 3.x: the body is exactly the packet identifier and ReasonCodes stays nil.
// V5: properties and at least one reason code, aliasing body. Errors: wrong
// flags, truncation, trailing bytes (3.x), no reason code (V5):
// MalformedPacket; packet identifier 0 or an invalid reason code:
// ProtocolError.
func DecodeUnsuback(p *Unsuback, flags byte, body []byte, version byte) error {
	props := p.Props
	*p = Unsuback{Props: props}
	p.Props.reset()
	return asError(p.decode(flags, body, version))
}

func (p *Unsuback) decode(flags byte, body []byte, version byte) *Error {
	if err := checkFlags(UNSUBACK, flags, 0, version); err != nil {
		return err
	}
	r := reader{b: body}
	var err *Error
	if p.PacketID, err = r.u16("UNSUBACK packet identifier"); err != nil {
		return err
	}
	if version != V5 {
		if err := r.end("UNSUBACK"); err != nil {
			return err
		}
	}
	if p.PacketID == 0 {
		return Errorf(ProtocolError, "UNSUBACK: packet identifier 0 [MQTT-2.2.1-3]")
	}
	if version != V5 {
		return nil
	}
	if err := decodeProps(&r, &p.Props, ctxUnsuback); err != nil {
		return err
	}
	p.ReasonCodes = r.rest()
	if len(p.ReasonCodes) == 0 {
		return Errorf(MalformedPacket, "UNSUBACK: no reason code")
	}
	for _, rc := range p.ReasonCodes {
		if !validUnsubackCode(rc) {
			return Errorf(ProtocolError, "UNSUBACK: invalid reason code 0x%02X", rc)
		}
	}
	return nil
}

func (p *Unsuback) remaining(version byte) int {
	if version != V5 {
		return 2
	}
	return 2 + p.Props.Len() + len(p.ReasonCodes)
}

// Len returns the encoded size of the packet, fixed header included.
func (p *Unsuback) Len(version byte) int {
	n := p.remaining(version)
	return 1 + VarintLen(n) + n
}

// Append appends the encoded UNSUBACK; in 3.x only the packet identifier
// (B0 02 pid), ignoring ReasonCodes and Props.
func (p *Unsuback) Append(dst []byte, version byte) []byte {
	dst = AppendFixedHeader(dst, UNSUBACK, 0, p.remaining(version))
	dst = appendUint16(dst, p.PacketID)
	if version != V5 {
		return dst
	}
	dst = p.Props.Append(dst)
	return append(dst, p.ReasonCodes...)
}
