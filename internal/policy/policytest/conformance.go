// Package policytest is the conformance suite every policy.Store must pass,
// so that the in-memory and Postgres stores cannot drift apart. It only
// tests; it must never be imported by production code.
package policytest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/broker-dev/broker/internal/apperr"
	"github.com/broker-dev/broker/internal/policy"
)

// RunStoreConformance runs the suite; newStore must return an empty store.
func RunStoreConformance(t *testing.T, newStore func(t *testing.T) policy.Store) {
	tests := []struct {
		name string
		run  func(t *testing.T, s policy.Store)
	}{
		{"ApplyAddsAndLoadReturnsInIDOrder", testApplyAndLoad},
		{"LoadFilters", testLoadFilters},
		{"DuplicateIsConflictAndChangesNothing", testDuplicate},
		{"RemovingUnknownIDIsNotFoundAndChangesNothing", testRemoveUnknown},
		{"VersionRisesWithEveryChange", testVersion},
		{"ExpectVersionRefusesAChangeAfterAnother", testExpectVersion},
		{"UnlessPTypeSkipsWhenPresent", testUnlessPType},
		{"ConcurrentBootstrapsGrantOnce", testConcurrentUnless},
		{"HistoryRecordsWhoWhatWhen", testHistory},
		{"HistoryPagesNewestFirst", testHistoryPages},
		{"AnApplyIsOneEntryPerRule", testApplyPerRule},
		{"AnImportNotesWhatWasInForce", testImportUnchanged},
		{"HistoryIsSearchedAndClipped", testHistorySearch},
		{"WatchReportsChanges", testWatch},
		{"LoginRulesLiveBesideTheOthers", testLoginRules},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.run(t, newStore(t)) })
	}
}

var (
	admin = policy.Actor{Subject: "user:admin", RequestID: "req-1"}
	ctx   = context.Background()
)

func line(ptype string, v ...string) policy.Line {
	l := policy.Line{PType: ptype}
	copy(l.V[:], v)
	return l
}

func mustApply(t *testing.T, s policy.Store, m policy.Mutation) policy.Applied {
	t.Helper()
	res, err := s.Apply(ctx, admin, m)
	if err != nil {
		t.Fatalf("Apply(%+v): %v", m, err)
	}
	return res
}

func mustLoad(t *testing.T, s policy.Store, f policy.Filter) ([]policy.Line, int64) {
	t.Helper()
	lines, v, err := s.Load(ctx, f)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return lines, v
}

func withoutIDs(lines []policy.Line) []policy.Line {
	out := make([]policy.Line, len(lines))
	for i, l := range lines {
		l.ID = 0
		out[i] = l
	}
	return out
}

func wantKind(t *testing.T, err error, kind apperr.Kind) {
	t.Helper()
	if got := apperr.KindOf(err); err == nil || got != kind {
		t.Fatalf("error = %v (kind %s), want kind %s", err, got, kind)
	}
}

var (
	lobby = line("p", "*", "lobby", "subscriber", "allow", "0")
	demo  = line("p", "group:dev", "demo-*", "publisher", "allow", "3600")
	deny  = line("p", "user:bob", "demo-*", "subscriber", "deny", "0")
	grant = line("p2", "group:admins", "api:policies", "write")
)

func testApplyAndLoad(t *testing.T, s policy.Store) {
	res := mustApply(t, s, policy.Mutation{Action: "add", Add: []policy.Line{lobby, demo, grant}})
	if len(res.Added) != 3 || res.Added[0].ID <= 0 || !(res.Added[0].ID < res.Added[1].ID && res.Added[1].ID < res.Added[2].ID) {
		t.Fatalf("Added = %+v, want three lines with rising ids", res.Added)
	}
	res2 := mustApply(t, s, policy.Mutation{Action: "remove", Remove: []int64{res.Added[1].ID}, Add: []policy.Line{deny}})
	if len(res2.Removed) != 1 || res2.Removed[0] != res.Added[1] {
		t.Fatalf("Removed = %+v, want %+v", res2.Removed, res.Added[1])
	}
	lines, _ := mustLoad(t, s, policy.Filter{})
	want := []policy.Line{res.Added[0], res.Added[2], res2.Added[0]}
	if !slices.Equal(lines, want) {
		t.Fatalf("Load = %+v, want %+v", lines, want)
	}
}

