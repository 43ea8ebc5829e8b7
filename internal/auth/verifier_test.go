package auth

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/coreos/go-oidc/v3/oidc/oidctest"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/broker-dev/broker/internal/apperr"
)

// unsignedToken builds an alg=none token from claims.
func unsignedToken(t *testing.T, claims map[string]any) string {
	t.Helper()
	b, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"none","kid":"rsa-1"}`)) + "." + enc(b) + "."
}

func TestVerify_AcceptsAValidToken(t *testing.T) {
	for _, kid := range []string{"rsa-1", "ec-1"} {
		t.Run(algFor(kid), func(t *testing.T) {
			p := newTestProvider(t, kid)
			v, _ := startVerifier(t, p, nil)
			id, err := v.Verify(context.Background(), p.token(t, kid, p.claims(nil)))
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			want := Identity{Issuer: p.issuer(), Subject: "alice", Account: "alice", Groups: []string{"developers"}, Email: "alice@example.com"}
			if fmt.Sprint(id) != fmt.Sprint(want) {
				t.Errorf("identity = %+v, want %+v", id, want)
			}
		})
	}
}

func TestVerify_RejectsBadTokensWithAPreciseReason(t *testing.T) {
	p := newTestProvider(t, "rsa-1")
	reg := prometheus.NewRegistry()
	v, logs := startVerifier(t, p, func(c *Config) { c.Registerer = reg })
	now := time.Now()

	pubDER, err := x509.MarshalPKIXPublicKey(testKeys()["rsa-1"].Public())
	if err != nil {
		t.Fatal(err)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	claimsJSON, _ := json.Marshal(p.claims(nil))

	valid := p.token(t, "rsa-1", p.claims(nil))
	parts := strings.Split(valid, ".")
	forged, _ := json.Marshal(p.claims(map[string]any{"sub": "mallory"}))
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString(forged) + "." + parts[2]

	tests := []struct {
		name       string
		token      string
		wantReason string
		wantMsg    string
	}{
		{"expired", p.token(t, "rsa-1", p.claims(map[string]any{"exp": now.Add(-time.Hour).Unix()})),
			reasonExpired, "token expired at " + now.Add(-time.Hour).UTC().Format(time.RFC3339)},
		{"not yet valid", p.token(t, "rsa-1", p.claims(map[string]any{"nbf": now.Add(time.Hour).Unix()})),
			reasonNotYetValid, "token not valid before"},
		{"issued in the future", p.token(t, "rsa-1", p.claims(map[string]any{"iat": now.Add(time.Hour).Unix()})),
			reasonIssuedInFuture, "issued in the future"},
		{"without exp", p.token(t, "rsa-1", p.claims(map[string]any{"exp": nil})),
			reasonMalformed, "no exp claim"},
		{"wrong audience", p.token(t, "rsa-1", p.claims(map[string]any{"aud": []string{"other-app"}})),
			reasonAudience, `audience "other-app" not accepted (expected one of: broker)`},
		{"wrong issuer", p.token(t, "rsa-1", p.claims(map[string]any{"iss": "https://evil.example"})),
			reasonIssuer, fmt.Sprintf("issuer mismatch: expected %q", p.issuer())},
		{"issuer differing only by a trailing slash", p.token(t, "rsa-1", p.claims(map[string]any{"iss": p.issuer() + "/"})),
			reasonIssuer, "issuer mismatch"},
		{"without sub", p.token(t, "rsa-1", p.claims(map[string]any{"sub": nil})),
			reasonClaims, "no sub claim"},
		{"alg none", unsignedToken(t, p.claims(nil)),
			reasonAlgorithm, `signing algorithm "none" not allowed`},
		{"HS256 signed with the provider's public key", oidctest.SignIDToken(pubPEM, "rsa-1", "HS256", string(claimsJSON)),
			reasonAlgorithm, `signing algorithm "HS256" not allowed (accepted: RS256, ES256)`},
		{"RS384 not in the allow-list", oidctest.SignIDToken(testKeys()["rsa-1"], "rsa-1", "RS384", string(claimsJSON)),
			reasonAlgorithm, `signing algorithm "RS384" not allowed`},
		{"unknown kid", p.token(t, "rsa-2", p.claims(nil)),
			reasonUnknownKey, `signing key "rsa-2" is not in the provider's current key set`},
		{"signed by another key under a known kid", oidctest.SignIDToken(testKeys()["rsa-2"], "rsa-1", "RS256", string(claimsJSON)),
			reasonSignature, "token signature is invalid"},
		{"tampered payload", tampered, reasonSignature, "token signature is invalid"},
		{"not a JWT", "not-a-jwt", reasonMalformed, "not a well-formed signed JWT"},
		{"garbage segments", "a.b.c", reasonMalformed, "not a well-formed signed JWT"},
		{"too long", strings.Repeat("a", MaxTokenBytes+1), reasonTooLarge, "longer than 16384 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := metricValue(t, reg, "broker_auth_rejections_total", map[string]string{"reason": tt.wantReason})
			_, err := v.Verify(context.Background(), tt.token)
			e, ok := apperr.As(err)
			if !ok || e.Kind != apperr.Unauthorized {
				t.Fatalf("Verify error = %v, want an Unauthorized *apperr.Error", err)
			}
			if !strings.Contains(e.Message, tt.wantMsg) {
				t.Errorf("message = %q, want it to contain %q", e.Message, tt.wantMsg)
			}
			if after := metricValue(t, reg, "broker_auth_rejections_total", map[string]string{"reason": tt.wantReason}); after != before+1 {
				t.Errorf("rejections{reason=%q} went from %v to %v, want +1", tt.wantReason, before, after)
			}
			if strings.Contains(err.Error(), tt.token) || strings.Contains(logs.String(), tt.token) {
				t.Error("the token text leaked into the error or the log")
			}
		})
	}
}

