package auth

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/broker-dev/broker/internal/auth/dextest"
)

// TestIssuers_WithRealDexInstances runs three issuers in one set: a real Dex
// as the default issuer, a second real Dex (whose issuer URL ends with a
// slash) named "partner" with other claim mappings and a bound claim, and the
// in-process provider as an access-token issuer named "api".
func TestIssuers_WithRealDexInstances(t *testing.T) {
	corp := dextest.Start(t, dextest.Options{})
	partner := dextest.Start(t, dextest.Options{TrailingSlash: true})
	api := newTestProvider(t, "ec-1")
	if !strings.HasSuffix(partner.Issuer(), "/dex/") || strings.HasSuffix(corp.Issuer(), "/") {
		t.Fatalf("issuers %s and %s, want one without and one with a trailing slash", corp.Issuer(), partner.Issuer())
	}
	quiet := slog.New(slog.DiscardHandler)
	reg := prometheus.NewRegistry()
	s := startIssuers(t,
		Config{Issuer: corp.Issuer(), Audiences: []string{dextest.ClientID}, Logger: quiet, Registerer: reg},
		Config{Name: "partner", Issuer: partner.Issuer(), Audiences: []string{dextest.ClientID}, Logger: quiet,
			AccountClaim: "email", RequiredClaims: map[string][]any{"email_verified": {true}}},
		Config{Name: "api", Issuer: api.issuer(), Audiences: []string{"https://broker.example"}, Logger: quiet,
			TokenType: TokenTypeAccess, RequiredScopes: []string{"broker"}},
	)
	ctx := context.Background()
	corpAdmin := corp.Token(t, dextest.AdminEmail, dextest.AdminPassword)
	partnerAdmin := partner.Token(t, dextest.AdminEmail, dextest.AdminPassword)
	sub := corp.Subject(dextest.AdminUserID)

	t.Run("each issuer's token verifies with its own config", func(t *testing.T) {
		id, err := s.Verify(ctx, corpAdmin)
		if err != nil {
			t.Fatalf("token of the default Dex: %v", err)
		}
		if id.Issuer != corp.Issuer() || id.Subject != sub || id.Qualifier != "" || id.PolicySubject() != sub ||
			id.Account != sub || !slices.Equal(id.Groups, dextest.AdminGroups) {
			t.Errorf("default issuer identity = %+v", id)
		}

		id, err = s.Verify(ctx, partnerAdmin)
		if err != nil {
			t.Fatalf("token of the partner Dex: %v", err)
		}
		wantGroups := []string{"partner/" + dextest.GroupAdmins, "partner/" + dextest.GroupDevelopers}
		if id.Issuer != partner.Issuer() || id.Subject != sub || id.Qualifier != "partner" || id.PolicySubject() != "partner/"+sub ||
			id.Account != dextest.AdminEmail || !slices.Equal(id.Groups, wantGroups) || id.GroupsError != "" {
			t.Errorf("partner identity = %+v, want groups %v and account %s", id, wantGroups, dextest.AdminEmail)
		}

		tok := signedToken(t, "ec-1", "ec-1", "at+jwt", api.claims(map[string]any{"aud": "https://broker.example", "scope": "broker"}))
		id, err = s.Verify(ctx, tok)
		if err != nil || id.PolicySubject() != "api/alice" || !slices.Equal(id.Groups, []string{"api/developers"}) {
			t.Errorf("access token of api: %+v, %v", id, err)
		}
		_, err = s.Verify(ctx, signedToken(t, "ec-1", "ec-1", "at+jwt", api.claims(map[string]any{"aud": "https://broker.example"})))
		wantUnauthorized(t, err, "token has no scope claim")
	})

	t.Run("the middleware and console login use the set", func(t *testing.T) {
		rec := httptestServe(s.Middleware(MeHandler()), "Bearer "+partnerAdmin)
		var me Me
		if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &me) != nil ||
			me.Issuer != partner.Issuer() || !slices.Contains(me.Groups, "partner/"+dextest.GroupAdmins) {
			t.Errorf("GET /v1/me with the partner token = %d %s", rec.Code, rec.Body)
		}
		// Dex's password grant sets no nonce: the login check must refuse it.
		_, err := s.VerifyIDToken(ctx, partnerAdmin, "a-login-nonce")
		wantUnauthorized(t, err, "ID token nonce does not match this login")
	})

	t.Run("issuer URLs match exactly, trailing slash included", func(t *testing.T) {
		// Without the slash, partner's tokens name no configured issuer...
		withoutSlash, err := NewIssuers(ctx, []Config{{Name: "partner", Issuer: strings.TrimSuffix(partner.Issuer(), "/"),
			Audiences: []string{dextest.ClientID}, Logger: quiet}})
		if err != nil {
			t.Fatal(err)
		}
		defer withoutSlash.Close()
		_, err = withoutSlash.Verify(ctx, partnerAdmin)
		wantUnauthorized(t, err, "token issuer "+clip(partner.Issuer())+" is not accepted")

		// ...and with a slash the default Dex's do not either; its discovery
		// document names the issuer without one, so it never becomes ready.
		withSlash, err := NewIssuers(ctx, []Config{{Issuer: corp.Issuer() + "/", Audiences: []string{dextest.ClientID}, Logger: quiet}})
		if err != nil {
			t.Fatal(err)
		}
		defer withSlash.Close()
		_, err = withSlash.Verify(ctx, corpAdmin)
		wantUnauthorized(t, err, "token issuer "+clip(corp.Issuer())+" is not accepted")
		eventually(t, "a failed discovery", func() bool {
			err := withSlash.Ready()
			return err != nil && strings.Contains(err.Error(), "did not match the issuer URL returned by provider")
		})
	})

	t.Run("required claims missing or wrong name the claim", func(t *testing.T) {
		for _, tt := range []struct {
			required map[string][]any
			wantMsg  string
		}{
			{map[string][]any{"email_verified": {false}}, `required claim "email_verified" does not have an accepted value`},
			{map[string][]any{"email": {"someone@example.com"}}, `required claim "email" does not have an accepted value`},
			{map[string][]any{"hd": {"example.com"}}, `required claim "hd" is missing from the token`},
		} {
			strict := startIssuers(t, Config{Name: "partner", Issuer: partner.Issuer(), Audiences: []string{dextest.ClientID},
				Logger: quiet, RequiredClaims: tt.required})
			_, err := strict.Verify(ctx, partnerAdmin)
			wantUnauthorized(t, err, tt.wantMsg, dextest.AdminEmail)
		}
	})

	t.Run("metrics carry the issuer label", func(t *testing.T) {
		for _, issuer := range []string{"default", "partner", "api"} {
			if got := metricValue(t, reg, "broker_oidc_key_refreshes_total", map[string]string{"issuer": issuer, "result": "ok"}); got < 1 {
				t.Errorf("key refreshes{issuer=%s,result=ok} = %v, want >= 1", issuer, got)
			}
		}
		if got := rejections(t, reg, "api", reasonScope); got != 1 {
			t.Errorf("rejections{issuer=api,reason=scope} = %v, want 1", got)
		}
		if got := rejections(t, reg, "partner", reasonNonce); got != 1 {
			t.Errorf("rejections{issuer=partner,reason=nonce} = %v, want 1", got)
		}
		before := rejections(t, reg, "unknown", reasonUnknownIssuer)
		// A token of a Dex the set does not know: refused before any request.
		other := dextest.Start(t, dextest.Options{})
		_, err := s.Verify(ctx, other.Token(t, dextest.DeveloperEmail, dextest.DeveloperPassword))
		wantUnauthorized(t, err, "is not accepted")
		if got := rejections(t, reg, "unknown", reasonUnknownIssuer); got != before+1 {
			t.Errorf("rejections{issuer=unknown,reason=unknown_issuer} went from %v to %v", before, got)
		}
	})
}
