package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/broker-dev/broker/internal/apperr"
	"github.com/broker-dev/broker/internal/audit"
	"github.com/broker-dev/broker/internal/auth"
	"github.com/broker-dev/broker/internal/broker"
	"github.com/broker-dev/broker/internal/identity"
	"github.com/broker-dev/broker/internal/policy"
	"github.com/broker-dev/broker/internal/problem"
	"github.com/broker-dev/broker/internal/token"
	"github.com/broker-dev/broker/internal/tokenurl"
)

const testCert = "fedcba9876543210fedcba9876543210"

// testAuth authenticates "Bearer <subject>" as that subject in group dev,
// "Bearer <subject>;<g1>,<g2>" in the groups listed, and
// "Bearer <subject>;<groups>;<uid>" with that uid claim. The real verifier is
// tested in internal/auth and end to end with Dex.
func testAuth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sub, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok {
			problem.Write(w, r, apperr.New(apperr.Unauthorized, "missing bearer token"))
			return
		}
		groups := []string{"dev"}
		var uid string
		if s, g, found := strings.Cut(sub, ";"); found {
			sub, groups = s, strings.Split(g, ",")
			if g, u, found := strings.Cut(g, ";"); found {
				groups, uid = strings.Split(g, ","), u
			}
		}
		id := auth.Identity{Issuer: "https://idp.test", Subject: sub, Account: sub, Groups: groups}
		if n, err := strconv.ParseUint(uid, 10, 32); err == nil {
			id.UID, id.HasUID = uint32(n), true
		}
		next.ServeHTTP(w, r.WithContext(auth.NewContext(r.Context(), id)))
	})
}

type downLog struct{ audit.Log }

func (downLog) Append(context.Context, audit.Record) (audit.Record, error) {
	return audit.Record{}, apperr.Wrap(apperr.Unavailable, errors.New("dial tcp: connection refused"), "issuance log cannot record")
}

type apiFixture struct {
	srv    *httptest.Server
	broker *broker.Broker
	log    *audit.Memory
	uids   *identity.Memory
}

