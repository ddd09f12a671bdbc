// Package wis2test runs the WIS2 Global Broker relay end to end: real
// mosquitto brokers as WIS2 Nodes and Global Caches, an Isobar node (or
// cluster) relaying from them, paho subscribers on Isobar, the fixtures
// of ../shared/wis2 (valid and invalid notifications and topics from the
// WMO acceptance tests), and real redis-server processes (standalone and
// a 6-node Redis Cluster) for the de-duplication.
package wis2test
