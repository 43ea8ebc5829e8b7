package token

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"hash/crc32"
	"strings"
)

// Version006 is the prefix of every legacy AccessToken string.
const Version006 = "006"

// AccessToken006 is a decoded legacy AccessToken ("006"). The token stores only
// CRCs of its channel and uid, so verifying it needs both from outside.
type AccessToken006 struct {
	AppID      string
	Signature  []byte
	ChannelCRC uint32 // CRC-32 (IEEE) of the channel name, or of the RTM account
	UIDCRC     uint32 // CRC-32 (IEEE) of the uid string ("" for uid 0)
	Salt       uint32
	// Expire is the token's own expiry as an absolute Unix time (the
	// format's "ts").
	Expire uint32
	// Privileges hold absolute Unix times; 0 means no privilege-level expiry.
	Privileges []Privilege

	message []byte // salt || ts || privileges, as signed
}

// Parse006 decodes a legacy AccessToken ("006") string:
// "006" + app id (32 characters) + base64(content), without compression.
// An error is a *ParseError. Parse006 checks nothing about validity: call
// Verify.
func Parse006(s string) (*AccessToken006, error) {
	perr := func(field, reason string, err error) error {
		return &ParseError{Version: Version006, Field: field, Reason: reason, Err: err}
	}
	if len(s) > MaxTokenLen {
		return nil, perr("token", fmt.Sprintf("is %d bytes, at most %d allowed", len(s), MaxTokenLen), nil)
	}
	if !strings.HasPrefix(s, Version006) {
		return nil, perr("version", "does not start with \"006\"", nil)
	}
	rest := s[len(Version006):]
	if len(rest) < 32 || validateHex32("app_id", rest[:32]) != nil {
		return nil, perr("app_id", "is not 32 hex characters", nil)
	}
	raw, err := base64.StdEncoding.DecodeString(rest[32:])
	if err != nil {
		return nil, perr("base64", "not standard padded base64", err)
	}

	d := &decoder{b: raw, version: Version006, svc: -1}
	t := &AccessToken006{AppID: rest[:32]}
	t.Signature = d.bytes("signature")
	if d.err == nil && len(t.Signature) != sha256.Size {
		d.fail("signature", fmt.Sprintf("is %d bytes, want %d", len(t.Signature), sha256.Size))
	}
	t.ChannelCRC = d.u32("channel_crc")
	t.UIDCRC = d.u32("uid_crc")
	t.message = d.bytes("message")
	if d.err == nil && d.left() > 0 {
		d.fail("end", fmt.Sprintf("%d bytes after the message", d.left()))
	}
	if d.err != nil {
		return nil, d.err
	}

	m := &decoder{b: t.message, version: Version006, svc: -1}
	t.Salt = m.u32("message.salt")
	t.Expire = m.u32("message.ts")
	t.Privileges = m.privileges()
	if m.err == nil && m.left() > 0 {
		m.fail("message", fmt.Sprintf("%d bytes after the privileges", m.left()))
	}
	if m.err != nil {
		return nil, m.err
	}
	return t, nil
}

// Verify reports whether the token was signed with appCert for this channel
// and uid string (decimal, "" for uid 0; for an RTM token the account is the
// channel and uid is ""). The signature is compared in constant time.
func (t *AccessToken006) Verify(appCert, channel, uid string) bool {
	if validateHex32("app_certificate", appCert) != nil || len(t.Signature) != sha256.Size {
		return false
	}
	if crc32.ChecksumIEEE([]byte(channel)) != t.ChannelCRC || crc32.ChecksumIEEE([]byte(uid)) != t.UIDCRC {
		return false
	}
	e := encoders.Get().(*encoder)
	defer encoders.Put(e)
	e.signer.mac(&e.sig, []byte(appCert), []byte(t.AppID), []byte(channel), []byte(uid), t.message)
	ok := hmac.Equal(e.sig[:], t.Signature)
	e.sig = [sha256.Size]byte{}
	return ok
}
