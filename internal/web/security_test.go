package web_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

var wrongLogin = map[string]string{"username": adminUser, "password": "guess"}

// TestLoginThrottleParallelGuesses: parallel guesses from one address do
// not overtake the throttle (an attempt in flight counts as a failure), the
// refused ones get 429 with Retry-After without a password check, and the
// administrator, from elsewhere, gets in after a short wait at most.
func TestLoginThrottleParallelGuesses(t *testing.T) {
	e := start(t, "")
	attacker := clientFrom(t, "127.0.0.2")
	const n = 40
	codes := make([]int, n)
	retry := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := e.do(req{method: "POST", path: "/api/v1/login", body: wrongLogin, client: attacker})
			codes[i], retry[i] = r.code, r.header.Get("Retry-After")
		}()
	}
	wg.Wait()
	checked, refused := 0, 0
	for i, c := range codes {
		switch c {
		case http.StatusUnauthorized:
			checked++
		case http.StatusTooManyRequests:
			refused++
			if s, err := strconv.Atoi(retry[i]); err != nil || s < 1 {
				t.Errorf("429 with Retry-After %q", retry[i])
			}
		default:
			t.Errorf("guess answered %d", c)
		}
	}
	if checked > 10 {
		t.Errorf("%d of %d parallel guesses had their password checked, want at most 10 (%d refused)", checked, n, refused)
	}
	// The attacker stays refused, even with the right password.
	if r := e.do(req{method: "POST", path: "/api/v1/login", body: map[string]string{"username": adminUser, "password": adminPass}, client: attacker}); r.code != http.StatusTooManyRequests {
		t.Errorf("right password from the throttled address: %d", r.code)
	}
	// The administrator from another address: the user name lockout is
	// short, and Retry-After says how short.
	admin := clientFrom(t, "127.0.0.3")
	deadline := time.Now().Add(15 * time.Second)
	for attempt := 0; ; attempt++ {
		r := e.do(req{method: "POST", path: "/api/v1/login", body: map[string]string{"username": adminUser, "password": adminPass}, client: admin})
		if r.code == http.StatusOK {
			break
		}
		s, err := strconv.Atoi(r.header.Get("Retry-After"))
		if r.code != http.StatusTooManyRequests || err != nil || s > 5 || attempt >= 5 || time.Now().After(deadline) {
			t.Fatalf("administrator from another address, attempt %d: %d Retry-After %q %s", attempt, r.code, r.header.Get("Retry-After"), r.body)
		}
		time.Sleep(time.Duration(s) * time.Second)
	}
}

// TestThrottleSparesSessionsAndKeys: while an address is throttled, a
// valid session cookie and a valid API key from that same address still
// work; a password does not.
func TestThrottleSparesSessionsAndKeys(t *testing.T) {
	e := start(t, "")
	c, _ := e.login() // from 127.0.0.1
	var last resp
	for range 15 {
		last = e.do(req{method: "POST", path: "/api/v1/login", body: map[string]string{"username": "nobody", "password": "guess"}})
		if last.code == http.StatusTooManyRequests {
			break
		}
	}
	if last.code != http.StatusTooManyRequests {
		t.Fatalf("guesses not throttled: %d", last.code)
	}
	if r := e.do(req{method: "GET", path: "/api/v1/stats", client: c}); r.code != 200 {
		t.Errorf("session cookie while the address is throttled: %d %s", r.code, r.body)
	}
	if r := e.do(req{method: "GET", path: "/api/v1/stats", bearer: apiKey}); r.code != 200 {
		t.Errorf("API key while the address is throttled: %d %s", r.code, r.body)
	}
	if r := e.do(req{method: "GET", path: "/api/v1/stats", basic: true}); r.code != http.StatusTooManyRequests {
		t.Errorf("Basic while the address is throttled: %d", r.code)
	}
	if r := e.do(req{method: "GET", path: "/api/v1/stats", bearer: "wrong"}); r.code != http.StatusTooManyRequests {
		t.Errorf("wrong API key while the address is throttled: %d", r.code)
	}
}

// TestBasicParallelNotThrottled: a script sending many requests at once
// with the right (recently verified) password is not taken for a guesser.
func TestBasicParallelNotThrottled(t *testing.T) {
	e := start(t, "")
	e.get("/api/v1/session", nil)
	var wg sync.WaitGroup
	codes := make([]int, 40)
	for i := range codes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			codes[i] = e.do(req{method: "GET", path: "/api/v1/session", basic: true}).code
		}()
	}
	wg.Wait()
	for i, c := range codes {
		if c != 200 {
			t.Errorf("parallel Basic request %d: %d", i, c)
		}
	}
}

