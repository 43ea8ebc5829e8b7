package audit

import (
	"context"
	"crypto/hmac"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/broker-dev/broker/internal/apperr"
)

// PostgresOptions tunes a Postgres log. Zero fields take the defaults beside them.
type PostgresOptions struct {
	MaxBatch      int                   // records per transaction at most (500)
	CommitTimeout time.Duration         // one commit attempt, lock wait included (2s)
	QueueLen      int                   // appends waiting for the writer before Append blocks (4×MaxBatch)
	Registerer    prometheus.Registerer // where the writer's metrics go; nil for none
}

// lockID is the pg_advisory_xact_lock key that serializes chain extension
// across replicas: the first 8 bytes of SHA-256("broker.issuance_log").
const lockID int64 = 0x2c0ad3e1b1f6a3d5

// Postgres is the production Log. A single writer goroutine per process
// commits pending appends in batches (group commit): while one transaction
// commits, new appends queue up, and the next transaction takes all of them.
// Replicas serialize their batches with a transaction-scoped advisory lock and
// extend the chain from the head they read under it.
type Postgres struct {
	pool    *pgxpool.Pool
	keys    keys
	opts    PostgresOptions
	metrics *metrics

	queue     chan *pending
	quit      chan struct{} // closed by Close
	stopped   chan struct{} // closed when the writer has exited
	closeOnce sync.Once
}

var _ Log = (*Postgres)(nil)

// pending is one Append waiting for its batch.
type pending struct {
	ctx  context.Context
	rec  Record
	done chan result // buffered: the writer never blocks on it
}

type result struct {
	rec Record
	err error
}

// NewPostgres starts a log writing to pool, whose database has the broker's
// migrations applied. auditKey must be at least MinKeyLen bytes. Close stops
// the writer; the pool stays the caller's.
func NewPostgres(pool *pgxpool.Pool, auditKey []byte, opts PostgresOptions) (*Postgres, error) {
	k, err := deriveKeys(auditKey)
	if err != nil {
		return nil, err
	}
	if opts.MaxBatch < 0 || opts.CommitTimeout < 0 || opts.QueueLen < 0 {
		return nil, errors.New("audit: negative PostgresOptions")
	}
	if opts.MaxBatch == 0 {
		opts.MaxBatch = 500
	}
	if opts.CommitTimeout == 0 {
		opts.CommitTimeout = 2 * time.Second
	}
	if opts.QueueLen == 0 {
		opts.QueueLen = 4 * opts.MaxBatch
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, err
	}
	l := &Postgres{
		pool: pool, keys: k, opts: opts, metrics: m,
		queue:   make(chan *pending, opts.QueueLen),
		quit:    make(chan struct{}),
		stopped: make(chan struct{}),
	}
	go l.write()
	return l, nil
}

// Fingerprint returns the keyed fingerprint under which token is recorded.
func (l *Postgres) Fingerprint(token string) string { return l.keys.fingerprintOf(token) }

func cannotRecord(err error) error {
	return apperr.Wrap(apperr.Unavailable, err, "issuance log cannot record")
}

var errClosed = apperr.New(apperr.Unavailable, "issuance log is closed")

// Append queues r for the next batch and waits until that batch commits. It
// returns apperr.Unavailable when the batch fails or times out (within about
// two CommitTimeouts), when ctx ends first, or after Close. An error means the
// record was not acknowledged; it never means an acknowledged record was lost.
func (l *Postgres) Append(ctx context.Context, r Record) (Record, error) {
	r, err := normalize(r, time.Now())
	if err != nil {
		return Record{}, err
	}
	p := &pending{ctx: ctx, rec: r, done: make(chan result, 1)}
	select {
	case <-l.quit:
		return Record{}, errClosed
	default:
	}
	select {
	case l.queue <- p:
	case <-ctx.Done():
		return Record{}, cannotRecord(fmt.Errorf("waiting to queue: %w", ctx.Err()))
	case <-l.quit:
		return Record{}, errClosed
	}
	select {
	case res := <-p.done:
		return res.rec, res.err
	case <-ctx.Done():
		return Record{}, cannotRecord(fmt.Errorf("waiting for commit: %w", ctx.Err()))
	case <-l.stopped:
		select {
		case res := <-p.done:
			return res.rec, res.err
		default:
			return Record{}, errClosed
		}
	}
}

// Close stops accepting appends, commits those already queued, and waits for
// the writer to exit.
func (l *Postgres) Close() error {
	l.closeOnce.Do(func() { close(l.quit) })
	<-l.stopped
	return nil
}

