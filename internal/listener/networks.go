package listener

import (
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"time"

	"go.yaml.in/yaml/v3"
)

// Networks is a list of IP networks, written in YAML as a list of CIDR
// prefixes ("10.0.0.0/8", "fd00::/8") or bare addresses ("10.0.0.5",
// "::1", meaning a /32 or /128). IPv4-mapped IPv6 entries are stored as
// IPv4, host bits are cleared and zones are refused.
type Networks []netip.Prefix

// ParseNetwork parses one Networks entry: a CIDR prefix or a bare address.
func ParseNetwork(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	var p netip.Prefix
	if strings.Contains(s, "/") {
		var err error
		if p, err = netip.ParsePrefix(s); err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not an IP address or CIDR prefix", s)
		}
	} else {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("%q is not an IP address or CIDR prefix", s)
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return p.Masked(), nil
}

// UnmarshalYAML decodes a list of prefixes or addresses; an error names the
// line and the bad entry.
func (n *Networks) UnmarshalYAML(node *yaml.Node) error {
	if node.Kind == yaml.ScalarNode && node.Tag == "!!null" {
		*n = nil
		return nil
	}
	if node.Kind != yaml.SequenceNode {
		return fmt.Errorf("line %d: want a list of IP addresses or CIDR prefixes", node.Line)
	}
	out := make(Networks, 0, len(node.Content))
	for _, e := range node.Content {
		if e.Kind != yaml.ScalarNode {
			return fmt.Errorf("line %d: want an IP address or CIDR prefix", e.Line)
		}
		p, err := ParseNetwork(e.Value)
		if err != nil {
			return fmt.Errorf("line %d: %v", e.Line, err)
		}
		out = append(out, p)
	}
	*n = out
	return nil
}

// Contains reports whether a (unmapped) is in one of the networks.
func (n Networks) Contains(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range n {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// defaultProxyProtocolTrusted: loopback only (a proxy on the same host).
var defaultProxyProtocolTrusted = Networks{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}

// DefaultProxyProtocolTrusted returns the networks trusted to send PROXY
// headers when Config.ProxyProtocolTrusted is empty: 127.0.0.0/8 and ::1.
func DefaultProxyProtocolTrusted() Networks {
	return append(Networks(nil), defaultProxyProtocolTrusted...)
}

// warnLimiter lets one warning through per interval and counts the ones it
// suppressed in between.
type warnLimiter struct {
	mu         sync.Mutex
	last       time.Time
	suppressed uint64
}

const warnInterval = 10 * time.Second

// allow reports whether to log now, and how many warnings were suppressed
// since the last one logged.
func (w *warnLimiter) allow(now time.Time) (bool, uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.last.IsZero() && now.Sub(w.last) < warnInterval {
		w.suppressed++
		return false, 0
	}
	n := w.suppressed
	w.last, w.suppressed = now, 0
	return true, n
}
