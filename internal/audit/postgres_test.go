package audit

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/broker-dev/broker/internal/apperr"
	"github.com/broker-dev/broker/internal/pg/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func newPostgres(t testing.TB, db *pgtest.DB, opts PostgresOptions) *Postgres {
	t.Helper()
	l, err := NewPostgres(db.Pool(), testKey, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func TestPostgres_Conformance(t *testing.T) {
	runConformance(t, func(t *testing.T) (Log, tamperer) {
		db := pgtest.New(t)
		return newPostgres(t, db, PostgresOptions{}), sqlTamperer{db}
	})
}

// sqlTamperer edits issuance_log with plain SQL, as a database user could.
type sqlTamperer struct{ db *pgtest.DB }

func (s sqlTamperer) exec(t *testing.T, sql string, args ...any) {
	t.Helper()
	if _, err := s.db.Pool().Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func (s sqlTamperer) modify(t *testing.T, seq int64) {
	s.exec(t, "UPDATE issuance_log SET channel = channel || 'x' WHERE seq = $1", seq)
}

func (s sqlTamperer) modifyHash(t *testing.T, seq int64) {
	s.exec(t, "UPDATE issuance_log SET channel = channel || 'x', hash = sha256(hash) WHERE seq = $1", seq)
}

func (s sqlTamperer) remove(t *testing.T, seq int64) {
	s.exec(t, "DELETE FROM issuance_log WHERE seq = $1", seq)
}

func (s sqlTamperer) shift(t *testing.T, from int64) {
	s.exec(t, "UPDATE issuance_log SET seq = -seq - 1 WHERE seq >= $1", from)
	s.exec(t, "UPDATE issuance_log SET seq = -seq WHERE seq < 0")
}

func (s sqlTamperer) insert(t *testing.T, r Record) {
	s.exec(t, `INSERT INTO issuance_log (`+selectColumns+`) VALUES
		($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22)`, rowOf(&r)...)
}

// rowOf maps r to issuance_log's column values in the order of columns.
func rowOf(r *Record) []any {
	groups := r.Groups
	if groups == nil {
		groups = []string{}
	}
	return []any{
		r.Seq, r.Time, r.RequestID, r.Issuer, r.Subject, r.Account, uidValue(r), groups,
		r.Service, r.Channel, r.Role, ttlValue(r.RequestedTTL), ttlValue(r.GrantedTTL), string(r.Decision),
		r.Reason, r.Rule, r.PolicyVersion, r.ClientIP, r.UserAgent,
		r.TokenFingerprint, r.PrevHash[:], r.Hash[:],
	}
}

func TestPostgres_TwoWritersShareOneChain(t *testing.T) {
	db := pgtest.New(t)
	a := newPostgres(t, db, PostgresOptions{MaxBatch: 7})
	b := newPostgres(t, db, PostgresOptions{MaxBatch: 7})
	const perWriter, goroutines = 60, 4
	var wg sync.WaitGroup
	for _, l := range []*Postgres{a, b} {
		for g := range goroutines {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range perWriter / goroutines {
					if _, err := l.Append(context.Background(), rec("w", "room", g*100+i)); err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	rep, err := a.Verify(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK || rep.Records != 2*perWriter {
		t.Fatalf("Verify = %+v; want ok with %d records", rep, 2*perWriter)
	}

	sqlTamperer{db}.remove(t, 50)
	rep, err = b.Verify(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK || rep.Problems[0] != (Problem{Seq: 50, Kind: ProblemDeleted, Detail: rep.Problems[0].Detail}) {
		t.Errorf("after deleting 50: %+v; want deleted at 50", rep)
	}
}

func TestPostgres_AppendFailsClosedAndRecovers(t *testing.T) {
	cluster := pgtest.NewCluster(t, pgtest.Options{NoFsync: true})
	db := cluster.New(t)
	const bound = 500 * time.Millisecond
	reg := prometheus.NewRegistry()
	l := newPostgres(t, db, PostgresOptions{CommitTimeout: bound, Registerer: reg})
	ctx := context.Background()
	mustAppend(t, l, rec("alice", "room", 0))

	cluster.Stop(t)
	start := time.Now()
	_, err := l.Append(ctx, rec("alice", "room", 1))
	if apperr.KindOf(err) != apperr.Unavailable {
		t.Fatalf("Append with Postgres down: %v; want apperr.Unavailable", err)
	}
	if took := time.Since(start); took > 2*bound+time.Second {
		t.Errorf("Append took %v to fail; want within about %v", took, 2*bound)
	}
	if _, err := l.Search(ctx, Filter{}); apperr.KindOf(err) != apperr.Unavailable {
		t.Errorf("Search with Postgres down: %v; want apperr.Unavailable", err)
	}
	if n := gathered(t, reg)["broker_audit_commit_failures_total"]; n < 1 {
		t.Errorf("failures counter = %v; want at least 1", n)
	}

	cluster.Start(t)
	var got Record
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, err = l.Append(ctx, rec("alice", "room", 2))
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("Append after restart: %v; want the same log to recover", err)
	}
	if got.Seq != 2 {
		t.Errorf("seq after recovery = %d; want 2 (the failed append left nothing behind)", got.Seq)
	}
	rep, err := l.Verify(ctx)
	if err != nil || !rep.OK || rep.Records != 2 {
		t.Errorf("Verify after recovery = %+v, %v; want ok with 2 records", rep, err)
	}
}

func TestPostgres_AppendHonoursCallerDeadline(t *testing.T) {
	db := pgtest.New(t)
	l := newPostgres(t, db, PostgresOptions{})
	// Hold the chain lock so the writer's commit waits.
	conn, err := db.Pool().Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	tx, err := conn.Begin(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(context.Background(), "SELECT pg_advisory_xact_lock($1)", lockID); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err = l.Append(ctx, rec("alice", "room", 0))
	if apperr.KindOf(err) != apperr.Unavailable || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Append past its deadline: %v; want apperr.Unavailable wrapping the deadline", err)
	}
	if err := tx.Rollback(context.Background()); err != nil {
		t.Fatal(err)
	}
	// The next append is committed after the abandoned one's batch is settled.
	next := mustAppend(t, l, rec("bob", "room", 1))[0]
	if next.Seq != 1 {
		t.Errorf("next append got seq %d; want 1, nothing written for the abandoned append", next.Seq)
	}
}

func TestPostgres_WriterRefusesForgedHead(t *testing.T) {
	for _, c := range []struct{ name, sql string }{
		{"HeadMACAltered", "UPDATE issuance_log_head SET mac = sha256(mac)"},
		{"HeadRolledBack", "UPDATE issuance_log_head SET seq = 1, hash = (SELECT hash FROM issuance_log WHERE seq = 1)"},
		{"HeadDeleted", "DELETE FROM issuance_log_head"},
	} {
		t.Run(c.name, func(t *testing.T) {
			db := pgtest.New(t)
			l := newPostgres(t, db, PostgresOptions{})
			mustAppend(t, l, rec("a", "r", 0), rec("b", "r", 1))
			sqlTamperer{db}.exec(t, c.sql)
			if _, err := l.Append(context.Background(), rec("c", "r", 2)); apperr.KindOf(err) != apperr.Unavailable {
				t.Errorf("Append on a forged head: %v; want apperr.Unavailable", err)
			}
			rep, _ := l.Verify(context.Background())
			if rep.OK || rep.Records != 2 {
				t.Errorf("Verify = %+v; want the tampering reported and nothing appended", rep)
			}
		})
	}
}

func TestPostgres_MetricsCountBatches(t *testing.T) {
	db := pgtest.New(t)
	reg := prometheus.NewRegistry()
	l := newPostgres(t, db, PostgresOptions{Registerer: reg})
	mustAppend(t, l, rec("a", "r", 0), rec("b", "r", 1))
	got := gathered(t, reg)
	for name, want := range map[string]float64{
		"broker_audit_batch_size": 2, "broker_audit_commit_seconds": 2, "broker_audit_commit_failures_total": 0,
	} {
		if n, ok := got[name]; !ok || n != want {
			t.Errorf("%s = %v (present %v); want %v", name, n, ok, want)
		}
	}
	second, err := NewPostgres(db.Pool(), testKey, PostgresOptions{Registerer: reg})
	if err != nil {
		t.Fatalf("second log on the same registry: %v; want the metrics shared", err)
	}
	second.Close()
}

// gathered maps each metric family in reg to its counter value or histogram sample count.
func gathered(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			if h := m.GetHistogram(); h != nil {
				out[mf.GetName()] += float64(h.GetSampleCount())
			} else {
				out[mf.GetName()] += m.GetCounter().GetValue()
			}
		}
	}
	return out
}
