package main

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/broker-dev/broker/internal/auth/dextest"
	"github.com/broker-dev/broker/internal/pg/pgtest"
	"github.com/broker-dev/broker/internal/token"
)

const (
	e2eAppID    = "0123456789abcdef0123456789abcdef"
	e2eAppCert  = "fedcba9876543210fedcba9876543210"
	e2eAuditKey = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// brokerClient calls the running broker.
type brokerClient struct {
	t    *testing.T
	base string
}

// requireConsoleLoginAt checks that the console sends a browser without a
// session to sign in at issuer.
func (c brokerClient) requireConsoleLoginAt(issuer string) {
	c.t.Helper()
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noFollow.Get(c.base + "/console/")
	if err != nil {
		c.t.Fatal(err)
	}
	resp.Body.Close()
	if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusFound || !strings.HasPrefix(loc, issuer) {
		c.t.Fatalf("console without a session: %d to %q, want a redirect to %s", resp.StatusCode, loc, issuer)
	}
}

func (c brokerClient) call(method, path, bearer, body string) (int, http.Header, map[string]any) {
	c.t.Helper()
	req, err := http.NewRequest(method, c.base+path, strings.NewReader(body))
	if err != nil {
		c.t.Fatal(err)
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var m map[string]any
	_ = json.Unmarshal(raw, &m)
	return resp.StatusCode, resp.Header, m
}

// serveBroker runs `broker serve` with env (BROKER_ADDR set) until the test
// ends or stop is called, and returns once /readyz answers 200. stop waits
// for the broker to exit, which flushes what it buffers (spans, records).
func serveBroker(t *testing.T, env map[string]string) (logs *syncBuffer, stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	logs = &syncBuffer{}
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"broker", "serve"}, envFunc(env), strings.NewReader(""), io.Discard, logs)
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				t.Error("broker did not stop")
			}
		})
	}
	t.Cleanup(stop)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the broker's log:\n%s", logs.String())
		}
	})
	waitFor(t, "/readyz", 30*time.Second, func() bool {
		select {
		case err := <-done:
			done <- err // for stop
			t.Fatalf("broker serve ended before it was ready: %v", err)
		default:
		}
		resp, err := http.Get("http://" + env["BROKER_ADDR"] + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	return logs, stop
}

// waitFor polls until ok returns true or the deadline passes.
func waitFor(t *testing.T, what string, d time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestServe_EndToEnd_DexPostgresPolicyLogOutageAndTampering(t *testing.T) {
	dex := dextest.Start(t, dextest.Options{})
	cluster := pgtest.NewCluster(t, pgtest.Options{})
	db := cluster.New(t)
	addr := freeAddr(t)
	env := map[string]string{
		"BROKER_ADDR":             addr,
		"BROKER_DATABASE_URL":     db.URL,
		"BROKER_OIDC_ISSUER":      dex.Issuer(),
		"BROKER_OIDC_AUDIENCE":    dextest.ClientID,
		"BROKER_APP_ID":           e2eAppID,
		"BROKER_APP_CERTIFICATE":  e2eAppCert,
		"BROKER_AUDIT_KEY":        e2eAuditKey,
		"BROKER_BOOTSTRAP_ADMINS": "group:" + dextest.GroupAdmins,
		"BROKER_RATE_LIMIT":       "0",
		// The console logs in through Dex as the same client the apps use.
		"BROKER_CONSOLE_CLIENT_ID":     dextest.ClientID,
		"BROKER_CONSOLE_CLIENT_SECRET": dextest.ClientSecret,
		"BROKER_CONSOLE_REDIRECT_URL":  "http://" + addr + "/console/callback",
	}
	logs, _ := serveBroker(t, env)
	c := brokerClient{t: t, base: "http://" + addr}

	c.requireConsoleLoginAt(dex.Issuer())

	admin := dex.Token(t, dextest.AdminEmail, dextest.AdminPassword)
	dev := dex.Token(t, dextest.DeveloperEmail, dextest.DeveloperPassword)

	if code, _, m := c.call("POST", "/v1/policies", dev, `{"subject":"*","channel":"*","role":"publisher","effect":"allow"}`); code != 403 {
		t.Fatalf("a developer changed policy: %d %v", code, m)
	}
	if code, _, m := c.call("POST", "/v1/policies", admin,
		`{"subject":"group:`+dextest.GroupDevelopers+`","channel":"team-*","role":"publisher","effect":"allow","maxTtlSeconds":900}`); code != 201 {
		t.Fatalf("admin add rule: %d %v", code, m)
	}

	code, _, me := c.call("GET", "/v1/me", dev, "")
	if code != 200 || me["uid"] == nil {
		t.Fatalf("/v1/me: %d %v", code, me)
	}
	uid := strconv.FormatFloat(me["uid"].(float64), 'f', 0, 64)

	// Own uid: a token that verifies and is bound to that uid.
	code, _, got := c.call("GET", "/rtc/team-red/publisher/uid/"+uid+"/?expiry=3600", dev, "")
	if code != 200 {
		t.Fatalf("own uid: %d %v", code, got)
	}
	rtc := got["rtcToken"].(string)
	parsed, err := token.Parse(rtc)
	if err != nil || !parsed.Verify(e2eAppCert) {
		t.Fatalf("token does not verify: %v", err)
	}
	if s := parsed.Services[0]; s.Channel != "team-red" || s.UID != uid || parsed.Expire != 900 {
		t.Fatalf("token bound to %q uid %q expire %d; want team-red, %s, 900 (the rule's cap)", s.Channel, s.UID, parsed.Expire, uid)
	}

	// Another uid, and a channel no rule allows: 403, and a record each.
	if code, _, m := c.call("GET", "/rtc/team-red/publisher/uid/42", dev, ""); code != 403 || m["rtcToken"] != nil {
		t.Fatalf("other uid: %d %v", code, m)
	}
	if code, _, m := c.call("GET", "/rtc/secret/publisher/uid/"+uid, dev, ""); code != 403 || m["rtcToken"] != nil {
		t.Fatalf("no rule: %d %v", code, m)
	}
	code, _, page := c.call("GET", "/v1/audit?subject="+dex.Subject(dextest.DeveloperUserID), admin, "")
	if code != 200 {
		t.Fatalf("audit search: %d %v", code, page)
	}
	recs := page["records"].([]any)
	decisions := []string{}
	for _, r := range recs {
		decisions = append(decisions, r.(map[string]any)["decision"].(string))
	}
	if strings.Join(decisions, ",") != "denied,denied,granted" {
		t.Fatalf("records (newest first) %v, want denied,denied,granted", decisions)
	}
	for _, r := range recs {
		if r := r.(map[string]any); r["project"] != "default" || r["app_id"] != e2eAppID {
			t.Errorf("record %v: project %v, app id %v; want default and the App ID", r["seq"], r["project"], r["app_id"])
		}
	}
	if code, _, page := c.call("GET", "/v1/audit?project=staging", admin, ""); code != 200 || len(page["records"].([]any)) != 0 {
		t.Errorf("records of a project that issued nothing: %d %v", code, page)
	}

	// Postgres down: 503 with Retry-After and no token; back up: tokens flow
	// again without restarting the broker.
	cluster.Stop(t)
	code, hdr, m := c.call("GET", "/rtc/team-red/publisher/uid/"+uid, dev, "")
	if code != 503 || hdr.Get("Retry-After") == "" || m["rtcToken"] != nil {
		t.Fatalf("Postgres stopped: %d Retry-After %q body %v; want 503, Retry-After, no token", code, hdr.Get("Retry-After"), m)
	}
	cluster.Start(t)
	waitFor(t, "tokens after Postgres restart", 30*time.Second, func() bool {
		code, _, _ := c.call("GET", "/rtc/team-red/publisher/uid/"+uid, dev, "")
		return code == 200
	})

	// The chain is intact (the auditor's own connections, apart from the
	// token path's, may need a retry after the restart); then an edited and
	// a deleted record are caught.
	waitFor(t, "verify after Postgres restart", 30*time.Second, func() bool {
		code, _, rep := c.call("GET", "/v1/audit/verify", admin, "")
		if code == 200 && rep["ok"] != true {
			t.Fatalf("verify before tampering: %v", rep)
		}
		return code == 200
	})
	pool := db.Pool()
	if _, err := pool.Exec(context.Background(), `WITH v AS (INSERT INTO issuance_log_value (kind, value) VALUES (6, 'team-blue') ON CONFLICT (kind, issuance_log_value_key(value)) DO UPDATE SET kind = EXCLUDED.kind RETURNING id) UPDATE issuance_log_record SET channel = (SELECT id FROM v) WHERE seq = 2`); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(context.Background(), `DELETE FROM issuance_log_record WHERE seq = 3`); err != nil {
		t.Fatal(err)
	}
	code, _, rep := c.call("GET", "/v1/audit/verify", admin, "")
	if code != 200 || rep["ok"] != false {
		t.Fatalf("verify after tampering: %d %v", code, rep)
	}
	kinds := map[string]float64{}
	for _, p := range rep["problems"].([]any) {
		pm := p.(map[string]any)
		kinds[pm["kind"].(string)] = pm["seq"].(float64)
	}
	if kinds["modified"] != 2 || kinds["deleted"] != 3 {
		t.Fatalf("problems %v; want seq 2 modified and seq 3 deleted", rep["problems"])
	}
	codeCLI, out, errOut := runBroker(t, map[string]string{"BROKER_DATABASE_URL": db.URL, "BROKER_AUDIT_KEY": e2eAuditKey}, "audit", "verify")
	if codeCLI != 1 || !strings.Contains(out+errOut, "modified") {
		t.Fatalf("broker audit verify: exit %d, %q %q", codeCLI, out, errOut)
	}

	// Metrics cover decisions, latency, the log's batches, policy reloads and key refreshes.
	resp, err := http.Get(c.base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, name := range []string{`broker_decisions_total{outcome="granted",role="publisher",route="/rtc/{channel}/{role}/{tokentype}/{uid}"}`,
		`broker_decisions_total{outcome="denied"`, "broker_http_request_duration_seconds_bucket", "broker_audit_batch_size_bucket",
		"broker_audit_commit_seconds_bucket", `broker_policy_reloads_total{result="ok"}`, "broker_oidc_key_refreshes_total", "broker_auth_rejections_total"} {
		if !strings.Contains(string(metrics), name) {
			t.Errorf("/metrics lacks %s", name)
		}
	}

	// Nothing secret reached the logs.
	all := logs.String()
	for name, secret := range map[string]string{"ID token": dev, "admin ID token": admin, "RTC token": rtc, "app certificate": e2eAppCert, "audit key": e2eAuditKey, "client secret": dextest.ClientSecret} {
		if strings.Contains(all, secret) {
			t.Fatalf("the %s appears in the broker's logs", name)
		}
	}
}
