package broker

// Read-only views for the metrics, $SYS and management layers that the
// other introspection functions do not give. Nothing here is on the
// message hot path: each walks state under the usual locks when called
// (at scrape or $SYS interval time).

// ListenerVersion identifies a group of connections: the listener they
// arrived on and their MQTT protocol version (see ProtocolName).
type ListenerVersion struct {
	Listener string
	Protocol string
}

// ConnectionsByListenerVersion counts connected (CONNACKed) clients by
// listener and protocol version in one walk of the client set.
func (s *Server) ConnectionsByListenerVersion() map[ListenerVersion]int {
	out := make(map[ListenerVersion]int)
	s.mu.Lock()
	for c := range s.clients {
		if c.connected.Load() {
			out[ListenerVersion{Listener: c.listener, Protocol: ProtocolName(c.version)}]++
		}
	}
	s.mu.Unlock()
	return out
}

// ShuttingDown reports whether Shutdown has been called.
func (s *Server) ShuttingDown() bool { return s.isClosed() }

// RetainedPayloadBytes returns the number of retained messages and the sum
// of their payload sizes.
func (s *Server) RetainedPayloadBytes() (count int, bytes int64) {
	s.retained.Range(func(_ string, m *Message) bool {
		count++
		bytes += int64(len(m.Payload))
		return true
	})
	return count, bytes
}

// QueuedBytes is the memory held by messages queued or in flight in
// sessions (exact: it visits every session, see Totals).
func (s *Server) QueuedBytes() int64 { return s.Totals().QueuedBytes }
