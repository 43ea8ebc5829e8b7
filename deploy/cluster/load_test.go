package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/broker-dev/broker/internal/loadtest"
	"github.com/broker-dev/broker/internal/token"
)

// answer is one request of a load run, as the client saw it.
type answer struct {
	id       string // the X-Request-Id the client sent
	status   int    // 0: no answer (the connection failed)
	servedBy string // X-Served-By, set by HAProxy
	token    bool   // a 200 whose body holds an RTC token signed for the request
	problem  bool   // an error answer with a problem+json body
	err      string // why there was no answer
	sent, at time.Time
}

// loader sends token requests from the client host with a few workers
// until stopped, each request with an id of its own.
type loader struct {
	tp      *topology
	phase   string
	url     string
	bearer  string
	channel string
	uid     uint32
	seq     atomic.Int64
	mu      sync.Mutex
	answers []answer
	cancel  context.CancelFunc
	done    sync.WaitGroup
}

// startLoad starts workers sending GET url (a token request for uid on
// channel) with bearer until stop.
func (tp *topology) startLoad(phase, url, bearer, channel string, uid uint32, workers int) *loader {
	ctx, cancel := context.WithCancel(context.Background())
	l := &loader{tp: tp, phase: phase, url: url, bearer: bearer, channel: channel, uid: uid, cancel: cancel}
	for range workers {
		l.done.Add(1)
		go func() {
			defer l.done.Done()
			for ctx.Err() == nil {
				a := l.one()
				l.mu.Lock()
				l.answers = append(l.answers, a)
				l.mu.Unlock()
				if a.status == 0 || a.status >= 500 {
					time.Sleep(20 * time.Millisecond) // a failing backend is not a reason to spin
				}
			}
		}()
	}
	return l
}

// run is startLoad for d, returning the answers.
func (tp *topology) runLoad(phase, url, bearer, channel string, uid uint32, workers int, d time.Duration) []answer {
	l := tp.startLoad(phase, url, bearer, channel, uid, workers)
	time.Sleep(d)
	return l.stop()
}

func (l *loader) one() answer {
	a := answer{id: fmt.Sprintf("%s-%d", l.phase, l.seq.Add(1)), sent: time.Now()}
	resp, err := l.tp.get(l.url, l.bearer, a.id)
	a.at = time.Now()
	if err != nil {
		a.err = err.Error()
		return a
	}
	defer resp.Body.Close()
	a.status, a.servedBy = resp.StatusCode, resp.Header.Get("X-Served-By")
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if a.status == http.StatusOK {
		var b struct {
			RTCToken string `json:"rtcToken"`
		}
		if json.Unmarshal(body, &b) == nil && b.RTCToken != "" {
			a.token = l.tp.tokenFor(b.RTCToken, l.channel, l.uid)
		}
	} else {
		a.problem = strings.HasPrefix(resp.Header.Get("Content-Type"), "application/problem+json")
	}
	return a
}

// tokenFor tells whether raw is an RTC token signed with the compose
// project's App certificate for channel and uid.
func (tp *topology) tokenFor(raw, channel string, uid uint32) bool {
	tok, err := token.Parse(raw)
	return err == nil && tok.Verify(tp.vars["BROKER_APP_CERTIFICATE"]) && len(tok.Services) == 1 &&
		tok.Services[0].Channel == channel && tok.Services[0].UID == fmt.Sprint(uid)
}

// stop ends the run and returns every answer, in the order they came.
func (l *loader) stop() []answer {
	l.cancel()
	l.done.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	sort.Slice(l.answers, func(i, j int) bool { return l.answers[i].at.Before(l.answers[j].at) })
	return l.answers
}

// tally counts answers by status (0: no answer) and by serving replica.
type tally struct {
	byStatus  map[int]int
	byReplica map[string]int
	grants    int // 200s carrying a valid token
	badGrants int // 200s without one
	noProblem int // error answers of the broker without a problem document
	noAnswer  []string
}

func count(answers []answer) tally {
	c := tally{byStatus: map[int]int{}, byReplica: map[string]int{}}
	for _, a := range answers {
		c.byStatus[a.status]++
		if a.servedBy != "" {
			c.byReplica[a.servedBy]++
		}
		switch {
		case a.status == http.StatusOK && a.token:
			c.grants++
		case a.status == http.StatusOK:
			c.badGrants++
		case a.status == 0:
			if len(c.noAnswer) < 5 {
				c.noAnswer = append(c.noAnswer, a.err)
			}
		case a.servedBy != "" && !a.problem:
			c.noProblem++
		}
	}
	return c
}

