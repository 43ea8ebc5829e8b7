package audit

// Reading records back from their compact storage (migration 015): rows of
// issuance_log_record whose repeated values are ids of issuance_log_value,
// decoded through a cache of those values; a record's prev_hash is the hash
// of the record before it.

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// recordColumns are issuance_log_record's columns (alias r) in the order
// readRows scans them.
const recordColumns = "r.seq, r.at, r.policy_version, r.uid, r.context, r.subject, r.account, r.channel, " +
	"r.groups, r.reason, r.client_ip, r.user_agent, r.requested_ttl, r.granted_ttl, r.decision, r.request_id, " +
	"r.token_fingerprint, r.hash, r.trace_id"

// The kinds of issuance_log_value, as migration 015 defines them.
const (
	kindSubject   = 2
	kindAccount   = 3
	kindGroups    = 4
	kindChannel   = 6
	kindReason    = 8
	kindClientIP  = 10
	kindUserAgent = 11
	kindContext   = 15
)

// decisionCodes are the stored decisions: 1 granted, 2 denied, 3 invalid.
var decisionCodes = map[Decision]int{DecisionGranted: 1, DecisionDenied: 2, DecisionInvalid: 3}

// row is one stored record as read, before its values are looked up.
type row struct {
	seq, policyVersion                                                      int64
	uid                                                                     int32 // the uint32's bits
	at                                                                      time.Time
	context, subject, account, channel, groups, reason, clientIP, userAgent int32
	requestedTTL, grantedTTL                                                int32
	decision                                                                int16
	requestID, fingerprint, hash, traceID                                   []byte // requestID: migration 015's encoding
}

// readRows runs sql (which selects recordColumns) and scans its rows.
func readRows(ctx context.Context, q queryer, sql string, args ...any) ([]row, error) {
	rows, err := q.Query(ctx, sql, args...)
	if err != nil {
		return nil, err
	}
	var out []row
	var r row
	_, err = pgx.ForEachRow(rows, []any{&r.seq, &r.at, &r.policyVersion, &r.uid, &r.context, &r.subject,
		&r.account, &r.channel, &r.groups, &r.reason, &r.clientIP, &r.userAgent, &r.requestedTTL, &r.grantedTTL,
		&r.decision, &r.requestID, &r.fingerprint, &r.hash, &r.traceID}, func() error {
		out = append(out, r)
		return nil
	})
	return out, err
}

// recordContext is what a context value holds: the fields records share
// with many others.
type recordContext struct {
	issuer, service, role, project, appID, keyID, rule string
}

// value is one row of issuance_log_value as decoding uses it: the text, a
// group list or a context parsed once. bad marks a value no writer stores.
type value struct {
	text    string
	groups  []string
	context *recordContext
	bad     bool
}

// values caches issuance_log_value (an id always names the same value) for
// decoding. It is bounded: when full it starts again.
type values struct {
	mu    sync.Mutex
	cache map[int32]*value
	limit int // entries kept at most
}

// maxCachedValues bounds a values cache.
const maxCachedValues = 1 << 17

func newValues() *values { return &values{cache: map[int32]*value{}, limit: maxCachedValues} }

