package devidp

import (
	"context"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
)

// startCodeFlowIssuer serves an issuer for client "console" on a real
// loopback server and discovers it as a relying party would.
func startCodeFlowIssuer(t *testing.T) (*httptest.Server, *oidc.Provider) {
	t.Helper()
	srv := httptest.NewUnstartedServer(nil)
	iss, err := New(Options{Issuer: "http://" + srv.Listener.Addr().String(), Audience: "console"})
	if err != nil {
		t.Fatal(err)
	}
	srv.Config.Handler = iss.Handler()
	srv.Start()
	t.Cleanup(srv.Close)
	provider, err := oidc.NewProvider(context.Background(), iss.IssuerURL())
	if err != nil {
		t.Fatal(err)
	}
	return srv, provider
}

// TestCodeFlow_LoginWithPKCEGivesAnIDTokenWithTheNonce drives the login as
// golang.org/x/oauth2 and a browser would: authorization page, pick a user,
// redirect with a code, exchange it with the PKCE verifier, verify the token.
func TestCodeFlow_LoginWithPKCEGivesAnIDTokenWithTheNonce(t *testing.T) {
	var callback *url.URL
	cb := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { callback = r.URL }))
	defer cb.Close()
	srv, provider := startCodeFlowIssuer(t)
	ctx := context.Background()
	conf := oauth2.Config{ClientID: "console", Endpoint: provider.Endpoint(), RedirectURL: cb.URL + "/cb", Scopes: []string{oidc.ScopeOpenID}}
	verifier := oauth2.GenerateVerifier()
	authURL := conf.AuthCodeURL("st4te", oauth2.S256ChallengeOption(verifier), oidc.Nonce("n0nce"))

	jar, _ := cookiejar.New(nil)
	browser := &http.Client{Jar: jar}
	resp, err := browser.Get(authURL)
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(page), `id="login-bob"`) {
		t.Fatalf("sign-in page %d:\n%s", resp.StatusCode, page)
	}
	form := url.Values{"user": {"bob"}}
	for _, m := range regexp.MustCompile(`<input type="hidden" name="([a-z_]+)" value="([^"]*)">`).FindAllStringSubmatch(string(page), -1) {
		if m[1] != "user" {
			form.Set(m[1], htmlUnescape(m[2]))
		}
	}
	resp, err = browser.PostForm(srv.URL+"/auth", form)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if callback == nil || callback.Query().Get("state") != "st4te" {
		t.Fatalf("callback %v, want the state back", callback)
	}
	code := callback.Query().Get("code")

	if _, err := conf.Exchange(ctx, code, oauth2.VerifierOption("wrong-"+verifier)); err == nil {
		t.Fatal("exchange with a wrong PKCE verifier succeeded")
	}
	// A failed exchange burns the code, as a stolen code must not be retried.
	if _, err := conf.Exchange(ctx, code, oauth2.VerifierOption(verifier)); err == nil {
		t.Fatal("a code was redeemed after a failed attempt")
	}
}

func TestCodeFlow_ExchangeReturnsVerifiableTokenOnce(t *testing.T) {
	srv, provider := startCodeFlowIssuer(t)
	ctx := context.Background()
	redirect := "http://127.0.0.1:1/cb"
	conf := oauth2.Config{ClientID: "console", Endpoint: provider.Endpoint(), RedirectURL: redirect}
	verifier := oauth2.GenerateVerifier()
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	challenge := url.Values{}
	for k, v := range map[string]string{"response_type": "code", "client_id": "console", "redirect_uri": redirect, "state": "s",
		"nonce": "abc", "code_challenge": oauth2.S256ChallengeFromVerifier(verifier), "code_challenge_method": "S256", "user": "alice"} {
		challenge.Set(k, v)
	}
	resp, err := noRedirect.PostForm(srv.URL+"/auth", challenge)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, _ := url.Parse(resp.Header.Get("Location"))
	code := loc.Query().Get("code")
	tok, err := conf.Exchange(ctx, code, oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := tok.Extra("id_token").(string)
	idt, err := provider.Verifier(&oidc.Config{ClientID: "console"}).Verify(ctx, raw)
	if err != nil || idt.Subject != "alice" || idt.Nonce != "abc" {
		t.Fatalf("id token %+v, err %v", idt, err)
	}
	if _, err := conf.Exchange(ctx, code, oauth2.VerifierOption(verifier)); err == nil {
		t.Fatal("a code was redeemed twice")
	}
}

func TestAuthorize_RefusesBadRequests(t *testing.T) {
	iss, err := New(Options{Issuer: "http://127.0.0.1:9/dev", Audience: "console"})
	if err != nil {
		t.Fatal(err)
	}
	ok := url.Values{"response_type": {"code"}, "client_id": {"console"}, "redirect_uri": {"http://127.0.0.1:1/cb"},
		"code_challenge": {strings.Repeat("a", 43)}, "code_challenge_method": {"S256"}}
	cases := map[string]func(url.Values){
		"implicit flow":        func(v url.Values) { v.Set("response_type", "token") },
		"other client":         func(v url.Values) { v.Set("client_id", "evil") },
		"no pkce":              func(v url.Values) { v.Del("code_challenge") },
		"plain pkce":           func(v url.Values) { v.Set("code_challenge_method", "plain") },
		"remote redirect":      func(v url.Values) { v.Set("redirect_uri", "https://evil.example.com/cb") },
		"javascript redirect":  func(v url.Values) { v.Set("redirect_uri", "javascript:alert(1)") },
		"redirect in fragment": func(v url.Values) { v.Set("redirect_uri", "http://127.0.0.1/cb#x") },
	}
	for name, mod := range cases {
		v := url.Values{}
		for k, vals := range ok {
			v[k] = append([]string{}, vals...)
		}
		mod(v)
		r := httptest.NewRequest("GET", "/auth?"+v.Encode(), nil)
		r.RemoteAddr, r.Host = "127.0.0.1:5000", "127.0.0.1:8080"
		w := httptest.NewRecorder()
		iss.Handler().ServeHTTP(w, r)
		if w.Code != http.StatusBadRequest {
			t.Errorf("%s: %d, want 400", name, w.Code)
		}
	}
}

func htmlUnescape(s string) string {
	r := strings.NewReplacer("&amp;", "&", "&lt;", "<", "&gt;", ">", "&#34;", `"`, "&#39;", "'", "&#43;", "+")
	return r.Replace(s)
}
