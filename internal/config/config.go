// Package config loads Isobar's YAML configuration file. Parsing is
// strict: an unknown key is an error naming the key and its line. Every key
// is documented, with its default, in docs/configuration.md.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/isobar-mq/isobar/internal/auth"
	"github.com/isobar-mq/isobar/internal/broker"
	"github.com/isobar-mq/isobar/internal/listener"
	"github.com/isobar-mq/isobar/internal/web"
)

// Config is the whole configuration file.
type Config struct {
	NodeName        string            `yaml:"node_name"`
	Log             Log               `yaml:"log"`
	Listeners       []listener.Config `yaml:"listeners"`
	MQTT            MQTT              `yaml:"mqtt"`
	Auth            Auth              `yaml:"auth"`
	Store           Store             `yaml:"store"`
	ShutdownTimeout time.Duration     `yaml:"shutdown_timeout"`
	// HTTP is the console, REST API, /metrics and health listener.
	HTTP web.Config `yaml:"http"`
	// SysInterval is the $SYS/broker/... update interval (0 disables).
	SysInterval time.Duration `yaml:"sys_interval"`
	// Cluster, when the section is present, makes this node a member of
	// a cluster; nil = a single node.
	Cluster *ClusterConfig `yaml:"cluster"`
	// Stomp configures the STOMP gateway (listeners with protocol stomp
	// or stomp-ws).
	Stomp Stomp `yaml:"stomp"`
	// WIS2 configures the WIS2 Global Broker relay (nil: off).
	WIS2 *WIS2 `yaml:"wis2"`
	// Bridges are the outgoing links to other brokers (docs/bridges.md).
	Bridges []Bridge `yaml:"bridges"`
}

// ClusterConfig is the cluster: section (see docs/configuration.md). Zero
// values are replaced by the defaults (DefaultClusterConfig) in Validate.
type ClusterConfig struct {
	// Bind is the ip:port of the cluster port: UDP gossip, and on TCP
	// both gossip streams and node links.
	Bind string `yaml:"bind"`
	// Advertise is the ip:port the other nodes reach this one at (""
	// = Bind; required when Bind is a wildcard address).
	Advertise string `yaml:"advertise"`
	// Seeds: host:port (an IP or a DNS name) or _service._proto.name SRV
	// names.
	Seeds      []string   `yaml:"seeds"`
	SecretFile string     `yaml:"secret_file"`
	TLS        ClusterTLS `yaml:"tls"`

	ProbeInterval  time.Duration `yaml:"probe_interval"`
	ProbeTimeout   time.Duration `yaml:"probe_timeout"`
	SuspicionMult  int           `yaml:"suspicion_mult"`
	GossipInterval time.Duration `yaml:"gossip_interval"`

	// LinkQueueBytes is the outbound buffer of each node link.
	LinkQueueBytes int64 `yaml:"link_queue_bytes"`
	// MaxFrameSize is the largest node-link frame body accepted.
	MaxFrameSize int64 `yaml:"max_frame_size"`
	// ClaimTimeout is how long a CONNECT waits for the other nodes'
	// answers about its client identifier.
	ClaimTimeout time.Duration `yaml:"claim_timeout"`
	// DrainTimeout bounds a graceful leave (handing sessions over).
	DrainTimeout time.Duration `yaml:"drain_timeout"`
	// Shutdown is what SIGTERM/SIGINT do: "drain" (hand sessions to the
	// other nodes, then leave) or "leave" (leave, keep sessions on disk
	// for this node's restart).
	Shutdown string `yaml:"shutdown"`
	// AckTimeout bounds how long a QoS 1/2 publish waits for the nodes
	// with matching interest to take the message.
	AckTimeout time.Duration `yaml:"ack_timeout"`
	// Replicas is how many other nodes keep a copy of each persistent
	// session (nil = 1; 0 turns replication off).
	Replicas *int `yaml:"replicas"`
	// Ack is "replicated" (a QoS 1/2 message for a replicated session is
	// acknowledged once the owner and its replicas have it) or "local".
	Ack string `yaml:"ack"`
}