// write is the writer goroutine: take whatever is queued (up to MaxBatch),
// commit it in one transaction, answer every append, repeat.
func (l *Postgres) write() {
	defer close(l.stopped)
	batch := make([]*pending, 0, l.opts.MaxBatch)
	for {
		select {
		case p := <-l.queue:
			batch = append(batch, p)
		case <-l.quit:
			for {
				batch = l.drain(batch[:0])
				if len(batch) == 0 {
					return
				}
				l.commit(batch)
			}
		}
		batch = l.drain(batch)
		l.commit(batch)
		clear(batch)
		batch = batch[:0]
	}
}

func (l *Postgres) drain(batch []*pending) []*pending {
	for len(batch) < l.opts.MaxBatch {
		select {
		case p := <-l.queue:
			batch = append(batch, p)
		default:
			return batch
		}
	}
	return batch
}

// commit writes the batch and answers each pending append.
func (l *Postgres) commit(batch []*pending) {
	batch = dropAbandoned(batch)
	if len(batch) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), l.opts.CommitTimeout)
	start := time.Now()
	batch, recs, err := l.insert(ctx, batch)
	cancel()
	l.metrics.commit.Observe(time.Since(start).Seconds())
	if err != nil {
		l.metrics.failures.Inc()
		err = cannotRecord(fmt.Errorf("committing %d records: %w", len(batch), err))
		for _, p := range batch {
			p.done <- result{err: err}
		}
		return
	}
	if len(recs) > 0 {
		l.metrics.batchSize.Observe(float64(len(recs)))
	}
	for i, p := range batch {
		p.done <- result{rec: recs[i]}
	}
}

// dropAbandoned answers and removes the appends whose caller has given up, so
// that they are not written: their caller has already refused the request.
func dropAbandoned(batch []*pending) []*pending {
	live := batch[:0:0]
	for _, p := range batch {
		if err := p.ctx.Err(); err != nil {
			p.done <- result{err: cannotRecord(fmt.Errorf("caller gave up before commit: %w", err))}
			continue
		}
		live = append(live, p)
	}
	return live
}

// insert links the batch's records to the chain head and commits them with the
// new head in one transaction, holding the chain lock. Appends abandoned while
// it waited for the lock are dropped (and answered); it returns the rest with
// their committed records.
func (l *Postgres) insert(ctx context.Context, batch []*pending) ([]*pending, []Record, error) {
	tx, err := l.pool.Begin(ctx)
	if err != nil {
		return batch, nil, fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // a no-op after Commit
	h, err := l.lockHead(ctx, tx)
	if err != nil {
		return batch, nil, err
	}
	if batch = dropAbandoned(batch); len(batch) == 0 {
		return nil, nil, nil
	}
	recs := make([]Record, len(batch))
	rows := make([][]any, len(batch))
	prev := h.hash
	for i, p := range batch {
		recs[i] = p.rec
		l.keys.link(&recs[i], h.seq+1+int64(i), prev)
		prev = recs[i].Hash
		rows[i] = rowOf(&recs[i])
	}
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"issuance_log"}, columns, pgx.CopyFromRows(rows)); err != nil {
		return batch, nil, fmt.Errorf("copy records: %w", err)
	}
	last := recs[len(recs)-1]
	mac := l.keys.headMAC(last.Seq, last.Hash)
	if _, err := tx.Exec(ctx, `INSERT INTO issuance_log_head (id, seq, hash, mac) VALUES (true, $1, $2, $3)
		ON CONFLICT (id) DO UPDATE SET seq = EXCLUDED.seq, hash = EXCLUDED.hash, mac = EXCLUDED.mac`,
		last.Seq, last.Hash[:], mac[:]); err != nil {
		return batch, nil, fmt.Errorf("update chain head: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return batch, nil, fmt.Errorf("commit: %w", err)
	}
	return batch, recs, nil
}

// lockHead takes the chain lock and returns the authenticated head. It refuses
// to extend a chain whose head is missing or forged, since writing on would
// re-authenticate the tampering.
func (l *Postgres) lockHead(ctx context.Context, tx pgx.Tx) (head, error) {
	b := &pgx.Batch{}
	b.Queue("SELECT pg_advisory_xact_lock($1)", lockID)
	b.Queue("SELECT seq, hash, mac, EXISTS (SELECT 1 FROM issuance_log) FROM (SELECT 1) one LEFT JOIN issuance_log_head ON true")
	br := tx.SendBatch(ctx, b)
	defer br.Close()
	if _, err := br.Exec(); err != nil {
		return head{}, fmt.Errorf("chain lock: %w", err)
	}
	var (
		seq       *int64
		hash, mac []byte
		nonEmpty  bool
	)
	if err := br.QueryRow().Scan(&seq, &hash, &mac, &nonEmpty); err != nil {
		return head{}, fmt.Errorf("read chain head: %w", err)
	}
	if err := br.Close(); err != nil {
		return head{}, fmt.Errorf("read chain head: %w", err)
	}
	if seq == nil {
		if nonEmpty {
			return head{}, errors.New("chain head is missing but records exist; run `broker audit verify`")
		}
		return head{}, nil
	}
	h := head{present: true, seq: *seq}
	if len(hash) != len(h.hash) || len(mac) != len(h.mac) {
		return head{}, errors.New("chain head is malformed; run `broker audit verify`")
	}
	copy(h.hash[:], hash)
	copy(h.mac[:], mac)
	if want := l.keys.headMAC(h.seq, h.hash); !hmac.Equal(want[:], h.mac[:]) {
		return head{}, errors.New("chain head fails its MAC (tampered, or another audit key); run `broker audit verify`")
	}
	return h, nil
}

