package auth

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Defaults applied to the zero fields of Config.
const (
	DefaultLeeway          = 30 * time.Second
	DefaultRefreshInterval = 5 * time.Minute
	DefaultAccountClaim    = "sub"
	DefaultGroupsClaim     = "groups"
)

// Token types an issuer's tokens may have (Config.TokenType).
const (
	// TokenTypeID: OpenID Connect ID tokens whose aud is the broker's client
	// id. Tokens whose typ header says they are JWT access tokens are refused.
	TokenTypeID = "id_token"
	// TokenTypeAccess: RFC 9068 JWT access tokens whose aud is the broker's
	// resource identifier; the typ header must be "at+jwt".
	TokenTypeAccess = "access_token"
)

// MaxNameLen bounds Config.Name.
const MaxNameLen = 32

// MaxTokenBytes is the longest bearer token the broker will look at. Real ID
// tokens are a few KiB; anything longer is refused before any parsing.
const MaxTokenBytes = 16 << 10

// maxLeeway bounds Config.Leeway: a larger clock skew allowance would let
// expired tokens live on noticeably.
const maxLeeway = 5 * time.Minute

// defaultAlgorithms is the signature allow-list when Config.Algorithms is empty.
var defaultAlgorithms = []string{"RS256", "ES256"}

// asymmetricAlgorithms are the JWS algorithms that may be allowed. Symmetric
// (HS*) and "none" are absent on purpose: with a public key set they only ever
// enable forgeries (key confusion), so configuring them is an error.
var asymmetricAlgorithms = map[string]bool{
	"RS256": true, "RS384": true, "RS512": true,
	"PS256": true, "PS384": true, "PS512": true,
	"ES256": true, "ES384": true, "ES512": true,
	"EdDSA": true,
}

// Config configures a Verifier, or one issuer of Issuers. Issuer and
// Audiences are required; every other zero field takes the documented default.
type Config struct {
	// Name identifies the issuer in a set of issuers: 1 to 32 characters of
	// [a-z0-9-]. It is the issuer label of the auth metrics and qualifies the
	// issuer's identities: policy subject "Name/<sub>", groups "Name/<group>"
	// (see Identity.PolicySubject). Empty means the default issuer (at most one
	// in a set; the one BROKER_OIDC_ISSUER defines), whose identities are not
	// qualified and whose metrics are labelled issuer="default". "default" and
	// "unknown" are reserved.
	Name string
	// Issuer is the OpenID provider's issuer URL (BROKER_OIDC_ISSUER). Discovery
	// is fetched from Issuer + "/.well-known/openid-configuration", and a
	// token's iss claim must equal it exactly.
	Issuer string
	// Audiences are the accepted client ids (BROKER_OIDC_AUDIENCE); a token's
	// aud must contain at least one of them.
	Audiences []string
	// Algorithms is the signature algorithm allow-list (default RS256, ES256).
	// "none" and HS* are refused.
	Algorithms []string
	// Leeway is the clock skew allowed when checking exp, nbf and iat
	// (default 30s, at most 5m).
	Leeway time.Duration
	// AccountClaim names the claim that becomes Identity.Account (default "sub").
	AccountClaim string
	// GroupsClaim names the claim that becomes Identity.Groups (default "groups").
	GroupsClaim string
	// RequiredClaims are bound claims, as Vault's bound_claims: every named
	// claim must be present and equal one of the listed values (strings,
	// booleans and numbers, compared as JSON values, numbers by value); when
	// the claim is an array, one of its elements must. Tokens that do not
	// satisfy them are refused naming the claim, never its value.
	RequiredClaims map[string][]any
	// TokenType is what the issuer's tokens are: TokenTypeID ("id_token", the
	// default) or TokenTypeAccess ("access_token", RFC 9068: typ header
	// "at+jwt" and aud containing one of Audiences, the broker's resource
	// identifier).
	TokenType string
	// RequiredScopes, for TokenTypeAccess only, must all appear in the token's
	// space-separated scope claim.
	RequiredScopes []string
	// UIDClaim, when set, names a numeric claim that becomes Identity.UID; tokens
	// without a valid uid in it are rejected.
	UIDClaim string
	// RefreshInterval is how often the key set is fetched again (default 5m). A
	// Cache-Control max-age from the provider moves it within [30s, 15m].
	RefreshInterval time.Duration
	// HTTPClient fetches discovery and keys (default: a client with a 10s timeout).
	HTTPClient *http.Client
	// Logger receives rejection reasons (debug) and provider trouble (warn);
	// never a token. Default: slog.Default().
	Logger *slog.Logger
	// Registerer registers the auth metrics; nil registers nothing. The issuers
	// of a set share one (configs may leave it nil).
	Registerer prometheus.Registerer
	// CacheBytes bounds the verified-token cache's memory (default
	// DefaultCacheBytes); it also holds at most 10,000 tokens. Each issuer of
	// a set has its own cache of this size.
	CacheBytes int
	// Now returns the time used for exp/nbf/iat checks and the token cache
	// (default time.Now).
	Now func() time.Time

	// requiredClaims is RequiredClaims validated and sorted by claim name.
	requiredClaims []requiredClaim
}

// label is the issuer's value of the metrics' issuer label.
func (c *Config) label() string {
	if c.Name == "" {
		return defaultIssuerLabel
	}
	return c.Name
}