func (c tally) String() string {
	return fmt.Sprintf("statuses %v, replicas %v, grants %d", c.byStatus, c.byReplica, c.grants)
}

// expect is what a phase may see besides grants with one record each.
type expect struct {
	statuses []int // statuses other than 200
	// A replica died with requests in flight: HAProxy resends a GET whose
	// connection failed to the other replica, so a grant may have two
	// records (the dead replica's decision never reached anyone), never none.
	resent bool
}

// checkRecords joins the answers to the issuance log by request id: every
// answered decision (200, 400, 403) has exactly one record, any other
// answer (an error, or none) at most one: a record may exist for a request
// whose answer was lost, never an answer without its record. It also fails
// on any 500, on a 200 without a valid token, and on broker errors without
// a problem document.
func (tp *topology) checkRecords(t *testing.T, phase string, answers []answer, want expect) tally {
	t.Helper()
	c := count(answers)
	t.Logf("%s: %d requests: %s", phase, len(answers), c)
	if len(answers) == 0 {
		t.Fatalf("%s: no request was sent", phase)
	}
	for status, n := range c.byStatus {
		if status != http.StatusOK && !slices.Contains(want.statuses, status) {
			t.Errorf("%s: %d answers with status %d (allowed: 200 %v); no answer: %v; e.g. %s", phase, n, status, want.statuses, c.noAnswer,
				tp.explain(answers, status))
		}
	}
	if c.badGrants > 0 {
		t.Errorf("%s: %d answers 200 without a token signed for the request", phase, c.badGrants)
	}
	if c.noProblem > 0 {
		t.Errorf("%s: %d error answers from the broker without a problem document", phase, c.noProblem)
	}
	rows := map[string]int{}
	r, err := tp.pool.Query(context.Background(),
		`SELECT request_id, count(*) FROM issuance_log WHERE request_id LIKE $1 GROUP BY request_id`, phase+"-%")
	if err != nil {
		t.Fatalf("%s: read the records: %v", phase, err)
	}
	for r.Next() {
		var id string
		var n int
		if err := r.Scan(&id, &n); err != nil {
			t.Fatal(err)
		}
		rows[id] = n
	}
	if err := r.Err(); err != nil {
		t.Fatal(err)
	}
	var decisions []loadtest.Answer
	resent := 0
	for _, a := range answers {
		if loadtest.RecordsPerAnswer(a.status) == 1 {
			if want.resent && rows[a.id] == 2 {
				rows[a.id] = 1
				resent++
			}
			decisions = append(decisions, loadtest.Answer{Status: a.status, RequestID: a.id})
		} else if rows[a.id] > 1 {
			t.Errorf("%s: request %s (status %d) has %d records", phase, a.id, a.status, rows[a.id])
		}
	}
	if resent > 0 {
		t.Logf("%s: %d requests resent by the load balancer have a record from each replica", phase, resent)
	}
	acc := loadtest.Reconcile(decisions, rows)
	if len(acc.Wrong) > 0 {
		t.Errorf("%s: %d of %d answered decisions without exactly one record, e.g. %v", phase, len(acc.Wrong), acc.Answered, acc.Wrong[:min(5, len(acc.Wrong))])
	}
	return c
}

// explain describes a few answers of status with what the log recorded
// for them, to tell why they came.
func (tp *topology) explain(answers []answer, status int) string {
	var out []string
	for _, a := range answers {
		if a.status != status {
			continue
		}
		var decision, reason string
		var version int64
		err := tp.pool.QueryRow(context.Background(),
			`SELECT decision, reason, policy_version FROM issuance_log WHERE request_id = $1 LIMIT 1`, a.id).Scan(&decision, &reason, &version)
		if err != nil {
			decision = "no record"
		}
		out = append(out, fmt.Sprintf("[%s %s by %q: %s %q policy %d]", a.at.Format("15:04:05.000"), a.id, a.servedBy, decision, reason, version))
		if len(out) == 5 {
			break
		}
	}
	return strings.Join(out, " ")
}

// verifyLog runs `broker audit verify` on broker-a, as an operator would,
// with the tree's broker and the compose broker environment.
func (tp *topology) verifyLog(t *testing.T) {
	t.Helper()
	svc := tp.services["broker"]
	out, err := tp.a.runOnce(svc.envList(nil), tp.newBin, "audit", "verify")
	if err != nil {
		t.Fatalf("broker audit verify: %v", err)
	}
	if !strings.HasPrefix(strings.TrimSpace(out), "ok") {
		t.Fatalf("broker audit verify: %s", out)
	}
	t.Logf("broker audit verify: %s", strings.TrimSpace(out))
}
