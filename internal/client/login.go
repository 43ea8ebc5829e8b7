package client

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"html"
	"io"
	"net"
	"net/http"
	"slices"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
)

// Discovery is GET /v1/cli: the identity provider and the public client the
// CLI logs in with.
type Discovery struct {
	Issuer   string   `json:"issuer"`
	ClientID string   `json:"clientId"`
	Scopes   []string `json:"scopes"`
}

// DefaultLoginTimeout bounds how long Login waits for the person to log in.
const DefaultLoginTimeout = 10 * time.Minute

// LoginOptions adjust Login.
type LoginOptions struct {
	// HTTP makes every request (nil: Default).
	HTTP *http.Client
	// Prompt receives what the person must open (and the code to enter).
	Prompt io.Writer
	// Timeout bounds the wait for the person (0: DefaultLoginTimeout).
	Timeout time.Duration
}

// Login logs a person in to server: it reads the server's Discovery, logs in
// at its issuer with the device grant when the issuer offers one, else with
// the code flow and PKCE on a loopback redirect, verifies the ID token it
// gets, and saves the session in store.
func Login(ctx context.Context, server string, store Store, o LoginOptions) (Session, error) {
	httpc := o.HTTP
	if httpc == nil {
		httpc = Default
	}
	if o.Prompt == nil {
		o.Prompt = io.Discard
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultLoginTimeout
	}
	var d Discovery
	if err := getJSON(ctx, httpc, server+"/v1/cli", &d); err != nil {
		return Session{}, err
	}
	if d.Issuer == "" || d.ClientID == "" || !slices.Contains(d.Scopes, oidc.ScopeOpenID) {
		return Session{}, fmt.Errorf("%s/v1/cli names no issuer, client id or openid scope: not a broker's CLI discovery document", server)
	}
	ctx = oidc.ClientContext(ctx, httpc)
	provider, err := oidc.NewProvider(ctx, d.Issuer)
	if err != nil {
		return Session{}, fmt.Errorf("the broker's identity provider %s: %w", d.Issuer, err)
	}
	cfg := oauth2.Config{ClientID: d.ClientID, Endpoint: provider.Endpoint(), Scopes: d.Scopes}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	var (
		tok   *oauth2.Token
		nonce string
	)
	if cfg.Endpoint.DeviceAuthURL != "" {
		tok, err = deviceLogin(ctx, &cfg, o.Prompt)
	} else {
		nonce = randomString()
		tok, err = loopbackLogin(ctx, &cfg, nonce, o.Prompt)
	}
	if err != nil {
		return Session{}, err
	}
	s := Session{Server: server, Issuer: d.Issuer, ClientID: d.ClientID, TokenURL: cfg.Endpoint.TokenURL}
	if err := s.take(ctx, provider, tok, nonce); err != nil {
		return Session{}, err
	}
	return s, store.Save(s)
}

// take verifies tok's ID token (issuer, audience, signature, expiry and, from
// the code flow, the nonce) and keeps it and the refresh token in s. A token
// response without a new refresh token keeps the old one (RFC 6749 §6).
func (s *Session) take(ctx context.Context, provider *oidc.Provider, tok *oauth2.Token, nonce string) error {
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		return errors.New("the identity provider answered without an ID token")
	}
	idt, err := provider.Verifier(&oidc.Config{ClientID: s.ClientID}).Verify(ctx, raw)
	if err != nil {
		return fmt.Errorf("the identity provider's ID token does not verify: %w", err)
	}
	if nonce != "" && subtle.ConstantTimeCompare([]byte(idt.Nonce), []byte(nonce)) != 1 {
		return errors.New("the ID token does not carry this login's nonce")
	}
	var claims struct {
		Email string `json:"email"`
	}
	if err := idt.Claims(&claims); err != nil {
		return fmt.Errorf("the ID token's claims: %w", err)
	}
	s.IDToken, s.Expiry, s.Subject, s.Email = raw, idt.Expiry, idt.Subject, claims.Email
	if tok.RefreshToken != "" {
		s.RefreshToken = tok.RefreshToken
	}
	return nil
}

