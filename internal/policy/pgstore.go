package policy

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/broker-dev/broker/internal/apperr"
)

// NotifyChannel is the Postgres channel on which every policy change is
// announced, with the new version as payload, inside the change's transaction.
const NotifyChannel = "broker_policy"

// The pg_advisory_xact_lock key that serialises policy changes, so that
// history ids (the versions) are assigned in commit order, is
// 0x62726f6b6572_01 ("broker", 1); policy_apply (migration 007) takes it.

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
			" UNION ALL SELECT "+lineColumns+" FROM policy_login_rule WHERE ($1 = '' OR v0 = $1) AND ($2 = '' OR v1 = $2)"+
			" UNION ALL SELECT "+lineColumns+" FROM policy_project_rule WHERE ($1 = '' OR v0 = $1) AND ($2 = '' OR v1 = $2) ORDER BY id",
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

// Apply implements Store: one statement, policy_apply (migrations 007, 016, 018, 019), which
// takes the policy change lock and the issuance log's chain lock, makes the
// change, records it in the history and announces it, and commits. No lock is
// held across a round trip, and a change is ordered with every append: once
// it has committed, no grant decided before it is recorded.
func (s *PGStore) Apply(ctx context.Context, a Actor, m Mutation) (Applied, error) {
	var cols [7][]string
	for _, l := range m.Add {
		cols[0] = append(cols[0], l.PType)
		for j, v := range l.V {
			cols[j+1] = append(cols[j+1], v)
		}
	}
	remove := m.Remove
	if remove == nil {
		remove = []int64{}
	}
	var res Applied
	var removed, added []byte
	err := s.pool.QueryRow(ctx, `SELECT version, skipped, removed, added FROM policy_apply($1, $2, $3, $4,
		$5, $6, $7, $8, $9, $10, $11, $12, $13::bigint, $14::integer)`, a.Subject, a.RequestID, m.Action, remove,
		cols[0], cols[1], cols[2], cols[3], cols[4], cols[5], cols[6], m.UnlessPType, m.ExpectVersion, m.Unchanged).Scan(&res.Version, &res.Skipped, &removed, &added)
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "P0002" { // no_data_found
		return Applied{}, apperr.New(apperr.NotFound, "no policy rule has that id")
	}
	if errors.As(err, &pe) && pe.Code == "P0004" { // migration 016: not at the expected version
		var now int64
		if err := s.pool.QueryRow(ctx, "SELECT coalesce(max(id), 0) FROM policy_history").Scan(&now); err != nil {
			return Applied{}, dbError(err, "changing the policy failed")
		}
		return Applied{}, versionMoved(now, *m.ExpectVersion)
	}
	if err != nil {
		return Applied{}, dbError(err, "changing the policy failed")
	}
	if res.Removed, err = linesFromJSON(removed); err != nil {
		return Applied{}, err
	}
	if res.Added, err = linesFromJSON(added); err != nil {
		return Applied{}, err
	}
	return res, nil
}

// linesFromJSON reads policy_apply's [[id, ptype, v0, …, v5], …].
func linesFromJSON(raw []byte) ([]Line, error) {
	if len(raw) == 0 {
		return nil, nil
	}
	var rows [][]json.RawMessage
	if err := json.Unmarshal(raw, &rows); err != nil {
		return nil, apperr.Wrap(apperr.Internal, err, "policy_apply answered lines that do not read")
	}
	out := make([]Line, len(rows))
	for i, r := range rows {
		if len(r) != 8 {
			return nil, apperr.New(apperr.Internal, "policy_apply answered a line of %d fields", len(r))
		}
		if err := json.Unmarshal(r[0], &out[i].ID); err != nil {
			return nil, apperr.Wrap(apperr.Internal, err, "policy_apply answered a bad id")
		}
		if err := json.Unmarshal(r[1], &out[i].PType); err != nil {
			return nil, apperr.Wrap(apperr.Internal, err, "policy_apply answered a bad ptype")
		}
		for j := range out[i].V {
			if err := json.Unmarshal(r[j+2], &out[i].V[j]); err != nil {
				return nil, apperr.Wrap(apperr.Internal, err, "policy_apply answered a bad value")
			}
		}
	}
	return out, nil
}

