package node

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/isobar-mq/isobar/internal/config"
	"github.com/isobar-mq/isobar/internal/mqtt/client"
	"github.com/isobar-mq/isobar/internal/wis2"
	"github.com/isobar-mq/isobar/internal/wis2/dedup"
	"github.com/isobar-mq/isobar/internal/wis2/relay"
)

// startWIS2 starts the WIS2 Global Broker relay of the wis2: section.
func (n *Node) startWIS2(cfg *config.Config) error {
	w := cfg.WIS2
	log := n.log.With("component", "wis2")
	h := wis2.EmbeddedHierarchy()
	if w.Checks.Hierarchy != "" {
		var err error
		if h, err = wis2.LoadHierarchy(w.Checks.Hierarchy); err != nil {
			return fmt.Errorf("wis2.checks.hierarchy: %w", err)
		}
	}
	var schema []byte
	if w.Checks.Schema != "" {
		var err error
		if schema, err = os.ReadFile(w.Checks.Schema); err != nil {
			return fmt.Errorf("wis2.checks.schema: %w", err)
		}
	}
	v, err := wis2.NewValidator(schema)
	if err != nil {
		return fmt.Errorf("wis2.checks.schema: %w", err)
	}
	tc := wis2.TopicCheck{Profile: wis2.Profile(w.Checks.TopicProfile),
		Centres:    wis2.CentrePolicy{Registry: w.Checks.CentreRegistry, Allow: w.Checks.CentreAllow},
		GTSGateway: *w.Checks.GTSGateway}
	if err := tc.Validate(); err != nil {
		return fmt.Errorf("wis2.checks: %w", err)
	}
	deps := relay.Deps{
		Broker:    n.Server,
		Topics:    topicChecker{h: h, c: tc},
		Format:    formatChecker{v},
		EncodeWME: encodeWME,
	}
	if w.Checks.Metadata != "off" {
		reg, err := wis2.LoadMetadataRegistry(w.Checks.MetadataFile)
		if err != nil {
			return fmt.Errorf("wis2.checks.metadata_file: %w", err)
		}
		deps.Metadata = reg
	}
	var store dedup.Store
	switch w.Dedup.Backend {
	case "redis":
		var tlsc *tls.Config
		if w.Dedup.TLS {
			if tlsc, err = clientTLS(w.Dedup.CAFile, "", "", false); err != nil {
				return fmt.Errorf("wis2.dedup: %w", err)
			}
		}
		rs, err := dedup.NewRedis(dedup.RedisOptions{Addrs: w.Dedup.Addrs, Cluster: w.Dedup.Cluster,
			Username: w.Dedup.Username, Password: w.Dedup.Password, TLS: tlsc, KeyPrefix: w.Dedup.KeyPrefix,
			MinReplicas: *w.Dedup.MinReplicas, Log: log, Registerer: n.reg})
		if err != nil {
			return fmt.Errorf("wis2.dedup: %w", err)
		}
		store = rs
	default:
		store = dedup.NewMemory(dedup.MemoryOptions{MaxEntries: w.Dedup.MaxEntries})
	}
	deps.Dedup = dedupAdapter{store}
	deps.Sources = n.wis2Source(w, log)
	var srcs []relay.SourceConfig
	for _, s := range w.Sources {
		srcs = append(srcs, relay.SourceConfig{CentreID: s.CentreID, Kind: relay.Kind(s.Kind), Topics: s.Topics, Opaque: s})
	}
	r, err := relay.New(relay.Config{CentreID: w.CentreID, Sources: srcs,
		TopicMode: relay.Mode(w.Checks.Topic), FormatMode: relay.Mode(w.Checks.Format), MetadataMode: relay.Mode(w.Checks.Metadata),
		DedupTTL: w.Dedup.TTL, DedupLease: w.Dedup.Lease, Workers: w.Workers, Log: log, Registerer: n.reg}, deps)
	if err != nil {
		_ = store.Close()
		return err
	}
	if err := r.Start(); err != nil {
		_ = store.Close()
		return err
	}
	n.WIS2 = r
	n.wis2Store = store
	log.Info("wis2 relay started", "centre_id", w.CentreID, "sources", len(w.Sources), "dedup", w.Dedup.Backend)
	return nil
}

// stopWIS2 stops the relay, then its de-duplication store.
func (n *Node) stopWIS2() error {
	if n.WIS2 == nil {
		return nil
	}
	err := n.WIS2.Close()
	if n.wis2Store != nil {
		err = errors.Join(err, n.wis2Store.Close())
	}
	return err
}

