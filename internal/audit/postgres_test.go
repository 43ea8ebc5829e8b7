package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
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

// setValue points column col of record seq at value (of kind).
func (s sqlTamperer) setValue(t *testing.T, seq int64, col string, kind int, value string, more string) {
	s.exec(t, `WITH v AS (INSERT INTO issuance_log_value (kind, value) VALUES ($2, $3)
		ON CONFLICT (kind, issuance_log_value_key(value)) DO UPDATE SET kind = EXCLUDED.kind RETURNING id)
		UPDATE issuance_log_record SET `+col+` = (SELECT id FROM v)`+more+` WHERE seq = $1`, seq, kind, value)
}

func (s sqlTamperer) modify(t *testing.T, seq int64) {
	s.setValue(t, seq, "channel", kindChannel, "tampered", "")
}

func (s sqlTamperer) modifyHash(t *testing.T, seq int64) {
	s.setValue(t, seq, "channel", kindChannel, "tampered", ", hash = sha256(hash)")
}

func (s sqlTamperer) remove(t *testing.T, seq int64) {
	s.exec(t, "DELETE FROM issuance_log_record WHERE seq = $1", seq)
}

func (s sqlTamperer) shift(t *testing.T, from int64) {
	s.exec(t, "UPDATE issuance_log_record SET seq = -seq - 1 WHERE seq >= $1", from)
	s.exec(t, "UPDATE issuance_log_record SET seq = -seq WHERE seq < 0")
}

// insert stores r as it is, through the store the append uses.
func (s sqlTamperer) insert(t *testing.T, r Record) {
	t.Helper()
	if err := store(s.db, r); err != nil {
		t.Fatalf("issuance_log_store: %v", err)
	}
}

// store calls issuance_log_store with r alone.
func store(db *pgtest.DB, r Record) error {
	groups := ""
	if len(r.Groups) > 0 {
		b, _ := json.Marshal(r.Groups)
		groups = string(b)
	}
	_, err := db.Pool().Exec(context.Background(), `SELECT issuance_log_store(ARRAY[$1::bigint], ARRAY[$2::timestamptz], ARRAY[$3::text], ARRAY[$4::text],
		ARRAY[$5::text], ARRAY[$6::text], ARRAY[$7::bigint], ARRAY[$8::text], ARRAY[$9::text], ARRAY[$10::text],
		ARRAY[$11::text], ARRAY[$12::integer], ARRAY[$13::integer], ARRAY[$14::text], ARRAY[$15::text], ARRAY[$16::text],
		ARRAY[$17::bigint], ARRAY[$18::text], ARRAY[$19::text], ARRAY[$20::text], ARRAY[$21::text], ARRAY[$22::bytea],
		ARRAY[$23::text], ARRAY[$24::text], ARRAY[$25::text])`,
		r.Seq, r.Time, r.RequestID, r.Issuer, r.Subject, r.Account, uidValue(&r), groups,
		r.Service, r.Channel, r.Role, ttlValue(r.RequestedTTL), ttlValue(r.GrantedTTL), string(r.Decision),
		r.Reason, r.Rule, r.PolicyVersion, r.ClientIP, r.UserAgent, r.TokenFingerprint, r.KeyID, r.Hash[:],
		r.TraceID, r.Project, r.AppID)
	return err
}

// TestPostgres_StoreRefusesWhatIsNotHex: a token fingerprint or a trace id
// is stored as the bytes its lowercase hex spells; anything else fails the
// statement rather than be stored changed, and nothing is stored.
func TestPostgres_StoreRefusesWhatIsNotHex(t *testing.T) {
	db := pgtest.New(t)
	good := rec("alice", "room", 0)
	good.Seq = 1
	good.TokenFingerprint = strings.Repeat("ab", 16)
	good.TraceID = strings.Repeat("0f", 16)
	for name, edit := range map[string]func(*Record){
		"fingerprint in capitals":   func(r *Record) { r.TokenFingerprint = strings.ToUpper(r.TokenFingerprint) },
		"fingerprint of odd length": func(r *Record) { r.TokenFingerprint += "a" },
		"trace id not hex":          func(r *Record) { r.TraceID = "trace-" + r.TraceID },
	} {
		r := good
		edit(&r)
		err := store(db, r)
		if err == nil || !strings.Contains(err.Error(), "is not lowercase hex") {
			t.Errorf("%s: %v, want the store's refusal", name, err)
		}
	}
	var n int
	if err := db.Pool().QueryRow(context.Background(), "SELECT count(*) FROM issuance_log_record").Scan(&n); err != nil || n != 0 {
		t.Fatalf("records stored: %d (%v), want none", n, err)
	}
	if err := store(db, good); err != nil {
		t.Fatal(err)
	}
	var fp, trace string
	if err := db.Pool().QueryRow(context.Background(),
		"SELECT encode(token_fingerprint, 'hex'), encode(trace_id, 'hex') FROM issuance_log_record").Scan(&fp, &trace); err != nil {
		t.Fatal(err)
	}
	if fp != good.TokenFingerprint || trace != good.TraceID {
		t.Errorf("stored %s and %s, want %s and %s", fp, trace, good.TokenFingerprint, good.TraceID)
	}
}

