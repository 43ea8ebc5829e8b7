package loadtest

import (
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

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
		want WrkResult
	}{
		{"clean run", wrkClean, WrkResult{Requests: 11704, Seconds: 3.02, RPS: 3870.62,
			P50: 14390 * time.Microsecond, P75: 28070 * time.Microsecond, P90: 45980 * time.Microsecond, P99: 107060 * time.Microsecond}},
		{"errors and mixed units", wrkWithErrors, func() WrkResult {
			r := WrkResult{Requests: 18757, Seconds: 1.09, RPS: 17177.73, Non2xx: 18757,
				P50: 766 * time.Microsecond, P75: 1020 * time.Microsecond, P90: 2500 * time.Microsecond, P99: 1290 * time.Millisecond}
			r.SocketErrors.Connect, r.SocketErrors.Read, r.SocketErrors.Timeout = 1, 12, 3
			return r
		}()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseWrk(tt.out)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("ParseWrk =\n%+v\nwant\n%+v", got, tt.want)
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
			_, err := ParseWrk(tt.out)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParseWrk error = %v, want one mentioning %q", err, tt.wantErr)
			}
		})
	}
}

func TestReconcile_OneRowPerAnsweredDecision(t *testing.T) {
	tests := []struct {
		name           string
		answers        []Answer
		rows           map[string]int
		wantMatched    int
		wantWrong      []string
		wantUnanswered int
	}{
		{
			name:        "every grant and denial has its row",
			answers:     []Answer{{Status: 200, RequestID: "a"}, {Status: 200, RequestID: "b"}, {Status: 403, RequestID: "c"}},
			rows:        map[string]int{"a": 1, "b": 1, "c": 1},
			wantMatched: 3,
		},
		{
			name:           "rows of requests cut off at the end are unanswered, not errors",
			answers:        []Answer{{Status: 200, RequestID: "a"}},
			rows:           map[string]int{"a": 1, "x": 1, "y": 1},
			wantMatched:    1,
			wantUnanswered: 2,
		},
		{
			name:        "a grant without a row is wrong",
			answers:     []Answer{{Status: 200, RequestID: "a"}, {Status: 200, RequestID: "b"}},
			rows:        map[string]int{"a": 1},
			wantMatched: 1,
			wantWrong:   []string{"b status=200 rows=0 want 1"},
		},
		{
			name:        "a grant with two rows is wrong",
			answers:     []Answer{{Status: 200, RequestID: "a"}},
			rows:        map[string]int{"a": 2},
			wantWrong:   []string{"a status=200 rows=2 want 1"},
			wantMatched: 0,
		},
		{
			name:        "a 503 must have no row: the log failed closed",
			answers:     []Answer{{Status: 503, RequestID: "a"}, {Status: 503, RequestID: "b"}},
			rows:        map[string]int{"b": 1},
			wantMatched: 1,
			wantWrong:   []string{"b status=503 rows=1 want 0"},
		},
		{
			name:        "an id answered twice is wrong",
			answers:     []Answer{{Status: 200, RequestID: "a"}, {Status: 200, RequestID: "a"}},
			rows:        map[string]int{"a": 1},
			wantMatched: 1,
			wantWrong:   []string{"a status=200 answered twice"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Reconcile(tt.answers, tt.rows)
			if got.Matched != tt.wantMatched || got.Unanswered != tt.wantUnanswered ||
				strings.Join(got.Wrong, "\n") != strings.Join(tt.wantWrong, "\n") {
				t.Errorf("Reconcile = matched %d, unanswered %d, wrong %q; want %d, %d, %q",
					got.Matched, got.Unanswered, got.Wrong, tt.wantMatched, tt.wantUnanswered, tt.wantWrong)
			}
		})
	}
}

func TestReadAnswered_ParsesLinesAndRefusesGarbage(t *testing.T) {
	dir := t.TempDir()
	good := dir + "/good"
	// answered.lua's lines, then overload.lua's (with Retry-After).
	if err := os.WriteFile(good, []byte("200 abc\n403 def\n200 ghi -\n503 jkl 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := ReadAnswered(good)
	want := []Answer{{Status: 200, RequestID: "abc"}, {Status: 403, RequestID: "def"},
		{Status: 200, RequestID: "ghi"}, {Status: 503, RequestID: "jkl", RetryAfter: "1"}}
	if err != nil || !slices.Equal(got, want) {
		t.Fatalf("ReadAnswered = %v, %v; want %v", got, err, want)
	}
	for name, text := range map[string]string{
		"one field":         "200 abc\nnonsense\n",
		"status not a code": "200 abc\nOK abc\n",
		"four fields":       "200 abc\n503 abc 1 more\n",
	} {
		bad := dir + "/bad"
		if err := os.WriteFile(bad, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := ReadAnswered(bad); err == nil || !strings.Contains(err.Error(), "line 2") {
			t.Errorf("ReadAnswered on %s: %v, want an error naming line 2", name, err)
		}
	}
}
