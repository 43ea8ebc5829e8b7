package audit

import (
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"strings"

	"github.com/broker-dev/broker/internal/apperr"
)

// MinKeyLen is the shortest audit key accepted, in bytes.
const MinKeyLen = 32

// ParseKey decodes the audit key as configured (BROKER_AUDIT_KEY). The value,
// with surrounding white space removed, is hex when it consists only of hex
// digits (an even number of them), and base64 otherwise (standard or URL
// alphabet, padding optional). It must decode to at least MinKeyLen bytes, e.g.
// the output of `openssl rand -hex 32` or `openssl rand -base64 32`. Errors
// never contain the value.
func ParseKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, apperr.Field("audit_key", "is required (at least %d bytes as hex or base64)", MinKeyLen)
	}
	var key []byte
	var err error
	if isHex(s) {
		key, err = hex.DecodeString(s)
	} else {
		key, err = decodeBase64(s)
	}
	if err != nil {
		return nil, apperr.Field("audit_key", "is neither hex nor base64")
	}
	if len(key) < MinKeyLen {
		return nil, apperr.Field("audit_key", "decodes to %d bytes, need at least %d", len(key), MinKeyLen)
	}
	return key, nil
}

func isHex(s string) bool {
	if len(s)%2 != 0 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

func decodeBase64(s string) ([]byte, error) {
	s = strings.TrimRight(s, "=")
	if strings.ContainsAny(s, "-_") {
		return base64.RawURLEncoding.DecodeString(s)
	}
	return base64.RawStdEncoding.DecodeString(s)
}

// keys are the subkeys derived from the audit key, one per purpose, so that a
// fingerprint can never be mistaken for a chain link or vice versa.
type keys struct {
	fingerprint []byte
	chain       []byte
}

func deriveKeys(auditKey []byte) (keys, error) {
	if len(auditKey) < MinKeyLen {
		return keys{}, apperr.Field("audit_key", "is %d bytes, need at least %d", len(auditKey), MinKeyLen)
	}
	fp, err := hkdf.Key(sha256.New, auditKey, nil, "broker/audit/fingerprint/v1", 32)
	if err != nil {
		return keys{}, apperr.Wrap(apperr.Internal, err, "deriving audit fingerprint key")
	}
	chain, err := hkdf.Key(sha256.New, auditKey, nil, "broker/audit/chain/v1", 32)
	if err != nil {
		return keys{}, apperr.Wrap(apperr.Internal, err, "deriving audit chain key")
	}
	return keys{fingerprint: fp, chain: chain}, nil
}

// fingerprintOf returns hex(HMAC-SHA256(fingerprint key, token)).
func (k keys) fingerprintOf(token string) string {
	m := hmac.New(sha256.New, k.fingerprint)
	m.Write([]byte(token))
	return hex.EncodeToString(m.Sum(nil))
}