func TestVerify_AllowsClockSkewWithinLeeway(t *testing.T) {
	p := newTestProvider(t, "rsa-1")
	v, _ := startVerifier(t, p, func(c *Config) { c.Leeway = time.Minute })
	now := time.Now()
	tok := p.token(t, "rsa-1", p.claims(map[string]any{
		"exp": now.Add(-30 * time.Second).Unix(),
		"nbf": now.Add(30 * time.Second).Unix(),
		"iat": now.Add(30 * time.Second).Unix(),
	}))
	if _, err := v.Verify(context.Background(), tok); err != nil {
		t.Fatalf("Verify within leeway: %v", err)
	}
}

func TestVerify_CachedTokenNeverOutlivesItsExpiry(t *testing.T) {
	p := newTestProvider(t, "rsa-1")
	clock := struct {
		sync.Mutex
		now time.Time
	}{now: time.Now()}
	now := func() time.Time { clock.Lock(); defer clock.Unlock(); return clock.now }
	v, _ := startVerifier(t, p, func(c *Config) { c.Now = now; c.Leeway = time.Second })
	tok := p.token(t, "rsa-1", p.claims(map[string]any{"exp": now().Add(time.Minute).Unix()}))

	if _, err := v.Verify(context.Background(), tok); err != nil {
		t.Fatalf("first Verify: %v", err)
	}
	if v.cache.len() != 1 {
		t.Fatalf("cache holds %d entries after a verified token, want 1", v.cache.len())
	}
	clock.Lock()
	clock.now = clock.now.Add(2 * time.Minute)
	clock.Unlock()
	_, err := v.Verify(context.Background(), tok)
	if e, ok := apperr.As(err); !ok || !strings.Contains(e.Message, "token expired") {
		t.Fatalf("Verify after exp = %v, want a token expired error", err)
	}
}

func TestVerify_CacheIsBounded(t *testing.T) {
	c := newTokenCache(3, DefaultCacheBytes)
	now := time.Now()
	for i := range 10 {
		c.put(tokenKey{byte(i)}, Identity{Subject: fmt.Sprint(i)}, now.Add(time.Hour), 1, now)
	}
	if c.len() != 3 {
		t.Fatalf("cache holds %d entries, want 3", c.len())
	}
	if _, ok := c.get(tokenKey{9}, 1, now); !ok {
		t.Error("the newest entry is missing")
	}
	if _, ok := c.get(tokenKey{9}, 2, now); ok {
		t.Error("an entry verified under an older key set was served")
	}
}

