// Package httpapi is the broker's HTTP transport: chi routes for the
// seed-compatible token API, /v1, admin and audit endpoints, health and metrics.
// Handlers only translate between HTTP and the services; they never decide.
package httpapi

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/broker-dev/broker/internal/audit"
	"github.com/broker-dev/broker/internal/auth"
	"github.com/broker-dev/broker/internal/broker"
	"github.com/broker-dev/broker/internal/policy"
	"github.com/broker-dev/broker/internal/revoke"
)

// Issuer is the token use case as the HTTP layer calls it (*broker.Broker).
type Issuer interface {
	Issue(ctx context.Context, id auth.Identity, req broker.Request) (broker.Grant, error)
	BoundUID(ctx context.Context, id auth.Identity) (uint32, error)
	ScreenShareUID(ctx context.Context, id auth.Identity) (uint32, error)
	// Projects names the projects the users of an issuer (auth.Identity's
	// Qualifier) may use.
	Projects(qualifier string) []string
	// Resolve returns the project a request of id naming project is for.
	Resolve(id auth.Identity, project string) (*broker.Project, error)
}

// Check is one named readiness check (database, identity provider, …).
type Check struct {
	Name  string
	Check func(ctx context.Context) error
}

// Deps are everything the HTTP layer needs. Zero-valued optional fields switch
// off the routes that need them.
type Deps struct {
	Logger *slog.Logger
	// Transparency serves the issuance log as a transparency log under
	// /log/ (a zero value: not mounted).
	Transparency Transparency
	// Ready lists the checks /readyz runs.
	Ready []Check
	// Metrics serves /metrics (nil: not mounted; an admin listener takes it
	// off the public one, NewAdminServer).
	Metrics http.Handler
	// Version is the build the admin listener's /healthz reports.
	Version string
	// MaxBodyBytes caps request bodies (default 1 MiB).
	MaxBodyBytes int64
	// Registerer receives the HTTP metrics (nil: none).
	Registerer prometheus.Registerer

	// Authenticate verifies the bearer token and puts the auth.Identity in the
	// request context; every route but health, ping and metrics is behind it.
	Authenticate func(http.Handler) http.Handler
	// Broker issues tokens (nil: token routes not mounted).
	Broker Issuer
	// Policies serves /v1/policies and decides admin rights (nil: not mounted).
	Policies *policy.Engine
	// Audit serves /v1/audit (nil: not mounted; needs Policies for rights).
	Audit audit.Log
	// TokenURLs serves /v1/token-urls and the seed routes under /k/{secret}
	// (zero: no token URLs).
	TokenURLs TokenURLs
	// RateLimit limits token requests per subject.
	RateLimit RateLimit
	// TrustedProxies may name the client in forwarding headers.
	TrustedProxies TrustedProxies
	// CORSOrigins are the browser origins allowed to call the API.
	CORSOrigins []string
	// Revocations serves /v1/revocations (nil: not mounted).
	Revocations *revoke.Service
	// RevokeOnPolicyChange is BROKER_REVOKE_ON_POLICY_CHANGE: unless off,
	// GET /v1/revocations/orphans lists the live tokens policy changes
	// took access from ("": suggest).
	RevokeOnPolicyChange revoke.Mode
	// AgoraEvents receives Agora's NCS notifications (zero: not mounted).
	AgoraEvents AgoraEvents
	// CLI is what GET /v1/cli tells `broker login` (zero: no CLI login,
	// 404).
	CLI CLILogin
	// Mounts are whole sub-applications outside the bearer middleware (the
	// console, the development OIDC issuer), each under its path prefix.
	Mounts []Mount
}

// CLILogin names the identity provider and the public OAuth client the CLI
// logs in with; its ID tokens must be accepted by the broker (the client id
// among the issuer's audiences).
type CLILogin struct {
	Issuer   string   `json:"issuer"`
	ClientID string   `json:"clientId"`
	Scopes   []string `json:"scopes"`
}

// Mount is a handler served under a path prefix (e.g. "/console").
type Mount struct {
	Prefix  string
	Handler http.Handler
}

// NewServer returns the broker's HTTP handler.
func NewServer(d Deps) http.Handler {
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	if d.MaxBodyBytes <= 0 {
		d.MaxBodyBytes = 1 << 20
	}
	return routes(d)
}

// Timeouts and limits for the http.Server that carries the handler.
const (
	ReadHeaderTimeout = 5 * time.Second
	ReadTimeout       = 15 * time.Second
	WriteTimeout      = 30 * time.Second
	IdleTimeout       = 120 * time.Second
	MaxHeaderBytes    = 64 << 10
)

// deadlineWriter moves the connection's write deadline WriteTimeout past
// its writes (at most once a second), so that a long stream (an export of
// the whole log) is cut only when it stalls, not when it outlasts the
// server's write timeout.
type deadlineWriter struct {
	w    io.Writer
	rc   *http.ResponseController
	next time.Time
}

func newDeadlineWriter(w http.ResponseWriter) *deadlineWriter {
	return &deadlineWriter{w: w, rc: http.NewResponseController(w)}
}

func (d *deadlineWriter) Write(p []byte) (int, error) {
	if now := time.Now(); now.After(d.next) {
		_ = d.rc.SetWriteDeadline(now.Add(WriteTimeout))
		d.next = now.Add(time.Second)
	}
	return d.w.Write(p)
}

// NewHTTPServer wraps h in an http.Server with the broker's timeouts and
// header limit.
func NewHTTPServer(addr string, h http.Handler, logger *slog.Logger) *http.Server {
	return &http.Server{
		Addr:              addr,
		Handler:           h,
		ReadHeaderTimeout: ReadHeaderTimeout,
		ReadTimeout:       ReadTimeout,
		WriteTimeout:      WriteTimeout,
		IdleTimeout:       IdleTimeout,
		MaxHeaderBytes:    MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
}
