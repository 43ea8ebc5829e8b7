package devidp

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"html/template"
	"log/slog"
	"net/http"
	"net/url"
	"time"
)

// codeTTL bounds how long an authorization code can be redeemed.
const codeTTL = time.Minute

// pendingCode is an issued, not yet redeemed authorization code.
type pendingCode struct {
	user        User
	redirectURI string
	nonce       string
	challenge   string // PKCE S256 code challenge
	expires     time.Time
}

// authParams are the parameters of an authorization request.
type authParams struct {
	ClientID, RedirectURI, State, Nonce, Challenge string
}

// readAuthParams validates an authorization request (RFC 6749 §4.1.1 with
// PKCE, which this issuer requires). Errors are for the person at the browser.
func (i *Issuer) readAuthParams(v url.Values) (authParams, string) {
	p := authParams{ClientID: v.Get("client_id"), RedirectURI: v.Get("redirect_uri"), State: v.Get("state"),
		Nonce: v.Get("nonce"), Challenge: v.Get("code_challenge")}
	switch {
	case v.Get("response_type") != "code":
		return p, "response_type must be code"
	case p.ClientID != i.audience:
		return p, "unknown client_id"
	case v.Get("code_challenge_method") != "S256" || len(p.Challenge) < 43:
		return p, "PKCE is required: code_challenge with code_challenge_method=S256"
	}
	u, err := url.Parse(p.RedirectURI)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || !IsLoopbackHost(u.Hostname()) || u.Fragment != "" {
		return p, "redirect_uri must be an http(s) URL on a loopback host"
	}
	return p, ""
}

var loginPage = template.Must(template.New("login").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>broker dev sign-in</title>
<style>body{font:16px system-ui,sans-serif;max-width:32rem;margin:3rem auto;color:#222}
button{font:inherit;padding:.5rem 1rem;margin:.25rem 0;width:100%;text-align:left;cursor:pointer}
small{color:#666}</style></head>
<body><h1>Development sign-in</h1>
<p>This is <code>broker dev</code>'s built-in identity provider. Choose a demo user; this page asks no password (the password grant at <code>/token</code> takes <code>dev-&lt;name&gt;</code>).</p>
{{range .Users}}<form method="post" action="auth">
{{range $k, $v := $.Hidden}}<input type="hidden" name="{{$k}}" value="{{$v}}">{{end}}
<input type="hidden" name="user" value="{{.Subject}}">
<button type="submit" id="login-{{.Subject}}">{{.Subject}} <small>{{range .Groups}}{{.}} {{else}}no groups{{end}}</small></button>
</form>{{end}}
</body></html>`))

// authorize shows the demo users (GET) and, once one is chosen (POST), sends
// the browser back with a one-time code.
func (i *Issuer) authorize(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		plain(w, http.StatusBadRequest, "devidp: malformed authorization request\n")
		return
	}
	p, problem := i.readAuthParams(r.Form)
	if problem != "" {
		plain(w, http.StatusBadRequest, "devidp: "+problem+"\n")
		return
	}
	if r.Method == http.MethodGet {
		users := make([]User, 0, len(i.names))
		for _, n := range i.names {
			users = append(users, i.users[n])
		}
		hidden := map[string]string{"client_id": p.ClientID, "redirect_uri": p.RedirectURI, "state": p.State, "nonce": p.Nonce,
			"code_challenge": p.Challenge, "code_challenge_method": "S256", "response_type": "code"}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'")
		if err := loginPage.Execute(w, map[string]any{"Users": users, "Hidden": hidden}); err != nil {
			i.log.Error("devidp: render sign-in page", slog.Any("error", err))
		}
		return
	}
	u, ok := i.users[r.PostForm.Get("user")]
	if !ok {
		plain(w, http.StatusBadRequest, "devidp: unknown demo user\n")
		return
	}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		plain(w, http.StatusInternalServerError, "devidp: could not make a code\n")
		return
	}
	code := base64.RawURLEncoding.EncodeToString(b)
	i.mu.Lock()
	now := i.now()
	for c, pc := range i.codes {
		if now.After(pc.expires) {
			delete(i.codes, c)
		}
	}
	i.codes[code] = pendingCode{user: u, redirectURI: p.RedirectURI, nonce: p.Nonce, challenge: p.Challenge, expires: now.Add(codeTTL)}
	i.mu.Unlock()
	target, _ := url.Parse(p.RedirectURI)
	q := target.Query()
	q.Set("code", code)
	if p.State != "" {
		q.Set("state", p.State)
	}
	target.RawQuery = q.Encode()
	http.Redirect(w, r, target.String(), http.StatusFound)
}

// codeGrant redeems an authorization code (once) for an ID token carrying the
// request's nonce, after checking the redirect URI and the PKCE verifier.
func (i *Issuer) codeGrant(w http.ResponseWriter, form url.Values) {
	code := form.Get("code")
	i.mu.Lock()
	pc, ok := i.codes[code]
	delete(i.codes, code)
	i.mu.Unlock()
	if !ok || i.now().After(pc.expires) || form.Get("redirect_uri") != pc.redirectURI {
		writeJSON(w, http.StatusBadRequest, errorResponse{"invalid_grant", "unknown, used or expired code, or another redirect_uri"})
		return
	}
	sum := sha256.Sum256([]byte(form.Get("code_verifier")))
	if subtle.ConstantTimeCompare([]byte(base64.RawURLEncoding.EncodeToString(sum[:])), []byte(pc.challenge)) != 1 {
		writeJSON(w, http.StatusBadRequest, errorResponse{"invalid_grant", "code_verifier does not match the code challenge"})
		return
	}
	tok, err := i.signNonce(pc.user, pc.nonce)
	if err != nil {
		i.log.Error("devidp: code grant", slog.Any("error", err))
		writeJSON(w, http.StatusInternalServerError, errorResponse{Error: "server_error"})
		return
	}
	writeJSON(w, http.StatusOK, tokenResponse{AccessToken: tok, IDToken: tok, TokenType: "Bearer", ExpiresIn: int64(i.ttl.Seconds())})
}
