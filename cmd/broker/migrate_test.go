package main

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/broker-dev/broker/internal/pg"
	"github.com/broker-dev/broker/internal/pg/pgtest"
)

// TestMain gives this package's tests throwaway Postgres databases.
func TestMain(m *testing.M) { pgtest.Main(m) }

// runBroker runs the command line and returns its exit status and output.
func runBroker(t *testing.T, env map[string]string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := run(context.Background(), append([]string{"broker"}, args...), func(k string) string { return env[k] }, strings.NewReader(""), &out, &errOut)
	code = exitCode(err, &errOut)
	return code, out.String(), errOut.String()
}

func TestMigrate_ConcurrentUpAllSucceedAndApplyEachMigrationOnce(t *testing.T) {
	t.Parallel()
	db := pgtest.NewEmpty(t)
	all, err := pg.Migrations()
	if err != nil {
		t.Fatal(err)
	}

	const n = 3
	outs := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			code, stdout, stderr := runBroker(t, map[string]string{"BROKER_DATABASE_URL": db.URL}, "migrate", "up")
			if code != 0 {
				t.Errorf("migrate up #%d exited %d: %s", i, code, stderr)
			}
			outs[i] = stdout
		})
	}
	wg.Wait()

	applied := 0
	for _, out := range outs {
		var k, v int
		if _, err := fmt.Sscanf(out, "applied %d migration(s); schema at version %d", &k, &v); err == nil {
			applied += k
		} else if !strings.HasPrefix(out, "schema already at version") {
			t.Errorf("unexpected migrate up output %q", out)
		}
	}
	if applied != len(all) {
		t.Errorf("migrations applied across the three runs = %d, want %d\n%s", applied, len(all), strings.Join(outs, ""))
	}

	code, out, stderr := runBroker(t, map[string]string{"BROKER_DATABASE_URL": db.URL}, "migrate", "up")
	if code != 0 || !strings.HasPrefix(out, "schema already at version") {
		t.Errorf("repeated migrate up = %d %q %q, want 0 and nothing to apply", code, out, stderr)
	}

	code, out, stderr = runBroker(t, map[string]string{"BROKER_DATABASE_URL": db.URL}, "migrate", "status")
	if code != 0 {
		t.Fatalf("migrate status exited %d: %s", code, stderr)
	}
	var want strings.Builder
	for _, m := range all {
		fmt.Fprintf(&want, "applied  %s\n", m.Name)
	}
	if out != want.String() {
		t.Errorf("migrate status =\n%s\nwant\n%s", out, want.String())
	}
}

