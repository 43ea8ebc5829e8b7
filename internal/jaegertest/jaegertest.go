// Package jaegertest runs a real Jaeger on loopback for tests: it builds
// Jaeger once from the pinned tools/jaeger module, starts it with in-memory
// storage on free 127.0.0.1 ports, and reads the spans it received back
// through Jaeger's query API. It is test-only: it must never be imported by
// production code, and it fails (never skips) a test when Jaeger cannot be
// built or started.
package jaegertest

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/broker-dev/broker/internal/tooltest"
)

// storeName is the name of the in-memory backend in the Jaeger config.
const storeName = "memstore"

// Jaeger is a running Jaeger (v2) server.
type Jaeger struct {
	otlpURL  string
	queryURL string
	cmd      *exec.Cmd
	log      *tooltest.Output
	exited   chan struct{}
}

// Span is one span as Jaeger's query API returns it, reduced to what tests
// assert on.
type Span struct {
	TraceID       string
	SpanID        string
	ParentSpanID  string // from the CHILD_OF reference; "" for a root span
	OperationName string
	ServiceName   string          // from the span's process (the resource's service.name)
	Tags          map[string]any  // span attributes (plus span.kind, otel.scope.name, ...): string, bool, int64, float64
	ProcessTags   map[string]any  // resource attributes other than service.name
	Links         []SpanRef       // references other than the parent (OTLP links arrive as FOLLOWS_FROM)
	Raw           json.RawMessage // the span exactly as the query API returned it (logs/events included)
}

// SpanRef is a reference from one span to another.
type SpanRef struct {
	RefType string // FOLLOWS_FROM, or CHILD_OF for a second parent
	TraceID string
	SpanID  string
}

// Start builds (or reuses) the Jaeger binary and runs it until the test ends.
func Start(t testing.TB) *Jaeger {
	t.Helper()
	bin, err := binary()
	if err != nil {
		t.Fatalf("jaegertest: %v", err)
	}
	dir := t.TempDir()
	// A free port found by listening and closing can be taken by another test
	// before Jaeger binds it; try again with fresh ports when that happens.
	for attempt := 1; ; attempt++ {
		j, err := start(t, bin, dir)
		if err == nil {
			return j
		}
		if attempt < 3 && strings.Contains(j.log.String(), "address already in use") {
			t.Logf("jaegertest: port collision, retrying: %v", err)
			continue
		}
		t.Fatalf("jaegertest: %v\nJaeger output:\n%s", err, j.log.String())
	}
}

func start(t testing.TB, bin, dir string) (*Jaeger, error) {
	j := &Jaeger{log: &tooltest.Output{}, exited: make(chan struct{})}
	ports, err := freePorts(3)
	if err != nil {
		return j, err
	}
	otlpAddr := fmt.Sprintf("127.0.0.1:%d", ports[0])
	queryAddr := fmt.Sprintf("127.0.0.1:%d", ports[1])
	grpcAddr := fmt.Sprintf("127.0.0.1:%d", ports[2])
	j.otlpURL = "http://" + otlpAddr
	j.queryURL = "http://" + queryAddr

	// JSON is YAML, which is what the collector's file: provider reads.
	cfg, err := json.MarshalIndent(config(otlpAddr, queryAddr, grpcAddr), "", "  ")
	if err != nil {
		return j, fmt.Errorf("encode config: %w", err)
	}
	cfgPath := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfgPath, cfg, 0o600); err != nil {
		return j, fmt.Errorf("write config: %w", err)
	}

	j.cmd = exec.Command(bin, "--config=file:"+cfgPath)
	j.cmd.Dir = dir
	j.cmd.Env = jaegerEnv()
	j.cmd.Stdout, j.cmd.Stderr = j.log, j.log
	if err := j.cmd.Start(); err != nil {
		return j, fmt.Errorf("start %s: %w", bin, err)
	}
	go func() {
		_ = j.cmd.Wait()
		close(j.exited)
	}()
	if err := j.waitReady(30 * time.Second); err != nil {
		j.stop()
		return j, err
	}
	t.Cleanup(func() {
		j.stop()
		if t.Failed() {
			t.Logf("jaegertest: Jaeger output:\n%s", j.log.String())
		}
	})
	return j, nil
}

// OTLPEndpoint is the base URL of the OTLP/HTTP receiver,
// http://127.0.0.1:<port>, as OTEL_EXPORTER_OTLP_ENDPOINT wants it (the
// exporter appends /v1/traces).
func (j *Jaeger) OTLPEndpoint() string { return j.otlpURL }