func (s sqlTamperer) setKeyID(t *testing.T, seq int64, id string) {
	s.exec(t, `WITH c AS (SELECT v.value::jsonb AS j FROM issuance_log_value v JOIN issuance_log_record r ON r.context = v.id WHERE r.seq = $1),
		n AS (INSERT INTO issuance_log_value (kind, value) SELECT 15, jsonb_set(c.j, '{5}', to_jsonb($2::text))::text FROM c
			ON CONFLICT (kind, issuance_log_value_key(value)) DO UPDATE SET kind = EXCLUDED.kind RETURNING id)
		UPDATE issuance_log_record SET context = (SELECT id FROM n) WHERE seq = $1`, seq, id)
}

func (s sqlTamperer) setHead(t *testing.T, h head) {
	s.exec(t, `INSERT INTO issuance_log_head (id, seq, hash, mac, key_id) VALUES (true, $1, $2, $3, $4)
		ON CONFLICT (id) DO UPDATE SET seq = EXCLUDED.seq, hash = EXCLUDED.hash, mac = EXCLUDED.mac, key_id = EXCLUDED.key_id`,
		h.seq, h.hash[:], h.mac[:], h.keyID)
}

func (s sqlTamperer) makeMonth(t *testing.T, month time.Time) {
	s.exec(t, "SELECT issuance_log_partition($1)", month)
}

func (s sqlTamperer) forgeRedaction(t *testing.T, through int64) {
	s.exec(t, "UPDATE issuance_log_retention SET through_seq = $1", through)
}

func (s sqlTamperer) changePolicy(t *testing.T) int64 {
	var v int64
	if err := s.db.Pool().QueryRow(context.Background(),
		`INSERT INTO policy_history (actor, action) VALUES ('test', 'change') RETURNING id`).Scan(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

func (s sqlTamperer) reopen(t *testing.T, key []byte, previous ...[]byte) Log {
	l, err := NewPostgres(s.db.Pool(), key, PostgresOptions{PreviousKeys: previous})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func TestPostgres_TwoWritersShareOneChain(t *testing.T) {
	db := pgtest.New(t)
	// Small batches, more goroutines than half of one may wait: no append is
	// shed, each waits its turn.
	a := newPostgres(t, db, PostgresOptions{MaxBatch: 7, MaxWaiting: 8})
	b := newPostgres(t, db, PostgresOptions{MaxBatch: 7, MaxWaiting: 8})
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
	release := holdChainLock(t, db) // so the writer's commit waits
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := l.Append(ctx, rec("alice", "room", 0))
	if apperr.KindOf(err) != apperr.Unavailable || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Append past its deadline: %v; want apperr.Unavailable wrapping the deadline", err)
	}
	release()
	// The abandoned append's statement was already waiting for the lock
	// server-side, so its record may be written (a decision whose answer was
	// lost); the chain stays whole either way.
	next := mustAppend(t, l, rec("bob", "room", 1))[0]
	if next.Seq != 1 && next.Seq != 2 {
		t.Errorf("next append got seq %d; want 1 or 2", next.Seq)
	}
	if rep, err := l.Verify(context.Background()); err != nil || !rep.OK {
		t.Errorf("Verify = %+v, %v", rep, err)
	}
}

func TestPostgres_AppendReportsCallerGoneWhileWaitingForTheChainLock(t *testing.T) {
	db := pgtest.New(t)
	l := newPostgres(t, db, PostgresOptions{})
	release := holdChainLock(t, db)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := l.Append(ctx, rec("alice", "room", 0))
		errc <- err
	}()
	waitForChainLockWaiter(t, db)
	cancel()
	if err := <-errc; apperr.KindOf(err) != apperr.Unavailable || !errors.Is(err, context.Canceled) {
		t.Errorf("Append whose caller went away: %v; want apperr.Unavailable wrapping context.Canceled", err)
	}
	release()
	if next := mustAppend(t, l, rec("bob", "room", 1))[0]; next.Seq != 1 && next.Seq != 2 {
		t.Errorf("next append got seq %d; want 1 or 2", next.Seq)
	}
	if rep, err := l.Verify(context.Background()); err != nil || !rep.OK {
		t.Errorf("Verify = %+v, %v", rep, err)
	}
}

func TestPostgres_BatchWaitsForABusyChainLockServerSideAndKeepsEveryColumn(t *testing.T) {
	db := pgtest.New(t)
	reg := prometheus.NewRegistry()
	l := newPostgres(t, db, PostgresOptions{Registerer: reg})
	ctx := context.Background()
	release := holdChainLock(t, db) // as another replica's writer would
	firstErr := make(chan error, 1)
	go func() {
		_, err := l.Append(ctx, rec("first", "room", 0))
		firstErr <- err
	}()
	waitForChainLockWaiter(t, db)

	// Queued behind the first, these make up the next batch. They differ in
	// every column, groups most of all (the batch carries them flattened).
	bare := Record{Decision: DecisionInvalid, Reason: "no channel"} // no uid, groups or TTLs
	many := rec("bob", "room-b", 1)
	many.Groups = []string{"a", "b,c", `d"e`, "{f}", "", "NULL"}
	one := rec("carol", "room-c", 2)
	one.UID, one.Groups, one.GrantedTTL, one.Decision = 4294967295, []string{"solo"}, 0, DecisionDenied
	one.TokenFingerprint = l.Fingerprint("token")
	none := rec("dave", "room-d", 3)
	none.Groups, none.Service, none.PolicyVersion = nil, ServiceRTCRTM, 1<<40
	in := []Record{bare, many, one, none}
	got := make([]Record, len(in))
	var wg sync.WaitGroup
	for i, r := range in {
		wg.Go(func() {
			var err error
			if got[i], err = l.Append(ctx, r); err != nil {
				t.Errorf("Append(%q): %v", r.Subject, err)
			}
		})
	}
	for deadline := time.Now().Add(10 * time.Second); len(l.queue) < len(in); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d appends queued", len(l.queue), len(in))
		}
	}
	release()
	if err := <-firstErr; err != nil {
		t.Fatalf("first Append after the lock was released: %v", err)
	}
	wg.Wait()

	page, err := l.Search(ctx, Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Records) != 1+len(in) {
		t.Fatalf("search found %d records; want %d", len(page.Records), 1+len(in))
	}
	stored := map[int64]Record{}
	for _, r := range page.Records {
		stored[r.Seq] = r
	}
	for _, r := range got {
		assertSame(t, stored[r.Seq], r)
	}
	if rep, err := l.Verify(ctx); err != nil || !rep.OK {
		t.Errorf("Verify = %+v, %v; want ok", rep, err)
	}
	if m := gathered(t, reg); m["broker_audit_batch_size"] != 2 {
		t.Errorf("batches %v; want 2 (the first alone, waiting for the lock server-side)", m["broker_audit_batch_size"])
	}
}

