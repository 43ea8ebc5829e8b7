package audit

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/broker-dev/broker/internal/pg/pgtest"
)

// BenchmarkAppendParallel measures durable appends from many concurrent
// requests on a private cluster with fsync on, reporting throughput and how
// many records each group commit carried.
func BenchmarkAppendParallel(b *testing.B) {
	cluster := pgtest.NewCluster(b, pgtest.Options{})
	db := cluster.New(b)
	reg := prometheus.NewRegistry()
	l := newPostgres(b, db, PostgresOptions{Registerer: reg})
	r := rec("alice", "room", 0)
	r.TokenFingerprint = l.Fingerprint("token")
	b.SetParallelism(32) // requests in flight per CPU
	b.ReportAllocs()
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
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
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
// commit (fsync on), the floor group commit amortises.
func BenchmarkAppendSerial(b *testing.B) {
	cluster := pgtest.NewCluster(b, pgtest.Options{})
	l := newPostgres(b, cluster.New(b), PostgresOptions{})
	r := rec("alice", "room", 0)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := l.Append(context.Background(), r); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
}
