package policy_test

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/broker-dev/broker/internal/pg/pgtest"
	"github.com/broker-dev/broker/internal/policy"
)

// Benchmark policy shape: 100,000 rules for 10,000 users and 1,000 groups
// (about 6 per user, 39 per group, 1,000 for "*"), a third of them patterns,
// 5% deny.
const (
	benchRules  = 100_000
	benchUsers  = 10_000
	benchGroups = 1_000
)

func benchLines(rng *rand.Rand) []policy.Line {
	seen := make(map[policy.Line]bool, benchRules)
	lines := make([]policy.Line, 0, benchRules)
	for len(lines) < benchRules {
		var subject string
		switch n := rng.IntN(100); {
		case n < 60:
			subject = fmt.Sprintf("user:u%d", rng.IntN(benchUsers))
		case n < 99:
			subject = fmt.Sprintf("group:g%d", rng.IntN(benchGroups))
		default:
			subject = "*"
		}
		var channel string
		switch rng.IntN(6) {
		case 0:
			channel = fmt.Sprintf("team-%d-*", rng.IntN(5000))
		case 1:
			channel = fmt.Sprintf("*-live-%d", rng.IntN(5000))
		default:
			channel = fmt.Sprintf("room-%d", rng.IntN(50_000))
		}
		role, effect, ttl := "subscriber", "allow", "0"
		if rng.IntN(2) == 0 {
			role = "publisher"
		}
		if rng.IntN(20) == 0 {
			effect = "deny"
		}
		if rng.IntN(2) == 0 {
			ttl = fmt.Sprint(60 * (1 + rng.IntN(60)))
		}
		l := policy.Line{PType: "p", V: [6]string{subject, channel, role, effect, ttl}}
		if !seen[l] {
			seen[l] = true
			lines = append(lines, l)
		}
	}
	return lines
}

type benchRequest struct {
	caller  policy.Caller
	channel string
	role    policy.Role
}

func benchRequests(rng *rand.Rand, n int, pattern bool) []benchRequest {
	out := make([]benchRequest, n)
	for i := range out {
		c := policy.Caller{Subject: fmt.Sprintf("u%d", rng.IntN(benchUsers))}
		for g := rng.IntN(6); g > 0; g-- {
			c.Groups = append(c.Groups, fmt.Sprintf("g%d", rng.IntN(benchGroups)))
		}
		var channel string
		switch {
		case pattern:
			channel = fmt.Sprintf("team-%d-*", rng.IntN(5000))
		case rng.IntN(3) == 0:
			channel = fmt.Sprintf("team-%d-x-live-%d", rng.IntN(5000), rng.IntN(5000))
		default:
			channel = fmt.Sprintf("room-%d", rng.IntN(50_000))
		}
		out[i] = benchRequest{c, channel, []policy.Role{policy.Publisher, policy.Subscriber}[rng.IntN(2)]}
	}
	return out
}

func benchEngine(b *testing.B) *policy.Engine {
	b.Helper()
	s := policy.NewMemStore()
	if _, err := s.Apply(ctx, admin, policy.Mutation{Action: "import", Add: benchLines(rand.New(rand.NewPCG(7, 7)))}); err != nil {
		b.Fatal(err)
	}
	e, err := policy.Open(ctx, s, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(e.Close)
	return e
}

// benchDecide times every call to report the 99th percentile as well as the
// mean; the two clock reads add a few tens of nanoseconds to each sample.
func benchDecide(b *testing.B, pattern bool) {
	e := benchEngine(b)
	reqs := benchRequests(rand.New(rand.NewPCG(8, 8)), 1<<14, pattern)
	samples := make([]time.Duration, 0, min(b.N, 1<<20))
	allowed := 0
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r := reqs[i&(len(reqs)-1)]
		start := time.Now()
		d, err := e.Decide(r.caller, policy.DefaultProject, r.channel, r.role)
		elapsed := time.Since(start)
		if err != nil {
			b.Fatal(err)
		}
		if d.Allowed {
			allowed++
		}
		if len(samples) < cap(samples) {
			samples = append(samples, elapsed)
		}
	}
	b.StopTimer()
	slices.Sort(samples)
	b.ReportMetric(float64(samples[len(samples)*99/100].Nanoseconds()), "p99-ns")
	b.ReportMetric(100*float64(allowed)/float64(b.N), "%allowed")
}

func BenchmarkDecide100k(b *testing.B)         { benchDecide(b, false) }
func BenchmarkDecide100kWildcard(b *testing.B) { benchDecide(b, true) }