func newAPI(t *testing.T, mod func(*Deps), logDown bool) *apiFixture {
	t.Helper()
	ctx := context.Background()
	rules, err := policy.Open(ctx, policy.NewMemStore(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rules.Close)
	for _, ch := range []string{"demo", "a b", "demo-*"} {
		if _, err := rules.Add(ctx, policy.Actor{Subject: "test", Operator: true}, policy.Rule{Subject: "group:dev", Channel: ch, Role: policy.Publisher, Effect: policy.Allow}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := rules.Add(ctx, policy.Actor{Subject: "test", Operator: true}, policy.Rule{Subject: "*", Channel: policy.LoginRTM, Role: policy.Login, Effect: policy.Allow}); err != nil {
		t.Fatal(err)
	}
	log, err := audit.NewMemory([]byte(strings.Repeat("k", 32)))
	if err != nil {
		t.Fatal(err)
	}
	var rec broker.Recorder = log
	if logDown {
		rec = downLog{log}
	}
	tb, err := token.NewBuilder("0123456789abcdef0123456789abcdef", testCert)
	if err != nil {
		t.Fatal(err)
	}
	uids := identity.NewMemory()
	b, err := broker.New(broker.Config{DefaultTTL: time.Hour, MaxTTL: 24 * time.Hour}, broker.Deps{Tokens: tb, Policy: rules, Log: rec, UIDs: uids})
	if err != nil {
		t.Fatal(err)
	}
	if err := rules.Bootstrap(ctx, []string{"group:admins"}); err != nil {
		t.Fatal(err)
	}
	d := Deps{Authenticate: testAuth, Broker: b, Policies: rules, Audit: log,
		TokenURLs: TokenURLs{Service: tokenurl.New(tokenurl.NewMemory(), []byte(strings.Repeat("k", 32)), nil), DefaultTTL: time.Hour, MaxTTL: 24 * time.Hour}}
	if mod != nil {
		mod(&d)
	}
	srv := httptest.NewServer(NewServer(d))
	t.Cleanup(srv.Close)
	return &apiFixture{srv: srv, broker: b, log: log, uids: uids}
}

func (f *apiFixture) uid(t *testing.T, sub string) string {
	u, err := f.uids.UID(context.Background(), "https://idp.test", sub, sub)
	if err != nil {
		t.Fatal(err)
	}
	return strconv.FormatUint(uint64(u), 10)
}

func (f *apiFixture) do(t *testing.T, method, path, bearer, body string, hdr ...string) (*http.Response, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, f.srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var m map[string]any
	_ = json.Unmarshal(raw, &m)
	return resp, m
}

func TestSeedRoutes_GrantOwnIdentity(t *testing.T) {
	f := newAPI(t, nil, false)
	uid := f.uid(t, "alice")
	cases := []struct {
		name, method, path, body string
		field                    string
	}{
		{"rtc uid trailing slash", "GET", "/rtc/demo/publisher/uid/" + uid + "/?expiry=600", "", "rtcToken"},
		{"rtc uid no slash, role 1", "GET", "/rtc/demo/1/uid/" + uid, "", "rtcToken"},
		{"rtc account, role 2, escaped channel", "GET", "/rtc/a%20b/2/userAccount/alice/", "", "rtcToken"},
		{"rtc wildcard pattern", "GET", "/rtc/demo-*/subscriber/uid/" + uid, "", "rtcToken"},
		{"rtm", "GET", "/rtm/alice/?expiry=60", "", "rtmToken"},
		{"rte", "GET", "/rte/demo/publisher/uid/" + uid + "/", "", "rtmToken"},
		{"getToken rtc numeric uid", "POST", "/getToken", `{"tokenType":"rtc","channel":"demo","role":"publisher","uid":` + uid + `,"expire":3600}`, "token"},
		{"getToken rtm", "POST", "/getToken", `{"tokenType":"rtm","uid":"alice","expire":"60"}`, "token"},
		{"v1 tokens", "POST", "/v1/tokens", `{"channel":"demo","role":"subscriber","uid":` + uid + `,"expirySeconds":120}`, "rtcToken"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, m := f.do(t, tc.method, tc.path, "alice", tc.body)
			if resp.StatusCode != 200 {
				t.Fatalf("status %d: %v", resp.StatusCode, m)
			}
			tok, _ := m[tc.field].(string)
			if !strings.HasPrefix(tok, "007") {
				t.Fatalf("%s = %q; body %v", tc.field, tok, m)
			}
			parsed, err := token.Parse(tok)
			if err != nil || !parsed.Verify(testCert) {
				t.Fatalf("token does not verify: %v", err)
			}
			if m["expiresAt"] == "" || resp.Header.Get("Content-Type") != "application/json" {
				t.Fatalf("missing expiresAt or wrong content type: %v %s", m, resp.Header.Get("Content-Type"))
			}
		})
	}
	if _, rte := f.do(t, "GET", "/rte/demo/publisher/uid/"+uid, "alice", ""); rte["rtcToken"] == nil || rte["rtmToken"] == nil {
		t.Fatalf("rte must carry both tokens: %v", rte)
	}
}

func TestSeedRoutes_RefusalsAreProblems(t *testing.T) {
	f := newAPI(t, nil, false)
	uid := f.uid(t, "alice")
	cases := []struct {
		name, method, path, bearer, body string
		status                           int
		field                            string
	}{
		{"no bearer", "GET", "/rtc/demo/publisher/uid/" + uid, "", "", 401, ""},
		{"role 3", "GET", "/rtc/demo/3/uid/" + uid, "alice", "", 400, "role"},
		{"role audience word", "GET", "/rtc/demo/audience/uid/" + uid, "alice", "", 400, "role"},
		{"bad tokentype", "GET", "/rtc/demo/1/email/" + uid, "alice", "", 400, "tokentype"},
		{"zero expiry", "GET", "/rtc/demo/1/uid/" + uid + "?expiry=0", "alice", "", 400, "expiry"},
		{"text expiry", "GET", "/rtc/demo/1/uid/" + uid + "?expiry=abc", "alice", "", 400, "expiry"},
		{"other uid", "GET", "/rtc/demo/1/uid/12345", "alice", "", 403, ""},
		{"uid zero", "GET", "/rtc/demo/1/uid/0", "alice", "", 403, ""},
		{"no rule", "GET", "/rtc/private/1/uid/" + uid, "alice", "", 403, ""},
		{"getToken apaas", "POST", "/getToken", "alice", `{"tokenType":"apaas","uid":"alice"}`, 400, "tokenType"},
		{"getToken not json", "POST", "/getToken", "alice", `{"tokenType":`, 400, ""},
		{"v1 unknown field", "POST", "/v1/tokens", "alice", `{"channel":"demo","role":"1","uid":1,"admin":true}`, 400, ""},
		{"v1 uid and account", "POST", "/v1/tokens", "alice", `{"channel":"demo","role":"1","uid":1,"account":"alice"}`, 400, "uid"},
		{"v1 uid wrong type", "POST", "/v1/tokens", "alice", `{"channel":"demo","role":"1","uid":"x"}`, 400, "uid"},
		{"v1 huge body", "POST", "/v1/tokens", "alice", `{"channel":"` + strings.Repeat("a", 2<<20) + `"}`, 413, ""},
		{"unknown route", "GET", "/nope", "alice", "", 404, ""},
		{"wrong method", "DELETE", "/ping", "", "", 405, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, m := f.do(t, tc.method, tc.path, tc.bearer, tc.body)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %v", resp.StatusCode, tc.status, m)
			}
			if ct := resp.Header.Get("Content-Type"); ct != problem.ContentType {
				t.Fatalf("content type %q, want problem+json", ct)
			}
			if m["type"] == nil || m["title"] == nil || int(m["status"].(float64)) != tc.status {
				t.Fatalf("not a problem document: %v", m)
			}
			if tc.field != "" && m["field"] != tc.field {
				t.Fatalf("field %v, want %q: %v", m["field"], tc.field, m)
			}
			for k := range m {
				if strings.Contains(k, "Token") {
					t.Fatalf("problem carries a token field: %v", m)
				}
			}
		})
	}
	if _, m := f.do(t, "GET", "/rtc/demo/1/uid/0", "alice", ""); !strings.Contains(m["detail"].(string), uid) {
		t.Fatalf("uid 0 refusal %q does not name the caller's uid %s", m["detail"], uid)
	}
}

