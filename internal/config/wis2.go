package config

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// WIS2 is the wis2: section: the WIS2 Global Broker relay (docs/wis2.md).
// Without it the relay is off. Every key is documented with its default
// in docs/configuration.md.
type WIS2 struct {
	// CentreID is this Global Broker's centre-id: the report_by label of
	// the wmo_wis2_gb_* metrics and the source of its monitoring events.
	// It must end in -global-broker.
	CentreID string     `yaml:"centre_id"`
	Dedup    WIS2Dedup  `yaml:"dedup"`
	Checks   WIS2Checks `yaml:"checks"`
	// Sources are the remote brokers the relay subscribes to.
	Sources []WIS2Source `yaml:"sources"`
	// Workers process messages concurrently.
	Workers int `yaml:"workers"`
	// Redundancy is how many nodes of a cluster subscribe to each source
	// (the de-duplication store makes one republication per id out of
	// their copies); only 0, every node, is implemented.
	Redundancy int `yaml:"redundancy"`
}

// WIS2Dedup configures the de-duplication store.
type WIS2Dedup struct {
	// Backend is memory (one node) or redis.
	Backend string `yaml:"backend"`
	// TTL is how long a published notification id is remembered; Lease how
	// long a node holds an id it is publishing (a node that dies frees
	// its ids after this).
	TTL   time.Duration `yaml:"ttl"`
	Lease time.Duration `yaml:"lease"`
	// Redis: Addrs (host:port), Cluster for a Redis Cluster, credentials,
	// TLS and the key prefix.
	Addrs     []string `yaml:"addrs"`
	Cluster   bool     `yaml:"cluster"`
	Username  string   `yaml:"username"`
	Password  string   `yaml:"password"`
	TLS       bool     `yaml:"tls"`
	CAFile    string   `yaml:"ca_file"`
	KeyPrefix string   `yaml:"key_prefix"`
	// MaxEntries bounds the memory backend.
	MaxEntries int `yaml:"max_entries"`
	// MinReplicas makes a confirmation wait until that many Redis
	// replicas have it (WAIT), so that a failover cannot forget it; nil =
	// 1 with cluster, 0 otherwise.
	MinReplicas *int `yaml:"min_replicas"`
}

// WIS2Checks says what each check does with a failing message: discard
// (counted, reported, not published), verify (counted, reported,
// published anyway) or off.
type WIS2Checks struct {
	Topic    string `yaml:"topic"`
	Format   string `yaml:"format"`
	Metadata string `yaml:"metadata"`
	// TopicProfile: current (today's WIS2 Topic Hierarchy) or 2024 (the
	// rules of the WMO acceptance campaign).
	TopicProfile string `yaml:"topic_profile"`
	// CentreRegistry checks level 4 against the registered centre-ids;
	// CentreAllow adds centre-ids (patterns with *, e.g.
	// io-wis2dev-*-test).
	CentreRegistry bool     `yaml:"centre_registry"`
	CentreAllow    []string `yaml:"centre_allow"`
	// GTSGateway accepts the GTS-to-WIS2 gateways' topics (centre-ids
	// ending in -gts-to-wis2: levels 7 on are the GTS abbreviated heading
	// T1/T2/A1/A2/ii/CCCC); nil = true.
	GTSGateway *bool `yaml:"gts_gateway"`
	// Hierarchy replaces the embedded WIS2 Topic Hierarchy: a directory
	// laid out as the published bundle, or wth-bundle.zip (read at
	// start).
	Hierarchy string `yaml:"hierarchy"`
	// Schema replaces the notification schema check's rules with the
	// official WNM JSON Schema from this file.
	Schema string `yaml:"schema"`
	// MetadataFile lists the registered (metadata_id, topic) pairs for
	// the metadata check, read again every MetadataRefresh.
	MetadataFile    string        `yaml:"metadata_file"`
	MetadataRefresh time.Duration `yaml:"metadata_refresh"`
}

// WIS2Source is one remote broker.
type WIS2Source struct {
	// CentreID is the source's centre-id (the centre_id label; a WIS2
	// Node may only publish under it).
	CentreID string `yaml:"centre_id"`
	// Kind is node, cache or broker ("" = from the centre-id:
	// *-global-cache, *-global-broker, otherwise node).
	Kind string `yaml:"kind"`
	// URL is mqtt://, mqtts://, ws:// or wss://host:port[/path].
	URL      string `yaml:"url"`
	Username string `yaml:"username"`
	Password string `yaml:"password"`
	// Topics subscribed (QoS 1); default by kind: a node
	// origin/a/wis2/<centre-id>/#, a cache cache/a/wis2/#, a broker both.
	Topics []string `yaml:"topics"`
	// Version is the MQTT protocol version: 5 or 4 (3.1.1).
	Version int `yaml:"version"`
	// ClientID ("" = <node name>-<centre-id>).
	ClientID string `yaml:"client_id"`
	// TLS: a CA file for the server certificate (default: the system's),
	// a client certificate and key, and (for tests only) skipping the
	// server certificate check.
	CAFile             string `yaml:"ca_file"`
	CertFile           string `yaml:"cert_file"`
	KeyFile            string `yaml:"key_file"`
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify"`
}

