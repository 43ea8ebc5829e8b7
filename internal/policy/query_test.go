package policy

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/broker-dev/broker/internal/apperr"
)

func TestTextLike(t *testing.T) {
	for _, tc := range []struct {
		pattern, s string
		want       bool
	}{
		{"team-*", "team-1", true},
		{"team-*", "team-*", true},
		{"team-*", "team", false},
		{"*secret*", "team-secret*", true},
		{"*secret*", "secrets", true},
		{"*secret*", "secre", false},
		{"lobby", "lobby", true},
		{"lobby", "lobby-2", false},
		{"a*b*c", "axxbyyc", true},
		{"a*b*c", "axxbyy", false},
		{"**", "", true},
		{"", "", true},
		{"", "x", false},
	} {
		if got := textLike(tc.pattern, tc.s); got != tc.want {
			t.Errorf("textLike(%q, %q) = %v, want %v", tc.pattern, tc.s, got, tc.want)
		}
	}
}

// TestQuery_FiltersAsPeopleSearch: substring and prefix on subject and
// channel, a bare name for user: and group:, role, effect, the rules that
// apply to a channel or to a caller, sorting, offsets and the total.
func TestQuery_FiltersAsPeopleSearch(t *testing.T) {
	ctx := context.Background()
	e, err := Open(ctx, NewMemStore(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	op := Actor{Subject: "test", Operator: true}
	for _, r := range []Rule{
		{Subject: "group:developers", Channel: "team-*", Role: Publisher, Effect: Allow},
		{Subject: "group:developers", Channel: "team-secret*", Role: Publisher, Effect: Deny},
		{Subject: "user:bob", Channel: "team-1", Role: Subscriber, Effect: Allow},
		{Subject: "*", Channel: "lobby", Role: Subscriber, Effect: Allow},
		{Subject: "group:ops", Channel: "*", Role: Subscriber, Effect: Allow},
		{Subject: "user:developers", Channel: "demo-1", Role: Publisher, Effect: Allow},
	} {
		if _, err := e.Add(ctx, op, r); err != nil {
			t.Fatal(err)
		}
	}
	channels := func(f Filter) []string {
		t.Helper()
		rules, total, err := e.Query(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		if f.Limit == 0 && f.Offset == 0 && total != len(rules) {
			t.Errorf("%+v: total %d, %d rules", f, total, len(rules))
		}
		var out []string
		for _, r := range rules {
			out = append(out, r.Channel)
		}
		return out
	}
	bob := &Caller{Subject: "bob", Groups: []string{"developers"}}
	for _, tc := range []struct {
		name string
		f    Filter
		want []string
	}{
		{"channel prefix", Filter{ChannelLike: "team-*"}, []string{"team-*", "team-secret*", "team-1"}},
		{"channel substring", Filter{ChannelLike: "*secret*"}, []string{"team-secret*"}},
		{"channel *: the pattern *", Filter{ChannelLike: "*"}, []string{"*"}},
		{"bare name: users and groups of that name", Filter{SubjectLike: "developers"}, []string{"team-*", "team-secret*", "demo-1"}},
		{"group only", Filter{SubjectLike: "group:dev*"}, []string{"team-*", "team-secret*"}},
		{"subject *: the rules for everyone", Filter{SubjectLike: "*"}, []string{"lobby"}},
		{"role and effect", Filter{Role: Publisher, Effect: Deny}, []string{"team-secret*"}},
		{"applies to channel team-secret-1", Filter{AppliesToChannel: "team-secret-1"}, []string{"team-*", "team-secret*", "*"}},
		{"applies to bob", Filter{AppliesTo: bob}, []string{"team-*", "team-secret*", "team-1", "lobby"}},
		{"applies to bob on team-1", Filter{AppliesTo: bob, AppliesToChannel: "team-1"}, []string{"team-*", "team-1"}},
		{"sorted by channel", Filter{Sort: "channel"}, []string{"*", "demo-1", "lobby", "team-*", "team-1", "team-secret*"}},
		{"sorted by channel, descending, second page", Filter{Sort: "-channel", Offset: 2, Limit: 2}, []string{"team-*", "lobby"}},
	} {
		if got := channels(tc.f); !slices.Equal(got, tc.want) {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
	if _, total, err := e.Query(ctx, Filter{ChannelLike: "team-*", Limit: 1}); err != nil || total != 3 {
		t.Errorf("total of a page of 1: %d, %v; want 3", total, err)
	}
	if _, _, err := e.Query(ctx, Filter{Sort: "colour"}); apperr.KindOf(err) != apperr.Invalid {
		t.Errorf("an unknown sort key: %v, want Invalid", err)
	}
}

// TestEngine_KeepsSomeoneWhoManagesRights: the last grant of write on
// api:rights in every project cannot be removed or narrowed away, unless
// another comes with the same change; a policy that never had one is not
// held to it.
func TestEngine_KeepsSomeoneWhoManagesRights(t *testing.T) {
	ctx := context.Background()
	e, err := Open(ctx, NewMemStore(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	op := Actor{Subject: "test", Operator: true}
	reader, err := e.Add(ctx, op, Rule{Subject: "group:auditors", Channel: ObjectAudit, Role: Read, Effect: Allow, Project: AllProjects})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Remove(ctx, op, reader.ID); err != nil {
		t.Fatalf("removing a right from a policy with no rights manager: %v", err)
	}
	grant, err := e.Add(ctx, op, Rule{Subject: "group:admins", Channel: ObjectRights, Role: Write, Effect: Allow, Project: AllProjects})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Remove(ctx, op, grant.ID); apperr.KindOf(err) != apperr.Conflict {
		t.Fatalf("removing the last rights manager: %v, want Conflict", err)
	}
	// Narrowing it to one project is removing it too.
	narrowed := Rule{Subject: "group:admins", Channel: ObjectRights, Role: Write, Effect: Allow, Project: DefaultProject}
	if _, err := e.Replace(ctx, op, DefaultProject, []Rule{narrowed}, e.Version()); apperr.KindOf(err) != apperr.Conflict {
		t.Fatalf("narrowing the last rights manager: %v, want Conflict", err)
	}
	if _, err := e.Add(ctx, op, Rule{Subject: "user:root", Channel: ObjectRights, Role: Write, Effect: Allow, Project: AllProjects}); err != nil {
		t.Fatal(err)
	}
	if err := e.Remove(ctx, op, grant.ID); err != nil {
		t.Fatalf("removing one of two rights managers: %v", err)
	}
}

// deafStore is a store whose changes an engine hears of only when it makes
// them or reloads: its Watch announces nothing, as when a replica has not
// caught up yet.
type deafStore struct{ Store }

func (deafStore) Watch(ctx context.Context, _ func(int64)) error {
	<-ctx.Done()
	return ctx.Err()
}

// TestEngine_KeepsSomeoneWhoManagesRightsAcrossReplicas: two replicas each
// remove one of the last two grants that manage admin rights, the second on
// rules that do not show the first's removal yet. The second is checked
// again on the rules in force and refused; one grant is left. And a removal
// refused on rules that miss another replica's new grant is checked again
// and made.
func TestEngine_KeepsSomeoneWhoManagesRightsAcrossReplicas(t *testing.T) {
	ctx := context.Background()
	store := NewMemStore()
	a, err := Open(ctx, deafStore{store}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	op := Actor{Subject: "test", Operator: true}
	var grants []Rule
	for _, subject := range []string{"group:admins", "user:root"} {
		g, err := a.Add(ctx, op, Rule{Subject: subject, Channel: ObjectRights, Role: Write, Effect: Allow, Project: AllProjects})
		if err != nil {
			t.Fatal(err)
		}
		grants = append(grants, g)
	}
	b, err := Open(ctx, deafStore{store}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := a.Remove(ctx, op, grants[0].ID); err != nil {
		t.Fatalf("replica A removing one of two rights managers: %v", err)
	}
	if got := b.Count(Filter{Channel: ObjectRights}); got != 2 {
		t.Fatalf("replica B sees %d rights rules, want the 2 of before A's change", got)
	}
	err = b.Remove(ctx, op, grants[1].ID)
	if apperr.KindOf(err) != apperr.Conflict || !strings.Contains(err.Error(), "the last rule that lets anyone manage admin rights") {
		t.Fatalf("replica B removing the other: %v, want the last-rights Conflict", err)
	}
	lines, _, err := store.Load(ctx, Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(lines) != 1 || lines[0].ID != grants[1].ID {
		t.Fatalf("rules left: %+v, want %s's grant alone", lines, grants[1].Subject)
	}
	// The other way round: A adds a grant that B has not heard of, and B
	// removes the one it thinks is the last: checked on the rules in force,
	// that is allowed.
	third, err := a.Add(ctx, op, Rule{Subject: "user:ops", Channel: ObjectRights, Role: Write, Effect: Allow, Project: AllProjects})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Remove(ctx, op, grants[1].ID); err != nil {
		t.Fatalf("replica B removing %s's grant with %s's in force: %v", grants[1].Subject, third.Subject, err)
	}
	if lines, _, err = store.Load(ctx, Filter{}); err != nil || len(lines) != 1 || lines[0].ID != third.ID {
		t.Fatalf("rules left: %+v (%v), want %s's grant alone", lines, err, third.Subject)
	}
}
