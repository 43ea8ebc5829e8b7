package auth

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/broker-dev/broker/internal/problem"
)

// serve sends one request with the given Authorization header values through
// the middleware to MeHandler.
func serve(v *Verifier, authorization ...string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodGet, "/v1/me", nil)
	for _, a := range authorization {
		req.Header.Add("Authorization", a)
	}
	rec := httptest.NewRecorder()
	v.Middleware(MeHandler()).ServeHTTP(rec, req)
	return rec
}

func TestMiddleware_PassesTheCallerToMe(t *testing.T) {
	p := newTestProvider(t, "rsa-1")
	v, _ := startVerifier(t, p, nil)
	rec := serve(v, "Bearer "+p.token(t, "rsa-1", p.claims(map[string]any{"groups": []string{"broker-admins", "developers"}})))
	if rec.Code != http.StatusOK {
		t.Fatalf("status = %d, body %s", rec.Code, rec.Body)
	}
	var me Me
	if err := json.Unmarshal(rec.Body.Bytes(), &me); err != nil {
		t.Fatal(err)
	}
	want := Me{Issuer: p.issuer(), Subject: "alice", Account: "alice", Groups: []string{"broker-admins", "developers"}, Email: "alice@example.com"}
	if strings.Join(me.Groups, ",") != strings.Join(want.Groups, ",") || me.Issuer != want.Issuer ||
		me.Subject != want.Subject || me.Account != want.Account || me.Email != want.Email {
		t.Errorf("me = %+v, want %+v", me, want)
	}
}

func TestMiddleware_RefusesWithBearerChallengeAndProblem(t *testing.T) {
	p := newTestProvider(t, "rsa-1")
	v, logs := startVerifier(t, p, nil)
	expired := p.token(t, "rsa-1", p.claims(map[string]any{"exp": time.Now().Add(-time.Hour).Unix()}))
	wrongAud := p.token(t, "rsa-1", p.claims(map[string]any{"aud": "someone-else"}))
	huge := strings.Repeat("A", 40<<10)

	tests := []struct {
		name          string
		authorization []string
		secret        string // must appear nowhere in the response or the log
		wantStatus    int
		wantChallenge string // exact, or a prefix ending in "…"
		wantDetail    string
	}{
		{"missing header", nil, "", http.StatusUnauthorized,
			`Bearer realm="broker"`, "missing Authorization header"},
		{"basic scheme", []string{"Basic YWxpY2U6c2VjcmV0"}, "YWxpY2U6c2VjcmV0", http.StatusUnauthorized,
			`Bearer realm="broker"`, "must use the Bearer scheme"},
		{"token without scheme", []string{expired}, expired, http.StatusUnauthorized,
			`Bearer realm="broker"`, "must use the Bearer scheme"},
		{"expired token", []string{"Bearer " + expired}, expired, http.StatusUnauthorized,
			`Bearer realm="broker", error="invalid_token", error_description="token expired at …`, "token expired at"},
		{"lower-case scheme, wrong audience", []string{"bearer " + wrongAud}, wrongAud, http.StatusUnauthorized,
			`Bearer realm="broker", error="invalid_token", error_description="audience 'someone-else' not accepted…`, `audience "someone-else" not accepted`},
		{"empty bearer", []string{"Bearer "}, "", http.StatusUnauthorized,
			`Bearer realm="broker", error="invalid_token"…`, "empty"},
		{"scheme only", []string{"Bearer"}, "", http.StatusUnauthorized,
			`Bearer realm="broker", error="invalid_token"…`, "empty"},
		{"40 KB header", []string{"Bearer " + huge}, huge, http.StatusBadRequest,
			`Bearer realm="broker", error="invalid_request"…`, "longer than 16 KiB"},
		{"two headers", []string{"Bearer " + expired, "Bearer " + wrongAud}, expired, http.StatusBadRequest,
			`Bearer realm="broker", error="invalid_request"…`, "exactly one Authorization header"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := serve(v, tt.authorization...)
			if rec.Code != tt.wantStatus {
				t.Fatalf("status = %d, want %d; body %s", rec.Code, tt.wantStatus, rec.Body)
			}
			got := rec.Header().Get("WWW-Authenticate")
			if prefix, ok := strings.CutSuffix(tt.wantChallenge, "…"); ok {
				if !strings.HasPrefix(got, prefix) {
					t.Errorf("WWW-Authenticate = %q, want prefix %q", got, prefix)
				}
			} else if got != tt.wantChallenge {
				t.Errorf("WWW-Authenticate = %q, want %q", got, tt.wantChallenge)
			}
			if ct := rec.Header().Get("Content-Type"); ct != problem.ContentType {
				t.Errorf("Content-Type = %q, want %q", ct, problem.ContentType)
			}
			var d problem.Details
			if err := json.Unmarshal(rec.Body.Bytes(), &d); err != nil {
				t.Fatalf("body is not problem+json: %v", err)
			}
			if d.Status != tt.wantStatus || !strings.Contains(d.Detail, tt.wantDetail) {
				t.Errorf("problem = %+v, want status %d and detail containing %q", d, tt.wantStatus, tt.wantDetail)
			}
			if tt.secret != "" {
				if strings.Contains(rec.Body.String(), tt.secret) {
					t.Error("the token appears in the response body")
				}
				for name, values := range rec.Header() {
					if strings.Contains(strings.Join(values, " "), tt.secret) {
						t.Errorf("the token appears in response header %s", name)
					}
				}
				if strings.Contains(logs.String(), tt.secret) {
					t.Error("the token appears in the log")
				}
			}
		})
	}
	if !strings.Contains(logs.String(), "reason=expired") {
		t.Errorf("rejections are not logged with their reason; log:\n%s", logs)
	}
}
