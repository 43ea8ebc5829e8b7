package audit

// The issuance log's queries in Postgres: search, export, lookup, verify and
// stats over issuance_log, each a read that never blocks the writer.

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/broker-dev/broker/internal/apperr"
)

// errStop ends a walk early without an error.
var errStop = errors.New("stop")

// valueID is the id of a value of kind (NULL when the log has none, which
// matches no record): found by its key, as the dictionary's unique index
// holds it, and compared whole (migration 017).
func valueID(kind int, param string) string {
	return "(SELECT v.id FROM issuance_log_value v WHERE v.kind = " + strconv.Itoa(kind) +
		" AND issuance_log_value_key(v.value) = issuance_log_value_key(" + param + ") AND v.value = " + param + ")"
}

// contextsWhere is the ids of the context values whose field i (issuer 0,
// project 3) satisfies cond (with the field as f), found by the dictionary's
// expression indexes. Contexts are few (one per issuer, service, role,
// project, App ID, key and rule), so the array is short; as a join, the
// planner would expect few records and read them all.
func contextsWhere(i int, cond string) string {
	return "ANY(ARRAY(SELECT v.id FROM issuance_log_value v, LATERAL (SELECT v.value::json->>" + strconv.Itoa(i) +
		" AS f) x WHERE v.kind = " + strconv.Itoa(kindContext) + " AND " + cond + "))"
}

// channelsSQL is the ids of the channels a LIKE pattern ($1) matches, found
// by the dictionary's C-collated index of channels: the kind is a literal,
// so that the planner can prove the partial index's condition.
var channelsSQL = `SELECT coalesce(array_agg(v.id), '{}') FROM issuance_log_value v
	WHERE v.kind = ` + strconv.Itoa(kindChannel) + ` AND v.value LIKE $1 ESCAPE '\'`

// resolveChannels looks up the ids of the channels q's pattern matches:
// passed as values, they let the planner choose between the channel index
// (few channels) and reading newest first (many).
func resolveChannels(ctx context.Context, db queryer, q *query) error {
	if !strings.Contains(q.Channel, "*") {
		return nil
	}
	q.channels = []int32{}
	return db.QueryRow(ctx, channelsSQL, likePattern(q.Channel)).Scan(&q.channels)
}

// where renders q's filters as a SQL condition on issuance_log_record r,
// appending its arguments. Each filter is a condition on an indexed column
// (with the partial index's own condition, which the planner cannot infer
// from a value known only when the query runs);
// a time window also bounds seq by the minutes it covers
// (issuance_log_minute), so that it reads the seq index's range.
func (q query) where(args []any) (string, []any) {
	conds := []string{"true"}
	param := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	if q.Issuer != "" {
		conds = append(conds, "r.context = "+contextsWhere(0, "x.f = "+param(q.Issuer)))
	}
	if q.Subject != "" {
		conds = append(conds, "r.subject = "+valueID(kindSubject, param(q.Subject)), "r.subject <> 0")
	}
	if q.Account != "" {
		conds = append(conds, "r.account = "+valueID(kindAccount, param(q.Account)), "r.account <> 0")
	}
	if q.UID != nil {
		conds = append(conds, "r.uid = "+param(int32(*q.UID)), "r.uid <> 0") // the uint32's bits
	}
	if q.Channel != "" {
		conds = append(conds, "r.channel <> 0")
		if strings.Contains(q.Channel, "*") {
			conds = append(conds, "r.channel = ANY("+param(q.channels)+"::integer[])")
		} else {
			conds = append(conds, "r.channel = "+valueID(kindChannel, param(q.Channel)))
		}
	}
	if q.Project != "" {
		conds = append(conds, "r.context = "+contextsWhere(3, "x.f = "+param(q.Project)))
	}
	if q.Projects != nil {
		conds = append(conds, "r.context = "+contextsWhere(3, "x.f = ANY("+param(q.Projects)+")"))
	}
	if q.Decision != "" {
		// A literal, so that the plan can use the index of refused decisions.
		conds = append(conds, "r.decision = "+strconv.Itoa(decisionCodes[q.Decision]))
	}
	if !q.From.IsZero() {
		from := param(q.From)
		conds = append(conds, "r.at >= "+from,
			"r.seq >= (SELECT min(m.first_seq) FROM issuance_log_minute m WHERE m.minute >= date_trunc('minute', "+from+"::timestamptz, 'UTC'))")
	}
	if !q.To.IsZero() {
		to := param(q.To)
		conds = append(conds, "r.at < "+to,
			"r.seq <= (SELECT max(m.last_seq) FROM issuance_log_minute m WHERE m.minute < "+to+"::timestamptz)")
	}
	if q.RequestID != "" {
		// Within the window's seq range (validate requires one).
		conds = append(conds, "r.request_id = "+param(requestIDBytes(q.RequestID)))
	}
	if q.before != 0 {
		conds = append(conds, "r.seq < "+param(q.before))
	}
	return strings.Join(conds, " AND "), args
}

