package auth

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc/oidctest"
	jose "github.com/go-jose/go-jose/v4"
)

// testKeys are generated once: RSA key generation is slow.
var testKeys = sync.OnceValue(func() map[string]crypto.Signer {
	keys := map[string]crypto.Signer{}
	for _, kid := range []string{"rsa-1", "rsa-2"} {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		keys[kid] = k
	}
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	keys["ec-1"] = ec
	return keys
})

func algFor(kid string) string {
	if _, ok := testKeys()[kid].(*ecdsa.PrivateKey); ok {
		return "ES256"
	}
	return "RS256"
}

// testProvider is go-oidc's oidctest server behind a switch: it can rotate
// keys, go down, hold requests, and counts key set fetches.
type testProvider struct {
	srv *httptest.Server

	mu           sync.Mutex
	oidc         oidctest.Server
	down         bool
	hold         chan struct{} // while non-nil, requests wait for it to close
	requests     int           // every request, answered or not
	jwksHits     int
	cacheControl string
}

func newTestProvider(t testing.TB, kids ...string) *testProvider {
	t.Helper()
	p := &testProvider{}
	p.srv = httptest.NewServer(p)
	t.Cleanup(p.srv.Close)
	p.oidc.SetIssuer(p.srv.URL)
	p.oidc.Algorithms = []string{"RS256", "ES256"}
	if len(kids) == 0 {
		kids = []string{"rsa-1"}
	}
	p.setKeys(kids...)
	return p
}

func (p *testProvider) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	hold := p.hold
	p.requests++
	p.mu.Unlock()
	if hold != nil {
		<-hold
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.down {
		http.Error(w, "provider down", http.StatusServiceUnavailable)
		return
	}
	if r.URL.Path == "/keys" {
		p.jwksHits++
		if p.cacheControl != "" {
			w.Header().Set("Cache-Control", p.cacheControl)
		}
	}
	p.oidc.ServeHTTP(w, r)
}

func (p *testProvider) issuer() string { return p.srv.URL }

// setKeys makes the provider publish exactly these keys.
func (p *testProvider) setKeys(kids ...string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.oidc.PublicKeys = nil
	for _, kid := range kids {
		p.oidc.PublicKeys = append(p.oidc.PublicKeys, oidctest.PublicKey{
			PublicKey: testKeys()[kid].Public(), KeyID: kid, Algorithm: algFor(kid),
		})
	}
}

func (p *testProvider) setDown(down bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = down
}

// requestCount is how many requests of any kind the provider has received.
func (p *testProvider) requestCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.requests
}

func (p *testProvider) keyFetches() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.jwksHits
}

// claims returns valid claims for a token from p, with overrides applied (a
// nil value deletes the claim).
func (p *testProvider) claims(overrides map[string]any) map[string]any {
	now := time.Now()
	c := map[string]any{
		"iss":    p.issuer(),
		"aud":    "broker",
		"sub":    "alice",
		"exp":    now.Add(time.Hour).Unix(),
		"iat":    now.Unix(),
		"email":  "alice@example.com",
		"groups": []string{"developers"},
	}
	for k, v := range overrides {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	return c
}

// token signs claims with the named test key.
func (p *testProvider) token(t testing.TB, kid string, claims map[string]any) string {
	t.Helper()
	b, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	return oidctest.SignIDToken(testKeys()[kid], kid, algFor(kid), string(b))
}

// signedToken signs claims with the named test key under kid (which need not
// be the key's own name) and a JOSE header typ ("" leaves it out).
func signedToken(t testing.TB, key, kid, typ string, claims map[string]any) string {
	t.Helper()
	b, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	opts := (&jose.SignerOptions{}).WithHeader("kid", kid)
	if typ != "" {
		opts = opts.WithType(jose.ContentType(typ))
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.SignatureAlgorithm(algFor(key)), Key: testKeys()[key]}, opts)
	if err != nil {
		t.Fatal(err)
	}
	jws, err := signer.Sign(b)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// logBuffer captures a verifier's log output at debug level.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(b)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// startVerifier creates a verifier for p (config adjusted by mutate), waits
// until it is ready, and closes it at the end of the test.
func startVerifier(t testing.TB, p *testProvider, mutate func(*Config)) (*Verifier, *logBuffer) {
	t.Helper()
	v, logs := newUnreadyVerifier(t, p, mutate)
	waitReady(t, v)
	return v, logs
}

func newUnreadyVerifier(t testing.TB, p *testProvider, mutate func(*Config)) (*Verifier, *logBuffer) {
	t.Helper()
	logs := &logBuffer{}
	cfg := Config{
		Issuer:    p.issuer(),
		Audiences: []string{"broker"},
		Logger:    slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if mutate != nil {
		mutate(&cfg)
	}
	v, err := NewVerifier(context.Background(), cfg)
	if err != nil {
		t.Fatalf("NewVerifier: %v", err)
	}
	t.Cleanup(v.Close)
	return v, logs
}

func waitReady(t testing.TB, v *Verifier) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for v.Ready() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("verifier not ready after 10s: %v", v.Ready())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// eventually polls cond for up to 10s.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