func TestPostgres_WritersTakingTurnsLinkToEachOthersHead(t *testing.T) {
	db := pgtest.New(t)
	regA, regB := prometheus.NewRegistry(), prometheus.NewRegistry()
	a := newPostgres(t, db, PostgresOptions{Registerer: regA})
	b := newPostgres(t, db, PostgresOptions{Registerer: regB})
	const turns = 10
	var seq int64
	for i := range turns {
		for _, l := range []*Postgres{a, b} {
			seq++
			got, err := l.Append(context.Background(), rec("w", "room", i))
			if err != nil {
				t.Fatalf("append %d: %v", seq, err)
			}
			if got.Seq != seq {
				t.Fatalf("append %d got seq %d", seq, got.Seq)
			}
		}
	}
	rep, err := a.Verify(context.Background())
	if err != nil || !rep.OK || rep.Records != 2*turns {
		t.Errorf("Verify = %+v, %v; want ok with %d records", rep, err, 2*turns)
	}
	// Every append but the very first found the other writer's head in place
	// of its own, and linked to it.
	const moved = `broker_audit_chain_conflicts_total{kind="head_moved"}`
	if n, m := gathered(t, regA)[moved], gathered(t, regB)[moved]; n != turns-1 || m != turns {
		t.Errorf("heads moved under a: %v, under b: %v; want %d and %d", n, m, turns-1, turns)
	}
}

func TestPostgres_WriterRefusesForgedHead(t *testing.T) {
	for _, c := range []struct{ name, sql string }{
		{"HeadMACAltered", "UPDATE issuance_log_head SET mac = sha256(mac)"},
		{"HeadRolledBack", "UPDATE issuance_log_head SET seq = 1, hash = (SELECT hash FROM issuance_log_record WHERE seq = 1)"},
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

func TestPostgres_FirstBatchAfterRotationReMACsTheHeadWithTheCurrentKey(t *testing.T) {
	db := pgtest.New(t)
	mustAppend(t, newPostgres(t, db, PostgresOptions{}), rec("a", "r", 0))
	l := sqlTamperer{db}.reopen(t, rotatedKey, testKey)
	last := mustAppend(t, l, rec("b", "r", 1))[0]
	var (
		h         = head{present: true}
		hash, mac []byte
	)
	if err := db.Pool().QueryRow(context.Background(), "SELECT seq, hash, mac, key_id FROM issuance_log_head").Scan(&h.seq, &hash, &mac, &h.keyID); err != nil {
		t.Fatal(err)
	}
	copy(h.hash[:], hash)
	copy(h.mac[:], mac)
	k, _ := deriveKeys(rotatedKey, "audit_key")
	if want := k.headMAC(last.Seq, last.Hash, k.id); h.seq != last.Seq || h.hash != last.Hash || h.keyID != k.id || h.mac != want {
		t.Errorf("head = seq %d key id %q; want seq %d MACed with the current key %q", h.seq, h.keyID, last.Seq, k.id)
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

// gathered maps each metric family in reg to its counter value or histogram
// sample count, summed over labels, and each labelled series, as
// name{label="value"}, to its own.
func gathered(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			v := m.GetCounter().GetValue()
			if h := m.GetHistogram(); h != nil {
				v = float64(h.GetSampleCount())
			}
			out[mf.GetName()] += v
			for _, lp := range m.GetLabel() {
				out[fmt.Sprintf("%s{%s=%q}", mf.GetName(), lp.GetName(), lp.GetValue())] += v
			}
		}
	}
	return out
}

// holdChainLock takes the chain lock in a transaction of its own, as another
// replica's writer would, until release (or the end of the test).
func holdChainLock(t *testing.T, db *pgtest.DB) (release func()) {
	t.Helper()
	ctx := context.Background()
	tx, err := db.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", lockID); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	release = func() {
		once.Do(func() {
			if err := tx.Rollback(ctx); err != nil {
				t.Errorf("releasing the chain lock: %v", err)
			}
		})
	}
	t.Cleanup(release)
	return release
}

// waitForChainLockWaiter returns once a session of db's database waits for an
// advisory lock: the writer has found the chain lock busy and waits for it.
func waitForChainLockWaiter(t *testing.T, db *pgtest.DB) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		var waiting bool
		if err := db.Pool().QueryRow(context.Background(), `SELECT EXISTS (SELECT 1 FROM pg_locks
			WHERE locktype = 'advisory' AND NOT granted
			AND database = (SELECT oid FROM pg_database WHERE datname = current_database()))`).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		if waiting {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the writer never waited for the chain lock")
		}
	}
}

