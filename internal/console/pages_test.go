package console_test

import (
	"bytes"
	"context"
	"encoding/csv"
	"fmt"
	"html"
	"mime/multipart"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/broker-dev/broker/internal/agora"
	"github.com/broker-dev/broker/internal/audit"
	"github.com/broker-dev/broker/internal/policy"
	"github.com/broker-dev/broker/internal/review"
)

// adminBrowser logs the admin in and returns the browser and its CSRF token.
func adminBrowser(t *testing.T, e *env) (*browser, string) {
	t.Helper()
	b := e.browser()
	p := b.login(admin, "/console/policies")
	wantStatus(t, p, http.StatusOK)
	return b, csrf(t, p)
}

func TestPolicies_AddShowsTheEnginesMessageNextToTheField(t *testing.T) {
	e := newEnv(t)
	b, token := adminBrowser(t, e)
	rule := func(kv ...string) url.Values {
		v := url.Values{"csrf_token": {token}, "subject": {"group:developers"}, "channel": {"demo-*"}, "role": {"publisher"}, "effect": {"allow"}}
		for i := 0; i < len(kv); i += 2 {
			v.Set(kv[i], kv[i+1])
		}
		return v
	}
	tests := []struct {
		name   string
		form   url.Values
		field  string
		status int
	}{
		{"bad subject", rule("subject", "developers"), "subject", http.StatusBadRequest},
		{"bad channel", rule("channel", strings.Repeat("c", 70)), "channel", http.StatusBadRequest},
		{"bad role", rule("role", "owner"), "role", http.StatusBadRequest},
		{"bad effect", rule("effect", "maybe"), "effect", http.StatusBadRequest},
		{"TTL not a duration", rule("maxTtlSeconds", "an hour"), "maxTtlSeconds", http.StatusBadRequest},
		{"TTL a duration over the limit", rule("maxTtlSeconds", "25h"), "maxTtlSeconds", http.StatusBadRequest},
		{"TTL too long", rule("maxTtlSeconds", "90000"), "maxTtlSeconds", http.StatusBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := b.post("/console/policies", tt.form)
			wantStatus(t, p, tt.status)
			// The message sits inside the field's own block, and the field
			// keeps what was typed.
			block := regexp.MustCompile(`(?s)<div class="field invalid">\s*<label for="` + tt.field + `">.*?</div>`).FindString(p.Body)
			if !strings.Contains(block, `class="field-error"`) || !strings.Contains(block, `aria-invalid="true"`) {
				t.Errorf("no error message next to %s:\n%s", tt.field, p.Body)
			}
			if v := tt.form.Get(tt.field); tt.field != "role" && tt.field != "effect" && !strings.Contains(p.Body, `value="`+htmlEscape(v)+`"`) {
				t.Errorf("the form lost the typed %s %q", tt.field, v)
			}
		})
	}
	rules, _ := e.policy.List(context.Background(), policy.Filter{Subject: "group:developers"})
	if len(rules) != 0 {
		t.Fatalf("invalid rules were stored: %v", rules)
	}

	// Every mistake at once, a bare name with a suggestion.
	p := b.post("/console/policies", rule("subject", "developers", "channel", "a/b", "maxTtlSeconds", "soon"))
	wantStatus(t, p, http.StatusBadRequest)
	wantContains(t, p, "group:developers for a group", `id="channel-error"`, `id="ttl-error"`)

	p = b.post("/console/policies", rule("maxTtlSeconds", "10m"))
	wantStatus(t, p, http.StatusOK)
	wantContains(t, p, "was added.", "<code>group:developers</code>", "<code>demo-*</code>", "600 s")
	p = b.post("/console/policies", rule("maxTtlSeconds", "600"))
	wantStatus(t, p, http.StatusConflict)
	wantContains(t, p, `class="error"`)
}

func htmlEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&#34;", "'", "&#39;").Replace(s)
}

