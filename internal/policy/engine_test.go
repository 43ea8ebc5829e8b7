package policy_test

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/broker-dev/broker/internal/apperr"
	"github.com/broker-dev/broker/internal/policy"
	"github.com/broker-dev/broker/policies"
)

var (
	ctx   = context.Background()
	admin = policy.Actor{Subject: "user:admin", RequestID: "req-7", Operator: true}
)

func openEngine(t *testing.T, s policy.Store) *policy.Engine {
	t.Helper()
	e, err := policy.Open(ctx, s, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return e
}

func add(t *testing.T, e *policy.Engine, rules ...policy.Rule) []policy.Rule {
	t.Helper()
	var out []policy.Rule
	for _, r := range rules {
		got, err := e.Add(ctx, admin, r)
		if err != nil {
			t.Fatalf("Add(%+v): %v", r, err)
		}
		out = append(out, got)
	}
	return out
}

func rule(subject, channel string, role policy.Role, effect policy.Effect, ttl int) policy.Rule {
	return policy.Rule{Subject: subject, Channel: channel, Role: role, Effect: effect, MaxTTLSeconds: ttl}
}

func decide(t *testing.T, e *policy.Engine, c policy.Caller, channel string, role policy.Role) policy.Decision {
	t.Helper()
	d, err := e.Decide(c, policy.DefaultProject, channel, role)
	if err != nil {
		t.Fatalf("Decide(%+v, %q, %s): %v", c, channel, role, err)
	}
	return d
}

func TestDecide_Semantics(t *testing.T) {
	e := openEngine(t, policy.NewMemStore())
	r := add(t, e,
		rule("group:dev", "demo-*", policy.Publisher, policy.Allow, 3600),       // 0
		rule("*", "lobby", policy.Subscriber, policy.Allow, 0),                  // 1
		rule("group:dev", "demo-secret*", policy.Publisher, policy.Deny, 0),     // 2
		rule("user:bob", "demo-*", policy.Subscriber, policy.Deny, 0),           // 3
		rule("user:carol", "demo-*", policy.Publisher, policy.Allow, 600),       // 4
		rule("user:carol", "demo-1", policy.Subscriber, policy.Allow, 0),        // 5
		rule("group:ops", "ops?[1]", policy.Subscriber, policy.Allow, 0),        // 6
		rule("user:dave", "*", policy.Subscriber, policy.Allow, 60),             // 7
		rule("user:dave", "*x*", policy.Publisher, policy.Deny, 0),              // 8
		rule("user:erin", "Agora*", policy.Publisher, policy.Allow, 0),          // 9
		rule("user:erin", "Agora-private-*", policy.Subscriber, policy.Deny, 0), // 10
	)
	alice := policy.Caller{Subject: "alice", Groups: []string{"dev"}}
	bob := policy.Caller{Subject: "bob", Groups: []string{"dev"}}
	carol := policy.Caller{Subject: "carol", Groups: []string{"dev"}}
	tests := []struct {
		name    string
		caller  policy.Caller
		channel string
		role    policy.Role
		allowed bool
		rule    *policy.Rule
		ttl     time.Duration
	}{
		{"nothing matches: default deny", policy.Caller{Subject: "zed"}, "demo-1", policy.Subscriber, false, nil, 0},
		{"group from the token grants", alice, "demo-1", policy.Publisher, true, &r[0], time.Hour},
		{"the same user without the group is denied", policy.Caller{Subject: "alice"}, "demo-1", policy.Publisher, false, nil, 0},
		{"publisher includes subscriber", alice, "demo-1", policy.Subscriber, true, &r[0], time.Hour},
		{"everyone on lobby", policy.Caller{Subject: "zed"}, "lobby", policy.Subscriber, true, &r[1], 0},
		{"subscriber does not include publisher", policy.Caller{Subject: "zed"}, "lobby", policy.Publisher, false, nil, 0},
		{"deny beats allow", alice, "demo-secret-1", policy.Publisher, false, &r[2], 0},
		{"deny on publisher leaves subscriber", alice, "demo-secret-1", policy.Subscriber, true, &r[0], time.Hour},
		{"deny on subscriber denies publisher", bob, "demo-1", policy.Publisher, false, &r[3], 0},
		{"longest lifetime decides, no limit longest", carol, "demo-1", policy.Subscriber, true, &r[5], 0},
		{"longest lifetime decides", carol, "demo-2", policy.Publisher, true, &r[0], time.Hour},
		{"? and [ ] are literal characters", policy.Caller{Subject: "o", Groups: []string{"ops"}}, "ops?[1]", policy.Subscriber, true, &r[6], 0},
		{"? does not match any character", policy.Caller{Subject: "o", Groups: []string{"ops"}}, "opsX1", policy.Subscriber, false, nil, 0},
		{"wildcard request covered by an allow", alice, "demo-*", policy.Subscriber, true, &r[0], time.Hour},
		{"wildcard request wider than every allow", alice, "demo*", policy.Subscriber, false, nil, 0},
		{"wildcard request overlapping a deny", alice, "demo-s*", policy.Publisher, false, &r[2], 0},
		{"star request covered by a star allow", policy.Caller{Subject: "dave"}, "*", policy.Subscriber, true, &r[7], time.Minute},
		{"star request overlapping a deny pattern", policy.Caller{Subject: "dave"}, "*", policy.Publisher, false, &r[8], 0},
		{"pattern request inside the allow", policy.Caller{Subject: "erin"}, "Agora-public-*", policy.Publisher, true, &r[9], 0},
		{"pattern request overlapping a deny", policy.Caller{Subject: "erin"}, "Agora*", policy.Publisher, false, &r[10], 0},
		{"exact deny inside a pattern request", bob, "demo-*", policy.Subscriber, false, &r[3], 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := decide(t, e, tt.caller, tt.channel, tt.role)
			if d.Allowed != tt.allowed || d.MaxTTL != tt.ttl || (d.Rule == nil) != (tt.rule == nil) || d.Rule != nil && *d.Rule != *tt.rule {
				t.Fatalf("Decide = %+v (rule %v), want allowed=%v rule=%v ttl=%v", d, d.Rule, tt.allowed, tt.rule, tt.ttl)
			}
			if tt.rule == nil && !strings.HasPrefix(d.Reason, "no rule allows") {
				t.Fatalf("Reason = %q, want \"no rule allows …\"", d.Reason)
			}
		})
	}
}