// load returns the values rs uses, from the cache or, for those it lacks,
// from one query, and keeps those in the cache.
func (v *values) load(ctx context.Context, q queryer, rs []row) (map[int32]*value, error) {
	page := map[int32]*value{}
	var missing []int32
	v.mu.Lock()
	for i := range rs {
		r := &rs[i]
		for _, id := range [...]int32{r.context, r.subject, r.account, r.channel, r.groups, r.reason, r.clientIP, r.userAgent} {
			if _, ok := page[id]; ok || id == 0 {
				continue
			}
			if c, ok := v.cache[id]; ok {
				page[id] = c
				continue
			}
			page[id] = nil
			missing = append(missing, id)
		}
	}
	v.mu.Unlock()
	if len(missing) == 0 {
		return page, nil
	}
	rows, err := q.Query(ctx, "SELECT id, kind, value FROM issuance_log_value WHERE id = ANY($1)", missing)
	if err != nil {
		return nil, err
	}
	var (
		id   int32
		kind int16
		text string
	)
	got := make(map[int32]*value, len(missing))
	_, err = pgx.ForEachRow(rows, []any{&id, &kind, &text}, func() error {
		val := &value{text: text}
		switch kind {
		case kindContext:
			var f []string
			if err := json.Unmarshal([]byte(text), &f); err != nil || len(f) != 7 {
				val.bad = true
			} else {
				val.context = &recordContext{issuer: f[0], service: f[1], role: f[2], project: f[3], appID: f[4], keyID: f[5], rule: f[6]}
			}
		case kindGroups:
			if err := json.Unmarshal([]byte(text), &val.groups); err != nil || len(val.groups) == 0 {
				val.bad = true
			}
		}
		got[id] = val
		return nil
	})
	if err != nil {
		return nil, err
	}
	for id, val := range got {
		page[id] = val
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if len(v.cache)+len(got) > v.limit {
		v.cache = make(map[int32]*value, len(got))
	}
	for id, val := range got {
		v.cache[id] = val
	}
	return page, nil
}

// decode makes records of rs with the values load returned; prev gives a
// record's prev_hash (the hash of record seq-1). A value missing from the
// dictionary or of the wrong kind, or a hash that no writer produces, marks
// the record malformed rather than failing.
func decode(rs []row, page map[int32]*value, prev func(seq int64) ([]byte, bool)) []storedRecord {
	out := make([]storedRecord, len(rs))
	for i := range rs {
		r, s := &rs[i], &out[i]
		rec := &s.Record
		lookup := func(id int32) *value {
			if id == 0 {
				return nil
			}
			val := page[id]
			if val == nil || val.bad {
				s.malformed = true
				return nil
			}
			return val
		}
		text := func(id int32) string {
			if val := lookup(id); val != nil {
				return val.text
			}
			return ""
		}
		rec.Seq, rec.Time, rec.PolicyVersion = r.seq, r.at.UTC(), r.policyVersion
		if c := lookup(r.context); c != nil && c.context != nil {
			x := c.context
			rec.Issuer, rec.Service, rec.Role, rec.Project, rec.AppID = x.issuer, x.service, x.role, x.project, x.appID
			rec.KeyID, rec.Rule = x.keyID, x.rule
		} else {
			s.malformed = true
		}
		rec.Subject, rec.Account, rec.Channel = text(r.subject), text(r.account), text(r.channel)
		rec.Reason, rec.ClientIP, rec.UserAgent = text(r.reason), text(r.clientIP), text(r.userAgent)
		if g := lookup(r.groups); g != nil {
			if g.groups == nil {
				s.malformed = true
			}
			rec.Groups = g.groups
		}
		rec.UID = uint32(r.uid)
		rec.RequestedTTL = time.Duration(r.requestedTTL) * time.Second
		rec.GrantedTTL = time.Duration(r.grantedTTL) * time.Second
		switch r.decision {
		case 1:
			rec.Decision = DecisionGranted
		case 2:
			rec.Decision = DecisionDenied
		case 3:
			rec.Decision = DecisionInvalid
		default:
			s.malformed = true
		}
		switch {
		case len(r.requestID) == 0:
		case r.requestID[0] == 1:
			rec.RequestID = hex.EncodeToString(r.requestID[1:])
		case r.requestID[0] == 0:
			rec.RequestID = string(r.requestID[1:])
		default:
			s.malformed = true
		}
		rec.TokenFingerprint = hex.EncodeToString(r.fingerprint)
		rec.TraceID = hex.EncodeToString(r.traceID)
		if len(r.hash) != len(rec.Hash) {
			s.malformed = true
		}
		copy(rec.Hash[:], r.hash)
		if p, ok := prev(r.seq); ok && len(p) == len(rec.PrevHash) {
			copy(rec.PrevHash[:], p)
		}
	}
	return out
}

// readRecords runs sql, which selects recordColumns, and returns its records
// decoded, each with its prev_hash: the hash of the record before it, taken
// from the rows read when it is among them, else read in one more query.
func (l *Postgres) readRecords(ctx context.Context, q queryer, sql string, args ...any) ([]storedRecord, error) {
	rs, err := readRows(ctx, q, sql, args...)
	if err != nil || len(rs) == 0 {
		return nil, err
	}
	page, err := l.values.load(ctx, q, rs)
	if err != nil {
		return nil, err
	}
	hashes := make(map[int64][]byte, len(rs))
	for i := range rs {
		hashes[rs[i].seq] = rs[i].hash
	}
	var missing []int64
	for i := range rs {
		if s := rs[i].seq; s > 1 {
			if _, ok := hashes[s-1]; !ok {
				missing = append(missing, s-1)
			}
		}
	}
	if len(missing) > 0 {
		rows, err := q.Query(ctx, "SELECT seq, hash FROM issuance_log_record WHERE seq = ANY($1)", missing)
		if err != nil {
			return nil, err
		}
		var (
			seq  int64
			hash []byte
		)
		if _, err := pgx.ForEachRow(rows, []any{&seq, &hash}, func() error {
			hashes[seq] = append([]byte(nil), hash...)
			return nil
		}); err != nil {
			return nil, err
		}
	}
	return decode(rs, page, func(seq int64) ([]byte, bool) {
		if seq == 1 {
			return genesis[:], true
		}
		h, ok := hashes[seq-1]
		return h, ok
	}), nil
}
