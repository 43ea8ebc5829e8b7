package httpapi

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"testing"

	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/broker-dev/broker/internal/audit"
)

// TestTracing_OneTraceFromTheCallerToTheBatchAndNoSecretInAnySpan issues a
// token through a token URL with the caller's traceparent, against Postgres,
// and reads the spans back: the request's span tree under the caller's
// trace, the append linked to the batch commit that carried the record (and
// back), the trace id on the access-log line, and no secret anywhere.
func TestTracing_OneTraceFromTheCallerToTheBatchAndNoSecretInAnySpan(t *testing.T) {
	spans := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans))
	otel.SetTracerProvider(tp)
	t.Cleanup(func() { otel.SetTracerProvider(noop.NewTracerProvider()); _ = tp.Shutdown(context.Background()) })

	a := newPGAPI(t)
	code, created := a.do(t, "POST", "/v1/token-urls", "alice;dev;3617108752", "")
	if code != 201 {
		t.Fatalf("create: %d %v", code, created)
	}
	tu := created["tokenUrl"].(string)
	secret := tu[strings.Index(tu, "/k/")+3:]

	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	req, _ := http.NewRequest("GET", tu+"/rtc/kit-1/publisher/uid/3617108752/", nil)
	req.Header.Set("traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	err = json.NewDecoder(resp.Body).Decode(&got)
	resp.Body.Close()
	minted, _ := got["rtcToken"].(string)
	if resp.StatusCode != 200 || err != nil || minted == "" {
		t.Fatalf("token URL: %d, decode error %v, token present %v; the body is not printed (it may hold a token)", resp.StatusCode, err, minted != "")
	}
	if err := tp.ForceFlush(context.Background()); err != nil {
		t.Fatal(err)
	}

	byName := map[string]tracetest.SpanStub{}
	for _, s := range spans.GetSpans() {
		if s.SpanContext.TraceID().String() == traceID {
			byName[s.Name] = s
		}
	}
	server, ok := byName["HTTP GET /rtc/{channel}/{role}/{tokentype}/{uid}"] // the token URL's secret is not in the route
	if !ok {
		t.Fatalf("no server span named after the route in the caller's trace; spans: %v", slices.Sorted(maps.Keys(byName)))
	}
	if server.Parent.SpanID().String() != "00f067aa0ba902b7" {
		t.Errorf("the server span's parent is %s, want the caller's span", server.Parent.SpanID())
	}
	for _, n := range []string{"policy.decide", "token.mint", "audit.append"} {
		s, ok := byName[n]
		if !ok {
			t.Fatalf("no %s span in the caller's trace; spans: %v", n, slices.Sorted(maps.Keys(byName)))
		}
		if s.Parent.TraceID().String() != traceID {
			t.Errorf("%s is not in the request's trace", n)
		}
	}
	appendSpan := byName["audit.append"]
	if len(appendSpan.Links) != 1 {
		t.Fatalf("audit.append has %d links, want one to the batch commit", len(appendSpan.Links))
	}
	var commit *tracetest.SpanStub
	for _, s := range spans.GetSpans() {
		if s.SpanContext.SpanID() == appendSpan.Links[0].SpanContext.SpanID() {
			commit = &s
		}
	}
	if commit == nil || commit.Name != "audit.commit" {
		t.Fatalf("audit.append links to %v, want the audit.commit span", commit)
	}
	linkedBack := false
	for _, l := range commit.Links {
		linkedBack = linkedBack || l.SpanContext.SpanID() == appendSpan.SpanContext.SpanID()
	}
	if !linkedBack {
		t.Error("the batch commit does not link back to the record's append")
	}
	page, err := a.log.Search(context.Background(), audit.Filter{Subject: "alice", Limit: 1})
	if err != nil || len(page.Records) != 1 || page.Records[0].TraceID != traceID {
		t.Errorf("the issuance-log record's trace id: %+v, %v; want %s", page.Records, err, traceID)
	}
	if !strings.Contains(a.logs.String(), `"trace_id":"`+traceID+`"`) {
		t.Errorf("no access-log line with the trace id:\n%s", a.logs.String())
	}

	// Nothing secret in any span: names, attributes, events, status.
	for _, s := range spans.GetSpans() {
		text := fmt.Sprintf("%s %v %v %v %s", s.Name, s.Attributes, s.Events, s.Resource, s.Status.Description)
		for what, v := range map[string]string{"token URL secret": secret, "token": minted, "App certificate": testCert} {
			if strings.Contains(text, v) {
				t.Errorf("span %q carries the %s", s.Name, what)
			}
		}
	}
}
