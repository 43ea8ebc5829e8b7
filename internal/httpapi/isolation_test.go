package httpapi

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/broker-dev/broker/internal/audit"
	"github.com/broker-dev/broker/internal/broker"
	"github.com/broker-dev/broker/internal/identity"
	"github.com/broker-dev/broker/internal/pg"
	"github.com/broker-dev/broker/internal/pg/pgtest"
	"github.com/broker-dev/broker/internal/policy"
	"github.com/broker-dev/broker/internal/token"
)

// TestIsolation_SlowExportsAndVerifiesNeverStarveTokens: ten exports whose
// clients read slowly, ten verifications (on a log of 20,000 records) and a
// user asking for a 63-byte "*a*a…*" pattern four at a time against 20,000
// deny patterns, while a victim asks for tokens at a fixed rate (20/s): every
// victim request is granted; the auditors past the read limit get a prompt
// 503. It reports the victim's p99 alone and under the attack (a
// measurement, not asserted).
func TestIsolation_SlowExportsAndVerifiesNeverStarveTokens(t *testing.T) {
	ctx := context.Background()
	db := pgtest.New(t)
	pool, err := pg.Open(ctx, db.URL, pg.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	reads, err := pg.Open(ctx, db.URL, pg.Options{MaxConns: 4})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(reads.Close)
	rules, err := policy.Open(ctx, policy.NewPGStore(pool, nil), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rules.Close)
	if err := rules.Bootstrap(ctx, []string{"group:admins"}); err != nil {
		t.Fatal(err)
	}
	allowed := policy.Rule{Subject: "group:dev", Channel: "iso", Role: policy.Publisher, Effect: policy.Allow}
	if _, err := rules.Add(ctx, policy.Actor{Subject: "test", Operator: true}, allowed); err != nil {
		t.Fatal(err)
	}
	// A deny-heavy rule set for the wildcard attacker: 20,000 long patterns.
	var doc strings.Builder
	doc.WriteString("subject,channel,role,effect,maxTtlSeconds\n")
	for i := range 20_000 {
		fmt.Fprintf(&doc, "*,ban-%d-%s*%s,subscriber,deny,\n", i, strings.Repeat("x", 30), strings.Repeat("y", 10))
	}
	if _, err := rules.Import(ctx, policy.Actor{Subject: "test", Operator: true}, strings.NewReader(doc.String()), policy.ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	log, err := audit.NewPostgres(pool, []byte(strings.Repeat("k", 32)), audit.PostgresOptions{Reads: reads, MaxReads: 4})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { log.Close() })
	var fill sync.WaitGroup
	for g := range 50 {
		fill.Go(func() {
			for i := range 400 {
				r := audit.Record{Subject: fmt.Sprint("s", g), Service: audit.ServiceRTC, Channel: "bulk", Role: "publisher",
					Decision: audit.DecisionDenied, Reason: strings.Repeat("r", 200), UserAgent: fmt.Sprint("ua", i)}
				if _, err := log.Append(ctx, r); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	fill.Wait()
	tb, _ := token.NewBuilder("0123456789abcdef0123456789abcdef", testCert)
	b, err := broker.New(broker.Config{DefaultTTL: time.Hour, MaxTTL: 24 * time.Hour},
		broker.Deps{Tokens: tb, Policy: rules, Log: log, UIDs: identity.NewPostgres(pool)})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(NewServer(Deps{Authenticate: testAuth, Broker: b, Policies: rules, Audit: log}))
	t.Cleanup(srv.Close)
	auditor := func(path string, slow bool) int {
		req, _ := http.NewRequest("GET", srv.URL+path, nil)
		req.Header.Set("Authorization", "Bearer root;admins")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0
		}
		defer resp.Body.Close()
		buf := make([]byte, 1024)
		for deadline := time.Now().Add(4 * time.Second); time.Now().Before(deadline); {
			if _, err := resp.Body.Read(buf); err != nil {
				break
			}
			if slow {
				time.Sleep(100 * time.Millisecond) // ~10 KiB/s
			}
		}
		return resp.StatusCode
	}
	// The victim: 20 requests a second for 4 s; first alone, then with the
	// attackers.
	victim := func() (failed []string, p99 time.Duration) {
		var took []time.Duration
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for i := range 80 {
			<-tick.C
			req, _ := http.NewRequest("GET", fmt.Sprintf("%s/rtc/iso/publisher/uid/%d/", srv.URL, 7000), nil)
			req.Header.Set("Authorization", "Bearer victim;dev;7000")
			start := time.Now()
			resp, err := http.DefaultClient.Do(req)
			took = append(took, time.Since(start))
			if err != nil || resp.StatusCode != 200 {
				failed = append(failed, fmt.Sprintf("request %d: %v %v", i, err, resp))
			}
			if resp != nil {
				resp.Body.Close()
			}
		}
		slices.Sort(took)
		return failed, took[len(took)*99/100]
	}
	_, alone := victim()

	var wg sync.WaitGroup
	var stop atomic.Bool
	var refused, served, wildcards atomic.Int64
	for range 10 {
		wg.Go(func() {
			if auditor("/v1/audit/export?format=csv", true) == 503 {
				refused.Add(1)
			} else {
				served.Add(1)
			}
		})
		wg.Go(func() {
			if auditor("/v1/audit/verify", false) == 503 {
				refused.Add(1)
			} else {
				served.Add(1)
			}
		})
	}
	// Bob asks for a 63-byte "*a*a…*" pattern as fast as he can, four at a time.
	attack := fmt.Sprintf("%s/rtc/%s/publisher/uid/8000/", srv.URL, strings.Repeat("*a", 31)+"*")
	for range 4 {
		wg.Go(func() {
			for !stop.Load() {
				req, _ := http.NewRequest("GET", attack, nil)
				req.Header.Set("Authorization", "Bearer bob;dev;8000")
				if resp, err := http.DefaultClient.Do(req); err == nil {
					resp.Body.Close()
					wildcards.Add(1)
				}
			}
		})
	}
	failed, attacked := victim()
	stop.Store(true)
	wg.Wait()
	slowest := attacked
	t.Logf("victim p99 alone %s, with ten slow exports, ten verifies and a wildcard attacker (%d requests) %s; %d failed; auditors: %d served, %d refused at once (503)",
		alone, wildcards.Load(), slowest, len(failed), served.Load(), refused.Load())
	if len(failed) > 0 {
		t.Fatalf("the victim's token requests failed under auditor load: %v", failed)
	}
	if refused.Load() == 0 {
		t.Error("no auditor read was refused: the read limit was not reached")
	}
}
