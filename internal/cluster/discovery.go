package cluster

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Resolver is the part of *net.Resolver that seed discovery uses.
type Resolver interface {
	LookupHost(ctx context.Context, host string) ([]string, error)
	LookupSRV(ctx context.Context, service, proto, name string) (string, []*net.SRV, error)
}

var _ Resolver = (*net.Resolver)(nil)

// ResolveSeeds turns the configured seeds into ip:port addresses. An entry
// is either
//   - "host:port": host an IP address, or a DNS name standing for all its
//     A and AAAA addresses (each with port); or
//   - a DNS SRV name starting with "_", like "_isobar._tcp.example.org":
//     every SRV record's target (resolved to its A/AAAA addresses, or an
//     IP target as is) with the record's port.
//
// The result is deduplicated, in seed order, each entry's addresses in a
// fixed order (SRV records by priority, then weight descending, then
// target and port; addresses sorted). A seed that fails does not fail the
// others: the error (all failures joined) is returned only when nothing
// resolved.
func ResolveSeeds(ctx context.Context, r Resolver, seeds []string) ([]string, error) {
	if r == nil {
		r = net.DefaultResolver
	}
	var out []string
	seen := map[string]bool{}
	add := func(ip string, port uint16) {
		a, err := netip.ParseAddr(ip)
		if err != nil {
			return
		}
		s := netip.AddrPortFrom(a.Unmap(), port).String()
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	var errs []error
	for _, seed := range seeds {
		seed = strings.TrimSpace(seed)
		if err := resolveSeed(ctx, r, seed, add); err != nil {
			errs = append(errs, fmt.Errorf("seed %q: %w", seed, err))
		}
	}
	if len(out) == 0 {
		return nil, errors.Join(errs...)
	}
	return out, nil
}

func resolveSeed(ctx context.Context, r Resolver, seed string, add func(string, uint16)) error {
	if seed == "" {
		return errors.New("empty")
	}
	if strings.HasPrefix(seed, "_") {
		return resolveSRV(ctx, r, seed, add)
	}
	host, port, err := SplitSeed(seed)
	if err != nil {
		return err
	}
	ips, err := lookupHost(ctx, r, host)
	if err != nil {
		return err
	}
	for _, ip := range ips {
		add(ip, port)
	}
	return nil
}

// SplitSeed checks a "host:port" seed (not an SRV name) and splits it.
func SplitSeed(seed string) (host string, port uint16, err error) {
	h, p, err := net.SplitHostPort(seed)
	if err != nil {
		return "", 0, fmt.Errorf("want host:port or an _service._proto.name SRV name: %w", err)
	}
	if h == "" {
		return "", 0, errors.New("empty host")
	}
	n, err := strconv.ParseUint(p, 10, 16)
	if err != nil || n == 0 {
		return "", 0, fmt.Errorf("port %q is not in 1..65535", p)
	}
	return h, uint16(n), nil
}

// SplitSRVName splits "_service._proto.name" into its three parts.
func SplitSRVName(s string) (service, proto, name string, err error) {
	parts := strings.SplitN(s, ".", 3)
	if len(parts) != 3 || !strings.HasPrefix(parts[0], "_") || !strings.HasPrefix(parts[1], "_") ||
		len(parts[0]) < 2 || len(parts[1]) < 2 || strings.Trim(parts[2], ".") == "" {
		return "", "", "", fmt.Errorf("%q is not an SRV name like _isobar._tcp.example.org", s)
	}
	return parts[0][1:], parts[1][1:], parts[2], nil
}

// lookupHost returns an IP literal as is and resolves a name, sorted.
func lookupHost(ctx context.Context, r Resolver, host string) ([]string, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		return []string{a.String()}, nil
	}
	ips, err := r.LookupHost(ctx, host)
	if err != nil {
		return nil, err
	}
	addrs := make([]netip.Addr, 0, len(ips))
	for _, ip := range ips {
		if a, err := netip.ParseAddr(ip); err == nil {
			addrs = append(addrs, a.Unmap())
		}
	}
	if len(addrs) == 0 {
		return nil, fmt.Errorf("%s has no IP address", host)
	}
	slices.SortFunc(addrs, netip.Addr.Compare)
	out := make([]string, len(addrs))
	for i, a := range addrs {
		out[i] = a.String()
	}
	return out, nil
}

func resolveSRV(ctx context.Context, r Resolver, seed string, add func(string, uint16)) error {
	service, proto, name, err := SplitSRVName(seed)
	if err != nil {
		return err
	}
	_, recs, err := r.LookupSRV(ctx, service, proto, name)
	if err != nil && len(recs) == 0 {
		return err
	}
	recs = slices.DeleteFunc(slices.Clone(recs), func(s *net.SRV) bool {
		// "." is "no such service here" (RFC 2782).
		return s == nil || s.Port == 0 || s.Target == "" || s.Target == "."
	})
	if len(recs) == 0 {
		return errors.New("no usable SRV records")
	}
	slices.SortFunc(recs, func(a, b *net.SRV) int {
		return cmp.Or(cmp.Compare(a.Priority, b.Priority), cmp.Compare(b.Weight, a.Weight),
			strings.Compare(a.Target, b.Target), cmp.Compare(a.Port, b.Port))
	})
	var errs []error
	resolved := false
	for _, s := range recs {
		ips, err := lookupHost(ctx, r, strings.TrimSuffix(s.Target, "."))
		if err != nil {
			errs = append(errs, fmt.Errorf("target %s: %w", s.Target, err))
			continue
		}
		resolved = true
		for _, ip := range ips {
			add(ip, s.Port)
		}
	}
	if !resolved {
		return errors.Join(errs...)
	}
	return nil
}
