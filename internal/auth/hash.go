package auth

import (
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/crypto/argon2"
)

// HashScheme names a password hashing scheme understood by Isobar.
type HashScheme string

// Supported password hashing schemes.
const (
	// SchemeArgon2id is Isobar's default: argon2id in PHC string form
	// "$argon2id$v=19$m=<KiB>,t=<passes>,p=<lanes>$<salt>$<key>" with
	// unpadded standard base64 salt and key.
	SchemeArgon2id HashScheme = "argon2id"
	// SchemePBKDF2SHA512 is Mosquitto's "$7$<iterations>$<salt>$<key>":
	// PBKDF2-HMAC-SHA512 over the password with a 12-byte salt and a 64-byte
	// key, both standard base64 with padding. mosquitto_passwd 2.x writes it.
	SchemePBKDF2SHA512 HashScheme = "sha512-pbkdf2"
	// SchemeSHA512 is Mosquitto's legacy "$6$<salt>$<key>": a single
	// SHA-512 over password || salt. Weak; supported for verification so
	// that existing Mosquitto 1.x password files keep working.
	SchemeSHA512 HashScheme = "sha512"
)

// Default argon2id parameters for new hashes. 32 MiB of memory, three
// passes and two lanes take roughly 40-60 ms on a 2-core machine, which
// keeps a CONNECT storm affordable while staying well above the RFC 9106
// minimums. Verification always uses the parameters stored in the hash.
const (
	Argon2Memory  uint32 = 32 * 1024 // KiB
	Argon2Time    uint32 = 3
	Argon2Threads uint8  = 2
	Argon2SaltLen        = 16
	Argon2KeyLen         = 32

	// MosquittoPBKDF2Iterations is the iteration count mosquitto_passwd 2.x
	// uses for $7$ hashes, and the one Isobar uses when asked to write them.
	MosquittoPBKDF2Iterations = 101
	mosquittoSaltLen          = 12
	mosquittoKeyLen           = sha512.Size
)

// Upper bounds on parameters read from a hash string. A typo such as
// m=6553600 would otherwise make every CONNECT allocate gigabytes.
const (
	maxArgon2Memory    = 1 << 20 // KiB, i.e. 1 GiB
	maxArgon2Time      = 64
	maxArgon2Threads   = 64
	maxPBKDF2Iteration = 1 << 24
	minSaltLen         = 8
	minKeyLen          = 16
	maxKeyLen          = 256
	maxSaltLen         = 256
)

// passwordHash is a parsed password hash.
type passwordHash struct {
	scheme     HashScheme
	memory     uint32 // argon2id, KiB
	time       uint32 // argon2id passes
	threads    uint8  // argon2id lanes
	iterations int    // pbkdf2
	salt       []byte
	key        []byte
}

var errNotHash = errors.New("not a recognised password hash")

// parseHash parses an encoded password hash. It returns errNotHash when s
// does not start like any supported scheme (for example a plain-text
// password) and a descriptive error when it does but is malformed.
func parseHash(s string) (*passwordHash, error) {
	switch {
	case strings.HasPrefix(s, "$argon2id$"):
		return parseArgon2id(s)
	case strings.HasPrefix(s, "$7$"):
		return parseMosquitto7(s)
	case strings.HasPrefix(s, "$6$"):
		return parseMosquitto6(s)
	case strings.HasPrefix(s, "$argon2i$"), strings.HasPrefix(s, "$argon2d$"):
		return nil, errors.New("only the argon2id variant of argon2 is supported")
	}
	return nil, errNotHash
}

func decodeB64(s string) ([]byte, error) {
	if strings.HasSuffix(s, "=") {
		return base64.StdEncoding.Strict().DecodeString(s)
	}
	return base64.RawStdEncoding.Strict().DecodeString(s)
}

