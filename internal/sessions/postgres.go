package sessions

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/broker-dev/broker/internal/apperr"
)

// Postgres is the Store over the console_sessions table (migration 008),
// shared by every replica: a logout on one ends the session on all.
type Postgres struct{ pool *pgxpool.Pool }

// NewPostgres returns a store over pool.
func NewPostgres(pool *pgxpool.Pool) *Postgres { return &Postgres{pool: pool} }

func unavailable(err error, what string) error {
	return apperr.Wrap(apperr.Unavailable, fmt.Errorf("console sessions: %s: %w", what, err), "console sessions are unavailable; retry later")
}

// Create implements Store. Expired sessions are dropped in the same
// statement: one round trip, no lock held across it.
func (p *Postgres) Create(ctx context.Context, id string, s Session) error {
	if err := s.check(); err != nil {
		return err
	}
	groups := s.Groups
	if groups == nil {
		groups = []string{}
	}
	_, err := p.pool.Exec(ctx, `WITH gone AS (DELETE FROM console_sessions WHERE expires_at <= $6)
		INSERT INTO console_sessions (id_hash, issuer, subject, email, groups, created_at, expires_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7)`,
		hash(id), s.Issuer, s.Subject, s.Email, groups, s.Created, s.Expires)
	if err != nil {
		return unavailable(err, "create")
	}
	return nil
}

// Get implements Store.
func (p *Postgres) Get(ctx context.Context, id string, now time.Time) (Session, error) {
	var s Session
	err := p.pool.QueryRow(ctx, `SELECT issuer, subject, email, groups, created_at, expires_at
		FROM console_sessions WHERE id_hash = $1 AND expires_at > $2`, hash(id), now).
		Scan(&s.Issuer, &s.Subject, &s.Email, &s.Groups, &s.Created, &s.Expires)
	if errors.Is(err, pgx.ErrNoRows) {
		return Session{}, errNotFound
	}
	if err != nil {
		return Session{}, unavailable(err, "look up")
	}
	s.Created, s.Expires = s.Created.UTC(), s.Expires.UTC()
	return s, nil
}

// Revoke implements Store.
func (p *Postgres) Revoke(ctx context.Context, id string) error {
	if _, err := p.pool.Exec(ctx, `DELETE FROM console_sessions WHERE id_hash = $1`, hash(id)); err != nil {
		return unavailable(err, "revoke")
	}
	return nil
}

// RevokeSubject implements Store.
func (p *Postgres) RevokeSubject(ctx context.Context, issuer, subject string) (int, error) {
	tag, err := p.pool.Exec(ctx, `DELETE FROM console_sessions WHERE issuer = $1 AND subject = $2`, issuer, subject)
	if err != nil {
		return 0, unavailable(err, "revoke")
	}
	return int(tag.RowsAffected()), nil
}
