package audit

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Indexes the broker builds itself. A migration runs in a transaction and
// so cannot build an index CONCURRENTLY, and a plain CREATE INDEX on a log
// of millions of records would block every append until it is done. These
// are built by the running broker instead, CONCURRENTLY (appends go on), by
// one replica at a time (a session advisory lock taken without waiting: the
// others skip), replacing a build an interrupted replica left invalid.

// logIndexes are the issuance log's indexes the broker builds, by name:
// each serves an auditor's filter in seq order (Search reads newest first).
var logIndexes = []struct{ name, def string }{
	{"issuance_log_decision", "issuance_log (decision, seq)"},
	{"issuance_log_project", "issuance_log (project, seq)"},
	{"issuance_log_issuer", "issuance_log (issuer, seq)"},
	// channel patterns with a literal start (room-*): LIKE 'room-%'
	{"issuance_log_channel_prefix", "issuance_log (channel text_pattern_ops)"},
}

// indexLock is the session advisory lock of an index build: the first 8
// bytes of SHA-256("broker.issuance_log.indexes").
const indexLock int64 = 0x4f3b2a1d6c5e7f80

// EnsureIndexes builds the issuance log's indexes that are missing or left
// invalid, CONCURRENTLY, unless another replica is building them. It holds
// one connection of pool while it builds (minutes on a large log); log
// says what it does.
func EnsureIndexes(ctx context.Context, pool *pgxpool.Pool, log *slog.Logger) error {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("audit: indexes: %w", err)
	}
	defer conn.Release()
	var locked bool
	if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", indexLock).Scan(&locked); err != nil {
		return fmt.Errorf("audit: indexes: %w", err)
	}
	if !locked {
		return nil // another replica builds them
	}
	defer conn.Exec(context.Background(), "SELECT pg_advisory_unlock($1)", indexLock)
	// A build runs as long as it takes: no statement timeout of the pool.
	if _, err := conn.Exec(ctx, "SET statement_timeout = 0"); err != nil {
		return fmt.Errorf("audit: indexes: %w", err)
	}
	defer conn.Exec(context.Background(), "RESET statement_timeout")
	for _, ix := range logIndexes {
		var valid *bool
		err := conn.QueryRow(ctx, `SELECT (SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
			WHERE c.relname = $1 AND c.relnamespace = current_schema()::regnamespace)`, ix.name).Scan(&valid)
		if err != nil {
			return fmt.Errorf("audit: index %s: %w", ix.name, err)
		}
		if valid != nil && *valid {
			continue
		}
		if valid != nil { // left invalid by an interrupted build
			if _, err := conn.Exec(ctx, "DROP INDEX CONCURRENTLY IF EXISTS "+ix.name); err != nil {
				return fmt.Errorf("audit: index %s: %w", ix.name, err)
			}
		}
		log.Info("issuance log: building an index (appends go on)", "index", ix.name)
		if _, err := conn.Exec(ctx, "CREATE INDEX CONCURRENTLY IF NOT EXISTS "+ix.name+" ON "+ix.def); err != nil {
			return fmt.Errorf("audit: index %s: %w", ix.name, err)
		}
		log.Info("issuance log: index built", "index", ix.name)
	}
	return nil
}