func TestDecide_RejectsBadInputWithField(t *testing.T) {
	e := openEngine(t, policy.NewMemStore())
	tests := []struct {
		name    string
		caller  policy.Caller
		channel string
		role    policy.Role
		field   string
	}{
		{"no subject", policy.Caller{}, "lobby", policy.Subscriber, "subject"},
		{"admin action as role", policy.Caller{Subject: "a"}, "lobby", policy.Read, "role"},
		{"Agora role number", policy.Caller{Subject: "a"}, "lobby", "1", "role"},
		{"bad channel", policy.Caller{Subject: "a"}, "a/b", policy.Subscriber, "channel"},
		{"empty channel", policy.Caller{Subject: "a"}, "", policy.Subscriber, "channel"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := e.Decide(tt.caller, policy.DefaultProject, tt.channel, tt.role)
			if ae, ok := apperr.As(err); !ok || ae.Kind != apperr.Invalid || ae.Field != tt.field {
				t.Fatalf("Decide error = %v, want Invalid on %s", err, tt.field)
			}
		})
	}
}

func TestEngine_RevokedRulesStopGrantingAtOnce(t *testing.T) {
	e := openEngine(t, policy.NewMemStore())
	r := add(t, e,
		rule("group:dev", "demo-*", policy.Publisher, policy.Allow, 0),
		rule("*", "lobby*", policy.Subscriber, policy.Allow, 0),
	)
	alice := policy.Caller{Subject: "alice", Groups: []string{"dev"}}
	for _, tc := range []struct {
		rule    policy.Rule
		channel string
		role    policy.Role
	}{{r[0], "demo-1", policy.Publisher}, {r[1], "lobby", policy.Subscriber}} {
		if !decide(t, e, alice, tc.channel, tc.role).Allowed {
			t.Fatalf("%s on %q not allowed before revoking %v", tc.role, tc.channel, tc.rule)
		}
		if err := e.Remove(ctx, admin, tc.rule.ID); err != nil {
			t.Fatal(err)
		}
		if d := decide(t, e, alice, tc.channel, tc.role); d.Allowed {
			t.Fatalf("after removing %v the next decision is %+v, want denied", tc.rule, d)
		}
	}
}

