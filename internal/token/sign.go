package token

import (
	"crypto/sha256"
	"encoding/binary"
	"hash"
)

// signer computes HMAC-SHA256 (RFC 2104) with one reusable SHA-256 state.
// crypto/hmac allocates two digests and two pads per key, and a 007 token
// needs three keys (k1, k2, then the signature), so on the hot path a pooled
// signer is re-keyed instead. TestSignerMatchesCryptoHMAC pins it to
// crypto/hmac. A signer is not safe for concurrent use.
type signer struct {
	h     hash.Hash
	pad   [sha256.BlockSize]byte
	inner [sha256.Size]byte
	key   [sha256.Size]byte // a hashed over-long key
	k1    [sha256.Size]byte
	k2    [sha256.Size]byte
	ts    [4]byte
}

func newSigner() *signer {
	return &signer{h: sha256.New()}
}

// mac writes HMAC-SHA256(key, msg[0] || msg[1] || …) into out.
func (s *signer) mac(out *[sha256.Size]byte, key []byte, msg ...[]byte) {
	if len(key) > sha256.BlockSize {
		s.h.Reset()
		s.h.Write(key)
		key = s.h.Sum(s.key[:0])
	}
	const ipad, opad = 0x36, 0x5c
	s.pad = [sha256.BlockSize]byte{}
	copy(s.pad[:], key)
	for i := range s.pad {
		s.pad[i] ^= ipad
	}
	s.h.Reset()
	s.h.Write(s.pad[:])
	for _, m := range msg {
		s.h.Write(m)
	}
	s.h.Sum(s.inner[:0])

	for i := range s.pad {
		s.pad[i] ^= ipad ^ opad
	}
	s.h.Reset()
	s.h.Write(s.pad[:])
	s.h.Write(s.inner[:])
	s.h.Sum(out[:0])
	s.wipe()
}

// sign007 writes the AccessToken2 signature of signingInfo (SPEC.md §2.3):
//
//	k1  = HMAC(key = u32le(issuedAt), msg = certificate)
//	k2  = HMAC(key = u32le(salt),     msg = k1)
//	sig = HMAC(key = k2,              msg = signingInfo)
//
// k1 and k2 depend on (issuedAt, salt), so nothing is cached across tokens;
// both are wiped before returning.
func (s *signer) sign007(out *[sha256.Size]byte, cert []byte, issuedAt, salt uint32, signingInfo []byte) {
	binary.LittleEndian.PutUint32(s.ts[:], issuedAt)
	s.mac(&s.k1, s.ts[:], cert)
	binary.LittleEndian.PutUint32(s.ts[:], salt)
	s.mac(&s.k2, s.ts[:], s.k1[:])
	s.mac(out, s.k2[:], signingInfo)
	s.k1 = [sha256.Size]byte{}
	s.k2 = [sha256.Size]byte{}
}

// wipe clears key-derived state so a pooled signer holds no secret between uses.
func (s *signer) wipe() {
	s.pad = [sha256.BlockSize]byte{}
	s.inner = [sha256.Size]byte{}
	s.key = [sha256.Size]byte{}
	s.h.Reset()
}
