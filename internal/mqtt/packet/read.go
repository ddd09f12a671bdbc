package packet

import (
	"errors"
	"io"
)

// ReadPacket reads one complete packet from r and decodes it into a freshly
// allocated *Connect, *Connack, *Publish, *Ack, *Subscribe, *Suback,
// *Unsubscribe, *Unsuback, *Disconnect or *Auth, or returns the Type for
// PINGREQ and PINGRESP. Each packet gets its own body buffer, so the result
// stays valid after later reads. It is meant for clients, test tools and the
// load generator; r should be buffered.
//
// version is the protocol version of the connection (ignored for CONNECT).
// DISCONNECT and AUTH reason codes are checked against those a server may
// send (a client reads what a server sent). If maxSize > 0, a packet whose
// total size exceeds it is not read: the error is PacketTooLarge and the
// stream is left inside the packet, so the connection must be closed.
//
// A clean end of stream before the first byte returns io.EOF; an end inside
// a packet io.ErrUnexpectedEOF. Decoding errors are *Error.
func ReadPacket(r io.Reader, version byte, maxSize int) (any, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:1]); err != nil {
		return nil, err
	}
	n := 1
	var h FixedHeader
	for {
		var hn int
		var err error
		if h, hn, err = ParseFixedHeader(hdr[:n]); err != nil {
			return nil, err
		}
		if hn > 0 {
			break
		}
		// ParseFixedHeader fails at the fifth byte, so n stays below 5.
		if _, err := io.ReadFull(r, hdr[n:n+1]); err != nil {
			return nil, noEOF(err)
		}
		n++
	}
	if maxSize > 0 && n+h.Remaining > maxSize {
		return nil, Errorf(PacketTooLarge, "%s of %d bytes exceeds the maximum packet size %d", h.Type, n+h.Remaining, maxSize)
	}
	body := make([]byte, h.Remaining)
	if _, err := io.ReadFull(r, body); err != nil {
		return nil, noEOF(err)
	}
	return decodePacket(h, body, version, true)
}

func noEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// decodePacket decodes body according to h into a new packet. fromServer
// selects the direction for DISCONNECT and AUTH reason codes.
func decodePacket(h FixedHeader, body []byte, version byte, fromServer bool) (any, error) {
	var err *Error
	var pkt any
	switch h.Type {
	case CONNECT:
		p := new(Connect)
		pkt, err = p, p.decode(h.Flags, body)
	case CONNACK:
		p := new(Connack)
		pkt, err = p, p.decode(h.Flags, body, version)
	case PUBLISH:
		p := new(Publish)
		if e := DecodePublish(p, h.Flags, body, version); e != nil {
			return nil, e
		}
		return p, nil
	case PUBACK, PUBREC, PUBREL, PUBCOMP:
		p := &Ack{Type: h.Type}
		pkt, err = p, p.decode(h.Flags, body, version)
	case SUBSCRIBE:
		p := new(Subscribe)
		pkt, err = p, p.decode(h.Flags, body, version)
	case SUBACK:
		p := new(Suback)
		pkt, err = p, p.decode(h.Flags, body, version)
	case UNSUBSCRIBE:
		p := new(Unsubscribe)
		pkt, err = p, p.decode(h.Flags, body, version)
	case UNSUBACK:
		p := new(Unsuback)
		pkt, err = p, p.decode(h.Flags, body, version)
	case PINGREQ, PINGRESP:
		if e := DecodePing(h.Type, h.Flags, body); e != nil {
			return nil, e
		}
		return h.Type, nil
	case DISCONNECT:
		p := new(Disconnect)
		pkt, err = p, p.decode(h.Flags, body, version, fromServer)
	case AUTH:
		p := new(Auth)
		pkt, err = p, p.decode(h.Flags, body, version, fromServer)
	default:
		return nil, Errorf(ProtocolError, "reserved packet type %d", byte(h.Type))
	}
	if err != nil {
		return nil, err
	}
	return pkt, nil
}
