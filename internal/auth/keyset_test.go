package auth

import (
	"context"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/broker-dev/broker/internal/apperr"
	"github.com/broker-dev/broker/internal/problem"
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
		return metricValue(t, reg, "broker_oidc_key_refreshes_total", map[string]string{"result": "error"}) > 0
	})
	if _, err := v.Verify(context.Background(), p.token(t, "rsa-1", p.claims(nil))); err != nil {
		t.Fatalf("Verify while the provider is down: %v", err)
	}
	if err := v.Ready(); err != nil {
		t.Errorf("Ready while the provider is down after startup = %v, want nil", err)
	}
	if got := metricValue(t, reg, "broker_oidc_key_refreshes_total", map[string]string{"result": "ok"}); got < 1 {
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

// allowRefetch makes the next unknown kid trigger a key set fetch, as if the
// last one were long ago.
func allowRefetch(ks *keySet) {
	ks.fetchMu.Lock()
	ks.lastAttempt = time.Time{}
	ks.fetchMu.Unlock()
}

// TestKeySet_UnknownKidWhileProviderDownIsUnavailable: an unknown kid is 401
// while the provider answers, 503 while it cannot be reached (the key may
// have been rotated in meanwhile), and 401 again (or verified) once it is
// back, without a restart; cached keys keep verifying throughout.
func TestKeySet_UnknownKidWhileProviderDownIsUnavailable(t *testing.T) {
	p := newTestProvider(t, "rsa-1")
	reg := prometheus.NewRegistry()
	v, logs := startVerifier(t, p, func(c *Config) { c.Registerer = reg })
	ks := v.state().keys
	ctx := context.Background()
	newKey := p.token(t, "rsa-2", p.claims(nil)) // signed by a key the provider does not publish yet
	wantUnknown := func(when string) {
		t.Helper()
		_, err := v.Verify(ctx, newKey)
		if e, ok := apperr.As(err); !ok || e.Kind != apperr.Unauthorized ||
			!strings.Contains(e.Message, `signing key "rsa-2" is not in the provider's current key set`) {
			t.Fatalf("Verify with an unknown kid %s = %v, want unauthorized unknown key", when, err)
		}
	}
	rejections := func(reason string) float64 {
		return metricValue(t, reg, "broker_auth_rejections_total", map[string]string{"reason": reason})
	}
	failedFetches := func() float64 {
		return metricValue(t, reg, "broker_oidc_key_refreshes_total", map[string]string{"result": "error"})
	}

	// (a) Provider up: the refetch succeeds and the kid is not there.
	allowRefetch(ks)
	wantUnknown("while the provider is up")

	// (b) Provider down.
	p.setDown(true)
	allowRefetch(ks)
	if _, err := v.Verify(ctx, p.token(t, "rsa-1", p.claims(map[string]any{"sub": "bob"}))); err != nil {
		t.Fatalf("Verify with a cached key while the provider is down: %v", err)
	}
	cached := v.cache.len()
	unavailableBefore, unknownBefore, failedBefore := rejections(reasonUnavailable), rejections(reasonUnknownKey), failedFetches()

	rec := serve(v, "Bearer "+newKey)
	if rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("status for an unknown kid while the provider is down = %d, want 503; body %s", rec.Code, rec.Body)
	}
	if got := rec.Header().Get("Retry-After"); got == "" {
		t.Error("the 503 has no Retry-After")
	}
	if got := rec.Header().Get("WWW-Authenticate"); got != "" {
		t.Errorf("the 503 carries a challenge %q; the token is not known to be invalid", got)
	}
	if ct := rec.Header().Get("Content-Type"); ct != problem.ContentType {
		t.Errorf("Content-Type = %q, want %q", ct, problem.ContentType)
	}
	var d problem.Details
	if err := json.Unmarshal(rec.Body.Bytes(), &d); err != nil {
		t.Fatalf("body is not problem+json: %v", err)
	}
	if want := `the identity provider could not be reached to fetch signing key "rsa-2"; retry shortly`; d.Status != http.StatusServiceUnavailable || d.Detail != want {
		t.Errorf("problem = status %d, detail %q; want 503, %q", d.Status, d.Detail, want)
	}
	if got := failedFetches() - failedBefore; got != 1 {
		t.Errorf("the unknown kid caused %v failed key set fetches, want 1", got)
	}

	// More unknown kids, concurrently: all unavailable, none refetches (the
	// failed fetch above rate-limits them).
	rest := newKey[strings.IndexByte(newKey, '.'):]
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := v.Verify(ctx, headerFor(fmt.Sprintf("random-%d", i))+rest)
			if apperr.KindOf(err) != apperr.Unavailable {
				t.Errorf("Verify with a random kid while the provider is down = %v, want unavailable", err)
			}
		}()
	}
	wg.Wait()
	if got := failedFetches() - failedBefore; got != 1 {
		t.Errorf("51 unknown kids while the provider is down caused %v fetches, want 1", got)
	}
	if got := rejections(reasonUnavailable) - unavailableBefore; got != 51 {
		t.Errorf("rejections{reason=%q} rose by %v, want 51", reasonUnavailable, got)
	}
	if got := rejections(reasonUnknownKey) - unknownBefore; got != 0 {
		t.Errorf("rejections{reason=%q} rose by %v while the provider was down, want 0", reasonUnknownKey, got)
	}
	if v.cache.len() != cached {
		t.Errorf("the token cache went from %d to %d entries on failures", cached, v.cache.len())
	}
	if strings.Contains(rec.Body.String(), newKey) || strings.Contains(logs.String(), newKey) {
		t.Error("the token appears in the response body or the log")
	}
	if !strings.Contains(logs.String(), "unexpected status 503") {
		t.Error("the log does not say why the key set could not be fetched")
	}

	// (c) Provider back: unknown again once the next fetch succeeds, and
	// verified once the provider publishes the key.
	p.setDown(false)
	allowRefetch(ks)
	wantUnknown("once the provider is back")
	p.setKeys("rsa-1", "rsa-2")
	allowRefetch(ks)
	if _, err := v.Verify(ctx, newKey); err != nil {
		t.Fatalf("Verify once the provider publishes the key: %v", err)
	}
}

