package load

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"maps"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/broker-dev/broker/internal/loadtest"
	"github.com/broker-dev/broker/internal/pg/pgtest"
	"github.com/broker-dev/broker/internal/tooltest"
)

const (
	// fixedShare is the share of each server's maximum a fixed-rate run holds.
	fixedShare = 0.5
	// fixedMaxWorkers bounds vegeta's requests in flight. Far above what a
	// fixed-rate run at half the maximum needs (a few), so that a stall
	// shows as latency, not as requests vegeta holds back.
	fixedMaxWorkers = 500
	// fixedTimeout is vegeta's per-request timeout.
	fixedTimeout = 10 * time.Second
	// statsDelay is how long a Postgres backend may keep its statistics
	// (pg_stat_wal) before reporting them, with a margin: one that goes
	// idle within a second of its last report keeps them 10 s
	// (PGSTAT_IDLE_INTERVAL).
	statsDelay = 11 * time.Second
	// slowSecond is the p99 over which the per-second table says what
	// happened in Postgres, the log and the machine.
	slowSecond = 5 * time.Millisecond
)

// TestFixedRate measures the broker's latency at half its maximum rate, on
// Postgres with production-like settings (productionSettings), and looks
// for the causes of its slow seconds. It finds each server's maximum with
// wrk (-t1 -c50 for BROKER_LOAD_DURATION after a 5 s warm-up: the
// saturation run), then holds half of it with vegeta for
// BROKER_LOAD_FIXED_DURATION: the broker at half its maximum, while a
// poller reads Postgres (WAL, the log's head, checkpoints, autovacuum), the
// broker's log commits (/metrics) and the machine's CPU once a second; the
// seed floor at half its own maximum; and the seed floor at the broker's
// rate. It prints each run's latency percentiles, success ratio and
// achieved rate, the broker's run second by second with what happened in
// the seconds whose p99 is over 5 ms, and the WAL written per record. It
// reports the targets (broker p99 ≤ 5 ms and p99.9 ≤ 20 ms at half its
// maximum; saturation ratio broker/seedfloor ≥ 3×) without asserting them:
// it fails only when the harness breaks or an answered broker request does
// not have exactly its record.
//
//	BROKER_LOAD=1 go test -v -count=1 -timeout 30m -run TestFixedRate ./bench/load/
//
// or bench/load/run.sh fixedrate. BROKER_LOAD_DURATION (default 15s),
// BROKER_LOAD_FIXED_DURATION (default 60s), BROKER_LOAD_CONNECTIONS (wrk's
// -c and vegeta's connections, default 50) and BROKER_LOAD_SEEDFLOOR
// change the runs; BROKER_LOAD_FIXED_RATE=N holds the broker at N requests
// a second instead of half its maximum; BROKER_LOAD_CPUPROFILE=file saves the broker's CPU
// profile of (up to 30 s of) its fixed-rate run. vegeta is built from tools/vegeta. The broker's
// fixed-rate run is framed by two 11 s waits, for Postgres's statistics.
func TestFixedRate(t *testing.T) {
	if os.Getenv("BROKER_LOAD") != "1" {
		t.Skip("load benchmark (minutes, needs wrk; builds vegeta): run bench/load/run.sh fixedrate, or BROKER_LOAD=1 go test -v -count=1 -timeout 30m -run TestFixedRate ./bench/load/")
	}
	root := repoRoot(t)
	k := readKnobs(t, root)
	fixed := envDuration(t, "BROKER_LOAD_FIXED_DURATION", time.Minute, time.Second)
	wrk := needWrk(t)
	vegeta := newAttacker(t, k.connections)
	loadBefore := loadAvg()

	settings := productionSettings(t)
	r := startRig(t, root, k.seedfloor, pgtest.Options{Settings: settings, WALSegmentMB: walSegmentMB}, nil)
	inForce := logSettings(t, r.pool, settings)
	warmWAL(t, r.pool)
	bench := r.bencher(t, wrk, k.connections)

	t.Logf("saturation: wrk -t1 -c%d -d%s --latency, after a %s warm-up of each", k.connections, k.duration, k.warmup)
	bench.seed(r.seedURL, k.warmup)
	bench.broker(r.brokerURL, k.warmup, true)
	seedMax := bench.seed(r.seedURL, k.duration)
	brokerMax := bench.broker(r.brokerURL, k.duration, true)

	brokerRate, seedRate := atLeastOne(fixedShare*brokerMax.RPS), atLeastOne(fixedShare*seedMax.RPS)
	if n := envInt(t, "BROKER_LOAD_FIXED_RATE", 0, 0, 1_000_000); n > 0 {
		brokerRate = n // to compare runs at one rate, whatever the machine gave the saturation run
	}
	t.Logf("fixed rate: %s each; broker at %d/s, seedfloor at %d/s, then seedfloor at the broker's %d/s", fixed, brokerRate, seedRate, brokerRate)
	// Let the backends report the saturation run's WAL before the first
	// sample, and the fixed-rate run's before the last.
	time.Sleep(statsDelay)
	seqBefore := bench.headSeq()
	poll := startPoller(t, r.pool, bench.metrics)
	profiled := func() {}
	if path := os.Getenv("BROKER_LOAD_CPUPROFILE"); path != "" {
		profiled = r.cpuProfile(t, min(fixed, 30*time.Second), path)
	}
	brokerRun := vegeta.attack(fmt.Sprintf("broker at %.0f%% of its max", 100*fixedShare), r.brokerPID, r.brokerURL, r.dev, brokerRate, fixed)
	profiled()
	bench.settledRows()
	time.Sleep(statsDelay)
	samples := poll.finish()
	acc := reconcileVegeta(bench, brokerRun.results, seqBefore, fixed)
	seedRun := vegeta.attack(fmt.Sprintf("seedfloor at %.0f%% of its max", 100*fixedShare), r.seedPID, r.seedURL, "", seedRate, fixed)
	seedAtBroker := vegeta.attack("seedfloor at the broker's rate", r.seedPID, r.seedURL, "", brokerRate, fixed)

	var b strings.Builder
	fmt.Fprintf(&b, "Machine: %s, %d CPUs (nproc), %s/%s, %s; load average %s before, %s after. Broker built from %s.\n%s.\n\n",
		cpuModel(), runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, runtime.Version(), loadBefore, loadAvg(), revision(root), inForce)
	ratio := brokerMax.RPS / seedMax.RPS
	fmt.Fprintf(&b, "Saturation (wrk -t1 -c%d -d%s --latency): seedfloor %.0f req/s (p99 %s), broker %.0f req/s (p99 %s, %d rows for %d answered); ratio broker/seedfloor %.2f× (target ≥ 3×: %s).\n\n",
		k.connections, k.duration, seedMax.RPS, seedMax.P99, brokerMax.RPS, brokerMax.P99, brokerMax.Rows, brokerMax.Requests, ratio, verdict(ratio >= 3))
	fmt.Fprintf(&b, "Fixed rate (vegeta attack -rate=N/1s -duration=%s -connections=%d -max-connections=%d -max-workers=%d -timeout=%s):\n\n",
		fixed, k.connections, k.connections, fixedMaxWorkers, fixedTimeout)
	b.WriteString("| run | rate asked | rate sent | throughput | success | p50 | p99 | p99.9 | max | statuses | server CPU/req | vegeta CPU/req | idle |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	runs := []fixedRun{brokerRun, seedRun, seedAtBroker}
	sums := make([]loadtest.VegetaSummary, len(runs))
	for i, fr := range runs {
		sums[i] = fixedRow(&b, fr)
	}
	b.WriteString("\n")
	for i, fr := range runs {
		for _, e := range slices.Sorted(maps.Keys(sums[i].Errors)) {
			fmt.Fprintf(&b, "%s: %d requests without an answer: %s\n", fr.name, sums[i].Errors[e], e)
		}
	}
	brokerSum := sums[0]
	fmt.Fprintf(&b, "Broker at %.0f%% of its max: p99 %s (target ≤ 5 ms: %s), p99.9 %s (target ≤ 20 ms: %s).\n",
		100*fixedShare, us(brokerSum.P99), verdict(brokerSum.P99 <= 5*time.Millisecond), us(brokerSum.P999), verdict(brokerSum.P999 <= 20*time.Millisecond))
	fmt.Fprintf(&b, "Records: %d answered %v, %d rows; %d answered with exactly their rows, %d wrong, %d rows of requests without an answer.\n\n",
		acc.Answered, acc.ByStatus, acc.Rows, acc.Matched, len(acc.Wrong), acc.Unanswered)
	perSecondTable(&b, brokerRun.results, samples)
	t.Logf("summary:\n%s", b.String())
	requireNoSecrets(t, r.brokerLog, map[string]string{
		"developer ID token": r.dev, "admin ID token": r.admin, "app certificate": appCert, "audit key": auditKey,
	})
}

// warmWAL brings the fresh cluster's WAL to a running server's steady
// state: about 600 MB of WAL written and checkpointed, so that the run
// writes into recycled segments (min_wal_size keeps them) instead of
// creating and zero-filling a new file at each switch, a stall a
// long-running server does not have.
func warmWAL(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	ctx := context.Background()
	start := time.Now()
	for _, q := range []string{
		"CREATE TABLE wal_warmup AS SELECT g, repeat('x', 150) AS pad FROM generate_series(1, 3000000) g",
		"DROP TABLE wal_warmup",
		"CHECKPOINT",
		"CHECKPOINT",
	} {
		if _, err := pool.Exec(ctx, q); err != nil {
			t.Fatalf("warming the WAL up (%s): %v", q, err)
		}
	}
	var segments int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM pg_ls_waldir()").Scan(&segments); err != nil {
		t.Fatal(err)
	}
	t.Logf("WAL warmed up in %s: %d segments ready for reuse", time.Since(start).Round(time.Second), segments)
}

