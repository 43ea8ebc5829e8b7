package pg

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/tern/v2/migrate"

	"github.com/broker-dev/broker/internal/apperr"
	"github.com/broker-dev/broker/migrations"
)

// versionTable records the number of applied migrations (tern's layout: one
// row, one int4 column).
const versionTable = "schema_version"

// undefinedTable is SQLSTATE 42P01: the version table does not exist yet.
const undefinedTable = "42P01"

// ErrSchemaBehind is wrapped by CheckSchema's error when migrations are pending.
var ErrSchemaBehind = errors.New("run `broker migrate up`")

// Migration is one embedded schema migration; Version is its numeric prefix.
type Migration struct {
	Version int
	Name    string
}

// Status is the schema state of a database compared with this binary.
type Status struct {
	Version int         // migrations applied to the database
	Applied []Migration // known migrations already applied, in order
	Pending []Migration // known migrations not yet applied, in order
}

// Latest is the schema version this binary was built for.
func (s Status) Latest() int { return len(s.Applied) + len(s.Pending) }

// Current reports whether nothing is pending. A database ahead of this binary
// (during a rolling upgrade) is current: migrations only add.
func (s Status) Current() bool { return len(s.Pending) == 0 }

// Migrations lists the embedded migrations in the order they apply.
func Migrations() ([]Migration, error) {
	names, err := migrate.FindMigrations(migrations.FS)
	if err != nil {
		return nil, fmt.Errorf("pg: list migrations: %w", err)
	}
	out := make([]Migration, len(names))
	for i, n := range names {
		out[i] = Migration{Version: i + 1, Name: n}
	}
	return out, nil
}

// Migrate applies every pending migration, each in its own transaction, and
// returns how many this call applied (on error, those before the failing one).
// Concurrent calls from any number of processes are safe: a Postgres advisory
// lock lets one apply while the others wait, then find nothing to do.
//
// It uses a dedicated connection without the pool's statement and lock
// timeouts, since waiting for the lock or a long migration is expected; ctx
// bounds it instead.
func Migrate(ctx context.Context, pool *pgxpool.Pool) (applied int, err error) {
	conn, err := migrationConn(ctx, pool)
	if err != nil {
		return 0, err
	}
	defer conn.Close(context.WithoutCancel(ctx))

	m, err := migrate.NewMigrator(ctx, conn, versionTable)
	if err != nil {
		return 0, fmt.Errorf("pg: prepare %s: %w", versionTable, err)
	}
	if err := m.LoadMigrations(migrations.FS); err != nil {
		return 0, fmt.Errorf("pg: load migrations: %w", err)
	}
	started := 0
	m.OnStart = func(int32, string, string, string) { started++ }
	if err := m.Migrate(ctx); err != nil {
		if started > 0 {
			started--
		}
		return started, fmt.Errorf("pg: migrate: %w", err)
	}
	return started, nil
}

func migrationConn(ctx context.Context, pool *pgxpool.Pool) (*pgx.Conn, error) {
	cfg := pool.Config().ConnConfig.Copy()
	cfg.RuntimeParams["statement_timeout"] = "0"
	cfg.RuntimeParams["lock_timeout"] = "0"
	cfg.RuntimeParams["idle_in_transaction_session_timeout"] = "0"
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, unavailable(err, "database unreachable")
	}
	return conn, nil
}

// MigrationStatus compares the database's schema version with the embedded
// migrations. It only reads: a database never migrated is at version 0.
func MigrationStatus(ctx context.Context, pool *pgxpool.Pool) (Status, error) {
	all, err := Migrations()
	if err != nil {
		return Status{}, err
	}
	v, err := schemaVersion(ctx, pool)
	if err != nil {
		return Status{}, err
	}
	n := min(v, len(all))
	return Status{Version: v, Applied: all[:n:n], Pending: all[n:]}, nil
}

func schemaVersion(ctx context.Context, pool *pgxpool.Pool) (int, error) {
	var v int32
	err := pool.QueryRow(ctx, "SELECT version FROM "+versionTable).Scan(&v)
	var pgErr *pgconn.PgError
	switch {
	case errors.As(err, &pgErr) && pgErr.Code == undefinedTable:
		return 0, nil
	case err != nil:
		return 0, unavailable(err, "cannot read schema version")
	}
	return int(v), nil
}

// CheckSchema returns nil when the database has every migration this binary
// knows, and otherwise an Unavailable error wrapping ErrSchemaBehind that tells
// the operator to run `broker migrate up`.
func CheckSchema(ctx context.Context, pool *pgxpool.Pool) error {
	st, err := MigrationStatus(ctx, pool)
	if err != nil {
		return err
	}
	if st.Current() {
		return nil
	}
	names := make([]string, len(st.Pending))
	for i, m := range st.Pending {
		names[i] = m.Name
	}
	return &apperr.Error{
		Kind:    apperr.Unavailable,
		Message: "database schema is at version " + strconv.Itoa(st.Version) + " of " + strconv.Itoa(st.Latest()) + " (pending: " + strings.Join(names, ", ") + ")",
		Cause:   ErrSchemaBehind,
	}
}

// unavailable wraps a database failure as an apperr Unavailable error.
func unavailable(err error, msg string) error {
	return apperr.Wrap(apperr.Unavailable, err, msg)
}
