package load

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/broker-dev/broker/internal/auth/dextest"
	"github.com/broker-dev/broker/internal/loadtest"
	"github.com/broker-dev/broker/internal/pg/pgtest"
	"github.com/broker-dev/broker/internal/token"
)

// TestMain stops the benchmark's Postgres cluster however the run ends.
func TestMain(m *testing.M) { pgtest.Main(m) }

const (
	// The seed floor's credentials (hard-coded in seedfloor/main.go), so both
	// servers sign with the same app certificate.
	appID    = loadtest.SeedfloorAppID
	appCert  = loadtest.SeedfloorAppCertificate
	auditKey = "8f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0"

	channel = "bench"
	expiry  = "3600"
)

// knobs are the run's settings, from the environment.
type knobs struct {
	duration    time.Duration // each measured run (BROKER_LOAD_DURATION, 15s)
	rounds      int           // seed/broker pairs (BROKER_LOAD_ROUNDS, 3)
	connections int           // wrk's -c (BROKER_LOAD_CONNECTIONS, 50)
	warmup      time.Duration // one unmeasured run of each first
	seedfloor   string        // seed floor source (BROKER_LOAD_SEEDFLOOR, ../shared/bench/seedfloor)
	baseline    string        // a git revision whose broker also runs, alternating (BROKER_LOAD_BASELINE)
	otlp        string        // an OTLP/HTTP endpoint the broker (not the baseline) traces to, sampling every request (BROKER_LOAD_OTLP)
}

// brokerEnv is what the knobs add to the environment of the broker from the tree.
func (k knobs) brokerEnv() []string {
	if k.otlp == "" {
		return nil
	}
	return []string{"OTEL_EXPORTER_OTLP_ENDPOINT=" + k.otlp, "OTEL_TRACES_SAMPLER=always_on"}
}

// TestLoadVsSeedfloor measures issuance throughput and latency of the broker's
// full path against the seed floor under wrk -t1 -c50, alternating seed and
// broker runs, then checks that the issuance log holds exactly one record per
// answered request. It reports the targets (broker ≥ 2× seedfloor requests/s,
// p99 ≤ 20 ms) without asserting them: timings are measurements, not test
// outcomes. It fails only when the harness breaks or the records do not add up.
//
//	BROKER_LOAD=1 go test -v -count=1 -timeout 30m -run TestLoadVsSeedfloor ./bench/load/
//
// BROKER_LOAD_DURATION (default 15s), BROKER_LOAD_ROUNDS (default 3) and
// BROKER_LOAD_CONNECTIONS (default 50; the target is stated for 50) change the
// runs; BROKER_LOAD_SEEDFLOOR points at another copy of the seed floor;
// BROKER_LOAD_BASELINE=<git revision> also runs that revision's broker, on
// its own database, alternating with the others, to measure a change.
// BROKER_LOAD_OTLP=http://127.0.0.1:4318 makes the broker from the tree (not
// the baseline) export a span tree for every request there
// (OTEL_TRACES_SAMPLER=always_on), to measure tracing.
func TestLoadVsSeedfloor(t *testing.T) {
	if os.Getenv("BROKER_LOAD") != "1" {
		t.Skip("load benchmark (minutes, needs wrk): run bench/load/run.sh, or BROKER_LOAD=1 go test -v -count=1 -timeout 30m -run TestLoadVsSeedfloor ./bench/load/")
	}
	root := repoRoot(t)
	k := readKnobs(t, root)
	wrk := needWrk(t)
	loadBefore := loadAvg()

	r := startRig(t, root, k.seedfloor, pgtest.Options{}, k.brokerEnv()) // fsync on: the log's durability is part of the cost
	// The same request through a token URL (no header), as a UI Kit sends it.
	var created struct {
		TokenURL string `json:"tokenUrl"`
	}
	if code := call(t, "POST", "http://"+r.brokerAddr+"/v1/token-urls", r.dev, "", &created); code != http.StatusCreated {
		t.Fatalf("create a token URL: status %d", code)
	}
	viaURL := created.TokenURL + r.path
	requireToken(t, "broker via token URL", viaURL, "", r.uid)

	bench := r.bencher(t, wrk, k.connections)
	var baseline *bencher
	var baselineURL string
	if k.baseline != "" {
		b := bench
		b.pool, b.brokerPID, b.metrics, baselineURL = startBaseline(t, root, k.baseline, r.bin, r.cluster, r.dex.Issuer(), r.admin, r.dev)
		baseline = &b
	}
	t.Logf("wrk -t1 -c%d -d%s --latency [-H \"Authorization: Bearer $TOKEN\"] URL; warm-up %s each, then %d × (seedfloor, broker)",
		k.connections, k.duration, k.warmup, k.rounds)
	bench.seed(r.seedURL, k.warmup)
	bench.broker(r.brokerURL, k.warmup, true)
	bench.broker(viaURL, k.warmup, false)
	if baseline != nil {
		baseline.broker(baselineURL, k.warmup, true)
	}
	var seeds, brokers, viaURLs, baselines []run
	for range k.rounds {
		seeds = append(seeds, bench.seed(r.seedURL, k.duration))
		brokers = append(brokers, bench.broker(r.brokerURL, k.duration, true))
		viaURLs = append(viaURLs, bench.broker(viaURL, k.duration, false))
		if baseline != nil {
			baselines = append(baselines, baseline.broker(baselineURL, k.duration, true))
		}
	}
	reportTokenURL(t, brokers, viaURLs)
	if baseline != nil {
		reportBaseline(t, k.baseline, brokers, baselines)
	}
	_, _, acc := bench.accounting(r.brokerURL, k.duration, "answered.lua", filepath.Join(r.bin, "answered"))

	report(t, k, root, loadBefore, seeds, brokers, acc)
	requireNoSecrets(t, r.brokerLog, map[string]string{
		"developer ID token": r.dev, "admin ID token": r.admin, "app certificate": appCert, "audit key": auditKey,
	})
}

