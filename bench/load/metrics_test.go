package load

import (
	"bufio"
	"fmt"
	"io"
	"maps"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// snapshot is what the harness reads from the broker's /metrics.
type snapshot struct {
	Decisions map[string]int // broker_decisions_total by outcome
	// The issuance log's group commits: time spent and records written.
	CommitSeconds, Commits float64 // broker_audit_commit_seconds _sum, _count
	BatchRecords, Batches  float64 // broker_audit_batch_size _sum, _count
	// Time inside the broker's handlers, all routes.
	ServerSeconds, ServerRequests float64 // broker_http_request_duration_seconds _sum, _count
}

// sample matches one sample line of the Prometheus text format. Label values
// may hold braces (the route label is "/rtc/{channel}/…").
var (
	sample  = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$`)
	outcome = regexp.MustCompile(`\boutcome="([^"]*)"`)
)

// parseMetrics reads the samples the harness needs, summed over labels.
func parseMetrics(r io.Reader) (snapshot, error) {
	s := snapshot{Decisions: map[string]int{}}
	sums := map[string]*float64{
		"broker_audit_commit_seconds_sum":            &s.CommitSeconds,
		"broker_audit_commit_seconds_count":          &s.Commits,
		"broker_audit_batch_size_sum":                &s.BatchRecords,
		"broker_audit_batch_size_count":              &s.Batches,
		"broker_http_request_duration_seconds_sum":   &s.ServerSeconds,
		"broker_http_request_duration_seconds_count": &s.ServerRequests,
	}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		m := sample.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		name, labels := m[1], m[2]
		dst, wanted := sums[name]
		if !wanted && name != "broker_decisions_total" {
			continue
		}
		v, err := strconv.ParseFloat(m[3], 64)
		if err != nil {
			return snapshot{}, fmt.Errorf("metric %q: %w", sc.Text(), err)
		}
		if wanted {
			*dst += v
			continue
		}
		o := outcome.FindStringSubmatch(labels)
		if o == nil {
			return snapshot{}, fmt.Errorf("metric %q has no outcome label", sc.Text())
		}
		s.Decisions[o[1]] += int(v)
	}
	if err := sc.Err(); err != nil {
		return snapshot{}, fmt.Errorf("read metrics: %w", err)
	}
	return s, nil
}

// sub returns what happened between before and s.
func (s snapshot) sub(before snapshot) snapshot {
	d := snapshot{Decisions: map[string]int{},
		CommitSeconds: s.CommitSeconds - before.CommitSeconds, Commits: s.Commits - before.Commits,
		BatchRecords: s.BatchRecords - before.BatchRecords, Batches: s.Batches - before.Batches,
		ServerSeconds: s.ServerSeconds - before.ServerSeconds, ServerRequests: s.ServerRequests - before.ServerRequests,
	}
	for k, v := range s.Decisions {
		if n := v - before.Decisions[k]; n != 0 {
			d.Decisions[k] = n
		}
	}
	return d
}

const metricsText = `# HELP broker_decisions_total Token decisions by outcome (granted, denied, invalid, unavailable), role and route.
# TYPE broker_decisions_total counter
broker_decisions_total{outcome="granted",role="publisher",route="/rtc/{channel}/{role}/{tokentype}/{uid}"} 8865
broker_decisions_total{outcome="granted",role="subscriber",route="/v1/tokens"} 1.5e+06
broker_decisions_total{outcome="unavailable",role="publisher",route="/rtc/{channel}/{role}/{tokentype}/{uid}"} 50
broker_audit_batch_size_bucket{le="+Inf"} 400
broker_audit_batch_size_sum 8915
broker_audit_batch_size_count 400
broker_audit_commit_seconds_sum 1.25
broker_audit_commit_seconds_count 401
broker_http_request_duration_seconds_sum{method="GET",route="/rtc/{channel}/{role}/{tokentype}/{uid}",status="200"} 40.5
broker_http_request_duration_seconds_count{method="GET",route="/rtc/{channel}/{role}/{tokentype}/{uid}",status="200"} 8865
broker_http_request_duration_seconds_sum{method="GET",route="/readyz",status="200"} 0.5
broker_http_request_duration_seconds_count{method="GET",route="/readyz",status="200"} 3
go_goroutines 63
`

func TestParseMetrics_SumsTheSamplesTheReportNeeds(t *testing.T) {
	got, err := parseMetrics(strings.NewReader(metricsText))
	if err != nil {
		t.Fatal(err)
	}
	want := snapshot{Decisions: map[string]int{"granted": 1508865, "unavailable": 50},
		CommitSeconds: 1.25, Commits: 401, BatchRecords: 8915, Batches: 400, ServerSeconds: 41, ServerRequests: 8868}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("parseMetrics =\n%+v\nwant\n%+v", got, want)
	}
}

func TestParseMetrics_RefusesMalformedSamples(t *testing.T) {
	for name, text := range map[string]string{
		"value not a number":    `broker_decisions_total{outcome="granted"} many`,
		"decision sans outcome": `broker_decisions_total{route="/ping"} 3`,
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := parseMetrics(strings.NewReader(text)); err == nil {
				t.Errorf("parseMetrics accepted %q", text)
			}
		})
	}
}

func TestSnapshotSub_KeepsOnlyWhatChanged(t *testing.T) {
	before := snapshot{Decisions: map[string]int{"granted": 10, "denied": 2}, Commits: 5, BatchRecords: 12, Batches: 5}
	after := snapshot{Decisions: map[string]int{"granted": 30, "denied": 2, "unavailable": 1}, Commits: 9, BatchRecords: 33, Batches: 9}
	d := after.sub(before)
	if !maps.Equal(d.Decisions, map[string]int{"granted": 20, "unavailable": 1}) || d.Commits != 4 || d.BatchRecords != 21 || d.Batches != 4 {
		t.Errorf("sub = %+v", d)
	}
}
