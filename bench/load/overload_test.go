package load

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/broker-dev/broker/internal/loadtest"
	"github.com/broker-dev/broker/internal/pg/pgtest"
)

const (
	// maxRSS is the most memory the broker may hold resident under overload.
	maxRSS = 256 << 20
	// watchEvery is how often the watch asks /healthz and reads the broker's RSS.
	watchEvery = 200 * time.Millisecond
	// healthTimeout is how long /healthz may take before it counts as failed.
	healthTimeout = time.Second
	// shedMetric counts the token requests the broker refused at once
	// because too many were waiting for the issuance log.
	shedMetric = "broker_audit_appends_shed_total"
)

// TestOverload drives the broker (on Postgres with production-like
// settings, as TestFixedRate) with ten times the concurrency it sustains:
// wrk -t1 -c500 for 30 s with overload.lua, which writes down every
// response's status, X-Request-Id and Retry-After. Meanwhile a watch asks
// /healthz every 200 ms (1 s timeout) and reads the broker's resident
// memory. Then a wrk -c50 run shows how it recovers. It reports the
// statuses, the share of 503s, /healthz's worst latency, the broker's most
// resident memory (target ≤ 256 MB), its count of shed requests
// (broker_audit_appends_shed_total, if it has one), and the records of the
// answered requests. It asserts the behaviour, not timings: /healthz never
// failed, the broker stayed within 256 MB, every 200 has exactly its
// record (and no 503 has one), every 503 carried Retry-After, and no status
// other than 200 and 503 came. A broker that never sheds (no 503) does not
// fail the test: it is reported.
//
//	BROKER_LOAD=1 go test -v -count=1 -timeout 30m -run TestOverload ./bench/load/
//
// or bench/load/run.sh overload. BROKER_LOAD_OVERLOAD_CONNECTIONS (default
// 500) and BROKER_LOAD_OVERLOAD_DURATION (default 30s) change the overload
// run, BROKER_LOAD_DURATION (default 15s) and BROKER_LOAD_CONNECTIONS
// (default 50) the recovery run; BROKER_LOAD_MAX_WAITING=n starts the broker
// with BROKER_LOG_MAX_WAITING=n (unset: the broker's default).
func TestOverload(t *testing.T) {
	if os.Getenv("BROKER_LOAD") != "1" {
		t.Skip("load benchmark (a minute or two, needs wrk): run bench/load/run.sh overload, or BROKER_LOAD=1 go test -v -count=1 -timeout 30m -run TestOverload ./bench/load/")
	}
	root := repoRoot(t)
	k := readKnobs(t, root)
	connections := envInt(t, "BROKER_LOAD_OVERLOAD_CONNECTIONS", 500, 1, 10000)
	d := envDuration(t, "BROKER_LOAD_OVERLOAD_DURATION", 30*time.Second, time.Second)
	maxWaiting := "unset (the broker's default)"
	var env []string
	if v := os.Getenv("BROKER_LOAD_MAX_WAITING"); v != "" {
		maxWaiting = v
		env = append(env, "BROKER_LOG_MAX_WAITING="+v)
	}
	wrk := needWrk(t)
	loadBefore := loadAvg()

	settings := productionSettings(t)
	r := startRig(t, root, k.seedfloor, pgtest.Options{Settings: settings, WALSegmentMB: walSegmentMB}, env)
	warmWAL(t, r.pool)
	inForce := logSettings(t, r.pool, settings)
	over := r.bencher(t, wrk, connections)

	t.Logf("overload: wrk -t1 -c%d -d%s --latency -s overload.lua; BROKER_LOG_MAX_WAITING %s", connections, d, maxWaiting)
	shedBefore, shedFound := shedCount(t, over.metrics)
	before := over.snapshot()
	w := startWatch(t, "http://"+r.brokerAddr+"/healthz", r.brokerPID)
	run, answers, acc := over.accounting(r.brokerURL, d, "overload.lua", filepath.Join(r.bin, "overload-answered"))
	w.finish(t)
	mem, err := loadtest.ProcessMemory(r.brokerPID)
	if err != nil {
		t.Fatal(err)
	}
	decided := over.snapshot().Sub(before)
	shedAfter, _ := shedCount(t, over.metrics)

	t.Logf("recovery: wrk -t1 -c%d -d%s --latency", k.connections, k.duration)
	recovery := r.bencher(t, wrk, k.connections).broker(r.brokerURL, k.duration, true)

	ok, shed, noRetry := 0, 0, 0
	other := map[int]int{}
	for _, a := range answers {
		switch a.Status {
		case http.StatusOK:
			ok++
		case http.StatusServiceUnavailable:
			shed++
			if a.RetryAfter == "" {
				noRetry++
			}
		default:
			other[a.Status]++
		}
	}

	var b strings.Builder
	fmt.Fprintf(&b, "Machine: %s, %d CPUs (nproc), %s/%s, %s; load average %s before, %s after. Broker built from %s.\n%s.\n\n",
		cpuModel(), runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, runtime.Version(), loadBefore, loadAvg(), revision(root), inForce)
	fmt.Fprintf(&b, "Overload (wrk -t1 -c%d -d%s, BROKER_LOG_MAX_WAITING %s): %d answered in %.1fs (%.0f/s): %d × 200, %d × 503 (%.1f%%; %d without Retry-After), other %v; wrk p50 %s, p99 %s; socket errors %+v.\n",
		connections, d, maxWaiting, len(answers), run.Seconds, run.RPS, ok, shed, 100*share(shed, len(answers)), noRetry, other,
		run.P50, run.P99, run.SocketErrors)
	fmt.Fprintf(&b, "The broker's decisions meanwhile: %v; %s.\n", decided.Decisions, inside(decided))
	if shedFound {
		fmt.Fprintf(&b, "%s: %.0f during the run.\n", shedMetric, shedAfter-shedBefore)
	} else {
		fmt.Fprintf(&b, "%s: absent from the broker's /metrics.\n", shedMetric)
	}
	if shed == 0 {
		fmt.Fprintf(&b, "The broker never shed a request (no 503) at %d connections.\n", connections)
	}
	fmt.Fprintf(&b, "/healthz every %s (%s timeout), on a new connection each: %d checks, %d failed%s; worst latency %s.\n",
		watchEvery, healthTimeout, w.checks, w.failures, w.firstFailure, us(w.worst))
	fmt.Fprintf(&b, "Broker memory: most resident %.1f MB (VmRSS every %s), peak %.1f MB (VmHWM after the run) (target ≤ %d MB: %s).\n",
		mib(w.maxRSS), watchEvery, mib(mem.Peak), maxRSS>>20, verdict(max(w.maxRSS, mem.Peak) <= maxRSS))
	fmt.Fprintf(&b, "Records: %d rows for %d × 200; %d answered with exactly their rows (one per 200, none per 503), %d wrong, %d rows of requests cut off unanswered.\n",
		acc.Rows, ok, acc.Matched, len(acc.Wrong), acc.Unanswered)
	fmt.Fprintf(&b, "Recovery (wrk -t1 -c%d -d%s right after): %.0f req/s, p50 %s, p99 %s, %d non-2xx, %d rows for %d answered.\n",
		k.connections, k.duration, recovery.RPS, recovery.P50, recovery.P99, recovery.Non2xx, recovery.Rows, recovery.Requests)
	t.Logf("summary:\n%s", b.String())

	if w.failures > 0 {
		t.Errorf("/healthz failed %d of %d times under overload%s", w.failures, w.checks, w.firstFailure)
	}
	if peak := max(w.maxRSS, mem.Peak); peak > maxRSS {
		t.Errorf("the broker held %.1f MB resident under overload; at most %d MB", mib(peak), maxRSS>>20)
	}
	if noRetry > 0 {
		t.Errorf("%d of %d 503 answers carried no Retry-After", noRetry, shed)
	}
	if len(other) > 0 {
		t.Errorf("statuses other than 200 and 503 under overload: %v", other)
	}
	requireNoSecrets(t, r.brokerLog, map[string]string{
		"developer ID token": r.dev, "admin ID token": r.admin, "app certificate": appCert, "audit key": auditKey,
	})
}