// TestTrustedProxies: X-Forwarded-For names the client only when the peer
// is a configured proxy, read from the right so a client cannot choose its
// own address; the header name's case does not matter.
func TestTrustedProxies(t *testing.T) {
	guessUntilRefused := func(e *env, xff string) int {
		t.Helper()
		for i := range 15 {
			r := e.do(req{method: "POST", path: "/api/v1/login", body: map[string]string{"username": "nobody" + strconv.Itoa(i), "password": "guess"},
				header: map[string]string{"x-forwarded-for": xff}})
			if r.code == http.StatusTooManyRequests {
				return i
			}
			if r.code != http.StatusUnauthorized {
				t.Fatalf("guess with X-Forwarded-For %q: %d", xff, r.code)
			}
		}
		return -1
	}
	e := start(t, "  trusted_proxies: [127.0.0.1, \"::1\"]\n")
	if n := guessUntilRefused(e, "127.0.0.9"); n < 0 {
		t.Fatal("forwarded client never throttled")
	}
	// Another client behind the same proxy is not affected.
	r := e.do(req{method: "POST", path: "/api/v1/login", body: wrongLogin, header: map[string]string{"X-Forwarded-For": "127.0.0.10"}})
	if r.code != http.StatusUnauthorized {
		t.Errorf("another client behind the proxy: %d", r.code)
	}
	// The throttled client prepending an address of its choice is still
	// itself (the proxy appended the real one).
	r = e.do(req{method: "POST", path: "/api/v1/login", body: wrongLogin, header: map[string]string{"X-Forwarded-For": "127.0.0.11, 127.0.0.9"}})
	if r.code != http.StatusTooManyRequests {
		t.Errorf("spoofed X-Forwarded-For prefix: %d", r.code)
	}
	// A chain through a second trusted proxy.
	r = e.do(req{method: "POST", path: "/api/v1/login", body: wrongLogin, header: map[string]string{"X-FORWARDED-FOR": "127.0.0.9, 127.0.0.1"}})
	if r.code != http.StatusTooManyRequests {
		t.Errorf("X-Forwarded-For through two proxies: %d", r.code)
	}

	// Without trusted proxies the header is ignored: varying it does not
	// escape the throttle of the real peer.
	e2 := start(t, "")
	for i := range 15 {
		r := e2.do(req{method: "POST", path: "/api/v1/login", body: map[string]string{"username": "nobody", "password": "guess"},
			header: map[string]string{"X-Forwarded-For": fmt.Sprintf("127.0.1.%d", i)}})
		if r.code == http.StatusTooManyRequests {
			return
		}
	}
	t.Error("X-Forwarded-For from an untrusted peer escaped the throttle")
}

// TestHostHeader: DNS rebinding protection. A Host that is not this
// listener's gets 421 with a JSON error, on the API, the console and
// /metrics; IP literals, localhost and http.allowed_hosts pass.
func TestHostHeader(t *testing.T) {
	e := start(t, "")
	_, port, _ := net.SplitHostPort(e.n.HTTP.Addr().String())
	for _, h := range []string{"rebind.attacker.example:" + port, "rebind.attacker.example", "localhost.attacker.example:" + port, "127.0.0.1.nip.example"} {
		for _, p := range []string{"/api/v1/stats", "/", "/metrics", "/api/v1/login"} {
			r := e.do(req{method: "GET", path: p, basic: true, host: h})
			if r.code != http.StatusMisdirectedRequest {
				t.Errorf("GET %s with Host %q: %d, want 421", p, h, r.code)
				continue
			}
			if msg := r.errorMessage(t); !strings.Contains(msg, "allowed_hosts") {
				t.Errorf("421 message %q", msg)
			}
		}
	}
	for _, h := range []string{"127.0.0.1:" + port, "localhost:" + port, "LOCALHOST.:" + port, "[::1]:" + port, "127.0.0.1"} {
		if r := e.do(req{method: "GET", path: "/api/v1/stats", basic: true, host: h}); r.code != 200 {
			t.Errorf("Host %q: %d %s", h, r.code, r.body)
		}
	}
	// Health checks answer whatever the Host.
	if r := e.do(req{method: "GET", path: "/healthz", host: "lb.example"}); r.code != 200 {
		t.Errorf("healthz with another Host: %d", r.code)
	}

	e2 := start(t, "  allowed_hosts: [broker.example.com, \"*.brokers.example\"]\n")
	for h, want := range map[string]int{
		"broker.example.com:" + port: 200, "Broker.Example.Com": 200, "b1.brokers.example": 200, "brokers.example": 421,
		"example.com": 421, "evil-broker.example.com": 421, "127.0.0.1:" + port: 200, "localhost": 200,
	} {
		if r := e2.do(req{method: "GET", path: "/api/v1/stats", basic: true, host: h}); r.code != want {
			t.Errorf("allowed_hosts: Host %q: %d, want %d", h, r.code, want)
		}
	}
	e3 := start(t, "  allowed_hosts: [\"*\"]\n")
	if r := e3.do(req{method: "GET", path: "/api/v1/stats", basic: true, host: "anything.example"}); r.code != 200 {
		t.Errorf("allowed_hosts *: %d", r.code)
	}
}

