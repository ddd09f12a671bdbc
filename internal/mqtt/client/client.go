// Package client is an MQTT 3.1.1 and 5.0 client built on Isobar's own codec
// (internal/mqtt/packet), for bridges and the WIS2 relay. It connects over
// TCP, TLS, WebSocket or secure WebSocket, keeps the connection alive and
// reconnects with exponential backoff and full jitter.
//
// # Delivery
//
// Inbound messages go to Config.Handler in the order they arrive, from the
// read loop. A QoS 1 or 2 message is acknowledged (PUBACK, or PUBREC for QoS
// 2) only when Message.Ack is called, and acknowledgements go out in arrival
// order whatever order Ack is called in, so the server never considers a
// message delivered before the application took it over. An inbound QoS 2
// message is handed to the Handler once per packet identifier until the
// server releases it (PUBREL), also across a reconnection with the session
// present: a duplicate is acknowledged when the first copy is.
//
// Outbound QoS 1 and 2 messages stay in flight, in the client, until the
// server acknowledges them (PUBACK, or PUBREC then PUBCOMP). After a
// reconnection they are sent again, with DUP set (or, past PUBREC, as
// PUBREL), whether or not the server kept the session: without a session
// the server has lost them, and a bridge wants at-least-once delivery, so a
// possible duplicate is preferred over a loss. A Publish caller keeps
// waiting across the reconnection until its context ends.
//
// The number of outbound messages in flight is bounded by the server's
// Receive Maximum (65,535 when it sends none); inbound, by the client's own
// ReceiveMaximum, advertised in a version 5 CONNECT.
package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/isobar-mq/isobar/internal/mqtt/packet"
)

// Defaults for zero Config fields.
const (
	DefaultKeepAlive      = 30 * time.Second
	DefaultConnectTimeout = 10 * time.Second
	DefaultMinBackoff     = time.Second
	DefaultMaxBackoff     = 60 * time.Second
	// DefaultMaxPacketSize bounds an inbound packet (advertised as
	// Maximum Packet Size in a version 5 CONNECT). One MiB holds any WIS2
	// notification many times over and bounds what a hostile or broken
	// server can make the client allocate.
	DefaultMaxPacketSize = 1 << 20
	// DefaultReceiveMaximum is the number of unacknowledged inbound QoS 1
	// and 2 messages a version 5 server may send before waiting.
	DefaultReceiveMaximum = 256
	// stableAfter is how long a connection must stay up for the backoff
	// to start again from MinBackoff (clamped to [MinBackoff, MaxBackoff]).
	stableAfter = 30 * time.Second
)

// Config configures a Client. Zero values take the defaults noted.
type Config struct {
	URL            string        // mqtt://host:port (default port 1883), mqtts://host:port (8883), ws://host:port/path, wss://host:port/path
	Version        byte          // 4 = 3.1.1, 5 = 5.0 (default 5)
	ClientID       string        // required unless CleanStart (then "" lets a v5 server assign one)
	CleanStart     bool          // Clean Session in 3.1.1
	SessionExpiry  uint32        // v5 Session Expiry Interval (seconds); v3: CleanStart=false keeps the session
	KeepAlive      time.Duration // default 30s; rounded to whole seconds
	Username       string
	Password       string
	TLS            *tls.Config   // for mqtts/wss (nil = system roots, ServerName from the URL)
	Bridge         bool          // v3.1.1: set the bridge bit (protocol level 0x84, as mosquitto's try_private); v5: no effect
	ConnectTimeout time.Duration // default 10s; bounds dial, TLS, WebSocket upgrade and CONNACK, and every write
	MinBackoff     time.Duration // reconnect backoff, exponential with full jitter; default 1s
	MaxBackoff     time.Duration // default 60s
	// MaxPacketSize bounds inbound packets (default DefaultMaxPacketSize,
	// advertised in a v5 CONNECT). A larger packet closes the connection.
	MaxPacketSize int
	// ReceiveMaximum is advertised in a v5 CONNECT (default
	// DefaultReceiveMaximum): how many inbound QoS 1/2 messages may await
	// Ack at a time.
	ReceiveMaximum uint16
	// Subscriptions are (re)made after every CONNACK without session present (and after the first);
	// Client.Subscribe and Client.Unsubscribe change them at run time.
	Subscriptions []Subscription
	// Handler receives every PUBLISH, in order, from the client's read loop goroutine; it must not block for long.
	// For QoS 1/2 the acknowledgement (PUBACK / PUBREC) is sent only when m.Ack() is called (from any goroutine,
	// at any time later); acknowledgements go out in the order the messages arrived.
	Handler          func(m *Message)
	OnConnect        func(sessionPresent bool)
	OnConnectionLost func(err error)
	Log              *slog.Logger
	Registerer       prometheus.Registerer // may be nil; the client registers no metrics today
}

// Subscription is one topic filter and its options (the v5 options are
// ignored in 3.1.1).
type Subscription struct {
	Filter            string
	QoS               byte
	NoLocal           bool
	RetainAsPublished bool
	RetainHandling    byte
}

