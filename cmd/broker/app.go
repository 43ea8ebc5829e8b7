package main

import (
	"context"
	"crypto/hkdf"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/broker-dev/broker/internal/agora"
	"github.com/broker-dev/broker/internal/audit"
	"github.com/broker-dev/broker/internal/auth"
	"github.com/broker-dev/broker/internal/broker"
	"github.com/broker-dev/broker/internal/console"
	"github.com/broker-dev/broker/internal/httpapi"
	"github.com/broker-dev/broker/internal/identity"
	"github.com/broker-dev/broker/internal/policy"
	"github.com/broker-dev/broker/internal/review"
	"github.com/broker-dev/broker/internal/revoke"
	"github.com/broker-dev/broker/internal/sessions"
	"github.com/broker-dev/broker/internal/tlog"
	"github.com/broker-dev/broker/internal/tokenurl"
	"github.com/broker-dev/broker/internal/tracing"
)

// backends are the stores behind the broker: Postgres for serve, memory (or
// Postgres) for dev.
type backends struct {
	policy    policy.Store
	log       audit.Log
	uids      identity.Store
	tokenURLs tokenurl.Store
	sessions  sessions.Store
	events    review.Store    // Agora's channel events
	revs      revoke.Store    // revocations
	ready     []httpapi.Check // the stores' own readiness checks
}

// app is the wired broker: every service plus the HTTP handler.
type app struct {
	handler  http.Handler // the public listener's
	admin    http.Handler // the admin listener's (BROKER_ADMIN_ADDR), nil when there is none
	verifier *auth.Issuers
	policy   *policy.Engine
	log      audit.Log
	broker   *broker.Broker
	// stopCheckpoints stops the checkpointer (nil without a signing key).
	stopCheckpoints func()
	// stopMaintenance stops the issuance log's maintenance and the
	// revocations' sweep; stopAutoRevoke the revocations of auto mode (nil
	// when not started).
	stopMaintenance func()
	stopAutoRevoke  func()
}

// newApp wires cfg and the backends into a running broker. The caller must
// call close when done.
func newApp(ctx context.Context, cfg *config, be backends, logger *slog.Logger, reg *prometheus.Registry, mounts []httpapi.Mount) (*app, error) {
	a := &app{log: be.log}
	ok := false
	defer func() {
		if !ok {
			a.close()
		}
	}()
	projects, err := brokerProjects(cfg.Projects)
	if err != nil {
		return nil, err
	}
	issuers := issuerConfigs(cfg)
	client := &http.Client{Timeout: 10 * time.Second, Transport: tracing.Transport(nil)}
	for i := range issuers {
		issuers[i].Leeway, issuers[i].Logger, issuers[i].Registerer = cfg.OIDCLeeway, logger, reg
		issuers[i].CacheBytes, issuers[i].HTTPClient = cfg.TokenCacheBytes, client
	}
	if a.verifier, err = auth.NewIssuers(ctx, issuers); err != nil {
		return nil, err
	}
	a.policy, err = policy.Open(ctx, be.policy, logger)
	if err != nil {
		return nil, fmt.Errorf("policies: %w", err)
	}
	a.policy.ServeProjects(projectNames(cfg.Projects))
	for _, result := range []string{"ok", "history", "error"} {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name:        "broker_policy_reloads_total",
			Help:        `Policy reloads: result="ok" loaded every rule (at start, after a reconnect or a long gap), "history" applied the changes since the replica's version, "error" failed.`,
			ConstLabels: prometheus.Labels{"result": result},
		}, func() float64 {
			full, history, failed := a.policy.Reloads()
			return float64(map[string]uint64{"ok": full, "history": history, "error": failed}[result])
		}))
	}
	if len(cfg.BootstrapAdmins) > 0 {
		if err := a.policy.Bootstrap(ctx, cfg.BootstrapAdmins); err != nil {
			return nil, fmt.Errorf("BROKER_BOOTSTRAP_ADMINS: %w", err)
		}
	}
	a.broker, err = broker.New(broker.Config{Projects: projects}, broker.Deps{
		Policy: a.policy, Log: be.log, UIDs: be.uids, Registerer: reg,
	})
	if err != nil {
		return nil, err
	}
	// Token requests refused for the rate limit, counted (not recorded) for
	// the console's overview.
	refused := new(atomic.Int64)
	revocations, err := newRevocations(cfg, a.policy, be.log, be.revs, a.verifier.QualifierFor)
	if err != nil {
		return nil, err
	}
	secrets := ncsSecrets(cfg)
	if cfg.ConsoleClientID != "" {
		var joins review.Store // Agora's events: only when they are received
		if len(secrets) > 0 {
			joins = be.events
		}
		c, err := newConsole(cfg, a, be.log, be.sessions, logger, refused.Load, joins, revocations)
		if err != nil {
			return nil, err
		}
		mounts = append(mounts, httpapi.Mount{Prefix: console.DefaultBasePath, Handler: c.Handler()})
	}
	transparency, err := a.startCheckpoints(cfg, logger, reg)
	if err != nil {
		return nil, err
	}
	a.startMaintenance(be.log, cfg.AuditRetention, revocations, logger)
	if cfg.RevokeOnPolicyChange == revoke.ModeAuto {
		a.startAutoRevoke(revocations, projectNames(cfg.Projects), logger)
	}
	ready := append([]httpapi.Check{}, be.ready...)
	ready = append(ready, httpapi.Check{Name: "identity_provider", Check: func(context.Context) error { return a.verifier.Ready() }})
	deps := httpapi.Deps{
		Logger:               logger,
		Ready:                ready,
		Metrics:              promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}),
		Version:              versionString(),
		Registerer:           reg,
		Authenticate:         a.verifier.Middleware,
		Broker:               a.broker,
		Policies:             a.policy,
		Audit:                be.log,
		RateLimit:            httpapi.RateLimit{Rate: cfg.RateLimit, Burst: cfg.RateBurst, Refused: refused},
		CORSOrigins:          cfg.CORSOrigins,
		TrustedProxies:       cfg.TrustedProxies,
		Mounts:               mounts,
		Transparency:         transparency,
		CLI:                  cliLogin(cfg),
		Revocations:          revocations,
		RevokeOnPolicyChange: cfg.RevokeOnPolicyChange,
		AgoraEvents: httpapi.AgoraEvents{Secrets: secrets, Store: be.events,
			Log: be.log, MaxTTL: cfg.MaxTTL},
		TokenURLs: httpapi.TokenURLs{
			Service:    tokenurl.New(be.tokenURLs, cfg.AuditKey, nil),
			PublicURL:  cfg.PublicURL,
			DefaultTTL: min(12*time.Hour, cfg.TokenURLMaxTTL),
			MaxTTL:     cfg.TokenURLMaxTTL,
			Qualifier:  a.verifier.QualifierFor,
		},
	}
	if cfg.AdminAddr != "" {
		a.admin = httpapi.NewAdminServer(deps)
		deps.Metrics = nil // /metrics lives on the admin listener only
	}
	a.handler = httpapi.NewServer(deps)
	ok = true
	return a, nil
}

