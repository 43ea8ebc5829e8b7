package audit

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	xtlog "golang.org/x/mod/sumdb/tlog"

	"github.com/broker-dev/broker/internal/apperr"
	"github.com/broker-dev/broker/internal/tracing"
)

// PostgresOptions are a Postgres log's previous audit keys and tuning. Zero
// fields take the defaults beside them.
type PostgresOptions struct {
	// PreviousKeys are rotated-out audit keys (each at least MinKeyLen bytes):
	// records, heads and token fingerprints made under them still verify and
	// are found, but nothing new is keyed with them.
	PreviousKeys [][]byte

	// Reads is the pool auditor reads (search, export, lookup, verify, stats)
	// use, apart from the writer's; nil: the writer's pool. MaxReads bounds
	// how many run at once (4); past it a read is refused at once.
	Reads    *pgxpool.Pool
	MaxReads int

	MaxBatch      int           // records per transaction at most (500)
	CommitTimeout time.Duration // one commit attempt, lock wait included (2s)
	QueueLen      int           // appends waiting for the writer before Append blocks (4×MaxBatch)
	// MaxWaiting bounds the appends waiting for the log, queued or in the
	// batch being committed (MaxBatch: one batch commits while the next
	// fills; more would wait through two commits): past it Append refuses
	// at once (Unavailable: retry in a second) instead of waiting, so that
	// an overloaded broker sheds requests rather than piling them up.
	MaxWaiting int
	Registerer prometheus.Registerer // where the writer's metrics go; nil for none
}

// lockID is the pg_advisory_xact_lock key that serializes chain extension
// across replicas: the first 8 bytes of SHA-256("broker.issuance_log").
// issuance_log_append (migrations 003 and 004) takes the same key.
const lockID int64 = 0x2c0ad3e1b1f6a3d5

