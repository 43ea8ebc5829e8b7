package console_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"

	"github.com/broker-dev/broker/internal/audit"
	"github.com/broker-dev/broker/internal/auth"
	"github.com/broker-dev/broker/internal/console"
	"github.com/broker-dev/broker/internal/pg/pgtest"
	"github.com/broker-dev/broker/internal/policy"
	"github.com/broker-dev/broker/internal/sessions"
)

// The issue "Admins and auditors at 20,000 rules", at the console: on
// Postgres, after one import of 20,000 rules, the rule list finds what the
// filters select and numbers its pages, "try it" shows ~1,000 applicable
// rules a page at a time, and the history shows the import as one entry;
// every page under 100 KB. BenchmarkConsoleAtScale measures the pages'
// sizes and times for BENCHMARKS.md ("Admins at 20,000 rules").

// atScaleImported is how many rules the fixture imports in one change.
const atScaleImported = 20_000

// atScaleMaxPage is the most bytes a page may have (100 KB).
const atScaleMaxPage = 100 << 10

// atScaleRuleSet is the policy internal/httpapi's rules_scale_test.go
// imports: 1,000 teams (group:team-N publishes and subscribes on team-N-*,
// is denied publishing on team-N-archive-*, logs in to RTM and publishes on
// staging-team-N-* in project "staging"; its guests subscribe to
// team-N-lobby), 6,000 users (their own dm-u-N-* channels and their team's
// standup; every sixth is denied publishing on *-ops), 500 public channels
// and 400 banned ones for everyone, 90 town halls for group:staff and 10
// admin rights: 20,000 rules.
func atScaleRuleSet() []policy.Rule {
	out := make([]policy.Rule, 0, atScaleImported)
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

// atScale is the console over a Postgres policy store holding the 20,000
// imported rules, with an admin signed in.
type atScale struct {
	srv      *httptest.Server
	client   *http.Client // the admin's browser: a cookie jar, following redirects
	rules    *policy.Engine
	all      []policy.Rule
	importID int64
}

func newAtScale(tb testing.TB) *atScale {
	tb.Helper()
	ctx := context.Background()
	// The console's tests have no pgtest.Main: a cluster of the test's own.
	db := pgtest.NewCluster(tb, pgtest.Options{NoFsync: true}).New(tb)
	rules, err := policy.Open(ctx, policy.NewPGStore(db.Pool(), nil), nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(rules.Close)
	if err := rules.Bootstrap(ctx, []string{"group:broker-admins"}); err != nil {
		tb.Fatal(err)
	}
	var doc strings.Builder
	doc.WriteString("subject,channel,role,effect,maxTtlSeconds,project\n")
	for _, r := range atScaleRuleSet() {
		ttl := ""
		if r.MaxTTLSeconds > 0 {
			ttl = strconv.Itoa(r.MaxTTLSeconds)
		}
		fmt.Fprintf(&doc, "%s,%s,%s,%s,%s,%s\n", r.Subject, r.Channel, r.Role, r.Effect, ttl, r.Project)
	}
	res, err := rules.Import(ctx, policy.Actor{Subject: "cli:ops", Operator: true}, strings.NewReader(doc.String()), policy.ImportOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	if len(res.Added) != atScaleImported {
		tb.Fatalf("the import added %d rules, want %d", len(res.Added), atScaleImported)
	}
	s := &atScale{rules: rules, importID: res.Version}
	if s.all, err = rules.List(ctx, policy.Filter{}); err != nil {
		tb.Fatal(err)
	}
	log, err := audit.NewMemory(bytes.Repeat([]byte{7}, audit.MinKeyLen))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { log.Close() })

	// The test provider, built here rather than by newTestIDP, which needs a
	// *testing.T (benchmarks have a *testing.B).
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	idp := &testIDP{key: key, clientID: clientID, codes: map[string]authRequest{}}
	if t, ok := tb.(*testing.T); ok {
		idp.t = t
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", idp.discovery)
	mux.HandleFunc("GET /keys", idp.keys)
	mux.HandleFunc("GET /authorize", idp.authorize)
	mux.HandleFunc("POST /token", idp.token)
	idp.srv = httptest.NewServer(mux)
	tb.Cleanup(idp.srv.Close)
	v, err := auth.NewIssuers(ctx, []auth.Config{{Issuer: idp.issuer(), Audiences: []string{clientID}, Logger: quiet}})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(v.Close)
	for deadline := time.Now().Add(10 * time.Second); v.Ready() != nil; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			tb.Fatalf("verifier not ready: %v", v.Ready())
		}
	}

	s.srv = httptest.NewUnstartedServer(nil)
	c, err := console.New(console.Config{
		Issuer:      idp.issuer(),
		ClientID:    clientID,
		RedirectURL: "http://" + s.srv.Listener.Addr().String() + "/console/callback",
		SessionKey:  bytes.Repeat([]byte{9}, console.MinSessionKeyLen),
	}, console.Deps{Verifier: v, Policies: rules, Audit: log, Sessions: sessions.NewMemory()})
	if err != nil {
		tb.Fatal(err)
	}
	r := chi.NewRouter()
	r.Use(middleware.StripSlashes)
	r.Mount("/console", c.Handler())
	s.srv.Config.Handler = r
	s.srv.Start()
	tb.Cleanup(s.srv.Close)

	jar, err := cookiejar.New(nil)
	if err != nil {
		tb.Fatal(err)
	}
	s.client = &http.Client{Jar: jar, Transport: &http.Transport{DisableCompression: true}}
	tb.Cleanup(s.client.CloseIdleConnections)
	idp.loginAs(admin)
	if p := s.get(tb, "/console/policies"); !strings.Contains(p.body, `<h1>Policies</h1>`) {
		tb.Fatalf("the admin's login did not land on the policies:\n%s", p.body)
	}
	return s
}

// atScalePage is a console page as sent, and how long it took.
type atScalePage struct {
	body string
	took time.Duration
}

// get fetches a page as the admin; anything but a 200 fails.
func (s *atScale) get(tb testing.TB, path string) atScalePage {
	tb.Helper()
	start := time.Now()
	resp, err := s.client.Get(s.srv.URL + path)
	if err != nil {
		tb.Fatal(err)
	}
	raw, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	took := time.Since(start)
	if err != nil {
		tb.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		tb.Fatalf("GET %s: status %d\n%s", path, resp.StatusCode, raw)
	}
	return atScalePage{body: string(raw), took: took}
}

// atScaleRow finds the id of each row of a rule table.
var atScaleRow = regexp.MustCompile(`<tr(?: class="match")?>\s*<td class="num">(\d+)</td>`)

// ruleIDs lists the ids of the rows of the page's rule list (not those of
// the admin rights after it), in order.
func ruleIDs(body string) []int64 {
	if i := strings.Index(body, `id="rights-title"`); i >= 0 {
		body = body[:i]
	}
	var ids []int64
	for _, m := range atScaleRow.FindAllStringSubmatch(body, -1) {
		id, _ := strconv.ParseInt(m[1], 10, 64)
		ids = append(ids, id)
	}
	return ids
}

// TestRulesAtScale_ConsoleOnPostgres: the console's rule list, "try it"
// and history over 20,000 imported rules on Postgres: the counts the
// filters select, the rules of a page (sorted, and page 50), the numbered
// pages, ~1,000 applicable rules shown 20 at a time with the deciding rule
// first, and the import as one history entry; every page under 100 KB
// (sizes asserted, times only measured, by BenchmarkConsoleAtScale).
func TestRulesAtScale_ConsoleOnPostgres(t *testing.T) {
	s := newAtScale(t)
	// The rule list shows channel and login rules of the default project and
	// of "*"; admin rights in a section of their own.
	listed := func(keep func(policy.Rule) bool) []policy.Rule {
		var out []policy.Rule
		for _, r := range s.all {
			if !r.IsAdmin() && (r.Project == policy.DefaultProject || r.Project == policy.AllProjects) && keep(r) {
				out = append(out, r)
			}
		}
		return out
	}
	ids := func(rules []policy.Rule) []int64 {
		out := make([]int64, len(rules))
		for i, r := range rules {
			out[i] = r.ID
		}
		return out
	}
	byChannelDesc := func(rules []policy.Rule) []policy.Rule {
		out := slices.Clone(rules)
		slices.SortStableFunc(out, func(a, b policy.Rule) int {
			if a.Channel != b.Channel {
				return -strings.Compare(a.Channel, b.Channel)
			}
			return -int(a.ID - b.ID)
		})
		return out
	}
	every := listed(func(policy.Rule) bool { return true })

	for _, tc := range []struct {
		name, query string
		want        []policy.Rule // the rules the filters select, in the page's order
		page        int
	}{
		{"no filter", "", every, 1},
		{"page 50", "page=50", every, 50},
		{"sorted by channel, descending", "sort=-channel", byChannelDesc(every), 1},
		{"page 50 sorted by channel, descending", "sort=-channel&page=50", byChannelDesc(every), 50},
		{"channel prefix team-1*", "channel=team-1*", listed(func(r policy.Rule) bool { return strings.HasPrefix(r.Channel, "team-1") }), 1},
		{"channel substring *lobby*", "channel=*lobby*", listed(func(r policy.Rule) bool { return strings.Contains(r.Channel, "lobby") }), 1},
		{"bare group name team-7", "subject=team-7", listed(func(r policy.Rule) bool { return r.Subject == "group:team-7" }), 1},
		{"subject *u-0000* and channel dm-*", "subject=*u-0000*&channel=dm-*", listed(func(r policy.Rule) bool {
			return strings.HasPrefix(r.Subject, "user:u-0000") && strings.HasPrefix(r.Channel, "dm-")
		}), 1},
		{"channel prefix team-1*, page 3 sorted by channel, descending", "channel=team-1*&sort=-channel&page=3",
			byChannelDesc(listed(func(r policy.Rule) bool { return strings.HasPrefix(r.Channel, "team-1") })), 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := s.get(t, "/console/policies?"+tc.query)
			if len(p.body) >= atScaleMaxPage {
				t.Errorf("the page has %d bytes, want under %d", len(p.body), atScaleMaxPage)
			}
			caption := fmt.Sprintf("%d rules</caption>", len(tc.want))
			if strings.Contains(tc.query, "subject=") || strings.Contains(tc.query, "channel=") {
				caption = fmt.Sprintf("%d rules match the filters</caption>", len(tc.want))
			}
			if !strings.Contains(p.body, caption) {
				t.Errorf("the page lacks %q", caption)
			}
			from := min((tc.page-1)*100, len(tc.want))
			want := ids(tc.want[from:min(from+100, len(tc.want))])
			if got := ruleIDs(p.body); !slices.Equal(got, want) {
				t.Errorf("the page lists %d rules %v…, want %d %v…", len(got), got[:min(3, len(got))], len(want), want[:min(3, len(want))])
			}
			// Numbered pages: the first, the last and two on each side of
			// this one.
			last := (len(tc.want) + 99) / 100
			if last > 1 {
				current := fmt.Sprintf(`<span aria-current="page">%d</span>`, tc.page)
				if !strings.Contains(p.body, `<nav class="pager" aria-label="Pages">`) || !strings.Contains(p.body, current) {
					t.Errorf("no numbered pages with %s", current)
				}
				for _, n := range []int{1, tc.page - 2, tc.page - 1, tc.page + 1, tc.page + 2, last} {
					if n >= 1 && n <= last && n != tc.page && !strings.Contains(p.body, fmt.Sprintf(">%d</a>", n)) {
						t.Errorf("no link to page %d of %d", n, last)
					}
				}
				if last > tc.page+3 && !strings.Contains(p.body, `<span aria-hidden="true">…</span>`) {
					t.Error("the pages left out are not marked")
				}
				if tc.page < last && !strings.Contains(p.body, "Next page »") {
					t.Error("no next page")
				}
			} else if strings.Contains(p.body, `class="pager"`) {
				t.Error("a single page has a pager")
			}
			t.Logf("%d rules; page %d of %d, %d bytes", len(tc.want), tc.page, last, len(p.body))
		})
	}

	t.Run("try", func(t *testing.T) {
		// u-00001 in team-1 and staff: the "*" rules, staff's town halls,
		// team-1's channel rules and the user's own apply (~1,000).
		var applicable []policy.Rule
		var deny policy.Rule
		for _, r := range s.all {
			if (r.Role == policy.Publisher || r.Role == policy.Subscriber) && r.Project != "staging" &&
				(r.Subject == "*" || r.Subject == "user:u-00001" || r.Subject == "group:team-1" || r.Subject == "group:staff") {
				applicable = append(applicable, r)
			}
			if r.Subject == "group:team-1" && r.Channel == "team-1-archive-*" {
				deny = r
			}
		}
		q := url.Values{"subject": {"u-00001"}, "groups": {"team-1, staff"}, "channel": {"team-1-archive-q3"}, "role": {"publisher"}}
		p := s.get(t, "/console/try?"+q.Encode())
		if len(p.body) >= atScaleMaxPage {
			t.Errorf("the page has %d bytes, want under %d", len(p.body), atScaleMaxPage)
		}
		for _, part := range []string{
			">Denied</h2>",
			fmt.Sprintf("%d rules apply to this user: 1–20, the deciding rule first", len(applicable)),
			"Deciding rule: <code>" + htmlEscape(deny.String()) + "</code>",
			"Show the next rules",
		} {
			if !strings.Contains(p.body, part) {
				t.Errorf("the page lacks %q", part)
			}
		}
		rows := ruleIDs(p.body)
		if len(rows) != 20 || rows[0] != deny.ID {
			t.Errorf("the page lists %d rules, first %v; want 20, the deciding rule %d first", len(rows), rows[:min(1, len(rows))], deny.ID)
		}
		// Every applicable rule once, following "Show the next rules".
		next := regexp.MustCompile(`<a href="([^"]+)">Show the next rules`)
		seen := map[int64]bool{}
		for pages := 1; ; pages++ {
			for _, id := range ruleIDs(p.body) {
				if seen[id] {
					t.Fatalf("page %d repeats rule %d", pages, id)
				}
				seen[id] = true
			}
			m := next.FindStringSubmatch(p.body)
			if m == nil {
				break
			}
			if pages > len(applicable)/20+1 {
				t.Fatalf("still paging after %d pages", pages)
			}
			p = s.get(t, html.UnescapeString(m[1]))
			if len(p.body) >= atScaleMaxPage {
				t.Errorf("page %d has %d bytes", pages+1, len(p.body))
			}
		}
		for _, r := range applicable {
			if !seen[r.ID] {
				t.Fatalf("the pages leave out %v", r)
			}
		}
		if len(seen) != len(applicable) {
			t.Fatalf("the pages list %d rules, want %d", len(seen), len(applicable))
		}
		t.Logf("%d rules apply", len(applicable))
	})

	t.Run("history", func(t *testing.T) {
		p := s.get(t, "/console/policies/history")
		if len(p.body) >= atScaleMaxPage {
			t.Errorf("the page has %d bytes, want under %d", len(p.body), atScaleMaxPage)
		}
		// The newest entry, the first row of the table.
		m := regexp.MustCompile(`<tbody>\s*<tr>\s*<td class="num">(\d+)</td>((?s:.*?))</tr>`).FindStringSubmatch(p.body)
		if m == nil || m[1] != strconv.FormatInt(s.importID, 10) {
			t.Fatalf("the newest entry is not the import (#%d):\n%s", s.importID, p.body)
		}
		row := m[2]
		// The console shows the rules of the default project and "*": all but
		// the 1,000 of project staging.
		shown := fmt.Sprintf("<div>… %d rules in all", atScaleImported-1000)
		if n := strings.Count(row, "<div><code>#"); n != policy.MaxRulesShown || !strings.Contains(row, shown) {
			t.Errorf("the import's entry lists %d rules, want %d and %q:\n%s", n, policy.MaxRulesShown, shown, row)
		}
		t.Logf("history: %d bytes", len(p.body))
	})
}

