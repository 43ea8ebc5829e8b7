package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/broker-dev/broker/internal/client"
	"github.com/broker-dev/broker/internal/policy"
)

// cli runs one broker command line with env and returns its stdout and
// error.
func cli(t *testing.T, env map[string]string, args ...string) (string, error) {
	t.Helper()
	var out, errOut syncBuffer
	err := run(context.Background(), append([]string{"broker"}, args...), envFunc(env), strings.NewReader(""), &out, &errOut)
	return out.String(), err
}

// mustCLI is cli that fails the test on an error.
func mustCLI(t *testing.T, env map[string]string, args ...string) string {
	t.Helper()
	out, err := cli(t, env, args...)
	if err != nil {
		t.Fatalf("broker %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// loginAs runs `broker login` and, as the person at the browser, finishes
// the login with act, given what login printed; it returns login's output.
func loginAs(t *testing.T, env map[string]string, server string, act func(prompt string)) string {
	t.Helper()
	var out, prompt syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(context.Background(), []string{"broker", "login", "--server", server, "--timeout", "2m"}, envFunc(env), strings.NewReader(""), &out, &prompt)
	}()
	waitFor(t, "login to ask for the person", 20*time.Second, func() bool {
		select {
		case err := <-done:
			t.Fatalf("login ended before the person acted: %v\n%s", err, prompt.String())
		default:
		}
		return strings.Contains(prompt.String(), "Waiting for you to log in")
	})
	act(prompt.String())
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("login: %v\n%s", err, prompt.String())
		}
	case <-time.After(time.Minute):
		t.Fatalf("login did not end after the person logged in:\n%s", prompt.String())
	}
	return out.String()
}

