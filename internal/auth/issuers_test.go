package auth

import (
	"context"
	"encoding/json"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/coreos/go-oidc/v3/oidc/oidctest"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/broker-dev/broker/internal/apperr"
)

// Both *Verifier and *Issuers serve the console's login check and the API's
// bearer authentication.
var (
	_ interface {
		VerifyIDToken(context.Context, string, string) (Identity, error)
		Verify(context.Context, string) (Identity, error)
		Middleware(http.Handler) http.Handler
		Ready() error
		Close()
	} = (*Issuers)(nil)
	_ interface {
		VerifyIDToken(context.Context, string, string) (Identity, error)
	} = (*Verifier)(nil)
)

// publishAs makes p publish the test key named key under kid (which may be
// another key's name).
func (p *testProvider) publishAs(kid, key string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.oidc.PublicKeys = []oidctest.PublicKey{{PublicKey: testKeys()[key].Public(), KeyID: kid, Algorithm: algFor(key)}}
}

// issuerConfig is a config for p's issuer with a debug logger into logs.
func issuerConfig(p *testProvider, name string, logs *logBuffer, mutate func(*Config)) Config {
	c := Config{
		Name:      name,
		Issuer:    p.issuer(),
		Audiences: []string{"broker"},
		Logger:    slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if mutate != nil {
		mutate(&c)
	}
	return c
}

// startIssuers creates a set from cfgs, waits until every issuer is ready,
// and closes it at the end of the test.
func startIssuers(t testing.TB, cfgs ...Config) *Issuers {
	t.Helper()
	s, err := NewIssuers(context.Background(), cfgs)
	if err != nil {
		t.Fatalf("NewIssuers: %v", err)
	}
	t.Cleanup(s.Close)
	eventually(t, "every issuer to be ready", func() bool { return s.Ready() == nil })
	return s
}

// metricValue is the value of the first series of counter name that has
// these labels (and maybe others).
func metricValue(t testing.TB, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for name, value := range labels {
				if have[name] != value {
					continue metric
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	t.Fatalf("metric %s%v not found", name, labels)
	return 0
}

func rejections(t testing.TB, reg *prometheus.Registry, issuer, reason string) float64 {
	t.Helper()
	return metricValue(t, reg, "broker_auth_rejections_total", map[string]string{"issuer": issuer, "reason": reason})
}

// wantUnauthorized fails unless err is a 401 whose message contains want; the
// message must not contain any of secrets (claim values, tokens).
func wantUnauthorized(t testing.TB, err error, want string, secrets ...string) {
	t.Helper()
	e, ok := apperr.As(err)
	if !ok || e.Kind != apperr.Unauthorized {
		t.Fatalf("error = %v, want an Unauthorized *apperr.Error containing %q", err, want)
	}
	if !strings.Contains(e.Message, want) {
		t.Errorf("message = %q, want it to contain %q", e.Message, want)
	}
	for _, s := range secrets {
		if strings.Contains(err.Error(), s) {
			t.Errorf("the error reveals %q", s)
		}
	}
}

func TestNewIssuers_RejectsInconsistentSets(t *testing.T) {
	quiet := slog.New(slog.DiscardHandler)
	cfg := func(name, issuer string) Config {
		return Config{Name: name, Issuer: issuer, Audiences: []string{"broker"}, Logger: quiet}
	}
	regA, regB := prometheus.NewRegistry(), prometheus.NewRegistry()
	withReg := func(c Config, r prometheus.Registerer) Config { c.Registerer = r; return c }
	tests := []struct {
		name    string
		cfgs    []Config
		wantErr string
	}{
		{"no issuer", nil, "at least one is required"},
		{"same URL twice", []Config{cfg("", "https://a.example"), cfg("b", "https://a.example")},
			`issuer URL "https://a.example" is configured twice (issuers "default" and "b")`},
		{"same name twice", []Config{cfg("b", "https://a.example"), cfg("b", "https://b.example")}, `issuer name "b" is used twice`},
		{"two default issuers", []Config{cfg("", "https://a.example"), cfg("", "https://b.example")}, "only the default issuer may leave Name empty"},
		{"different registerers", []Config{withReg(cfg("", "https://a.example"), regA), withReg(cfg("b", "https://b.example"), regB)},
			`issuers "default" and "b" name different metric registerers`},
		{"an invalid issuer", []Config{cfg("", "https://a.example"), cfg("B", "https://b.example")}, `issuer name "B" may only contain a-z, 0-9 and '-'`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := NewIssuers(context.Background(), tt.cfgs)
			if err == nil {
				s.Close()
				t.Fatal("NewIssuers accepted the set")
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error = %q, want it to contain %q", err, tt.wantErr)
			}
		})
	}

	t.Run("URLs differing by a trailing slash are two issuers, sharing one registerer", func(t *testing.T) {
		reg := prometheus.NewRegistry()
		s, err := NewIssuers(context.Background(), []Config{
			withReg(cfg("", "https://a.example"), reg), withReg(cfg("slash", "https://a.example/"), reg), cfg("other", "https://b.example"),
		})
		if err != nil {
			t.Fatalf("NewIssuers: %v", err)
		}
		s.Close()
		for _, issuer := range []string{"default", "slash", "other"} {
			if got := rejections(t, reg, issuer, reasonTokenType); got != 0 {
				t.Errorf("rejections{issuer=%q} = %v, want a zero series", issuer, got)
			}
		}
	})
}

func TestNewVerifier_RejectsBadIssuerOptions(t *testing.T) {
	base := Config{Issuer: "https://id.example", Audiences: []string{"broker"}}
	tests := []struct {
		name    string
		mutate  func(*Config)
		wantErr string
	}{
		{"name with capitals", func(c *Config) { c.Name = "Partner" }, `issuer name "Partner" may only contain a-z, 0-9 and '-'`},
		{"name with a slash", func(c *Config) { c.Name = "a/b" }, "may only contain"},
		{"name too long", func(c *Config) { c.Name = strings.Repeat("a", 33) }, "longer than 32 characters"},
		{"reserved name default", func(c *Config) { c.Name = "default" }, "is reserved"},
		{"reserved name unknown", func(c *Config) { c.Name = "unknown" }, "is reserved"},
		{"named issuer errors name it", func(c *Config) { c.Name = "partner"; c.Audiences = nil }, `invalid configuration of issuer "partner": audiences: at least one`},
		{"unknown token type", func(c *Config) { c.TokenType = "refresh_token" }, `token type "refresh_token" is not supported`},
		{"scopes on an id_token issuer", func(c *Config) { c.RequiredScopes = []string{"broker"} }, "required scopes apply to access tokens only"},
		{"scope with a space", func(c *Config) { c.TokenType = TokenTypeAccess; c.RequiredScopes = []string{"a b"} }, `required scope "a b" is not a scope token`},
		{"required claim without values", func(c *Config) { c.RequiredClaims = map[string][]any{"hd": nil} }, `required claim "hd" lists no accepted values`},
		{"required claim with an empty name", func(c *Config) { c.RequiredClaims = map[string][]any{"": {"x"}} }, "a claim name is empty"},
		{"required claim with a null value", func(c *Config) { c.RequiredClaims = map[string][]any{"hd": {nil}} }, `required claim "hd": value 1: <nil> is not supported`},
		{"required claim with an object value", func(c *Config) { c.RequiredClaims = map[string][]any{"hd": {"a", map[string]any{}}} },
			`required claim "hd": value 2: map[string]interface {} is not supported`},
		{"required claim with NaN", func(c *Config) { c.RequiredClaims = map[string][]any{"n": {math.NaN()}} }, "NaN is not a JSON number"},
		{"required claim with a bad json.Number", func(c *Config) { c.RequiredClaims = map[string][]any{"n": {json.Number("1e999999")}} }, "exponent"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := base
			tt.mutate(&cfg)
			requireRefused(t, cfg, tt.wantErr)
		})
	}
}

// TestIssuers_DispatchAndIsolation: each token goes to the issuer its iss
// names exactly; an unknown iss is refused without any request; issuers share
// neither keys nor cached tokens.
func TestIssuers_DispatchAndIsolation(t *testing.T) {
	one, two := newTestProvider(t, "rsa-1"), newTestProvider(t, "rsa-2")
	reg := prometheus.NewRegistry()
	logs := &logBuffer{}
	s := startIssuers(t,
		issuerConfig(one, "", logs, func(c *Config) { c.Registerer = reg }),
		issuerConfig(two, "two", logs, nil),
	)
	ctx := context.Background()

	t.Run("each issuer verifies its own tokens", func(t *testing.T) {
		id, err := s.Verify(ctx, one.token(t, "rsa-1", one.claims(nil)))
		if err != nil {
			t.Fatalf("token of the default issuer: %v", err)
		}
		if id.Issuer != one.issuer() || id.Qualifier != "" || id.PolicySubject() != "alice" || !slices.Equal(id.Groups, []string{"developers"}) {
			t.Errorf("identity = %+v (policy subject %q)", id, id.PolicySubject())
		}
		id, err = s.Verify(ctx, two.token(t, "rsa-2", two.claims(nil)))
		if err != nil {
			t.Fatalf("token of issuer two: %v", err)
		}
		if id.Issuer != two.issuer() || id.Subject != "alice" || id.Qualifier != "two" || id.PolicySubject() != "two/alice" ||
			!slices.Equal(id.Groups, []string{"two/developers"}) || id.Account != "alice" {
			t.Errorf("identity = %+v (policy subject %q)", id, id.PolicySubject())
		}
		if s.byIssuer[one.issuer()].cache.len() != 1 || s.byIssuer[two.issuer()].cache.len() != 1 {
			t.Error("each issuer should hold exactly its own verified token")
		}
	})

	t.Run("qualifiers of stored identities", func(t *testing.T) {
		for iss, want := range map[string]string{one.issuer(): "", two.issuer(): "two"} {
			if got, ok := s.QualifierFor(iss); !ok || got != want {
				t.Errorf("QualifierFor(%s) = %q, %v; want %q", iss, got, ok, want)
			}
		}
		if _, ok := s.QualifierFor(two.issuer() + "/"); ok {
			t.Error("QualifierFor accepted an issuer URL that is not configured exactly")
		}
	})

	t.Run("a token of issuer two under issuer one's kid is refused", func(t *testing.T) {
		allowRefetch(s.byIssuer[two.issuer()].state().keys)
		tok := two.token(t, "rsa-1", two.claims(nil)) // iss two, kid and key of issuer one
		before := two.keyFetches()
		_, err := s.Verify(ctx, tok)
		wantUnauthorized(t, err, `signing key "rsa-1" is not in the provider's current key set`)
		if two.keyFetches() != before+1 {
			t.Error("issuer two should have looked for the kid in its own key set only")
		}
		if _, err := s.Verify(ctx, one.token(t, "rsa-1", one.claims(nil))); err != nil {
			t.Errorf("issuer one's own token after that: %v", err)
		}
	})

	t.Run("the same kid at two issuers names two different keys", func(t *testing.T) {
		one.publishAs("shared", "rsa-1")
		two.publishAs("shared", "rsa-2")
		for _, v := range s.list {
			allowRefetch(v.state().keys)
			if err := v.state().keys.refresh(ctx, false); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := s.Verify(ctx, signedToken(t, "rsa-2", "shared", "", two.claims(nil))); err != nil {
			t.Fatalf("issuer two's own key under the shared kid: %v", err)
		}
		before := rejections(t, reg, "two", reasonSignature)
		_, err := s.Verify(ctx, signedToken(t, "rsa-1", "shared", "", two.claims(nil)))
		wantUnauthorized(t, err, "token signature is invalid")
		if got := rejections(t, reg, "two", reasonSignature); got != before+1 {
			t.Errorf("rejections{issuer=two,reason=signature} went from %v to %v", before, got)
		}
	})

	t.Run("an unknown issuer is refused without a request", func(t *testing.T) {
		before := one.requestCount() + two.requestCount()
		unknownBefore := rejections(t, reg, "unknown", reasonUnknownIssuer)
		for _, iss := range []string{one.issuer() + "/", strings.TrimSuffix(two.issuer(), "/") + "/x", "https://evil.example"} {
			// An unknown kid too: were the token dispatched, it would cost a key set fetch.
			tok := signedToken(t, "ec-1", "never-published", "", one.claims(map[string]any{"iss": iss}))
			_, err := s.Verify(ctx, tok)
			wantUnauthorized(t, err, "token issuer "+clip(iss)+" is not accepted")
			_, err = s.VerifyIDToken(ctx, tok, "n")
			wantUnauthorized(t, err, "is not accepted")
		}
		_, err := s.Verify(ctx, one.token(t, "rsa-1", one.claims(map[string]any{"iss": nil})))
		wantUnauthorized(t, err, "token has no iss claim")
		if got := one.requestCount() + two.requestCount(); got != before {
			t.Errorf("unknown issuers caused %d requests to the providers, want 0", got-before)
		}
		if got := rejections(t, reg, "unknown", reasonUnknownIssuer); got != unknownBefore+7 {
			t.Errorf("rejections{issuer=unknown,reason=unknown_issuer} went from %v to %v, want +7", unknownBefore, got)
		}
	})

	t.Run("garbage is refused before dispatch", func(t *testing.T) {
		before := rejections(t, reg, "unknown", reasonMalformed)
		_, err := s.Verify(ctx, "a.b.c")
		wantUnauthorized(t, err, "not a well-formed signed JWT")
		_, err = s.Verify(ctx, strings.Repeat("a", MaxTokenBytes+1))
		wantUnauthorized(t, err, "longer than 16384 bytes")
		if got := rejections(t, reg, "unknown", reasonMalformed); got != before+1 {
			t.Errorf("rejections{issuer=unknown,reason=malformed} went from %v to %v", before, got)
		}
	})

	t.Run("the middleware authenticates through the set", func(t *testing.T) {
		before := rejections(t, reg, "unknown", reasonMissing)
		rec := httptestServe(s.Middleware(MeHandler()))
		if rec.Code != http.StatusUnauthorized || rec.Header().Get("WWW-Authenticate") != `Bearer realm="broker"` {
			t.Errorf("no credentials: %d %q", rec.Code, rec.Header().Get("WWW-Authenticate"))
		}
		if got := rejections(t, reg, "unknown", reasonMissing); got != before+1 {
			t.Errorf("rejections{issuer=unknown,reason=missing} went from %v to %v", before, got)
		}
		rec = httptestServe(s.Middleware(MeHandler()), "Bearer "+signedToken(t, "rsa-2", "shared", "", two.claims(map[string]any{"groups": []string{"ops"}})))
		var me Me
		if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &me) != nil || !slices.Equal(me.Groups, []string{"two/ops"}) {
			t.Errorf("token of issuer two: %d %s", rec.Code, rec.Body)
		}
	})

	if got := metricValue(t, reg, "broker_oidc_key_refreshes_total", map[string]string{"issuer": "two", "result": "ok"}); got < 1 {
		t.Errorf("key refreshes{issuer=two,result=ok} = %v, want >= 1", got)
	}
	if got := metricValue(t, reg, "broker_oidc_key_refreshes_total", map[string]string{"issuer": "default", "result": "ok"}); got < 1 {
		t.Errorf("key refreshes{issuer=default,result=ok} = %v, want >= 1", got)
	}
}

// httptestServe sends GET /v1/me with the given Authorization headers to h.
func httptestServe(h http.Handler, authorization ...string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodGet, "/v1/me", nil)
	for _, a := range authorization {
		req.Header.Add("Authorization", a)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func TestIssuers_AccessTokens(t *testing.T) {
	api, web := newTestProvider(t, "ec-1"), newTestProvider(t, "rsa-1")
	reg := prometheus.NewRegistry()
	logs := &logBuffer{}
	s := startIssuers(t,
		issuerConfig(web, "", logs, func(c *Config) { c.Registerer = reg }),
		issuerConfig(api, "api", logs, func(c *Config) {
			c.TokenType = TokenTypeAccess
			c.Audiences = []string{"https://broker.example/api"}
			c.RequiredScopes = []string{"agora.tokens", "broker"}
		}),
	)
	ctx := context.Background()
	at := func(overrides map[string]any) map[string]any {
		base := map[string]any{"aud": "https://broker.example/api", "scope": "openid broker agora.tokens", "client_id": "cli"}
		for k, v := range overrides {
			base[k] = v
		}
		return api.claims(base)
	}

	for _, typ := range []string{"at+jwt", "application/at+jwt", "AT+JWT", "Application/AT+jwt"} {
		id, err := s.Verify(ctx, signedToken(t, "ec-1", "ec-1", typ, at(nil)))
		if err != nil {
			t.Fatalf("access token with typ %q: %v", typ, err)
		}
		if id.PolicySubject() != "api/alice" || !slices.Equal(id.Groups, []string{"api/developers"}) {
			t.Errorf("identity = %+v", id)
		}
	}

	tests := []struct {
		name       string
		token      string
		wantReason string
		wantMsg    string
	}{
		{"access token without typ", signedToken(t, "ec-1", "ec-1", "", at(nil)),
			reasonTokenType, "token has no typ header; this issuer accepts JWT access tokens only"},
		{"access token with typ JWT", signedToken(t, "ec-1", "ec-1", "JWT", at(nil)),
			reasonTokenType, `token's typ header is "JWT"; this issuer accepts JWT access tokens only`},
		{"missing a required scope", signedToken(t, "ec-1", "ec-1", "at+jwt", at(map[string]any{"scope": "openid broker"})),
			reasonScope, `token lacks required scope "agora.tokens"`},
		{"scope as a prefix only", signedToken(t, "ec-1", "ec-1", "at+jwt", at(map[string]any{"scope": "broker agora.tokens.read"})),
			reasonScope, `token lacks required scope "agora.tokens"`},
		{"no scope claim", signedToken(t, "ec-1", "ec-1", "at+jwt", at(map[string]any{"scope": nil})),
			reasonScope, "token has no scope claim"},
		{"scope not a string", signedToken(t, "ec-1", "ec-1", "at+jwt", at(map[string]any{"scope": []string{"broker", "agora.tokens"}})),
			reasonScope, "not a space-separated string"},
		{"access token for another resource", signedToken(t, "ec-1", "ec-1", "at+jwt", at(map[string]any{"aud": "https://other.example"})),
			reasonAudience, `audience "https://other.example" not accepted`},
		{"access token for the broker's client id", signedToken(t, "ec-1", "ec-1", "at+jwt", at(map[string]any{"aud": "broker"})),
			reasonAudience, "not accepted"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := rejections(t, reg, "api", tt.wantReason)
			_, err := s.Verify(ctx, tt.token)
			wantUnauthorized(t, err, tt.wantMsg)
			if got := rejections(t, reg, "api", tt.wantReason); got != before+1 {
				t.Errorf("rejections{issuer=api,reason=%s} went from %v to %v", tt.wantReason, before, got)
			}
			if strings.Contains(logs.String(), tt.token) {
				t.Error("the token appears in the log")
			}
		})
	}

	t.Run("an ID token issuer refuses access tokens", func(t *testing.T) {
		for _, typ := range []string{"at+jwt", "application/AT+JWT"} {
			before := rejections(t, reg, "default", reasonTokenType)
			_, err := s.Verify(ctx, signedToken(t, "rsa-1", "rsa-1", typ, web.claims(nil)))
			wantUnauthorized(t, err, "token is a JWT access token (typ "+clip(typ)+"); this issuer accepts ID tokens only")
			if got := rejections(t, reg, "default", reasonTokenType); got != before+1 {
				t.Errorf("rejections{issuer=default,reason=token_type} went from %v to %v", before, got)
			}
		}
		for _, typ := range []string{"", "JWT"} {
			if _, err := s.Verify(ctx, signedToken(t, "rsa-1", "rsa-1", typ, web.claims(nil))); err != nil {
				t.Errorf("ID token with typ %q: %v", typ, err)
			}
		}
	})

	t.Run("an access token issuer serves no console login", func(t *testing.T) {
		_, err := s.VerifyIDToken(ctx, signedToken(t, "ec-1", "ec-1", "at+jwt", at(map[string]any{"nonce": "n"})), "n")
		wantUnauthorized(t, err, "accepts access tokens, not the ID tokens of a login")
		if _, err := s.VerifyIDToken(ctx, web.token(t, "rsa-1", web.claims(map[string]any{"nonce": "n"})), "n"); err != nil {
			t.Errorf("login ID token of the default issuer: %v", err)
		}
	})
}

func TestIssuers_RequiredClaims(t *testing.T) {
	p := newTestProvider(t, "rsa-1")
	reg := prometheus.NewRegistry()
	logs := &logBuffer{}
	s := startIssuers(t, issuerConfig(p, "corp", logs, func(c *Config) {
		c.Registerer = reg
		c.RequiredClaims = map[string][]any{
			"email_verified": {true},
			"hd":             {"example.com", "example.org"},
			"tid":            {42, json.Number("12345678901234567890123")},
			"ratio":          {0.1},
		}
	}))
	ok := map[string]any{"email_verified": true, "hd": "example.com", "tid": 42, "ratio": 0.1}
	with := func(overrides map[string]any) map[string]any {
		c := map[string]any{}
		for k, v := range ok {
			c[k] = v
		}
		for k, v := range overrides {
			c[k] = v
		}
		return p.claims(c)
	}
	raw := func(overrides map[string]any, rawTid string) map[string]any {
		c := with(overrides)
		c["tid"] = json.RawMessage(rawTid)
		return c
	}

	accepted := []struct {
		name   string
		claims map[string]any
	}{
		{"every claim bound", with(nil)},
		{"the other accepted value", with(map[string]any{"hd": "example.org"})},
		{"an array claim with an accepted element", with(map[string]any{"hd": []any{"other.example", "example.org"}})},
		{"a number written otherwise", raw(nil, "42.0")},
		{"a number in exponent form", raw(nil, "4.2e1")},
		{"a number beyond float64 precision", raw(nil, "12345678901234567890123")},
	}
	for _, tt := range accepted {
		if _, err := s.Verify(context.Background(), p.token(t, "rsa-1", tt.claims)); err != nil {
			t.Errorf("%s: %v", tt.name, err)
		}
	}

	refused := []struct {
		name    string
		claims  map[string]any
		wantMsg string
		secret  string
	}{
		{"claim missing", with(map[string]any{"hd": nil}), `required claim "hd" is missing from the token`, ""},
		{"claim wrong", with(map[string]any{"hd": "personal-domain.example"}), `required claim "hd" does not have an accepted value`, "personal-domain"},
		{"false where true is bound", with(map[string]any{"email_verified": false}), `required claim "email_verified" does not have an accepted value`, ""},
		{"the string \"true\" is not true", with(map[string]any{"email_verified": "true"}), `required claim "email_verified" does not have an accepted value`, ""},
		{"a number as a string is not the number", with(map[string]any{"tid": "42"}), `required claim "tid" does not have an accepted value`, ""},
		{"a nearby large number", raw(nil, "12345678901234567890124"), `required claim "tid" does not have an accepted value`, "1234567890"},
		{"an array without an accepted element", with(map[string]any{"hd": []string{"a.example", "b.example"}}), `required claim "hd" does not have an accepted value`, "a.example"},
		{"an object", with(map[string]any{"hd": map[string]any{"example.com": true}}), `required claim "hd" does not have an accepted value`, ""},
		{"a huge exponent", raw(nil, "1e999999999"), `required claim "tid" does not have an accepted value`, ""},
		{"0.1 is not 0.10000000000000001", with(map[string]any{"ratio": json.RawMessage("0.10000000000000001")}), `required claim "ratio" does not have an accepted value`, ""},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			before := rejections(t, reg, "corp", reasonRequiredClaim)
			_, err := s.Verify(context.Background(), p.token(t, "rsa-1", tt.claims))
			var secrets []string
			if tt.secret != "" {
				secrets = append(secrets, tt.secret)
			}
			wantUnauthorized(t, err, tt.wantMsg, secrets...)
			if got := rejections(t, reg, "corp", reasonRequiredClaim); got != before+1 {
				t.Errorf("rejections{issuer=corp,reason=required_claim} went from %v to %v", before, got)
			}
			if tt.secret != "" && strings.Contains(logs.String(), tt.secret) {
				t.Errorf("the log reveals %q", tt.secret)
			}
		})
	}
}

