package load

import (
	"bufio"
	"fmt"
	"io"
	"maps"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// decisionLine matches a decision counter in the Prometheus text format; its
// route label holds braces ("/rtc/{channel}/…").
var decisionLine = regexp.MustCompile(`^broker_decisions_total\{.*\boutcome="([^"]+)".*\} (\S+)$`)

// parseDecisions sums broker_decisions_total by outcome.
func parseDecisions(r io.Reader) (map[string]int, error) {
	out := map[string]int{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		m := decisionLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		v, err := strconv.ParseFloat(m[2], 64)
		if err != nil {
			return nil, fmt.Errorf("decision counter %q: %w", sc.Text(), err)
		}
		out[m[1]] += int(v)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read metrics: %w", err)
	}
	return out, nil
}

func TestParseDecisions_SumsOutcomesAcrossRoutesAndRoles(t *testing.T) {
	const text = `# HELP broker_decisions_total Token decisions by outcome (granted, denied, invalid, unavailable), role and route.
# TYPE broker_decisions_total counter
broker_decisions_total{outcome="granted",role="publisher",route="/rtc/{channel}/{role}/{tokentype}/{uid}"} 8865
broker_decisions_total{outcome="granted",role="subscriber",route="/v1/tokens"} 1.5e+06
broker_decisions_total{outcome="unavailable",role="publisher",route="/rtc/{channel}/{role}/{tokentype}/{uid}"} 50
broker_http_request_duration_seconds_count{method="GET",route="/rtc/{channel}/{role}/{tokentype}/{uid}",status="200"} 8865
`
	got, err := parseDecisions(strings.NewReader(text))
	want := map[string]int{"granted": 1508865, "unavailable": 50}
	if err != nil || !maps.Equal(got, want) {
		t.Errorf("parseDecisions = %v, %v; want %v", got, err, want)
	}
	if _, err := parseDecisions(strings.NewReader(`broker_decisions_total{outcome="granted"} many`)); err == nil {
		t.Error("parseDecisions accepted a counter that is not a number")
	}
}