// appendBatch appends rs as one batch behind a first record that waits for
// the chain lock, and returns each append's record and error.
func appendBatch(t *testing.T, db *pgtest.DB, l *Postgres, rs []Record) ([]Record, []error) {
	t.Helper()
	ctx := context.Background()
	release := holdChainLock(t, db)
	firstErr := make(chan error, 1)
	go func() {
		_, err := l.Append(ctx, rec("first", "room", 0))
		firstErr <- err
	}()
	waitForChainLockWaiter(t, db)
	got, errs := make([]Record, len(rs)), make([]error, len(rs))
	var wg sync.WaitGroup
	for i, r := range rs {
		wg.Go(func() { got[i], errs[i] = l.Append(ctx, r) })
	}
	for deadline := time.Now().Add(10 * time.Second); len(l.queue) < len(rs); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d appends queued", len(l.queue), len(rs))
		}
	}
	release()
	if err := <-firstErr; err != nil {
		t.Fatalf("first Append: %v", err)
	}
	wg.Wait()
	return got, errs
}

// TestPostgres_HostileFieldsAreBoundedAndNeverFailABatch: what a signed-in
// user sends (a 4,000-byte channel, a 1 MB role) is recorded in bounded size,
// in the same batch as other users' records, which all commit.
func TestPostgres_HostileFieldsAreBoundedAndNeverFailABatch(t *testing.T) {
	db := pgtest.New(t)
	l := newPostgres(t, db, PostgresOptions{})
	long := rec("mallory", strings.Repeat("c", 4000), 1)
	long.Decision = DecisionInvalid
	huge := rec("mallory", "room", 2)
	huge.Role, huge.Decision = strings.Repeat("r", 1<<20), DecisionInvalid
	wide := rec(strings.Repeat("s", 5000), "room", 3)
	wide.Account, wide.Reason, wide.Rule = strings.Repeat("a", 5000), strings.Repeat("x", 1<<20), strings.Repeat("y", 9000)
	wide.Groups = make([]string, 5000)
	for i := range wide.Groups {
		wide.Groups[i] = strings.Repeat("g", 3000)
	}
	in := []Record{rec("alice", "room", 4), long, huge, wide, rec("bob", "room", 5)}
	got, errs := appendBatch(t, db, l, in)
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Append %d: %v", i, err)
		}
	}
	if len(got[1].Channel) > maxChannel || !strings.HasSuffix(got[1].Channel, "…[4000 bytes]") {
		t.Errorf("long channel stored as %d bytes %q", len(got[1].Channel), got[1].Channel)
	}
	if len(got[2].Role) > maxRole || !strings.HasSuffix(got[2].Role, "…[1048576 bytes]") {
		t.Errorf("huge role stored as %d bytes %q", len(got[2].Role), got[2].Role)
	}
	if len(got[3].Groups) != maxGroups || !strings.Contains(got[3].Groups[maxGroups-1], "more groups") {
		t.Errorf("5000 groups stored as %d", len(got[3].Groups))
	}
	var biggest int
	if err := db.Pool().QueryRow(context.Background(), `SELECT max(pg_column_size(l.*)) FROM issuance_log l`).Scan(&biggest); err != nil {
		t.Fatal(err)
	}
	if biggest > 24<<10 {
		t.Errorf("the largest stored record is %d bytes", biggest)
	}
	if rep, err := l.Verify(context.Background()); err != nil || !rep.OK {
		t.Errorf("Verify = %+v, %v; want ok", rep, err)
	}
}

// TestPostgres_ARecordPostgresRefusesFailsAlone: a record whose data Postgres
// refuses (here a CHECK made to fail on one channel) is isolated; the other
// records of its batch commit and the chain verifies.
func TestPostgres_ARecordPostgresRefusesFailsAlone(t *testing.T) {
	db := pgtest.New(t)
	ctx := context.Background()
	if _, err := db.Pool().Exec(ctx, `ALTER TABLE issuance_log_value ADD CONSTRAINT no_poison CHECK (value <> 'poison')`); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	l := newPostgres(t, db, PostgresOptions{Registerer: reg})
	in := []Record{rec("a", "room", 1), rec("b", "room", 2), rec("mallory", "poison", 3), rec("c", "room", 4), rec("d", "room", 5)}
	got, errs := appendBatch(t, db, l, in)
	for i, err := range errs {
		switch {
		case in[i].Channel == "poison" && apperr.KindOf(err) != apperr.Unavailable:
			t.Errorf("poisoned record: %v; want Unavailable", err)
		case in[i].Channel != "poison" && err != nil:
			t.Errorf("record %q failed with the poisoned one: %v", in[i].Subject, err)
		case in[i].Channel != "poison" && got[i].Seq == 0:
			t.Errorf("record %q has no seq", in[i].Subject)
		}
	}
	if rep, err := l.Verify(ctx); err != nil || !rep.OK || rep.Records != 5 {
		t.Errorf("Verify = %+v, %v; want ok with 5 records", rep, err)
	}
	if m := gathered(t, reg); m["broker_audit_batch_splits_total"] < 1 {
		t.Errorf("splits = %v; want at least 1", m["broker_audit_batch_splits_total"])
	}
}

