package config

import (
	"errors"
	"fmt"
	"time"
)

// Stomp is the stomp: section: the STOMP gateway that serves the
// listeners with protocol stomp or stomp-ws (see docs/stomp.md). Every
// key is documented with its default in docs/configuration.md.
type Stomp struct {
	// MaxFrameSize bounds one frame received from a client: command,
	// headers and body.
	MaxFrameSize int `yaml:"max_frame_size"`
	// MaxHeaders bounds the header lines of one frame.
	MaxHeaders int `yaml:"max_headers"`
	// MaxHeaderLength bounds one command or header line.
	MaxHeaderLength int `yaml:"max_header_length"`
	// HeartBeatSend is the smallest interval at which the gateway sends
	// heart-beats, HeartBeatReceive the interval it asks clients for
	// (CONNECTED heart-beat sx,sy); 0 disables that direction.
	HeartBeatSend    time.Duration `yaml:"heart_beat_send"`
	HeartBeatReceive time.Duration `yaml:"heart_beat_receive"`
	// ConnectTimeout closes a connection that sent no CONNECT in time.
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
	// WriteTimeout disconnects a client whose socket accepts no data for
	// this long.
	WriteTimeout time.Duration `yaml:"write_timeout"`
	// MaxPendingBytes bounds the frames waiting to be written to one
	// client; topic messages beyond it are dropped.
	MaxPendingBytes int `yaml:"max_pending_bytes"`
	// MaxSubscriptions per connection.
	MaxSubscriptions int `yaml:"max_subscriptions"`
	// MaxTransactions open at once per connection; MaxTransactionFrames
	// frames held by one transaction.
	MaxTransactions      int `yaml:"max_transactions"`
	MaxTransactionFrames int `yaml:"max_transaction_frames"`
	// Queues configures /queue/ destinations.
	Queues StompQueues `yaml:"queues"`
}

// StompQueues is the stomp.queues: section.
type StompQueues struct {
	// Dir holds the queues' own Pebble database. "" = the directory
	// stomp-queues in store.data_dir with store mode pebble, memory only
	// with store mode memory.
	Dir string `yaml:"dir"`
	// MaxMessages and MaxBytes bound each queue (a SEND beyond them gets
	// an ERROR).
	MaxMessages int   `yaml:"max_messages"`
	MaxBytes    int64 `yaml:"max_bytes"`
	// MaxRedeliveries is how many abandoned deliveries move a message to
	// ActiveMQ.DLQ; -1 = never (a NACK moves it at once).
	MaxRedeliveries int `yaml:"max_redeliveries"`
	// IdleTimeout forgets a queue with no consumer and no message.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
}

// DefaultStomp is the stomp: section's defaults.
func DefaultStomp() Stomp {
	return Stomp{
		MaxFrameSize: 1 << 20, MaxHeaders: 64, MaxHeaderLength: 8 << 10,
		HeartBeatSend: 10 * time.Second, HeartBeatReceive: 10 * time.Second,
		ConnectTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second,
		MaxPendingBytes: 8 << 20, MaxSubscriptions: 1000,
		MaxTransactions: 16, MaxTransactionFrames: 10000,
		Queues: StompQueues{MaxMessages: 100000, MaxBytes: 64 << 20, MaxRedeliveries: 6, IdleTimeout: 5 * time.Minute},
	}
}

func (c *Config) validateStomp() error {
	s := &c.Stomp
	if s.MaxFrameSize < 1024 {
		return fmt.Errorf("stomp.max_frame_size: %d is too small (minimum 1024)", s.MaxFrameSize)
	}
	if s.MaxHeaders < 1 {
		return errors.New("stomp.max_headers: must be at least 1")
	}
	if s.MaxHeaderLength < 256 {
		return fmt.Errorf("stomp.max_header_length: %d is too small (minimum 256)", s.MaxHeaderLength)
	}
	for _, v := range []struct {
		key string
		d   time.Duration
	}{{"heart_beat_send", s.HeartBeatSend}, {"heart_beat_receive", s.HeartBeatReceive}} {
		if v.d < 0 {
			return fmt.Errorf("stomp.%s: must not be negative (0 disables)", v.key)
		}
		if v.d > 0 && v.d < time.Millisecond {
			return fmt.Errorf("stomp.%s: below the protocol's unit of 1ms", v.key)
		}
	}
	for _, v := range []struct {
		key string
		d   time.Duration
	}{{"connect_timeout", s.ConnectTimeout}, {"write_timeout", s.WriteTimeout}, {"queues.idle_timeout", s.Queues.IdleTimeout}} {
		if v.d <= 0 {
			return fmt.Errorf("stomp.%s: must be positive", v.key)
		}
	}
	for _, v := range []struct {
		key string
		n   int64
	}{{"max_pending_bytes", int64(s.MaxPendingBytes)}, {"max_subscriptions", int64(s.MaxSubscriptions)},
		{"max_transactions", int64(s.MaxTransactions)}, {"max_transaction_frames", int64(s.MaxTransactionFrames)},
		{"queues.max_messages", int64(s.Queues.MaxMessages)}, {"queues.max_bytes", s.Queues.MaxBytes}} {
		if v.n < 1 {
			return fmt.Errorf("stomp.%s: must be at least 1", v.key)
		}
	}
	if s.Queues.MaxRedeliveries < -1 {
		return errors.New("stomp.queues.max_redeliveries: must be -1 (never) or more")
	}
	return nil
}
