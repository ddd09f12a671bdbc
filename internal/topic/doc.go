// Package topic implements MQTT topic handling for the broker's routing core:
//
//   - validation of topic names and topic filters, including shared
//     subscription filters ($share/{ShareName}/{filter}), per MQTT 5.0
//     sections 4.7 and 4.8.2 (and MQTT 3.1.1 section 4.7);
//   - [Index], a concurrent subscription index (a level trie) that maps a
//     topic name to the subscriptions whose filters match it;
//   - [Retained], a concurrent tree of retained messages that can be
//     queried with a topic filter.
//
// Matching follows the specification: '+' matches exactly one level
// (possibly empty), '#' matches the parent level and any number of child
// levels, and topic names beginning with '$' are not matched by filters
// whose first level is a wildcard [MQTT-4.7.2-1].
//
// Index and Retained assume their inputs already passed [ValidateName] or
// [ValidateFilter]. Invalid input never corrupts them or panics, but an
// invalid filter may simply never match.
package topic
