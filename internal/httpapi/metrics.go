package httpapi

import (
	"net/http"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
)

// httpMetrics measures every request by route pattern, method and status.
// Every label has a bounded set of values, whatever a client sends: routes
// are the router's patterns (never the raw path, whose channel names would
// explode the label set), methods outside the standard ones are "other", and
// statuses are those the handlers write.
type httpMetrics struct {
	duration *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer) *httpMetrics {
	m := &httpMetrics{duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "broker_http_request_duration_seconds",
		Help:    "HTTP request latency by route pattern, method (standard methods, else \"other\") and status.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
	}, []string{"route", "method", "status"})}
	if reg != nil {
		reg.MustRegister(m.duration)
	}
	return m
}

func (m *httpMetrics) observe(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec, ok := w.(*statusRecorder)
		if !ok {
			rec = &statusRecorder{ResponseWriter: w}
		}
		next.ServeHTTP(rec, r)
		route := "unmatched"
		if rctx := chi.RouteContext(r.Context()); rctx != nil && rctx.RoutePattern() != "" {
			route = rctx.RoutePattern()
		}
		status := rec.status
		if status == 0 {
			status = http.StatusOK
		}
		m.duration.WithLabelValues(route, methodLabel(r.Method), strconv.Itoa(status)).Observe(time.Since(start).Seconds())
	})
}

// methodLabel bounds the method label: Go's server accepts any token as a
// method, so anything but the standard methods is "other".
func methodLabel(method string) string {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodConnect, http.MethodOptions, http.MethodTrace:
		return method
	}
	return "other"
}
