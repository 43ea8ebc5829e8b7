package httpapi

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/go-chi/chi/v5/middleware"

	"github.com/broker-dev/broker/internal/apperr"
	"github.com/broker-dev/broker/internal/problem"
)

// healthz answers that the process serves and, when version is set (the
// admin listener only: the public one does not help fingerprinting), which
// build it is.
func healthz(version string) http.HandlerFunc {
	body := map[string]string{"status": "ok"}
	if version != "" {
		body["version"] = version
	}
	return func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, body)
	}
}

func ping(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"message": "pong"})
}

// readyz runs every check with a short deadline. Anyone may ask, so the
// answer names only what is down ("unavailable"); the cause (an address, a
// user name) goes to the log with the request id.
func readyz(checks []Check, logger *slog.Logger) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 1500*time.Millisecond)
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
// cliLogin serves GET /v1/cli, unauthenticated: where `broker login` logs
// in, so that users type only the broker's URL.
func cliLogin(c CLILogin) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if c.ClientID == "" {
			problem.Write(w, r, apperr.New(apperr.NotFound, "this broker offers no CLI login: its operator has not set BROKER_CLI_CLIENT_ID"))
			return
		}
		writeJSON(w, http.StatusOK, c)
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// indexPage is GET /: where to go from here, for someone who opened the
// broker's address in a browser.
const indexPage = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>broker</title></head>
<body>
<h1>broker</h1>
<p>An authenticated token broker for Agora real-time channels.</p>
<ul>
<li><a href="/console/">Console</a>: policies, "try it" and the issuance log (if enabled)</li>
<li><a href="/openapi.json">OpenAPI document</a> of every route</li>
<li><a href="/healthz">/healthz</a> and <a href="/readyz">/readyz</a></li>
</ul>
<h2>Quick start</h2>
<p>Clients fetch tokens as from Agora's sample token server, with the user's ID token:</p>
<pre>curl -H "Authorization: Bearer $ID_TOKEN" /rtc/{channel}/publisher/uid/{uid}/</pre>
<p>Ask <code>GET /v1/me</code> (with the same header) for your uid. The project's README has the
quick starts for app developers, admins and auditors.</p>
</body></html>
`

func index(w http.ResponseWriter, _ *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	_, _ = io.WriteString(w, indexPage)
}

// NewAdminServer returns the handler of the admin listener
// (BROKER_ADMIN_ADDR): /healthz, /readyz, /metrics and /debug/pprof/*,
// which is never on the public listener.
func NewAdminServer(d Deps) http.Handler {
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", healthz(d.Version))
	mux.HandleFunc("GET /readyz", readyz(d.Ready, d.Logger))
	if d.Metrics != nil {
		mux.Handle("GET /metrics", d.Metrics)
	}
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return requestID(problem.WithLogger(d.Logger)(mux))
}