// wis2Source makes the relay's sources: MQTT clients (persistent
// sessions, QoS 1 subscriptions, acknowledged when the relay is done).
func (n *Node) wis2Source(w *config.WIS2, log interface{ Info(string, ...any) }) relay.SourceFactory {
	return func(sc relay.SourceConfig, h relay.SourceHooks) (relay.Source, error) {
		s := sc.Opaque.(config.WIS2Source)
		id := s.ClientID
		if id == "" {
			id = n.name + "-" + s.CentreID
		}
		var tlsc *tls.Config
		if s.CAFile != "" || s.CertFile != "" || s.InsecureSkipVerify {
			var err error
			if tlsc, err = clientTLS(s.CAFile, s.CertFile, s.KeyFile, s.InsecureSkipVerify); err != nil {
				return nil, err
			}
		}
		var subs []client.Subscription
		for _, t := range sc.Topics {
			subs = append(subs, client.Subscription{Filter: t, QoS: 1})
		}
		c, err := client.New(client.Config{
			URL: s.URL, Version: byte(s.Version), ClientID: id, SessionExpiry: 3600,
			Username: s.Username, Password: s.Password, TLS: tlsc,
			KeepAlive: 15 * time.Second, Subscriptions: subs,
			Handler: func(m *client.Message) {
				h.Message(relay.Inbound{Topic: m.Topic, Payload: m.Payload, Ack: m.Ack})
			},
			OnConnect:        func(bool) { h.Up() },
			OnConnectionLost: h.Down,
			Log:              n.log.With("component", "wis2", "source", s.CentreID),
		})
		if err != nil {
			return nil, err
		}
		return c, nil
	}
}

// clientTLS builds a client TLS configuration.
func clientTLS(caFile, certFile, keyFile string, insecure bool) (*tls.Config, error) {
	c := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: insecure} //nolint:gosec // explicit test-only option
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s: no PEM certificate", caFile)
		}
		c.RootCAs = pool
	}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, err
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}

type topicChecker struct {
	h *wis2.Hierarchy
	c wis2.TopicCheck
}

func (t topicChecker) CheckTopic(topic string) (string, bool, error) {
	info, err := t.h.Check(topic, t.c)
	return info.CentreID, info.Metadata, err
}

type formatChecker struct{ v *wis2.Validator }

func (f formatChecker) CheckFormat(p []byte) (string, string, error) {
	n, err := f.v.Check(p)
	return n.ID, n.MetadataID, err
}

type dedupAdapter struct{ s dedup.Store }

func (d dedupAdapter) Claim(ctx context.Context, id string, lease time.Duration) (relay.ClaimResult, string, error) {
	r, t, err := d.s.Claim(ctx, id, lease)
	switch r {
	case dedup.Published:
		return relay.Published, string(t), err
	case dedup.Leased:
		return relay.Leased, string(t), err
	}
	return relay.Claimed, string(t), err
}

func (d dedupAdapter) Confirm(ctx context.Context, id, token string, ttl time.Duration) error {
	err := d.s.Confirm(ctx, id, dedup.Token(token), ttl)
	if errors.Is(err, dedup.ErrNotReplicated) || errors.Is(err, dedup.ErrNotHolder) {
		// Marked on the primary (no replica attached or one lagging), or
		// taken over by another holder after our lease: nothing a retry
		// can improve.
		return nil
	}
	return err
}

func (d dedupAdapter) Release(ctx context.Context, id, token string) error {
	return d.s.Release(ctx, id, dedup.Token(token))
}

// encodeWME builds the WIS2 Monitoring Event about a discarded message:
// on monitor/a/wis2/<centre-id the message was about> (level 4 of its
// topic; the source's centre-id when the topic has none).
func encodeWME(reportBy string, e relay.Event) (string, []byte, error) {
	ev := wis2.NewDiscardEvent(reportBy, e.Topic, e.Payload, wis2.Notification{ID: e.ID}, e.Err)
	if e.Reason == "no_metadata" {
		ev.Reason = wis2.ReasonNoMetadata
		ev.Errors = []wis2.Detail{{Message: e.Detail}}
	}
	if ev.About == "" {
		ev.About = e.Source
	}
	b, err := ev.JSON()
	return ev.Topic(), b, err
}
