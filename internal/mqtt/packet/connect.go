package packet

import "unicode/utf8"

// Protocol names carried by CONNECT.
const (
	ProtocolNameV31  = "MQIsdp" // MQTT 3.1, protocol level 3
	ProtocolNameMQTT = "MQTT"   // MQTT 3.1.1 (level 4) and 5.0 (level 5)
)

func (p *Connect) reset() {
	props, will := p.Props, p.WillProps
	*p = Connect{Props: props, WillProps: will}
	p.Props.reset()
	p.WillProps.reset()
}

// DecodeConnect decodes the body of a CONNECT packet into p (reset first;
// the capacity of its slices is reused). The protocol version comes from the
// packet. Strings and byte slices alias body.
//
// On error, p.ProtocolName and p.ProtocolVersion hold whatever was parsed
// before the fault, so the server can pick the CONNACK format (a zero
// ProtocolVersion means the level was never reached). Errors:
//   - protocol level not 3 for "MQIsdp" or not 4/5 for "MQTT":
//     UnsupportedProtocolVersion;
//   - any other protocol name: ProtocolError (Mosquitto closes without a
//     CONNACK; MQTT 5.0 section 3.1.2.1 allows that);
//   - reserved fixed-header flags (3.1.1 and 5.0), reserved connect flag,
//     Will QoS 3, Will QoS/Retain without Will Flag, truncation, invalid
//     strings, trailing bytes: MalformedPacket;
//   - password without user name in 3.x: ProtocolError;
//   - empty will topic or wildcards in it: ProtocolError;
//   - property faults as in the package documentation;
//   - a will payload that is not UTF-8 although the will Payload Format
//     Indicator is 1: PayloadFormatInvalid, reported only once the whole
//     packet is known to be well formed, so p is then complete.
func DecodeConnect(p *Connect, flags byte, body []byte) error {
	p.reset()
	return asError(p.decode(flags, body))
}

func (p *Connect) decode(flags byte, body []byte) *Error {
	r := reader{b: body}
	name, err := r.rawString("CONNECT protocol name")
	if err != nil {
		return err
	}
	p.ProtocolName = name
	level, err := r.u8("CONNECT protocol level")
	if err != nil {
		return err
	}
	p.ProtocolVersion = level
	switch name {
	case ProtocolNameMQTT:
		if level != V311 && level != V5 {
			return Errorf(UnsupportedProtocolVersion, "CONNECT: unsupported protocol level %d for %q", level, name)
		}
	case ProtocolNameV31:
		if level != V31 {
			return Errorf(UnsupportedProtocolVersion, "CONNECT: unsupported protocol level %d for %q", level, name)
		}
	default:
		return Errorf(ProtocolError, "CONNECT: unknown protocol name %q", name)
	}
	if err := checkFlags(CONNECT, flags, 0, level); err != nil {
		return err
	}
	cf, err := r.u8("CONNECT flags")
	if err != nil {
		return err
	}
	if cf&0x01 != 0 && level != V31 {
		return Errorf(MalformedPacket, "CONNECT: reserved connect flag set [MQTT-3.1.2-3]")
	}
	p.CleanStart = cf&0x02 != 0
	p.WillFlag = cf&0x04 != 0
	willQoS, willRetain := cf>>3&3, cf&0x20 != 0
	p.PasswordFlag = cf&0x40 != 0
	p.UsernameFlag = cf&0x80 != 0
	if p.WillFlag {
		if willQoS == 3 {
			return Errorf(MalformedPacket, "CONNECT: will QoS 3 [MQTT-3.1.2-12]")
		}
		p.WillQoS, p.WillRetain = willQoS, willRetain
	} else if willQoS != 0 || willRetain {
		return Errorf(MalformedPacket, "CONNECT: will QoS or retain set without will flag [MQTT-3.1.2-11]")
	}
	if level != V5 && p.PasswordFlag && !p.UsernameFlag {
		return Errorf(ProtocolError, "CONNECT: password flag without user name flag [MQTT-3.1.2-22]")
	}
	if p.KeepAlive, err = r.u16("CONNECT keep alive"); err != nil {
		return err
	}
	if level == V5 {
		if err := decodeProps(&r, &p.Props, ctxConnect); err != nil {
			return err
		}
	}
	if p.ClientID, err = r.string("CONNECT client identifier"); err != nil {
		return inPayload(err)
	}
	badWillPayload := false
	if p.WillFlag {
		if level == V5 {
			if err := decodeProps(&r, &p.WillProps, ctxWill); err != nil {
				return err
			}
		}
		if p.WillTopic, err = r.string("CONNECT will topic"); err != nil {
			return inPayload(err)
		}
		if p.WillTopic == "" || hasWildcard(p.WillTopic) {
			return Errorf(ProtocolError, "CONNECT: will topic %q is not a valid topic name", p.WillTopic)
		}
		if p.WillPayload, err = r.binary("CONNECT will payload"); err != nil {
			return inPayload(err)
		}
		badWillPayload = p.WillProps.Has(PropPayloadFormatIndicator) && p.WillProps.PayloadFormatIndicator == 1 &&
			!utf8.Valid(p.WillPayload)
	}
	if p.UsernameFlag {
		if p.Username, err = r.string("CONNECT user name"); err != nil {
			return inPayload(err)
		}
	}
	if p.PasswordFlag {
		if p.Password, err = r.binary("CONNECT password"); err != nil {
			return inPayload(err)
		}
	}
	if err := r.end("CONNECT"); err != nil {
		return err
	}
	if badWillPayload {
		return Errorf(PayloadFormatInvalid, "CONNECT: will payload is not UTF-8 but its format indicator says so")
	}
	return nil
}