// TestIssuers_QualifiedNamesStayDistinctAndBounded: qualified subjects and
// groups stay within MaxSubjectLen and MaxGroupLen, and the default issuer
// cannot pose as another issuer's qualified names.
func TestIssuers_QualifiedNamesStayDistinctAndBounded(t *testing.T) {
	def, partner := newTestProvider(t, "rsa-1"), newTestProvider(t, "rsa-2")
	logs := &logBuffer{}
	s := startIssuers(t, issuerConfig(def, "", logs, nil), issuerConfig(partner, "partner", logs, nil))
	ctx := context.Background()

	_, err := s.Verify(ctx, def.token(t, "rsa-1", def.claims(map[string]any{"sub": "partner/alice"})))
	wantUnauthorized(t, err, `token's sub claim starts with "partner/", which names the subjects of issuer "partner"`)

	id, err := s.Verify(ctx, def.token(t, "rsa-1", def.claims(map[string]any{"groups": []string{"developers", "partner/admins"}})))
	if err != nil || id.Groups != nil || !strings.Contains(id.GroupsError, `group 2 starts with "partner/", which names the groups of issuer "partner"`) {
		t.Errorf("default issuer's group posing as partner's: %v, groups %q (%q)", err, id.Groups, id.GroupsError)
	}
	id, err = s.Verify(ctx, def.token(t, "rsa-1", def.claims(map[string]any{"sub": "other/alice", "groups": []string{"/top/sub", "team/a"}})))
	if err != nil || id.PolicySubject() != "other/alice" || !slices.Equal(id.Groups, []string{"/top/sub", "team/a"}) {
		t.Errorf("slashes that name no issuer: %v, %+v", err, id)
	}

	_, err = s.Verify(ctx, partner.token(t, "rsa-2", partner.claims(map[string]any{"sub": strings.Repeat("s", 250)})))
	wantUnauthorized(t, err, `token's sub claim qualified as "partner/<sub>" is longer than 255 bytes`)
	id, err = s.Verify(ctx, partner.token(t, "rsa-2", partner.claims(map[string]any{"sub": strings.Repeat("s", 247)})))
	if err != nil || len(id.PolicySubject()) != MaxSubjectLen {
		t.Errorf("a subject of exactly 255 bytes once qualified: %v", err)
	}
	id, err = s.Verify(ctx, partner.token(t, "rsa-2", partner.claims(map[string]any{"groups": []string{"ops", strings.Repeat("g", 250)}})))
	if err != nil || id.Groups != nil || !strings.Contains(id.GroupsError, `group 2 is longer than 255 bytes (once qualified as "partner/<group>")`) {
		t.Errorf("a group too long once qualified: %v, groups %q (%q)", err, id.Groups, id.GroupsError)
	}
}

