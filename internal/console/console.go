// Package console owns the web pages for admins and auditors: OIDC login (code
// flow with PKCE), the sealed session cookie, and pages over the policy engine
// and issuance log. It must never act without a verified session and, for a
// form, a checked CSRF token, nor show or log a token, code, cookie or key.
//
// Sessions. After the provider logs a user in, the console verifies the ID
// token with the broker's own auth.Verifier (state and nonce checked, PKCE
// used) and keeps the identity (issuer, subject, email, groups) in the
// session store (package sessions: Postgres, shared by the replicas); the
// cookie, sealed with AES-256-GCM, holds only the session's random id and
// expiry. Logout deletes the session on the server, so a copied cookie dies
// with it; a user can log out everywhere, and a rights admin can sign anyone
// out everywhere. A session lasts Config.SessionLifetime
// (BROKER_CONSOLE_SESSION_TTL, 8 hours by default) from login, whatever the ID
// token's own exp: the console never presents the ID token again, providers
// size its lifetime for bearer use (often minutes), and rights are asked of
// the policy engine on every request, so removing a user's rule takes effect
// at once. Group memberships are those of the login, not refreshed: a change
// at the provider counts from the next login, at most one session lifetime
// later (or at once, if an admin signs the user out). When the store cannot
// answer, the console fails closed: no page, a 503.
//
// Rights are the API's: api:policies read (list, history, export, try it),
// api:policies write (add, delete, import) and api:audit read (overview,
// issuance log, verification), each in the project the console is working
// in (a cookie, set by the project switcher, which offers only the projects
// the user holds a right in). Someone without the right a page needs sees a
// "no access" page that says which right it is. The overview's chart and
// the chain verification span every project, so they take a global right.
//
// Forms that change something are POSTs and carry a csrf_token; search forms
// (filters, try it) are GETs, change nothing and carry none, so that no token
// ends up in a URL, a history or a log.
package console

import (
	"context"
	"crypto/hkdf"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/broker-dev/broker/internal/audit"
	"github.com/broker-dev/broker/internal/auth"
	"github.com/broker-dev/broker/internal/policy"
	"github.com/broker-dev/broker/internal/review"
	"github.com/broker-dev/broker/internal/revoke"
	"github.com/broker-dev/broker/internal/sessions"
)

// Defaults and bounds for Config.
const (
	DefaultBasePath        = "/console"
	DefaultSessionLifetime = 8 * time.Hour
	MaxSessionLifetime     = 24 * time.Hour
	// MinSessionKeyLen is the shortest Config.SessionKey accepted.
	MinSessionKeyLen = 32
)

// DefaultScopes are asked for at login unless Config.Scopes says otherwise:
// openid, email, profile and groups (how Dex and several other providers
// release group memberships).
var DefaultScopes = []string{"openid", "email", "profile", "groups"}

// Config configures the console.
type Config struct {
	// Issuer is the OpenID provider (BROKER_OIDC_ISSUER); its authorization and
	// token endpoints are discovered from it on first use.
	Issuer string
	// ClientID and ClientSecret identify the console at the provider
	// (BROKER_CONSOLE_CLIENT_ID, BROKER_CONSOLE_CLIENT_SECRET). Without a secret
	// the console is a public client, protected by PKCE alone.
	ClientID, ClientSecret string
	// RedirectURL is the absolute callback URL registered at the provider
	// (BROKER_CONSOLE_REDIRECT_URL); its path must be BasePath + "/callback".
	// An https URL makes every cookie Secure.
	RedirectURL string
	// SessionKey seals session cookies and keys CSRF tokens; at least
	// MinSessionKeyLen bytes. Separate subkeys are derived from it (HKDF-SHA256).
	SessionKey []byte
	// BasePath is where the handler is mounted (default "/console").
	BasePath string
	// Scopes are the scopes asked for at login; they must include openid.
	// Default: DefaultScopes.
	Scopes []string
	// SessionLifetime bounds a session from login (default 8h, at most 24h).
	SessionLifetime time.Duration
	// Projects names the Agora projects the broker serves (default: just
	// policy.DefaultProject). The console works in one at a time, chosen
	// with its project switcher among those the user holds a right in.
	Projects []string
	// LogVerifierKey is the issuance log's verifier key (empty when the
	// broker signs no checkpoints): with it, chain verification is
	// incremental, as the API's (audit.VerifyConfigured).
	LogVerifierKey string
}

// Deps are the console's collaborators. Verifier, Policies, Audit and
// Sessions are required.
type Deps struct {
	// Verifier checks the ID token of a login; its audiences must include
	// Config.ClientID.
	Verifier IDTokenVerifier
	Policies *policy.Engine
	Audit    audit.Log
	// Sessions keeps the console's sessions.
	Sessions sessions.Store
	// Logger receives login failures and internal errors (default: discard).
	Logger *slog.Logger
	// HTTPClient reaches the provider for discovery and the code exchange
	// (default: a client with a 10s timeout).
	HTTPClient *http.Client
	// RateLimited counts the token requests this replica refused for the
	// rate limit since it started (nil: not shown).
	RateLimited func() int64
	// Joins are Agora's channel events (nil: not received; the access
	// review then has no "who did", and there are no unexplained joins).
	Joins review.Store
	// Revocations revoke users' tokens (nil: no revocations page), and
	// Orphans says whether the page lists the live tokens policy changes
	// took access from (BROKER_REVOKE_ON_POLICY_CHANGE is not off).
	Revocations *revoke.Service
	Orphans     bool
	// Qualify names an issuer as rule subjects do, for a user's access
	// review (nil: names are bare, one identity provider).
	Qualify func(issuer string) (string, bool)
}

