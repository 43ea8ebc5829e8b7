package auth

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http"
	"reflect"

	"github.com/prometheus/client_golang/prometheus"
)

// Issuers verifies bearer tokens from a set of OpenID providers. Each token
// goes to the issuer whose URL equals its iss claim exactly (read before
// verification, so an iss that is no configured issuer costs no network
// request); that issuer's Verifier then checks it fully with its own keys,
// token cache and Config. Create it with NewIssuers; it is safe for
// concurrent use.
type Issuers struct {
	// rejecter counts and logs, under issuer="unknown", what is refused
	// before a token is matched to an issuer.
	rejecter
	list     []*Verifier          // in configuration order
	byIssuer map[string]*Verifier // by exact issuer URL
}

// CheckConfigs validates a set of issuer configurations as NewIssuers does,
// without starting anything or touching the network (broker config check).
func CheckConfigs(cfgs []Config) error {
	_, _, err := checkSet(cfgs)
	return err
}

// checkSet validates cfgs as a set and returns them with defaults, and the
// registerer they share.
func checkSet(cfgs []Config) ([]Config, prometheus.Registerer, error) {
	if len(cfgs) == 0 {
		return nil, nil, errors.New("auth: no OIDC issuer is configured; at least one is required")
	}
	var errs []error
	valid := make([]Config, 0, len(cfgs))
	for _, c := range cfgs {
		c, err := c.withDefaults()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		valid = append(valid, c)
	}
	var (
		reg      prometheus.Registerer
		regOwner string
		byURL    = map[string]string{}
		byName   = map[string]bool{}
	)
	for _, c := range valid {
		label := c.label()
		if other, dup := byURL[c.Issuer]; dup {
			errs = append(errs, fmt.Errorf("auth: issuer URL %q is configured twice (issuers %q and %q)", c.Issuer, other, label))
		}
		byURL[c.Issuer] = label
		if byName[label] {
			if c.Name == "" {
				errs = append(errs, errors.New("auth: more than one issuer has no name; only the default issuer may leave Name empty"))
			} else {
				errs = append(errs, fmt.Errorf("auth: issuer name %q is used twice", c.Name))
			}
		}
		byName[label] = true
		switch {
		case c.Registerer == nil:
		case reg == nil:
			reg, regOwner = c.Registerer, label
		case !sameRegisterer(reg, c.Registerer):
			errs = append(errs, fmt.Errorf("auth: issuers %q and %q name different metric registerers; the issuers of a set share one", regOwner, label))
		}
	}
	return valid, reg, errors.Join(errs...)
}

// NewIssuers validates cfgs and starts one Verifier per issuer: discovery and
// the first key fetch run in the background, retried with exponential
// backoff, until ctx is done or Close is called; until they succeed, Ready
// and Verify report that issuer as unavailable. It needs at least one config;
// issuer URLs (compared exactly: "https://a/" and "https://a" are two
// issuers) and names must be distinct, at most one config may be the default
// issuer (empty Name), and the configs that name a Registerer must name the
// same one: the auth metrics are registered once, with an issuer label.
func NewIssuers(ctx context.Context, cfgs []Config) (*Issuers, error) {
	valid, reg, err := checkSet(cfgs)
	if err != nil {
		return nil, err
	}
	reserved := map[string]bool{}
	for _, c := range valid {
		if c.Name != "" {
			reserved[c.Name] = true
		}
	}
	vecs, err := newMetricVecs(reg)
	if err != nil {
		return nil, err
	}
	s := &Issuers{
		rejecter: rejecter{
			metrics: vecs.forIssuer(unknownIssuerLabel),
			log:     valid[0].Logger.With("component", "auth", "issuer", unknownIssuerLabel),
		},
		byIssuer: make(map[string]*Verifier, len(valid)),
	}
	for _, c := range valid {
		var others map[string]bool
		if c.Name == "" && len(reserved) > 0 {
			others = reserved
		}
		v := launchVerifier(ctx, c, vecs.forIssuer(c.label()), others)
		s.list = append(s.list, v)
		s.byIssuer[c.Issuer] = v
	}
	return s, nil
}

