package broker

import (
	"errors"
	"io"
	"net"
	"time"

	"github.com/isobar-mq/isobar/internal/listener"
	"github.com/isobar-mq/isobar/internal/mqtt/packet"
)

// Outbound path.
//
// Producers (this client's read loop, other clients' read loops delivering
// messages, timers) append encoded packets to c.obuf under c.omu. Large
// payloads are not copied: the buffer is cut into a segment and the payload
// slice is referenced as its own segment, so a fan-out of one message to
// many subscribers shares one payload. A single flusher goroutine, started
// on demand and exiting when idle (so idle connections cost no goroutine),
// writes the segments with one vectored write (writev) per batch.

// largePayload is the size above which payloads are referenced instead of
// copied into the output buffer.
const largePayload = 1024

// cutLocked cuts the current buffer into a segment.
func (c *client) cutLocked() {
	if c.segStart < len(c.obuf) {
		c.ovec = append(c.ovec, c.obuf[c.segStart:len(c.obuf):len(c.obuf)])
		c.segStart = len(c.obuf)
	}
}

// kickFlushLocked starts the flusher if it is not running.
func (c *client) kickFlushLocked() {
	if !c.flushing && !c.flushDead {
		c.flushing = true
		go c.flushLoop()
	}
}

// addedLocked accounts for an encoded packet just appended to c.obuf
// and accounts for it.
func (c *client) addedLocked(n int) {
	c.pending += n
	if c.pending > 2*c.srv.opts.MaxPendingBytes && !c.slow {
		c.slow = true
		c.srv.stats.slowConsumers.Add(1)
		c.srv.log.Warn("slow consumer disconnected", "client", c.id, "remote", c.remote, "pending_bytes", c.pending)
		go c.kick(packet.QuotaExceeded, errSlowConsumer)
	}
	c.kickFlushLocked()
}

func (c *client) flushLoop() {
	tcp, isTCP := c.conn.(*net.TCPConn)
	for {
		c.omu.Lock()
		c.cutLocked()
		if len(c.ovec) == 0 || c.flushDead {
			c.flushing = false
			c.obuf = c.obuf[:0]
			c.segStart = 0
			if cap(c.obuf) > 64<<10 {
				c.obuf = nil
			}
			c.flushCond.Broadcast()
			c.omu.Unlock()
			return
		}
		vec := c.ovec
		buf := c.obuf
		pend := c.pending
		c.ovec = c.spareVec[:0]
		c.obuf = c.spareBuf[:0]
		c.segStart = 0
		c.spareVec, c.spareBuf = nil, nil
		c.omu.Unlock()

		_ = c.conn.SetWriteDeadline(time.Now().Add(c.srv.opts.WriteTimeout))
		bufs := net.Buffers(vec)
		var err error
		if isTCP {
			_, err = bufs.WriteTo(tcp) // writev
		} else {
			// TLS, WebSocket and PROXY-wrapped connections: one write per
			// batch (one WebSocket frame, few TLS records).
			_, err = listener.WriteBuffers(c.conn, &bufs)
		}
		c.srv.stats.bytesSent.Add(uint64(pend))

		clear(vec)
		c.omu.Lock()
		c.pending -= pend
		if c.spareVec == nil {
			c.spareVec = vec[:0]
		}
		if c.spareBuf == nil && cap(buf) <= 64<<10 {
			c.spareBuf = buf[:0]
		}
		if err != nil {
			c.flushDead = true
			c.flushing = false
			c.ovec = nil
			c.flushCond.Broadcast()
			c.omu.Unlock()
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				c.srv.stats.slowConsumers.Add(1)
				c.srv.log.Warn("slow consumer: write timed out", "client", c.id, "remote", c.remote)
			}
			_ = c.conn.Close()
			return
		}
		c.omu.Unlock()
	}
}

// waitFlushedLocked waits until the flusher has written everything queued (or
// died), bounded by the connection's write deadline.
func (c *client) waitFlushedLocked() {
	for c.flushing {
		c.flushCond.Wait()
	}
}

// readPacket reads one whole packet from the connection into c.rbuf and
// returns its fixed header and body. The body aliases c.rbuf (valid until
// the next call) unless copyBody is requested by the caller afterwards.
func (c *client) readPacket() (packet.FixedHeader, []byte, error) {
	for {
		if c.rlen > c.rpos {
			h, n, err := packet.ParseFixedHeader(c.rbuf[c.rpos:c.rlen])
			if err != nil {
				return h, nil, err
			}
			if n > 0 {
				total := n + h.Remaining
				if uint64(total) > uint64(c.maxIn) {
					return h, nil, errPacketTooLarge
				}
				if c.rlen-c.rpos >= total {
					body := c.rbuf[c.rpos+n : c.rpos+total : c.rpos+total]
					c.rpos += total
					return h, body, nil
				}
				if total > len(c.rbuf)-c.rpos {
					c.growRead(total)
				}
			}
		}
		if c.rpos > 0 && c.rpos == c.rlen {
			c.rpos, c.rlen = 0, 0
			// Shrink a buffer grown for a big packet once it is drained.
			if len(c.rbuf) > 64<<10 {
				c.rbuf = make([]byte, 4096)
			}
		} else if c.rlen == len(c.rbuf) {
			c.growRead(len(c.rbuf) * 2)
		}
		n, err := c.conn.Read(c.rbuf[c.rlen:])
		c.rlen += n
		if n > 0 {
			c.srv.stats.bytesReceived.Add(uint64(n))
		}
		if err != nil && (n == 0 || err != io.EOF) {
			return packet.FixedHeader{}, nil, err
		}
	}
}

// growRead makes room for at least need bytes from rpos. Memory for a big
// packet is committed progressively as its bytes arrive (the buffer at most
// doubles per read), so a peer announcing a huge remaining length without
// sending it does not pin that much memory.
func (c *client) growRead(need int) {
	size := len(c.rbuf)
	if size == 0 {
		size = 512
	}
	have := c.rlen - c.rpos
	target := max(size*2, have*2, 512)
	if target > need {
		target = need
	}
	if target < have {
		target = have
	}
	if c.rpos > 0 && target <= len(c.rbuf) {
		copy(c.rbuf, c.rbuf[c.rpos:c.rlen])
		c.rlen = have
		c.rpos = 0
		return
	}
	nb := make([]byte, max(target, 512))
	copy(nb, c.rbuf[c.rpos:c.rlen])
	c.rbuf = nb
	c.rlen = have
	c.rpos = 0
}
