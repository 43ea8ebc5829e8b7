package httpapi

import (
	"net/http"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"

	"github.com/broker-dev/broker/internal/policy"
	"github.com/broker-dev/broker/internal/problem"
	"github.com/broker-dev/broker/internal/review"
	"github.com/broker-dev/broker/internal/revoke"
)

// routes lists the broker's entire HTTP surface.
func routes(d Deps) http.Handler {
	m := newMetrics(d.Registerer)
	r := chi.NewRouter()
	r.Use(traceRequest, splitTokenURL, requestID, clientAddress(d.TrustedProxies), problem.WithLogger(d.Logger), accessLog(d.Logger), m.observe, recoverer, routeOnEscapedPath,
		cors(d.CORSOrigins, d.Logger), limitBody(d.MaxBodyBytes))
	r.NotFound(notFound)
	r.MethodNotAllowed(methodNotAllowed)

	r.Get("/", index)
	r.Get("/healthz", healthz(""))
	r.Get("/readyz", readyz(d.Ready, d.Logger))
	r.Get("/ping", ping)
	r.Get("/openapi.json", serveOpenAPI)
	r.Get("/v1/cli", cliLogin(d.CLI))
	if len(d.AgoraEvents.Secrets) > 0 {
		// Agora signs its notifications; they carry no bearer token.
		events := agoraEvents(d.AgoraEvents, d.Registerer)
		r.Post("/v1/agora/events", events)
		r.Post("/v1/agora/events/{project}", events)
	}
	if d.Metrics != nil {
		r.Method(http.MethodGet, "/metrics", d.Metrics)
	}

	transparencyRoutes(r, d)

	for _, m := range d.Mounts {
		r.Mount(m.Prefix, m.Handler)
	}

	if d.Authenticate != nil && d.Broker != nil {
		// One rate limiter for every token route, per subject.
		var limit []func(http.Handler) http.Handler
		if d.RateLimit.Rate > 0 {
			limit = append(limit, newLimiter(d.RateLimit, d.Registerer, d.Logger).middleware)
		}
		// Seed-compatible routes (Agora's sample token server): a bearer
		// token, or the token URL the request came through.
		// Every token route also lives under /p/{project}/, for the project
		// it names; without it, a request is for the default project.
		seed := func(r chi.Router) {
			r.Use(seedAuth(d.TokenURLs, d.Authenticate))
			r.Use(limit...)
			r.Get("/rtc/{channel}/{role}/{tokentype}/{uid}", seedRTC(d.Broker))
			r.Get("/rtm/{uid}", seedRTM(d.Broker))
			r.Get("/rte/{channel}/{role}/{tokentype}/{uid}", seedRTE(d.Broker))
			r.Get("/rte/{channel}/{role}/{tokentype}/{uid}/{rtmuid}", seedRTE(d.Broker))
			r.Post("/getToken", seedGetToken(d.Broker))
			r.Get("/chat/account/{chatid}", seedChatUser(d.Broker))
			r.Get("/chat/app", seedChatApp(d.Broker))
		}
		r.Group(seed)
		r.Route(projectPrefix+"{project}", func(r chi.Router) {
			r.Group(seed)
			r.With(bearerOnly(d.Authenticate)).With(limit...).Post("/v1/tokens", v1Tokens(d.Broker))
		})
		r.Group(func(r chi.Router) {
			r.Use(bearerOnly(d.Authenticate))
			r.Get("/v1/me", me(d.Broker))
			r.With(limit...).Post("/v1/tokens", v1Tokens(d.Broker))
			if t := d.TokenURLs; t.Service != nil {
				r.Post("/v1/token-urls", createTokenURL(d.Broker, t))
				r.Get("/v1/token-urls", listTokenURLs(d.Policies, t))
				r.Delete("/v1/token-urls/{id}", revokeTokenURL(d.Policies, t))
			}
			if p := d.Policies; p != nil {
				// The admin and auditor answers, large at 20,000 rules or a
				// year of records, are compressed for clients that accept
				// it. None carries a secret (no token, no token URL), so no
				// secret can leak through their compressed size (BREACH).
				r := r.With(middleware.Compress(5, "application/json", "text/csv", "application/yaml", "application/jsonl", ndjson))
				// Changing rules takes write on api:policies (channel rules) or
				// api:rights (admin rights) in the rule's project; routes check
				// that the caller holds the right somewhere, the engine checks
				// each change against the rules it touches, and readers see the
				// projects their rights cover (scope).
				read, write := require(p, policy.ObjectPolicies, policy.Read), require(p, policy.ObjectPolicies, policy.Write, policy.ObjectRights)
				r.With(read).Get("/v1/policies", listPolicies(p))
				r.With(write).Post("/v1/policies", addPolicy(p))
				r.With(write).Delete("/v1/policies/{id}", removePolicy(p))
				r.With(write).Post("/v1/policies/remove", removePolicies(p))
				r.With(read).Post("/v1/policies/explain", explainPolicy(p))
				r.With(read).Get("/v1/policies/who", whoPolicy(p))
				if d.Audit != nil {
					r.With(write).Post("/v1/policies/plan", planPolicy(p, d.Audit, d.TokenURLs.Qualifier, d.Logger))
				}
				r.With(write).Post("/v1/policies/apply", applyPolicy(p))
				r.With(read).Get("/v1/policies/export", exportPolicies(p))
				r.With(write).Post("/v1/policies/import", importPolicies(p))
				r.With(read).Get("/v1/policies/history", policyHistory(p))
				r.With(read).Get("/v1/policies/history/{id}", policyChange(p))
				if rs := d.Revocations; rs != nil {
					r.With(require(p, policy.ObjectRevocations, policy.Write)).Post("/v1/revocations", createRevocation(p, rs))
					r.With(require(p, policy.ObjectRevocations, policy.Read)).Get("/v1/revocations", listRevocations(p, rs))
					r.With(require(p, policy.ObjectRevocations, policy.Write)).Delete("/v1/revocations/{id}", liftRevocation(p, rs))
					if d.RevokeOnPolicyChange != revoke.ModeOff {
						r.With(require(p, policy.ObjectRevocations, policy.Read)).Get("/v1/revocations/orphans", listOrphans(p, rs, d.RevokeOnPolicyChange))
					}
				}
				if l := d.Audit; l != nil {
					// Every auditor route needs read on api:audit, and shows the
					// records of the projects it covers.
					r.Group(func(r chi.Router) {
						r.Use(require(p, policy.ObjectAudit, policy.Read))
						r.Get("/v1/audit", searchAudit(p, l))
						r.Get("/v1/audit/export", exportAudit(p, l))
						r.Post("/v1/audit/lookup", lookupAudit(p, l))
						r.Get("/v1/audit/verify", verifyAudit(p, l, d.Transparency))
						r.Get("/v1/audit/records/{seq}/proof", proveRecord(p, l))
						var joins review.Store // who did: only when Agora's events are received
						if len(d.AgoraEvents.Secrets) > 0 {
							joins = d.AgoraEvents.Store
						}
						r.Get("/v1/audit/access", accessReview(p, l, joins, d.TokenURLs.Qualifier))
						if len(d.AgoraEvents.Secrets) > 0 {
							r.Get("/v1/audit/unexplained", unexplainedJoins(p, d.AgoraEvents))
						}
					})
				}
			}
		})
	}
	return r
}
