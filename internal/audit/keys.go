package audit

import (
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"

	"github.com/broker-dev/broker/internal/apperr"
)

// MinKeyLen is the shortest audit key accepted, in bytes. Decoding the
// configured key (BROKER_AUDIT_KEY) is the configuration's job.
const MinKeyLen = 32

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
