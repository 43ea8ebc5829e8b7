package httpapi

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/go-chi/chi/v5"
	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/broker-dev/broker/internal/tracing"
)

// benchRouter is a chi router with one route, with or without traceRequest, whose
// handler starts one child span as the broker's steps do.
func benchRouter(traced bool) http.Handler {
	r := chi.NewRouter()
	if traced {
		r.Use(traceRequest)
	}
	r.Get("/rtc/{channel}", func(w http.ResponseWriter, r *http.Request) {
		_, span := tracing.Tracer().Start(r.Context(), "policy.decide")
		span.End()
		w.WriteHeader(http.StatusOK)
	})
	return r
}

func benchServe(b *testing.B, h http.Handler) {
	req := httptest.NewRequest(http.MethodGet, "/rtc/demo", nil)
	req.Header.Set("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	b.ReportAllocs()
	for b.Loop() {
		h.ServeHTTP(httptest.NewRecorder(), req)
	}
}

// BenchmarkTraceRequest compares a request without the middleware, with it and
// tracing off (the no-op provider: what every broker without an exporter
// runs), and with it exporting every span to memory.
func BenchmarkTraceRequest(b *testing.B) {
	b.Run("no-middleware", func(b *testing.B) { benchServe(b, benchRouter(false)) })
	b.Run("off", func(b *testing.B) {
		otel.SetTracerProvider(noop.NewTracerProvider())
		benchServe(b, benchRouter(true))
	})
	b.Run("on-100%", func(b *testing.B) {
		tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(tracetest.NewNoopExporter()))
		otel.SetTracerProvider(tp)
		defer func() { otel.SetTracerProvider(noop.NewTracerProvider()); _ = tp.Shutdown(context.Background()) }()
		benchServe(b, benchRouter(true))
	})
}
