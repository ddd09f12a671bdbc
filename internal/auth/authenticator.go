package auth

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// Config configures an Authenticator.
type Config struct {
	// AllowAnonymous admits clients that present no username. Without a
	// password file a presented username cannot be verified, so such
	// clients are then also admitted as anonymous (their username is not
	// used for authorization; Mosquitto would trust it).
	AllowAnonymous bool `yaml:"allow_anonymous"`
	// PasswordFile is a Mosquitto-compatible password file (see
	// PasswordFile). Empty means none.
	PasswordFile string `yaml:"password_file,omitempty"`
	// ACL configures authorization; not enabled means allow everything.
	ACL ACLConfig `yaml:"acl,omitempty"`
	// ReadOnly optionally maps public credentials (and/or anonymous
	// clients) to a subscribe-only role.
	ReadOnly *ReadOnlyRole `yaml:"read_only,omitempty"`
	// Throttle configures the per-source failure throttle.
	Throttle ThrottleConfig `yaml:"throttle,omitempty"`
	// MaxConcurrentHashes bounds concurrent password verifications (each
	// argon2id verification holds its memory cost, 32 MiB by default).
	// Default: GOMAXPROCS.
	MaxConcurrentHashes int `yaml:"max_concurrent_hashes,omitempty"`
}

// Result is the outcome of Authenticate.
type Result uint8

const (
	// ResultOK: the client is admitted with the returned Identity.
	ResultOK Result = iota
	// ResultBadCredentials: wrong or missing password, or unknown user.
	// MQTT 5 CONNACK 0x86 (Bad User Name or Password), MQTT 3.1.1 return
	// code 4.
	ResultBadCredentials
	// ResultNotAuthorized: the client may not connect this way (anonymous
	// access disabled, or a username with no means to verify it). MQTT 5
	// CONNACK 0x87 (Not authorized), MQTT 3.1.1 return code 5.
	ResultNotAuthorized
)

func (r Result) String() string {
	switch r {
	case ResultOK:
		return "ok"
	case ResultBadCredentials:
		return "bad credentials"
	case ResultNotAuthorized:
		return "not authorized"
	}
	return fmt.Sprintf("Result(%d)", uint8(r))
}

// Identity is who a client was authenticated as.
type Identity struct {
	// User is the verified username; "" for anonymous clients.
	User string
	// Anonymous is true when the client was admitted without a verified
	// username.
	Anonymous bool
	// ReadOnly is true when the read-only role governs the client's access
	// instead of the ACL.
	ReadOnly bool
}

func (id Identity) aclUser() string {
	if id.Anonymous {
		return ""
	}
	return id.User
}

// Stats are authentication counters for the metrics layer. All fields are
// updated atomically and may be read at any time.
type Stats struct {
	Success        atomic.Uint64 // Authenticate returned ResultOK
	BadCredentials atomic.Uint64 // Authenticate returned ResultBadCredentials
	NotAuthorized  atomic.Uint64 // Authenticate returned ResultNotAuthorized
	Throttled      atomic.Uint64 // an attempt was delayed, queued or refused because its source or username is throttled
	Refused        atomic.Uint64 // attempts refused while throttled, without checking the password (also in BadCredentials)
	Reloads        atomic.Uint64 // successful Reload calls
	ReloadErrors   atomic.Uint64 // failed Reload calls (old rules kept)
}

// Authenticator authenticates CONNECTs and authorizes publishes,
// subscriptions and deliveries. It combines anonymous access, an optional
// password file, an optional read-only role, ACLs and a failure throttle.
// It is safe for concurrent use; Reload swaps the password file and ACL
// atomically while checks run.
type Authenticator struct {
	cfg      Config
	log      *slog.Logger
	ro       *readOnly
	throttle *Throttle
	sem      chan struct{}
	state    atomic.Pointer[authState]
	reloadMu sync.Mutex
	stats    Stats

	// verify checks a password against the password file; tests replace
	// it to count (or hold) hash verifications.
	verify func(pf *PasswordFile, user string, password []byte) bool
}

type authState struct {
	pw  *PasswordFile // nil: no password file
	acl *ACL          // nil: allow all
}

