package console_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"

	"github.com/broker-dev/broker/internal/audit"
	"github.com/broker-dev/broker/internal/auth"
	"github.com/broker-dev/broker/internal/console"
	"github.com/broker-dev/broker/internal/policy"
	"github.com/broker-dev/broker/internal/review"
	"github.com/broker-dev/broker/internal/revoke"
	"github.com/broker-dev/broker/internal/sessions"
)

const clientID = "console-test"

// quiet discards the verifier's log lines.
var quiet = slog.New(slog.DiscardHandler)

var (
	admin     = idpUser{Subject: "admin-1", Email: "admin@example.com", Groups: []string{"broker-admins"}}
	developer = idpUser{Subject: "dev-1", Email: "dev@example.com", Groups: []string{"developers"}}
)

// env is a console mounted at /console in a chi router (as the server does),
// over a real policy engine, an in-memory issuance log, the broker's verifier
// and a test identity provider.
type env struct {
	t        *testing.T
	handler  http.Handler // the console's own handler, unmounted
	idp      *testIDP
	srv      *httptest.Server
	policy   *policy.Engine
	log      *audit.Memory
	sessions *sessions.Memory
	joins    *review.Memory
	revs     *revoke.Service
}

func newEnv(t *testing.T) *env {
	t.Helper()
	return newEnvWithProjects(t, nil)
}