func TestPolicies_ListFiltersAndPages(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	for i := range 120 {
		if _, err := e.policy.Add(ctx, policy.Actor{Subject: "test", Operator: true}, policy.Rule{Subject: "group:g", Channel: fmt.Sprintf("ch-%03d", i), Role: policy.Subscriber, Effect: policy.Allow}); err != nil {
			t.Fatal(err)
		}
	}
	b, _ := adminBrowser(t, e)
	p := b.get("/console/policies?subject=group%3Ag")
	wantContains(t, p, "120 rules match the filters", "ch-000", "ch-099", "Next page")
	if strings.Contains(p.Body, "ch-100") || strings.Contains(p.Body, "<td><code>api:audit</code></td>") {
		t.Error("the first page shows rules beyond the first hundred or outside the filter")
	}
	next := regexp.MustCompile(`href="([^"]+)">Next page`).FindStringSubmatch(p.Body)
	p = b.get(strings.ReplaceAll(next[1], "&amp;", "&"))
	wantContains(t, p, "ch-100", "ch-119", "Previous page", `<span aria-current="page">2</span>`)
	if strings.Contains(p.Body, "ch-099") {
		t.Error("the second page repeats the first")
	}
	p = b.get("/console/policies?channel=ch-007")
	wantContains(t, p, "1 rule matches the filters", "ch-007")
	// As people search: a prefix, a part of the name.
	p = b.get("/console/policies?channel=ch-01*")
	wantContains(t, p, "10 rules match the filters", "ch-010", "ch-019")
	p = b.get("/console/policies?subject=g&channel=*11")
	wantContains(t, p, "2 rules match the filters", "ch-011", "ch-111")

	// Sorted by channel, descending, from its column's link.
	p = b.get("/console/policies?subject=group%3Ag&sort=-channel")
	if i, j := strings.Index(p.Body, "ch-119"), strings.Index(p.Body, "ch-118"); i < 0 || j < 0 || i > j || strings.Contains(p.Body, "ch-000") {
		t.Error("sort=-channel does not put ch-119 first on the first page")
	}

	// Admin rights have a section of their own, out of the rule list.
	p = b.get("/console/policies")
	rightsAt := strings.Index(p.Body, `id="rights-title"`)
	if rightsAt < 0 || strings.Index(p.Body, "<td><code>api:rights</code></td>") < rightsAt {
		t.Errorf("the admin rights are not in their own section after the rules:\n%s", p.Body)
	}

	// A page that does not exist keeps the navigation.
	p = b.get("/console/nowhere")
	wantStatus(t, p, http.StatusNotFound)
	wantContains(t, p, `<nav aria-label="Main">`, "There is no console page at this address.")
}

func TestPolicies_DeleteAsksFirstAndKeepsHistory(t *testing.T) {
	e := newEnv(t)
	r, err := e.policy.Add(context.Background(), policy.Actor{Subject: "test", Operator: true}, policy.Rule{Subject: "*", Channel: "lobby", Role: policy.Subscriber, Effect: policy.Allow})
	if err != nil {
		t.Fatal(err)
	}
	b, token := adminBrowser(t, e)
	path := fmt.Sprintf("/console/policies/%d/delete", r.ID)
	p := b.get(path)
	wantStatus(t, p, http.StatusOK)
	wantContains(t, p, fmt.Sprintf("Delete rule #%d?", r.ID), "<code>lobby</code>", `method="post"`, "Cancel")
	if rules, _ := e.policy.List(context.Background(), policy.Filter{Channel: "lobby"}); len(rules) != 1 {
		t.Fatal("asking for confirmation deleted the rule")
	}
	p = b.post(path, url.Values{"csrf_token": {token}})
	wantStatus(t, p, http.StatusOK)
	wantContains(t, p, fmt.Sprintf("Rule #%d was deleted.", r.ID))
	if rules, _ := e.policy.List(context.Background(), policy.Filter{Channel: "lobby"}); len(rules) != 0 {
		t.Fatal("the rule is still there")
	}
	wantStatus(t, b.post(path, url.Values{"csrf_token": {token}}), http.StatusNotFound)
	wantStatus(t, b.get(path), http.StatusNotFound)
	wantStatus(t, b.get("/console/policies/abc/delete"), http.StatusNotFound)

	p = b.get("/console/policies/history")
	wantStatus(t, p, http.StatusOK)
	wantContains(t, p, "<code>user:admin-1</code>", "remove", `allow * subscriber &#34;lobby&#34;`, "system:bootstrap")
}

