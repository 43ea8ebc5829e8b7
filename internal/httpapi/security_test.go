package httpapi

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/broker-dev/broker/internal/audit"
	"github.com/broker-dev/broker/internal/policy"
	"github.com/broker-dev/broker/internal/token"
)

// seriesCount scrapes /metrics and counts the samples of one metric family.
func seriesCount(t *testing.T, f *apiFixture, family string) (int, int) {
	t.Helper()
	resp, err := http.Get(f.srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	n, size := 0, 0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		size += len(sc.Bytes())
		if strings.HasPrefix(sc.Text(), family) {
			n++
		}
	}
	return n, size
}

// rawRequest sends one request line as written, so that methods and paths no
// client library would send reach the server.
func rawRequest(t *testing.T, addr, method, path string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "%s %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", method, path)
	_, _ = io.Copy(io.Discard, c)
}

func TestMetrics_HostileMethodsAndPathsKeepTheSeriesCountConstant(t *testing.T) {
	reg := prometheus.NewRegistry()
	f := newAPI(t, func(d *Deps) {
		d.Registerer = reg
		d.Metrics = promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
	}, false)
	addr := strings.TrimPrefix(f.srv.URL, "http://")
	warm := func(round int) {
		for i := 0; i < 50; i++ {
			method := fmt.Sprintf("X%dR%d%s", i, round, strings.Repeat("M", 2000))
			rawRequest(t, addr, method, "/healthz")
			rawRequest(t, addr, "GET", fmt.Sprintf("/no/such/%d/%d/%s", round, i, strings.Repeat("p", 500)))
			rawRequest(t, addr, method, fmt.Sprintf("/rtc/c%d/publisher/uid/%d", i, i))
		}
	}
	seriesCount(t, f, "") // the scrape is a request too
	warm(0)
	before, _ := seriesCount(t, f, "broker_http_request_duration_seconds_count")
	warm(1)
	warm(2)
	after, size := seriesCount(t, f, "broker_http_request_duration_seconds_count")
	if before != after || before == 0 {
		t.Fatalf("series grew from %d to %d with hostile methods and paths", before, after)
	}
	if size > 64<<10 {
		t.Fatalf("/metrics is %d bytes after hostile requests", size)
	}
}

// TestSeedRoutes_DecodeChannelsExactlyOnce: the literal channel "demo-%2A"
// (sent as demo-%252A) is that channel, never the pattern "demo-*"; the seed
// routes and /v1/tokens agree on every spelling.
func TestSeedRoutes_DecodeChannelsExactlyOnce(t *testing.T) {
	f := newAPI(t, nil, false)
	uid := f.uid(t, "alice")
	channelOf := func(m map[string]any, field string) string {
		t.Helper()
		tok, err := token.Parse(fmt.Sprint(m[field]))
		if err != nil {
			t.Fatalf("no token in %v: %v", m, err)
		}
		return tok.Services[0].Channel
	}
	for _, tc := range []struct{ sent, want string }{
		{"demo-%252A", "demo-%2A"},
		{"demo-%252A/", "demo-%2A"},
		{"demo-%2A", "demo-*"},
		{"demo-%2A/", "demo-*"},
		{"demo-%2525", "demo-%25"},
		{"a%20b", "a b"},
		{"a%20b/", "a b"},
	} {
		for _, route := range []string{"/rtc/%s/publisher/uid/" + uid, "/rte/%s/publisher/uid/" + uid} {
			path := fmt.Sprintf(route, strings.TrimSuffix(tc.sent, "/"))
			if strings.HasSuffix(tc.sent, "/") {
				path += "/"
			}
			resp, m := f.do(t, "GET", path, "alice", "")
			if resp.StatusCode != 200 {
				t.Fatalf("GET %s: %d %v", path, resp.StatusCode, m)
			}
			if got := channelOf(m, "rtcToken"); got != tc.want || m["channel"] != tc.want {
				t.Errorf("GET %s: token for %q (answer says %v), want %q", path, got, m["channel"], tc.want)
			}
		}
		resp, m := f.do(t, "POST", "/v1/tokens", "alice", fmt.Sprintf(`{"channel":%q,"role":"publisher","uid":%s}`, tc.want, uid))
		if resp.StatusCode != 200 || channelOf(m, "rtcToken") != tc.want {
			t.Errorf("/v1/tokens for %q: %d %v", tc.want, resp.StatusCode, m)
		}
	}
	// The RTM user id is decoded once too.
	if resp, m := f.do(t, "GET", "/rtm/alice%2520", "alice", ""); resp.StatusCode != 403 {
		t.Errorf("/rtm/alice%%2520 is the user %q, not alice: %d %v", "alice%20", resp.StatusCode, m)
	}
}

