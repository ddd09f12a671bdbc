package relay

import "github.com/prometheus/client_golang/prometheus"

// metrics: the WIS2 metric hierarchy's Global Broker metrics
// (wmo_wis2_gb_*, labels centre_id = the source, report_by = this Global
// Broker), and the relay's own (isobar_wis2_relay_*).
type metrics struct {
	received, published, invalidTopic, invalidFormat, noMetadata *prometheus.CounterVec
	connected, lastMessage                                       *prometheus.GaugeVec

	foreign, duplicates *prometheus.CounterVec
	events              *prometheus.CounterVec
	dedupErrors         prometheus.Counter
	retries             prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	gb := []string{"centre_id", "report_by"}
	m := &metrics{
		received: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "wmo_wis2_gb_messages_received_total",
			Help: "Number of messages received by broker"}, gb),
		published: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "wmo_wis2_gb_messages_published_total",
			Help: "Number of messages published by broker"}, gb),
		invalidTopic: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "wmo_wis2_gb_messages_invalid_topic_total",
			Help: "Number of messages received on an invalid topic from centre"}, gb),
		invalidFormat: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "wmo_wis2_gb_messages_invalid_format_total",
			Help: "Number of invalid messages from centre"}, gb),
		noMetadata: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "wmo_wis2_gb_messages_no_metadata_total",
			Help: "Number of messages received without corresponding metadata from centre"}, gb),
		connected: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "wmo_wis2_gb_connected_flag",
			Help: "Connection status from broker to centre"}, gb),
		lastMessage: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "wmo_wis2_gb_last_message_timestamp_seconds",
			Help: "Timestamp of last message received from centre"}, gb),
		foreign: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "isobar_wis2_relay_foreign_dropped_total",
			Help: "Messages a WIS2 Node sent under another centre's topic: neither relayed nor counted as received."}, gb),
		duplicates: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "isobar_wis2_relay_duplicates_total",
			Help: "Valid messages dropped because a copy with their id was published already."}, gb),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "isobar_wis2_relay_monitoring_events_total",
			Help: "WIS2 Monitoring Events published about discarded messages, by reason."}, []string{"reason"}),
		dedupErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "isobar_wis2_relay_dedup_errors_total",
			Help: "De-duplication store calls that failed (the message is retried, never dropped)."}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{Name: "isobar_wis2_relay_retries_total",
			Help: "Messages processed again later (store errors, ids held by another publisher, local publish failures)."}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.received, m.published, m.invalidTopic, m.invalidFormat, m.noMetadata,
		m.connected, m.lastMessage, m.foreign, m.duplicates, m.events, m.dedupErrors, m.retries} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