func TestPolicies_ExportAndImportRoundTrip(t *testing.T) {
	e := newEnv(t)
	b, token := adminBrowser(t, e)
	exp := b.get("/console/policies/export")
	wantStatus(t, exp, http.StatusOK)
	if ct := exp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/csv") || !strings.Contains(exp.Header.Get("Content-Disposition"), "policies.csv") {
		t.Errorf("export headers: %s, %s", ct, exp.Header.Get("Content-Disposition"))
	}
	rows, err := csv.NewReader(strings.NewReader(exp.Body)).ReadAll()
	if err != nil || len(rows) != 10 || rows[0][0] != "subject" {
		t.Fatalf("export = %q (%v), want a header and the nine bootstrap rights", exp.Body, err)
	}

	doc := "subject,channel,role,effect,maxTtlSeconds\ngroup:qa,qa-*,subscriber,allow,\nuser:eve,qa-secret,subscriber,deny,\n"
	t.Run("pasted", func(t *testing.T) {
		p := b.post("/console/policies/import", url.Values{"csrf_token": {token}, "csv": {doc}})
		wantStatus(t, p, http.StatusOK)
		wantContains(t, p, "2 rules were imported.", "qa-secret")
	})
	t.Run("the same again adds nothing", func(t *testing.T) {
		p := b.post("/console/policies/import", url.Values{"csrf_token": {token}, "csv": {doc}})
		wantStatus(t, p, http.StatusOK)
		wantContains(t, p, "Import: 0 rules added, 0 removed, 2 already in force.")
	})
	t.Run("a replace previewed changes nothing, and says when it would lock the admins out", func(t *testing.T) {
		// Replacing the project's and the "*" rules with one rule would
		// remove the bootstrap rights too, the last rights manager among
		// them: the preview says so.
		one := "subject,channel,role,effect,maxTtlSeconds,project\ngroup:qa,qa-*,subscriber,allow,,default\n"
		p := b.post("/console/policies/import", url.Values{"csrf_token": {token}, "csv": {one}, "mode": {"replace"}, "preview": {"1"}})
		wantStatus(t, p, http.StatusConflict)
		wantContains(t, p, "manage admin rights")
		// With the rights kept, the preview lists what would go.
		keep := one + "group:broker-admins,api:rights,write,allow,,*\n"
		p = b.post("/console/policies/import", url.Values{"csrf_token": {token}, "csv": {keep}, "mode": {"replace"}, "preview": {"1"}})
		wantStatus(t, p, http.StatusOK)
		wantContains(t, p, "Preview: nothing has changed yet", "keep 2 already in force", "qa-secret")
		if rules, _ := e.policy.List(context.Background(), policy.Filter{Subject: "user:eve"}); len(rules) != 1 {
			t.Fatalf("a preview removed rules: %v", rules)
		}
	})
	t.Run("the history finds the imports", func(t *testing.T) {
		p := b.get("/console/policies/history?action=import&channel=qa-*")
		wantStatus(t, p, http.StatusOK)
		wantContains(t, p, "<td>import<br><small>2 added, 0 removed, 0 already in force</small></td>", "qa-secret")
		if strings.Contains(p.Body, "<td>bootstrap</td>") {
			t.Error("the filtered history shows the bootstrap")
		}
		p = b.get("/console/policies/history?rule=%231")
		wantContains(t, p, "<td>bootstrap</td>")
		p = b.get("/console/policies/history?from=" + url.QueryEscape(time.Now().Add(time.Hour).UTC().Format(time.RFC3339)))
		wantContains(t, p, "No change matches the filters")
		p = b.get("/console/policies/history?from=last+week")
		wantStatus(t, p, http.StatusBadRequest)
		wantContains(t, p, `value="last week"`, "The search did not run")
	})
	t.Run("every bad row is named, nothing imported", func(t *testing.T) {
		bad := "subject,channel,role,effect,maxTtlSeconds\ngroup:qa,a/b,subscriber,allow,\ngroup:qa,ok-1,subscriber,allow,\ngroup:qa,c,host,allow,\n"
		p := b.post("/console/policies/import", url.Values{"csrf_token": {token}, "csv": {bad}})
		wantStatus(t, p, http.StatusBadRequest)
		wantContains(t, p, "2 bad rows", "line 2: channel", "line 4: role")
	})
	t.Run("uploaded file", func(t *testing.T) {
		var body bytes.Buffer
		mw := multipart.NewWriter(&body)
		mw.WriteField("csrf_token", token)
		fw, _ := mw.CreateFormFile("file", "rules.csv")
		fw.Write([]byte("subject,channel,role,effect,maxTtlSeconds\ngroup:ops,ops,publisher,allow,300\n"))
		mw.Close()
		req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/console/policies/import", &body)
		req.Header.Set("Content-Type", mw.FormDataContentType())
		p := b.do(req)
		wantStatus(t, p, http.StatusOK)
		wantContains(t, p, "1 rules were imported.", "<code>group:ops</code>")
	})
	t.Run("bad row names its line and column", func(t *testing.T) {
		p := b.post("/console/policies/import", url.Values{"csrf_token": {token}, "csv": {"subject,channel,role,effect,maxTtlSeconds\nnobody,x,publisher,allow,\n"}})
		wantStatus(t, p, http.StatusBadRequest)
		wantContains(t, p, "subject: line 2")
	})
	t.Run("upload without the token", func(t *testing.T) {
		var body bytes.Buffer
		mw := multipart.NewWriter(&body)
		mw.WriteField("csv", "subject,channel,role,effect,maxTtlSeconds\ngroup:x,x,publisher,allow,\n")
		mw.Close()
		req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/console/policies/import", &body)
		req.Header.Set("Content-Type", mw.FormDataContentType())
		wantStatus(t, b.do(req), http.StatusForbidden)
	})
}

