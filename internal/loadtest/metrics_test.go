package loadtest

import (
	"maps"
	"reflect"
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