// testLoginRules: login rules (p3) share ids, filters, removal, history and
// UnlessPType with every other rule, whichever table holds them.
func testLoginRules(t *testing.T, s policy.Store) {
	rtm := line("p3", "*", "rtm", "allow", "0")
	chat := line("p3", "group:chat", "chat", "deny", "600")
	res := mustApply(t, s, policy.Mutation{Action: "add", Add: []policy.Line{lobby, rtm, grant, chat}})
	if len(res.Added) != 4 || !(res.Added[0].ID < res.Added[1].ID && res.Added[1].ID < res.Added[2].ID && res.Added[2].ID < res.Added[3].ID) {
		t.Fatalf("Added = %+v, want four lines with rising ids in the order given", res.Added)
	}
	lines, _ := mustLoad(t, s, policy.Filter{})
	if !slices.Equal(withoutIDs(lines), []policy.Line{lobby, rtm, grant, chat}) {
		t.Fatalf("Load = %+v", lines)
	}
	if got, _ := mustLoad(t, s, policy.Filter{Channel: "rtm"}); !slices.Equal(withoutIDs(got), []policy.Line{rtm}) {
		t.Fatalf("Load(channel rtm) = %+v", got)
	}
	_, err := s.Apply(ctx, admin, policy.Mutation{Action: "add", Add: []policy.Line{rtm}})
	wantKind(t, err, apperr.Conflict)
	res2 := mustApply(t, s, policy.Mutation{Action: "remove", Remove: []int64{res.Added[1].ID, res.Added[0].ID}})
	if len(res2.Removed) != 2 || res2.Removed[0] != res.Added[0] || res2.Removed[1] != res.Added[1] {
		t.Fatalf("Removed = %+v", res2.Removed)
	}
	skipped := mustApply(t, s, policy.Mutation{Action: "bootstrap", Add: []policy.Line{rtm}, UnlessPType: "p3"})
	if !skipped.Skipped {
		t.Fatal("UnlessPType p3 did not see the remaining login rule")
	}
}

func testLoadFilters(t *testing.T, s policy.Store) {
	mustApply(t, s, policy.Mutation{Action: "add", Add: []policy.Line{lobby, demo, deny, grant}})
	for _, tt := range []struct {
		f    policy.Filter
		want []policy.Line
	}{
		{policy.Filter{Subject: "group:dev"}, []policy.Line{demo}},
		{policy.Filter{Channel: "demo-*"}, []policy.Line{demo, deny}},
		{policy.Filter{Subject: "user:bob", Channel: "demo-*"}, []policy.Line{deny}},
		{policy.Filter{Channel: "demo-1"}, []policy.Line{}}, // patterns are not expanded
	} {
		lines, _ := mustLoad(t, s, tt.f)
		if got := withoutIDs(lines); !slices.Equal(got, tt.want) {
			t.Errorf("Load(%+v) = %+v, want %+v", tt.f, got, tt.want)
		}
	}
}

func testDuplicate(t *testing.T, s policy.Store) {
	mustApply(t, s, policy.Mutation{Action: "add", Add: []policy.Line{lobby}})
	_, v := mustLoad(t, s, policy.Filter{})
	_, err := s.Apply(ctx, admin, policy.Mutation{Action: "add", Add: []policy.Line{demo, lobby}})
	wantKind(t, err, apperr.Conflict)
	_, err = s.Apply(ctx, admin, policy.Mutation{Action: "add", Add: []policy.Line{demo, demo}})
	wantKind(t, err, apperr.Conflict)
	lines, v2 := mustLoad(t, s, policy.Filter{})
	if len(lines) != 1 || v2 != v {
		t.Fatalf("after conflicts: %d lines, version %d→%d; want nothing changed", len(lines), v, v2)
	}
}

