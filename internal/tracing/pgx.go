package tracing

import (
	"context"
	"strings"

	"github.com/jackc/pgx/v5"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// Queries is a pgx.QueryTracer: a client span per query, named after its SQL
// command ("db SELECT", "db INSERT"…). Arguments and statement text are
// never recorded (they hold keys, hashes and user data).
type Queries struct{}

var _ pgx.QueryTracer = Queries{}

// TraceQueryStart implements pgx.QueryTracer.
func (Queries) TraceQueryStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	if !trace.SpanFromContext(ctx).IsRecording() {
		return ctx // no trace to join: no span of its own either
	}
	op := command(data.SQL)
	ctx, _ = Tracer().Start(ctx, "db "+op, trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attribute.String("db.system", "postgresql"), attribute.String("db.operation.name", op)))
	return ctx
}

// TraceQueryEnd implements pgx.QueryTracer.
func (Queries) TraceQueryEnd(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryEndData) {
	span := trace.SpanFromContext(ctx)
	if !span.IsRecording() {
		return
	}
	if data.Err != nil {
		span.SetStatus(codes.Error, "query failed")
	}
	span.End()
}

// command is the first word of a statement, upper-cased: SELECT, INSERT, WITH…
func command(sql string) string {
	sql = strings.TrimSpace(sql)
	if i := strings.IndexAny(sql, " \t\n\r("); i > 0 {
		sql = sql[:i]
	}
	if len(sql) > 16 || sql == "" {
		return "QUERY"
	}
	return strings.ToUpper(sql)
}
