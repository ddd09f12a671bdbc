// Package dedup decides, cluster-wide, which copy of a WIS2 notification a
// Global Broker republishes. The broker receives the same notification id
// from many sources, and from two redundant subscribers per source on
// different nodes; exactly one copy must go out, and an id must never be
// "burned" by a node that then fails to publish it, because the other
// copies would be dropped and the notification silently lost.
//
// So de-duplication is a set-if-absent with a lease rather than a plain
// set: Claim takes the id for a short lease (Redis SET NX PX) and hands
// back a Token; the holder publishes and then calls Confirm, which turns
// the entry into "published" for the long TTL only while the token still
// holds it (a Lua compare-and-set in Redis), or Release when it could not
// publish, which frees the id at once for the next copy. A copy is dropped
// only when Claim answers Published, that is once another copy has
// actually been published. When a holder dies, its lease expires and the
// next copy to arrive claims the id.
//
// Two stores implement the interface: Memory (one node, in process) and
// Redis (standalone or Redis Cluster, shared by every node of the broker).
package dedup

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"time"
)

// Result is what Claim found.
type Result int

const (
	// Claimed: this caller holds the id now. Publish, then Confirm (or
	// Release when publishing failed).
	Claimed Result = iota
	// Published: a copy was already published. Drop this one.
	Published
	// Leased: another caller holds the id and has not confirmed yet. Retry
	// later: the holder may still fail, and then its lease expires (or it
	// releases the id) and a later Claim wins.
	Leased
)

func (r Result) String() string {
	switch r {
	case Claimed:
		return "claimed"
	case Published:
		return "published"
	case Leased:
		return "leased"
	}
	return fmt.Sprintf("Result(%d)", int(r))
}

// Token identifies one claim: only its holder may confirm or release the
// id. Tokens are random (128 bits), so they are unique across the nodes
// sharing a store.
type Token string

// Store is a de-duplication store.
//
// Errors: every method may fail (Redis down, a timeout, the store closed).
// On an error from Claim the caller does not know whether another copy was
// published, so it must NOT drop the message: it either retries the claim
// later or publishes anyway (a duplicate is acceptable, a loss is not).
// That decision belongs to the relay, not to the store. An error from
// Confirm means the "published" mark may not have been recorded (a later
// copy may then be republished: a duplicate, never a loss); an error from
// Release means the id stays leased until the lease expires (a delay,
// never a loss).
type Store interface {
	// Claim tries to take id for lease. It returns Claimed and a token
	// when the id was free (never seen, released, or its lease or TTL
	// expired), Published when a copy was already published and Leased
	// when another claim holds it.
	Claim(ctx context.Context, id string, lease time.Duration) (Result, Token, error)
	// Confirm records that the holder of t published id: later claims
	// answer Published for ttl. It returns ErrNotHolder when another claim
	// holds the id (t's lease expired and another copy claimed it) or
	// another token published it; the message is then published twice,
	// which the caller may count. When t's lease expired and nobody claimed
	// the id since, Confirm still records it: the message was published.
	Confirm(ctx context.Context, id string, t Token, ttl time.Duration) error
	// Release gives up t's claim on id because it was not published:
	// another copy may claim the id at once. Releasing an id that is no
	// longer held by anybody is not an error; it returns ErrNotHolder when
	// another token holds the id or the id was published.
	Release(ctx context.Context, id string, t Token) error
	// Close releases the store's resources. Calls after Close fail with
	// ErrClosed.
	Close() error
}

var (
	// ErrNotHolder is returned by Confirm and Release when the token does
	// not hold the id any more.
	ErrNotHolder = errors.New("dedup: the token does not hold the id")
	// ErrClosed is returned by calls made after Close.
	ErrClosed = errors.New("dedup: store closed")
	// ErrInvalid is returned for an empty or too long id, an empty token or
	// a duration that is not positive.
	ErrInvalid = errors.New("dedup: invalid argument")
	// ErrNotReplicated is returned by a Redis Confirm with MinReplicas set
	// when fewer replicas than that acknowledged the write in time: the
	// "published" mark is recorded on the master but would be lost if the
	// master failed now (a later copy could then be published again).
	ErrNotReplicated = errors.New("dedup: confirm not acknowledged by enough replicas")
)

// MaxIDLength bounds the ids accepted (WIS2 ids are UUIDs or similar short
// strings; a notification is at most 8192 bytes anyway).
const MaxIDLength = 1024

// publishedPrefix marks a published entry's value, followed by the token
// that published it. Tokens never contain ':' (see newToken).
const publishedPrefix = "P:"

func newToken() Token {
	// rand.Text is 26 characters of base32 (A-Z, 2-7): 128 random bits.
	return Token(rand.Text())
}

func checkID(id string) error {
	if id == "" {
		return fmt.Errorf("%w: empty id", ErrInvalid)
	}
	if len(id) > MaxIDLength {
		return fmt.Errorf("%w: id of %d bytes (at most %d)", ErrInvalid, len(id), MaxIDLength)
	}
	return nil
}

func checkDuration(what string, d time.Duration) error {
	if d <= 0 {
		return fmt.Errorf("%w: %s %v is not positive", ErrInvalid, what, d)
	}
	return nil
}

func checkToken(t Token) error {
	if t == "" {
		return fmt.Errorf("%w: empty token", ErrInvalid)
	}
	return nil
}
