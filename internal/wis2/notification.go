package wis2

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// Size limits of the WNM standard.
const (
	// MaxMessageSize is the largest WNM in bytes (WNM REQ message size).
	MaxMessageSize = 8192
	// MaxInlineContent is the largest inline properties.content (size and value length).
	MaxInlineContent = 4096
)

// maxParse bounds the payload the validator parses only to report its id after a size error.
const maxParse = 1 << 20

// ConformanceCore is the WNM conformance class every message declares in conformsTo.
const ConformanceCore = "http://wis.wmo.int/spec/wnm/1/conf/core"

// Link is one member of a WNM's links.
type Link struct {
	Href   string
	Rel    string
	Type   string
	Length int64
}

// Notification is what a WNM says, as far as the relay needs it. Fields are filled from the
// message even when it is invalid, wherever the member has the right JSON type.
type Notification struct {
	ID            string
	PubTime       string
	DataID        string
	MetadataID    string
	DateTime      string // properties.datetime ("" when null or absent)
	StartDateTime string
	EndDateTime   string
	Producer      string
	GlobalCache   string // properties.global-cache: set by a Global Cache on its notifications
	Cache         bool   // properties.cache; true when absent (the schema's default)
	ConformsTo    []string
	Version       string // deprecated "v04" form
	Links         []Link
	Size          int // bytes of the payload
}

// DataLink returns the link with rel canonical, update or deletion (WNM REQ links I asks for
// exactly one), and whether there is exactly one.
func (n Notification) DataLink() (Link, bool) {
	var found Link
	count := 0
	for _, l := range n.Links {
		switch l.Rel {
		case "canonical", "update", "deletion":
			found = l
			count++
		}
	}
	return found, count == 1
}

// Validator checks WIS2 Notification Messages. It is safe for concurrent use.
type Validator struct {
	schema *jsonschema.Schema // nil: the built-in rules
}

// NewValidator returns a validator. With schemaJSON nil it applies the rules of the WNM JSON
// Schema (wis2-notification-message-bundled.json, FT2025-2) implemented in Go, because the
// schema itself has no licence that allows shipping it. With schemaJSON set it compiles that
// schema (draft 2020-12, format assertion on, content assertion off) and applies it instead,
// so an operator can follow a newer official schema without a new binary. The size limits are
// checked in both modes.
func NewValidator(schemaJSON []byte) (*Validator, error) {
	if schemaJSON == nil {
		return &Validator{}, nil
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(schemaJSON))
	if err != nil {
		return nil, fmt.Errorf("wis2: WNM schema: %w", err)
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	const url = "urn:isobar:wis2:wnm-schema.json"
	if err := c.AddResource(url, doc); err != nil {
		return nil, fmt.Errorf("wis2: WNM schema: %w", err)
	}
	s, err := c.Compile(url)
	if err != nil {
		return nil, fmt.Errorf("wis2: WNM schema: %w", err)
	}
	return &Validator{schema: s}, nil
}

// Check validates one notification payload. The error is an *Error of kind KindSize (message
// over 8192 bytes, inline content over 4096) or KindFormat (not JSON, not a JSON object, or
// against the schema). Notification.ID is filled whenever the payload is JSON with a string id,
// valid or not (payloads over 1 MiB are refused unparsed). Check never panics on any input.
func (v *Validator) Check(payload []byte) (Notification, error) {
	n := Notification{Size: len(payload), Cache: true}
	if len(payload) > maxParse {
		return n, &Error{Kind: KindSize, Rule: "WNM REQ message size", Details: []Detail{{Message: fmt.Sprintf("message is %d bytes, more than %d", len(payload), MaxMessageSize)}}}
	}
	doc, err := decodeJSON(payload)
	if err != nil {
		if len(payload) > MaxMessageSize {
			return n, &Error{Kind: KindSize, Rule: "WNM REQ message size", Details: []Detail{{Message: fmt.Sprintf("message is %d bytes, more than %d", len(payload), MaxMessageSize)}}}
		}
		return n, &Error{Kind: KindFormat, Details: []Detail{{Message: "not valid JSON: " + err.Error()}}}
	}
	obj, _ := doc.(map[string]any)
	fill(&n, obj)
	if len(payload) > MaxMessageSize {
		return n, &Error{Kind: KindSize, Rule: "WNM REQ message size", Details: []Detail{{Message: fmt.Sprintf("message is %d bytes, more than %d", len(payload), MaxMessageSize)}}}
	}
	if d := inlineTooLarge(obj); d != nil {
		return n, &Error{Kind: KindSize, Rule: "WNM inline content size", Details: []Detail{*d}}
	}
	if v.schema != nil {
		if err := v.schema.Validate(doc); err != nil {
			return n, schemaError(err)
		}
		return n, nil
	}
	var r rules
	r.message(doc)
	if len(r.details) > 0 {
		return n, &Error{Kind: KindFormat, Rule: "WNM schema", Details: r.details}
	}
	return n, nil
}

// decodeJSON decodes one JSON value with numbers kept exact (as the schema validator does) and
// refuses trailing data.
func decodeJSON(b []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("trailing data after the JSON value")
	}
	return v, nil
}

