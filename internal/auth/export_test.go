package auth

// Test-only helpers: the middleware's tests answer with the identity it put
// in the request (the broker's own /v1/me lives in internal/httpapi).

import (
	"context"
	"encoding/json"
	"net/http"

	"github.com/broker-dev/broker/internal/apperr"
)

// Me is the identity as MeHandler echoes it.
type Me struct {
	Issuer  string `json:"issuer"`
	Subject string `json:"subject"`
	Account string `json:"account"`
	// AccountError explains why account-based tokens are unavailable, if they are.
	AccountError string   `json:"accountError,omitempty"`
	Groups       []string `json:"groups"`
	Email        string   `json:"email"`
}

// NewMe describes id.
func NewMe(id Identity) Me {
	groups := id.Groups
	if groups == nil {
		groups = []string{}
	}
	return Me{
		Issuer:       id.Issuer,
		Subject:      id.Subject,
		Account:      id.Account,
		AccountError: id.AccountError,
		Groups:       groups,
		Email:        id.Email,
	}
}

// MeHandler echoes the identity Middleware put in the request.
func MeHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, ok := FromContext(r.Context())
		if !ok {
			writeError(w, r, "", apperr.New(apperr.Unauthorized, "no authenticated caller; send Authorization: Bearer <ID token>"))
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_ = json.NewEncoder(w).Encode(NewMe(id))
	})
}

func (c *tokenCache) len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.entries)
}

func (c *tokenCache) size() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.bytes
}

// NewVerifier (tests only) validates cfg and returns a Verifier for its one issuer at
// once; discovery and the first key fetch run in the background, retried with
// exponential backoff, until ctx is done or Close is called. Until they
// succeed, Ready and Verify report the provider as unavailable. A broker with
// several issuers uses NewIssuers, which builds one Verifier per issuer.
func NewVerifier(ctx context.Context, cfg Config) (*Verifier, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	vecs, err := newMetricVecs(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	return launchVerifier(ctx, cfg, vecs.forIssuer(cfg.label()), nil), nil
}
