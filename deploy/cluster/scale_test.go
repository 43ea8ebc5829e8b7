package cluster

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/broker-dev/broker/internal/loadtest"
)

// scaleKnobs are the scale-out run's settings (BROKER_CLUSTER_SCALE_*).
type scaleKnobs struct {
	duration    time.Duration // each wrk run
	rounds      int           // alternations of seed floor, one replica, two, three
	connections int           // wrk -c
	rate        int           // offered requests/s of the fixed-rate latency runs
}

func readScaleKnobs(t *testing.T) scaleKnobs {
	t.Helper()
	k := scaleKnobs{duration: 10 * time.Second, rounds: 3, connections: 50, rate: 200}
	if v := os.Getenv("BROKER_CLUSTER_SCALE_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < time.Second {
			t.Fatalf("BROKER_CLUSTER_SCALE_DURATION=%q: want a duration of at least 1s", v)
		}
		k.duration = d
	}
	for _, n := range []struct {
		env      string
		dst      *int
		min, max int
	}{{"BROKER_CLUSTER_SCALE_ROUNDS", &k.rounds, 1, 20}, {"BROKER_CLUSTER_SCALE_CONNECTIONS", &k.connections, 1, 1000},
		{"BROKER_CLUSTER_SCALE_RATE", &k.rate, 1, 100000}} {
		if v := os.Getenv(n.env); v != "" {
			i, err := strconv.Atoi(v)
			if err != nil || i < n.min || i > n.max {
				t.Fatalf("%s=%q: want a whole number from %d to %d", n.env, v, n.min, n.max)
			}
			*n.dst = i
		}
	}
	return k
}

// scaleRun is one measured wrk run through the load balancer.
type scaleRun struct {
	loadtest.WrkResult
	brokerCPU time.Duration     // all replicas together
	seedCPU   time.Duration     // the seed floor
	pgCPU     time.Duration     // the postmaster and every backend
	lbCPU     time.Duration     // HAProxy
	selfCPU   time.Duration     // this test process: the client's helpers and the database link's relay
	idle      float64           // share of the machine's CPU left idle
	records   int64             // issuance-log rows the run added
	walBytes  float64           // WAL the database wrote meanwhile
	appends   float64           // issuance_log_append statements
	appendMs  float64           // their execution time (pg_stat_statements)
	audit     loadtest.Snapshot // the replicas' metrics, summed
}

func (r scaleRun) per(d time.Duration, n int64) time.Duration {
	if n == 0 {
		return 0
	}
	return d / time.Duration(n)
}

