package httpapi

import (
	"context"
	"fmt"
	"math/rand/v2"
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

// replica is one broker on its own pool, as a separate process would be.
type replica struct {
	srv   *httptest.Server
	rules *policy.Engine
}

func newReplica(t *testing.T, url string) *replica {
	t.Helper()
	ctx := context.Background()
	pool, err := pg.Open(ctx, url, pg.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	rules, err := policy.Open(ctx, policy.NewPGStore(pool, nil), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rules.Close)
	log, err := audit.NewPostgres(pool, []byte(strings.Repeat("k", 32)), audit.PostgresOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { log.Close() })
	tb, err := token.NewBuilder("0123456789abcdef0123456789abcdef", testCert)
	if err != nil {
		t.Fatal(err)
	}
	b, err := broker.New(broker.Config{DefaultTTL: time.Hour, MaxTTL: 24 * time.Hour},
		broker.Deps{Tokens: tb, Policy: rules, Log: log, UIDs: identity.NewPostgres(pool)})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(NewServer(Deps{Authenticate: testAuth, Broker: b, Policies: rules, Audit: log,
		Ready: []Check{{Name: "database", Check: func(ctx context.Context) error { return pg.Ping(ctx, pool) }}}}))
	t.Cleanup(srv.Close)
	return &replica{srv: srv, rules: rules}
}

// get asks r for a token for user u (uid claim uid) on channel, with a
// deadline, and returns the status (0 when the request itself failed).
func (r *replica) get(u string, uid int, channel string, deadline time.Duration) (int, time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("%s/rtc/%s/publisher/uid/%d/", r.srv.URL, channel, uid), nil)
	req.Header.Set("Authorization", fmt.Sprintf("Bearer %s;dev;%d", u, uid))
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, time.Since(start)
	}
	resp.Body.Close()
	return resp.StatusCode, time.Since(start)
}

// twoReplicas starts A directly on a fresh database and B through a relay.
func twoReplicas(t *testing.T) (a, b *replica, relay *pgtest.Relay, db *pgtest.DB) {
	t.Helper()
	db = pgtest.New(t)
	relay, viaRelay := pgtest.NewRelay(t, db.URL)
	return newReplica(t, db.URL), newReplica(t, viaRelay), relay, db
}