func TestEngine_ChangeThroughOneEngineReachesAnother(t *testing.T) {
	s := policy.NewMemStore()
	a, b := openEngine(t, s), openEngine(t, s)
	r := add(t, a, rule("user:u", "x", policy.Subscriber, policy.Allow, 0))[0]
	u := policy.Caller{Subject: "u"}
	waitFor(t, func() bool { return decide(t, b, u, "x", policy.Subscriber).Allowed })
	if err := a.Remove(ctx, admin, r.ID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return !decide(t, b, u, "x", policy.Subscriber).Allowed })
	if a.Version() != b.Version() {
		t.Fatalf("versions %d and %d differ after catching up", a.Version(), b.Version())
	}
}

// waitFor polls cond for up to one second, the replication bound.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 1s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestEngine_AddValidatesEveryField(t *testing.T) {
	e := openEngine(t, policy.NewMemStore())
	ok := rule("user:a", "lobby", policy.Subscriber, policy.Allow, 0)
	tests := []struct {
		name  string
		edit  func(*policy.Rule)
		field string
	}{
		{"subject kind", func(r *policy.Rule) { r.Subject = "role:x" }, "subject"},
		{"empty user", func(r *policy.Rule) { r.Subject = "user:" }, "subject"},
		{"control character", func(r *policy.Rule) { r.Subject = "user:a\nb" }, "subject"},
		{"channel", func(r *policy.Rule) { r.Channel = "a/b" }, "channel"},
		{"role", func(r *policy.Rule) { r.Role = "admin" }, "role"},
		{"effect", func(r *policy.Rule) { r.Effect = "maybe" }, "effect"},
		{"negative ttl", func(r *policy.Rule) { r.MaxTTLSeconds = -1 }, "maxTtlSeconds"},
		{"ttl over a day", func(r *policy.Rule) { r.MaxTTLSeconds = 86401 }, "maxTtlSeconds"},
		{"admin right on a channel", func(r *policy.Rule) { r.Role = policy.Write }, "channel"},
		{"admin deny", func(r *policy.Rule) { r.Role, r.Channel, r.Effect = policy.Read, policy.ObjectAudit, policy.Deny }, "effect"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := ok
			tt.edit(&r)
			_, err := e.Add(ctx, admin, r)
			if ae, isApp := apperr.As(err); !isApp || ae.Kind != apperr.Invalid || ae.Field != tt.field {
				t.Fatalf("Add error = %v, want Invalid on %s", err, tt.field)
			}
		})
	}
	add(t, e, ok)
	if _, err := e.Add(ctx, admin, ok); apperr.KindOf(err) != apperr.Conflict {
		t.Fatalf("adding a duplicate: %v, want Conflict", err)
	}
	if err := e.Remove(ctx, admin, 424242); apperr.KindOf(err) != apperr.NotFound {
		t.Fatalf("removing an unknown id: %v, want NotFound", err)
	}
	if _, err := e.Add(ctx, policy.Actor{}, rule("user:b", "x", policy.Subscriber, policy.Allow, 0)); apperr.KindOf(err) != apperr.Invalid {
		t.Fatalf("a change without an actor: %v, want Invalid", err)
	}
}

