package console

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/broker-dev/broker/internal/apperr"
)

// Discovery bounds: one attempt at a time, each at most discoveryTimeout, and
// none sooner than discoveryRetry after a failure.
const (
	discoveryTimeout = 10 * time.Second
	discoveryRetry   = 2 * time.Second
)

// provider discovers the OpenID provider's endpoints on first use and keeps
// them once found; until then every use retries (at most every discoveryRetry).
type provider struct {
	issuer string
	client *http.Client

	mu       sync.Mutex
	endpoint *oauth2.Endpoint
	tried    time.Time
	err      error
}

func newProvider(issuer string, client *http.Client) *provider {
	return &provider{issuer: issuer, client: client}
}

// Endpoint returns the authorization and token endpoints, or an Unavailable
// error while the provider cannot be reached.
func (p *provider) Endpoint(ctx context.Context) (oauth2.Endpoint, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.endpoint != nil {
		return *p.endpoint, nil
	}
	if p.err != nil && time.Since(p.tried) < discoveryRetry {
		return oauth2.Endpoint{}, p.err
	}
	p.tried = time.Now()
	// Discovery outlives the request that triggered it only up to its timeout.
	dctx, cancel := context.WithTimeout(oidc.ClientContext(context.WithoutCancel(ctx), p.client), discoveryTimeout)
	defer cancel()
	op, err := oidc.NewProvider(dctx, p.issuer)
	if err != nil {
		p.err = apperr.Wrap(apperr.Unavailable, fmt.Errorf("discover %s: %w", p.issuer, err), "the identity provider cannot be reached")
		return oauth2.Endpoint{}, p.err
	}
	ep := op.Endpoint()
	p.endpoint, p.err = &ep, nil
	return ep, nil
}
