package audit

// The issuance log's queries in Postgres: search, export, lookup, verify and
// stats over issuance_log, each a read that never blocks the writer.

import (
	"context"
	"errors"
	"fmt"
	"io"
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
	"token_fingerprint", "key_id", "prev_hash", "hash",
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
		&r.TokenFingerprint, &r.KeyID, &prev, &hash); err != nil {
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
	cond, args := q.where(nil)
	args = append(args, q.Limit+1)
	rows, err := l.pool.Query(ctx, "SELECT "+selectColumns+" FROM issuance_log WHERE "+cond+
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

// readTx runs fn in a read-only snapshot without the pool's statement
// timeout, for walks over the whole log that only ctx should bound.
func (l *Postgres) readTx(ctx context.Context, fn func(pgx.Tx) error) error {
	tx, err := l.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return readFailed(err, "begin")
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // read-only
	if _, err := tx.Exec(ctx, "SET LOCAL statement_timeout = 0"); err != nil {
		return readFailed(err, "begin")
	}
	return fn(tx)
}

// Export streams matching records, oldest first.
func (l *Postgres) Export(ctx context.Context, f Filter, format string, w io.Writer) error {
	q, err := validate(f, false)
	if err != nil {
		return err
	}
	e, err := newExporter(format, w)
	if err != nil {
		return err
	}
	cond, args := q.where(nil)
	sql := "SELECT " + selectColumns + " FROM issuance_log WHERE " + cond + " ORDER BY seq"
	if q.Limit > 0 {
		args = append(args, q.Limit)
		sql += " LIMIT $" + strconv.Itoa(len(args))
	}
	return l.readTx(ctx, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, sql, args...)
		if err != nil {
			return readFailed(err, "export")
		}
		if err := eachRecord(rows, "export", func(s storedRecord) error { return e.write(&s.Record) }); err != nil {
			return err
		}
		return e.flush()
	})
}

// Lookup returns the records of token under any configured key, oldest first.
func (l *Postgres) Lookup(ctx context.Context, token string) ([]Record, error) {
	if token == "" {
		return nil, apperr.Field("token", "is required")
	}
	// The second condition lets a generic plan use the partial index.
	rows, err := l.pool.Query(ctx, "SELECT "+selectColumns+" FROM issuance_log WHERE token_fingerprint = ANY($1) AND token_fingerprint <> '' ORDER BY seq",
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

// Verify walks the chain in seq order over one snapshot, streaming.
func (l *Postgres) Verify(ctx context.Context) (Report, error) {
	var rep Report
	err := l.readTx(ctx, func(tx pgx.Tx) error {
		h := head{}
		var hash, mac []byte
		err := tx.QueryRow(ctx, "SELECT seq, hash, mac, key_id FROM issuance_log_head").Scan(&h.seq, &hash, &mac, &h.keyID)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
		case err != nil:
			return readFailed(err, "verify: read chain head")
		default:
			h.present = true
			copy(h.hash[:], hash)
			copy(h.mac[:], mac)
		}
		v := newVerifier(l.keys, h)
		rows, err := tx.Query(ctx, "SELECT "+selectColumns+" FROM issuance_log ORDER BY seq")
		if err != nil {
			return readFailed(err, "verify")
		}
		err = eachRecord(rows, "verify", func(s storedRecord) error {
			v.add(s)
			return nil
		})
		if err != nil {
			return err
		}
		rep = v.finish()
		return nil
	})
	return rep, err
}

// Stats counts decisions per bucket from since until now.
func (l *Postgres) Stats(ctx context.Context, since time.Time, bucket time.Duration) ([]Bucket, error) {
	series, err := buckets(since, bucket, time.Now())
	if err != nil || len(series) == 0 {
		return series, err
	}
	start := series[0].Start
	rows, err := l.pool.Query(ctx, `SELECT min(at), decision, count(*) FROM issuance_log WHERE at >= $1
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