func parseArgon2id(s string) (*passwordHash, error) {
	// "", "argon2id", "v=19", "m=..,t=..,p=..", salt, key
	parts := strings.Split(s, "$")
	if len(parts) != 6 {
		return nil, errors.New("malformed argon2id hash: want $argon2id$v=19$m=M,t=T,p=P$salt$key")
	}
	if parts[2] != "v=19" {
		return nil, fmt.Errorf("unsupported argon2id version %q (only v=19 is supported)", parts[2])
	}
	h := &passwordHash{scheme: SchemeArgon2id}
	var seenM, seenT, seenP bool
	for _, kv := range strings.Split(parts[3], ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return nil, fmt.Errorf("malformed argon2id parameter %q", kv)
		}
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("malformed argon2id parameter %q", kv)
		}
		switch k {
		case "m":
			h.memory, seenM = uint32(n), true
		case "t":
			h.time, seenT = uint32(n), true
		case "p":
			if n > 255 {
				return nil, fmt.Errorf("argon2id parallelism %d out of range", n)
			}
			h.threads, seenP = uint8(n), true
		default:
			return nil, fmt.Errorf("unknown argon2id parameter %q", k)
		}
	}
	if !seenM || !seenT || !seenP {
		return nil, errors.New("argon2id hash must specify m, t and p")
	}
	switch {
	case h.threads < 1 || h.threads > maxArgon2Threads:
		return nil, fmt.Errorf("argon2id parallelism p=%d out of range 1..%d", h.threads, maxArgon2Threads)
	case h.time < 1 || h.time > maxArgon2Time:
		return nil, fmt.Errorf("argon2id time cost t=%d out of range 1..%d", h.time, maxArgon2Time)
	case h.memory < 8*uint32(h.threads) || h.memory > maxArgon2Memory:
		return nil, fmt.Errorf("argon2id memory m=%d out of range %d..%d KiB", h.memory, 8*uint32(h.threads), maxArgon2Memory)
	}
	var err error
	if h.salt, err = decodeB64(parts[4]); err != nil {
		return nil, fmt.Errorf("argon2id salt is not valid base64")
	}
	if h.key, err = decodeB64(parts[5]); err != nil {
		return nil, fmt.Errorf("argon2id key is not valid base64")
	}
	return h, h.checkLengths()
}

func parseMosquitto7(s string) (*passwordHash, error) {
	// "", "7", iterations, salt, key
	parts := strings.Split(s, "$")
	if len(parts) != 5 {
		return nil, errors.New("malformed $7$ hash: want $7$iterations$salt$key")
	}
	n, err := strconv.Atoi(parts[2])
	if err != nil || n < 1 || n > maxPBKDF2Iteration {
		return nil, fmt.Errorf("$7$ iteration count %q out of range 1..%d", parts[2], maxPBKDF2Iteration)
	}
	h := &passwordHash{scheme: SchemePBKDF2SHA512, iterations: n}
	if h.salt, err = decodeB64(parts[3]); err != nil {
		return nil, errors.New("$7$ salt is not valid base64")
	}
	if h.key, err = decodeB64(parts[4]); err != nil {
		return nil, errors.New("$7$ key is not valid base64")
	}
	if len(h.key) != mosquittoKeyLen {
		return nil, fmt.Errorf("$7$ key is %d bytes, want %d", len(h.key), mosquittoKeyLen)
	}
	return h, h.checkLengths()
}

func parseMosquitto6(s string) (*passwordHash, error) {
	// "", "6", salt, key
	parts := strings.Split(s, "$")
	if len(parts) != 4 {
		return nil, errors.New("malformed $6$ hash: want $6$salt$key")
	}
	h := &passwordHash{scheme: SchemeSHA512}
	var err error
	if h.salt, err = decodeB64(parts[2]); err != nil {
		return nil, errors.New("$6$ salt is not valid base64")
	}
	if h.key, err = decodeB64(parts[3]); err != nil {
		return nil, errors.New("$6$ key is not valid base64")
	}
	if len(h.key) != sha512.Size {
		return nil, fmt.Errorf("$6$ key is %d bytes, want %d", len(h.key), sha512.Size)
	}
	return h, h.checkLengths()
}

func (h *passwordHash) checkLengths() error {
	if len(h.salt) < minSaltLen || len(h.salt) > maxSaltLen {
		return fmt.Errorf("salt length %d out of range %d..%d bytes", len(h.salt), minSaltLen, maxSaltLen)
	}
	if len(h.key) < minKeyLen || len(h.key) > maxKeyLen {
		return fmt.Errorf("key length %d out of range %d..%d bytes", len(h.key), minKeyLen, maxKeyLen)
	}
	return nil
}

// derive computes the key for password with h's scheme, parameters and salt.
func (h *passwordHash) derive(password []byte) []byte {
	switch h.scheme {
	case SchemeArgon2id:
		return argon2.IDKey(password, h.salt, h.time, h.memory, h.threads, uint32(len(h.key)))
	case SchemePBKDF2SHA512:
		k, err := pbkdf2.Key(sha512.New, string(password), h.salt, h.iterations, len(h.key))
		if err != nil {
			return nil
		}
		return k
	case SchemeSHA512:
		d := sha512.New()
		d.Write(password)
		d.Write(h.salt)
		return d.Sum(nil)
	}
	return nil
}