// ReplicaCount is the configured number of replicas (default 1).
func (c *ClusterConfig) ReplicaCount() int {
	if c.Replicas == nil {
		return 1
	}
	return *c.Replicas
}

// ClusterTLS is mutual TLS for node links: all three files or none.
type ClusterTLS struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	CAFile   string `yaml:"ca_file"`
}

// Enabled reports whether the node links use TLS.
func (t ClusterTLS) Enabled() bool { return t.CertFile != "" }

// DefaultClusterConfig is what a present but empty cluster: section means
// (secret_file still has to be set).
func DefaultClusterConfig() ClusterConfig {
	return ClusterConfig{
		Bind:           "127.0.0.1:7946",
		ProbeInterval:  time.Second,
		ProbeTimeout:   500 * time.Millisecond,
		SuspicionMult:  4,
		GossipInterval: 200 * time.Millisecond,
		LinkQueueBytes: 64 << 20,
		MaxFrameSize:   64 << 20,
		ClaimTimeout:   2 * time.Second,
		DrainTimeout:   30 * time.Second,
		Shutdown:       "drain",
		AckTimeout:     10 * time.Second,
		Ack:            "replicated",
	}
}

// Store configures durable state.
type Store struct {
	// Mode is "pebble" (durable, in DataDir) or "memory" (nothing
	// survives a restart).
	Mode         string        `yaml:"mode"`
	DataDir      string        `yaml:"data_dir"`
	Sync         string        `yaml:"sync"` // always or interval
	SyncInterval time.Duration `yaml:"sync_interval"`
	// MinFreeBytes is the free-space floor of the data directory's file
	// system: below it durable writes are refused (0 = no floor).
	MinFreeBytes int64 `yaml:"min_free_bytes"`
}

// Log configures logging.
type Log struct {
	Level  string `yaml:"level"`  // debug, info, warn, error
	Format string `yaml:"format"` // text or json
}

// MQTT holds protocol limits and features (see broker.Options).
type MQTT struct {
	MaxPacketSize             uint32        `yaml:"max_packet_size"`
	ReceiveMaximum            uint16        `yaml:"receive_maximum"`
	MaxInflight               int           `yaml:"max_inflight"`
	MaxQueuedMessages         int           `yaml:"max_queued_messages"`
	QueueQoS0                 bool          `yaml:"queue_qos0"`
	MaxClientIDLength         int           `yaml:"max_client_id_length"`
	MaxTopicLength            int           `yaml:"max_topic_length"`
	MaxTopicLevels            int           `yaml:"max_topic_levels"`
	MaxConnections            int           `yaml:"max_connections"`
	MaxKeepAlive              uint16        `yaml:"max_keepalive"`
	TopicAliasMaximum         uint16        `yaml:"topic_alias_maximum"`
	MaxQoS                    int           `yaml:"max_qos"`
	RetainAvailable           bool          `yaml:"retain_available"`
	WildcardSubscriptions     bool          `yaml:"wildcard_subscriptions"`
	SubscriptionIdentifiers   bool          `yaml:"subscription_identifiers"`
	SharedSubscriptions       bool          `yaml:"shared_subscriptions"`
	MaxSessionExpiry          uint32        `yaml:"max_session_expiry"`
	PersistentSessionExpiry   uint32        `yaml:"persistent_session_expiry"`
	MaxPendingBytes           int           `yaml:"max_pending_bytes"`
	WriteTimeout              time.Duration `yaml:"write_timeout"`
	ConnectTimeout            time.Duration `yaml:"connect_timeout"`
	MaxSubscriptionsPerClient int           `yaml:"max_subscriptions_per_client"`
	ConnectionRate            float64       `yaml:"connection_rate"`
	ConnectionBurst           int           `yaml:"connection_burst"`
	PublishRate               float64       `yaml:"publish_rate"`
	PublishBurst              int           `yaml:"publish_burst"`
	PublishByteRate           float64       `yaml:"publish_byte_rate"`
	PublishByteBurst          int           `yaml:"publish_byte_burst"`
	MaxFiltersPerSubscribe    int           `yaml:"max_filters_per_subscribe"`
	MaxConnectSize            uint32        `yaml:"max_connect_size"`
	MaxQueuedBytes            int64         `yaml:"max_queued_bytes"`
	MaxQueuedBytesTotal       int64         `yaml:"max_queued_bytes_total"`
	AllowForeignTakeover      bool          `yaml:"allow_foreign_takeover"`
}

