package httpapi

import (
	"net/http"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/broker-dev/broker/internal/apperr"
	"github.com/broker-dev/broker/internal/policy"
	"github.com/broker-dev/broker/internal/problem"
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
	if d.Metrics != nil {
		r.Method(http.MethodGet, "/metrics", d.Metrics)
	}

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
		r.Group(func(r chi.Router) {
			r.Use(seedAuth(d.TokenURLs, d.Authenticate))
			r.Use(limit...)
			r.Get("/rtc/{channel}/{role}/{tokentype}/{uid}", seedRTC(d.Broker))
			r.Get("/rtm/{uid}", seedRTM(d.Broker))
			r.Get("/rte/{channel}/{role}/{tokentype}/{uid}", seedRTE(d.Broker))
			r.Get("/rte/{channel}/{role}/{tokentype}/{uid}/{rtmuid}", seedRTE(d.Broker))
			r.Post("/getToken", seedGetToken(d.Broker))
			r.Get("/chat/account/{chatid}", seedChatUser(d.Broker))
			r.Get("/chat/app", seedChatApp(d.Broker))
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
				// Changing rules takes write on api:policies (channel rules) or
				// api:rights (admin rights); the engine checks each change
				// against the rules it touches.
				read, write := require(p, policy.ObjectPolicies, policy.Read), require(p, policy.ObjectPolicies, policy.Write, policy.ObjectRights)
				r.With(read).Get("/v1/policies", listPolicies(p))
				r.With(write).Post("/v1/policies", addPolicy(p))
				r.With(write).Delete("/v1/policies/{id}", removePolicy(p))
				r.With(write).Post("/v1/policies/remove", removePolicies(p))
				r.With(read).Post("/v1/policies/explain", explainPolicy(p))
				r.With(read).Get("/v1/policies/export", exportPolicies(p))
				r.With(write).Post("/v1/policies/import", importPolicies(p))
				r.With(read).Get("/v1/policies/history", policyHistory(p))
				if l := d.Audit; l != nil {
					// Every auditor route needs read on api:audit.
					r.Group(func(r chi.Router) {
						r.Use(require(p, policy.ObjectAudit, policy.Read))
						r.Get("/v1/audit", searchAudit(l))
						r.Get("/v1/audit/export", exportAudit(l))
						r.Post("/v1/audit/lookup", lookupAudit(l))
						r.Get("/v1/audit/verify", verifyAudit(l))
					})
				}
			}
		})
	}
	return r
}

// require lets a request through only if the caller holds action on object
// or on one of the other objects.
func require(p *policy.Engine, object string, action policy.Role, or ...string) func(http.Handler) http.Handler {
	objects := append([]string{object}, or...)
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c, _, ok := caller(r)
			for _, o := range objects {
				if ok && p.Can(c, o, action) {
					next.ServeHTTP(w, r)
					return
				}
			}
			problem.Write(w, r, apperr.New(apperr.Forbidden, "you need the %s right on %s", action, strings.Join(objects, " or ")))
		})
	}
}