// atLeastOne rounds a rate to a whole number of requests per second, at least one.
func atLeastOne(rate float64) int { return max(int(math.Round(rate)), 1) }

// walSegmentMB is the benchmark cluster's WAL segment size: at 4 MB of WAL
// a second, 16 MB segments switch every 4 s, each switch a commit of 25–100
// ms on this machine's disk; a server that writes this much WAL is set up
// with larger segments (initdb --wal-segsize).
const walSegmentMB = 256

// productionSettings are the Postgres settings of the fixed-rate and
// overload benchmarks: a production server's shared buffers, WAL and
// checkpoint sizing, WAL compression (lz4 where the server has it; pglz,
// said in the log, where it does not) and durable commits.
func productionSettings(t *testing.T) map[string]string {
	t.Helper()
	s := map[string]string{
		"shared_buffers":               "256MB",
		"max_wal_size":                 "4GB",
		"min_wal_size":                 "1GB",
		"checkpoint_timeout":           "15min",
		"checkpoint_completion_target": "0.9",
		"wal_compression":              "lz4",
		"fsync":                        "on",
		"synchronous_commit":           "on",
	}
	if !serverHasLZ4(t) {
		s["wal_compression"] = "pglz"
		t.Log("this PostgreSQL was built without lz4: wal_compression=pglz instead")
	}
	return s
}