func (p *Connect) protocolName() string {
	if p.ProtocolName != "" {
		return p.ProtocolName
	}
	if p.ProtocolVersion == V31 {
		return ProtocolNameV31
	}
	return ProtocolNameMQTT
}

func (p *Connect) remaining() int {
	n := 2 + len(p.protocolName()) + 1 + 1 + 2 + 2 + len(p.ClientID)
	if p.ProtocolVersion == V5 {
		n += p.Props.Len()
	}
	if p.WillFlag {
		if p.ProtocolVersion == V5 {
			n += p.WillProps.Len()
		}
		n += 4 + len(p.WillTopic) + len(p.WillPayload)
	}
	if p.UsernameFlag {
		n += 2 + len(p.Username)
	}
	if p.PasswordFlag {
		n += 2 + len(p.Password)
	}
	return n
}

// Len returns the encoded size of the packet, fixed header included.
func (p *Connect) Len() int {
	n := p.remaining()
	return 1 + VarintLen(n) + n
}

// Append appends the encoded CONNECT to dst. The version is
// p.ProtocolVersion; an empty ProtocolName means "MQIsdp" for V31 and "MQTT"
// otherwise. Username, Password and the will are written only when their
// flags are set; properties only for V5.
func (p *Connect) Append(dst []byte) []byte {
	dst = AppendFixedHeader(dst, CONNECT, 0, p.remaining())
	dst = appendString(dst, p.protocolName())
	var cf byte
	if p.CleanStart {
		cf |= 0x02
	}
	if p.WillFlag {
		cf |= 0x04 | p.WillQoS&3<<3
		if p.WillRetain {
			cf |= 0x20
		}
	}
	if p.PasswordFlag {
		cf |= 0x40
	}
	if p.UsernameFlag {
		cf |= 0x80
	}
	dst = append(dst, p.ProtocolVersion, cf)
	dst = appendUint16(dst, p.KeepAlive)
	if p.ProtocolVersion == V5 {
		dst = p.Props.Append(dst)
	}
	dst = appendString(dst, p.ClientID)
	if p.WillFlag {
		if p.ProtocolVersion == V5 {
			dst = p.WillProps.Append(dst)
		}
		dst = appendString(dst, p.WillTopic)
		dst = appendString(dst, p.WillPayload)
	}
	if p.UsernameFlag {
		dst = appendString(dst, p.Username)
	}
	if p.PasswordFlag {
		dst = appendString(dst, p.Password)
	}
	return dst
}

func (p *Connack) reset() {
	props := p.Props
	*p = Connack{Props: props}
	p.Props.reset()
}

// DecodeConnack decodes the body of a CONNACK (client side). In MQTT 3.1 the
// acknowledge flags byte is unused and ignored; otherwise its reserved bits
// must be 0. An unknown return/reason code, or Session Present together with
// a refusal [MQTT-3.2.2-6], is a ProtocolError. In V5 the property length is
// required.
func DecodeConnack(p *Connack, flags byte, body []byte, version byte) error {
	p.reset()
	return asError(p.decode(flags, body, version))
}

func (p *Connack) decode(flags byte, body []byte, version byte) *Error {
	if err := checkFlags(CONNACK, flags, 0, version); err != nil {
		return err
	}
	r := reader{b: body}
	af, err := r.u8("CONNACK acknowledge flags")
	if err != nil {
		return err
	}
	if version != V31 {
		if af&0xFE != 0 {
			return Errorf(MalformedPacket, "CONNACK: reserved acknowledge flags set")
		}
		p.SessionPresent = af&1 != 0
	}
	if p.ReasonCode, err = r.u8("CONNACK reason code"); err != nil {
		return err
	}
	if !validConnackCode(p.ReasonCode, version) {
		return Errorf(ProtocolError, "CONNACK: invalid reason code 0x%02X", p.ReasonCode)
	}
	if p.SessionPresent && p.ReasonCode != Success {
		return Errorf(ProtocolError, "CONNACK: session present with reason code 0x%02X", p.ReasonCode)
	}
	if version == V5 {
		if err := decodeProps(&r, &p.Props, ctxConnack); err != nil {
			return err
		}
	}
	return r.end("CONNACK")
}

func (p *Connack) remaining(version byte) int {
	if version == V5 {
		return 2 + p.Props.Len()
	}
	return 2
}

// Len returns the encoded size of the packet, fixed header included.
func (p *Connack) Len(version byte) int {
	n := p.remaining(version)
	return 1 + VarintLen(n) + n
}

// Append appends the encoded CONNACK. In V5 the property length is always
// present (20 03 00 rc 00 without properties); 3.x is 20 02 flags rc, with
// Session Present never set for V31.
func (p *Connack) Append(dst []byte, version byte) []byte {
	dst = AppendFixedHeader(dst, CONNACK, 0, p.remaining(version))
	var af byte
	if p.SessionPresent && version != V31 {
		af = 1
	}
	dst = append(dst, af, p.ReasonCode)
	if version == V5 {
		dst = p.Props.Append(dst)
	}
	return dst
}

// inPayload marks an error found while reading a CONNECT payload field
// (client identifier, will, user name, password).
func inPayload(e *Error) *Error {
	e.Payload = true
	return e
}
