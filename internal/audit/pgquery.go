package audit

// The issuance log's queries in Postgres: search, export, lookup, verify and
// stats over issuance_log, each a read that never blocks the writer.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/broker-dev/broker/internal/apperr"
)

// columns are issuance_log's columns in the order scanRecord uses.
var columns = []string{
	"seq", "at", "request_id", "issuer", "subject", "account", "uid", "groups",
	"service", "channel", "role", "requested_ttl", "granted_ttl", "decision",
	"reason", "rule", "policy_version", "client_ip", "user_agent",
	"token_fingerprint", "key_id", "prev_hash", "hash", "trace_id", "project", "app_id",
}

var selectColumns = strings.Join(columns, ", ")

// scanRecord reads one row of selectColumns. Values no writer produces (a uid
// or hash of the wrong size) mark the record malformed rather than failing.
func scanRecord(rows pgx.Rows) (storedRecord, error) {
	var (
		s                storedRecord
		uid              *int64
		reqTTL, grantTTL *int32
		decision         string
		prev, hash       []byte
	)
	r := &s.Record
	if err := rows.Scan(&r.Seq, &r.Time, &r.RequestID, &r.Issuer, &r.Subject, &r.Account, &uid, &r.Groups,
		&r.Service, &r.Channel, &r.Role, &reqTTL, &grantTTL, &decision,
		&r.Reason, &r.Rule, &r.PolicyVersion, &r.ClientIP, &r.UserAgent,
		&r.TokenFingerprint, &r.KeyID, &prev, &hash, &r.TraceID, &r.Project, &r.AppID); err != nil {
		return storedRecord{}, fmt.Errorf("reading issuance log: %w", err)
	}
	r.Time = r.Time.UTC()
	r.Decision = Decision(decision)
	if len(r.Groups) == 0 {
		r.Groups = nil
	}
	if uid != nil {
		if *uid <= 0 || *uid > 1<<32-1 {
			s.malformed = true
		}
		r.UID = uint32(*uid)
	}
	if reqTTL != nil {
		r.RequestedTTL = time.Duration(*reqTTL) * time.Second
	}
	if grantTTL != nil {
		r.GrantedTTL = time.Duration(*grantTTL) * time.Second
	}
	if len(prev) != len(r.PrevHash) || len(hash) != len(r.Hash) {
		s.malformed = true
	}
	copy(r.PrevHash[:], prev)
	copy(r.Hash[:], hash)
	return s, nil
}

// errStop ends eachRecord early without an error.
var errStop = errors.New("stop")