func testRemoveUnknown(t *testing.T, s policy.Store) {
	res := mustApply(t, s, policy.Mutation{Action: "add", Add: []policy.Line{lobby, demo}})
	_, err := s.Apply(ctx, admin, policy.Mutation{Action: "remove", Remove: []int64{res.Added[0].ID, 999999}})
	wantKind(t, err, apperr.NotFound)
	if lines, _ := mustLoad(t, s, policy.Filter{}); len(lines) != 2 {
		t.Fatalf("after a failed remove: %d lines, want 2", len(lines))
	}
}

func testVersion(t *testing.T, s policy.Store) {
	_, v0 := mustLoad(t, s, policy.Filter{})
	r1 := mustApply(t, s, policy.Mutation{Action: "add", Add: []policy.Line{lobby}})
	r2 := mustApply(t, s, policy.Mutation{Action: "remove", Remove: []int64{r1.Added[0].ID}})
	_, v := mustLoad(t, s, policy.Filter{})
	if !(v0 < r1.Version && r1.Version < r2.Version && r2.Version == v) {
		t.Fatalf("versions %d, %d, %d, loaded %d: want rising, Load at the last", v0, r1.Version, r2.Version, v)
	}
	if cur, err := s.Version(ctx); err != nil || cur != v {
		t.Fatalf("Version = %d, %v; want %d", cur, err, v)
	}
}

// testExpectVersion: a change expected at a version is made only at it;
// otherwise a Conflict, and nothing changes.
func testExpectVersion(t *testing.T, s policy.Store) {
	r1 := mustApply(t, s, policy.Mutation{Action: "add", Add: []policy.Line{lobby}})
	stale := r1.Version - 1
	_, err := s.Apply(ctx, admin, policy.Mutation{Action: "apply", Remove: []int64{r1.Added[0].ID}, ExpectVersion: &stale})
	wantKind(t, err, apperr.Conflict)
	if lines, v := mustLoad(t, s, policy.Filter{}); len(lines) != 1 || v != r1.Version {
		t.Fatalf("after a refused change: %d lines at version %d; want 1 at %d", len(lines), v, r1.Version)
	}
	cur := r1.Version
	if res := mustApply(t, s, policy.Mutation{Action: "apply", Remove: []int64{r1.Added[0].ID}, ExpectVersion: &cur}); res.Version <= cur || len(res.Removed) != 1 {
		t.Fatalf("a change at the expected version = %+v", res)
	}
}

func testUnlessPType(t *testing.T, s policy.Store) {
	m := policy.Mutation{Action: "bootstrap", Add: []policy.Line{grant}, UnlessPType: "p2"}
	if res := mustApply(t, s, m); res.Skipped || len(res.Added) != 1 {
		t.Fatalf("first bootstrap = %+v, want applied", res)
	}
	m.Add = []policy.Line{line("p2", "user:other", "api:audit", "read")}
	if res := mustApply(t, s, m); !res.Skipped {
		t.Fatalf("second bootstrap = %+v, want skipped", res)
	}
	if lines, _ := mustLoad(t, s, policy.Filter{}); len(lines) != 1 {
		t.Fatalf("%d lines after two bootstraps, want 1", len(lines))
	}
}

func testConcurrentUnless(t *testing.T, s policy.Store) {
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			g := line("p2", "group:admins", "api:audit", []string{"read", "write"}[i%2])
			_, err := s.Apply(ctx, admin, policy.Mutation{Action: "bootstrap", Add: []policy.Line{g}, UnlessPType: "p2"})
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if lines, _ := mustLoad(t, s, policy.Filter{}); len(lines) != 1 {
		t.Fatalf("%d admin lines after concurrent bootstraps, want 1", len(lines))
	}
}

