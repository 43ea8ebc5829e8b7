package httpapi

import (
	"net/http"

	"github.com/go-chi/chi/v5"
)

// routes lists the broker's entire HTTP surface.
func routes(d Deps) http.Handler {
	m := newMetrics(d.Registerer)
	r := chi.NewRouter()
	r.Use(requestID, accessLog(d.Logger), m.observe, recoverer(d.Logger), routeOnEscapedPath,
		cors(d.CORSOrigins), limitBody(d.MaxBodyBytes))
	r.NotFound(notFound)
	r.MethodNotAllowed(methodNotAllowed)

	r.Get("/healthz", healthz)
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
		r.Group(func(r chi.Router) {
			r.Use(d.Authenticate)
			r.Get("/v1/me", me(d.Broker))
			r.Group(func(r chi.Router) {
				if d.RateLimit.Rate > 0 {
					r.Use(newLimiter(d.RateLimit, d.Registerer).middleware)
				}
				// Seed-compatible routes (Agora's sample token server).
				r.Get("/rtc/{channel}/{role}/{tokentype}/{uid}", seedRTC(d.Broker))
				r.Get("/rtm/{uid}", seedRTM(d.Broker))
				r.Get("/rte/{channel}/{role}/{tokentype}/{uid}", seedRTE(d.Broker))
				r.Post("/getToken", seedGetToken(d.Broker))
				r.Post("/v1/tokens", v1Tokens(d.Broker))
			})
			if d.Policies != nil {
				policyRoutes(r, d.Policies)
				if d.Audit != nil {
					auditRoutes(r, d.Policies, d.Audit)
				}
			}
		})
	}
	return r
}