// Postgres is the production Log. A single writer goroutine per process
// commits pending appends in batches (group commit): while one batch
// commits, new appends queue up, and the next batch takes all of them.
//
// A batch is one round trip: the writer links it to the chain head it last
// committed or authenticated, and issuance_log_append (migration 004) writes
// it under the replicas' chain lock only if the stored head is still that one.
// When another replica has moved the head, the writer authenticates the new
// head and links the batch again. When another replica holds the lock, the
// writer waits for the lock in a transaction, so that the appends abandoned
// during the wait can be left out.
//
// New records and the head are always keyed with the current audit key. A
// head MACed with a previous key (the first batch after a rotation) is
// accepted, and the batch re-MACs it with the current key.
type Postgres struct {
	pool      *pgxpool.Pool // the writer's
	reads     *pgxpool.Pool // auditor reads'
	readSlots chan struct{}
	values    *values // the dictionary of stored values, as read
	keys      keyring
	opts      PostgresOptions
	metrics   *metrics

	queue     chan *pending
	waiting   atomic.Int64  // callers waiting in Append (MaxWaiting bounds it)
	errFull   error         // Append's refusal past MaxWaiting, made once
	quit      chan struct{} // closed by Close
	stopped   chan struct{} // closed when the writer has exited
	closeOnce sync.Once

	// head is where the writer links the next batch: the last head it
	// committed or authenticated, and tree the Merkle tree of the records up
	// to it. Only the writer goroutine uses them.
	head head
	tree tree

	// blockSwitch makes Append refuse while a Checkpointer finds the tree
	// not to be trusted.
	blockSwitch

	// withoutTree appends as the previous release does, without the tree's
	// stored hashes: set only by benchmarks, to measure what the tree costs.
	withoutTree bool
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
// migrations applied. auditKey, the current audit key, must be at least
// MinKeyLen bytes. Close stops the writer; the pool stays the caller's.
func NewPostgres(pool *pgxpool.Pool, auditKey []byte, opts PostgresOptions) (*Postgres, error) {
	k, err := newKeyring(auditKey, opts.PreviousKeys)
	if err != nil {
		return nil, err
	}
	if opts.MaxBatch < 0 || opts.CommitTimeout < 0 || opts.QueueLen < 0 || opts.MaxReads < 0 || opts.MaxWaiting < 0 {
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
	if opts.MaxWaiting == 0 {
		opts.MaxWaiting = opts.MaxBatch
	}
	if opts.MaxReads == 0 {
		opts.MaxReads = 4
	}
	if opts.Reads == nil {
		opts.Reads = pool
	}
	l := &Postgres{
		pool: pool, reads: opts.Reads, readSlots: make(chan struct{}, opts.MaxReads), values: newValues(), keys: k, opts: opts,
		errFull: apperr.New(apperr.Unavailable, "the issuance log is at capacity (%d requests waiting for it): retry in a second", opts.MaxWaiting),
		queue:   make(chan *pending, opts.QueueLen),
		quit:    make(chan struct{}),
		stopped: make(chan struct{}),
	}
	if l.metrics, err = newMetrics(opts.Registerer, func() float64 { return float64(l.waiting.Load()) }); err != nil {
		return nil, err
	}
	go l.write()
	return l, nil
}

// Fingerprint returns the fingerprint under which token is recorded now.
func (l *Postgres) Fingerprint(token string) string { return l.keys.current.fingerprintOf(token) }

func cannotRecord(err error) error {
	return apperr.Wrap(apperr.Unavailable, err, "issuance log cannot record")
}

// callerGaveUp is the error for an append whose caller's ctx ended first. It
// wraps ctx's error, so that the caller can tell a client that went away
// from a log that cannot record.
func callerGaveUp(ctx context.Context, when string) error {
	return cannotRecord(fmt.Errorf("caller gave up %s: %w", when, ctx.Err()))
}

var errClosed = apperr.New(apperr.Unavailable, "issuance log is closed")

// Append queues r for the next batch and waits until that batch commits. It
// returns apperr.Unavailable when the batch fails or times out (within about
// two CommitTimeouts), when ctx ends first, or after Close. When ctx ended
// first, the error wraps ctx.Err(). An error means the record was not
// acknowledged; it never means an acknowledged record was lost.
func (l *Postgres) Append(ctx context.Context, r Record) (Record, error) {
	r, err := normalize(r, time.Now())
	if err != nil {
		return Record{}, err
	}
	if err := l.blocked(); err != nil {
		return Record{}, err
	}
	if ctx.Err() != nil {
		return Record{}, callerGaveUp(ctx, "before queueing")
	}
	if n := l.waiting.Add(1); n > int64(l.opts.MaxWaiting) {
		l.waiting.Add(-1)
		l.metrics.shed.Inc()
		return Record{}, l.errFull
	}
	defer l.waiting.Add(-1)
	p := &pending{ctx: ctx, rec: r, done: make(chan result, 1)}
	select {
	case <-l.quit:
		return Record{}, errClosed
	default:
	}
	select {
	case l.queue <- p:
	case <-ctx.Done():
		return Record{}, callerGaveUp(ctx, "waiting to queue")
	case <-l.quit:
		return Record{}, errClosed
	}
	select {
	case res := <-p.done:
		if res.err != nil && ctx.Err() != nil {
			return Record{}, callerGaveUp(ctx, "waiting for commit")
		}
		return res.rec, res.err
	case <-ctx.Done():
		return Record{}, callerGaveUp(ctx, "waiting for commit")
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
// commit it as one batch, answer every append, repeat.
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

// commit writes the batch and answers each pending append. When Postgres
// refuses the batch for the data of some record in it (recordAtFault), the
// batch is split in two and each half committed on its own, down to the
// records at fault, which alone are refused: one request never fails the
// others committed with it. Records are bounded before they are queued, so
// this is a second line of defence.
func (l *Postgres) commit(batch []*pending) {
	batch = dropAbandoned(batch)
	if len(batch) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), l.opts.CommitTimeout)
	ctx, span := startCommitSpan(ctx, batch)
	start := time.Now()
	batch, recs, err := l.insert(ctx, batch)
	cancel()
	endCommitSpan(span, batch, recs, err)
	l.metrics.commit.Observe(time.Since(start).Seconds())
	if err != nil && len(batch) > 1 && recordAtFault(err) {
		l.metrics.splits.Inc()
		mid := len(batch) / 2
		l.commit(batch[:mid])
		l.commit(batch[mid:])
		return
	}
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

// startCommitSpan starts the span of one batch commit: a trace of its own
// (a batch serves many requests), linked to the append span of every record
// in it.
func startCommitSpan(ctx context.Context, batch []*pending) (context.Context, trace.Span) {
	links := make([]trace.Link, 0, len(batch))
	for _, p := range batch {
		if sc := trace.SpanContextFromContext(p.ctx); sc.IsSampled() {
			links = append(links, trace.Link{SpanContext: sc})
		}
	}
	return tracing.Tracer().Start(ctx, "audit.commit", trace.WithNewRoot(), trace.WithLinks(links...),
		trace.WithAttributes(attribute.Int("audit.batch.size", len(batch))))
}

// endCommitSpan ends the commit span, and links each record's append span
// back to it with the sequence number the record got, so that a request's
// trace shows the batch that carried its record.
func endCommitSpan(span trace.Span, batch []*pending, recs []Record, err error) {
	defer span.End()
	if err != nil {
		span.SetStatus(codes.Error, "commit failed")
		return
	}
	if len(recs) != len(batch) {
		return
	}
	back := trace.Link{SpanContext: span.SpanContext()}
	for i, p := range batch {
		if s := trace.SpanFromContext(p.ctx); s.IsRecording() {
			s.AddLink(back)
			s.SetAttributes(attribute.Int64("audit.seq", recs[i].Seq))
		}
	}
}

// recordAtFault reports whether Postgres refused a statement for the data it
// was given (a data exception, a program limit such as an index row that is
// too large, or a NOT NULL or CHECK constraint), rather than for the state of
// the connection or of the chain: only then can a smaller batch succeed.
func recordAtFault(err error) bool {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return false
	}
	switch {
	case strings.HasPrefix(pe.Code, "22"), strings.HasPrefix(pe.Code, "54"):
		return true
	}
	return pe.Code == "23502" || pe.Code == "23514"
}

// dropStale answers and removes the appends of grants decided on a policy
// version older than version (ErrStalePolicy).
func dropStale(batch []*pending, version int64) []*pending {
	live := batch[:0:0]
	for _, p := range batch {
		if p.rec.Decision == DecisionGranted && p.rec.PolicyVersion < version {
			p.done <- result{err: ErrStalePolicy}
			continue
		}
		live = append(live, p)
	}
	return live
}

// dropAbandoned answers and removes the appends whose caller has given up, so
// that they are not written: their caller has already refused the request.
func dropAbandoned(batch []*pending) []*pending {
	live := batch[:0:0]
	for _, p := range batch {
		if p.ctx.Err() != nil {
			p.done <- result{err: callerGaveUp(p.ctx, "before commit")}
			continue
		}
		live = append(live, p)
	}
	return live
}

// insert commits the batch's records in one statement (its own transaction)
// and returns the appends it wrote with their records. Appends abandoned
// before their records were sent are dropped (and answered).
func (l *Postgres) insert(ctx context.Context, batch []*pending) ([]*pending, []Record, error) {
	batch, recs, h, err := l.extend(ctx, batch)
	if err != nil {
		return batch, nil, err
	}
	if recs != nil { // the statement's own transaction has committed
		l.head = h
	}
	return batch, recs, nil
}

// The outcomes of issuance_log_append.
const (
	outcomeAppended = "appended"
	outcomeMoved    = "moved"
	outcomeStale    = "stale"
)

// ErrStalePolicy answers the Append of a granted record decided on a policy
// version older than the newest committed change: the record was not
// written, and the caller must bring its rules up to date and decide again.
var ErrStalePolicy = errors.New("audit: the grant was decided on a policy that has since changed")

const appendSQL = `SELECT outcome, head_seq, head_hash, head_mac, head_key_id, has_records, policy_version FROM issuance_log_append(
	$1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,
	$17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30, $31, $32, $33, $34, $35)`

// extend links the batch to l.head and writes it with issuance_log_append,
// which waits for the chain lock server-side and commits in the statement.
// While the stored head is another, it authenticates that head, links the
// batch to it (dropping appends abandoned meanwhile) and tries again; when a
// policy change committed after some grants were decided, it answers those
// with ErrStalePolicy and tries again without them. It returns the appends
// written with their records and the new head, or nil records when none is
// left to write.
func (l *Postgres) extend(ctx context.Context, batch []*pending) ([]*pending, []Record, head, error) {
	for {
		// The tree's reads get a deadline of their own: after a wait for the
		// chain lock that ended in "moved", the batch's may be nearly spent.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), l.opts.CommitTimeout)
		err := l.syncTree(sctx)
		cancel()
		if err != nil {
			return batch, nil, head{}, err
		}
		recs, next, args, nextTree, err := l.link(batch)
		if err != nil {
			l.tree.valid = false
			return batch, nil, head{}, err
		}
		var (
			outcome    string
			seq        *int64
			hash, mac  []byte
			keyID      *string
			hasRecords *bool
			version    *int64
		)
		if err := l.pool.QueryRow(ctx, appendSQL, args...).Scan(&outcome, &seq, &hash, &mac, &keyID, &hasRecords, &version); err != nil {
			l.tree.valid = false
			return batch, nil, head{}, fmt.Errorf("append records: %w", err)
		}
		switch outcome {
		case outcomeAppended:
			l.tree = nextTree
			return batch, recs, next, nil
		case outcomeStale:
			if version == nil {
				return batch, nil, head{}, errors.New("append records: stale without a policy version")
			}
			l.metrics.stale.Inc()
			if batch = dropStale(batch, *version); len(batch) == 0 {
				return nil, nil, head{}, nil
			}
			continue
		case outcomeMoved:
		default:
			return batch, nil, head{}, fmt.Errorf("append records: unknown outcome %q", outcome)
		}
		h, err := l.authenticate(seq, hash, mac, keyID, hasRecords != nil && *hasRecords)
		if err != nil {
			return batch, nil, head{}, err
		}
		if h != l.head { // not just another writer's turn at this head
			l.head, l.tree.valid = h, false
		}
		l.metrics.headMoved.Inc()
		if batch = dropAbandoned(batch); len(batch) == 0 {
			return nil, nil, head{}, nil
		}
	}
}

// authenticate checks the stored head that issuance_log_append found instead
// of the expected one. It refuses a head that is missing while records exist,
// malformed, forged or MACed with a key that is not configured, since linking
// to it would re-authenticate the tampering.
func (l *Postgres) authenticate(seq *int64, hash, mac []byte, keyID *string, hasRecords bool) (head, error) {
	if seq == nil {
		if hasRecords {
			return head{}, errors.New("chain head is missing but records exist; run `broker audit verify`")
		}
		return head{}, nil
	}
	h := head{present: true, seq: *seq}
	if len(hash) != len(h.hash) || len(mac) != len(h.mac) || keyID == nil {
		return head{}, errors.New("chain head is malformed; run `broker audit verify`")
	}
	copy(h.hash[:], hash)
	copy(h.mac[:], mac)
	h.keyID = *keyID
	if err := l.keys.checkHead(h); err != nil {
		return head{}, fmt.Errorf("%w; run `broker audit verify`", err)
	}
	return h, nil
}

// syncTree makes l.tree the tree of the records up to l.head: kept from the
// last batch, or else read from the database after the stored hashes have
// been made to cover those records (BuildTree's chunks; records the previous
// release appended have none).
func (l *Postgres) syncTree(ctx context.Context) error {
	if l.withoutTree || l.tree.valid && l.tree.size == l.head.seq {
		return nil
	}
	size, err := storedTreeSize(ctx, l.pool)
	if err != nil {
		return fmt.Errorf("reading the tree's size: %w", err)
	}
	for size < l.head.seq {
		if err := l.buildChunk(ctx, size, l.head.seq); err != nil {
			return err
		}
		if size, err = storedTreeSize(ctx, l.pool); err != nil {
			return fmt.Errorf("reading the tree's size: %w", err)
		}
	}
	t, err := loadTree(ctx, l.pool, l.head.seq)
	if err != nil {
		return err
	}
	l.tree = t
	return nil
}

// link chains the batch's records on from l.head under the current key. It
// returns them, the head they end in, appendSQL's arguments (the expected
// head, the new head's MAC and the key id of the batch, one array per
// column, then the tree's new stored hashes) and the tree they make.
func (l *Postgres) link(batch []*pending) ([]Record, head, []any, tree, error) {
	k := l.keys.current
	recs := make([]Record, len(batch))
	seq, prev := l.head.seq, l.head.hash
	for i, p := range batch {
		recs[i] = p.rec
		k.link(&recs[i], seq+1+int64(i), prev)
		prev = recs[i].Hash
	}
	last := recs[len(recs)-1]
	next := head{present: true, seq: last.Seq, hash: last.Hash, mac: k.headMAC(last.Seq, last.Hash, k.id), keyID: k.id}

	var expectedHash, expectedMAC []byte // NULL: no head yet
	if l.head.present {
		expectedHash, expectedMAC = l.head.hash[:], l.head.mac[:]
	}
	offsets, counts := make([]int32, len(recs)), make([]int32, len(recs))
	var names []string
	for i := range recs {
		offsets[i], counts[i] = int32(len(names)), int32(len(recs[i].Groups))
		names = append(names, recs[i].Groups...)
	}
	if names == nil {
		names = []string{} // an empty array, not NULL
	}
	args := []any{
		l.head.seq, expectedHash, expectedMAC, l.head.keyID, next.mac[:], k.id,
		column(recs, func(r *Record) int64 { return r.Seq }),
		column(recs, func(r *Record) time.Time { return r.Time }),
		column(recs, func(r *Record) string { return r.RequestID }),
		column(recs, func(r *Record) string { return r.Issuer }),
		column(recs, func(r *Record) string { return r.Subject }),
		column(recs, func(r *Record) string { return r.Account }),
		column(recs, uidValue),
		offsets, counts, names,
		column(recs, func(r *Record) string { return r.Service }),
		column(recs, func(r *Record) string { return r.Channel }),
		column(recs, func(r *Record) string { return r.Role }),
		column(recs, func(r *Record) pgtype.Int4 { return ttlValue(r.RequestedTTL) }),
		column(recs, func(r *Record) pgtype.Int4 { return ttlValue(r.GrantedTTL) }),
		column(recs, func(r *Record) string { return string(r.Decision) }),
		column(recs, func(r *Record) string { return r.Reason }),
		column(recs, func(r *Record) string { return r.Rule }),
		column(recs, func(r *Record) int64 { return r.PolicyVersion }),
		column(recs, func(r *Record) string { return r.ClientIP }),
		column(recs, func(r *Record) string { return r.UserAgent }),
		column(recs, func(r *Record) string { return r.TokenFingerprint }),
		column(recs, func(r *Record) []byte { return r.PrevHash[:] }),
		column(recs, func(r *Record) []byte { return r.Hash[:] }),
		column(recs, func(r *Record) string { return r.TraceID }),
		column(recs, func(r *Record) string { return r.Project }),
		column(recs, func(r *Record) string { return r.AppID }),
	}
	if l.withoutTree {
		return recs, next, append(args, nil, []byte(nil)), tree{}, nil
	}
	hashes, nextTree, err := l.tree.extendRecords(recs)
	if err != nil {
		return nil, head{}, nil, tree{}, err
	}
	args = append(args, xtlog.StoredHashCount(l.tree.size), concat(hashes))
	return recs, next, args, nextTree, nil
}

// column returns one field of every record, in order.
func column[T any](recs []Record, field func(*Record) T) []T {
	out := make([]T, len(recs))
	for i := range recs {
		out[i] = field(&recs[i])
	}
	return out
}

// uidValue is r's uid column: NULL when no uid is bound.
func uidValue(r *Record) pgtype.Int8 {
	return pgtype.Int8{Int64: int64(r.UID), Valid: r.UID != 0}
}

// ttlValue is a TTL column in whole seconds: NULL when zero.
func ttlValue(d time.Duration) pgtype.Int4 {
	return pgtype.Int4{Int32: int32(d / time.Second), Valid: d != 0}
}