// History implements Store. Postgres filters and clips each change, so
// that a page of the history costs the same whatever the size of its
// changes: a 20,000-rule import is read as its first MaxRulesShown rules a
// side and their counts.
func (s *PGStore) History(ctx context.Context, f HistoryFilter) ([]Change, error) {
	limit, err := f.limit()
	if err != nil {
		return nil, err
	}
	var from, to *time.Time
	if !f.From.IsZero() {
		from = &f.From
	}
	if !f.To.IsZero() {
		to = &f.To
	}
	rows, err := s.pool.Query(ctx, historySQL, f.Before, limit, f.Projects, f.Actor, f.Action, from, to,
		likeChannel(f.Channel), f.RuleID, historyShown)
	if err != nil {
		return nil, dbError(err, "reading the policy history failed")
	}
	defer rows.Close()
	var out []Change
	for rows.Next() {
		var c Change
		var before, after []byte
		var beforeTotal, afterTotal int
		if err := rows.Scan(&c.ID, &c.At, &c.Actor, &c.RequestID, &c.Action, &c.ApplyID, &c.Unchanged,
			&before, &beforeTotal, &after, &afterTotal); err != nil {
			return nil, dbError(err, "reading the policy history failed")
		}
		for _, side := range []struct {
			raw   []byte
			dst   *[]Rule
			total int
			clip  *int
		}{{before, &c.Before, beforeTotal, &c.BeforeTotal}, {after, &c.After, afterTotal, &c.AfterTotal}} {
			var rules []Rule
			if err := json.Unmarshal(side.raw, &rules); err != nil {
				return nil, apperr.Wrap(apperr.Internal, err, fmt.Sprintf("policy history entry %d is unreadable", c.ID))
			}
			for _, r := range rules {
				*side.dst = append(*side.dst, r.Normalized())
			}
			if side.total > len(rules) {
				*side.clip = side.total
			}
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, dbError(err, "reading the policy history failed")
	}
	return out, nil
}

// historySQL lists history entries for History: $1 before (0: none), $2
// limit, $3 projects (NULL: all), $4 a part of the actor, $5 the action, $6
// from, $7 to, $8 a LIKE pattern of a rule's channel ("": any), $9 a rule id
// (0: any), $10 the rules shown a side. The entries are read newest first
// by the primary key and each is taken apart on its own (LATERAL), so the
// LIMIT stops the reading once a page is full. A rule of the JSON written
// before projects (011) names none: its project is the kind's default, as
// Rule.Normalized reads it.
const historySQL = `
SELECT h.id, h.at, h.actor, h.request_id, h.action, coalesce(h.apply_id, 0), coalesce(h.unchanged, 0),
    coalesce(v.before_shown, '[]'), v.before_total, coalesce(v.after_shown, '[]'), v.after_total
FROM policy_history h
CROSS JOIN LATERAL (
    SELECT jsonb_agg(x.e ORDER BY x.rule_id) FILTER (WHERE x.side = 0 AND x.n <= $10) AS before_shown,
        (count(*) FILTER (WHERE x.side = 0))::integer AS before_total,
        jsonb_agg(x.e ORDER BY x.rule_id) FILTER (WHERE x.side = 1 AND x.n <= $10) AS after_shown,
        (count(*) FILTER (WHERE x.side = 1))::integer AS after_total,
        coalesce(bool_or(x.e->>'channel' LIKE $8 ESCAPE '\'), false) AS channel_hit,
        coalesce(bool_or(x.rule_id = $9), false) AS rule_hit
    FROM (
        SELECT s.side, s.e, s.rule_id, row_number() OVER (PARTITION BY s.side ORDER BY s.rule_id) AS n
        FROM (SELECT 0 AS side, e, (e->>'id')::bigint AS rule_id
                  FROM jsonb_array_elements(coalesce(h.before, '[]') || coalesce(h.scoped_before, '[]')) e
              UNION ALL
              SELECT 1, e, (e->>'id')::bigint
                  FROM jsonb_array_elements(coalesce(h.after, '[]') || coalesce(h.scoped_after, '[]')) e) s
        WHERE $3::text[] IS NULL OR coalesce(nullif(s.e->>'project', ''),
            CASE WHEN s.e->>'role' IN ('read', 'write') THEN '*' ELSE 'default' END) = ANY($3)
    ) x
) v
WHERE ($1::bigint = 0 OR h.id < $1) AND ($4::text = '' OR strpos(h.actor, $4) > 0) AND ($5::text = '' OR h.action = $5)
    AND ($6::timestamptz IS NULL OR h.at >= $6) AND ($7::timestamptz IS NULL OR h.at < $7)
    AND ($3::text[] IS NULL OR v.before_total + v.after_total > 0)
    AND ($8::text = '' OR v.channel_hit) AND ($9::bigint = 0 OR v.rule_hit)
ORDER BY h.id DESC
LIMIT $2`

// likeChannel is a channel pattern of History ("*" any run) as a LIKE
// pattern ("" for none).
func likeChannel(p string) string {
	var b strings.Builder
	for _, c := range p {
		switch c {
		case '\\', '%', '_':
			b.WriteByte('\\')
			b.WriteRune(c)
		case '*':
			b.WriteByte('%')
		default:
			b.WriteRune(c)
		}
	}
	return b.String()
}

// historyColumns are the columns changes reads: the rules of
// policy_project_rule are recorded in the scoped columns (migration 011),
// an apply's entries carry its apply id (migration 018), an import's entry
// how many of its rules were in force already (019).
const historyColumns = "id, at, actor, request_id, action, before, after, scoped_before, scoped_after, coalesce(apply_id, 0), coalesce(unchanged, 0)"

// Since implements Store.
func (s *PGStore) Since(ctx context.Context, version int64, limit int) ([]Change, error) {
	return s.changes(ctx, `SELECT `+historyColumns+` FROM policy_history
		WHERE id > $1 ORDER BY id LIMIT $2`, version, limit)
}

// changes runs a history query.
func (s *PGStore) changes(ctx context.Context, sql string, args ...any) ([]Change, error) {
	rows, err := s.pool.Query(ctx, sql, args...)
	if err != nil {
		return nil, dbError(err, "reading the policy history failed")
	}
	defer rows.Close()
	var out []Change
	for rows.Next() {
		var c Change
		var before, after, scopedBefore, scopedAfter []byte
		if err := rows.Scan(&c.ID, &c.At, &c.Actor, &c.RequestID, &c.Action, &before, &after, &scopedBefore, &scopedAfter, &c.ApplyID, &c.Unchanged); err != nil {
			return nil, dbError(err, "reading the policy history failed")
		}
		for _, f := range []struct {
			raw []byte
			dst *[]Rule
		}{{before, &c.Before}, {after, &c.After}, {scopedBefore, &c.Before}, {scopedAfter, &c.After}} {
			if len(f.raw) == 0 {
				continue
			}
			var rules []Rule
			if err := json.Unmarshal(f.raw, &rules); err != nil {
				return nil, apperr.Wrap(apperr.Internal, err, fmt.Sprintf("policy history entry %d is unreadable", c.ID))
			}
			for _, r := range rules {
				*f.dst = append(*f.dst, r.Normalized())
			}
		}
		for _, rules := range [][]Rule{c.Before, c.After} {
			slices.SortFunc(rules, func(a, b Rule) int { return cmp.Compare(a.ID, b.ID) })
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
