package audit

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/broker-dev/broker/internal/apperr"
)

// Page sizes for Search.
const (
	DefaultLimit = 100
	MaxLimit     = 1000
)

// maxBuckets bounds Stats so one call cannot ask for an unbounded series.
const maxBuckets = 10000

// Query is a filter as a transport receives it: the text of each field as
// sent (query parameters, form fields, command-line flags). Field names are
// the parameter names, and ParseQuery's errors name them.
type Query struct {
	Issuer, Subject, Account, UID, Channel, Project, Decision, From, To, Limit, Cursor string
	RequestID                                                                          string
}

// maxRequestIDWindow bounds the time window of a search by request id: the
// log has no index on request ids, so such a search reads the window's
// records (about a million at 10 a second for a day).
const maxRequestIDWindow = 24 * time.Hour

// ParseQuery reads q into a Filter. It is the one reader of filters, so every
// transport accepts the same values: uid 1…4294967295, decision granted,
// denied or invalid, times in RFC 3339 or as "2006-01-02T15:04[:05]" read as
// UTC, limit a whole number. It returns an apperr.Invalid error whose Field
// names the first bad parameter; Search and Export check the rest (ranges,
// the cursor).
func ParseQuery(q Query) (Filter, error) {
	f := Filter{Issuer: q.Issuer, Subject: q.Subject, Account: q.Account, Channel: q.Channel, Project: q.Project, Cursor: q.Cursor,
		RequestID: q.RequestID}
	if len(q.RequestID) > maxRequestID {
		return Filter{}, apperr.Field("requestId", "must be at most %d bytes", maxRequestID)
	}
	if len(q.Issuer) > maxIssuer {
		return Filter{}, apperr.Field("issuer", "must be at most %d bytes", maxIssuer)
	}
	if len(q.Project) > maxProject {
		return Filter{}, apperr.Field("project", "must be at most %d bytes", maxProject)
	}
	if q.UID != "" {
		n, err := strconv.ParseUint(q.UID, 10, 32)
		if err != nil || n == 0 {
			return Filter{}, apperr.Field("uid", "must be a whole number from 1 to 4294967295")
		}
		u := uint32(n)
		f.UID = &u
	}
	d, err := parseDecision(q.Decision)
	if err != nil {
		return Filter{}, err
	}
	f.Decision = d
	for _, t := range []struct {
		name, value string
		dst         *time.Time
	}{{"from", q.From, &f.From}, {"to", q.To, &f.To}} {
		if t.value == "" {
			continue
		}
		if *t.dst, err = parseTime(t.value); err != nil {
			return Filter{}, apperr.Field(t.name, "must be a time such as 2026-01-02T15:04:05Z (RFC 3339) or 2026-01-02T15:04 (UTC)")
		}
	}
	if q.Limit != "" {
		n, err := strconv.Atoi(q.Limit)
		if err != nil || n < 0 {
			return Filter{}, apperr.Field("limit", "must be a whole number")
		}
		f.Limit = n
	}
	return f, nil
}

// parseDecision reads a decision: "" (any), granted, denied or invalid.
func parseDecision(s string) (Decision, error) {
	switch d := Decision(s); d {
	case "", DecisionGranted, DecisionDenied, DecisionInvalid:
		return d, nil
	}
	return "", apperr.Field("decision", "must be granted, denied or invalid")
}

func parseTime(s string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	for _, layout := range []string{"2006-01-02T15:04:05", "2006-01-02T15:04"} {
		if t, err := time.ParseInLocation(layout, s, time.UTC); err == nil {
			return t, nil
		}
	}
	return time.Time{}, errors.New("unreadable time")
}

// query is a validated Filter.
type query struct {
	Filter
	before int64 // Search: only records with seq < before; 0 = no bound
	// channels are the ids of the channels a Channel pattern matches
	// (Postgres: resolveChannels), so that the plan knows how many there are.
	channels []int32
}