// IDTokenVerifier checks a login's ID token and its nonce (auth.Verifier and
// auth.Issuers are ones).
type IDTokenVerifier interface {
	VerifyIDToken(ctx context.Context, raw, nonce string) (auth.Identity, error)
}

// Console serves the console pages. Create it with New.
type Console struct {
	cfg      Config
	base     string
	secure   bool // cookies are Secure whatever the request says
	verifier IDTokenVerifier
	policies *policy.Engine
	audit    audit.Log
	sessions sessions.Store
	log      *slog.Logger
	client   *http.Client
	provider *provider
	cookies  *sealer
	csrfKey  []byte
	pages    *pages
	now      func() time.Time
	handler  http.Handler
	limited  func() int64 // Deps.RateLimited
	joins    review.Store // Deps.Joins
	// revocations and orphans are Deps.Revocations and Deps.Orphans.
	revocations *revoke.Service
	orphans     bool
	qualify     func(string) (string, bool) // Deps.Qualify
}

// New validates cfg and returns the console. It does not contact the provider:
// discovery happens on the first login, and is retried on the next one if the
// provider was down.
func New(cfg Config, d Deps) (*Console, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if d.Verifier == nil || d.Policies == nil || d.Audit == nil || d.Sessions == nil {
		return nil, errors.New("console: verifier, policies, audit log and session store are all required")
	}
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	if d.HTTPClient == nil {
		d.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	cookieKey, err := hkdf.Key(sha256.New, cfg.SessionKey, nil, "broker console cookie v1", 32)
	if err != nil {
		return nil, fmt.Errorf("console: derive cookie key: %w", err)
	}
	csrfKey, err := hkdf.Key(sha256.New, cfg.SessionKey, nil, "broker console csrf v1", 32)
	if err != nil {
		return nil, fmt.Errorf("console: derive csrf key: %w", err)
	}
	cookies, err := newSealer(cookieKey)
	if err != nil {
		return nil, err
	}
	pg, err := parsePages()
	if err != nil {
		return nil, err
	}
	c := &Console{
		cfg:         cfg,
		base:        cfg.BasePath,
		secure:      strings.HasPrefix(cfg.RedirectURL, "https://"),
		verifier:    d.Verifier,
		policies:    d.Policies,
		audit:       d.Audit,
		sessions:    d.Sessions,
		log:         d.Logger.With("component", "console"),
		client:      d.HTTPClient,
		limited:     d.RateLimited,
		joins:       d.Joins,
		revocations: d.Revocations,
		orphans:     d.Orphans,
		qualify:     d.Qualify,
		provider:    newProvider(cfg.Issuer, d.HTTPClient),
		cookies:     cookies,
		csrfKey:     csrfKey,
		pages:       pg,
		now:         time.Now,
	}
	if c.handler, err = c.routes(); err != nil {
		return nil, err
	}
	return c, nil
}

// Handler returns the console. It routes on the full request path (BasePath
// included), so mount it without stripping the prefix: with chi,
// r.Mount(BasePath, h); with net/http, mux.Handle(BasePath+"/", h).
func (c *Console) Handler() http.Handler { return c.handler }

func (cfg Config) withDefaults() (Config, error) {
	if cfg.BasePath == "" {
		cfg.BasePath = DefaultBasePath
	}
	if len(cfg.Projects) == 0 {
		cfg.Projects = []string{policy.DefaultProject}
	}
	if !strings.HasPrefix(cfg.BasePath, "/") || strings.HasSuffix(cfg.BasePath, "/") || strings.ContainsAny(cfg.BasePath, "?#") {
		return cfg, fmt.Errorf("console: base path %q must start with / and not end with /", cfg.BasePath)
	}
	if cfg.Issuer == "" {
		return cfg, errors.New("console: the OIDC issuer is required")
	}
	if cfg.ClientID == "" {
		return cfg, errors.New("console: the client id (BROKER_CONSOLE_CLIENT_ID) is required")
	}
	u, err := url.Parse(cfg.RedirectURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return cfg, errors.New("console: the redirect URL (BROKER_CONSOLE_REDIRECT_URL) must be an absolute http(s) URL")
	}
	if want := cfg.BasePath + "/callback"; u.Path != want || u.RawQuery != "" || u.Fragment != "" {
		return cfg, fmt.Errorf("console: the redirect URL (BROKER_CONSOLE_REDIRECT_URL) %q must end in %s, without query or fragment", cfg.RedirectURL, want)
	}
	if len(cfg.SessionKey) < MinSessionKeyLen {
		return cfg, fmt.Errorf("console: the session key is %d bytes, at least %d are needed", len(cfg.SessionKey), MinSessionKeyLen)
	}
	if cfg.SessionLifetime == 0 {
		cfg.SessionLifetime = DefaultSessionLifetime
	}
	if cfg.SessionLifetime < time.Minute || cfg.SessionLifetime > MaxSessionLifetime {
		return cfg, fmt.Errorf("console: session lifetime %s must be within [1m, %s]", cfg.SessionLifetime, MaxSessionLifetime)
	}
	if len(cfg.Scopes) == 0 {
		cfg.Scopes = slices.Clone(DefaultScopes)
	}
	if !slices.Contains(cfg.Scopes, "openid") {
		return cfg, fmt.Errorf("console: scopes %q must include openid", cfg.Scopes)
	}
	return cfg, nil
}