// The CLI against `broker dev`: its issuer has no device grant, so `broker
// login` takes the code flow with PKCE on a loopback redirect; then the
// policy commands work through the API as the logged-in user, plan with
// an impact from the log's recorded decisions, apply only at the planned
// version, and logout forgets the login.
func TestLogin_CodeFlowThenPolicyAsCodeAgainstBrokerDev(t *testing.T) {
	banner := startDev(t, nil)
	base := regexp.MustCompile(`http://127\.0\.0\.1:\d+`).FindString(banner)
	dir := filepath.Join(t.TempDir(), "config")
	env := map[string]string{"BROKER_CONFIG_DIR": dir}

	// bob publishes on demo-1: a granted decision a plan can turn around.
	bob := strings.TrimSpace(httpGet(t, base+devIssuer+"/token?user=bob", ""))
	if got := httpGet(t, base+"/rtc/demo-1/publisher/userAccount/bob", bob); !strings.Contains(got, "rtcToken") {
		t.Fatalf("bob's token on demo-1: %s", got)
	}

	if _, err := cli(t, env, "policy", "list", "--server", base); err == nil || !strings.Contains(err.Error(), "broker login --server "+base) {
		t.Fatalf("policy list before login: %v, want a pointer to broker login", err)
	}
	out := loginAs(t, env, base, func(prompt string) {
		authURL := regexp.MustCompile(`http://\S+/auth\?\S+`).FindString(prompt)
		if authURL == "" {
			t.Fatalf("login printed no authorization URL:\n%s", prompt)
		}
		u, err := url.Parse(authURL)
		if err != nil {
			t.Fatal(err)
		}
		if q := u.Query(); q.Get("code_challenge_method") != "S256" || q.Get("nonce") == "" || !strings.HasPrefix(q.Get("redirect_uri"), "http://127.0.0.1:") {
			t.Fatalf("authorization request %s: want PKCE S256, a nonce and a loopback redirect", authURL)
		}
		// The person picks alice on the sign-in page; the browser follows
		// the redirect to the CLI's loopback port.
		form := u.Query()
		form.Set("user", "alice")
		u.RawQuery = ""
		resp, err := http.PostForm(u.String(), form)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), "You are logged in") {
			t.Fatalf("the browser ended at %s %d: %s", resp.Request.URL, resp.StatusCode, body)
		}
	})
	if want := "Logged in to " + base + " as user:alice (alice@example.com)."; !strings.Contains(out, want) {
		t.Fatalf("login said %q, want %q", out, want)
	}
	info, err := os.Stat(filepath.Join(dir, "credentials.json"))
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("credentials file: %v, mode %v; want 0600", err, info.Mode())
	}

	// list through the API, as JSON.
	var rules []policy.Rule
	if err := json.Unmarshal([]byte(mustCLI(t, env, "policy", "list", "--server", base, "-o", "json")), &rules); err != nil || len(rules) == 0 {
		t.Fatalf("policy list -o json: %v, %d rules", err, len(rules))
	}

	// Policy as code: export, drop the rule that lets developers publish
	// on demo-*, plan.
	file := filepath.Join(t.TempDir(), "policy.yaml")
	doc := mustCLI(t, env, "policy", "export", "--server", base, "-o", "yaml", "--project", "default")
	lines, err := policy.ReadDocument(strings.NewReader(doc))
	if err != nil {
		t.Fatalf("export -o yaml is not a policy document: %v\n%s", err, doc)
	}
	var kept []policy.Rule
	for _, lr := range lines {
		if lr.Rule.Channel != "demo-*" || lr.Rule.Effect != policy.Allow {
			kept = append(kept, lr.Rule)
		}
	}
	writeDocument(t, file, kept)
	var plan planResult
	if err := json.Unmarshal([]byte(mustCLI(t, env, "policy", "plan", "--server", base, "-f", file, "-o", "json")), &plan); err != nil {
		t.Fatal(err)
	}
	if len(plan.Diff.Removed) != 1 || plan.Diff.Removed[0].Channel != "demo-*" || len(plan.Diff.Added) != 0 {
		t.Fatalf("plan diff %+v: want the demo-* rule removed, nothing added", plan.Diff)
	}
	if i := impactOf(plan.Impact.Lose, "user:bob", "demo-1", "publisher"); i.Decisions < 1 {
		t.Fatalf("plan impact %+v: want bob losing publisher on demo-1", plan.Impact)
	}
	table := mustCLI(t, env, "policy", "plan", "--server", base, "-f", file)
	for _, want := range []string{"- ", "demo-*", "would LOSE access", "user:bob", "--expected-version " + itoa(plan.ExpectedVersion)} {
		if !strings.Contains(table, want) {
			t.Fatalf("plan table lacks %q:\n%s", want, table)
		}
	}

	// A change lands between plan and apply: the apply is refused.
	mustCLI(t, env, "policy", "add", "--server", base, "--subject", "user:dave", "--channel", "lobby-2", "--role", "subscriber")
	_, err = cli(t, env, "policy", "apply", "--server", base, "-f", file, "--expected-version", itoa(plan.ExpectedVersion))
	var p *client.Problem
	if !errors.As(err, &p) || p.Status != http.StatusConflict {
		t.Fatalf("apply after a concurrent change: %v, want the broker's 409", err)
	}
	// Planned again, it applies.
	if err := json.Unmarshal([]byte(mustCLI(t, env, "policy", "plan", "--server", base, "-f", file, "-o", "json")), &plan); err != nil {
		t.Fatal(err)
	}
	if out := mustCLI(t, env, "policy", "apply", "--server", base, "-f", file, "--expected-version", itoa(plan.ExpectedVersion)); !strings.Contains(out, "applied to project default") {
		t.Fatalf("apply: %s", out)
	}
	var who policy.Holders
	if err := json.Unmarshal([]byte(mustCLI(t, env, "policy", "who", "--server", base, "--channel", "demo-1", "--role", "publisher", "-o", "json")), &who); err != nil {
		t.Fatal(err)
	}
	for _, rc := range who.Allowed {
		if rc.Rule.Channel == "demo-*" {
			t.Fatalf("who still lists %s after the apply", rc.Rule)
		}
	}
	var changes []policy.Change
	if err := json.Unmarshal([]byte(mustCLI(t, env, "policy", "history", "--server", base, "-o", "json", "--limit", "5")), &changes); err != nil || len(changes) == 0 {
		t.Fatalf("history: %v", err)
	}
	if !strings.Contains(changes[0].Actor, "alice") {
		t.Fatalf("the apply is recorded as made by %q, want alice", changes[0].Actor)
	}

	if out := mustCLI(t, env, "logout", "--server", base); !strings.Contains(out, "Logged out") {
		t.Fatalf("logout: %s", out)
	}
	if _, err := cli(t, env, "policy", "list", "--server", base); err == nil || !strings.Contains(err.Error(), "not logged in") {
		t.Fatalf("policy list after logout: %v", err)
	}
}

func TestPolicy_ServerAndDatabaseAreExclusive(t *testing.T) {
	env := map[string]string{"BROKER_CONFIG_DIR": t.TempDir()}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"policy", "list"}, "give --server URL"},
		{[]string{"policy", "list", "--server", "http://127.0.0.1:1", "--database-url", "postgres://x"}, "not defined: -database-url"},
		{[]string{"policy", "list", "--server", "http://broker.example.com"}, "use https"},
		{[]string{"policy", "list", "--server", "https://broker.example.com", "--actor", "me"}, "--actor is for BROKER_DATABASE_URL"},
		{[]string{"policy", "list", "-o", "xml", "--server", "https://broker.example.com"}, `-o "xml"`},
		{[]string{"policy", "apply", "--server", "https://broker.example.com", "-f", "x.yaml"}, "--expected-version"},
		{[]string{"login"}, "give --server"},
	} {
		_, err := cli(t, env, tc.args...)
		var ue usageError
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("broker %s: %v, want a usage error saying %q", strings.Join(tc.args, " "), err, tc.want)
		}
	}
}

func impactOf(list []impactEntry, subject, channel, role string) impactEntry {
	for _, e := range list {
		if e.Subject == subject && e.Channel == channel && e.Role == role {
			return e
		}
	}
	return impactEntry{}
}

func writeDocument(t *testing.T, path string, rules []policy.Rule) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := policy.WriteDocument(f, rules); err != nil {
		t.Fatal(err)
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
