package audit

import (
	"bytes"
	"strings"
	"testing"
)

func TestParseKey_AcceptsHexAndBase64OfAtLeast32Bytes(t *testing.T) {
	key := bytes.Repeat([]byte{0xfb}, 32)
	for _, c := range []struct{ name, in string }{
		{"Hex", strings.Repeat("fb", 32)},
		{"HexUpperWithNewline", strings.Repeat("FB", 32) + "\n"},
		{"Base64Std", "+/v7+/v7+/v7+/v7+/v7+/v7+/v7+/v7+/v7+/v7+/s="},
		{"Base64StdUnpadded", "+/v7+/v7+/v7+/v7+/v7+/v7+/v7+/v7+/v7+/v7+/s"},
		{"Base64URL", "-_v7-_v7-_v7-_v7-_v7-_v7-_v7-_v7-_v7-_v7-_s"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := ParseKey(c.in)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, key) {
				t.Errorf("ParseKey = %x; want %x", got, key)
			}
		})
	}
}

func TestParseKey_RejectsShortOrGarbledKeysWithoutEchoingThem(t *testing.T) {
	for _, c := range []struct{ name, in string }{
		{"Empty", ""},
		{"Blank", "  \n"},
		{"ShortHex", strings.Repeat("ab", 31)},
		{"ShortBase64", "c2hvcnRzZWNyZXQ="},
		{"NotBase64", "this is not a key at all, it has spaces!!"},
		{"OddHexIsBase64AndShort", "abc"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseKey(c.in)
			wantField(t, err, "audit_key")
			if s := strings.TrimSpace(c.in); s != "" && strings.Contains(err.Error(), s) {
				t.Errorf("error %q repeats the key", err)
			}
		})
	}
}

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