// Auth configures authentication and authorization.
type Auth struct {
	AllowAnonymous bool                `yaml:"allow_anonymous"`
	PasswordFile   string              `yaml:"password_file"`
	ACLFile        string              `yaml:"acl_file"`
	ACL            []ACLRule           `yaml:"acl"`
	ACLDefault     string              `yaml:"acl_default"`     // deny (default) or allow
	SubscribeCheck string              `yaml:"subscribe_check"` // filter (default) or none
	ReadOnly       *auth.ReadOnlyRole  `yaml:"read_only"`
	Throttle       auth.ThrottleConfig `yaml:"throttle"`
}

// ACLRule is one authorization rule in YAML form (Mosquitto ACL semantics:
// see docs/configuration.md).
type ACLRule struct {
	User    string `yaml:"user"`    // empty: anonymous clients (unless pattern)
	Pattern bool   `yaml:"pattern"` // topic may use %u and %c; applies to all clients
	Access  string `yaml:"access"`  // read, write, readwrite (default), deny
	Topic   string `yaml:"topic"`
}

// Default returns the configuration used when no file is given: one MQTT
// listener on 127.0.0.1:1883, anonymous access allowed.
func Default() *Config {
	return &Config{
		NodeName: hostname(),
		Log:      Log{Level: "info", Format: "text"},
		Listeners: []listener.Config{
			{Name: "mqtt", Protocol: "mqtt", Address: "127.0.0.1:1883"},
		},
		MQTT: MQTT{
			MaxPacketSize:             1 << 20,
			MaxTopicLevels:            128,
			MaxSubscriptionsPerClient: 10000,
			MaxFiltersPerSubscribe:    100,
			MaxConnectSize:            64 << 10,
			MaxQueuedBytes:            64 << 20,
			MaxQueuedBytesTotal:       2 << 30,
			ReceiveMaximum:            20,
			MaxInflight:               20,
			MaxQueuedMessages:         1000,
			MaxClientIDLength:         65535,
			MaxTopicLength:            65535,
			MaxKeepAlive:              65535,
			TopicAliasMaximum:         10,
			MaxQoS:                    2,
			RetainAvailable:           true,
			WildcardSubscriptions:     true,
			SubscriptionIdentifiers:   true,
			SharedSubscriptions:       true,
			MaxPendingBytes:           8 << 20,
			WriteTimeout:              10 * time.Second,
			ConnectTimeout:            10 * time.Second,
		},
		Auth:            Auth{AllowAnonymous: true},
		Store:           Store{Mode: "pebble", DataDir: "./data", Sync: "always", SyncInterval: time.Second, MinFreeBytes: 64 << 20},
		ShutdownTimeout: 5 * time.Second,
		HTTP:            web.DefaultConfig(),
		SysInterval:     10 * time.Second,
		Stomp:           DefaultStomp(),
	}
}

func hostname() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "isobar"
	}
	return h
}

// Load reads and validates a configuration file.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	cfg, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

// Parse decodes YAML over the defaults, strictly, and validates the result.
// A listeners list in the file replaces the default listener.
func Parse(data []byte) (*Config, error) {
	cfg := Default()
	cfg.Listeners = nil
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil && !errors.Is(err, io.EOF) {
		return nil, cleanYAMLError(err)
	}
	var extra any
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, errors.New("only one YAML document is allowed")
	}
	if cfg.Listeners == nil {
		cfg.Listeners = Default().Listeners
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

func cleanYAMLError(err error) error {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		// yaml.v3 reports unknown keys as "line N: field X not found in type
		// config.Y"; say it in the user's terms.
		msgs := make([]string, len(te.Errors))
		for i, m := range te.Errors {
			m = strings.Replace(m, "field ", "unknown key ", 1)
			if i := strings.Index(m, " not found in type "); i >= 0 {
				m = m[:i]
			}
			msgs[i] = m
		}
		return errors.New(strings.Join(msgs, "; "))
	}
	return err
}

