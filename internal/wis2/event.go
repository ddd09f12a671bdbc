package wis2

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// WME constants (WIS2 Monitoring Events, CloudEvents 1.0.2 envelope).
const (
	EventType        = "int.wmo.wis.wme.event"
	EventSpecVersion = "1.0"
	// EventDataSchema is the dataschema URL the WME examples use.
	EventDataSchema = "https://schemas.wmo.int/wme/1.0.0/schemas/wis2-event-message-bundled.json"
	// EventConformance is the conformance class in data.conformsTo.
	EventConformance = "http://wis.wmo.int/spec/wme/1/conf/monitoring-event-message-core"
	// MaxEventSize is the largest WME in bytes (WME REQ message size).
	MaxEventSize = 8192
	// EventSubtypeWNMReport is data.subtype of a Global Broker report about a notification.
	EventSubtypeWNMReport = "wnm-report"
	eventTitle            = "Global Broker WNM report"
)

// Reasons (data.content.exception.code). "invalid-schema" is the code of the WME example; the
// others follow its style for the other Global Broker discard counters.
const (
	ReasonInvalidSchema = "invalid-schema"
	ReasonInvalidTopic  = "invalid-topic"
	ReasonTooLarge      = "message-too-large"
	ReasonNoMetadata    = "no-metadata"
)

// Event is a WIS2 Monitoring Event a Global Broker publishes about a discarded notification.
type Event struct {
	ID       string    // event id (a UUID); a random version 4 UUID when empty
	Time     time.Time // when the message was discarded; now when zero
	ReportBy string    // our centre-id, *-global-broker (CloudEvents source)
	About    string    // centre-id of the source of the message (CloudEvents subject, topic level 4)
	// Channel is the topic the discarded message was received on (data.content.channel). The
	// contract's name for it, Topic, cannot be a field because Event has a Topic method.
	Channel   string
	MessageID string // id of the discarded message, if it had one
	Reason    string // exception code, e.g. ReasonInvalidSchema
	// Description is a human-readable account of the reason; derived from Reason when empty.
	Description string
	Errors      []Detail // the rules broken
	Severity    string   // DEBUG, INFO, WARNING, ERROR (default) or CRITICAL
	// Message is the discarded notification. It is embedded in data.content.wnm when it is a
	// JSON object and the event stays within MaxEventSize.
	Message []byte
}

// NewDiscardEvent builds the event for a notification received on topic and refused with err
// (from Hierarchy.Check or Validator.Check). About is the topic's centre-id (level 4).
func NewDiscardEvent(reportBy, topic string, payload []byte, n Notification, err error) Event {
	e := Event{ReportBy: reportBy, Channel: topic, MessageID: n.ID, Message: payload, Time: time.Now()}
	if levels := strings.SplitN(topic, "/", 5); len(levels) >= 4 {
		e.About = levels[3]
	}
	var we *Error
	if errors.As(err, &we) {
		switch we.Kind {
		case KindTopic:
			e.Reason = ReasonInvalidTopic
		case KindSize:
			e.Reason = ReasonTooLarge
		default:
			e.Reason = ReasonInvalidSchema
		}
		e.Errors = we.Details
	} else if err != nil {
		e.Reason = ReasonInvalidSchema
		e.Errors = []Detail{{Message: err.Error()}}
	}
	return e
}

// Topic returns the topic the event is published on: monitor/a/wis2/<centre-id of the subject>
// (WME REQ monitoring-event-topic publishing B-F: exactly four levels, level 4 the centre-id of
// the subject of the event, i.e. the centre the report is about).
func (e Event) Topic() string { return "monitor/a/wis2/" + e.About }

func (e Event) description() string {
	if e.Description != "" {
		return e.Description
	}
	switch e.Reason {
	case ReasonInvalidSchema:
		return "WIS2 Notification Message not compliant with the defined schema"
	case ReasonInvalidTopic:
		return "WIS2 Notification Message published on a topic not compliant with the WIS2 Topic Hierarchy"
	case ReasonTooLarge:
		return "WIS2 Notification Message larger than allowed"
	case ReasonNoMetadata:
		return "WIS2 Notification Message without known discovery metadata"
	}
	return "WIS2 Notification Message discarded"
}

