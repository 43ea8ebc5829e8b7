package policy_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/broker-dev/broker/internal/apperr"
	"github.com/broker-dev/broker/internal/pg/pgtest"
	"github.com/broker-dev/broker/internal/policy"
)

func inProject(r policy.Rule, project string) policy.Rule {
	r.Project = project
	return r
}

// TestProjects_DecisionsUseTheProjectsRulesAndTheStarRules: a rule applies
// in its project only; a rule of "*" in every project, where its denies beat
// the project's allows as any deny does.
func TestProjects_DecisionsUseTheProjectsRulesAndTheStarRules(t *testing.T) {
	for name, store := range map[string]func(t *testing.T) policy.Store{
		"memory":   func(*testing.T) policy.Store { return policy.NewMemStore() },
		"postgres": func(t *testing.T) policy.Store { return policy.NewPGStore(pgtest.New(t).Pool(), nil) },
	} {
		t.Run(name, func(t *testing.T) {
			e := openEngine(t, store(t))
			e.ServeProjects([]string{policy.DefaultProject, "a", "b"})
			r := add(t, e,
				inProject(rule("*", "room-*", policy.Publisher, policy.Allow, 600), "a"),
				inProject(rule("*", "room-*", policy.Subscriber, policy.Allow, 0), "b"),
				inProject(rule("*", "room-banned", policy.Subscriber, policy.Deny, 0), policy.AllProjects),
				inProject(rule("*", "rtm", policy.Login, policy.Allow, 0), "b"))
			c := policy.Caller{Subject: "u1"}
			tests := []struct {
				project, channel string
				role             policy.Role
				allowed          bool
				by               int64
			}{
				{"a", "room-1", policy.Publisher, true, r[0].ID},
				{"b", "room-1", policy.Publisher, false, 0},
				{"b", "room-1", policy.Subscriber, true, r[1].ID},
				{policy.DefaultProject, "room-1", policy.Subscriber, false, 0},
				{"a", "room-banned", policy.Subscriber, false, r[2].ID},
				{"b", "room-banned", policy.Subscriber, false, r[2].ID},
			}
			for _, tt := range tests {
				d, err := e.Decide(c, tt.project, tt.channel, tt.role)
				if err != nil || d.Allowed != tt.allowed || (tt.by != 0) != (d.Rule != nil) || (d.Rule != nil && d.Rule.ID != tt.by) {
					t.Errorf("%s %s on %q in %s: %+v, %v; want allowed=%v by #%d", c.Subject, tt.role, tt.channel, tt.project, d, err, tt.allowed, tt.by)
				}
			}
			if d, err := e.DecideLogin(c, "a", policy.LoginRTM); err != nil || d.Allowed && d.Rule.ID == r[3].ID {
				t.Errorf("RTM login in a by b's rule: %+v, %v", d, err)
			}
			if d, err := e.DecideLogin(c, "b", policy.LoginRTM); err != nil || !d.Allowed || d.Rule.ID != r[3].ID {
				t.Errorf("RTM login in b: %+v, %v", d, err)
			}
			x, err := e.Explain(c, "b", "room-1", policy.Subscriber)
			if err != nil || x.Project != "b" {
				t.Fatalf("explain: %+v, %v", x, err)
			}
			var ids []int64
			for _, rc := range x.Rules {
				ids = append(ids, rc.Rule.ID)
			}
			if !slices.Equal(ids, []int64{r[1].ID, r[2].ID}) {
				t.Errorf("explain in b lists rules %v, want b's and *'s: %v", ids, []int64{r[1].ID, r[2].ID})
			}
			if _, err := e.Add(ctx, admin, inProject(rule("*", "x", policy.Subscriber, policy.Allow, 0), "c")); apperr.KindOf(err) != apperr.Invalid {
				t.Errorf("a rule of a project the broker does not serve: %v; want Invalid", err)
			}
			if _, err := e.Decide(c, "Not A Name", "x", policy.Subscriber); apperr.KindOf(err) != apperr.Invalid {
				t.Errorf("a request naming a malformed project: %v; want Invalid", err)
			}
		})
	}
}

