package agoratest_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/broker-dev/broker/internal/agora/agoratest"
)

const (
	app      = "0123456789abcdef0123456789ABCDEF"
	customer = "customer"
	secret   = "test-only-secret"
)

// send makes one raw request as a client of the account would.
func send(t *testing.T, s *agoratest.Server, method, query, body string, edit ...func(*http.Request)) (int, map[string]any) {
	t.Helper()
	target := s.URL + agoratest.Path
	if query != "" {
		target += "?" + query
	}
	req, err := http.NewRequest(method, target, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth(customer, secret)
	req.Header.Set("Content-Type", "application/json")
	for _, e := range edit {
		e(req)
	}
	resp, err := s.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var answer map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&answer); err != nil {
		t.Fatalf("%s: answer is not JSON: %v", method, err)
	}
	return resp.StatusCode, answer
}

func TestServer_RecordsEveryBreachOfTheContract(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, method, query, body string
		edit                      func(*http.Request)
		status                    int
	}{
		{name: "wrong secret", method: "GET", query: "appid=" + app, edit: func(r *http.Request) { r.SetBasicAuth(customer, "x") }, status: 401},
		{name: "no credentials", method: "GET", query: "appid=" + app, edit: func(r *http.Request) { r.Header.Del("Authorization") }, status: 401},
		{name: "no content type", method: "POST", body: `{"appid":"` + app + `","uid":1}`, edit: func(r *http.Request) { r.Header.Del("Content-Type") }, status: 400},
		{name: "form content type", method: "POST", body: `{"appid":"` + app + `","uid":1}`, edit: func(r *http.Request) { r.Header.Set("Content-Type", "application/x-www-form-urlencoded") }, status: 400},
		{name: "other path", method: "GET", query: "appid=" + app, edit: func(r *http.Request) { r.URL.Path += "/" }, status: 404},
		{name: "method", method: "PATCH", body: `{}`, status: 400},
		{name: "list without appid", method: "GET", status: 400},
		{name: "list with another parameter", method: "GET", query: "appid=" + app + "&page=2", status: 400},
		{name: "unknown field", method: "POST", body: `{"appid":"` + app + `","uid":1,"reason":"spam"}`, status: 400},
		{name: "missing appid", method: "POST", body: `{"uid":1}`, status: 400},
		{name: "short appid", method: "POST", body: `{"appid":"abc","uid":1}`, status: 400},
		{name: "uid as a string", method: "POST", body: `{"appid":"` + app + `","uid":"1"}`, status: 400},
		{name: "uid 0", method: "POST", body: `{"appid":"` + app + `","uid":0,"cname":"a"}`, status: 400},
		{name: "uid over 32 bits", method: "POST", body: `{"appid":"` + app + `","uid":4294967296}`, status: 400},
		{name: "ip 0", method: "POST", body: `{"appid":"` + app + `","ip":"0"}`, status: 400},
		{name: "no scope", method: "POST", body: `{"appid":"` + app + `","time":5}`, status: 400},
		{name: "unknown privilege", method: "POST", body: `{"appid":"` + app + `","uid":1,"privileges":["kick"]}`, status: 400},
		{name: "empty privileges", method: "POST", body: `{"appid":"` + app + `","uid":1,"privileges":[]}`, status: 400},
		{name: "both durations", method: "POST", body: `{"appid":"` + app + `","uid":1,"time":1,"time_in_seconds":60}`, status: 400},
		{name: "time over a day", method: "POST", body: `{"appid":"` + app + `","uid":1,"time":1441}`, status: 400},
		{name: "time negative", method: "POST", body: `{"appid":"` + app + `","uid":1,"time":-1}`, status: 400},
		{name: "seconds under 10", method: "POST", body: `{"appid":"` + app + `","uid":1,"time_in_seconds":9}`, status: 400},
		{name: "seconds over the maximum", method: "POST", body: `{"appid":"` + app + `","uid":1,"time_in_seconds":86431}`, status: 400},
		{name: "fractional seconds", method: "POST", body: `{"appid":"` + app + `","uid":1,"time_in_seconds":60.5}`, status: 400},
		{name: "update without id", method: "PUT", body: `{"appid":"` + app + `","time":1}`, status: 400},
		{name: "delete with time", method: "DELETE", body: `{"appid":"` + app + `","id":1,"time":1}`, status: 400},
		{name: "body not an object", method: "DELETE", body: `[1]`, status: 400},
	} {
		s := agoratest.New(t, customer, secret) // a fresh account each time, far from its rate limit
		status, answer := send(t, s, tc.method, tc.query, tc.body, func(r *http.Request) {
			if tc.edit != nil {
				tc.edit(r)
			}
		})
		if v := s.TakeViolations(); status != tc.status || len(v) == 0 || answer["message"] == nil {
			t.Errorf("%s: answered %d %v with violations %q; want %d with a message, and a violation", tc.name, status, answer, v, tc.status)
		}
		if held := s.Rules(app); len(held) != 0 {
			t.Errorf("%s: made rules %+v", tc.name, held)
		}
	}
}