func TestEngine_AdminRightsAreSeparateFromChannels(t *testing.T) {
	e := openEngine(t, policy.NewMemStore())
	add(t, e,
		rule("group:ops", policy.ObjectAudit, policy.Read, policy.Allow, 0),
		rule("user:mallory", "api:policies", policy.Publisher, policy.Allow, 0), // a channel, not a right
	)
	ops := policy.Caller{Subject: "o", Groups: []string{"ops"}}
	mallory := policy.Caller{Subject: "mallory"}
	if !e.Can(ops, policy.DefaultProject, policy.ObjectAudit, policy.Read) || e.Can(ops, policy.DefaultProject, policy.ObjectAudit, policy.Write) || e.Can(ops, policy.DefaultProject, policy.ObjectPolicies, policy.Read) {
		t.Fatal("ops should read the audit log and nothing else")
	}
	if e.Can(mallory, policy.DefaultProject, policy.ObjectPolicies, policy.Write) || e.Can(mallory, policy.DefaultProject, policy.ObjectPolicies, policy.Read) {
		t.Fatal("a channel named api:policies granted admin rights")
	}
	if !decide(t, e, mallory, "api:policies", policy.Publisher).Allowed {
		t.Fatal("the channel rule on api:policies does not work as a channel rule")
	}
	if d := decide(t, e, ops, "api:audit", policy.Subscriber); d.Allowed {
		t.Fatal("an admin right granted a channel")
	}
}

