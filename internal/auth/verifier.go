// Package auth owns OIDC bearer authentication: it verifies ID tokens (or
// RFC 9068 JWT access tokens) against the configured providers and turns them
// into an Identity for the request. A Verifier serves one issuer; Issuers
// serves a set of them, picking one per token by its iss.
// It must never log, store or echo a token; only its SHA-256 is ever kept.
package auth

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	jose "github.com/go-jose/go-jose/v4"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"

	"github.com/broker-dev/broker/internal/apperr"
	"github.com/broker-dev/broker/internal/tracing"
)

// Discovery retry bounds while the provider is unreachable.
const (
	initialBackoff = 100 * time.Millisecond
	maxBackoff     = 30 * time.Second
)

// Verifier checks bearer tokens issued by one OpenID provider; NewIssuers
// makes one per issuer. It is safe for concurrent use.
type Verifier struct {
	rejecter // counts and logs under this issuer's label
	cfg      Config
	cache    *tokenCache
	// reserved are the names of the other issuers of a set, for the default
	// issuer only: its subjects and groups must not look qualified by them.
	reserved map[string]bool

	cancel context.CancelFunc
	done   chan struct{}

	mu       sync.RWMutex
	provider *providerState // nil until discovery and the first key fetch succeed
	lastErr  error
}

// providerState is what discovery produced.
type providerState struct {
	keys     *keySet
	verifier *oidc.IDTokenVerifier
}

// launchVerifier starts the verifier of cfg (already validated) counting into
// m; reserved is the set of other issuers' names (see Verifier.reserved).
func launchVerifier(ctx context.Context, cfg Config, m *metrics, reserved map[string]bool) *Verifier {
	ctx, cancel := context.WithCancel(ctx)
	v := &Verifier{
		rejecter: rejecter{metrics: m, log: cfg.Logger.With("component", "auth", "issuer", cfg.label())},
		cfg:      cfg,
		cache:    newTokenCache(maxCachedTokens, cfg.CacheBytes),
		reserved: reserved,
		cancel:   cancel,
		done:     make(chan struct{}),
		lastErr:  errors.New("discovery has not completed yet"),
	}
	go v.run(ctx)
	return v
}

// Close stops background discovery and key refreshes and waits for them.
func (v *Verifier) Close() {
	v.cancel()
	<-v.done
}

// Ready returns nil once discovery and the first key fetch have succeeded,
// else an error saying what is still failing (for /readyz).
func (v *Verifier) Ready() error {
	v.mu.RLock()
	defer v.mu.RUnlock()
	if v.provider != nil {
		return nil
	}
	if v.cfg.Name != "" {
		return fmt.Errorf("OIDC issuer %q (%s) not ready: %w", v.cfg.Name, v.cfg.Issuer, v.lastErr)
	}
	return fmt.Errorf("OIDC provider %s not ready: %w", v.cfg.Issuer, v.lastErr)
}

func (v *Verifier) state() *providerState {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.provider
}

func (v *Verifier) run(ctx context.Context) {
	defer close(v.done)
	backoff := initialBackoff
	var keys *keySet
	for {
		var err error
		if keys == nil {
			keys, err = v.discover(ctx)
		}
		if keys != nil {
			var age time.Duration
			if age, err = keys.refreshMaxAge(ctx, false); err == nil {
				v.mu.Lock()
				v.provider = &providerState{
					keys: keys,
					verifier: oidc.NewVerifier(v.cfg.Issuer, keys, &oidc.Config{
						SupportedSigningAlgs: v.cfg.Algorithms,
						// Audience, expiry (with leeway, plus nbf) and the exact
						// issuer are checked by checkClaims, with precise reasons.
						SkipClientIDCheck: true,
						SkipExpiryCheck:   true,
						SkipIssuerCheck:   true,
					}),
				}
				v.lastErr = nil
				v.mu.Unlock()
				v.log.Info("OIDC provider ready", "issuer", v.cfg.Issuer)
				keys.run(ctx, v.cfg.RefreshInterval, age)
				return
			}
		}
		if ctx.Err() != nil {
			return
		}
		v.mu.Lock()
		v.lastErr = err
		v.mu.Unlock()
		v.log.Warn("OIDC provider not reachable; retrying", "issuer", v.cfg.Issuer, "error", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, maxBackoff)
	}
}