// Validate checks values that YAML typing cannot.
func (c *Config) Validate() error {
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("log.level: %q is not one of debug, info, warn, error", c.Log.Level)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		return fmt.Errorf("log.format: %q is not text or json", c.Log.Format)
	}
	if len(c.Listeners) == 0 {
		return errors.New("listeners: at least one listener is required")
	}
	names := map[string]bool{}
	for i := range c.Listeners {
		l := &c.Listeners[i]
		if l.Name == "" {
			l.Name = fmt.Sprintf("%s-%d", l.Protocol, i)
		}
		if names[l.Name] {
			return fmt.Errorf("listeners[%d]: duplicate name %q", i, l.Name)
		}
		names[l.Name] = true
		if err := l.Validate(); err != nil {
			return fmt.Errorf("listeners[%d] (%s): %w", i, l.Name, err)
		}
	}
	m := &c.MQTT
	if m.MaxQoS < 0 || m.MaxQoS > 2 {
		return fmt.Errorf("mqtt.max_qos: %d is not 0, 1 or 2", m.MaxQoS)
	}
	if m.ReceiveMaximum == 0 {
		return errors.New("mqtt.receive_maximum: must be at least 1")
	}
	if m.MaxInflight < 1 || m.MaxInflight > 65535 {
		return fmt.Errorf("mqtt.max_inflight: %d is not in 1..65535", m.MaxInflight)
	}
	if m.MaxQueuedMessages < 1 {
		return errors.New("mqtt.max_queued_messages: must be at least 1")
	}
	if m.MaxPacketSize != 0 && m.MaxPacketSize < 64 {
		return fmt.Errorf("mqtt.max_packet_size: %d is too small (minimum 64)", m.MaxPacketSize)
	}
	if m.MaxConnectSize < 256 {
		return fmt.Errorf("mqtt.max_connect_size: %d is too small (minimum 256)", m.MaxConnectSize)
	}
	for _, v := range []struct {
		key string
		n   int64
	}{{"max_topic_levels", int64(m.MaxTopicLevels)}, {"max_subscriptions_per_client", int64(m.MaxSubscriptionsPerClient)},
		{"max_filters_per_subscribe", int64(m.MaxFiltersPerSubscribe)}, {"max_queued_bytes", m.MaxQueuedBytes},
		{"max_queued_bytes_total", m.MaxQueuedBytesTotal}} {
		if v.n < 0 {
			return fmt.Errorf("mqtt.%s: must not be negative (0 = no limit)", v.key)
		}
	}
	if m.MaxKeepAlive == 0 {
		return errors.New("mqtt.max_keepalive: must be at least 1 (65535 = no cap)")
	}
	switch c.Store.Mode {
	case "pebble":
		if c.Store.DataDir == "" {
			return errors.New("store.data_dir: required with mode pebble")
		}
	case "memory":
	default:
		return fmt.Errorf("store.mode: %q is not pebble or memory", c.Store.Mode)
	}
	switch c.Store.Sync {
	case "always", "interval":
	default:
		return fmt.Errorf("store.sync: %q is not always or interval", c.Store.Sync)
	}
	if c.Store.SyncInterval <= 0 {
		return errors.New("store.sync_interval: must be positive")
	}
	if c.Store.MinFreeBytes < 0 {
		return errors.New("store.min_free_bytes: must not be negative (0 disables the floor)")
	}
	if m.MaxQueuedMessages+m.MaxInflight > 65535 {
		return fmt.Errorf("mqtt.max_queued_messages + mqtt.max_inflight = %d: at most 65535 (queued QoS 1/2 messages hold a packet identifier)", m.MaxQueuedMessages+m.MaxInflight)
	}
	if err := c.HTTP.Validate(); err != nil {
		return err
	}
	if c.SysInterval < 0 {
		return errors.New("sys_interval: must not be negative (0 disables $SYS)")
	}
	if c.Cluster != nil {
		if err := c.validateCluster(); err != nil {
			return err
		}
	}
	if err := c.validateStomp(); err != nil {
		return err
	}
	if c.WIS2 != nil {
		if err := c.validateWIS2(); err != nil {
			return err
		}
	}
	if err := c.validateBridges(); err != nil {
		return err
	}
	for i, r := range c.Auth.ACL {
		switch r.Access {
		case "", "read", "write", "readwrite", "deny":
		default:
			return fmt.Errorf("auth.acl[%d]: access %q is not read, write, readwrite or deny", i, r.Access)
		}
		if r.Topic == "" {
			return fmt.Errorf("auth.acl[%d]: topic is required", i)
		}
	}
	return nil
}