// TestProjects_AdminsOfOneProjectManageOnlyIt: rights on project a let an
// admin change a's rules and nothing else (not b's, not "*"'s, not rights);
// a rule they cannot see is not found; global rights stay global.
func TestProjects_AdminsOfOneProjectManageOnlyIt(t *testing.T) {
	e := openEngine(t, policy.NewMemStore())
	add(t, e,
		inProject(rule("group:a-admins", policy.ObjectPolicies, policy.Read, policy.Allow, 0), "a"),
		inProject(rule("group:a-admins", policy.ObjectPolicies, policy.Write, policy.Allow, 0), "a"),
		inProject(rule("group:a-admins", policy.ObjectAudit, policy.Read, policy.Allow, 0), "a"),
		rule("group:root", policy.ObjectPolicies, policy.Write, policy.Allow, 0))
	bRule := add(t, e, inProject(rule("*", "b-room", policy.Subscriber, policy.Allow, 0), "b"))[0]
	starRule := add(t, e, inProject(rule("*", "lobby", policy.Subscriber, policy.Allow, 0), policy.AllProjects))[0]
	aAdmin := policy.Actor{Subject: "user:ann", Caller: policy.Caller{Subject: "ann", Groups: []string{"a-admins"}}}
	root := policy.Actor{Subject: "user:root", Caller: policy.Caller{Subject: "root", Groups: []string{"root"}}}

	if !e.Can(aAdmin.Caller, "a", policy.ObjectPolicies, policy.Write) || e.Can(aAdmin.Caller, "b", policy.ObjectPolicies, policy.Read) ||
		e.Can(aAdmin.Caller, policy.AllProjects, policy.ObjectPolicies, policy.Read) {
		t.Error("a's admin holds rights beyond project a")
	}
	if got := e.ProjectsWith(aAdmin.Caller, policy.ObjectAudit, policy.Read); !slices.Equal(got, []string{"a"}) {
		t.Errorf("ProjectsWith(audit read) = %v, want [a]", got)
	}
	if got := e.ProjectsWith(root.Caller, policy.ObjectPolicies, policy.Write); !slices.Equal(got, []string{policy.AllProjects}) {
		t.Errorf("a global right: ProjectsWith = %v, want [*]", got)
	}
	mine, err := e.Add(ctx, aAdmin, inProject(rule("group:g", "a-room", policy.Publisher, policy.Allow, 0), "a"))
	if err != nil {
		t.Fatalf("a's admin adds a rule to a: %v", err)
	}
	for _, r := range []policy.Rule{
		inProject(rule("group:g", "x", policy.Publisher, policy.Allow, 0), "b"),
		inProject(rule("group:g", "x", policy.Publisher, policy.Allow, 0), policy.AllProjects),
		rule("group:g", "x", policy.Publisher, policy.Allow, 0), // the default project
		inProject(rule("group:g", policy.ObjectAudit, policy.Read, policy.Allow, 0), "a"),
	} {
		if _, err := e.Add(ctx, aAdmin, r); apperr.KindOf(err) != apperr.Forbidden {
			t.Errorf("a's admin adds %s: %v; want Forbidden", r, err)
		}
	}
	if err := e.Remove(ctx, aAdmin, bRule.ID); apperr.KindOf(err) != apperr.NotFound || strings.Contains(err.Error(), "b-room") {
		t.Errorf("a's admin removes b's rule: %v; want NotFound naming nothing of it", err)
	}
	if err := e.Remove(ctx, aAdmin, starRule.ID); apperr.KindOf(err) != apperr.Forbidden {
		t.Errorf("a's admin removes a rule of every project: %v; want Forbidden", err)
	}
	if _, err := e.Import(ctx, aAdmin, strings.NewReader("subject,channel,role,effect,maxTtlSeconds,project\n*,ok,subscriber,allow,,a\n*,x,subscriber,allow,,b\n"), policy.ImportOptions{}); apperr.KindOf(err) != apperr.Forbidden {
		t.Errorf("a's admin imports a row of b: %v; want Forbidden", err)
	}
	// A row repeating one of b's rules is refused for the right, not as a
	// duplicate: that would tell a's admin the rule and its id.
	if _, err := e.Import(ctx, aAdmin, strings.NewReader("subject,channel,role,effect,maxTtlSeconds,project\n*,b-room,subscriber,allow,,b\n"), policy.ImportOptions{}); apperr.KindOf(err) != apperr.Forbidden || strings.Contains(err.Error(), "#") {
		t.Errorf("a's admin imports a copy of b's rule: %v; want Forbidden naming no rule", err)
	}
	if _, err := e.Add(ctx, aAdmin, inProject(rule("*", "x", policy.Subscriber, policy.Allow, 0), "unserved")); apperr.KindOf(err) != apperr.Forbidden {
		t.Errorf("a's admin adds a rule to a project the broker may not serve: %v; want Forbidden (no word on whether it exists)", err)
	}
	if n := e.Count(policy.Filter{Projects: []string{"a"}}); n != 4 {
		t.Errorf("the import added some rules: %d rules in a, want 4", n)
	}
	if err := e.Remove(ctx, aAdmin, mine.ID); err != nil {
		t.Errorf("a's admin removes their rule: %v", err)
	}
	if err := e.Remove(ctx, root, bRule.ID); err != nil {
		t.Errorf("a global admin removes b's rule: %v", err)
	}
	h, _, err := e.History(ctx, policy.HistoryFilter{Projects: []string{"a", policy.AllProjects}})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range h {
		for _, r := range append(c.Before, c.After...) {
			if r.Project != "a" && r.Project != policy.AllProjects {
				t.Errorf("a's history shows %s", r)
			}
		}
	}
	if len(h) != 7 { // four rights, the "*" rule, a's rule added and removed
		t.Errorf("a's history has %d changes, want 7: %+v", len(h), h)
	}
}

