package audit

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/broker-dev/broker/internal/pg/pgtest"
)

// BenchmarkAppendParallel measures durable appends from many concurrent
// requests on a private cluster with fsync on, reporting throughput, how
// many records each group commit carried, and the WAL Postgres wrote per
// record (pg_current_wal_lsn before and after: the issuance log's write
// amplification, checkpoints' full-page images included).
func BenchmarkAppendParallel(b *testing.B) {
	cluster := pgtest.NewCluster(b, pgtest.Options{})
	db := cluster.New(b)
	reg := prometheus.NewRegistry()
	l := newPostgres(b, db, PostgresOptions{Registerer: reg})
	r := rec("alice", "room", 0)
	r.TokenFingerprint = l.Fingerprint("token")
	lsn := walNow(b, db)
	b.ReportAllocs()
	appendInParallel(b, l, r)
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
	b.ReportMetric(walSince(b, db, lsn)/float64(b.N), "WAL-B/record")
	mfs, err := reg.Gather()
	if err != nil {
		b.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "broker_audit_batch_size" {
			h := mf.GetMetric()[0].GetHistogram()
			b.ReportMetric(h.GetSampleSum()/float64(h.GetSampleCount()), "records/batch")
		}
	}
}

// BenchmarkAppendSerial is one request at a time: every append pays a whole
// commit (fsync on), the floor group commit amortises, and a batch's own
// writes (the chain head, the minute's range, the tree's row) are all its
// record's WAL.
func BenchmarkAppendSerial(b *testing.B) {
	cluster := pgtest.NewCluster(b, pgtest.Options{})
	db := cluster.New(b)
	l := newPostgres(b, db, PostgresOptions{})
	r := rec("alice", "room", 0)
	lsn := walNow(b, db)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := l.Append(context.Background(), r); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
	b.ReportMetric(walSince(b, db, lsn)/float64(b.N), "WAL-B/record")
}

// appendInParallel times appending r b.N times from 32 goroutines per CPU,
// the load of many concurrent requests that group commit batches.
func appendInParallel(b *testing.B, l *Postgres, r Record) {
	b.SetParallelism(32)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := l.Append(context.Background(), r); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
}

// walNow is db's current WAL position.
func walNow(b *testing.B, db *pgtest.DB) string {
	var lsn string
	if err := db.Pool().QueryRow(context.Background(), "SELECT pg_current_wal_lsn()::text").Scan(&lsn); err != nil {
		b.Fatal(err)
	}
	return lsn
}

// walSince is how many bytes of WAL the cluster wrote since lsn.
func walSince(b *testing.B, db *pgtest.DB, lsn string) float64 {
	var wal float64
	if err := db.Pool().QueryRow(context.Background(), "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn)::float8", lsn).Scan(&wal); err != nil {
		b.Fatal(err)
	}
	return wal
}

// BenchmarkAppendWALByRecordType is BenchmarkAppendParallel's load, and
// where its WAL goes: pg_walinspect's statistics of the benchmark's WAL by
// record type, per issuance-log record (b.Log), e.g. the B-tree inserts of
// the auditor's indexes against the records' heap tuples.
func BenchmarkAppendWALByRecordType(b *testing.B) {
	cluster := pgtest.NewCluster(b, pgtest.Options{})
	db := cluster.New(b)
	l := newPostgres(b, db, PostgresOptions{})
	ctx := context.Background()
	if _, err := db.Pool().Exec(ctx, "CREATE EXTENSION IF NOT EXISTS pg_walinspect"); err != nil {
		b.Fatalf("pg_walinspect (PostgreSQL's contrib, in the server package): %v", err)
	}
	r := rec("alice", "room", 0)
	r.TokenFingerprint = l.Fingerprint("token")
	lsn := walNow(b, db)
	appendInParallel(b, l, r)
	rows, err := db.Pool().Query(ctx, `SELECT "resource_manager/record_type", count, combined_size
		FROM pg_get_wal_stats($1::pg_lsn, pg_current_wal_lsn(), true) WHERE count > 0 ORDER BY combined_size DESC`, lsn)
	if err != nil {
		b.Fatal(err)
	}
	defer rows.Close()
	var total float64
	for rows.Next() {
		var kind string
		var n, size int64
		if err := rows.Scan(&kind, &n, &size); err != nil {
			b.Fatal(err)
		}
		total += float64(size)
		if b.N == 1 {
			continue // the benchmark's probe run: too small to read
		}
		b.Logf("%-22s %8d records %6.2f per record %7.1f B per record", kind, n, float64(n)/float64(b.N), float64(size)/float64(b.N))
	}
	if err := rows.Err(); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(total/float64(b.N), "WAL-B/record")
}

// BenchmarkAppendPostgresTime is BenchmarkAppendParallel's load, and where
// Postgres spends its time on it: pg_stat_statements with nested statements
// tracked, the statements in the functions the append calls, in µs per
// issuance-log record (b.Log); the metric is issuance_log_append's whole.
func BenchmarkAppendPostgresTime(b *testing.B) {
	cluster := pgtest.NewCluster(b, pgtest.Options{Settings: map[string]string{
		"shared_preload_libraries": "pg_stat_statements", "pg_stat_statements.track": "all"}})
	db := cluster.New(b)
	ctx := context.Background()
	if _, err := db.Pool().Exec(ctx, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements"); err != nil {
		b.Fatalf("pg_stat_statements (PostgreSQL's contrib, in the server package): %v", err)
	}
	l := newPostgres(b, db, PostgresOptions{})
	r := rec("alice", "room", 0)
	r.TokenFingerprint = l.Fingerprint("token")
	if _, err := db.Pool().Exec(ctx, "SELECT pg_stat_statements_reset()"); err != nil {
		b.Fatal(err)
	}
	appendInParallel(b, l, r)
	rows, err := db.Pool().Query(ctx, `SELECT calls, total_exec_time, left(regexp_replace(query, '\s+', ' ', 'g'), 100)
		FROM pg_stat_statements WHERE toplevel IS FALSE OR query LIKE '%issuance_log_append(%'
		ORDER BY total_exec_time DESC LIMIT 10`)
	if err != nil {
		b.Fatal(err)
	}
	defer rows.Close()
	for i := 0; rows.Next(); i++ {
		var calls int64
		var ms float64
		var query string
		if err := rows.Scan(&calls, &ms, &query); err != nil {
			b.Fatal(err)
		}
		if i == 0 {
			b.ReportMetric(ms*1000/float64(b.N), "µs-append/record")
		}
		if b.N > 1 { // not the benchmark's probe run: too small to read
			b.Logf("%6.1f µs/record %8d calls  %s", ms*1000/float64(b.N), calls, query)
		}
	}
	if err := rows.Err(); err != nil {
		b.Fatal(err)
	}
}
