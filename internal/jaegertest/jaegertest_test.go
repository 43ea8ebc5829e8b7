package jaegertest

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// TestRoundTrip sends one OTLP/HTTP JSON trace of two spans (a parent and a
// child with an attribute and a link) and reads it back through the query API.
func TestRoundTrip(t *testing.T) {
	j := Start(t)
	if !strings.HasPrefix(j.OTLPEndpoint(), "http://127.0.0.1:") {
		t.Fatalf("OTLPEndpoint = %q, want a loopback URL", j.OTLPEndpoint())
	}

	traceID, parentID, childID := randomHex(t, 16), randomHex(t, 8), randomHex(t, 8)
	linkTrace, linkSpan := randomHex(t, 16), randomHex(t, 8)
	now := time.Now()
	nanos := func(d time.Duration) string { return strconv.FormatInt(now.Add(d).UnixNano(), 10) }
	attr := func(k, v string) map[string]any {
		return map[string]any{"key": k, "value": map[string]any{"stringValue": v}}
	}
	payload := map[string]any{"resourceSpans": []any{map[string]any{
		"resource": map[string]any{"attributes": []any{
			attr("service.name", "jaegertest-svc"),
			attr("deployment.environment", "test"),
		}},
		"scopeSpans": []any{map[string]any{
			"scope": map[string]any{"name": "jaegertest"},
			"spans": []any{
				map[string]any{
					"traceId": traceID, "spanId": parentID, "name": "GET /parent", "kind": 2,
					"startTimeUnixNano": nanos(0), "endTimeUnixNano": nanos(10 * time.Millisecond),
				},
				map[string]any{
					"traceId": traceID, "spanId": childID, "parentSpanId": parentID, "name": "child-op", "kind": 1,
					"startTimeUnixNano": nanos(time.Millisecond), "endTimeUnixNano": nanos(5 * time.Millisecond),
					"attributes": []any{
						attr("broker.tenant", "acme"),
						map[string]any{"key": "broker.count", "value": map[string]any{"intValue": "42"}},
						map[string]any{"key": "broker.ok", "value": map[string]any{"boolValue": true}},
					},
					"links": []any{map[string]any{"traceId": linkTrace, "spanId": linkSpan}},
				},
			},
		}},
	}}}
	body, err := json.Marshal(payload)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post(j.OTLPEndpoint()+"/v1/traces", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatalf("POST /v1/traces: %v", err)
	}
	respBody, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST /v1/traces: %s: %s", resp.Status, respBody)
	}

	spans := j.TraceN(t, strings.ToUpper(traceID), 2, 10*time.Second)
	if len(spans) != 2 {
		t.Fatalf("got %d spans, want 2: %+v", len(spans), spans)
	}
	byName := map[string]Span{}
	for _, s := range spans {
		byName[s.OperationName] = s
		if s.TraceID != traceID {
			t.Errorf("span %s: TraceID = %q, want %q", s.OperationName, s.TraceID, traceID)
		}
		if s.ServiceName != "jaegertest-svc" {
			t.Errorf("span %s: ServiceName = %q", s.OperationName, s.ServiceName)
		}
		if s.ProcessTags["deployment.environment"] != "test" {
			t.Errorf("span %s: ProcessTags = %v", s.OperationName, s.ProcessTags)
		}
	}
	parent, ok := byName["GET /parent"]
	if !ok {
		t.Fatalf("no span GET /parent in %+v", spans)
	}
	child, ok := byName["child-op"]
	if !ok {
		t.Fatalf("no span child-op in %+v", spans)
	}
	if parent.SpanID != parentID || parent.ParentSpanID != "" || len(parent.Links) != 0 {
		t.Errorf("parent = %+v, want span %s without parent or links", parent, parentID)
	}
	if child.SpanID != childID || child.ParentSpanID != parentID {
		t.Errorf("child: SpanID %q ParentSpanID %q, want %q, %q", child.SpanID, child.ParentSpanID, childID, parentID)
	}
	if got := child.Tags["broker.tenant"]; got != "acme" {
		t.Errorf("child tag broker.tenant = %#v, want \"acme\"", got)
	}
	if got := child.Tags["broker.count"]; got != int64(42) {
		t.Errorf("child tag broker.count = %#v, want int64(42)", got)
	}
	if got := child.Tags["broker.ok"]; got != true {
		t.Errorf("child tag broker.ok = %#v, want true", got)
	}
	want := SpanRef{RefType: "FOLLOWS_FROM", TraceID: linkTrace, SpanID: linkSpan}
	if len(child.Links) != 1 || child.Links[0] != want {
		t.Errorf("child links = %+v, want [%+v]", child.Links, want)
	}
	if !bytes.Contains(child.Raw, []byte(`"acme"`)) {
		t.Errorf("child Raw lacks the attribute value: %s", child.Raw)
	}

	all := j.AllSpans(t, "jaegertest-svc")
	if len(all) != 2 {
		t.Errorf("AllSpans = %d spans, want 2: %+v", len(all), all)
	}
	if other := j.AllSpans(t, "no-such-service"); len(other) != 0 {
		t.Errorf("AllSpans(no-such-service) = %+v, want none", other)
	}
}

// TestParallel starts two Jaegers at once: their ports must not collide.
func TestParallel(t *testing.T) {
	for _, name := range []string{"a", "b"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			j := Start(t)
			resp, err := http.Get(j.QueryURL() + "/api/services")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("GET /api/services: %s", resp.Status)
			}
		})
	}
}
