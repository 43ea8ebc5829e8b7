package audit

import (
	"bytes"
	"strings"
	"testing"
)

func TestNewMemory_RejectsShortKeys(t *testing.T) {
	short := make([]byte, MinKeyLen-1)
	for _, c := range []struct {
		name     string
		current  []byte
		previous [][]byte
		field    string
	}{
		{"Current", short, nil, "audit_key"},
		{"FirstPrevious", testKey, [][]byte{short}, "previous_keys[0]"},
		{"SecondPrevious", testKey, [][]byte{rotatedKey, short}, "previous_keys[1]"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := NewMemory(c.current, c.previous...)
			wantField(t, err, c.field)
		})
	}
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

func TestFingerprint_UsesTheCurrentKeyOnly(t *testing.T) {
	const token = "007eJxTYBBZ-the-token"
	a, _ := NewMemory(testKey)
	rotated, _ := NewMemory(rotatedKey, testKey)
	fresh, _ := NewMemory(rotatedKey)
	if rotated.Fingerprint(token) != fresh.Fingerprint(token) || rotated.Fingerprint(token) == a.Fingerprint(token) {
		t.Error("a rotated log fingerprints new tokens under a previous key")
	}
}

func TestDeriveKeys_SeparatesFingerprintAndChainKeys(t *testing.T) {
	k, err := deriveKeys(testKey, "audit_key")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(k.fingerprint, k.chain) || bytes.Equal(k.chain, testKey) {
		t.Error("subkeys are not distinct from each other and the audit key")
	}
}

func TestKeyID_IsAPublicStableNameOfTheKey(t *testing.T) {
	// HMAC-SHA256(key, "broker/audit/key-id/v1"), first 8 bytes, as computed
	// independently of this package.
	for key, want := range map[string]string{
		string(testKey):    "eac7a5ce9656704f",
		string(rotatedKey): "e0968e87b7411225",
	} {
		if got := KeyID([]byte(key)); got != want {
			t.Errorf("KeyID = %q; want %q", got, want)
		}
	}
	k, _ := deriveKeys(testKey, "audit_key")
	if k.id != KeyID(testKey) {
		t.Errorf("derived key id %q; want KeyID %q", k.id, KeyID(testKey))
	}
}

func TestNewKeyring_CurrentFirstWithoutRepeats(t *testing.T) {
	r, err := newKeyring(rotatedKey, [][]byte{testKey, rotatedKey, testKey})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, k := range r.all {
		ids = append(ids, k.id)
	}
	if want := []string{KeyID(rotatedKey), KeyID(testKey)}; strings.Join(ids, ",") != strings.Join(want, ",") || r.current.id != want[0] {
		t.Errorf("keys %v, current %s; want %v with the current key first", ids, r.current.id, want)
	}
}
