package console_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// idpUser is who the test provider logs in.
type idpUser struct {
	Subject, Email string
	Groups         []string
}

// testIDP is a minimal OpenID provider for unit tests: discovery, keys, an
// authorization endpoint that logs in the current user at once, and a token
// endpoint that insists on the PKCE verifier. Tests can make it misbehave
// (a wrong nonce) to see the console refuse.
type testIDP struct {
	t        *testing.T
	srv      *httptest.Server
	key      *ecdsa.PrivateKey
	clientID string

	mu        sync.Mutex
	user      idpUser
	nonceHook func(string) string // rewrites the nonce put in the ID token
	codes     map[string]authRequest
	exchanges int
}

// authRequest is what the authorization endpoint remembers for a code.
type authRequest struct {
	user                               idpUser
	nonce, challenge, method, redirect string
}

func newTestIDP(t *testing.T, clientID string) *testIDP {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p := &testIDP{t: t, key: key, clientID: clientID, codes: map[string]authRequest{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", p.discovery)
	mux.HandleFunc("GET /keys", p.keys)
	mux.HandleFunc("GET /authorize", p.authorize)
	mux.HandleFunc("POST /token", p.token)
	p.srv = httptest.NewServer(mux)
	t.Cleanup(p.srv.Close)
	return p
}

func (p *testIDP) issuer() string { return p.srv.URL }

// loginAs makes the next authorization log in u.
func (p *testIDP) loginAs(u idpUser) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.user = u
}

// setNonceHook makes the token endpoint put f(nonce) in ID tokens.
func (p *testIDP) setNonceHook(f func(string) string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.nonceHook = f
}

func (p *testIDP) discovery(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, map[string]any{
		"issuer":                                p.issuer(),
		"authorization_endpoint":                p.issuer() + "/authorize",
		"token_endpoint":                        p.issuer() + "/token",
		"jwks_uri":                              p.issuer() + "/keys",
		"response_types_supported":              []string{"code"},
		"subject_types_supported":               []string{"public"},
		"id_token_signing_alg_values_supported": []string{"ES256"},
		"code_challenge_methods_supported":      []string{"S256"},
	})
}

func (p *testIDP) keys(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &p.key.PublicKey, KeyID: "k1", Algorithm: "ES256", Use: "sig"}}})
}

func (p *testIDP) authorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if q.Get("client_id") != p.clientID || q.Get("response_type") != "code" {
		http.Error(w, "bad client or response type", http.StatusBadRequest)
		return
	}
	code := rand.Text()
	p.mu.Lock()
	p.codes[code] = authRequest{user: p.user, nonce: q.Get("nonce"), challenge: q.Get("code_challenge"),
		method: q.Get("code_challenge_method"), redirect: q.Get("redirect_uri")}
	p.mu.Unlock()
	back := q.Get("redirect_uri") + "?" + url.Values{"code": {code}, "state": {q.Get("state")}}.Encode()
	http.Redirect(w, r, back, http.StatusFound)
}

func (p *testIDP) token(w http.ResponseWriter, r *http.Request) {
	code, verifier := r.PostFormValue("code"), r.PostFormValue("code_verifier")
	p.mu.Lock()
	req, ok := p.codes[code]
	delete(p.codes, code)
	hook := p.nonceHook
	p.exchanges++
	p.mu.Unlock()
	sum := sha256.Sum256([]byte(verifier))
	switch {
	case !ok:
		oauthError(w, "invalid_grant", "unknown or used code")
		return
	case req.method != "S256" || base64.RawURLEncoding.EncodeToString(sum[:]) != req.challenge:
		oauthError(w, "invalid_grant", "PKCE verification failed")
		return
	case r.PostFormValue("redirect_uri") != req.redirect:
		oauthError(w, "invalid_grant", "redirect_uri differs")
		return
	}
	nonce := req.nonce
	if hook != nil {
		nonce = hook(nonce)
	}
	now := time.Now()
	claims := map[string]any{
		"iss": p.issuer(), "sub": req.user.Subject, "aud": p.clientID, "email": req.user.Email,
		"groups": req.user.Groups, "nonce": nonce, "iat": now.Unix(), "exp": now.Add(time.Hour).Unix(),
	}
	writeJSON(w, map[string]any{"access_token": "at", "token_type": "Bearer", "expires_in": 3600, "id_token": p.sign(claims)})
}

func (p *testIDP) sign(claims map[string]any) string {
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: p.key},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", "k1"))
	if err != nil {
		p.t.Error(err)
		return ""
	}
	payload, _ := json.Marshal(claims)
	jws, err := signer.Sign(payload)
	if err != nil {
		p.t.Error(err)
		return ""
	}
	s, _ := jws.CompactSerialize()
	return s
}

func oauthError(w http.ResponseWriter, code, desc string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusBadRequest)
	json.NewEncoder(w).Encode(map[string]string{"error": code, "error_description": desc})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}
