package policy

// Plans: what a proposed policy changes, in rules and in who may do what.

import (
	"cmp"
	"context"
	"maps"
	"slices"
	"time"

	"github.com/broker-dev/broker/internal/apperr"
)

// RuleChange is a rule whose subject, channel, role and project stay while
// its effect or lifetime cap changes.
type RuleChange struct {
	From Rule `json:"from"`
	To   Rule `json:"to"`
}

// Diff is what replacing the current rules with the proposed ones does.
type Diff struct {
	Added   []Rule       `json:"added"`
	Removed []Rule       `json:"removed"`
	Changed []RuleChange `json:"changed"`
}

// ruleKey is what identifies a rule across a change.
type ruleKey struct {
	subject, channel string
	role             Role
	project          string
}

func keyOf(r Rule) ruleKey {
	r = r.Normalized()
	return ruleKey{r.Subject, r.Channel, r.Role, r.Project}
}

// DiffRules compares current and proposed rules (ids ignored); a key held by
// several rules on one side (an allow and a deny) is compared as a set.
func DiffRules(current, proposed []Rule) Diff {
	d := Diff{Added: []Rule{}, Removed: []Rule{}, Changed: []RuleChange{}}
	group := func(rs []Rule) (map[ruleKey][]Rule, []ruleKey) {
		m := map[ruleKey][]Rule{}
		var order []ruleKey
		for _, r := range rs {
			r = r.Normalized()
			k := keyOf(r)
			if _, ok := m[k]; !ok {
				order = append(order, k)
			}
			m[k] = append(m[k], r)
		}
		return m, order
	}
	cur, curOrder := group(current)
	next, nextOrder := group(proposed)
	same := func(a, b Rule) bool { a.ID, b.ID = 0, 0; return a == b }
	for _, k := range curOrder {
		from, to := cur[k], next[k]
		if len(from) == 1 && len(to) == 1 {
			if !same(from[0], to[0]) {
				d.Changed = append(d.Changed, RuleChange{From: from[0], To: to[0]})
			}
			continue
		}
		for _, r := range from {
			if !slices.ContainsFunc(to, func(x Rule) bool { return same(x, r) }) {
				d.Removed = append(d.Removed, r)
			}
		}
	}
	for _, k := range nextOrder {
		from, to := cur[k], next[k]
		if len(from) == 1 && len(to) == 1 {
			continue
		}
		for _, r := range to {
			if !slices.ContainsFunc(from, func(x Rule) bool { return same(x, r) }) {
				d.Added = append(d.Added, r)
			}
		}
	}
	return d
}

// Replayer decides requests on proposed rules, offline.
type Replayer struct{ e *Engine }

// NewReplayer builds the engine the broker decides with on rules alone.
// Close releases it.
func NewReplayer(ctx context.Context, rules []Rule) (*Replayer, error) {
	e, err := Open(ctx, NewMemStore(), nil)
	if err != nil {
		return nil, err
	}
	add := make([]Line, len(rules))
	for i, r := range rules {
		add[i] = lineFromRule(r)
	}
	if len(add) > 0 {
		if _, err := e.apply(ctx, Actor{Subject: "system:policy-replay", Operator: true}, Mutation{Action: "replay", Add: add}); err != nil {
			e.Close()
			return nil, err
		}
	}
	return &Replayer{e: e}, nil
}

// Decide is Engine.Decide on the replayer's rules.
func (r *Replayer) Decide(caller Caller, project, channel string, role Role) (Decision, error) {
	return r.e.Decide(caller, project, channel, role)
}

// Explain is Engine.Explain on the replayer's rules.
func (r *Replayer) Explain(caller Caller, project, channel string, role Role) (Explanation, error) {
	return r.e.Explain(caller, project, channel, role)
}

// Who is Engine.Who on the replayer's rules.
func (r *Replayer) Who(project, channel string, role Role) (Holders, error) {
	return r.e.Who(project, channel, role)
}

// DecideLogin is Engine.DecideLogin on the replayer's rules.
func (r *Replayer) DecideLogin(caller Caller, project, service string) (Decision, error) {
	return r.e.DecideLogin(caller, project, service)
}

// Close releases the replayer's engine.
func (r *Replayer) Close() { r.e.Close() }

// ActionApply is the action of Replace's change, recorded as one history
// entry per rule it changes, grouped by an apply id.
const ActionApply = "apply"

// versionMoved is the Conflict of a change expected at version expected,
// when the policy is at now.
func versionMoved(now, expected int64) error {
	return apperr.New(apperr.Conflict, "the policy changed since the plan: it is at version %d, not %d; plan again", now, expected)
}

