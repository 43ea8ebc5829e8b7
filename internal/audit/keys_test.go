package audit

import (
	"bytes"
	"strings"
	"testing"
)

func TestNewMemory_RejectsShortKey(t *testing.T) {
	_, err := NewMemory(make([]byte, MinKeyLen-1))
	wantField(t, err, "audit_key")
}

func TestFingerprint_IsKeyedAndNeverTheToken(t *testing.T) {
	const token = "007eJxTYBBZ-the-token"
	a, _ := NewMemory(testKey)
	b, _ := NewMemory(bytes.Repeat([]byte("k"), 32))
	fa := a.Fingerprint(token)
	if len(fa) != 64 || strings.Trim(fa, "0123456789abcdef") != "" {
		t.Errorf("fingerprint %q; want 64 lowercase hex digits", fa)
	}
	if fa != a.Fingerprint(token) {
		t.Error("fingerprint is not deterministic")
	}
	if fa == b.Fingerprint(token) {
		t.Error("fingerprint does not depend on the audit key")
	}
	if fa == a.Fingerprint(token+"x") {
		t.Error("different tokens share a fingerprint")
	}
	if strings.Contains(fa, token) {
		t.Error("fingerprint contains the token")
	}
}

func TestDeriveKeys_SeparatesFingerprintAndChainKeys(t *testing.T) {
	k, err := deriveKeys(testKey)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(k.fingerprint, k.chain) || bytes.Equal(k.chain, testKey) {
		t.Error("subkeys are not distinct from each other and the audit key")
	}
}
