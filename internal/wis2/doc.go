// Package wis2 holds the checks a WIS2 Global Broker applies to what it relays: the WIS2 Topic
// Hierarchy (WTH) for topics, the WIS2 Notification Message (WNM) rules for payloads, the
// (metadata_id, topic) registry behind the "no metadata" counter, and the WIS2 Monitoring
// Event (WME) a Global Broker publishes about a discarded message.
//
// The WTH code lists are Apache-2.0 and embedded (wth.txt, see NOTICE; regenerate with go
// generate). The WNM and WME JSON Schemas carry no licence, so they are not shipped: the WNM
// schema's rules are implemented in Go (rules.go), and NewValidator can compile the official
// schema file instead. Everything here is immutable after construction and safe for
// concurrent use.
package wis2