// Replace makes the rules of project (its own and the "*" rules) exactly
// proposed, in one change recorded as ActionApply, only if the policy is still
// at version expected (a Conflict otherwise), with a's rights checked on
// every rule removed and added. It returns the change (Applied.Version is
// the version after it; nothing added or removed when proposed is the policy
// in force).
func (e *Engine) Replace(ctx context.Context, a Actor, project string, proposed []Rule, expected int64) (Applied, error) {
	if err := CheckProjectName(project); err != nil {
		return Applied{}, apperr.Field("project", "%s", err)
	}
	for _, r := range proposed {
		if p := r.Normalized().Project; p != project && p != AllProjects {
			return Applied{}, apperr.Field("project", "the change is for project %q and its \"*\" rules, not %q", project, p)
		}
		if err := e.checkServed(r); err != nil {
			return Applied{}, err
		}
	}
	current, err := e.List(ctx, Filter{Projects: []string{project, AllProjects}})
	if err != nil {
		return Applied{}, err
	}
	same := func(a, b Rule) bool { a.ID, b.ID = 0, 0; return a.Normalized() == b.Normalized() }
	var m Mutation
	m.Action, m.ExpectVersion = ActionApply, &expected
	for _, r := range current {
		if !slices.ContainsFunc(proposed, func(x Rule) bool { return same(x, r) }) {
			m.Remove = append(m.Remove, r.ID)
		}
	}
	for _, r := range proposed {
		if !slices.ContainsFunc(current, func(x Rule) bool { return same(x, r) }) {
			m.Add = append(m.Add, lineFromRule(r.Normalized()))
		}
	}
	if len(m.Remove) == 0 && len(m.Add) == 0 {
		v, err := e.store.Version(ctx)
		if err != nil {
			return Applied{}, err
		}
		if v != expected {
			return Applied{}, versionMoved(v, expected)
		}
		return Applied{Version: v}, nil
	}
	return e.apply(ctx, a, m)
}

// historyPage is how many changes the history's replays read at a time.
const historyPage = 500

// maxVersions bounds the versions Versions returns.
const maxVersions = 50

// RuleSet is the policy as it stood from a moment: its rules and version.
type RuleSet struct {
	Version int64
	From    time.Time // the change that made it, or the moment asked for
	Rules   []Rule
}

// ExplainAt is Explain on the rules as they stood at t (RulesAt), or on the
// rules in force when t is zero; it also returns the policy version decided
// on.
func (e *Engine) ExplainAt(ctx context.Context, caller Caller, project, channel string, role Role, t time.Time) (Explanation, int64, error) {
	if t.IsZero() {
		version := e.Version()
		x, err := e.Explain(caller, project, channel, role)
		return x, version, err
	}
	rules, version, err := e.RulesAt(ctx, t)
	if err != nil {
		return Explanation{}, 0, err
	}
	replay, err := NewReplayer(ctx, rules)
	if err != nil {
		return Explanation{}, 0, err
	}
	defer replay.Close()
	x, err := replay.Explain(caller, project, channel, role)
	return x, version, err
}

// RulesAt rebuilds the rules as they stood at t from the policy history:
// every change up to t applied in order, from none; and the version they
// were at (the last change at or before t, 0 before any). It replays the
// rest of the history too and refuses (Internal) when the result is not the
// rules in force: rules written around the history (straight into the
// table) would make any answer about the past a guess.
func (e *Engine) RulesAt(ctx context.Context, t time.Time) ([]Rule, int64, error) {
	sets, _, err := e.replayHistory(ctx, t, t)
	if err != nil {
		return nil, 0, err
	}
	return sets[0].Rules, sets[0].Version, nil
}

// Versions rebuilds every policy that stood between from and to: the one
// in force at from, then one after each change before to (at most
// maxVersions; truncated says whether some were left out), as RulesAt
// does.
func (e *Engine) Versions(ctx context.Context, from, to time.Time) (sets []RuleSet, truncated bool, err error) {
	return e.replayHistory(ctx, from, to)
}

// replayHistory replays the whole history once, keeping the rules at from
// and after each change in (from, to), and checks the end against the
// rules in force.
func (e *Engine) replayHistory(ctx context.Context, from, to time.Time) ([]RuleSet, bool, error) {
	if err := e.Refresh(ctx); err != nil {
		return nil, false, err
	}
	now := e.snap.Load()
	live := map[int64]Rule{}
	var sets []RuleSet
	truncated := false
	snapshot := func(version int64, at time.Time) {
		if len(sets) == maxVersions {
			truncated = true
			return
		}
		rules := slices.Collect(maps.Values(live))
		slices.SortFunc(rules, func(a, b Rule) int { return cmp.Compare(a.ID, b.ID) })
		sets = append(sets, RuleSet{Version: version, From: at, Rules: rules})
	}
	var version, last int64
	started := false
	for {
		changes, err := e.store.Since(ctx, last, historyPage)
		if err != nil {
			return nil, false, err
		}
		for _, c := range changes {
			if !started && c.At.After(from) {
				snapshot(version, from)
				started = true
			}
			for _, r := range c.Before {
				delete(live, r.ID)
			}
			for _, r := range c.After {
				live[r.ID] = r.Normalized()
			}
			version, last = c.ID, c.ID
			if started && c.At.Before(to) {
				snapshot(version, c.At)
			}
		}
		if len(changes) < historyPage || last >= now.version {
			break
		}
	}
	if !started {
		snapshot(version, from)
	}
	if len(live) != len(now.rules) {
		return nil, false, apperr.New(apperr.Internal, "the policy history accounts for %d rules, not the %d in force: the rules of the past cannot be rebuilt", len(live), len(now.rules))
	}
	for _, r := range now.rules {
		if h, ok := live[r.ID]; !ok || h != r {
			return nil, false, apperr.New(apperr.Internal, "the policy history does not account for rule #%d: the rules of the past cannot be rebuilt", r.ID)
		}
	}
	return sets, truncated, nil
}