func TestVerify_CallersCannotEditCachedIdentity(t *testing.T) {
	p := newTestProvider(t, "rsa-1")
	v, _ := startVerifier(t, p, nil)
	tok := p.token(t, "rsa-1", p.claims(nil))
	first, _ := v.Verify(context.Background(), tok)
	first.Groups[0] = "broker-admins"
	second, err := v.Verify(context.Background(), tok)
	if err != nil || second.Groups[0] != "developers" {
		t.Fatalf("second Verify = %v, %v; want groups [developers]", second.Groups, err)
	}
}

func TestVerifyIDToken_RequiresTheLoginNonce(t *testing.T) {
	p := newTestProvider(t, "rsa-1")
	v, _ := startVerifier(t, p, nil)
	tok := p.token(t, "rsa-1", p.claims(map[string]any{"nonce": "n-123"}))
	tests := []struct {
		name, nonce string
		wantErr     bool
	}{
		{"matching nonce", "n-123", false},
		{"other nonce", "n-456", true},
		{"empty nonce", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := v.VerifyIDToken(context.Background(), tok, tt.nonce)
			if (err != nil) != tt.wantErr {
				t.Fatalf("VerifyIDToken = %v, wantErr %v", err, tt.wantErr)
			}
			if err != nil && apperr.KindOf(err) != apperr.Unauthorized {
				t.Errorf("kind = %v, want unauthorized", apperr.KindOf(err))
			}
		})
	}
}

func TestNewVerifier_RejectsUnsafeOrIncompleteConfig(t *testing.T) {
	base := Config{Issuer: "https://id.example", Audiences: []string{"broker"}}
	tests := []struct {
		name    string
		mutate  func(*Config)
		wantErr string
	}{
		{"HS256 allowed", func(c *Config) { c.Algorithms = []string{"RS256", "HS256"} }, `"HS256" is never allowed`},
		{"none allowed", func(c *Config) { c.Algorithms = []string{"none"} }, `"none" is never allowed`},
		{"unknown algorithm", func(c *Config) { c.Algorithms = []string{"XS999"} }, "not supported"},
		{"no issuer", func(c *Config) { c.Issuer = "" }, "BROKER_OIDC_ISSUER: issuer URL is required"},
		{"relative issuer", func(c *Config) { c.Issuer = "id.example" }, "not an absolute http(s) URL"},
		{"no audience", func(c *Config) { c.Audiences = []string{" "} }, "BROKER_OIDC_AUDIENCE"},
		{"negative leeway", func(c *Config) { c.Leeway = -time.Second }, "leeway"},
		{"huge leeway", func(c *Config) { c.Leeway = time.Hour }, "leeway"},
		{"negative refresh", func(c *Config) { c.RefreshInterval = -time.Second }, "refresh interval"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := base
			tt.mutate(&cfg)
			requireRefused(t, cfg, tt.wantErr)
		})
	}
}

// requireRefused fails unless NewVerifier refuses cfg with an error
// containing wantErr.
func requireRefused(t *testing.T, cfg Config, wantErr string) {
	t.Helper()
	v, err := NewVerifier(context.Background(), cfg)
	if err == nil {
		v.Close()
		t.Fatal("NewVerifier accepted the config")
	}
	if !strings.Contains(err.Error(), wantErr) {
		t.Errorf("error = %q, want it to contain %q", err, wantErr)
	}
}