type eventJSON struct {
	ID              string        `json:"id"`
	SpecVersion     string        `json:"specversion"`
	Type            string        `json:"type"`
	Source          string        `json:"source"`
	Subject         string        `json:"subject"`
	Time            string        `json:"time"`
	DataContentType string        `json:"datacontenttype"`
	DataSchema      string        `json:"dataschema"`
	Data            eventDataJSON `json:"data"`
}

type eventDataJSON struct {
	ConformsTo []string         `json:"conformsTo"`
	Subtype    string           `json:"subtype"`
	Severity   string           `json:"severity"`
	Content    eventContentJSON `json:"content"`
}

type eventContentJSON struct {
	Channel   string             `json:"channel,omitempty"`
	Title     string             `json:"title"`
	WNM       json.RawMessage    `json:"wnm,omitempty"`
	WNMID     string             `json:"wnm_id,omitempty"`
	Exception eventExceptionJSON `json:"exception"`
}

type eventExceptionJSON struct {
	Code        string   `json:"code"`
	Description string   `json:"description"`
	Errors      []Detail `json:"errors,omitempty"`
}

// JSON encodes the event (valid against the WME schema, at most MaxEventSize bytes). When the
// whole event would be too large it leaves out, in this order, the embedded message (keeping
// its id in data.content.wnm_id), then errors from the end of the list.
func (e Event) JSON() ([]byte, error) {
	if !validCentreID(e.ReportBy) || !validCentreID(e.About) {
		return nil, fmt.Errorf("wis2: event needs well-formed centre-ids for source and subject (got %q, %q)", e.ReportBy, e.About)
	}
	id := e.ID
	if id == "" {
		id = newUUID()
	} else if !validUUID(id) {
		return nil, fmt.Errorf("wis2: event id %q is not a UUID", id)
	}
	t := e.Time
	if t.IsZero() {
		t = time.Now()
	}
	sev := e.Severity
	switch sev {
	case "":
		sev = "ERROR"
	case "DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL":
	default:
		return nil, fmt.Errorf("wis2: event severity %q is not one of DEBUG, INFO, WARNING, ERROR, CRITICAL", sev)
	}
	reason := e.Reason
	if reason == "" {
		reason = ReasonInvalidSchema
	}
	ev := eventJSON{
		ID: id, SpecVersion: EventSpecVersion, Type: EventType, Source: e.ReportBy, Subject: e.About,
		Time:            t.UTC().Format("2006-01-02T15:04:05.000Z"),
		DataContentType: "application/json", DataSchema: EventDataSchema,
		Data: eventDataJSON{
			ConformsTo: []string{EventConformance}, Subtype: EventSubtypeWNMReport, Severity: sev,
			Content: eventContentJSON{
				Channel: e.Channel, Title: eventTitle,
				Exception: eventExceptionJSON{Code: reason, Description: e.description(), Errors: e.Errors},
			},
		},
	}
	if wnm := compactObject(e.Message); wnm != nil {
		ev.Data.Content.WNM = wnm
	} else {
		ev.Data.Content.WNMID = e.MessageID
	}
	for {
		b, err := json.Marshal(ev)
		if err != nil {
			return nil, err
		}
		if len(b) <= MaxEventSize {
			return b, nil
		}
		c := &ev.Data.Content
		switch {
		case c.WNM != nil:
			c.WNM = nil
			c.WNMID = e.MessageID
		case len(c.Exception.Errors) > 0:
			c.Exception.Errors = c.Exception.Errors[:len(c.Exception.Errors)-1]
		default:
			return nil, fmt.Errorf("wis2: event is %d bytes, more than %d", len(b), MaxEventSize)
		}
	}
}

// compactObject returns msg compacted if it is one JSON object, else nil.
func compactObject(msg []byte) json.RawMessage {
	msg = bytes.TrimSpace(msg)
	if len(msg) == 0 || msg[0] != '{' || !json.Valid(msg) {
		return nil
	}
	var b bytes.Buffer
	if err := json.Compact(&b, msg); err != nil {
		return nil
	}
	return b.Bytes()
}

// newUUID returns a random (version 4) UUID.
func newUUID() string {
	var u [16]byte
	_, _ = rand.Read(u[:]) // crypto/rand.Read never fails (Go 1.24+)
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
}
