package audit

// Retention (BROKER_AUDIT_RETENTION): a month of records whose end is past
// the retention period loses its personal fields, and the log stays
// verifiable: the records keep their seq, time, decision and the rest, their
// chain hashes and their leaves in the tree, so the chain still links through
// them and the tree still proves the newer records; what can no longer be
// checked is the content of the redacted records, and Verify reports them as
// redacted, not as tampered.

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/broker-dev/broker/internal/apperr"
)

// Maintained is what a Maintain call did.
type Maintained struct {
	Partitions int       // months of storage made ahead (Postgres)
	Compacted  int       // closed months whose indexes were rebuilt full (Postgres)
	Redacted   int64     // records whose personal fields it dropped
	Before     time.Time // records before this time are redacted (zero: none)
}

// redaction is the log's retention state: the records up to seq through with
// a time before before have had their personal fields dropped. It is MACed
// under an audit key (keyID), so that only the broker can declare records
// redacted, and no one can hide a modified record by calling it redacted.
type redaction struct {
	through int64
	before  time.Time
	keyID   string
	mac     Hash
}

// covers reports whether r is a record the redaction may have emptied.
func (d redaction) covers(r *Record) bool {
	return r.Seq <= d.through && r.Time.Before(d.before)
}

// redactionMAC authenticates a redaction under k.
func (k keys) redactionMAC(through int64, before time.Time) Hash {
	m := hmac.New(sha256.New, k.chain)
	m.Write([]byte("broker/audit/retention/v1"))
	m.Write(binary.BigEndian.AppendUint64(nil, uint64(through)))
	m.Write(binary.BigEndian.AppendUint64(nil, uint64(before.UnixMicro())))
	var h Hash
	m.Sum(h[:0])
	return h
}

// checkRedaction authenticates d: nil when it is valid under a configured key.
func (r keyring) checkRedaction(d redaction) error {
	k, ok := r.byID(d.keyID)
	if !ok {
		return errUnknownKey
	}
	if want := k.redactionMAC(d.through, d.before); !hmac.Equal(want[:], d.mac[:]) {
		return errors.New("the retention record does not match its MAC")
	}
	return nil
}

// redact drops r's personal fields: who asked (subject, account, uid,
// groups), from where (client IP, user agent), and the reason, which for a
// denial names the subject.
func redact(r *Record) {
	r.Subject, r.Account, r.UID, r.Groups, r.ClientIP, r.UserAgent, r.Reason = "", "", 0, nil, "", "", ""
}

// retentionCutoff is the start of the month (UTC) whose records are all
// within retention at now: the months before it are redacted.
func retentionCutoff(now time.Time, retention time.Duration) time.Time {
	t := now.Add(-retention).UTC()
	return time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
}

// ProblemRetention: the retention record is not what the broker wrote.
const ProblemRetention = "retention"

// useRedaction makes v accept the records d covers as redacted once d is
// authenticated, and reports d when it is not.
func (v *verifier) useRedaction(d *redaction) {
	if d == nil {
		return
	}
	if err := v.keys.checkRedaction(*d); err != nil {
		v.problem(d.through, ProblemRetention, "the retention record (records up to %d before %s) cannot be trusted: %v",
			d.through, d.before.Format(time.RFC3339), err)
		return
	}
	v.redaction = d
	v.report.RedactedBefore = d.before
}

