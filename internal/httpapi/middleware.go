package httpapi

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"

	"github.com/broker-dev/broker/internal/apperr"
	"github.com/broker-dev/broker/internal/problem"
	"github.com/broker-dev/broker/internal/tracing"
)

// requestID gives every request an id: the client's X-Request-Id when it is
// well-formed (1–64 of [A-Za-z0-9._-]), else a fresh random one. The id is
// echoed on every response and stored where chi's middleware.GetReqID finds it.
func requestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get("X-Request-Id")
		if !wellFormedID(id) {
			id = newID()
		}
		w.Header().Set("X-Request-Id", id)
		ctx := contextWithRequestID(r.Context(), id)
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

func wellFormedID(id string) bool {
	if len(id) == 0 || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

func newID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// statusRecorder remembers the status and size a handler wrote.
type statusRecorder struct {
	http.ResponseWriter
	status int
	bytes  int
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(p []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	n, err := s.ResponseWriter.Write(p)
	s.bytes += n
	return n, err
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// accessLog writes one structured line per request. It logs the path (with a
// token URL's secret left out), never the query string or headers, which may
// carry tokens.
func accessLog(logger *slog.Logger) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			start := time.Now()
			rec := &statusRecorder{ResponseWriter: w}
			next.ServeHTTP(rec, r)
			status := rec.status
			if status == 0 {
				status = http.StatusOK
			}
			logger.LogAttrs(r.Context(), slog.LevelInfo, "request",
				slog.String("method", r.Method),
				slog.String("path", loggedPath(r)),
				slog.Int("status", status),
				slog.Int("bytes", rec.bytes),
				slog.Duration("duration", time.Since(start)),
				slog.String("request_id", middleware.GetReqID(r.Context())),
				slog.String("trace_id", tracing.TraceID(r.Context())),
				slog.String("client_ip", clientIP(r)),
			)
		})
	}
}

// recoverer turns a panic into a 500 problem without leaking the panic value,
// which goes to the log with the stack (as the error's cause).
func recoverer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			v := recover()
			if v == nil {
				return
			}
			if v == http.ErrAbortHandler {
				panic(v)
			}
			problem.Write(w, r, apperr.Wrap(apperr.Internal, fmt.Errorf("panic: %v\n%s", v, debug.Stack()), "panic"))
		}()
		next.ServeHTTP(w, r)
	})
}

// limitBody caps every request body; reading past the cap fails, and decode
// turns that into 413.
func limitBody(n int64) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.ContentLength > n {
				problem.Write(w, r, apperr.New(apperr.TooLarge, "request body larger than %d bytes", n))
				return
			}
			r.Body = http.MaxBytesReader(w, r.Body, n)
			next.ServeHTTP(w, r)
		})
	}
}

func notFound(w http.ResponseWriter, r *http.Request) {
	problem.Write(w, r, apperr.New(apperr.NotFound, "no route for %s %s", r.Method, r.URL.Path))
}

func methodNotAllowed(w http.ResponseWriter, r *http.Request) {
	d := problem.From(r, apperr.New(apperr.Invalid, "method %s not allowed on %s", r.Method, r.URL.Path))
	d.Status = http.StatusMethodNotAllowed
	d.Title = "Method not allowed"
	d.Type = problem.TypeBase + "method_not_allowed"
	problem.WriteDetails(w, d)
}

// routeOnEscapedPath makes the router match the path as the client escaped it,
// less one trailing slash (the seed's routes take one, optionally). chi alone
// matches the decoded path or the escaped one depending on how the client
// escaped it; matching the escaped path always means every path parameter is
// escaped exactly once, and pathParam decodes it exactly once.
func routeOnEscapedPath(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if rctx := chi.RouteContext(r.Context()); rctx != nil {
			p := r.URL.EscapedPath()
			if len(p) > 1 && p[len(p)-1] == '/' {
				p = p[:len(p)-1]
			}
			rctx.RoutePath = p
		}
		next.ServeHTTP(w, r)
	})
}
