package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/broker-dev/broker/internal/pg/pgtest"
	"github.com/broker-dev/broker/internal/policy"
)

func TestPolicyCLI_AddListExplainRemoveHistory(t *testing.T) {
	t.Parallel()
	env := map[string]string{"BROKER_DATABASE_URL": emptyPolicyDB(t)}
	mustRun := func(args ...string) string {
		t.Helper()
		code, out, stderr := runBroker(t, env, append([]string{"policy"}, args...)...)
		if code != 0 {
			t.Fatalf("broker policy %s exited %d: %s", strings.Join(args, " "), code, stderr)
		}
		return out
	}
	out := mustRun("add", "--subject", "group:dev", "--channel", "demo-*", "--role", "publisher", "--max-ttl", "600", "--actor", "user:ops")
	if !strings.HasPrefix(out, `added #1 allow group:dev publisher "demo-*" maxTtl=600s`) {
		t.Fatalf("add printed %q", out)
	}
	mustRun("add", "--subject", "group:dev", "--channel", "demo-secret*", "--role", "publisher", "--effect", "deny")

	out = mustRun("list", "--subject", "group:dev")
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 3 || !strings.Contains(lines[1], `"demo-*"`) || !strings.Contains(lines[2], "deny") {
		t.Fatalf("list printed:\n%s", out)
	}
	var rules []policy.Rule
	if err := json.Unmarshal([]byte(mustRun("list", "--json")), &rules); err != nil || len(rules) != 2 {
		t.Fatalf("list --json = %+v, %v", rules, err)
	}
	// The policy as a document, as it would be kept in git, reads back.
	doc := mustRun("export", "-o", "yaml")
	if docRules, err := policy.ReadDocument(strings.NewReader(doc)); err != nil || len(docRules) != 2 ||
		docRules[0].Rule.Channel != "demo-*" || docRules[0].Rule.MaxTTLSeconds != 600 || docRules[1].Rule.Effect != policy.Deny {
		t.Fatalf("export -o yaml:\n%s\nread back: %+v, %v", doc, docRules, err)
	}

	out = mustRun("explain", "--subject", "user:alice", "--groups", "dev,ops", "--channel", "demo-1", "--role", "subscriber")
	if !strings.HasPrefix(out, "ALLOWED: allowed by rule #1") || !strings.Contains(out, "max token lifetime: 10m0s") || !strings.Contains(out, "2 rules apply") {
		t.Fatalf("explain printed:\n%s", out)
	}
	out = mustRun("explain", "--subject", "user:alice", "--groups", "dev", "--channel", "demo-secret-1", "--role", "publisher")
	if !strings.HasPrefix(out, "DENIED: denied by rule #2") {
		t.Fatalf("explain printed:\n%s", out)
	}

	mustRun("rm", "--id", "2", "--actor", "user:ops")
	out = mustRun("history", "--limit", "1")
	if !strings.Contains(out, "user:ops  remove") || !strings.Contains(out, `- #2 deny group:dev publisher "demo-secret*"`) {
		t.Fatalf("history printed:\n%s", out)
	}
	out = mustRun("history")
	if !strings.Contains(out, "cli:") {
		t.Fatalf("a change without --actor is not recorded as cli:<os user>:\n%s", out)
	}
}