func TestEngine_BootstrapGrantsOnlyWhenNoAdminExists(t *testing.T) {
	s := policy.NewMemStore()
	engines := []*policy.Engine{openEngine(t, s), openEngine(t, s), openEngine(t, s)}
	var wg sync.WaitGroup
	for _, e := range engines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := e.Bootstrap(ctx, []string{"group:broker-admins", "user:root"}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	rules, err := engines[0].List(ctx, policy.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(rules) != 18 {
		t.Fatalf("%d rules after concurrent bootstraps, want 18 (2 subjects x 9 rights)", len(rules))
	}
	admins := policy.Caller{Subject: "x", Groups: []string{"broker-admins"}}
	for _, obj := range []string{policy.ObjectPolicies, policy.ObjectAudit} {
		for _, act := range []policy.Role{policy.Read, policy.Write} {
			if !engines[0].Can(admins, policy.DefaultProject, obj, act) {
				t.Errorf("bootstrapped admins cannot %s %s", act, obj)
			}
		}
	}
	if err := engines[1].Remove(ctx, admin, rules[0].ID); err != nil {
		t.Fatal(err)
	}
	if err := engines[1].Bootstrap(ctx, []string{"user:intruder"}); err != nil {
		t.Fatal(err)
	}
	if engines[1].Can(policy.Caller{Subject: "intruder"}, policy.DefaultProject, policy.ObjectPolicies, policy.Write) {
		t.Fatal("bootstrap granted rights although admin rights exist")
	}
	if err := engines[0].Bootstrap(ctx, []string{"root"}); apperr.KindOf(err) != apperr.Invalid {
		t.Fatalf("bootstrap with a bad subject: %v, want Invalid", err)
	}
}

func TestEngine_ImportIsAllOrNothingAndNamesTheBadLine(t *testing.T) {
	tests := []struct {
		name, csv   string
		kind        apperr.Kind
		field, line string
	}{
		{"bad channel", "subject,channel,role,effect,maxTtlSeconds\n*,lobby,subscriber,allow,\n*,a/b,subscriber,allow,\n", apperr.Invalid, "channel", "line 3:"},
		{"bad ttl", "subject,channel,role,effect,maxTtlSeconds\n*,lobby,subscriber,allow,soon\n", apperr.Invalid, "maxTtlSeconds", "line 2:"},
		{"bad role", "subject,channel,role,effect,maxTtlSeconds\n*,lobby,subscriber,allow,\n\n*,x,audience,allow,\n", apperr.Invalid, "role", "line 4:"},
		{"wrong header", "who,channel,role,effect,maxTtlSeconds\n", apperr.Invalid, "", "line 1:"},
		{"missing column", "subject,channel,role,effect,maxTtlSeconds\n*,lobby,subscriber\n", apperr.Invalid, "", "line 2:"},
		{"repeated row", "subject,channel,role,effect,maxTtlSeconds\n*,lobby,subscriber,allow,\n*,lobby,subscriber,allow,\n", apperr.Invalid, "", "line 3"},
		{"empty", "", apperr.Invalid, "", "line 1:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := openEngine(t, policy.NewMemStore())
			add(t, e, rule("user:a", "old", policy.Publisher, policy.Allow, 60))
			v := e.Version()
			n, err := e.Import(ctx, admin, strings.NewReader(tt.csv), policy.ImportOptions{})
			ae, ok := apperr.As(err)
			if !ok || ae.Kind != tt.kind || ae.Field != tt.field || !strings.HasPrefix(ae.Message, tt.line) || len(n.Added) != 0 {
				t.Fatalf("Import = %+v, %v; want %s on field %q starting %q", n, err, tt.kind, tt.field, tt.line)
			}
			if rules, _ := e.List(ctx, policy.Filter{}); len(rules) != 1 || e.Version() != v {
				t.Fatalf("a failed import changed the rules: %+v", rules)
			}
		})
	}
}

func TestEngine_ExportImportRoundTrip(t *testing.T) {
	e := openEngine(t, policy.NewMemStore())
	imp, err := e.Import(ctx, admin, strings.NewReader(policies.ExampleCSV), policy.ImportOptions{})
	n := len(imp.Added)
	if err != nil || n == 0 {
		t.Fatalf("importing the example policy: %d, %v", n, err)
	}
	var out bytes.Buffer
	if err := e.Export(ctx, &out, policy.Filter{}); err != nil {
		t.Fatal(err)
	}
	if out.String() != strings.ReplaceAll(policies.ExampleCSV, "\r\n", "\n") {
		t.Fatalf("export differs from the imported example:\n%s", out.String())
	}
	other := openEngine(t, policy.NewMemStore())
	if m, err := other.Import(ctx, admin, &out, policy.ImportOptions{}); err != nil || len(m.Added) != n {
		t.Fatalf("re-import = %+v, %v; want %d added", m, err, n)
	}
	dev := policy.Caller{Subject: "d", Groups: []string{"developers"}}
	if !decide(t, other, dev, "demo-1", policy.Publisher).Allowed || decide(t, other, dev, "demo-secret-1", policy.Publisher).Allowed {
		t.Fatal("the example policy does not decide as documented")
	}
	if !other.Can(policy.Caller{Subject: "a", Groups: []string{"broker-admins"}}, policy.DefaultProject, policy.ObjectPolicies, policy.Write) {
		t.Fatal("the example policy does not make broker-admins admins")
	}
}

func TestEngine_HistoryAndVersion(t *testing.T) {
	e := openEngine(t, policy.NewMemStore())
	v0 := e.Version()
	r := add(t, e, rule("user:a", "x", policy.Subscriber, policy.Allow, 0))[0]
	v1 := e.Version()
	if err := e.Remove(ctx, policy.Actor{Subject: "cli:root", Operator: true}, r.ID); err != nil {
		t.Fatal(err)
	}
	if v2 := e.Version(); !(v0 < v1 && v1 < v2) {
		t.Fatalf("versions %d, %d, %d; want rising", v0, v1, v2)
	}
	h, _, err := e.History(ctx, policy.HistoryFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(h) != 2 || h[0].Actor != "cli:root" || h[0].Before[0] != r || h[1].Actor != "user:admin" || h[1].RequestID != "req-7" || h[1].After[0] != r {
		t.Fatalf("History = %+v", h)
	}
}

func TestExplain_ListsEveryApplicableRuleAndWhy(t *testing.T) {
	e := openEngine(t, policy.NewMemStore())
	r := add(t, e,
		rule("group:dev", "demo-*", policy.Publisher, policy.Allow, 0),
		rule("group:dev", "demo-secret*", policy.Publisher, policy.Deny, 0),
		rule("*", "lobby", policy.Subscriber, policy.Allow, 0),
		rule("user:alice", "demo-1", policy.Subscriber, policy.Allow, 0),
		rule("user:bob", "demo-1", policy.Publisher, policy.Allow, 0), // not alice's
	)
	x, err := e.Explain(policy.Caller{Subject: "alice", Groups: []string{"dev"}}, policy.DefaultProject, "demo-1", policy.Publisher)
	if err != nil {
		t.Fatal(err)
	}
	if !x.Decision.Allowed || *x.Decision.Rule != r[0] {
		t.Fatalf("Decision = %+v", x.Decision)
	}
	want := []struct {
		id      int64
		matches bool
		reason  string
	}{
		{r[0].ID, true, "allows publisher"},
		{r[1].ID, false, "shares no channel"},
		{r[2].ID, false, "does not match"},
		{r[3].ID, false, "allowing subscriber does not allow publisher"},
	}
	if len(x.Rules) != len(want) {
		t.Fatalf("Explain listed %d rules, want %d: %+v", len(x.Rules), len(want), x.Rules)
	}
	for i, w := range want {
		got := x.Rules[i]
		if got.Rule.ID != w.id || got.Matches != w.matches || !strings.Contains(got.Reason, w.reason) {
			t.Errorf("rule %d: %+v, want id %d matches=%v reason containing %q", i, got, w.id, w.matches, w.reason)
		}
	}
}

func TestEngine_DecisionsAndAdminChecksRunConcurrentlyWithChanges(t *testing.T) {
	e := openEngine(t, policy.NewMemStore())
	add(t, e, rule("group:ops", policy.ObjectPolicies, policy.Read, policy.Allow, 0))
	ops := policy.Caller{Subject: "o", Groups: []string{"ops"}}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := e.Decide(ops, policy.DefaultProject, "room-1", policy.Subscriber); err != nil {
					t.Error(err)
					return
				}
				if !e.Can(ops, policy.DefaultProject, policy.ObjectPolicies, policy.Read) {
					t.Error("an unrelated change hid an admin right")
					return
				}
			}
		}()
	}
	for i := range 20 {
		r := add(t, e, rule("user:o", "room-*", policy.Subscriber, policy.Allow, 60+i))[0]
		if err := e.Remove(ctx, admin, r.ID); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
}