// requestIDBytes is a request id as migration 015 stores it: 0x01 and the
// bytes of a lowercase hex id (the broker's own), else 0x00 and its UTF-8.
func requestIDBytes(id string) []byte {
	if len(id)%2 == 0 && lowerHex(id) {
		b, _ := hex.DecodeString(id)
		return append([]byte{1}, b...)
	}
	return append([]byte{0}, id...)
}

func readFailed(err error, what string) error {
	return apperr.Wrap(apperr.Unavailable, fmt.Errorf("%s: %w", what, err), "issuance log is unavailable")
}

// searchSQL is Search's query: a page of q's records, and one more, newest
// first.
func (q query) searchSQL() (string, []any) {
	cond, args := q.where(nil)
	args = append(args, q.Limit+1)
	return "SELECT " + recordColumns + " FROM issuance_log_record r WHERE " + cond +
		" ORDER BY r.seq DESC LIMIT $" + strconv.Itoa(len(args)), args
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
	if err := resolveChannels(ctx, l.reads, &q); err != nil {
		return Page{}, readFailed(err, "search")
	}
	sql, args := q.searchSQL()
	recs, err := l.readRecords(ctx, l.reads, sql, args...)
	if err != nil {
		return Page{}, readFailed(err, "search")
	}
	page := Page{Records: []Record{}}
	for _, s := range recs {
		if len(page.Records) == q.Limit {
			page.NextCursor = encodeCursor(page.Records[len(page.Records)-1].Seq)
			break
		}
		page.Records = append(page.Records, s.Record)
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

// walkSQL is a page of walk: the records of cond (whose arguments are the
// first n) after seq $n+1, up to $n+3 (0: no bound), at most $n+2.
func walkSQL(cond string, n int) string {
	return "SELECT " + recordColumns + " FROM issuance_log_record r WHERE " + cond +
		" AND r.seq > $" + strconv.Itoa(n+1) + " AND ($" + strconv.Itoa(n+3) + " = 0 OR r.seq <= $" + strconv.Itoa(n+3) + ")" +
		" ORDER BY r.seq LIMIT $" + strconv.Itoa(n+2)
}

// walk reads the records of cond (with args) in seq order, up to limit (0:
// all) and up to seq upTo (0: no bound), a page at a time, and hands each to
// fn outside any database call.
func (l *Postgres) walk(ctx context.Context, what, cond string, args []any, limit int, upTo int64,
	prepare func([]storedRecord), fn func(storedRecord) error) error {
	// The next page is read, and the one before it prepared (when prepare
	// is not nil), while fn takes this one: at most three pages in memory.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		page []storedRecord
		err  error
	}
	pages := make(chan result, 1)
	go func() {
		defer close(pages)
		last := int64(math.MinInt64) // a forged record may sit at seq 0 or below
		seen := 0
		for {
			n := readPage
			if limit > 0 {
				n = min(n, limit-seen)
			}
			if n == 0 {
				return
			}
			pageArgs := append(append([]any{}, args...), last, n, upTo)
			page, err := l.readRecords(ctx, l.reads, walkSQL(cond, len(args)), pageArgs...)
			if err != nil {
				err = readFailed(err, what)
			}
			select {
			case pages <- result{page, err}:
			case <-ctx.Done():
				return
			}
			if err != nil || len(page) < n {
				return
			}
			last, seen = page[len(page)-1].Seq, seen+len(page)
		}
	}()
	var out <-chan result = pages
	if prepare != nil {
		// A stage of its own: the page after is read meanwhile.
		prepared := make(chan result, 1)
		go func() {
			defer close(prepared)
			for r := range pages {
				if r.err == nil {
					prepare(r.page)
				}
				select {
				case prepared <- r:
				case <-ctx.Done():
					return
				}
			}
		}()
		out = prepared
	}
	for r := range out {
		if r.err != nil {
			return r.err
		}
		for _, s := range r.page {
			if err := fn(s); err != nil {
				if errors.Is(err, errStop) {
					return nil
				}
				return err
			}
		}
	}
	return ctx.Err()
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
	if err := resolveChannels(ctx, l.reads, &q); err != nil {
		return readFailed(err, "export")
	}
	cond, args := q.where(nil)
	if err := l.walk(ctx, "export", cond, args, q.Limit, 0, nil, func(s storedRecord) error { return e.write(&s.Record) }); err != nil {
		return err
	}
	return e.flush()
}

// lookupSQL is Lookup's query: the records of the fingerprints $1, found by
// the index of their first 8 bytes. The last condition lets a generic plan
// use the partial index.
const lookupSQL = "SELECT " + recordColumns + ` FROM issuance_log_record r
	WHERE ` + fingerprintKey + ` = ANY(ARRAY(SELECT ('x' || rpad(encode(substring(f FROM 1 FOR 8), 'hex'), 16, '0'))::bit(64)::bigint
			FROM unnest($1::bytea[]) f))
		AND r.token_fingerprint = ANY($1) AND r.token_fingerprint <> '\x'::bytea ORDER BY r.seq`

// fingerprintKey is the lookup index's key (migration 015): a record's
// fingerprint's first 8 bytes as a bigint.
const fingerprintKey = `('x' || rpad(encode(substring(r.token_fingerprint FROM 1 FOR 8), 'hex'), 16, '0'))::bit(64)::bigint`

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
	var fps [][]byte
	for _, f := range l.keys.fingerprints(token) {
		b, err := hex.DecodeString(f)
		if err != nil {
			return nil, apperr.Wrap(apperr.Internal, err, "fingerprint")
		}
		fps = append(fps, b)
	}
	recs, err := l.readRecords(ctx, l.reads, lookupSQL, fps)
	if err != nil {
		return nil, readFailed(err, "lookup")
	}
	out := []Record{}
	for _, s := range recs {
		out = append(out, s.Record)
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
	err = l.reads.QueryRow(ctx, `SELECT h.seq, h.hash, h.mac, h.key_id, (SELECT max(seq) FROM issuance_log_record)
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
		if err := l.reads.QueryRow(ctx, "SELECT hash FROM issuance_log_record WHERE seq = $1 LIMIT 1", from).Scan(&prev); err != nil || len(prev) != len(Hash{}) {
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
	d, err := l.redactionFor(ctx)
	if err != nil {
		return Report{}, err
	}
	v.useRedaction(d)
	treeFrom := from
	if d := v.redaction; d != nil && d.through > from && d.through <= treeSize {
		// The redacted records' leaves cannot be recomputed: the tree is
		// checked from its stored right edge after them.
		t, err := loadTree(ctx, l.reads, d.through)
		if err != nil {
			return Report{}, readFailed(err, "verify: read the tree")
		}
		tc.t, treeFrom = t, d.through
	}
	cond, args := "true", []any(nil) // a full run reads forged rows at seq 0 or below too
	if from > 0 {
		cond, args = "r.seq > $1", []any{from}
	}
	if last != nil && (from == 0 || *last > from) {
		if err := l.walk(ctx, "verify", cond, args, 0, *last, func(page []storedRecord) { precheck(l.keys, page) }, func(s storedRecord) error {
			v.add(s)
			if s.Seq <= treeSize && (treeFrom == 0 || s.Seq > treeFrom) {
				tc.add(v, &s)
			}
			return nil
		}); err != nil {
			return Report{}, err
		}
	}
	v.flushHeld() // the chain's problems first, then the tree's
	tc.finish(v, treeSize)
	return v.finish(), nil
}

// statsSQL is Stats' query: decisions counted per bucket from start.
func statsSQL(start time.Time, bucket time.Duration) (string, []any) {
	cond, args := query{Filter: Filter{From: start}}.where(nil)
	return `SELECT min(r.at), (ARRAY['granted', 'denied', 'invalid'])[r.decision], count(*)
		FROM issuance_log_record r WHERE ` + cond + `
		GROUP BY floor((extract(epoch FROM r.at) - extract(epoch FROM $1::timestamptz)) * 1000000 / $2), r.decision`,
		append(args, bucket.Microseconds())
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
	sql, args := statsSQL(start, bucket)
	rows, err := l.reads.Query(ctx, sql, args...)
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
