package broker

import (
	"strings"
	"time"

	"github.com/isobar-mq/isobar/internal/mqtt/packet"
	"github.com/isobar-mq/isobar/internal/store"
	"github.com/isobar-mq/isobar/internal/topic"
)

func hasWildcard(filter string) bool { return strings.ContainsAny(filter, "+#") }

func (c *client) handleSubscribe(h packet.FixedHeader, body []byte) error {
	body = append([]byte(nil), body...) // filters are kept by the index
	var sp packet.Subscribe
	if err := packet.DecodeSubscribe(&sp, h.Flags, body, c.version); err != nil {
		return err
	}
	o := &c.srv.opts
	v5 := c.version >= packet.V5
	var subID uint32
	if v5 && sp.Props.Has(packet.PropSubscriptionIdentifier) {
		if o.DisableSubscriptionIdentifiers {
			return protoErr(packet.SubscriptionIdentifiersNotSupported, "subscription identifiers not supported")
		}
		subID = sp.Props.SubscriptionIdentifiers[0]
	}
	for _, sub := range sp.Subs {
		if _, _, shared := topic.ParseShared(sub.Filter); shared {
			if sub.NoLocal {
				return protoErr(packet.ProtocolError, "No Local on a shared subscription [MQTT-3.8.3-4]")
			}
			if err := topic.ValidateFilter(sub.Filter, 0, 0); err != nil {
				// [MQTT-4.8.2-1/-2]: a malformed shared subscription is a
				// protocol violation, not a refused filter.
				return protoErr(packet.ProtocolError, err.Error())
			}
		}
	}

	codes := make([]byte, len(sp.Subs))
	var wantRetained []retainedReq

	hs := c.srv.hooks.Load()
	sess := c.sess
	sess.mu.Lock()
	// A persistent session's subscriptions need the store.
	degraded := sess.persistentLocked() && c.srv.durableRefused()
	for i, sub := range sp.Subs {
		if o.MaxFiltersPerSubscribe > 0 && i >= o.MaxFiltersPerSubscribe {
			codes[i] = c.failCode(packet.QuotaExceeded)
			continue
		}
		if degraded {
			c.srv.stats.droppedStoreDegraded.Add(1)
			codes[i] = c.failCode(packet.QuotaExceeded)
			continue
		}
		code := c.checkSubscription(sub)
		if code >= 0x80 {
			codes[i] = code
			continue
		}
		granted := min(sub.QoS, byte(o.MaxQoS))
		_, existed := sess.subs[sub.Filter]
		if !existed && o.MaxSubscriptionsPerClient > 0 && len(sess.subs) >= o.MaxSubscriptionsPerClient {
			codes[i] = c.failCode(packet.QuotaExceeded)
			continue
		}
		opts := topic.Options{QoS: granted, NoLocal: sub.NoLocal, RetainAsPublished: sub.RetainAsPublished, RetainHandling: sub.RetainHandling, ID: subID}
		if c.version < packet.V5 {
			// 3.x has no subscription options; retained messages are
			// flagged as retained only when sent because of the subscribe.
			opts = topic.Options{QoS: granted}
		}
		if hs != nil && len(hs.subscribe) > 0 {
			refused := byte(0)
			for _, h := range hs.subscribe {
				if code := h.OnSubscribe(c.info(), sub.Filter, &opts); code >= 0x80 {
					refused = code
					break
				}
			}
			if refused != 0 {
				codes[i] = c.failCode(refused)
				continue
			}
			granted = min(opts.QoS, granted)
			opts.QoS = granted
		}
		sess.subs[sub.Filter] = subscription{filter: sub.Filter, opts: opts}
		c.srv.indexSubscribe(sess, sub.Filter, opts)
		if sess.persistentLocked() && c.tx.Durable() {
			c.tx.batch.PutSubscription(sess.id, &store.SubscriptionRecord{
				Filter: sub.Filter, QoS: opts.QoS, NoLocal: opts.NoLocal,
				RetainAsPublished: opts.RetainAsPublished, RetainHandling: opts.RetainHandling, ID: opts.ID,
			})
		}
		codes[i] = granted
		_, _, shared := topic.ParseShared(sub.Filter)
		if !shared && !o.DisableRetain && (opts.RetainHandling == 0 || (opts.RetainHandling == 1 && !existed)) {
			wantRetained = append(wantRetained, retainedReq{sub.Filter, granted, subID})
		}
	}
	sess.mu.Unlock()

	// SUBACK once the subscriptions are durable; retained messages follow
	// it, flagged retained [MQTT-3.3.1-9] (never for shared subscriptions:
	// MQTT 5.0 section 4.8.2, "retained messages are not sent" when a
	// shared subscription is made). The session lock is held so that no
	// message of the new subscriptions overtakes the SUBACK. If the commit
	// fails, the connection is closed without SUBACK.
	ack := packet.Suback{PacketID: sp.PacketID, ReasonCodes: codes}
	tx := c.tx
	tx.thenOr(func() {
		sess.mu.Lock()
		defer sess.mu.Unlock()
		// Look the retained messages up before the SUBACK is queued: a
		// message the client publishes after seeing SUBACK must arrive
		// live only, not also as a retained one.
		retained := c.collectRetained(wantRetained)
		c.send(func(b []byte) []byte { return ack.Append(b, c.version) })
		now := time.Now().UnixNano()
		for _, d := range retained {
			sess.deliverLocked(d, tx, now)
		}
	}, func() { c.commitFailed = true })
	return nil
}

