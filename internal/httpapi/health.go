package httpapi

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5/middleware"
)

func healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func ping(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"message": "pong"})
}

// readyz runs every check with a short deadline. Anyone may ask, so the
// answer names only what is down ("unavailable"); the cause (an address, a
// user name) goes to the log with the request id.
func readyz(checks []Check, logger *slog.Logger) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		status := map[string]string{}
		ok := true
		for _, c := range checks {
			if err := c.Check(ctx); err != nil {
				ok = false
				status[c.Name] = "unavailable"
				logger.WarnContext(r.Context(), "readiness check failed", slog.String("check", c.Name),
					slog.String("error", err.Error()), slog.String("request_id", middleware.GetReqID(r.Context())))
			} else {
				status[c.Name] = "ok"
			}
		}
		code := http.StatusOK
		if !ok {
			code = http.StatusServiceUnavailable
		}
		writeJSON(w, code, map[string]any{"ready": ok, "checks": status})
	}
}

// writeJSON writes v as a JSON response with status code.
func writeJSON(w http.ResponseWriter, code int, v any) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
