// Package stomptest is Isobar's black-box STOMP suite: real STOMP clients
// (python3-stomp, ruby-stomp), raw TCP frames and MCollective drive a
// broker chosen by ISOBAR_STOMPTEST_TARGET, either an in-process Isobar
// node with a STOMP listener (isobar, the default) or a private ActiveMQ
// 5.17 started from the Debian package (activemq). Every case was proved
// on ActiveMQ first; where Isobar deliberately differs, the case says so
// and expects each target's behaviour.
//
// The non-test part of the package starts that private ActiveMQ, for the
// tests and for isobar-bench stomp.
package stomptest