// serverHasLZ4 asks the PostgreSQL server binary whether it accepts
// wal_compression=lz4: postgres checks a -c setting before looking for its
// data directory (which -C then lacks), and refuses an unsupported value.
func serverHasLZ4(t *testing.T) bool {
	t.Helper()
	bin, err := pgtest.BinDir()
	if err != nil {
		t.Fatal(err)
	}
	out, _ := exec.Command(filepath.Join(bin, "postgres"), "-C", "wal_compression", "-c", "wal_compression=lz4").CombinedOutput()
	return !strings.Contains(string(out), `invalid value for parameter "wal_compression"`)
}

// logSettings logs and returns the server's version and, as SHOW gives
// them, the settings the benchmark asked for, and fails unless commits are
// durable.
func logSettings(t *testing.T, pool *pgxpool.Pool, settings map[string]string) string {
	t.Helper()
	var b strings.Builder
	for _, name := range append([]string{"server_version"}, slices.Sorted(maps.Keys(settings))...) {
		var v string
		if err := pool.QueryRow(context.Background(), "SHOW "+name).Scan(&v); err != nil {
			t.Fatalf("SHOW %s: %v", name, err)
		}
		fmt.Fprintf(&b, " %s=%s", name, v)
	}
	t.Logf("Postgres settings in force:%s", b.String())
	requireDurable(t, pool)
	return "Postgres settings in force:" + b.String()
}

