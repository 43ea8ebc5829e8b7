package httpapi

import (
	"context"

	"github.com/go-chi/chi/v5/middleware"
)

// contextWithRequestID stores id under chi's request-id key, so
// middleware.GetReqID (used by problem details and logs) finds it.
func contextWithRequestID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, middleware.RequestIDKey, id)
}
