package main

import (
	"strconv"
	"strings"
	"testing"

	"github.com/broker-dev/broker/internal/auth/dextest"
	"github.com/broker-dev/broker/internal/pg/pgtest"
)

// Two identity providers in one broker, configured by file: each verifies
// its own users, a partner's users are qualified by the partner's name, so
// its groups can never be the default issuer's (not even the bootstrap
// admins'), and a token from an issuer the file does not name is refused.
func TestServe_TwoIssuersFromTheConfigFile(t *testing.T) {
	home := dextest.Start(t, dextest.Options{})
	partner := dextest.Start(t, dextest.Options{})
	db := pgtest.NewCluster(t, pgtest.Options{}).New(t)
	addr := freeAddr(t)
	path := writeConfig(t, `addr: "`+addr+`"
appID: `+e2eAppID+`
bootstrapAdmins: group:`+dextest.GroupAdmins+`
rateLimit: 0
issuers:
  - issuer: `+home.Issuer()+`
    audiences: [`+dextest.ClientID+`]
  - name: partner
    issuer: `+partner.Issuer()+`
    audiences: [`+dextest.ClientID+`]
    requiredClaims:
      email_verified: true
`)
	// Secrets stay in the environment: the file names none.
	serveBroker(t, map[string]string{"BROKER_ADDR": addr, configFileEnv: path, "BROKER_DATABASE_URL": db.URL,
		"BROKER_APP_CERTIFICATE": e2eAppCert, "BROKER_AUDIT_KEY": e2eAuditKey,
		"BROKER_CONSOLE_CLIENT_ID": dextest.ClientID, "BROKER_CONSOLE_CLIENT_SECRET": dextest.ClientSecret,
		"BROKER_CONSOLE_REDIRECT_URL": "http://" + addr + "/console/callback"})
	c := brokerClient{t: t, base: "http://" + addr}

	c.requireConsoleLoginAt(home.Issuer()) // the console signs in through the default issuer

	homeAdmin := home.Token(t, dextest.AdminEmail, dextest.AdminPassword)
	homeDev := home.Token(t, dextest.DeveloperEmail, dextest.DeveloperPassword)
	partnerAdmin := partner.Token(t, dextest.AdminEmail, dextest.AdminPassword)
	partnerDev := partner.Token(t, dextest.DeveloperEmail, dextest.DeveloperPassword)

	code, _, me := c.call("GET", "/v1/me", partnerDev, "")
	if code != 200 || me["issuer"] != partner.Issuer() {
		t.Fatalf("partner's /v1/me: %d %v", code, me)
	}
	if want := "user:partner/" + partner.Subject(dextest.DeveloperUserID); me["ruleSubject"] != want {
		t.Errorf("partner's ruleSubject = %v, want %s", me["ruleSubject"], want)
	}
	if groups, _ := me["groups"].([]any); len(groups) != 1 || groups[0] != "partner/"+dextest.GroupDevelopers {
		t.Errorf("partner's groups = %v, want [partner/%s]", me["groups"], dextest.GroupDevelopers)
	}
	// The partner's "broker-admins" are not the bootstrap admins.
	if code, _, m := c.call("POST", "/v1/policies", partnerAdmin, `{"subject":"*","channel":"*","role":"publisher","effect":"allow"}`); code != 403 {
		t.Fatalf("the partner's admin group changed policy: %d %v", code, m)
	}
	if code, _, m := c.call("POST", "/v1/policies", homeAdmin,
		`{"subject":"group:partner/`+dextest.GroupDevelopers+`","channel":"partner-*","role":"publisher","effect":"allow"}`); code != 201 {
		t.Fatalf("add a rule for the partner's developers: %d %v", code, m)
	}
	uidOf := func(bearer string) string {
		code, _, me := c.call("GET", "/v1/me", bearer, "")
		if code != 200 {
			t.Fatalf("/v1/me: %d", code)
		}
		return strconv.FormatFloat(me["uid"].(float64), 'f', 0, 64)
	}
	partnerUID, homeUID := uidOf(partnerDev), uidOf(homeDev)
	if partnerUID == homeUID {
		t.Errorf("the same user at two issuers got one uid: identities are (issuer, subject)")
	}
	if code, _, m := c.call("GET", "/rtc/partner-1/publisher/uid/"+partnerUID+"/", partnerDev, ""); code != 200 {
		t.Errorf("partner developer on partner-1: %d %v", code, m)
	}
	// The home developers share the group's name, not the group.
	if code, _, _ := c.call("GET", "/rtc/partner-1/publisher/uid/"+homeUID+"/", homeDev, ""); code != 403 {
		t.Errorf("home developer on partner-1: %d, want 403", code)
	}
	// Accounts cannot carry the issuer: the partner's users get uid tokens only.
	if code, _, m := c.call("GET", "/rtc/partner-1/publisher/userAccount/"+dextest.DeveloperEmail+"/", partnerDev, ""); code != 400 && code != 403 {
		t.Errorf("partner developer asked for an account token: %d %v", code, m)
	} else if !strings.Contains(strings.ToLower(m["detail"].(string)), "default issuer") {
		t.Errorf("account refusal does not say why: %v", m)
	}
	// An issuer the file does not name: refused before any network request.
	other := dextest.Start(t, dextest.Options{})
	if code, _, m := c.call("GET", "/v1/me", other.Token(t, dextest.DeveloperEmail, dextest.DeveloperPassword), ""); code != 401 ||
		!strings.Contains(m["detail"].(string), "is not accepted") {
		t.Errorf("unknown issuer: %d %v", code, m)
	}
}