// BenchmarkConsoleAtScale measures the pages of TestRulesAtScale_Console…
// on the same fixture (built once): the page as sent (page-B; the console
// does not compress), what gzip would make of it (gzip-B), and the time per
// page through a loopback connection (ms/op, and the slowest in max-ms).
//
//	go test ./internal/console -run '^$' -bench ConsoleAtScale -benchtime=20x
func BenchmarkConsoleAtScale(b *testing.B) {
	s := newAtScale(b)
	try := url.Values{"subject": {"u-00001"}, "groups": {"team-1, staff"}, "channel": {"team-1-archive-q3"}, "role": {"publisher"}}
	for _, pg := range []struct{ name, path string }{
		{"policies/first page", "/console/policies"},
		{"policies/channel prefix team-1*", "/console/policies?channel=team-1*"},
		{"policies/channel substring *lobby*", "/console/policies?channel=*lobby*"},
		{"policies/bare group name team-7", "/console/policies?subject=team-7"},
		{"policies/subject and channel", "/console/policies?subject=*u-0000*&channel=dm-*"},
		{"policies/sorted by channel descending", "/console/policies?sort=-channel"},
		{"policies/page 50", "/console/policies?page=50"},
		{"policies/page 50 sorted by channel descending", "/console/policies?sort=-channel&page=50"},
		{"policies/last page (190)", "/console/policies?page=190"},
		{"try/first 20 of 995", "/console/try?" + try.Encode()},
		{"try/last page", "/console/try?" + try.Encode() + "&from=980"},
		{"history", "/console/policies/history"},
	} {
		b.Run(pg.name, func(b *testing.B) { s.measure(b, pg.path) })
	}
	// A page of history reads every rule of the changes on it: a second
	// 20,000-rule change on the page doubles its time.
	b.Run("after a second 20,000-rule import", func(b *testing.B) {
		var doc strings.Builder
		doc.WriteString("subject,channel,role,effect,maxTtlSeconds,project\n")
		for i := range atScaleImported {
			fmt.Fprintf(&doc, "group:team-%d,v2-team-%d-room-%d,publisher,allow,3600,\n", i/20, i/20, i%20)
		}
		res, err := s.rules.Import(context.Background(), policy.Actor{Subject: "cli:ops", Operator: true}, strings.NewReader(doc.String()), policy.ImportOptions{})
		if err != nil || len(res.Added) != atScaleImported {
			b.Fatalf("the second import: %v, %d rules added", err, len(res.Added))
		}
		b.Run("history", func(b *testing.B) { s.measure(b, "/console/policies/history") })
		b.Run("policies/first page", func(b *testing.B) { s.measure(b, "/console/policies") })
	})
}

// measure reports one page's size, as sent and gzipped, and its time.
func (s *atScale) measure(b *testing.B, path string) {
	var size int
	var took []time.Duration
	var last string
	for b.Loop() {
		p := s.get(b, path)
		size, last = len(p.body), p.body
		took = append(took, p.took)
	}
	var z bytes.Buffer
	w, _ := gzip.NewWriterLevel(&z, 5) // the level the API compresses at
	io.WriteString(w, last)
	w.Close()
	slices.Sort(took)
	var sum time.Duration
	for _, d := range took {
		sum += d
	}
	b.ReportMetric(float64(size), "page-B")
	b.ReportMetric(float64(z.Len()), "gzip-B")
	b.ReportMetric(float64(sum)/float64(len(took))/1e6, "ms/op")
	b.ReportMetric(float64(took[len(took)-1])/1e6, "max-ms")
}
