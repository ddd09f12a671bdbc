package web

import (
	"errors"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// DNS rebinding protection. A web page from attacker.example can make its
// name resolve to 127.0.0.1 (or any address the victim's browser
// reaches) and then read this listener's answers as same-origin: the
// browser still sends "Host: attacker.example". Requests are therefore
// served only when the Host header names this listener: an IP address
// literal (rebinding needs a name), localhost, the host of http.address,
// or an entry of http.allowed_hosts. Others get 421 Misdirected Request.
// /healthz and /readyz are exempt (they reveal nothing, and load balancer
// probes send all sorts of Host headers); so is a request without Host
// (HTTP/1.0 health checks: a browser always sends one).

// hostRules are the accepted host names, lower case, without a trailing
// dot: exact names, and suffixes (".example.com" from "*.example.com").
type hostRules struct {
	any      bool
	names    map[string]bool
	suffixes []string
}

func normHost(h string) string {
	return strings.TrimSuffix(strings.ToLower(h), ".")
}

// validHostRule checks one http.allowed_hosts entry.
func validHostRule(h string) error {
	if h == "*" {
		return nil
	}
	name := strings.TrimPrefix(h, "*.")
	if name == "" || strings.ContainsAny(name, "/@?#* \t") {
		return errors.New(`want a host name ("broker.example.com"), "*.example.com" or "*"`)
	}
	if strings.Contains(name, ":") {
		if _, err := netip.ParseAddr(strings.Trim(name, "[]")); err != nil {
			return errors.New("a host name without a port (the port is not checked)")
		}
	}
	return nil
}

func newHostRules(allowed []string, listen string) hostRules {
	hr := hostRules{names: map[string]bool{"localhost": true}}
	if h, _, err := net.SplitHostPort(listen); err == nil && h != "" {
		hr.names[normHost(h)] = true
	}
	for _, h := range allowed {
		switch {
		case h == "*":
			hr.any = true
		case strings.HasPrefix(h, "*."):
			hr.suffixes = append(hr.suffixes, normHost(h[1:]))
		default:
			hr.names[normHost(strings.Trim(h, "[]"))] = true
		}
	}
	return hr
}

// allows reports whether a request's Host header (r.Host) is accepted.
func (hr hostRules) allows(host string) bool {
	if hr.any || host == "" {
		return true
	}
	h := host
	if hh, _, err := net.SplitHostPort(host); err == nil {
		h = hh
	}
	h = strings.Trim(h, "[]")
	if i := strings.IndexByte(h, '%'); i >= 0 {
		h = h[:i] // IPv6 zone
	}
	if _, err := netip.ParseAddr(h); err == nil {
		return true
	}
	h = normHost(h)
	if hr.names[h] {
		return true
	}
	for _, s := range hr.suffixes {
		if strings.HasSuffix(h, s) && len(h) > len(s) {
			return true
		}
	}
	return false
}

// checkHost answers 421 when r's Host is not accepted.
func (s *Server) checkHost(w http.ResponseWriter, r *http.Request) bool {
	if r.URL.Path == "/healthz" || r.URL.Path == "/readyz" || s.hosts.allows(r.Host) {
		return true
	}
	s.log.Debug("request for another host refused", "host", r.Host, "remote", r.RemoteAddr, "path", r.URL.Path)
	writeError(w, http.StatusMisdirectedRequest, "host %q is not served here; add it to http.allowed_hosts", r.Host)
	return false
}
