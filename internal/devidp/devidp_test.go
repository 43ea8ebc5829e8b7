package devidp

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/go-chi/chi/v5"
	jose "github.com/go-jose/go-jose/v4"

	"github.com/broker-dev/broker/internal/apperr"
	"github.com/broker-dev/broker/internal/auth"
)

const testAudience = "broker-dev"

// mountings are the ways the broker may mount Handler at the issuer path.
var mountings = []struct {
	name   string
	prefix string
	mount  func(prefix string, h http.Handler) http.Handler
}{
	{"StripPrefix under /dev/oidc", "/dev/oidc", func(prefix string, h http.Handler) http.Handler {
		mux := http.NewServeMux()
		mux.Handle(prefix+"/", http.StripPrefix(prefix, h))
		return mux
	}},
	{"chi Mount under /dev/oidc", "/dev/oidc", func(prefix string, h http.Handler) http.Handler {
		r := chi.NewRouter()
		r.Mount(prefix, h)
		return r
	}},
	{"at the root", "", func(_ string, h http.Handler) http.Handler { return h }},
}

// serve starts a loopback server with an issuer mounted at prefix and returns
// the issuer.
func serve(t *testing.T, prefix string, mount func(string, http.Handler) http.Handler) *Issuer {
	t.Helper()
	srv := httptest.NewUnstartedServer(nil)
	iss, err := New(Options{Issuer: "http://" + srv.Listener.Addr().String() + prefix, Audience: testAudience})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	srv.Config.Handler = mount(prefix, iss.Handler())
	srv.Start()
	t.Cleanup(srv.Close)
	return iss
}

type userClaims struct {
	Email  string   `json:"email"`
	Name   string   `json:"name"`
	Groups []string `json:"groups"`
}

func TestIssuedTokensVerifyWithGoOIDC(t *testing.T) {
	for _, m := range mountings {
		t.Run(m.name, func(t *testing.T) {
			iss := serve(t, m.prefix, m.mount)
			ctx := context.Background()
			provider, err := oidc.NewProvider(ctx, iss.IssuerURL())
			if err != nil {
				t.Fatalf("discovery: %v", err)
			}
			verifier := provider.Verifier(&oidc.Config{ClientID: testAudience})
			for _, u := range DemoUsers() {
				for how, fetch := range map[string]func(*testing.T, *Issuer, User) string{
					"password grant": fetchByPassword,
					"GET ?user=":     fetchByName,
				} {
					t.Run(u.Subject+" by "+how, func(t *testing.T) {
						idt, err := verifier.Verify(ctx, fetch(t, iss, u))
						if err != nil {
							t.Fatalf("Verify: %v", err)
						}
						var c userClaims
						if err := idt.Claims(&c); err != nil {
							t.Fatalf("Claims: %v", err)
						}
						if idt.Subject != u.Subject || idt.Issuer != iss.IssuerURL() || !slices.Equal(idt.Audience, []string{testAudience}) {
							t.Errorf("sub/iss/aud = %q/%q/%q, want %q/%q/[%q]", idt.Subject, idt.Issuer, idt.Audience, u.Subject, iss.IssuerURL(), testAudience)
						}
						if c.Email != u.Email || c.Name != u.Name || !slices.Equal(c.Groups, u.Groups) {
							t.Errorf("claims = %+v, want email %q name %q groups %q", c, u.Email, u.Name, u.Groups)
						}
					})
				}
			}
		})
	}
}

func fetchByPassword(t *testing.T, iss *Issuer, u User) string {
	t.Helper()
	resp, err := http.PostForm(iss.TokenEndpoint(), url.Values{
		"grant_type": {"password"}, "username": {u.Subject}, "password": {u.Password},
		"client_id": {testAudience}, "scope": {"openid groups"},
	})
	if err != nil {
		t.Fatalf("POST token: %v", err)
	}
	defer resp.Body.Close()
	var tr tokenResponse
	if err := json.NewDecoder(resp.Body).Decode(&tr); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("POST token: status %d, decode error %v", resp.StatusCode, err)
	}
	if tr.TokenType != "Bearer" || tr.AccessToken != tr.IDToken || tr.ExpiresIn != int64(DefaultTTL.Seconds()) {
		t.Errorf("token_type %q, expires_in %d, access_token == id_token: %v; want Bearer, %d, true",
			tr.TokenType, tr.ExpiresIn, tr.AccessToken == tr.IDToken, int64(DefaultTTL.Seconds()))
	}
	return tr.IDToken
}

func fetchByName(t *testing.T, iss *Issuer, u User) string {
	t.Helper()
	resp, err := http.Get(iss.TokenEndpoint() + "?user=" + url.QueryEscape(u.Subject))
	if err != nil {
		t.Fatalf("GET token: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET token: status %d, read error %v", resp.StatusCode, err)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("Content-Type = %q, want text/plain", ct)
	}
	return strings.TrimSuffix(string(body), "\n")
}