// fixedRow writes one fixed-rate run's line of the table and returns its summary.
func fixedRow(b *strings.Builder, fr fixedRun) loadtest.VegetaSummary {
	s := loadtest.SummarizeVegeta(fr.results)
	var statuses []string
	for _, code := range slices.Sorted(maps.Keys(s.ByStatus)) {
		statuses = append(statuses, fmt.Sprintf("%d×%d", s.ByStatus[code], code))
	}
	perReq := func(d time.Duration) time.Duration { return (d / time.Duration(s.Requests)).Round(time.Microsecond) }
	fmt.Fprintf(b, "| %s | %d/s | %.1f/s | %.1f/s | %.3f%% | %s | %s | %s | %s | %s | %s | %s | %.0f%% |\n", fr.name, fr.rate, s.Rate, s.Throughput,
		100*s.SuccessRatio(), us(s.P50), us(s.P99), us(s.P999), us(s.Max), strings.Join(statuses, " "),
		perReq(fr.serverCPU), perReq(fr.vegetaCPU), 100*fr.idle)
	return s
}

// us rounds a latency to the microsecond, for the tables.
func us(d time.Duration) time.Duration { return d.Round(time.Microsecond) }

// perSecondTable writes the broker's fixed-rate run second by second:
// vegeta's requests sent in each second, beside what the poller saw in the
// same second, and for each second whose p99 is over slowSecond, what stood
// out; then the run's totals and the WAL written per record.
func perSecondTable(b *strings.Builder, rs []loadtest.VegetaResult, samples []loadtest.PollSample) {
	secs := loadtest.PerSecond(rs, samples[0].At)
	// Slow seconds are compared with the attack's seconds; the totals
	// include the records of the last requests, committed after it.
	attack := samples[min(len(secs), len(samples)-1)].Since(samples[0])
	run := samples[len(samples)-1].Since(samples[0])
	b.WriteString("Broker second by second (vegeta: requests sent in the second; poller: the same second):\n\n")
	b.WriteString("| s | requests | errors | p99 | max | WAL kB | records | mean batch | largest batch | mean commit | slowest commit | ckpt bufs | backend bufs | autovacuum | idle | over 5 ms: what happened |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	slow := 0
	for i, s := range secs {
		var in loadtest.PollInterval
		if i+1 < len(samples) {
			in = samples[i+1].Since(samples[i])
		}
		why := ""
		if s.P99 > slowSecond {
			slow++
			why = strings.Join(in.Explain(attack), "; ")
			if why == "" {
				why = "nothing stood out in Postgres, the log or the machine"
			}
		}
		fmt.Fprintf(b, "| %d | %d | %d | %s | %s | %.0f | %d | %.1f | %s | %s | %s | %d | %d | %d | %.0f%% | %s |\n",
			i, s.Requests, s.Errors, us(s.P99), us(s.Max), float64(in.WALWritten)/1024, in.Records, in.MeanBatch(), in.LargestBatch(),
			in.MeanCommit().Round(10*time.Microsecond), in.SlowestCommit(), in.BuffersCheckpoint, in.BuffersBackend, len(in.Autovacuum), 100*in.Idle, why)
	}
	fmt.Fprintf(b, "\n%d of %d seconds had a p99 over %s; the machine was %.0f%% idle during the attack. Over the attack and the wait for its last records and statistics (%.1fs): %d records in %.0f log commits (mean batch %.1f, largest %s; mean commit %s, slowest %s); %d checkpoints begun, %d buffers written by checkpoints, %d by backends.\n",
		slow, len(secs), slowSecond, 100*attack.Idle, run.Seconds, run.Records, run.Broker.Commits, run.MeanBatch(), run.LargestBatch(),
		run.MeanCommit().Round(10*time.Microsecond), run.SlowestCommit(),
		run.Checkpoints, run.BuffersCheckpoint, run.BuffersBackend)
	if run.Records > 0 {
		fmt.Fprintf(b, "WAL per record: %.0f bytes (pg_stat_wal.wal_bytes: %d bytes for %d records); %.0f bytes by the WAL position (page headers included).\n",
			float64(run.WALBytes)/float64(run.Records), run.WALBytes, run.Records, float64(run.WALWritten)/float64(run.Records))
	}
}

// reconcileVegeta joins the answers of the broker's fixed-rate run (of
// length d) to the rows the run appended after seqBefore: every answered
// request must have exactly its record; a request vegeta got no answer to
// (a timeout) may have one.
func reconcileVegeta(b bencher, rs []loadtest.VegetaResult, seqBefore int64, d time.Duration) loadtest.Accounting {
	b.t.Helper()
	answers := make([]loadtest.Answer, 0, len(rs))
	for _, r := range rs {
		if r.Status != 0 {
			answers = append(answers, loadtest.Answer{Status: r.Status, RequestID: r.RequestID})
		}
	}
	return b.reconcile(d.Seconds(), answers, seqBefore, len(rs)-len(answers))
}

// attacker runs vegeta attacks, keeping their targets and results in dir.
type attacker struct {
	t        *testing.T
	bin, dir string
	// vegeta's -connections and -max-connections: the connections it keeps
	// open and the most it opens. Unbounded, it opens a connection for each
	// worker a slow second starts (up to -max-workers), and the new
	// connections' handshakes and TIME_WAITs, on the same two CPUs, turned a
	// stall into a collapse (vegeta's CPU a request 64 → 244 µs, and its
	// loopback ports ran out: "bind: address already in use").
	connections int
}

// newAttacker builds vegeta from tools/vegeta (once per version, cached
// under GOCACHE).
func newAttacker(t *testing.T, connections int) attacker {
	t.Helper()
	bin, err := tooltest.Build("vegeta", "github.com/tsenart/vegeta/v12")
	if err != nil {
		t.Fatalf("%v\nvegeta is built from tools/vegeta (github.com/tsenart/vegeta/v12): it needs the go command and the Go module proxy, or a module cache that has it", err)
	}
	return attacker{t: t, bin: bin, dir: t.TempDir(), connections: connections}
}

// fixedRun is one vegeta attack: every request's result, and the CPU time
// the server and vegeta used meanwhile, and the machine's idle share.
type fixedRun struct {
	name                 string
	rate                 int // asked, per second
	results              []loadtest.VegetaResult
	serverCPU, vegetaCPU time.Duration
	idle                 float64
}

// attack sends GET url, with the bearer token unless it is "", at rate per
// second for d to the server of process pid.
func (a attacker) attack(name string, pid int, url, bearer string, rate int, d time.Duration) fixedRun {
	a.t.Helper()
	targets := "GET " + url + "\n"
	if bearer != "" {
		targets += "Authorization: Bearer " + bearer + "\n"
	}
	file := strings.NewReplacer(" ", "-", "%", "pc", "'", "").Replace(name)
	targetsPath, resultsPath := filepath.Join(a.dir, file+".targets"), filepath.Join(a.dir, file+".bin")
	if err := os.WriteFile(targetsPath, []byte(targets+"\n"), 0o600); err != nil {
		a.t.Fatal(err)
	}
	cpu0, err := loadtest.ProcessCPU(pid)
	if err != nil {
		a.t.Fatal(err)
	}
	mach0, err := loadtest.MachineCPU()
	if err != nil {
		a.t.Fatal(err)
	}
	// vegeta's output never holds the token: it is in the targets file.
	attack := exec.Command(a.bin, "attack", "-format=http", "-targets="+targetsPath, "-output="+resultsPath,
		fmt.Sprintf("-rate=%d/1s", rate), "-duration="+d.String(), fmt.Sprintf("-connections=%d", a.connections),
		fmt.Sprintf("-max-connections=%d", a.connections),
		fmt.Sprintf("-max-workers=%d", fixedMaxWorkers), "-timeout="+fixedTimeout.String(), "-max-body=0")
	out, err := attack.CombinedOutput()
	if err != nil {
		a.t.Fatalf("vegeta attack (%s): %v\n%s", name, err, out)
	}
	cpu1, err := loadtest.ProcessCPU(pid)
	if err != nil {
		a.t.Fatal(err)
	}
	mach1, err := loadtest.MachineCPU()
	if err != nil {
		a.t.Fatal(err)
	}
	fr := fixedRun{name: name, rate: rate, serverCPU: cpu1 - cpu0,
		vegetaCPU: attack.ProcessState.UserTime() + attack.ProcessState.SystemTime(), idle: mach1.IdleSince(mach0)}
	enc := exec.Command(a.bin, "encode", "--to", "csv", resultsPath)
	stdout, err := enc.StdoutPipe()
	if err != nil {
		a.t.Fatal(err)
	}
	var stderr strings.Builder
	enc.Stderr = &stderr
	if err := enc.Start(); err != nil {
		a.t.Fatalf("vegeta encode: %v", err)
	}
	fr.results, err = loadtest.ReadVegetaCSV(stdout)
	if waitErr := enc.Wait(); waitErr != nil {
		a.t.Fatalf("vegeta encode (%s): %v\n%s", name, waitErr, stderr.String())
	}
	if err != nil {
		a.t.Fatalf("%s: %v", name, err)
	}
	if len(fr.results) == 0 {
		a.t.Fatalf("vegeta attack (%s) sent no request", name)
	}
	return fr
}

// poller samples Postgres, the broker's metrics and the machine once a
// second, from startPoller to finish.
type poller struct {
	t       *testing.T
	pool    *pgxpool.Pool
	metrics string // the broker's /metrics URL
	client  *http.Client

	samples []loadtest.PollSample // written by the loop until done is closed
	err     error
	stop    chan struct{}
	done    chan struct{}
}

// startPoller takes the first sample, then one every second.
func startPoller(t *testing.T, pool *pgxpool.Pool, metricsURL string) *poller {
	t.Helper()
	p := &poller{t: t, pool: pool, metrics: metricsURL, client: &http.Client{Timeout: 2 * time.Second},
		stop: make(chan struct{}), done: make(chan struct{})}
	s, err := p.sample()
	if err != nil {
		t.Fatal(err)
	}
	p.samples = append(p.samples, s)
	go p.loop()
	return p
}

func (p *poller) loop() {
	defer close(p.done)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-tick.C:
			s, err := p.sample()
			if err != nil {
				p.err = err
				return
			}
			p.samples = append(p.samples, s)
		}
	}
}