// Maintain makes the months of storage ahead and, when retention is not
// zero, redacts the months that ended more than retention ago, oldest
// first, one partition at a time (each in one statement: reads and appends
// go on, but for an instant while the partition is swapped). Replicas may all
// call it: one does the work at a time. Errors: Unavailable.
func (l *Postgres) Maintain(ctx context.Context, retention time.Duration) (Maintained, error) {
	var m Maintained
	conn, err := l.pool.Acquire(ctx)
	if err != nil {
		return m, readFailed(err, "maintenance")
	}
	defer conn.Release()
	var locked bool
	if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", maintenanceLock).Scan(&locked); err != nil {
		return m, readFailed(err, "maintenance")
	}
	if !locked {
		return m, nil // another replica is at it
	}
	defer conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", maintenanceLock)
	// Compacting and redacting a month take as long as they take.
	if _, err := conn.Exec(ctx, "SET statement_timeout = 0"); err != nil {
		return m, readFailed(err, "maintenance")
	}
	defer conn.Exec(context.WithoutCancel(ctx), "RESET statement_timeout")
	if err := conn.QueryRow(ctx, "SELECT issuance_log_partitions(2)").Scan(&m.Partitions); err != nil {
		return m, readFailed(err, "making partitions")
	}
	if m.Compacted, err = compactClosedMonths(ctx, conn, time.Now()); err != nil {
		return m, readFailed(err, "compacting a month's indexes")
	}
	if retention <= 0 {
		return m, nil
	}
	cutoff := retentionCutoff(time.Now(), retention)
	for {
		d, err := l.storedRedaction(ctx, conn)
		if err != nil {
			return m, readFailed(err, "reading the retention record")
		}
		// The oldest month partition not yet redacted that ends by cutoff.
		month, ok, err := oldestToRedact(ctx, conn, cutoff, d.before)
		if err != nil {
			return m, readFailed(err, "finding the months past retention")
		}
		if !ok {
			m.Before = d.before
			return m, nil
		}
		end := month.AddDate(0, 1, 0)
		var top *int64
		if err := conn.QueryRow(ctx, "SELECT max(seq) FROM issuance_log_record WHERE at >= $1 AND at < $2", month, end).Scan(&top); err != nil {
			return m, readFailed(err, "reading "+month.Format("2006-01"))
		}
		through, expect := d.through, int64(0)
		if top != nil {
			through, expect = max(d.through, *top), *top
		}
		k := l.keys.current
		mac := k.redactionMAC(through, end)
		var n int64
		if err := conn.QueryRow(ctx, "SELECT issuance_log_redact($1, $2, $3, $4, $5, $6)",
			month, expect, through, end, k.id, mac[:]).Scan(&n); err != nil {
			return m, readFailed(err, "redacting "+month.Format("2006-01"))
		}
		m.Redacted += n
		m.Before = end
	}
}

// compactedNote marks a month partition whose indexes were rebuilt after
// the month closed (or that redaction rebuilt).
const compactedNote = "issuance log: indexes compacted"

// compactClosedMonths rebuilds, CONCURRENTLY (reads and appends go on), the
// indexes of every month partition closed for a day and not compacted yet.
// Indexes grown by inserts in key order within a subject, channel or uid
// keep their pages about 70% full; rebuilt, 90% (a tenth of the log's
// size). A rebuild an interrupted run left invalid is dropped first.
func compactClosedMonths(ctx context.Context, conn *pgxpool.Conn, now time.Time) (int, error) {
	rows, err := conn.Query(ctx, `SELECT c.relname, coalesce(obj_description(c.oid, 'pg_class'), '') = $1
		FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
		WHERE i.inhparent = 'issuance_log_record'::regclass`, compactedNote)
	if err != nil {
		return 0, err
	}
	type part struct {
		name string
		done bool
	}
	parts, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (part, error) {
		var p part
		return p, r.Scan(&p.name, &p.done)
	})
	if err != nil {
		return 0, err
	}
	n := 0
	for _, p := range parts {
		month, err := time.Parse("issuance_log_record_2006_01", p.name)
		if err != nil || p.done || month.AddDate(0, 1, 1).After(now) {
			continue
		}
		rows, err := conn.Query(ctx, `SELECT ic.relname FROM pg_index x JOIN pg_class ic ON ic.oid = x.indexrelid
			WHERE x.indrelid = $1::regclass AND NOT x.indisvalid`, p.name)
		if err != nil {
			return n, err
		}
		invalid, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return n, err
		}
		for _, ix := range invalid {
			if _, err := conn.Exec(ctx, "DROP INDEX CONCURRENTLY IF EXISTS "+pgx.Identifier{ix}.Sanitize()); err != nil {
				return n, err
			}
		}
		table := pgx.Identifier{p.name}.Sanitize()
		if _, err := conn.Exec(ctx, "REINDEX TABLE CONCURRENTLY "+table); err != nil {
			return n, err
		}
		if _, err := conn.Exec(ctx, "COMMENT ON TABLE "+table+" IS '"+compactedNote+"'"); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// oldestToRedact finds the oldest month partition that ends by cutoff and
