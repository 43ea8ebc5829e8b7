package audit

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// LeafVersion1 starts every leaf of the transparency log's tree in the
// version 1 encoding.
const LeafVersion1 = "broker/audit/leaf/v1"

// Leaf is a record's canonical encoding as a leaf of the transparency log's
// Merkle tree (RFC 6962 leaf data; record seq is leaf index seq−1): a
// version tag, then every stored field of the record but the HMAC chain's
// (prev_hash, hash), in a fixed order: integers fixed-width big-endian,
// strings and the list of groups length-prefixed (uint32). It holds the
// token's keyed fingerprint, never the token. The README documents the
// layout; changing it needs a new version.
//
//	tag "broker/audit/leaf/v1" (no length prefix)
//	seq u64, time u64 (Unix microseconds), request_id s, issuer s, subject s,
//	account s, uid u32, groups u32 count then s each, service s, channel s,
//	role s, requested_ttl u64 (seconds), granted_ttl u64 (seconds),
//	decision s, reason s, rule s, policy_version u64, client_ip s,
//	user_agent s, token_fingerprint s, key_id s, trace_id s, project s, app_id s
func Leaf(r *Record) []byte { return appendLeaf(make([]byte, 0, 320), r) }

// appendLeaf appends Leaf(r) to b.
func appendLeaf(b []byte, r *Record) []byte {
	b = append(b, LeafVersion1...)
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
	b = appendString(b, r.KeyID)
	b = appendString(b, r.TraceID)
	b = appendString(b, r.Project)
	b = appendString(b, r.AppID)
	return b
}

// ParseLeaf decodes a version 1 leaf (Leaf) back into a record, without its
// chain hashes; anything else is an error. Tools that hold only a proof and
// its leaf read the record this way.
func ParseLeaf(b []byte) (Record, error) {
	var r Record
	rest, ok := cutPrefix(b, LeafVersion1)
	if !ok {
		return Record{}, errors.New("audit: not a version 1 leaf")
	}
	d := leafDecoder{b: rest}
	r.Seq = int64(d.u64())
	r.Time = time.UnixMicro(int64(d.u64())).UTC()
	r.RequestID, r.Issuer, r.Subject, r.Account = d.str(), d.str(), d.str(), d.str()
	r.UID = d.u32()
	if n := d.u32(); n > 0 {
		if n > maxGroups {
			return Record{}, fmt.Errorf("audit: leaf has %d groups, at most %d are kept", n, maxGroups)
		}
		r.Groups = make([]string, n)
		for i := range r.Groups {
			r.Groups[i] = d.str()
		}
	}
	r.Service, r.Channel, r.Role = d.str(), d.str(), d.str()
	r.RequestedTTL = time.Duration(d.u64()) * time.Second
	r.GrantedTTL = time.Duration(d.u64()) * time.Second
	r.Decision = Decision(d.str())
	r.Reason, r.Rule = d.str(), d.str()
	r.PolicyVersion = int64(d.u64())
	r.ClientIP, r.UserAgent, r.TokenFingerprint, r.KeyID = d.str(), d.str(), d.str(), d.str()
	r.TraceID, r.Project, r.AppID = d.str(), d.str(), d.str()
	if d.err != nil {
		return Record{}, d.err
	}
	if len(d.b) != 0 {
		return Record{}, errors.New("audit: leaf has trailing bytes")
	}
	return r, nil
}

func cutPrefix(b []byte, prefix string) ([]byte, bool) {
	if len(b) < len(prefix) || string(b[:len(prefix)]) != prefix {
		return nil, false
	}
	return b[len(prefix):], true
}

// leafDecoder reads Leaf's fields; the first short read sets err.
type leafDecoder struct {
	b   []byte
	err error
}

func (d *leafDecoder) take(n int) []byte {
	if d.err != nil || n < 0 || len(d.b) < n {
		if d.err == nil {
			d.err = errors.New("audit: leaf is truncated")
		}
		return make([]byte, max(n, 0))
	}
	out := d.b[:n]
	d.b = d.b[n:]
	return out
}

func (d *leafDecoder) u64() uint64 { return binary.BigEndian.Uint64(d.take(8)) }
func (d *leafDecoder) u32() uint32 { return binary.BigEndian.Uint32(d.take(4)) }

func (d *leafDecoder) str() string {
	n := d.u32()
	if n > 1<<16 {
		d.err = errors.New("audit: leaf has an oversized field")
		return ""
	}
	return string(d.take(int(n)))
}