// NewAuthenticator loads the password file and ACL cfg names and returns
// an Authenticator. logger may be nil (logging discarded).
func NewAuthenticator(cfg Config, logger *slog.Logger) (*Authenticator, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	ro, err := compileReadOnly(cfg.ReadOnly)
	if err != nil {
		return nil, err
	}
	n := cfg.MaxConcurrentHashes
	if n <= 0 {
		n = runtime.GOMAXPROCS(0)
	}
	a := &Authenticator{
		cfg:      cfg,
		log:      logger,
		ro:       ro,
		throttle: NewThrottle(cfg.Throttle),
		sem:      make(chan struct{}, n),
		verify:   (*PasswordFile).Verify,
	}
	st, err := a.load()
	if err != nil {
		return nil, err
	}
	a.state.Store(st)
	return a, nil
}

func (a *Authenticator) load() (*authState, error) {
	st := &authState{}
	var errs []error
	if a.cfg.PasswordFile != "" {
		pw, err := LoadPasswordFile(a.cfg.PasswordFile)
		if err != nil {
			errs = append(errs, fmt.Errorf("password file: %w", err))
		}
		st.pw = pw
	}
	acl, err := LoadACL(a.cfg.ACL)
	if err != nil {
		errs = append(errs, fmt.Errorf("acl: %w", err))
	}
	st.acl = acl
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	for _, w := range acl.Warnings() {
		a.log.Warn("acl warning", "msg", w)
	}
	if n := st.pw.weakerOrZero(); n > 0 {
		a.log.Warn("password file: some users have hashes much cheaper to verify than the strongest one; "+
			"a wrong password for them is refused faster than for an unknown user, which shows they exist: "+
			"re-hash them with 'isobar passwd' (argon2id)", "file", a.cfg.PasswordFile, "users", n)
	}
	return st, nil
}

// Reload re-reads the password file and the ACL file. If either fails to
// load, the previous password file and ACL both stay in force and the
// error is returned. Checks running concurrently see either the old or the
// new rules, never a mix.
func (a *Authenticator) Reload() error {
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	st, err := a.load()
	if err != nil {
		a.stats.ReloadErrors.Add(1)
		a.log.Error("auth reload failed, keeping previous rules", "err", err)
		return err
	}
	a.state.Store(st)
	a.stats.Reloads.Add(1)
	a.log.Info("auth reloaded", "users", st.pw.lenOrZero(), "acl_rules", st.acl.Len())
	return nil
}

func (pf *PasswordFile) weakerOrZero() int {
	if pf == nil {
		return 0
	}
	return pf.WeakerHashes()
}

func (pf *PasswordFile) lenOrZero() int {
	if pf == nil {
		return 0
	}
	return pf.Len()
}

// Stats returns the live counters.
func (a *Authenticator) Stats() *Stats { return &a.stats }

// Throttle returns the failure throttle (nil when disabled).
func (a *Authenticator) Throttle() *Throttle { return a.throttle }

// Delay returns how long the source remoteIP is still throttled (see
// Throttle.Delay), for a caller that then calls AuthenticateAfter with it.
// Login does both at once, and also applies the per-username throttle.
func (a *Authenticator) Delay(remoteIP netip.Addr) time.Duration {
	d := a.throttle.Delay(remoteIP)
	if d > 0 {
		a.stats.Throttled.Add(1)
	}
	return d
}

// Credentials are what a CONNECT presents. HasUser and HasPassword tell
// whether the CONNECT carried the User Name and Password fields (a field
// may be present and empty).
type Credentials struct {
	User        string
	HasUser     bool
	Password    []byte
	HasPassword bool
	Remote      netip.Addr
}

// Login authenticates a CONNECT for a broker that holds its answer back:
// it returns the outcome and how long to wait before sending the CONNACK
// (whatever the outcome). It applies the failure throttle (see
// ThrottleConfig) per source address and per username: while either is
// blocked, one attempt is queued for the end of the block (its password is
// checked, and the answer is held until then) and any other is refused
// with ResultBadCredentials without its password being checked. Attempts
// being verified count as failures until they succeed, so parallel
// guesses gain nothing. See Authenticate for the rules.
func (a *Authenticator) Login(c Credentials) (Identity, Result, time.Duration) {
	return a.login(c, -1)
}