// sameRegisterer compares two registerers without panicking on a dynamic
// type that is not comparable.
func sameRegisterer(a, b prometheus.Registerer) bool {
	ta, tb := reflect.TypeOf(a), reflect.TypeOf(b)
	return ta == tb && ta.Comparable() && a == b
}

// Close stops every issuer's background discovery and key refreshes and
// waits for them.
func (s *Issuers) Close() {
	for _, v := range s.list {
		v.cancel()
	}
	for _, v := range s.list {
		<-v.done
	}
}

// Ready returns nil once every issuer has completed discovery and its first
// key fetch, else an error naming each issuer that has not (for /readyz).
func (s *Issuers) Ready() error {
	var errs []error
	for _, v := range s.list {
		if err := v.Ready(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Verify checks a raw bearer token with the verifier of the issuer its iss
// names (see Verifier.Verify). A token whose iss is no configured issuer is
// refused as Unauthorized without contacting any provider.
func (s *Issuers) Verify(ctx context.Context, raw string) (Identity, error) {
	var key tokenKey
	if len(raw) <= MaxTokenBytes { // pick refuses a longer one
		// A token seen before is in the cache of the issuer that verified
		// it: answer from there without parsing it to pick the issuer.
		key = tokenKey(sha256.Sum256([]byte(raw)))
		for _, v := range s.list {
			if id, ok := v.cached(ctx, key); ok {
				return id, nil
			}
		}
	}
	v, pre, err := s.pick(ctx, raw, "bearer token")
	if err != nil {
		return Identity{}, err
	}
	return v.verifyFresh(ctx, raw, key, pre)
}

// VerifyIDToken checks the ID token of a console login with the verifier of
// the issuer its iss names (see Verifier.VerifyIDToken). Logins go through
// the default issuer only: a valid ID token of another issuer is refused.
func (s *Issuers) VerifyIDToken(ctx context.Context, raw, nonce string) (Identity, error) {
	v, pre, err := s.pick(ctx, raw, "ID token")
	if err != nil {
		return Identity{}, err
	}
	id, err := v.verifyIDToken(ctx, raw, nonce, pre)
	if err == nil && v.cfg.Name != "" {
		return Identity{}, v.reject(ctx, reasonIssuer, nil, "console logins are for the default issuer's users, not issuer %q's", v.cfg.Name)
	}
	return id, err
}

// QualifierFor returns the Identity.Qualifier of the configured issuer whose
// URL is exactly issuer ("" for the default issuer), and false when no
// configured issuer has that URL. It is for identities rebuilt from storage
// (sessions, token URLs) rather than from a token: an issuer since removed
// from the configuration yields false, and its stored identities should be
// refused.
func (s *Issuers) QualifierFor(issuer string) (string, bool) {
	v, ok := s.byIssuer[issuer]
	if !ok {
		return "", false
	}
	return v.cfg.Name, true
}

// Middleware is Verifier.Middleware for the set: it authenticates every
// request with its bearer token, verified by Verify.
func (s *Issuers) Middleware(next http.Handler) http.Handler {
	return authenticate(&s.rejecter, s.Verify, next)
}

// pick parses raw without verifying it and returns the verifier of the
// issuer its iss names, with the parse for that verifier to reuse.
func (s *Issuers) pick(ctx context.Context, raw, what string) (*Verifier, *unverified, error) {
	if len(raw) > MaxTokenBytes {
		return nil, nil, s.reject(ctx, reasonTooLarge, nil, "%s is longer than %d bytes", what, MaxTokenBytes)
	}
	u, err := parseUnverified(raw)
	if err != nil {
		return nil, nil, s.reject(ctx, reasonMalformed, err, "%s is not a well-formed signed JWT (header.payload.signature)", what)
	}
	iss := u.claims.Issuer
	if iss == "" {
		return nil, nil, s.reject(ctx, reasonUnknownIssuer, nil, "token has no iss claim")
	}
	v := s.byIssuer[iss]
	if v == nil {
		return nil, nil, s.reject(ctx, reasonUnknownIssuer, nil, "token issuer %s is not accepted", clip(iss))
	}
	return v, &u, nil
}
