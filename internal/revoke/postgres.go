package revoke

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/broker-dev/broker/internal/apperr"
)

// Postgres is a Store in Postgres (migration 021's revocation).
type Postgres struct{ pool *pgxpool.Pool }

// NewPostgres returns a Store on pool.
func NewPostgres(pool *pgxpool.Pool) *Postgres { return &Postgres{pool: pool} }

const revocationColumns = `id, project, subject, channel, publish_only, reason, actor, created, until, rule_id, bans, bans_error, lifted, lifted_by`

// Create implements Store.
func (p *Postgres) Create(ctx context.Context, r Revocation) (Revocation, error) {
	bans, err := json.Marshal(nonNil(r.Bans))
	if err != nil {
		return Revocation{}, apperr.Wrap(apperr.Internal, err, "the bans could not be encoded")
	}
	created, err := p.one(ctx, `INSERT INTO revocation (project, subject, channel, publish_only, reason, actor, until, rule_id, bans, bans_error)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING RETURNING `+revocationColumns,
		r.Project, r.Subject, r.Channel, r.PublishOnly, r.Reason, r.Actor, r.Until, r.RuleID, bans, r.BansError)
	if !errors.Is(err, pgx.ErrNoRows) {
		return created, err
	}
	var id int64
	err = p.pool.QueryRow(ctx, `SELECT id FROM revocation WHERE project = $1 AND subject = $2 AND channel = $3 AND publish_only = $4 AND lifted IS NULL`,
		r.Project, r.Subject, r.Channel, r.PublishOnly).Scan(&id)
	if err != nil {
		// Lifted in between: the caller may try again.
		return Revocation{}, apperr.Wrap(apperr.Conflict, err, "a revocation of this user and scope was in force and has just ended: try again")
	}
	return Revocation{}, inForce(id)
}

// Complete implements Store.
func (p *Postgres) Complete(ctx context.Context, r Revocation) (Revocation, error) {
	bans, err := json.Marshal(nonNil(r.Bans))
	if err != nil {
		return Revocation{}, apperr.Wrap(apperr.Internal, err, "the bans could not be encoded")
	}
	done, err := p.one(ctx, `UPDATE revocation SET rule_id = $2, bans = $3, bans_error = $4, until = $5 WHERE id = $1 RETURNING `+revocationColumns,
		r.ID, r.RuleID, bans, r.BansError, r.Until)
	if errors.Is(err, pgx.ErrNoRows) {
		return Revocation{}, apperr.New(apperr.NotFound, "no revocation %d", r.ID)
	}
	return done, err
}

// Delete implements Store.
func (p *Postgres) Delete(ctx context.Context, id int64) error {
	if _, err := p.pool.Exec(ctx, `DELETE FROM revocation WHERE id = $1`, id); err != nil {
		return apperr.Wrap(apperr.Unavailable, err, "the revocations are unavailable")
	}
	return nil
}

// List implements Store.
func (p *Postgres) List(ctx context.Context, project string, active bool, limit int) ([]Revocation, error) {
	if limit <= 0 {
		limit = 1000
	}
	return p.many(ctx, `SELECT `+revocationColumns+` FROM revocation WHERE project = $1 AND (NOT $2 OR lifted IS NULL)
		ORDER BY id DESC LIMIT $3`, project, active, limit)
}

// Get implements Store.
func (p *Postgres) Get(ctx context.Context, id int64) (Revocation, error) {
	r, err := p.one(ctx, `SELECT `+revocationColumns+` FROM revocation WHERE id = $1`, id)
	if errors.Is(err, pgx.ErrNoRows) {
		return Revocation{}, apperr.New(apperr.NotFound, "no revocation %d", id)
	}
	return r, err
}

// Lift implements Store: one statement, so that two replicas lifting the
// same revocation cannot both succeed.
func (p *Postgres) Lift(ctx context.Context, id int64, actor string, at time.Time, bansError string) (Revocation, error) {
	r, err := p.one(ctx, `UPDATE revocation SET lifted = $2, lifted_by = $3,
		bans_error = CASE WHEN $4 = '' THEN bans_error ELSE $4 END
		WHERE id = $1 AND lifted IS NULL RETURNING `+revocationColumns, id, at, actor, bansError)
	if errors.Is(err, pgx.ErrNoRows) {
		if _, gerr := p.Get(ctx, id); gerr != nil {
			return Revocation{}, gerr
		}
		return Revocation{}, apperr.New(apperr.Conflict, "revocation %d was lifted already", id)
	}
	return r, err
}

// Expired implements Store.
func (p *Postgres) Expired(ctx context.Context, t time.Time) ([]Revocation, error) {
	return p.many(ctx, `SELECT `+revocationColumns+` FROM revocation WHERE lifted IS NULL AND until < $1 ORDER BY id`, t)
}

func (p *Postgres) one(ctx context.Context, sql string, args ...any) (Revocation, error) {
	rs, err := p.many(ctx, sql, args...)
	if err != nil {
		return Revocation{}, err
	}
	if len(rs) == 0 {
		return Revocation{}, pgx.ErrNoRows
	}
	return rs[0], nil
}

func (p *Postgres) many(ctx context.Context, sql string, args ...any) ([]Revocation, error) {
	rows, err := p.pool.Query(ctx, sql, args...)
	if err != nil {
		return nil, apperr.Wrap(apperr.Unavailable, err, "the revocations are unavailable")
	}
	defer rows.Close()
	var out []Revocation
	for rows.Next() {
		var r Revocation
		var bans []byte
		if err := rows.Scan(&r.ID, &r.Project, &r.Subject, &r.Channel, &r.PublishOnly, &r.Reason, &r.Actor, &r.Created, &r.Until,
			&r.RuleID, &bans, &r.BansError, &r.Lifted, &r.LiftedBy); err != nil {
			return nil, apperr.Wrap(apperr.Unavailable, err, "the revocations are unavailable")
		}
		if err := json.Unmarshal(bans, &r.Bans); err != nil {
			return nil, apperr.Wrap(apperr.Internal, err, fmt.Sprintf("revocation %d's bans are unreadable", r.ID))
		}
		r.Created, r.Until = r.Created.UTC(), r.Until.UTC()
		if r.Lifted != nil {
			l := r.Lifted.UTC()
			r.Lifted = &l
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, apperr.Wrap(apperr.Unavailable, err, "the revocations are unavailable")
	}
	return out, nil
}

func nonNil(b []Ban) []Ban {
	if b == nil {
		return []Ban{}
	}
	return b
}