// TestKeySet_UnknownKidAfterFailedScheduledRefreshIsUnavailable: a failed
// scheduled refresh also counts as "the provider cannot be reached", and a
// later successful one restores 401s by itself.
func TestKeySet_UnknownKidAfterFailedScheduledRefreshIsUnavailable(t *testing.T) {
	p := newTestProvider(t, "rsa-1")
	reg := prometheus.NewRegistry()
	v, _ := startVerifier(t, p, func(c *Config) { c.RefreshInterval = 20 * time.Millisecond; c.Registerer = reg })
	unknown := p.token(t, "rsa-2", p.claims(nil))

	p.setDown(true)
	eventually(t, "a failed refresh", func() bool {
		return metricValue(t, reg, "broker_oidc_key_refreshes_total", map[string]string{"result": "error"}) > 0
	})
	if _, err := v.Verify(context.Background(), unknown); apperr.KindOf(err) != apperr.Unavailable {
		t.Fatalf("Verify with an unknown kid after a failed refresh = %v, want unavailable", err)
	}

	p.setDown(false)
	eventually(t, "unknown kids to be refused as unknown again", func() bool {
		_, err := v.Verify(context.Background(), unknown)
		return apperr.KindOf(err) == apperr.Unauthorized
	})
}

// TestKeySet_UnknownKidWhileProviderClosedIsUnavailable: a provider that
// refuses connections is as unreachable as one answering errors.
func TestKeySet_UnknownKidWhileProviderClosedIsUnavailable(t *testing.T) {
	p := newTestProvider(t, "rsa-1")
	v, _ := startVerifier(t, p, nil)
	p.srv.Close()
	allowRefetch(v.state().keys)
	if _, err := v.Verify(context.Background(), p.token(t, "rsa-1", p.claims(nil))); err != nil {
		t.Fatalf("Verify with a cached key while the provider is gone: %v", err)
	}
	_, err := v.Verify(context.Background(), p.token(t, "ec-1", p.claims(nil)))
	if e, ok := apperr.As(err); !ok || e.Kind != apperr.Unavailable ||
		e.Message != `the identity provider could not be reached to fetch signing key "ec-1"; retry shortly` {
		t.Fatalf("Verify with an unknown kid while the provider is gone = %v, want unavailable", err)
	}
}