// Authenticate checks CONNECT credentials for a caller that answers at
// once; a throttled attempt is then refused (see Login). Passwords are
// never logged.
//
// Rules, in order:
//   - No username: admitted as anonymous read-only if the read-only role
//     has Anonymous set, else as anonymous if AllowAnonymous, else
//     ResultNotAuthorized. A password without a username is ignored.
//   - A read-only role username: its password must match.
//   - With a password file: the username must exist and the password
//     match (a missing password is bad credentials).
//   - Without a password file: admitted as anonymous if AllowAnonymous,
//     else ResultNotAuthorized.
func (a *Authenticator) Authenticate(user string, hasUser bool, password []byte, hasPassword bool, remoteIP netip.Addr) (Identity, Result) {
	return a.AuthenticateAfter(0, user, hasUser, password, hasPassword, remoteIP)
}

// AuthenticateAfter is Authenticate for a caller that got wait from Delay
// and holds its answer back that long after this returns. An attempt that
// the throttle would make wait longer (the username is blocked for longer,
// or attempts in flight blocked the source meanwhile), or that finds
// another attempt already queued, is refused without checking the
// password. A failure counts from the end of the wait (see
// Throttle.FailureAfter), so the delays double as documented. Prefer
// Login, which computes the wait itself.
func (a *Authenticator) AuthenticateAfter(wait time.Duration, user string, hasUser bool, password []byte, hasPassword bool, remoteIP netip.Addr) (Identity, Result) {
	id, res, _ := a.login(Credentials{User: user, HasUser: hasUser, Password: password, HasPassword: hasPassword, Remote: remoteIP}, max(wait, 0))
	return id, res
}

// login runs one attempt. maxWait < 0: the throttle decides the wait
// (Login); otherwise the caller holds the answer exactly maxWait.
func (a *Authenticator) login(c Credentials, maxWait time.Duration) (Identity, Result, time.Duration) {
	st := a.state.Load()
	// Attempts that check a password file entry go through the throttle's
	// admission; the others (anonymous, read-only role, no password file)
	// never hash anything and are only delayed.
	if !c.HasUser || st.pw == nil || a.ro.knows(c.User) {
		wait := maxWait
		if wait < 0 {
			wait = a.Delay(c.Remote)
		}
		id, res := a.authenticate(st, c.User, c.HasUser, c.Password, c.HasPassword)
		a.count(res, c)
		if res == ResultBadCredentials && a.throttle.FailureAfter(c.Remote, wait) {
			a.logCrossed(c, true, false)
		}
		return id, res, wait
	}
	ar := a.throttle.admit(c.Remote, c.User, maxWait)
	if ar.throttled && maxWait <= 0 {
		// (A positive maxWait came from Delay, which counted it.)
		a.stats.Throttled.Add(1)
	}
	if ar.tk == nil {
		wait := maxWait
		if wait < 0 {
			wait = min(max(ar.wait, 0), a.throttle.cfg.MaxDelay)
		}
		a.stats.BadCredentials.Add(1)
		a.stats.Refused.Add(1)
		a.log.Debug("authentication attempt refused without checking: source or user throttled",
			"user", logUser(c.User), "remote", c.Remote.String())
		return Identity{}, ResultBadCredentials, wait
	}
	wait := maxWait
	if wait < 0 {
		wait = ar.wait
	}
	id, res := a.authenticate(st, c.User, c.HasUser, c.Password, c.HasPassword)
	a.count(res, c)
	o := outcomeOther
	switch res {
	case ResultOK:
		o = outcomeSuccess
	case ResultBadCredentials:
		o = outcomeFailure
	}
	addrX, userX := a.throttle.finish(ar.tk, o, wait)
	a.logCrossed(c, addrX, userX)
	return id, res, wait
}

func (a *Authenticator) count(res Result, c Credentials) {
	switch res {
	case ResultOK:
		a.stats.Success.Add(1)
	case ResultBadCredentials:
		a.stats.BadCredentials.Add(1)
		a.log.Debug("authentication failed", "user", logUser(c.User), "remote", c.Remote.String())
	case ResultNotAuthorized:
		a.stats.NotAuthorized.Add(1)
		a.log.Debug("connection not authorized", "has_user", c.HasUser, "remote", c.Remote.String())
	}
}