// eachRecord scans every row of rows (selectColumns) into fn, closing rows.
// A read or scan error is Unavailable naming what was being read; fn's own
// error is returned as it is, and errStop stops without one.
func eachRecord(rows pgx.Rows, what string, fn func(storedRecord) error) error {
	defer rows.Close()
	for rows.Next() {
		s, err := scanRecord(rows)
		if err != nil {
			return readFailed(err, what)
		}
		if err := fn(s); err != nil {
			if errors.Is(err, errStop) {
				return nil
			}
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return readFailed(err, what)
	}
	return nil
}

// where renders q's filters as a SQL condition, appending its arguments.
func (q query) where(args []any) (string, []any) {
	conds := []string{"true"}
	add := func(cond string, v any) {
		args = append(args, v)
		conds = append(conds, strings.ReplaceAll(cond, "?", "$"+strconv.Itoa(len(args))))
	}
	if q.Issuer != "" {
		add("issuer = ?", q.Issuer)
	}
	if q.Subject != "" {
		add("subject = ?", q.Subject)
	}
	if q.Account != "" {
		add("account = ?", q.Account)
	}
	if q.UID != nil {
		add("uid = ?", int64(*q.UID))
	}
	if q.Channel != "" {
		if strings.Contains(q.Channel, "*") {
			add(`channel LIKE ? ESCAPE '\'`, likePattern(q.Channel))
		} else {
			add("channel = ?", q.Channel)
		}
	}
	if q.Project != "" {
		add("project = ?", q.Project)
	}
	if q.Projects != nil {
		add("project = ANY(?)", q.Projects)
	}
	if q.Decision != "" {
		add("decision = ?", string(q.Decision))
	}
	if !q.From.IsZero() {
		add("at >= ?", q.From)
	}
	if !q.To.IsZero() {
		add("at < ?", q.To)
	}
	if q.before != 0 {
		add("seq < ?", q.before)
	}
	return strings.Join(conds, " AND "), args
}

func readFailed(err error, what string) error {
	return apperr.Wrap(apperr.Unavailable, fmt.Errorf("%s: %w", what, err), "issuance log is unavailable")
}

// Search returns matching records, newest first.
func (l *Postgres) Search(ctx context.Context, f Filter) (Page, error) {
	q, err := validate(f, true)
	if err != nil {
		return Page{}, err
	}
	release, err := l.readSlot()
	if err != nil {
		return Page{}, err
	}
	defer release()
	cond, args := q.where(nil)
	args = append(args, q.Limit+1)
	rows, err := l.reads.Query(ctx, "SELECT "+selectColumns+" FROM issuance_log WHERE "+cond+
		" ORDER BY seq DESC LIMIT $"+strconv.Itoa(len(args)), args...)
	if err != nil {
		return Page{}, readFailed(err, "search")
	}
	page := Page{Records: []Record{}}
	err = eachRecord(rows, "search", func(s storedRecord) error {
		if len(page.Records) == q.Limit {
			page.NextCursor = encodeCursor(page.Records[len(page.Records)-1].Seq)
			return errStop
		}
		page.Records = append(page.Records, s.Record)
		return nil
	})
	if err != nil {
		return Page{}, err
	}
	return page, nil
}

// readPage is how many records a walk over the log (export, verify) reads
// per statement: the connection goes back to the pool between pages, so a
// client that reads slowly holds no database connection.
const readPage = 2000

// readSlot takes one of the auditor reads' slots (PostgresOptions.MaxReads),
// or answers at once, when all are taken, with an Unavailable error (a 503
// with Retry-After): auditors wait, token issuance never does.
func (l *Postgres) readSlot() (func(), error) {
	select {
	case l.readSlots <- struct{}{}:
		return func() { <-l.readSlots }, nil
	default:
		return nil, apperr.New(apperr.Unavailable, "%d auditor reads are running; retry shortly", cap(l.readSlots))
	}
}

// walk reads the records of cond (with args) in seq order, up to limit (0:
// all) and up to seq upTo (0: no bound), a page at a time, and hands each to
// fn outside any database call.
func (l *Postgres) walk(ctx context.Context, what, cond string, args []any, limit int, upTo int64, fn func(storedRecord) error) error {
	last := int64(math.MinInt64) // a forged record may sit at seq 0 or below
	seen := 0
	for {
		n := readPage
		if limit > 0 {
			n = min(n, limit-seen)
		}
		if n == 0 {
			return nil
		}
		pageArgs := append(append([]any{}, args...), last, n, upTo)
		at := len(args)
		sql := "SELECT " + selectColumns + " FROM issuance_log WHERE " + cond +
			" AND seq > $" + strconv.Itoa(at+1) + " AND ($" + strconv.Itoa(at+3) + " = 0 OR seq <= $" + strconv.Itoa(at+3) + ")" +
			" ORDER BY seq LIMIT $" + strconv.Itoa(at+2)
		rows, err := l.reads.Query(ctx, sql, pageArgs...)
		if err != nil {
			return readFailed(err, what)
		}
		var page []storedRecord
		if err := eachRecord(rows, what, func(s storedRecord) error {
			page = append(page, s)
			return nil
		}); err != nil {
			return err
		}
		for _, s := range page {
			if err := fn(s); err != nil {
				return err
			}
		}
		if len(page) < n {
			return nil
		}
		last, seen = page[len(page)-1].Seq, seen+len(page)
	}
}

// Export streams matching records, oldest first, a page at a time (walk).
func (l *Postgres) Export(ctx context.Context, f Filter, format string, w io.Writer) error {
	q, err := validate(f, false)
	if err != nil {
		return err
	}
	e, err := newExporter(format, w)
	if err != nil {
		return err
	}
	release, err := l.readSlot()
	if err != nil {
		return err
	}
	defer release()
	cond, args := q.where(nil)
	if err := l.walk(ctx, "export", cond, args, q.Limit, 0, func(s storedRecord) error { return e.write(&s.Record) }); err != nil {
		return err
	}
	return e.flush()
}

// Lookup returns the records of token under any configured key, oldest first.
func (l *Postgres) Lookup(ctx context.Context, token string) ([]Record, error) {
	if token == "" {
		return nil, apperr.Field("token", "is required")
	}
	release, err := l.readSlot()
	if err != nil {
		return nil, err
	}
	defer release()
	// The second condition lets a generic plan use the partial index.
	rows, err := l.reads.Query(ctx, "SELECT "+selectColumns+" FROM issuance_log WHERE token_fingerprint = ANY($1) AND token_fingerprint <> '' ORDER BY seq",
		l.keys.fingerprints(token))
	if err != nil {
		return nil, readFailed(err, "lookup")
	}
	out := []Record{}
	err = eachRecord(rows, "lookup", func(s storedRecord) error {
		out = append(out, s.Record)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Verify walks the chain in seq order, a page at a time, up to the last
// record that existed when it read the chain head (both read in one
// statement, so they agree unless someone tampered): records appended during
// the walk are checked by the next verification.
func (l *Postgres) Verify(ctx context.Context) (Report, error) { return l.VerifyFrom(ctx, 0) }

// VerifyFrom implements Log.
func (l *Postgres) VerifyFrom(ctx context.Context, from int64) (Report, error) {
	if from < 0 {
		return Report{}, apperr.Field("from", "must not be negative")
	}
	release, err := l.readSlot()
	if err != nil {
		return Report{}, err
	}
	defer release()
	var (
		h         head
		seq, last *int64
		keyID     *string
		hash, mac []byte
	)
	err = l.reads.QueryRow(ctx, `SELECT h.seq, h.hash, h.mac, h.key_id, (SELECT max(seq) FROM issuance_log)
		FROM (SELECT 1) one LEFT JOIN issuance_log_head h ON true`).Scan(&seq, &hash, &mac, &keyID, &last)
	if err != nil {
		return Report{}, readFailed(err, "verify: read chain head")
	}
	if seq != nil {
		h.present, h.seq = true, *seq
		copy(h.hash[:], hash)
		copy(h.mac[:], mac)
		if keyID != nil {
			h.keyID = *keyID
		}
	}
	treeSize, err := storedTreeSize(ctx, l.reads)
	if err != nil {
		return Report{}, readFailed(err, "verify: read the tree's size")
	}
	v := newVerifier(l.keys, h)
	tc := newTreeCheck(pgHashes{ctx, l.reads})
	if from > 0 {
		// Start after record from, linked to its stored hash, the tree from
		// its stored right edge.
		var prev []byte
		if err := l.reads.QueryRow(ctx, "SELECT hash FROM issuance_log WHERE seq = $1", from).Scan(&prev); err != nil || len(prev) != len(Hash{}) {
			return Report{}, apperr.New(apperr.NotFound, "record %d, where verification was to start, is not in the log", from)
		}
		if from > treeSize {
			return Report{}, apperr.New(apperr.NotFound, "the tree does not cover record %d, where verification was to start", from)
		}
		t, err := loadTree(ctx, l.reads, from)
		if err != nil {
			return Report{}, readFailed(err, "verify: read the tree")
		}
		v.startAfter(from, Hash(prev))
		tc.t = t
	}
	cond, args := "true", []any(nil) // a full run reads forged rows at seq 0 or below too
	if from > 0 {
		cond, args = "seq > $1", []any{from}
	}
	if last != nil && (from == 0 || *last > from) {
		if err := l.walk(ctx, "verify", cond, args, 0, *last, func(s storedRecord) error {
			v.add(s)
			if s.Seq <= treeSize {
				tc.add(v, &s.Record)
			}
			return nil
		}); err != nil {
			return Report{}, err
		}
	}
	tc.finish(v, treeSize)
	return v.finish(), nil
}

// Stats counts decisions per bucket from since until now.
func (l *Postgres) Stats(ctx context.Context, since time.Time, bucket time.Duration) ([]Bucket, error) {
	series, err := buckets(since, bucket, time.Now())
	if err != nil || len(series) == 0 {
		return series, err
	}
	release, err := l.readSlot()
	if err != nil {
		return nil, err
	}
	defer release()
	start := series[0].Start
	rows, err := l.reads.Query(ctx, `SELECT min(at), decision, count(*) FROM issuance_log WHERE at >= $1
		GROUP BY floor((extract(epoch FROM at) - extract(epoch FROM $1::timestamptz)) * 1000000 / $2), decision`,
		start, bucket.Microseconds())
	if err != nil {
		return nil, readFailed(err, "stats")
	}
	defer rows.Close()
	for rows.Next() {
		var (
			at       time.Time
			decision string
			n        int
		)
		if err := rows.Scan(&at, &decision, &n); err != nil {
			return nil, readFailed(err, "stats")
		}
		count(series, start, bucket, at, Decision(decision), n)
	}
	if err := rows.Err(); err != nil {
		return nil, readFailed(err, "stats")
	}
	return series, nil
}