func testHistory(t *testing.T, s policy.Store) {
	before := time.Now().Add(-time.Minute)
	res := mustApply(t, s, policy.Mutation{Action: "add", Add: []policy.Line{demo}})
	other := policy.Actor{Subject: "cli:root"}
	if _, err := s.Apply(ctx, other, policy.Mutation{Action: "remove", Remove: []int64{res.Added[0].ID}}); err != nil {
		t.Fatal(err)
	}
	h, err := s.History(ctx, policy.HistoryFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(h) != 2 {
		t.Fatalf("History = %+v, want 2 entries", h)
	}
	rm, add := h[0], h[1]
	wantRule := policy.Rule{ID: res.Added[0].ID, Subject: "group:dev", Channel: "demo-*", Role: policy.Publisher, Effect: policy.Allow, MaxTTLSeconds: 3600, Project: policy.DefaultProject}
	if add.Actor != "user:admin" || add.RequestID != "req-1" || add.Action != "add" || add.Before != nil ||
		len(add.After) != 1 || add.After[0] != wantRule || add.At.Before(before) {
		t.Errorf("add entry = %+v, want by user:admin/req-1 adding %+v", add, wantRule)
	}
	if rm.Actor != "cli:root" || rm.Action != "remove" || len(rm.Before) != 1 || rm.Before[0] != wantRule || rm.After != nil || rm.ID <= add.ID {
		t.Errorf("remove entry = %+v, want by cli:root removing %+v", rm, wantRule)
	}
}

// testApplyPerRule: an apply is recorded as one entry per rule, grouped by
// an apply id: a removed and an added rule of the same key are one entry.
func testApplyPerRule(t *testing.T, s policy.Store) {
	start := mustApply(t, s, policy.Mutation{Action: "add", Add: []policy.Line{lobby, demo, grant}})
	ids := map[string]int64{}
	for _, l := range start.Added {
		ids[l.V[1]] = l.ID
	}
	stricter := line("p", "group:dev", "demo-*", "publisher", "allow", "600", policy.DefaultProject)
	v := start.Version
	res := mustApply(t, s, policy.Mutation{Action: policy.ActionApply, ExpectVersion: &v,
		Remove: []int64{ids["demo-*"], ids["lobby"]}, Add: []policy.Line{stricter, deny}})
	h, err := s.History(ctx, policy.HistoryFilter{Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(h) != 4 || res.Version != h[0].ID {
		t.Fatalf("history %+v after an apply at version %d: want 3 entries of the apply and the add", h, res.Version)
	}
	entries := []policy.Change{h[2], h[1], h[0]} // oldest first
	for _, e := range entries {
		if e.Action != policy.ActionApply || e.ApplyID == 0 || e.ApplyID != entries[0].ApplyID || e.Actor != "user:admin" {
			t.Fatalf("entry %+v: want an apply entry of the same apply id as %+v", e, entries[0])
		}
	}
	if h[3].ApplyID != 0 {
		t.Errorf("the add's entry has apply id %d, want none", h[3].ApplyID)
	}
	// In the order of their first rule: lobby removed, demo-* changed, the
	// deny rule added.
	if e := entries[0]; len(e.Before) != 1 || e.Before[0].Channel != "lobby" || e.After != nil {
		t.Errorf("first entry %+v: want lobby removed", e)
	}
	if e := entries[1]; len(e.Before) != 1 || len(e.After) != 1 || e.Before[0].MaxTTLSeconds != 3600 || e.After[0].MaxTTLSeconds != 600 {
		t.Errorf("second entry %+v: want demo-* changed from 3600 s to 600 s", e)
	}
	if e := entries[2]; e.Before != nil || len(e.After) != 1 || e.After[0].Effect != policy.Deny {
		t.Errorf("third entry %+v: want the deny rule added", e)
	}
	if lines, v := mustLoad(t, s, policy.Filter{}); len(lines) != 3 || v != res.Version {
		t.Errorf("after the apply: %d lines at version %d, want 3 at %d", len(lines), v, res.Version)
	}
}

// testImportUnchanged: an import's entry keeps how many of its rules were
// in force already; other entries none.
func testImportUnchanged(t *testing.T, s policy.Store) {
	mustApply(t, s, policy.Mutation{Action: "add", Add: []policy.Line{lobby}})
	unchanged := 7
	mustApply(t, s, policy.Mutation{Action: "import", Add: []policy.Line{demo, deny}, Unchanged: &unchanged})
	h, err := s.History(ctx, policy.HistoryFilter{Limit: 2})
	if err != nil {
		t.Fatal(err)
	}
	if len(h) != 2 || h[0].Action != "import" || h[0].Unchanged != 7 || len(h[0].After) != 2 || h[1].Unchanged != 0 {
		t.Fatalf("history %+v: want the import with 7 unchanged, then the add with none", h)
	}
}

// testHistorySearch: the store selects entries by actor, action, time, a
// rule's channel, a rule id and project, and shows at most MaxRulesShown
// rules a side with the count of all.
func testHistorySearch(t *testing.T, s policy.Store) {
	first := mustApply(t, s, policy.Mutation{Action: "add", Add: []policy.Line{lobby}})
	bulk := make([]policy.Line, 150)
	for i := range bulk {
		bulk[i] = line("p", "*", fmt.Sprintf("room-%03d", i), "subscriber", "allow", "0")
	}
	if _, err := s.Apply(ctx, policy.Actor{Subject: "cli:root"}, policy.Mutation{Action: "import", Add: bulk}); err != nil {
		t.Fatal(err)
	}
	search := func(f policy.HistoryFilter) []policy.Change {
		t.Helper()
		h, err := s.History(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	imp := search(policy.HistoryFilter{Action: "import"})
	if len(imp) != 1 || len(imp[0].After) != policy.MaxRulesShown || imp[0].AfterTotal != 150 || imp[0].After[0].Channel != "room-000" {
		t.Fatalf("the import's entry: %+v; want %d of its 150 rules, from room-000", imp, policy.MaxRulesShown)
	}
	for name, tc := range map[string]struct {
		f    policy.HistoryFilter
		want string // the action of the one entry expected, "" for none
	}{
		"actor":                 {policy.HistoryFilter{Actor: "root"}, "import"},
		"channel past the clip": {policy.HistoryFilter{Channel: "room-14*"}, "import"},
		"channel pattern":       {policy.HistoryFilter{Channel: "lob*"}, "add"},
		"rule id":               {policy.HistoryFilter{RuleID: first.Added[0].ID}, "add"},
		"another project":       {policy.HistoryFilter{Projects: []string{"other"}}, ""},
		"the future":            {policy.HistoryFilter{From: time.Now().Add(time.Hour)}, ""},
	} {
		h := search(tc.f)
		if tc.want == "" && len(h) != 0 || tc.want != "" && (len(h) != 1 || h[0].Action != tc.want) {
			t.Errorf("%s: %+v, want one %q entry", name, h, tc.want)
		}
	}
	if h := search(policy.HistoryFilter{Projects: []string{policy.DefaultProject}, Limit: 1}); len(h) != 1 || h[0].Action != "import" {
		t.Errorf("the default project's newest entry: %+v", h)
	}
}

func testHistoryPages(t *testing.T, s policy.Store) {
	for _, l := range []policy.Line{lobby, demo, deny, grant} {
		mustApply(t, s, policy.Mutation{Action: "add", Add: []policy.Line{l}})
	}
	page1, err := s.History(ctx, policy.HistoryFilter{Limit: 3})
	if err != nil {
		t.Fatal(err)
	}
	page2, err := s.History(ctx, policy.HistoryFilter{Limit: 3, Before: page1[len(page1)-1].ID})
	if err != nil {
		t.Fatal(err)
	}
	if len(page1) != 3 || len(page2) != 1 || page1[0].ID <= page1[1].ID || page2[0].ID >= page1[2].ID {
		t.Fatalf("pages %+v / %+v, want 3 then 1, newest first", page1, page2)
	}
	_, err = s.History(ctx, policy.HistoryFilter{Limit: policy.MaxHistoryLimit + 1})
	wantKind(t, err, apperr.Invalid)
}

func testWatch(t *testing.T, s policy.Store) {
	wctx, cancel := context.WithCancel(ctx)
	versions := make(chan int64, 16)
	done := make(chan error, 1)
	go func() { done <- s.Watch(wctx, func(v int64) { versions <- v }) }()
	next := func() int64 {
		select {
		case v := <-versions:
			return v
		case <-time.After(5 * time.Second):
			t.Fatal("no notification within 5s")
			return 0
		}
	}
	if v := next(); v != 0 {
		t.Fatalf("first notification = %d, want 0 (reload everything)", v)
	}
	res := mustApply(t, s, policy.Mutation{Action: "add", Add: []policy.Line{lobby}})
	if v := next(); v != res.Version {
		t.Fatalf("notification = %d, want version %d", v, res.Version)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Watch returned %v, want context.Canceled", err)
	}
}