func TestEngine_ExportNeutralisesFormulasAndRoundTrips(t *testing.T) {
	e := openEngine(t, policy.NewMemStore())
	add(t, e, rule("*", "=1+2*3", policy.Subscriber, policy.Allow, 0),
		rule("*", "@SUM(1+1)", policy.Subscriber, policy.Allow, 0),
		rule("group:dev", "-room", policy.Publisher, policy.Deny, 0))
	var out bytes.Buffer
	if err := e.Export(ctx, &out, policy.Filter{}); err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n")[1:] {
		for _, cell := range strings.Split(line, ",") {
			if cell != "" && strings.ContainsRune("=+-@", rune(cell[0])) {
				t.Fatalf("exported cell %q of line %q runs as a formula", cell, line)
			}
		}
	}
	other := openEngine(t, policy.NewMemStore())
	if n, err := other.Import(ctx, admin, &out, policy.ImportOptions{}); err != nil || len(n.Added) != 3 {
		t.Fatalf("re-import = %+v, %v; want 3 added", n, err)
	}
	got, err := other.List(ctx, policy.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []string{"=1+2*3", "@SUM(1+1)", "-room"} {
		if got[i].Channel != want {
			t.Errorf("rule %d re-imported with channel %q, want %q", i, got[i].Channel, want)
		}
	}
}