// finish stops the poller, takes a last sample and returns them all.
func (p *poller) finish() []loadtest.PollSample {
	p.t.Helper()
	close(p.stop)
	<-p.done
	if p.err != nil {
		p.t.Fatal(p.err)
	}
	s, err := p.sample()
	if err != nil {
		p.t.Fatal(err)
	}
	return append(p.samples, s)
}

// pollQuery reads the WAL, the log's head and the checkpoint counters. The
// checkpoint columns are PostgreSQL 15 and 16's (17 moved them to
// pg_stat_checkpointer).
const pollQuery = `SELECT (SELECT wal_bytes::bigint FROM pg_stat_wal), (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint,
	coalesce((SELECT seq FROM issuance_log_head), 0),
	checkpoints_timed + checkpoints_req, buffers_checkpoint, buffers_backend
FROM pg_stat_bgwriter`

func (p *poller) sample() (loadtest.PollSample, error) {
	s := loadtest.PollSample{At: time.Now()}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.pool.QueryRow(ctx, pollQuery).Scan(&s.WALBytes, &s.WALPosition, &s.Head,
		&s.Checkpoints, &s.BuffersCheckpoint, &s.BuffersBackend); err != nil {
		return s, fmt.Errorf("poll Postgres (the poller reads PostgreSQL 15/16's pg_stat_bgwriter): %w", err)
	}
	rows, err := p.pool.Query(ctx, `SELECT coalesce(query, '') FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'`)
	if err != nil {
		return s, fmt.Errorf("poll autovacuum: %w", err)
	}
	for rows.Next() {
		var q string
		if err := rows.Scan(&q); err != nil {
			return s, fmt.Errorf("poll autovacuum: %w", err)
		}
		s.Autovacuum = append(s.Autovacuum, q)
	}
	if err := rows.Err(); err != nil {
		return s, fmt.Errorf("poll autovacuum: %w", err)
	}
	resp, err := p.client.Get(p.metrics)
	if err != nil {
		return s, fmt.Errorf("poll the broker's metrics: %w", err)
	}
	text, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return s, fmt.Errorf("poll the broker's metrics: %w", err)
	}
	if s.Broker, err = loadtest.ParseMetrics(bytes.NewReader(text)); err != nil {
		return s, fmt.Errorf("poll the broker's metrics: %w", err)
	}
	if s.CommitTimes, err = loadtest.ParseHistogram(bytes.NewReader(text), "broker_audit_commit_seconds"); err != nil {
		return s, fmt.Errorf("poll the broker's metrics: %w", err)
	}
	if s.BatchSizes, err = loadtest.ParseHistogram(bytes.NewReader(text), "broker_audit_batch_size"); err != nil {
		return s, fmt.Errorf("poll the broker's metrics: %w", err)
	}
	if s.Machine, err = loadtest.MachineCPU(); err != nil {
		return s, err
	}
	return s, nil
}
