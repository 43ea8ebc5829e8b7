package policy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/broker-dev/broker/internal/apperr"
)

// NotifyChannel is the Postgres channel on which every policy change is
// announced, with the new version as payload, inside the change's transaction.
const NotifyChannel = "broker_policy"

// changeLock is the pg_advisory_xact_lock key that serialises policy changes,
// so that history ids (the versions) are assigned in commit order.
const changeLock int64 = 0x62726f6b6572_01 // "broker", 1

// PGStore is the Store in Postgres: rules in casbin_rule (login rules in
// policy_login_rule, which releases before login rules never read; migration
// 005), changes in policy_history, announcements on NotifyChannel.
type PGStore struct {
	pool *pgxpool.Pool
	log  *slog.Logger
}

// NewPGStore returns a store over pool, whose database has the broker's
// migrations applied. Watch reports connection trouble to log (nil discards).
func NewPGStore(pool *pgxpool.Pool, log *slog.Logger) *PGStore {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &PGStore{pool: pool, log: log}
}

const lineColumns = "id, ptype, v0, v1, v2, v3, v4, v5"

func scanLines(rows pgx.Rows) ([]Line, error) {
	defer rows.Close()
	var out []Line
	for rows.Next() {
		var l Line
		if err := rows.Scan(&l.ID, &l.PType, &l.V[0], &l.V[1], &l.V[2], &l.V[3], &l.V[4], &l.V[5]); err != nil {
			return nil, err
		}
		out = append(out, l)
	}
	return out, rows.Err()
}

// dbError maps a database failure to the apperr kind a client can act on.
func dbError(err error, msg string) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch pe.Code {
		case "23505": // unique_violation
			return apperr.Wrap(apperr.Conflict, err, "an identical policy rule already exists")
		case "55P03", "57014", "40001", "40P01": // lock_not_available, query_canceled, serialization, deadlock
			return apperr.Wrap(apperr.Unavailable, err, msg+"; retry")
		}
		return apperr.Wrap(apperr.Internal, err, msg)
	}
	if ae, ok := apperr.As(err); ok {
		return ae
	}
	return apperr.Wrap(apperr.Unavailable, err, msg+": the database is unavailable")
}

// Load implements Store; it reads the rules and the version in one snapshot.
func (s *PGStore) Load(ctx context.Context, f Filter) (lines []Line, version int64, err error) {
	err = pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, "SELECT coalesce(max(id), 0) FROM policy_history").Scan(&version); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, "SELECT "+lineColumns+" FROM casbin_rule WHERE ($1 = '' OR v0 = $1) AND ($2 = '' OR v1 = $2)"+
			" UNION ALL SELECT "+lineColumns+" FROM policy_login_rule WHERE ($1 = '' OR v0 = $1) AND ($2 = '' OR v1 = $2) ORDER BY id",
			f.Subject, f.Channel)
		if err != nil {
			return err
		}
		lines, err = scanLines(rows)
		return err
	})
	if err != nil {
		return nil, 0, dbError(err, "loading policy rules failed")
	}
	return lines, version, nil
}

// Version implements Store.
func (s *PGStore) Version(ctx context.Context) (int64, error) {
	var v int64
	if err := s.pool.QueryRow(ctx, "SELECT coalesce(max(id), 0) FROM policy_history").Scan(&v); err != nil {
		return 0, dbError(err, "reading the policy version failed")
	}
	return v, nil
}

// Apply implements Store. Changes are serialised by an advisory lock, and
// announced on NotifyChannel when they commit.
func (s *PGStore) Apply(ctx context.Context, a Actor, m Mutation) (res Applied, err error) {
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		res = Applied{}
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", changeLock); err != nil {
			return err
		}
		if m.UnlessPType != "" {
			var exists bool
			if err := tx.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM "+ruleTable(m.UnlessPType)+" WHERE ptype = $1)", m.UnlessPType).Scan(&exists); err != nil {
				return err
			}
			if exists {
				res.Skipped = true
				return tx.QueryRow(ctx, "SELECT coalesce(max(id), 0) FROM policy_history").Scan(&res.Version)
			}
		}
		if len(m.Remove) > 0 {
			for _, table := range []string{"casbin_rule", "policy_login_rule"} {
				rows, err := tx.Query(ctx, "DELETE FROM "+table+" WHERE id = ANY($1) RETURNING "+lineColumns, m.Remove)
				if err != nil {
					return err
				}
				removed, err := scanLines(rows)
				if err != nil {
					return err
				}
				res.Removed = append(res.Removed, removed...)
			}
			sortLines(res.Removed)
			if len(res.Removed) != distinct(m.Remove) {
				return apperr.New(apperr.NotFound, "no policy rule has that id")
			}
		}
		if len(m.Add) > 0 {
			// Ids come from the one sequence in the order given, whichever
			// table a line goes to.
			var ids []int64
			if err := tx.QueryRow(ctx, "SELECT array_agg(id ORDER BY id) FROM (SELECT nextval('casbin_rule_id_seq') AS id FROM generate_series(1, $1)) s",
				len(m.Add)).Scan(&ids); err != nil {
				return err
			}
			for _, table := range []string{"casbin_rule", "policy_login_rule"} {
				var idCol []int64
				var cols [7][]string
				for i, l := range m.Add {
					if ruleTable(l.PType) != table {
						continue
					}
					idCol = append(idCol, ids[i])
					cols[0] = append(cols[0], l.PType)
					for j, v := range l.V {
						cols[j+1] = append(cols[j+1], v)
					}
				}
				if len(idCol) == 0 {
					continue
				}
				rows, err := tx.Query(ctx, `INSERT INTO `+table+` (id, ptype, v0, v1, v2, v3, v4, v5)
					SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[])
					RETURNING `+lineColumns, idCol, cols[0], cols[1], cols[2], cols[3], cols[4], cols[5], cols[6])
				if err != nil {
					return err
				}
				added, err := scanLines(rows)
				if err != nil {
					return err
				}
				res.Added = append(res.Added, added...)
			}
			sortLines(res.Added)
		}
		before, err := historyJSON(res.Removed)
		if err != nil {
			return err
		}
		after, err := historyJSON(res.Added)
		if err != nil {
			return err
		}
		if err := tx.QueryRow(ctx, `INSERT INTO policy_history (actor, request_id, action, before, after)
			VALUES ($1, $2, $3, $4, $5) RETURNING id`, a.Subject, a.RequestID, m.Action, before, after).Scan(&res.Version); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, "SELECT pg_notify($1, $2)", NotifyChannel, strconv.FormatInt(res.Version, 10))
		return err
	})
	if err != nil {
		return Applied{}, dbError(err, "changing the policy failed")
	}
	return res, nil
}

