package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/broker-dev/broker/internal/audit"
	"github.com/broker-dev/broker/internal/broker"
	"github.com/broker-dev/broker/internal/identity"
	"github.com/broker-dev/broker/internal/pg/pgtest"
	"github.com/broker-dev/broker/internal/policy"
	"github.com/broker-dev/broker/internal/token"
)

// The issue "Admins and auditors at 20,000 rules": on Postgres, after one
// import of 20,000 rules, every filter of GET /v1/policies, explain and the
// history answer correctly, a page at a time, each answer under 100 KB. The
// test asserts answers and sizes; BenchmarkRulesAtScale measures the sizes
// and times that BENCHMARKS.md reports ("Admins at 20,000 rules").

// scaleImported is how many rules the fixture imports in one change.
const scaleImported = 20_000

// scaleMaxBody is the most bytes an answer may have (100 KB).
const scaleMaxBody = 100 << 10

// scaleRuleSet is the imported policy: 1,000 teams (group:team-N publishes
// and subscribes on team-N-*, is denied publishing on team-N-archive-*,
// logs in to RTM and publishes on staging-team-N-* in project "staging";
// its guests subscribe to team-N-lobby), 6,000 users (their own dm-u-N-*
// channels and their team's standup; every sixth is denied publishing on
// *-ops), 500 public channels and 400 banned ones for everyone, 90 town
// halls for group:staff and 10 admin rights: 20,000 rules.
func scaleRuleSet() []policy.Rule {
	out := make([]policy.Rule, 0, scaleImported)
	add := func(subject, channel string, role policy.Role, effect policy.Effect, ttl int, project string) {
		out = append(out, policy.Rule{Subject: subject, Channel: channel, Role: role, Effect: effect, MaxTTLSeconds: ttl, Project: project})
	}
	for n := range 1000 {
		team := "team-" + strconv.Itoa(n)
		add("group:"+team, team+"-*", policy.Publisher, policy.Allow, 3600, policy.DefaultProject)
		add("group:"+team, team+"-*", policy.Subscriber, policy.Allow, 0, policy.DefaultProject)
		add("group:"+team+"-guests", team+"-lobby", policy.Subscriber, policy.Allow, 600, policy.DefaultProject)
		add("group:"+team, team+"-archive-*", policy.Publisher, policy.Deny, 0, policy.DefaultProject)
		add("group:"+team, policy.LoginRTM, policy.Login, policy.Allow, 0, policy.DefaultProject)
		add("group:"+team, "staging-"+team+"-*", policy.Publisher, policy.Allow, 3600, "staging")
	}
	for i := range 6000 {
		user := fmt.Sprintf("u-%05d", i)
		add("user:"+user, "dm-"+user+"-*", policy.Publisher, policy.Allow, 1800, policy.DefaultProject)
		add("user:"+user, fmt.Sprintf("team-%d-standup", i%1000), policy.Publisher, policy.Allow, 900, policy.DefaultProject)
		if i%6 == 0 {
			add("user:"+user, "*-ops", policy.Publisher, policy.Deny, 0, policy.DefaultProject)
		}
	}
	for n := range 500 {
		add("*", fmt.Sprintf("public-%d", n), policy.Subscriber, policy.Allow, 7200, policy.DefaultProject)
	}
	for n := range 400 {
		add("*", fmt.Sprintf("banned-%03d", n), policy.Publisher, policy.Deny, 0, policy.DefaultProject)
	}
	for n := range 90 {
		add("group:staff", fmt.Sprintf("town-hall-%d", n), policy.Subscriber, policy.Allow, 0, policy.DefaultProject)
	}
	for n := range 8 {
		add(fmt.Sprintf("group:team-%d-leads", n), policy.ObjectPolicies, policy.Read, policy.Allow, 0, policy.AllProjects)
	}
	add("group:auditors", policy.ObjectAudit, policy.Read, policy.Allow, 0, policy.AllProjects)
	add("group:security", policy.ObjectPolicies, policy.Write, policy.Allow, 0, policy.AllProjects)
	return out
}

