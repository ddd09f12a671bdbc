package cluster

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func mbWriteSecret(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestSecretLoadTrims(t *testing.T) {
	s := strings.Repeat("k", 40)
	got, err := LoadSecret(mbWriteSecret(t, "  \n"+s+"\r\n\n"))
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != s {
		t.Fatalf("got %q, want %q", got, s)
	}
}

func TestSecretLoadErrors(t *testing.T) {
	for _, tc := range []struct {
		name, path, want string
	}{
		{"empty path", "", "no secret_file"},
		{"missing", filepath.Join(t.TempDir(), "nope"), "no such file"},
		{"short", mbWriteSecret(t, strings.Repeat("a", 31)+"\n"), "31 bytes"},
		{"blank", mbWriteSecret(t, " \n\t\n"), "0 bytes"},
		{"short after trim", mbWriteSecret(t, "   "+strings.Repeat("a", 20)+"            \n"), "at least 32"},
		{"huge", mbWriteSecret(t, strings.Repeat("a", maxSecretFileSize+1)), "larger than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := LoadSecret(tc.path)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error mentioning %q", err, tc.want)
			}
		})
	}
}

func TestSecretGenerate(t *testing.T) {
	a, err := GenerateSecret()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := GenerateSecret()
	if len(a) != 43 || a == b {
		t.Fatalf("secrets %q %q: want 43 characters, different", a, b)
	}
	raw, err := base64.RawURLEncoding.DecodeString(a)
	if err != nil || len(raw) != 32 {
		t.Fatalf("%q is not 32 bytes base64url: %v", a, err)
	}
	// What keygen writes is what LoadSecret accepts.
	got, err := LoadSecret(mbWriteSecret(t, a+"\n"))
	if err != nil || string(got) != a {
		t.Fatalf("LoadSecret: %q %v", got, err)
	}
}

// DeriveKey is HKDF-SHA256 without salt: RFC 5869 test case 3 (empty salt
// and info) gives the known output, and labels separate keys.
func TestSecretDeriveKey(t *testing.T) {
	ikm := bytes.Repeat([]byte{0x0b}, 22)
	want, _ := hex.DecodeString("8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d")
	if got := DeriveKey(ikm, ""); !bytes.Equal(got, want) {
		t.Fatalf("DeriveKey(rfc5869 case 3) = %x, want %x", got, want)
	}
	secret := []byte(strings.Repeat("s", 32))
	g, l := DeriveKey(secret, GossipKeyLabel), DeriveKey(secret, LinkKeyLabel)
	if len(g) != 32 || len(l) != 32 || bytes.Equal(g, l) || !bytes.Equal(g, DeriveKey(secret, GossipKeyLabel)) {
		t.Fatalf("gossip %x link %x: want 32 bytes each, distinct, deterministic", g, l)
	}
	if bytes.Equal(g, DeriveKey([]byte(strings.Repeat("t", 32)), GossipKeyLabel)) {
		t.Fatal("different secrets gave the same key")
	}
}
