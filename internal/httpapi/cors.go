package httpapi

import (
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"

	"github.com/broker-dev/broker/internal/apperr"
	"github.com/broker-dev/broker/internal/problem"
)

// corsHeaders are the request headers the broker accepts from browsers.
var corsHeaders = []string{"Authorization", "Content-Type", "X-Request-Id", "traceparent", "tracestate"}

// cors allows browser apps from the configured origins: exact origins,
// patterns whose host starts with "*." (any subdomain, same scheme and
// port), or "*" for any. Requests without an Origin header (native apps,
// servers) pass untouched; credentials are bearer tokens, never cookies, so
// no Access-Control-Allow-Credentials is sent. A preflight that asks for a
// method or header the broker does not accept is refused with a problem that
// names it, never answered with a list that silently blocks the browser. A
// refused origin is logged once.
//
// It is ours rather than github.com/rs/cors or go-chi/cors: those answer a
// refused preflight with a bare status and do not log refused origins.
func cors(origins []string, logger *slog.Logger) func(http.Handler) http.Handler {
	any := slices.Contains(origins, "*")
	var seen sync.Map // refused origins already logged
	var seenCount int64
	var seenMu sync.Mutex
	logRefused := func(r *http.Request, origin string) {
		if _, dup := seen.Load(origin); dup {
			return
		}
		seenMu.Lock()
		defer seenMu.Unlock()
		if seenCount >= 1000 { // bounded: a flood of origins logs the first thousand
			return
		}
		if _, dup := seen.LoadOrStore(origin, true); !dup {
			seenCount++
			logger.WarnContext(r.Context(), "browser origin refused (BROKER_CORS_ORIGINS)", slog.String("origin", clip(origin)))
		}
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			origin := r.Header.Get("Origin")
			if origin == "" {
				next.ServeHTTP(w, r)
				return
			}
			h := w.Header()
			h.Add("Vary", "Origin, Access-Control-Request-Method, Access-Control-Request-Headers")
			allowed := any || slices.ContainsFunc(origins, func(p string) bool { return originMatches(p, origin) })
			preflight := r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != ""
			if !allowed {
				logRefused(r, origin)
				if preflight {
					problem.Write(w, r, apperr.New(apperr.Forbidden, "origin %q is not allowed (BROKER_CORS_ORIGINS)", clip(origin)))
					return
				}
				next.ServeHTTP(w, r)
				return
			}
			h.Set("Access-Control-Allow-Origin", origin)
			h.Set("Access-Control-Expose-Headers", "X-Request-Id, Retry-After, WWW-Authenticate, "+RecordHeader)
			if !preflight {
				next.ServeHTTP(w, r)
				return
			}
			switch m := r.Header.Get("Access-Control-Request-Method"); m {
			case http.MethodGet, http.MethodPost, http.MethodDelete:
			default:
				problem.Write(w, r, apperr.New(apperr.Forbidden, "method %q is not accepted from browsers; the broker accepts GET, POST and DELETE", clip(m)))
				return
			}
			for _, name := range strings.Split(r.Header.Get("Access-Control-Request-Headers"), ",") {
				name = strings.TrimSpace(name)
				if name != "" && !slices.ContainsFunc(corsHeaders, func(a string) bool { return strings.EqualFold(a, name) }) {
					problem.Write(w, r, apperr.New(apperr.Forbidden, "request header %q is not accepted; the broker accepts %s", clip(name), strings.Join(corsHeaders, ", ")))
					return
				}
			}
			h.Set("Access-Control-Allow-Methods", "GET, POST, DELETE")
			h.Set("Access-Control-Allow-Headers", strings.Join(corsHeaders, ", "))
			h.Set("Access-Control-Max-Age", "600")
			w.WriteHeader(http.StatusNoContent)
		})
	}
}

// originMatches reports whether origin ("scheme://host[:port]") is pattern,
// or matches a pattern whose host starts with "*.": any subdomain (one or more
// labels) of the rest, with the same scheme and port.
func originMatches(pattern, origin string) bool {
	if pattern == origin {
		return true
	}
	pScheme, pHost, ok1 := strings.Cut(pattern, "://*.")
	oScheme, oHost, ok2 := strings.Cut(origin, "://")
	if !ok1 || !ok2 || !strings.EqualFold(pScheme, oScheme) {
		return false
	}
	label, ok := strings.CutSuffix(strings.ToLower(oHost), "."+strings.ToLower(pHost))
	return ok && label != "" && !strings.ContainsAny(label, "/:@")
}
