package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/broker-dev/broker/internal/audit"
	"github.com/broker-dev/broker/internal/pg/pgtest"
)

// auditKeyHex is the audit key the CLI tests configure; no output may contain it.
const auditKeyHex = "6b1c0e2f9a8d7c6b5a4f3e2d1c0b0a99887766554433221100ffeeddccbbaa01"

// auditDB returns a migrated database holding records appended with the
// test key, and the environment pointing the CLI at it.
func auditDB(t *testing.T, recs ...audit.Record) (*pgtest.DB, map[string]string) {
	t.Helper()
	db := pgtest.New(t)
	key, _ := hex.DecodeString(auditKeyHex)
	l, err := audit.NewPostgres(db.Pool(), key, audit.PostgresOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for _, r := range recs {
		if _, err := l.Append(context.Background(), r); err != nil {
			t.Fatal(err)
		}
	}
	return db, map[string]string{"BROKER_DATABASE_URL": db.URL, "BROKER_AUDIT_KEY": auditKeyHex}
}

// auditRec is a record decided on the policy a fresh database holds (the
// version of migration 011's change, after 005's), so that grants are not
// stale.
func auditRec(subject, channel string, d audit.Decision, at time.Time) audit.Record {
	return audit.Record{Time: at, Issuer: "https://idp", Subject: subject, Account: subject, UID: 42,
		Service: audit.ServiceRTC, Channel: channel, Role: "publisher", GrantedTTL: time.Hour, Decision: d, Reason: "policy",
		PolicyVersion: 2}
}

var auditT0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func assertNoKey(t *testing.T, outs ...string) {
	t.Helper()
	for _, o := range outs {
		if strings.Contains(strings.ToLower(o), auditKeyHex) {
			t.Fatal("output contains the audit key")
		}
	}
}

func TestAuditVerify_IntactLogExitsZeroWithCount(t *testing.T) {
	t.Parallel()
	_, env := auditDB(t,
		auditRec("alice", "room", audit.DecisionGranted, auditT0),
		auditRec("bob", "room", audit.DecisionDenied, auditT0.Add(time.Minute)))
	code, out, errOut := runBroker(t, env, "audit", "verify")
	if code != 0 || out != "ok, 2 records\n" {
		t.Errorf("audit verify = %d %q %q; want 0 and \"ok, 2 records\"", code, out, errOut)
	}
}

func TestAuditVerify_TamperedLogExitsOneListingEachProblem(t *testing.T) {
	t.Parallel()
	var recs []audit.Record
	for i := range 4 {
		recs = append(recs, auditRec("alice", "room", audit.DecisionGranted, auditT0.Add(time.Duration(i)*time.Minute)))
	}
	db, env := auditDB(t, recs...)
	for _, sql := range []string{
		"WITH v AS (INSERT INTO issuance_log_value (kind, value) VALUES (6, 'vip') ON CONFLICT (kind, issuance_log_value_key(value)) DO UPDATE SET kind = EXCLUDED.kind RETURNING id) UPDATE issuance_log_record SET decision = 1, channel = (SELECT id FROM v) WHERE seq = 2",
		"DELETE FROM issuance_log_record WHERE seq = 3",
	} {
		if _, err := db.Pool().Exec(context.Background(), sql); err != nil {
			t.Fatal(err)
		}
	}
	code, out, errOut := runBroker(t, env, "audit", "verify")
	want := "seq 2: modified: record 2 does not match its hash\n" +
		"seq 3: deleted: records 3 to 3 are missing before record 4\n" +
		"seq 2: tree: the tree's stored hash 1 does not match the records as stored (record 2 or one before it is not what the tree holds)\n" +
		"FAILED: 3 problem(s) in 3 records\n"
	if code != 1 || out != want || errOut != "" {
		t.Errorf("audit verify = %d\n%s%s\nwant 1 and\n%s", code, out, errOut, want)
	}
	assertNoKey(t, out, errOut)
}

func TestAuditVerify_WrongKeyFailsVerification(t *testing.T) {
	t.Parallel()
	_, env := auditDB(t, auditRec("alice", "room", audit.DecisionGranted, auditT0))
	env["BROKER_AUDIT_KEY"] = strings.Repeat("ab", 32)
	code, out, _ := runBroker(t, env, "audit", "verify")
	if code != 1 || !strings.Contains(out, "seq 1: unknown_key: record 1 was linked with key id ") {
		t.Errorf("verify under another key = %d %q; want 1 and record 1 under an unknown key", code, out)
	}
}

// rotatedKeyHex is the audit key TestAuditVerify_AcrossAKeyRotation rotates to.
const rotatedKeyHex = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90"

func TestAuditVerify_AcrossAKeyRotation(t *testing.T) {
	t.Parallel()
	db, env := auditDB(t,
		auditRec("alice", "room", audit.DecisionGranted, auditT0),
		auditRec("bob", "room", audit.DecisionGranted, auditT0.Add(time.Minute)))
	oldKey, _ := hex.DecodeString(auditKeyHex)
	newKey, _ := hex.DecodeString(rotatedKeyHex)
	l, err := audit.NewPostgres(db.Pool(), newKey, audit.PostgresOptions{PreviousKeys: [][]byte{oldKey}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Append(context.Background(), auditRec("carol", "room", audit.DecisionDenied, auditT0.Add(2*time.Minute))); err != nil {
		t.Fatal(err)
	}
	l.Close()

	env["BROKER_AUDIT_KEY"] = rotatedKeyHex
	for _, c := range []struct {
		name, previous string
		code           int
		out            string
	}{
		{"OldKeyConfigured", " " + strings.ToUpper(auditKeyHex) + " ,", 0, "ok, 3 records\n"},
		{"OldKeyMissing", "", 1, "seq 1: unknown_key: records 1 to 2 were linked with key id " + audit.KeyID(oldKey) +
			", which is not configured\nFAILED: 1 problem(s) in 3 records\n"},
	} {
		t.Run(c.name, func(t *testing.T) {
			env := maps.Clone(env)
			env["BROKER_AUDIT_PREVIOUS_KEYS"] = c.previous
			code, out, errOut := runBroker(t, env, "audit", "verify")
			if code != c.code || out != c.out || errOut != "" {
				t.Errorf("audit verify = %d %q %q; want %d and %q", code, out, errOut, c.code, c.out)
			}
			assertNoKey(t, out, errOut)
			if strings.Contains(strings.ToLower(out+errOut), rotatedKeyHex) {
				t.Fatal("output contains the new audit key")
			}
		})
	}
}

func TestAudit_ConfigurationErrorsNameTheVariableNotTheValue(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name    string
		env     map[string]string
		args    []string
		code    int
		message string
	}{
		{"MissingKey", map[string]string{"BROKER_DATABASE_URL": "postgres://localhost/x"}, []string{"verify"}, 1, "BROKER_AUDIT_KEY (--audit-key) is required"},
		{"ShortKey", map[string]string{"BROKER_DATABASE_URL": "postgres://localhost/x", "BROKER_AUDIT_KEY": "abcdef0123456789"}, []string{"verify"}, 1, "BROKER_AUDIT_KEY"},
		{"ShortPreviousKey", map[string]string{"BROKER_DATABASE_URL": "postgres://localhost/x", "BROKER_AUDIT_KEY": auditKeyHex,
			"BROKER_AUDIT_PREVIOUS_KEYS": rotatedKeyHex + ",abcdef0123456789"}, []string{"verify"}, 1,
			"BROKER_AUDIT_PREVIOUS_KEYS (--audit-previous-keys) entry 2 decodes to 8 bytes"},
		{"MissingDatabase", map[string]string{"BROKER_AUDIT_KEY": auditKeyHex}, []string{"verify"}, 2, "give --server URL"},
		{"NoAction", nil, nil, 2, "want verify, export, tail, prove, keygen, check-proof or acknowledge-rollback"},
		{"UnknownAction", nil, []string{"rewrite"}, 2, `unknown action "rewrite"`},
		{"ExtraArgument", map[string]string{"BROKER_AUDIT_KEY": auditKeyHex, "BROKER_DATABASE_URL": "postgres://localhost/x"}, []string{"verify", "now"}, 2, `unexpected argument "now"`},
		{"BadUID", nil, []string{"export", "--uid", "0"}, 2, "--uid must be a whole number from 1 to 4294967295"},
		{"BadTime", nil, []string{"export", "--from", "yesterday"}, 2, "--from must be a time such as"},
		{"BadTailCount", nil, []string{"tail", "-n", "-1"}, 2, "-n must be between 0 and 1000"},
	} {
		t.Run(c.name, func(t *testing.T) {
			env := c.env
			if env == nil {
				_, env = auditDB(t)
			}
			code, out, errOut := runBroker(t, env, append([]string{"audit"}, c.args...)...)
			if code != c.code || !strings.Contains(errOut, c.message) {
				t.Errorf("exit %d, stderr %q; want %d mentioning %q", code, errOut, c.code, c.message)
			}
			assertNoKey(t, out, errOut)
			if strings.Contains(errOut, "abcdef0123456789") {
				t.Error("stderr repeats the configured key")
			}
		})
	}
}

func TestAuditExport_WritesFilteredCSVAndJSONL(t *testing.T) {
	t.Parallel()
	evil := auditRec("=HYPERLINK(\"x\")", "room-2", audit.DecisionDenied, auditT0.Add(2*time.Minute))
	_, env := auditDB(t,
		auditRec("alice", "room-1", audit.DecisionGranted, auditT0),
		auditRec("bob", "lobby", audit.DecisionGranted, auditT0.Add(time.Minute)),
		evil)

	code, out, errOut := runBroker(t, env, "audit", "export", "--channel", "room-*")
	if code != 0 {
		t.Fatalf("export exited %d: %s", code, errOut)
	}
	rows, err := csv.NewReader(strings.NewReader(out)).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 3 || rows[0][0] != "seq" || rows[1][0] != "1" || rows[2][0] != "3" {
		t.Fatalf("csv rows = %q; want header, then records 1 and 3", rows)
	}
	if rows[2][4] != `'=HYPERLINK("x")` {
		t.Errorf("subject cell = %q; want the formula neutralised", rows[2][4])
	}

	code, out, errOut = runBroker(t, env, "audit", "export", "--format", "jsonl", "--decision", "granted", "--from", "2026-03-01T12:00:30Z")
	if code != 0 {
		t.Fatalf("export exited %d: %s", code, errOut)
	}
	var got struct {
		Seq     int64  `json:"seq"`
		Subject string `json:"subject"`
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil || got.Seq != 2 || strings.Count(out, "\n") != 1 {
		t.Errorf("jsonl = %q (%v); want only bob's record 2", out, err)
	}

	for _, args := range [][]string{{"--format", "xlsx"}, {"--decision", "maybe"}} {
		code, _, errOut = runBroker(t, env, append([]string{"audit", "export"}, args...)...)
		if code != 2 || !strings.Contains(errOut, strings.TrimPrefix(args[0], "--")) {
			t.Errorf("export %v = %d %q; want 2 naming the field", args, code, errOut)
		}
	}
}

func TestAuditTail_PrintsLatestRecordsOldestFirst(t *testing.T) {
	t.Parallel()
	hostile := auditRec("mallory\x1b[2J", "room", audit.DecisionInvalid, auditT0.Add(2*time.Minute))
	hostile.Reason = "bad\x1b]0;pwned\x07"
	_, env := auditDB(t,
		auditRec("alice", "room", audit.DecisionGranted, auditT0),
		auditRec("bob", "room", audit.DecisionDenied, auditT0.Add(time.Minute)),
		hostile)
	code, out, errOut := runBroker(t, env, "audit", "tail", "-n", "2")
	if code != 0 {
		t.Fatalf("tail exited %d: %s", code, errOut)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "2 2026-03-01T12:01:00Z denied sub=bob") ||
		!strings.HasPrefix(lines[1], "3 2026-03-01T12:02:00Z invalid sub=mallory\uFFFD[2J") {
		t.Errorf("tail -n 2 =\n%s\nwant records 2 and 3, oldest first", out)
	}
	if strings.ContainsAny(out, "\x1b\x07") {
		t.Errorf("tail printed control characters: %q", out)
	}
}

// syncBuffer is a bytes.Buffer safe to read while a command writes to it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestAuditTail_FollowPrintsNewRecordsUntilInterrupted(t *testing.T) {
	t.Parallel()
	db, env := auditDB(t, auditRec("alice", "room", audit.DecisionGranted, auditT0))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"broker", "audit", "tail", "-n", "1", "--follow", "--interval", "50ms"},
			func(k string) string { return env[k] }, strings.NewReader(""), &out, &out)
	}()

	waitFor := func(s string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !strings.Contains(out.String(), s) {
			if time.Now().After(deadline) {
				t.Fatalf("tail output never showed %q:\n%s", s, out.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitFor("sub=alice")

	key, _ := hex.DecodeString(auditKeyHex)
	l, err := audit.NewPostgres(db.Pool(), key, audit.PostgresOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for _, s := range []string{"bob", "carol"} {
		if _, err := l.Append(context.Background(), auditRec(s, "room", audit.DecisionGranted, auditT0)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor("sub=carol")
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("tail --follow ended with %v; want a clean stop on interrupt", err)
	}
	var subjects []string
	for _, line := range strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n") {
		f := strings.Fields(line)
		if len(f) > 3 {
			subjects = append(subjects, f[3])
		}
	}
	if got := strings.Join(subjects, " "); got != "sub=alice sub=bob sub=carol" {
		t.Errorf("followed subjects = %q; want alice, then bob and carol once each", got)
	}
}

func TestAuditVerify_ReportsRecordsPastRetentionAsRedacted(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	ctx := context.Background()
	if _, err := db.Pool().Exec(ctx, "SELECT issuance_log_partition($1)", auditT0); err != nil {
		t.Fatal(err)
	}
	key, _ := hex.DecodeString(auditKeyHex)
	l, err := audit.NewPostgres(db.Pool(), key, audit.PostgresOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []audit.Record{auditRec("alice", "room", audit.DecisionGranted, auditT0),
		auditRec("bob", "room", audit.DecisionDenied, auditT0.Add(time.Minute)),
		auditRec("carol", "room", audit.DecisionGranted, time.Now())} {
		if _, err := l.Append(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	if m, err := l.Maintain(ctx, 30*24*time.Hour); err != nil || m.Redacted != 2 {
		t.Fatalf("Maintain = %+v, %v; want March's 2 records redacted", m, err)
	}
	l.Close()
	env := map[string]string{"BROKER_DATABASE_URL": db.URL, "BROKER_AUDIT_KEY": auditKeyHex}
	code, out, errOut := runBroker(t, env, "audit", "verify")
	want := "ok, 3 records, 2 of them past retention (before 2026-04-01): personal fields dropped, content not checkable, chain and tree checked\n"
	if code != 0 || out != want || errOut != "" {
		t.Errorf("audit verify = %d %q %q; want 0 and %q", code, out, errOut, want)
	}
	assertNoKey(t, out, errOut)
}
