package tokenurl

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/broker-dev/broker/internal/apperr"
)

// Postgres is the Store over the token_urls table (migrations 006, 012).
type Postgres struct{ pool *pgxpool.Pool }

// NewPostgres returns a store over pool.
func NewPostgres(pool *pgxpool.Pool) *Postgres { return &Postgres{pool: pool} }

const urlColumns = "id, issuer, subject, account, account_error, groups, uid_claim, downgrade, created_at, expires_at, revoked_at, project"

func scanURL(row pgx.Row) (URL, error) {
	var u URL
	var uid *int64
	if err := row.Scan(&u.ID, &u.Issuer, &u.Subject, &u.Account, &u.AccountError, &u.Groups, &uid, &u.Downgrade,
		&u.CreatedAt, &u.ExpiresAt, &u.RevokedAt, &u.Project); err != nil {
		return URL{}, err
	}
	if uid != nil {
		u.UID = uint32(*uid)
	}
	u.CreatedAt, u.ExpiresAt = u.CreatedAt.UTC(), u.ExpiresAt.UTC()
	if u.RevokedAt != nil {
		t := u.RevokedAt.UTC()
		u.RevokedAt = &t
	}
	if u.Groups == nil {
		u.Groups = []string{}
	}
	return u, nil
}

func unavailable(err error, what string) error {
	return apperr.Wrap(apperr.Unavailable, fmt.Errorf("%s: %w", what, err), "token URLs are unavailable; retry later")
}

// Create implements Store.
func (p *Postgres) Create(ctx context.Context, u URL, hash []byte) error {
	var uid *int64
	if u.UID != 0 {
		v := int64(u.UID)
		uid = &v
	}
	_, err := p.pool.Exec(ctx, `INSERT INTO token_urls (id, secret_hash, issuer, subject, account, account_error, groups,
		uid_claim, downgrade, created_at, expires_at, project) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)`,
		u.ID, hash, u.Issuer, u.Subject, u.Account, u.AccountError, u.Groups, uid, u.Downgrade, u.CreatedAt, u.ExpiresAt, u.Project)
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "23505" {
		return apperr.Wrap(apperr.Conflict, err, "that token URL exists")
	}
	if err != nil {
		return unavailable(err, "create")
	}
	return nil
}

// ByHash implements Store.
func (p *Postgres) ByHash(ctx context.Context, hash []byte) (URL, error) {
	u, err := scanURL(p.pool.QueryRow(ctx, "SELECT "+urlColumns+" FROM token_urls WHERE secret_hash = $1", hash))
	if errors.Is(err, pgx.ErrNoRows) {
		return URL{}, apperr.New(apperr.NotFound, "no such token URL")
	}
	if err != nil {
		return URL{}, unavailable(err, "look up")
	}
	return u, nil
}

// List implements Store.
func (p *Postgres) List(ctx context.Context, issuer, subject string) ([]URL, error) {
	rows, err := p.pool.Query(ctx, "SELECT "+urlColumns+` FROM token_urls
		WHERE $2 = '' OR (issuer = $1 AND subject = $2) ORDER BY created_at DESC, id DESC`, issuer, subject)
	if err != nil {
		return nil, unavailable(err, "list")
	}
	defer rows.Close()
	out := []URL{}
	for rows.Next() {
		u, err := scanURL(rows)
		if err != nil {
			return nil, unavailable(err, "list")
		}
		out = append(out, u)
	}
	if err := rows.Err(); err != nil {
		return nil, unavailable(err, "list")
	}
	return out, nil
}

// Revoke implements Store.
func (p *Postgres) Revoke(ctx context.Context, id string, at time.Time) (URL, error) {
	u, err := scanURL(p.pool.QueryRow(ctx, `UPDATE token_urls SET revoked_at = coalesce(revoked_at, $2) WHERE id = $1
		RETURNING `+urlColumns, id, at))
	if errors.Is(err, pgx.ErrNoRows) {
		return URL{}, apperr.New(apperr.NotFound, "no token URL has id %q", id)
	}
	if err != nil {
		return URL{}, unavailable(err, "revoke")
	}
	return u, nil
}