// TestProjects_PreviousReleaseNeverSeesOtherProjects: rules of other
// projects, and rights limited to one project, are kept where the previous
// release (which ignores v5) does not read them, in the table and in the
// history it catches up from; the default project's and "*"'s stay where it
// reads them, as it means them.
func TestProjects_PreviousReleaseNeverSeesOtherProjects(t *testing.T) {
	db := pgtest.New(t)
	e := openEngine(t, policy.NewPGStore(db.Pool(), nil))
	add(t, e,
		rule("*", "d-room", policy.Subscriber, policy.Allow, 0),
		inProject(rule("*", "s-room", policy.Subscriber, policy.Allow, 0), policy.AllProjects),
		rule("group:root", policy.ObjectAudit, policy.Read, policy.Allow, 0),
		inProject(rule("*", "b-room", policy.Subscriber, policy.Allow, 0), "b"),
		inProject(rule("group:a", policy.ObjectAudit, policy.Read, policy.Allow, 0), "a"),
		inProject(rule("group:d", policy.ObjectAudit, policy.Read, policy.Allow, 0), policy.DefaultProject))
	var legacy []string
	rows, err := db.Pool().Query(ctx, "SELECT v1 || '/' || v5 FROM casbin_rule ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		legacy = append(legacy, s)
	}
	if want := []string{"d-room/", "s-room/*", "api:audit/"}; !slices.Equal(legacy, want) {
		t.Errorf("casbin_rule (the previous release's view) holds %v, want %v", legacy, want)
	}
	var legacyHistory int
	if err := db.Pool().QueryRow(ctx, `SELECT count(*) FROM policy_history, jsonb_array_elements(after) r
		WHERE r->>'channel' IN ('b-room') OR r->>'project' IN ('a', 'b')`).Scan(&legacyHistory); err != nil {
		t.Fatal(err)
	}
	if legacyHistory != 0 {
		t.Errorf("the history columns the previous release reads hold %d rules of other projects", legacyHistory)
	}
	// A second engine (this release) reads everything back as written.
	other := openEngine(t, policy.NewPGStore(db.Pool(), nil))
	rules, err := other.List(ctx, policy.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range rules {
		if !r.IsLogin() {
			got = append(got, r.Channel+"/"+r.Project)
		}
	}
	if want := []string{"d-room/default", "s-room/*", "api:audit/*", "b-room/b", "api:audit/a", "api:audit/default"}; !slices.Equal(got, want) {
		t.Errorf("rules read back: %v, want %v", got, want)
	}
	h, _, err := other.History(ctx, policy.HistoryFilter{Limit: 3})
	if err != nil || len(h) != 3 || len(h[2].After) != 1 || h[2].After[0].Project != "b" {
		t.Errorf("history of other projects' rules: %+v, %v", h, err)
	}
}