// TestEngine_SeparationOfDuties: write on api:policies changes channel rules
// only; every admin right (api:*) takes write on api:rights, one's own too.
func TestEngine_SeparationOfDuties(t *testing.T) {
	e := openEngine(t, policy.NewMemStore())
	admins := add(t, e,
		rule("group:chan", policy.ObjectPolicies, policy.Read, policy.Allow, 0),
		rule("group:chan", policy.ObjectPolicies, policy.Write, policy.Allow, 0),
		rule("group:aud", policy.ObjectAudit, policy.Read, policy.Allow, 0),
		rule("group:rights", policy.ObjectRights, policy.Write, policy.Allow, 0))
	channelRule := add(t, e, rule("*", "lobby", policy.Subscriber, policy.Allow, 0))[0]
	as := func(group string) policy.Actor {
		return policy.Actor{Subject: "user:" + group, Caller: policy.Caller{Subject: group, Groups: []string{group}}}
	}
	chanAdmin, auditor, rightsAdmin := as("chan"), as("aud"), as("rights")
	forbidden := func(what string, err error) {
		t.Helper()
		if apperr.KindOf(err) != apperr.Forbidden {
			t.Errorf("%s: %v; want Forbidden", what, err)
		}
	}
	// A channel admin cannot grant, remove or widen any api:* rule.
	for _, r := range []policy.Rule{
		rule("group:chan", policy.ObjectAudit, policy.Read, policy.Allow, 0),
		rule("group:chan", policy.ObjectRights, policy.Write, policy.Allow, 0),
		rule("user:chan", policy.ObjectPolicies, policy.Write, policy.Allow, 0),
		rule("*", policy.ObjectPolicies, policy.Read, policy.Allow, 0),
	} {
		_, err := e.Add(ctx, chanAdmin, r)
		forbidden("channel admin adds "+r.String(), err)
	}
	for _, r := range admins {
		forbidden("channel admin removes "+r.String(), e.Remove(ctx, chanAdmin, r.ID))
	}
	_, err := e.Import(ctx, chanAdmin, strings.NewReader("subject,channel,role,effect,maxTtlSeconds\n*,x,subscriber,allow,\ngroup:chan,api:audit,read,allow,\n"), policy.ImportOptions{})
	forbidden("channel admin imports an admin right", err)
	// ... but changes channel rules.
	if _, err := e.Add(ctx, chanAdmin, rule("group:g", "room", policy.Publisher, policy.Allow, 0)); err != nil {
		t.Errorf("channel admin adds a channel rule: %v", err)
	}
	if err := e.Remove(ctx, chanAdmin, channelRule.ID); err != nil {
		t.Errorf("channel admin removes a channel rule: %v", err)
	}
	// An auditor changes nothing.
	_, err = e.Add(ctx, auditor, rule("*", "x", policy.Subscriber, policy.Allow, 0))
	forbidden("auditor adds a channel rule", err)
	forbidden("auditor removes the channel admin's right", e.Remove(ctx, auditor, admins[1].ID))
	// A rights admin changes admin rights, and only those.
	granted, err := e.Add(ctx, rightsAdmin, rule("group:aud2", policy.ObjectAudit, policy.Read, policy.Allow, 0))
	if err != nil {
		t.Fatalf("rights admin grants api:audit read: %v", err)
	}
	if err := e.Remove(ctx, rightsAdmin, granted.ID); err != nil {
		t.Errorf("rights admin removes it: %v", err)
	}
	_, err = e.Add(ctx, rightsAdmin, rule("*", "x", policy.Subscriber, policy.Allow, 0))
	forbidden("rights admin adds a channel rule", err)
	// Nobody without a caller or the operator mark changes anything.
	_, err = e.Add(ctx, policy.Actor{Subject: "user:nobody"}, rule("*", "x", policy.Subscriber, policy.Allow, 0))
	forbidden("an actor with no caller", err)
	// The auditor's right survived every attempt.
	if !e.Can(policy.Caller{Subject: "a", Groups: []string{"aud"}}, policy.DefaultProject, policy.ObjectAudit, policy.Read) {
		t.Fatal("the auditor lost api:audit read")
	}
	if e.Can(policy.Caller{Subject: "c", Groups: []string{"chan"}}, policy.DefaultProject, policy.ObjectAudit, policy.Read) {
		t.Fatal("the channel admin gained api:audit read")
	}
}

