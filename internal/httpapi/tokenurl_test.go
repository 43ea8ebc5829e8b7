package httpapi

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/broker-dev/broker/internal/audit"
	"github.com/broker-dev/broker/internal/broker"
	"github.com/broker-dev/broker/internal/identity"
	"github.com/broker-dev/broker/internal/pg/pgtest"
	"github.com/broker-dev/broker/internal/policy"
	"github.com/broker-dev/broker/internal/token"
	"github.com/broker-dev/broker/internal/tokenurl"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// pgAPI is the HTTP API over Postgres stores, with its log lines captured.
type pgAPI struct {
	srv   *httptest.Server
	log   audit.Log
	rules *policy.Engine
	logs  *syncBuffer
}

func newPGAPI(t *testing.T) *pgAPI {
	t.Helper()
	ctx := context.Background()
	db := pgtest.New(t)
	rules, err := policy.Open(ctx, policy.NewPGStore(db.Pool(), nil), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rules.Close)
	op := policy.Actor{Subject: "test", Operator: true}
	for _, r := range []policy.Rule{
		{Subject: "group:dev", Channel: "kit-*", Role: policy.Publisher, Effect: policy.Allow},
		{Subject: "group:dev", Channel: "stage-*", Role: policy.Subscriber, Effect: policy.Allow},
	} {
		if _, err := rules.Add(ctx, op, r); err != nil {
			t.Fatal(err)
		}
	}
	if err := rules.Bootstrap(ctx, []string{"group:admins"}); err != nil {
		t.Fatal(err)
	}
	key := []byte(strings.Repeat("k", 32))
	log, err := audit.NewPostgres(db.Pool(), key, audit.PostgresOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { log.Close() })
	tb, err := token.NewBuilder("0123456789abcdef0123456789abcdef", testCert)
	if err != nil {
		t.Fatal(err)
	}
	b, err := broker.New(broker.Config{DefaultTTL: time.Hour, MaxTTL: 24 * time.Hour},
		broker.Deps{Tokens: tb, Policy: rules, Log: log, UIDs: identity.NewPostgres(db.Pool())})
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	reg := prometheus.NewRegistry()
	srv := httptest.NewServer(NewServer(Deps{
		Logger: slog.New(slog.NewJSONHandler(logs, nil)), Authenticate: testAuth, Broker: b, Policies: rules, Audit: log,
		Registerer: reg, Metrics: promhttp.HandlerFor(reg, promhttp.HandlerOpts{}),
		TokenURLs: TokenURLs{Service: tokenurl.New(tokenurl.NewPostgres(db.Pool()), key, nil), DefaultTTL: 12 * time.Hour, MaxTTL: 7 * 24 * time.Hour},
	}))
	t.Cleanup(srv.Close)
	return &pgAPI{srv: srv, log: log, rules: rules, logs: logs}
}

func (a *pgAPI) do(t *testing.T, method, url, bearer, body string) (int, map[string]any) {
	t.Helper()
	if !strings.HasPrefix(url, "http") {
		url = a.srv.URL + url
	}
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var m map[string]any
	_ = json.Unmarshal(raw, &m)
	return resp.StatusCode, m
}

