package auth

import (
	"context"
	"crypto/rsa"
	"encoding/base64"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/broker-dev/broker/internal/apperr"
)

func TestKeySet_RemovedKeyStopsVerifyingAfterRefresh(t *testing.T) {
	p := newTestProvider(t, "rsa-1", "rsa-2")
	v, _ := startVerifier(t, p, func(c *Config) { c.RefreshInterval = 20 * time.Millisecond })
	old := p.token(t, "rsa-1", p.claims(nil))
	if _, err := v.Verify(context.Background(), old); err != nil {
		t.Fatalf("Verify before rotation: %v", err)
	}

	p.setKeys("rsa-2")
	gen := v.state().keys.generation()
	eventually(t, "the key set to change", func() bool { return v.state().keys.generation() != gen })

	_, err := v.Verify(context.Background(), old)
	if e, ok := apperr.As(err); !ok || !strings.Contains(e.Message, `signing key "rsa-1" is not in the provider's current key set`) {
		t.Fatalf("Verify of a cached token signed by a removed key = %v, want unknown key", err)
	}
	if _, err := v.Verify(context.Background(), p.token(t, "rsa-2", p.claims(nil))); err != nil {
		t.Fatalf("Verify with the remaining key: %v", err)
	}
}

func TestKeySet_NewKeyIsFetchedOnFirstUse(t *testing.T) {
	p := newTestProvider(t, "rsa-1")
	v, _ := startVerifier(t, p, nil)
	ks := v.state().keys
	ks.fetchMu.Lock()
	ks.lastAttempt = time.Time{} // as if the last fetch were long ago
	ks.fetchMu.Unlock()
	p.setKeys("rsa-1", "ec-1")
	if _, err := v.Verify(context.Background(), p.token(t, "ec-1", p.claims(nil))); err != nil {
		t.Fatalf("Verify with a newly published key: %v", err)
	}
}

func TestKeySet_FloodOfRandomKidsCausesBoundedFetches(t *testing.T) {
	p := newTestProvider(t, "rsa-1")
	v, _ := startVerifier(t, p, nil)
	ks := v.state().keys
	ks.fetchMu.Lock()
	ks.lastAttempt = time.Time{} // so the flood may trigger one refetch
	ks.fetchMu.Unlock()
	before := p.keyFetches()

	signed := p.token(t, "rsa-2", p.claims(nil))
	rest := signed[strings.IndexByte(signed, '.'):]
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tok := headerFor(fmt.Sprintf("random-%d", i)) + rest
			if _, err := v.Verify(context.Background(), tok); apperr.KindOf(err) != apperr.Unauthorized {
				t.Errorf("Verify with random kid = %v, want unauthorized", err)
			}
		}()
	}
	wg.Wait()
	if n := p.keyFetches() - before; n > 1 {
		t.Errorf("200 unknown kids caused %d key set fetches, want at most 1", n)
	}
}

func TestKeySet_ProviderDownAfterStartupKeepsCachedKeys(t *testing.T) {
	p := newTestProvider(t, "rsa-1")
	reg := prometheus.NewRegistry()
	v, _ := startVerifier(t, p, func(c *Config) { c.RefreshInterval = 20 * time.Millisecond; c.Registerer = reg })
	p.setDown(true)
	eventually(t, "a failed refresh", func() bool {
		return counterValue(t, reg, "broker_oidc_key_refreshes_total", "result", "error") > 0
	})
	if _, err := v.Verify(context.Background(), p.token(t, "rsa-1", p.claims(nil))); err != nil {
		t.Fatalf("Verify while the provider is down: %v", err)
	}
	if err := v.Ready(); err != nil {
		t.Errorf("Ready while the provider is down after startup = %v, want nil", err)
	}
	if got := counterValue(t, reg, "broker_oidc_key_refreshes_total", "result", "ok"); got < 1 {
		t.Errorf("ok refreshes = %v, want >= 1", got)
	}
}

func TestNewVerifier_ProviderDownAtStartup(t *testing.T) {
	p := newTestProvider(t, "rsa-1")
	hold := make(chan struct{})
	p.mu.Lock()
	p.hold = hold
	p.mu.Unlock()

	// The provider holds every request, so returning at all proves NewVerifier
	// does not wait for discovery.
	v, _ := newUnreadyVerifier(t, p, nil)
	if err := v.Ready(); err == nil {
		t.Fatal("Ready = nil before discovery")
	}
	tok := p.token(t, "rsa-1", p.claims(nil))
	rec := serve(v, "Bearer "+tok)
	if rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("status before discovery = %d, want 503", rec.Code)
	}
	if rec.Header().Get("WWW-Authenticate") != "" {
		t.Error("a 503 carries a Bearer challenge")
	}

	p.mu.Lock()
	p.down, p.hold = true, nil
	p.mu.Unlock()
	close(hold)
	eventually(t, "a failed discovery", func() bool {
		err := v.Ready()
		return err != nil && strings.Contains(err.Error(), "503")
	})

	p.setDown(false)
	waitReady(t, v)
	if rec := serve(v, "Bearer "+tok); rec.Code != http.StatusOK {
		t.Fatalf("status once the provider is up = %d, body %s", rec.Code, rec.Body)
	}
}

func TestNextRefresh_FollowsMaxAgeWithinBounds(t *testing.T) {
	tests := []struct {
		cacheControl string
		want         time.Duration
	}{
		{"", DefaultRefreshInterval},
		{"no-cache", DefaultRefreshInterval},
		{"public, max-age=120", 2 * time.Minute},
		{"max-age=1", minKeyRefresh},
		{"max-age=86400, must-revalidate", maxKeyRefresh},
		{"max-age=-5", DefaultRefreshInterval},
	}
	for _, tt := range tests {
		if got := nextRefresh(DefaultRefreshInterval, maxAge(tt.cacheControl)); got != tt.want {
			t.Errorf("Cache-Control %q: next refresh in %s, want %s", tt.cacheControl, got, tt.want)
		}
	}
}

func TestKeySet_SkipsKeysThatMustNotVerify(t *testing.T) {
	k := &keySet{log: discardLogger()}
	body := `{"keys":[
		{"kty":"oct","kid":"hmac","k":"c2VjcmV0"},
		{"kty":"RSA","kid":"enc","use":"enc","n":"` + rsaN(t) + `","e":"AQAB"},
		{"kty":"RSA","kid":"small","n":"AQAB","e":"AQAB"},
		{"kty":"RSA","kid":"good","n":"` + rsaN(t) + `","e":"AQAB"}
	]}`
	keys, err := k.parseKeys([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 1 || keys[0].KeyID != "good" {
		t.Errorf("kept %d keys (%v), want only \"good\"", len(keys), keys)
	}
	if _, err := k.parseKeys([]byte(`{"keys":[{"kty":"oct","kid":"hmac","k":"c2VjcmV0"}]}`)); err == nil {
		t.Error("a key set with only a symmetric key was accepted")
	}
}

// headerFor encodes an RS256 JWS header naming kid.
func headerFor(kid string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"RS256","kid":"` + kid + `"}`))
}

// rsaN is the base64url modulus of the rsa-1 test key.
func rsaN(t *testing.T) string {
	t.Helper()
	return base64.RawURLEncoding.EncodeToString(testKeys()["rsa-1"].Public().(*rsa.PublicKey).N.Bytes())
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