// startTracing installs the tracer provider the OTEL_* variables ask for
// (tracing.Setup) and returns what flushes and stops it.
func startTracing(ctx context.Context, getenv func(string) string, logger *slog.Logger) (stop func(), err error) {
	on, shutdown, err := tracing.Setup(ctx, getenv, versionString(), logger)
	if err != nil {
		return nil, err
	}
	logger.Info("tracing", slog.Bool("enabled", on))
	return func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := shutdown(sctx); err != nil {
			logger.Warn("tracing: spans not flushed", slog.String("error", err.Error()))
		}
	}, nil
}

// newRevocations is the revocation service: its bans go through Agora's
// REST API with the project's account (agoraCustomerID, or for the project
// named default BROKER_AGORA_CUSTOMER_ID), a client per project with its own
// secret (the clients of one account share its rate limit, which is
// Agora's per account); a project without one only blocks new tokens, and
// says so.
func newRevocations(cfg *config, engine *policy.Engine, log audit.Log, store revoke.Store, qualify func(string) (string, bool)) (*revoke.Service, error) {
	type target struct {
		appID string
		bans  revoke.Banner // nil: no account
	}
	projects := map[string]target{}
	for _, p := range cfg.Projects {
		t := target{appID: p.AppID}
		if id := p.Agora.CustomerID; id != "" {
			c, err := agora.NewClient(agora.Config{BaseURL: cfg.AgoraAPIURL, CustomerID: id, CustomerSecret: p.Agora.CustomerSecret})
			if err != nil {
				return nil, fmt.Errorf("project %q: Agora customer: %w", p.Name, err)
			}
			t.bans = c
		}
		projects[p.Name] = t
	}
	return &revoke.Service{Store: store, Policies: engine, Log: log, MaxTTL: cfg.MaxTTL, Qualify: qualify, Now: time.Now,
		Agora: func(project string) (string, revoke.Banner) {
			t := projects[project]
			return t.appID, t.bans
		}}, nil
}

// ncsSecrets are the NCS secrets of the projects that receive Agora's
// notifications.
func ncsSecrets(cfg *config) map[string][]byte {
	out := map[string][]byte{}
	for _, p := range cfg.Projects {
		if p.Agora.NCSSecret != "" {
			out[p.Name] = []byte(p.Agora.NCSSecret)
		}
	}
	return out
}