func (c *Config) validateWIS2() error {
	w := c.WIS2
	if w.CentreID == "" {
		return errors.New("wis2.centre_id: required")
	}
	if !strings.HasSuffix(w.CentreID, "-global-broker") {
		return fmt.Errorf("wis2.centre_id: %q must end in -global-broker", w.CentreID)
	}
	d := &w.Dedup
	switch d.Backend {
	case "":
		d.Backend = "memory"
	case "memory", "redis":
	default:
		return fmt.Errorf("wis2.dedup.backend: %q is not memory or redis", d.Backend)
	}
	if d.TTL == 0 {
		d.TTL = time.Hour
	}
	if d.Lease == 0 {
		d.Lease = 10 * time.Second
	}
	if d.TTL < 0 || d.Lease < 0 {
		return errors.New("wis2.dedup: ttl and lease must be positive")
	}
	if d.Backend == "redis" && len(d.Addrs) == 0 {
		return errors.New("wis2.dedup.addrs: required with backend redis")
	}
	if d.Backend == "memory" && c.Cluster != nil {
		return errors.New("wis2.dedup: backend memory de-duplicates on one node only: in a cluster every node relays, use backend redis")
	}
	if d.MinReplicas == nil {
		n := 0
		if d.Cluster {
			n = 1
		}
		d.MinReplicas = &n
	}
	if *d.MinReplicas < 0 {
		return errors.New("wis2.dedup.min_replicas: must not be negative")
	}
	if d.MaxEntries == 0 {
		d.MaxEntries = 1_000_000
	}
	if d.KeyPrefix == "" {
		d.KeyPrefix = "isobar:wis2:dedup:"
	}
	ch := &w.Checks
	for _, v := range []struct {
		key string
		p   *string
		def string
	}{{"topic", &ch.Topic, "discard"}, {"format", &ch.Format, "discard"}, {"metadata", &ch.Metadata, "off"}} {
		switch *v.p {
		case "":
			*v.p = v.def
		case "discard", "verify", "off":
		default:
			return fmt.Errorf("wis2.checks.%s: %q is not discard, verify or off", v.key, *v.p)
		}
	}
	switch ch.TopicProfile {
	case "":
		ch.TopicProfile = "current"
	case "current", "2024":
	default:
		return fmt.Errorf("wis2.checks.topic_profile: %q is not current or 2024", ch.TopicProfile)
	}
	if ch.GTSGateway == nil {
		on := true
		ch.GTSGateway = &on
	}
	if ch.Metadata != "off" && ch.MetadataFile == "" {
		return errors.New("wis2.checks.metadata_file: required when the metadata check is on")
	}
	if ch.MetadataRefresh == 0 {
		ch.MetadataRefresh = 10 * time.Minute
	}
	if w.Workers == 0 {
		w.Workers = 16
	}
	if w.Workers < 0 {
		return errors.New("wis2.workers: must not be negative")
	}
	if w.Redundancy != 0 {
		return errors.New("wis2.redundancy: only 0 (every node subscribes to every source) is implemented")
	}
	seen := map[string]bool{}
	for i := range w.Sources {
		s := &w.Sources[i]
		if s.CentreID == "" {
			return fmt.Errorf("wis2.sources[%d].centre_id: required", i)
		}
		if seen[s.CentreID] {
			return fmt.Errorf("wis2.sources[%d].centre_id: %q appears twice", i, s.CentreID)
		}
		seen[s.CentreID] = true
		switch s.Kind {
		case "", "node", "cache", "broker":
		default:
			return fmt.Errorf("wis2.sources[%d].kind: %q is not node, cache or broker", i, s.Kind)
		}
		u, err := url.Parse(s.URL)
		if err != nil || u.Host == "" {
			return fmt.Errorf("wis2.sources[%d].url: %q is not a broker URL (mqtt://, mqtts://, ws://, wss://host:port)", i, s.URL)
		}
		switch u.Scheme {
		case "mqtt", "mqtts", "ws", "wss", "tcp", "ssl":
		default:
			return fmt.Errorf("wis2.sources[%d].url: scheme %q is not mqtt, mqtts, ws or wss", i, u.Scheme)
		}
		switch s.Version {
		case 0:
			s.Version = 5
		case 4, 5:
		default:
			return fmt.Errorf("wis2.sources[%d].version: %d is not 4 (3.1.1) or 5", i, s.Version)
		}
		if (s.CertFile == "") != (s.KeyFile == "") {
			return fmt.Errorf("wis2.sources[%d]: cert_file and key_file go together", i)
		}
	}
	return nil
}