// discover fetches the provider metadata; go-oidc checks that it names the
// configured issuer.
func (v *Verifier) discover(ctx context.Context) (*keySet, error) {
	dctx, cancel := context.WithTimeout(oidc.ClientContext(ctx, v.cfg.HTTPClient), fetchTimeout)
	defer cancel()
	p, err := oidc.NewProvider(dctx, v.cfg.Issuer)
	if err != nil {
		return nil, fmt.Errorf("discovery: %w", err)
	}
	var meta struct {
		JWKSURI string `json:"jwks_uri"`
	}
	if err := p.Claims(&meta); err != nil || meta.JWKSURI == "" {
		return nil, fmt.Errorf("discovery: %s has no jwks_uri", v.cfg.Issuer)
	}
	algs := make([]jose.SignatureAlgorithm, len(v.cfg.Algorithms))
	for i, a := range v.cfg.Algorithms {
		algs[i] = jose.SignatureAlgorithm(a)
	}
	return &keySet{
		url:      meta.JWKSURI,
		client:   v.cfg.HTTPClient,
		algs:     algs,
		log:      v.log,
		metrics:  v.metrics,
		baseCtx:  ctx,
		onChange: v.cache.flush,
	}, nil
}

// Verify checks a raw bearer token and returns the caller's Identity. Tokens
// seen before are answered from a cache until their exp. Errors are
// *apperr.Error of kind Unauthorized (bad token; the message says what is
// wrong) or Unavailable (the provider has not been reached yet, or could not be
// reached to fetch a signing key the token names). Failures are never cached.
func (v *Verifier) Verify(ctx context.Context, raw string) (Identity, error) {
	if len(raw) > MaxTokenBytes {
		return Identity{}, v.reject(ctx, reasonTooLarge, nil, "bearer token is longer than %d bytes", MaxTokenBytes)
	}
	key := tokenKey(sha256.Sum256([]byte(raw)))
	if id, ok := v.cached(ctx, key); ok {
		return id, nil
	}
	return v.verifyFresh(ctx, raw, key, nil)
}

// cached answers the token whose hash is key from v's token cache, recording
// the auth.verify span verifyFresh records on a miss; false on a miss, or before
// discovery.
func (v *Verifier) cached(ctx context.Context, key tokenKey) (Identity, bool) {
	st := v.state()
	if st == nil {
		return Identity{}, false
	}
	id, ok := v.cache.get(key, st.keys.generation(), v.cfg.Now())
	if ok {
		_, span := tracing.Tracer().Start(ctx, "auth.verify")
		span.SetAttributes(attribute.String("auth.issuer", v.cfg.label()), attribute.String("auth.cache", "hit"))
		span.End()
	}
	return id, ok
}

// verifyFresh verifies a token its cache did not hold (key is its hash) and
// caches the identity; pre, when non-nil, is raw already parsed (by Issuers,
// to pick this verifier).
func (v *Verifier) verifyFresh(ctx context.Context, raw string, key tokenKey, pre *unverified) (Identity, error) {
	st := v.state()
	if st == nil {
		return Identity{}, v.unavailable(ctx)
	}
	ctx, span := tracing.Tracer().Start(ctx, "auth.verify")
	defer span.End()
	span.SetAttributes(attribute.String("auth.issuer", v.cfg.label()), attribute.String("auth.cache", "miss"))
	gen := st.keys.generation()
	now := v.cfg.Now()
	id, exp, err := v.verify(ctx, st, raw, pre, nil)
	if err != nil {
		span.SetStatus(codes.Error, "rejected")
		return Identity{}, err
	}
	cached := id
	cached.Groups = slices.Clone(id.Groups)
	v.cache.put(key, cached, exp, gen, now)
	return id, nil
}

