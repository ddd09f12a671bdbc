package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// maxNodeNameLen bounds node_name in a cluster (it travels in every
// gossip message and link handshake).
const maxNodeNameLen = 128

// validateCluster fills the cluster section's defaults (zero values) and
// checks it.
func (c *Config) validateCluster() error {
	cl := c.Cluster
	if err := validNodeName(c.NodeName); err != nil {
		return fmt.Errorf("node_name: %w (required with a cluster section)", err)
	}
	d := DefaultClusterConfig()
	for _, v := range []struct {
		key string
		val *time.Duration
		def time.Duration
	}{{"probe_interval", &cl.ProbeInterval, d.ProbeInterval}, {"probe_timeout", &cl.ProbeTimeout, d.ProbeTimeout},
		{"gossip_interval", &cl.GossipInterval, d.GossipInterval}, {"claim_timeout", &cl.ClaimTimeout, d.ClaimTimeout},
		{"drain_timeout", &cl.DrainTimeout, d.DrainTimeout}, {"ack_timeout", &cl.AckTimeout, d.AckTimeout}} {
		if *v.val < 0 {
			return fmt.Errorf("cluster.%s: must not be negative (0 = the default, %v)", v.key, v.def)
		}
		if *v.val == 0 {
			*v.val = v.def
		}
	}
	for _, v := range []struct {
		key string
		val *int64
		def int64
	}{{"link_queue_bytes", &cl.LinkQueueBytes, d.LinkQueueBytes}, {"max_frame_size", &cl.MaxFrameSize, d.MaxFrameSize}} {
		if *v.val < 0 {
			return fmt.Errorf("cluster.%s: must not be negative (0 = the default, %d)", v.key, v.def)
		}
		if *v.val == 0 {
			*v.val = v.def
		}
	}
	if cl.SuspicionMult < 0 {
		return fmt.Errorf("cluster.suspicion_mult: must not be negative (0 = the default, %d)", d.SuspicionMult)
	}
	if cl.SuspicionMult == 0 {
		cl.SuspicionMult = d.SuspicionMult
	}
	if cl.Bind == "" {
		cl.Bind = d.Bind
	}
	switch cl.Ack {
	case "":
		cl.Ack = d.Ack
	case "replicated", "local":
	default:
		return fmt.Errorf("cluster.ack: %q is not replicated or local", cl.Ack)
	}
	if cl.Replicas != nil && (*cl.Replicas < 0 || *cl.Replicas > 8) {
		return fmt.Errorf("cluster.replicas: %d is not in 0..8", *cl.Replicas)
	}
	switch cl.Shutdown {
	case "":
		cl.Shutdown = d.Shutdown
	case "drain", "leave":
	default:
		return fmt.Errorf("cluster.shutdown: %q is not drain or leave", cl.Shutdown)
	}

	bind, err := netip.ParseAddrPort(cl.Bind)
	if err != nil {
		return fmt.Errorf("cluster.bind: %q is not ip:port (an IP address, not a host name; port 0 picks a free one)", cl.Bind)
	}
	if cl.Advertise != "" {
		adv, err := netip.ParseAddrPort(cl.Advertise)
		if err != nil || adv.Addr().IsUnspecified() {
			return fmt.Errorf("cluster.advertise: %q is not a specific ip:port (port 0 = the bind port)", cl.Advertise)
		}
	} else if bind.Addr().IsUnspecified() {
		return fmt.Errorf("cluster.advertise: required when cluster.bind (%s) is a wildcard address: the address the other nodes reach this one at", cl.Bind)
	}
	for i, s := range cl.Seeds {
		if err := validSeed(s); err != nil {
			return fmt.Errorf("cluster.seeds[%d]: %q: %w", i, s, err)
		}
	}
	if cl.SecretFile == "" {
		return errors.New("cluster.secret_file: required (create one with `isobar keygen -o FILE` and give every node the same file)")
	}
	t := cl.TLS
	if n := count(t.CertFile != "", t.KeyFile != "", t.CAFile != ""); n != 0 && n != 3 {
		return errors.New("cluster.tls: cert_file, key_file and ca_file go together (mutual TLS): set all three or none")
	}
	if cl.ProbeTimeout >= cl.ProbeInterval {
		return fmt.Errorf("cluster.probe_timeout (%v) must be shorter than cluster.probe_interval (%v)", cl.ProbeTimeout, cl.ProbeInterval)
	}
	const maxFrame = 1<<32 - 1 // a frame's length is a u32
	if cl.MaxFrameSize < 64<<10 || cl.MaxFrameSize > maxFrame {
		return fmt.Errorf("cluster.max_frame_size: %d is not in 65536..%d", cl.MaxFrameSize, int64(maxFrame))
	}
	if cl.LinkQueueBytes < cl.MaxFrameSize {
		return fmt.Errorf("cluster.link_queue_bytes (%d) must be at least cluster.max_frame_size (%d): a frame must fit in the queue", cl.LinkQueueBytes, cl.MaxFrameSize)
	}
	return nil
}

func count(bs ...bool) int {
	n := 0
	for _, b := range bs {
		if b {
			n++
		}
	}
	return n
}

// validNodeName: 1..128 bytes of letters, digits, '.', '-', '_' (host
// names fit).
func validNodeName(s string) error {
	if s == "" {
		return errors.New("empty")
	}
	if len(s) > maxNodeNameLen {
		return fmt.Errorf("longer than %d bytes", maxNodeNameLen)
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == '_') {
			return fmt.Errorf("%q: only letters, digits, '.', '-' and '_' are allowed", s)
		}
	}
	return nil
}

// validSeed accepts host:port (port 1..65535) and _service._proto.name.
func validSeed(s string) error {
	if strings.HasPrefix(s, "_") {
		parts := strings.SplitN(s, ".", 3)
		if len(parts) != 3 || len(parts[0]) < 2 || !strings.HasPrefix(parts[1], "_") || len(parts[1]) < 2 || strings.Trim(parts[2], ".") == "" {
			return errors.New("an SRV seed looks like _isobar._tcp.example.org")
		}
		return nil
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil || host == "" {
		return errors.New("want host:port (or an _service._proto.name SRV name)")
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return fmt.Errorf("port %q is not in 1..65535", port)
	}
	return nil
}
