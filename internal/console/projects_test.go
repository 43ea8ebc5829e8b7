package console_test

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/broker-dev/broker/internal/policy"
)

// TestProjects_TheConsoleWorksInOneProjectOfTheUsers: a project admin sees
// their project's rules (and those of every project), adds rules to it, is
// offered no switch to a project they hold no right in, and cannot verify
// the chain, which spans every project; a global admin switches between
// every project.
func TestProjects_TheConsoleWorksInOneProjectOfTheUsers(t *testing.T) {
	e := newEnvWithProjects(t, []string{policy.DefaultProject, "a", "b"})
	ctx := context.Background()
	op := policy.Actor{Subject: "test", Operator: true}
	for _, r := range []policy.Rule{
		{Subject: "group:developers", Channel: policy.ObjectPolicies, Role: policy.Read, Effect: policy.Allow, Project: "a"},
		{Subject: "group:developers", Channel: policy.ObjectPolicies, Role: policy.Write, Effect: policy.Allow, Project: "a"},
		{Subject: "group:developers", Channel: policy.ObjectAudit, Role: policy.Read, Effect: policy.Allow, Project: "a"},
		{Subject: "*", Channel: "a-room", Role: policy.Subscriber, Effect: policy.Allow, Project: "a"},
		{Subject: "*", Channel: "b-room", Role: policy.Subscriber, Effect: policy.Allow, Project: "b"},
		{Subject: "*", Channel: "lobby", Role: policy.Subscriber, Effect: policy.Allow, Project: policy.AllProjects},
	} {
		if _, err := e.policy.Add(ctx, op, r); err != nil {
			t.Fatal(err)
		}
	}

	dev := e.browser()
	p := dev.login(developer, "/console/policies")
	wantStatus(t, p, http.StatusOK)
	wantContains(t, p, "a-room", "lobby", `<span class="project">Project a</span>`)
	if strings.Contains(p.Body, "b-room") || strings.Contains(p.Body, `id="project-switch"`) {
		t.Errorf("a's admin sees b's rules or a switch to it:\n%s", p.Body)
	}
	token := csrf(t, p)
	p = dev.post("/console/policies", url.Values{"csrf_token": {token}, "subject": {"group:g"}, "channel": {"a-live"},
		"role": {"publisher"}, "effect": {"allow"}, "project": {"a"}})
	wantStatus(t, p, http.StatusOK)
	if rules, _ := e.policy.List(ctx, policy.Filter{Channel: "a-live"}); len(rules) != 1 || rules[0].Project != "a" {
		t.Errorf("the rule added in project a: %+v", rules)
	}
	p = dev.post("/console/policies", url.Values{"csrf_token": {token}, "subject": {"group:g"}, "channel": {"all-live"},
		"role": {"publisher"}, "effect": {"allow"}, "project": {"*"}})
	wantStatus(t, p, http.StatusForbidden)
	wantStatus(t, dev.get("/console/project?name=b"), http.StatusNotFound)
	p = dev.get("/console/audit/verify")
	wantStatus(t, p, http.StatusForbidden)

	root := e.browser()
	p = root.login(admin, "/console/policies")
	wantContains(t, p, `id="project-switch"`, `<option value="a">a</option>`, `<option value="b">b</option>`)
	p = root.get("/console/project?name=b&back=" + url.QueryEscape("/console/policies"))
	wantStatus(t, p, http.StatusOK)
	wantContains(t, p, "b-room", "lobby", `<option value="b" selected>b</option>`)
	if strings.Contains(p.Body, "a-room") {
		t.Error("project b's page lists a's rules")
	}
	// The switch goes back only to a console page.
	p = root.noFollow().get("/console/project?name=a&back=" + url.QueryEscape("//evil.example/console/"))
	if loc := p.Header.Get("Location"); p.StatusCode != http.StatusSeeOther || loc != "/console/" {
		t.Errorf("switch with an off-site back: %d to %q", p.StatusCode, loc)
	}
}