func TestServer_KeepsRulesAsDocumented(t *testing.T) {
	t.Parallel()
	s := agoratest.New(t, customer, secret)
	status, answer := send(t, s, "POST", "", `{"appid":"`+app+`","cname":"lobby","uid":7,"time":0,"privileges":["publish_audio"]}`)
	if status != 200 || answer["status"] != "success" || answer["id"] == nil {
		t.Fatalf("create with time 0 = %d %v", status, answer)
	}
	status, answer = send(t, s, "POST", "", `{"appid":"`+app+`","ip":"192.0.2.1","time":2}`)
	if status != 200 {
		t.Fatalf("create = %d %v", status, answer)
	}
	id := answer["id"].(float64)
	_, answer = send(t, s, "GET", "appid="+app, "")
	rules := answer["rules"].([]any)
	if len(rules) != 1 { // the kick without a ban has already expired
		t.Fatalf("list = %v, want one rule", answer)
	}
	r := rules[0].(map[string]any)
	if r["id"] != id || r["ip"] != "192.0.2.1" || r["uid"] != nil || r["cname"] != nil || r["ts"] == nil {
		t.Errorf("listed rule = %v", r)
	}
	if held := s.Rules(app); held[1].Seconds != 120 || held[1].Privileges[0] != "join_channel" {
		t.Errorf("held rule = %+v, want 120 s of join_channel (the default)", held[1])
	}
	if status, answer = send(t, s, "PUT", "", `{"appid":"`+app+`","id":424242,"time_in_seconds":60}`); status != 404 || answer["message"] == nil {
		t.Errorf("update of an unknown id = %d %v, want 404 with a message", status, answer)
	}
	if status, answer = send(t, s, "DELETE", "", fmt.Sprintf(`{"appid":"%s","id":%d}`, app, int64(id))); status != 200 || answer["id"] != id {
		t.Errorf("delete = %d %v", status, answer)
	}
	if v := s.Violations(); len(v) > 0 {
		t.Errorf("violations from documented requests: %q", v)
	}
}

func TestServer_AnswersTooManyRequestsOverTheAccountLimit(t *testing.T) {
	t.Parallel()
	s := agoratest.New(t, customer, secret)
	start := time.Now()
	statuses := make([]int, 0, agoratest.RateLimit+1)
	for range agoratest.RateLimit + 1 {
		status, _ := send(t, s, "GET", "appid="+app, "")
		statuses = append(statuses, status)
	}
	if time.Since(start) >= time.Second {
		// The requests were not all within one second: nothing to conclude.
		t.Logf("%d requests took %v; the limit was not tested", len(statuses), time.Since(start))
		s.TakeViolations()
		return
	}
	for i, status := range statuses {
		want := 200
		if i == agoratest.RateLimit {
			want = 429
		}
		if status != want {
			t.Errorf("request %d: %d, want %d", i+1, status, want)
		}
	}
	if v := s.TakeViolations(); len(v) != 1 || !strings.Contains(v[0], "more than 10 requests") {
		t.Errorf("violations = %q, want the rate limit", v)
	}
}