// ruleTable is the table that holds lines of ptype.
func ruleTable(ptype string) string {
	if ptype == ptypeLogin {
		return "policy_login_rule"
	}
	return "casbin_rule"
}

func distinct(ids []int64) int {
	seen := make(map[int64]struct{}, len(ids))
	for _, id := range ids {
		seen[id] = struct{}{}
	}
	return len(seen)
}

// historyJSON encodes lines as the rules a history entry shows; nil for none.
func historyJSON(lines []Line) (any, error) {
	if len(lines) == 0 {
		return nil, nil
	}
	b, err := json.Marshal(changeRules(lines))
	if err != nil {
		return nil, fmt.Errorf("encode history: %w", err)
	}
	return string(b), nil
}

// History implements Store.
func (s *PGStore) History(ctx context.Context, f HistoryFilter) ([]Change, error) {
	limit, err := f.limit()
	if err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, `SELECT id, at, actor, request_id, action, before, after FROM policy_history
		WHERE ($1 = 0 OR id < $1) ORDER BY id DESC LIMIT $2`, f.Before, limit)
	if err != nil {
		return nil, dbError(err, "reading the policy history failed")
	}
	defer rows.Close()
	var out []Change
	for rows.Next() {
		var c Change
		var before, after []byte
		if err := rows.Scan(&c.ID, &c.At, &c.Actor, &c.RequestID, &c.Action, &before, &after); err != nil {
			return nil, dbError(err, "reading the policy history failed")
		}
		for _, f := range []struct {
			raw []byte
			dst *[]Rule
		}{{before, &c.Before}, {after, &c.After}} {
			if len(f.raw) == 0 {
				continue
			}
			if err := json.Unmarshal(f.raw, f.dst); err != nil {
				return nil, apperr.Wrap(apperr.Internal, err, fmt.Sprintf("policy history entry %d is unreadable", c.ID))
			}
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, dbError(err, "reading the policy history failed")
	}
	return out, nil
}

// Listener timing: how long to wait before reconnecting (doubling up to the
// maximum), and how often an idle listening connection is checked.
const (
	listenRetryMin = 100 * time.Millisecond
	listenRetryMax = 2 * time.Second
	listenPing     = 15 * time.Second
)

// Watch implements Store with LISTEN on a connection of its own. After every
// (re)connection it calls changed(0): changes may have been missed meanwhile.
func (s *PGStore) Watch(ctx context.Context, changed func(version int64)) error {
	wait := listenRetryMin
	for {
		listening, err := s.listen(ctx, changed)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if listening {
			wait = listenRetryMin
		}
		s.log.Warn("policy change listener lost its connection; reconnecting", "error", err, "in", wait)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, listenRetryMax)
	}
}

// listen listens until the connection fails; listening reports whether it
// got as far as LISTEN.
func (s *PGStore) listen(ctx context.Context, changed func(int64)) (listening bool, err error) {
	conn, err := pgx.ConnectConfig(ctx, s.pool.Config().ConnConfig)
	if err != nil {
		return false, err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = conn.Close(cctx)
	}()
	if _, err := conn.Exec(ctx, "LISTEN "+NotifyChannel); err != nil {
		return false, err
	}
	changed(0)
	for {
		wctx, cancel := context.WithTimeout(ctx, listenPing)
		n, err := conn.WaitForNotification(wctx)
		cancel()
		switch {
		case err == nil:
			v, perr := strconv.ParseInt(n.Payload, 10, 64)
			if perr != nil {
				v = 0 // not ours to interpret: reload everything
			}
			changed(v)
		case ctx.Err() != nil:
			return true, ctx.Err()
		case errors.Is(err, context.DeadlineExceeded) && !conn.IsClosed():
			if err := conn.Ping(ctx); err != nil {
				return true, err
			}
		default:
			return true, err
		}
	}
}
