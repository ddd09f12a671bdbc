package dedup

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/rueidis"
)

var (
	_ Store = (*Memory)(nil)
	_ Store = (*Redis)(nil)
)

// RedisOptions configure NewRedis.
type RedisOptions struct {
	// Addrs are host:port addresses: one for a standalone server, one or
	// more nodes of the cluster when Cluster is set (the others are
	// discovered).
	Addrs []string
	// Cluster selects Redis Cluster. NewRedis then fails unless the server
	// really is a cluster, and a standalone server is used only with
	// Cluster false (a cluster node is not used as a standalone server).
	Cluster  bool
	Username string // ACL user (Redis 6+); empty: the default user
	Password string
	TLS      *tls.Config // nil: plain TCP
	// KeyPrefix is put before every id; default "isobar:wis2:dedup:".
	KeyPrefix string
	DB        int // standalone only (a cluster has database 0 only)

	// Timeout bounds every call (Claim, Confirm, Release), retries and
	// redirections included, when the caller's context has no earlier
	// deadline; default 2s.
	Timeout time.Duration
	// DialTimeout bounds each connection attempt; default 5s.
	DialTimeout time.Duration
	// MinReplicas, when positive, makes Confirm wait (Redis WAIT) until
	// that many replicas have the "published" mark, so that a master that
	// fails right after Confirm cannot lose it and let a second copy be
	// published. Confirm returns ErrNotReplicated when fewer acknowledged
	// within ReplicaTimeout. Claim and Release do not wait: a lease lost
	// in a failover can let a second copy be claimed, but only one of the
	// two holders can then confirm (the other gets ErrNotHolder).
	MinReplicas int
	// ReplicaTimeout bounds the WAIT of Confirm; default 250ms.
	ReplicaTimeout time.Duration

	Log        *slog.Logger
	Registerer prometheus.Registerer // may be nil
}

// DefaultKeyPrefix is RedisOptions.KeyPrefix' default.
const DefaultKeyPrefix = "isobar:wis2:dedup:"

// The scripts run atomically on the node that owns the key (one key each,
// so they are valid in a cluster). A leased key holds the claimer's token,
// a published one publishedPrefix followed by the publisher's token.
//
// claim: SET NX PX takes a free id. A key already holding the caller's
// own token means this is a retry of a claim whose reply was lost (the
// client retries scripts on a connection failure), so it is Claimed too.
// Replies are Result values.
const claimScript = `
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 0 end
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then return 0 end
if v and string.sub(v, 1, 2) == 'P:' then return 1 end
return 2
`

// confirm: compare-and-set from the caller's lease to published, with
// the long TTL. A missing key (the lease expired and nobody claimed the id
// since) is recorded too, since the message was published; confirming
// again with the same token only refreshes the TTL. 1: done, 0: another
// token holds or published the id.
const confirmScript = `
local v = redis.call('GET', KEYS[1])
local p = 'P:' .. ARGV[1]
if v == false or v == ARGV[1] or v == p then
  redis.call('SET', KEYS[1], p, 'PX', ARGV[2])
  return 1
end
return 0
`

// release: compare-and-delete of the caller's lease. A missing key is
// already free. 1: done, 0: another token holds the id or it was
// published.
const releaseScript = `
local v = redis.call('GET', KEYS[1])
if v == false then return 1 end
if v == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
`

// Redis is a Store on Redis or Redis Cluster, shared by every node of the
// broker. It uses rueidis, whose auto-pipelining sends the commands of
// concurrent callers together on one connection per Redis node, so many
// relay goroutines claiming at once cost few round trips.
type Redis struct {
	c              rueidis.Client
	prefix         string
	timeout        time.Duration
	minReplicas    int
	replicaTimeout time.Duration
	log            *slog.Logger
	m              *metrics

	claim, confirm, release *rueidis.Lua

	closeOnce sync.Once
	mu        sync.RWMutex
	closed    bool
}

