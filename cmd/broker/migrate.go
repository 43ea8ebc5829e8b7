package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/broker-dev/broker/internal/pg"
)

// runMigrate is `broker migrate up|status`: apply the embedded schema
// migrations, or list which are applied and pending. Several `migrate up` at
// once against one database are safe; a repeat does nothing.
func runMigrate(ctx context.Context, args []string, getenv func(string) string, _ io.Reader, stdout, stderr io.Writer) error {
	fs := newFlagSet("migrate", stdout)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "usage: broker migrate up|status [flags]\n\n"+
			"  up      apply pending migrations (safe to run concurrently; a repeat is a no-op)\n"+
			"  status  list migrations, one per line, as applied or pending\n\nflags:\n")
		fs.PrintDefaults()
	}
	// The action may come before or after the flags; a usage mistake is
	// reported before any configuration problem.
	action, flagArgs := "", args
	if len(args) == 0 {
		return checkMigrateAction("")
	}
	if !strings.HasPrefix(args[0], "-") {
		action, flagArgs = args[0], args[1:]
		if err := checkMigrateAction(action); err != nil {
			return err
		}
	}
	only := map[string]bool{"BROKER_DATABASE_URL": true, "BROKER_DATABASE_PASSWORD": true}
	cfg, err := loadConfig(fs, flagArgs, getenv, only)
	if err != nil {
		return err
	}
	rest := fs.Args()
	if action == "" && len(rest) > 0 {
		action, rest = rest[0], rest[1:]
	}
	if err := checkMigrateAction(action); err != nil {
		return err
	}
	if len(rest) > 0 {
		return usageError(fmt.Sprintf("migrate: unexpected argument %q", rest[0]))
	}

	pool, err := openDatabase(ctx, cfg.DatabaseURL)
	if err != nil {
		return err
	}
	defer pool.Close()
	if action == "up" {
		return migrateUp(ctx, pool, stdout)
	}
	return migrateStatus(ctx, pool, stdout)
}

// checkMigrateAction returns a usage error unless action is up or status.
func checkMigrateAction(action string) error {
	switch action {
	case "up", "status":
		return nil
	case "":
		return usageError("migrate: want up or status (see broker migrate -h)")
	default:
		return usageError(fmt.Sprintf("migrate: unknown action %q: want up or status (see broker migrate -h)", action))
	}
}

func migrateUp(ctx context.Context, pool *pgxpool.Pool, w io.Writer) error {
	n, err := pg.Migrate(ctx, pool)
	if err != nil {
		return err
	}
	st, err := pg.MigrationStatus(ctx, pool)
	if err != nil {
		return err
	}
	if n == 0 {
		_, err = fmt.Fprintf(w, "schema already at version %d; nothing to apply\n", st.Version)
		return err
	}
	_, err = fmt.Fprintf(w, "applied %d migration(s); schema at version %d\n", n, st.Version)
	return err
}

func migrateStatus(ctx context.Context, pool *pgxpool.Pool, w io.Writer) error {
	st, err := pg.MigrationStatus(ctx, pool)
	if err != nil {
		return err
	}
	var b strings.Builder
	for _, m := range st.Applied {
		fmt.Fprintf(&b, "applied  %s\n", m.Name)
	}
	for _, m := range st.Pending {
		fmt.Fprintf(&b, "pending  %s\n", m.Name)
	}
	if st.Version > st.Latest() {
		fmt.Fprintf(&b, "database is at version %d, ahead of this binary's %d migrations\n", st.Version, st.Latest())
	}
	_, err = io.WriteString(w, b.String())
	return err
}
