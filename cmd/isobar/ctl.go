package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/isobar-mq/isobar/internal/cluster"
	"github.com/isobar-mq/isobar/internal/web"
)

// isobar ctl: manage a running node through its HTTP API (see
// docs/api.md). It authenticates with an API key (Authorization: Bearer,
// preferred: cheap to check and never throttled) or a user's password
// (HTTP Basic). Exit status: 0 done, 1 failed (unreachable, refused,
// drain failed or timed out), 2 usage.

const ctlUsage = `Usage:
  isobar ctl [flags] cluster status [--json]   show the cluster as the node sees it
  isobar ctl [flags] drain [--timeout 3m]      drain the node (it leaves the cluster) and wait until it has left

Flags (anywhere on the line):
  --url URL          the node's HTTP listener (default http://` + web.DefaultAddress + `)
  --api-key KEY      an API key (http.api_keys); default $ISOBAR_API_KEY
  --user USER        a user (http.users), with --password or $ISOBAR_PASSWORD
  --password PW      the user's password (visible to other local users in the process list: prefer $ISOBAR_PASSWORD)
  --cacert FILE      PEM CA certificates to verify an https:// listener with (default: the system's)
  --json             print the API's JSON answer as is
  --timeout D        how long drain waits for the node to leave (default 3m; 0: do not wait)

Reading the status needs any role; drain needs the admin role.
`

// Defaults of isobar ctl.
const (
	ctlRequestTimeout = 15 * time.Second
	ctlDrainWait      = 3 * time.Minute
	ctlPollEvery      = 500 * time.Millisecond
	ctlMaxBody        = 16 << 20
)

// ctlClient talks to one node's API.
type ctlClient struct {
	base   *url.URL
	auth   func(*http.Request)
	http   *http.Client
	stdout io.Writer
	stderr io.Writer
}

// ctlStatus is GET /api/v1/cluster.
type ctlStatus struct {
	cluster.Status
	Drain *struct {
		Running     bool   `json:"running"`
		RequestedBy string `json:"requested_by"`
		Error       string `json:"error"`
	} `json:"drain"`
}

// apiFailure is an answer other than the one expected.
type apiFailure struct {
	method, path string
	code         int
	msg          string
}

func (e *apiFailure) Error() string {
	s := fmt.Sprintf("%s %s: %d %s", e.method, e.path, e.code, http.StatusText(e.code))
	if e.msg != "" {
		s += ": " + e.msg
	}
	switch e.code {
	case http.StatusUnauthorized:
		s += " (check --api-key, or --user and --password)"
	case http.StatusForbidden:
		s += " (this needs a key or user with the admin role)"
	}
	return s
}

