package load

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// wrkResult is what one wrk run reports.
type wrkResult struct {
	Requests     int64   // completed responses, any status ("N requests in …")
	Seconds      float64 // the run's measured duration
	RPS          float64 // "Requests/sec"
	Non2xx       int64   // "Non-2xx or 3xx responses" (counted in Requests)
	SocketErrors struct {
		Connect, Read, Write, Timeout int64
	}
	P50, P75, P90, P99 time.Duration
}

var (
	wrkTotal   = regexp.MustCompile(`(?m)^\s*(\d+) requests in ([0-9.]+)(us|ms|s|m|h),`)
	wrkRPS     = regexp.MustCompile(`(?m)^Requests/sec:\s+([0-9.]+)\s*$`)
	wrkNon2xx  = regexp.MustCompile(`(?m)^\s*Non-2xx or 3xx responses: (\d+)\s*$`)
	wrkSockets = regexp.MustCompile(`(?m)^\s*Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)\s*$`)
	wrkPercent = regexp.MustCompile(`(?m)^\s*(50|75|90|99)%\s+([0-9.]+(?:us|ms|s|m|h))\s*$`)
)

// parseWrk reads the text wrk prints with --latency. Lines wrk omits when
// they would be zero (non-2xx, socket errors) count as zero; the totals and
// the four latency percentiles are required.
func parseWrk(out string) (wrkResult, error) {
	var r wrkResult
	m := wrkTotal.FindStringSubmatch(out)
	if m == nil {
		return r, errors.New(`wrk output has no "N requests in T" line`)
	}
	r.Requests, _ = strconv.ParseInt(m[1], 10, 64)
	d, err := time.ParseDuration(m[2] + m[3])
	if err != nil {
		return r, fmt.Errorf("wrk run duration %q: %w", m[2]+m[3], err)
	}
	r.Seconds = d.Seconds()
	m = wrkRPS.FindStringSubmatch(out)
	if m == nil {
		return r, errors.New(`wrk output has no "Requests/sec" line`)
	}
	r.RPS, _ = strconv.ParseFloat(m[1], 64)
	if m := wrkNon2xx.FindStringSubmatch(out); m != nil {
		r.Non2xx, _ = strconv.ParseInt(m[1], 10, 64)
	}
	if m := wrkSockets.FindStringSubmatch(out); m != nil {
		s := &r.SocketErrors
		for i, p := range []*int64{&s.Connect, &s.Read, &s.Write, &s.Timeout} {
			*p, _ = strconv.ParseInt(m[i+1], 10, 64)
		}
	}
	found := map[string]time.Duration{}
	for _, m := range wrkPercent.FindAllStringSubmatch(out, -1) {
		d, err := time.ParseDuration(m[2])
		if err != nil {
			return r, fmt.Errorf("wrk %s%% latency %q: %w", m[1], m[2], err)
		}
		found[m[1]] = d
	}
	for _, p := range []struct {
		name string
		dst  *time.Duration
	}{{"50", &r.P50}, {"75", &r.P75}, {"90", &r.P90}, {"99", &r.P99}} {
		d, ok := found[p.name]
		if !ok {
			return r, fmt.Errorf("wrk output has no %s%% latency (run it with --latency)", p.name)
		}
		*p.dst = d
	}
	return r, nil
}

const wrkClean = `Running 15s test @ http://127.0.0.1:18099/rtc/bench/publisher/uid/42/?expiry=3600
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    18.79ms   22.70ms 170.20ms   87.24%
    Req/Sec     3.91k     1.22k    5.02k    90.00%
  Latency Distribution
     50%   14.39ms
     75%   28.07ms
     90%   45.98ms
     99%  107.06ms
  11704 requests in 3.02s, 3.07MB read
Requests/sec:   3870.62
Transfer/sec:      1.01MB
`

const wrkWithErrors = `Running 1s test @ http://127.0.0.1:18099/rtc/bench/publisher/uid/x/
  1 threads and 5 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   766.00us   20.78ms    1.29s    90.76%
    Req/Sec    18.50k    13.71k   36.65k    60.00%
  Latency Distribution
     50%  766.00us
     75%    1.02ms
     90%    2.50ms
     99%    1.29s
  18757 requests in 1.09s, 3.20MB read
  Socket errors: connect 1, read 12, write 0, timeout 3
  Non-2xx or 3xx responses: 18757
Requests/sec:  17177.73
Transfer/sec:      2.93MB
`

func TestParseWrk_ReadsTotalsRateAndPercentiles(t *testing.T) {
	tests := []struct {
		name string
		out  string
		want wrkResult
	}{
		{"clean run", wrkClean, wrkResult{Requests: 11704, Seconds: 3.02, RPS: 3870.62,
			P50: 14390 * time.Microsecond, P75: 28070 * time.Microsecond, P90: 45980 * time.Microsecond, P99: 107060 * time.Microsecond}},
		{"errors and mixed units", wrkWithErrors, func() wrkResult {
			r := wrkResult{Requests: 18757, Seconds: 1.09, RPS: 17177.73, Non2xx: 18757,
				P50: 766 * time.Microsecond, P75: 1020 * time.Microsecond, P90: 2500 * time.Microsecond, P99: 1290 * time.Millisecond}
			r.SocketErrors.Connect, r.SocketErrors.Read, r.SocketErrors.Timeout = 1, 12, 3
			return r
		}()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseWrk(tt.out)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("parseWrk =\n%+v\nwant\n%+v", got, tt.want)
			}
		})
	}
}

func TestParseWrk_RefusesIncompleteOutput(t *testing.T) {
	tests := []struct {
		name, out, wantErr string
	}{
		{"empty", "", "requests in"},
		{"no rate", strings.Replace(wrkClean, "Requests/sec:", "Req:", 1), "Requests/sec"},
		{"run without --latency", strings.Replace(wrkClean, "     99%  107.06ms\n", "", 1), "99%"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseWrk(tt.out)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("parseWrk error = %v, want one mentioning %q", err, tt.wantErr)
			}
		})
	}
}