func fill(n *Notification, obj map[string]any) {
	if obj == nil {
		return
	}
	n.ID, _ = obj["id"].(string)
	n.Version, _ = obj["version"].(string)
	if arr, ok := obj["conformsTo"].([]any); ok {
		for _, c := range arr {
			if s, ok := c.(string); ok {
				n.ConformsTo = append(n.ConformsTo, s)
			}
		}
	}
	if p, ok := obj["properties"].(map[string]any); ok {
		n.PubTime, _ = p["pubtime"].(string)
		n.DataID, _ = p["data_id"].(string)
		n.MetadataID, _ = p["metadata_id"].(string)
		n.DateTime, _ = p["datetime"].(string)
		n.StartDateTime, _ = p["start_datetime"].(string)
		n.EndDateTime, _ = p["end_datetime"].(string)
		n.Producer, _ = p["producer"].(string)
		n.GlobalCache, _ = p["global-cache"].(string)
		if c, ok := p["cache"].(bool); ok {
			n.Cache = c
		}
	}
	if links, ok := obj["links"].([]any); ok {
		for _, l := range links {
			m, ok := l.(map[string]any)
			if !ok {
				continue
			}
			var link Link
			link.Href, _ = m["href"].(string)
			link.Rel, _ = m["rel"].(string)
			link.Type, _ = m["type"].(string)
			if num, ok := m["length"].(json.Number); ok {
				link.Length, _ = num.Int64()
			}
			n.Links = append(n.Links, link)
		}
	}
}

// inlineTooLarge checks properties.content against the 4096 limit. The schema states the same
// limit (size maximum, value maxLength); it is checked first so that the error has KindSize
// whichever validator mode is in use.
func inlineTooLarge(obj map[string]any) *Detail {
	p, _ := obj["properties"].(map[string]any)
	c, _ := p["content"].(map[string]any)
	if c == nil {
		return nil
	}
	if num, ok := c["size"].(json.Number); ok && numberGreater(num, MaxInlineContent) {
		return &Detail{Path: "/properties/content/size", Message: fmt.Sprintf("inline content size %s is more than %d", num, MaxInlineContent)}
	}
	if s, ok := c["value"].(string); ok && utf8.RuneCountInString(s) > MaxInlineContent {
		return &Detail{Path: "/properties/content/value", Message: fmt.Sprintf("inline content is %d characters, more than %d", utf8.RuneCountInString(s), MaxInlineContent)}
	}
	return nil
}

// schemaError turns the schema validator's error tree into details (its leaves).
func schemaError(err error) *Error {
	e := &Error{Kind: KindFormat, Rule: "WNM schema"}
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		e.Details = []Detail{{Message: err.Error()}}
		return e
	}
	for _, u := range ve.BasicOutput().Errors {
		if u.Error == nil {
			continue
		}
		e.Details = append(e.Details, Detail{Path: u.InstanceLocation, Message: u.Error.String()})
	}
	if len(e.Details) == 0 {
		e.Details = []Detail{{Message: ve.Error()}}
	}
	return e
}
