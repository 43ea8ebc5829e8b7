package audit

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/broker-dev/broker/internal/apperr"
)

// Bounds on what a record keeps of each text field, in bytes. Whatever a
// client sends, a record stays small and every indexed column stays far below
// Postgres's btree limit (2704 bytes), so that no request can fail the batch
// it is committed in. A longer value is cut at a rune boundary and marked
// (see bound); channels and accounts are bounded to Agora's own limits, so a
// valid value is always kept whole.
const (
	MaxUserAgent   = 512
	maxChannel     = 63  // Agora: channel names are under 64 bytes
	maxAccount     = 255 // Agora: user accounts are at most 255 bytes
	maxSubject     = 255 // OpenID Connect: sub is at most 255 ASCII characters
	maxRole        = 32  // publisher, subscriber, 1, 2: anything longer is invalid
	maxRequestID   = 64
	maxIssuer      = 512
	maxReason      = 1024
	maxRule        = 512
	maxClientIP    = 64
	maxFingerprint = 128
	maxProject     = 64 // a project name or an App ID (32 hex digits)
	maxGroup       = 255
	maxGroups      = 64
)

// maxTTL bounds TTLs to what the integer columns hold.
const maxTTL = (1<<31 - 1) * time.Second

// head is the stored chain head: the last committed seq, its hash, and a MAC
// over both (and the key id) under the chain key of the key keyID names ("":
// a head written before key ids).
type head struct {
	present bool
	seq     int64
	hash    Hash
	mac     Hash
	keyID   string
}

// genesis is the prev_hash of the first record.
var genesis Hash

// validTraceID reports whether id is "" or a W3C trace id as tracing.TraceID
// writes it.
func validTraceID(id string) bool {
	if id == "" {
		return true
	}
	return len(id) == 32 && lowerHex(id)
}

// lowerHex reports whether s is bytes in lowercase hex (an even number of
// digits), as the log stores fingerprints and trace ids: as the bytes.
func lowerHex(s string) bool {
	if len(s)%2 != 0 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// normalize validates r as given to Append and brings it to the form that is
// stored and hashed: UTC microseconds, whole-second TTLs, valid UTF-8 without
// NUL (Postgres text holds neither), every text field bounded, no chain fields.
func normalize(r Record, now time.Time) (Record, error) {
	switch r.Decision {
	case DecisionGranted, DecisionDenied, DecisionInvalid:
	default:
		return Record{}, apperr.Field("decision", "must be granted, denied or invalid")
	}
	switch r.Service {
	case "", ServiceRTC, ServiceRTM, ServiceRTCRTM, ServiceChat, ServiceChatApp:
	default:
		return Record{}, apperr.Field("service", "must be rtc, rtm, rtc+rtm, chat or chat-app")
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
	for _, f := range []struct {
		s   *string
		max int
	}{
		{&r.RequestID, maxRequestID}, {&r.Issuer, maxIssuer}, {&r.Subject, maxSubject}, {&r.Account, maxAccount},
		{&r.Channel, maxChannel}, {&r.Role, maxRole}, {&r.Reason, maxReason}, {&r.Rule, maxRule},
		{&r.ClientIP, maxClientIP}, {&r.UserAgent, MaxUserAgent},
		{&r.Project, maxProject}, {&r.AppID, maxProject},
	} {
		*f.s = bound(cleanText(*f.s), f.max)
	}
	if !validTraceID(r.TraceID) {
		return Record{}, apperr.Field("trace_id", "must be empty or 32 lowercase hexadecimal digits")
	}
	if len(r.TokenFingerprint) > maxFingerprint || !lowerHex(r.TokenFingerprint) {
		return Record{}, apperr.Field("token_fingerprint", "must be empty or at most %d lowercase hexadecimal digits, as Fingerprint makes it", maxFingerprint)
	}
	if len(r.Groups) == 0 {
		r.Groups = nil
	} else {
		n := min(len(r.Groups), maxGroups)
		groups := make([]string, n)
		for i, g := range r.Groups[:n] {
			groups[i] = bound(cleanText(g), maxGroup)
		}
		if len(r.Groups) > maxGroups {
			groups[n-1] = fmt.Sprintf("…[%d more groups]", len(r.Groups)-maxGroups+1)
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

// bound returns s if it fits in max bytes, else its longest prefix that fits
// together with a marker giving the original length, e.g. "abc…[4000 bytes]".
// The marker's "…" occurs in no Agora channel name or account, so a marked
// value is never mistaken for a real one.
func bound(s string, max int) string {
	if len(s) <= max {
		return s
	}
	mark := "…[" + strconv.Itoa(len(s)) + " bytes]"
	return TruncateUTF8(s, max-len(mark)) + mark
}

// TruncateUTF8 cuts s to at most n bytes on a rune boundary.
func TruncateUTF8(s string, n int) string {
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
func canonical(r *Record) []byte { return appendCanonical(make([]byte, 0, 256), r) }

// appendCanonical appends canonical(r) to b.
func appendCanonical(b []byte, r *Record) []byte {
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