// scaleOut measures throughput through the load balancer with one replica,
// two and three, alternating with the seed floor behind the same load
// balancer, then latency at a fixed offered rate. It reports; it asserts
// nothing about speed (two cores cannot show linear scaling).
func (tp *topology) scaleOut(t *testing.T, uid uint32) {
	k := readScaleKnobs(t)
	dev := tp.idToken(t, devUser, devPassword) // Dex has new keys since it restarted
	wrk, err := exec.LookPath("wrk")
	if err != nil {
		t.Fatal("wrk is not installed: apt-get install wrk")
	}
	seedBin := filepath.Join(tp.dir, "bin", "seedfloor")
	if err := loadtest.BuildSeedfloor(filepath.Join(tp.root, "..", "shared", "bench", "seedfloor"), seedBin); err != nil {
		t.Fatal(err)
	}
	if tp.seedfloor, err = tp.a.start("seedfloor", tp.logPath("seedfloor"), nil, seedBin, "-addr", ":8090"); err != nil {
		t.Fatal(err)
	}
	tp.waitOK(t, "seedfloor", "http://"+tp.a.addr+":8090/ping", 30*time.Second, tp.seedfloor)

	path := tokenPath("load", uid)
	brokerURL, seedURL := tp.lbURL(path), "http://"+tp.lb.addr+":8081"+path
	run := func(url, bearer string, d time.Duration) scaleRun {
		t.Helper()
		args := []string{wrk, "-t1", "-c" + strconv.Itoa(k.connections), "-d" + d.String(), "--latency"}
		if bearer != "" {
			args = append(args, "-H", "Authorization: Bearer "+bearer)
		}
		before := tp.sample(t)
		out, err := tp.client.runOnce(nil, append(args, url)...)
		if err != nil {
			t.Fatalf("wrk: %v", err)
		}
		after := tp.sample(t)
		res, err := loadtest.ParseWrk(out)
		if err != nil {
			t.Fatalf("wrk: %v\n%s", err, out)
		}
		if res.Non2xx > 0 || res.Requests == 0 {
			t.Fatalf("wrk %s: %d of %d answers were not 2xx", url, res.Non2xx, res.Requests)
		}
		return scaleRun{WrkResult: res, seedCPU: after.seed - before.seed, brokerCPU: after.broker - before.broker, pgCPU: after.pg - before.pg,
			lbCPU: after.lb - before.lb, selfCPU: after.self - before.self, idle: after.machine.IdleSince(before.machine),
			records: after.records - before.records, walBytes: after.wal - before.wal,
			appends: after.appends - before.appends, appendMs: after.appendMs - before.appendMs, audit: after.metrics.Sub(before.metrics)}
	}
	// The replicas in the order they are scaled: A always serves; B, then
	// C, are started or stopped (as a scaled-down deployment) between runs.
	tp.startBroker(t, tp.net.host(hostC), tp.newBin, tp.services)
	tp.waitServedBy(t, hostC)
	replicas := []string{hostA, hostB, hostC}
	scaleTo := func(n int) {
		t.Helper()
		changed := false
		for i, name := range replicas {
			p := tp.brokers[name]
			switch {
			case i < n && !p.running():
				if err := p.restart(); err != nil {
					t.Fatal(err)
				}
				tp.waitOK(t, name, tp.brokerURL(p.host, "/readyz"), 60*time.Second, p)
				tp.waitServedBy(t, name)
			case i >= n && p.running():
				if err := p.stop(30 * time.Second); err != nil {
					t.Fatal(err)
				}
				changed = true
			}
		}
		if changed {
			time.Sleep(1500 * time.Millisecond) // the load balancer's health check notices
		}
	}
	warm := min(3*time.Second, k.duration)
	run(seedURL, "", warm)
	run(brokerURL, dev, warm)
	seeds := make([]scaleRun, 0, k.rounds)
	runs := make([][]scaleRun, len(replicas)) // by replica count - 1
	for range k.rounds {
		seeds = append(seeds, run(seedURL, "", k.duration))
		for n := 1; n <= len(replicas); n++ {
			scaleTo(n)
			runs[n-1] = append(runs[n-1], run(brokerURL, dev, k.duration))
		}
	}
	fixed := make([]fixedLatency, len(replicas))
	for n := 1; n <= len(replicas); n++ {
		scaleTo(n)
		fixed[n-1] = tp.fixedRate(t, brokerURL, dev, k.rate, k.duration)
	}

	var b strings.Builder
	fmt.Fprintf(&b, "wrk -t1 -c%d -d%s --latency through HAProxy on lb, from client; %d rounds of (seed floor, one replica, two, three)\n\n", k.connections, k.duration, k.rounds)
	b.WriteString("| run | requests/s | × seed floor | p50 | p99 | broker CPU/request | Postgres CPU/record | HAProxy CPU/request | relay CPU/request | idle | records/batch | commit ms/batch | batches relinked | append statement ms | WAL/record |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for i := range seeds {
		s := seeds[i]
		fmt.Fprintf(&b, "| %d seed floor | %.0f | 1.00 | %v | %v | %v | | %v | %v | %.0f%% | | | | | |\n", i+1, s.RPS, s.P50, s.P99,
			s.per(s.seedCPU, s.Requests), s.per(s.lbCPU, s.Requests), s.per(s.selfCPU, s.Requests), 100*s.idle)
		for n := range runs {
			x := runs[n][i]
			fmt.Fprintf(&b, "| %d %d replica(s) | %.0f | %.2f | %v | %v | %v | %v | %v | %v | %.0f%% | %.1f | %.2f | %.0f%% | %.2f | %.0f B |\n", i+1, n+1, x.RPS, x.RPS/s.RPS, x.P50, x.P99,
				x.per(x.brokerCPU, x.Requests), x.per(x.pgCPU, x.records), x.per(x.lbCPU, x.Requests), x.per(x.selfCPU, x.Requests), 100*x.idle,
				ratio(x.audit.BatchRecords, x.audit.Batches), 1000*ratio(x.audit.CommitSeconds, x.audit.Commits), 100*ratio(x.audit.HeadMoved, x.audit.Batches), ratio(x.appendMs, x.appends), x.walBytes/float64(max(x.records, 1)))
		}
	}
	fmt.Fprintf(&b, "\nFixed offered rate %d requests/s for %s (open loop, from client):", k.rate, k.duration)
	for n, f := range fixed {
		fmt.Fprintf(&b, " %d replica(s) p50 %v p99 %v (%d failed);", n+1, f.p50, f.p99, f.failed)
	}
	b.WriteString("\n")
	t.Logf("scale-out:\n%s", b.String())
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

// sample is the cumulative counters a run is measured between.
type sample struct {
	broker, pg, lb, self, seed time.Duration
	machine                    loadtest.CPUTimes
	records                    int64
	wal                        float64 // bytes of WAL since 0/0
	appends, appendMs          float64 // issuance_log_append calls and execution time
	metrics                    loadtest.Snapshot
}

func (tp *topology) sample(t *testing.T) sample {
	t.Helper()
	var s sample
	var err error
	for _, name := range []string{hostA, hostB, hostC} {
		p := tp.brokers[name]
		if p == nil || !p.running() {
			continue
		}
		cpu, err := loadtest.ProcessCPU(p.pid())
		if err != nil {
			t.Fatal(err)
		}
		s.broker += cpu
		resp, err := tp.get(tp.brokerURL(p.host, "/metrics"), "", "")
		if err != nil {
			t.Fatal(err)
		}
		m, err := loadtest.ParseMetrics(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		s.metrics = s.metrics.Add(m)
	}
	if s.pg, err = loadtest.ProcessTreeCPU(tp.postgres.pid()); err != nil {
		t.Fatal(err)
	}
	if s.lb, err = loadtest.ProcessCPU(tp.haproxy.pid()); err != nil {
		t.Fatal(err)
	}
	if s.self, err = loadtest.ProcessCPU(os.Getpid()); err != nil {
		t.Fatal(err)
	}
	if tp.seedfloor != nil {
		if s.seed, err = loadtest.ProcessCPU(tp.seedfloor.pid()); err != nil {
			t.Fatal(err)
		}
	}
	if s.machine, err = loadtest.MachineCPU(); err != nil {
		t.Fatal(err)
	}
	if err := tp.pool.QueryRow(context.Background(),
		`SELECT count(*), pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::float8 FROM issuance_log`).Scan(&s.records, &s.wal); err != nil {
		t.Fatal(err)
	}
	if err := tp.pool.QueryRow(context.Background(), `SELECT coalesce(sum(calls), 0)::float8, coalesce(sum(total_exec_time), 0)::float8
		FROM pg_stat_statements WHERE query LIKE '%issuance_log_append(%'`).Scan(&s.appends, &s.appendMs); err != nil {
		t.Fatal(err)
	}
	return s
}

// fixedLatency is the outcome of an open-loop run.
type fixedLatency struct {
	p50, p99 time.Duration
	failed   int
}

// fixedRate sends requests at rate per second for d regardless of how
// fast answers come (open loop), and reports the latency of the grants.
func (tp *topology) fixedRate(t *testing.T, url, bearer string, rate int, d time.Duration) fixedLatency {
	t.Helper()
	var mu sync.Mutex
	var lat []time.Duration
	failed := 0
	var wg sync.WaitGroup
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		<-tick.C
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			resp, err := tp.get(url, bearer, "")
			ok := err == nil && resp.StatusCode == http.StatusOK
			if err == nil {
				io.Copy(io.Discard, resp.Body) // the connection is reused, as a client's is
				resp.Body.Close()
			}
			mu.Lock()
			defer mu.Unlock()
			if !ok {
				failed++
				return
			}
			lat = append(lat, time.Since(start))
		}()
	}
	wg.Wait()
	if len(lat) == 0 {
		t.Fatalf("fixed-rate run: no request succeeded")
	}
	slices.Sort(lat)
	return fixedLatency{p50: lat[len(lat)/2], p99: lat[(len(lat)*99+99)/100-1], failed: failed}
}