type retainedReq struct {
	filter string
	qos    byte
	id     uint32
}

// collectRetained returns the deliveries of the retained messages matching
// new subscriptions.
func (c *client) collectRetained(wantRetained []retainedReq) []Delivery {
	var out []Delivery
	now := time.Now().UnixNano()
	for _, r := range wantRetained {
		c.srv.retained.Match(r.filter, func(t string, m *Message) bool {
			if m.expired(now) {
				return true
			}
			if c.srv.auth != nil && !c.srv.auth.CanReceive(c.info(), t) {
				return true
			}
			d := Delivery{Msg: m, QoS: min(m.QoS, r.qos), Retain: true}
			if r.id != 0 {
				d.SubIDs = []uint32{r.id}
			}
			out = append(out, d)
			return true
		})
	}
	return out
}

// failCode maps a v5 failure reason to the 3.x SUBACK failure code.
func (c *client) failCode(code byte) byte {
	if c.version < packet.V5 {
		return packet.V3SubackFailure
	}
	return code
}

// checkSubscription validates one requested subscription and returns a
// failure reason code (>= 0x80) or 0.
func (c *client) checkSubscription(sub packet.Subscription) byte {
	o := &c.srv.opts
	if err := topic.ValidateFilter(sub.Filter, o.MaxTopicLen, o.MaxTopicLevels); err != nil {
		return c.failCode(packet.TopicFilterInvalid)
	}
	_, inner, shared := topic.ParseShared(sub.Filter)
	if shared && o.DisableSharedSubscriptions {
		return c.failCode(packet.SharedSubscriptionsNotSupported)
	}
	if hasWildcard(inner) && o.DisableWildcardSubscriptions {
		return c.failCode(packet.WildcardSubscriptionsNotSupported)
	}
	if c.srv.auth != nil && !c.srv.auth.CanSubscribe(c.info(), sub.Filter) {
		return c.failCode(packet.NotAuthorized)
	}
	return 0
}

func (c *client) handleUnsubscribe(h packet.FixedHeader, body []byte) error {
	var up packet.Unsubscribe
	if err := packet.DecodeUnsubscribe(&up, h.Flags, body, c.version); err != nil {
		return err
	}
	codes := make([]byte, len(up.Filters))
	sess := c.sess
	sess.mu.Lock()
	for i, f := range up.Filters {
		if _, ok := sess.subs[f]; ok {
			delete(sess.subs, f)
			c.srv.indexUnsubscribe(sess, f)
			if sess.persistentLocked() && c.tx.Durable() {
				c.tx.batch.DeleteSubscription(sess.id, f)
			}
			codes[i] = packet.Success
		} else {
			codes[i] = packet.NoSubscriptionExisted
		}
	}
	sess.mu.Unlock()
	ack := packet.Unsuback{PacketID: up.PacketID, ReasonCodes: codes}
	c.tx.thenOr(func() { c.send(func(b []byte) []byte { return ack.Append(b, c.version) }) }, func() { c.commitFailed = true })
	return nil
}
