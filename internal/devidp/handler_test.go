package devidp

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"

	jose "github.com/go-jose/go-jose/v4"
)

// do sends a request from a loopback peer straight to the handler.
func do(t *testing.T, h http.Handler, method, target, form string) *httptest.ResponseRecorder {
	t.Helper()
	var r *http.Request
	if form == "" {
		r = httptest.NewRequest(method, target, nil)
	} else {
		r = httptest.NewRequest(method, target, strings.NewReader(form))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	r.RemoteAddr, r.Host = "127.0.0.1:40000", "127.0.0.1:8080"
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func TestDiscoveryDocument(t *testing.T) {
	iss, err := New(Options{Issuer: "http://127.0.0.1:8080/dev/oidc", Audience: testAudience})
	if err != nil {
		t.Fatal(err)
	}
	w := do(t, iss.Handler(), http.MethodGet, "/.well-known/openid-configuration", "")
	if w.Code != http.StatusOK || w.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("status %d, Content-Type %q; want 200 application/json", w.Code, w.Header().Get("Content-Type"))
	}
	var doc map[string]any
	if err := json.Unmarshal(w.Body.Bytes(), &doc); err != nil {
		t.Fatalf("decode: %v", err)
	}
	want := map[string]any{
		"issuer":                                "http://127.0.0.1:8080/dev/oidc",
		"jwks_uri":                              "http://127.0.0.1:8080/dev/oidc/keys",
		"token_endpoint":                        "http://127.0.0.1:8080/dev/oidc/token",
		"id_token_signing_alg_values_supported": []any{"ES256"},
		"authorization_endpoint":                "http://127.0.0.1:8080/dev/oidc/auth",
		"response_types_supported":              []any{"code"},
		"code_challenge_methods_supported":      []any{"S256"},
		"subject_types_supported":               []any{"public"},
		"grant_types_supported":                 []any{"password", "authorization_code"},
	}
	for field, v := range want {
		got, _ := json.Marshal(doc[field])
		exp, _ := json.Marshal(v)
		if string(got) != string(exp) {
			t.Errorf("%s = %s, want %s", field, got, exp)
		}
	}
}

func TestJWKS_PublishesOnlyThePublicKey(t *testing.T) {
	iss := newTestIssuer(t)
	w := do(t, iss.Handler(), http.MethodGet, "/keys", "")
	if w.Code != http.StatusOK {
		t.Fatalf("status %d, want 200", w.Code)
	}
	var raw struct {
		Keys []map[string]any `json:"keys"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &raw); err != nil {
		t.Fatalf("decode: %v", err)
	}
	if len(raw.Keys) != 1 {
		t.Fatalf("JWKS has %d keys, want 1", len(raw.Keys))
	}
	for _, private := range []string{"d", "p", "q", "dp", "dq", "qi", "k"} {
		if _, ok := raw.Keys[0][private]; ok {
			t.Errorf("JWKS key has private member %q", private)
		}
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(w.Body.Bytes(), &set); err != nil {
		t.Fatalf("decode as JWKS: %v", err)
	}
	k := set.Keys[0]
	if !k.IsPublic() || k.Algorithm != "ES256" || k.Use != "sig" || k.KeyID == "" {
		t.Errorf("key public=%v alg=%q use=%q kid=%q; want public ES256 sig with a kid", k.IsPublic(), k.Algorithm, k.Use, k.KeyID)
	}
}

func TestPasswordGrant_Refusals(t *testing.T) {
	tests := []struct {
		name      string
		form      string
		status    int
		errorCode string
	}{
		{"wrong password", "grant_type=password&username=alice&password=dev-bob", http.StatusUnauthorized, "invalid_grant"},
		{"unknown user", "grant_type=password&username=mallory&password=dev-mallory", http.StatusUnauthorized, "invalid_grant"},
		{"another user's password", "grant_type=password&username=bob&password=dev-alice", http.StatusUnauthorized, "invalid_grant"},
		{"unknown grant type", "grant_type=client_credentials&client_id=broker-dev", http.StatusBadRequest, "unsupported_grant_type"},
		{"unknown authorization code", "grant_type=authorization_code&code=x", http.StatusBadRequest, "invalid_grant"},
		{"client credentials grant", "grant_type=client_credentials", http.StatusBadRequest, "unsupported_grant_type"},
		{"no grant type", "username=alice&password=dev-alice", http.StatusBadRequest, "invalid_request"},
		{"no password", "grant_type=password&username=alice", http.StatusBadRequest, "invalid_request"},
		{"no username", "grant_type=password&password=dev-alice", http.StatusBadRequest, "invalid_request"},
		{"repeated username", "grant_type=password&username=mallory&username=alice&password=dev-alice", http.StatusBadRequest, "invalid_request"},
		{"another client's id", "grant_type=password&username=alice&password=dev-alice&client_id=other", http.StatusUnauthorized, "invalid_client"},
		{"body over the limit", "grant_type=password&username=alice&password=" + strings.Repeat("x", maxFormBytes), http.StatusRequestEntityTooLarge, "invalid_request"},
		{"malformed form", "grant_type=password&username=%zz", http.StatusBadRequest, "invalid_request"},
	}
	h := newTestIssuer(t).Handler()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := do(t, h, http.MethodPost, "/token", tt.form)
			var body errorResponse
			if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
				t.Fatalf("status %d, body is not JSON: %v", w.Code, err)
			}
			if w.Code != tt.status || body.Error != tt.errorCode {
				t.Errorf("status %d error %q, want %d %q", w.Code, body.Error, tt.status, tt.errorCode)
			}
			if strings.Contains(w.Body.String(), "dev-") || strings.Contains(w.Body.String(), "eyJ") {
				t.Error("refusal echoes a password or carries a token")
			}
			if w.Header().Get("Cache-Control") != "no-store" {
				t.Errorf("Cache-Control = %q, want no-store", w.Header().Get("Cache-Control"))
			}
		})
	}
}

func TestPasswordGrant_IgnoresCredentialsInTheQueryString(t *testing.T) {
	w := do(t, newTestIssuer(t).Handler(), http.MethodPost,
		"/token?grant_type=password&username=alice&password=dev-alice", "scope=openid")
	if w.Code != http.StatusBadRequest || !strings.Contains(w.Body.String(), `"invalid_request"`) {
		t.Fatalf("status %d body %s, want 400 invalid_request", w.Code, w.Body)
	}
}

func TestPasswordGrant_AcceptsMissingClientIDAndIgnoresScope(t *testing.T) {
	w := do(t, newTestIssuer(t).Handler(), http.MethodPost, "/token",
		url.Values{"grant_type": {"password"}, "username": {"bob"}, "password": {"dev-bob"}, "scope": {"anything at all"}}.Encode())
	var tr tokenResponse
	if err := json.Unmarshal(w.Body.Bytes(), &tr); err != nil || w.Code != http.StatusOK || tr.IDToken == "" {
		t.Fatalf("status %d, decode error %v; want 200 with a token", w.Code, err)
	}
	if w.Header().Get("Cache-Control") != "no-store" {
		t.Errorf("Cache-Control = %q, want no-store", w.Header().Get("Cache-Control"))
	}
}

func TestTokenForUser(t *testing.T) {
	h := newTestIssuer(t).Handler()
	tests := []struct {
		target   string
		status   int
		contains string
	}{
		{"/token?user=alice", http.StatusOK, "eyJ"},
		{"/token?user=mallory", http.StatusNotFound, `no demo user "mallory" (known: alice, bob, carol)`},
		{"/token", http.StatusBadRequest, "user is required (known: alice, bob, carol)"},
	}
	for _, tt := range tests {
		t.Run(tt.target, func(t *testing.T) {
			w := do(t, h, http.MethodGet, tt.target, "")
			if w.Code != tt.status || !strings.Contains(w.Body.String(), tt.contains) {
				t.Errorf("status %d body %q, want %d containing %q", w.Code, w.Body, tt.status, tt.contains)
			}
			if ct := w.Header().Get("Content-Type"); ct != "text/plain; charset=utf-8" {
				t.Errorf("Content-Type = %q, want text/plain", ct)
			}
		})
	}
}

func TestHandler_RefusesNonLoopbackPeers(t *testing.T) {
	h := newTestIssuer(t).Handler()
	for _, peer := range []string{"192.0.2.1:1234", "[2001:db8::1]:1234", "0.0.0.0:1", "not-an-address", ""} {
		for _, target := range []string{"/.well-known/openid-configuration", "/keys", "/token?user=alice"} {
			r := httptest.NewRequest(http.MethodGet, target, nil)
			r.RemoteAddr, r.Host = peer, "localhost:8080"
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != http.StatusForbidden || strings.Contains(w.Body.String(), "eyJ") {
				t.Errorf("peer %q GET %s: status %d, want 403 without a token", peer, target, w.Code)
			}
		}
	}
}

func TestLoopbackOnly_RefusesNonLoopbackHostNames(t *testing.T) {
	h := LoopbackOnly(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) }))
	for host, ok := range map[string]bool{
		"localhost": true, "localhost:8080": true, "LOCALHOST:1": true, "127.0.0.1:8080": true, "127.9.9.9": true,
		"[::1]:8080": true, "[::1]": true,
		"rebind.attacker.example:18080": false, "rebind.attacker.example": false, "localhost.attacker.example": false,
		"evil.localhost": false, "192.0.2.1:8080": false, "0.0.0.0:8080": false, "": false, "[::1": false,
		"127.0.0.1.nip.io": false, "[2001:db8::1]:80": false,
	} {
		r := httptest.NewRequest(http.MethodGet, "/v1/policies", nil)
		r.RemoteAddr, r.Host = "127.0.0.1:5000", host
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if got := w.Code == http.StatusNoContent; got != ok {
			t.Errorf("Host %q: status %d, want allowed=%v", host, w.Code, ok)
		}
		if !ok && w.Header().Get("Content-Type") != "application/problem+json" {
			t.Errorf("Host %q: refusal is not a problem document", host)
		}
	}
}

func TestHandler_AnswersOnlyItsRoutes(t *testing.T) {
	h := newTestIssuer(t).Handler()
	tests := []struct {
		method, target string
		status         int
		allow          string
	}{
		{http.MethodPut, "/token", http.StatusMethodNotAllowed, "GET, POST"},
		{http.MethodPost, "/keys", http.StatusMethodNotAllowed, "GET"},
		{http.MethodGet, "/authorize", http.StatusNotFound, ""},
		{http.MethodGet, "/dev/oidc/keys", http.StatusNotFound, ""},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.target, func(t *testing.T) {
			w := do(t, h, tt.method, tt.target, "")
			if w.Code != tt.status {
				t.Errorf("status %d, want %d", w.Code, tt.status)
			}
			if tt.allow != "" {
				allow := w.Header().Values("Allow")
				slices.Sort(allow)
				if strings.Join(allow, ", ") != tt.allow {
					t.Errorf("Allow = %q, want %q", allow, tt.allow)
				}
			}
		})
	}
}