// Stats is a snapshot of the client's state and counters.
type Stats struct {
	Connected  bool
	Since      time.Time // when the current connection (or, down, the last loss) began
	LastError  string    // the last connection, refusal or subscription error
	Reconnects uint64    // successful connections after the first
	In, Out    uint64    // PUBLISH packets received; messages published (QoS 0 written, QoS 1/2 acknowledged)
}

var (
	// ErrNotConnected is returned by Publish while the client has no
	// connection (the caller buffers and retries).
	ErrNotConnected = errors.New("mqtt client: not connected")
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("mqtt client: closed")
	// ErrPacketTooLarge is returned by Publish for a message larger than
	// the server's Maximum Packet Size.
	ErrPacketTooLarge = errors.New("mqtt client: message exceeds the server's maximum packet size")
)

// ConnectError is a refused connection: the CONNACK reason code (v5) or
// return code (3.1.1) and the server's reason string, if any.
type ConnectError struct {
	Version byte
	Code    byte
	Reason  string
}

func (e *ConnectError) Error() string {
	s := fmt.Sprintf("mqtt client: connection refused: %s (0x%02X)", connackText(e.Code, e.Version), e.Code)
	if e.Reason != "" {
		s += ": " + e.Reason
	}
	return s
}

// PublishError is a v5 PUBACK or PUBREC with a failure reason code: the
// server did not accept the message (not authorized, quota exceeded...).
type PublishError struct {
	Code   byte
	Reason string
}

func (e *PublishError) Error() string {
	s := fmt.Sprintf("mqtt client: publish refused with reason code 0x%02X", e.Code)
	if e.Reason != "" {
		s += ": " + e.Reason
	}
	return s
}

// Client is an MQTT client connection that reconnects by itself.
type Client struct {
	cfg    Config
	log    *slog.Logger
	target target

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	started  bool
	closed   bool
	cur      *conn // the connection Publish uses; nil while down or still setting up
	srv      serverLimits
	nextID   uint16
	inflight map[uint16]*outMsg // outbound QoS 1/2 not yet acknowledged, across connections
	order    []*outMsg          // the same, in publish order (for resending)
	room     chan struct{}      // closed and replaced when a Publish waiting for room should look again
	qos2In   map[uint16]*Message
	subIDs   map[uint16][]Subscription // SUBSCRIBE awaiting SUBACK on the current connection
	clientID string                    // as configured or assigned by the server
	// noBridgeBit: the server refused a CONNECT with the bridge bit.
	noBridgeBit bool
	connects    uint64
	stats       Stats
}

// serverLimits are what the CONNACK says about the server.
type serverLimits struct {
	receiveMax uint16
	maxPacket  int // 0 = no limit
	maxQoS     byte
	retain     bool
	aliasMax   uint16
}

// New validates cfg and returns a client that is not yet connected.
func New(cfg Config) (*Client, error) {
	if cfg.Version == 0 {
		cfg.Version = packet.V5
	}
	if cfg.Version != packet.V311 && cfg.Version != packet.V5 {
		return nil, fmt.Errorf("mqtt client: Version %d: must be 4 (3.1.1) or 5", cfg.Version)
	}
	t, err := parseURL(cfg.URL)
	if err != nil {
		return nil, err
	}
	if cfg.ClientID == "" && !cfg.CleanStart {
		return nil, errors.New("mqtt client: a ClientID is required unless CleanStart is set")
	}
	if !packet.ValidString(cfg.ClientID) || len(cfg.ClientID) > 65535 {
		return nil, fmt.Errorf("mqtt client: ClientID %q is not a valid MQTT string", cfg.ClientID)
	}
	if !packet.ValidString(cfg.Username) || len(cfg.Username) > 65535 || len(cfg.Password) > 65535 {
		return nil, errors.New("mqtt client: Username or Password is not a valid MQTT string")
	}
	if cfg.Password != "" && cfg.Username == "" && cfg.Version != packet.V5 {
		return nil, errors.New("mqtt client: a Password needs a Username in MQTT 3.1.1")
	}
	setDefault(&cfg.KeepAlive, DefaultKeepAlive)
	setDefault(&cfg.ConnectTimeout, DefaultConnectTimeout)
	setDefault(&cfg.MinBackoff, DefaultMinBackoff)
	setDefault(&cfg.MaxBackoff, DefaultMaxBackoff)
	if cfg.KeepAlive > 65535*time.Second {
		return nil, errors.New("mqtt client: KeepAlive is above 65535 seconds")
	}
	if cfg.KeepAlive < time.Second {
		cfg.KeepAlive = time.Second
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		return nil, fmt.Errorf("mqtt client: MaxBackoff %v is below MinBackoff %v", cfg.MaxBackoff, cfg.MinBackoff)
	}
	if cfg.MaxPacketSize <= 0 {
		cfg.MaxPacketSize = DefaultMaxPacketSize
	}
	cfg.MaxPacketSize = min(cfg.MaxPacketSize, packet.MaxRemainingLength+5)
	if cfg.ReceiveMaximum == 0 {
		cfg.ReceiveMaximum = DefaultReceiveMaximum
	}
	for _, s := range cfg.Subscriptions {
		if s.Filter == "" || !packet.ValidString(s.Filter) || s.QoS > 2 || s.RetainHandling > 2 {
			return nil, fmt.Errorf("mqtt client: invalid subscription %+v", s)
		}
	}
	cfg.Subscriptions = append([]Subscription(nil), cfg.Subscriptions...)
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Client{
		cfg:      cfg,
		log:      log.With("component", "mqtt-client", "url", cfg.URL, "client_id", cfg.ClientID),
		target:   t,
		ctx:      ctx,
		cancel:   cancel,
		inflight: make(map[uint16]*outMsg),
		room:     make(chan struct{}),
		qos2In:   make(map[uint16]*Message),
		subIDs:   make(map[uint16][]Subscription),
		clientID: cfg.ClientID,
	}, nil
}