func ctlCommand(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("ctl", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	rawURL := fs.String("url", "http://"+web.DefaultAddress, "")
	apiKey := fs.String("api-key", "", "")
	user := fs.String("user", "", "")
	password := fs.String("password", "", "")
	cacert := fs.String("cacert", "", "")
	asJSON := fs.Bool("json", false, "")
	timeout := fs.Duration("timeout", ctlDrainWait, "")

	// Flags may come before, between or after the command words.
	var words []string
	rest := args
	for {
		if err := fs.Parse(rest); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fmt.Fprint(stdout, ctlUsage)
				return 0
			}
			fmt.Fprintf(stderr, "isobar ctl: %v\n\n%s", err, ctlUsage)
			return 2
		}
		rest = fs.Args()
		if len(rest) == 0 {
			break
		}
		words = append(words, rest[0])
		rest = rest[1:]
	}
	usage := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "isobar ctl: "+format+"\n\n%s", append(a, ctlUsage)...)
		return 2
	}
	cmd := strings.Join(words, " ")
	switch cmd {
	case "cluster status", "cluster drain", "drain":
	case "":
		return usage("no command")
	default:
		return usage("unknown command %q", cmd)
	}
	if *timeout < 0 {
		return usage("--timeout must not be negative")
	}

	base, err := url.Parse(*rawURL)
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" ||
		base.User != nil || base.RawQuery != "" || base.Fragment != "" {
		return usage("--url %q: want http://host:port or https://host:port (optionally with a path prefix)", *rawURL)
	}
	base.Path = strings.TrimSuffix(base.Path, "/")
	base.RawPath = ""

	if *apiKey == "" {
		*apiKey = os.Getenv("ISOBAR_API_KEY")
	}
	if *user != "" && *password == "" {
		*password = os.Getenv("ISOBAR_PASSWORD")
	}
	c := &ctlClient{base: base, stdout: stdout, stderr: stderr}
	fsSet := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { fsSet[f.Name] = true })
	switch {
	case fsSet["api-key"] && *user != "":
		return usage("give --api-key or --user, not both")
	case *user != "":
		if *password == "" {
			return usage("--user needs --password or $ISOBAR_PASSWORD")
		}
		if strings.Contains(*user, ":") {
			return usage("--user: a user name cannot contain ':'")
		}
		u, p := *user, *password
		c.auth = func(r *http.Request) { r.SetBasicAuth(u, p) }
	case fsSet["password"]:
		return usage("--password needs --user")
	case *apiKey != "":
		if strings.ContainsAny(*apiKey, " \t\r\n") {
			return usage("--api-key: an API key has no white space")
		}
		k := *apiKey
		c.auth = func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+k) }
	}
	if c.auth != nil && base.Scheme == "http" && !loopbackHost(base.Hostname()) {
		fmt.Fprintf(stderr, "isobar ctl: warning: sending credentials to %s without TLS\n", base.Host)
	}

	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil // a management command talks to the node, not through $HTTP_PROXY
	if *cacert != "" {
		pem, err := os.ReadFile(*cacert)
		if err != nil {
			fmt.Fprintf(stderr, "isobar ctl: --cacert: %v\n", err)
			return 1
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			fmt.Fprintf(stderr, "isobar ctl: --cacert %s: no PEM certificate in it\n", *cacert)
			return 1
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	defer tr.CloseIdleConnections()
	c.http = &http.Client{Transport: tr, Timeout: ctlRequestTimeout,
		// Credentials go to the URL given, not wherever a redirect points.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

	if cmd == "cluster status" {
		err = c.status(*asJSON)
	} else {
		err = c.drain(*timeout, *asJSON)
	}
	if err != nil {
		fmt.Fprintf(stderr, "isobar ctl: %v\n", err)
		return 1
	}
	return 0
}

// loopbackHost reports whether h is localhost or a loopback address.
func loopbackHost(h string) bool {
	if h == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(h)
	return err == nil && a.IsLoopback()
}

// do sends one request and returns the body of an answer with status want.
func (c *ctlClient) do(method, path string, want int) ([]byte, error) {
	u := *c.base
	u.Path += path
	ctx, cancel := context.WithTimeout(context.Background(), ctlRequestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, u.String(), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	if c.auth != nil {
		c.auth(req)
	}
	res, err := c.http.Do(req)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return nil, fmt.Errorf("%s %s: no answer within %v", method, u.Redacted(), ctlRequestTimeout)
		}
		if errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("cannot reach %s: %w (%v)", c.base.Redacted(), errNodeGone, err)
		}
		return nil, fmt.Errorf("cannot reach %s: %v", c.base.Redacted(), err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, ctlMaxBody+1))
	if err != nil {
		return nil, fmt.Errorf("%s %s: reading the answer: %v", method, path, err)
	}
	if len(body) > ctlMaxBody {
		return nil, fmt.Errorf("%s %s: answer larger than %d bytes", method, path, ctlMaxBody)
	}
	if res.StatusCode != want {
		f := &apiFailure{method: method, path: path, code: res.StatusCode}
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(body, &e) == nil {
			f.msg = clean(e.Error)
		} else if res.StatusCode/100 == 3 {
			f.msg = "redirected to " + clean(res.Header.Get("Location")) + " (is --url right?)"
		} else {
			f.msg = "not an Isobar API answer (is --url right?)"
		}
		return nil, f
	}
	return body, nil
}

func (c *ctlClient) getStatus() (ctlStatus, []byte, error) {
	var st ctlStatus
	body, err := c.do(http.MethodGet, "/api/v1/cluster", http.StatusOK)
	if err != nil {
		return st, nil, err
	}
	if err := json.Unmarshal(body, &st); err != nil {
		return st, nil, fmt.Errorf("GET /api/v1/cluster: invalid answer: %v", err)
	}
	return st, body, nil
}

