package console

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/broker-dev/broker/internal/apperr"
	"github.com/broker-dev/broker/internal/auth"
	"github.com/broker-dev/broker/internal/sessions"
)

// oauthConfig is the console's OAuth2 client for endpoint ep.
func (c *Console) oauthConfig(ep oauth2.Endpoint) *oauth2.Config {
	return &oauth2.Config{
		ClientID:     c.cfg.ClientID,
		ClientSecret: c.cfg.ClientSecret,
		Endpoint:     ep,
		RedirectURL:  c.cfg.RedirectURL,
		Scopes:       c.cfg.Scopes,
	}
}

// safeNext returns next if it is a path inside the console, else the console
// home, so the callback can never redirect off-site.
func (c *Console) safeNext(next string) string {
	u, err := url.Parse(next)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil || strings.Contains(next, `\`) ||
		strings.HasPrefix(next, "//") || !c.inside(u.Path) {
		return c.base + "/"
	}
	return next
}

// inside reports whether p, cleaned of dot segments, is a console path.
func (c *Console) inside(p string) bool {
	p = path.Clean("/" + p)
	return p == c.base || strings.HasPrefix(p, c.base+"/")
}

// login serves GET /login?next=…: it starts a login explicitly.
func (c *Console) login(w http.ResponseWriter, r *http.Request) {
	c.startLogin(w, r, r.URL.Query().Get("next"))
}

// startLogin sends the browser to the provider's authorization endpoint, with
// a fresh state, nonce and PKCE verifier remembered in a sealed login cookie.
func (c *Console) startLogin(w http.ResponseWriter, r *http.Request, next string) {
	ep, err := c.provider.Endpoint(r.Context())
	if err != nil {
		c.log.WarnContext(r.Context(), "console login unavailable", "error", err)
		c.renderMessage(w, r, http.StatusServiceUnavailable, message{
			Title: "Identity provider unavailable",
			Text:  "The console cannot reach the identity provider right now, so it cannot log you in. Try again in a few seconds.",
			Link:  c.safeNext(next), LinkText: "Retry",
		})
		return
	}
	st := loginState{
		State:    randomString(32),
		Nonce:    randomString(32),
		Verifier: oauth2.GenerateVerifier(),
		Next:     c.safeNext(next),
		Expires:  c.now().Add(loginLifetime).Unix(),
	}
	value, err := c.cookies.seal(loginCookie, st)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	http.SetCookie(w, c.cookie(r, loginCookie, value, int(loginLifetime/time.Second)))
	target := c.oauthConfig(ep).AuthCodeURL(st.State, oauth2.S256ChallengeOption(st.Verifier), oidc.Nonce(st.Nonce))
	http.Redirect(w, r, target, http.StatusFound)
}

// callback serves GET /callback: the provider's answer to a login.
func (c *Console) callback(w http.ResponseWriter, r *http.Request) {
	again := message{Link: c.base + "/login", LinkText: "Log in again"}
	var st loginState
	ck, err := r.Cookie(loginCookie)
	if err == nil {
		err = c.cookies.open(loginCookie, ck.Value, &st)
	}
	// A login cookie serves one callback, whatever its outcome.
	http.SetCookie(w, c.cookie(r, loginCookie, "", -1))
	if err != nil || c.now().Unix() >= st.Expires {
		again.Title = "Login expired"
		again.Text = "This login is no longer valid: it took longer than 10 minutes, was already used, or was started in another browser."
		c.renderMessage(w, r, http.StatusBadRequest, again)
		return
	}
	q := r.URL.Query()
	if subtle.ConstantTimeCompare([]byte(q.Get("state")), []byte(st.State)) != 1 {
		c.log.WarnContext(r.Context(), "console login rejected: state mismatch")
		again.Title = "Login rejected"
		again.Text = "The answer from the identity provider does not belong to the login this browser started (state mismatch)."
		c.renderMessage(w, r, http.StatusBadRequest, again)
		return
	}
	if e := q.Get("error"); e != "" {
		c.log.InfoContext(r.Context(), "console login refused by the provider", "error", clip(e))
		again.Title = "Login refused"
		again.Text = "The identity provider did not log you in: " + clip(e) + ". " + clip(q.Get("error_description"))
		c.renderMessage(w, r, http.StatusUnauthorized, again)
		return
	}
	code := q.Get("code")
	if code == "" {
		again.Title = "Login rejected"
		again.Text = "The identity provider sent no authorization code."
		c.renderMessage(w, r, http.StatusBadRequest, again)
		return
	}
	s, err := c.completeLogin(r.Context(), code, &st)
	if err != nil {
		status := http.StatusUnauthorized
		again.Title = "Login rejected"
		again.Text = "The login could not be completed."
		if e, ok := apperr.As(err); ok {
			again.Text = "The login could not be completed: " + e.Message + "."
			if e.Kind == apperr.Unavailable {
				status, again.Title = http.StatusServiceUnavailable, "Identity provider unavailable"
			}
		}
		c.log.WarnContext(r.Context(), "console login failed", "error", err)
		c.renderMessage(w, r, status, again)
		return
	}
	now := c.now()
	expires := now.Add(c.cfg.SessionLifetime)
	if err := c.sessions.Create(r.Context(), s.ID, sessions.Session{Issuer: s.Issuer, Subject: s.Subject, Email: s.Email,
		Groups: s.Groups, Created: now, Expires: expires}); err != nil {
		c.fail(w, r, err)
		return
	}
	value, err := c.cookies.seal(sessionCookie, sessionCookieValue{ID: s.ID, Expires: expires.Unix()})
	if err != nil {
		c.fail(w, r, err)
		return
	}
	c.log.InfoContext(r.Context(), "console login", "subject", s.Subject, "email", s.Email)
	http.SetCookie(w, c.cookie(r, sessionCookie, value, int(c.cfg.SessionLifetime/time.Second)))
	http.Redirect(w, r, c.safeNext(st.Next), http.StatusFound)
}

// completeLogin exchanges code (with the PKCE verifier) and verifies the ID
// token, nonce included, with the broker's verifier.
func (c *Console) completeLogin(ctx context.Context, code string, st *loginState) (*session, error) {
	ep, err := c.provider.Endpoint(ctx)
	if err != nil {
		return nil, err
	}
	tok, err := c.oauthConfig(ep).Exchange(context.WithValue(ctx, oauth2.HTTPClient, c.client), code, oauth2.VerifierOption(st.Verifier))
	if err != nil {
		var re *oauth2.RetrieveError
		if errors.As(err, &re) {
			return nil, apperr.Wrap(apperr.Unauthorized, err, "the identity provider refused the authorization code")
		}
		return nil, apperr.Wrap(apperr.Unavailable, err, "the identity provider's token endpoint cannot be reached")
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		return nil, apperr.New(apperr.Unauthorized, "the identity provider returned no ID token")
	}
	id, err := c.verifier.VerifyIDToken(ctx, raw, st.Nonce)
	if err != nil {
		return nil, err
	}
	return &session{
		ID:      randomString(32),
		Issuer:  id.Issuer,
		Subject: id.Subject,
		Email:   id.Email,
		Groups:  id.Groups,
	}, nil
}

// logout serves POST /logout (CSRF-checked by the session middleware): it
// ends the console session on the server, or with everywhere=1 every console
// session of the user. The provider's own session, if any, stays.
func (c *Console) logout(w http.ResponseWriter, r *http.Request) {
	s := visitFrom(r.Context()).session
	var err error
	text := "You are logged out of the broker console."
	if r.PostFormValue("everywhere") == "1" {
		var n int
		n, err = c.sessions.RevokeSubject(r.Context(), s.Issuer, s.Subject)
		text = fmt.Sprintf("You are logged out of the broker console everywhere (%d %s ended).", n, plural(n, "session", "sessions"))
	} else {
		err = c.sessions.Revoke(r.Context(), s.ID)
	}
	if err != nil {
		c.fail(w, r, err)
		return
	}
	c.log.InfoContext(r.Context(), "console logout", "subject", s.Subject, "everywhere", r.PostFormValue("everywhere") == "1")
	http.SetCookie(w, c.cookie(r, sessionCookie, "", -1))
	c.renderMessage(w, r, http.StatusOK, message{
		Title: "Logged out",
		Text:  text,
		Link:  c.base + "/login", LinkText: "Log in again",
	})
}

// signOut serves POST /sessions/sign-out (rights admins): it ends every
// console session of the form's subject, at this provider.
func (c *Console) signOut(w http.ResponseWriter, r *http.Request) {
	v := visitFrom(r.Context())
	subject := strings.TrimSpace(strings.TrimPrefix(r.PostFormValue("subject"), "user:"))
	if subject == "" || len(subject) > auth.MaxSubjectLen {
		c.renderMessage(w, r, http.StatusBadRequest, message{Title: "No user named",
			Text: fmt.Sprintf("Name the user to sign out by subject (user:<sub> or <sub>, at most %d bytes).", auth.MaxSubjectLen), Link: c.base + "/", LinkText: "Console home"})
		return
	}
	n, err := c.sessions.RevokeSubject(r.Context(), v.session.Issuer, subject)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	c.log.InfoContext(r.Context(), "console sessions ended by an admin", "subject", subject, "by", v.session.Subject, "count", n)
	c.renderMessage(w, r, http.StatusOK, message{Title: "Signed out",
		Text: fmt.Sprintf("user:%s is signed out of the console everywhere: %d %s ended.", subject, n, plural(n, "session", "sessions")),
		Link: c.base + "/", LinkText: "Console home"})
}

// plural picks the word for n.
func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// clip shortens a provider-supplied string for a page or a log.
func clip(s string) string {
	const max = 200
	if len(s) > max {
		return strings.ToValidUTF8(s[:max], "") + "…"
	}
	return s
}
