package loadtest

import (
	"maps"
	"math"
	"reflect"
	"slices"
	"strings"
	"testing"
)

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
broker_audit_chain_conflicts_total{kind="head_moved"} 120
broker_audit_chain_conflicts_total{kind="stale_policy"} 3
broker_http_request_duration_seconds_sum{method="GET",route="/rtc/{channel}/{role}/{tokentype}/{uid}",status="200"} 40.5
broker_http_request_duration_seconds_count{method="GET",route="/rtc/{channel}/{role}/{tokentype}/{uid}",status="200"} 8865
broker_http_request_duration_seconds_sum{method="GET",route="/readyz",status="200"} 0.5
broker_http_request_duration_seconds_count{method="GET",route="/readyz",status="200"} 3
go_goroutines 63
`

func TestParseMetrics_SumsTheSamplesTheReportNeeds(t *testing.T) {
	got, err := ParseMetrics(strings.NewReader(metricsText))
	if err != nil {
		t.Fatal(err)
	}
	want := Snapshot{Decisions: map[string]int{"granted": 1508865, "unavailable": 50},
		CommitSeconds: 1.25, Commits: 401, BatchRecords: 8915, Batches: 400, HeadMoved: 120, ServerSeconds: 41, ServerRequests: 8868}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ParseMetrics =\n%+v\nwant\n%+v", got, want)
	}
}

func TestParseMetrics_RefusesMalformedSamples(t *testing.T) {
	for name, text := range map[string]string{
		"value not a number":    `broker_decisions_total{outcome="granted"} many`,
		"decision sans outcome": `broker_decisions_total{route="/ping"} 3`,
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := ParseMetrics(strings.NewReader(text)); err == nil {
				t.Errorf("ParseMetrics accepted %q", text)
			}
		})
	}
}

func TestSnapshotSub_KeepsOnlyWhatChanged(t *testing.T) {
	before := Snapshot{Decisions: map[string]int{"granted": 10, "denied": 2}, Commits: 5, BatchRecords: 12, Batches: 5}
	after := Snapshot{Decisions: map[string]int{"granted": 30, "denied": 2, "unavailable": 1}, Commits: 9, BatchRecords: 33, Batches: 9}
	d := after.Sub(before)
	if !maps.Equal(d.Decisions, map[string]int{"granted": 20, "unavailable": 1}) || d.Commits != 4 || d.BatchRecords != 21 || d.Batches != 4 {
		t.Errorf("Sub = %+v", d)
	}
}

func TestSnapshotAdd_SumsReplicas(t *testing.T) {
	a := Snapshot{Decisions: map[string]int{"granted": 10}, Commits: 5, BatchRecords: 12, Batches: 5, CommitSeconds: 0.5}
	b := Snapshot{Decisions: map[string]int{"granted": 3, "denied": 1}, Commits: 2, BatchRecords: 4, Batches: 2, CommitSeconds: 0.25}
	s := Snapshot{}.Add(a).Add(b)
	if !maps.Equal(s.Decisions, map[string]int{"granted": 13, "denied": 1}) || s.Commits != 7 || s.BatchRecords != 16 || s.Batches != 7 || s.CommitSeconds != 0.75 {
		t.Errorf("Add = %+v", s)
	}
}

func TestSumMetric_SumsOverLabelsAndTellsAbsent(t *testing.T) {
	text := metricsText + "# TYPE broker_audit_appends_shed_total counter\nbroker_audit_appends_shed_total 1234\n"
	for _, tt := range []struct {
		name      string
		want      float64
		wantFound bool
	}{
		{"broker_audit_appends_shed_total", 1234, true},
		{"broker_audit_chain_conflicts_total", 123, true}, // two label sets
		{"broker_decisions_total", 1508915, true},
		{"broker_audit_batch_size", 0, false}, // only its _bucket, _sum and _count exist
		{"broker_audit_appends_shed", 0, false},
	} {
		got, found, err := SumMetric(strings.NewReader(text), tt.name)
		if err != nil || got != tt.want || found != tt.wantFound {
			t.Errorf("SumMetric(%s) = %v, %v, %v; want %v, %v", tt.name, got, found, err, tt.want, tt.wantFound)
		}
	}
	if _, _, err := SumMetric(strings.NewReader("broker_audit_appends_shed_total lots\n"), "broker_audit_appends_shed_total"); err == nil {
		t.Error("SumMetric accepted a value that is not a number")
	}
}

const histogramText = `# TYPE broker_audit_commit_seconds histogram
broker_audit_commit_seconds_bucket{le="0.001"} 10
broker_audit_commit_seconds_bucket{le="0.0025"} 90
broker_audit_commit_seconds_bucket{le="0.005"} 99
broker_audit_commit_seconds_bucket{le="0.01"} 100
broker_audit_commit_seconds_bucket{le="+Inf"} 100
broker_audit_commit_seconds_sum 0.2
broker_audit_commit_seconds_count 100
broker_audit_batch_size_bucket{le="1"} 3
`

func TestParseHistogram_ReadsCumulativeBuckets(t *testing.T) {
	h, err := ParseHistogram(strings.NewReader(histogramText), "broker_audit_commit_seconds")
	if err != nil {
		t.Fatal(err)
	}
	want := Histogram{Bounds: []float64{0.001, 0.0025, 0.005, 0.01, math.Inf(1)}, Counts: []float64{10, 90, 99, 100, 100}}
	if !reflect.DeepEqual(h, want) {
		t.Errorf("ParseHistogram =\n%+v\nwant\n%+v", h, want)
	}
	if lo, hi, ok := h.Largest(); !ok || lo != 0.005 || hi != 0.01 {
		t.Errorf("Largest = (%v, %v], %v; want (0.005, 0.01]", lo, hi, ok)
	}
	// Labels other than le are summed over: two replicas' buckets.
	two := strings.ReplaceAll(histogramText, `{le=`, `{replica="a",le=`) + strings.ReplaceAll(histogramText, `{le=`, `{replica="b",le=`)
	h2, err := ParseHistogram(strings.NewReader(two), "broker_audit_commit_seconds")
	if err != nil || h2.Counts[4] != 200 {
		t.Errorf("ParseHistogram over two label sets = %+v, %v; want +Inf count 200", h2, err)
	}
	if absent, err := ParseHistogram(strings.NewReader(histogramText), "broker_http_request_duration_seconds"); err != nil || len(absent.Bounds) != 0 {
		t.Errorf("absent histogram = %+v, %v", absent, err)
	}
	for name, bad := range map[string]string{
		"no le":     `broker_audit_commit_seconds_bucket{replica="a"} 3`,
		"bad bound": `broker_audit_commit_seconds_bucket{le="soon"} 3`,
		"bad count": `broker_audit_commit_seconds_bucket{le="1"} three`,
	} {
		if _, err := ParseHistogram(strings.NewReader(bad), "broker_audit_commit_seconds"); err == nil {
			t.Errorf("ParseHistogram accepted %s: %q", name, bad)
		}
	}
}

func TestHistogram_SubAndLargest(t *testing.T) {
	before := Histogram{Bounds: []float64{1, 2, 5, math.Inf(1)}, Counts: []float64{5, 8, 9, 9}}
	after := Histogram{Bounds: []float64{1, 2, 5, math.Inf(1)}, Counts: []float64{15, 20, 21, 22}}
	d := after.Sub(before)
	if want := []float64{10, 12, 12, 13}; !slices.Equal(d.Counts, want) {
		t.Errorf("Sub counts = %v, want %v", d.Counts, want)
	}
	if lo, hi, ok := d.Largest(); !ok || lo != 5 || !math.IsInf(hi, 1) {
		t.Errorf("Largest = (%v, %v], %v; want (5, +Inf]", lo, hi, ok)
	}
	if lo, hi, ok := (Histogram{Bounds: []float64{1, 2}, Counts: []float64{4, 4}}).Largest(); !ok || lo != 0 || hi != 1 {
		t.Errorf("Largest of a first-bucket histogram = (%v, %v], %v; want (0, 1]", lo, hi, ok)
	}
	if _, _, ok := after.Sub(after).Largest(); ok {
		t.Error("Largest of no observations says there is one")
	}
	if fresh := after.Sub(Histogram{}); !slices.Equal(fresh.Counts, after.Counts) {
		t.Errorf("Sub of an empty histogram = %v", fresh.Counts)
	}
}