// cliLogin is what GET /v1/cli tells `broker login`: the default issuer
// and BROKER_CLI_CLIENT_ID, with the console's scopes and offline_access (a
// refresh token, so that a login lasts a working day); zero when unset.
func cliLogin(cfg *config) httpapi.CLILogin {
	if cfg.CLIClientID == "" {
		return httpapi.CLILogin{}
	}
	return httpapi.CLILogin{Issuer: defaultIssuer(cfg), ClientID: cfg.CLIClientID,
		Scopes: append(slices.Clone(console.DefaultScopes), "offline_access")}
}

// newConsole builds the web console over the sessions store. Its cookie key
// is derived from the current audit key (never a previous one), so every
// replica opens every replica's cookies, and rotating the audit key ends
// every session.
func newConsole(cfg *config, a *app, log audit.Log, store sessions.Store, logger *slog.Logger, rateLimited func() int64, joins review.Store, revs *revoke.Service) (*console.Console, error) {
	key, err := hkdf.Key(sha256.New, cfg.AuditKey, nil, "broker/console/session/v1", 32)
	if err != nil {
		return nil, fmt.Errorf("console session key: %w", err)
	}
	return console.New(console.Config{
		Issuer: defaultIssuer(cfg), ClientID: cfg.ConsoleClientID, ClientSecret: cfg.ConsoleSecret,
		RedirectURL: cfg.ConsoleRedirectURL, SessionKey: key, SessionLifetime: cfg.ConsoleSessionTTL,
		Projects: projectNames(cfg.Projects), LogVerifierKey: cfg.LogVerifierKey,
	}, console.Deps{Verifier: a.verifier, Policies: a.policy, Audit: log, Sessions: store, Logger: logger, RateLimited: rateLimited, Joins: joins,
		Revocations: revs, Orphans: cfg.RevokeOnPolicyChange != revoke.ModeOff, Qualify: a.verifier.QualifierFor})
}

// close stops the services in dependency order: no new decisions, then the
// log flushes what it has acknowledged, then the verifier stops refreshing.
func (a *app) close() error {
	var errs []error
	if a.stopCheckpoints != nil {
		a.stopCheckpoints()
	}
	if a.stopAutoRevoke != nil {
		a.stopAutoRevoke()
	}
	if a.stopMaintenance != nil {
		a.stopMaintenance()
	}
	if a.policy != nil {
		a.policy.Close()
	}
	if a.log != nil {
		if err := a.log.Close(); err != nil {
			errs = append(errs, fmt.Errorf("issuance log: %w", err))
		}
	}
	if a.verifier != nil {
		a.verifier.Close()
	}
	return errors.Join(errs...)
}

// maintenanceInterval is how often the issuance log's storage is kept:
// months made ahead, months past retention redacted.
const maintenanceInterval = time.Hour

// sweepInterval is how often revocations that reached their end are lifted:
// a block lasts at most this much longer than the tokens it ended.
const sweepInterval = time.Minute

// autoRevokeInterval is how often a replica looks for a policy change in
// auto mode: the longest a token a change took access from stays usable
// (and the ban Agora applies).
const autoRevokeInterval = 2 * time.Second

// startMaintenance keeps log's storage now and every maintenanceInterval,
// and lifts the revocations of revs that reached their end every
// sweepInterval, until close, logging what it did and what failed.
func (a *app) startMaintenance(log audit.Log, retention time.Duration, revs *revoke.Service, logger *slog.Logger) {
	ctx, cancel := context.WithCancel(context.Background())
	maintain := func() {
		m, err := log.Maintain(ctx, retention)
		switch {
		case err != nil && ctx.Err() == nil:
			logger.Warn("issuance log: maintenance failed; it is tried again within the hour", slog.String("error", err.Error()))
		case m.Partitions > 0 || m.Redacted > 0:
			logger.Info("issuance log: maintained", slog.Int("months_made", m.Partitions),
				slog.Int64("records_redacted", m.Redacted), slog.Time("redacted_before", m.Before))
		}
	}
	sweep := func() {
		n, err := revs.LiftExpired(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			logger.Warn("revocations: lifting those that reached their end failed; tried again within a minute", slog.String("error", err.Error()))
		case n > 0:
			logger.Info("revocations: lifted at their end", slog.Int("count", n))
		}
	}
	// Each on its own: a long maintenance (a month redacted) does not hold
	// up the revocations' minute.
	every := func(d time.Duration, first bool, do func()) {
		tick := time.NewTicker(d)
		defer tick.Stop()
		if first {
			do()
		}
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				do()
			}
		}
	}
	var wg sync.WaitGroup
	wg.Go(func() { every(maintenanceInterval, true, maintain) })
	wg.Go(func() { every(sweepInterval, false, sweep) })
	a.stopMaintenance = func() {
		cancel()
		wg.Wait()
	}
}