func TestNewVerifier_RefusesDuplicateMetricRegistration(t *testing.T) {
	reg := prometheus.NewRegistry()
	cfg := Config{Issuer: "https://id.example", Audiences: []string{"broker"}, Registerer: reg}
	v, err := NewVerifier(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if _, err := NewVerifier(context.Background(), cfg); err == nil {
		t.Fatal("second verifier registered the same metrics without error")
	}
}

func TestIdentity_ClaimMapping(t *testing.T) {
	p := newTestProvider(t, "rsa-1")
	tests := []struct {
		name      string
		cfg       func(*Config)
		claims    map[string]any
		check     func(t *testing.T, id Identity)
		wantError string
	}{
		{name: "groups as a space/comma-separated string",
			claims: map[string]any{"groups": "a b,c, d"},
			check: func(t *testing.T, id Identity) {
				if fmt.Sprint(id.Groups) != "[a b c d]" {
					t.Errorf("groups = %q", id.Groups)
				}
			}},
		{name: "groups from a configured claim",
			cfg:    func(c *Config) { c.GroupsClaim = "roles" },
			claims: map[string]any{"roles": []string{"ops"}},
			check: func(t *testing.T, id Identity) {
				if fmt.Sprint(id.Groups) != "[ops]" {
					t.Errorf("groups = %q", id.Groups)
				}
			}},
		{name: "groups of the wrong type", claims: map[string]any{"groups": 7},
			wantError: `groups claim "groups" must be an array of strings`},
		{name: "account from a configured claim",
			cfg:    func(c *Config) { c.AccountClaim = "email" },
			claims: nil,
			check: func(t *testing.T, id Identity) {
				if id.Account != "alice@example.com" || id.AccountError != "" {
					t.Errorf("account = %q (%q)", id.Account, id.AccountError)
				}
			}},
		{name: "account with a character Agora refuses is dropped and flagged",
			claims: map[string]any{"sub": "CgNhYmM/EgVsb2NhbA=="},
			check: func(t *testing.T, id Identity) {
				if id.Account != "" || !strings.Contains(id.AccountError, `'/' at byte 7 is not allowed`) {
					t.Errorf("account = %q, error %q", id.Account, id.AccountError)
				}
			}},
		{name: "account claim missing", cfg: func(c *Config) { c.AccountClaim = "preferred_username" },
			check: func(t *testing.T, id Identity) {
				if !strings.Contains(id.AccountError, `"preferred_username" is missing`) {
					t.Errorf("account error = %q", id.AccountError)
				}
			}},
		{name: "account longer than 255 bytes", cfg: func(c *Config) { c.AccountClaim = "preferred_username" },
			claims: map[string]any{"preferred_username": strings.Repeat("x", 256)},
			check: func(t *testing.T, id Identity) {
				if !strings.Contains(id.AccountError, "at most 255") {
					t.Errorf("account error = %q", id.AccountError)
				}
			}},
		// Hostile identity values: a subject that is not text is a 401; an
		// account or group name that is not usable only flags the identity,
		// so that the refusal is recorded (never a 5xx).
		{name: "sub with a NUL", claims: map[string]any{"sub": "ali\x00ce"}, wantError: "sub claim contains a control character"},
		// Invalid UTF-8 cannot survive JSON decoding (it becomes U+FFFD), so a
		// token's claims are always valid UTF-8 by the time they are checked.
		{name: "sub not UTF-8", claims: map[string]any{"sub": "ali\xffce"},
			check: func(t *testing.T, id Identity) {
				if !utf8.ValidString(id.Subject) || !utf8.ValidString(id.Account) {
					t.Errorf("subject %q, account %q", id.Subject, id.Account)
				}
			}},
		{name: "sub longer than 255 bytes", claims: map[string]any{"sub": strings.Repeat("s", 256)}, wantError: "sub claim is longer than 255 bytes"},
		{name: "account with a NUL", cfg: func(c *Config) { c.AccountClaim = "preferred_username" },
			claims: map[string]any{"preferred_username": "bo\x00b"},
			check: func(t *testing.T, id Identity) {
				if id.Account != "" || id.AccountError == "" {
					t.Errorf("account = %q (%q)", id.Account, id.AccountError)
				}
			}},
		{name: "group with a NUL", claims: map[string]any{"groups": []string{"ops", "adm\x00ins"}},
			check: func(t *testing.T, id Identity) {
				if id.Groups != nil || !strings.Contains(id.GroupsError, "group 2 contains a control character") {
					t.Errorf("groups = %q (%q)", id.Groups, id.GroupsError)
				}
			}},
		{name: "repeated groups count once", claims: map[string]any{"groups": strings.Fields(strings.Repeat("g ", 500))},
			check: func(t *testing.T, id Identity) {
				if len(id.Groups) != 1 || id.GroupsError != "" {
					t.Errorf("groups = %q (%q)", id.Groups, id.GroupsError)
				}
			}},
		{name: "group with a control character", claims: map[string]any{"groups": []string{"ops\n"}},
			check: func(t *testing.T, id Identity) {
				if id.Groups != nil || !strings.Contains(id.GroupsError, "control character") {
					t.Errorf("groups = %q (%q)", id.Groups, id.GroupsError)
				}
			}},
		{name: "group longer than 255 bytes", claims: map[string]any{"groups": []string{strings.Repeat("g", 256)}},
			check: func(t *testing.T, id Identity) {
				if id.Groups != nil || !strings.Contains(id.GroupsError, "longer than 255 bytes") {
					t.Errorf("groups = %q (%q)", id.Groups, id.GroupsError)
				}
			}},
		{name: "too many groups", claims: map[string]any{"groups": func() (g []string) {
			for i := range 101 {
				g = append(g, fmt.Sprint("g", i))
			}
			return g
		}()},
			check: func(t *testing.T, id Identity) {
				if id.Groups != nil || !strings.Contains(id.GroupsError, "more than 100 distinct groups") {
					t.Errorf("groups = %d (%q)", len(id.Groups), id.GroupsError)
				}
			}},
		{name: "numeric uid", cfg: func(c *Config) { c.UIDClaim = "agora_uid" },
			claims: map[string]any{"agora_uid": 4294967295},
			check: func(t *testing.T, id Identity) {
				if !id.HasUID || id.UID != 4294967295 {
					t.Errorf("uid = %d (has %v)", id.UID, id.HasUID)
				}
			}},
		{name: "uid as a decimal string", cfg: func(c *Config) { c.UIDClaim = "agora_uid" },
			claims: map[string]any{"agora_uid": "42"},
			check: func(t *testing.T, id Identity) {
				if !id.HasUID || id.UID != 42 {
					t.Errorf("uid = %d (has %v)", id.UID, id.HasUID)
				}
			}},
		{name: "uid missing", cfg: func(c *Config) { c.UIDClaim = "agora_uid" },
			wantError: `uid claim "agora_uid" is missing`},
		{name: "uid zero", cfg: func(c *Config) { c.UIDClaim = "agora_uid" }, claims: map[string]any{"agora_uid": 0},
			wantError: "between 1 and 4294967295"},
		{name: "uid too large", cfg: func(c *Config) { c.UIDClaim = "agora_uid" }, claims: map[string]any{"agora_uid": 4294967296},
			wantError: "between 1 and 4294967295"},
		{name: "uid fractional", cfg: func(c *Config) { c.UIDClaim = "agora_uid" }, claims: map[string]any{"agora_uid": 1.5},
			wantError: "between 1 and 4294967295"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, _ := startVerifier(t, p, tt.cfg)
			id, err := v.Verify(context.Background(), p.token(t, "rsa-1", p.claims(tt.claims)))
			if tt.wantError != "" {
				e, ok := apperr.As(err)
				if !ok || e.Kind != apperr.Unauthorized || !strings.Contains(e.Message, tt.wantError) {
					t.Fatalf("Verify error = %v, want unauthorized containing %q", err, tt.wantError)
				}
				return
			}
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			tt.check(t, id)
		})
	}
}

