// Package problem writes errors as RFC 9457 problem details
// (application/problem+json). It is the one place that maps an apperr.Kind to an
// HTTP status and a stable problem type; it never writes an error's cause.
package problem

import (
	"encoding/json"
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

// Kinds lists every problem kind, for documentation.
func Kinds() []apperr.Kind {
	return []apperr.Kind{apperr.Invalid, apperr.Unauthorized, apperr.Forbidden, apperr.NotFound,
		apperr.Conflict, apperr.TooLarge, apperr.TooMany, apperr.Unavailable, apperr.Internal}
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

// Write writes err as problem+json.
func Write(w http.ResponseWriter, r *http.Request, err error) {
	WriteDetails(w, From(r, err))
}

// WriteDetails writes d as problem+json with its status.
func WriteDetails(w http.ResponseWriter, d Details) {
	h := w.Header()
	h.Set("Content-Type", ContentType)
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(d.Status)
	_ = json.NewEncoder(w).Encode(d)
}
