package loadtest

import (
	"bufio"
	"fmt"
	"io"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Snapshot is what a load harness reads from the broker's /metrics.
type Snapshot struct {
	Decisions map[string]int // broker_decisions_total by outcome
	// The issuance log's group commits: time spent and records written.
	CommitSeconds, Commits float64 // broker_audit_commit_seconds _sum, _count
	BatchRecords, Batches  float64 // broker_audit_batch_size _sum, _count
	// Batches linked again because another replica had appended first
	// (broker_audit_chain_conflicts_total{kind="head_moved"}): one more round trip each.
	HeadMoved float64
	// Time inside the broker's handlers, all routes.
	ServerSeconds, ServerRequests float64 // broker_http_request_duration_seconds _sum, _count
}

// metricSample matches one sample line of the Prometheus text format. Label
// values may hold braces (the route label is "/rtc/{channel}/…").
var (
	metricSample    = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$`)
	decisionOutcome = regexp.MustCompile(`\boutcome="([^"]*)"`)
)

// ParseMetrics reads the samples a Snapshot holds from the broker's
// /metrics (Prometheus text format), summed over labels; other samples are
// skipped.
func ParseMetrics(r io.Reader) (Snapshot, error) {
	s := Snapshot{Decisions: map[string]int{}}
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
		m := metricSample.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		name, labels := m[1], m[2]
		if name == "broker_audit_chain_conflicts_total" {
			if strings.Contains(labels, `kind="head_moved"`) {
				v, err := strconv.ParseFloat(m[3], 64)
				if err != nil {
					return Snapshot{}, fmt.Errorf("metric %q: %w", sc.Text(), err)
				}
				s.HeadMoved += v
			}
			continue
		}
		dst, wanted := sums[name]
		if !wanted && name != "broker_decisions_total" {
			continue
		}
		v, err := strconv.ParseFloat(m[3], 64)
		if err != nil {
			return Snapshot{}, fmt.Errorf("metric %q: %w", sc.Text(), err)
		}
		if wanted {
			*dst += v
			continue
		}
		o := decisionOutcome.FindStringSubmatch(labels)
		if o == nil {
			return Snapshot{}, fmt.Errorf("metric %q has no outcome label", sc.Text())
		}
		s.Decisions[o[1]] += int(v)
	}
	if err := sc.Err(); err != nil {
		return Snapshot{}, fmt.Errorf("read metrics: %w", err)
	}
	return s, nil
}

// Sub returns what happened between before and s: the differences, with
// only the decision outcomes whose count changed.
func (s Snapshot) Sub(before Snapshot) Snapshot { return s.plus(before, -1) }

// Add returns the sum of s and o: the counters of several replicas.
func (s Snapshot) Add(o Snapshot) Snapshot { return s.plus(o, 1) }

// plus returns s + sign×o, dropping decision outcomes that come to zero.
func (s Snapshot) plus(o Snapshot, sign int) Snapshot {
	f := float64(sign)
	d := Snapshot{Decisions: map[string]int{},
		CommitSeconds: s.CommitSeconds + f*o.CommitSeconds, Commits: s.Commits + f*o.Commits,
		BatchRecords: s.BatchRecords + f*o.BatchRecords, Batches: s.Batches + f*o.Batches, HeadMoved: s.HeadMoved + f*o.HeadMoved,
		ServerSeconds: s.ServerSeconds + f*o.ServerSeconds, ServerRequests: s.ServerRequests + f*o.ServerRequests,
	}
	for k, v := range s.Decisions {
		d.Decisions[k] = v
	}
	for k, v := range o.Decisions {
		d.Decisions[k] += sign * v
	}
	for k, v := range d.Decisions {
		if v == 0 {
			delete(d.Decisions, k)
		}
	}
	return d
}

// SumMetric reads the Prometheus text format and returns the sum of the
// samples of the metric called name, over all their labels, and whether
// there was any: a counter the broker does not have reads as absent, not 0.
func SumMetric(r io.Reader, name string) (float64, bool, error) {
	var sum float64
	found := false
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		m := metricSample.FindStringSubmatch(sc.Text())
		if m == nil || m[1] != name {
			continue
		}
		v, err := strconv.ParseFloat(m[3], 64)
		if err != nil {
			return 0, false, fmt.Errorf("metric %q: %w", sc.Text(), err)
		}
		sum, found = sum+v, true
	}
	if err := sc.Err(); err != nil {
		return 0, false, fmt.Errorf("read metrics: %w", err)
	}
	return sum, found, nil
}

// Histogram is the buckets of a histogram of the Prometheus text format,
// summed over its other labels: cumulative counts by upper bound (le),
// ascending, +Inf last.
type Histogram struct {
	Bounds []float64
	Counts []float64
}

var bucketBound = regexp.MustCompile(`\ble="([^"]*)"`)

// ParseHistogram reads the buckets (the name_bucket samples) of histogram
// name; a histogram the text lacks has no buckets.
func ParseHistogram(r io.Reader, name string) (Histogram, error) {
	counts := map[float64]float64{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		m := metricSample.FindStringSubmatch(sc.Text())
		if m == nil || m[1] != name+"_bucket" {
			continue
		}
		le := bucketBound.FindStringSubmatch(m[2])
		if le == nil {
			return Histogram{}, fmt.Errorf("metric %q has no le label", sc.Text())
		}
		bound, err := strconv.ParseFloat(le[1], 64) // "+Inf" too
		if err != nil {
			return Histogram{}, fmt.Errorf("metric %q: bound: %w", sc.Text(), err)
		}
		v, err := strconv.ParseFloat(m[3], 64)
		if err != nil {
			return Histogram{}, fmt.Errorf("metric %q: %w", sc.Text(), err)
		}
		counts[bound] += v
	}
	if err := sc.Err(); err != nil {
		return Histogram{}, fmt.Errorf("read metrics: %w", err)
	}
	var h Histogram
	for _, b := range slices.Sorted(maps.Keys(counts)) {
		h.Bounds, h.Counts = append(h.Bounds, b), append(h.Counts, counts[b])
	}
	return h, nil
}

// Sub returns the histogram of the observations made since before: the
// differences of the counts, bucket by bucket (a bucket before lacks counts
// from zero).
func (h Histogram) Sub(before Histogram) Histogram {
	d := Histogram{Bounds: slices.Clone(h.Bounds), Counts: slices.Clone(h.Counts)}
	for i, b := range d.Bounds {
		if j := slices.Index(before.Bounds, b); j >= 0 {
			d.Counts[i] -= before.Counts[j]
		}
	}
	return d
}

// Largest returns the bucket the largest observation fell in, (lo, hi]
// (lo is 0 for the first bucket, hi +Inf for the last), and false without
// observations.
func (h Histogram) Largest() (lo, hi float64, ok bool) {
	for i := len(h.Counts) - 1; i >= 0; i-- {
		below := 0.0
		if i > 0 {
			below = h.Counts[i-1]
		}
		if h.Counts[i] > below {
			if i > 0 {
				lo = h.Bounds[i-1]
			}
			return lo, h.Bounds[i], true
		}
	}
	return 0, 0, false
}
