package broker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net/netip"
	"time"

	"github.com/isobar-mq/isobar/internal/mqtt/packet"
	"github.com/isobar-mq/isobar/internal/topic"
)

// refuse sends a refusing CONNACK (in the client's protocol format)
// and returns the error that ends the connection.
func (c *client) refuse(version, v5code, v3code byte, why string) error {
	c.version = version
	var ack packet.Connack
	if version >= packet.V5 {
		ack.ReasonCode = v5code
	} else {
		ack.ReasonCode = v3code
	}
	c.send(func(b []byte) []byte { return ack.Append(b, version) })
	c.srv.stats.connectRefused.Add(1)
	return &refusedError{why: why}
}

type refusedError struct{ why string }

func (e *refusedError) Error() string { return "connect refused: " + e.why }

func (c *client) handleConnect(h packet.FixedHeader, body []byte) error {
	body = append([]byte(nil), body...) // the connect's strings outlive rbuf
	var cp packet.Connect
	if err := packet.DecodeConnect(&cp, h.Flags, body); err != nil {
		var pe *packet.Error
		if !errors.As(err, &pe) {
			return err
		}
		c.srv.stats.protocolErrors.Add(1)
		switch {
		case pe.Code == packet.UnsupportedProtocolVersion:
			// [MQTT-3.1.2-2] (3.1.1: return code 0x01) / MQTT 5 3.1.2.2:
			// a server MAY answer a non-5 level with 0x84 in v5 format.
			v := cp.ProtocolVersion
			if v == packet.V31 || v == packet.V311 {
				return c.refuse(v, 0, packet.ConnRefusedProtocolVersion, pe.Msg)
			}
			return c.refuse(packet.V5, packet.UnsupportedProtocolVersion, 0, pe.Msg)
		case cp.ProtocolVersion == packet.V5 && pe.Payload:
			// A malformed payload field (client identifier, user name,
			// password, will): closed without CONNACK, as Mosquitto does;
			// [MQTT-3.1.4-1] allows either.
			return &refusedError{why: pe.Msg}
		case cp.ProtocolVersion == packet.V5:
			// v5: CONNACK with the reason code, then close [MQTT-3.1.4-1].
			return c.refuse(packet.V5, pe.Code, 0, pe.Msg)
		default:
			// 3.x: close without CONNACK [MQTT-3.1.4-1].
			return &refusedError{why: pe.Msg}
		}
	}
	c.version = cp.ProtocolVersion
	o := &c.srv.opts
	v5 := c.version >= packet.V5

	// Client identifier [MQTT-3.1.3-5..-8].
	assigned := false
	id := cp.ClientID
	if id == "" {
		if c.version == packet.V31 || (c.version == packet.V311 && !cp.CleanStart) {
			return c.refuse(c.version, packet.ClientIdentifierNotValid, packet.ConnRefusedIdentifier, "empty client identifier")
		}
		id = c.srv.assignClientID()
		assigned = true
	}
	if len(id) > o.MaxClientIDLen {
		return c.refuse(c.version, packet.ClientIdentifierNotValid, packet.ConnRefusedIdentifier, "client identifier too long")
	}

	if v5 && cp.Props.Has(packet.PropAuthenticationMethod) {
		// No enhanced authentication methods are supported [MQTT-4.12.0-1].
		return c.refuse(c.version, packet.BadAuthenticationMethod, packet.ConnRefusedNotAuthorized, "unsupported authentication method "+cp.Props.AuthenticationMethod)
	}

	// Will.
	var will *Message
	var willDelay uint32
	if cp.WillFlag {
		if err := topic.ValidateName(cp.WillTopic, o.MaxTopicLen, o.MaxTopicLevels); err != nil {
			if v5 {
				return c.refuse(c.version, packet.TopicNameInvalid, 0, "will topic: "+err.Error())
			}
			return &refusedError{why: "will topic: " + err.Error()}
		}
		if int(cp.WillQoS) > o.MaxQoS {
			return c.refuse(c.version, packet.QoSNotSupported, packet.ConnRefusedNotAuthorized, "will QoS not supported")
		}
		if cp.WillRetain && o.DisableRetain {
			return c.refuse(c.version, packet.RetainNotSupported, packet.ConnRefusedNotAuthorized, "retain not supported")
		}
		if len(cp.WillTopic) > 0 && cp.WillTopic[0] == '$' {
			// '$' topics belong to the server: a will may not publish there.
			c.srv.stats.droppedNotAuthorized.Add(1)
			return c.refuse(c.version, packet.NotAuthorized, packet.ConnRefusedNotAuthorized, "will topic not authorized")
		}
		wp := packet.Publish{QoS: cp.WillQoS, Retain: cp.WillRetain, Topic: cp.WillTopic, Payload: cp.WillPayload, Props: cp.WillProps}
		will = newMessage(&wp, cp.WillTopic, id, time.Now())
		will.Received = 0 // set when published
		will.Origin = Origin{Kind: OriginClient, Name: c.listener}
		if v5 {
			willDelay = cp.WillProps.WillDelayInterval
		}
	}

	// Quotas, then authentication.
	if c.rateLimited {
		c.srv.stats.connRateRefused.Add(1)
		return c.refuse(c.version, packet.ConnectionRateExceeded, packet.ConnRefusedServerUnavailable, "connection rate exceeded")
	}
	if o.MaxConnections > 0 && int(c.srv.online.Load()) >= o.MaxConnections {
		c.srv.stats.listenerFull.Add(1)
		return c.refuse(c.version, packet.QuotaExceeded, packet.ConnRefusedServerUnavailable, "maximum connections reached")
	}
	if lim := o.Listeners[c.listener].MaxConnections; lim > 0 {
		c.srv.mu.Lock()
		n := c.srv.listenerConns[c.listener]
		c.srv.mu.Unlock()
		if n >= lim {
			c.srv.stats.listenerFull.Add(1)
			return c.refuse(c.version, packet.QuotaExceeded, packet.ConnRefusedServerUnavailable, "listener connection limit reached")
		}
	}
	if c.srv.auth != nil {
		var remote netip.Addr
		if ap, err := netip.ParseAddrPort(c.remote); err == nil {
			remote = ap.Addr().Unmap()
		}
		res := c.srv.auth.Authenticate(AuthRequest{
			ClientID: id, Username: cp.Username, HasUsername: cp.UsernameFlag,
			Password: cp.Password, HasPassword: cp.PasswordFlag,
			Remote: remote, Listener: c.listener, Conn: c.conn,
		})
		if res.Delay > 0 {
			t := time.NewTimer(res.Delay)
			select {
			case <-t.C:
			case <-c.srv.quit:
				t.Stop()
			}
		}
		switch res.Result {
		case AuthOK:
			if res.Username != "" {
				cp.Username = res.Username
			}
			c.role = res.Role
		case AuthBadCredentials:
			c.srv.stats.authFailures.Add(1)
			c.srv.log.Info("authentication failed", "client", id, "user", cp.Username, "remote", c.remote)
			return c.refuse(c.version, packet.BadUserNameOrPassword, packet.ConnRefusedBadCredentials, "bad user name or password")
		default:
			c.srv.stats.authFailures.Add(1)
			c.srv.log.Info("connection not authorized", "client", id, "user", cp.Username, "remote", c.remote)
			return c.refuse(c.version, packet.NotAuthorized, packet.ConnRefusedNotAuthorized, "not authorized")
		}
		if will != nil && !c.srv.auth.CanPublish(ClientInfo{ClientID: id, Username: cp.Username, Listener: c.listener, Role: c.role}, will.Topic) {
			return c.refuse(c.version, packet.NotAuthorized, packet.ConnRefusedNotAuthorized, "will topic not authorized")
		}
	}

	c.id = id
	c.username = cp.Username

	if hs := c.srv.hooks.Load(); hs != nil && len(hs.connect) > 0 {
		info := c.info()
		for _, h := range hs.connect {
			if code := h.OnConnect(info, cp.CleanStart); code >= 0x80 {
				return c.refuse(c.version, code, v3ConnectCode(code), "refused by hook "+h.HookName())
			}
		}
	}

	// Keep alive [MQTT-3.1.2-22..24].
	var ack packet.Connack
	c.keepAlive = cp.KeepAlive
	if o.MaxKeepAlive < 65535 && (cp.KeepAlive == 0 || cp.KeepAlive > o.MaxKeepAlive) {
		c.keepAlive = o.MaxKeepAlive
		if v5 {
			ack.Props.ServerKeepAlive = o.MaxKeepAlive
			ack.Props.Set(packet.PropServerKeepAlive)
		}
	}

	// Connection properties from the client.
	c.sendQuota = o.MaxInflight
	if v5 {
		if cp.Props.Has(packet.PropReceiveMaximum) && int(cp.Props.ReceiveMaximum) < c.sendQuota {
			c.sendQuota = int(cp.Props.ReceiveMaximum)
		}
		if cp.Props.Has(packet.PropMaximumPacketSize) {
			c.maxOut = cp.Props.MaximumPacketSize
		}
		c.aliasOutMax = cp.Props.TopicAliasMaximum
		if cp.Props.Has(packet.PropRequestProblemInformation) {
			c.problemInfo = cp.Props.RequestProblemInformation == 1
		}
	}

	// Session expiry.
	var expiry uint32
	switch {
	case v5:
		expiry = c.srv.capExpiry(cp.Props.SessionExpiryInterval)
		if cp.Props.Has(packet.PropSessionExpiryInterval) && expiry != cp.Props.SessionExpiryInterval {
			ack.Props.SessionExpiryInterval = expiry
			ack.Props.Set(packet.PropSessionExpiryInterval)
		}
	case !cp.CleanStart:
		expiry = o.PersistentSessionExpiry
		if expiry == 0 {
			expiry = 0xFFFFFFFF
		}
	}

	// CONNACK advertises exactly what differs from the protocol defaults.
	if v5 {
		if o.TopicAliasMaximum > 0 {
			ack.Props.TopicAliasMaximum = uint16(o.TopicAliasMaximum)
			ack.Props.Set(packet.PropTopicAliasMaximum)
		}
		if o.ReceiveMaximum != 65535 {
			ack.Props.ReceiveMaximum = o.ReceiveMaximum
			ack.Props.Set(packet.PropReceiveMaximum)
		}
		if o.MaxQoS < 2 {
			ack.Props.MaximumQoS = byte(o.MaxQoS)
			ack.Props.Set(packet.PropMaximumQoS)
		}
		if o.DisableRetain {
			ack.Props.Set(packet.PropRetainAvailable)
		}
		if o.advertisedMaxPacket() {
			ack.Props.MaximumPacketSize = o.MaxPacketSize
			ack.Props.Set(packet.PropMaximumPacketSize)
		}
		if assigned {
			ack.Props.AssignedClientIdentifier = id
			ack.Props.Set(packet.PropAssignedClientIdentifier)
		}
		if o.DisableWildcardSubscriptions {
			ack.Props.Set(packet.PropWildcardSubscriptionAvailable)
		}
		if o.DisableSubscriptionIdentifiers {
			ack.Props.Set(packet.PropSubscriptionIdentifierAvailable)
		}
		if o.DisableSharedSubscriptions {
			ack.Props.Set(packet.PropSharedSubscriptionAvailable)
		}
	}

	if v5 && c.maxOut > 0 && uint64(ack.Len(c.version)) > uint64(c.maxOut) {
		// Not even CONNACK fits the client's Maximum Packet Size: close
		// without sending it [MQTT-3.1.2-24].
		return &refusedError{why: "client maximum packet size below CONNACK size"}
	}
	if expiry > 0 && c.srv.durableRefused() {
		// A persistent session needs the store, which cannot write now.
		c.srv.stats.droppedStoreDegraded.Add(1)
		return c.refuse(c.version, packet.QuotaExceeded, packet.ConnRefusedServerUnavailable, "store not writable")
	}
	if dir := o.Directory; dir != nil {
		// Cluster: the client identifier is claimed on every node; the
		// node that held its session hands it over (or ends it).
		req := ClaimRequest{ClientID: id, Username: c.username, Role: c.role, Clean: cp.CleanStart, Stamp: c.srv.hclock.Now(), Node: o.NodeName}
		ctx, cancel := context.WithCancel(context.Background())
		stop := context.AfterFunc(c.srv.quitCtx(), cancel)
		ls, err := dir.Claim(ctx, req)
		stop()
		cancel()
		switch {
		case errors.Is(err, ErrClaimForeign):
			c.srv.stats.takeoversRefused.Add(1)
			return c.refuse(c.version, packet.NotAuthorized, packet.ConnRefusedNotAuthorized, "client identifier belongs to another user")
		case err != nil:
			c.srv.stats.claimsRefused.Add(1)
			return c.refuse(c.version, packet.ServerBusy, packet.ConnRefusedServerUnavailable, "client identifier: "+err.Error())
		}
		if ls != nil && !cp.CleanStart {
			if err := c.srv.AdoptSession(ls, sessionDedupWindow); err != nil {
				c.srv.log.Warn("session handed over by another node not installed", "client", id, "err", err)
			}
		}
		c.claimStamp = req.Stamp
	}
	c.connectedAt = time.Now() // before attach makes the client visible
	attached := c.srv.attach(c, cp.CleanStart, expiry, will, willDelay, &ack, c.tx)
	if dir := o.Directory; dir != nil {
		dir.Attached(id, c.claimStamp)
	}
	if !attached {
		return c.refuse(c.version, packet.NotAuthorized, packet.ConnRefusedNotAuthorized, "client identifier belongs to another user")
	}
	c.srv.log.Debug("client connected", "client", id, "remote", c.remote, "version", c.version, "clean", cp.CleanStart, "keepalive", c.keepAlive)
	return nil
}

// assignClientID returns a unique server-assigned client identifier.
func (s *Server) assignClientID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return "isobar-" + hex.EncodeToString(b[:])
}

// capExpiry applies MaxSessionExpiry to a requested expiry interval.
func (s *Server) capExpiry(v uint32) uint32 {
	if s.opts.MaxSessionExpiry > 0 && v > s.opts.MaxSessionExpiry {
		return s.opts.MaxSessionExpiry
	}
	return v
}

// v3ConnectCode maps a v5 CONNACK reason code to the nearest 3.x return
// code.
func v3ConnectCode(code byte) byte {
	switch code {
	case packet.UnsupportedProtocolVersion:
		return packet.ConnRefusedProtocolVersion
	case packet.ClientIdentifierNotValid:
		return packet.ConnRefusedIdentifier
	case packet.BadUserNameOrPassword:
		return packet.ConnRefusedBadCredentials
	case packet.NotAuthorized, packet.Banned, packet.BadAuthenticationMethod:
		return packet.ConnRefusedNotAuthorized
	}
	return packet.ConnRefusedServerUnavailable
}