func (c *ctlClient) status(asJSON bool) error {
	st, body, err := c.getStatus()
	if err != nil {
		return err
	}
	if asJSON {
		_, err := c.stdout.Write(body)
		return err
	}
	return printStatus(c.stdout, st)
}

// printStatus writes st as a summary and a table of members.
func printStatus(w io.Writer, st ctlStatus) error {
	alive, links, peers := 0, 0, 0
	for _, m := range st.Members {
		if m.State == "alive" {
			alive++
		}
		if !m.Local {
			peers++
			if m.Link == "up" {
				links++
			}
		}
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "node:     %s (%s)\n", clean(st.Node), clean(st.State))
	fmt.Fprintf(&b, "members:  %d alive of %d; links up: %d of %d\n", alive, len(st.Members), links, peers)
	fmt.Fprintf(&b, "routes:   %d local; retained tombstones: %d\n", st.LocalRoutes, st.RetainedTombstones)
	if d := st.Drain; d != nil {
		state := "done"
		switch {
		case d.Running:
			state = "running"
		case d.Error != "":
			state = "failed: " + clean(d.Error)
		}
		fmt.Fprintf(&b, "drain:    %s (requested by %s)\n", state, clean(d.RequestedBy))
	}
	b.WriteString("\n")
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tADDRESS\tSTATE\tLINK\tROUTES\tQUEUED BYTES\tINFLIGHT\tFORWARDED\tRECEIVED\tDROPPED")
	for _, m := range st.Members {
		name, link, queued := clean(m.Name), clean(m.Link), strconv.Itoa(m.QueuedBytes)
		if m.Local {
			name, link, queued = name+" (this node)", "-", "-"
		}
		if link == "" {
			link = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%d\t%d\t%d\t%d\n", name, clean(m.Addr), clean(m.State), link,
			m.Routes, queued, m.Inflight, m.Forwarded, m.Received, m.Dropped)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := w.Write(b.Bytes())
	return err
}

// errNodeGone: the node's API refuses connections (it stopped).
var errNodeGone = errors.New("connection refused")

// drain starts a drain and, unless wait is 0, polls the status until the
// node has left, the drain failed or wait has passed.
func (c *ctlClient) drain(wait time.Duration, asJSON bool) error {
	body, err := c.do(http.MethodPost, "/api/v1/cluster/drain", http.StatusAccepted)
	if err != nil {
		return err
	}
	var started struct {
		Node           string  `json:"node"`
		TimeoutSeconds float64 `json:"timeout_seconds"`
	}
	_ = json.Unmarshal(body, &started)
	node := clean(started.Node)
	if asJSON {
		if _, err := c.stdout.Write(body); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(c.stdout, "drain of node %s started (the node gives it %s)\n", node,
			time.Duration(started.TimeoutSeconds*float64(time.Second)).Round(time.Millisecond))
	}
	if wait == 0 {
		return nil
	}
	deadline := time.Now().Add(wait)
	last := ""
	for {
		st, body, err := c.getStatus()
		if err != nil {
			if last == "draining" && errors.Is(err, errNodeGone) {
				// A drained node stops once it has left: its API going away
				// after "draining" is the end of the drain.
				if !asJSON {
					fmt.Fprintf(c.stdout, "node %s has left the cluster and stopped\n", node)
				}
				return nil
			}
			return err
		}
		if asJSON && st.State != last {
			if _, err := c.stdout.Write(body); err != nil {
				return err
			}
		}
		if !asJSON && st.State != last && st.State != "left" {
			fmt.Fprintf(c.stdout, "node %s: %s\n", node, clean(st.State))
		}
		last = st.State
		if st.State == "left" {
			if !asJSON {
				fmt.Fprintf(c.stdout, "node %s has left the cluster\n", node)
			}
			return nil
		}
		if d := st.Drain; d != nil && !d.Running && d.Error != "" {
			return fmt.Errorf("drain of node %s failed: %s", node, clean(d.Error))
		}
		if !time.Now().Before(deadline) {
			return fmt.Errorf("node %s has not left the cluster after %v (state %s); the drain may still be running on the node", node, wait, clean(st.State))
		}
		time.Sleep(min(ctlPollEvery, time.Until(deadline)))
	}
}

// clean makes a string from the network safe to print on a terminal:
// control and other non-printable characters become '?'.
func clean(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsPrint(r) {
			return r
		}
		return '?'
	}, s)
}
