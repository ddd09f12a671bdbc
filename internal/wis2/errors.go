package wis2

import (
	"errors"
	"strings"
)

// Kind says which check a message failed. The relay maps it onto the Global Broker metrics:
// KindTopic counts in wmo_wis2_gb_messages_invalid_topic_total, KindFormat and KindSize in
// wmo_wis2_gb_messages_invalid_format_total (the metric hierarchy has no size counter).
type Kind int

const (
	// KindTopic is a topic that breaks the WIS2 Topic Hierarchy (or the centre policy).
	KindTopic Kind = iota + 1
	// KindFormat is a payload that is not JSON or does not follow the WNM schema.
	KindFormat
	// KindSize is a message over 8192 bytes or inline content over 4096.
	KindSize
)

func (k Kind) String() string {
	switch k {
	case KindTopic:
		return "topic"
	case KindFormat:
		return "format"
	case KindSize:
		return "size"
	}
	return "unknown"
}

// Sentinel errors for errors.Is: every *Error matches the sentinel of its Kind.
var (
	ErrInvalidTopic  = errors.New("wis2: invalid topic")
	ErrInvalidFormat = errors.New("wis2: invalid notification message")
	ErrTooLarge      = errors.New("wis2: message too large")
)

// Detail is one broken rule: where (a JSON pointer into the message, or "level N" of a topic) and what.
type Detail struct {
	Path    string `json:"dataPath"`
	Message string `json:"message"`
}

// Error is what every check of this package returns. Rule names the requirement of the standard
// when there is one (e.g. "WTH REQ publishing B"), so that an operator can look it up.
type Error struct {
	Kind    Kind
	Rule    string
	Details []Detail
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("wis2: ")
	b.WriteString(e.Kind.String())
	if e.Rule != "" {
		b.WriteString(" (")
		b.WriteString(e.Rule)
		b.WriteString(")")
	}
	b.WriteString(": ")
	for i, d := range e.Details {
		if i > 0 {
			b.WriteString("; ")
		}
		if i == 8 {
			b.WriteString("...")
			break
		}
		if d.Path != "" {
			b.WriteString(d.Path)
			b.WriteString(": ")
		}
		b.WriteString(d.Message)
	}
	return b.String()
}

// Is lets errors.Is match the sentinel of the error's kind.
func (e *Error) Is(target error) bool {
	switch target {
	case ErrInvalidTopic:
		return e.Kind == KindTopic
	case ErrInvalidFormat:
		return e.Kind == KindFormat
	case ErrTooLarge:
		return e.Kind == KindSize
	}
	return false
}

// KindOf returns the kind of a (possibly wrapped) *Error, or 0.
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return 0
}

func topicError(rule, path, msg string) *Error {
	return &Error{Kind: KindTopic, Rule: rule, Details: []Detail{{Path: path, Message: msg}}}
}
