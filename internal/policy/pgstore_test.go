package policy_test

import (
	"context"
	"testing"
	"time"

	"github.com/broker-dev/broker/internal/apperr"
	"github.com/broker-dev/broker/internal/pg"
	"github.com/broker-dev/broker/internal/pg/pgtest"
	"github.com/broker-dev/broker/internal/policy"
	"github.com/broker-dev/broker/internal/policy/policytest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func TestPGStore_Conformance(t *testing.T) {
	policytest.RunStoreConformance(t, func(t *testing.T) policy.Store {
		db := pgtest.New(t)
		// The suite starts from an empty store: drop the allow-all RTM login
		// rule that migration 005 adds (tested on its own below).
		if _, err := db.Pool().Exec(ctx, "DELETE FROM policy_login_rule; DELETE FROM policy_history"); err != nil {
			t.Fatal(err)
		}
		return policy.NewPGStore(db.Pool(), nil)
	})
}

// TestPGStore_MigrationAllowsEveryRTMLogin: upgrading changes nothing for
// RTM (one allow-all login rule, in the history as made by the migration,
// then put in the default project by migration 011), and Chat logins stay
// denied until a rule allows them.
func TestPGStore_MigrationAllowsEveryRTMLogin(t *testing.T) {
	e := openEngine(t, policy.NewPGStore(pgtest.New(t).Pool(), nil))
	c := policy.Caller{Subject: "anyone"}
	if d, err := e.DecideLogin(c, policy.DefaultProject, policy.LoginRTM); err != nil || !d.Allowed || d.Rule == nil || d.Rule.Subject != "*" {
		t.Fatalf("RTM login after the migration: %+v, %v", d, err)
	}
	if d, err := e.DecideLogin(c, policy.DefaultProject, policy.LoginChat); err != nil || d.Allowed {
		t.Fatalf("Chat login after the migration: %+v, %v", d, err)
	}
	h, _, err := e.History(ctx, policy.HistoryFilter{})
	if err != nil || len(h) != 2 || h[1].Actor != "migration:005_login_rules" || len(h[1].After) != 1 || !h[1].After[0].IsLogin() ||
		h[0].Actor != "migration:011_policy_projects" || len(h[0].After) != 1 || h[0].After[0].Project != policy.DefaultProject {
		t.Fatalf("history %+v, %v", h, err)
	}
}

func TestPGStore_EnginesOnOneDatabaseFollowEachOther(t *testing.T) {
	db := pgtest.New(t)
	a := openEngine(t, policy.NewPGStore(db.Pool(), nil))
	b := openEngine(t, policy.NewPGStore(db.Pool(), nil))
	u := policy.Caller{Subject: "u", Groups: []string{"crew"}}
	r := add(t, a, rule("group:crew", "ship-*", policy.Publisher, policy.Allow, 0))[0]
	waitFor(t, func() bool { return decide(t, b, u, "ship-1", policy.Publisher).Allowed })
	if err := b.Remove(ctx, admin, r.ID); err != nil {
		t.Fatal(err)
	}
	if decide(t, b, u, "ship-1", policy.Publisher).Allowed {
		t.Fatal("the engine that removed the rule still allows")
	}
	waitFor(t, func() bool { return !decide(t, a, u, "ship-1", policy.Publisher).Allowed })
	waitFor(t, func() bool { return a.Version() == b.Version() })
	// They followed each other by applying the changes from the history,
	// not by loading every rule again.
	if _, history, _ := a.Reloads(); history == 0 {
		t.Error("engine a loaded every rule again instead of applying the change from the history")
	}
	if _, history, _ := b.Reloads(); history == 0 {
		t.Error("engine b loaded every rule again instead of applying the change from the history")
	}
}

func TestPGStore_ListenerReconnectsAndCatchesUp(t *testing.T) {
	db := pgtest.New(t)
	a := openEngine(t, policy.NewPGStore(db.Pool(), nil))
	b := openEngine(t, policy.NewPGStore(db.Pool(), nil))
	u := policy.Caller{Subject: "u"}
	add(t, a, rule("user:u", "x", policy.Subscriber, policy.Allow, 0))
	waitFor(t, func() bool { return decide(t, b, u, "x", policy.Subscriber).Allowed })

	// Kill every listening backend, then change the policy at once: the
	// notification is lost with the connection, and only the reload after
	// reconnecting can bring b up to date.
	var killed int
	err := db.Pool().QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE datname = current_database() AND query LIKE 'LISTEN%'`).Scan(&killed)
	if err != nil || killed != 2 {
		t.Fatalf("terminated %d listeners (%v), want 2", killed, err)
	}
	add(t, a, rule("user:u", "y", policy.Subscriber, policy.Allow, 0))
	waitFor(t, func() bool { return decide(t, b, u, "y", policy.Subscriber).Allowed })
	// And b listens again.
	time.Sleep(300 * time.Millisecond)
	add(t, a, rule("user:u", "z", policy.Subscriber, policy.Allow, 0))
	waitFor(t, func() bool { return decide(t, b, u, "z", policy.Subscriber).Allowed })
}

func TestPGStore_DatabaseDownIsUnavailable(t *testing.T) {
	db := pgtest.New(t)
	pool, err := pg.Open(ctx, db.URL, pg.Options{ConnectTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	e := openEngine(t, policy.NewPGStore(pool, nil))
	add(t, e, rule("user:u", "x", policy.Subscriber, policy.Allow, 0))
	pool.Close()
	_, err = e.Add(ctx, admin, rule("user:u", "y", policy.Subscriber, policy.Allow, 0))
	if apperr.KindOf(err) != apperr.Unavailable {
		t.Fatalf("Add with the database gone: %v, want Unavailable", err)
	}
	if _, err := e.List(ctx, policy.Filter{}); apperr.KindOf(err) != apperr.Unavailable {
		t.Fatalf("List with the database gone: %v, want Unavailable", err)
	}
	if !decide(t, e, policy.Caller{Subject: "u"}, "x", policy.Subscriber).Allowed {
		t.Fatal("decisions stopped while the database is gone; they should use the last rules")
	}
}

func TestPGStore_BootstrapRacesBetweenReplicas(t *testing.T) {
	db := pgtest.New(t)
	engines := make([]*policy.Engine, 4)
	for i := range engines {
		engines[i] = openEngine(t, policy.NewPGStore(db.Pool(), nil))
	}
	errs := make(chan error, len(engines))
	for i, e := range engines {
		go func() {
			errs <- e.Bootstrap(context.Background(), []string{"group:broker-admins", "user:r" + string(rune('0'+i))})
		}()
	}
	for range engines {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	rules, err := engines[0].List(ctx, policy.Filter{})
	if err != nil || len(rules) != 19 {
		t.Fatalf("%d rules after racing bootstraps (%v), want 18 from exactly one replica and the migration's RTM login rule", len(rules), err)
	}
	for _, e := range engines {
		if !e.Can(policy.Caller{Subject: "x", Groups: []string{"broker-admins"}}, policy.DefaultProject, policy.ObjectPolicies, policy.Write) {
			t.Fatal("a replica does not see the bootstrapped admins")
		}
	}
}