// VerifyIDToken checks an ID token received from the provider's token endpoint
// (console login) like Verify, and also requires its nonce claim to equal
// nonce. It bypasses the token cache. An access-token issuer refuses it: a
// login needs an ID token.
func (v *Verifier) VerifyIDToken(ctx context.Context, raw, nonce string) (Identity, error) {
	return v.verifyIDToken(ctx, raw, nonce, nil)
}

// verifyIDToken is VerifyIDToken; pre as for verifyBearer.
func (v *Verifier) verifyIDToken(ctx context.Context, raw, nonce string, pre *unverified) (Identity, error) {
	st := v.state()
	if st == nil {
		return Identity{}, v.unavailable(ctx)
	}
	if v.cfg.TokenType != TokenTypeID {
		return Identity{}, v.reject(ctx, reasonTokenType, nil, "issuer %s accepts access tokens, not the ID tokens of a login", clip(v.cfg.Issuer))
	}
	if nonce == "" {
		return Identity{}, v.reject(ctx, reasonNonce, nil, "login nonce is missing")
	}
	if len(raw) > MaxTokenBytes {
		return Identity{}, v.reject(ctx, reasonTooLarge, nil, "ID token is longer than %d bytes", MaxTokenBytes)
	}
	id, _, err := v.verify(ctx, st, raw, pre, &nonce)
	return id, err
}

// joseHeader is the part of a JWS header looked at before verification, to
// explain rejections precisely, and the typ checked after it.
type joseHeader struct {
	Alg string `json:"alg"`
	Kid string `json:"kid"`
	Typ string `json:"typ"`
}

// standardClaims are the registered claims checked on every token.
type standardClaims struct {
	Issuer    string   `json:"iss"`
	Subject   string   `json:"sub"`
	Audience  audience `json:"aud"`
	Expiry    *float64 `json:"exp"`
	NotBefore *float64 `json:"nbf"`
	IssuedAt  *float64 `json:"iat"`
	Nonce     string   `json:"nonce"`
}

// audience is the aud claim: one string or an array of strings.
type audience []string

func (a *audience) UnmarshalJSON(b []byte) error {
	var s string
	if json.Unmarshal(b, &s) == nil {
		*a = audience{s}
		return nil
	}
	var l []string
	if err := json.Unmarshal(b, &l); err != nil {
		return errors.New("aud must be a string or an array of strings")
	}
	*a = l
	return nil
}

