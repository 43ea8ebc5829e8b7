package main

import (
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/broker-dev/broker/internal/auth/dextest"
	"github.com/broker-dev/broker/internal/client"
	"github.com/broker-dev/broker/internal/pg/pgtest"
	"github.com/broker-dev/broker/internal/policy"
)

// The admin's CLI end to end against a broker with Dex and Postgres: login
// with the device grant, policies through the API, a plan whose impact comes
// from decisions the broker recorded, an apply refused after a concurrent
// change (409) and accepted once planned again, the admin as the actor of
// the history, a refreshed login, test files, logout.
func TestLogin_DeviceGrantWithDexThenPolicyAsCodeOnPostgres(t *testing.T) {
	dex := dextest.Start(t, dextest.Options{})
	db := pgtest.NewCluster(t, pgtest.Options{}).New(t)
	addr := freeAddr(t)
	serveBroker(t, map[string]string{
		"BROKER_ADDR":             addr,
		"BROKER_DATABASE_URL":     db.URL,
		"BROKER_OIDC_ISSUER":      dex.Issuer(),
		"BROKER_OIDC_AUDIENCE":    dextest.ClientID + "," + dextest.CLIClientID,
		"BROKER_CLI_CLIENT_ID":    dextest.CLIClientID,
		"BROKER_APP_ID":           e2eAppID,
		"BROKER_APP_CERTIFICATE":  e2eAppCert,
		"BROKER_AUDIT_KEY":        e2eAuditKey,
		"BROKER_BOOTSTRAP_ADMINS": "group:" + dextest.GroupAdmins,
		"BROKER_RATE_LIMIT":       "0",
	})
	base := "http://" + addr
	dir := t.TempDir()
	env := map[string]string{"BROKER_CONFIG_DIR": dir, serverEnv: base}

	out := loginAs(t, env, base, func(prompt string) {
		m := regexp.MustCompile(`open (http://\S+/device) and enter the code (\S+)`).FindStringSubmatch(prompt)
		if m == nil {
			t.Fatalf("login did not offer the device grant:\n%s", prompt)
		}
		dex.ApproveDevice(t, m[2], dextest.AdminEmail, dextest.AdminPassword)
	})
	if !strings.Contains(out, "Logged in to "+base+" as user:"+dex.Subject(dextest.AdminUserID)+" ("+dextest.AdminEmail+")") {
		t.Fatalf("login said %q", out)
	}

	// A rule for the developers (BROKER_SERVER names the broker), then a
	// developer's grant: a decision in the log.
	mustCLI(t, env, "policy", "add", "--subject", "group:"+dextest.GroupDevelopers, "--channel", "team-*", "--role", "publisher")
	c := brokerClient{t: t, base: base}
	dev := dex.Token(t, dextest.DeveloperEmail, dextest.DeveloperPassword)
	code, _, me := c.call("GET", "/v1/me", dev, "")
	if code != 200 {
		t.Fatalf("/v1/me: %d %v", code, me)
	}
	uid := strconv.FormatFloat(me["uid"].(float64), 'f', 0, 64)
	if code, _, m := c.call("POST", "/v1/tokens", dev, `{"channel":"team-1","role":"publisher","uid":`+uid+`}`); code != 200 {
		t.Fatalf("the developer's token: %d %v", code, m)
	}
	if code, _, m := c.call("POST", "/v1/tokens", dev, `{"channel":"board-1","role":"publisher","uid":`+uid+`}`); code != 403 {
		t.Fatalf("the developer on board-1: %d %v, want 403", code, m)
	}

	// Policy as code: the rules in a file, the developers moved from team-*
	// to board-*. The plan names who loses and who gains, from the log.
	doc := mustCLI(t, env, "policy", "export", "-o", "yaml", "--project", "default")
	lines, err := policy.ReadDocument(strings.NewReader(doc))
	if err != nil {
		t.Fatalf("export: %v\n%s", err, doc)
	}
	var listed []policy.Rule
	if err := json.Unmarshal([]byte(mustCLI(t, env, "policy", "list", "-o", "json")), &listed); err != nil || len(listed) != len(lines) {
		t.Fatalf("policy list -o json: %v; %d rules, the export %d", err, len(listed), len(lines))
	}
	if out := mustCLI(t, env, "policy", "list", "--subject", "group:"+dextest.GroupDevelopers); !strings.Contains(out, `"team-*"`) {
		t.Fatalf("policy list --subject: %s", out)
	}
	var rules []policy.Rule
	for _, lr := range lines {
		if lr.Rule.Channel == "team-*" {
			lr.Rule.Channel = "board-*"
		}
		rules = append(rules, lr.Rule)
	}
	file := filepath.Join(t.TempDir(), "policy.yaml")
	writeDocument(t, file, rules)
	var plan planResult
	if err := json.Unmarshal([]byte(mustCLI(t, env, "policy", "plan", "-f", file, "-o", "json")), &plan); err != nil {
		t.Fatal(err)
	}
	devSubject := "user:" + dex.Subject(dextest.DeveloperUserID)
	if e := impactOf(plan.Impact.Lose, devSubject, "team-1", "publisher"); e.Decisions != 1 {
		t.Fatalf("plan: the developer should lose team-1 (1 decision): %+v", plan.Impact)
	}
	if e := impactOf(plan.Impact.Gain, devSubject, "board-1", "publisher"); e.Decisions != 1 {
		t.Fatalf("plan: the developer should gain board-1 (1 decision): %+v", plan.Impact)
	}
	if len(plan.Diff.Changed)+len(plan.Diff.Added)+len(plan.Diff.Removed) == 0 {
		t.Fatalf("plan diff is empty: %+v", plan.Diff)
	}

	// Another admin's change lands first: the apply is refused.
	mustCLI(t, env, "policy", "add", "--subject", "user:someone", "--channel", "lobby", "--role", "subscriber")
	_, err = cli(t, env, "policy", "apply", "-f", file, "--expected-version", itoa(plan.ExpectedVersion))
	var p *client.Problem
	if !errors.As(err, &p) || p.Status != http.StatusConflict {
		t.Fatalf("apply after a concurrent change: %v, want 409", err)
	}

	// The login's ID token has expired: the next command refreshes it.
	store, err := credentialStore(envFunc(env))
	if err != nil {
		t.Fatal(err)
	}
	s, _, err := store.Load(base)
	if err != nil || s.RefreshToken == "" {
		t.Fatalf("session %v: want a refresh token (offline_access)", err)
	}
	old := s.IDToken
	s.Expiry = time.Now().Add(-time.Minute)
	if err := store.Save(s); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(mustCLI(t, env, "policy", "plan", "-f", file, "-o", "json")), &plan); err != nil {
		t.Fatal(err)
	}
	if s, _, _ := store.Load(base); s.IDToken == old || time.Until(s.Expiry) < time.Minute {
		t.Fatal("the expired login was not refreshed")
	}
	if out := mustCLI(t, env, "policy", "apply", "-f", file, "--expected-version", itoa(plan.ExpectedVersion)); !strings.Contains(out, "applied to project default") {
		t.Fatalf("apply: %s", out)
	}
	if code, _, m := c.call("POST", "/v1/tokens", dev, `{"channel":"board-1","role":"publisher","uid":`+uid+`}`); code != 200 {
		t.Fatalf("after the apply, the developer on board-1: %d %v", code, m)
	}
	// The apply removed team-* and the rule added meanwhile (not in the
	// file) and added board-*: three entries by the admin, one apply id.
	var changes []policy.Change
	if err := json.Unmarshal([]byte(mustCLI(t, env, "policy", "history", "-o", "json", "--limit", "4")), &changes); err != nil || len(changes) != 4 {
		t.Fatalf("history: %v %v", err, changes)
	}
	for _, ch := range changes[:3] {
		if ch.Action != policy.ActionApply || ch.ApplyID == 0 || ch.ApplyID != changes[0].ApplyID || !strings.Contains(ch.Actor, dex.Subject(dextest.AdminUserID)) {
			t.Fatalf("history entry %+v: want an entry of the apply, by the admin", ch)
		}
	}
	if changes[3].ApplyID != 0 {
		t.Fatalf("the entry before the apply %+v has an apply id", changes[3])
	}
	if out := mustCLI(t, env, "policy", "history", "--limit", "2"); !strings.Contains(out, "apply "+itoa(changes[0].ApplyID)) {
		t.Fatalf("history table does not show the apply id:\n%s", out)
	}

	// Test files, offline: the example passes; a wrong expectation fails.
	examples := filepath.Join("..", "..", "examples", "policy")
	mustCLI(t, env, "policy", "test", "-f", filepath.Join(examples, "policy.yaml"), "-t", filepath.Join(examples, "tests.yaml"))
	wrong := filepath.Join(t.TempDir(), "tests.yaml")
	if err := os.WriteFile(wrong, []byte("version: 1\ntests:\n  - name: developers publish on board\n    subject: user:x\n    groups: [developers]\n    channel: board-1\n    role: publisher\n    expect: deny\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := cli(t, env, "policy", "test", "-f", file, "-t", wrong); !errors.Is(err, exitStatus(1)) || !strings.Contains(out, "FAIL developers publish on board") {
		t.Fatalf("a failing test file: %v\n%s", err, out)
	}

	// The auditor's commands through the API too.
	if out := mustCLI(t, env, "audit", "verify"); !strings.HasPrefix(out, "ok, ") {
		t.Fatalf("audit verify: %s", out)
	}
	export := mustCLI(t, env, "audit", "export", "--format", "jsonl", "--channel", "team-*")
	if n := strings.Count(export, "\n"); n != 1 || !strings.Contains(export, `"channel":"team-1"`) {
		t.Fatalf("audit export --channel team-*: %d records:\n%s", n, export)
	}
	if out := mustCLI(t, env, "audit", "tail", "-n", "2"); strings.Count(out, "\n") != 2 || !strings.Contains(out, "board-1") {
		t.Fatalf("audit tail -n 2:\n%s", out)
	}
	if out := mustCLI(t, env, "audit", "tail", "-n", "2", "-o", "csv"); strings.Count(out, "\n") != 3 || !strings.HasPrefix(out, "seq,time,") {
		t.Fatalf("audit tail -n 2 -o csv:\n%s", out)
	}
	var rep struct {
		OK      bool  `json:"ok"`
		Records int64 `json:"records"`
	}
	if err := json.Unmarshal([]byte(mustCLI(t, env, "audit", "verify", "-o", "json", "--full")), &rep); err != nil || !rep.OK || rep.Records < 3 {
		t.Fatalf("audit verify -o json --full: %v %+v", err, rep)
	}
	// This broker signs no checkpoints: prove says so, as the API does.
	if _, err := cli(t, env, "audit", "prove", "--seq", "1"); !errors.As(err, &p) || p.Status != http.StatusNotFound || !strings.Contains(p.Detail, "checkpoint") {
		t.Fatalf("audit prove --seq 1 without checkpoints: %v", err)
	}
	if _, err := cli(t, env, "audit", "acknowledge-rollback", "--reason", "x"); err == nil || !strings.Contains(err.Error(), "database only") {
		t.Fatalf("audit acknowledge-rollback through a broker: %v", err)
	}

	mustCLI(t, env, "logout")
	if _, err := cli(t, env, "policy", "list"); err == nil || !strings.Contains(err.Error(), "not logged in") {
		t.Fatalf("after logout: %v", err)
	}
}