// NewRedis connects to Redis (it fails when no address answers) and
// returns the store.
func NewRedis(o RedisOptions) (*Redis, error) {
	if len(o.Addrs) == 0 {
		return nil, errors.New("dedup: redis: no address")
	}
	for _, a := range o.Addrs {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return nil, fmt.Errorf("dedup: redis: address %q: %w", a, err)
		}
	}
	if !o.Cluster && len(o.Addrs) > 1 {
		return nil, errors.New("dedup: redis: several addresses need cluster: true")
	}
	if o.Cluster && o.DB != 0 {
		return nil, errors.New("dedup: redis: a cluster has database 0 only")
	}
	if o.DB < 0 || o.MinReplicas < 0 || o.Timeout < 0 || o.DialTimeout < 0 || o.ReplicaTimeout < 0 {
		return nil, errors.New("dedup: redis: negative db, min replicas or timeout")
	}
	if o.KeyPrefix == "" {
		o.KeyPrefix = DefaultKeyPrefix
	}
	if o.Timeout == 0 {
		o.Timeout = 2 * time.Second
	}
	if o.DialTimeout == 0 {
		o.DialTimeout = 5 * time.Second
	}
	if o.ReplicaTimeout == 0 {
		o.ReplicaTimeout = 250 * time.Millisecond
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	copt := rueidis.ClientOption{
		InitAddress:       o.Addrs,
		Username:          o.Username,
		Password:          o.Password,
		TLSConfig:         o.TLS,
		SelectDB:          o.DB,
		ClientName:        "isobar-wis2-dedup",
		ForceSingleClient: !o.Cluster,
		// Client-side caching is of no use here (every call writes) and
		// needs CLIENT TRACKING, which some servers lack.
		DisableCache: true,
		Dialer:       net.Dialer{Timeout: o.DialTimeout},
		// A connection whose replies stop coming is abandoned after this,
		// whatever the callers' contexts say.
		ConnWriteTimeout: max(o.Timeout, 3*time.Second),
	}
	if o.Cluster {
		// Refresh the slot map now and then besides on MOVED and on a lost
		// connection, so that a failover is noticed promptly.
		copt.ClusterOption.ShardsRefreshInterval = 5 * time.Second
	}
	c, err := rueidis.NewClient(copt)
	if err != nil {
		return nil, fmt.Errorf("dedup: redis %v: %w", o.Addrs, err)
	}
	if o.Cluster && c.Mode() != rueidis.ClientModeCluster {
		c.Close()
		return nil, fmt.Errorf("dedup: redis %v: cluster: true but the server is not a Redis Cluster", o.Addrs)
	}
	m, err := newMetrics(o.Registerer, "redis")
	if err != nil {
		c.Close()
		return nil, err
	}
	return &Redis{
		c:              c,
		prefix:         o.KeyPrefix,
		timeout:        o.Timeout,
		minReplicas:    o.MinReplicas,
		replicaTimeout: o.ReplicaTimeout,
		log:            o.Log,
		m:              m,
		// The scripts are idempotent for a given token (see above), so the
		// client may retry them after a connection failure.
		claim:   rueidis.NewLuaScriptRetryable(claimScript),
		confirm: rueidis.NewLuaScriptRetryable(confirmScript),
		release: rueidis.NewLuaScriptRetryable(releaseScript),
	}, nil
}

// callCtx applies the store's timeout unless ctx ends earlier.
func (s *Redis) callCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	if d, ok := ctx.Deadline(); ok && time.Until(d) <= s.timeout {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, s.timeout)
}

// begin fails after Close; otherwise it holds the read lock, released by
// the returned function, so that Close waits for calls in flight.
func (s *Redis) begin() (func(), error) {
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return nil, ErrClosed
	}
	return s.mu.RUnlock, nil
}

func millis(d time.Duration) string {
	ms := d.Milliseconds()
	if ms < 1 {
		ms = 1
	}
	return strconv.FormatInt(ms, 10)
}

// Claim implements Store.
func (s *Redis) Claim(ctx context.Context, id string, lease time.Duration) (Result, Token, error) {
	start := time.Now()
	r, t, err := s.doClaim(ctx, id, lease)
	s.m.claimDone(r, err, start)
	return r, t, err
}

