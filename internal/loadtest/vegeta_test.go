package loadtest

import (
	"encoding/base64"
	"fmt"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"
)

// vegetaLine is a line as `vegeta encode --to csv` (v12.13.0) writes it.
func vegetaLine(startNS int64, status int, latency time.Duration, errText, headers string) string {
	h := ""
	if headers != "" {
		h = base64.StdEncoding.EncodeToString([]byte(headers))
	}
	if strings.ContainsAny(errText, `,"`) {
		errText = `"` + strings.ReplaceAll(errText, `"`, `""`) + `"`
	}
	return fmt.Sprintf("%d,%d,%d,0,0,%s,,,0,GET,http://127.0.0.1:8080/rtc/bench/publisher/uid/42/?expiry=3600,%s\n",
		startNS, status, latency.Nanoseconds(), errText, h)
}

func TestReadVegetaCSV_ReadsStatusLatencyErrorAndRequestID(t *testing.T) {
	const t0 = 1796610030797496810
	in := vegetaLine(t0, 200, 7352019, "", "Content-Type: application/json\r\nX-Request-Id: 9f2c\r\n\r\n") +
		vegetaLine(t0+1000, 503, 2*time.Millisecond, "503 Service Unavailable", "Retry-After: 1\r\nX-Request-Id: 9f2d\r\n\r\n") +
		vegetaLine(t0+2000, 0, 10*time.Second, `Get "http://127.0.0.1:8080/": context deadline exceeded, or else`, "")
	got, err := ReadVegetaCSV(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []VegetaResult{
		{Start: time.Unix(0, t0), Status: 200, Latency: 7352019, RequestID: "9f2c"},
		{Start: time.Unix(0, t0+1000), Status: 503, Latency: 2 * time.Millisecond, Error: "503 Service Unavailable", RequestID: "9f2d"},
		{Start: time.Unix(0, t0+2000), Status: 0, Latency: 10 * time.Second, Error: `Get "http://127.0.0.1:8080/": context deadline exceeded, or else`},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ReadVegetaCSV =\n%+v\nwant\n%+v", got, want)
	}
	if !got[0].OK() || got[1].OK() || got[2].OK() {
		t.Errorf("OK = %v %v %v, want true false false", got[0].OK(), got[1].OK(), got[2].OK())
	}
}

func TestReadVegetaCSV_RefusesOtherInput(t *testing.T) {
	for name, in := range map[string]string{
		"JSON, not CSV":      `{"attack":"","seq":0,"code":200}` + "\n",
		"status not number":  strings.Replace(vegetaLine(1, 200, 1, "", ""), ",200,", ",OK,", 1),
		"headers not base64": strings.TrimSuffix(vegetaLine(1, 200, 1, "", ""), "\n") + "%%%\n",
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := ReadVegetaCSV(strings.NewReader(in)); err == nil {
				t.Errorf("ReadVegetaCSV accepted %q", in)
			}
		})
	}
}

// results makes n results sent every step from start, with latencies
// from lat in turn.
func results(start time.Time, n int, step time.Duration, lat ...time.Duration) []VegetaResult {
	out := make([]VegetaResult, n)
	for i := range out {
		out[i] = VegetaResult{Start: start.Add(time.Duration(i) * step), Status: 200, Latency: lat[i%len(lat)]}
	}
	return out
}

func TestSummarizeVegeta_PercentilesRatesAndFailures(t *testing.T) {
	start := time.Unix(1000, 0)
	// 1000 requests, 1 ms apart, latencies 1..1000 µs; the last two fail.
	rs := make([]VegetaResult, 1000)
	for i := range rs {
		rs[i] = VegetaResult{Start: start.Add(time.Duration(i) * time.Millisecond), Status: 200, Latency: time.Duration(i+1) * time.Microsecond}
	}
	rs[998].Status, rs[998].Error = 503, "503 Service Unavailable" // answered: not in Errors
	rs[999] = VegetaResult{Start: rs[999].Start, Status: 0, Latency: time.Second, Error: "timeout"}
	s := SummarizeVegeta(rs)
	if s.Requests != 1000 || s.OK != 998 || s.ByStatus[200] != 998 || s.ByStatus[503] != 1 || s.ByStatus[0] != 1 ||
		!reflect.DeepEqual(s.Errors, map[string]int{"timeout": 1}) {
		t.Errorf("counts = %+v", s)
	}
	if s.P50 != 500*time.Microsecond || s.P99 != 990*time.Microsecond || s.P999 != 999*time.Microsecond || s.Max != time.Second {
		t.Errorf("percentiles p50 %s p99 %s p99.9 %s max %s; want 500µs 990µs 999µs 1s", s.P50, s.P99, s.P999, s.Max)
	}
	if s.Rate != 1000 { // 999 gaps of 1 ms
		t.Errorf("rate = %v, want 1000", s.Rate)
	}
	// The last answer comes at 0.999 s + 1 s.
	if want := 998 / 1.999; math.Abs(s.Throughput-want) > 1e-9 {
		t.Errorf("throughput = %v, want %v", s.Throughput, want)
	}
	if r := s.SuccessRatio(); r != 0.998 {
		t.Errorf("success ratio = %v, want 0.998", r)
	}
	if e := SummarizeVegeta(nil); e.Requests != 0 || e.SuccessRatio() != 0 {
		t.Errorf("empty summary = %+v", e)
	}
}

func TestPercentile_NearestRank(t *testing.T) {
	xs := []time.Duration{10, 20, 30, 40}
	for _, tt := range []struct {
		p    float64
		want time.Duration
	}{{0.25, 10}, {0.26, 20}, {0.5, 20}, {0.99, 40}, {1, 40}, {0.001, 10}} {
		if got := percentile(xs, tt.p); got != tt.want {
			t.Errorf("percentile(%v) = %v, want %v", tt.p, got, tt.want)
		}
	}
	if got := percentile([]time.Duration{7}, 0.999); got != 7 {
		t.Errorf("percentile of one value = %v", got)
	}
}

func TestPerSecond_BucketsBySendTime(t *testing.T) {
	origin := time.Unix(2000, 0)
	var rs []VegetaResult
	rs = append(rs, results(origin.Add(-time.Millisecond), 1, 0, time.Millisecond)...) // before origin: second 0
	// 100 requests 5 ms apart from 10 ms: all in second 0 (the last at 505 ms).
	rs = append(rs, results(origin.Add(10*time.Millisecond), 100, 5*time.Millisecond, time.Millisecond)...)
	rs[50].Latency = 30 * time.Millisecond // second 0's worst, above its p99
	rs = append(rs, results(origin.Add(3*time.Second+500*time.Millisecond), 2, 0, 2*time.Millisecond)...)
	rs[len(rs)-1].Status, rs[len(rs)-1].Error = 503, "503 Service Unavailable"
	got := PerSecond(rs, origin)
	want := []VegetaSecond{
		{Requests: 101, P99: time.Millisecond, Max: 30 * time.Millisecond},
		{}, {},
		{Requests: 2, Errors: 1, P99: 2 * time.Millisecond, Max: 2 * time.Millisecond},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("PerSecond =\n%+v\nwant\n%+v", got, want)
	}
}
