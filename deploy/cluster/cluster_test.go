package cluster

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"syscall"
	"testing"
	"time"
)

// TestCluster brings up docker-compose.yml's topology on hosts of their own,
// the brokers first on the previous release, and drives it through a rolling
// upgrade and the faults a deployment meets, asserting after each that no
// answer lacks its record.
//
//	sudo go test -count=1 -v -run TestCluster ./cluster/    (in deploy/)
//
// BROKER_CLUSTER_PREVIOUS=<revision> picks the release to upgrade from;
// BROKER_CLUSTER_SCALE=1 also measures one replica against two (minutes).
func TestCluster(t *testing.T) {
	tp := bringUp(t)
	admin := tp.idToken(t, adminUser, adminPassword)
	dev := tp.idToken(t, devUser, devPassword)
	uid := tp.uidOf(t, dev)
	if code := tp.call(t, http.MethodPost, tp.lbURL("/v1/policies"), admin,
		`{"subject":"group:developers","channel":"load","role":"publisher","effect":"allow"}`, nil); code != http.StatusCreated {
		t.Fatalf("add the load rule: status %d", code)
	}
	load := tp.lbURL(tokenPath("load", uid))
	for _, h := range []*host{tp.a, tp.b} { // the rule reached both (see the propagation scenario)
		if err := tp.pollGrant(h, dev, uid, 10*time.Second); err != nil {
			t.Fatalf("%s: %v", h.name, err)
		}
	}

	t.Run("rolling upgrade", func(t *testing.T) { tp.rollingUpgrade(t, load, dev, uid) })
	t.Run("steady load", func(t *testing.T) {
		c := tp.checkRecords(t, "steady", tp.runLoad("steady", load, dev, "load", uid, 8, 5*time.Second), expect{})
		for _, r := range []string{hostA, hostB} {
			if share := float64(c.byReplica[r]) / float64(c.grants); share < 0.25 {
				t.Errorf("%s served %.0f%% of the grants; want a share of at least 25%%", r, 100*share)
			}
		}
		tp.verifyLog(t)
	})
	t.Run("policy change through A obeyed by B", func(t *testing.T) { tp.policyPropagation(t, admin, dev, uid) })
	t.Run("kill -9 of replica A", func(t *testing.T) { tp.killReplica(t, load, dev, uid) })
	t.Run("replica B cut off from the database", func(t *testing.T) { tp.partition(t, load, dev, uid) })
	t.Run("postgres restart", func(t *testing.T) { tp.restartPostgres(t, load, dev, uid) })
	t.Run("identity provider down", func(t *testing.T) { tp.idpDown(t, load, dev, uid) })
	t.Run("log verifies", tp.verifyLog)
	if os.Getenv("BROKER_CLUSTER_SCALE") == "1" {
		t.Run("scale-out", func(t *testing.T) { tp.scaleOut(t, uid) })
	}
}

// rollingUpgrade runs the new release's migrations under load while both
// replicas run the previous release, then replaces B, then A: both keep
// serving throughout, the previous release on the new schema included.
func (tp *topology) rollingUpgrade(t *testing.T, load, dev string, uid uint32) {
	t.Logf("upgrading from %s", tp.prevRev[:12])
	l := tp.startLoad("upgrade", load, dev, "load", uid, 4)
	time.Sleep(time.Second)
	tp.migrate(t, tp.newBin, tp.services)
	time.Sleep(time.Second)
	tp.replace(t, tp.b)
	mixedFrom := time.Now()
	time.Sleep(3 * time.Second)
	mixedTo := time.Now()
	tp.replace(t, tp.a)
	time.Sleep(time.Second)
	answers := l.stop()
	tp.checkRecords(t, "upgrade", answers, expect{})
	mixed := count(between(answers, mixedFrom, mixedTo))
	t.Logf("previous release on A and new on B: %s", mixed)
	for _, r := range []string{hostA, hostB} {
		if mixed.byReplica[r] == 0 {
			t.Errorf("%s served nothing while A ran the previous release and B the new one", r)
		}
	}
	tp.verifyLog(t)
}

// replace stops h's broker gracefully (SIGTERM drains) and starts the new
// release in its place, with the new compose environment.
func (tp *topology) replace(t *testing.T, h *host) {
	t.Helper()
	if err := tp.brokers[h.name].stop(30 * time.Second); err != nil {
		t.Error(err)
	}
	tp.startBroker(t, h, tp.newBin, tp.services)
	// Back in the load balancer: its health check needs two passes.
	tp.waitServedBy(t, h.name)
}

