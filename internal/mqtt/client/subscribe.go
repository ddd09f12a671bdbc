package client

import (
	"fmt"
	"slices"

	"github.com/isobar-mq/isobar/internal/mqtt/packet"
)

// Subscribe adds s to the client's subscriptions (replacing one with the
// same filter) and, when connected, sends a SUBSCRIBE for it at once. Like
// Config.Subscriptions it is made again after every reconnection without
// session present. The SUBACK is not waited for: a refusal is logged and
// recorded as Stats.LastError.
func (c *Client) Subscribe(s Subscription) error {
	if s.Filter == "" || !packet.ValidString(s.Filter) || len(s.Filter) > 65535 || s.QoS > 2 || s.RetainHandling > 2 {
		return fmt.Errorf("mqtt client: invalid subscription %+v", s)
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return ErrClosed
	}
	i := slices.IndexFunc(c.cfg.Subscriptions, func(x Subscription) bool { return x.Filter == s.Filter })
	if i >= 0 {
		c.cfg.Subscriptions[i] = s
	} else {
		c.cfg.Subscriptions = append(c.cfg.Subscriptions, s)
	}
	cn := c.cur
	var b []byte
	if cn != nil {
		if id := c.allocIDLocked(); id != 0 {
			c.subIDs[id] = []Subscription{s}
			sp := packet.Subscribe{PacketID: id, Subs: []packet.Subscription{{
				Filter: s.Filter, QoS: s.QoS, NoLocal: s.NoLocal,
				RetainAsPublished: s.RetainAsPublished, RetainHandling: s.RetainHandling,
			}}}
			b = sp.Append(nil, cn.version)
		}
	}
	c.mu.Unlock()
	if b != nil {
		// A failed write loses the connection; the next one subscribes
		// again (the server has no session) or still has it.
		_ = cn.write(b)
	}
	return nil
}

// Unsubscribe removes the subscription to filter and, when connected,
// sends an UNSUBSCRIBE. It reports whether the client had it.
func (c *Client) Unsubscribe(filter string) bool {
	c.mu.Lock()
	i := slices.IndexFunc(c.cfg.Subscriptions, func(x Subscription) bool { return x.Filter == filter })
	if i < 0 || c.closed {
		c.mu.Unlock()
		return false
	}
	c.cfg.Subscriptions = slices.Delete(c.cfg.Subscriptions, i, i+1)
	cn := c.cur
	var b []byte
	if cn != nil {
		if id := c.allocIDLocked(); id != 0 {
			// Held in subIDs (with no subscription) until the UNSUBACK, so
			// that the identifier is not reused meanwhile.
			c.subIDs[id] = nil
			b = (&packet.Unsubscribe{PacketID: id, Filters: []string{filter}}).Append(nil, cn.version)
		}
	}
	c.mu.Unlock()
	if b != nil {
		_ = cn.write(b)
	}
	return true
}

// Subscriptions returns the client's current subscriptions.
func (c *Client) Subscriptions() []Subscription {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.cfg.Subscriptions)
}
