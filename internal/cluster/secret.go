package cluster

import (
	"bytes"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
)

// Key derivation labels: each use of the cluster secret gets its own key,
// derived with HKDF-SHA256 (RFC 5869) from the secret with the label as the
// "info" input, so a key recovered from one use says nothing about another.
const (
	// GossipKeyLabel derives memberlist's AES-256-GCM key.
	GossipKeyLabel = "isobar gossip v1"
	// LinkKeyLabel derives the node-link handshake's HMAC-SHA256 key.
	LinkKeyLabel = "isobar link v1"
)

// MinSecretLen is the shortest accepted cluster secret, in bytes (after
// trimming surrounding white space).
const MinSecretLen = 32

// maxSecretFileSize bounds what LoadSecret reads: a secret is a line of
// text, so a bigger file is a configuration mistake (a wrong path).
const maxSecretFileSize = 64 << 10

// LoadSecret reads the cluster secret from a text file: its content with
// surrounding white space (a trailing newline) removed, which must be at
// least MinSecretLen bytes. The bytes are used as they are (a base64 text
// from GenerateSecret is not decoded), so every node needs the same file.
func LoadSecret(path string) ([]byte, error) {
	if path == "" {
		return nil, errors.New("cluster secret: no secret_file configured")
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("cluster secret: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxSecretFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("cluster secret: reading %s: %w", path, err)
	}
	if len(data) > maxSecretFileSize {
		return nil, fmt.Errorf("cluster secret: %s is larger than %d bytes; it should hold one line (generate one with `isobar keygen -o %s`)", path, maxSecretFileSize, path)
	}
	secret := bytes.TrimSpace(data)
	if len(secret) < MinSecretLen {
		return nil, fmt.Errorf("cluster secret: %s holds %d bytes (after trimming white space), at least %d are required (generate one with `isobar keygen -o FILE`)", path, len(secret), MinSecretLen)
	}
	return bytes.Clone(secret), nil
}

// GenerateSecret returns a new secret: 32 random bytes, base64url without
// padding (43 characters).
func GenerateSecret() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("generating a secret: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// DeriveKey derives the 32-byte key for one label from the cluster secret
// with HKDF-SHA256 (no salt, the label as info).
func DeriveKey(secret []byte, label string) []byte {
	key, err := hkdf.Key(sha256.New, secret, nil, label, 32)
	if err != nil {
		// Only a key length above 255*32 bytes fails.
		panic("cluster: hkdf: " + err.Error())
	}
	return key
}
