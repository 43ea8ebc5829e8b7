package pg_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/broker-dev/broker/internal/apperr"
	"github.com/broker-dev/broker/internal/pg"
	"github.com/broker-dev/broker/internal/pg/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func open(t *testing.T, url string) *pgxpool.Pool {
	t.Helper()
	p, err := pg.Open(context.Background(), url, pg.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

func TestMigrate_ConcurrentCallsApplyOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewEmpty(t)
	all, err := pg.Migrations()
	if err != nil {
		t.Fatal(err)
	}

	// Three pools, as three replicas running `broker migrate up` at once.
	const n = 3
	applied := make([]int, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		pool := open(t, db.URL)
		wg.Go(func() { applied[i], errs[i] = pg.Migrate(ctx, pool) })
	}
	wg.Wait()

	total := 0
	for i := range n {
		if errs[i] != nil {
			t.Errorf("Migrate #%d: %v", i, errs[i])
		}
		total += applied[i]
	}
	if total != len(all) {
		t.Errorf("migrations applied across all calls = %d, want %d (each once)", total, len(all))
	}
	var rows int
	if err := db.Pool().QueryRow(ctx, "SELECT count(*) FROM schema_version").Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if rows != 1 {
		t.Errorf("schema_version has %d rows, want 1", rows)
	}
}

func TestMigrate_RepeatIsNoOp(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.New(t).Pool()
	n, err := pg.Migrate(ctx, pool)
	if err != nil || n != 0 {
		t.Errorf("Migrate on a current database = %d, %v; want 0, nil", n, err)
	}
}

func TestMigrate_IgnoresPoolStatementTimeout(t *testing.T) {
	t.Parallel()
	db := pgtest.NewEmpty(t)
	pool, err := pg.Open(context.Background(), db.URL, pg.Options{StatementTimeout: time.Millisecond, LockTimeout: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if _, err := pg.Migrate(context.Background(), pool); err != nil {
		t.Errorf("Migrate with a 1ms pool statement timeout: %v", err)
	}
}

func TestMigrationStatus(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	all, err := pg.Migrations()
	if err != nil {
		t.Fatal(err)
	}
	if len(all) == 0 || all[0] != (pg.Migration{Version: 1, Name: "001_initial.sql"}) {
		t.Fatalf("Migrations() = %v, want 001_initial.sql first", all)
	}
	ahead := pgtest.New(t)
	if _, err := ahead.Pool().Exec(ctx, "UPDATE schema_version SET version = version + 1"); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		pool    *pgxpool.Pool
		version int
		applied int
		current bool
	}{
		{"never migrated", pgtest.NewEmpty(t).Pool(), 0, 0, false},
		{"migrated", pgtest.New(t).Pool(), len(all), len(all), true},
		{"ahead of this binary", ahead.Pool(), len(all) + 1, len(all), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, err := pg.MigrationStatus(ctx, tt.pool)
			if err != nil {
				t.Fatal(err)
			}
			if st.Version != tt.version || len(st.Applied) != tt.applied || len(st.Pending) != len(all)-tt.applied || st.Current() != tt.current {
				t.Errorf("status = %+v (current %v); want version %d, %d applied, %d pending, current %v",
					st, st.Current(), tt.version, tt.applied, len(all)-tt.applied, tt.current)
			}
			if st.Latest() != len(all) {
				t.Errorf("Latest() = %d, want %d", st.Latest(), len(all))
			}
		})
	}
}

func TestMigrationStatus_DoesNotWrite(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.NewEmpty(t).Pool()
	if _, err := pg.MigrationStatus(ctx, pool); err != nil {
		t.Fatal(err)
	}
	var exists bool
	if err := pool.QueryRow(ctx, "SELECT to_regclass('schema_version') IS NOT NULL").Scan(&exists); err != nil {
		t.Fatal(err)
	}
	if exists {
		t.Error("MigrationStatus created schema_version")
	}
}

func TestCheckSchema(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	if err := pg.CheckSchema(ctx, pgtest.New(t).Pool()); err != nil {
		t.Errorf("CheckSchema on a migrated database: %v", err)
	}

	err := pg.CheckSchema(ctx, pgtest.NewEmpty(t).Pool())
	if !errors.Is(err, pg.ErrSchemaBehind) || apperr.KindOf(err) != apperr.Unavailable {
		t.Fatalf("CheckSchema on an empty database = %v (kind %s); want Unavailable wrapping ErrSchemaBehind", err, apperr.KindOf(err))
	}
	for _, want := range []string{"version 0", "001_initial.sql", "broker migrate up"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("CheckSchema error %q does not mention %q", err, want)
		}
	}
}

func TestHealth(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := pgtest.NewCluster(t, pgtest.Options{NoFsync: true})
	migrated, empty := c.New(t).Pool(), c.NewEmpty(t).Pool()

	if err := pg.Health(ctx, migrated); err != nil {
		t.Errorf("Health of a migrated, running database: %v", err)
	}
	if err := pg.Health(ctx, empty); !errors.Is(err, pg.ErrSchemaBehind) {
		t.Errorf("Health of an unmigrated database = %v, want ErrSchemaBehind", err)
	}

	c.Stop(t)
	err := pg.Health(ctx, migrated)
	if apperr.KindOf(err) != apperr.Unavailable || errors.Is(err, pg.ErrSchemaBehind) {
		t.Errorf("Health with the server stopped = %v (kind %s), want Unavailable", err, apperr.KindOf(err))
	}

	c.Start(t)
	deadline := time.Now().Add(10 * time.Second)
	for err := pg.Health(ctx, migrated); err != nil; err = pg.Health(ctx, migrated) {
		if time.Now().After(deadline) {
			t.Fatalf("Health after restart: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
