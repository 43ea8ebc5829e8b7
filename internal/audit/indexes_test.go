package audit

import (
	"context"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/broker-dev/broker/internal/pg/pgtest"
)

// Every auditor filter of Search is served by an index, on a log large
// enough for the planner to choose (the rows are written directly: only
// the plan is looked at), once the broker has built its indexes.
func TestSearch_EveryFilterUsesAnIndex(t *testing.T) {
	db := pgtest.New(t)
	ctx := context.Background()
	_, err := db.Pool().Exec(ctx, `INSERT INTO issuance_log (seq, at, issuer, subject, account, uid, service, channel, role,
		decision, policy_version, prev_hash, hash, project)
		SELECT g, timestamptz '2026-01-01' + g * interval '1 second', 'https://idp' || (g % 3), 'sub-' || (g % 5000),
			'acct-' || (g % 5000), g % 100000 + 1, 'rtc', 'room-' || (g % 5000), 'publisher',
			CASE WHEN g % 50 = 0 THEN 'denied' WHEN g % 97 = 0 THEN 'invalid' ELSE 'granted' END, 1,
			decode(repeat('00', 32), 'hex'), decode(repeat('00', 32), 'hex'), 'p' || (g % 20)
		FROM generate_series(1, 200000) g`)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Pool().Exec(ctx, "ANALYZE issuance_log"); err != nil {
		t.Fatal(err)
	}
	if err := EnsureIndexes(ctx, db.Pool(), slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	if err := EnsureIndexes(ctx, db.Pool(), slog.New(slog.DiscardHandler)); err != nil { // a no-op now
		t.Fatal(err)
	}
	uid := uint32(4242)
	from := time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC)
	for name, f := range map[string]Filter{
		"decision":        {Decision: DecisionDenied},
		"subject":         {Subject: "sub-17"},
		"account":         {Account: "acct-17"},
		"uid":             {UID: &uid},
		"channel":         {Channel: "room-17"},
		"channel prefix":  {Channel: "room-17*"},
		"project":         {Project: "p7"},
		"issuer":          {Issuer: "https://idp1"},
		"time window":     {From: from, To: from.Add(time.Hour)},
		"denied in a day": {Decision: DecisionDenied, From: from, To: from.Add(24 * time.Hour)},
		"subject and day": {Subject: "sub-17", From: from, To: from.Add(24 * time.Hour)},
	} {
		q, err := validate(f, true)
		if err != nil {
			t.Fatal(err)
		}
		cond, args := q.where(nil)
		args = append(args, q.Limit+1)
		rows, err := db.Pool().Query(ctx, "EXPLAIN SELECT "+selectColumns+" FROM issuance_log WHERE "+cond+
			" ORDER BY seq DESC LIMIT $"+strconv.Itoa(len(args)), args...)
		if err != nil {
			t.Fatal(err)
		}
		var plan []string
		for rows.Next() {
			var line string
			if err := rows.Scan(&line); err != nil {
				t.Fatal(err)
			}
			plan = append(plan, line)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		if text := strings.Join(plan, "\n"); strings.Contains(text, "Seq Scan on issuance_log") {
			t.Errorf("search by %s scans the log:\n%s", name, text)
		}
	}
}
