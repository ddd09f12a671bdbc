package packet

// DecodePing validates a PINGREQ or PINGRESP (t): flags must be 0 and the
// body empty (MalformedPacket otherwise).
func DecodePing(t Type, flags byte, body []byte) error {
	if t != PINGREQ && t != PINGRESP {
		return Errorf(ProtocolError, "%s is not a ping", t)
	}
	if flags != 0 {
		return Errorf(MalformedPacket, "%s: reserved fixed header flags 0x%X", t, flags)
	}
	if len(body) != 0 {
		return Errorf(MalformedPacket, "%s: remaining length %d, want 0", t, len(body))
	}
	return nil
}

// AppendPingreq appends a PINGREQ (C0 00).
func AppendPingreq(dst []byte) []byte { return append(dst, byte(PINGREQ)<<4, 0) }

// AppendPingresp appends a PINGRESP (D0 00).
func AppendPingresp(dst []byte) []byte { return append(dst, byte(PINGRESP)<<4, 0) }

// DecodeDisconnect decodes a DISCONNECT sent by a client into p (reset
// first). 3.x: the body must be empty. V5: an empty body is Normal
// Disconnection; one byte is a reason code without properties; more is a
// reason code and a property block.
//
// Errors: wrong flags, a 3.x body, truncation, trailing bytes:
// MalformedPacket; a reason code a client may not send (see
// ValidDisconnectCode): ProtocolError; property faults as in the package
// documentation. Whether a Session Expiry Interval is acceptable depends on the
// CONNECT and is left to the server.
func DecodeDisconnect(p *Disconnect, flags byte, body []byte, version byte) error {
	return asError(p.decode(flags, body, version, false))
}

func (p *Disconnect) decode(flags byte, body []byte, version byte, fromServer bool) *Error {
	props := p.Props
	*p = Disconnect{Props: props}
	p.Props.reset()
	if err := checkFlags(DISCONNECT, flags, 0, version); err != nil {
		return err
	}
	if version != V5 {
		if len(body) != 0 {
			return Errorf(MalformedPacket, "DISCONNECT: remaining length %d, want 0", len(body))
		}
		return nil
	}
	if len(body) == 0 {
		return nil
	}
	p.ReasonCode = body[0]
	if !ValidDisconnectCode(p.ReasonCode, fromServer) {
		return Errorf(ProtocolError, "DISCONNECT: reason code 0x%02X not allowed", p.ReasonCode)
	}
	if len(body) == 1 {
		return nil
	}
	r := reader{b: body, off: 1}
	if err := decodeProps(&r, &p.Props, ctxDisconnect); err != nil {
		return err
	}
	return r.end("DISCONNECT")
}

func (p *Disconnect) remaining(version byte) (rem, props int) {
	if version != V5 {
		return 0, 0
	}
	props = p.Props.contentLen()
	switch {
	case props > 0:
		return 1 + VarintLen(props) + props, props
	case p.ReasonCode != NormalDisconnection:
		return 1, 0
	default:
		return 0, 0
	}
}

// Len returns the encoded size of the packet, fixed header included.
func (p *Disconnect) Len(version byte) int {
	n, _ := p.remaining(version)
	return 1 + VarintLen(n) + n
}

// Append appends the encoded DISCONNECT: E0 00 in 3.x and for a V5 Normal
// Disconnection without properties, E0 01 rc for another reason code
// without properties, otherwise reason code and property block.
func (p *Disconnect) Append(dst []byte, version byte) []byte {
	rem, props := p.remaining(version)
	dst = append(dst, byte(DISCONNECT)<<4)
	dst = EncodeVarint(dst, rem)
	if rem > 0 {
		dst = append(dst, p.ReasonCode)
	}
	if props > 0 {
		dst = p.Props.Append(dst)
	}
	return dst
}

// DecodeAuth decodes an AUTH sent by a client into p (reset first). AUTH
// exists only in V5 (ProtocolError otherwise).
//
// Errors: wrong flags, truncation, trailing bytes: MalformedPacket; a reason
// code a client may not send (see ValidAuthCode), or no Authentication Method
// [MQTT-3.15.2.2.2]: ProtocolError; property faults as in the package
// documentation.
func DecodeAuth(p *Auth, flags byte, body []byte, version byte) error {
	return asError(p.decode(flags, body, version, false))
}

func (p *Auth) decode(flags byte, body []byte, version byte, fromServer bool) *Error {
	props := p.Props
	*p = Auth{Props: props}
	p.Props.reset()
	if version != V5 {
		return Errorf(ProtocolError, "AUTH is not part of MQTT 3.x")
	}
	if err := checkFlags(AUTH, flags, 0, version); err != nil {
		return err
	}
	if len(body) > 0 {
		p.ReasonCode = body[0]
		if !ValidAuthCode(p.ReasonCode, fromServer) {
			return Errorf(ProtocolError, "AUTH: reason code 0x%02X not allowed", p.ReasonCode)
		}
	}
	if len(body) > 1 {
		r := reader{b: body, off: 1}
		if err := decodeProps(&r, &p.Props, ctxAuth); err != nil {
			return err
		}
		if err := r.end("AUTH"); err != nil {
			return err
		}
	}
	if !p.Props.Has(PropAuthenticationMethod) {
		return Errorf(ProtocolError, "AUTH: no authentication method [MQTT-3.15.2.2.2]")
	}
	return nil
}

func (p *Auth) remaining() (rem, props int) {
	props = p.Props.contentLen()
	if props == 0 && p.ReasonCode == Success {
		return 0, 0
	}
	return 1 + VarintLen(props) + props, props
}

// Len returns the encoded size of the packet, fixed header included.
func (p *Auth) Len() int {
	n, _ := p.remaining()
	return 1 + VarintLen(n) + n
}

// Append appends the encoded AUTH: F0 00 for Success without properties,
// otherwise reason code and property block (always with its length).
func (p *Auth) Append(dst []byte) []byte {
	rem, _ := p.remaining()
	dst = append(dst, byte(AUTH)<<4)
	dst = EncodeVarint(dst, rem)
	if rem > 0 {
		dst = append(dst, p.ReasonCode)
		dst = p.Props.Append(dst)
	}
	return dst
}
