package audit

import (
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/broker-dev/broker/internal/apperr"
)

// MinKeyLen is the shortest audit key accepted, in bytes. Decoding the
// configured keys (BROKER_AUDIT_KEY, BROKER_AUDIT_PREVIOUS_KEYS) is the
// configuration's job.
const MinKeyLen = 32

// keys are the subkeys derived from one audit key, one per purpose, so that a
// fingerprint can never be mistaken for a chain link or vice versa, and the
// key's public id, which records and the head carry to name the key that
// linked them.
type keys struct {
	id          string
	fingerprint []byte
	chain       []byte
}

// KeyID returns the public id of auditKey: hex of the first 8 bytes of
// HMAC-SHA256(auditKey, "broker/audit/key-id/v1"). Records carry it (as
// Record.KeyID) to name the key that linked them; it reveals nothing about
// the key.
func KeyID(auditKey []byte) string {
	m := hmac.New(sha256.New, auditKey)
	m.Write([]byte("broker/audit/key-id/v1"))
	return hex.EncodeToString(m.Sum(nil)[:8])
}

func deriveKeys(auditKey []byte, field string) (keys, error) {
	if len(auditKey) < MinKeyLen {
		return keys{}, apperr.Field(field, "is %d bytes, need at least %d", len(auditKey), MinKeyLen)
	}
	fp, err := hkdf.Key(sha256.New, auditKey, nil, "broker/audit/fingerprint/v1", 32)
	if err != nil {
		return keys{}, apperr.Wrap(apperr.Internal, err, "deriving audit fingerprint key")
	}
	chain, err := hkdf.Key(sha256.New, auditKey, nil, "broker/audit/chain/v1", 32)
	if err != nil {
		return keys{}, apperr.Wrap(apperr.Internal, err, "deriving audit chain key")
	}
	return keys{id: KeyID(auditKey), fingerprint: fp, chain: chain}, nil
}

// fingerprintOf returns hex(HMAC-SHA256(fingerprint key, token)).
func (k keys) fingerprintOf(token string) string {
	m := hmac.New(sha256.New, k.fingerprint)
	m.Write([]byte(token))
	return hex.EncodeToString(m.Sum(nil))
}

// keyring holds the current audit key, which links new records and MACs the
// head, and the previous (rotated-out) keys, which still verify the records,
// heads and fingerprints made under them.
type keyring struct {
	current keys
	all     []keys // current first, then the previous keys in the order given, without repeats
}

func newKeyring(current []byte, previous [][]byte) (keyring, error) {
	cur, err := deriveKeys(current, "audit_key")
	if err != nil {
		return keyring{}, err
	}
	r := keyring{current: cur, all: []keys{cur}}
	for i, p := range previous {
		k, err := deriveKeys(p, fmt.Sprintf("previous_keys[%d]", i))
		if err != nil {
			return keyring{}, err
		}
		if _, ok := r.byID(k.id); !ok {
			r.all = append(r.all, k)
		}
	}
	return r, nil
}

// byID returns the configured key whose id is id.
func (r keyring) byID(id string) (keys, bool) {
	for _, k := range r.all {
		if k.id == id {
			return k, true
		}
	}
	return keys{}, false
}

// fingerprints returns token's fingerprint under every configured key.
func (r keyring) fingerprints(token string) []string {
	out := make([]string, len(r.all))
	for i, k := range r.all {
		out[i] = k.fingerprintOf(token)
	}
	return out
}

// Why a head or record cannot be authenticated.
var (
	errUnknownKey = errors.New("that audit key is not configured (a rotated-out key must be configured as a previous key)")
	errHeadMAC    = errors.New("chain head fails its MAC (tampered, or another audit key)")
)

// checkHead returns nil when h's MAC verifies under the key its key id names,
// or, for a head written before key ids, under any configured key. Otherwise
// it returns an error wrapping errUnknownKey or errHeadMAC.
func (r keyring) checkHead(h head) error {
	if h.keyID == "" {
		for _, k := range r.all {
			if want := k.headMAC(h.seq, h.hash, ""); hmac.Equal(want[:], h.mac[:]) {
				return nil
			}
		}
		return errHeadMAC
	}
	k, ok := r.byID(h.keyID)
	if !ok {
		return fmt.Errorf("chain head is MACed with key id %s: %w", h.keyID, errUnknownKey)
	}
	if want := k.headMAC(h.seq, h.hash, h.keyID); !hmac.Equal(want[:], h.mac[:]) {
		return errHeadMAC
	}
	return nil
}