func setDefault(d *time.Duration, def time.Duration) {
	if *d <= 0 {
		*d = def
	}
}

// Start starts the connect/reconnect loop in the background. It does
// nothing after the first call or after Close.
func (c *Client) Start() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.started || c.closed {
		return
	}
	c.started = true
	c.wg.Add(1)
	go c.run()
}

// Connected reports whether the client has a connection it can publish on.
func (c *Client) Connected() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cur != nil
}

// Stats returns a snapshot of the client's state and counters.
func (c *Client) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.stats
	s.Connected = c.cur != nil
	return s
}

// Close sends DISCONNECT (normal disconnection) if connected, stops the
// loop and waits for the client's goroutines. Publish calls still waiting
// return ErrClosed. Close is idempotent.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	cn := c.cur
	c.cur = nil
	c.wakeLocked()
	c.mu.Unlock()
	if cn != nil {
		// The server must not publish the will and, with a session
		// expiry, keeps the session.
		_ = cn.write((&packet.Disconnect{}).Append(nil, cn.version))
	}
	c.cancel()
	c.wg.Wait()
	return nil
}

// wakeLocked wakes every Publish waiting for room.
func (c *Client) wakeLocked() {
	close(c.room)
	c.room = make(chan struct{})
}

// run is the connect/reconnect loop.
func (c *Client) run() {
	defer c.wg.Done()
	attempt := 0
	for {
		up, err := c.connectAndServe()
		if c.ctx.Err() != nil {
			return
		}
		c.mu.Lock()
		c.stats.LastError = err.Error()
		c.mu.Unlock()
		if up > 0 {
			c.log.Warn("connection lost", "err", err, "up", up.Round(time.Millisecond))
		} else {
			c.log.Warn("cannot connect", "err", err)
		}
		stable := min(max(stableAfter, c.cfg.MinBackoff), c.cfg.MaxBackoff)
		if up >= stable {
			attempt = 0
		}
		attempt++
		delay := c.backoff(attempt)
		t := time.NewTimer(delay)
		select {
		case <-c.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// backoff returns the delay before reconnection attempt n (1, 2, ...):
// uniform between MinBackoff and min(MaxBackoff, MinBackoff * 2^n) ("full
// jitter" above the floor), so that many clients cut off together do not
// come back together.
func (c *Client) backoff(n int) time.Duration {
	lo, hi := c.cfg.MinBackoff, c.cfg.MaxBackoff
	ceil := lo
	for i := 0; i < n && ceil < hi; i++ {
		ceil *= 2
	}
	ceil = min(ceil, hi)
	if ceil <= lo {
		return lo
	}
	return lo + rand.N(ceil-lo+1)
}

// connackText describes a CONNACK code.
func connackText(code, version byte) string {
	if version != packet.V5 {
		switch code {
		case packet.ConnRefusedProtocolVersion:
			return "unacceptable protocol version"
		case packet.ConnRefusedIdentifier:
			return "identifier rejected"
		case packet.ConnRefusedServerUnavailable:
			return "server unavailable"
		case packet.ConnRefusedBadCredentials:
			return "bad user name or password"
		case packet.ConnRefusedNotAuthorized:
			return "not authorized"
		}
		return "unknown return code"
	}
	switch code {
	case packet.UnspecifiedError:
		return "unspecified error"
	case packet.MalformedPacket:
		return "malformed packet"
	case packet.ProtocolError:
		return "protocol error"
	case packet.ImplementationSpecificError:
		return "implementation specific error"
	case packet.UnsupportedProtocolVersion:
		return "unsupported protocol version"
	case packet.ClientIdentifierNotValid:
		return "client identifier not valid"
	case packet.BadUserNameOrPassword:
		return "bad user name or password"
	case packet.NotAuthorized:
		return "not authorized"
	case packet.ServerUnavailable:
		return "server unavailable"
	case packet.ServerBusy:
		return "server busy"
	case packet.Banned:
		return "banned"
	case packet.BadAuthenticationMethod:
		return "bad authentication method"
	case packet.PacketTooLarge:
		return "packet too large"
	case packet.QuotaExceeded:
		return "quota exceeded"
	case packet.UseAnotherServer:
		return "use another server"
	case packet.ServerMoved:
		return "server moved"
	case packet.ConnectionRateExceeded:
		return "connection rate exceeded"
	}
	return "refused"
}