// BenchmarkCasbinEnforce100k is plain Casbin on the same rules, for scale.
func BenchmarkCasbinEnforce100k(b *testing.B) {
	enf, err := policy.CasbinEnforcer(benchEngine(b))
	if err != nil {
		b.Fatal(err)
	}
	reqs := benchRequests(rand.New(rand.NewPCG(8, 8)), 1<<10, false)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r := reqs[i&(len(reqs)-1)]
		if _, err := enf.Enforce(r.caller, r.channel, string(r.role)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkOpen100kFromPostgres loads 100,000 rules from Postgres into a new
// engine (Casbin enforcer and index) and reports the heap it keeps.
func BenchmarkOpen100kFromPostgres(b *testing.B) {
	db := pgtest.New(b)
	store := policy.NewPGStore(db.Pool(), nil)
	if _, err := store.Apply(ctx, admin, policy.Mutation{Action: "import", Add: benchLines(rand.New(rand.NewPCG(7, 7)))}); err != nil {
		b.Fatal(err)
	}
	var heap uint64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		e, err := policy.Open(ctx, store, nil)
		if err != nil {
			b.Fatal(err)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		heap = after.HeapAlloc - before.HeapAlloc
		e.Close()
	}
	b.ReportMetric(float64(heap)/(1<<20), "heap-MB")
}

// denyHeavyEngine holds one allow for group dev on "team-*" and n deny rules
// on "*" made by deny(i).
func denyHeavyEngine(b *testing.B, n int, deny func(i int) string) *policy.Engine {
	b.Helper()
	e, err := policy.Open(ctx, policy.NewMemStore(), nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(e.Close)
	doc := []byte("subject,channel,role,effect,maxTtlSeconds\ngroup:dev,team-*,publisher,allow,\n")
	for i := range n {
		doc = fmt.Appendf(doc, "*,%s,subscriber,deny,\n", deny(i))
	}
	if _, err := e.Import(ctx, admin, bytes.NewReader(doc), policy.ImportOptions{}); err != nil {
		b.Fatal(err)
	}
	return e
}

func benchWildcard(b *testing.B, e *policy.Engine, q string) {
	bob := policy.Caller{Subject: "bob", Groups: []string{"dev"}}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := e.Decide(bob, policy.DefaultProject, q, policy.Publisher); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecideWildcard_20kLongDenyPatterns: bob's 63-byte "*a*a…*"
// request against 20,000 deny patterns of up to 63 bytes.
func BenchmarkDecideWildcard_20kLongDenyPatterns(b *testing.B) {
	rng := rand.New(rand.NewPCG(20, 0))
	e := denyHeavyEngine(b, 20_000, func(i int) string {
		return fmt.Sprintf("ban-%d-", i) + randomText(rng, 40) + "*" + randomText(rng, 10)
	})
	benchWildcard(b, e, strings.Repeat("*a", 31)+"*")
}

// BenchmarkDecideWildcard_50kExactDenies: a wildcard request against a ban
// list of 50,000 exact channel names.
func BenchmarkDecideWildcard_50kExactDenies(b *testing.B) {
	rng := rand.New(rand.NewPCG(50, 0))
	e := denyHeavyEngine(b, 50_000, func(i int) string { return fmt.Sprintf("room-%d-", i) + randomText(rng, 12) })
	for _, q := range []string{"team-*", "*abc*", strings.Repeat("*a", 31) + "*"} {
		b.Run(q[:min(len(q), 8)], func(b *testing.B) { benchWildcard(b, e, q) })
	}
}

func randomText(rng *rand.Rand, n int) string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	out := make([]byte, n)
	for i := range out {
		out[i] = alphabet[rng.IntN(len(alphabet))]
	}
	return string(out)
}

// BenchmarkApplyChange100k is one rule change (an add, then its removal, per
// two iterations) applied to an engine holding 100,000 rules: the rule list
// merged and only the touched subject's index bucket rebuilt.
func BenchmarkApplyChange100k(b *testing.B) {
	e := benchEngine(b)
	r := policy.Rule{Subject: "group:g7", Channel: "bench-change-*", Role: policy.Publisher, Effect: policy.Allow}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if i%2 == 0 {
			added, err := e.Add(ctx, admin, r)
			if err != nil {
				b.Fatal(err)
			}
			r.ID = added.ID
			continue
		}
		if err := e.Remove(ctx, admin, r.ID); err != nil {
			b.Fatal(err)
		}
	}
}
