package audit

// The decisions of a time window, grouped: what a policy plan replays
// against proposed rules to show who would lose or gain access.

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"
)

// DecisionCount is how many times a caller (issuer, subject, groups) was
// granted or denied a role on a channel of a project.
type DecisionCount struct {
	Issuer, Subject string
	Groups          []string
	Project         string
	Channel, Role   string
	Decision        Decision // granted or denied
	Count           int64
}

// decisionsPage is how many groups Decisions decodes at a time.
const decisionsPage = 5000

// Decisions hands fn every (caller, project, channel, role, decision) of the
// granted and denied channel decisions since since, with its count, in no
// particular order, grouped by Postgres in one statement of at most five
// minutes. Errors: Unavailable; fn's own.
func (l *Postgres) Decisions(ctx context.Context, since time.Time, fn func(DecisionCount) error) error {
	release, err := l.readSlot()
	if err != nil {
		return err
	}
	defer release()
	// One aggregate over the whole window: more than the pool's statement
	// timeout allows on a large log, so in a read-only transaction of its
	// own with a bound of its own (it holds no lock; replicas wait on
	// nothing), and memory to group in.
	tx, err := l.reads.BeginTx(ctx, pgx.TxOptions{AccessMode: pgx.ReadOnly})
	if err != nil {
		return readFailed(err, "decisions")
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if _, err := tx.Exec(ctx, "SET LOCAL statement_timeout = '5min'; SET LOCAL work_mem = '64MB'"); err != nil {
		return readFailed(err, "decisions")
	}
	cond, args := query{Filter: Filter{From: since}}.where(nil)
	rows, err := tx.Query(ctx, `SELECT r.context, r.subject, r.groups, r.channel, r.decision, count(*)
		FROM issuance_log_record r WHERE `+cond+` AND r.decision IN (1, 2) AND r.channel <> 0
		GROUP BY r.context, r.subject, r.groups, r.channel, r.decision`, args...)
	if err != nil {
		return readFailed(err, "decisions")
	}
	defer rows.Close()
	var (
		page   []row
		counts []int64
		r      row
		n      int64
	)
	flush := func() error {
		values, err := l.values.load(ctx, l.reads, page)
		if err != nil {
			return readFailed(err, "decisions")
		}
		for i, rec := range decode(page, values, func(int64) ([]byte, bool) { return nil, false }) {
			if err := fn(DecisionCount{Issuer: rec.Issuer, Subject: rec.Subject, Groups: rec.Groups, Project: rec.Project,
				Channel: rec.Channel, Role: rec.Role, Decision: rec.Decision, Count: counts[i]}); err != nil {
				return err
			}
		}
		page, counts = page[:0], counts[:0]
		return nil
	}
	// A page is decoded while the result stays open: the dictionary is
	// read on another connection of the pool.
	if _, err := pgx.ForEachRow(rows, []any{&r.context, &r.subject, &r.groups, &r.channel, &r.decision, &n}, func() error {
		page, counts = append(page, r), append(counts, n)
		if len(page) == decisionsPage {
			return flush()
		}
		return nil
	}); err != nil {
		return readFailed(err, "decisions")
	}
	return flush()
}

// Decisions implements Log.
func (m *Memory) Decisions(ctx context.Context, since time.Time, fn func(DecisionCount) error) error {
	type key struct {
		issuer, subject, groups, project, channel, role string
		decision                                        Decision
	}
	m.mu.RLock()
	counts := map[key]*DecisionCount{}
	var order []key
	for i := range m.records {
		r := &m.records[i]
		if r.Time.Before(since) || r.Channel == "" || (r.Decision != DecisionGranted && r.Decision != DecisionDenied) {
			continue
		}
		k := key{r.Issuer, r.Subject, joinGroups(r.Groups), r.Project, r.Channel, r.Role, r.Decision}
		if c, ok := counts[k]; ok {
			c.Count++
			continue
		}
		counts[k] = &DecisionCount{Issuer: r.Issuer, Subject: r.Subject, Groups: r.Groups, Project: r.Project,
			Channel: r.Channel, Role: r.Role, Decision: r.Decision, Count: 1}
		order = append(order, k)
	}
	m.mu.RUnlock()
	for _, k := range order {
		if err := fn(*counts[k]); err != nil {
			return err
		}
	}
	return nil
}

// joinGroups is a map key for a group list.
func joinGroups(g []string) string {
	b := make([]byte, 0, 64)
	for _, s := range g {
		b = append(appendString(b, s), 0)
	}
	return string(b)
}