// validate checks f for Search (page true) or Export (page false).
func validate(f Filter, page bool) (query, error) {
	q := query{Filter: f}
	if _, err := parseDecision(string(f.Decision)); err != nil {
		return query{}, err
	}
	if !f.From.IsZero() && !f.To.IsZero() && !f.To.After(f.From) {
		return query{}, apperr.Field("to", "must be after from")
	}
	if f.UID != nil && *f.UID == 0 {
		return query{}, apperr.Field("uid", "must be between 1 and 4294967295")
	}
	if f.RequestID != "" && (f.From.IsZero() || f.To.IsZero() || f.To.Sub(f.From) > maxRequestIDWindow) {
		return query{}, apperr.Field("requestId", "needs a time window of at most %s (from and to): the log is not indexed by request id, and the request's time narrows it", maxRequestIDWindow)
	}
	if f.Limit < 0 || (page && f.Limit > MaxLimit) {
		return query{}, apperr.Field("limit", "must be between 0 and %d", MaxLimit)
	}
	if page {
		if q.Limit == 0 {
			q.Limit = DefaultLimit
		}
		if f.Cursor != "" {
			seq, ok := decodeCursor(f.Cursor)
			if !ok {
				return query{}, apperr.Field("cursor", "is not a cursor returned by this log")
			}
			q.before = seq
		}
	} else if f.Cursor != "" {
		return query{}, apperr.Field("cursor", "is not supported by export")
	}
	return q, nil
}

// A cursor is the seq of the last record on a page, as unpadded base64url of 8
// big-endian bytes. It is opaque to clients.
func encodeCursor(seq int64) string {
	return base64.RawURLEncoding.EncodeToString(binary.BigEndian.AppendUint64(nil, uint64(seq)))
}

func decodeCursor(s string) (int64, bool) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) != 8 {
		return 0, false
	}
	seq := int64(binary.BigEndian.Uint64(b))
	return seq, seq > 0
}

// likePattern turns a channel pattern ('*' the only wildcard) into a LIKE
// pattern with '\' as the escape character.
func likePattern(p string) string {
	var b strings.Builder
	for _, c := range p {
		switch c {
		case '\\', '%', '_':
			b.WriteByte('\\')
			b.WriteRune(c)
		case '*':
			b.WriteByte('%')
		default:
			b.WriteRune(c)
		}
	}
	return b.String()
}

// MatchChannel reports whether channel matches pattern, where '*' matches any
// run of characters and everything else matches itself.
func MatchChannel(pattern, channel string) bool {
	parts := strings.Split(pattern, "*")
	if len(parts) == 1 {
		return pattern == channel
	}
	if !strings.HasPrefix(channel, parts[0]) {
		return false
	}
	channel = channel[len(parts[0]):]
	last := parts[len(parts)-1]
	for _, p := range parts[1 : len(parts)-1] {
		i := strings.Index(channel, p)
		if i < 0 {
			return false
		}
		channel = channel[i+len(p):]
	}
	return len(channel) >= len(last) && strings.HasSuffix(channel, last)
}

// matches reports whether r passes q's filters (not the cursor).
func (q query) matches(r *Record) bool {
	return (q.Issuer == "" || r.Issuer == q.Issuer) &&
		(q.Subject == "" || r.Subject == q.Subject) &&
		(q.Account == "" || r.Account == q.Account) &&
		(q.UID == nil || r.UID == *q.UID) &&
		(q.Channel == "" || MatchChannel(q.Channel, r.Channel)) &&
		(q.Project == "" || r.Project == q.Project) &&
		(q.Projects == nil || slices.Contains(q.Projects, r.Project)) &&
		(q.Decision == "" || r.Decision == q.Decision) &&
		(q.RequestID == "" || r.RequestID == q.RequestID) &&
		(q.From.IsZero() || !r.Time.Before(q.From)) &&
		(q.To.IsZero() || r.Time.Before(q.To))
}

// buckets validates a Stats request and returns the empty series from since to now.
func buckets(since time.Time, width time.Duration, now time.Time) ([]Bucket, error) {
	if since.IsZero() {
		return nil, apperr.Field("since", "is required")
	}
	if width < time.Second {
		return nil, apperr.Field("bucket", "must be at least 1s")
	}
	since = since.UTC().Truncate(time.Microsecond)
	if !now.After(since) {
		return []Bucket{}, nil
	}
	n := (now.Sub(since) + width - 1) / width
	if n > maxBuckets {
		return nil, apperr.Field("bucket", "gives %d buckets since %s, at most %d allowed", n, since.Format(time.RFC3339), maxBuckets)
	}
	out := make([]Bucket, n)
	for i := range out {
		out[i].Start = since.Add(time.Duration(i) * width)
	}
	return out, nil
}

// count adds one decision to the bucket it falls into, if any.
func count(series []Bucket, since time.Time, width time.Duration, at time.Time, d Decision, n int) {
	if at.Before(since) {
		return
	}
	i := at.Sub(since) / width
	if int(i) >= len(series) {
		return
	}
	switch d {
	case DecisionGranted:
		series[i].Granted += n
	case DecisionDenied:
		series[i].Denied += n
	case DecisionInvalid:
		series[i].Invalid += n
	}
}