// columns are issuance_log's columns in the order rowOf and scanRecord use.
var columns = []string{
	"seq", "at", "request_id", "issuer", "subject", "account", "uid", "groups",
	"service", "channel", "role", "requested_ttl", "granted_ttl", "decision",
	"reason", "rule", "policy_version", "client_ip", "user_agent",
	"token_fingerprint", "prev_hash", "hash",
}

var selectColumns = strings.Join(columns, ", ")

// rowOf maps r to column values; zero uid and TTLs are stored as NULL.
func rowOf(r *Record) []any {
	var uid, reqTTL, grantTTL any
	if r.UID != 0 {
		uid = int64(r.UID)
	}
	if r.RequestedTTL != 0 {
		reqTTL = int32(r.RequestedTTL / time.Second)
	}
	if r.GrantedTTL != 0 {
		grantTTL = int32(r.GrantedTTL / time.Second)
	}
	groups := r.Groups
	if groups == nil {
		groups = []string{}
	}
	return []any{
		r.Seq, r.Time, r.RequestID, r.Issuer, r.Subject, r.Account, uid, groups,
		r.Service, r.Channel, r.Role, reqTTL, grantTTL, string(r.Decision),
		r.Reason, r.Rule, r.PolicyVersion, r.ClientIP, r.UserAgent,
		r.TokenFingerprint, r.PrevHash[:], r.Hash[:],
	}
}

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
		&r.TokenFingerprint, &prev, &hash); err != nil {
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
	defer rows.Close()
	page := Page{Records: []Record{}}
	for rows.Next() {
		s, err := scanRecord(rows)
		if err != nil {
			return Page{}, readFailed(err, "search")
		}
		if len(page.Records) == q.Limit {
			page.NextCursor = encodeCursor(page.Records[len(page.Records)-1].Seq)
			break
		}
		page.Records = append(page.Records, s.Record)
	}
	if err := rows.Err(); err != nil {
		return Page{}, readFailed(err, "search")
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
		defer rows.Close()
		for rows.Next() {
			s, err := scanRecord(rows)
			if err != nil {
				return readFailed(err, "export")
			}
			if err := e.write(&s.Record); err != nil {
				return err
			}
		}
		if err := rows.Err(); err != nil {
			return readFailed(err, "export")
		}
		return e.flush()
	})
}

// Lookup returns the records of token, oldest first.
func (l *Postgres) Lookup(ctx context.Context, token string) ([]Record, error) {
	if token == "" {
		return nil, apperr.Field("token", "is required")
	}
	// The second condition lets a generic plan use the partial index.
	rows, err := l.pool.Query(ctx, "SELECT "+selectColumns+" FROM issuance_log WHERE token_fingerprint = $1 AND token_fingerprint <> '' ORDER BY seq",
		l.keys.fingerprintOf(token))
	if err != nil {
		return nil, readFailed(err, "lookup")
	}
	defer rows.Close()
	out := []Record{}
	for rows.Next() {
		s, err := scanRecord(rows)
		if err != nil {
			return nil, readFailed(err, "lookup")
		}
		out = append(out, s.Record)
	}
	if err := rows.Err(); err != nil {
		return nil, readFailed(err, "lookup")
	}
	return out, nil
}

// Verify walks the chain in seq order over one snapshot, streaming.
func (l *Postgres) Verify(ctx context.Context) (Report, error) {
	var rep Report
	err := l.readTx(ctx, func(tx pgx.Tx) error {
		h := head{}
		var hash, mac []byte
		err := tx.QueryRow(ctx, "SELECT seq, hash, mac FROM issuance_log_head").Scan(&h.seq, &hash, &mac)
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
		defer rows.Close()
		for rows.Next() {
			s, err := scanRecord(rows)
			if err != nil {
				return readFailed(err, "verify")
			}
			v.add(s)
		}
		if err := rows.Err(); err != nil {
			return readFailed(err, "verify")
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