// TestPostgres_StaleGrantsLeaveTheirBatch: in one batch, the grants decided
// before a committed policy change are refused and the rest are written.
func TestPostgres_StaleGrantsLeaveTheirBatch(t *testing.T) {
	db := pgtest.New(t)
	l := newPostgres(t, db, PostgresOptions{})
	v := sqlTamperer{db}.changePolicy(t)
	in := []Record{rec("a", "room", 1), rec("b", "room", 2), rec("c", "room", 3), rec("d", "room", 4)}
	in[0].PolicyVersion, in[1].PolicyVersion, in[2].PolicyVersion, in[3].PolicyVersion = v, v-1, v, v-1
	in[3].Decision, in[3].GrantedTTL = DecisionDenied, 0 // old version, but a denial
	got, errs := appendBatch(t, db, l, in)
	for i, err := range errs {
		switch {
		case i == 1 && !errors.Is(err, ErrStalePolicy):
			t.Errorf("stale grant: %v; want ErrStalePolicy", err)
		case i != 1 && (err != nil || got[i].Seq == 0):
			t.Errorf("record %d: %+v, %v", i, got[i], err)
		}
	}
	if rep, err := l.Verify(context.Background()); err != nil || !rep.OK || rep.Records != 4 {
		t.Errorf("Verify = %+v, %v; want 4 records (the first, alone, and three of the batch)", rep, err)
	}
}