// QueryURL is the base URL of Jaeger's query HTTP API (and UI),
// http://127.0.0.1:<port>.
func (j *Jaeger) QueryURL() string { return j.queryURL }

// Trace waits up to wait for Jaeger to hold spans of traceID (32 hex digits)
// and returns them, in no particular order. It returns as soon as any span of
// the trace is stored; use TraceN when spans may arrive in several exports.
func (j *Jaeger) Trace(t testing.TB, traceID string, wait time.Duration) []Span {
	t.Helper()
	return j.TraceN(t, traceID, 1, wait)
}

// TraceN is Trace, waiting until the trace has at least n spans.
func (j *Jaeger) TraceN(t testing.TB, traceID string, n int, wait time.Duration) []Span {
	t.Helper()
	u := j.queryURL + "/api/traces/" + url.PathEscape(strings.ToLower(traceID))
	deadline := time.Now().Add(wait)
	var (
		spans   []Span
		lastErr error
	)
	for {
		spans, lastErr = j.query(u)
		if lastErr == nil && len(spans) >= n {
			return spans
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if lastErr != nil {
		t.Fatalf("jaegertest: trace %s not found within %s: %v", traceID, wait, lastErr)
	}
	t.Fatalf("jaegertest: trace %s has %d spans after %s, want at least %d", traceID, len(spans), wait, n)
	return nil
}

// AllSpans returns every stored span of every trace that has a span of
// service (up to 1000 traces), e.g. to check that no secret was exported. It
// does not wait: flush the exporter first, or wait for a known trace with
// Trace.
func (j *Jaeger) AllSpans(t testing.TB, service string) []Span {
	t.Helper()
	q := url.Values{
		"service": {service},
		"limit":   {"1000"},
		"start":   {"1"},
		"end":     {strconv.FormatInt(time.Now().Add(24*time.Hour).UnixMicro(), 10)},
	}
	spans, err := j.query(j.queryURL + "/api/traces?" + q.Encode())
	if err != nil {
		t.Fatalf("jaegertest: search traces of %s: %v", service, err)
	}
	return spans
}

// query GETs a query API URL that answers with traces and flattens them into
// spans. A 404 (trace not found) is no spans, not an error.
func (j *Jaeger) query(u string) ([]Span, error) {
	resp, err := http.Get(u)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode == http.StatusNotFound {
		return nil, nil
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s: %s", u, resp.Status, body)
	}
	return decodeTraces(body)
}

// The query API's JSON (Jaeger's "UI model").
type apiResponse struct {
	Data   []apiTrace `json:"data"`
	Errors []struct {
		Code int    `json:"code"`
		Msg  string `json:"msg"`
	} `json:"errors"`
}

type apiTrace struct {
	Spans     []json.RawMessage `json:"spans"`
	Processes map[string]struct {
		ServiceName string   `json:"serviceName"`
		Tags        []apiTag `json:"tags"`
	} `json:"processes"`
}

type apiSpan struct {
	TraceID       string `json:"traceID"`
	SpanID        string `json:"spanID"`
	OperationName string `json:"operationName"`
	References    []struct {
		RefType string `json:"refType"`
		TraceID string `json:"traceID"`
		SpanID  string `json:"spanID"`
	} `json:"references"`
	Tags      []apiTag `json:"tags"`
	ProcessID string   `json:"processID"`
}

type apiTag struct {
	Key   string          `json:"key"`
	Type  string          `json:"type"`
	Value json.RawMessage `json:"value"`
}

func decodeTraces(body []byte) ([]Span, error) {
	var r apiResponse
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("decode query API response: %w", err)
	}
	if len(r.Errors) > 0 {
		return nil, fmt.Errorf("query API error %d: %s", r.Errors[0].Code, r.Errors[0].Msg)
	}
	var out []Span
	for _, tr := range r.Data {
		for _, raw := range tr.Spans {
			var s apiSpan
			if err := json.Unmarshal(raw, &s); err != nil {
				return nil, fmt.Errorf("decode span: %w", err)
			}
			span := Span{
				TraceID:       s.TraceID,
				SpanID:        s.SpanID,
				OperationName: s.OperationName,
				Tags:          tagMap(s.Tags),
				Raw:           raw,
			}
			if p, ok := tr.Processes[s.ProcessID]; ok {
				span.ServiceName = p.ServiceName
				span.ProcessTags = tagMap(p.Tags)
			}
			for _, ref := range s.References {
				if ref.RefType == "CHILD_OF" && span.ParentSpanID == "" && ref.TraceID == s.TraceID {
					span.ParentSpanID = ref.SpanID
					continue
				}
				span.Links = append(span.Links, SpanRef{RefType: ref.RefType, TraceID: ref.TraceID, SpanID: ref.SpanID})
			}
			out = append(out, span)
		}
	}
	return out, nil
}

func tagMap(tags []apiTag) map[string]any {
	m := make(map[string]any, len(tags))
	for _, tag := range tags {
		m[tag.Key] = tagValue(tag)
	}
	return m
}

func tagValue(tag apiTag) any {
	switch tag.Type {
	case "bool":
		var b bool
		if json.Unmarshal(tag.Value, &b) == nil {
			return b
		}
	case "int64":
		if i, err := strconv.ParseInt(strings.Trim(string(tag.Value), `"`), 10, 64); err == nil {
			return i
		}
	case "float64":
		var f float64
		if json.Unmarshal(tag.Value, &f) == nil {
			return f
		}
	case "string", "binary":
		var s string
		if json.Unmarshal(tag.Value, &s) == nil {
			return s
		}
	}
	// Unknown type: keep the JSON text.
	return string(tag.Value)
}

func (j *Jaeger) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	services := j.queryURL + "/api/services"
	// The collector starts the receiver after the query extension: wait for
	// both. GET on the OTLP path answers 405 once the receiver listens.
	otlp := j.otlpURL + "/v1/traces"
	for {
		select {
		case <-j.exited:
			return errors.New("jaeger exited during startup")
		default:
		}
		if status(services) == http.StatusOK && status(otlp) != 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("jaeger not serving %s and %s after %s", services, otlp, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// status is the HTTP status of GET u, or 0 if it could not be fetched.
func status(u string) int {
	resp, err := http.Get(u)
	if err != nil {
		return 0
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

func (j *Jaeger) stop() {
	_ = j.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-j.exited:
	case <-time.After(5 * time.Second):
		_ = j.cmd.Process.Kill()
		<-j.exited
	}
}

// config is a Jaeger v2 (OpenTelemetry collector) configuration: in-memory
// storage, an OTLP/HTTP receiver and the query API, each listening on the
// given loopback address, and nothing else. No OTLP gRPC, Jaeger or Zipkin
// receiver, no health check, pprof, zpages or expvar extension, no
// collector metrics (which would listen on :8888) and no self-tracing.
func config(otlpAddr, queryAddr, grpcAddr string) map[string]any {
	return map[string]any{
		"service": map[string]any{
			"extensions": []string{"jaeger_storage", "jaeger_query"},
			"pipelines": map[string]any{
				"traces": map[string]any{
					"receivers":  []string{"otlp"},
					"processors": []string{"batch"},
					"exporters":  []string{"jaeger_storage_exporter"},
				},
			},
			"telemetry": map[string]any{
				"metrics": map[string]any{"level": "none"},
				"traces":  map[string]any{"level": "none"},
				"logs":    map[string]any{"level": "info"},
			},
		},
		"extensions": map[string]any{
			"jaeger_storage": map[string]any{
				"backends": map[string]any{
					storeName: map[string]any{"memory": map[string]any{"max_traces": 100000}},
				},
			},
			"jaeger_query": map[string]any{
				"storage":        map[string]any{"traces": storeName},
				"enable_tracing": false,
				"http":           map[string]any{"endpoint": queryAddr},
				"grpc":           map[string]any{"endpoint": grpcAddr},
			},
		},
		"receivers": map[string]any{
			"otlp": map[string]any{
				"protocols": map[string]any{
					"http": map[string]any{"endpoint": otlpAddr},
				},
			},
		},
		"processors": map[string]any{
			// Flush quickly so tests see spans soon after export.
			"batch": map[string]any{"timeout": "100ms"},
		},
		"exporters": map[string]any{
			"jaeger_storage_exporter": map[string]any{"trace_storage": storeName},
		},
	}
}

// jaegerEnv is the test's environment without OTEL_* variables, which a test
// may set for the code under test and which would otherwise configure
// Jaeger's own OpenTelemetry SDK.
func jaegerEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "OTEL_") {
			env = append(env, kv)
		}
	}
	return env
}

func freePorts(n int) ([]int, error) {
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free port: %w", err)
		}
		// Keep each open until all are found, so they differ.
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

var (
	buildOnce sync.Once
	builtPath string
	buildErr  error
)

// binary returns the path of a Jaeger binary built from tools/jaeger,
// building it into the Go build cache on first use (keyed by
// tools/jaeger/go.sum, so a Jaeger upgrade rebuilds).
func binary() (string, error) {
	buildOnce.Do(func() { builtPath, buildErr = tooltest.Build("jaeger", "github.com/jaegertracing/jaeger/cmd/jaeger") })
	return builtPath, buildErr
}