func TestMigrate_StatusListsPendingAndReadsURLFromEnvironment(t *testing.T) {
	t.Parallel()
	db := pgtest.NewEmpty(t)
	all, err := pg.Migrations()
	if err != nil {
		t.Fatal(err)
	}
	code, out, stderr := runBroker(t, map[string]string{"BROKER_DATABASE_URL": db.URL}, "migrate", "status")
	if code != 0 {
		t.Fatalf("migrate status exited %d: %s", code, stderr)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != len(all) {
		t.Fatalf("migrate status printed %d lines, want one per migration (%d):\n%s", len(lines), len(all), out)
	}
	for i, m := range all {
		if want := "pending  " + m.Name; lines[i] != want {
			t.Errorf("line %d = %q, want %q", i+1, lines[i], want)
		}
	}
}

func TestMigrate_FlagsMayPrecedeTheAction(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	code, out, stderr := runBroker(t, map[string]string{"BROKER_DATABASE_URL": db.URL}, "migrate", "up")
	if code != 0 || !strings.HasPrefix(out, "schema already at version") {
		t.Errorf("migrate --database-url URL up = %d %q %q", code, out, stderr)
	}
}

func TestMigrate_ErrorsExitNonZeroWithAPreciseMessage(t *testing.T) {
	t.Parallel()
	const password = "hunter2-not-for-logs"
	unreachable := "postgres://broker:" + password + "@127.0.0.1:1/broker?connect_timeout=2"
	tests := []struct {
		name     string
		env      map[string]string
		args     []string
		code     int
		mentions string
	}{
		{"no database URL", nil, []string{"migrate", "up"}, 1, "BROKER_DATABASE_URL"},
		{"not a postgres URL", map[string]string{"BROKER_DATABASE_URL": "mysql://x:" + password + "@db/b"}, []string{"migrate", "up"}, 1, "BROKER_DATABASE_URL"},
		{"unreachable database", map[string]string{"BROKER_DATABASE_URL": unreachable}, []string{"migrate", "status"}, 1, "cannot reach the database"},
		{"unreachable database on up", map[string]string{"BROKER_DATABASE_URL": unreachable}, []string{"migrate", "up"}, 1, "cannot reach the database"},
		{"no action", nil, []string{"migrate"}, 2, "want up or status"},
		{"no action", map[string]string{"BROKER_DATABASE_URL": unreachable}, []string{"migrate"}, 2, "want up or status"},
		{"unknown action", nil, []string{"migrate", "down"}, 2, `unknown action "down": want up or status`},
		{"extra argument", map[string]string{"BROKER_DATABASE_URL": unreachable}, []string{"migrate", "up", "now"}, 2, `unexpected argument "now"`},
		{"unknown flag", nil, []string{"migrate", "up", "--force"}, 2, "force"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, stderr := runBroker(t, tt.env, tt.args...)
			if code != tt.code {
				t.Errorf("exit status = %d, want %d (stderr %q)", code, tt.code, stderr)
			}
			if !strings.Contains(stderr, tt.mentions) {
				t.Errorf("stderr %q does not mention %q", stderr, tt.mentions)
			}
			if strings.Contains(stderr+out, password) {
				t.Errorf("output leaks the database password: %q", stderr+out)
			}
		})
	}
}

// TestHelp_GoesToStdoutAndListsTheFlags: every command's -h, and `broker
// help CMD`, print the usage and the command's flags to stdout and exit 0.
func TestHelp_GoesToStdoutAndListsTheFlags(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args  []string
		usage string
		flags []string
	}{
		{[]string{"migrate", "-h"}, "usage: broker migrate up|status", []string{"-database-url"}},
		{[]string{"help", "migrate"}, "usage: broker migrate up|status", []string{"-database-url"}},
		{[]string{"policy", "-h"}, "usage: broker policy <action>", []string{"-subject", "-channel", "-database-url"}},
		{[]string{"help", "policy"}, "usage: broker policy <action>", []string{"-subject", "-database-url"}},
		{[]string{"audit", "-h"}, "usage: broker audit verify|export|tail", []string{"broker audit <action> -h"}},
		{[]string{"audit", "export", "-h"}, "usage: broker audit verify|export|tail", []string{"-subject", "-format", "-database-url"}},
		{[]string{"serve", "-h"}, "broker serve", []string{"-database-url", "-oidc-issuer"}},
		{[]string{"dev", "-h"}, "broker dev", []string{"-addr"}},
		{[]string{"token", "inspect", "-h"}, "usage: broker token inspect", []string{"-app-cert"}},
		{[]string{"help"}, "usage: broker <command>", []string{"version"}},
	} {
		code, stdout, stderr := runBroker(t, nil, tc.args...)
		if code != 0 || !strings.Contains(stdout, tc.usage) || stderr != "" {
			t.Errorf("broker %v = %d, stdout %q, stderr %q", tc.args, code, stdout, stderr)
			continue
		}
		for _, f := range tc.flags {
			if !strings.Contains(stdout, f) {
				t.Errorf("broker %v does not list %s:\n%s", tc.args, f, stdout)
			}
		}
	}
}

func TestVersion_FromTheBuildInfo(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"version"}, {"--version"}} {
		code, stdout, _ := runBroker(t, nil, args...)
		if code != 0 || !strings.HasPrefix(stdout, "broker ") || !strings.Contains(stdout, "revision") || !strings.Contains(stdout, "go1.") {
			t.Errorf("broker %v = %d %q", args, code, stdout)
		}
	}
}
