package main

import (
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/broker-dev/broker/internal/auth/dextest"
	"github.com/broker-dev/broker/internal/pg/pgtest"
)

// Two Agora projects. alpha's users come from both providers, beta's from
// the partner only; beta's App certificate is rotated.
const (
	alphaAppID = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa1"
	alphaCert  = "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1"
	betaAppID  = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb2"
	betaCert1  = "b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1"
	betaCert2  = "b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2"
)

// projectsConfig is the multi-tenant file, with beta's certificates as given.
func projectsConfig(addr, home, partner string, betaCerts ...string) string {
	return `addr: "` + addr + `"
bootstrapAdmins: group:` + dextest.GroupAdmins + `
rateLimit: 0
issuers:
  - issuer: ` + home + `
    audiences: [` + dextest.ClientID + `]
  - name: partner
    issuer: ` + partner + `
    audiences: [` + dextest.ClientID + `]
projects:
  - name: alpha
    appID: ` + alphaAppID + `
    certificates: [` + alphaCert + `]
  - name: beta
    appID: ` + betaAppID + `
    certificates: [` + strings.Join(betaCerts, ", ") + `]
    issuers: [partner]
    maxTTL: 3s
`
}

// rawCall is client.call for a body that is not JSON (CSV).
func (c brokerClient) rawCall(method, path, bearer, body string) (int, string) {
	c.t.Helper()
	req, err := http.NewRequest(method, c.base+path, strings.NewReader(body))
	if err != nil {
		c.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+bearer)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(raw)
}