func allow(t *testing.T, on *replica, channel string) policy.Rule {
	t.Helper()
	r, err := on.rules.Add(context.Background(), policy.Actor{Subject: "test", Operator: true},
		policy.Rule{Subject: "group:dev", Channel: channel, Role: policy.Publisher, Effect: policy.Allow})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestPartition_AHealthyReplicaDoesNotStallWithADarkOne: B's database link
// goes dark (every byte held, nothing reset) at random moments, ten times for
// 1.5 s, while both replicas serve; every request of A gets its token in
// under a second.
func TestPartition_AHealthyReplicaDoesNotStallWithADarkOne(t *testing.T) {
	a, b, relay, _ := twoReplicas(t)
	allow(t, a, "part-*")
	waitUntil(t, 5*time.Second, func() bool { code, _ := b.get("b0", 2000, "part-b", 2*time.Second); return code == 200 })
	var stop atomic.Bool
	var wg sync.WaitGroup
	var aCount, aSlow, aFailed, bOK, bUnavailable, bOther atomic.Int64
	var otherMu sync.Mutex
	other := map[string]int{}
	var worst atomic.Int64
	var latMu sync.Mutex
	var during []time.Duration // A's latencies while B is dark
	var dark atomic.Bool
	for i := range 4 {
		wg.Go(func() {
			for n := 0; !stop.Load(); n++ {
				code, took := a.get(fmt.Sprint("a", i), 1000+i, "part-a", 5*time.Second)
				aCount.Add(1)
				if code != 200 {
					aFailed.Add(1)
				}
				if took > time.Second {
					aSlow.Add(1)
				}
				for w := worst.Load(); int64(took) > w && !worst.CompareAndSwap(w, int64(took)); w = worst.Load() {
				}
				if dark.Load() {
					latMu.Lock()
					during = append(during, took)
					latMu.Unlock()
				}
			}
		})
		wg.Go(func() {
			for !stop.Load() {
				switch code, took := b.get(fmt.Sprint("b", i), 2000+i, "part-b", 5*time.Second); code {
				case 200:
					bOK.Add(1)
				case 503:
					bUnavailable.Add(1)
				default:
					bOther.Add(1)
					otherMu.Lock()
					other[fmt.Sprintf("%d after %s", code, took.Round(100*time.Millisecond))]++
					otherMu.Unlock()
				}
			}
		})
	}
	for range 10 {
		time.Sleep(time.Duration(200+rand.IntN(600)) * time.Millisecond)
		relay.Hold()
		dark.Store(true)
		time.Sleep(1500 * time.Millisecond)
		dark.Store(false)
		relay.Heal()
	}
	time.Sleep(500 * time.Millisecond)
	stop.Store(true)
	wg.Wait()
	slices.Sort(during)
	var p99 time.Duration
	if len(during) > 0 {
		p99 = during[len(during)*99/100]
	}
	t.Logf("A: %d requests, %d failed, %d over 1 s, slowest %s, p99 while B was dark %s (%d requests); B: %d granted, %d unavailable, %d other",
		aCount.Load(), aFailed.Load(), aSlow.Load(), time.Duration(worst.Load()), p99, len(during), bOK.Load(), bUnavailable.Load(), bOther.Load())
	if aFailed.Load() != 0 || aSlow.Load() != 0 {
		t.Fatalf("replica A stalled with B: %d of %d requests failed, %d took over 1 s", aFailed.Load(), aCount.Load(), aSlow.Load())
	}
	if bOther.Load() != 0 {
		t.Fatalf("replica B answered %d requests with neither a token nor a 503: %v", bOther.Load(), other)
	}
	if bOK.Load() == 0 {
		t.Fatal("replica B never served")
	}
}

// TestPartition_NoGrantUnderARuleRemovedWhileDark: a rule removed through A
// while B's link is dark (held, or with its connections closed) is never
// granted by B when the link comes back; a rule added meanwhile is obeyed by
// B within 5 s.
func TestPartition_NoGrantUnderARuleRemovedWhileDark(t *testing.T) {
	for _, how := range []string{"held", "reset"} {
		t.Run(how, func(t *testing.T) {
			a, b, relay, _ := twoReplicas(t)
			r := allow(t, a, "rev-1")
			waitUntil(t, 5*time.Second, func() bool { code, _ := b.get("bob", 3001, "rev-1", 2*time.Second); return code == 200 })
			relay.Hold()
			if how == "held" {
				// Cut off, B says so promptly: /readyz within 2 s, token
				// requests a 503 that names the log, no token.
				resp, took := httpGetStatus(b.srv.URL+"/readyz", 5*time.Second)
				if resp != 503 || took > 2*time.Second {
					t.Errorf("B's /readyz while dark: %d after %s", resp, took)
				}
				code, took := b.get("bob", 3001, "rev-1", 5*time.Second)
				if code != 503 || took > 3*time.Second {
					t.Errorf("B's token request while dark: %d after %s; want a prompt 503", code, took)
				}
			}
			if err := a.rules.Remove(context.Background(), policy.Actor{Subject: "test", Operator: true}, r.ID); err != nil {
				t.Fatal(err)
			}
			allow(t, a, "rev-2")
			if code, _ := a.get("alice", 3002, "rev-1", 2*time.Second); code != 403 {
				t.Fatalf("A after the removal: %d", code)
			}
			if how == "reset" {
				relay.Reset()
			}
			relay.Heal()
			for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); {
				if code, _ := b.get("bob", 3001, "rev-1", 3*time.Second); code == 200 {
					t.Fatal("B granted under a rule removed while its link was dark")
				} else if code != 403 && code != 503 && code != 0 {
					t.Fatalf("B answered %d", code)
				}
			}
			waitUntil(t, 5*time.Second, func() bool { code, _ := b.get("bob", 3001, "rev-2", 2*time.Second); return code == 200 })
		})
	}
}

// TestPartition_RemovalRacingGrantsOnAnotherReplica: without any fault, no
// token of a removed rule has a record committed after the removal.
func TestPartition_RemovalRacingGrantsOnAnotherReplica(t *testing.T) {
	a, b, _, db := twoReplicas(t)
	r := allow(t, a, "race-*")
	var stop atomic.Bool
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			for !stop.Load() {
				b.get(fmt.Sprint("r", i), 4000+i, "race-1", 5*time.Second)
			}
		})
	}
	time.Sleep(300 * time.Millisecond)
	if err := a.rules.Remove(context.Background(), policy.Actor{Subject: "test", Operator: true}, r.ID); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var removal, seqAfter int64
	if err := db.Pool().QueryRow(ctx, `SELECT (SELECT max(id) FROM policy_history), (SELECT coalesce(max(seq), 0) FROM issuance_log)`).Scan(&removal, &seqAfter); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	stop.Store(true)
	wg.Wait()
	var late, onNew, before int64
	if err := db.Pool().QueryRow(ctx, `SELECT
		count(*) FILTER (WHERE seq > $1),
		count(*) FILTER (WHERE policy_version >= $2),
		count(*) FILTER (WHERE seq <= $1)
		FROM issuance_log WHERE channel = 'race-1' AND decision = 'granted'`, seqAfter, removal).Scan(&late, &onNew, &before); err != nil {
		t.Fatal(err)
	}
	if before == 0 {
		t.Fatal("B granted nothing before the removal: the race was not run")
	}
	if late != 0 || onNew != 0 {
		t.Fatalf("%d grants committed after the removal, %d on its policy version", late, onNew)
	}
}

func httpGetStatus(url string, deadline time.Duration) (int, time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, time.Since(start)
	}
	resp.Body.Close()
	return resp.StatusCode, time.Since(start)
}

func waitUntil(t *testing.T, within time.Duration, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(within); !ok(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s", within)
		}
	}
}
