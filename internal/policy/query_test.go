package policy

import (
	"context"
	"slices"
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
