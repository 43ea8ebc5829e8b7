package httpapi

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/broker-dev/broker/internal/audit"
	"github.com/broker-dev/broker/internal/broker"
	"github.com/broker-dev/broker/internal/identity"
	"github.com/broker-dev/broker/internal/policy"
	"github.com/broker-dev/broker/internal/token"
)

// BenchmarkAdminReadsAt100kRules pages ten concurrent admins through every
// rule of a 100,000-rule policy (limit 1,000) and the history, and reports
// the process's peak resident set (VmHWM) and live heap afterwards.
//
//	go test -run XXX -bench AdminReadsAt100kRules -benchtime 1x ./internal/httpapi/
func BenchmarkAdminReadsAt100kRules(b *testing.B) {
	ctx := context.Background()
	rules, err := policy.Open(ctx, policy.NewMemStore(), nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(rules.Close)
	if err := rules.Bootstrap(ctx, []string{"group:admins"}); err != nil {
		b.Fatal(err)
	}
	var doc strings.Builder
	doc.WriteString("subject,channel,role,effect,maxTtlSeconds\n")
	for i := range 100_000 {
		fmt.Fprintf(&doc, "user:u%d,room-%d-%s,publisher,allow,3600\n", i%10_000, i, strings.Repeat("x", 20))
	}
	if _, err := rules.Import(ctx, policy.Actor{Subject: "test", Operator: true}, strings.NewReader(doc.String()), policy.ImportOptions{}); err != nil {
		b.Fatal(err)
	}
	doc.Reset()
	log, err := audit.NewMemory([]byte(strings.Repeat("k", 32)))
	if err != nil {
		b.Fatal(err)
	}
	tb, _ := token.NewBuilder("0123456789abcdef0123456789abcdef", testCert)
	br, err := broker.New(broker.Config{DefaultTTL: time.Hour, MaxTTL: 24 * time.Hour},
		broker.Deps{Tokens: tb, Policy: rules, Log: log, UIDs: identity.NewMemory()})
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(NewServer(Deps{Authenticate: testAuth, Broker: br, Policies: rules}))
	b.Cleanup(srv.Close)
	get := func(path string) (map[string]any, error) {
		req, _ := http.NewRequest("GET", srv.URL+path, nil)
		req.Header.Set("Authorization", "Bearer root;admins")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		var m map[string]any
		raw, _ := io.ReadAll(resp.Body)
		return m, json.Unmarshal(raw, &m)
	}
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	b.Logf("before the reads: peak RSS %d MiB, heap in use %d MiB", peakRSS()>>20, before.HeapInuse>>20)
	b.ResetTimer()
	for b.Loop() {
		var wg sync.WaitGroup
		for range 10 {
			wg.Go(func() {
				cursor, rulesSeen := "", 0
				for pages := 0; pages < 200; pages++ {
					m, err := get("/v1/policies?limit=1000&cursor=" + cursor)
					if err != nil {
						b.Error(err)
						return
					}
					page, _ := m["rules"].([]any)
					rulesSeen += len(page)
					next, ok := m["nextCursor"].(string)
					if !ok {
						break
					}
					cursor = next
				}
				if rulesSeen < 100_000 {
					b.Errorf("an admin paged through %d rules, want all 100,007", rulesSeen)
				}
				if _, err := get("/v1/policies/history?limit=1000"); err != nil {
					b.Error(err)
				}
			})
		}
		wg.Wait()
	}
	b.StopTimer()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	b.ReportMetric(float64(peakRSS())/(1<<20), "peak-RSS-MiB")
	b.ReportMetric(float64(ms.HeapInuse)/(1<<20), "heap-inuse-MiB")
}

// peakRSS is the process's VmHWM in bytes.
func peakRSS() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n << 10
		}
	}
	return 0
}