// TestPostgres_PreviousReleaseStillAppends: migration 009 adds the trace id
// with an overload of issuance_log_append, so the previous releases' calls
// (migration 007's 30 arguments, 009's 31) keep appending during a rolling
// upgrade, and the log they extend still verifies.
func TestPostgres_PreviousReleaseStillAppends(t *testing.T) {
	ctx := context.Background()
	db := pgtest.New(t)
	l, err := NewPostgres(db.Pool(), testKey, PostgresOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if _, err := l.Append(ctx, Record{Decision: DecisionDenied, Channel: "new-release", TraceID: strings.Repeat("ab", 16),
		Project: "staging", AppID: strings.Repeat("5a", 16)}); err != nil {
		t.Fatal(err)
	}
	// The previous release's statement: the first 30 arguments only.
	rec, err := normalize(Record{Decision: DecisionDenied, Channel: "previous-release"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	_, _, args, _, err := l.link([]*pending{{ctx: ctx, rec: rec}})
	if err != nil {
		t.Fatal(err)
	}
	var outcome string
	if err := db.Pool().QueryRow(ctx, `SELECT outcome FROM issuance_log_append($1, $2, $3, $4, $5, $6, $7, $8, $9, $10,
		$11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30)`, args[:30]...).Scan(&outcome); err != nil || outcome != outcomeAppended {
		t.Fatalf("the 30-argument append: %q, %v", outcome, err)
	}
	// The release before this one: 31 arguments (with trace ids), no project.
	rec, err = normalize(Record{Decision: DecisionDenied, Channel: "release-009", TraceID: strings.Repeat("cd", 16)}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	l.head = head{} // let it link to the stored head, as another replica would
	if _, err := l.Append(ctx, Record{Decision: DecisionDenied, Channel: "relink"}); err != nil {
		t.Fatal(err)
	}
	if _, _, args, _, err = l.link([]*pending{{ctx: ctx, rec: rec}}); err != nil {
		t.Fatal(err)
	}
	if err := db.Pool().QueryRow(ctx, `SELECT outcome FROM issuance_log_append($1, $2, $3, $4, $5, $6, $7, $8, $9, $10,
		$11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30, $31)`, args[:31]...).Scan(&outcome); err != nil || outcome != outcomeAppended {
		t.Fatalf("the 31-argument append: %q, %v", outcome, err)
	}
	// The release before the tree: 33 arguments, no stored hashes.
	rec, err = normalize(Record{Decision: DecisionDenied, Channel: "release-012", Project: "p", AppID: strings.Repeat("7b", 16)}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	l.head, l.tree = head{}, tree{}
	if _, err := l.Append(ctx, Record{Decision: DecisionDenied, Channel: "relink-2"}); err != nil {
		t.Fatal(err)
	}
	if _, _, args, _, err = l.link([]*pending{{ctx: ctx, rec: rec}}); err != nil {
		t.Fatal(err)
	}
	if err := db.Pool().QueryRow(ctx, `SELECT outcome FROM issuance_log_append($1, $2, $3, $4, $5, $6, $7, $8, $9, $10,
		$11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30, $31, $32, $33)`, args[:33]...).Scan(&outcome); err != nil || outcome != outcomeAppended {
		t.Fatalf("the 33-argument append: %q, %v", outcome, err)
	}
	// This release's next batch first makes the tree cover those records.
	l.head, l.tree = head{}, tree{}
	if _, err := l.Append(ctx, Record{Decision: DecisionDenied, Channel: "after-012"}); err != nil {
		t.Fatal(err)
	}
	wantTree(t, db.Pool(), 7)
	var traceIDs, projects, appIDs []string
	if err := db.Pool().QueryRow(ctx, `SELECT array_agg(trace_id ORDER BY seq), array_agg(project ORDER BY seq), array_agg(app_id ORDER BY seq)
		FROM issuance_log`).Scan(&traceIDs, &projects, &appIDs); err != nil {
		t.Fatal(err)
	}
	if want := []string{strings.Repeat("ab", 16), "", "", strings.Repeat("cd", 16), "", "", ""}; !slices.Equal(traceIDs, want) {
		t.Errorf("trace ids %q; want %q", traceIDs, want)
	}
	// The previous releases' records: the only project there was, App ID not recorded.
	if want := []string{"staging", "default", "", "default", "", "p", ""}; !slices.Equal(projects, want) {
		t.Errorf("projects %q; want %q", projects, want)
	}
	if want := []string{strings.Repeat("5a", 16), "", "", "", "", strings.Repeat("7b", 16), ""}; !slices.Equal(appIDs, want) {
		t.Errorf("app ids %q; want %q", appIDs, want)
	}
	if rep, err := l.Verify(ctx); err != nil || !rep.OK || rep.Records != 7 {
		t.Fatalf("Verify = %+v, %v; want every record intact", rep, err)
	}
}

// wantTree checks that the stored hashes cover exactly the first n records
// and equal the hashes computed afresh from their leaves.
func wantTree(t *testing.T, pool *pgxpool.Pool, n int64) {
	t.Helper()
	ctx := context.Background()
	size, err := storedTreeSize(ctx, pool)
	if err != nil || size != n {
		t.Fatalf("the tree covers %d records (%v), want %d", size, err, n)
	}
	recs, err := (&Postgres{values: newValues()}).readRecords(ctx, pool, "SELECT "+recordColumns+" FROM issuance_log_record r ORDER BY r.seq")
	if err != nil {
		t.Fatal(err)
	}
	var leaves [][]byte
	for _, s := range recs {
		leaves = append(leaves, Leaf(&s.Record))
	}
	want, _, err := tree{valid: true}.extend(leaves)
	if err != nil {
		t.Fatal(err)
	}
	got, err := pgHashes{ctx, pool}.ReadHashes(func() []int64 {
		idx := make([]int64, len(want))
		for i := range idx {
			idx[i] = int64(i)
		}
		return idx
	}())
	if err != nil || !slices.Equal(got, want) {
		t.Fatalf("stored tree hashes differ from the records' (%v)", err)
	}
}

// TestPostgres_RetentionDeletesPersonalValuesNoKeptRecordUses: redacting a
// month swaps its partition for a copy without personal fields and deletes
// the dictionary's personal values that no kept record uses, and keeps
// those that newer records still use.
func TestPostgres_RetentionDeletesPersonalValuesNoKeptRecordUses(t *testing.T) {
	ctx := context.Background()
	db := pgtest.New(t)
	tm := sqlTamperer{db}
	l := newPostgres(t, db, PostgresOptions{})
	tm.makeMonth(t, time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC))
	gone := rec("march-only", "room", 0)
	gone.ClientIP, gone.UserAgent = "198.51.100.7", "old-agent/1"
	kept := rec("both", "room", 1)
	mustAppend(t, l, gone, kept)
	// As if stored in March: the day each value was last used.
	tm.exec(t, "UPDATE issuance_log_value SET used = '2026-03-01'")
	now := rec("both", "room", 0)
	now.Time = time.Now()
	mustAppend(t, l, now)
	m, err := l.Maintain(ctx, 30*24*time.Hour)
	if err != nil || m.Redacted != 2 {
		t.Fatalf("Maintain = %+v, %v; want March's 2 records redacted", m, err)
	}
	var values []string
	if err := db.Pool().QueryRow(ctx, `SELECT coalesce(array_agg(value ORDER BY value), '{}') FROM issuance_log_value
		WHERE kind IN (2, 3, 4, 10, 11)`).Scan(&values); err != nil {
		t.Fatal(err)
	}
	if want := []string{"192.0.2.1", `["staff"]`, "both", "both", "test/1.0"}; !slices.Equal(values, want) {
		t.Errorf("personal values kept = %q; want only those the newest record uses, %q", values, want)
	}
	var partitions int
	if err := db.Pool().QueryRow(ctx, `SELECT count(*) FROM pg_inherits WHERE inhparent = 'issuance_log_record'::regclass
		AND inhrelid = 'issuance_log_record_2026_03'::regclass`).Scan(&partitions); err != nil || partitions != 1 {
		t.Errorf("March's partition attached: %d, %v", partitions, err)
	}
	if rep, err := l.Verify(ctx); err != nil || !rep.OK || rep.Redacted != 2 {
		t.Errorf("Verify = %+v, %v; want ok with 2 redacted", rep, err)
	}
}

// TestPostgres_InsertIntoTheOldTableIsStored: the previous release's
// append, when its call began before migration 015 committed, still inserts
// into issuance_log, now a view: the row is stored compact like any other.
func TestPostgres_InsertIntoTheOldTableIsStored(t *testing.T) {
	ctx := context.Background()
	db := pgtest.New(t)
	l := newPostgres(t, db, PostgresOptions{})
	first := mustAppend(t, l, rec("alice", "room", 0))[0]
	r := rec("bob", "lobby", 1)
	r.TraceID = strings.Repeat("ab", 16)
	r.TokenFingerprint = l.Fingerprint("bob's token")
	l.keys.current.link(&r, 2, first.Hash)
	r.KeyID = l.keys.current.id
	groups := r.Groups
	sqlTamperer{db}.exec(t, `INSERT INTO issuance_log (seq, at, request_id, issuer, subject, account, uid, groups,
		service, channel, role, requested_ttl, granted_ttl, decision, reason, rule, policy_version, client_ip,
		user_agent, token_fingerprint, key_id, prev_hash, hash, trace_id, project, app_id)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26)`,
		r.Seq, r.Time, r.RequestID, r.Issuer, r.Subject, r.Account, int64(r.UID), groups, r.Service, r.Channel, r.Role,
		int32(r.RequestedTTL/time.Second), int32(r.GrantedTTL/time.Second), string(r.Decision), r.Reason, r.Rule,
		r.PolicyVersion, r.ClientIP, r.UserAgent, r.TokenFingerprint, r.KeyID, r.PrevHash[:], r.Hash[:], r.TraceID, "default", "")
	recs, err := l.readRecords(ctx, db.Pool(), "SELECT "+recordColumns+" FROM issuance_log_record r WHERE r.seq = 2")
	if err != nil || len(recs) != 1 {
		t.Fatalf("record 2: %d, %v", len(recs), err)
	}
	r.Project = "default"
	assertSame(t, recs[0].Record, r)
	if v := newVerifier(l.keys, head{}); !func() bool { ok, _ := v.check(&recs[0]); return ok }() {
		t.Error("the stored record does not match its hash")
	}
}

// TestPostgres_AWriterToldTheHeadMovedGoesNext: a writer whose append found
// the head moved gets the next turn at the new head, so that a replica
// appending without pause cannot starve it; the others' batches wait.
func TestPostgres_AWriterToldTheHeadMovedGoesNext(t *testing.T) {
	ctx := context.Background()
	db := pgtest.New(t)
	busy := newPostgres(t, db, PostgresOptions{})
	late := newPostgres(t, db, PostgresOptions{})
	mustAppend(t, busy, rec("alice", "room", 0)) // late's head is now behind
	call := func(l *Postgres, r Record) string {
		t.Helper()
		if err := l.syncTree(ctx); err != nil {
			t.Fatal(err)
		}
		n, err := normalize(r, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		_, _, args, _, err := l.link([]*pending{{ctx: ctx, rec: n}})
		if err != nil {
			t.Fatal(err)
		}
		var (
			outcome   string
			seq       *int64
			hash, mac []byte
			keyID     *string
			has       *bool
			version   *int64
		)
		if err := db.Pool().QueryRow(ctx, appendSQL, args...).Scan(&outcome, &seq, &hash, &mac, &keyID, &has, &version); err != nil {
			t.Fatal(err)
		}
		if outcome == outcomeMoved {
			h, err := l.authenticate(seq, hash, mac, keyID, has != nil && *has)
			if err != nil {
				t.Fatal(err)
			}
			if h != l.head {
				l.head, l.tree.valid = h, false
			}
		}
		return outcome
	}
	waiting := rec("bob", "room", 1)
	if got := call(late, waiting); got != outcomeMoved {
		t.Fatalf("late writer: %s; want moved", got)
	}
	if got := call(busy, rec("carol", "room", 2)); got != outcomeMoved {
		t.Errorf("busy writer during the other's turn: %s; want moved (wait your turn)", got)
	}
	if got := call(late, waiting); got != outcomeAppended {
		t.Errorf("late writer on its turn: %s; want appended", got)
	}
	busy.head, busy.tree = head{}, tree{}
	if _, err := busy.Append(ctx, rec("carol", "room", 2)); err != nil {
		t.Fatal(err)
	}
	if rep, err := busy.Verify(ctx); err != nil || !rep.OK || rep.Records != 3 {
		t.Errorf("Verify = %+v, %v; want 3 records", rep, err)
	}
}

// TestPostgres_UIDsAboveTwoToTheThirtyOneRoundTrip: a uid is stored as the
// uint32's bits in an integer column, a hex request id as its bytes; the
// largest uids and either kind of id read back, are found, verify, and show
// as themselves to the previous release's view.
func TestPostgres_UIDsAboveTwoToTheThirtyOneRoundTrip(t *testing.T) {
	ctx := context.Background()
	db := pgtest.New(t)
	l := newPostgres(t, db, PostgresOptions{})
	big := rec("alice", "room", 0)
	big.UID, big.RequestID = 4294967295, "0123456789abcdef01234567" // the broker's own ids are hex
	other := rec("bob", "room", 1)
	other.RequestID = "client-chose-this.1" // a client's X-Request-Id
	stored := mustAppend(t, l, big, other)
	uid := uint32(4294967295)
	page, err := l.Search(ctx, Filter{UID: &uid})
	if err != nil || len(page.Records) != 1 {
		t.Fatalf("Search by uid = %d records, %v; want 1", len(page.Records), err)
	}
	assertSame(t, page.Records[0], stored[0])
	var viewed int64
	if err := db.Pool().QueryRow(ctx, "SELECT uid FROM issuance_log WHERE seq = 1").Scan(&viewed); err != nil || viewed != 4294967295 {
		t.Errorf("the view's uid = %d, %v; want 4294967295", viewed, err)
	}
	var ids []string
	if err := db.Pool().QueryRow(ctx, "SELECT array_agg(request_id ORDER BY seq) FROM issuance_log").Scan(&ids); err != nil ||
		!slices.Equal(ids, []string{big.RequestID, other.RequestID}) {
		t.Errorf("the view's request ids = %q, %v", ids, err)
	}
	page, err = l.Search(ctx, Filter{})
	if err != nil || len(page.Records) != 2 {
		t.Fatalf("Search = %d, %v", len(page.Records), err)
	}
	assertSame(t, page.Records[0], stored[1])
	assertSame(t, page.Records[1], stored[0])
	if rep, err := l.Verify(ctx); err != nil || !rep.OK {
		t.Errorf("Verify = %+v, %v", rep, err)
	}
}

// TestPostgres_MaintainCompactsClosedMonthsOnce: a month closed for a day
// has its indexes rebuilt once; the current month is left alone.
func TestPostgres_MaintainCompactsClosedMonthsOnce(t *testing.T) {
	ctx := context.Background()
	db := pgtest.New(t)
	l := newPostgres(t, db, PostgresOptions{})
	sqlTamperer{db}.makeMonth(t, time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC))
	now := rec("bob", "room", 0)
	now.Time = time.Now()
	mustAppend(t, l, rec("alice", "room", 0), now)
	m, err := l.Maintain(ctx, 0)
	if err != nil || m.Compacted != 1 {
		t.Fatalf("Maintain = %+v, %v; want March compacted", m, err)
	}
	if m, err := l.Maintain(ctx, 0); err != nil || m.Compacted != 0 || m.Partitions != 0 {
		t.Errorf("Maintain again = %+v, %v; want nothing to do", m, err)
	}
	var invalid int
	if err := db.Pool().QueryRow(ctx, `SELECT count(*) FROM pg_index WHERE NOT indisvalid`).Scan(&invalid); err != nil || invalid != 0 {
		t.Errorf("invalid indexes: %d, %v", invalid, err)
	}
	if rep, err := l.Verify(ctx); err != nil || !rep.OK || rep.Records != 2 {
		t.Errorf("Verify = %+v, %v", rep, err)
	}
}

// TestPostgres_ReadsDecodeWholeWhenTheValueCacheOverflows: a page whose
// values overflow the cache still decodes every record whole (the cache
// starting again must not lose the values the page is using).
func TestPostgres_ReadsDecodeWholeWhenTheValueCacheOverflows(t *testing.T) {
	ctx := context.Background()
	db := pgtest.New(t)
	l := newPostgres(t, db, PostgresOptions{})
	var in []Record
	for i := range 40 {
		in = append(in, rec(fmt.Sprintf("user-%d", i), fmt.Sprintf("room-%d", i), i))
	}
	stored := mustAppend(t, l, in...)
	l.values = newValues()
	l.values.limit = 10
	var out bytes.Buffer
	if err := l.Export(ctx, Filter{}, FormatJSONL, &out); err != nil {
		t.Fatal(err)
	}
	if got := strings.Count(out.String(), `"issuer":"https://idp.example"`); got != len(in) {
		t.Errorf("%d of %d exported records have their issuer", got, len(in))
	}
	page, err := l.Search(ctx, Filter{Limit: 40})
	if err != nil || len(page.Records) != 40 {
		t.Fatalf("Search = %d, %v", len(page.Records), err)
	}
	for _, r := range page.Records {
		assertSame(t, r, stored[r.Seq-1])
	}
	if rep, err := l.Verify(ctx); err != nil || !rep.OK {
		t.Errorf("Verify with a small cache = %+v, %v", rep, err)
	}
}

// TestPostgres_ShedsPastMaxWaiting: while a commit is stalled, MaxWaiting
// appends wait; the next ones are refused at once (Unavailable, counted),
// and once the commit goes through every waiting append is acknowledged
// and recorded, and new ones are taken again.
func TestPostgres_ShedsPastMaxWaiting(t *testing.T) {
	db := pgtest.New(t)
	reg := prometheus.NewRegistry()
	l := newPostgres(t, db, PostgresOptions{MaxWaiting: 3, Registerer: reg})
	ctx := context.Background()
	release := holdChainLock(t, db) // the writer's commit waits
	errs := make(chan error, 3)
	for i := range 3 {
		go func() {
			_, err := l.Append(ctx, rec("alice", "room", i))
			errs <- err
		}()
	}
	for deadline := time.Now().Add(10 * time.Second); l.waiting.Load() < 3; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d appends waiting after 10 s, want 3", l.waiting.Load())
		}
	}
	start := time.Now()
	_, err := l.Append(ctx, rec("bob", "room", 9))
	if apperr.KindOf(err) != apperr.Unavailable || !strings.Contains(err.Error(), "at capacity") {
		t.Fatalf("the fourth append: %v; want Unavailable, at capacity", err)
	}
	if waited := time.Since(start); waited > time.Second {
		t.Errorf("the refused append waited %s; it must be refused at once", waited)
	}
	release()
	for range 3 {
		if err := <-errs; err != nil {
			t.Errorf("a waiting append: %v", err)
		}
	}
	if got := mustAppend(t, l, rec("carol", "room", 10)); got[0].Seq != 4 {
		t.Errorf("the next append got seq %d, want 4 (three waited, one was refused)", got[0].Seq)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	values := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			values[mf.GetName()] = m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	if shed, ok := values["broker_audit_appends_shed_total"]; !ok || shed != 1 {
		t.Errorf("broker_audit_appends_shed_total = %v (registered %v), want 1", shed, ok)
	}
	if waiting, ok := values["broker_audit_appends_waiting"]; !ok || waiting != 0 {
		t.Errorf("broker_audit_appends_waiting = %v (registered %v), want 0 once all were answered", waiting, ok)
	}
	if rep, err := l.Verify(ctx); err != nil || !rep.OK || rep.Records != 4 {
		t.Errorf("Verify = %+v, %v; want ok with 4 records", rep, err)
	}
}
