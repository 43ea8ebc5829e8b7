package client

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/broker-dev/broker/internal/problem"
)

// Default is the HTTP client of the CLI: the environment's proxy, and a
// bound on the wait for an answer's headers (a plan over a large log sends
// its headers at once and then streams).
var Default = &http.Client{Transport: &http.Transport{
	Proxy:                 http.ProxyFromEnvironment,
	TLSHandshakeTimeout:   10 * time.Second,
	ResponseHeaderTimeout: 2 * time.Minute,
	IdleConnTimeout:       30 * time.Second,
}}

// maxDocument bounds a JSON answer the client decodes.
const maxDocument = 64 << 20

// refreshBefore is how long before its expiry an ID token is refreshed.
const refreshBefore = 30 * time.Second

// Problem is an error answer of the broker (an RFC 9457 problem document).
type Problem struct {
	problem.Details
}

func (p *Problem) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "the broker answered %d %s", p.Status, p.Title)
	if p.Detail != "" {
		b.WriteString(": " + p.Detail)
	}
	if p.Field != "" {
		fmt.Fprintf(&b, " (field %s)", p.Field)
	}
	if p.RequestID != "" {
		fmt.Fprintf(&b, " [request %s]", p.RequestID)
	}
	return b.String()
}

// Client sends requests to one broker as the person logged in to it.
type Client struct {
	store Store
	http  *http.Client
	s     Session
}

// New returns a client of server with the session store keeps for it (nil
// httpc: Default).
func New(server string, store Store, httpc *http.Client) (*Client, error) {
	if httpc == nil {
		httpc = Default
	}
	s, ok, err := store.Load(server)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("not logged in to %s: run broker login --server %s", server, server)
	}
	return &Client{store: store, http: httpc, s: s}, nil
}

// Session is the client's session (after any refresh).
func (c *Client) Session() Session { return c.s }

// token returns a current ID token, refreshing (and saving) the session
// when the token is about to expire. The refresh holds the store's lock and
// starts from the session as stored then: another command may have
// refreshed it (and been given a new refresh token) meanwhile.
func (c *Client) token(ctx context.Context) (string, error) {
	if time.Until(c.s.Expiry) > refreshBefore {
		return c.s.IDToken, nil
	}
	again := fmt.Sprintf("run broker login --server %s", c.s.Server)
	unlock, err := c.store.lock()
	if err != nil {
		return "", err
	}
	defer unlock()
	stored, ok, err := c.store.Load(c.s.Server)
	if err != nil {
		return "", err
	}
	if !ok {
		return "", fmt.Errorf("not logged in to %s (another command logged out): %s", c.s.Server, again)
	}
	c.s = stored
	if time.Until(c.s.Expiry) > refreshBefore {
		return c.s.IDToken, nil
	}
	if c.s.RefreshToken == "" {
		return "", fmt.Errorf("your login to %s has expired: %s", c.s.Server, again)
	}
	ctx = oidc.ClientContext(ctx, c.http)
	provider, err := oidc.NewProvider(ctx, c.s.Issuer)
	if err != nil {
		return "", fmt.Errorf("refresh the login to %s: the identity provider %s: %w", c.s.Server, c.s.Issuer, err)
	}
	cfg := oauth2.Config{ClientID: c.s.ClientID, Endpoint: provider.Endpoint()}
	tok, err := cfg.TokenSource(ctx, &oauth2.Token{RefreshToken: c.s.RefreshToken}).Token()
	if err != nil {
		var re *oauth2.RetrieveError
		if errors.As(err, &re) {
			// The provider refused the refresh token (revoked, expired):
			// only a new login helps. Its answer may echo the token, so
			// only its error code is shown.
			return "", fmt.Errorf("your login to %s can no longer be refreshed (%s): %s", c.s.Server, re.ErrorCode, again)
		}
		return "", fmt.Errorf("refresh the login to %s: %w", c.s.Server, err)
	}
	s := c.s
	if err := s.take(ctx, provider, tok, ""); err != nil {
		return "", fmt.Errorf("refresh the login to %s: %w", c.s.Server, err)
	}
	if err := c.store.saveLocked(s); err != nil {
		return "", err
	}
	c.s = s
	return s.IDToken, nil
}

// Request is one API call.
type Request struct {
	Method      string
	Path        string // e.g. /v1/policies
	Query       url.Values
	ContentType string // of Body
	Body        []byte
	Accept      string // default application/json
}

// Do sends req with the session's bearer token and returns the answer when
// its status is 2xx; else the broker's problem as a *Problem. The caller
// closes the body.
func (c *Client) Do(ctx context.Context, req Request) (*http.Response, error) {
	tok, err := c.token(ctx)
	if err != nil {
		return nil, err
	}
	u := c.s.Server + req.Path
	if len(req.Query) > 0 {
		u += "?" + req.Query.Encode()
	}
	hr, err := http.NewRequestWithContext(ctx, cmp.Or(req.Method, http.MethodGet), u, bytes.NewReader(req.Body))
	if err != nil {
		return nil, err
	}
	hr.Header.Set("Authorization", "Bearer "+tok)
	hr.Header.Set("Accept", cmp.Or(req.Accept, "application/json")+", "+problem.ContentType)
	if req.ContentType != "" {
		hr.Header.Set("Content-Type", req.ContentType)
	}
	resp, err := c.http.Do(hr)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 == 2 {
		return resp, nil
	}
	defer resp.Body.Close()
	err = readProblem(resp)
	if p, ok := err.(*Problem); ok && p.Status == http.StatusUnauthorized {
		return nil, fmt.Errorf("%w (log in again: broker login --server %s)", err, c.s.Server)
	}
	return nil, err
}

// JSON sends req (with in as its JSON body unless nil) and decodes the
// answer into out (unless nil).
func (c *Client) JSON(ctx context.Context, req Request, in, out any) error {
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		req.Body, req.ContentType = b, "application/json"
	}
	resp, err := c.Do(ctx, req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		return nil
	}
	return decode(resp, out)
}

// getJSON is an unauthenticated GET of a JSON document.
func getJSON(ctx context.Context, httpc *http.Client, u string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json, "+problem.ContentType)
	resp, err := httpc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return readProblem(resp)
	}
	return decode(resp, out)
}

// decode reads a JSON answer of at most maxDocument bytes.
func decode(resp *http.Response, out any) error {
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != "application/json" {
		return fmt.Errorf("%s answered %q, not JSON: is this a broker?", resp.Request.URL.Redacted(), mt)
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxDocument)).Decode(out); err != nil {
		return fmt.Errorf("%s: the answer is not the JSON expected: %w", resp.Request.URL.Redacted(), err)
	}
	return nil
}

// readProblem turns an error answer into a *Problem, or for an answer that
// is not a problem document (a proxy's page), an error naming its status.
func readProblem(resp *http.Response) error {
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt == problem.ContentType {
		var p Problem
		if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&p.Details); err == nil {
			if p.Status == 0 {
				p.Status = resp.StatusCode
			}
			return &p
		}
	}
	return fmt.Errorf("%s answered %s", resp.Request.URL.Redacted(), resp.Status)
}
