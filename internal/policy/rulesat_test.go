package policy_test

import (
	"testing"
	"time"

	"github.com/broker-dev/broker/internal/apperr"
	"github.com/broker-dev/broker/internal/pg/pgtest"
	"github.com/broker-dev/broker/internal/policy"
)

// TestRulesAt_RebuildsThePastFromTheHistory: the rules at a moment are
// those the history says were in force then, on either store; the explain
// of the past uses them.
func TestRulesAt_RebuildsThePastFromTheHistory(t *testing.T) {
	for name, store := range map[string]func(t *testing.T) policy.Store{
		"memory":   func(*testing.T) policy.Store { return policy.NewMemStore() },
		"postgres": func(t *testing.T) policy.Store { return policy.NewPGStore(pgtest.New(t).Pool(), nil) },
	} {
		t.Run(name, func(t *testing.T) {
			e := openEngine(t, store(t))
			before := time.Now()
			time.Sleep(5 * time.Millisecond)
			a := add(t, e, rule("group:dev", "demo-*", policy.Publisher, policy.Allow, 0))[0]
			time.Sleep(5 * time.Millisecond)
			between := time.Now()
			time.Sleep(5 * time.Millisecond)
			b := add(t, e, rule("group:dev", "team-*", policy.Publisher, policy.Allow, 0))[0]
			if err := e.Remove(ctx, admin, a.ID); err != nil {
				t.Fatal(err)
			}
			has := func(rules []policy.Rule, id int64) bool {
				for _, r := range rules {
					if r.ID == id {
						return true
					}
				}
				return false
			}
			then, v1, err := e.RulesAt(ctx, between)
			if err != nil || !has(then, a.ID) || has(then, b.ID) || v1 == 0 {
				t.Fatalf("rules at the moment between: %v (version %d), %v; want #%d, not #%d", then, v1, err, a.ID, b.ID)
			}
			now, v2, err := e.RulesAt(ctx, time.Now())
			if err != nil || has(now, a.ID) || !has(now, b.ID) || v2 != e.Version() {
				t.Fatalf("rules now: %v (version %d, engine at %d), %v", now, v2, e.Version(), err)
			}
			if first, _, err := e.RulesAt(ctx, before); err != nil || has(first, a.ID) || has(first, b.ID) {
				t.Fatalf("rules before either: %v, %v", first, err)
			}
			replay, err := policy.NewReplayer(ctx, then)
			if err != nil {
				t.Fatal(err)
			}
			defer replay.Close()
			x, err := replay.Explain(policy.Caller{Subject: "bob", Groups: []string{"dev"}}, policy.DefaultProject, "demo-1", policy.Publisher)
			if err != nil || !x.Decision.Allowed {
				t.Fatalf("explain at the moment between: %+v, %v; want allowed by #%d", x.Decision, err, a.ID)
			}
		})
	}
}

// TestRulesAt_RefusesWhenTheHistoryMissesARule: a rule written straight
// into the table, around the history, makes the past unknowable: an error,
// not a guess.
func TestRulesAt_RefusesWhenTheHistoryMissesARule(t *testing.T) {
	db := pgtest.New(t)
	if _, err := db.Pool().Exec(ctx, `INSERT INTO casbin_rule (ptype, v0, v1, v2, v3, v4) VALUES ('p', '*', 'side-door', 'subscriber', 'allow', '0')`); err != nil {
		t.Fatal(err)
	}
	e := openEngine(t, policy.NewPGStore(db.Pool(), nil))
	if _, _, err := e.RulesAt(ctx, time.Now()); apperr.KindOf(err) != apperr.Internal {
		t.Fatalf("RulesAt with a rule the history never saw: %v, want Internal", err)
	}
}