// share is n's share of total, 0 for no total.
func share(n, total int) float64 {
	if total == 0 {
		return 0
	}
	return float64(n) / float64(total)
}

// mib converts bytes to MiB.
func mib(n int64) float64 { return float64(n) / (1 << 20) }

// shedCount reads the broker's count of shed requests (shedMetric), and
// whether the broker has that counter.
func shedCount(t *testing.T, metricsURL string) (float64, bool) {
	t.Helper()
	resp, err := http.Get(metricsURL)
	if err != nil {
		t.Fatalf("broker metrics: %v", err)
	}
	defer resp.Body.Close()
	n, found, err := loadtest.SumMetric(resp.Body, shedMetric)
	if err != nil {
		t.Fatalf("broker metrics: %v", err)
	}
	return n, found
}

// watch asks /healthz and reads a process's resident memory every
// watchEvery, from startWatch to finish.
type watch struct {
	url    string
	pid    int
	client *http.Client

	// Written by the loop until done is closed.
	checks, failures int
	firstFailure     string // " (first at <time>: <error>)", "" without a failure
	worst            time.Duration
	maxRSS           int64
	err              error

	stop, done chan struct{}
}

// startWatch starts watching url (a /healthz) and process pid.
func startWatch(t *testing.T, url string, pid int) *watch {
	t.Helper()
	w := &watch{url: url, pid: pid, stop: make(chan struct{}), done: make(chan struct{}),
		// A new connection each time, as an orchestrator's probe makes
		// one: it must get through the listener's queue too.
		client: &http.Client{Timeout: healthTimeout, Transport: &http.Transport{DisableKeepAlives: true}}}
	go w.loop()
	return w
}

func (w *watch) loop() {
	defer close(w.done)
	tick := time.NewTicker(watchEvery)
	defer tick.Stop()
	for {
		select {
		case <-w.stop:
			return
		case <-tick.C:
		}
		w.check()
		m, err := loadtest.ProcessMemory(w.pid)
		if err != nil {
			w.err = err
			return
		}
		w.maxRSS = max(w.maxRSS, m.RSS)
	}
}

// check asks /healthz once.
func (w *watch) check() {
	w.checks++
	start := time.Now()
	resp, err := w.client.Get(w.url)
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
	}
	w.worst = max(w.worst, time.Since(start))
	if err != nil {
		w.failures++
		if w.firstFailure == "" {
			w.firstFailure = fmt.Sprintf(" (first at %s: %v)", start.Format(time.TimeOnly), err)
		}
	}
}

// finish stops the watch; its counts are then final.
func (w *watch) finish(t *testing.T) {
	t.Helper()
	close(w.stop)
	<-w.done
	if w.err != nil {
		t.Fatal(w.err)
	}
	if w.checks == 0 {
		t.Fatal("the watch never asked /healthz")
	}
}
