package web

import (
	"encoding/base64"
	"fmt"
	"math"
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/isobar-mq/isobar/internal/broker"
	"github.com/isobar-mq/isobar/internal/mqtt/packet"
)

// PublishRequest is the body of POST /api/v1/publish.
type PublishRequest struct {
	Topic string `json:"topic"`
	// Payload is text, or base64 when PayloadEncoding is "base64".
	Payload         string         `json:"payload"`
	PayloadEncoding string         `json:"payload_encoding"`
	QoS             int            `json:"qos"`
	Retain          bool           `json:"retain"`
	UserProperties  []UserProperty `json:"user_properties"`
	ContentType     string         `json:"content_type"`
	ResponseTopic   string         `json:"response_topic"`
	// CorrelationData is base64 (it is binary data in MQTT).
	CorrelationData       string `json:"correlation_data"`
	MessageExpiryInterval *int64 `json:"message_expiry_interval"`
}

// publishBodyLimit bounds a publish request body: twice the largest
// packet (room for base64 and JSON escapes), within http.max_body_size.
func (s *Server) publishBodyLimit() int64 {
	n := 2*int64(s.opts.Broker.Options().MaxPacketSize) + 4096
	return min(n, s.cfg.MaxBodySize)
}

func (s *Server) publish(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, s.publishBodyLimit())
	var req PublishRequest
	if !decodeJSON(w, r, &req) {
		return
	}
	m, status, err := s.publishMessage(&req)
	if err != nil {
		writeError(w, status, "%v", err)
		return
	}
	if forbidTopic(w, principalFrom(r.Context()), "topic", m.Topic) {
		return
	}
	size := len(m.Payload)
	if err := s.opts.Broker.Publish(m); err != nil {
		writeError(w, http.StatusInternalServerError, "publish failed: %v", err)
		return
	}
	s.log.Info("message published by administrator", "topic", req.Topic, "qos", req.QoS, "retain", req.Retain,
		"bytes", size, "by", principalFrom(r.Context()).name)
	writeJSON(w, http.StatusOK, map[string]any{"topic": req.Topic, "qos": req.QoS, "retain": req.Retain, "payload_size": size})
}

// publishMessage validates req and builds its message; the error names
// the offending field and goes with an HTTP status (400, or 413 for a
// message larger than the broker accepts).
func (s *Server) publishMessage(req *PublishRequest) (*broker.Message, int, error) {
	bad := func(format string, args ...any) (*broker.Message, int, error) {
		return nil, http.StatusBadRequest, fmt.Errorf(format, args...)
	}
	o := s.opts.Broker.Options()
	if err := s.checkTopic(req.Topic); err != nil {
		return bad("topic: %v", err)
	}
	if strings.HasPrefix(req.Topic, "$") {
		return bad("topic: topics beginning with '$' are reserved for the broker")
	}
	if req.QoS < 0 || req.QoS > 2 {
		return bad("qos: must be 0, 1 or 2")
	}
	if req.QoS > o.MaxQoS {
		return bad("qos: the broker's maximum QoS is %d", max(o.MaxQoS, 0))
	}
	if req.Retain && o.DisableRetain {
		return bad("retain: retained messages are disabled on this broker")
	}
	var payload []byte
	switch req.PayloadEncoding {
	case "", "text":
		payload = []byte(req.Payload)
	case "base64":
		p, err := base64.StdEncoding.DecodeString(req.Payload)
		if err != nil {
			return bad("payload: invalid base64: %v", err)
		}
		payload = p
	default:
		return bad("payload_encoding: must be \"text\" or \"base64\"")
	}
	if uint64(len(payload)) > uint64(o.MaxPacketSize) {
		return nil, http.StatusRequestEntityTooLarge,
			fmt.Errorf("payload: %d bytes exceeds the broker's maximum packet size %d", len(payload), o.MaxPacketSize)
	}
	m := &broker.Message{Topic: req.Topic, Payload: payload, QoS: byte(req.QoS), Retain: req.Retain}
	for i, u := range req.UserProperties {
		if err := checkString(u.Key); err != nil {
			return bad("user_properties[%d].key: %v", i, err)
		}
		if err := checkString(u.Value); err != nil {
			return bad("user_properties[%d].value: %v", i, err)
		}
		m.Props.User = append(m.Props.User, packet.UserProperty{Key: u.Key, Value: u.Value})
	}
	if len(m.Props.User) > 0 {
		m.Props.Set(packet.PropUserProperty)
	}
	if req.ContentType != "" {
		if err := checkString(req.ContentType); err != nil {
			return bad("content_type: %v", err)
		}
		m.Props.ContentType = req.ContentType
		m.Props.Set(packet.PropContentType)
	}
	if req.ResponseTopic != "" {
		if err := s.checkTopic(req.ResponseTopic); err != nil {
			return bad("response_topic: %v", err)
		}
		m.Props.ResponseTopic = req.ResponseTopic
		m.Props.Set(packet.PropResponseTopic)
	}
	if req.CorrelationData != "" {
		cd, err := base64.StdEncoding.DecodeString(req.CorrelationData)
		if err != nil {
			return bad("correlation_data: invalid base64: %v", err)
		}
		if len(cd) > maxField {
			return bad("correlation_data: %d bytes; MQTT binary data holds at most %d", len(cd), maxField)
		}
		m.Props.CorrelationData = cd
		m.Props.Set(packet.PropCorrelationData)
	}
	if e := req.MessageExpiryInterval; e != nil {
		if *e < 0 || *e > math.MaxUint32 {
			return bad("message_expiry_interval: must be 0..%d seconds", uint32(math.MaxUint32))
		}
		m.Props.MessageExpiryInterval = uint32(*e)
		m.Props.Set(packet.PropMessageExpiryInterval)
	}
	if req.PayloadEncoding != "base64" && utf8.Valid(payload) {
		// Text from the form: mark it as UTF-8 for MQTT 5 receivers.
		m.Props.PayloadFormatIndicator = 1
		m.Props.Set(packet.PropPayloadFormatIndicator)
	}
	// The whole PUBLISH as an MQTT 5 client would have sent it (the MQTT
	// 3.1.1 form is smaller: no properties).
	pk := packet.Publish{Topic: m.Topic, QoS: m.QoS, Payload: m.Payload, Props: m.Props}
	if n := pk.Len(packet.V5); uint64(n) > uint64(o.MaxPacketSize) || n > packet.MaxRemainingLength+5 {
		return nil, http.StatusRequestEntityTooLarge,
			fmt.Errorf("message: %d bytes encoded exceeds the broker's maximum packet size %d", n, o.MaxPacketSize)
	}
	return m, 0, nil
}