// verify does the full check of raw (parsed as pre, when non-nil); nonce,
// when non-nil, must match. It returns the identity and the token's expiry.
func (v *Verifier) verify(ctx context.Context, st *providerState, raw string, pre *unverified, nonce *string) (Identity, time.Time, error) {
	if pre == nil {
		u, err := parseUnverified(raw)
		if err != nil {
			return Identity{}, time.Time{}, v.reject(ctx, reasonMalformed, err, "bearer token is not a well-formed signed JWT (header.payload.signature)")
		}
		pre = &u
	}
	if pre.claims.Issuer != v.cfg.Issuer {
		// Before the signature: a foreign token never makes us fetch keys.
		return Identity{}, time.Time{}, v.reject(ctx, reasonIssuer, nil, "issuer mismatch: expected %q, got %s", v.cfg.Issuer, clip(pre.claims.Issuer))
	}
	hdr := pre.header
	if !v.algorithmAllowed(hdr.Alg) {
		return Identity{}, time.Time{}, v.reject(ctx, reasonAlgorithm, nil, "signing algorithm %s not allowed (accepted: %s)",
			clip(hdr.Alg), strings.Join(v.cfg.Algorithms, ", "))
	}
	tok, err := st.verifier.Verify(ctx, raw)
	if err != nil {
		known, fetchErr := st.keys.lookup(hdr.Kid)
		if !known && fetchErr != nil {
			// The provider may have rotated in this key while it could not
			// be reached: neither accept nor call the token invalid.
			return Identity{}, time.Time{}, v.keyUnavailable(ctx, hdr.Kid, fetchErr)
		}
		if !known {
			return Identity{}, time.Time{}, v.reject(ctx, reasonUnknownKey, err, "signing key %s is not in the provider's current key set", clip(hdr.Kid))
		}
		return Identity{}, time.Time{}, v.reject(ctx, reasonSignature, err, "token signature is invalid")
	}
	var std standardClaims
	var claims map[string]json.RawMessage
	if err := tok.Claims(&std); err != nil {
		return Identity{}, time.Time{}, v.reject(ctx, reasonMalformed, err, "token claims are malformed")
	}
	if err := tok.Claims(&claims); err != nil {
		return Identity{}, time.Time{}, v.reject(ctx, reasonMalformed, err, "token claims are malformed")
	}
	// The signature covers the header, so its typ is the issuer's word now.
	if err := checkTokenType(v.cfg.TokenType, hdr.Typ); err != nil {
		return Identity{}, time.Time{}, v.reject(ctx, reasonTokenType, nil, "%s", err)
	}
	exp, reason, err := v.checkClaims(&std, nonce)
	if err != nil {
		return Identity{}, time.Time{}, v.reject(ctx, reason, nil, "%s", err)
	}
	if err := checkRequiredClaims(v.cfg.requiredClaims, claims); err != nil {
		return Identity{}, time.Time{}, v.reject(ctx, reasonRequiredClaim, nil, "%s", err)
	}
	if err := checkScopes(v.cfg.RequiredScopes, claims); err != nil {
		return Identity{}, time.Time{}, v.reject(ctx, reasonScope, nil, "%s", err)
	}
	id, err := v.identityFrom(&std, claims)
	if err != nil {
		return Identity{}, time.Time{}, v.reject(ctx, reasonClaims, nil, "%s", err)
	}
	return id, exp, nil
}

// unverified is what parseUnverified reads from a token, none of it trusted:
// the header, to explain rejections, and the claims, whose iss picks the
// issuer in a set.
type unverified struct {
	header joseHeader
	claims standardClaims
}

// parseUnverified decodes the header and checks the payload is a JSON object,
// so later failures can be told apart from garbage.
func parseUnverified(raw string) (unverified, error) {
	var u unverified
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return u, fmt.Errorf("token has %d dot-separated parts, want 3", len(parts))
	}
	hb, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		return u, fmt.Errorf("header: %w", err)
	}
	if err := json.Unmarshal(hb, &u.header); err != nil {
		return u, fmt.Errorf("header: %w", err)
	}
	pb, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return u, fmt.Errorf("payload: %w", err)
	}
	if err := json.Unmarshal(pb, &u.claims); err != nil {
		return u, fmt.Errorf("payload: %w", err)
	}
	return u, nil
}

func (v *Verifier) algorithmAllowed(alg string) bool {
	for _, a := range v.cfg.Algorithms {
		if a == alg {
			return true
		}
	}
	return false
}