func TestIDToken_CarriesClaimsStampedWithNow(t *testing.T) {
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	iss, err := New(Options{Issuer: "http://127.0.0.1:8080/dev/oidc", Audience: testAudience, TTL: 10 * time.Minute,
		Now: func() time.Time { return now }})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	raw, err := iss.IDToken("carol")
	if err != nil {
		t.Fatalf("IDToken: %v", err)
	}
	jws, err := jose.ParseSignedCompact(raw, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatalf("ParseSigned: %v", err)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(iss.jwks, &set); err != nil {
		t.Fatalf("decode JWKS: %v", err)
	}
	keys := set.Key(jws.Signatures[0].Header.KeyID)
	if len(keys) != 1 {
		t.Fatalf("token kid %q matches %d JWKS keys, want 1", jws.Signatures[0].Header.KeyID, len(keys))
	}
	payload, err := jws.Verify(keys[0])
	if err != nil {
		t.Fatalf("Verify with JWKS key: %v", err)
	}
	var got map[string]any
	if err := json.Unmarshal(payload, &got); err != nil {
		t.Fatalf("decode payload: %v", err)
	}
	want := map[string]any{
		"iss": "http://127.0.0.1:8080/dev/oidc", "sub": "carol", "aud": testAudience,
		"iat": float64(now.Unix()), "nbf": float64(now.Unix()), "exp": float64(now.Add(10 * time.Minute).Unix()),
		"email": "carol@example.com", "name": "Carol (demo)", "groups": []any{},
	}
	gotJSON, _ := json.Marshal(got)
	wantJSON, _ := json.Marshal(want)
	if string(gotJSON) != string(wantJSON) {
		t.Errorf("claims\n got %s\nwant %s", gotJSON, wantJSON)
	}
}

func TestIDToken_UnknownSubjectIsNotFound(t *testing.T) {
	iss := newTestIssuer(t)
	if _, err := iss.IDToken("mallory"); apperr.KindOf(err) != apperr.NotFound {
		t.Fatalf("IDToken(mallory) error = %v, want kind NotFound", err)
	}
}

func TestNew_EachIssuerHasItsOwnKey(t *testing.T) {
	a, b := newTestIssuer(t), newTestIssuer(t)
	var ka, kb jose.JSONWebKeySet
	if err := json.Unmarshal(a.jwks, &ka); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b.jwks, &kb); err != nil {
		t.Fatal(err)
	}
	if ka.Keys[0].KeyID == kb.Keys[0].KeyID {
		t.Errorf("two issuers share kid %q", ka.Keys[0].KeyID)
	}
	tok, err := a.IDToken("alice")
	if err != nil {
		t.Fatal(err)
	}
	jws, err := jose.ParseSignedCompact(tok, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := jws.Verify(kb.Keys[0]); err == nil {
		t.Error("a token from one issuer verifies with another issuer's key")
	}
}

func TestNew_AcceptsLoopbackIssuers(t *testing.T) {
	for _, issuer := range []string{
		"http://127.0.0.1:8080/dev/oidc",
		"http://127.9.8.7",
		"http://localhost:8080/dev/oidc/",
		"https://LOCALHOST/idp",
		"http://[::1]:8080/dev/oidc",
	} {
		t.Run(issuer, func(t *testing.T) {
			iss, err := New(Options{Issuer: issuer, Audience: testAudience})
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			if iss.IssuerURL() != issuer {
				t.Errorf("IssuerURL() = %q, want %q verbatim", iss.IssuerURL(), issuer)
			}
			if want := strings.TrimSuffix(issuer, "/") + "/token"; iss.TokenEndpoint() != want {
				t.Errorf("TokenEndpoint() = %q, want %q", iss.TokenEndpoint(), want)
			}
		})
	}
}

func TestNew_RefusesBadOptions(t *testing.T) {
	ok := Options{Issuer: "http://127.0.0.1:8080/dev/oidc", Audience: testAudience}
	tests := []struct {
		name  string
		edit  func(*Options)
		field string
	}{
		{"private network issuer", func(o *Options) { o.Issuer = "http://10.0.0.1:8080/dev/oidc" }, "Issuer"},
		{"public host name issuer", func(o *Options) { o.Issuer = "https://idp.example.com" }, "Issuer"},
		{"host name ending in a loopback address", func(o *Options) { o.Issuer = "http://127.0.0.1.nip.io/" }, "Issuer"},
		{"unspecified IPv4 address", func(o *Options) { o.Issuer = "http://0.0.0.0:8080" }, "Issuer"},
		{"unspecified IPv6 address", func(o *Options) { o.Issuer = "http://[::]:8080" }, "Issuer"},
		{"subdomain of localhost", func(o *Options) { o.Issuer = "http://evil.localhost/" }, "Issuer"},
		{"no issuer", func(o *Options) { o.Issuer = "" }, "Issuer"},
		{"relative issuer", func(o *Options) { o.Issuer = "/dev/oidc" }, "Issuer"},
		{"non-http scheme", func(o *Options) { o.Issuer = "ftp://127.0.0.1/" }, "Issuer"},
		{"issuer with query", func(o *Options) { o.Issuer = "http://127.0.0.1/?x=1" }, "Issuer"},
		{"issuer with credentials", func(o *Options) { o.Issuer = "http://u:p@127.0.0.1/" }, "Issuer"},
		{"unparsable issuer", func(o *Options) { o.Issuer = "http://127.0.0.1:port/" }, "Issuer"},
		{"no audience", func(o *Options) { o.Audience = " " }, "Audience"},
		{"negative TTL", func(o *Options) { o.TTL = -time.Second }, "TTL"},
		{"TTL over a day", func(o *Options) { o.TTL = 25 * time.Hour }, "TTL"},
		{"user without subject", func(o *Options) { o.Users = []User{{Password: "x"}} }, "Users[0].Subject"},
		{"subject with spaces", func(o *Options) { o.Users = []User{{Subject: " alice", Password: "x"}} }, "Users[0].Subject"},
		{"user without password", func(o *Options) { o.Users = []User{{Subject: "dave"}} }, "Users[0].Password"},
		{"empty group name", func(o *Options) { o.Users = []User{{Subject: "dave", Password: "x", Groups: []string{""}}} }, "Users[0].Groups"},
		{"duplicate subject", func(o *Options) {
			o.Users = []User{{Subject: "dave", Password: "x"}, {Subject: "dave", Password: "y"}}
		}, "Users[1].Subject"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := ok
			tt.edit(&opts)
			iss, err := New(opts)
			e, isApp := apperr.As(err)
			if iss != nil || !isApp || e.Kind != apperr.Invalid || e.Field != tt.field {
				t.Fatalf("New = %v, %v; want an Invalid error on field %s", iss, err, tt.field)
			}
		})
	}
}

