// Package tracing owns the broker's OpenTelemetry traces: the provider set up
// from the standard OTEL_* variables (off, at no cost, without an exporter),
// the spans of outgoing HTTP requests and of database queries. (The server
// span of each request is started by the HTTP layer, httpapi.)
//
// No span carries a secret: attributes are chosen here and in the packages
// that start spans, never copied wholesale from a request. A URL path is
// recorded as its route pattern (a token URL's secret is a path segment), and
// a query as its SQL command word, never its arguments.
package tracing

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// name is the instrumentation scope of every broker span.
const name = "github.com/broker-dev/broker"

// Tracer is the broker's tracer, from the global provider: a no-op one until
// Setup installs an exporting provider.
func Tracer() trace.Tracer { return otel.Tracer(name) }

// TraceID returns the trace id of ctx's span as 32 hex digits, or "" when
// ctx carries none.
func TraceID(ctx context.Context) string {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.HasTraceID() {
		return ""
	}
	return sc.TraceID().String()
}

func init() {
	// W3C trace context is accepted from callers and sent to the identity
	// provider whether or not spans are exported, so that log lines and
	// records carry the caller's trace id.
	otel.SetTextMapPropagator(propagation.TraceContext{})
}

// Setup installs the tracer provider the OTEL_* variables ask for (read with
// getenv): OTLP over HTTP to OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, or to
// OTEL_EXPORTER_OTLP_ENDPOINT + /v1/traces; sampled by OTEL_TRACES_SAMPLER
// (and _ARG; default parentbased_always_on); named by OTEL_SERVICE_NAME
// (default "broker"). Without an endpoint, with OTEL_SDK_DISABLED=true or
// OTEL_TRACES_EXPORTER=none, tracing stays off and Setup returns enabled
// false. Export failures are logged to logger. shutdown flushes the spans still buffered and uninstalls the
// provider.
func Setup(ctx context.Context, getenv func(string) string, version string, logger *slog.Logger) (enabled bool, shutdown func(context.Context) error, err error) {
	off := func(context.Context) error { return nil }
	if strings.EqualFold(getenv("OTEL_SDK_DISABLED"), "true") {
		return false, off, nil
	}
	switch exp := strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER")); exp {
	case "none":
		return false, off, nil
	case "", "otlp":
	default:
		return false, nil, fmt.Errorf("OTEL_TRACES_EXPORTER=%q: the broker exports traces with otlp (or none)", exp)
	}
	endpoint := getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
	if endpoint == "" {
		if base := getenv("OTEL_EXPORTER_OTLP_ENDPOINT"); base != "" {
			endpoint = strings.TrimSuffix(base, "/") + "/v1/traces"
		}
	}
	if endpoint == "" {
		return false, off, nil
	}
	for _, v := range []string{"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"} {
		if p := getenv(v); p != "" && p != "http/protobuf" {
			return false, nil, fmt.Errorf("%s=%q: the broker exports OTLP as http/protobuf only", v, p)
		}
	}
	sampler, err := samplerFrom(getenv("OTEL_TRACES_SAMPLER"), getenv("OTEL_TRACES_SAMPLER_ARG"))
	if err != nil {
		return false, nil, err
	}
	exporter, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(endpoint))
	if err != nil {
		return false, nil, fmt.Errorf("OTEL_EXPORTER_OTLP_ENDPOINT: %w", err)
	}
	service := getenv("OTEL_SERVICE_NAME")
	if service == "" {
		service = "broker"
	}
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exporter),
		sdktrace.WithSampler(sampler),
		sdktrace.WithResource(resource.NewSchemaless(
			attribute.String("service.name", service),
			attribute.String("service.version", version),
		)),
	)
	// Export failures (a collector down) go to the broker's log, once per
	// failure, not to the standard library's logger.
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		logger.Warn("tracing: spans not exported", slog.String("error", err.Error()))
	}))
	otel.SetTracerProvider(tp)
	return true, func(ctx context.Context) error {
		otel.SetTracerProvider(noop.NewTracerProvider())
		return tp.Shutdown(ctx)
	}, nil
}

// samplerFrom reads OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG.
func samplerFrom(kind, arg string) (sdktrace.Sampler, error) {
	ratio := func() (float64, error) {
		if arg == "" {
			return 1, nil
		}
		f, err := strconv.ParseFloat(arg, 64)
		if err != nil || f < 0 || f > 1 {
			return 0, errors.New("OTEL_TRACES_SAMPLER_ARG must be a ratio from 0 to 1")
		}
		return f, nil
	}
	switch kind {
	case "", "parentbased_always_on":
		return sdktrace.ParentBased(sdktrace.AlwaysSample()), nil
	case "always_on":
		return sdktrace.AlwaysSample(), nil
	case "always_off":
		return sdktrace.NeverSample(), nil
	case "parentbased_always_off":
		return sdktrace.ParentBased(sdktrace.NeverSample()), nil
	case "traceidratio", "parentbased_traceidratio":
		f, err := ratio()
		if err != nil {
			return nil, err
		}
		if kind == "traceidratio" {
			return sdktrace.TraceIDRatioBased(f), nil
		}
		return sdktrace.ParentBased(sdktrace.TraceIDRatioBased(f)), nil
	}
	return nil, fmt.Errorf("OTEL_TRACES_SAMPLER=%q: use always_on, always_off, traceidratio or their parentbased_ forms", kind)
}