// checkClaims applies the registered-claim rules and returns the expiry, or
// the rejection reason and a client-safe explanation.
func (v *Verifier) checkClaims(c *standardClaims, nonce *string) (time.Time, string, error) {
	if c.Issuer != v.cfg.Issuer {
		return time.Time{}, reasonIssuer, fmt.Errorf("issuer mismatch: expected %q, got %s", v.cfg.Issuer, clip(c.Issuer))
	}
	if !v.audienceAccepted(c.Audience) {
		return time.Time{}, reasonAudience, fmt.Errorf("audience %s not accepted (expected one of: %s)",
			clip(strings.Join(c.Audience, ", ")), strings.Join(v.cfg.Audiences, ", "))
	}
	now, leeway := v.cfg.Now(), v.cfg.Leeway
	if c.Expiry == nil {
		return time.Time{}, reasonMalformed, errors.New("token has no exp claim")
	}
	exp, ok := unixTime(*c.Expiry)
	if !ok {
		return time.Time{}, reasonMalformed, errors.New("token's exp claim is out of range")
	}
	if now.After(exp.Add(leeway)) {
		return time.Time{}, reasonExpired, fmt.Errorf("token expired at %s (now %s, leeway %s)", stamp(exp), stamp(now), leeway)
	}
	if c.NotBefore != nil {
		nbf, ok := unixTime(*c.NotBefore)
		if !ok {
			return time.Time{}, reasonMalformed, errors.New("token's nbf claim is out of range")
		}
		if now.Add(leeway).Before(nbf) {
			return time.Time{}, reasonNotYetValid, fmt.Errorf("token not valid before %s (now %s, leeway %s)", stamp(nbf), stamp(now), leeway)
		}
	}
	if c.IssuedAt != nil {
		iat, ok := unixTime(*c.IssuedAt)
		if !ok {
			return time.Time{}, reasonMalformed, errors.New("token's iat claim is out of range")
		}
		if now.Add(leeway).Before(iat) {
			return time.Time{}, reasonIssuedInFuture, fmt.Errorf("token issued in the future at %s (now %s, leeway %s); check clocks", stamp(iat), stamp(now), leeway)
		}
	}
	if c.Subject == "" {
		return time.Time{}, reasonClaims, errors.New("token has no sub claim")
	}
	if p := textProblem(c.Subject, MaxSubjectLen); p != "" {
		return time.Time{}, reasonClaims, fmt.Errorf("token's sub claim %s", p)
	}
	if nonce != nil && subtle.ConstantTimeCompare([]byte(c.Nonce), []byte(*nonce)) != 1 {
		return time.Time{}, reasonNonce, errors.New("ID token nonce does not match this login")
	}
	return exp, "", nil
}

func (v *Verifier) audienceAccepted(aud []string) bool {
	for _, a := range aud {
		for _, want := range v.cfg.Audiences {
			if a == want {
				return true
			}
		}
	}
	return false
}

// unixTime converts a NumericDate, refusing values no real token carries.
func unixTime(f float64) (time.Time, bool) {
	if f < 0 || f > 1e11 || math.IsNaN(f) {
		return time.Time{}, false
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9)), true
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// clip quotes a token-supplied value for a message, cut short so a hostile
// token cannot fill error bodies, headers or logs.
func clip(s string) string {
	const max = 64
	if len(s) > max {
		return fmt.Sprintf("%q…", s[:max])
	}
	return fmt.Sprintf("%q", s)
}

// rejecter counts and logs refusals under one issuer label.
type rejecter struct {
	metrics *metrics
	log     *slog.Logger
}

// reject counts and logs a rejection and returns the client-facing error.
// cause is for logs only and never contains the token.
func (r *rejecter) reject(ctx context.Context, reason string, cause error, format string, args ...any) *apperr.Error {
	r.metrics.rejections.WithLabelValues(reason).Inc()
	e := apperr.New(apperr.Unauthorized, format, args...)
	e.Cause = cause
	r.log.DebugContext(ctx, "bearer token rejected", "reason", reason, "error", e)
	return e
}

func (v *Verifier) unavailable(ctx context.Context) *apperr.Error {
	v.metrics.rejections.WithLabelValues(reasonUnavailable).Inc()
	err := v.Ready()
	v.log.DebugContext(ctx, "bearer token not checked: provider not ready", "error", err)
	return apperr.Wrap(apperr.Unavailable, err, "the identity provider has not been reached yet; retry shortly")
}

// keyUnavailable counts and logs a token whose kid is not among the cached
// keys while the latest key set fetch failed: the broker cannot tell a newly
// rotated-in key from a forged kid, so it fails closed with a retryable error.
// cause (the fetch failure) is for logs only.
func (v *Verifier) keyUnavailable(ctx context.Context, kid string, cause error) *apperr.Error {
	v.metrics.rejections.WithLabelValues(reasonUnavailable).Inc()
	e := apperr.Wrap(apperr.Unavailable, cause,
		fmt.Sprintf("the identity provider could not be reached to fetch signing key %s; retry shortly", clip(kid)))
	v.log.DebugContext(ctx, "bearer token not checked: signing key unknown and the provider unreachable", "reason", reasonUnavailable, "error", e)
	return e
}