// scaleCSV is rules as a policy CSV document.
func scaleCSV(rules []policy.Rule) string {
	var b strings.Builder
	b.WriteString("subject,channel,role,effect,maxTtlSeconds,project\n")
	for _, r := range rules {
		ttl := ""
		if r.MaxTTLSeconds > 0 {
			ttl = strconv.Itoa(r.MaxTTLSeconds)
		}
		fmt.Fprintf(&b, "%s,%s,%s,%s,%s,%s\n", r.Subject, r.Channel, r.Role, r.Effect, ttl, r.Project)
	}
	return b.String()
}

// scaleFixture is the HTTP API over a Postgres policy store holding the
// bootstrap rights of group:admins and the 20,000 imported rules.
type scaleFixture struct {
	srv      *httptest.Server
	plain    *http.Client // asks for no compression and is given none
	rules    *policy.Engine
	all      []policy.Rule
	imported []policy.Rule // the import's rules, in id order
	importID int64         // the import's change in the history
}

func newScaleFixture(tb testing.TB) *scaleFixture {
	tb.Helper()
	ctx := context.Background()
	db := pgtest.New(tb)
	rules, err := policy.Open(ctx, policy.NewPGStore(db.Pool(), nil), nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(rules.Close)
	if err := rules.Bootstrap(ctx, []string{"group:admins"}); err != nil {
		tb.Fatal(err)
	}
	want := scaleRuleSet()
	start := time.Now()
	res, err := rules.Import(ctx, policy.Actor{Subject: "cli:ops", Operator: true}, strings.NewReader(scaleCSV(want)), policy.ImportOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Logf("imported %d rules into Postgres in one change (%d) in %v", len(res.Added), res.Version, time.Since(start).Round(time.Millisecond))
	if len(res.Added) != scaleImported {
		tb.Fatalf("the import added %d rules, want %d", len(res.Added), scaleImported)
	}
	all, err := rules.List(ctx, policy.Filter{})
	if err != nil {
		tb.Fatal(err)
	}
	f := &scaleFixture{rules: rules, all: all, importID: res.Version, plain: &http.Client{Transport: &http.Transport{DisableCompression: true}}}
	added := map[int64]bool{}
	for _, r := range res.Added {
		added[r.ID] = true
	}
	var before []string
	for _, r := range all {
		if added[r.ID] {
			f.imported = append(f.imported, r)
		} else {
			before = append(before, r.String())
		}
	}
	if len(f.imported) != scaleImported {
		tb.Fatalf("%d of the import's rules are in force, want %d", len(f.imported), scaleImported)
	}
	tb.Logf("rules in force before the import: %s", strings.Join(before, "; "))
	log, err := audit.NewMemory([]byte(strings.Repeat("k", 32)))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { log.Close() })
	tokens, err := token.NewBuilder("0123456789abcdef0123456789abcdef", testCert)
	if err != nil {
		tb.Fatal(err)
	}
	b, err := broker.New(broker.Config{DefaultTTL: time.Hour, MaxTTL: 24 * time.Hour},
		broker.Deps{Tokens: tokens, Policy: rules, Log: log, UIDs: identity.NewMemory()})
	if err != nil {
		tb.Fatal(err)
	}
	f.srv = httptest.NewServer(NewServer(Deps{Authenticate: testAuth, Broker: b, Policies: rules, Logger: discardLogger()}))
	tb.Cleanup(f.srv.Close)
	tb.Cleanup(f.plain.CloseIdleConnections)
	return f
}

// scaleAnswer is one response: its status, its body as sent, and how long
// the round trip took.
type scaleAnswer struct {
	status   int
	encoding string // Content-Encoding
	body     []byte
	took     time.Duration
}

// call sends one request as root in group admins; with gzip it asks for a
// compressed answer and keeps the compressed bytes.
func (f *scaleFixture) call(tb testing.TB, method, path, body string, gzip bool) scaleAnswer {
	tb.Helper()
	req, err := http.NewRequest(method, f.srv.URL+path, strings.NewReader(body))
	if err != nil {
		tb.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer root;admins")
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if gzip {
		req.Header.Set("Accept-Encoding", "gzip")
	}
	start := time.Now()
	resp, err := f.plain.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	raw, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	took := time.Since(start)
	if err != nil {
		tb.Fatal(err)
	}
	return scaleAnswer{status: resp.StatusCode, encoding: resp.Header.Get("Content-Encoding"), body: raw, took: took}
}

// get is call for a JSON answer, decoded into v; it fails on a status
// other than 200 and on an answer of 100 KB or more.
func (f *scaleFixture) get(t *testing.T, method, path, body string, v any) int {
	t.Helper()
	a := f.call(t, method, path, body, false)
	if a.status != http.StatusOK {
		t.Fatalf("%s %s: status %d: %s", method, path, a.status, a.body)
	}
	if len(a.body) >= scaleMaxBody {
		t.Errorf("%s %s: %d bytes, want under %d", method, path, len(a.body), scaleMaxBody)
	}
	if err := json.Unmarshal(a.body, v); err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	return len(a.body)
}

// rulesPage is an answer of GET /v1/policies.
type rulesPage struct {
	Rules      []policy.Rule `json:"rules"`
	Total      int           `json:"total"`
	NextCursor *string       `json:"nextCursor"`
}

// globMatches reports whether channel pattern p ("*" any run) matches the
// channel name: path.Match, apart from the engine's matcher, to check it
// (the fixture's channels have no "/", "?", "[" or "\\").
func globMatches(p, name string) bool {
	ok, err := path.Match(p, name)
	return ok && err == nil
}

// scaleFilters are the searches an admin makes, each with what it must
// select (written apart from the engine's filters).
func scaleFilters() []struct {
	name, query string
	keeps       func(policy.Rule) bool
} {
	caller := func(r policy.Rule) bool {
		return r.Subject == "*" || r.Subject == "user:u-00001" || r.Subject == "group:team-1" || r.Subject == "group:staff"
	}
	return []struct {
		name, query string
		keeps       func(policy.Rule) bool
	}{
		{"none", "", func(policy.Rule) bool { return true }},
		{"channel prefix team-1*", "channel=team-1*", func(r policy.Rule) bool { return strings.HasPrefix(r.Channel, "team-1") }},
		{"channel substring *lobby*", "channel=*lobby*", func(r policy.Rule) bool { return strings.Contains(r.Channel, "lobby") }},
		{"bare group name team-7", "subject=team-7", func(r policy.Rule) bool { return r.Subject == "group:team-7" || r.Subject == "user:team-7" }},
		{"bare user name u-00042", "subject=u-00042", func(r policy.Rule) bool { return r.Subject == "user:u-00042" || r.Subject == "group:u-00042" }},
		{"role subscriber", "role=subscriber", func(r policy.Rule) bool { return r.Role == policy.Subscriber }},
		{"effect deny", "effect=deny", func(r policy.Rule) bool { return r.Effect == policy.Deny }},
		{"appliesTo team-42-ops", "appliesTo=team-42-ops", func(r policy.Rule) bool {
			return (r.Role == policy.Publisher || r.Role == policy.Subscriber) && globMatches(r.Channel, "team-42-ops")
		}},
		{"user u-00001 groups team-1,staff", "user=u-00001&groups=team-1,staff", caller},
		{"channel prefix team-1* sorted by channel descending", "channel=team-1*&sort=-channel", func(r policy.Rule) bool { return strings.HasPrefix(r.Channel, "team-1") }},
	}
}

// TestRulesAtScale_PostgresFiltersAndPages: with 20,000 rules imported in
// one change on Postgres, each filter of GET /v1/policies counts what it
// selects and answers a page of at most the limit; following nextCursor
// visits every selected rule exactly once, in order; explain puts the
// deciding rule first in a small page; the history shows the import as one
// entry of 100 rules counting 20,000, and the change itself pages through
// all of them. Every answer is under 100 KB (sizes are asserted; times are
// measured by BenchmarkRulesAtScale, never asserted).
func TestRulesAtScale_PostgresFiltersAndPages(t *testing.T) {
	f := newScaleFixture(t)

	for _, tc := range scaleFilters() {
		t.Run("filter "+tc.name, func(t *testing.T) {
			var want []policy.Rule
			for _, r := range f.all {
				if tc.keeps(r) {
					want = append(want, r)
				}
			}
			if len(want) == 0 {
				t.Fatal("the fixture has no rule for this filter")
			}
			sorted := strings.Contains(tc.query, "sort=-channel")
			if sorted {
				// Channel descending; ties come back in descending id order too.
				slices.SortStableFunc(want, func(a, b policy.Rule) int {
					if a.Channel != b.Channel {
						return -strings.Compare(a.Channel, b.Channel)
					}
					return -int(a.ID - b.ID)
				})
			}
			// The first page: the default limit of 100.
			var first rulesPage
			size := f.get(t, "GET", "/v1/policies?"+tc.query, "", &first)
			if first.Total != len(want) {
				t.Fatalf("total %d, want %d", first.Total, len(want))
			}
			if n := min(100, len(want)); len(first.Rules) != n {
				t.Fatalf("first page has %d rules, want %d", len(first.Rules), n)
			}
			if (first.NextCursor != nil) != (len(want) > 100) {
				t.Fatalf("nextCursor %v with %d rules selected", first.NextCursor, len(want))
			}
			t.Logf("%d rules selected; first page %d rules, %d bytes", first.Total, len(first.Rules), size)

			// Every page, a smaller limit, following nextCursor.
			limit := 500
			if sorted {
				limit = 100
			}
			var got []policy.Rule
			seen := map[int64]bool{}
			cursor, pages := "", 0
			for {
				path := "/v1/policies?limit=" + strconv.Itoa(limit)
				if tc.query != "" {
					path += "&" + tc.query
				}
				if cursor != "" {
					path += "&cursor=" + url.QueryEscape(cursor)
				}
				var p rulesPage
				f.get(t, "GET", path, "", &p)
				pages++
				if len(p.Rules) > limit || p.Total != len(want) {
					t.Fatalf("page %d: %d rules (limit %d), total %d", pages, len(p.Rules), limit, p.Total)
				}
				for _, r := range p.Rules {
					if seen[r.ID] {
						t.Fatalf("page %d repeats rule %d", pages, r.ID)
					}
					seen[r.ID] = true
				}
				got = append(got, p.Rules...)
				if p.NextCursor == nil {
					break
				}
				if len(p.Rules) != limit {
					t.Fatalf("page %d has %d rules and a next page", pages, len(p.Rules))
				}
				cursor = *p.NextCursor
				if pages > len(want)/limit+1 {
					t.Fatalf("still paging after %d pages", pages)
				}
			}
			if len(got) != len(want) {
				t.Fatalf("paged through %d rules in %d pages, want %d", len(got), pages, len(want))
			}
			for i := range want {
				if got[i] != want[i] {
					t.Fatalf("rule %d of the pages is %v, want %v", i, got[i], want[i])
				}
			}
		})
	}

	t.Run("explain", func(t *testing.T) {
		// u-00001 in team-1 and staff: the "*" rules, staff's town halls,
		// team-1's channel rules and the user's own apply (~1,000).
		var applicable []policy.Rule
		for _, r := range f.all {
			if (r.Role == policy.Publisher || r.Role == policy.Subscriber) && r.Project != "staging" &&
				(r.Subject == "*" || r.Subject == "user:u-00001" || r.Subject == "group:team-1" || r.Subject == "group:staff") {
				applicable = append(applicable, r)
			}
		}
		var deny policy.Rule
		for _, r := range f.all {
			if r.Subject == "group:team-1" && r.Channel == "team-1-archive-*" {
				deny = r
			}
		}
		body := `{"subject":"u-00001","groups":["team-1","staff"],"channel":"team-1-archive-q3","role":"publisher"}`
		var x explainResponse
		size := f.get(t, "POST", "/v1/policies/explain", body, &x)
		if x.Allowed || x.Rule == nil || x.Rule.ID != deny.ID {
			t.Fatalf("explain: allowed %v by %v, want denied by %v", x.Allowed, x.Rule, deny)
		}
		if len(x.Matches) != 20 || x.Matches[0].Rule.ID != deny.ID || !x.Matches[0].Matches || !x.Matches[1].Matches || x.Matches[2].Matches {
			t.Fatalf("explain's first page: %d rules, first %v", len(x.Matches), x.Matches[:min(3, len(x.Matches))])
		}
		if x.Applicable != len(applicable) || x.NextCursor == nil {
			t.Fatalf("explain: %d applicable (next %v), want %d", x.Applicable, x.NextCursor, len(applicable))
		}
		t.Logf("explain: %d rules apply; the first page of %d is %d bytes", x.Applicable, len(x.Matches), size)
		// Every applicable rule once, 200 a page.
		seen := map[int64]bool{}
		for cursor := "0"; ; {
			var p explainResponse
			f.get(t, "POST", "/v1/policies/explain?limit=200&cursor="+cursor, body, &p)
			for _, m := range p.Matches {
				if seen[m.Rule.ID] {
					t.Fatalf("explain repeats rule %d", m.Rule.ID)
				}
				seen[m.Rule.ID] = true
			}
			if p.NextCursor == nil {
				break
			}
			cursor = *p.NextCursor
		}
		for _, r := range applicable {
			if !seen[r.ID] {
				t.Fatalf("explain's pages leave out %v", r)
			}
		}
		if len(seen) != len(applicable) {
			t.Fatalf("explain's pages list %d rules, want %d", len(seen), len(applicable))
		}
	})

	t.Run("history", func(t *testing.T) {
		var h struct {
			Changes    []policy.Change `json:"changes"`
			NextCursor string          `json:"nextCursor"`
		}
		size := f.get(t, "GET", "/v1/policies/history?limit=1", "", &h)
		if len(h.Changes) != 1 {
			t.Fatalf("history?limit=1: %d changes", len(h.Changes))
		}
		c := h.Changes[0]
		if c.ID != f.importID || c.Action != "import" || len(c.After) != policy.MaxRulesShown || c.AfterTotal != scaleImported || len(c.Before) != 0 {
			t.Fatalf("the newest change: #%d %s, %d rules shown of %d, want #%d import, 100 of 20,000", c.ID, c.Action, len(c.After), c.AfterTotal, f.importID)
		}
		if h.NextCursor == "" {
			t.Fatal("history?limit=1: no nextCursor to the bootstrap")
		}
		t.Logf("history?limit=1: %d bytes", size)
		var all struct {
			Changes []policy.Change `json:"changes"`
		}
		size = f.get(t, "GET", "/v1/policies/history", "", &all)
		var actions []string
		for _, c := range all.Changes {
			actions = append(actions, fmt.Sprintf("#%d %s (%d+%d rules)", c.ID, c.Action, max(len(c.Before), c.BeforeTotal), max(len(c.After), c.AfterTotal)))
		}
		if len(all.Changes) == 0 || all.Changes[0].ID != f.importID || len(all.Changes[0].After) != policy.MaxRulesShown {
			t.Fatalf("history: %s", strings.Join(actions, ", "))
		}
		t.Logf("history (default page): %s; %d bytes", strings.Join(actions, ", "), size)

		// The import itself, 500 rules a page.
		type changePage struct {
			Added      int           `json:"added"`
			Removed    int           `json:"removed"`
			After      []policy.Rule `json:"after"`
			Before     []policy.Rule `json:"before"`
			NextCursor *string       `json:"nextCursor"`
		}
		var first changePage
		size = f.get(t, "GET", fmt.Sprintf("/v1/policies/history/%d", f.importID), "", &first)
		if first.Added != scaleImported || len(first.After) != 100 || first.NextCursor == nil {
			t.Fatalf("the import's first page: %d added, %d shown", first.Added, len(first.After))
		}
		t.Logf("history/%d (default page): %d bytes", f.importID, size)
		var got []policy.Rule
		for cursor, pages := "0", 0; ; pages++ {
			var p changePage
			f.get(t, "GET", fmt.Sprintf("/v1/policies/history/%d?limit=500&cursor=%s", f.importID, cursor), "", &p)
			if len(p.After) > 500 || len(p.Before) != 0 || p.Added != scaleImported || pages > scaleImported/500 {
				t.Fatalf("page %d: %d rules, %d added", pages, len(p.After), p.Added)
			}
			got = append(got, p.After...)
			if p.NextCursor == nil {
				break
			}
			cursor = *p.NextCursor
		}
		if len(got) != len(f.imported) {
			t.Fatalf("the import's pages hold %d rules, want %d", len(got), len(f.imported))
		}
		for i := range got {
			if got[i] != f.imported[i] {
				t.Fatalf("rule %d of the import's pages is %v, want %v", i, got[i], f.imported[i])
			}
		}
	})
}

// scaleRequest is one answer BenchmarkRulesAtScale measures.
type scaleRequest struct {
	name, method, path, body string
}

func scaleRequests(importID int64) []scaleRequest {
	explain := `{"subject":"u-00001","groups":["team-1","staff"],"channel":"team-1-archive-q3","role":"publisher"}`
	change := "/v1/policies/history/" + strconv.FormatInt(importID, 10)
	reqs := []scaleRequest{}
	for _, f := range scaleFilters() {
		reqs = append(reqs, scaleRequest{"policies/" + f.name, "GET", "/v1/policies?" + f.query, ""})
	}
	return append(reqs,
		scaleRequest{"policies/page 50 sorted by channel descending", "GET", "/v1/policies?sort=-channel&cursor=o4900", ""},
		scaleRequest{"policies/limit 1000 (the most)", "GET", "/v1/policies?limit=1000", ""},
		scaleRequest{"explain/first page (20)", "POST", "/v1/policies/explain", explain},
		scaleRequest{"explain/limit 1000 (every applicable rule)", "POST", "/v1/policies/explain?limit=1000", explain},
		scaleRequest{"history/limit 1", "GET", "/v1/policies/history?limit=1", ""},
		scaleRequest{"history/default page", "GET", "/v1/policies/history", ""},
		scaleRequest{"history of the import/first page (100)", "GET", change, ""},
		scaleRequest{"history of the import/last page (100)", "GET", change + "?cursor=19900", ""},
		scaleRequest{"history of the import/limit 1000 (the most)", "GET", change + "?limit=1000", ""},
	)
}

// BenchmarkRulesAtScale measures the answers of TestRulesAtScale_Postgres… on the
// same fixture (built once): the body as sent without compression
// (body-B) and with gzip (gzip-B), and the time per request, the whole
// round trip through a loopback connection with the uncompressed answer
// (ms/op, and the slowest of the run in max-ms).
//
//	go test ./internal/httpapi -run '^$' -bench RulesAtScale -benchtime=20x
func BenchmarkRulesAtScale(b *testing.B) {
	f := newScaleFixture(b)
	for _, rq := range scaleRequests(f.importID) {
		b.Run(rq.name, func(b *testing.B) { f.measure(b, rq) })
	}
	// A page of history reads every rule of the changes on it: a second
	// 20,000-rule change on the page doubles its time.
	b.Run("after a second 20,000-rule import", func(b *testing.B) {
		var doc strings.Builder
		doc.WriteString("subject,channel,role,effect,maxTtlSeconds,project\n")
		for i := range scaleImported {
			fmt.Fprintf(&doc, "group:team-%d,v2-team-%d-room-%d,publisher,allow,3600,\n", i/20, i/20, i%20)
		}
		res, err := f.rules.Import(context.Background(), policy.Actor{Subject: "cli:ops", Operator: true}, strings.NewReader(doc.String()), policy.ImportOptions{})
		if err != nil || len(res.Added) != scaleImported {
			b.Fatalf("the second import: %v, %d rules added", err, len(res.Added))
		}
		for _, rq := range []scaleRequest{
			{"history/limit 1", "GET", "/v1/policies/history?limit=1", ""},
			{"history/default page", "GET", "/v1/policies/history", ""},
			{"policies/none", "GET", "/v1/policies", ""},
		} {
			b.Run(rq.name, func(b *testing.B) { f.measure(b, rq) })
		}
	})
}

// measure reports one answer's size, plain and gzipped, and its time.
func (f *scaleFixture) measure(b *testing.B, rq scaleRequest) {
	zipped := f.call(b, rq.method, rq.path, rq.body, true)
	if zipped.status != http.StatusOK || zipped.encoding != "gzip" || !bytes.HasPrefix(zipped.body, []byte{0x1f, 0x8b}) {
		b.Fatalf("%s %s with gzip: status %d, encoding %q: %.200s", rq.method, rq.path, zipped.status, zipped.encoding, zipped.body)
	}
	var size int
	var took []time.Duration
	for b.Loop() {
		a := f.call(b, rq.method, rq.path, rq.body, false)
		if a.status != http.StatusOK || a.encoding != "" {
			b.Fatalf("%s %s: status %d, encoding %q: %s", rq.method, rq.path, a.status, a.encoding, a.body)
		}
		size = len(a.body)
		took = append(took, a.took)
	}
	slices.Sort(took)
	var sum time.Duration
	for _, d := range took {
		sum += d
	}
	b.ReportMetric(float64(size), "body-B")
	b.ReportMetric(float64(len(zipped.body)), "gzip-B")
	b.ReportMetric(float64(sum)/float64(len(took))/1e6, "ms/op")
	b.ReportMetric(float64(took[len(took)-1])/1e6, "max-ms")
}