// TestTokenURLs_EveryKitShapeAgainstPostgres plays each UI Kit: a plain GET
// with no header to {tokenUrl}/rtc/{channel}/publisher/uid/{uid}[/] and
// {tokenUrl}/rtm/{id}[/], as the kits build them.
func TestTokenURLs_EveryKitShapeAgainstPostgres(t *testing.T) {
	a := newPGAPI(t)
	const alice = "alice;dev;3617108752" // a uid claim at or above 2^31: the Kotlin Int case
	code, created := a.do(t, "POST", "/v1/token-urls", alice, "")
	if code != 201 {
		t.Fatalf("create: %d %v", code, created)
	}
	tu, ss := created["tokenUrl"].(string), fmt.Sprint(int64(created["screenShareUid"].(float64)))
	if created["uid"] != float64(3617108752) || !strings.Contains(tu, "/k/") || created["id"] == nil {
		t.Fatalf("create answered %v", created)
	}
	secret := tu[strings.Index(tu, "/k/")+3:]
	rtcUID := func(m map[string]any, field string) (string, string) {
		tok, err := token.Parse(fmt.Sprint(m[field]))
		if err != nil || !tok.Verify(testCert) {
			t.Fatalf("no verified %s in %v", field, m)
		}
		return tok.Services[0].UID, tok.Services[0].User
	}
	for _, tc := range []struct{ kit, path, field, want string }{
		{"Android", "/rtc/kit-1/publisher/uid/3617108752/", "rtcToken", "3617108752"},
		{"iOS", "/rtc/kit-1/publisher/uid/3617108752/", "rtcToken", "3617108752"},
		{"Flutter", "/rtc/kit-1/publisher/uid/3617108752", "rtcToken", "3617108752"},
		{"Web", "/rtc/kit-1/publisher/uid/3617108752/", "rtcToken", "3617108752"},
		{"Kotlin Int", "/rtc/kit-1/publisher/uid/-677858544/", "rtcToken", "3617108752"},
		{"screen share", "/rtc/kit-1/publisher/uid/" + ss + "/", "rtcToken", ss},
		{"RTM with slash", "/rtm/alice/", "rtmToken", "alice"},
		{"RTM without slash", "/rtm/3617108752", "rtmToken", "3617108752"},
	} {
		code, m := a.do(t, "GET", tu+tc.path, "", "")
		if code != 200 {
			t.Errorf("%s GET {tokenUrl}%s: %d %v", tc.kit, tc.path, code, m)
			continue
		}
		uid, user := rtcUID(m, tc.field)
		if got := uid + user; got != tc.want {
			t.Errorf("%s: token for %q, want %q", tc.kit, got, tc.want)
		}
	}
	// uid 0 (the web, React Native and Flutter kits' default) is refused
	// with the caller's uid in the message.
	if code, m := a.do(t, "GET", tu+"/rtc/kit-1/publisher/uid/0/", "", ""); code != 403 || !strings.Contains(fmt.Sprint(m["detail"]), "3617108752") {
		t.Errorf("uid 0: %d %v", code, m)
	}
	// Without downgrade, a publisher request on a subscriber-only channel is refused.
	if code, m := a.do(t, "GET", tu+"/rtc/stage-1/publisher/uid/3617108752/", "", ""); code != 403 {
		t.Errorf("no downgrade: %d %v", code, m)
	}
	// A token URL reaches the seed routes only.
	for _, path := range []string{"/v1/me", "/v1/policies", "/v1/token-urls"} {
		if code, m := a.do(t, "GET", tu+path, "", ""); code != 404 {
			t.Errorf("GET {tokenUrl}%s: %d %v", path, code, m)
		}
	}

	// Downgrade on: the same request gets a subscriber token, and says so.
	code, down := a.do(t, "POST", "/v1/token-urls", alice, `{"downgradeToSubscriber":true,"ttlSeconds":600}`)
	if code != 201 {
		t.Fatalf("create with downgrade: %d %v", code, down)
	}
	code, m := a.do(t, "GET", down["tokenUrl"].(string)+"/rtc/stage-1/publisher/uid/3617108752/", "", "")
	if code != 200 || m["role"] != "subscriber" {
		t.Fatalf("downgrade: %d %v", code, m)
	}
	if tok, _ := token.Parse(m["rtcToken"].(string)); len(tok.Services[0].Privileges) != 1 {
		t.Errorf("downgraded token carries publish privileges: %+v", tok.Services[0].Privileges)
	}

	// Listing shows the caller's own, never a secret; revoking ends a URL at once.
	code, list := a.do(t, "GET", "/v1/token-urls", alice, "")
	if code != 200 || len(list["tokenUrls"].([]any)) != 2 || strings.Contains(fmt.Sprint(list), secret) {
		t.Fatalf("list: %d %v", code, list)
	}
	if code, m := a.do(t, "GET", "/v1/token-urls?subject=bob", alice, ""); code != 403 {
		t.Errorf("listing another's without the right: %d %v", code, m)
	}
	if code, m := a.do(t, "DELETE", "/v1/token-urls/"+created["id"].(string), "bob;dev", ""); code != 404 {
		t.Errorf("bob revokes alice's URL: %d %v", code, m)
	}
	if code, m := a.do(t, "DELETE", "/v1/token-urls/"+created["id"].(string), alice, ""); code != 204 {
		t.Fatalf("revoke: %d %v", code, m)
	}
	if code, m := a.do(t, "GET", tu+"/rtc/kit-1/publisher/uid/3617108752/", "", ""); code != 401 || !strings.Contains(fmt.Sprint(m["detail"]), "revoked") {
		t.Errorf("revoked URL: %d %v", code, m)
	}
	if code, m := a.do(t, "GET", strings.Replace(tu, secret, strings.Repeat("A", 43), 1)+"/rtm/alice/", "", ""); code != 401 {
		t.Errorf("unknown URL: %d %v", code, m)
	}
	if code, m := a.do(t, "DELETE", "/v1/token-urls/"+down["id"].(string), "root;admins", ""); code != 204 {
		t.Errorf("an admin (write on api:token-urls) revokes anyone's: %d %v", code, m)
	}

	// Each use is one record naming the token URL; the secret is in no log
	// line, no record and no metric.
	page, err := a.log.Search(context.Background(), audit.Filter{Limit: audit.MaxLimit})
	if err != nil {
		t.Fatal(err)
	}
	via := 0
	for _, r := range page.Records {
		if strings.Contains(r.Reason, "via token URL "+created["id"].(string)) {
			via++
		}
		if strings.Contains(fmt.Sprintf("%+v", r), secret) {
			t.Fatalf("record %d holds the secret", r.Seq)
		}
	}
	if via != 10 {
		t.Errorf("%d records name the token URL, want 10 (8 grants, uid 0, the refused publisher)", via)
	}
	resp, err := http.Get(a.srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if strings.Contains(a.logs.String(), secret) || strings.Contains(string(body), secret) {
		t.Fatal("the secret appears in the logs or the metrics")
	}
	if !strings.Contains(a.logs.String(), `"path":"/k/…/rtc/kit-1/publisher/uid/3617108752/"`) {
		t.Errorf("the access log does not show token URL requests as /k/…/:\n%.2000s", a.logs.String())
	}
}

// TestTokenURLs_Lifetimes: lifetimes outside 60 s … BROKER_TOKEN_URL_MAX_TTL
// are refused (expiry itself is tested in internal/tokenurl, on a clock).
func TestTokenURLs_Lifetimes(t *testing.T) {
	a := newPGAPI(t)
	for _, body := range []string{`{"ttlSeconds":10}`, `{"ttlSeconds":99999999}`, `{"ttl":5}`} {
		if code, m := a.do(t, "POST", "/v1/token-urls", "alice;dev", body); code != 400 {
			t.Errorf("create %s: %d %v", body, code, m)
		}
	}
	code, created := a.do(t, "POST", "/v1/token-urls", "alice;dev", `{"ttlSeconds":60}`)
	if code != 201 {
		t.Fatalf("create: %d %v", code, created)
	}
	exp, _ := time.Parse(time.RFC3339, created["expiresAt"].(string))
	if d := time.Until(exp); d < 50*time.Second || d > 61*time.Second {
		t.Errorf("expiresAt %v is not a minute away", exp)
	}
}