func TestAccountProblem_FollowsAgorasCharset(t *testing.T) {
	tests := []struct {
		account string
		ok      bool
	}{
		{"alice", true},
		{"Alice Smith 42", true},
		{"a!#$%&()+-:;<=.>?@[]^_{}|~,", true},
		{strings.Repeat("x", 255), true},
		{"", false},
		{strings.Repeat("x", 256), false},
		{`quote"`, false},
		{"slash/", false},
		{"star*", false},
		{"back\\slash", false},
		{"tick'", false},
		{"émile", false},
		{"tab\t", false},
	}
	for _, tt := range tests {
		if got := accountProblem(tt.account) == ""; got != tt.ok {
			t.Errorf("accountProblem(%q) ok = %v, want %v (%s)", tt.account, got, tt.ok, accountProblem(tt.account))
		}
	}
}

func TestTokenCache_BoundedInBytes(t *testing.T) {
	c := newTokenCache(10_000, 1<<20)
	now := time.Unix(1000, 0)
	big := Identity{Subject: "s", Groups: make([]string, 2000)}
	for i := range big.Groups {
		big.Groups[i] = strings.Repeat("g", 15) + fmt.Sprint(i)
	}
	for i := range 200 {
		c.put(tokenKey{byte(i), byte(i >> 8)}, big, now.Add(time.Hour), 1, now)
		if c.size() > 1<<20 {
			t.Fatalf("after %d entries the cache holds %d bytes, over its 1 MiB bound", i+1, c.size())
		}
	}
	if n := c.len(); n == 0 || n > 1<<20/entrySize(big) {
		t.Fatalf("%d entries of %d bytes in a 1 MiB cache", n, entrySize(big))
	}
	c.flush()
	if c.size() != 0 || c.len() != 0 {
		t.Fatal("flush left entries or bytes")
	}
}