func (s *Redis) doClaim(ctx context.Context, id string, lease time.Duration) (Result, Token, error) {
	if err := checkID(id); err != nil {
		return 0, "", err
	}
	if err := checkDuration("lease", lease); err != nil {
		return 0, "", err
	}
	end, err := s.begin()
	if err != nil {
		return 0, "", err
	}
	defer end()
	ctx, cancel := s.callCtx(ctx)
	defer cancel()
	t := newToken()
	n, err := s.claim.Exec(ctx, s.c, []string{s.prefix + id}, []string{string(t), millis(lease)}).AsInt64()
	if err != nil {
		return 0, "", fmt.Errorf("dedup: redis claim: %w", err)
	}
	switch r := Result(n); r {
	case Claimed:
		return Claimed, t, nil
	case Published, Leased:
		return r, "", nil
	}
	return 0, "", fmt.Errorf("dedup: redis claim: unexpected reply %d", n)
}

// Confirm implements Store.
func (s *Redis) Confirm(ctx context.Context, id string, t Token, ttl time.Duration) error {
	start := time.Now()
	err := s.doConfirm(ctx, id, t, ttl)
	s.m.done(opConfirm, resultOf(err), start)
	return err
}

func (s *Redis) doConfirm(ctx context.Context, id string, t Token, ttl time.Duration) error {
	if err := checkID(id); err != nil {
		return err
	}
	if err := checkToken(t); err != nil {
		return err
	}
	if err := checkDuration("ttl", ttl); err != nil {
		return err
	}
	end, err := s.begin()
	if err != nil {
		return err
	}
	defer end()
	ctx, cancel := s.callCtx(ctx)
	defer cancel()
	key, args := s.prefix+id, []string{string(t), millis(ttl)}
	if s.minReplicas > 0 {
		return s.confirmReplicated(ctx, key, args)
	}
	n, err := s.confirm.Exec(ctx, s.c, []string{key}, args).AsInt64()
	if err != nil {
		return fmt.Errorf("dedup: redis confirm: %w", err)
	}
	if n != 1 {
		return ErrNotHolder
	}
	return nil
}

// confirmReplicated runs the confirm script and WAIT in one pipeline:
// rueidis sends a pipeline holding a blocking command (WAIT) on a
// connection of its own, and in a cluster sends the keyless WAIT to the
// node of the script's key, so WAIT counts the replicas that have this
// very write. The script goes as EVAL (not EVALSHA) so that no NOSCRIPT
// retry can reorder it after the WAIT.
func (s *Redis) confirmReplicated(ctx context.Context, key string, args []string) error {
	b := s.c.B()
	rs := s.c.DoMulti(ctx,
		b.Eval().Script(confirmScript).Numkeys(1).Key(key).Arg(args...).Build(),
		b.Wait().Numreplicas(int64(s.minReplicas)).Timeout(s.replicaTimeout.Milliseconds()).Build(),
	)
	n, err := rs[0].AsInt64()
	if err != nil {
		return fmt.Errorf("dedup: redis confirm: %w", err)
	}
	if n != 1 {
		return ErrNotHolder
	}
	acked, err := rs[1].AsInt64()
	if err != nil {
		return fmt.Errorf("dedup: redis confirm: WAIT: %w", err)
	}
	if acked < int64(s.minReplicas) {
		return fmt.Errorf("%w (%d of %d)", ErrNotReplicated, acked, s.minReplicas)
	}
	return nil
}

// Release implements Store.
func (s *Redis) Release(ctx context.Context, id string, t Token) error {
	start := time.Now()
	err := s.doRelease(ctx, id, t)
	s.m.done(opRelease, resultOf(err), start)
	return err
}

func (s *Redis) doRelease(ctx context.Context, id string, t Token) error {
	if err := checkID(id); err != nil {
		return err
	}
	if err := checkToken(t); err != nil {
		return err
	}
	end, err := s.begin()
	if err != nil {
		return err
	}
	defer end()
	ctx, cancel := s.callCtx(ctx)
	defer cancel()
	n, err := s.release.Exec(ctx, s.c, []string{s.prefix + id}, []string{string(t)}).AsInt64()
	if err != nil {
		return fmt.Errorf("dedup: redis release: %w", err)
	}
	if n != 1 {
		return ErrNotHolder
	}
	return nil
}

// Close waits for the calls in flight and closes the connections.
func (s *Redis) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		s.c.Close()
		s.m.unregister()
	})
	return nil
}
