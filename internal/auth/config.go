package auth

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
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

// Config configures a Verifier. Issuer and Audiences are required; every other
// zero field takes the documented default.
type Config struct {
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
	// Registerer registers the auth metrics; nil registers nothing.
	Registerer prometheus.Registerer
	// CacheBytes bounds the verified-token cache's memory (default
	// DefaultCacheBytes); it also holds at most 10,000 tokens.
	CacheBytes int
	// Now returns the time used for exp/nbf/iat checks and the token cache
	// (default time.Now).
	Now func() time.Time
}

// withDefaults validates c and returns a copy with defaults filled in. Error
// messages name the environment variable an operator would fix.
func (c Config) withDefaults() (Config, error) {
	var errs []error
	u, err := url.Parse(c.Issuer)
	switch {
	case c.Issuer == "":
		errs = append(errs, errors.New("BROKER_OIDC_ISSUER: issuer URL is required"))
	case err != nil || !u.IsAbs() || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http"):
		errs = append(errs, fmt.Errorf("BROKER_OIDC_ISSUER: %q is not an absolute http(s) URL", c.Issuer))
	case u.RawQuery != "" || u.Fragment != "":
		errs = append(errs, fmt.Errorf("BROKER_OIDC_ISSUER: %q must not have a query or fragment", c.Issuer))
	}

	var auds []string
	for _, a := range c.Audiences {
		if a = strings.TrimSpace(a); a != "" {
			auds = append(auds, a)
		}
	}
	if len(auds) == 0 {
		errs = append(errs, errors.New("BROKER_OIDC_AUDIENCE: at least one client id is required"))
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
		return Config{}, fmt.Errorf("auth: invalid configuration: %w", err)
	}
	if u.Scheme == "http" && !isLoopback(u.Hostname()) {
		c.Logger.Warn("OIDC issuer uses plain http; keys and discovery can be tampered with in transit", "issuer", c.Issuer)
	}
	return c, nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