// verify reports whether password matches, comparing in constant time.
func (h *passwordHash) verify(password []byte) bool {
	k := h.derive(password)
	return len(k) == len(h.key) && subtle.ConstantTimeCompare(k, h.key) == 1
}

// sameCost returns a hash with h's scheme and cost parameters but a random
// salt and key, for verifying unknown users at the same cost as known ones.
func (h *passwordHash) sameCost() *passwordHash {
	d := *h
	d.salt = randomBytes(len(h.salt))
	d.key = randomBytes(len(h.key))
	return &d
}

// costKey identifies the verification cost of h (scheme and parameters).
func (h *passwordHash) costKey() string {
	return fmt.Sprintf("%s/%d/%d/%d/%d/%d", h.scheme, h.memory, h.time, h.threads, h.iterations, len(h.key))
}

// cost estimates the CPU time, in nanoseconds on a current x86-64 core,
// to verify a password against h. Only the order matters: it picks the
// strongest hash of a password file. Measured with Go's implementations:
// an argon2id block (1 KiB, one pass) costs about 500 ns plus a fixed
// ~25 us, a PBKDF2-HMAC-SHA512 iteration about 360 ns per 64-byte output
// block, a salted SHA-512 about 250 ns. argon2id lanes run in parallel
// but do not reduce the work.
func (h *passwordHash) cost() float64 {
	switch h.scheme {
	case SchemeArgon2id:
		return 25e3 + 500*float64(h.memory)*float64(h.time)
	case SchemePBKDF2SHA512:
		blocks := (len(h.key) + sha512.Size - 1) / sha512.Size
		return 1e3 + 360*float64(h.iterations)*float64(max(blocks, 1))
	case SchemeSHA512:
		return 250
	}
	return 0
}

// encode renders h in its canonical string form.
func (h *passwordHash) encode() string {
	std := base64.StdEncoding
	switch h.scheme {
	case SchemeArgon2id:
		raw := base64.RawStdEncoding
		return fmt.Sprintf("$argon2id$v=19$m=%d,t=%d,p=%d$%s$%s", h.memory, h.time, h.threads,
			raw.EncodeToString(h.salt), raw.EncodeToString(h.key))
	case SchemePBKDF2SHA512:
		return fmt.Sprintf("$7$%d$%s$%s", h.iterations, std.EncodeToString(h.salt), std.EncodeToString(h.key))
	case SchemeSHA512:
		return fmt.Sprintf("$6$%s$%s", std.EncodeToString(h.salt), std.EncodeToString(h.key))
	}
	return ""
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	// crypto/rand.Read never returns an error on supported platforms.
	_, _ = rand.Read(b)
	return b
}

func defaultArgon2Params() *passwordHash {
	return &passwordHash{
		scheme:  SchemeArgon2id,
		memory:  Argon2Memory,
		time:    Argon2Time,
		threads: Argon2Threads,
		salt:    make([]byte, Argon2SaltLen),
		key:     make([]byte, Argon2KeyLen),
	}
}

// HashPassword hashes password with scheme using a fresh random salt and
// Isobar's default parameters for that scheme, returning the encoded hash
// suitable for a password file. An empty scheme means SchemeArgon2id.
func HashPassword(scheme HashScheme, password []byte) (string, error) {
	var h *passwordHash
	switch scheme {
	case SchemeArgon2id, "":
		h = defaultArgon2Params()
		h.salt = randomBytes(Argon2SaltLen)
	case SchemePBKDF2SHA512:
		h = &passwordHash{scheme: scheme, iterations: MosquittoPBKDF2Iterations, salt: randomBytes(mosquittoSaltLen), key: make([]byte, mosquittoKeyLen)}
	case SchemeSHA512:
		h = &passwordHash{scheme: scheme, salt: randomBytes(mosquittoSaltLen), key: make([]byte, sha512.Size)}
	default:
		return "", fmt.Errorf("unknown hash scheme %q (want %s, %s or %s)", scheme, SchemeArgon2id, SchemePBKDF2SHA512, SchemeSHA512)
	}
	h.key = h.derive(password)
	if h.key == nil {
		return "", fmt.Errorf("hashing with %s failed", scheme)
	}
	return h.encode(), nil
}

// VerifyHash reports whether password matches the encoded hash. It returns
// an error only when the hash itself cannot be parsed.
func VerifyHash(encoded string, password []byte) (bool, error) {
	h, err := parseHash(encoded)
	if err != nil {
		return false, err
	}
	return h.verify(password), nil
}
