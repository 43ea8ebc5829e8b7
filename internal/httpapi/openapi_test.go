package httpapi

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/go-chi/chi/v5"

	"github.com/broker-dev/broker/internal/review"
	"github.com/broker-dev/broker/internal/revoke"
)

// TestOpenAPI_DocumentsEveryRouteAndNoOther walks the chi router with every
// optional part switched on and compares it with openapi.json, method by
// method, in both directions.
func TestOpenAPI_DocumentsEveryRouteAndNoOther(t *testing.T) {
	var d Deps
	newAPI(t, func(deps *Deps) {
		deps.Metrics, deps.RateLimit = http.NotFoundHandler(), RateLimit{Rate: 1, Burst: 1}
		deps.Transparency = Transparency{Log: deps.Audit, Origin: "example.com/log", VerifierKey: "example.com/log+00000000+AQ=="}
		deps.AgoraEvents = AgoraEvents{Secrets: map[string][]byte{"default": []byte("s")}, Store: review.NewMemory()}
		deps.Revocations = &revoke.Service{Store: revoke.NewMemory()}
		d = *deps
	}, false)
	router := routes(d).(chi.Routes)

	served := map[string]bool{}
	err := chi.Walk(router, func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		route = strings.TrimSuffix(strings.ReplaceAll(route, "/*", ""), "/")
		if route == "" {
			route = "/"
		}
		served[method+" "+route] = true
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	var doc struct {
		OpenAPI string                                `json:"openapi"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(openAPI, &doc); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.1") {
		t.Fatalf("openapi %q, want 3.1.x", doc.OpenAPI)
	}
	documented := map[string]bool{}
	for path, ops := range doc.Paths {
		for method := range ops {
			documented[strings.ToUpper(method)+" "+path] = true
		}
	}
	var missing, extra []string
	for k := range served {
		if !documented[k] {
			missing = append(missing, k)
		}
	}
	for k := range documented {
		if !served[k] {
			extra = append(extra, k)
		}
	}
	slices.Sort(missing)
	slices.Sort(extra)
	if len(missing) > 0 || len(extra) > 0 {
		t.Fatalf("routes not documented: %v\ndocumented paths not served: %v", missing, extra)
	}
}

func TestOpenAPI_ServedAsJSON(t *testing.T) {
	f := newAPI(t, nil, false)
	resp, m := f.do(t, "GET", "/openapi.json", "", "")
	if resp.StatusCode != 200 || m["openapi"] != "3.1.0" {
		t.Fatalf("%d %v", resp.StatusCode, m["openapi"])
	}
}