func TestTokens_LogDownAnswers503WithRetryAfterAndNoToken(t *testing.T) {
	f := newAPI(t, nil, true)
	uid := f.uid(t, "alice")
	resp, m := f.do(t, "GET", "/rtc/demo/publisher/uid/"+uid, "alice", "")
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("status %d Retry-After %q, want 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if m["rtcToken"] != nil || strings.Contains(m["detail"].(string), "connection refused") {
		t.Fatalf("503 body leaks a token or internal detail: %v", m)
	}
}

func TestMe_ShowsBoundUID(t *testing.T) {
	f := newAPI(t, nil, false)
	uid := f.uid(t, "alice")
	resp, m := f.do(t, "GET", "/v1/me", "alice", "")
	if resp.StatusCode != 200 || m["subject"] != "alice" || strconv.FormatFloat(m["uid"].(float64), 'f', 0, 64) != uid {
		t.Fatalf("status %d body %v, want uid %s", resp.StatusCode, m, uid)
	}
}

func TestRequestID_EchoedWhenWellFormedReplacedOtherwise(t *testing.T) {
	f := newAPI(t, nil, false)
	resp, _ := f.do(t, "GET", "/ping", "", "", "X-Request-Id", "abc-123.X_y")
	if got := resp.Header.Get("X-Request-Id"); got != "abc-123.X_y" {
		t.Fatalf("X-Request-Id %q, want the client's", got)
	}
	resp, _ = f.do(t, "GET", "/ping", "", "", "X-Request-Id", "bad id<script>")
	if got := resp.Header.Get("X-Request-Id"); got == "" || strings.ContainsAny(got, " <>") {
		t.Fatalf("X-Request-Id %q, want a fresh well-formed id", got)
	}
	resp, m := f.do(t, "GET", "/nope", "", "")
	if m["requestId"] != resp.Header.Get("X-Request-Id") {
		t.Fatalf("problem requestId %v != header %q", m["requestId"], resp.Header.Get("X-Request-Id"))
	}
}