// newEnvWithProjects is newEnv for a broker serving projects (nil: the
// default one).
func newEnvWithProjects(t *testing.T, projects []string) *env {
	t.Helper()
	ctx := context.Background()
	e := &env{t: t, idp: newTestIDP(t, clientID), sessions: sessions.NewMemory(), joins: review.NewMemory()}
	var err error
	if e.policy, err = policy.Open(ctx, policy.NewMemStore(), nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.policy.Close)
	if err := e.policy.Bootstrap(ctx, []string{"group:broker-admins"}); err != nil {
		t.Fatal(err)
	}
	if e.log, err = audit.NewMemory(bytes.Repeat([]byte{7}, audit.MinKeyLen)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.log.Close() })
	v, err := auth.NewIssuers(ctx, []auth.Config{{Issuer: e.idp.issuer(), Audiences: []string{clientID}, Logger: quiet}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	waitReady(t, v)

	// Revocations without Agora credentials: they block new tokens only.
	e.revs = &revoke.Service{Store: revoke.NewMemory(), Policies: e.policy, Log: e.log, MaxTTL: 24 * time.Hour, Now: time.Now,
		Agora:   func(string) (string, revoke.Banner) { return "0123456789abcdef0123456789abcdef", nil },
		Qualify: func(string) (string, bool) { return "", true }}
	e.srv = httptest.NewUnstartedServer(nil)
	c, err := console.New(console.Config{
		Issuer:      e.idp.issuer(),
		ClientID:    clientID,
		RedirectURL: "http://" + e.srv.Listener.Addr().String() + "/console/callback",
		SessionKey:  bytes.Repeat([]byte{9}, console.MinSessionKeyLen),
		Projects:    projects,
	}, console.Deps{Verifier: v, Policies: e.policy, Audit: e.log, Sessions: e.sessions, RateLimited: func() int64 { return 7 }, Joins: e.joins,
		Revocations: e.revs, Orphans: true})
	if err != nil {
		t.Fatal(err)
	}
	e.handler = c.Handler()
	r := chi.NewRouter()
	r.Use(middleware.StripSlashes)
	r.Mount("/console", e.handler)
	e.srv.Config.Handler = r
	e.srv.Start()
	t.Cleanup(e.srv.Close)
	return e
}

func waitReady(t *testing.T, v *auth.Issuers) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for err := v.Ready(); err != nil; err = v.Ready() {
		if time.Now().After(deadline) {
			t.Fatalf("verifier not ready: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// browser is an HTTP client with a cookie jar; it follows redirects unless
// told not to.
type browser struct {
	t      *testing.T
	e      *env
	client *http.Client
}

func (e *env) browser() *browser {
	jar, err := cookiejar.New(nil)
	if err != nil {
		e.t.Fatal(err)
	}
	return &browser{t: e.t, e: e, client: &http.Client{Jar: jar}}
}

// noFollow stops the browser at the first response.
func (b *browser) noFollow() *browser {
	c := *b.client
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &browser{t: b.t, e: b.e, client: &c}
}

// page is a response with its body read.
type page struct {
	*http.Response
	Body string
}

func (b *browser) do(req *http.Request) page {
	b.t.Helper()
	resp, err := b.client.Do(req)
	if err != nil {
		b.t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		b.t.Fatal(err)
	}
	return page{Response: resp, Body: string(body)}
}

func (b *browser) get(path string) page {
	b.t.Helper()
	req, err := http.NewRequest(http.MethodGet, b.url(path), nil)
	if err != nil {
		b.t.Fatal(err)
	}
	return b.do(req)
}

func (b *browser) post(path string, form url.Values) page {
	b.t.Helper()
	req, err := http.NewRequest(http.MethodPost, b.url(path), strings.NewReader(form.Encode()))
	if err != nil {
		b.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return b.do(req)
}

func (b *browser) url(path string) string {
	if strings.HasPrefix(path, "http") {
		return path
	}
	return b.e.srv.URL + path
}

// login logs u in through the provider and returns the page it lands on.
func (b *browser) login(u idpUser, path string) page {
	b.t.Helper()
	b.e.idp.loginAs(u)
	return b.get(path)
}

// cookie returns the browser's cookie called name for the console.
func (b *browser) cookie(name string) *http.Cookie {
	u, _ := url.Parse(b.e.srv.URL + "/console/")
	for _, c := range b.client.Jar.Cookies(u) {
		if c.Name == name {
			return c
		}
	}
	return nil
}

var csrfField = regexp.MustCompile(`name="csrf_token" value="([^"]+)"`)

// csrf returns the CSRF token of the forms on p.
func csrf(t *testing.T, p page) string {
	t.Helper()
	m := csrfField.FindStringSubmatch(p.Body)
	if m == nil {
		t.Fatalf("no csrf_token field on the page:\n%s", p.Body)
	}
	return m[1]
}

func wantStatus(t *testing.T, p page, status int) {
	t.Helper()
	if p.StatusCode != status {
		t.Fatalf("%s %s = %d, want %d\n%s", p.Request.Method, p.Request.URL, p.StatusCode, status, p.Body)
	}
}

func wantContains(t *testing.T, p page, parts ...string) {
	t.Helper()
	for _, s := range parts {
		if !strings.Contains(p.Body, s) {
			t.Errorf("%s %s: page lacks %q\n%s", p.Request.Method, p.Request.URL, s, p.Body)
		}
	}
}

func TestLogin_VisitorWithoutSessionIsSentToTheProviderWithPKCE(t *testing.T) {
	e := newEnv(t)
	b := e.browser().noFollow()
	p := b.get("/console/")
	wantStatus(t, p, http.StatusFound)
	loc, err := url.Parse(p.Header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	if got := loc.Scheme + "://" + loc.Host + loc.Path; got != e.idp.issuer()+"/authorize" {
		t.Errorf("redirect to %s, want the provider's authorization endpoint", got)
	}
	q := loc.Query()
	for k, want := range map[string]string{
		"response_type": "code", "client_id": clientID, "redirect_uri": e.srv.URL + "/console/callback",
		"code_challenge_method": "S256", "scope": "openid email profile groups",
	} {
		if q.Get(k) != want {
			t.Errorf("%s = %q, want %q", k, q.Get(k), want)
		}
	}
	for _, k := range []string{"state", "nonce", "code_challenge"} {
		if len(q.Get(k)) < 40 {
			t.Errorf("%s = %q, want a long random value", k, q.Get(k))
		}
	}
	var login *http.Cookie
	for _, c := range p.Cookies() {
		if c.Name == "broker_console_login" {
			login = c
		}
	}
	if login == nil || !login.HttpOnly || login.SameSite != http.SameSiteLaxMode || login.Path != "/console" || login.MaxAge <= 0 {
		t.Errorf("login cookie = %+v, want HttpOnly, SameSite=Lax, Path=/console, bounded", login)
	}
	for _, secret := range []string{q.Get("state"), q.Get("nonce")} {
		if strings.Contains(login.Value, secret) {
			t.Errorf("login cookie shows the state or nonce in clear")
		}
	}
}

func TestLogin_CompletesAndReturnsToTheRequestedPage(t *testing.T) {
	e := newEnv(t)
	b := e.browser()
	p := b.login(admin, "/console/policies?subject=group%3Abroker-admins")
	wantStatus(t, p, http.StatusOK)
	if got := p.Request.URL.RequestURI(); got != "/console/policies?subject=group%3Abroker-admins" {
		t.Errorf("landed on %s, want the page asked for", got)
	}
	wantContains(t, p, "<h1>Policies</h1>", "admin@example.com", "api:policies")
	s := b.cookie("broker_console")
	if s == nil {
		t.Fatal("no session cookie after login")
	}
	if b.cookie("broker_console_login") != nil {
		t.Error("the login cookie outlived its callback")
	}
}

func TestLogin_SessionCookieIsHttpOnlyLaxAndBounded(t *testing.T) {
	e := newEnv(t)
	b := e.browser()
	e.idp.loginAs(admin)
	start := b.noFollow().get("/console/")
	cb := b.noFollow().get(e.idp.issuer() + "/authorize?" + mustURL(t, start.Header.Get("Location")).RawQuery)
	p := b.noFollow().get(cb.Header.Get("Location"))
	wantStatus(t, p, http.StatusFound)
	var s *http.Cookie
	for _, c := range p.Cookies() {
		if c.Name == "broker_console" {
			s = c
		}
	}
	if s == nil {
		t.Fatal("no session cookie set")
	}
	if !s.HttpOnly || s.SameSite != http.SameSiteLaxMode || s.Path != "/console" || s.MaxAge != int((8*time.Hour).Seconds()) {
		t.Errorf("session cookie = %+v, want HttpOnly, SameSite=Lax, Path=/console, Max-Age 8h", s)
	}
	if s.Secure {
		t.Error("session cookie is Secure on plain http to loopback; the browser would drop it")
	}
	if strings.Contains(s.Value, admin.Subject) || strings.Contains(s.Value, admin.Email) {
		t.Error("session cookie shows the identity in clear")
	}
}

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func TestCallback_RejectsWhatDoesNotBelongToThisLogin(t *testing.T) {
	tests := []struct {
		name      string
		callback  func(q url.Values) url.Values // rewrites the provider's answer
		nonce     func(string) string           // rewrites the ID token's nonce
		dropLogin bool
		status    int
		text      string
	}{
		{
			name:     "state mismatch",
			callback: func(q url.Values) url.Values { q.Set("state", q.Get("state")+"x"); return q },
			status:   http.StatusBadRequest, text: "state mismatch",
		},
		{
			name:     "missing state",
			callback: func(q url.Values) url.Values { q.Del("state"); return q },
			status:   http.StatusBadRequest, text: "state mismatch",
		},
		{
			name:   "nonce mismatch",
			nonce:  func(n string) string { return n + "x" },
			status: http.StatusUnauthorized, text: "nonce does not match",
		},
		{
			name:   "no nonce",
			nonce:  func(string) string { return "" },
			status: http.StatusUnauthorized, text: "nonce does not match",
		},
		{
			name:      "login cookie missing (another browser, or already used)",
			dropLogin: true,
			status:    http.StatusBadRequest, text: "no longer valid",
		},
		{
			name: "provider refused",
			callback: func(q url.Values) url.Values {
				return url.Values{"state": {q.Get("state")}, "error": {"access_denied"}, "error_description": {"user said no"}}
			},
			status: http.StatusUnauthorized, text: "access_denied",
		},
		{
			name:     "code replaced",
			callback: func(q url.Values) url.Values { q.Set("code", "forged"); return q },
			status:   http.StatusUnauthorized, text: "refused the authorization code",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			e.idp.loginAs(admin)
			e.idp.setNonceHook(tt.nonce)
			b := e.browser().noFollow()
			start := b.get("/console/")
			answer := b.get(start.Header.Get("Location"))
			cb := mustURL(t, answer.Header.Get("Location"))
			if tt.callback != nil {
				cb.RawQuery = tt.callback(cb.Query()).Encode()
			}
			if tt.dropLogin {
				b = e.browser().noFollow()
			}
			p := b.get(cb.String())
			wantStatus(t, p, tt.status)
			wantContains(t, p, tt.text, "Log in again")
			if b.cookie("broker_console") != nil {
				t.Error("a session cookie was set")
			}
			if got := b.get("/console/policies"); got.StatusCode != http.StatusFound {
				t.Errorf("after a rejected login, /console/policies = %d, want a redirect to log in", got.StatusCode)
			}
		})
	}
}

func TestSession_TamperedOrForeignCookieIsRejected(t *testing.T) {
	e := newEnv(t)
	b := e.browser()
	wantStatus(t, b.login(admin, "/console/"), http.StatusOK)
	good := b.cookie("broker_console").Value
	flip := func(s string, i int) string {
		c := byte('A')
		if s[i] == 'A' {
			c = 'B'
		}
		return s[:i] + string(c) + s[i+1:]
	}
	tests := map[string]string{
		"first byte flipped":  flip(good, 0),
		"middle byte flipped": flip(good, len(good)/2),
		"last byte flipped":   flip(good, len(good)-1),
		"truncated":           good[:len(good)-4],
		"not base64":          "!!!" + good[3:],
		"empty":               "",
	}
	for name, value := range tests {
		t.Run(name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, e.srv.URL+"/console/policies", nil)
			req.AddCookie(&http.Cookie{Name: "broker_console", Value: value})
			resp, err := http.DefaultTransport.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusFound || !strings.HasPrefix(resp.Header.Get("Location"), e.idp.issuer()) {
				t.Errorf("GET with a %s cookie = %d to %q, want a redirect to log in", name, resp.StatusCode, resp.Header.Get("Location"))
			}
		})
	}
}

func TestForms_NeedTheSessionsCSRFToken(t *testing.T) {
	e := newEnv(t)
	b := e.browser()
	token := csrf(t, b.login(admin, "/console/policies"))
	other := e.browser()
	otherToken := csrf(t, other.login(admin, "/console/policies"))
	if token == otherToken {
		t.Fatal("two sessions share a CSRF token")
	}
	rule := url.Values{"subject": {"group:developers"}, "channel": {"demo-*"}, "role": {"publisher"}, "effect": {"allow"}}
	tests := []struct {
		name   string
		token  []string
		status int
	}{
		{"missing", nil, http.StatusForbidden},
		{"empty", []string{""}, http.StatusForbidden},
		{"wrong", []string{"not-the-token"}, http.StatusForbidden},
		{"another session's", []string{otherToken}, http.StatusForbidden},
		{"this session's", []string{token}, http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			form := url.Values{}
			for k, v := range rule {
				form[k] = v
			}
			if tt.token != nil {
				form["csrf_token"] = tt.token
			}
			p := b.post("/console/policies", form)
			wantStatus(t, p, tt.status)
			rules, err := e.policy.List(context.Background(), policy.Filter{Subject: "group:developers"})
			if err != nil {
				t.Fatal(err)
			}
			if added := len(rules) > 0; added != (tt.status == http.StatusOK) {
				t.Errorf("rule added = %v after a post with a %s token", added, tt.name)
			}
			if tt.status == http.StatusForbidden {
				wantContains(t, p, "CSRF")
			}
		})
	}
	t.Run("logout needs it too", func(t *testing.T) {
		wantStatus(t, b.post("/console/logout", url.Values{}), http.StatusForbidden)
		wantStatus(t, b.get("/console/policies"), http.StatusOK)
	})
}

func TestLogout_EndsTheSession(t *testing.T) {
	e := newEnv(t)
	b := e.browser()
	token := csrf(t, b.login(admin, "/console/"))
	p := b.post("/console/logout", url.Values{"csrf_token": {token}})
	wantStatus(t, p, http.StatusOK)
	wantContains(t, p, "logged out")
	if b.cookie("broker_console") != nil {
		t.Error("session cookie kept after logout")
	}
	if got := b.noFollow().get("/console/policies"); got.StatusCode != http.StatusFound {
		t.Errorf("after logout /console/policies = %d, want a redirect to log in", got.StatusCode)
	}
}

// copyCookie gives to the session cookie of from: a stolen or copied cookie.
func copyCookie(t *testing.T, from, to *browser) {
	t.Helper()
	ck := from.cookie("broker_console")
	if ck == nil {
		t.Fatal("no session cookie to copy")
	}
	u, _ := url.Parse(from.e.srv.URL + "/console/")
	to.client.Jar.SetCookies(u, []*http.Cookie{{Name: ck.Name, Value: ck.Value, Path: "/console"}})
}

func TestLogout_EndsTheSessionOnTheServerSoACopiedCookieDiesToo(t *testing.T) {
	e := newEnv(t)
	b := e.browser()
	token := csrf(t, b.login(admin, "/console/"))
	thief := e.browser()
	copyCookie(t, b, thief)
	wantStatus(t, thief.get("/console/policies"), http.StatusOK)
	wantStatus(t, b.post("/console/logout", url.Values{"csrf_token": {token}}), http.StatusOK)
	if got := thief.noFollow().get("/console/policies"); got.StatusCode != http.StatusFound {
		t.Errorf("a copied cookie after logout: /console/policies = %d, want a redirect to log in", got.StatusCode)
	}
}

func TestLogoutEverywhere_EndsTheUsersOtherSessions(t *testing.T) {
	e := newEnv(t)
	laptop, phone, other := e.browser(), e.browser(), e.browser()
	token := csrf(t, laptop.login(admin, "/console/"))
	phone.login(admin, "/console/")
	other.login(developer, "/console/")
	p := laptop.post("/console/logout", url.Values{"csrf_token": {token}, "everywhere": {"1"}})
	wantStatus(t, p, http.StatusOK)
	wantContains(t, p, "everywhere (2 sessions ended)")
	if got := phone.noFollow().get("/console/"); got.StatusCode != http.StatusFound {
		t.Errorf("the user's other session after logging out everywhere: %d, want a redirect to log in", got.StatusCode)
	}
	if got := other.noFollow().get("/console/"); got.StatusCode == http.StatusFound {
		t.Errorf("another user's session: %d, want it untouched (no redirect to log in)", got.StatusCode)
	}
}

func TestSignOut_ARightsAdminEndsAnotherUsersSessions(t *testing.T) {
	e := newEnv(t)
	adm, dev := e.browser(), e.browser()
	home := adm.login(admin, "/console/")
	wantContains(t, home, "Sign a user out everywhere")
	devHome := dev.login(developer, "/console/")
	if strings.Contains(devHome.Body, "Sign a user out everywhere") {
		t.Error("the sign-out form is shown to a user without write on api:rights")
	}
	t.Run("not without the right", func(t *testing.T) {
		p := dev.post("/console/sessions/sign-out", url.Values{"csrf_token": {csrf(t, devHome)}, "subject": {"user:" + admin.Subject}})
		wantStatus(t, p, http.StatusForbidden)
		wantStatus(t, adm.get("/console/"), http.StatusOK)
	})
	t.Run("nameless", func(t *testing.T) {
		wantStatus(t, adm.post("/console/sessions/sign-out", url.Values{"csrf_token": {csrf(t, home)}, "subject": {" "}}), http.StatusBadRequest)
	})
	p := adm.post("/console/sessions/sign-out", url.Values{"csrf_token": {csrf(t, home)}, "subject": {"user:" + developer.Subject}})
	wantStatus(t, p, http.StatusOK)
	wantContains(t, p, "1 session ended")
	if got := dev.noFollow().get("/console/"); got.StatusCode != http.StatusFound {
		t.Errorf("the signed-out user's session: %d, want a redirect to log in", got.StatusCode)
	}
}

func TestPostWithoutSession_SaysSoInsteadOfRedirecting(t *testing.T) {
	e := newEnv(t)
	p := e.browser().noFollow().post("/console/policies", url.Values{"subject": {"*"}})
	wantStatus(t, p, http.StatusUnauthorized)
	wantContains(t, p, "session has ended", "Log in again")
}

func TestNoAccess_ForAUserWithoutRights(t *testing.T) {
	e := newEnv(t)
	b := e.browser()
	p := b.login(developer, "/console/")
	wantStatus(t, p, http.StatusForbidden)
	wantContains(t, p, "No access", "user:dev-1", "group:developers", "Log out")
	for path, right := range map[string]string{
		"/console/policies":                           "read on api:policies",
		"/console/try?channel=x":                      "read on api:policies",
		"/console/policies/import":                    "write on api:policies",
		"/console/audit":                              "read on api:audit",
		"/console/audit/verify":                       "read on api:audit",
		"/console/policies/export":                    "read on api:policies",
		"/console/policies/history":                   "read on api:policies",
		"/console/audit/export":                       "read on api:audit",
		"/console/policies/1/delete":                  "write on api:policies",
		"/console/audit/lookup":                       "read on api:audit",
		"/console/policies/delete-matching?channel=x": "write on api:policies",
	} {
		p := b.get(path)
		wantStatus(t, p, http.StatusForbidden)
		wantContains(t, p, "No access", right)
	}
	token := csrf(t, p)
	p = b.post("/console/policies", url.Values{"csrf_token": {token}, "subject": {"user:dev-1"}, "channel": {"api:policies"}, "role": {"write"}, "effect": {"allow"}})
	wantStatus(t, p, http.StatusForbidden)
	if e.policy.Can(policy.Caller{Subject: "dev-1"}, policy.DefaultProject, policy.ObjectPolicies, policy.Write) {
		t.Fatal("a user without rights granted himself admin")
	}
}

func TestNoAccess_TakesEffectAtOnceWhenARightIsRemoved(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	r, err := e.policy.Add(ctx, policy.Actor{Subject: "test", Operator: true}, policy.Rule{Subject: "user:dev-1", Channel: policy.ObjectAudit, Role: policy.Read, Effect: policy.Allow})
	if err != nil {
		t.Fatal(err)
	}
	b := e.browser()
	wantStatus(t, b.login(developer, "/console/audit"), http.StatusOK)
	if err := e.policy.Remove(ctx, policy.Actor{Subject: "test", Operator: true}, r.ID); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, b.get("/console/audit"), http.StatusForbidden)
}

func TestPages_CarrySecurityHeaders(t *testing.T) {
	e := newEnv(t)
	b := e.browser()
	b.login(admin, "/console/")
	for _, path := range []string{"/console/", "/console/policies", "/console/try", "/console/audit", "/console/nowhere"} {
		p := b.get(path)
		h := p.Header
		csp := h.Get("Content-Security-Policy")
		for _, want := range []string{"default-src 'self'", "frame-ancestors 'none'", "script-src 'none'"} {
			if !strings.Contains(csp, want) {
				t.Errorf("%s: Content-Security-Policy %q lacks %q", path, csp, want)
			}
		}
		for k, want := range map[string]string{"X-Frame-Options": "DENY", "Referrer-Policy": "same-origin", "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"} {
			if h.Get(k) != want {
				t.Errorf("%s: %s = %q, want %q", path, k, h.Get(k), want)
			}
		}
		if strings.Contains(p.Body, "<script") || strings.Contains(p.Body, "style=") {
			t.Errorf("%s: inline script or style that the CSP would block", path)
		}
	}
	css := b.get("/console/static/console.css")
	wantStatus(t, css, http.StatusOK)
	if ct := css.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/css") {
		t.Errorf("stylesheet Content-Type = %q", ct)
	}
}

