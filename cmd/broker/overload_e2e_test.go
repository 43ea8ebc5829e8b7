package main

import (
	"context"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/broker-dev/broker/internal/auth/dextest"
	"github.com/broker-dev/broker/internal/loadtest"
	"github.com/broker-dev/broker/internal/pg/pgtest"
)

// Overload end to end: while the issuance log cannot commit (its table
// locked, as a stalled Postgres would), BROKER_LOG_MAX_WAITING token
// requests wait; the next ones get an immediate 503 with Retry-After,
// counted, and /healthz keeps answering; once the log commits again every
// token answered has its record, and new requests are served.
func TestServe_ShedsTokenRequestsPastTheLogsWaitingBound(t *testing.T) {
	dex := dextest.Start(t, dextest.Options{})
	db := pgtest.NewCluster(t, pgtest.Options{}).New(t)
	addr := freeAddr(t)
	serveBroker(t, map[string]string{
		"BROKER_ADDR":             addr,
		"BROKER_DATABASE_URL":     db.URL,
		"BROKER_OIDC_ISSUER":      dex.Issuer(),
		"BROKER_OIDC_AUDIENCE":    dextest.ClientID,
		"BROKER_APP_ID":           e2eAppID,
		"BROKER_APP_CERTIFICATE":  e2eAppCert,
		"BROKER_AUDIT_KEY":        e2eAuditKey,
		"BROKER_BOOTSTRAP_ADMINS": "group:" + dextest.GroupAdmins,
		"BROKER_RATE_LIMIT":       "0",
		"BROKER_LOG_MAX_WAITING":  "2",
	})
	c := brokerClient{t: t, base: "http://" + addr}
	admin := dex.Token(t, dextest.AdminEmail, dextest.AdminPassword)
	dev := dex.Token(t, dextest.DeveloperEmail, dextest.DeveloperPassword)
	if code, _, m := c.call("POST", "/v1/policies", admin, `{"subject":"group:`+dextest.GroupDevelopers+`","channel":"team-*","role":"publisher","effect":"allow"}`); code != 201 {
		t.Fatalf("add a rule: %d %v", code, m)
	}
	code, _, me := c.call("GET", "/v1/me", dev, "")
	if code != 200 {
		t.Fatalf("/v1/me: %d %v", code, me)
	}
	path := "/rtc/team-red/publisher/uid/" + strconv.FormatFloat(me["uid"].(float64), 'f', 0, 64) + "/"
	if code, _, _ := c.call("GET", path, dev, ""); code != 200 {
		t.Fatalf("a token before the stall: %d", code)
	}

	// Stall the log: its table locked by a transaction of our own.
	ctx := context.Background()
	tx, err := db.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, "LOCK TABLE issuance_log_record IN ACCESS EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	waiting := make(chan int, 2)
	for range 2 {
		go func() {
			req, _ := http.NewRequest("GET", c.base+path, nil)
			req.Header.Set("Authorization", "Bearer "+dev)
			resp, err := (&http.Client{Timeout: time.Minute}).Do(req)
			if err != nil {
				waiting <- 0
				return
			}
			resp.Body.Close()
			waiting <- resp.StatusCode
		}()
	}
	waitFor(t, "two requests waiting for the log", 20*time.Second, func() bool { return metric(t, c.base, "broker_audit_appends_waiting") == 2 })
	for i := range 3 {
		start := time.Now()
		req, _ := http.NewRequest("GET", c.base+path, nil)
		req.Header.Set("Authorization", "Bearer "+dev)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" || strings.Contains(string(body), "rtcToken") {
			// The body is not shown: it may hold a token.
			t.Fatalf("request %d past the bound: %d, Retry-After %q, a token in the answer: %v", i+1, resp.StatusCode,
				resp.Header.Get("Retry-After"), strings.Contains(string(body), "rtcToken"))
		}
		if waited := time.Since(start); waited > 2*time.Second {
			t.Errorf("request %d past the bound waited %s: it must be refused at once", i+1, waited)
		}
	}
	if code, _, _ := c.call("GET", "/healthz", "", ""); code != 200 {
		t.Fatalf("/healthz while the log is stalled: %d", code)
	}
	if shed := metric(t, c.base, "broker_audit_appends_shed_total"); shed != 3 {
		t.Errorf("broker_audit_appends_shed_total = %v, want 3", shed)
	}

	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	granted := 2 // before and after the stall
	for range 2 {
		// 200 once the log commits; 503 if its commit attempt timed out first
		// (2 s: a slow machine), never anything else.
		switch code := <-waiting; code {
		case 200:
			granted++
		case 503:
		default:
			t.Errorf("a request that waited for the log: %d, want 200 (or 503)", code)
		}
	}
	if code, _, _ := c.call("GET", path, dev, ""); code != 200 {
		t.Fatalf("a token after the stall: %d", code)
	}
	code, _, page := c.call("GET", "/v1/audit?decision=granted&subject="+dex.Subject(dextest.DeveloperUserID), admin, "")
	if recs, _ := page["records"].([]any); code != 200 || len(recs) != granted {
		t.Fatalf("granted records: %d, %d records; want %d, one per token answered", code, len(recs), granted)
	}
}

// metric reads a sample of the broker's /metrics (-1 when absent).
func metric(t *testing.T, base, name string) float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	v, found, err := loadtest.SumMetric(resp.Body, name)
	if err != nil {
		t.Fatal(err)
	}
	if !found {
		return -1
	}
	return v
}
