package audit

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/broker-dev/broker/internal/pg/pgtest"
)

// TestPlans_NoAuditorQueryScansTheLog reads the plan of every query of the
// auditor API (each search filter alone and with a time window, the export's
// page, the token lookup, the stats) on a month of 300,000 records, enough
// for the planner to choose: none reads a partition that holds records with
// a sequential scan, nor the dictionary (8,000 values): values, and the
// channels a pattern matches, are found through its indexes.
func TestPlans_NoAuditorQueryScansTheLog(t *testing.T) {
	ctx := context.Background()
	db := pgtest.New(t)
	pool := db.Pool()
	month := time.Now().UTC()
	month = time.Date(month.Year(), month.Month(), 1, 0, 0, 0, 0, time.UTC)
	fill := []string{
		`SELECT issuance_log_partition($1)`,
		`INSERT INTO issuance_log_value (id, kind, value)
			SELECT i, 2, 'user-' || i FROM generate_series(1, 2000) i
			UNION ALL SELECT 10000 + i, 6, CASE WHEN i % 10 = 0 THEN 'team-' || (i % 7) || '-' || i ELSE 'room-' || i END FROM generate_series(1, 5000) i
			UNION ALL SELECT 20000 + i, 3, 'acct-' || i FROM generate_series(1, 1000) i
			UNION ALL SELECT 30000 + i, 15, json_build_array('https://idp-' || (i % 2) || '.example', 'rtc', 'publisher',
				CASE WHEN i = 9 THEN 'rare' ELSE 'default' END, '', 'k' || i, '')::text FROM generate_series(1, 9) i`,
		`INSERT INTO issuance_log_record (seq, at, policy_version, uid, context, subject, account, channel, groups, reason,
			client_ip, user_agent, requested_ttl, granted_ttl, decision, request_id, token_fingerprint, hash, trace_id)
			SELECT i, $1::timestamptz + i * interval '1 second', 1,
				CASE WHEN i % 10 < 7 THEN 1000 + i % 50000 ELSE 0 END,
				30000 + CASE WHEN i % 1000 = 0 THEN 9 ELSE 1 + i % 8 END, 1 + i % 2000,
				CASE WHEN i % 10 >= 7 THEN 20000 + 1 + i % 1000 ELSE 0 END, 10000 + 1 + (i * 7) % 5000, 0, 0, 0, 0, 3600,
				CASE WHEN i % 100 < 85 THEN 3600 ELSE 0 END,
				CASE WHEN i % 100 < 85 THEN 1 WHEN i % 100 < 97 THEN 2 ELSE 3 END, '\x00'::bytea || convert_to('req-' || i, 'UTF8'),
				CASE WHEN i % 100 < 85 THEN sha256(int8send(i)) ELSE '\x'::bytea END, sha256(int4send(i)), '\x'::bytea
			FROM generate_series(1, 300000) i`,
		`INSERT INTO issuance_log_minute SELECT date_trunc('minute', at, 'UTC'), min(seq), max(seq) FROM issuance_log_record GROUP BY 1`,
		`ANALYZE`,
	}
	for _, sql := range fill {
		var args []any
		if strings.Contains(sql, "$1") {
			args = []any{month}
		}
		if _, err := pool.Exec(ctx, sql, args...); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	uid := uint32(1042)
	from, to := month.Add(24*time.Hour), month.Add(25*time.Hour)
	filters := map[string]Filter{
		"none": {}, "subject": {Subject: "user-7"}, "account": {Account: "acct-3"}, "uid": {UID: &uid},
		"channel": {Channel: "room-17"}, "channel prefix": {Channel: "team-3-*"}, "common channel prefix": {Channel: "room-1*"},
		"denied": {Decision: DecisionDenied}, "invalid": {Decision: DecisionInvalid}, "granted": {Decision: DecisionGranted},
		"issuer": {Issuer: "https://idp-1.example"}, "project": {Project: "rare"}, "projects": {Projects: []string{"default"}},
		"window": {From: from, To: to}, "since": {From: from}, "until": {To: to},
		"subject in window": {Subject: "user-7", From: from, To: to}, "channel in window": {Channel: "room-17", From: from, To: to},
		"denied in window":     {Decision: DecisionDenied, From: from, To: to},
		"request id in window": {RequestID: "0123456789abcdef01234567", From: from, To: to},
	}
	scan := regexp.MustCompile(`Seq Scan on (issuance_log_record\w*|issuance_log_value)`)
	check := func(t *testing.T, sql string, args ...any) {
		t.Helper()
		rows, err := pool.Query(ctx, "EXPLAIN "+sql, args...)
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
		text := strings.Join(plan, "\n")
		for _, m := range scan.FindAllStringSubmatch(text, -1) {
			if m[1] == "issuance_log_record_"+month.Format("2006_01") || m[1] == "issuance_log_value" {
				t.Errorf("a sequential scan of %s:\n%s", m[1], text)
				return
			}
		}
	}
	for name, f := range filters {
		t.Run(name, func(t *testing.T) {
			q, err := validate(f, true)
			if err != nil {
				t.Fatal(err)
			}
			q.Limit = DefaultLimit
			if err := resolveChannels(ctx, pool, &q); err != nil {
				t.Fatal(err)
			}
			if strings.Contains(f.Channel, "*") {
				check(t, channelsSQL, likePattern(f.Channel))
			}
			sql, args := q.searchSQL()
			check(t, sql, args...)
			q.before = 250000 // the next page
			sql, args = q.searchSQL()
			check(t, sql, args...)
		})
	}
	t.Run("export page", func(t *testing.T) {
		cond, args := query{Filter: Filter{Channel: "room-17"}}.where(nil)
		check(t, walkSQL(cond, len(args)), append(args, int64(1000), readPage, int64(0))...)
		check(t, walkSQL("true", 0), int64(150000), readPage, int64(0))
	})
	t.Run("lookup", func(t *testing.T) {
		check(t, lookupSQL, [][]byte{make([]byte, 32)})
	})
	t.Run("stats", func(t *testing.T) {
		sql, args := statsSQL(month.Add(48*time.Hour), time.Minute)
		check(t, sql, args...)
	})
}