// BrokerOptions maps the configuration onto broker.Options.
func (c *Config) BrokerOptions() broker.Options {
	m := &c.MQTT
	o := broker.Options{
		NodeName:                       c.NodeName,
		MaxPacketSize:                  m.MaxPacketSize,
		ReceiveMaximum:                 m.ReceiveMaximum,
		MaxInflight:                    m.MaxInflight,
		MaxQueued:                      m.MaxQueuedMessages,
		QueueQoS0:                      m.QueueQoS0,
		MaxClientIDLen:                 m.MaxClientIDLength,
		MaxTopicLen:                    m.MaxTopicLength,
		MaxTopicLevels:                 m.MaxTopicLevels,
		MaxConnections:                 m.MaxConnections,
		MaxKeepAlive:                   m.MaxKeepAlive,
		TopicAliasMaximum:              int(m.TopicAliasMaximum),
		MaxQoS:                         m.MaxQoS,
		DisableRetain:                  !m.RetainAvailable,
		DisableWildcardSubscriptions:   !m.WildcardSubscriptions,
		DisableSubscriptionIdentifiers: !m.SubscriptionIdentifiers,
		DisableSharedSubscriptions:     !m.SharedSubscriptions,
		MaxSessionExpiry:               m.MaxSessionExpiry,
		PersistentSessionExpiry:        m.PersistentSessionExpiry,
		MaxPendingBytes:                m.MaxPendingBytes,
		WriteTimeout:                   m.WriteTimeout,
		ConnectTimeout:                 m.ConnectTimeout,
		ShutdownTimeout:                c.ShutdownTimeout,
		MaxSubscriptionsPerClient:      m.MaxSubscriptionsPerClient,
		ConnectionRate:                 m.ConnectionRate,
		ConnectionBurst:                m.ConnectionBurst,
		PublishRate:                    m.PublishRate,
		PublishBurst:                   m.PublishBurst,
		PublishByteRate:                m.PublishByteRate,
		PublishByteBurst:               m.PublishByteBurst,
		MaxFiltersPerSubscribe:         m.MaxFiltersPerSubscribe,
		MaxConnectSize:                 m.MaxConnectSize,
		MaxQueuedBytes:                 m.MaxQueuedBytes,
		MaxQueuedBytesTotal:            m.MaxQueuedBytesTotal,
		AllowForeignTakeover:           m.AllowForeignTakeover,
		Listeners:                      map[string]broker.ListenerLimits{},
	}
	// In the file, 0 means "no limit"; broker.Options uses 0 for "the
	// default" and a negative value (or the protocol maximum) for none.
	if m.MaxPacketSize == 0 {
		o.MaxPacketSize = broker.MaxPacketSizeUnlimited
	}
	for _, f := range []*int{&o.MaxTopicLevels, &o.MaxSubscriptionsPerClient, &o.MaxFiltersPerSubscribe} {
		if *f == 0 {
			*f = -1
		}
	}
	for _, f := range []*int64{&o.MaxQueuedBytes, &o.MaxQueuedBytesTotal} {
		if *f == 0 {
			*f = -1
		}
	}
	for _, l := range c.Listeners {
		o.Listeners[l.Name] = broker.ListenerLimits{MaxConnections: l.MaxConnections}
	}
	if m.TopicAliasMaximum == 0 {
		o.TopicAliasMaximum = -1
	}
	if m.MaxQoS == 0 {
		o.MaxQoS = -1
	}
	if c.Cluster != nil {
		o.HoldTimeout = c.Cluster.AckTimeout
	}
	return o
}