func readKnobs(t *testing.T, root string) knobs {
	t.Helper()
	k := knobs{
		duration:    envDuration(t, "BROKER_LOAD_DURATION", 15*time.Second, time.Second),
		rounds:      envInt(t, "BROKER_LOAD_ROUNDS", 3, 1, 1000),
		connections: envInt(t, "BROKER_LOAD_CONNECTIONS", 50, 1, 1000),
		seedfloor:   filepath.Join(root, "..", "shared", "bench", "seedfloor"),
		baseline:    os.Getenv("BROKER_LOAD_BASELINE"),
		otlp:        os.Getenv("BROKER_LOAD_OTLP"),
	}
	if v := os.Getenv("BROKER_LOAD_SEEDFLOOR"); v != "" {
		k.seedfloor = v
	}
	k.warmup = min(5*time.Second, k.duration)
	return k
}

// repoRoot is the module root: the test runs in bench/load.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("no go.mod two levels above the test: %v", err)
	}
	return root
}

func goBuild(t *testing.T, dir, out, pkg string) string {
	t.Helper()
	if err := loadtest.GoBuild(dir, out, pkg); err != nil {
		t.Fatal(err)
	}
	return out
}

// requireDurable stops the benchmark unless commits reach the disk: the log's
// fsync is what the comparison is about.
func requireDurable(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	for setting, want := range map[string]string{"fsync": "on", "synchronous_commit": "on"} {
		var got string
		if err := pool.QueryRow(context.Background(), "SHOW "+setting).Scan(&got); err != nil {
			t.Fatalf("SHOW %s: %v", setting, err)
		}
		if got != want {
			t.Fatalf("Postgres %s = %s; the benchmark needs %s", setting, got, want)
		}
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// start runs a server as its own process, output to logPath, and stops it
// (SIGTERM, then SIGKILL after 30s) when the test ends. The kernel kills it
// if the test binary dies first. It returns the process id.
func start(t *testing.T, name, bin string, args, env []string, logPath string) int {
	t.Helper()
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close() // the child has its own descriptor
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			t.Errorf("%s did not stop within 30s of SIGTERM; killing it", name)
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	return cmd.Process.Pid
}

// waitOK polls url until it answers 200.
func waitOK(t *testing.T, url string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not answering 200 after 30s (last error: %v)", url, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// call sends one request and decodes the JSON answer into out.
func call(t *testing.T, method, url, bearer, body string, out any) int {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, url, err)
	}
	if err := json.Unmarshal(raw, out); err != nil {
		t.Fatalf("%s %s: status %d, body is not JSON: %v", method, url, resp.StatusCode, err)
	}
	return resp.StatusCode
}

// requireToken checks that url answers with an RTC token for the benchmark
// channel and uid signed with the shared certificate: both servers must do
// the same work before their speeds are compared.
func requireToken(t *testing.T, name, url, bearer string, uid uint32) {
	t.Helper()
	var body struct {
		RTCToken string `json:"rtcToken"`
	}
	if code := call(t, "GET", url, bearer, "", &body); code != http.StatusOK {
		t.Fatalf("%s: status %d", name, code)
	}
	tok, err := token.Parse(body.RTCToken)
	if err != nil {
		t.Fatalf("%s: token does not parse: %v", name, err)
	}
	if !tok.Verify(appCert) || len(tok.Services) != 1 || tok.Services[0].Channel != channel || tok.Services[0].UID != strconv.FormatUint(uint64(uid), 10) {
		t.Fatalf("%s: token not signed for channel %s uid %d", name, channel, uid)
	}
}

// run is one measured wrk run; Rows and Broker are for broker runs only.
type run struct {
	loadtest.WrkResult
	CPU    time.Duration     // the server process's CPU time during the run
	WrkCPU time.Duration     // wrk's own CPU time
	PGCPU  time.Duration     // CPU time of the database's Postgres backends (broker runs)
	Idle   float64           // share of the machine's CPU time left idle
	Rows   int64             // issuance-log rows the run added
	Broker loadtest.Snapshot // what the broker's metrics counted during the run
}

// bencher runs wrk against the servers and counts the broker's records.
type bencher struct {
	t       *testing.T
	wrk     string
	pool    *pgxpool.Pool
	metrics string // the broker's /metrics URL
	token   string // the developer's ID token

	connections int

	brokerPID, seedPID int
}

func (b bencher) wrkArgs(url string, d time.Duration, auth bool, extra ...string) []string {
	args := []string{"-t1", fmt.Sprintf("-c%d", b.connections), fmt.Sprintf("-d%ds", int(d.Seconds())), "--latency"}
	if auth {
		args = append(args, "-H", "Authorization: Bearer "+b.token)
	}
	return append(append(args, extra...), url)
}

// runWrk runs wrk and parses its report, measuring the CPU time server pid
// and the machine spent meanwhile. wrk's output never contains the bearer
// token (it does not echo headers), so it may be shown on failure.
func (b bencher) runWrk(pid int, args []string, env ...string) run {
	b.t.Helper()
	cmd := exec.Command(b.wrk, args...)
	cmd.Env = append(os.Environ(), env...)
	cpu0, mach0 := b.cpu(pid)
	backends, pg0 := b.backendsCPU(nil)
	out, err := cmd.CombinedOutput()
	cpu1, mach1 := b.cpu(pid)
	_, pg1 := b.backendsCPU(backends)
	if err != nil {
		b.t.Fatalf("wrk: %v\n%s", err, out)
	}
	r, err := loadtest.ParseWrk(string(out))
	if err != nil {
		b.t.Fatalf("%v\n%s", err, out)
	}
	return run{WrkResult: r, CPU: cpu1 - cpu0, WrkCPU: cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime(),
		PGCPU: pg1 - pg0, Idle: mach1.IdleSince(mach0)}
}

// backendsCPU sums the CPU time of the Postgres backends serving the
// benchmark's database: those in pids, or, for nil, those connected now. A
// backend that exits in between counts as zero; the pool keeps its
// connections open, so that is rare. The cluster's shared processes (WAL
// writer, checkpointer) are not included.
func (b bencher) backendsCPU(pids []int) ([]int, time.Duration) {
	b.t.Helper()
	if pids == nil {
		rows, err := b.pool.Query(context.Background(), `SELECT pid FROM pg_stat_activity WHERE datname = current_database()`)
		if err != nil {
			b.t.Fatalf("list Postgres backends: %v", err)
		}
		for rows.Next() {
			var pid int
			if err := rows.Scan(&pid); err != nil {
				b.t.Fatalf("list Postgres backends: %v", err)
			}
			pids = append(pids, pid)
		}
		if err := rows.Err(); err != nil {
			b.t.Fatalf("list Postgres backends: %v", err)
		}
	}
	var total time.Duration
	for _, pid := range pids {
		if d, err := loadtest.ProcessCPU(pid); err == nil {
			total += d
		}
	}
	return pids, total
}

func (b bencher) cpu(pid int) (time.Duration, loadtest.CPUTimes) {
	b.t.Helper()
	p, err := loadtest.ProcessCPU(pid)
	if err != nil {
		b.t.Fatal(err)
	}
	m, err := loadtest.MachineCPU()
	if err != nil {
		b.t.Fatal(err)
	}
	return p, m
}

// perRequest is the server's CPU time per answered request.
func (r run) perRequest() time.Duration { return r.per(r.CPU) }

// per divides d by the answered requests.
func (r run) per(d time.Duration) time.Duration {
	if r.Requests == 0 {
		return 0
	}
	return (d / time.Duration(r.Requests)).Round(time.Microsecond)
}

func (b bencher) seed(url string, d time.Duration) run {
	b.t.Helper()
	r := b.runWrk(b.seedPID, b.wrkArgs(url, d, false))
	b.t.Logf("seedfloor %5.1fs: %8.0f req/s  p50 %-8s p99 %-8s %d requests, %d non-2xx; CPU per request %s (wrk %s), machine %.0f%% idle",
		r.Seconds, r.RPS, r.P50, r.P99, r.Requests, r.Non2xx, r.perRequest(), r.per(r.WrkCPU), 100*r.Idle)
	return r
}

// broker runs wrk against the broker, with the bearer token (auth) or
// without (a token URL).
func (b bencher) broker(url string, d time.Duration, auth bool) run {
	b.t.Helper()
	rowsBefore, before := b.rows(), b.snapshot()
	r := b.runWrk(b.brokerPID, b.wrkArgs(url, d, auth))
	rowsAfter := b.settledRows()
	r.Rows = rowsAfter - rowsBefore
	r.Broker = b.snapshot().Sub(before)
	b.t.Logf("broker    %5.1fs: %8.0f req/s  p50 %-8s p99 %-8s %d requests, %d non-2xx; CPU per request %s (Postgres backends %s, wrk %s), machine %.0f%% idle; %d rows, decisions %v; %s",
		r.Seconds, r.RPS, r.P50, r.P99, r.Requests, r.Non2xx, r.perRequest(), r.per(r.PGCPU), r.per(r.WrkCPU), 100*r.Idle, r.Rows, r.Broker.Decisions, inside(r.Broker))
	if cut := r.Rows - r.Requests; cut < 0 || cut > int64(b.connections) {
		b.t.Errorf("broker run: %d rows for %d answered requests; at most the %d requests in flight when wrk stopped may have rows without an answer",
			r.Rows, r.Requests, b.connections)
	}
	return r
}

// accounting is a broker run whose every response wrk writes down to
// answeredPath with script (answered.lua: status and X-Request-Id;
// overload.lua adds Retry-After), joined to the rows the run added. It is
// kept out of the measured runs: the Lua callback costs wrk time. It returns
// the run, the answers and their reconciliation with the rows.
func (b bencher) accounting(url string, d time.Duration, script, answeredPath string) (run, []loadtest.Answer, loadtest.Accounting) {
	b.t.Helper()
	seqBefore := b.headSeq()
	script, err := filepath.Abs(script)
	if err != nil {
		b.t.Fatal(err)
	}
	r := b.runWrk(b.brokerPID, b.wrkArgs(url, d, true, "-s", script), "LOAD_ANSWERED="+answeredPath)
	b.settledRows()
	answers, err := loadtest.ReadAnswered(answeredPath)
	if err != nil {
		b.t.Fatal(err)
	}
	if int64(len(answers)) != r.Requests {
		b.t.Fatalf("%s wrote %d responses, wrk counted %d", filepath.Base(script), len(answers), r.Requests)
	}
	return r, answers, b.reconcile(r.Seconds, answers, seqBefore, b.connections)
}

// headSeq is the issuance log's last seq.
func (b bencher) headSeq() int64 {
	b.t.Helper()
	var seq int64
	if err := b.pool.QueryRow(context.Background(), `SELECT coalesce(max(seq), 0) FROM issuance_log`).Scan(&seq); err != nil {
		b.t.Fatalf("issuance log head: %v", err)
	}
	return seq
}

// reconcile joins the answers of a run of the given length to the rows
// appended after seqBefore, by request id, and logs the result. It fails the
// test if an answered request lacks its rows or has rows it should not, or
// if more than inFlight rows (requests cut off in flight when the run
// stopped) have no answer.
func (b bencher) reconcile(seconds float64, answers []loadtest.Answer, seqBefore int64, inFlight int) loadtest.Accounting {
	b.t.Helper()
	rows := map[string]int{}
	q, err := b.pool.Query(context.Background(), `SELECT request_id, count(*) FROM issuance_log WHERE seq > $1 GROUP BY request_id`, seqBefore)
	if err != nil {
		b.t.Fatalf("read the run's rows: %v", err)
	}
	for q.Next() {
		var id string
		var n int
		if err := q.Scan(&id, &n); err != nil {
			b.t.Fatalf("read the run's rows: %v", err)
		}
		rows[id] = n
	}
	if err := q.Err(); err != nil {
		b.t.Fatalf("read the run's rows: %v", err)
	}
	a := loadtest.Reconcile(answers, rows)
	b.t.Logf("accounting %5.1fs: %d answered %v, %d rows: %d answered with exactly their rows, %d rows of requests cut off unanswered",
		seconds, a.Answered, a.ByStatus, a.Rows, a.Matched, a.Unanswered)
	if len(a.Wrong) > 0 {
		b.t.Errorf("%d answered requests do not have exactly one record per decision, e.g. %s", len(a.Wrong), a.Wrong[:min(5, len(a.Wrong))])
	}
	if a.Unanswered > inFlight {
		b.t.Errorf("%d rows without an answer; at most the %d requests in flight when the run stopped may have one", a.Unanswered, inFlight)
	}
	return a
}

func (b bencher) rows() int64 {
	b.t.Helper()
	var n int64
	if err := b.pool.QueryRow(context.Background(), `SELECT count(*) FROM issuance_log`).Scan(&n); err != nil {
		b.t.Fatalf("count issuance_log rows: %v", err)
	}
	return n
}

// settledRows waits until the requests wrk left in flight have finished (no
// new row for half a second; a commit attempt is bounded by the log's 2s
// timeout) and returns the row count.
func (b bencher) settledRows() int64 {
	b.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	last, quiet := b.rows(), 0
	for quiet < 5 {
		if time.Now().After(deadline) {
			b.t.Fatal("issuance log still growing 15s after wrk stopped")
		}
		time.Sleep(100 * time.Millisecond)
		n := b.rows()
		if n == last {
			quiet++
		} else {
			last, quiet = n, 0
		}
	}
	return last
}

// snapshot reads the broker's metrics.
func (b bencher) snapshot() loadtest.Snapshot {
	b.t.Helper()
	resp, err := http.Get(b.metrics)
	if err != nil {
		b.t.Fatalf("broker metrics: %v", err)
	}
	defer resp.Body.Close()
	s, err := loadtest.ParseMetrics(resp.Body)
	if err != nil {
		b.t.Fatalf("broker metrics: %v", err)
	}
	return s
}

// inside describes where a run's time went inside the broker.
func inside(s loadtest.Snapshot) string {
	mean := func(sum, n float64) time.Duration {
		if n == 0 {
			return 0
		}
		return time.Duration(sum / n * float64(time.Second)).Round(10 * time.Microsecond)
	}
	perBatch := 0.0
	if s.Batches > 0 {
		perBatch = s.BatchRecords / s.Batches
	}
	return fmt.Sprintf("in the broker %s per request; %.0f log commits of %.1f records, %s each",
		mean(s.ServerSeconds, s.ServerRequests), s.Commits, perBatch, mean(s.CommitSeconds, s.Commits))
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	for line := range strings.Lines(string(b)) {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

// revision names the commit the broker was built from, and says whether the
// working tree differed from it.
func revision(root string) string {
	rev, err := exec.Command("git", "-C", root, "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "unknown"
	}
	s := strings.TrimSpace(string(rev))
	if dirty, err := exec.Command("git", "-C", root, "status", "--porcelain", "--", "cmd", "internal", "migrations", "policies", "go.mod", "go.sum").Output(); err == nil && len(dirty) > 0 {
		s += fmt.Sprintf(" + uncommitted changes in %d files", bytes.Count(dirty, []byte("\n")))
	}
	return s
}

func median[T int64 | float64 | time.Duration](xs []T) T {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func column[T any](runs []run, f func(run) T) []T {
	out := make([]T, len(runs))
	for i, r := range runs {
		out[i] = f(r)
	}
	return out
}

// report prints the machine, each run, the medians and the targets as
// Markdown, ready for BENCHMARKS.md.
// startBaseline builds the broker of git revision rev (in a worktree), starts
// it on its own database of cluster (migrated by itself), gives the
// developer the same rule, and returns its pool, pid, metrics URL and the
// benchmark URL on it.
func startBaseline(t *testing.T, root, rev, bin string, cluster *pgtest.Cluster, issuer, admin, dev string) (*pgxpool.Pool, int, string, string) {
	t.Helper()
	tree := filepath.Join(t.TempDir(), "baseline")
	if out, err := exec.Command("git", "-C", root, "worktree", "add", "--detach", tree, rev).CombinedOutput(); err != nil {
		t.Fatalf("git worktree add %s: %v\n%s", rev, err, out)
	}
	t.Cleanup(func() { _ = exec.Command("git", "-C", root, "worktree", "remove", "--force", tree).Run() })
	binary := goBuild(t, tree, filepath.Join(bin, "broker-baseline"), "./cmd/broker")
	db := cluster.NewEmpty(t) // the baseline migrates it to its own schema
	addr := freeAddr(t)
	pid := start(t, "baseline broker", binary, []string{"serve"}, []string{
		"BROKER_ADDR=" + addr, "BROKER_DATABASE_URL=" + db.URL, "BROKER_MIGRATE=auto",
		"BROKER_OIDC_ISSUER=" + issuer, "BROKER_OIDC_AUDIENCE=" + dextest.ClientID,
		"BROKER_APP_ID=" + appID, "BROKER_APP_CERTIFICATE=" + appCert, "BROKER_AUDIT_KEY=" + auditKey,
		"BROKER_BOOTSTRAP_ADMINS=group:" + dextest.GroupAdmins, "BROKER_RATE_LIMIT=0",
	}, filepath.Join(bin, "baseline.log"))
	waitOK(t, "http://"+addr+"/readyz")
	var rule map[string]any
	if code := call(t, "POST", "http://"+addr+"/v1/policies", admin,
		`{"subject":"group:`+dextest.GroupDevelopers+`","channel":"`+channel+`","role":"publisher","effect":"allow"}`, &rule); code != http.StatusCreated {
		t.Fatalf("baseline: add the benchmark rule: status %d", code)
	}
	var me struct {
		UID uint32 `json:"uid"`
	}
	if code := call(t, "GET", "http://"+addr+"/v1/me", dev, "", &me); code != http.StatusOK {
		t.Fatalf("baseline /v1/me: status %d", code)
	}
	// The baseline binds uids in its own database: ask for the developer's.
	url := fmt.Sprintf("http://%s/rtc/%s/publisher/uid/%d/?expiry=%s", addr, channel, me.UID, expiry)
	requireToken(t, "baseline broker", url, dev, me.UID)
	return db.Pool(), pid, "http://" + addr + "/metrics", url
}

// reportBaseline logs the broker's throughput against the baseline
// revision's, both measured in the same run (medians of alternating runs).
func reportBaseline(t *testing.T, rev string, brokers, baselines []run) {
	t.Helper()
	rps := func(r run) float64 { return r.RPS }
	p99 := func(r run) time.Duration { return r.P99 }
	b, base := median(column(brokers, rps)), median(column(baselines, rps))
	t.Logf("broker vs baseline %s (medians of %d alternating runs): %.0f vs %.0f req/s (%.2f×), p99 %s vs %s",
		rev, len(brokers), b, base, b/base, median(column(brokers, p99)), median(column(baselines, p99)))
}

// reportTokenURL logs what a request through a token URL costs against the
// same request with a (cached) bearer token, in the same load run: the
// medians of the alternating runs.
func reportTokenURL(t *testing.T, bearer, viaURL []run) {
	t.Helper()
	rps := func(r run) float64 { return r.RPS }
	p50, p99, cpu := func(r run) time.Duration { return r.P50 }, func(r run) time.Duration { return r.P99 }, run.perRequest
	b, u := median(column(bearer, rps)), median(column(viaURL, rps))
	t.Logf("token URL vs bearer (medians of %d alternating runs): %.0f vs %.0f req/s (token URL/bearer %.2f×), p50 %s vs %s, p99 %s vs %s, CPU/req %s vs %s",
		len(bearer), u, b, u/b, median(column(viaURL, p50)), median(column(bearer, p50)),
		median(column(viaURL, p99)), median(column(bearer, p99)), median(column(viaURL, cpu)), median(column(bearer, cpu)))
}

func report(t *testing.T, k knobs, root, loadBefore string, seeds, brokers []run, acc loadtest.Accounting) {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "Machine: %s, %d CPUs, %s/%s, %s; load average %s before, %s after. Broker built from %s.\n",
		cpuModel(), runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, runtime.Version(), loadBefore, loadAvg(), revision(root))
	fmt.Fprintf(&b, "wrk -t1 -c%d -d%s --latency; runs alternate seedfloor, broker.\n\n", k.connections, k.duration)
	b.WriteString("| run | seedfloor req/s | p50 | p99 | CPU/req | idle | broker req/s | p50 | p99 | CPU/req | idle | broker answered | log rows |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for i := range seeds {
		s, r := seeds[i], brokers[i]
		fmt.Fprintf(&b, "| %d | %.0f | %s | %s | %s | %.0f%% | %.0f | %s | %s | %s | %.0f%% | %d | %d |\n", i+1,
			s.RPS, s.P50, s.P99, s.perRequest(), 100*s.Idle, r.RPS, r.P50, r.P99, r.perRequest(), 100*r.Idle, r.Requests, r.Rows)
	}
	seedRPS, brokerRPS := median(column(seeds, func(r run) float64 { return r.RPS })), median(column(brokers, func(r run) float64 { return r.RPS }))
	p50, p99, cpu := func(r run) time.Duration { return r.P50 }, func(r run) time.Duration { return r.P99 }, run.perRequest
	fmt.Fprintf(&b, "| median | %.0f | %s | %s | %s | | %.0f | %s | %s | %s | | | |\n\n",
		seedRPS, median(column(seeds, p50)), median(column(seeds, p99)), median(column(seeds, cpu)),
		brokerRPS, median(column(brokers, p50)), median(column(brokers, p99)), median(column(brokers, cpu)))
	b.WriteString("| broker run | Postgres backends CPU/req | wrk CPU/req (seedfloor run before) | where the broker's time went |\n|---|---|---|---|\n")
	for i, r := range brokers {
		fmt.Fprintf(&b, "| %d | %s | %s (%s) | %s |\n", i+1, r.per(r.PGCPU), r.per(r.WrkCPU), seeds[i].per(seeds[i].WrkCPU), inside(r.Broker))
	}
	b.WriteString("\n")
	ratio := brokerRPS / seedRPS
	worstP99 := slices.Max(column(brokers, p99))
	fmt.Fprintf(&b, "Ratio of medians broker/seedfloor: %.2f× (target ≥ 2×: %s). Broker p99 worst run: %s (target ≤ 20ms: %s).\n",
		ratio, verdict(ratio >= 2), worstP99, verdict(worstP99 <= 20*time.Millisecond))
	rows, answered := int64(0), int64(0)
	decided := map[string]int{}
	for _, r := range brokers {
		rows, answered = rows+r.Rows, answered+r.Requests
		for k, v := range r.Broker.Decisions {
			decided[k] += v
		}
	}
	fmt.Fprintf(&b, "Records, measured broker runs: %d rows for %d answered requests (%d rows of requests cut off in flight when wrk stopped); the broker counted decisions %v.\n",
		rows, answered, rows-answered, decided)
	fmt.Fprintf(&b, "Accounting run (%s, every X-Request-Id written down): %d answered %v; %d with exactly one row each; %d wrong; %d rows of requests cut off unanswered.\n",
		k.duration, acc.Answered, acc.ByStatus, acc.Matched, len(acc.Wrong), acc.Unanswered)
	t.Logf("summary:\n%s", b.String())
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "NOT met"
}

// requireNoSecrets fails if any secret appears in the broker's log.
func requireNoSecrets(t *testing.T, logPath string, secrets map[string]string) {
	t.Helper()
	f, err := os.Open(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		for name, s := range secrets {
			if strings.Contains(sc.Text(), s) {
				t.Fatalf("the %s appears in the broker's log", name)
			}
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("read the broker's log: %v", err)
	}
}
