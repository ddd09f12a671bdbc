// Package sectest holds Isobar's end-to-end tests of listeners and security
// against real peers: mosquitto_pub/mosquitto_sub and mosquitto_passwd
// (Debian mosquitto-clients and mosquitto), HAProxy (Debian haproxy) in
// front of Isobar with the configuration in deploy/haproxy, MQTT.js in Node
// over WebSocket (testdata/mqttjs, npm package mqtt) and Go paho, over TCP,
// TLS, mutual TLS, PROXY protocol, WebSocket and secure WebSocket.
//
// Nodes run in-process; certificates, password and ACL files are generated
// by the tests. A test whose peer program is missing is skipped with a
// message naming the package to install (scripts/test installs them).
package sectest