// startAutoRevoke revokes, whenever the policy changed
// (BROKER_REVOKE_ON_POLICY_CHANGE=auto), the live tokens the change took
// access from: checked every autoRevokeInterval on every replica, a change
// that failed tried again at the next.
func (a *app) startAutoRevoke(revs *revoke.Service, projects []string, logger *slog.Logger) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(autoRevokeInterval)
		defer tick.Stop()
		var seen int64 = -1
		for {
			if v := a.policy.Version(); v != seen {
				n, err := revs.RevokeOrphans(ctx, projects)
				switch {
				case err != nil && ctx.Err() == nil:
					logger.Warn("revocations: revoking the tokens a policy change took access from failed; tried again", slog.Int64("policy_version", v), slog.String("error", err.Error()))
				case err == nil:
					seen = v
					if n > 0 {
						logger.Info("revocations: revoked the tokens a policy change took access from", slog.Int64("policy_version", v), slog.Int("count", n))
					}
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	a.stopAutoRevoke = func() {
		cancel()
		<-done
	}
}

// startCheckpoints starts signing the issuance log's checkpoints when a
// signing key is configured, and returns what the HTTP layer serves of the
// transparency log.
func (a *app) startCheckpoints(cfg *config, logger *slog.Logger, reg prometheus.Registerer) (httpapi.Transparency, error) {
	t := httpapi.Transparency{Log: a.log, PublicEntries: cfg.LogPublicEntries}
	if cfg.LogSigningKey == "" {
		logger.Warn("issuance log: BROKER_LOG_SIGNING_KEY is not set, so no checkpoint is signed: the log's tree is served, but nothing outside the database vouches for it (broker audit keygen makes a key)")
		return t, nil
	}
	signer, err := tlog.NewSigner(cfg.LogSigningKey)
	if err != nil {
		return t, err
	}
	verifier, err := tlog.NewVerifier(cfg.LogVerifierKey)
	if err != nil {
		return t, err
	}
	opts := audit.CheckpointOptions{Signer: signer, Verifier: verifier, Interval: cfg.LogCheckpointInterval,
		StateFile: cfg.LogStateFile, Logger: logger, Registerer: reg}
	client := &http.Client{Timeout: 10 * time.Second, Transport: tracing.Transport(nil)}
	for _, w := range cfg.LogWitnesses {
		v, err := tlog.NewCosignatureVerifier(w.Key)
		if err != nil {
			return t, err
		}
		opts.Witnesses = append(opts.Witnesses, tlog.Witness{URL: w.URL, Verifier: v, Client: client})
	}
	cp, err := audit.NewCheckpointer(a.log, opts)
	if err != nil {
		return t, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		cp.Run(ctx)
	}()
	a.stopCheckpoints = func() {
		cancel()
		<-done
	}
	t.Origin, t.VerifierKey = cp.Origin(), cfg.LogVerifierKey
	return t, nil
}

// issuerConfigs are the identity providers: the configuration file's issuers
// list, or else the one that the BROKER_OIDC_* settings describe, the default.
func issuerConfigs(cfg *config) []auth.Config {
	if len(cfg.Issuers) == 0 {
		return []auth.Config{{Issuer: cfg.OIDCIssuer, Audiences: cfg.OIDCAudience, Algorithms: cfg.OIDCAlgorithms,
			AccountClaim: cfg.AccountClaim, GroupsClaim: cfg.GroupsClaim, UIDClaim: cfg.UIDClaim}}
	}
	out := make([]auth.Config, len(cfg.Issuers))
	for i, is := range cfg.Issuers {
		out[i] = auth.Config{Name: is.Name, Issuer: is.Issuer, Audiences: is.Audiences, Algorithms: is.Algorithms,
			AccountClaim: is.AccountClaim, GroupsClaim: is.GroupsClaim, UIDClaim: is.UIDClaim,
			RequiredClaims: is.RequiredClaims, TokenType: is.TokenType, RequiredScopes: is.RequiredScopes}
	}
	return out
}

// qualifierOf names issuers as rule subjects do, from the configuration
// alone (auth.Issuers.QualifierFor without its network): for the commands
// that work on the database.
func qualifierOf(cfg *config) func(string) (string, bool) {
	names := map[string]string{}
	for _, is := range issuerConfigs(cfg) {
		names[is.Issuer] = is.Name
	}
	return func(issuer string) (string, bool) {
		name, ok := names[issuer]
		return name, ok
	}
}

// defaultIssuer is the URL of the default issuer (the one without a name),
// through which the console signs users in; loadConfig makes sure the
// issuers list has one when the console is on.
func defaultIssuer(cfg *config) string {
	for _, is := range cfg.Issuers {
		if is.Name == "" {
			return is.Issuer
		}
	}
	return cfg.OIDCIssuer
}
