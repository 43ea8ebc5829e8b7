package audit

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/broker-dev/broker/internal/apperr"
)

// MaxUserAgent is how many bytes of a user agent a record keeps.
const MaxUserAgent = 512

// maxTTL bounds TTLs to what the integer columns hold.
const maxTTL = (1<<31 - 1) * time.Second

// genesis is the prev_hash of the first record.
var genesis Hash

// normalize validates r as given to Append and brings it to the form that is
// stored and hashed: UTC microseconds, whole-second TTLs, valid UTF-8 without
// NUL (Postgres text holds neither), a bounded user agent, no chain fields.
func normalize(r Record, now time.Time) (Record, error) {
	switch r.Decision {
	case DecisionGranted, DecisionDenied, DecisionInvalid:
	default:
		return Record{}, apperr.Field("decision", "must be granted, denied or invalid")
	}
	switch r.Service {
	case "", ServiceRTC, ServiceRTM, ServiceRTCRTM:
	default:
		return Record{}, apperr.Field("service", "must be rtc, rtm or rtc+rtm")
	}
	if r.RequestedTTL < 0 || r.RequestedTTL > maxTTL {
		return Record{}, apperr.Field("requested_ttl", "is out of range")
	}
	if r.GrantedTTL < 0 || r.GrantedTTL > maxTTL {
		return Record{}, apperr.Field("granted_ttl", "is out of range")
	}
	if r.PolicyVersion < 0 {
		return Record{}, apperr.Field("policy_version", "must not be negative")
	}
	if r.Time.IsZero() {
		r.Time = now
	}
	r.Time = r.Time.UTC().Truncate(time.Microsecond)
	r.RequestedTTL = r.RequestedTTL.Truncate(time.Second)
	r.GrantedTTL = r.GrantedTTL.Truncate(time.Second)
	for _, s := range []*string{&r.RequestID, &r.Issuer, &r.Subject, &r.Account, &r.Service,
		&r.Channel, &r.Role, &r.Reason, &r.Rule, &r.ClientIP, &r.UserAgent, &r.TokenFingerprint} {
		*s = cleanText(*s)
	}
	r.UserAgent = truncateUTF8(r.UserAgent, MaxUserAgent)
	if len(r.Groups) == 0 {
		r.Groups = nil
	} else {
		groups := make([]string, len(r.Groups))
		for i, g := range r.Groups {
			groups[i] = cleanText(g)
		}
		r.Groups = groups
	}
	r.Seq, r.KeyID, r.PrevHash, r.Hash = 0, "", Hash{}, Hash{}
	return r, nil
}

func cleanText(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	return strings.ReplaceAll(s, "\x00", "\uFFFD")
}

func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// link sets r's chain fields for r at seq following prev, under k.
func (k keys) link(r *Record, seq int64, prev Hash) {
	r.Seq = seq
	r.KeyID = k.id
	r.PrevHash = prev
	r.Hash = k.recordHash(r)
}

// recordHash is HMAC-SHA256(chain key, prev_hash || canonical(r)).
func (k keys) recordHash(r *Record) Hash {
	m := hmac.New(sha256.New, k.chain)
	m.Write(r.PrevHash[:])
	m.Write(canonical(r))
	var h Hash
	m.Sum(h[:0])
	return h
}

// headMAC authenticates the chain head (the last committed seq and its hash),
// so that cutting records off the end of the log is detected. keyID is the id
// the head names (k's own); "" gives the encoding of heads written before key
// ids, which named none.
func (k keys) headMAC(seq int64, hash Hash, keyID string) Hash {
	m := hmac.New(sha256.New, k.chain)
	if keyID == "" {
		m.Write([]byte("broker/audit/head/v1"))
	} else {
		m.Write(appendString([]byte("broker/audit/head/v2"), keyID))
	}
	m.Write(binary.BigEndian.AppendUint64(nil, uint64(seq)))
	m.Write(hash[:])
	var h Hash
	m.Sum(h[:0])
	return h
}

// canonical is the unambiguous encoding of every field of r except the hashes:
// fixed-width big-endian integers and length-prefixed strings, in a fixed order,
// after a version tag. Version 2 starts with the key id, so that changing it is
// a modification like any other; records written before key ids (KeyID "")
// keep version 1. Changing either breaks verification of existing logs.
func canonical(r *Record) []byte {
	b := make([]byte, 0, 256)
	if r.KeyID == "" {
		b = append(b, "broker/audit/record/v1"...)
	} else {
		b = append(b, "broker/audit/record/v2"...)
		b = appendString(b, r.KeyID)
	}
	b = binary.BigEndian.AppendUint64(b, uint64(r.Seq))
	b = binary.BigEndian.AppendUint64(b, uint64(r.Time.UnixMicro()))
	b = appendString(b, r.RequestID)
	b = appendString(b, r.Issuer)
	b = appendString(b, r.Subject)
	b = appendString(b, r.Account)
	b = binary.BigEndian.AppendUint32(b, r.UID)
	b = binary.BigEndian.AppendUint32(b, uint32(len(r.Groups)))
	for _, g := range r.Groups {
		b = appendString(b, g)
	}
	b = appendString(b, r.Service)
	b = appendString(b, r.Channel)
	b = appendString(b, r.Role)
	b = binary.BigEndian.AppendUint64(b, uint64(r.RequestedTTL/time.Second))
	b = binary.BigEndian.AppendUint64(b, uint64(r.GrantedTTL/time.Second))
	b = appendString(b, string(r.Decision))
	b = appendString(b, r.Reason)
	b = appendString(b, r.Rule)
	b = binary.BigEndian.AppendUint64(b, uint64(r.PolicyVersion))
	b = appendString(b, r.ClientIP)
	b = appendString(b, r.UserAgent)
	b = appendString(b, r.TokenFingerprint)
	return b
}

func appendString(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}
