// Package loadtest is what the load harnesses (bench/load, deploy/cluster)
// share: it reads wrk's reports and vegeta's results and reconciles answered
// requests with issuance-log rows, reads CPU times and memory from /proc and
// the broker's /metrics, explains a fixed-rate run's slow seconds from a
// poller's samples, and builds the seed floor. Test support, never imported
// by the broker.
package loadtest

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// WrkResult is what one wrk run reports.
type WrkResult struct {
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

// ParseWrk reads the text wrk prints with --latency. Lines wrk omits when
// they would be zero (non-2xx, socket errors) count as zero; the totals and
// the four latency percentiles are required.
func ParseWrk(out string) (WrkResult, error) {
	var r WrkResult
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

// Answer is one response wrk completed in an accounting run.
type Answer struct {
	Status     int
	RequestID  string
	RetryAfter string // the Retry-After header, where the script writes it down; "" if none
}

// ReadAnswered reads the lines answered.lua wrote, "<status> <X-Request-Id>",
// or overload.lua, "<status> <X-Request-Id> <Retry-After>"; a header the
// response lacked is written "-" (an absent Retry-After reads as "").
func ReadAnswered(path string) ([]Answer, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("answered requests: %w", err)
	}
	defer f.Close()
	var out []Answer
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		f := strings.Fields(sc.Text())
		if len(f) != 2 && len(f) != 3 {
			return nil, fmt.Errorf("answered requests: %s line %d is not \"<status> <request id> [<retry-after>]\"", path, n)
		}
		code, err := strconv.Atoi(f[0])
		if err != nil {
			return nil, fmt.Errorf("answered requests: %s line %d: status %q is not a number", path, n, f[0])
		}
		a := Answer{Status: code, RequestID: f[1]}
		if len(f) == 3 && f[2] != "-" {
			a.RetryAfter = f[2]
		}
		out = append(out, a)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("answered requests: read %s: %w", path, err)
	}
	return out, nil
}

// RecordsPerAnswer is how many issuance-log rows a response with this status
// must have: one for every decision (granted 200, invalid 400, denied 403),
// none for anything that is not a decision (401 unauthenticated, 429 limited,
// 503 log unavailable: fail closed).
func RecordsPerAnswer(status int) int {
	switch status {
	case 200, 400, 403:
		return 1
	}
	return 0
}

// Accounting joins the answered requests of a run to the rows the run added
// to the issuance log, by request id.
type Accounting struct {
	Answered   int         // responses wrk completed
	ByStatus   map[int]int // of which, by HTTP status
	Rows       int         // rows the run added
	Matched    int         // answered requests with exactly the rows their status calls for
	Wrong      []string    // answered requests without: "id status=… rows=…"
	Unanswered int         // rows whose request wrk never saw answered (cut off when the run ended)
}

// Reconcile compares answers with rows (request id → number of rows).
func Reconcile(answers []Answer, rows map[string]int) Accounting {
	a := Accounting{Answered: len(answers), ByStatus: map[int]int{}}
	seen := map[string]bool{}
	for _, n := range rows {
		a.Rows += n
	}
	for _, ans := range answers {
		a.ByStatus[ans.Status]++
		got, want := rows[ans.RequestID], RecordsPerAnswer(ans.Status)
		if seen[ans.RequestID] {
			a.Wrong = append(a.Wrong, fmt.Sprintf("%s status=%d answered twice", ans.RequestID, ans.Status))
			continue
		}
		seen[ans.RequestID] = true
		if got != want {
			a.Wrong = append(a.Wrong, fmt.Sprintf("%s status=%d rows=%d want %d", ans.RequestID, ans.Status, got, want))
			continue
		}
		a.Matched++
	}
	for id, n := range rows {
		if !seen[id] {
			a.Unanswered += n
		}
	}
	sort.Strings(a.Wrong)
	return a
}