func TestPing_AnswersLikeTheSeed(t *testing.T) {
	f := newAPI(t, nil, false)
	resp, m := f.do(t, "GET", "/ping", "", "")
	if resp.StatusCode != 200 || m["message"] != "pong" {
		t.Fatalf("%d %v", resp.StatusCode, m)
	}
}

func TestRecoverer_Answers500WithoutThePanic(t *testing.T) {
	h := requestID(problem.WithLogger(discardLogger())(recoverer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		panic("secret internal state")
	}))))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	if rec.Code != 500 || strings.Contains(rec.Body.String(), "secret") || rec.Header().Get("Content-Type") != problem.ContentType {
		t.Fatalf("%d %q", rec.Code, rec.Body.String())
	}
}

func TestCORS_AllowsConfiguredOriginsAndNativeApps(t *testing.T) {
	f := newAPI(t, func(d *Deps) { d.CORSOrigins = []string{"https://app.example.com"} }, false)
	uid := f.uid(t, "alice")
	resp, _ := f.do(t, "GET", "/rtc/demo/1/uid/"+uid, "alice", "", "Origin", "https://app.example.com")
	if resp.Header.Get("Access-Control-Allow-Origin") != "https://app.example.com" {
		t.Fatalf("allowed origin got no ACAO: %v", resp.Header)
	}
	resp, _ = f.do(t, "GET", "/rtc/demo/1/uid/"+uid, "alice", "", "Origin", "https://evil.example.com")
	if resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Fatal("other origin got ACAO")
	}
	resp, _ = f.do(t, "OPTIONS", "/v1/tokens", "", "", "Origin", "https://app.example.com", "Access-Control-Request-Method", "POST")
	if resp.StatusCode != 204 || !strings.Contains(resp.Header.Get("Access-Control-Allow-Headers"), "Authorization") {
		t.Fatalf("preflight %d %v", resp.StatusCode, resp.Header)
	}
	resp, _ = f.do(t, "OPTIONS", "/v1/tokens", "", "", "Origin", "https://evil.example.com", "Access-Control-Request-Method", "POST")
	if resp.StatusCode != 403 {
		t.Fatalf("preflight from other origin: %d, want 403", resp.StatusCode)
	}
	if resp, _ := f.do(t, "GET", "/rtc/demo/1/uid/"+uid, "alice", ""); resp.StatusCode != 200 {
		t.Fatalf("request without Origin: %d", resp.StatusCode)
	}
}

func TestRateLimit_PerSubject429WithRetryAfter(t *testing.T) {
	f := newAPI(t, func(d *Deps) { d.RateLimit = RateLimit{Rate: 0.001, Burst: 2} }, false)
	uid := f.uid(t, "alice")
	for i := 0; i < 2; i++ {
		if resp, m := f.do(t, "GET", "/rtc/demo/1/uid/"+uid, "alice", ""); resp.StatusCode != 200 {
			t.Fatalf("request %d: %d %v", i, resp.StatusCode, m)
		}
	}
	resp, m := f.do(t, "GET", "/rtc/demo/1/uid/"+uid, "alice", "")
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("third request: %d Retry-After %q %v", resp.StatusCode, resp.Header.Get("Retry-After"), m)
	}
	if resp, _ := f.do(t, "GET", "/rtm/bob", "bob", ""); resp.StatusCode != 200 {
		t.Fatalf("another subject is limited too: %d", resp.StatusCode)
	}
}

func TestTokens_UnreadableRequestsAreRecordedAsInvalid(t *testing.T) {
	f := newAPI(t, nil, false)
	for _, c := range []struct{ path, body string }{
		{"/getToken", `{"tokenType":`},
		{"/getToken", `{"tokenType":"apaas","uid":"alice"}`},
		{"/v1/tokens", `{"channel":"demo","role":"1","uid":1,"account":"alice"}`},
	} {
		if resp, m := f.do(t, "POST", c.path, "alice", c.body); resp.StatusCode != 400 {
			t.Fatalf("%s %s: %d %v", c.path, c.body, resp.StatusCode, m)
		}
	}
	page, err := f.log.Search(context.Background(), audit.Filter{Decision: audit.DecisionInvalid})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Records) != 3 {
		t.Fatalf("%d invalid records, want one per refused request", len(page.Records))
	}
}
