package auth_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/broker-dev/broker/internal/auth"
	"github.com/broker-dev/broker/internal/auth/dextest"
)

func TestMe_WithRealDexTokens(t *testing.T) {
	dex := dextest.Start(t, dextest.Options{})
	v, err := auth.NewVerifier(context.Background(), auth.Config{
		Issuer:    dex.Issuer(),
		Audiences: []string{"another-app", dextest.ClientID},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	me := v.Middleware(auth.MeHandler())

	tests := []struct {
		name, email, password, userID string
		groups                        []string
	}{
		{"admin", dextest.AdminEmail, dextest.AdminPassword, dextest.AdminUserID, dextest.AdminGroups},
		{"developer", dextest.DeveloperEmail, dextest.DeveloperPassword, dextest.DeveloperUserID, dextest.DeveloperGroups},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			token := dex.Token(t, tt.email, tt.password)
			req := httptest.NewRequest(http.MethodGet, "/v1/me", nil)
			req.Header.Set("Authorization", "Bearer "+token)
			rec := httptest.NewRecorder()
			waitReady(t, v)
			me.ServeHTTP(rec, req)
			if rec.Code != http.StatusOK {
				t.Fatalf("GET /v1/me = %d %s", rec.Code, rec.Body)
			}
			var got auth.Me
			if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
				t.Fatal(err)
			}
			wantSub := dex.Subject(tt.userID)
			if got.Issuer != dex.Issuer() || got.Subject != wantSub || got.Account != wantSub ||
				got.Email != tt.email || !slices.Equal(got.Groups, tt.groups) || got.AccountError != "" {
				t.Errorf("me = %+v, want issuer %s, subject/account %s, email %s, groups %v",
					got, dex.Issuer(), wantSub, tt.email, tt.groups)
			}
		})
	}
}

// waitReady polls v.Ready; Dex is already serving, so discovery is quick.
func waitReady(t *testing.T, v *auth.Verifier) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for err := v.Ready(); err != nil; err = v.Ready() {
		if time.Now().After(deadline) {
			t.Fatalf("verifier not ready: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