func (a *Authenticator) logCrossed(c Credentials, addr, user bool) {
	if addr {
		a.log.Warn("authentication failures from source exceed threshold; throttling",
			"remote", c.Remote.String(), "failures", a.throttle.Failures(c.Remote))
	}
	if user {
		a.log.Warn("authentication failures for user exceed threshold; throttling the user name",
			"user", logUser(c.User), "remote", c.Remote.String(), "failures", a.throttle.UserFailures(c.User))
	}
}

// logUser shortens a client-chosen user name (up to 64 KiB) for logs.
func logUser(u string) string {
	const maxLen = 64
	if len(u) <= maxLen {
		return u
	}
	cut := maxLen
	for cut > 0 && !utf8.RuneStart(u[cut]) {
		cut--
	}
	return u[:cut] + "..."
}

func (a *Authenticator) authenticate(st *authState, user string, hasUser bool, password []byte, hasPassword bool) (Identity, Result) {
	if !hasUser {
		switch {
		case a.ro != nil && a.ro.anonymous:
			return Identity{Anonymous: true, ReadOnly: true}, ResultOK
		case a.cfg.AllowAnonymous:
			return Identity{Anonymous: true}, ResultOK
		}
		return Identity{}, ResultNotAuthorized
	}
	if a.ro != nil {
		if known, ok := a.ro.lookup(user, password); known {
			if ok && hasPassword {
				return Identity{User: user, ReadOnly: true}, ResultOK
			}
			return Identity{}, ResultBadCredentials
		}
	}
	if st.pw != nil {
		if !hasPassword {
			return Identity{}, ResultBadCredentials
		}
		a.sem <- struct{}{}
		ok := a.verify(st.pw, user, password)
		<-a.sem
		if ok {
			return Identity{User: user}, ResultOK
		}
		return Identity{}, ResultBadCredentials
	}
	if a.cfg.AllowAnonymous {
		return Identity{Anonymous: true}, ResultOK
	}
	return Identity{}, ResultNotAuthorized
}

// ACL returns the ACL currently in force (nil: allow all).
func (a *Authenticator) ACL() *ACL { return a.state.Load().acl }

// CanPublish reports whether the client may publish (or set a will) on
// topic. Read-only clients never may. As in Mosquitto, and whether or not
// ACLs are configured, no client may publish to a topic beginning with
// "$SYS" (except "$SYS/broker/connection/+/state", which bridges use) or
// with "$share".
func (a *Authenticator) CanPublish(id Identity, clientID, topic string) bool {
	if id.ReadOnly || reservedForPublish(topic) {
		return false
	}
	return a.state.Load().acl.CanPublish(id.aclUser(), clientID, topic)
}

var bridgeStateFilter = []string{"$SYS", "broker", "connection", "+", "state"}

// reservedForPublish mirrors Mosquitto's acl__check_dollar for writes.
func reservedForPublish(topic string) bool {
	switch {
	case strings.HasPrefix(topic, "$SYS"):
		return !matchLevels(bridgeStateFilter, topic)
	case strings.HasPrefix(topic, "$share"):
		return true
	}
	return false
}

// CanSubscribe reports whether the client may subscribe to filter (see
// ACL.CanSubscribe; read-only clients: a role topic must cover it).
func (a *Authenticator) CanSubscribe(id Identity, clientID, filter string) bool {
	if id.ReadOnly {
		return a.ro != nil && a.ro.canSubscribe(filter)
	}
	return a.state.Load().acl.CanSubscribe(id.aclUser(), clientID, filter)
}

// CanReceive reports whether a message on topic may be delivered to the
// client. Call it for every delivery, retained messages included.
func (a *Authenticator) CanReceive(id Identity, clientID, topic string) bool {
	if id.ReadOnly {
		return a.ro != nil && a.ro.canReceive(topic)
	}
	return a.state.Load().acl.CanReceive(id.aclUser(), clientID, topic)
}
