package main

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/broker-dev/broker/internal/auth/dextest"
	"github.com/broker-dev/broker/internal/jaegertest"
	"github.com/broker-dev/broker/internal/pg/pgtest"
)

// TestServe_TracesToARealJaeger runs `broker serve` against Dex, Postgres and
// a real Jaeger, issues a token with the caller's traceparent, and reads the
// trace back through Jaeger's query API: the request's span tree, the append
// linked to the batch commit that carried the record (and back), the
// record's trace id, and no secret in any span the broker exported.
func TestServe_TracesToARealJaeger(t *testing.T) {
	dex := dextest.Start(t, dextest.Options{})
	jaeger := jaegertest.Start(t)
	db := pgtest.New(t)
	addr := freeAddr(t)
	env := map[string]string{
		"BROKER_ADDR":                 addr,
		"BROKER_DATABASE_URL":         db.URL,
		"BROKER_OIDC_ISSUER":          dex.Issuer(),
		"BROKER_OIDC_AUDIENCE":        dextest.ClientID,
		"BROKER_APP_ID":               e2eAppID,
		"BROKER_APP_CERTIFICATE":      e2eAppCert,
		"BROKER_AUDIT_KEY":            e2eAuditKey,
		"BROKER_BOOTSTRAP_ADMINS":     "group:" + dextest.GroupAdmins,
		"OTEL_EXPORTER_OTLP_ENDPOINT": jaeger.OTLPEndpoint(),
		"OTEL_SERVICE_NAME":           "broker-trace-e2e",
		"OTEL_TRACES_SAMPLER":         "always_on",
	}
	_, stop := serveBroker(t, env)
	c := brokerClient{t: t, base: "http://" + addr}
	admin := dex.Token(t, dextest.AdminEmail, dextest.AdminPassword)
	dev := dex.Token(t, dextest.DeveloperEmail, dextest.DeveloperPassword)
	if code, _, m := c.call("POST", "/v1/policies", admin,
		`{"subject":"group:`+dextest.GroupDevelopers+`","channel":"team-*","role":"publisher","effect":"allow"}`); code != 201 {
		t.Fatalf("admin add rule: %d %v", code, m)
	}
	code, _, me := c.call("GET", "/v1/me", dev, "")
	if code != 200 || me["uid"] == nil {
		t.Fatalf("/v1/me: %d %v", code, me)
	}

	const traceID, callerSpan = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
	req, _ := http.NewRequest("GET", fmt.Sprintf("%s/rtc/team-1/publisher/uid/%d/", c.base, int64(me["uid"].(float64))), nil)
	req.Header.Set("Authorization", "Bearer "+dev)
	req.Header.Set("traceparent", "00-"+traceID+"-"+callerSpan+"-01")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	err = json.NewDecoder(resp.Body).Decode(&got)
	resp.Body.Close()
	minted, _ := got["rtcToken"].(string)
	if resp.StatusCode != 200 || err != nil || minted == "" {
		t.Fatalf("token: %d, decode error %v, token present %v; the body is not printed (it may hold a token)", resp.StatusCode, err, minted != "")
	}
	code, _, found := c.call("GET", "/v1/audit?channel=team-1&limit=1", admin, "")
	recs, _ := found["records"].([]any)
	if code != 200 || len(recs) != 1 || recs[0].(map[string]any)["trace_id"] != traceID {
		t.Fatalf("the record's trace id: %d %v; want %s", code, found, traceID)
	}
	stop()

	byName := map[string]jaegertest.Span{}
	for _, s := range jaeger.TraceN(t, traceID, 5, 30*time.Second) {
		byName[s.OperationName] = s
	}
	server, ok := byName["HTTP GET /rtc/{channel}/{role}/{tokentype}/{uid}"]
	if !ok || server.ParentSpanID != callerSpan || server.ServiceName != "broker-trace-e2e" {
		t.Fatalf("server span %+v (found %v); want it under the caller's span, from broker-trace-e2e", server, slices.Sorted(maps.Keys(byName)))
	}
	for _, name := range []string{"auth.verify", "policy.decide", "token.mint", "audit.append"} {
		s, ok := byName[name]
		if !ok || s.ParentSpanID != server.SpanID {
			t.Errorf("%s: %+v; want a child of the request's span (found %v)", name, s, slices.Sorted(maps.Keys(byName)))
		}
	}
	if v := byName["auth.verify"].Tags["auth.cache"]; v != "miss" && v != "hit" {
		t.Errorf("auth.verify auth.cache = %v, want hit or miss", v)
	}
	appendSpan := byName["audit.append"]
	if len(appendSpan.Links) != 1 {
		t.Fatalf("audit.append links %+v, want one to its batch commit", appendSpan.Links)
	}
	var commit jaegertest.Span
	for _, s := range jaeger.Trace(t, appendSpan.Links[0].TraceID, 10*time.Second) {
		if s.SpanID == appendSpan.Links[0].SpanID {
			commit = s
		}
	}
	back := false
	for _, l := range commit.Links {
		back = back || (l.TraceID == traceID && l.SpanID == appendSpan.SpanID)
	}
	if commit.OperationName != "audit.commit" || !back {
		t.Errorf("the append's batch: %+v; want audit.commit linking back to the append", commit)
	}

	for _, s := range jaeger.AllSpans(t, "broker-trace-e2e") {
		raw := string(s.Raw)
		for what, secret := range map[string]string{"bearer token": dev, "admin's bearer token": admin, "minted token": minted,
			"App certificate": e2eAppCert, "audit key": e2eAuditKey, "database URL": db.URL} {
			if strings.Contains(raw, secret) {
				t.Errorf("span %q carries the %s", s.OperationName, what)
			}
		}
	}
}