// TestServe_TwoProvidersTwoProjectsAndAProjectAdmin: tokens per project with
// the project's App ID and certificate, identity providers limited to their
// projects, and an admin of one project who can neither see nor change the
// other's rules and records; then beta's certificate is rotated (add the new
// one first, then drop the old one once its tokens have expired), each token
// checked with broker token inspect against the project's certificates.
func TestServe_TwoProvidersTwoProjectsAndAProjectAdmin(t *testing.T) {
	home := dextest.Start(t, dextest.Options{})
	partner := dextest.Start(t, dextest.Options{})
	db := pgtest.NewCluster(t, pgtest.Options{}).New(t)
	addr := freeAddr(t)
	path := writeConfig(t, projectsConfig(addr, home.Issuer(), partner.Issuer(), betaCert1))
	env := map[string]string{"BROKER_ADDR": addr, configFileEnv: path, "BROKER_DATABASE_URL": db.URL, "BROKER_AUDIT_KEY": e2eAuditKey}
	_, stop := serveBroker(t, env)
	c := brokerClient{t: t, base: "http://" + addr}

	root := home.Token(t, dextest.AdminEmail, dextest.AdminPassword) // a bootstrap (global) admin
	homeDev := home.Token(t, dextest.DeveloperEmail, dextest.DeveloperPassword)
	betaAdmin := partner.Token(t, dextest.AdminEmail, dextest.AdminPassword)
	partnerDev := partner.Token(t, dextest.DeveloperEmail, dextest.DeveloperPassword)
	partnerAdmins, partnerDevs := "group:partner/"+dextest.GroupAdmins, "group:partner/"+dextest.GroupDevelopers

	mustAdd := func(body string) int64 {
		t.Helper()
		code, _, m := c.call("POST", "/v1/policies", root, body)
		if code != 201 {
			t.Fatalf("add %s: %d %v", body, code, m)
		}
		return int64(m["id"].(float64))
	}
	alphaRule := mustAdd(`{"subject":"group:` + dextest.GroupDevelopers + `","channel":"alpha-*","role":"publisher","effect":"allow","project":"alpha"}`)
	mustAdd(`{"subject":"` + partnerDevs + `","channel":"beta-*","role":"publisher","effect":"allow","project":"beta"}`)
	for _, right := range []string{`"api:policies","role":"read"`, `"api:policies","role":"write"`, `"api:audit","role":"read"`} {
		mustAdd(`{"subject":"` + partnerAdmins + `","channel":` + right + `,"effect":"allow","project":"beta"}`)
	}

	// /v1/me names the projects one's provider may use.
	if _, _, me := c.call("GET", "/v1/me", homeDev, ""); jsonText(me["projects"]) != `["alpha"]` {
		t.Errorf("home developer's projects: %v, want [alpha]", me["projects"])
	}
	uid := func(bearer string) string {
		_, _, me := c.call("GET", "/v1/me", bearer, "")
		return strconv.FormatFloat(me["uid"].(float64), 'f', 0, 64)
	}
	homeUID, partnerUID := uid(homeDev), uid(partnerDev)

	// Without a project: the only one the provider may use, or 400 naming them.
	code, _, m := c.call("GET", "/rtc/alpha-1/publisher/uid/"+homeUID+"/", homeDev, "")
	if code != 200 || m["project"] != "alpha" || m["appId"] != alphaAppID {
		t.Fatalf("home developer without a project: %d %v", code, m)
	}
	code, _, m = c.call("POST", "/v1/tokens", partnerDev, `{"channel":"beta-1","role":"publisher","uid":`+partnerUID+`}`)
	if code != 400 || !strings.Contains(jsonText(m["detail"]), "alpha, beta") {
		t.Fatalf("partner developer without a project: %d %v; want 400 naming alpha and beta", code, m)
	}
	// A project the provider may not use.
	if code, _, m := c.call("GET", "/p/beta/rtc/beta-1/publisher/uid/"+homeUID+"/", homeDev, ""); code != 400 || strings.Contains(jsonText(m), "beta, ") {
		t.Errorf("home developer in beta: %d %v; want 400", code, m)
	}
	// Each project's rules decide its tokens.
	if code, _, m := c.call("GET", "/p/alpha/rtc/beta-1/publisher/uid/"+partnerUID+"/", partnerDev, ""); code != 403 {
		t.Errorf("partner developer on beta-1 in alpha: %d %v; want 403", code, m)
	}
	code, _, m = c.call("POST", "/p/beta/v1/tokens", partnerDev, `{"channel":"beta-1","role":"publisher","uid":`+partnerUID+`}`)
	if code != 200 || m["appId"] != betaAppID || m["project"] != "beta" {
		t.Fatalf("partner developer in beta: %d %v", code, m)
	}
	betaToken1 := m["rtcToken"].(string)
	if code, _, m := c.call("POST", "/p/alpha/v1/tokens", partnerDev, `{"project":"beta","channel":"beta-1","role":"publisher","uid":`+partnerUID+`}`); code != 400 {
		t.Errorf("a path and a body naming two projects: %d %v; want 400", code, m)
	}

	// A token URL carries its project.
	code, _, m = c.call("POST", "/v1/token-urls", partnerDev, `{"project":"beta"}`)
	if code != 201 || m["project"] != "beta" {
		t.Fatalf("token URL for beta: %d %v", code, m)
	}
	tokenURL := strings.TrimPrefix(m["tokenUrl"].(string), c.base)
	if code, _, m := c.call("GET", tokenURL+"/rtc/beta-2/publisher/uid/"+partnerUID+"/", "", ""); code != 200 || m["appId"] != betaAppID {
		t.Errorf("through beta's token URL: %d %v", code, m)
	}
	if code, _, m := c.call("GET", tokenURL+"/p/alpha/rtc/beta-2/publisher/uid/"+partnerUID+"/", "", ""); code != 400 {
		t.Errorf("beta's token URL asking for alpha: %d %v; want 400", code, m)
	}

	// beta's admin sees and changes beta only; alpha's rules and records
	// are 403 (or not found), with nothing of them in the body.
	code, body := c.rawCall("GET", "/v1/policies", betaAdmin, "")
	if code != 200 || strings.Contains(body, "alpha") || !strings.Contains(body, "beta-*") {
		t.Errorf("beta's admin lists rules: %d %s", code, body)
	}
	forbidden := func(method, path, body string) {
		t.Helper()
		code, raw := c.rawCall(method, path, betaAdmin, body)
		if code != 403 || strings.Contains(raw, "alpha-*") || strings.Contains(raw, "alpha-1") {
			t.Errorf("beta's admin: %s %s = %d %s; want 403 and none of alpha's data", method, path, code, raw)
		}
	}
	forbidden("GET", "/v1/policies?project=alpha", "")
	forbidden("GET", "/v1/policies/export?project=alpha", "")
	forbidden("GET", "/v1/policies/history?project=alpha", "")
	forbidden("POST", "/v1/policies", `{"subject":"*","channel":"x","role":"subscriber","effect":"allow","project":"alpha"}`)
	forbidden("POST", "/v1/policies/explain", `{"subject":"user:x","channel":"alpha-1","role":"publisher","project":"alpha"}`)
	forbidden("POST", "/v1/policies/import", "subject,channel,role,effect,maxTtlSeconds,project\n*,x,subscriber,allow,,alpha\n")
	forbidden("GET", "/v1/audit?project=alpha", "")
	forbidden("GET", "/v1/audit/export?project=alpha", "")
	forbidden("GET", "/v1/audit/verify", "")
	if code, raw := c.rawCall("DELETE", "/v1/policies/"+strconv.FormatInt(alphaRule, 10), betaAdmin, ""); code != 404 || strings.Contains(raw, "alpha") {
		t.Errorf("beta's admin deletes alpha's rule: %d %s; want 404", code, raw)
	}
	if code, raw := c.rawCall("GET", "/v1/policies/export", betaAdmin, ""); code != 200 || strings.Contains(raw, ",alpha") || !strings.Contains(raw, ",beta") {
		t.Errorf("beta's admin exports: %d %s", code, raw)
	}
	if code, raw := c.rawCall("GET", "/v1/policies/history", betaAdmin, ""); code != 200 || strings.Contains(raw, "alpha-*") {
		t.Errorf("beta's history: %d %s", code, raw)
	}
	if code, raw := c.rawCall("GET", "/v1/audit", betaAdmin, ""); code != 200 || strings.Contains(raw, `"project":"alpha"`) || !strings.Contains(raw, `"project":"beta"`) {
		t.Errorf("beta's admin searches the log: %d %s", code, raw)
	}
	if code, _, m := c.call("POST", "/v1/policies", betaAdmin, `{"subject":"`+partnerDevs+`","channel":"beta-live","role":"subscriber","effect":"allow","project":"beta"}`); code != 201 {
		t.Errorf("beta's admin adds a beta rule: %d %v", code, m)
	}
	if code, raw := c.rawCall("GET", "/v1/audit?project=alpha", root, ""); code != 200 || !strings.Contains(raw, alphaAppID) {
		t.Errorf("a global auditor reads alpha's records: %d %s", code, raw)
	}

	// The token verifies with beta's certificate only.
	inspect := func(tok, project string) (int, map[string]any) {
		t.Helper()
		code, out, stderr := runBroker(t, map[string]string{configFileEnv: path}, "token", "inspect", "--project", project, tok)
		var m map[string]any
		if err := json.Unmarshal([]byte(out), &m); err != nil && code != 2 {
			t.Fatalf("token inspect: %d %q %q", code, out, stderr)
		}
		if strings.Contains(out+stderr, betaCert1) || strings.Contains(out+stderr, betaCert2) {
			t.Fatal("token inspect printed a certificate")
		}
		return code, m
	}
	if code, m := inspect(betaToken1, "beta"); code != 0 || m["certificate"] != 1.0 {
		t.Fatalf("beta's token against beta: %d %v", code, m)
	}
	if code, m := inspect(betaToken1, "alpha"); code != 1 || m["signatureValid"] != false {
		t.Errorf("beta's token against alpha: %d %v; want exit 1", code, m)
	}

	// Rotation, step 1: the new certificate first (it signs), the old one
	// second (tokens it signed stay valid).
	stop()
	path = writeConfig(t, projectsConfig(addr, home.Issuer(), partner.Issuer(), betaCert2, betaCert1))
	env[configFileEnv] = path
	_, stop = serveBroker(t, env)
	code, _, m = c.call("POST", "/p/beta/v1/tokens", partnerDev, `{"channel":"beta-1","role":"publisher","uid":`+partnerUID+`}`)
	if code != 200 {
		t.Fatalf("beta token after the swap: %d %v", code, m)
	}
	betaToken2 := m["rtcToken"].(string)
	if code, m := inspect(betaToken2, "beta"); code != 0 || m["certificate"] != 1.0 {
		t.Errorf("the new token against beta's certificates: %d %v; want certificate 1 (the new one)", code, m)
	}
	if code, m := inspect(betaToken1, "beta"); code != 0 || m["certificate"] != 2.0 {
		t.Errorf("the old token against beta's certificates: %d %v; want certificate 2 (the old one)", code, m)
	}

	// Step 2, once every token the old certificate signed has expired
	// (beta's maxTTL is 3s): drop it.
	expires, err := time.Parse(time.RFC3339, inspectField(t, betaToken1, path, "expiresAt"))
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Until(expires) + time.Second)
	stop()
	path = writeConfig(t, projectsConfig(addr, home.Issuer(), partner.Issuer(), betaCert2))
	env[configFileEnv] = path
	serveBroker(t, env)
	if code, m := inspect(betaToken1, "beta"); code != 1 || m["expired"] != true {
		t.Errorf("the old token once its certificate is dropped: %d %v; want expired and no longer verified", code, m)
	}
	if code, m := inspect(betaToken2, "beta"); code != 0 || m["certificate"] != 1.0 {
		t.Errorf("the new token after the rotation: %d %v", code, m)
	}
	code, _, m = c.call("POST", "/p/beta/v1/tokens", partnerDev, `{"channel":"beta-1","role":"publisher","uid":`+partnerUID+`}`)
	if code != 200 {
		t.Fatalf("beta token after the rotation: %d %v", code, m)
	}
	if code, m := inspect(m["rtcToken"].(string), "beta"); code != 0 || m["certificate"] != 1.0 {
		t.Errorf("a token minted after the rotation: %d %v", code, m)
	}
}

// inspectField returns one field of broker token inspect's output.
func inspectField(t *testing.T, tok, path, field string) string {
	t.Helper()
	_, out, _ := runBroker(t, map[string]string{configFileEnv: path}, "token", "inspect", "--project", "beta", tok)
	var m map[string]any
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("token inspect: %v", err)
	}
	s, _ := m[field].(string)
	return s
}

func jsonText(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