func TestReadyz_SaysWhatIsDownNeverWhere(t *testing.T) {
	secret := "failed to connect to `user=postgres database=broker`: 127.0.0.1:34455 connection refused"
	f := newAPI(t, func(d *Deps) {
		d.Ready = []Check{{Name: "database", Check: func(context.Context) error { return errors.New(secret) }}}
	}, false)
	resp, err := http.Get(f.srv.URL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 503 || !strings.Contains(string(body), `"database":"unavailable"`) {
		t.Fatalf("/readyz: %d %s", resp.StatusCode, body)
	}
	for _, leak := range []string{"127.0.0.1", "34455", "postgres", "connect"} {
		if strings.Contains(string(body), leak) {
			t.Fatalf("/readyz tells anyone %q: %s", leak, body)
		}
	}
}

func TestMe_NumericAccountOfAnotherUIDIsUnusable(t *testing.T) {
	f := newAPI(t, nil, false)
	_, m := f.do(t, "GET", "/v1/me", "1805641522", "")
	if e, _ := m["accountError"].(string); !strings.Contains(e, "reads as uid 1805641522") {
		t.Fatalf("/v1/me does not say the numeric account is unusable: %v", m)
	}
	for _, path := range []string{"/rtc/demo/publisher/userAccount/1805641522/", "/rtm/1805641522/"} {
		if resp, m := f.do(t, "GET", path, "1805641522", ""); resp.StatusCode != 403 {
			t.Errorf("GET %s as account 1805641522: %d %v", path, resp.StatusCode, m)
		}
	}
}

// TestTokens_HostileRequestsAreRecordedInBoundedSize: an oversized channel or
// role, or an unknown service, is a 400 for its sender and one bounded record.
func TestTokens_HostileRequestsAreRecordedInBoundedSize(t *testing.T) {
	f := newAPI(t, nil, false)
	uid := f.uid(t, "mallory")
	bodies := []string{
		fmt.Sprintf(`{"channel":%q,"role":"publisher","uid":%s}`, strings.Repeat("c", 4000), uid),
		fmt.Sprintf(`{"channel":"demo","role":%q,"uid":%s}`, strings.Repeat("r", 900_000), uid),
		fmt.Sprintf(`{"service":%q,"channel":"demo","role":"publisher","uid":%s}`, strings.Repeat("s", 100_000), uid),
	}
	for _, body := range bodies {
		if resp, m := f.do(t, "POST", "/v1/tokens", "mallory", body); resp.StatusCode != 400 {
			t.Fatalf("status %d: %.300v", resp.StatusCode, m)
		}
	}
	page, err := f.log.Search(context.Background(), audit.Filter{Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Records) != len(bodies) {
		t.Fatalf("%d records for %d invalid requests", len(page.Records), len(bodies))
	}
	for _, r := range page.Records {
		size := len(r.Channel) + len(r.Role) + len(r.Service) + len(r.Reason)
		if r.Decision != audit.DecisionInvalid || len(r.Channel) > 63 || len(r.Role) > 32 || size > 2048 {
			t.Errorf("record %d: %s, channel %d bytes, role %d bytes, %d bytes in all", r.Seq, r.Decision, len(r.Channel), len(r.Role), size)
		}
	}
}

// failingStore is a policy store whose reads fail once fail is set, as one
// whose database went away.
type failingStore struct {
	policy.Store
	fail atomic.Bool
}

func (s *failingStore) Version(ctx context.Context) (int64, error) {
	if s.fail.Load() {
		return 0, errors.New("read tcp 10.0.0.7:5432: connection reset by peer")
	}
	return s.Store.Version(ctx)
}

func (s *failingStore) Load(ctx context.Context, f policy.Filter) ([]policy.Line, int64, error) {
	if s.fail.Load() {
		return nil, 0, errors.New("read tcp 10.0.0.7:5432: connection reset by peer")
	}
	return s.Store.Load(ctx, f)
}

// TestErrors_InternalCausesAreLoggedOnceWithTheRequestID: the client gets a
// 500 with neither the cause nor a promise the log cannot keep; the log gets
// one line with the cause under "error" and the request id.
func TestErrors_InternalCausesAreLoggedOnceWithTheRequestID(t *testing.T) {
	store := &failingStore{Store: policy.NewMemStore()}
	rules, err := policy.Open(context.Background(), store, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rules.Close)
	if err := rules.Bootstrap(context.Background(), []string{"group:admins"}); err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	srv := httptest.NewServer(NewServer(Deps{Logger: slog.New(slog.NewJSONHandler(&logs, nil)), Authenticate: testAuth,
		Broker: newAPI(t, nil, false).broker, Policies: rules}))
	t.Cleanup(srv.Close)
	store.fail.Store(true)
	req, _ := http.NewRequest("GET", srv.URL+"/v1/policies", nil)
	req.Header.Set("Authorization", "Bearer root;admins")
	req.Header.Set("X-Request-Id", "req-boundary-1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 500 || strings.Contains(string(body), "10.0.0.7") || strings.Contains(string(body), "reset") {
		t.Fatalf("client saw %d %s", resp.StatusCode, body)
	}
	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil && m["msg"] == "request failed" {
			lines = append(lines, m)
		}
	}
	if len(lines) != 1 {
		t.Fatalf("%d 'request failed' lines, want 1:\n%s", len(lines), logs.String())
	}
	if l := lines[0]; l["request_id"] != "req-boundary-1" || !strings.Contains(fmt.Sprint(l["error"]), "connection reset by peer") || l["level"] != "ERROR" {
		t.Fatalf("log line %v lacks the request id or the cause", l)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestIndex_LinksTheConsoleTheAPIAndHealth(t *testing.T) {
	f := newAPI(t, nil, false)
	resp, err := http.Get(f.srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET /: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	for _, link := range []string{`href="/console/"`, `href="/openapi.json"`, `href="/healthz"`, "Quick start"} {
		if !strings.Contains(string(body), link) {
			t.Errorf("GET / lacks %s", link)
		}
	}
}

// TestSeedRoutes_SignedUIDsScreenShareAndSeparateRTMIDs: a Kotlin Int holding
// uid 3617108752 sends -677858544 and gets the token for 3617108752; the
// screen-share uid is accepted like the first; /rte takes a separate RTM id.
func TestSeedRoutes_SignedUIDsScreenShareAndSeparateRTMIDs(t *testing.T) {
	f := newAPI(t, nil, false)
	const alice = "alice;dev;3617108752"
	uidOf := func(m map[string]any, field string) string {
		t.Helper()
		tok, err := token.Parse(fmt.Sprint(m[field]))
		if err != nil {
			t.Fatalf("no %s in %v", field, m)
		}
		if field == "rtmToken" {
			return tok.Services[0].User
		}
		return tok.Services[0].UID
	}
	for _, path := range []string{"/rtc/demo/publisher/uid/-677858544/", "/rtc/demo/publisher/uid/-677858544", "/rte/demo/publisher/uid/-677858544/"} {
		resp, m := f.do(t, "GET", path, alice, "")
		if resp.StatusCode != 200 || uidOf(m, "rtcToken") != "3617108752" || m["uid"] != float64(3617108752) {
			t.Errorf("GET %s: %d %v", path, resp.StatusCode, m)
		}
	}
	resp, m := f.do(t, "POST", "/getToken", alice, `{"tokenType":"rtc","channel":"demo","role":"publisher","uid":-677858544}`)
	if resp.StatusCode != 200 || uidOf(m, "token") != "3617108752" {
		t.Errorf("getToken with -677858544: %d %v", resp.StatusCode, m)
	}
	if resp, m := f.do(t, "GET", "/rtc/demo/publisher/uid/-1/", alice, ""); resp.StatusCode != 403 {
		t.Errorf("uid -1 (4294967295, not alice's): %d %v", resp.StatusCode, m)
	}

	_, me := f.do(t, "GET", "/v1/me", alice, "")
	ss := fmt.Sprint(int64(me["screenShareUid"].(float64)))
	resp, m = f.do(t, "GET", "/rtc/demo/publisher/uid/"+ss+"/", alice, "")
	if resp.StatusCode != 200 || uidOf(m, "rtcToken") != ss {
		t.Fatalf("screen-share uid %s: %d %v", ss, resp.StatusCode, m)
	}
	page, _ := f.log.Search(context.Background(), audit.Filter{Limit: 1})
	if !strings.Contains(page.Records[0].Reason, "screen-share uid") {
		t.Errorf("the record does not say the uid is the screen-share uid: %q", page.Records[0].Reason)
	}

	resp, m = f.do(t, "GET", "/rte/demo/publisher/uid/3617108752/alice/", alice, "")
	if resp.StatusCode != 200 || uidOf(m, "rtcToken") != "3617108752" || uidOf(m, "rtmToken") != "alice" {
		t.Errorf("/rte with a separate RTM id: %d %v", resp.StatusCode, m)
	}
	if resp, m := f.do(t, "GET", "/rte/demo/publisher/uid/3617108752/bob/", alice, ""); resp.StatusCode != 403 {
		t.Errorf("/rte with someone else's RTM id: %d %v", resp.StatusCode, m)
	}
}

// TestChat_UserTokensForOneselfUnderLoginRulesAppTokensForTheRight: Chat user
// tokens (service 5, privilege user) only for the caller's own id and only
// where a login rule allows; Chat app tokens (privilege app) only with read
// on api:chat-app. Every answer is recorded.
func TestChat_UserTokensForOneselfUnderLoginRulesAppTokensForTheRight(t *testing.T) {
	var rules *policy.Engine
	f := newAPI(t, func(d *Deps) { rules = d.Policies }, false)
	chatOf := func(m map[string]any, field string) token.Service {
		t.Helper()
		tok, err := token.Parse(fmt.Sprint(m[field]))
		if err != nil || !tok.Verify(testCert) || len(tok.Services) != 1 || tok.Services[0].Type != token.ServiceChat {
			t.Fatalf("%s is not a verified Chat token: %v %v", field, m, err)
		}
		return tok.Services[0]
	}
	if resp, m := f.do(t, "GET", "/chat/account/alice/", "alice", ""); resp.StatusCode != 403 || !strings.Contains(fmt.Sprint(m["detail"]), "log in to chat") {
		t.Fatalf("chat without a login rule: %d %v", resp.StatusCode, m)
	}
	if _, err := rules.Add(context.Background(), policy.Actor{Subject: "test", Operator: true}, policy.Rule{Subject: "group:dev", Channel: policy.LoginChat, Role: policy.Login, Effect: policy.Allow}); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/chat/account/alice/", "/chat/account/alice"} {
		resp, m := f.do(t, "GET", path, "alice", "")
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s: %d %v", path, resp.StatusCode, m)
		}
		if svc := chatOf(m, "chatToken"); svc.User != "alice" || svc.Privileges[0].ID != token.PrivilegeChatUser {
			t.Errorf("GET %s: service %+v", path, svc)
		}
	}
	resp, m := f.do(t, "POST", "/getToken", "alice", `{"tokenType":"chat","uid":"alice","expire":600}`)
	if resp.StatusCode != 200 || chatOf(m, "token").User != "alice" {
		t.Errorf("getToken chat: %d %v", resp.StatusCode, m)
	}
	if resp, m := f.do(t, "GET", "/chat/account/bob/", "alice", ""); resp.StatusCode != 403 {
		t.Errorf("someone else's chat id: %d %v", resp.StatusCode, m)
	}
	for _, path := range []string{"/chat/app/", "/chat/app"} {
		if resp, m := f.do(t, "GET", path, "alice", ""); resp.StatusCode != 403 || !strings.Contains(fmt.Sprint(m["detail"]), "api:chat-app") {
			t.Errorf("chat app token without the right: %d %v", resp.StatusCode, m)
		}
		resp, m := f.do(t, "GET", path, "root;admins", "")
		if resp.StatusCode != 200 {
			t.Fatalf("chat app token for an admin: %d %v", resp.StatusCode, m)
		}
		if svc := chatOf(m, "chatToken"); svc.User != "" || svc.Privileges[0].ID != token.PrivilegeChatApp {
			t.Errorf("chat app service %+v", svc)
		}
	}
	page, _ := f.log.Search(context.Background(), audit.Filter{Limit: 100})
	services := map[string]int{}
	for _, r := range page.Records {
		services[r.Service+"/"+string(r.Decision)]++
	}
	if services["chat/granted"] != 3 || services["chat-app/granted"] != 2 || services["chat-app/denied"] != 2 || services["chat/denied"] != 2 {
		t.Errorf("records by service and decision: %v", services)
	}
}

func TestCORS_HeadersPatternsVaryAndOneLogLinePerRefusedOrigin(t *testing.T) {
	logs := &syncBuffer{}
	f := newAPI(t, func(d *Deps) {
		d.CORSOrigins = []string{"https://app.example.com", "https://*.example.org"}
		d.Logger = slog.New(slog.NewJSONHandler(logs, nil))
	}, false)
	pre := func(origin, headers string) *http.Response {
		resp, _ := f.do(t, "OPTIONS", "/v1/tokens", "", "", "Origin", origin, "Access-Control-Request-Method", "POST",
			"Access-Control-Request-Headers", headers)
		return resp
	}
	resp := pre("https://app.example.com", "authorization, content-type, traceparent, tracestate, x-request-id")
	if resp.StatusCode != 204 || !strings.Contains(resp.Header.Get("Access-Control-Allow-Headers"), "traceparent") {
		t.Fatalf("preflight with every accepted header: %d %v", resp.StatusCode, resp.Header)
	}
	if v := strings.Join(resp.Header.Values("Vary"), ","); !strings.Contains(v, "Origin") || !strings.Contains(v, "Access-Control-Request-Headers") || !strings.Contains(v, "Access-Control-Request-Method") {
		t.Errorf("Vary %q", v)
	}
	if resp := pre("https://app.example.com", "Authorization, X-Custom"); resp.StatusCode != 403 {
		t.Errorf("an unaccepted header is refused with a reason, not silently: %d", resp.StatusCode)
	}
	for origin, ok := range map[string]bool{
		"https://a.example.org": true, "https://a.b.example.org": true, "https://example.org": false,
		"http://a.example.org": false, "https://a.example.org:8443": false, "https://evilexample.org": false,
		"https://a.example.org.evil.com": false,
	} {
		if got := pre(origin, "Authorization").StatusCode == 204; got != ok {
			t.Errorf("origin %s: allowed %v, want %v", origin, got, ok)
		}
	}
	for range 3 {
		pre("https://evil.example.com", "Authorization")
	}
	if n := strings.Count(logs.String(), `"origin":"https://evil.example.com"`); n != 1 {
		t.Errorf("a refused origin was logged %d times, want once", n)
	}
}

// TestExplain_GroupsAreBoundedAsInATokenClaim: repeated groups count once;
// more distinct groups than a token may carry is a 400 before any work.
func TestExplain_GroupsAreBoundedAsInATokenClaim(t *testing.T) {
	f := newAPI(t, nil, false)
	many := make([]string, 74000)
	for i := range many {
		many[i] = fmt.Sprint("g", i)
	}
	body, _ := json.Marshal(map[string]any{"subject": "bob", "groups": many, "channel": "demo", "role": "publisher"})
	start := time.Now()
	resp, m := f.do(t, "POST", "/v1/policies/explain", "root;admins", string(body))
	if resp.StatusCode != 400 || m["field"] != "groups" || time.Since(start) > 5*time.Second {
		t.Fatalf("74,000 groups: %d %v", resp.StatusCode, m)
	}
	same, _ := json.Marshal(map[string]any{"subject": "bob", "groups": strings.Fields(strings.Repeat("dev ", 50000)), "channel": "demo", "role": "publisher"})
	if resp, m := f.do(t, "POST", "/v1/policies/explain", "root;admins", string(same)); resp.StatusCode != 200 || m["allowed"] != true {
		t.Fatalf("one group repeated 50,000 times: %d %v", resp.StatusCode, m)
	}
}
