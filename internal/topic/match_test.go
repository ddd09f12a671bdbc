package topic

import "strings"

// refMatch is a naive reference implementation of MQTT topic matching
// (MQTT 5.0 section 4.7), used to check Index and Retained.
func refMatch(filter, topic string) bool {
	if topic == "" || filter == "" {
		return false
	}
	f := strings.Split(filter, "/")
	t := strings.Split(topic, "/")
	if topic[0] == '$' && (f[0] == "+" || f[0] == "#") {
		return false // [MQTT-4.7.2-1]
	}
	for i, fl := range f {
		if fl == "#" {
			return true // matches the parent level and any number of children
		}
		if i >= len(t) {
			return false
		}
		if fl != "+" && fl != t[i] {
			return false
		}
	}
	return len(f) == len(t)
}

// matchCases are taken from MQTT 5.0 section 4.7 and its non-normative
// examples, plus edge cases around empty levels and '$' topics.
var matchCases = []struct {
	filter, topic string
	want          bool
}{
	// 4.7.1.2 multi-level wildcard.
	{"sport/tennis/player1/#", "sport/tennis/player1", true},
	{"sport/tennis/player1/#", "sport/tennis/player1/ranking", true},
	{"sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", true},
	{"sport/tennis/player1/#", "sport/tennis/player2", false},
	{"sport/tennis/player1/#", "sport/tennis", false},
	{"sport/#", "sport", true},
	{"sport/#", "sports", false},
	{"sport/#", "sport/", true},
	{"#", "sport", true},
	{"#", "/", true},
	{"#", "a/b/c/d/e/f", true},
	// 4.7.1.3 single-level wildcard.
	{"sport/tennis/+", "sport/tennis/player1", true},
	{"sport/tennis/+", "sport/tennis/player2", true},
	{"sport/tennis/+", "sport/tennis/player1/ranking", false},
	{"sport/+", "sport", false},
	{"sport/+", "sport/", true},
	{"+", "sport", true},
	{"+", "/sport", false},
	{"+", "", false},
	{"+/+", "/finance", true},
	{"/+", "/finance", true},
	{"+", "/finance", false},
	{"+/tennis/#", "sport/tennis/player1", true},
	{"+/tennis/#", "sport/tennis", true},
	{"+/tennis/#", "sport/golf", false},
	{"sport/+/player1", "sport/tennis/player1", true},
	{"sport/+/player1", "sport//player1", true},
	{"+/+/+", "a/b/c", true},
	{"+/+/+", "a/b", false},
	{"+/#", "a", true},
	{"+/#", "a/b/c", true},
	{"+/+/#", "a", false},
	// 4.7.2 topics beginning with '$'.
	{"#", "$SYS", false},
	{"#", "$SYS/broker/uptime", false},
	{"+/monitor/Clients", "$SYS/monitor/Clients", false},
	{"+", "$SYS", false},
	{"+/#", "$SYS/x", false},
	{"$SYS/#", "$SYS/monitor/Clients", true},
	{"$SYS/#", "$SYS/x", true},
	{"$SYS/#", "$SYS", true},
	{"$SYS/monitor/+", "$SYS/monitor/Clients", true},
	{"$SYS/+", "$SYS/x", true},
	{"$SYS", "$SYS", true},
	{"a/$SYS", "a/$SYS", true},
	{"a/+", "a/$SYS", true},
	{"a/#", "a/$x/y", true},
	{"#", "a$", true},
	// Case sensitivity and exact matches.
	{"ACCOUNTS", "Accounts", false},
	{"Accounts payable", "Accounts payable", true},
	{"a/b", "a/b", true},
	{"a/b", "a/b/", false},
	{"a/b", "a", false},
	{"a/b/c", "a/b", false},
	// Empty levels.
	{"a//b", "a//b", true},
	{"a/+/b", "a//b", true},
	{"a//b", "a/x/b", false},
	{"/", "/", true},
	{"//", "//", true},
	{"/#", "/", true},
	{"/#", "//x", true},
	{"/+", "/", true},
	{"+/", "/", true},
	{"+/+", "/", true},
	{"/", "a/", false},
	{"a/", "a", false},
	{"a/#", "a//", true},
}