// withDefaults validates c and returns a copy with defaults filled in. Error
// messages name the environment variable an operator would fix (for the
// default issuer) or the field (for a named issuer, whose errors are
// prefixed with its name).
func (c Config) withDefaults() (Config, error) {
	var errs []error
	if p := nameProblem(c.Name); p != "" {
		errs = append(errs, fmt.Errorf("issuer name %q %s", c.Name, p))
	}
	issuerKey, audienceKey := "BROKER_OIDC_ISSUER", "BROKER_OIDC_AUDIENCE"
	if c.Name != "" {
		issuerKey, audienceKey = "issuer", "audiences"
	}
	u, err := url.Parse(c.Issuer)
	switch {
	case c.Issuer == "":
		errs = append(errs, fmt.Errorf("%s: issuer URL is required", issuerKey))
	case err != nil || !u.IsAbs() || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http"):
		errs = append(errs, fmt.Errorf("%s: %q is not an absolute http(s) URL", issuerKey, c.Issuer))
	case u.RawQuery != "" || u.Fragment != "":
		errs = append(errs, fmt.Errorf("%s: %q must not have a query or fragment", issuerKey, c.Issuer))
	}

	var auds []string
	for _, a := range c.Audiences {
		if a = strings.TrimSpace(a); a != "" {
			auds = append(auds, a)
		}
	}
	if len(auds) == 0 {
		errs = append(errs, fmt.Errorf("%s: at least one client id (or, for access tokens, resource identifier) is required", audienceKey))
	}
	c.Audiences = auds

	if len(c.Algorithms) == 0 {
		c.Algorithms = defaultAlgorithms
	}
	if c.CacheBytes < 0 {
		errs = append(errs, errors.New("BROKER_TOKEN_CACHE_BYTES: must not be negative"))
	} else if c.CacheBytes == 0 {
		c.CacheBytes = DefaultCacheBytes
	}
	algs := make([]string, 0, len(c.Algorithms))
	for _, a := range c.Algorithms {
		a = strings.TrimSpace(a)
		switch {
		case strings.EqualFold(a, "none") || strings.HasPrefix(strings.ToUpper(a), "HS"):
			errs = append(errs, fmt.Errorf("signing algorithm %q is never allowed: symmetric or unsigned tokens can be forged", a))
		case !asymmetricAlgorithms[a]:
			errs = append(errs, fmt.Errorf("signing algorithm %q is not supported (use RS*, PS*, ES* or EdDSA)", a))
		default:
			algs = append(algs, a)
		}
	}
	c.Algorithms = algs

	switch {
	case c.Leeway == 0:
		c.Leeway = DefaultLeeway
	case c.Leeway < 0 || c.Leeway > maxLeeway:
		errs = append(errs, fmt.Errorf("leeway %s is out of range (0 < leeway <= %s)", c.Leeway, maxLeeway))
	}
	switch {
	case c.RefreshInterval == 0:
		c.RefreshInterval = DefaultRefreshInterval
	case c.RefreshInterval < 0:
		errs = append(errs, fmt.Errorf("key refresh interval %s must be positive", c.RefreshInterval))
	}
	c.AccountClaim = strings.TrimSpace(c.AccountClaim)
	if c.AccountClaim == "" {
		c.AccountClaim = DefaultAccountClaim
	}
	c.GroupsClaim = strings.TrimSpace(c.GroupsClaim)
	if c.GroupsClaim == "" {
		c.GroupsClaim = DefaultGroupsClaim
	}
	c.UIDClaim = strings.TrimSpace(c.UIDClaim)

	switch c.TokenType {
	case "":
		c.TokenType = TokenTypeID
	case TokenTypeID, TokenTypeAccess:
	default:
		errs = append(errs, fmt.Errorf("token type %q is not supported (use %q or %q)", c.TokenType, TokenTypeID, TokenTypeAccess))
	}
	scopes, err := validScopes(c.RequiredScopes)
	if err != nil {
		errs = append(errs, err)
	}
	if len(scopes) > 0 && c.TokenType != TokenTypeAccess {
		errs = append(errs, fmt.Errorf("required scopes apply to access tokens only; set the token type to %q or drop them", TokenTypeAccess))
	}
	c.RequiredScopes = scopes
	c.requiredClaims, err = compileRequiredClaims(c.RequiredClaims)
	if err != nil {
		errs = append(errs, err)
	}
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if err := errors.Join(errs...); err != nil {
		if c.Name != "" {
			return Config{}, fmt.Errorf("auth: invalid configuration of issuer %q: %w", c.Name, err)
		}
		return Config{}, fmt.Errorf("auth: invalid configuration: %w", err)
	}
	if u.Scheme == "http" && !isLoopback(u.Hostname()) {
		c.Logger.Warn("OIDC issuer uses plain http; keys and discovery can be tampered with in transit", "issuer", c.Issuer)
	}
	return c, nil
}

// nameProblem says why name cannot be an issuer name ("" if it can; the
// empty name is the default issuer's).
func nameProblem(name string) string {
	switch {
	case name == "":
		return ""
	case len(name) > MaxNameLen:
		return fmt.Sprintf("is longer than %d characters", MaxNameLen)
	case name == defaultIssuerLabel || name == unknownIssuerLabel:
		return "is reserved (it is a value of the metrics' issuer label)"
	}
	for _, r := range name {
		if (r < 'a' || r > 'z') && (r < '0' || r > '9') && r != '-' {
			return "may only contain a-z, 0-9 and '-'"
		}
	}
	return ""
}

// validScopes trims and de-duplicates scopes; a scope must be non-empty and
// free of spaces (RFC 6749 §3.3 scope-token).
func validScopes(scopes []string) ([]string, error) {
	var out []string
	for _, s := range scopes {
		s = strings.TrimSpace(s)
		if s == "" || strings.IndexFunc(s, func(r rune) bool { return r <= ' ' || r == '"' || r == '\\' || r > '~' }) >= 0 {
			return nil, fmt.Errorf("required scope %q is not a scope token (printable ASCII without spaces, quotes or backslashes)", s)
		}
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out, nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