// after the last one redacted (which ended at done).
func oldestToRedact(ctx context.Context, q queryer, cutoff, done time.Time) (time.Time, bool, error) {
	rows, err := q.Query(ctx, `SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
		WHERE i.inhparent = 'issuance_log_record'::regclass`)
	if err != nil {
		return time.Time{}, false, err
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return time.Time{}, false, err
	}
	var oldest time.Time
	for _, n := range names {
		month, err := time.Parse("issuance_log_record_2006_01", n)
		if err != nil {
			continue // the default partition
		}
		if end := month.AddDate(0, 1, 0); !end.After(cutoff) && end.After(done) && (oldest.IsZero() || month.Before(oldest)) {
			oldest = month
		}
	}
	return oldest, !oldest.IsZero(), nil
}

// maintenanceLock is the session advisory lock of Maintain: the first 8
// bytes of SHA-256("broker.issuance_log.maintenance").
const maintenanceLock int64 = 0x61c0e2f4a7d3b915

// storedRedaction reads the retention record (zero before the first).
func (l *Postgres) storedRedaction(ctx context.Context, q queryer) (redaction, error) {
	var (
		d   redaction
		mac []byte
	)
	err := q.QueryRow(ctx, "SELECT through_seq, before, key_id, mac FROM issuance_log_retention").Scan(&d.through, &d.before, &d.keyID, &mac)
	if errors.Is(err, pgx.ErrNoRows) {
		return redaction{}, nil
	}
	if err != nil {
		return redaction{}, err
	}
	d.before = d.before.UTC()
	copy(d.mac[:], mac)
	return d, nil
}

// redactionFor is the redaction Verify applies: nil when there is none.
func (l *Postgres) redactionFor(ctx context.Context) (*redaction, error) {
	d, err := l.storedRedaction(ctx, l.reads)
	if err != nil {
		return nil, readFailed(err, "verify: read the retention record")
	}
	if d.keyID == "" {
		return nil, nil
	}
	return &d, nil
}

// Maintain redacts, when retention is not zero, the records of the months
// that ended more than retention ago, as Postgres does; Memory has no
// partitions to make.
func (m *Memory) Maintain(ctx context.Context, retention time.Duration) (Maintained, error) {
	if retention <= 0 {
		return Maintained{}, nil
	}
	cutoff := retentionCutoff(m.now(), retention)
	m.mu.Lock()
	defer m.mu.Unlock()
	var out Maintained
	d := m.redaction
	for i := range m.records {
		r := &m.records[i]
		if r.Time.Before(cutoff) && !(d.keyID != "" && d.covers(r)) {
			redact(r)
			out.Redacted++
			d.through = max(d.through, r.Seq)
		}
	}
	if out.Redacted > 0 || d.keyID == "" {
		k := m.keys.current
		d.before, d.keyID, d.mac = cutoff, k.id, k.redactionMAC(d.through, cutoff)
		m.redaction = d
	}
	out.Before = cutoff
	return out, nil
}

// redactionFor is the redaction Verify applies: nil when there is none.
func (m *Memory) redactionFor() *redaction {
	if m.redaction.keyID == "" {
		return nil
	}
	d := m.redaction
	return &d
}

// errRedacted is the NotFound error for a leaf of a redacted record.
func errRedacted(seq int64) error {
	return apperr.New(apperr.NotFound, "record %d is past the retention period and its personal fields were dropped: its leaf is no longer served (its hash stays in the tree)", seq)
}