func TestIssuers_ReadyNamesEachIssuerNotReady(t *testing.T) {
	up, down := newTestProvider(t, "rsa-1"), newTestProvider(t, "rsa-2")
	down.setDown(true)
	logs := &logBuffer{}
	s, err := NewIssuers(context.Background(), []Config{issuerConfig(up, "", logs, nil), issuerConfig(down, "partner", logs, nil)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	eventually(t, "the default issuer to be ready", func() bool { return s.byIssuer[up.issuer()].Ready() == nil })
	eventually(t, "a failed discovery of partner", func() bool {
		err := s.Ready()
		return err != nil && strings.Contains(err.Error(), "503")
	})
	err = s.Ready()
	if want := `OIDC issuer "partner" (` + down.issuer() + `) not ready`; !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), up.issuer()+" ") {
		t.Errorf("Ready = %v, want only %q", err, want)
	}
	_, err = s.Verify(context.Background(), down.token(t, "rsa-2", down.claims(nil)))
	if apperr.KindOf(err) != apperr.Unavailable {
		t.Errorf("token of the issuer not ready = %v, want unavailable", err)
	}
	if _, err := s.Verify(context.Background(), up.token(t, "rsa-1", up.claims(nil))); err != nil {
		t.Errorf("token of the ready issuer: %v", err)
	}
	down.setDown(false)
	eventually(t, "every issuer to be ready", func() bool { return s.Ready() == nil })
}