func TestNew_DefaultsToDemoUsers(t *testing.T) {
	iss := newTestIssuer(t)
	for _, u := range DemoUsers() {
		if got, ok := iss.authenticate(u.Subject, "dev-"+u.Subject); !ok || got.Subject != u.Subject {
			t.Errorf("demo user %s with password dev-%s not accepted", u.Subject, u.Subject)
		}
	}
}

func TestNew_CopiesUserGroups(t *testing.T) {
	users := []User{{Subject: "dave", Password: "x", Groups: []string{"developers"}}}
	iss, err := New(Options{Issuer: "http://127.0.0.1/", Audience: testAudience, Users: users})
	if err != nil {
		t.Fatal(err)
	}
	users[0].Groups[0] = "broker-admins"
	if g := iss.users["dave"].Groups; !slices.Equal(g, []string{"developers"}) {
		t.Errorf("groups after caller edits its slice = %q, want [developers]", g)
	}
}

func TestIsLoopbackHost(t *testing.T) {
	for host, want := range map[string]bool{
		"localhost": true, "LocalHost": true, "127.0.0.1": true, "127.255.255.254": true, "::1": true,
		"::ffff:127.0.0.1": true, "0.0.0.0": false, "::": false, "10.0.0.1": false, "": false,
		"localhost.example.com": false, "[::1]": false, "128.0.0.1": false,
	} {
		if got := IsLoopbackHost(host); got != want {
			t.Errorf("IsLoopbackHost(%q) = %v, want %v", host, got, want)
		}
	}
}

func newTestIssuer(t *testing.T) *Issuer {
	t.Helper()
	iss, err := New(Options{Issuer: "http://127.0.0.1:8080/dev/oidc", Audience: testAudience})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return iss
}

func TestIssuedTokensPassTheBrokersVerifier(t *testing.T) {
	iss := serve(t, mountings[1].prefix, mountings[1].mount)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	v, err := auth.NewIssuers(ctx, []auth.Config{{Issuer: iss.IssuerURL(), Audiences: []string{testAudience}, Logger: slog.New(slog.DiscardHandler)}})
	if err != nil {
		t.Fatalf("NewIssuers: %v", err)
	}
	defer v.Close()
	for v.Ready() != nil {
		select {
		case <-ctx.Done():
			t.Fatalf("verifier never became ready: %v", v.Ready())
		case <-time.After(10 * time.Millisecond):
		}
	}
	for _, u := range DemoUsers() {
		id, err := v.Verify(ctx, fetchByName(t, iss, u))
		if err != nil {
			t.Fatalf("Verify %s: %v", u.Subject, err)
		}
		if id.Issuer != iss.IssuerURL() || id.Subject != u.Subject || id.Account != u.Subject || id.Email != u.Email || !slices.Equal(id.Groups, u.Groups) {
			t.Errorf("identity %+v, want subject/account %q email %q groups %q", id, u.Subject, u.Email, u.Groups)
		}
	}
}
