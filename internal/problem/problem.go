// Package problem is the one boundary between errors and HTTP: it maps an
// apperr.Kind to a status and a stable problem type, writes RFC 9457 problem
// details (application/problem+json), and logs the cause of every server-side
// failure once, with the request id. It never writes an error's cause.
package problem

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"

	"github.com/go-chi/chi/v5/middleware"

	"github.com/broker-dev/broker/internal/apperr"
)

// TypeBase prefixes every problem type URI.
const TypeBase = "https://broker.dev/problems/"

// ContentType is the media type of problem details.
const ContentType = "application/problem+json"

// Details is an RFC 9457 problem details object, with the broker's extensions.
type Details struct {
	Type      string `json:"type"`
	Title     string `json:"title"`
	Status    int    `json:"status"`
	Detail    string `json:"detail,omitempty"`
	Instance  string `json:"instance,omitempty"`
	Field     string `json:"field,omitempty"`
	RequestID string `json:"requestId,omitempty"`
}

type kindInfo struct {
	status int
	title  string
}

var kinds = map[apperr.Kind]kindInfo{
	apperr.Invalid:      {http.StatusBadRequest, "Invalid request"},
	apperr.Unauthorized: {http.StatusUnauthorized, "Unauthorized"},
	apperr.Forbidden:    {http.StatusForbidden, "Forbidden"},
	apperr.NotFound:     {http.StatusNotFound, "Not found"},
	apperr.Conflict:     {http.StatusConflict, "Conflict"},
	apperr.TooLarge:     {http.StatusRequestEntityTooLarge, "Request body too large"},
	apperr.TooMany:      {http.StatusTooManyRequests, "Too many requests"},
	apperr.Unavailable:  {http.StatusServiceUnavailable, "Service unavailable"},
	apperr.Internal:     {http.StatusInternalServerError, "Internal error"},
}

// Status returns the HTTP status for a kind.
func Status(k apperr.Kind) int {
	if ki, ok := kinds[k]; ok {
		return ki.status
	}
	return http.StatusInternalServerError
}

// From builds the problem details for err. Errors that are not *apperr.Error
// (and Internal ones) get a generic detail: internal messages are for logs.
func From(r *http.Request, err error) Details {
	kind := apperr.Internal
	var detail, field string
	if e, ok := apperr.As(err); ok {
		kind, field = e.Kind, e.Field
		if kind != apperr.Internal {
			detail = e.Message
		}
	}
	ki, ok := kinds[kind]
	if !ok {
		kind, ki = apperr.Internal, kinds[apperr.Internal]
	}
	if kind == apperr.Internal {
		detail = "the server failed to handle the request; it has been logged"
	}
	d := Details{
		Type:   TypeBase + string(kind),
		Title:  ki.title,
		Status: ki.status,
		Detail: detail,
		Field:  field,
	}
	if r != nil {
		d.Instance = r.URL.Path
		d.RequestID = middleware.GetReqID(r.Context())
	}
	return d
}

// Write writes err as problem+json: the client sees the kind's status and
// the error's client-safe message, never its cause. Server-side failures
// (Internal, Unavailable) are logged first (LogCause); Unavailable answers
// carry Retry-After (1 s unless the caller set one).
func Write(w http.ResponseWriter, r *http.Request, err error) {
	LogCause(r, err)
	if apperr.KindOf(err) == apperr.Unavailable && w.Header().Get("Retry-After") == "" {
		w.Header().Set("Retry-After", "1")
	}
	WriteDetails(w, From(r, err))
}

// LogCause logs err with the request id if it is a server-side failure
// (Internal, Unavailable, or not an *apperr.Error at all), under the key
// "error", to the request's logger (WithLogger); at debug level when the
// client has gone away. Every transport that turns
// an error into an answer calls it exactly once: Write does; the console's
// error pages do.
func LogCause(r *http.Request, err error) {
	switch apperr.KindOf(err) {
	case apperr.Internal, apperr.Unavailable:
	default:
		return
	}
	ctx := r.Context()
	level := slog.LevelError
	if ctx.Err() != nil {
		level = slog.LevelDebug // the client went away: no one waits for the answer
	}
	loggerFrom(ctx).Log(ctx, level, "request failed", slog.String("error", err.Error()),
		slog.String("kind", string(apperr.KindOf(err))), slog.String("request_id", middleware.GetReqID(ctx)),
		slog.String("method", r.Method), slog.String("path", r.URL.Path))
}

type loggerKey struct{}

// WithLogger returns middleware that makes logger the one LogCause logs to
// for every request below it.
func WithLogger(logger *slog.Logger) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), loggerKey{}, logger)))
		})
	}
}

func loggerFrom(ctx context.Context) *slog.Logger {
	if l, ok := ctx.Value(loggerKey{}).(*slog.Logger); ok {
		return l
	}
	return slog.Default()
}

// WriteDetails writes d as problem+json with its status, without HTML
// escaping (a detail may quote "<ID token>").
func WriteDetails(w http.ResponseWriter, d Details) {
	h := w.Header()
	h.Set("Content-Type", ContentType)
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(d.Status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(d)
}

// StartedWriter passes writes to W and remembers whether any happened: a
// handler that streams (an export) can answer an error as a problem only
// while nothing is out; after that, an error can only cut the stream short.
type StartedWriter struct {
	W       io.Writer
	Started bool
}

func (s *StartedWriter) Write(p []byte) (int, error) {
	s.Started = true
	return s.W.Write(p)
}
