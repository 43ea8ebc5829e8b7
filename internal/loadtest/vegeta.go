package loadtest

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"net/textproto"
	"slices"
	"strconv"
	"time"
)

// VegetaResult is one request of a vegeta attack, as `vegeta encode --to
// csv` writes it.
type VegetaResult struct {
	Start     time.Time     // when vegeta sent it
	Status    int           // the HTTP status; 0 when no answer came (Error says why)
	Latency   time.Duration // from sending to the whole answer (or the error)
	Error     string        // vegeta's error: a transport error, or the status line of a non-2xx/3xx answer
	RequestID string        // the answer's X-Request-Id, "" if none
}

// OK reports whether vegeta counts the request as a success: an answer
// with a 2xx or 3xx status and no error.
func (r VegetaResult) OK() bool { return r.Error == "" && r.Status >= 200 && r.Status < 400 }

// ReadVegetaCSV reads the results `vegeta encode --to csv` writes (vegeta
// v12: no header line; columns: start in Unix nanoseconds, status, latency in
// nanoseconds, bytes out, bytes in, error, body (base64), attack name, seq,
// method, URL, response headers (base64 of the wire format)), in the order
// they come.
func ReadVegetaCSV(r io.Reader) ([]VegetaResult, error) {
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = 12
	cr.ReuseRecord = true
	var out []VegetaResult
	for line := 1; ; line++ {
		f, err := cr.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("vegeta results: %w", err)
		}
		res, err := vegetaRecord(f)
		if err != nil {
			return nil, fmt.Errorf("vegeta results line %d: %w", line, err)
		}
		out = append(out, res)
	}
}

// vegetaRecord converts one CSV record of vegeta's results.
func vegetaRecord(f []string) (VegetaResult, error) {
	start, err := strconv.ParseInt(f[0], 10, 64)
	if err != nil {
		return VegetaResult{}, fmt.Errorf("timestamp %q: %w", f[0], err)
	}
	status, err := strconv.Atoi(f[1])
	if err != nil {
		return VegetaResult{}, fmt.Errorf("status %q: %w", f[1], err)
	}
	latency, err := strconv.ParseInt(f[2], 10, 64)
	if err != nil {
		return VegetaResult{}, fmt.Errorf("latency %q: %w", f[2], err)
	}
	res := VegetaResult{Start: time.Unix(0, start), Status: status, Latency: time.Duration(latency), Error: f[5]}
	if f[11] != "" {
		raw, err := base64.StdEncoding.DecodeString(f[11])
		if err != nil {
			return VegetaResult{}, fmt.Errorf("headers: %w", err)
		}
		h, err := textproto.NewReader(bufio.NewReader(bytes.NewReader(raw))).ReadMIMEHeader()
		if err != nil && !errors.Is(err, io.EOF) {
			return VegetaResult{}, fmt.Errorf("headers: %w", err)
		}
		res.RequestID = h.Get("X-Request-Id")
	}
	return res, nil
}

// VegetaSummary is what a fixed-rate attack achieved, over all its requests.
type VegetaSummary struct {
	Requests int
	OK       int            // successes (VegetaResult.OK)
	ByStatus map[int]int    // requests by status, 0 for no answer
	Errors   map[string]int // requests without an answer (status 0), by vegeta's error
	// Latency percentiles (nearest rank) and maximum over every request,
	// failures included, as vegeta's own report counts them.
	P50, P99, P999, Max time.Duration
	// Rate is the requests sent per second, from the first send to the
	// last; Throughput the successes per second, from the first send to the
	// last answer.
	Rate, Throughput float64
}

// SuccessRatio is the share of requests that succeeded.
func (s VegetaSummary) SuccessRatio() float64 {
	if s.Requests == 0 {
		return 0
	}
	return float64(s.OK) / float64(s.Requests)
}

// SummarizeVegeta summarizes an attack's results.
func SummarizeVegeta(rs []VegetaResult) VegetaSummary {
	s := VegetaSummary{Requests: len(rs), ByStatus: map[int]int{}, Errors: map[string]int{}}
	if len(rs) == 0 {
		return s
	}
	lat := make([]time.Duration, len(rs))
	first, last, end := rs[0].Start, rs[0].Start, rs[0].Start
	for i, r := range rs {
		lat[i] = r.Latency
		s.ByStatus[r.Status]++
		if r.OK() {
			s.OK++
		}
		if r.Status == 0 {
			s.Errors[r.Error]++
		}
		if r.Start.Before(first) {
			first = r.Start
		}
		if r.Start.After(last) {
			last = r.Start
		}
		if e := r.Start.Add(r.Latency); e.After(end) {
			end = e
		}
	}
	slices.Sort(lat)
	s.P50, s.P99, s.P999, s.Max = percentile(lat, 0.50), percentile(lat, 0.99), percentile(lat, 0.999), lat[len(lat)-1]
	if d := last.Sub(first).Seconds(); d > 0 {
		s.Rate = float64(len(rs)-1) / d
	}
	if d := end.Sub(first).Seconds(); d > 0 {
		s.Throughput = float64(s.OK) / d
	}
	return s
}

// percentile is the nearest-rank p-quantile (0 < p ≤ 1) of sorted, which
// must not be empty: the smallest value at least a share p of the values
// are less than or equal to.
func percentile(sorted []time.Duration, p float64) time.Duration {
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// VegetaSecond is one second of an attack: the requests sent in it.
type VegetaSecond struct {
	Requests int
	Errors   int           // those that did not succeed
	P99      time.Duration // their latency's 99th percentile (nearest rank); 0 without requests
	Max      time.Duration
}

// PerSecond buckets results by the second, counted from origin, in which
// vegeta sent them: element i covers [origin+i s, origin+(i+1) s). Seconds
// without a request up to the last one are there, empty; a request sent
// before origin counts in the first second.
func PerSecond(rs []VegetaResult, origin time.Time) []VegetaSecond {
	var lat [][]time.Duration
	var out []VegetaSecond
	for _, r := range rs {
		i := max(int(r.Start.Sub(origin)/time.Second), 0)
		for len(out) <= i {
			out = append(out, VegetaSecond{})
			lat = append(lat, nil)
		}
		out[i].Requests++
		if !r.OK() {
			out[i].Errors++
		}
		lat[i] = append(lat[i], r.Latency)
	}
	for i, l := range lat {
		if len(l) == 0 {
			continue
		}
		slices.Sort(l)
		out[i].P99, out[i].Max = percentile(l, 0.99), l[len(l)-1]
	}
	return out
}