func TestPolicyCLI_ImportExportRoundTrip(t *testing.T) {
	t.Parallel()
	env := map[string]string{"BROKER_DATABASE_URL": emptyPolicyDB(t)}
	csv := "subject,channel,role,effect,maxTtlSeconds\n*,lobby,subscriber,allow,\ngroup:dev,demo-*,publisher,allow,3600\ngroup:broker-admins,api:audit,read,allow,\n"
	file := filepath.Join(t.TempDir(), "rules.csv")
	if err := os.WriteFile(file, []byte(csv), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, stderr := runBroker(t, env, "policy", "import", file)
	if code != 0 || !strings.HasPrefix(out, "imported (add): 3 rules added, 0 removed, 0 unchanged\n") {
		t.Fatalf("import = %d %q %q", code, out, stderr)
	}
	// A file written before projects existed reads as the default project
	// (admin rights: global), and comes back with the project column.
	want := "subject,channel,role,effect,maxTtlSeconds,project\n*,lobby,subscriber,allow,,default\ngroup:dev,demo-*,publisher,allow,3600,default\ngroup:broker-admins,api:audit,read,allow,,*\n"
	code, out, stderr = runBroker(t, env, "policy", "export")
	if code != 0 || out != want {
		t.Fatalf("export = %d %q %q, want the imported file with its projects", code, out, stderr)
	}
	// Importing the same file again adds nothing; the export, in replace
	// mode, changes nothing; a smaller file in replace mode, previewed,
	// would remove the rest and changes nothing; applied, it does.
	code, out, stderr = runBroker(t, env, "policy", "import", file)
	if code != 0 || !strings.HasPrefix(out, "imported (add): 0 rules added, 0 removed, 3 unchanged\n") {
		t.Fatalf("re-import = %d %q %q, want nothing added", code, out, stderr)
	}
	exported := filepath.Join(t.TempDir(), "export.csv")
	if err := os.WriteFile(exported, []byte(want), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, stderr = runBroker(t, env, "policy", "import", "--mode", "replace", exported)
	if code != 0 || !strings.HasPrefix(out, "imported (replace): 0 rules added, 0 removed, 3 unchanged\n") {
		t.Fatalf("re-import of the export in replace mode = %d %q %q, want no change", code, out, stderr)
	}
	smaller := filepath.Join(t.TempDir(), "smaller.csv")
	if err := os.WriteFile(smaller, []byte("subject,channel,role,effect,maxTtlSeconds,project\n*,lobby,subscriber,allow,,default\ngroup:broker-admins,api:audit,read,allow,,*\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, stderr = runBroker(t, env, "policy", "import", "--mode", "replace", "--dry-run", smaller)
	if code != 0 || !strings.HasPrefix(out, "would import (dry run, nothing changed) (replace): 0 rules added, 1 removed, 2 unchanged\n") || !strings.Contains(out, `- #2 allow group:dev publisher "demo-*"`) {
		t.Fatalf("dry run = %d %q %q", code, out, stderr)
	}
	if _, out, _ := runBroker(t, env, "policy", "export"); out != want {
		t.Fatalf("a dry run changed the rules: %q", out)
	}
	if code, out, stderr = runBroker(t, env, "policy", "import", "--mode", "replace", smaller); code != 0 || !strings.Contains(out, "1 removed") {
		t.Fatalf("replace = %d %q %q", code, out, stderr)
	}
	if code, out, _ = runBroker(t, env, "policy", "history", "--limit", "1"); code != 0 || !strings.Contains(out, " import") || !strings.Contains(out, `- #2 allow group:dev publisher "demo-*"`) {
		t.Fatalf("the replace's history entry: %q", out)
	}
	// Removing by filter says how many first, and needs that count.
	if code, _, stderr = runBroker(t, env, "policy", "rm", "--channel", "lob*"); code != 2 || !strings.Contains(stderr, "it selects 1") {
		t.Fatalf("rm by filter without --count = %d %q", code, stderr)
	}
	if code, out, stderr = runBroker(t, env, "policy", "rm", "--channel", "lob*", "--count", "1"); code != 0 || out != "removed 1 rules\n" {
		t.Fatalf("rm by filter with --count = %d %q %q", code, out, stderr)
	}
}

func TestPolicyCLI_ErrorsExitNonZeroWithAPreciseMessage(t *testing.T) {
	t.Parallel()
	db := map[string]string{"BROKER_DATABASE_URL": pgtest.New(t).URL}
	bad := filepath.Join(t.TempDir(), "bad.csv")
	if err := os.WriteFile(bad, []byte("subject,channel,role,effect,maxTtlSeconds\n*,lobby,subscriber,allow,\n*,a/b,subscriber,allow,\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		env      map[string]string
		args     []string
		code     int
		mentions string
	}{
		{"no action", db, []string{"policy"}, 2, "want an action"},
		{"unknown action", db, []string{"policy", "grant"}, 2, `unknown action "grant"`},
		{"unknown flag", db, []string{"policy", "list", "--colour"}, 2, "colour"},
		{"neither server nor database", nil, []string{"policy", "list"}, 2, "give --server URL"},
		{"bad channel", db, []string{"policy", "add", "--subject", "*", "--channel", "a/b", "--role", "subscriber"}, 1, "channel: character '/' at byte 1"},
		{"bad role", db, []string{"policy", "add", "--subject", "*", "--channel", "x", "--role", "host"}, 1, "role: must be"},
		{"bad ttl", db, []string{"policy", "add", "--subject", "*", "--channel", "x", "--role", "subscriber", "--max-ttl", "90000"}, 1, "maxTtlSeconds: must be"},
		{"rm without id", db, []string{"policy", "rm"}, 2, "give --id, or a filter"},
		{"rm unknown id", db, []string{"policy", "rm", "--id", "77"}, 1, "no policy rule has id 77"},
		{"explain without user", db, []string{"policy", "explain", "--subject", "group:dev", "--channel", "x", "--role", "publisher"}, 2, "user:<sub>"},
		{"import bad row", db, []string{"policy", "import", bad}, 1, "channel: line 3:"},
		{"import missing file", db, []string{"policy", "import", filepath.Join(t.TempDir(), "none.csv")}, 1, "no such file"},
		{"extra argument", db, []string{"policy", "list", "now"}, 2, `unexpected argument "now"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, stderr := runBroker(t, tt.env, tt.args...)
			if code != tt.code || !strings.Contains(stderr, tt.mentions) {
				t.Fatalf("exit %d, stderr %q; want %d mentioning %q", code, stderr, tt.code, tt.mentions)
			}
		})
	}
}

// emptyPolicyDB returns the URL of a migrated database without the RTM login
// rule migration 005 adds (and its history entry), so that rule ids start at
// the CLI's own first change.
func emptyPolicyDB(t *testing.T) string {
	t.Helper()
	db := pgtest.New(t)
	if _, err := db.Pool().Exec(context.Background(), "DELETE FROM policy_login_rule; DELETE FROM policy_history; ALTER SEQUENCE casbin_rule_id_seq RESTART"); err != nil {
		t.Fatal(err)
	}
	return db.URL
}

// TestPolicyTest_RunsTheExamplesOfflineAndNamesEachFailure: `broker policy
// test` decides examples/policy's expectations without a database, and a
// wrong expectation fails with its name and line.
func TestPolicyTest_RunsTheExamplesOfflineAndNamesEachFailure(t *testing.T) {
	t.Parallel()
	policyFile, testsFile := "../../examples/policy/policy.yaml", "../../examples/policy/tests.yaml"
	code, out, errOut := runBroker(t, map[string]string{}, "policy", "test", "-f", policyFile, "-t", testsFile)
	if code != 0 || out != "ok, 6 tests against 5 rules\n" || errOut != "" {
		t.Errorf("policy test on the examples = %d %q %q", code, out, errOut)
	}
	wrong := filepath.Join(t.TempDir(), "wrong.yaml")
	if err := os.WriteFile(wrong, []byte("version: 1\ntests:\n  - name: bob presents\n    subject: bob\n    channel: demo-1\n    role: publisher\n    expect: allow\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, _ = runBroker(t, map[string]string{}, "policy", "test", "-f", policyFile, "-t", wrong)
	want := "FAIL bob presents (" + wrong + ":3): expected allow, got deny (no rule allows user:bob to be publisher on \"demo-1\")\nFAILED: 1 of 1 tests\n"
	if code != 1 || out != want {
		t.Errorf("policy test with a wrong expectation = %d %q; want 1 %q", code, out, want)
	}
	if code, _, errOut := runBroker(t, map[string]string{}, "policy", "test", "-f", policyFile); code != 2 || !strings.Contains(errOut, "give -f") {
		t.Errorf("policy test without -t = %d %q; want a usage error", code, errOut)
	}
}
