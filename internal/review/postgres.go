package review

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/broker-dev/broker/internal/agora"
	"github.com/broker-dev/broker/internal/apperr"
)

// Postgres is a Store in Postgres (migration 020's agora_event).
type Postgres struct{ pool *pgxpool.Pool }

// NewPostgres returns a Store on pool.
func NewPostgres(pool *pgxpool.Pool) *Postgres { return &Postgres{pool: pool} }

// Record implements Store: one statement; a notice id the project saw before changes
// nothing.
func (p *Postgres) Record(ctx context.Context, e Event) (bool, error) {
	if err := check(e); err != nil {
		return false, err
	}
	tag, err := p.pool.Exec(ctx, `INSERT INTO agora_event (notice_id, project, event_type, kind, role, channel, uid, platform, client_seq, at, explained)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT (project, notice_id) DO NOTHING`,
		e.NoticeID, e.Project, e.EventType, string(e.Kind), string(e.Role), e.Channel, int64(e.UID), e.Platform, e.ClientSeq, e.At, e.Explained)
	if err != nil {
		return false, dbError(err, "recording the channel event failed")
	}
	return tag.RowsAffected() == 1, nil
}

// Events implements Store.
func (p *Postgres) Events(ctx context.Context, project, channel string, from, to time.Time, limit int) ([]Event, error) {
	return p.events(ctx, `WHERE project = $1 AND channel = $2 AND at >= $3 AND at < $4 ORDER BY at, client_seq LIMIT $5`,
		project, channel, from, to, bounded(limit))
}

// EventsOf implements Store.
func (p *Postgres) EventsOf(ctx context.Context, project string, uid uint32, from, to time.Time, limit int) ([]Event, error) {
	return p.events(ctx, `WHERE project = $1 AND uid = $2 AND uid <> 0 AND at >= $3 AND at < $4 ORDER BY at, client_seq LIMIT $5`,
		project, int64(uid), from, to, bounded(limit))
}

// Unexplained implements Store.
func (p *Postgres) Unexplained(ctx context.Context, project string, from, to time.Time, limit int) ([]Event, error) {
	return p.events(ctx, `WHERE project = $1 AND NOT explained AND at >= $2 AND at < $3 ORDER BY at DESC LIMIT $4`,
		project, from, to, bounded(limit))
}

// bounded is limit, or maxEvents when it is none or more.
func bounded(limit int) int {
	if limit <= 0 || limit > maxEvents {
		return maxEvents
	}
	return limit
}

// events reads the events a query's condition and order select.
func (p *Postgres) events(ctx context.Context, where string, args ...any) ([]Event, error) {
	rows, err := p.pool.Query(ctx, `SELECT notice_id, project, event_type, kind, role, channel, uid, platform, client_seq, at, explained
		FROM agora_event `+where, args...)
	if err != nil {
		return nil, dbError(err, "reading the channel events failed")
	}
	defer rows.Close()
	var out []Event
	for rows.Next() {
		var e Event
		var kind, role string
		var uid int64
		if err := rows.Scan(&e.NoticeID, &e.Project, &e.EventType, &kind, &role, &e.Channel, &uid, &e.Platform, &e.ClientSeq, &e.At, &e.Explained); err != nil {
			return nil, dbError(err, "reading the channel events failed")
		}
		e.Kind, e.Role, e.UID, e.At = agora.EventKind(kind), agora.Role(role), uint32(uid), e.At.UTC()
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, dbError(err, "reading the channel events failed")
	}
	return out, nil
}

// dbError is an Unavailable error for a database failure, its cause kept
// for the log.
func dbError(err error, msg string) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "23514" { // check_violation: a value out of its bounds
		return apperr.Wrap(apperr.Invalid, err, "the channel event has a value out of bounds")
	}
	return apperr.Wrap(apperr.Unavailable, err, msg)
}
