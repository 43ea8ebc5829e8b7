package httpapi

import (
	"net/http"

	"github.com/go-chi/chi/v5"
)

// routes lists the broker's entire HTTP surface.
func routes(d Deps) http.Handler {
	r := chi.NewRouter()
	r.Use(requestID, accessLog(d.Logger), recoverer(d.Logger), limitBody(d.MaxBodyBytes))
	r.NotFound(notFound)
	r.MethodNotAllowed(methodNotAllowed)

	r.Get("/healthz", healthz)
	r.Get("/readyz", readyz(d.Ready))
	r.Get("/ping", ping)
	if d.Metrics != nil {
		r.Method(http.MethodGet, "/metrics", d.Metrics)
	}
	return r
}