func TestProviderDown_ShowsARetryPage(t *testing.T) {
	e := newEnv(t)
	v, err := auth.NewIssuers(context.Background(), []auth.Config{{Issuer: "http://127.0.0.1:1/nowhere", Audiences: []string{clientID}, Logger: quiet}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	c, err := console.New(console.Config{
		Issuer: "http://127.0.0.1:1/nowhere", ClientID: clientID, RedirectURL: "http://127.0.0.1/console/callback",
		SessionKey: bytes.Repeat([]byte{1}, 32),
	}, console.Deps{Verifier: v, Policies: e.policy, Audit: e.log, Sessions: e.sessions})
	if err != nil {
		t.Fatalf("New must not need the provider: %v", err)
	}
	rec := httptest.NewRecorder()
	c.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/console/audit", nil))
	if rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("GET /console/audit with the provider down = %d, want 503", rec.Code)
	}
	if body := rec.Body.String(); !strings.Contains(body, "Retry") || !strings.Contains(body, `href="/console/audit"`) {
		t.Errorf("the page offers no retry of the page asked for:\n%s", body)
	}
}

func TestNew_RefusesBadConfig(t *testing.T) {
	e := newEnv(t)
	good := console.Config{Issuer: "http://127.0.0.1:5556/dex", ClientID: "c", RedirectURL: "https://broker.example/console/callback", SessionKey: make([]byte, 32)}
	tests := []struct {
		name   string
		change func(*console.Config)
		want   string
	}{
		{"no issuer", func(c *console.Config) { c.Issuer = "" }, "issuer"},
		{"no client id", func(c *console.Config) { c.ClientID = "" }, "BROKER_CONSOLE_CLIENT_ID"},
		{"relative redirect", func(c *console.Config) { c.RedirectURL = "/console/callback" }, "BROKER_CONSOLE_REDIRECT_URL"},
		{"redirect elsewhere", func(c *console.Config) { c.RedirectURL = "https://broker.example/callback" }, "/console/callback"},
		{"redirect with query", func(c *console.Config) { c.RedirectURL += "?x=1" }, "/console/callback"},
		{"short key", func(c *console.Config) { c.SessionKey = make([]byte, 31) }, "31 bytes"},
		{"base path with slash", func(c *console.Config) { c.BasePath = "/console/" }, "base path"},
		{"lifetime too long", func(c *console.Config) { c.SessionLifetime = 25 * time.Hour }, "session lifetime"},
		{"no openid scope", func(c *console.Config) { c.Scopes = []string{"email"} }, "openid"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := good
			tt.change(&cfg)
			_, err := console.New(cfg, console.Deps{Verifier: &auth.Verifier{}, Policies: e.policy, Audit: e.log, Sessions: e.sessions})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New = %v, want an error naming %q", err, tt.want)
			}
		})
	}
	if _, err := console.New(good, console.Deps{Policies: e.policy, Audit: e.log}); err == nil {
		t.Error("New without a verifier succeeded")
	}
}

func TestHandler_WorksInAPlainServeMuxAndMarksCookiesSecureBehindTLS(t *testing.T) {
	e := newEnv(t)
	mux := http.NewServeMux()
	mux.Handle("/console/", e.handler)
	mux.Handle("/console", e.handler)
	tests := []struct {
		target string
		status int
		secure bool
	}{
		{"http://broker.test/console", http.StatusFound, false},
		{"http://broker.test/console/policies/", http.StatusFound, false},
		{"https://broker.test/console/", http.StatusFound, true},
		{"http://broker.test/console/static/console.css", http.StatusOK, false},
		{"http://broker.test/console/nowhere", http.StatusFound, false}, // sign in first: the 404 page has the navigation
	}
	for _, tt := range tests {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, tt.target, nil))
		if rec.Code != tt.status {
			t.Errorf("GET %s = %d, want %d", tt.target, rec.Code, tt.status)
		}
		for _, c := range rec.Result().Cookies() {
			if c.Secure != tt.secure {
				t.Errorf("GET %s: cookie %s Secure = %v, want %v", tt.target, c.Name, c.Secure, tt.secure)
			}
		}
	}
}
