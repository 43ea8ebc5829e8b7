package main

import (
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/broker-dev/broker/internal/agora/agoratest"
	"github.com/broker-dev/broker/internal/auth/dextest"
	"github.com/broker-dev/broker/internal/pg/pgtest"
)

// Revocations end to end with Dex, Postgres and Agora's contract server,
// the admin working from the CLI (`broker revoke`): the developer's live
// token is revoked (a ban of the right uid, channel and duration; new
// requests 403; the admin untouched); a policy change in auto mode revokes
// exactly the token it orphaned; a join a grant covers is explained, one
// without is flagged; the access review over the period shows the change.
func TestRevoke_EndToEnd_DexPostgresAgora(t *testing.T) {
	dex := dextest.Start(t, dextest.Options{})
	db := pgtest.NewCluster(t, pgtest.Options{}).New(t)
	agora := agoratest.NewLoopback(t, "e2e-customer", "e2e-customer-secret")
	const ncsSecret = "e2e-ncs-secret"
	addr := freeAddr(t)
	brokerEnv := map[string]string{
		"BROKER_ADDR":                    addr,
		"BROKER_DATABASE_URL":            db.URL,
		"BROKER_OIDC_ISSUER":             dex.Issuer(),
		"BROKER_OIDC_AUDIENCE":           dextest.ClientID + "," + dextest.CLIClientID,
		"BROKER_CLI_CLIENT_ID":           dextest.CLIClientID,
		"BROKER_APP_ID":                  e2eAppID,
		"BROKER_APP_CERTIFICATE":         e2eAppCert,
		"BROKER_AUDIT_KEY":               e2eAuditKey,
		"BROKER_BOOTSTRAP_ADMINS":        "group:" + dextest.GroupAdmins,
		"BROKER_RATE_LIMIT":              "0",
		"BROKER_AGORA_CUSTOMER_ID":       "e2e-customer",
		"BROKER_AGORA_CUSTOMER_SECRET":   "e2e-customer-secret",
		"BROKER_AGORA_API_URL":           agora.URL,
		"BROKER_AGORA_NCS_SECRET":        ncsSecret,
		"BROKER_REVOKE_ON_POLICY_CHANGE": "auto",
	}
	serveBroker(t, brokerEnv)
	base := "http://" + addr
	env := map[string]string{"BROKER_CONFIG_DIR": t.TempDir(), serverEnv: base}
	loginAs(t, env, base, func(prompt string) {
		m := regexp.MustCompile(`open (http://\S+/device) and enter the code (\S+)`).FindStringSubmatch(prompt)
		if m == nil {
			t.Fatalf("login did not offer the device grant:\n%s", prompt)
		}
		dex.ApproveDevice(t, m[2], dextest.AdminEmail, dextest.AdminPassword)
	})
	start := time.Now().UTC()
	c := brokerClient{t: t, base: base}
	admin := dex.Token(t, dextest.AdminEmail, dextest.AdminPassword)
	dev := dex.Token(t, dextest.DeveloperEmail, dextest.DeveloperPassword)
	mustCLI(t, env, "policy", "add", "--subject", "group:"+dextest.GroupDevelopers, "--channel", "team-*", "--role", "publisher")
	mustCLI(t, env, "policy", "add", "--subject", "group:"+dextest.GroupAdmins, "--channel", "board-*", "--role", "publisher")
	uidOf := func(bearer string) string {
		code, _, me := c.call("GET", "/v1/me", bearer, "")
		if code != 200 {
			t.Fatalf("/v1/me: %d %v", code, me)
		}
		return strconv.FormatFloat(me["uid"].(float64), 'f', 0, 64)
	}
	devUID, adminUID := uidOf(dev), uidOf(admin)
	token := func(bearer, channel, uid string) int {
		code, _, _ := c.call("GET", "/rtc/"+channel+"/publisher/uid/"+uid+"/?expiry=3600", bearer, "")
		return code
	}
	for _, g := range []struct{ bearer, channel, uid string }{{dev, "team-red", devUID}, {admin, "team-red", adminUID}, {admin, "board-1", adminUID}} {
		if code := token(g.bearer, g.channel, g.uid); code != 200 {
			t.Fatalf("uid %s's token on %s: %d", g.uid, g.channel, code)
		}
	}

	// Agora reports the joins: the admin's is explained, uid 999's is not.
	for i, uid := range []string{adminUID, "999"} {
		join := fmt.Sprintf(`{"noticeId":"e2e-%d","productId":1,"eventType":103,"notifyMs":%d,"payload":{"channelName":"team-red","uid":%s,"platform":1,"clientSeq":%d,"ts":%d}}`,
			i, time.Now().UnixMilli(), uid, i, time.Now().Unix())
		req, _ := http.NewRequest("POST", base+"/v1/agora/events", strings.NewReader(join))
		req.Header.Set("Agora-Signature-V2", agoratest.SignV2([]byte(ncsSecret), []byte(join)))
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("join of %s: %v %v", uid, resp, err)
		}
		resp.Body.Close()
	}
	code, _, m := c.call("GET", "/v1/audit/unexplained", admin, "")
	if joins, _ := m["joins"].([]any); code != 200 || len(joins) != 1 || joins[0].(map[string]any)["uid"].(float64) != 999 {
		t.Fatalf("unexplained joins: %d %v; want uid 999's only", code, m)
	}

	// The admin revokes the developer from the CLI.
	devSubject := "user:" + dex.Subject(dextest.DeveloperUserID)
	out := mustCLI(t, env, "revoke", "user", "--subject", devSubject, "--reason", "left the company")
	if !strings.Contains(out, devSubject) || !strings.Contains(out, "ban ") || strings.Contains(out, "not banned") {
		t.Fatalf("broker revoke user said:\n%s", out)
	}
	bans := agora.Rules(e2eAppID)
	if len(bans) != 1 || strconv.FormatUint(uint64(bans[0].UID), 10) != devUID || bans[0].Channel != "team-red" ||
		bans[0].Seconds < 3500 || bans[0].Seconds > 3600 || !slices.Equal(bans[0].Privileges, []string{"join_channel"}) {
		t.Fatalf("Agora's bans %+v; want the developer's uid kept from team-red for the hour left of the token", bans)
	}
	if code := token(dev, "team-blue", devUID); code != 403 {
		t.Fatalf("the developer's new token after the revocation: %d, want 403", code)
	}
	if code := token(admin, "team-red", adminUID); code != 200 {
		t.Fatalf("the admin's token: %d, want 200", code)
	}
	code, _, page := c.call("GET", "/v1/audit?decision=denied&subject="+url.QueryEscape(dex.Subject(dextest.DeveloperUserID)), admin, "")
	recs, _ := page["records"].([]any)
	if code != 200 || !slices.ContainsFunc(recs, func(r any) bool {
		return strings.Contains(r.(map[string]any)["reason"].(string), fmt.Sprintf("Agora ban rules: %d)", bans[0].ID))
	}) {
		t.Fatalf("the issuance log's record of the revocation: %d %v", code, page)
	}

	// Auto mode: taking board-* from the admins orphans the admin's board-1
	// token, which the broker revokes by itself; nothing else is banned.
	out = mustCLI(t, env, "policy", "list", "--channel", "board-*", "-o", "json")
	id := regexp.MustCompile(`"id":\s*(\d+)`).FindStringSubmatch(out)
	if id == nil {
		t.Fatalf("the board-* rule: %s", out)
	}
	mustCLI(t, env, "policy", "rm", "--id", id[1])
	waitFor(t, "the orphaned token's ban", 20*time.Second, func() bool { return len(agora.Rules(e2eAppID)) >= 2 })
	time.Sleep(3 * time.Second) // a second look by every replica bans nothing more
	bans = agora.Rules(e2eAppID)
	if len(bans) != 2 {
		t.Fatalf("Agora's bans %+v; want the developer's and the admin's on board-1", bans)
	}
	i := slices.IndexFunc(bans, func(b agoratest.Rule) bool { return b.Channel == "board-1" })
	if i < 0 || strconv.FormatUint(uint64(bans[i].UID), 10) != adminUID {
		t.Fatalf("Agora's bans %+v; want the admin's uid on board-1", bans)
	}
	if out := mustCLI(t, env, "revoke", "list", "--active"); !strings.Contains(out, "system:revoke-on-policy-change") || !strings.Contains(out, "left the company") {
		t.Fatalf("broker revoke list --active:\n%s", out)
	}
	if out := mustCLI(t, env, "revoke", "orphans"); strings.TrimSpace(out) != "" {
		t.Fatalf("orphans left after auto mode:\n%s", out)
	}

	// An operator with the broker's configuration and no API lifts the
	// developer's revocation on the database: the ban is deleted.
	out = mustCLI(t, brokerEnv, "revoke", "list", "--active", "-o", "json", "--actor", "ops:oncall")
	devRev := regexp.MustCompile(`"id": (\d+),\s*"project": "default",\s*"subject": "` + regexp.QuoteMeta(devSubject) + `"`).FindStringSubmatch(out)
	if devRev == nil {
		t.Fatalf("the developer's revocation in:\n%s", out)
	}
	if out := mustCLI(t, brokerEnv, "revoke", "lift", "--id", devRev[1], "--actor", "ops:oncall"); !strings.Contains(out, "lifted") || !strings.Contains(out, "ops:oncall") {
		t.Fatalf("broker revoke lift on the database said:\n%s", out)
	}
	if slices.ContainsFunc(agora.Rules(e2eAppID), func(b agoratest.Rule) bool { return strconv.FormatUint(uint64(b.UID), 10) == devUID }) {
		t.Fatalf("the developer's ban outlived the lift: %+v", agora.Rules(e2eAppID))
	}
	waitFor(t, "the developer's new token after the lift", 10*time.Second, func() bool { return token(dev, "team-blue", devUID) == 200 })

	// The access review of board-1 over the period shows the change.
	q := "/v1/audit/access?channel=board-1&role=publisher&from=" + url.QueryEscape(start.Add(-time.Second).Format(time.RFC3339Nano)) +
		"&to=" + url.QueryEscape(time.Now().Add(time.Minute).UTC().Format(time.RFC3339Nano))
	code, _, review := c.call("GET", q, admin, "")
	could, _ := review["could"].([]any)
	allowsAdmins := func(v any) bool {
		for _, rc := range v.(map[string]any)["allowed"].([]any) {
			if rc.(map[string]any)["rule"].(map[string]any)["channel"] == "board-*" {
				return true
			}
		}
		return false
	}
	if code != 200 || len(could) < 2 || !slices.ContainsFunc(could, allowsAdmins) || allowsAdmins(could[len(could)-1]) {
		t.Fatalf("access review: %d could %v; want a policy that let the admins publish on board-1, then one that does not", code, could)
	}
	if got, _ := review["got"].([]any); len(got) != 1 {
		t.Fatalf("access review: got %v; want the admin's grant", got)
	}
}
