package main

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/broker-dev/broker/internal/pg"
)

// openDatabase opens the pool the command-line tools use and checks that the
// database answers, so a wrong URL fails at once with a clear message.
func openDatabase(ctx context.Context, url string) (*pgxpool.Pool, error) {
	pool, err := pg.Open(ctx, url, pg.Options{})
	if err != nil {
		return nil, fmt.Errorf("BROKER_DATABASE_URL: %w", err)
	}
	if err := pg.Ping(ctx, pool); err != nil {
		pool.Close()
		return nil, err
	}
	return pool, nil
}