// selfSigned writes a certificate and key for 127.0.0.1 into dir.
func selfSigned(t *testing.T, dir string) (cert, key string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kd, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	cert, key = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd}), 0o600); err != nil {
		t.Fatal(err)
	}
	return cert, key
}

// TestCookieSecure: the session cookie is HttpOnly and SameSite=Strict
// always, Secure over HTTPS by default, and Secure when cookie_secure says
// so (TLS terminated by a proxy) or not when it says not.
func TestCookieSecure(t *testing.T) {
	attrs := func(e *env, client *http.Client) (login, logout string) {
		t.Helper()
		r := e.do(req{method: "POST", path: "/api/v1/login", body: map[string]string{"username": adminUser, "password": adminPass}, client: client})
		if r.code != 200 {
			t.Fatalf("login %d %s", r.code, r.body)
		}
		login = r.header.Get("Set-Cookie")
		r = e.do(req{method: "POST", path: "/api/v1/logout", client: client})
		return login, r.header.Get("Set-Cookie")
	}
	secure := func(sc string) bool {
		for _, a := range strings.Split(sc, ";") {
			if strings.EqualFold(strings.TrimSpace(a), "Secure") {
				return true
			}
		}
		return false
	}
	check := func(name string, e *env, client *http.Client, want bool) {
		t.Helper()
		in, out := attrs(e, client)
		for _, sc := range []string{in, out} {
			if secure(sc) != want || !strings.Contains(sc, "HttpOnly") || !strings.Contains(sc, "SameSite=Strict") {
				t.Errorf("%s: Set-Cookie %q, want Secure=%v, HttpOnly, SameSite=Strict", name, sc, want)
			}
		}
	}
	check("plain HTTP", start(t, ""), nil, false)
	check("cookie_secure: true", start(t, "  cookie_secure: true\n"), nil, true)

	cert, key := selfSigned(t, t.TempDir())
	tlsClient := func(e *env) *http.Client {
		e.base = "https://" + e.n.HTTP.Addr().String()
		tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}} //nolint:gosec // test certificate
		t.Cleanup(tr.CloseIdleConnections)
		return &http.Client{Transport: tr, Timeout: 10 * time.Second}
	}
	tlsConf := fmt.Sprintf("  tls: {cert_file: %q, key_file: %q}\n", cert, key)
	e := start(t, tlsConf)
	check("HTTPS", e, tlsClient(e), true)
	e = start(t, tlsConf+"  cookie_secure: false\n")
	check("HTTPS with cookie_secure: false", e, tlsClient(e), false)
}

// TestGeneratedPasswordDefaultFile: without http.users and without
// http.generated_password_file, the password goes to the data directory.
func TestGeneratedPasswordDefaultFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	log, n := startLogged(t, fmt.Sprintf("store: {mode: memory, data_dir: %q}\nhttp: {address: \"127.0.0.1:0\"}\n", dir))
	path := filepath.Join(dir, "http-admin-password")
	pw := readPasswordFile(t, path)
	if strings.Contains(log.String(), pw) || !strings.Contains(log.String(), "password_file="+path) {
		t.Errorf("log:\n%s", log.String())
	}
	e := &env{t: t, n: n, base: "http://" + n.HTTP.Addr().String()}
	r := e.do(req{method: "GET", path: "/api/v1/stats", header: map[string]string{
		"Authorization": "Basic " + base64.StdEncoding.EncodeToString([]byte("admin:"+pw))}})
	if r.code != 200 {
		t.Fatalf("generated password refused: %d %s", r.code, r.body)
	}
}

// readPasswordFile reads a generated password file, checking its mode.
func readPasswordFile(t *testing.T, path string) string {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("%s: mode %v, want 0600", path, st.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pw := strings.TrimSpace(string(b))
	if len(pw) < 20 {
		t.Fatalf("password file holds %q", b)
	}
	return pw
}