func TestTry_ShowsTheDecisionTheDecidingRuleAndEveryApplicableRule(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	add := func(r policy.Rule) policy.Rule {
		r, err := e.policy.Add(ctx, policy.Actor{Subject: "test", Operator: true}, r)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	allow := add(policy.Rule{Subject: "group:developers", Channel: "demo-*", Role: policy.Publisher, Effect: policy.Allow, MaxTTLSeconds: 600})
	deny := add(policy.Rule{Subject: "user:mallory", Channel: "demo-9", Role: policy.Subscriber, Effect: policy.Deny})
	add(policy.Rule{Subject: "group:other", Channel: "*", Role: policy.Publisher, Effect: policy.Allow})
	b, _ := adminBrowser(t, e)

	tests := []struct {
		name, query string
		want        []string
		absent      string
	}{
		{"allowed by a group rule", "subject=alice&groups=developers&channel=demo-1&role=publisher",
			[]string{"<h2 id=\"decision-title\">Allowed</h2>", "Deciding rule: <code>" + htmlEscape(allow.String()) + "</code>", "1 rule applies to this user"}, "group:other"},
		{"denied by a deny rule", "subject=user%3Amallory&groups=developers&channel=demo-9&role=subscriber",
			[]string{"Denied</h2>", "Deciding rule: <code>" + htmlEscape(deny.String()) + "</code>", "2 rules apply to this user"}, ""},
		{"denied with no rule", "subject=bob&channel=demo-1&role=publisher",
			[]string{"Denied</h2>", "No rule decided", "No channel rule names this user"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := b.get("/console/try?" + tt.query)
			wantStatus(t, p, http.StatusOK)
			wantContains(t, p, tt.want...)
			if tt.absent != "" && strings.Contains(p.Body, tt.absent) {
				t.Errorf("a rule that does not apply (%s) is listed", tt.absent)
			}
		})
	}
	t.Run("bad question", func(t *testing.T) {
		p := b.get("/console/try?subject=alice&channel=&role=publisher")
		wantStatus(t, p, http.StatusBadRequest)
		if !regexp.MustCompile(`(?s)<label for="channel">.*?class="field-error"`).MatchString(p.Body) {
			t.Errorf("no message next to the channel field:\n%s", p.Body)
		}
	})
	t.Run("empty form", func(t *testing.T) {
		p := b.get("/console/try")
		wantStatus(t, p, http.StatusOK)
		if strings.Contains(p.Body, "decision-title") {
			t.Error("a decision is shown before anything was asked")
		}
	})
}

// appendRecords writes n decisions for alice and one denial for bob.
func appendRecords(t *testing.T, log *audit.Memory, n int) []audit.Record {
	t.Helper()
	var out []audit.Record
	for i := range n {
		r, err := log.Append(context.Background(), audit.Record{
			RequestID: fmt.Sprintf("req-%d", i), Issuer: "https://idp", Subject: "alice", Account: "alice", UID: 42,
			Service: audit.ServiceRTC, Channel: fmt.Sprintf("demo-%d", i), Role: "publisher",
			GrantedTTL: time.Hour, Decision: audit.DecisionGranted, Reason: "allowed by rule #5",
			Rule: `#5 allow group:developers publisher "demo-*"`, TokenFingerprint: log.Fingerprint(fmt.Sprintf("tok-%d", i)),
		})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	r, err := log.Append(context.Background(), audit.Record{
		Issuer: "https://idp", Subject: "bob", Account: "bob", Service: audit.ServiceRTC, Channel: "secret",
		Role: "publisher", Decision: audit.DecisionDenied, Reason: `no rule allows user:bob to be publisher on "secret"`,
		Project: "staging",
	})
	if err != nil {
		t.Fatal(err)
	}
	return append(out, r)
}

func TestAudit_SearchPagesDetailExportAndVerify(t *testing.T) {
	e := newEnv(t)
	recs := appendRecords(t, e.log, 60)
	b, _ := adminBrowser(t, e)

	p := b.get("/console/audit")
	wantStatus(t, p, http.StatusOK)
	wantContains(t, p, "<code>secret</code>", "demo-59", "Older")
	if strings.Contains(p.Body, ">demo-9<") {
		t.Error("the first page holds more than 50 records")
	}
	older := regexp.MustCompile(`href="([^"]+)">Older`).FindStringSubmatch(p.Body)
	p = b.get(strings.ReplaceAll(older[1], "&amp;", "&"))
	wantContains(t, p, "<code>demo-0</code>", "Newest")

	p = b.get("/console/audit?decision=denied")
	wantContains(t, p, "<code>secret</code>")
	if strings.Contains(p.Body, "demo-") {
		t.Error("the decision filter let granted records through")
	}
	p = b.get("/console/audit?subject=alice&channel=demo-1*")
	wantContains(t, p, "demo-1", "demo-19")
	if strings.Contains(p.Body, "demo-2<") || strings.Contains(p.Body, "secret") {
		t.Error("the user or channel filter let other records through")
	}
	p = b.get("/console/audit?project=staging")
	wantContains(t, p, "<code>secret</code>", `name="project" value="staging"`)
	if strings.Contains(p.Body, "demo-") {
		t.Error("the project filter let other projects' records through")
	}
	future := time.Now().UTC().Add(time.Hour).Format("2006-01-02T15:04")
	p = b.get("/console/audit?from=" + future)
	wantContains(t, p, "No records.")

	t.Run("bad filters are shown next to their fields", func(t *testing.T) {
		for q, field := range map[string]string{"from=yesterday": "from", "from=2026-01-02T10:00&to=2026-01-01T10:00": "to", "decision=maybe": "decision"} {
			p := b.get("/console/audit?" + q)
			wantStatus(t, p, http.StatusBadRequest)
			if !regexp.MustCompile(`(?s)<label for="f-` + field + `">.*?class="field-error"`).MatchString(p.Body) {
				t.Errorf("%s: no message next to %s", q, field)
			}
		}
	})

	t.Run("one record in full", func(t *testing.T) {
		r := recs[7]
		link := regexp.MustCompile(`href="(/console/audit/record\?[^"]*seq=8[^"]*)"`).FindStringSubmatch(b.get("/console/audit?channel=demo-7").Body)
		if link == nil {
			t.Fatal("no link to the record's detail")
		}
		p := b.get(strings.ReplaceAll(link[1], "&amp;", "&"))
		wantStatus(t, p, http.StatusOK)
		wantContains(t, p, "Record #8", r.TokenFingerprint, r.Hash.String(), r.PrevHash.String(), "req-7", "42")
		wantStatus(t, b.get("/console/audit/record?seq=9&at="+url.QueryEscape(r.Time.Format(time.RFC3339Nano))), http.StatusNotFound)
		wantStatus(t, b.get("/console/audit/record?seq=x"), http.StatusNotFound)
	})

	t.Run("CSV export of the filtered records", func(t *testing.T) {
		p := b.get("/console/audit/export?decision=denied")
		wantStatus(t, p, http.StatusOK)
		if !strings.HasPrefix(p.Header.Get("Content-Type"), "text/csv") {
			t.Errorf("Content-Type = %q", p.Header.Get("Content-Type"))
		}
		rows, err := csv.NewReader(strings.NewReader(p.Body)).ReadAll()
		if err != nil || len(rows) != 2 || !strings.Contains(strings.Join(rows[1], ","), "secret") {
			t.Errorf("export = %q (%v), want a header and bob's denial", p.Body, err)
		}
	})

	t.Run("verification", func(t *testing.T) {
		p := b.get("/console/audit/verify")
		wantStatus(t, p, http.StatusOK)
		wantContains(t, p, "The chain is intact", "61 records checked")
	})
}

func TestOverview_ChartsTheLastHoursFromStats(t *testing.T) {
	e := newEnv(t)
	appendRecords(t, e.log, 3)
	b := e.browser()
	p := b.login(admin, "/console/")
	wantStatus(t, p, http.StatusOK)
	wantContains(t, p, "<svg", `class="bar-granted"`, "3 granted</title>", "1 denied</title>",
		`<span class="count">3</span> tokens granted`, `<span class="count">1</span> requests denied`,
		"3 tokens granted, 1 requests denied and 0 invalid in 24 intervals of 1h0m0s.", `class="bar-invalid"`,
		`<span class="count">7</span> refused for the rate limit`)
	if n := strings.Count(p.Body, "<rect "); n != 72 {
		t.Errorf("%d bars, want 3 (granted, denied, invalid) for each of 24 hours", n)
	}
	// The totals open the log filtered to their decisions in the window;
	// the axis names the day.
	if !regexp.MustCompile(`<a class="total denied" href="/console/audit\?decision=denied&amp;from=[0-9-]+T`).MatchString(p.Body) {
		t.Error("the denied total does not link to the log filtered to denials of the window")
	}
	if !regexp.MustCompile(`class="xlabel"[^>]*>[A-Z][a-z]{2} [0-9]{1,2} [0-9]{2}:[0-9]{2}<`).MatchString(p.Body) {
		t.Error("the time axis has no dates")
	}
	for hours, intervals := range map[string]string{"6": "24 intervals of 15m0s", "168": "28 intervals of 6h0m0s", "5": "24 intervals of 1h0m0s"} {
		wantContains(t, b.get("/console/?hours="+hours), intervals)
	}
}

func TestOverview_WithoutAuditRightsShowsNoChart(t *testing.T) {
	e := newEnv(t)
	if _, err := e.policy.Add(context.Background(), policy.Actor{Subject: "test", Operator: true}, policy.Rule{Subject: "user:dev-1", Channel: policy.ObjectPolicies, Role: policy.Read, Effect: policy.Allow}); err != nil {
		t.Fatal(err)
	}
	p := e.browser().login(developer, "/console/")
	wantStatus(t, p, http.StatusOK)
	wantContains(t, p, "read on api:audit", `href="/console/policies"`)
	if strings.Contains(p.Body, "<svg") || strings.Contains(p.Body, `href="/console/audit"`) {
		t.Error("a user without read on api:audit sees the chart or the issuance log link")
	}
}

// TestPolicies_ChannelAdminCannotTouchAdminRights: the console shows a
// channel admin their role, no delete link on api:* rules, and refuses an
// admin right they try to add (403, with the reason next to the form).
func TestPolicies_ChannelAdminCannotTouchAdminRights(t *testing.T) {
	e := newEnv(t)
	for _, role := range []policy.Role{policy.Read, policy.Write} {
		if _, err := e.policy.Add(context.Background(), policy.Actor{Subject: "test", Operator: true}, policy.Rule{Subject: "user:dev-1", Channel: policy.ObjectPolicies, Role: role, Effect: policy.Allow}); err != nil {
			t.Fatal(err)
		}
	}
	b := e.browser()
	p := b.login(developer, "/console/policies")
	wantStatus(t, p, http.StatusOK)
	wantContains(t, p, "channel admin")
	if strings.Contains(p.Body, "rights admin</span>") || strings.Contains(p.Body, "· auditor") {
		t.Error("the channel admin is shown roles they do not hold")
	}
	rights, _ := e.policy.List(context.Background(), policy.Filter{})
	for _, r := range rights {
		if r.IsAdmin() && strings.Contains(p.Body, fmt.Sprintf(`href="/console/policies/%d/delete"`, r.ID)) {
			t.Errorf("the channel admin is offered to delete admin right %s", r)
		}
	}
	form := url.Values{"csrf_token": {csrf(t, p)}, "subject": {"user:dev-1"}, "channel": {policy.ObjectAudit}, "role": {"read"}, "effect": {"allow"}}
	p = b.post("/console/policies", form)
	wantStatus(t, p, http.StatusForbidden)
	wantContains(t, p, "api:rights")
	if e.policy.Can(policy.Caller{Subject: "dev-1"}, policy.DefaultProject, policy.ObjectAudit, policy.Read) {
		t.Fatal("the channel admin granted themselves api:audit read")
	}
	for _, r := range rights {
		if r.IsAdmin() {
			p = b.post(fmt.Sprintf("/console/policies/%d/delete", r.ID), url.Values{"csrf_token": {form.Get("csrf_token")}})
			if p.StatusCode == http.StatusSeeOther || p.StatusCode == http.StatusOK && !strings.Contains(p.Body, "api:rights") {
				t.Errorf("deleting admin right %s as channel admin: %d", r, p.StatusCode)
			}
		}
	}
	after, _ := e.policy.List(context.Background(), policy.Filter{})
	if len(after) != len(rights) {
		t.Fatalf("rules %d → %d after the channel admin's attempts", len(rights), len(after))
	}
}

// TestAudit_FiltersSurviveABadDateAndTheWayBackFromARecord: a date the log
// cannot read stays in its field and the list says the search did not run;
// a record's page leads back to the list as it was.
func TestAudit_FiltersSurviveABadDateAndTheWayBackFromARecord(t *testing.T) {
	e := newEnv(t)
	for i := range 3 {
		if _, err := e.log.Append(context.Background(), audit.Record{Time: time.Now(), Issuer: "https://idp", Subject: "carol",
			Account: "carol", Channel: fmt.Sprintf("room-%d", i), Role: "publisher", Decision: audit.DecisionGranted}); err != nil {
			t.Fatal(err)
		}
	}
	b, _ := adminBrowser(t, e)
	p := b.get("/console/audit?subject=carol&from=" + url.QueryEscape("yesterday at noon"))
	wantStatus(t, p, http.StatusBadRequest)
	wantContains(t, p, `value="yesterday at noon"`, "The search did not run")
	if strings.Contains(p.Body, "No records.") {
		t.Error("a search that did not run says there are no records")
	}
	p = b.get("/console/audit?subject=carol&channel=room-*")
	wantStatus(t, p, http.StatusOK)
	detail := regexp.MustCompile(`href="([^"]*/audit/record\?[^"]+)"`).FindStringSubmatch(p.Body)
	if detail == nil {
		t.Fatalf("no record link:\n%s", p.Body)
	}
	rec := b.get(html.UnescapeString(detail[1]))
	wantStatus(t, rec, http.StatusOK)
	back := regexp.MustCompile(`href="([^"]+)">Back to the issuance log`).FindStringSubmatch(rec.Body)
	if back == nil || !strings.Contains(html.UnescapeString(back[1]), "subject=carol") || !strings.Contains(html.UnescapeString(back[1]), "channel=room-%2A") {
		t.Fatalf("the way back drops the filters: %v", back)
	}
}

// TestPolicies_MoreFiltersAndDeletingWhatTheySelect: role, effect, the
// rules that apply to a channel or a user; deleting what a filter selects
// states the count and deletes only if it still holds.
func TestPolicies_MoreFiltersAndDeletingWhatTheySelect(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	op := policy.Actor{Subject: "test", Operator: true}
	for i := range 30 {
		r := policy.Rule{Subject: "group:g", Channel: fmt.Sprintf("ch-%03d", i), Role: policy.Subscriber, Effect: policy.Allow}
		if i%10 == 0 {
			r.Role, r.Effect = policy.Publisher, policy.Deny
		}
		if _, err := e.policy.Add(ctx, op, r); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.policy.Add(ctx, op, policy.Rule{Subject: "user:bob", Channel: "ch-0*", Role: policy.Publisher, Effect: policy.Allow}); err != nil {
		t.Fatal(err)
	}
	b, token := adminBrowser(t, e)
	for query, want := range map[string]string{
		"role=publisher&effect=deny":     "3 rules match the filters",
		"appliesTo=ch-005":               "2 rules match the filters", // ch-005 and ch-0*
		"user=bob&appliesTo=ch-007":      "1 rule matches the filters",
		"user=carol&groups=g&channel=*1": "3 rules match the filters", // ch-001, ch-011, ch-021
	} {
		p := b.get("/console/policies?" + query)
		wantStatus(t, p, http.StatusOK)
		wantContains(t, p, want)
	}
	p := b.get("/console/policies?channel=ch-01*")
	wantContains(t, p, "Delete the rules that match these filters")
	p = b.get("/console/policies/delete-matching?channel=ch-01*")
	wantStatus(t, p, http.StatusOK)
	wantContains(t, p, "Delete 10 rules?", `name="count" value="10"`, `name="channel" value="ch-01*"`)
	form := url.Values{"csrf_token": {token}, "channel": {"ch-01*"}, "count": {"9"}}
	wantStatus(t, b.post("/console/policies/delete-matching", form), http.StatusConflict)
	form.Set("count", "10")
	p = b.post("/console/policies/delete-matching", form)
	wantStatus(t, p, http.StatusOK)
	wantContains(t, p, "10 rules were deleted.")
	if rules, _ := e.policy.List(ctx, policy.Filter{ChannelLike: "ch-01*"}); len(rules) != 0 {
		t.Fatalf("after the deletion: %v", rules)
	}
}

// TestAudit_WhoseTokenIsThis: a pasted token finds the record that issued
// it, and is not shown again.
func TestAudit_WhoseTokenIsThis(t *testing.T) {
	e := newEnv(t)
	const token = "007eJxTYBA0example-token-for-the-lookup"
	if _, err := e.log.Append(context.Background(), audit.Record{Time: time.Now(), Issuer: "https://idp", Subject: "dana", Account: "dana",
		Channel: "room-9", Role: "publisher", Decision: audit.DecisionGranted, TokenFingerprint: e.log.Fingerprint(token)}); err != nil {
		t.Fatal(err)
	}
	b, csrf := adminBrowser(t, e)
	wantStatus(t, b.get("/console/audit/lookup"), http.StatusOK)
	p := b.post("/console/audit/lookup", url.Values{"csrf_token": {csrf}, "token": {token}})
	wantStatus(t, p, http.StatusOK)
	wantContains(t, p, "1 record issued this token", "room-9", "dana")
	if strings.Contains(p.Body, token) {
		t.Error("the page shows the token again")
	}
	p = b.post("/console/audit/lookup", url.Values{"csrf_token": {csrf}, "token": {"007eJxnot-issued-here"}})
	wantContains(t, p, "No record of the projects you may read issued this token.")
}

// TestAudit_AccessReviewAndUnexplainedJoins: the console's access review
// shows who could, who got and who did for a channel and period, and the
// joins of the last day no grant explains.
func TestAudit_AccessReviewAndUnexplainedJoins(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if _, err := e.policy.Add(ctx, policy.Actor{Subject: "test", Operator: true}, policy.Rule{Subject: "group:dev", Channel: "room-*", Role: policy.Publisher, Effect: policy.Allow}); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Truncate(time.Second)
	if _, err := e.log.Append(ctx, audit.Record{Time: now, Issuer: "https://idp", Subject: "dana", Account: "dana", UID: 11, Channel: "room-9",
		Role: "publisher", Decision: audit.DecisionGranted, GrantedTTL: time.Hour, RequestedTTL: time.Hour, Project: policy.DefaultProject}); err != nil {
		t.Fatal(err)
	}
	explained, unexplained := true, false
	for _, j := range []review.Event{
		{NoticeID: "j1", Project: policy.DefaultProject, EventType: 103, Kind: agora.Joined, Channel: "room-9", UID: 11, At: now, Explained: &explained},
		{NoticeID: "j2", Project: policy.DefaultProject, EventType: 103, Kind: agora.Joined, Channel: "room-9", UID: 666, At: now, Explained: &unexplained},
	} {
		if _, err := e.joins.Record(ctx, j); err != nil {
			t.Fatal(err)
		}
	}
	b, _ := adminBrowser(t, e)
	p := b.get("/console/audit/access")
	wantStatus(t, p, http.StatusOK)
	wantContains(t, p, "Unexplained joins of the last day", "<td class=\"num\">666</td>")
	p = b.get("/console/audit/access?channel=room-9&role=publisher&from=" + url.QueryEscape(now.Add(-time.Hour).Format(time.RFC3339)) +
		"&to=" + url.QueryEscape(now.Add(time.Hour).Format(time.RFC3339)))
	wantStatus(t, p, http.StatusOK)
	wantContains(t, p, "Who could", `allow group:dev publisher &#34;room-*&#34;`, "Who got", "dana", "Who did",
		"Joined without a token of the period: uid 666.")
	p = b.get("/console/audit/access?subject=dana&role=publisher&from=" + url.QueryEscape(now.Add(-time.Hour).Format(time.RFC3339)) +
		"&to=" + url.QueryEscape(now.Add(time.Hour).Format(time.RFC3339)))
	wantStatus(t, p, http.StatusOK)
	wantContains(t, p, "Who got", "<code>room-9</code>", "11 on <code>room-9</code>", "Granted, never joined: none.")
	p = b.get("/console/audit/access?channel=room-9&subject=dana&from=" + url.QueryEscape(now.Add(-time.Hour).Format(time.RFC3339)) + "&to=" + url.QueryEscape(now.Add(time.Hour).Format(time.RFC3339)))
	wantStatus(t, p, http.StatusBadRequest)
	p = b.get("/console/audit/access?channel=room-9&from=last+week&to=now")
	wantStatus(t, p, http.StatusBadRequest)
	wantContains(t, p, `value="last week"`)
}

// TestRevocations_RevokeOrphansAndLift: an admin revokes a user from the
// console (the form's mistakes shown next to their fields), sees the token a
// policy change orphaned and revokes it in one click, and lifts a
// revocation; a developer has no revocations page.
func TestRevocations_RevokeOrphansAndLift(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	op := policy.Actor{Subject: "test", Operator: true}
	allow, err := e.policy.Add(ctx, op, policy.Rule{Subject: "group:dev", Channel: "room-*", Role: policy.Publisher, Effect: policy.Allow})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Truncate(time.Second)
	for _, who := range []struct {
		name string
		uid  uint32
	}{{"dana", 11}, {"eve", 12}} {
		if _, err := e.log.Append(ctx, audit.Record{Time: now, Issuer: "https://idp", Subject: who.name, Account: who.name, UID: who.uid, Groups: []string{"dev"},
			Channel: "room-9", Role: "publisher", Decision: audit.DecisionGranted, GrantedTTL: time.Hour, RequestedTTL: time.Hour, Project: policy.DefaultProject}); err != nil {
			t.Fatal(err)
		}
	}
	b, _ := adminBrowser(t, e)
	p := b.get("/console/revocations")
	wantStatus(t, p, http.StatusOK)
	wantContains(t, p, "Revoke a user's tokens", "No live token has lost its access.", "No revocation yet.")
	token := csrf(t, p)

	p = b.post("/console/revocations", url.Values{"csrf_token": {token}, "subject": {"user:dana"}, "channel": {"*"}})
	wantStatus(t, p, http.StatusBadRequest)
	wantContains(t, p, `id="r-reason-error"`)
	p = b.post("/console/revocations", url.Values{"csrf_token": {token}, "uid": {"x"}, "reason": {"r"}})
	wantStatus(t, p, http.StatusBadRequest)
	wantContains(t, p, `id="r-uid-error"`)
	p = b.post("/console/revocations", url.Values{"csrf_token": {token}, "uid": {"11"}, "channel": {"*"}, "reason": {"lost her laptop"}})
	wantStatus(t, p, http.StatusCreated)
	wantContains(t, p, "Revocation 1 of <code>user:dana</code>", "lost her laptop", "no Agora credentials")

	// Taking room-* from the developers orphans eve's token (dana's is
	// revoked already): one click revokes it.
	if err := e.policy.Remove(ctx, op, allow.ID); err != nil {
		t.Fatal(err)
	}
	p = b.get("/console/revocations")
	wantContains(t, p, "<code>user:eve</code>", `aria-label="Revoke user:eve on room-9"`)
	if strings.Contains(p.Body, `aria-label="Revoke user:dana`) {
		t.Error("dana's token, revoked already, is listed as orphaned")
	}
	p = b.post("/console/revocations", url.Values{"csrf_token": {token}, "subject": {"user:eve"}, "channel": {"room-9"}, "reason": {"access taken away by a policy change"}})
	wantStatus(t, p, http.StatusCreated)
	wantContains(t, p, "No live token has lost its access.")

	p = b.post("/console/revocations/1/lift", url.Values{"csrf_token": {token}})
	wantStatus(t, p, http.StatusOK)
	wantContains(t, p, "Revocation 1 of <code>user:dana</code>", "lifted")
	p = b.post("/console/revocations/1/lift", url.Values{"csrf_token": {token}})
	wantStatus(t, p, http.StatusConflict)
	p = b.post("/console/revocations/99/lift", url.Values{"csrf_token": {token}})
	wantStatus(t, p, http.StatusNotFound)

	d := e.browser()
	d.login(developer, "/console/")
	wantStatus(t, d.get("/console/revocations"), http.StatusForbidden)
}