func TestRule_RightsObjectHasOnlyWrite(t *testing.T) {
	if err := rule("*", policy.ObjectRights, policy.Read, policy.Allow, 0).Validate(); apperr.KindOf(err) != apperr.Invalid {
		t.Fatalf("read on api:rights: %v; want Invalid", err)
	}
	if err := rule("group:x", "api:other", policy.Write, policy.Allow, 0).Validate(); apperr.KindOf(err) != apperr.Invalid {
		t.Fatalf("write on api:other: %v; want Invalid", err)
	}
}

func TestDecideLogin_DefaultDenyDenyBeatsAllowAndExplain(t *testing.T) {
	e := openEngine(t, policy.NewMemStore())
	bob := policy.Caller{Subject: "bob", Groups: []string{"dev"}}
	if d, err := e.DecideLogin(bob, policy.DefaultProject, policy.LoginRTM); err != nil || d.Allowed || d.Reason != "no rule allows user:bob to log in to rtm" {
		t.Fatalf("no rules: %+v, %v", d, err)
	}
	r := add(t, e,
		rule("*", policy.LoginRTM, policy.Login, policy.Allow, 0),
		rule("group:dev", policy.LoginChat, policy.Login, policy.Allow, 600),
		rule("user:bob", policy.LoginChat, policy.Login, policy.Deny, 0))
	if d, _ := e.DecideLogin(bob, policy.DefaultProject, policy.LoginRTM); !d.Allowed || d.Rule.ID != r[0].ID {
		t.Fatalf("rtm: %+v", d)
	}
	if d, _ := e.DecideLogin(bob, policy.DefaultProject, policy.LoginChat); d.Allowed || d.Rule.ID != r[2].ID {
		t.Fatalf("chat for bob (denied by his own rule): %+v", d)
	}
	carol := policy.Caller{Subject: "carol", Groups: []string{"dev"}}
	if d, _ := e.DecideLogin(carol, policy.DefaultProject, policy.LoginChat); !d.Allowed || d.MaxTTL != 600*time.Second {
		t.Fatalf("chat for carol: %+v", d)
	}
	x, err := e.Explain(bob, policy.DefaultProject, policy.LoginChat, policy.Login)
	// The deciding rule first, then the other match, then the rtm rule.
	if err != nil || x.Decision.Allowed || len(x.Rules) != 3 || x.Rules[0].Rule.ID != r[2].ID || !x.Rules[1].Matches || x.Rules[2].Matches {
		t.Fatalf("explain: %+v, %v", x, err)
	}
	if _, err := e.DecideLogin(bob, policy.DefaultProject, "fpa"); apperr.KindOf(err) != apperr.Invalid {
		t.Fatalf("unknown service: %v", err)
	}
	// Login rules never decide a channel, and channel rules never a login.
	if decide(t, e, bob, "rtm", policy.Publisher).Allowed {
		t.Fatal("a login rule granted the channel rtm")
	}
	// Channel admins change login rules (api:policies write), as channel rules.
	add(t, e, rule("group:chan", policy.ObjectPolicies, policy.Write, policy.Allow, 0))
	chanAdmin := policy.Actor{Subject: "user:c", Caller: policy.Caller{Subject: "c", Groups: []string{"chan"}}}
	if _, err := e.Add(ctx, chanAdmin, rule("group:ops", policy.LoginRTM, policy.Login, policy.Deny, 0)); err != nil {
		t.Fatalf("channel admin adds a login rule: %v", err)
	}
}

func TestHistory_ShowsAtMostAHundredRulesOfAChange(t *testing.T) {
	e := openEngine(t, policy.NewMemStore())
	var doc strings.Builder
	doc.WriteString("subject,channel,role,effect,maxTtlSeconds\n")
	for i := range 250 {
		fmt.Fprintf(&doc, "*,room-%d,subscriber,allow,\n", i)
	}
	if _, err := e.Import(ctx, admin, strings.NewReader(doc.String()), policy.ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	h, _, err := e.History(ctx, policy.HistoryFilter{Limit: 1})
	if err != nil || len(h) != 1 || len(h[0].After) != policy.MaxRulesShown || h[0].AfterTotal != 250 {
		t.Fatalf("history %d entries, %d rules shown of %d", len(h), len(h[0].After), h[0].AfterTotal)
	}
}