// waitServedBy polls through the load balancer until name answers.
func (tp *topology) waitServedBy(t *testing.T, name string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := tp.get(tp.lbURL("/healthz"), "", "")
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.Header.Get("X-Served-By") == name {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("the load balancer did not route to %s within 20s", name)
}

// sentBetween is the answers to requests sent in [from, to).
func sentBetween(answers []answer, from, to time.Time) []answer {
	return within(answers, from, to, func(a answer) time.Time { return a.sent })
}

// between is the answers that came in [from, to).
func between(answers []answer, from, to time.Time) []answer {
	return within(answers, from, to, func(a answer) time.Time { return a.at })
}

func within(answers []answer, from, to time.Time, when func(answer) time.Time) []answer {
	var out []answer
	for _, a := range answers {
		if t := when(a); !t.Before(from) && t.Before(to) {
			out = append(out, a)
		}
	}
	return out
}

// policyPropagation changes a rule through replica A 50 times (an allow
// added, then removed) and measures the time from A's answer to the first
// decision of replica B that reflects the change.
func (tp *topology) policyPropagation(t *testing.T, admin, dev string, uid uint32) {
	const changes = 50
	var delays []time.Duration
	var id string // the rule the last change added
	for i := range changes {
		channel := fmt.Sprintf("propagation-%d", i/2)
		var want int
		var changed time.Time
		if i%2 == 0 {
			var rule struct {
				ID json.Number `json:"id"`
			}
			code := tp.call(t, http.MethodPost, tp.brokerURL(tp.a, "/v1/policies"), admin,
				`{"subject":"group:developers","channel":"`+channel+`","role":"publisher","effect":"allow"}`, &rule)
			changed = time.Now()
			if code != http.StatusCreated {
				t.Fatalf("change %d: add a rule through A: status %d", i, code)
			}
			id, want = rule.ID.String(), http.StatusOK
		} else {
			code := tp.call(t, http.MethodDelete, tp.brokerURL(tp.a, "/v1/policies/"+id), admin, "", nil)
			changed = time.Now()
			if code != http.StatusNoContent && code != http.StatusOK {
				t.Fatalf("change %d: remove rule %s through A: status %d", i, id, code)
			}
			want = http.StatusForbidden
		}
		for {
			resp, err := tp.get(tp.brokerURL(tp.b, tokenPath(channel, uid)), dev, "")
			if err != nil {
				t.Fatalf("change %d: ask B: %v", i, err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == want {
				delays = append(delays, time.Since(changed))
				break
			}
			if time.Since(changed) > 10*time.Second {
				t.Fatalf("change %d: B still answers %d 10s after A's answer (want %d)", i, resp.StatusCode, want)
			}
		}
	}
	slices.Sort(delays)
	p50, p99 := delays[len(delays)/2], delays[(len(delays)*99+99)/100-1]
	t.Logf("policy change through A → first decision on B reflecting it, %d changes: p50 %v, p99 %v, max %v",
		changes, p50.Round(time.Microsecond), p99.Round(time.Microsecond), delays[len(delays)-1].Round(time.Microsecond))
	if p99 > time.Second {
		t.Errorf("p99 delay %v; want ≤ 1s", p99)
	}
}

// killReplica kills replica A with SIGKILL under load: the load balancer
// stops sending it requests, no answer goes without its record, and A
// restarted rejoins.
func (tp *topology) killReplica(t *testing.T, load, dev string, uid uint32) {
	l := tp.startLoad("kill", load, dev, "load", uid, 6)
	time.Sleep(time.Second)
	killed := time.Now()
	tp.brokers[hostA].kill()
	time.Sleep(4 * time.Second)
	answers := l.stop()
	// In flight on A when it died: HAProxy answers 502; a new connection to
	// the dead A is retried on B.
	tp.checkRecords(t, "kill", answers, expect{statuses: []int{http.StatusBadGateway, http.StatusServiceUnavailable}, resent: true})
	late := sentBetween(answers, killed.Add(2*time.Second), time.Now())
	after := count(late)
	t.Logf("sent from 2s after the kill: %s", after)
	if len(late) == 0 || after.byReplica[hostA] > 0 || after.byStatus[http.StatusOK] != len(late) {
		t.Errorf("2s after A was killed the load balancer still sent it requests or answered errors: %s", after)
	}
	if err := tp.brokers[hostA].restart(); err != nil {
		t.Fatal(err)
	}
	tp.waitOK(t, hostA, tp.brokerURL(tp.a, "/readyz"), 60*time.Second, tp.brokers[hostA])
	tp.waitServedBy(t, hostA)
	c := tp.checkRecords(t, "rejoin", tp.runLoad("rejoin", load, dev, "load", uid, 4, 2*time.Second), expect{})
	if c.byReplica[hostA] == 0 {
		t.Errorf("restarted A served nothing: %s", c)
	}
}

// partition drops every packet from B to db: B answers 503 with no token,
// its /readyz fails so the load balancer takes it out; when the link comes
// back B recovers by itself.
func (tp *topology) partition(t *testing.T, load, dev string, uid uint32) {
	l := tp.startLoad("partition", load, dev, "load", uid, 6)
	time.Sleep(time.Second)
	if err := tp.b.cut(tp.db); err != nil {
		t.Fatal(err)
	}
	cut := time.Now()
	healed := false
	heal := func() {
		if !healed {
			healed = true
			if err := tp.b.heal(tp.db); err != nil {
				t.Error(err)
			}
		}
	}
	defer heal()
	resp, err := tp.get(tp.brokerURL(tp.b, tokenPath("load", uid)), dev, "partition-direct")
	if err != nil {
		t.Fatalf("ask B directly while cut off: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	t.Logf("B cut off from db, asked directly: %d after %v", resp.StatusCode, time.Since(cut).Round(time.Millisecond))
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Content-Type") != "application/problem+json" {
		t.Errorf("B cut off from the database answered %d %s; want 503 problem+json", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if tp.tokenInBody(body) {
		t.Error("B cut off from the database answered with a token")
	}
	if err := tp.pollStatus(tp.brokerURL(tp.b, "/readyz"), http.StatusServiceUnavailable, 15*time.Second); err != nil {
		t.Errorf("B's /readyz while cut off: %v", err)
	}
	// Two failed checks 500 ms apart take B out; requests sent after that
	// must go to A.
	outFrom := time.Now().Add(1500 * time.Millisecond)
	time.Sleep(3 * time.Second)
	heal()
	healedAt := time.Now()
	if err := tp.pollOK(tp.brokerURL(tp.b, "/readyz"), 30*time.Second, tp.brokers[hostB]); err != nil {
		t.Fatalf("B did not recover by itself after the link came back: %v", err)
	}
	t.Logf("B ready again %v after the link came back", time.Since(healedAt).Round(time.Millisecond))
	tp.waitServedBy(t, hostB)
	answers := l.stop()
	tp.checkRecords(t, "partition", answers, expect{statuses: []int{http.StatusServiceUnavailable}})
	out := count(sentBetween(answers, outFrom, healedAt))
	if out.byReplica[hostB] > 0 || out.byReplica[hostA] == 0 {
		t.Errorf("the load balancer kept sending requests to B after its /readyz failed: %s", out)
	}
	c := tp.checkRecords(t, "partition-after", tp.runLoad("partition-after", load, dev, "load", uid, 4, 2*time.Second), expect{})
	if c.byReplica[hostB] == 0 {
		t.Errorf("B served nothing after it recovered: %s", c)
	}
}

// pollStatus polls u from the client until it answers want.
func (tp *topology) pollStatus(u string, want int, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	last := 0
	for time.Now().Before(deadline) {
		if resp, err := tp.get(u, "", ""); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if last = resp.StatusCode; last == want {
				return nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("%s did not answer %d within %v (last %d)", u, want, limit, last)
}

// tokenInBody tells whether an answer carries anything token-shaped.
func (tp *topology) tokenInBody(body []byte) bool {
	var b map[string]any
	if json.Unmarshal(body, &b) != nil {
		return false
	}
	for _, k := range []string{"rtcToken", "rtmToken", "token"} {
		if _, ok := b[k]; ok {
			return true
		}
	}
	return false
}

// restartPostgres restarts the database under load: meanwhile only 503s,
// then both replicas serve again without a restart.
func (tp *topology) restartPostgres(t *testing.T, load, dev string, uid uint32) {
	l := tp.startLoad("pgrestart", load, dev, "load", uid, 6)
	time.Sleep(time.Second)
	if err := tp.postgres.signal(syscall.SIGINT, 30*time.Second); err != nil { // fast shutdown
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	if err := tp.postgres.restart(); err != nil {
		t.Fatal(err)
	}
	restarted := time.Now()
	for _, h := range []*host{tp.a, tp.b} {
		if err := tp.pollOK(tp.brokerURL(h, "/readyz"), 60*time.Second, tp.brokers[h.name]); err != nil {
			t.Fatalf("%s did not recover after Postgres restarted: %v", h.name, err)
		}
	}
	t.Logf("both replicas ready %v after Postgres restarted", time.Since(restarted).Round(time.Millisecond))
	tp.waitServedBy(t, hostA)
	tp.waitServedBy(t, hostB)
	answers := l.stop()
	tp.checkRecords(t, "pgrestart", answers, expect{statuses: []int{http.StatusServiceUnavailable}})
	c := tp.checkRecords(t, "pgrestart-after", tp.runLoad("pgrestart-after", load, dev, "load", uid, 4, 2*time.Second), expect{})
	for _, r := range []string{hostA, hostB} {
		if c.byReplica[r] == 0 {
			t.Errorf("%s served nothing after Postgres came back: %s", r, c)
		}
	}
}

// idpDown stops Dex for 30 s: tokens signed with keys the replicas hold
// keep being served; a token signed with a key they have not got (a user
// the provider would have to vouch for) gets 503 with a problem document;
// when Dex is back (with new keys: its storage is memory), its new tokens
// are served without restarting anything.
func (tp *topology) idpDown(t *testing.T, load, dev string, uid uint32) {
	unknown := tp.foreignToken(t)
	if code := tp.statusOf(t, tp.lbURL(tokenPath("load", uid)), unknown); code != http.StatusUnauthorized {
		t.Errorf("a token signed with a key the provider never published, provider up: %d; want 401", code)
	}
	if err := tp.dex.stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	down := time.Now()
	l := tp.startLoad("idp", load, dev, "load", uid, 4)
	// A replica refetches keys for an unknown kid at most every 10 s: the
	// check above may have just done so, successfully.
	time.Sleep(11 * time.Second)
	for _, h := range []*host{tp.a, tp.b} {
		resp, err := tp.get(tp.brokerURL(h, tokenPath("load", uid)), unknown, "")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var p struct {
			Status int    `json:"status"`
			Detail string `json:"detail"`
		}
		_ = json.Unmarshal(body, &p)
		t.Logf("%s, provider down, token signed with an unknown key: %d %q (Retry-After %q)", h.name, resp.StatusCode, p.Detail, resp.Header.Get("Retry-After"))
		if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Content-Type") != "application/problem+json" ||
			p.Detail == "" || resp.Header.Get("Retry-After") == "" || tp.tokenInBody(body) {
			// Status and content type only: the body might hold a token.
			t.Errorf("%s: a token signed with a key the replica has not got, provider down: %d %s (token in the body: %v); want 503 problem+json with Retry-After",
				h.name, resp.StatusCode, resp.Header.Get("Content-Type"), tp.tokenInBody(body))
		}
	}
	time.Sleep(30*time.Second - time.Since(down))
	answers := l.stop()
	c := tp.checkRecords(t, "idp", answers, expect{})
	if c.grants == 0 {
		t.Error("nothing was served while the provider was down")
	}
	if err := tp.dex.restart(); err != nil {
		t.Fatal(err)
	}
	tp.waitDex(t)
	fresh := tp.idToken(t, devUser, devPassword)
	for _, h := range []*host{tp.a, tp.b} {
		if err := tp.pollGrant(h, fresh, uid, 30*time.Second); err != nil {
			t.Errorf("%s after the provider came back: %v", h.name, err)
		}
	}
}

// statusOf is the status of a GET with bearer.
func (tp *topology) statusOf(t *testing.T, u, bearer string) int {
	t.Helper()
	resp, err := tp.get(u, bearer, "")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// pollGrant asks replica h for a token with bearer until it grants.
func (tp *topology) pollGrant(h *host, bearer string, uid uint32, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	last := 0
	for time.Now().Before(deadline) {
		if resp, err := tp.get(tp.brokerURL(h, tokenPath("load", uid)), bearer, ""); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if last = resp.StatusCode; last == http.StatusOK {
				return nil
			}
		}
		time.Sleep(250 * time.Millisecond)
	}
	return fmt.Errorf("no grant within %v (last status %d)", limit, last)
}

// foreignToken is a well-formed RS256 ID token with the right issuer and
// audience, signed with a key of the test's own under a kid the provider
// never published.
func (tp *topology) foreignToken(t *testing.T) string {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	env := tp.services["broker"].env
	enc := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return base64.RawURLEncoding.EncodeToString(b)
	}
	now := time.Now().Unix()
	signing := enc(map[string]string{"alg": "RS256", "typ": "JWT", "kid": "rotated-" + randomHex(4)}) + "." +
		enc(map[string]any{"iss": env["BROKER_OIDC_ISSUER"], "aud": env["BROKER_OIDC_AUDIENCE"], "sub": "newcomer",
			"email": "newcomer@example.com", "iat": now, "exp": now + 600})
	sum := sha256.Sum256([]byte(signing))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	return signing + "." + base64.RawURLEncoding.EncodeToString(sig)
}
