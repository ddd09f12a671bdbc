package testutil

import (
	"github.com/isobar-mq/isobar/internal/mqtt/packet"
)

// ReadPacket reads and decodes one packet with packet.ReadPacket (version =
// the connection's protocol level, no size limit) within the deadline. It
// reads from the connection without buffering, so it can be mixed freely
// with Expect and ReadN. Unlike the other methods it returns the error
// instead of failing the test, so tests can assert on decode errors;
// io.EOF means the peer closed the connection before the first byte.
func (c *RawConn) ReadPacket(version byte) (any, error) {
	if err := c.conn.SetReadDeadline(c.opDeadline()); err != nil {
		return nil, err
	}
	return packet.ReadPacket(c.conn, version, 0)
}