// deviceLogin is the device authorization grant (RFC 8628): the person opens
// a page on any device and enters a code while the CLI polls.
func deviceLogin(ctx context.Context, cfg *oauth2.Config, prompt io.Writer) (*oauth2.Token, error) {
	da, err := cfg.DeviceAuth(ctx)
	if err != nil {
		return nil, fmt.Errorf("device authorization at the identity provider: %w", err)
	}
	fmt.Fprintf(prompt, "To log in, open %s and enter the code %s\n", da.VerificationURI, da.UserCode)
	if da.VerificationURIComplete != "" {
		fmt.Fprintf(prompt, "(or open %s)\n", da.VerificationURIComplete)
	}
	fmt.Fprintln(prompt, "Waiting for you to log in…")
	tok, err := cfg.DeviceAccessToken(ctx, da)
	if err != nil {
		return nil, fmt.Errorf("device login: %w", err)
	}
	return tok, nil
}

// loopbackLogin is the authorization code flow with PKCE (S256) and a
// redirect to a port of 127.0.0.1 open for this login only (RFC 8252 §7.3).
func loopbackLogin(ctx context.Context, cfg *oauth2.Config, nonce string, prompt io.Writer) (*oauth2.Token, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("open a loopback port for the login's redirect: %w", err)
	}
	cfg.RedirectURL = fmt.Sprintf("http://%s/callback", ln.Addr())
	state, verifier := randomString(), oauth2.GenerateVerifier()
	type result struct {
		tok *oauth2.Token
		err error
	}
	done := make(chan result, 1)
	var once bool // the first callback decides; the server handles one request at a time below
	mux := http.NewServeMux()
	mux.HandleFunc("GET /callback", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if once || subtle.ConstantTimeCompare([]byte(q.Get("state")), []byte(state)) != 1 {
			http.Error(w, "This is not the login this command is waiting for.", http.StatusBadRequest)
			return
		}
		once = true
		var res result
		if e := q.Get("error"); e != "" {
			res.err = fmt.Errorf("the identity provider refused the login: %s %s", e, q.Get("error_description"))
		} else {
			res.tok, res.err = cfg.Exchange(ctx, q.Get("code"), oauth2.VerifierOption(verifier))
			if res.err != nil {
				res.err = fmt.Errorf("redeem the login's code: %w", res.err)
			}
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		msg := "You are logged in to broker. You can close this window."
		if res.err != nil {
			w.WriteHeader(http.StatusBadRequest)
			msg = "The login failed: " + res.err.Error()
		}
		fmt.Fprintf(w, "<!doctype html><meta charset=utf-8><title>broker login</title><p>%s</p>\n", html.EscapeString(msg))
		done <- res
	})
	srv := &http.Server{Handler: serial(mux), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	defer func() {
		// Gracefully: the callback that ended the login is still sending
		// its page to the browser (closing now lost it now and then).
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if srv.Shutdown(sctx) != nil {
			srv.Close()
		}
	}()
	fmt.Fprintf(prompt, "To log in, open this address in a browser on this machine:\n  %s\nWaiting for you to log in…\n",
		cfg.AuthCodeURL(state, oauth2.S256ChallengeOption(verifier), oidc.Nonce(nonce)))
	select {
	case res := <-done:
		return res.tok, res.err
	case <-ctx.Done():
		return nil, fmt.Errorf("no login within the time allowed: %w", ctx.Err())
	}
}

// serial handles one request at a time.
func serial(h http.Handler) http.Handler {
	sem := make(chan struct{}, 1)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sem <- struct{}{}
		defer func() { <-sem }()
		h.ServeHTTP(w, r)
	})
}

// randomString is 32 random bytes, base64url: a state or nonce.
func randomString() string {
	b := make([]byte, 32)
	rand.Read(b) // never fails (crypto/rand)
	return base64.RawURLEncoding.EncodeToString(b)
}
